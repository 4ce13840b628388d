//! Dates as operators write them, to Unix milliseconds and back, in the
//! Jalali (Solar Hijri) calendar Iran's election calendar uses and in the
//! Gregorian one. Pure: no clock, no I/O.
//!
//! Accepted: `YYYY-MM-DD` (local midnight), `YYYY-MM-DDTHH:MM` (or a space
//! instead of `T`, seconds allowed), both local at the given UTC offset
//! (Asia/Tehran, +03:30, unless told), RFC 3339 with its own offset, or Unix
//! ms (digits only). A year below 1700 is Jalali (1403 = 2024/25), from
//! 1700 on Gregorian. The calendar arithmetic is ICU4X's (`icu_calendar`),
//! not a hand-written leap cycle.
//!
//! Iran has kept +03:30 all year since 2022 (no daylight saving), which is
//! why a fixed offset is enough.

use icu_calendar::cal::Persian;
use icu_calendar::{Date, Iso};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// Asia/Tehran: UTC+03:30, in minutes.
pub const TEHRAN_OFFSET_MIN: i32 = 210;

/// Years below this are Jalali.
const FIRST_GREGORIAN_YEAR: i32 = 1700;

/// Which calendar a date was read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calendar {
    Jalali,
    Gregorian,
}

impl std::fmt::Display for Calendar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Calendar::Jalali => "Jalali",
            Calendar::Gregorian => "Gregorian",
        })
    }
}

/// Why a date was refused; each says what was wrong with the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    #[error("{input:?} is not a date: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM (Jalali when the year is below 1700, e.g. 1403-12-01; else Gregorian), RFC 3339 or Unix ms")]
    Format { input: String },
    #[error("{input:?}: month {month} does not exist (months are 1 to 12)")]
    Month { input: String, month: u8 },
    #[error(
        "{input:?}: there is no day {day} in {calendar} {year}-{month:02}, it has {days} days"
    )]
    Day {
        input: String,
        calendar: Calendar,
        year: i32,
        month: u8,
        day: u8,
        days: u8,
    },
    #[error("{input:?}: {hour:02}:{minute:02} is not a time of day (00:00 to 23:59)")]
    TimeOfDay { input: String, hour: u8, minute: u8 },
    #[error("{input:?}: {reason}")]
    Rfc3339 { input: String, reason: String },
    #[error("{input:?} is before 1970 (Unix time 0)")]
    BeforeEpoch { input: String },
    #[error("{input:?}: the year is out of range")]
    Year { input: String },
    #[error("UTC offset {input:?}: expected +03:30, -05:00 or minutes (210)")]
    Offset { input: String },
}

/// `--utc-offset`: `+03:30`, `-05:00`, `+0330` or minutes (`210`).
pub fn parse_offset(s: &str) -> Result<i32, DateError> {
    let bad = || DateError::Offset {
        input: s.to_owned(),
    };
    let t = s.trim();
    // `+0330` is hours and minutes; a number without a sign is minutes.
    let hours_minutes = t.contains(':') || (t.starts_with(['+', '-']) && t.len() == 5);
    if let (false, Ok(min)) = (hours_minutes, t.parse::<i32>()) {
        return if min.abs() < 24 * 60 {
            Ok(min)
        } else {
            Err(bad())
        };
    }
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(bad()),
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let h: i32 = digits[..2].parse().map_err(|_| bad())?;
    let m: i32 = digits[2..].parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(sign * (h * 60 + m))
}

/// A point in time as an operator wrote it, in Unix ms.
pub fn parse(input: &str, utc_offset_min: i32) -> Result<u64, DateError> {
    let s = input.trim();
    let format = || DateError::Format {
        input: input.to_owned(),
    };
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| format());
    }
    // RFC 3339 carries its own offset (Z or ±HH:MM after the time).
    let has_offset = s.get(10..).is_some_and(|time| {
        time.ends_with(['Z', 'z'])
            || time.contains('+')
            || time.get(1..).is_some_and(|t| t.contains('-'))
    });
    if has_offset {
        let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| DateError::Rfc3339 {
            input: input.to_owned(),
            reason: e.to_string(),
        })?;
        return unix_ms(t, input);
    }
    let (date, time) = match s.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let (y, m, d) = ymd(date).ok_or_else(format)?;
    let (hour, minute, second) = match time {
        None => (0, 0, 0),
        Some(t) => hms(t).ok_or_else(format)?,
    };
    let iso = to_iso(y, m, d, input)?;
    let time = Time::from_hms(hour, minute, second).map_err(|_| DateError::TimeOfDay {
        input: input.to_owned(),
        hour,
        minute,
    })?;
    let offset =
        UtcOffset::from_whole_seconds(utc_offset_min * 60).map_err(|_| DateError::Offset {
            input: utc_offset_min.to_string(),
        })?;
    unix_ms(
        PrimitiveDateTime::new(iso, time).assume_offset(offset),
        input,
    )
}

fn unix_ms(t: OffsetDateTime, input: &str) -> Result<u64, DateError> {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| DateError::BeforeEpoch {
        input: input.to_owned(),
    })
}

/// `YYYY-MM-DD` (the year 3 or 4 digits, month and day 1 or 2).
fn ymd(s: &str) -> Option<(i32, u8, u8)> {
    let mut parts = s.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || !(3..=4).contains(&y.len())
        || !(1..=2).contains(&m.len())
        || !(1..=2).contains(&d.len())
        || ![y, m, d]
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    Some((y.parse().ok()?, m.parse().ok()?, d.parse().ok()?))
}

/// `HH:MM` or `HH:MM:SS`.
fn hms(s: &str) -> Option<(u8, u8, u8)> {
    let parts: Vec<&str> = s.split(':').collect();
    if !(2..=3).contains(&parts.len())
        || !parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let n = |i: usize| parts.get(i).map_or(Some(0), |p| p.parse().ok());
    Some((n(0)?, n(1)?, n(2)?))
}

/// The Gregorian day of a Jalali (year < 1700) or Gregorian date.
fn to_iso(y: i32, m: u8, d: u8, input: &str) -> Result<time::Date, DateError> {
    if !(1..=12).contains(&m) {
        return Err(DateError::Month {
            input: input.to_owned(),
            month: m,
        });
    }
    let calendar = if y < FIRST_GREGORIAN_YEAR {
        Calendar::Jalali
    } else {
        Calendar::Gregorian
    };
    let year_range = || DateError::Year {
        input: input.to_owned(),
    };
    let no_day = |days: u8| DateError::Day {
        input: input.to_owned(),
        calendar,
        year: y,
        month: m,
        day: d,
        days,
    };
    let iso: Date<Iso> = match calendar {
        Calendar::Jalali => {
            let first = Date::try_new_persian(y, m, 1).map_err(|_| year_range())?;
            let days = first.days_in_month();
            if d == 0 || d > days {
                return Err(no_day(days));
            }
            Date::try_new_persian(y, m, d)
                .map_err(|_| no_day(days))?
                .to_calendar(Iso)
        }
        Calendar::Gregorian => {
            let first = Date::try_new_iso(y, m, 1).map_err(|_| year_range())?;
            let days = first.days_in_month();
            if d == 0 || d > days {
                return Err(no_day(days));
            }
            Date::try_new_iso(y, m, d).map_err(|_| no_day(days))?
        }
    };
    let month = time::Month::try_from(iso.month().ordinal).map_err(|_| year_range())?;
    time::Date::from_calendar_date(iso.year().extended_year(), month, iso.day_of_month().0)
        .map_err(|_| year_range())
}

/// A local date and time in both calendars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Both {
    pub jalali: (i32, u8, u8),
    pub gregorian: (i32, u8, u8),
    pub hour: u8,
    pub minute: u8,
    pub utc_offset_min: i32,
}

impl Both {
    /// `ms` seen at `utc_offset_min`.
    pub fn at(ms: u64, utc_offset_min: i32) -> Option<Both> {
        let offset = UtcOffset::from_whole_seconds(utc_offset_min * 60).ok()?;
        // Checked: an instant near the end of year 9999 UTC is in year
        // 10000 at a positive offset, which `time` cannot represent.
        let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()?
            .checked_to_offset(offset)?;
        let iso = Date::try_new_iso(t.year(), u8::from(t.month()), t.day()).ok()?;
        let jalali = iso.to_calendar(Persian);
        Some(Both {
            jalali: (
                jalali.year().extended_year(),
                jalali.month().ordinal,
                jalali.day_of_month().0,
            ),
            gregorian: (t.year(), u8::from(t.month()), t.day()),
            hour: t.hour(),
            minute: t.minute(),
            utc_offset_min,
        })
    }
}

/// `1403-12-01 00:00 (2025-02-19) +03:30`.
impl std::fmt::Display for Both {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (jy, jm, jd) = self.jalali;
        let (gy, gm, gd) = self.gregorian;
        let o = self.utc_offset_min;
        write!(
            f,
            "{jy}-{jm:02}-{jd:02} {:02}:{:02} ({gy}-{gm:02}-{gd:02}) {}{:02}:{:02}",
            self.hour,
            self.minute,
            if o < 0 { '-' } else { '+' },
            o.abs() / 60,
            o.abs() % 60
        )
    }
}

/// Unix ms as `1403-12-01 00:00 (2025-02-19) +03:30` (the number itself
/// when it cannot be shown as a date).
pub fn show(ms: u64, utc_offset_min: i32) -> String {
    Both::at(ms, utc_offset_min).map_or_else(|| ms.to_string(), |b| b.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i32 = TEHRAN_OFFSET_MIN;

    fn utc(s: &str) -> u64 {
        parse(s, 0).unwrap()
    }

    #[test]
    fn an_instant_past_year_9999_at_the_offset_is_shown_as_its_number() {
        // 9999-12-31 23:46:40 UTC is in year 10000 in Tehran.
        let ms = 253_402_300_000_000;
        assert_eq!(Both::at(ms, T), None);
        assert_eq!(show(ms, T), ms.to_string());
        assert!(Both::at(ms, 0).is_some());
    }

    #[test]
    fn nowruz_1404_is_21_march_2025() {
        assert_eq!(parse("1404-01-01", 0), Ok(utc("2025-03-21")));
        let b = Both::at(utc("2025-03-21"), 0).unwrap();
        assert_eq!(b.jalali, (1404, 1, 1));
        assert_eq!(b.gregorian, (2025, 3, 21));
    }

    #[test]
    fn the_30th_of_esfand_exists_in_a_leap_year_only() {
        // 1403 is a leap year: Esfand has 30 days, the day before Nowruz 1404.
        assert_eq!(parse("1403-12-30", 0), Ok(utc("2025-03-20")));
        assert_eq!(
            parse("1402-12-30", T),
            Err(DateError::Day {
                input: "1402-12-30".into(),
                calendar: Calendar::Jalali,
                year: 1402,
                month: 12,
                day: 30,
                days: 29,
            })
        );
        let e = parse("1402-12-30", T).unwrap_err().to_string();
        assert!(
            e.contains("no day 30 in Jalali 1402-12, it has 29 days"),
            "{e}"
        );
    }

    #[test]
    fn a_date_is_local_midnight_at_tehran_time() {
        // 00:00 at +03:30 is 20:30 UTC the day before.
        assert_eq!(parse("1403-12-01", T), Ok(utc("2025-02-18T20:30")));
        assert_eq!(parse("2025-02-19", T), parse("1403-12-01", T));
        assert_eq!(
            parse("2025-02-19", T).unwrap(),
            1_739_910_600_000,
            "2025-02-18T20:30:00Z"
        );
        assert_eq!(
            show(parse("1403-12-01", T).unwrap(), T),
            "1403-12-01 00:00 (2025-02-19) +03:30"
        );
    }

    #[test]
    fn times_of_day_rfc3339_and_unix_ms() {
        assert_eq!(
            parse("1403-12-01T06:15", T).unwrap() - parse("1403-12-01", T).unwrap(),
            (6 * 60 + 15) * 60_000
        );
        assert_eq!(
            parse("1403-12-01 06:15:30", T),
            parse("1403-12-01T06:15:30", T)
        );
        assert_eq!(
            parse("2025-02-19T00:00:00+03:30", 0),
            parse("1403-12-01", T),
            "RFC 3339 carries its own offset"
        );
        assert_eq!(parse("2025-02-18T20:30:00Z", T), parse("1403-12-01", T));
        assert_eq!(parse("1750000000000", T), Ok(1_750_000_000_000));
        assert_eq!(parse("1403-12-01", -300), Ok(utc("1403-12-01T05:00")));
    }

    #[test]
    fn round_trips_through_both_calendars() {
        for s in [
            "1403-12-30",
            "1404-01-01",
            "1399-12-30",
            "1403-06-31",
            "1403-07-30",
        ] {
            let ms = parse(s, T).unwrap();
            let b = Both::at(ms, T).unwrap();
            let (y, m, d) = b.jalali;
            assert_eq!(format!("{y}-{m:02}-{d:02}"), s);
            let (gy, gm, gd) = b.gregorian;
            assert_eq!(parse(&format!("{gy}-{gm:02}-{gd:02}"), T), Ok(ms), "{s}");
            assert_eq!((b.hour, b.minute), (0, 0));
        }
        let ms = parse("1403-12-01T23:59", T).unwrap();
        let b = Both::at(ms, T).unwrap();
        assert_eq!((b.jalali, b.hour, b.minute), ((1403, 12, 1), 23, 59));
    }

    #[test]
    fn bad_input_says_what_is_wrong() {
        let err = |s: &str| parse(s, T).unwrap_err().to_string();
        assert!(
            err("next week").contains("expected YYYY-MM-DD"),
            "{}",
            err("next week")
        );
        assert!(err("1403/12/01").contains("expected YYYY-MM-DD"));
        assert!(err("").contains("expected YYYY-MM-DD"));
        assert!(
            err("1403-13-01").contains("month 13 does not exist"),
            "{}",
            err("1403-13-01")
        );
        assert!(err("1403-00-01").contains("month 0 does not exist"));
        assert!(err("1403-07-31").contains("no day 31 in Jalali 1403-07, it has 30 days"));
        assert!(err("2025-02-29").contains("no day 29 in Gregorian 2025-02, it has 28 days"));
        assert!(err("1403-12-00").contains("no day 0"));
        assert!(err("1403-12-01T24:00").contains("24:00 is not a time of day"));
        assert!(err("1403-12-01T7:00").contains("expected YYYY-MM-DD"));
        assert!(err("2025-02-30T00:00:00+03:30").contains("2025-02-30T00:00:00+03:30"));
        assert!(err("1969-12-31").contains("before 1970"));
    }

    #[test]
    fn offsets_take_hours_and_minutes_or_minutes() {
        assert_eq!(parse_offset("+03:30"), Ok(210));
        assert_eq!(parse_offset("-05:00"), Ok(-300));
        assert_eq!(parse_offset("+0330"), Ok(210));
        assert_eq!(parse_offset("210"), Ok(210));
        assert_eq!(parse_offset("0"), Ok(0));
        assert!(parse_offset("03:30").is_err());
        assert!(parse_offset("+24:00").is_err());
        assert!(parse_offset("Tehran")
            .unwrap_err()
            .to_string()
            .contains("+03:30"));
    }
}
