//! End to end: what the controller refuses. A device's payload on another
//! device's topic, garbage bytes, an oversize payload and a message from an
//! unregistered device each get a log line and a counted rejection, and
//! change nothing. Also: the controller brings its Mosquitto back when it
//! dies, and ingest carries on.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;
use std::time::Duration;

use fleet_api::types::{BrokerState, DeviceDetail, Readiness};
use fleet_protocol::*;
use fleet_tests::builders::{
    import_registry, mqtt_client, mqtt_plain, publish, register, registration, state,
};
use fleet_tests::{eventually, metric, within, Controller};
use rumqttc::QoS;

/// The detail of `id`, or the controller's refusal as text (for polling).
async fn detail(api: &fleet_api::Client, id: &str) -> Result<DeviceDetail, String> {
    api.device(id).await.map_err(|e| e.to_string())
}

fn firmware(d: &DeviceDetail) -> Option<&str> {
    d.device.firmware.as_ref().map(|v| v.as_str())
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_garbage_oversize_and_unknown_are_rejected_and_ingest_survives_a_broker_kill() {
    let data = tempfile::tempdir().unwrap();
    // Plaintext broker: this test is about the controller's own checks, the
    // last line of defence behind the broker's (tests/mtls.rs covers those).
    // A process, not in-process: the test reads the controller's log lines
    // and kills the Mosquitto it supervises.
    let mut ctl = Controller::start(data.path(), &["--insecure-dev"]).unwrap();
    let api = ctl.client();
    import_registry(&api, "province,county,station_id\nIR-23,IR-23-TEH,ST-1\n").await;
    register(
        &api,
        vec![
            registration("BB-A", "IR-23", Some("IR-23-TEH"), "enrolled"),
            registration("BB-B", "IR-23", Some("IR-23-TEH"), "enrolled"),
        ],
    )
    .await;

    // B reports a good state: accepted.
    let b = mqtt_client(mqtt_plain(ctl.mqtt_port, "BB-B"));
    publish(&b, &state("BB-B", "2.4.0", 1_000), true).await;
    eventually(Duration::from_secs(30), "B's state", || async {
        let d = detail(&api, "BB-B").await?;
        (firmware(&d) == Some("2.4.0"))
            .then_some(())
            .ok_or(format!("{d:?}"))
    })
    .await
    .unwrap();

    // A forges a state on B's topic, garbage and an oversize payload follow.
    let forged = state("BB-A", "9.9.9", 2_000);
    let b_state = Topic::new(DeviceId::parse("BB-B").unwrap(), TopicKind::State).to_string();
    let b_health = Topic::new(DeviceId::parse("BB-B").unwrap(), TopicKind::Health).to_string();
    let a = mqtt_client(mqtt_plain(ctl.mqtt_port, "BB-A"));
    within(
        10,
        "publishing the forged state",
        a.publish(&b_state, QoS::AtLeastOnce, false, forged.to_cbor().unwrap()),
    )
    .await
    .unwrap();
    within(
        10,
        "publishing garbage",
        a.publish(
            &b_state,
            QoS::AtLeastOnce,
            false,
            b"\xff\xfe not cbor at all".to_vec(),
        ),
    )
    .await
    .unwrap();
    within(
        10,
        "publishing an oversize health report",
        a.publish(&b_health, QoS::AtLeastOnce, false, vec![0xa4; 10_000]),
    )
    .await
    .unwrap();
    // A message from a device nobody registered.
    publish(&a, &state("GHOST-1", "2.4.0", 3_000), false).await;

    // A fixed, non-empty array: `all` below cannot pass vacuously.
    let reasons = ["forged", "malformed", "too-large", "unknown-device"];
    let text = eventually(
        Duration::from_secs(30),
        "four rejections counted",
        || async {
            let m = api.metrics().await.map_err(|e| e.to_string())?;
            let all = reasons.iter().all(|r| {
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
    let v = within(20, "B's detail", api.device("BB-B")).await.unwrap();
    assert_eq!(firmware(&v), Some("2.4.0"));
    assert!(v.health.is_none(), "oversize health ignored: {v:?}");
    let v = within(20, "A's detail", api.device("BB-A")).await.unwrap();
    assert_eq!(v.device.readiness, Readiness::NeverSeen);
    let e = within(20, "GHOST-1's detail", api.device("GHOST-1"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not registered"), "{e}");
    let (ok, list, err) = ctl.fleetctl(&["devices", "--output", "json"]).unwrap();
    assert!(ok, "{err}");
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
    let pid = std::fs::read_to_string(data.path().join("mosquitto/state/mosquitto.pid")).unwrap();
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
            let api = &api;
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
                let d = detail(api, "BB-B").await?;
                (firmware(&d) == Some("2.4.1"))
                    .then_some(())
                    .ok_or(format!("{d:?}"))
            }
        },
    )
    .await
    .unwrap();
    ctl.proc
        .wait_for_line("managed mosquitto restarted", Duration::from_secs(5))
        .unwrap();
    let health = within(20, "GET /healthz", api.healthz()).await.unwrap();
    assert_eq!(health.broker, BrokerState::Up);
    ctl.stop().unwrap();
}
