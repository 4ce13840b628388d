//! `fleetctl device ID`: one device in detail; `fleetctl device
//! ship|deploy|retire ID`: move it through its life; `fleetctl device
//! cmd ID ACTION` (or `cmd --province P … ACTION`): send one device, or
//! every device a selector names, a one-off command; `fleetctl device logs
//! ID`: the logs it uploaded.

use std::fmt::Write as _;
use std::path::Path;

use fleet_api::types::{
    CommandRequest, CommandSelector, CommandSent, CommandsRequest, CommandsSent,
    DeviceUpdateRequest, DeviceUpdateSet,
};
use fleet_api::{Client, DeviceDetail, Lifecycle, LifecycleMoved};
use serde_json::{json, Value};

use super::CommandError;
use crate::render::{cell, printable, to_json, Grid, Report, View};

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
        let desired = &self.0.desired;
        let _ = writeln!(
            out,
            "desired       config {}{}",
            desired.config_rev,
            desired
                .firmware
                .as_ref()
                .map(|f| format!(", firmware {f}"))
                .unwrap_or_default()
        );
        if self.0.missing_events > 0 {
            let _ = writeln!(
                out,
                "missing       {} events in {} gaps",
                self.0.missing_events,
                self.0.gaps.len()
            );
        }
        for g in &self.0.gaps {
            let _ = writeln!(
                out,
                "gap           #{}..#{} seen at {}",
                g.from_seq, g.to_seq, g.detected_ms
            );
        }
        for w in &desired.freeze {
            let _ = writeln!(out, "freeze        {} .. {} (Unix ms)", w.from_ms, w.to_ms);
        }
        if let Some(a) = &desired.agent {
            let _ = writeln!(out, "desired       agent {a}");
        }
        if let Some(u) = &self.0.update {
            let _ = writeln!(
                out,
                "update        {} {} {}{}{}",
                u.artifact,
                u.version,
                u.outcome
                    .as_deref()
                    .unwrap_or_else(|| u.phase.as_deref().unwrap_or("started")),
                if u.outcome.is_none() && u.total > 0 {
                    format!(" {}/{} bytes", u.bytes, u.total)
                } else {
                    String::new()
                },
                if u.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", printable(&u.message))
                }
            );
        }
        if let Some(d) = &self.0.outbox_drops {
            let _ = writeln!(
                out,
                "dropped       {} health samples and {} other events offline ({} to {}, device clock; reported {})",
                d.health_samples, d.other_events, d.oldest_ms, d.newest_ms, d.last_report_ms
            );
        }
        for c in &self.0.commands {
            let _ = writeln!(
                out,
                "command       {} {} {}{}{}",
                c.id,
                c.action,
                c.state,
                c.upload_bytes
                    .map(|b| format!(
                        " ({b} bytes of logs: fleetctl device logs {} --command {})",
                        d.id, c.id
                    ))
                    .unwrap_or_default(),
                if c.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", printable(&c.message))
                }
            );
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

/// `90s`, `10m`, `2h` (or plain seconds) as seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => s.split_at(at),
        None => (s, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and s, m or h (e.g. 10m)"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{s:?}: the unit is s, m or h (e.g. 10m)")),
    };
    n.checked_mul(unit)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// The actions, by the names the controller takes (`renew-cert` is
/// `renew-certificate`); anything else is refused before sending.
pub fn action_name(a: &str) -> Result<String, CommandError> {
    match a {
        "reboot" | "run-checks" | "upload-logs" | "renew-certificate" => Ok(a.to_owned()),
        "renew-cert" => Ok("renew-certificate".to_owned()),
        other => Err(CommandError::Usage(format!(
            "{other:?} is not an action: reboot, run-checks, upload-logs or renew-cert"
        ))),
    }
}

/// `--province`, `--county`, `--model`, `--readiness` as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub provinces: Vec<String>,
    pub counties: Vec<String>,
    pub model: Option<String>,
    pub readiness: Option<String>,
}

impl Selector {
    fn is_empty(&self) -> bool {
        self.provinces.is_empty()
            && self.counties.is_empty()
            && self.model.is_none()
            && self.readiness.is_none()
    }
}

/// Who gets a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    One {
        id: String,
        action: String,
    },
    Many {
        selector: CommandSelector,
        action: String,
    },
}

impl Target {
    /// `ID ACTION` without a selector, `ACTION` with one; the selector's
    /// values checked here.
    pub fn of(args: Vec<String>, s: Selector) -> Result<Target, CommandError> {
        let usage = |m: &str| CommandError::Usage(m.to_owned());
        match (args.as_slice(), s.is_empty()) {
            ([id, action], true) => Ok(Target::One {
                id: id.clone(),
                action: action_name(action)?,
            }),
            ([_], true) => Err(usage(
                "which devices? fleetctl device cmd ID ACTION, or --province P [--county C] [--model M] [--readiness R] ACTION",
            )),
            ([action], false) => {
                if s.provinces.is_empty() && s.counties.is_empty() {
                    return Err(usage(
                        "a selector names --province or --county (--model and --readiness narrow it)",
                    ));
                }
                let bad = |what: &str, v: &str, e: String| {
                    CommandError::Usage(format!("--{what} {v:?}: {e}"))
                };
                let selector = CommandSelector {
                    provinces: s
                        .provinces
                        .iter()
                        .map(|p| p.parse().map_err(|e: fleet_protocol::IdError| bad("province", p, e.to_string())))
                        .collect::<Result<_, _>>()?,
                    counties: s
                        .counties
                        .iter()
                        .map(|c| c.parse().map_err(|e: fleet_protocol::IdError| bad("county", c, e.to_string())))
                        .collect::<Result<_, _>>()?,
                    model: s
                        .model
                        .as_deref()
                        .map(|m| m.parse().map_err(|e: fleet_protocol::IdError| bad("model", m, e.to_string())))
                        .transpose()?,
                    readiness: s
                        .readiness
                        .as_deref()
                        .map(|r| r.parse().map_err(|e: String| bad("readiness", r, e)))
                        .transpose()?,
                    devices: Vec::new(),
                };
                Ok(Target::Many {
                    selector,
                    action: action_name(action)?,
                })
            }
            (_, false) => Err(usage(
                "with a selector, give the action only: fleetctl device cmd --province P ACTION",
            )),
            _ => Err(usage("fleetctl device cmd ID ACTION")),
        }
    }
}

pub async fn command(
    client: &Client,
    id: &str,
    action: String,
    expires_in_s: Option<u64>,
) -> Result<Sent, CommandError> {
    let req = CommandRequest {
        action,
        expires_in_s,
    };
    Ok(Sent(client.command(id, &req).await?))
}

/// One command per device the selector names (in the token's scope).
pub async fn command_many(
    client: &Client,
    selector: CommandSelector,
    action: String,
    expires_in_s: Option<u64>,
) -> Result<SentMany, CommandError> {
    let req = CommandsRequest {
        action,
        selector,
        expires_in_s,
    };
    Ok(SentMany(client.send_commands(&req).await?))
}

/// The commands a selector made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMany(pub CommandsSent);

impl Report for SentMany {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    /// A row per command sent; the devices skipped, and why, after.
    fn table(&self) -> View {
        let mut grid = Grid::new(&["id", "device", "action", "expires_at_ms"]);
        grid.rows = self
            .0
            .sent
            .iter()
            .map(|c| {
                vec![
                    c.id.clone(),
                    c.device.to_string(),
                    c.action.clone(),
                    c.expires_at_ms.to_string(),
                ]
            })
            .collect();
        let mut footer = format!("{} commands sent\n", self.0.sent.len());
        for s in &self.0.skipped {
            let _ = writeln!(footer, "skipped {}: {}", s.device, printable(&s.reason));
        }
        View::Grid { grid, footer }
    }
}

/// `device logs ID [--command CMD] [-o FILE]`.
pub async fn logs(
    client: &Client,
    id: &str,
    command: Option<String>,
    out: Option<&Path>,
) -> Result<Logs, CommandError> {
    let command = match command {
        Some(c) => c,
        None => client
            .device(id)
            .await?
            .commands
            .into_iter()
            .find(|c| c.action == "upload-logs" && c.upload_bytes.is_some())
            .map(|c| c.id)
            .ok_or_else(|| {
                CommandError::Usage(format!(
                    "{id} has uploaded no logs: fleetctl device cmd {id} upload-logs, then wait for its answer"
                ))
            })?,
    };
    let bytes = client.device_logs(id, &command).await?;
    if let Some(path) = out {
        std::fs::write(path, &bytes).map_err(|source| CommandError::Write {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(Logs {
        device: id.to_owned(),
        command,
        bytes,
        written_to: out.map(|p| p.display().to_string()),
    })
}

/// A device's uploaded logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logs {
    pub device: String,
    pub command: String,
    pub bytes: Vec<u8>,
    /// `-o FILE`: the bytes are there, not printed.
    pub written_to: Option<String>,
}

impl Report for Logs {
    fn json(&self) -> Value {
        json!({
            "device": self.device,
            "command": self.command,
            "bytes": self.bytes.len(),
            "written_to": self.written_to,
            "text": self.written_to.is_none().then(|| String::from_utf8_lossy(&self.bytes)),
        })
    }

    fn table(&self) -> View {
        match &self.written_to {
            Some(_) => View::Text(String::new()),
            None => View::Text(String::from_utf8_lossy(&self.bytes).into_owned()),
        }
    }

    fn note(&self) -> Option<String> {
        self.written_to.as_ref().map(|path| {
            format!(
                "{} bytes of {}'s logs (command {}) written to {path}",
                self.bytes.len(),
                self.device,
                self.command
            )
        })
    }
}

/// `device update ID --version V [--agent] [--platform P]`.
pub async fn update(
    client: &Client,
    id: &str,
    version: String,
    agent: bool,
    platform: Option<String>,
) -> Result<UpdateSet, CommandError> {
    let req = DeviceUpdateRequest {
        artifact: if agent { "agent" } else { "firmware" }.to_owned(),
        version,
        platform,
        attempt: None,
    };
    Ok(UpdateSet(client.update_device(id, &req).await?))
}

/// A device's new desired artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateSet(pub DeviceUpdateSet);

impl Report for UpdateSet {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    fn table(&self) -> View {
        View::Text(format!(
            "{} should now run {} {} ({}); its progress shows on `fleetctl device {}`\n",
            self.0.device, self.0.artifact, self.0.version, self.0.target, self.0.device
        ))
    }
}

/// A command sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent(pub CommandSent);

impl Report for Sent {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    fn table(&self) -> View {
        let mut grid = Grid::new(&["id", "device", "action", "expires_at_ms"]);
        grid.rows.push(vec![
            self.0.id.clone(),
            self.0.device.to_string(),
            self.0.action.clone(),
            self.0.expires_at_ms.to_string(),
        ]);
        View::grid(grid)
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
    fn durations_take_seconds_minutes_and_hours() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("45"), Ok(45));
        assert!(parse_duration("10d").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn a_sent_command_shows_its_id_as_a_table_csv_and_json() {
        let s = Sent(CommandSent {
            id: "cmd-0011223344556677".into(),
            device: "BB-A".parse().unwrap(),
            action: "reboot".into(),
            expires_at_ms: 600_000,
        });
        assert_eq!(
            render(&s, Output::Csv),
            "id,device,action,expires_at_ms\ncmd-0011223344556677,BB-A,reboot,600000\n"
        );
        assert!(render(&s, Output::Table).contains("cmd-0011223344556677"));
        let j: Value = serde_json::from_str(&render(&s, Output::Json)).unwrap();
        assert_eq!(j["id"], "cmd-0011223344556677");
    }

    #[test]
    fn gaps_drops_and_the_desired_state_have_their_lines() {
        let mut d = detail();
        d.0.desired.config_rev = 4;
        d.0.missing_events = 3;
        d.0.gaps = vec![fleet_api::types::EventGap {
            boot: Some(9),
            from_seq: 3,
            to_seq: 5,
            detected_ms: 77,
        }];
        d.0.outbox_drops = Some(fleet_api::types::OutboxDrops {
            health_samples: 42,
            other_events: 1,
            reports: 2,
            oldest_ms: 1,
            newest_ms: 9,
            last_report_ms: 12,
        });
        let t = render(&d, Output::Table);
        assert!(t.contains("\ndesired       config 4\n"), "{t}");
        assert!(t.contains("\nmissing       3 events in 1 gaps\n"), "{t}");
        assert!(t.contains("\ngap           #3..#5 seen at 77\n"), "{t}");
        assert!(
            t.contains("\ndropped       42 health samples and 1 other events offline"),
            "{t}"
        );
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cmd_takes_an_id_and_an_action_or_a_selector_and_an_action() {
        assert_eq!(
            Target::of(args(&["BB-23-000001", "renew-cert"]), Selector::default()).unwrap(),
            Target::One {
                id: "BB-23-000001".into(),
                action: "renew-certificate".into()
            }
        );
        let s = Selector {
            provinces: vec!["IR-23".into()],
            counties: vec!["IR-23-TEH".into()],
            model: Some("ballot-box-v2".into()),
            readiness: Some("offline".into()),
        };
        let Target::Many { selector, action } =
            Target::of(args(&["upload-logs"]), s.clone()).unwrap()
        else {
            panic!("a selector makes many")
        };
        assert_eq!(action, "upload-logs");
        assert_eq!(
            serde_json::to_value(&selector).unwrap(),
            json!({"provinces": ["IR-23"], "counties": ["IR-23-TEH"], "model": "ballot-box-v2", "readiness": "offline"})
        );
        let err = |a: &[&str], s: Selector| Target::of(args(a), s).unwrap_err().to_string();
        assert!(err(&["BB-1"], Selector::default()).contains("which devices?"));
        assert!(err(&["BB-1", "reboot"], s.clone()).contains("the action only"));
        assert!(err(&["BB-1", "format-disk"], Selector::default()).contains("is not an action"));
        let only_model = Selector {
            model: Some("ballot-box-v2".into()),
            ..Selector::default()
        };
        assert!(err(&["reboot"], only_model).contains("--province or --county"));
        let bad = Selector {
            provinces: vec!["Tehran".into()],
            ..Selector::default()
        };
        assert!(err(&["reboot"], bad).contains("--province \"Tehran\""));
        let bad = Selector {
            provinces: vec!["IR-23".into()],
            readiness: Some("sleepy".into()),
            ..Selector::default()
        };
        assert!(err(&["reboot"], bad).contains("unknown reason"));
    }

    #[test]
    fn commands_to_a_selector_list_each_sent_and_each_skipped() {
        let many = SentMany(CommandsSent {
            sent: vec![CommandSent {
                id: "cmd-00112233445566aa".into(),
                device: "BB-A".parse().unwrap(),
                action: "reboot".into(),
                expires_at_ms: 600_000,
            }],
            skipped: vec![fleet_api::types::CommandSkipped {
                device: "BB-B".parse().unwrap(),
                reason: "retired".into(),
            }],
        });
        let t = render(&many, Output::Table);
        assert!(
            t.ends_with("1 commands sent\nskipped BB-B: retired\n"),
            "{t}"
        );
        assert_eq!(
            render(&many, Output::Csv),
            "id,device,action,expires_at_ms\ncmd-00112233445566aa,BB-A,reboot,600000\n"
        );
    }

    #[test]
    fn logs_print_escaped_or_go_to_a_file_untouched() {
        let l = Logs {
            device: "BB-A".into(),
            command: "cmd-1".into(),
            bytes: b"==> /var/log/agent.log <==\nok \x1b[31mred\n".to_vec(),
            written_to: None,
        };
        assert_eq!(
            render(&l, Output::Table),
            "==> /var/log/agent.log <==\nok \\u{1b}[31mred\n"
        );
        let to_file = Logs {
            written_to: Some("/tmp/x.log".into()),
            ..l
        };
        assert_eq!(render(&to_file, Output::Table), "");
        assert!(to_file.note().unwrap().contains("written to /tmp/x.log"));
    }

    #[test]
    fn the_detail_lists_its_commands_with_their_answers() {
        let mut d = detail();
        d.0.commands = vec![fleet_api::types::CommandView {
            id: "cmd-1".into(),
            action: "upload-logs".into(),
            issued_ms: 1,
            expires_ms: 2,
            issued_by: "ops".into(),
            state: "ok".into(),
            result_ms: Some(2),
            message: "uploaded 812 bytes".into(),
            upload_bytes: Some(812),
        }];
        let t = render(&d, Output::Table);
        assert!(
            t.contains("\ncommand       cmd-1 upload-logs ok (812 bytes of logs: fleetctl device logs BB-02-000001 --command cmd-1): uploaded 812 bytes\n"),
            "{t}"
        );
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
