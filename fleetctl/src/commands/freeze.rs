//! `fleetctl freeze add|set|list|clear`: the fleet's freeze windows (no
//! device installs anything inside one, no rollout starts or advances).
//! Dates are Jalali (year below 1700: `1403-12-01`) or Gregorian,
//! `YYYY-MM-DD` (local midnight) or `YYYY-MM-DDTHH:MM`, local at
//! `--utc-offset` (Tehran, +03:30, by default), or RFC 3339, or Unix ms;
//! [`crate::dates`] turns them into Unix ms here, so the controller gets
//! exact instants and a bad date is refused before anything is sent.

use fleet_api::types::{FreezeRequest, FreezeWindowRequest, FreezeWindows, TimeSpec};
use fleet_api::Client;
use serde_json::Value;

use super::CommandError;
use crate::dates;
use crate::render::{to_json, Grid, Report, View};

/// A window as the operator wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub from: String,
    pub to: String,
    pub reason: String,
    /// Minutes east of UTC for dates without an offset.
    pub utc_offset_min: i32,
}

impl Window {
    /// The request, both ends in Unix ms; `to` must be after `from`.
    pub fn request(&self) -> Result<FreezeWindowRequest, CommandError> {
        let from = dates::parse(&self.from, self.utc_offset_min)?;
        let to = dates::parse(&self.to, self.utc_offset_min)?;
        if to <= from {
            return Err(CommandError::FreezeEmpty {
                from: dates::show(from, self.utc_offset_min),
                to: dates::show(to, self.utc_offset_min),
            });
        }
        Ok(FreezeWindowRequest {
            from: TimeSpec::UnixMs(from),
            to: TimeSpec::UnixMs(to),
            reason: self.reason.clone(),
        })
    }
}

/// Add one window to those held.
pub async fn add(client: &Client, w: &Window) -> Result<Windows, CommandError> {
    let windows = client.add_freeze(&w.request()?).await?;
    Ok(Windows {
        windows,
        utc_offset_min: w.utc_offset_min,
    })
}

/// Replace the freeze windows with one.
pub async fn set(client: &Client, w: &Window) -> Result<Windows, CommandError> {
    let req = FreezeRequest {
        windows: vec![w.request()?],
    };
    Ok(Windows {
        windows: client.set_freeze(&req).await?,
        utc_offset_min: w.utc_offset_min,
    })
}

pub async fn clear(client: &Client) -> Result<Windows, CommandError> {
    Ok(Windows {
        windows: client.clear_freeze().await?,
        utc_offset_min: dates::TEHRAN_OFFSET_MIN,
    })
}

pub async fn list(client: &Client, utc_offset_min: i32) -> Result<Windows, CommandError> {
    Ok(Windows {
        windows: client.freeze().await?,
        utc_offset_min,
    })
}

/// The windows held, shown at a UTC offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows {
    pub windows: FreezeWindows,
    pub utc_offset_min: i32,
}

impl Report for Windows {
    fn json(&self) -> Value {
        to_json(&self.windows)
    }

    /// Each end local in both calendars (`1403-12-01 00:00 (2025-02-19)
    /// +03:30`), the reason, then UTC and Unix ms.
    fn table(&self) -> View {
        let mut grid = Grid::new(&[
            "from", "to", "reason", "active", "from_utc", "to_utc", "from_ms", "to_ms",
        ]);
        let o = self.utc_offset_min;
        grid.rows = self
            .windows
            .windows
            .iter()
            .map(|w| {
                vec![
                    dates::show(w.from_ms, o),
                    dates::show(w.to_ms, o),
                    w.reason.clone(),
                    if w.active { "yes" } else { "no" }.to_owned(),
                    w.from.clone(),
                    w.to.clone(),
                    w.from_ms.to_string(),
                    w.to_ms.to_string(),
                ]
            })
            .collect();
        let footer = if self.windows.windows.is_empty() {
            "no freeze window\n".to_owned()
        } else {
            String::new()
        };
        View::Grid { grid, footer }
    }

    fn note(&self) -> Option<String> {
        (self.windows.republished > 0).then(|| {
            format!(
                "the {} devices with a desired state are sent the windows again",
                self.windows.republished
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{render, Output};
    use fleet_api::types::FreezeWindowView;

    fn window(from: &str, to: &str) -> Window {
        Window {
            from: from.into(),
            to: to.into(),
            reason: "election day".into(),
            utc_offset_min: dates::TEHRAN_OFFSET_MIN,
        }
    }

    #[test]
    fn jalali_dates_become_unix_ms_at_tehran_midnight() {
        let r = window("1403-12-01", "1403-12-03").request().unwrap();
        // 1403-12-01 00:00 +03:30 = 2025-02-18T20:30:00Z.
        assert_eq!(r.from, TimeSpec::UnixMs(1_739_910_600_000));
        assert_eq!(r.to, TimeSpec::UnixMs(1_739_910_600_000 + 2 * 86_400_000));
        assert_eq!(r.reason, "election day");
        let g = window("2025-02-19", "1750000000000").request().unwrap();
        assert_eq!(g.from, r.from);
        assert_eq!(g.to, TimeSpec::UnixMs(1_750_000_000_000));
    }

    #[test]
    fn a_window_that_ends_before_it_starts_or_a_bad_date_is_refused() {
        let e = window("1403-12-03", "1403-12-01").request().unwrap_err();
        assert!(
            e.to_string()
                .contains("1403-12-03 00:00 (2025-02-21) +03:30"),
            "{e}"
        );
        let e = window("1402-12-30", "1403-01-02").request().unwrap_err();
        assert!(e.to_string().contains("it has 29 days"), "{e}");
    }

    #[test]
    fn the_list_shows_both_calendars_and_the_reason() {
        let w = Windows {
            windows: FreezeWindows {
                windows: vec![FreezeWindowView {
                    from_ms: 1_739_910_600_000,
                    to_ms: 1_740_083_400_000,
                    from: "2025-02-18T20:30:00Z".into(),
                    to: "2025-02-20T20:30:00Z".into(),
                    active: false,
                    reason: "election day".into(),
                }],
                republished: 0,
            },
            utc_offset_min: dates::TEHRAN_OFFSET_MIN,
        };
        let t = render(&w, Output::Table);
        let row = t.lines().nth(1).unwrap();
        assert!(
            row.starts_with(
                "1403-12-01 00:00 (2025-02-19) +03:30  1403-12-03 00:00 (2025-02-21) +03:30  election day  no"
            ),
            "{t}"
        );
        assert!(row.contains("2025-02-18T20:30:00Z"), "{t}");
        let c = render(&w, Output::Csv);
        assert!(c.contains(",election day,no,2025-02-18T20:30:00Z,"), "{c}");
    }
}
