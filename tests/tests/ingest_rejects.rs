//! End to end: what the controller refuses. A device's payload on another
//! device's topic, garbage bytes, an oversize payload and a message from an
//! unregistered device each get a log line and a counted rejection, and
//! change nothing. Also: the controller brings its Mosquitto back when it
//! dies, and ingest carries on.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;
use std::time::Duration;

use fleet_protocol::*;
use fleet_tests::{eventually, metric, Controller};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::json;

fn state(id: &str, firmware: &str, sent_at_ms: u64) -> Envelope {
    Envelope::new(
        DeviceId::parse(id).unwrap(),
        sent_at_ms,
        Payload::State(State {
            model: Model::parse("ballot-box-v2").unwrap(),
            firmware: Version::parse(firmware).unwrap(),
            agent: Version::parse("0.1.0").unwrap(),
            update: UpdateStatus::Idle,
            checks: vec![],
            config_rev: 0,
        }),
    )
}

async fn client(port: u16, id: &str) -> AsyncClient {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_max_packet_size(64 * 1024, 64 * 1024);
    let (c, mut el) = AsyncClient::new(opts, 64);
    tokio::spawn(async move {
        loop {
            if el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_garbage_oversize_and_unknown_are_rejected() {
    let data = tempfile::tempdir().unwrap();
    // Plaintext broker: this test is about the controller's own checks, the
    // last line of defence behind the broker's (tests/mtls.rs covers those).
    let mut ctl = Controller::start(data.path(), &["--insecure-dev"]).unwrap();
    let reg = reqwest::Client::new()
        .post(format!("{}/api/v1/registry/import", ctl.api))
        .bearer_auth(&ctl.token)
        .body("province,county,station_id\nIR-23,IR-23-TEH,ST-1\n")
        .send()
        .await
        .unwrap();
    assert!(reg.status().is_success());
    ctl.post(
        "/api/v1/devices",
        json!({ "devices": [
            { "id": "BB-A", "model": "ballot-box-v2", "province": "IR-23", "county": "IR-23-TEH", "lifecycle": "enrolled" },
            { "id": "BB-B", "model": "ballot-box-v2", "province": "IR-23", "county": "IR-23-TEH", "lifecycle": "enrolled" },
        ]}),
    )
    .await
    .unwrap();

    // B reports a good state: accepted.
    let b = client(ctl.mqtt_port, "BB-B").await;
    let good = state("BB-B", "2.4.0", 1_000);
    b.publish(
        good.topic().to_string(),
        QoS::AtLeastOnce,
        true,
        good.to_cbor().unwrap(),
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(10), "B's state", || async {
        let v = ctl
            .get("/api/v1/devices/BB-B")
            .await
            .map_err(|e| e.to_string())?;
        (v["device"]["firmware"] == "2.4.0")
            .then_some(())
            .ok_or(v.to_string())
    })
    .await
    .unwrap();

    // A forges a state on B's topic, garbage and an oversize payload follow.
    let forged = state("BB-A", "9.9.9", 2_000);
    let b_state = Topic::new(DeviceId::parse("BB-B").unwrap(), TopicKind::State).to_string();
    let b_health = Topic::new(DeviceId::parse("BB-B").unwrap(), TopicKind::Health).to_string();
    let a = client(ctl.mqtt_port, "BB-A").await;
    a.publish(&b_state, QoS::AtLeastOnce, false, forged.to_cbor().unwrap())
        .await
        .unwrap();
    a.publish(
        &b_state,
        QoS::AtLeastOnce,
        false,
        b"\xff\xfe not cbor at all".to_vec(),
    )
    .await
    .unwrap();
    a.publish(&b_health, QoS::AtLeastOnce, false, vec![0xa4; 10_000])
        .await
        .unwrap();
    // A message from a device nobody registered.
    let ghost = state("GHOST-1", "2.4.0", 3_000);
    a.publish(
        ghost.topic().to_string(),
        QoS::AtLeastOnce,
        false,
        ghost.to_cbor().unwrap(),
    )
    .await
    .unwrap();

    let text = eventually(
        Duration::from_secs(10),
        "four rejections counted",
        || async {
            let m = ctl.metrics().await.map_err(|e| e.to_string())?;
            let all = ["forged", "malformed", "too-large", "unknown-device"]
                .iter()
                .all(|r| {
                    metric(
                        &m,
                        "fleet_ingest_rejected_total",
                        &format!("reason=\"{r}\""),
                    ) >= 1.0
                });
            if all {
                Ok(m)
            } else {
                Err(m
                    .lines()
                    .filter(|l| l.contains("rejected"))
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
        },
    )
    .await
    .unwrap();
    assert!(!text.contains("GHOST"), "no per-device labels");

    // Nothing changed: B keeps its firmware, A was never seen, GHOST is not a device.
    let v = ctl.get("/api/v1/devices/BB-B").await.unwrap();
    assert_eq!(v["device"]["firmware"], "2.4.0");
    assert!(v["health"].is_null(), "oversize health ignored: {v}");
    let v = ctl.get("/api/v1/devices/BB-A").await.unwrap();
    assert_eq!(v["device"]["readiness"], "never-seen");
    let v = ctl.get("/api/v1/devices/GHOST-1").await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("not registered"));
    let (_, list, _) = ctl.fleetctl(&["devices", "--output", "json"]).unwrap();
    assert!(!list.contains("GHOST"));

    // Each refusal has its log line.
    for reason in [
        "reason=forged",
        "reason=malformed",
        "reason=too-large",
        "unregistered device",
    ] {
        ctl.proc
            .wait_for_line(reason, Duration::from_secs(5))
            .unwrap();
    }

    // Mosquitto dies: the controller restarts it, ingest reconnects, and a
    // new report is processed.
    let pid = std::fs::read_to_string(data.path().join("mosquitto/mosquitto.pid")).unwrap();
    assert!(Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap()
        .success());
    let newer = state("BB-B", "2.4.1", 5_000);
    eventually(
        Duration::from_secs(30),
        "report after broker restart",
        || {
            let b = b.clone();
            let newer = newer.clone();
            let ctl = &ctl;
            async move {
                b.publish(
                    newer.topic().to_string(),
                    QoS::AtLeastOnce,
                    true,
                    newer.to_cbor().unwrap(),
                )
                .await
                .map_err(|e| e.to_string())?;
                tokio::time::sleep(Duration::from_millis(300)).await;
                let v = ctl
                    .get("/api/v1/devices/BB-B")
                    .await
                    .map_err(|e| e.to_string())?;
                (v["device"]["firmware"] == "2.4.1")
                    .then_some(())
                    .ok_or(v.to_string())
            }
        },
    )
    .await
    .unwrap();
    ctl.proc
        .wait_for_line("managed mosquitto restarted", Duration::from_secs(5))
        .unwrap();
    let health: serde_json::Value = reqwest::get(format!("{}/healthz", ctl.api))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["broker"], "up");
    ctl.stop().unwrap();
}
