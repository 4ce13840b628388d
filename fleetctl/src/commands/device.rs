//! `fleetctl device ID`: one device in detail; `fleetctl device
//! ship|deploy|retire ID`: move it through its life.

use std::fmt::Write as _;

use fleet_api::{Client, DeviceDetail, Lifecycle, LifecycleMoved};
use serde_json::Value;

use super::CommandError;
use crate::render::{cell, printable, to_json, Report, View};

pub async fn show(client: &Client, id: Option<String>) -> Result<Device, CommandError> {
    let id = id.ok_or(CommandError::NoDevice)?;
    Ok(Device(client.device(&id).await?))
}

/// A device: registration, last state and health, recent events.
#[derive(Debug, Clone, PartialEq)]
pub struct Device(pub DeviceDetail);

impl Report for Device {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    /// One line per fact, the same for the table and the CSV.
    fn table(&self) -> View {
        let d = &self.0.device;
        let mut out = String::new();
        let facts = [
            ("id", d.id.to_string()),
            ("model", d.model.to_string()),
            ("province", d.province.to_string()),
            ("county", cell(&d.county)),
            ("station", cell(&d.station)),
            ("lifecycle", d.lifecycle.to_string()),
            ("readiness", d.readiness.to_string()),
            ("presence", cell(&d.presence)),
            ("firmware", cell(&d.firmware)),
            ("last_seen_ms", cell(&d.last_seen_ms)),
        ];
        for (k, v) in facts {
            let _ = writeln!(out, "{k:<13} {}", printable(&v));
        }
        for c in self.0.state.iter().flat_map(|s| &s.checks) {
            let _ = writeln!(
                out,
                "check         {} {} {}",
                printable(&c.name),
                if c.passed { "ok" } else { "FAIL" },
                printable(&cell(&c.message))
            );
        }
        if let Some(health) = &self.0.health {
            let _ = writeln!(out, "health        {}", to_json(health));
        }
        for e in &self.0.events {
            let _ = writeln!(out, "event #{:<6} {}", e.seq, e.event);
        }
        View::Text(out)
    }
}

/// Where `device ship|deploy|retire` takes a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    Ship,
    Deploy,
    Retire,
}

impl Move {
    fn to(self) -> Lifecycle {
        match self {
            Move::Ship => Lifecycle::Shipped,
            Move::Deploy => Lifecycle::Deployed,
            Move::Retire => Lifecycle::Retired,
        }
    }
}

pub async fn lifecycle(client: &Client, id: &str, to: Move) -> Result<Moved, CommandError> {
    Ok(Moved(client.move_device(id, to.to()).await?))
}

/// A device's lifecycle after a move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved(pub LifecycleMoved);

impl Report for Moved {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    fn table(&self) -> View {
        View::Text(format!("{} is now {}\n", self.0.device, self.0.lifecycle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{render, Output};
    use serde_json::json;

    fn detail() -> Device {
        Device(
            serde_json::from_value(json!({
                "device": {
                    "id": "BB-02-000001", "model": "ballot-box-v2", "province": "IR-02",
                    "county": "IR-02-SARI", "station": null, "lifecycle": "deployed",
                    "readiness": "unhealthy", "presence": "online", "firmware": "2.4.0",
                    "last_seen_ms": 1700000000000u64
                },
                "state": {
                    "model": "ballot-box-v2", "firmware": "2.4.0", "agent": "0.1.0",
                    "update": "idle",
                    "checks": [
                        {"name": "printer", "passed": false, "message": "no paper"},
                        {"name": "touch", "passed": true}
                    ],
                    "config_rev": 0
                },
                "health": null,
                "health_at_ms": null,
                "events": [
                    {"seq": 7, "at_ms": 1, "received_ms": 2, "kind": "boot",
                     "event": {"boot": {"reason": "power"}}}
                ]
            }))
            .unwrap(),
        )
    }

    #[test]
    fn detail_names_each_fact_failed_checks_and_events() {
        let t = render(&detail(), Output::Table);
        assert!(t.starts_with("id            BB-02-000001\n"), "{t}");
        assert!(t.contains("\nstation       \n"), "{t}");
        assert!(t.contains("\npresence      online\n"), "{t}");
        assert!(t.contains("\ncheck         printer FAIL no paper\n"), "{t}");
        assert!(t.contains("\ncheck         touch ok \n"), "{t}");
        assert!(
            t.contains("\nevent #7      {\"boot\":{\"reason\":\"power\"}}\n"),
            "{t}"
        );
        assert!(!t.contains("\nhealth "), "no health report, no line: {t}");
        assert_eq!(render(&detail(), Output::Csv), t, "CSV is the same text");
    }

    #[test]
    fn a_reported_message_cannot_forge_a_line_or_drive_the_terminal() {
        let mut d = detail();
        d.0.state.as_mut().unwrap().checks[0].message =
            Some("no paper\ncheck         printer ok \u{1b}[32mfixed".into());
        let t = render(&d, Output::Table);
        assert!(
            t.contains("\ncheck         printer FAIL no paper\\ncheck         printer ok \\u{1b}[32mfixed\n"),
            "{t}"
        );
        assert!(!t.contains('\u{1b}'), "{t:?}");
    }

    #[test]
    fn a_move_says_where_the_device_is_now() {
        let m = Moved(LifecycleMoved {
            device: "BB-A".parse().unwrap(),
            lifecycle: Lifecycle::Retired,
        });
        assert_eq!(render(&m, Output::Table), "BB-A is now retired\n");
    }
}
