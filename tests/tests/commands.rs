//! End to end: an operator sends a command to a real `fleet-agent` through
//! `fleetctl device command`, and the result comes back as the device's
//! `command-result` event. `renew-certificate` makes the device get and
//! use a new certificate: a new serial in `fleetctl pki status`, named in
//! the result, and the agent's certificate file replaced.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::time::Duration;

use fleet_protocol::PresenceStatus;
use fleet_tests::{eventually, within, Controller, Proc};
use serde_json::Value;

const REGISTRY: &str = "province,county,county_name_en,station_id,station_name\n\
    IR-02,IR-02-SARI,Sari,ST-SARI-1,School 1\n";
const ID: &str = "BB-02-000888";

fn serials(ctl: &Controller) -> BTreeSet<String> {
    let (ok, out, err) = ctl
        .fleetctl(&["pki", "status", "--output", "json"])
        .unwrap();
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["devices_expiring_first"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["device"] == ID)
        .map(|d| d["serial"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn renew_certificate_on_command_gives_the_device_a_new_serial_and_answers() {
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start(data.path(), &[]).unwrap();
    ctl.import_registry(REGISTRY).unwrap();
    let dev = ctl
        .enrol(
            ID,
            "IR-02",
            "IR-02-SARI",
            "[mqtt]\nkeep_alive_secs = 5\nbackoff_base_ms = 100\nbackoff_max_ms = 1000\n\
             [health]\nsample_secs = 1\nreport_secs = 2\n\
             [certificate]\nanswer_timeout_secs = 10\nretry_secs = 3\n",
        )
        .unwrap();
    let _agent = Proc::spawn(
        "fleet-agent",
        &["run", "--config", dev.config.to_str().unwrap()],
        &[],
    )
    .unwrap();
    let api = ctl.client();
    eventually(Duration::from_secs(30), "the device online", || async {
        let d = api.device(ID).await.map_err(|e| e.to_string())?;
        (d.device.presence == Some(PresenceStatus::Online))
            .then_some(())
            .ok_or(format!("{:?}", d.device.presence))
    })
    .await
    .unwrap();
    let before = serials(&ctl);
    assert_eq!(before.len(), 1, "the enrolment certificate: {before:?}");

    let (ok, out, err) = ctl
        .fleetctl(&[
            "device",
            "command",
            ID,
            "renew-certificate",
            "--expires-in",
            "5m",
            "--output",
            "json",
        ])
        .unwrap();
    assert!(ok, "{out}{err}");
    let sent: Value = serde_json::from_str(&out).unwrap();
    let command = sent["id"].as_str().unwrap().to_owned();
    assert_eq!(sent["action"], "renew-certificate");

    // The answer: a command-result event with the command's id.
    let message = eventually(Duration::from_secs(60), "the command's result", || async {
        let d = api.device(ID).await.map_err(|e| e.to_string())?;
        d.events
            .iter()
            .find(|e| {
                e.kind == "command-result" && e.event["command-result"]["id"] == command.as_str()
            })
            .map(|e| e.event["command-result"].clone())
            .ok_or(format!("{:?}", d.events))
    })
    .await
    .unwrap();
    assert_eq!(message["ok"], true, "{message}");

    // A new serial, named in the result; the agent's file holds the new certificate.
    let after = serials(&ctl);
    let new: Vec<&String> = after.difference(&before).collect();
    assert_eq!(new.len(), 1, "one new certificate: {before:?} → {after:?}");
    let text = message["message"].as_str().unwrap().to_lowercase();
    assert!(
        text.contains(&new[0].trim_start_matches('0').to_lowercase()),
        "the result names the new serial {}: {text}",
        new[0]
    );
    let on_disk = std::fs::read(dev.dir.path().join("state/device.crt")).unwrap();
    assert_ne!(on_disk, dev.cert, "the agent replaced its certificate");

    // It keeps reporting with it.
    let seen = within(20, "the device", api.device(ID))
        .await
        .unwrap()
        .device
        .last_seen_ms;
    eventually(
        Duration::from_secs(30),
        "a report after the renewal",
        || async {
            let d = api.device(ID).await.map_err(|e| e.to_string())?;
            (d.device.last_seen_ms > seen && d.device.presence == Some(PresenceStatus::Online))
                .then_some(())
                .ok_or(format!("{:?}", d.device))
        },
    )
    .await
    .unwrap();

    // The audit log has the command before its effect.
    let (ok, out, err) = ctl
        .fleetctl(&["audit", "list", "--device", ID, "--output", "json"])
        .unwrap();
    assert!(ok, "{err}");
    assert!(
        out.contains("device.command") && out.contains(&command),
        "{out}"
    );
    ctl.stop().unwrap();
}
