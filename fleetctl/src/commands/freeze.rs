//! `fleetctl freeze set FROM TO | list | clear`: the fleet's freeze window
//! (no device installs anything inside it). Times are RFC 3339
//! (`2026-06-18T00:00:00+03:30`) or Unix milliseconds; the controller
//! parses them.

use fleet_api::types::{FreezeRequest, FreezeWindowRequest, FreezeWindows, TimeSpec};
use fleet_api::Client;
use serde_json::Value;

use super::CommandError;
use crate::render::{to_json, Grid, Report, View};

fn spec(s: String) -> TimeSpec {
    match s.parse::<u64>() {
        Ok(ms) => TimeSpec::UnixMs(ms),
        Err(_) => TimeSpec::Text(s),
    }
}

/// Replace the freeze windows with one, `from` to `to`.
pub async fn set(client: &Client, from: String, to: String) -> Result<Windows, CommandError> {
    let req = FreezeRequest {
        windows: vec![FreezeWindowRequest {
            from: spec(from),
            to: spec(to),
            reason: String::new(),
        }],
    };
    Ok(Windows(client.set_freeze(&req).await?))
}

pub async fn clear(client: &Client) -> Result<Windows, CommandError> {
    Ok(Windows(client.set_freeze(&FreezeRequest::default()).await?))
}

pub async fn list(client: &Client) -> Result<Windows, CommandError> {
    Ok(Windows(client.freeze().await?))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows(pub FreezeWindows);

impl Report for Windows {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    fn table(&self) -> View {
        let mut grid = Grid::new(&["from", "to", "active", "from_ms", "to_ms"]);
        grid.rows = self
            .0
            .windows
            .iter()
            .map(|w| {
                vec![
                    w.from.clone(),
                    w.to.clone(),
                    if w.active { "yes" } else { "no" }.to_owned(),
                    w.from_ms.to_string(),
                    w.to_ms.to_string(),
                ]
            })
            .collect();
        let footer = if self.0.windows.is_empty() {
            "no freeze window\n".to_owned()
        } else {
            String::new()
        };
        View::Grid { grid, footer }
    }

    fn note(&self) -> Option<String> {
        (self.0.republished > 0).then(|| {
            format!(
                "sent again to the {} devices with a desired state",
                self.0.republished
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_unix_ms_and_anything_else_is_left_to_the_controller() {
        assert_eq!(
            spec("1750000000000".into()),
            TimeSpec::UnixMs(1_750_000_000_000)
        );
        assert_eq!(
            spec("2026-06-18T00:00:00Z".into()),
            TimeSpec::Text("2026-06-18T00:00:00Z".into())
        );
    }
}
