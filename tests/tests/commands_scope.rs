//! End to end, real controller, real broker, real agents: remote commands
//! within a caller's scope, their results on the device, expiry, and the
//! log upload with its one-use token and its bounds.
//!
//! - a province technician's selector reaches only its province's devices,
//!   each command runs and its result shows on the device;
//! - naming another province's device (alone, in a selector, or through its
//!   province or county) answers 404, and nothing reaches that device;
//! - upload-logs: the agent sends the tail of its log file, bounded by its
//!   `max_upload_bytes`, and the operator reads it back; by hand with a
//!   command's token (taken from the device's own `cmd` topic), an upload
//!   above the controller's `max_log_bytes` is 413 and stores nothing, a
//!   wrong token is refused, and the token works once;
//! - a command that expired while its device was off is never run: the
//!   controller shows it `expired`, and the agent, back, does not run it.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use fleet_api::types::{CommandSelector, CommandView, CommandsRequest};
use fleet_api::Role;
use fleet_protocol::{DeviceId, Envelope, Payload, PresenceStatus, Topic, TopicKind};
use fleet_tests::builders::{create_token, mqtt_tls};
use fleet_tests::{eventually, within, Controller, EnrolledDevice, Proc};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::Value;

const REGISTRY: &str = "province,county,county_name_en,station_id,station_name\n\
    IR-02,IR-02-SARI,Sari,ST-SARI-1,School 1\n\
    IR-23,IR-23-TEHRAN,Tehran,ST-TEHRAN-1,School 2\n";
const SARI: &str = "BB-02-000101";
const TEHRAN: &str = "BB-23-000101";
/// A device whose agent never runs: the test stands in for it on the broker.
const BY_HAND: &str = "BB-02-000102";
const LOG_LIMIT: u64 = 4096;
const AGENT_MAX_UPLOAD: u64 = 1000;

fn agent_config(log: &std::path::Path, api: &str, marker: &std::path::Path) -> String {
    format!(
        "[mqtt]\nkeep_alive_secs = 5\nbackoff_base_ms = 100\nbackoff_max_ms = 1000\n\
         [health]\nsample_secs = 1\nreport_secs = 2\n\
         [commands]\nreboot = [\"touch\", \"{}\"]\n\
         [logs]\npaths = [\"{}\"]\nmax_upload_bytes = {AGENT_MAX_UPLOAD}\ncontroller_url = \"{api}\"\n",
        marker.display(),
        log.display()
    )
}

fn start_agent(dev: &EnrolledDevice) -> Proc {
    Proc::spawn(
        "fleet-agent",
        &["run", "--config", dev.config.to_str().unwrap()],
        &[],
    )
    .unwrap()
}

async fn online(api: &fleet_api::client::Client, id: &str) {
    eventually(Duration::from_secs(30), "the device online", || async {
        let d = api.device(id).await.map_err(|e| e.to_string())?;
        (d.device.presence == Some(PresenceStatus::Online))
            .then_some(())
            .ok_or(format!("{:?}", d.device.presence))
    })
    .await
    .unwrap();
}

/// The command `id` on the device's page once it is no longer `sent`.
async fn settled(api: &fleet_api::client::Client, device: &str, id: &str) -> CommandView {
    eventually(Duration::from_secs(60), "the command's result", || async {
        let d = api.device(device).await.map_err(|e| e.to_string())?;
        d.commands
            .iter()
            .find(|c| c.id == id && c.state != "sent")
            .cloned()
            .ok_or(format!("{:?}", d.commands))
    })
    .await
    .unwrap()
}

fn selector(f: impl FnOnce(&mut CommandSelector)) -> CommandSelector {
    let mut s = CommandSelector::default();
    f(&mut s);
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_in_scope_run_out_of_scope_are_404_and_logs_upload_once_and_bounded() {
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start_with_env(
        data.path(),
        &[],
        &[(
            "FLEET_CONTROLLER__COMMANDS__MAX_LOG_BYTES",
            &LOG_LIMIT.to_string(),
        )],
    )
    .unwrap();
    ctl.import_registry(REGISTRY).unwrap();
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("agent.log");
    let text: String = (0..500).map(|i| format!("log line {i:04}\n")).collect();
    std::fs::write(&log, &text).unwrap();
    let marker = work.path().join("rebooted");
    let config = agent_config(&log, &ctl.api, &marker);
    let sari = ctl.enrol(SARI, "IR-02", "IR-02-SARI", &config).unwrap();
    let tehran = ctl.enrol(TEHRAN, "IR-23", "IR-23-TEHRAN", &config).unwrap();
    let by_hand = ctl.enrol(BY_HAND, "IR-02", "IR-02-SARI", &config).unwrap();
    let _sari_agent = start_agent(&sari);
    let _tehran_agent = start_agent(&tehran);
    let admin = ctl.client();
    online(&admin, SARI).await;
    online(&admin, TEHRAN).await;
    let tech = create_token(&admin, Role::ProvinceTech, &["IR-02"], "Sari office").await;
    let as_tech = ctl.client_as(Some(&tech.token));

    // In scope: the technician's selector for its province reaches its
    // in-service devices only, and each command's result shows on the device.
    let sent = within(
        20,
        "run-checks for IR-02",
        as_tech.send_commands(&CommandsRequest {
            action: "run-checks".into(),
            selector: selector(|s| s.provinces = vec!["IR-02".parse().unwrap()]),
            expires_in_s: Some(300),
        }),
    )
    .await
    .unwrap();
    let mut reached: Vec<&str> = sent.sent.iter().map(|c| c.device.as_str()).collect();
    reached.sort_unstable();
    assert_eq!(reached, [SARI, BY_HAND], "{sent:?}");
    let to_sari = sent
        .sent
        .iter()
        .find(|c| c.device.as_str() == SARI)
        .unwrap();
    let done = settled(&admin, SARI, &to_sari.id).await;
    assert_eq!(done.state, "ok", "{done:?}");
    assert_eq!(done.action, "run-checks");
    assert!(done.issued_by.contains("Sari office"), "{done:?}");
    let d = within(20, "the device", admin.device(SARI)).await.unwrap();
    assert!(
        d.events.iter().any(|e| e.kind == "command-result"
            && e.event["command-result"]["id"] == to_sari.id.as_str()),
        "the result event is on the device: {:?}",
        d.events
    );

    // Out of scope: 404 however the other province is named; nothing reaches it.
    let e = within(
        20,
        "a command to Tehran's device",
        as_tech.command(
            TEHRAN,
            &fleet_api::types::CommandRequest {
                action: "reboot".into(),
                expires_in_s: None,
            },
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    for (what, sel) in [
        (
            "the device",
            selector(|s| s.devices = vec![DeviceId::parse(TEHRAN).unwrap()]),
        ),
        (
            "its province",
            selector(|s| s.provinces = vec!["IR-23".parse().unwrap()]),
        ),
        (
            "its county",
            selector(|s| s.counties = vec!["IR-23-TEHRAN".parse().unwrap()]),
        ),
        (
            "its device beside one of ours",
            selector(|s| {
                s.devices = vec![
                    DeviceId::parse(SARI).unwrap(),
                    DeviceId::parse(TEHRAN).unwrap(),
                ]
            }),
        ),
    ] {
        let e = within(
            20,
            "a selector naming Tehran",
            as_tech.send_commands(&CommandsRequest {
                action: "reboot".into(),
                selector: sel,
                expires_in_s: None,
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(e.status(), Some(404), "naming {what}: {e}");
    }
    let e = within(
        20,
        "an empty selector",
        as_tech.send_commands(&CommandsRequest {
            action: "reboot".into(),
            selector: CommandSelector::default(),
            expires_in_s: None,
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    let t = within(20, "Tehran's device", admin.device(TEHRAN))
        .await
        .unwrap();
    assert!(
        t.commands.is_empty(),
        "nothing reached it: {:?}",
        t.commands
    );
    // A reboot that slipped out would be ahead of a command sent now on the
    // device's topic (one session, in order): once a later command is
    // answered by both devices, an absent marker means no reboot ran.
    for device in [SARI, TEHRAN] {
        let after = within(
            20,
            "run-checks after the refusals",
            admin.command(
                device,
                &fleet_api::types::CommandRequest {
                    action: "run-checks".into(),
                    expires_in_s: Some(300),
                },
            ),
        )
        .await
        .unwrap();
        assert_eq!(settled(&admin, device, &after.id).await.state, "ok");
        let d = within(20, "the device", admin.device(device))
            .await
            .unwrap();
        assert!(
            d.commands.iter().all(|c| c.action != "reboot"),
            "no reboot held for {device}: {:?}",
            d.commands
        );
    }
    assert!(!marker.exists(), "no device rebooted");

    // upload-logs through fleetctl: the agent sends the tail of its log,
    // within its own bound, and the operator reads exactly that back.
    let (ok, out, err) = ctl
        .fleetctl(&["device", "command", SARI, "upload-logs", "--output", "json"])
        .unwrap();
    assert!(ok, "{out}{err}");
    let sent: Value = serde_json::from_str(&out).unwrap();
    let command = sent["id"].as_str().unwrap().to_owned();
    let done = settled(&admin, SARI, &command).await;
    assert_eq!(done.state, "ok", "{done:?}");
    let bytes = done.upload_bytes.unwrap();
    assert_eq!(
        done.message,
        format!("uploaded {bytes} bytes of logs"),
        "the result says how much"
    );
    assert!(
        bytes <= AGENT_MAX_UPLOAD && bytes > AGENT_MAX_UPLOAD / 2,
        "{bytes}"
    );
    let logs = within(20, "the logs", admin.device_logs(SARI, &command))
        .await
        .unwrap();
    assert_eq!(logs.len() as u64, bytes);
    let logs = String::from_utf8(logs).unwrap();
    let header = format!("==> {} <==\n", log.display());
    let tail = logs.strip_prefix(&header).unwrap();
    assert!(text.ends_with(tail) && tail.len() < text.len(), "{logs}");
    assert!(tail.ends_with("log line 0499\n"), "the newest lines");
    let e = within(20, "logs of Sari as Tehran", {
        let tehran_tech =
            create_token(&admin, Role::ProvinceTech, &["IR-23"], "Tehran office").await;
        let c = ctl.client_as(Some(&tehran_tech.token));
        async move { c.device_logs(SARI, &command).await }
    })
    .await
    .unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");

    // By hand, as the device whose agent is not running: its token from
    // its own cmd topic.
    let (device_mqtt, mut el) = AsyncClient::new(
        mqtt_tls(
            ctl.mqtt_port,
            BY_HAND,
            &by_hand.ca,
            Some((&by_hand.cert, &by_hand.key)),
        ),
        16,
    );
    let cmd_topic = Topic::new(DeviceId::parse(BY_HAND).unwrap(), TopicKind::Cmd);
    within(
        5,
        "subscribing to the cmd topic",
        device_mqtt.subscribe(cmd_topic.to_string(), QoS::AtLeastOnce),
    )
    .await
    .unwrap();
    within(20, "the subscription", async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = el.poll().await.unwrap() {
                break;
            }
        }
    })
    .await;
    let sent = within(
        20,
        "upload-logs to the device by hand",
        admin.command(
            BY_HAND,
            &fleet_api::types::CommandRequest {
                action: "upload-logs".into(),
                expires_in_s: Some(300),
            },
        ),
    )
    .await
    .unwrap();
    let command = within(20, "the command on the cmd topic", async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = el.poll().await.unwrap() {
                let env = Envelope::from_cbor_on(&cmd_topic, &p.payload).unwrap();
                if let Payload::Command(c) = env.payload {
                    if c.id == sent.id {
                        return c;
                    }
                }
            }
        }
    })
    .await;
    let ticket = command
        .upload
        .expect("an upload-logs command carries a ticket");
    assert_eq!(
        ticket.path,
        format!("/api/v1/devices/{BY_HAND}/logs/{}", sent.id)
    );
    let device_api = ctl.client_as(None);
    let stored = data
        .path()
        .join("logs")
        .join(BY_HAND)
        .join(format!("{}.log", sent.id));
    let too_big = vec![b'x'; usize::try_from(LOG_LIMIT).unwrap() + 1];
    let e = within(
        20,
        "an upload above the limit",
        device_api.upload_logs(BY_HAND, &sent.id, &ticket.token, too_big),
    )
    .await
    .unwrap_err();
    assert_eq!(e.status(), Some(413), "{e}");
    assert!(!stored.exists(), "nothing stored");
    let e = within(
        20,
        "a wrong token",
        device_api.upload_logs(BY_HAND, &sent.id, "0".repeat(64).as_str(), b"x".to_vec()),
    )
    .await
    .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    let e = within(
        20,
        "the token for another device's route",
        device_api.upload_logs(SARI, &sent.id, &ticket.token, b"x".to_vec()),
    )
    .await
    .unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    let at_limit = vec![b'y'; usize::try_from(LOG_LIMIT).unwrap()];
    let taken = within(
        20,
        "an upload at the limit",
        device_api.upload_logs(BY_HAND, &sent.id, &ticket.token, at_limit.clone()),
    )
    .await
    .unwrap();
    assert_eq!(taken.bytes, LOG_LIMIT);
    assert_eq!(std::fs::read(&stored).unwrap(), at_limit);
    let e = within(
        20,
        "the token a second time",
        device_api.upload_logs(BY_HAND, &sent.id, &ticket.token, b"again".to_vec()),
    )
    .await
    .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert_eq!(std::fs::read(&stored).unwrap(), at_limit, "unchanged");

    // Audited: the uploads, and the refusals.
    let (ok, out, err) = ctl
        .fleetctl(&["audit", "list", "--device", BY_HAND, "--output", "json"])
        .unwrap();
    assert!(ok, "{err}");
    assert!(
        out.contains("\"device.logs\"") && out.contains("device.logs.failed"),
        "{out}"
    );
    ctl.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_expired_while_the_device_was_off_is_never_run() {
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start_with_env(
        data.path(),
        &[],
        &[("FLEET_CONTROLLER__COMMANDS__CHECK_SECS", "1")],
    )
    .unwrap();
    ctl.import_registry(REGISTRY).unwrap();
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("agent.log");
    let marker = work.path().join("rebooted");
    let dev = ctl
        .enrol(
            SARI,
            "IR-02",
            "IR-02-SARI",
            &agent_config(&log, &ctl.api, &marker),
        )
        .unwrap();
    let mut agent = start_agent(&dev);
    let api = ctl.client();
    online(&api, SARI).await;
    agent.terminate(Duration::from_secs(20)).unwrap();
    eventually(Duration::from_secs(30), "the device offline", || async {
        let d = api.device(SARI).await.map_err(|e| e.to_string())?;
        (d.device.presence == Some(PresenceStatus::Offline))
            .then_some(())
            .ok_or(format!("{:?}", d.device.presence))
    })
    .await
    .unwrap();

    // A reboot that may wait 2 s; the device is off for longer.
    let (ok, out, err) = ctl
        .fleetctl(&[
            "device",
            "command",
            SARI,
            "reboot",
            "--expires-in",
            "2s",
            "--output",
            "json",
        ])
        .unwrap();
    assert!(ok, "{out}{err}");
    let expired_id = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let shown = settled(&api, SARI, &expired_id).await;
    assert_eq!(shown.state, "expired", "{shown:?}");

    // Back after the expiry: the agent gets the command from its session
    // and refuses it; a command sent now runs, after it.
    let _agent = start_agent(&dev);
    online(&api, SARI).await;
    let fresh = within(
        20,
        "run-checks now",
        api.command(
            SARI,
            &fleet_api::types::CommandRequest {
                action: "run-checks".into(),
                expires_in_s: Some(300),
            },
        ),
    )
    .await
    .unwrap();
    assert_eq!(settled(&api, SARI, &fresh.id).await.state, "ok");
    // The agent got the old command from its session and refused it.
    let refusal = eventually(Duration::from_secs(30), "the agent's refusal", || async {
        let d = api.device(SARI).await.map_err(|e| e.to_string())?;
        d.events
            .iter()
            .find(|e| {
                e.kind == "command-result" && e.event["command-result"]["id"] == expired_id.as_str()
            })
            .map(|e| e.event["command-result"].clone())
            .ok_or(format!("{:?}", d.events))
    })
    .await
    .unwrap();
    assert_eq!(refusal["ok"], false, "{refusal}");
    assert!(
        refusal["message"].as_str().unwrap().contains("expired"),
        "{refusal}"
    );
    let d = within(20, "the device", api.device(SARI)).await.unwrap();
    let old = d.commands.iter().find(|c| c.id == expired_id).unwrap();
    assert_eq!(old.state, "expired", "{old:?}");
    assert!(!marker.exists(), "the expired reboot never ran");

    // The same reboot in time does run (the marker is what it leaves).
    let in_time = within(
        20,
        "a reboot in time",
        api.command(
            SARI,
            &fleet_api::types::CommandRequest {
                action: "reboot".into(),
                expires_in_s: Some(300),
            },
        ),
    )
    .await
    .unwrap();
    let done = settled(&api, SARI, &in_time.id).await;
    assert_eq!(
        (done.state.as_str(), done.message.as_str()),
        ("ok", "rebooting")
    );
    eventually(Duration::from_secs(30), "the reboot's marker", || async {
        marker
            .exists()
            .then_some(())
            .ok_or("no marker yet".to_string())
    })
    .await
    .unwrap();
    ctl.stop().unwrap();
}
