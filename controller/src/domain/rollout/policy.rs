//! When a rollout pauses, advances, releases and gives up on a device.

use std::fmt;

use super::error::{HoursError, PlanError};

/// The brakes and limits of a rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Pause when failed+timed-out over a wave's non-skipped members, in
    /// percent, is ABOVE this (judged on each failure, in the failed
    /// device's wave: the current one or an earlier one).
    pub failure_threshold_pct: f64,
    /// A wave is done when succeeded over its non-skipped members, in
    /// percent, is AT OR ABOVE this.
    pub success_threshold_pct: f64,
    /// Released+Downloading members per province at most; 0 = no limit.
    pub max_downloads_per_province: u32,
    /// Releases only inside these hours; `None` = any time.
    pub allowed_hours: Option<AllowedHours>,
    /// Released and no result after this long = timed out.
    pub device_timeout_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            failure_threshold_pct: 2.0,
            success_threshold_pct: 95.0,
            max_downloads_per_province: 40,
            allowed_hours: None,
            device_timeout_ms: 2 * 60 * 60 * 1000,
        }
    }
}

impl Policy {
    /// Thresholds within 0..=100 and a timeout above zero.
    pub fn check(&self) -> Result<(), PlanError> {
        let pct = |field, v: f64| {
            if (0.0..=100.0).contains(&v) {
                Ok(())
            } else {
                Err(PlanError::Policy {
                    field,
                    value: v.to_string(),
                    why: "a percentage within 0..=100",
                })
            }
        };
        pct("failure_threshold_pct", self.failure_threshold_pct)?;
        pct("success_threshold_pct", self.success_threshold_pct)?;
        if self.device_timeout_ms == 0 {
            return Err(PlanError::Policy {
                field: "device_timeout_ms",
                value: "0".into(),
                why: "every device would time out at once",
            });
        }
        Ok(())
    }
}

const DAY_MIN: i64 = 24 * 60;

/// Minutes of the local day `[from_min, to_min)` in which devices may be
/// released; wraps past midnight when `from_min > to_min` (22:00-04:00).
/// The local day is UTC shifted by `utc_offset_min`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedHours {
    pub from_min: u16,
    pub to_min: u16,
    pub utc_offset_min: i32,
}

impl AllowedHours {
    /// Asia/Tehran (+03:30; Iran keeps no daylight saving time since 2022).
    pub const TEHRAN_OFFSET_MIN: i32 = 210;

    /// `"02:00-06:00"`; `24:00` may end a range. An empty range (`from = to`) is refused.
    pub fn parse(text: &str, utc_offset_min: i32) -> Result<Self, HoursError> {
        let bad = |why| HoursError::Syntax {
            given: text.to_owned(),
            why,
        };
        if i64::from(utc_offset_min).abs() > 14 * 60 {
            return Err(HoursError::Offset {
                offset_min: utc_offset_min,
            });
        }
        let (from, to) = text.trim().split_once('-').ok_or_else(|| bad("no '-'"))?;
        let minute = |s: &str| -> Result<u16, HoursError> {
            let (h, m) = s.trim().split_once(':').ok_or_else(|| bad("no ':'"))?;
            let num = |x: &str| {
                if x.len() == 2 && x.bytes().all(|b| b.is_ascii_digit()) {
                    x.parse::<u16>().map_err(|_| bad("not a number"))
                } else {
                    Err(bad("two digits for hours and for minutes"))
                }
            };
            let (h, m) = (num(h)?, num(m)?);
            if m > 59 || h > 24 || (h == 24 && m > 0) {
                return Err(bad("not a time of day"));
            }
            Ok(h * 60 + m)
        };
        let (from_min, to_min) = (minute(from)?, minute(to)?);
        if from_min == 24 * 60 {
            return Err(bad("a range cannot start at 24:00"));
        }
        if from_min == to_min || (from_min == 0 && to_min == 24 * 60) {
            return Err(bad("an empty or whole-day range: leave the hours out"));
        }
        Ok(AllowedHours {
            from_min,
            to_min,
            utc_offset_min,
        })
    }

    /// The minute of the local day at `now_ms`.
    pub fn local_minute(&self, now_ms: u64) -> u16 {
        let utc_min = i64::try_from(now_ms / 60_000).expect("ms/60000 fits i64");
        let m = (utc_min + i64::from(self.utc_offset_min)).rem_euclid(DAY_MIN);
        u16::try_from(m).expect("a minute of the day")
    }

    /// Whether releases are allowed at `now_ms`.
    pub fn contains(&self, now_ms: u64) -> bool {
        let m = self.local_minute(now_ms);
        if self.from_min < self.to_min {
            (self.from_min..self.to_min).contains(&m)
        } else {
            m >= self.from_min || m < self.to_min
        }
    }
}

impl fmt::Display for AllowedHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        let o = self.utc_offset_min;
        let sign = if o < 0 { '-' } else { '+' };
        write!(
            f,
            "{}-{} (UTC{sign}{:02}:{:02})",
            hm(self.from_min),
            hm(self.to_min),
            o.abs() / 60,
            o.abs() % 60
        )
    }
}
