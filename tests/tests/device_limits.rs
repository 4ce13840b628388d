//! End to end over mutual TLS against the controller's managed Mosquitto: a
//! device with a valid certificate cannot lie its way past the controller.
//! A state sent with the clock an hour ahead does not freeze its later
//! states; events after a lost sequence file (same numbers, new boot id) are
//! stored; sequence numbers beyond 2^53 are refused; a flood over the
//! per-device rate limit is dropped and counted. Also (plaintext, where the
//! broker does not check certificates): a retired device's reports are
//! dropped by ingest and counted.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use fleet_protocol::{DeviceId, Envelope, Event, EventKind, Health, Payload};
use fleet_tests::builders::{
    mqtt_client, mqtt_connect, mqtt_drive, mqtt_plain, mqtt_tls, now_ms, publish, register,
    registration, state,
};
use fleet_tests::{eventually, metric, within, Controller};

const T: Duration = Duration::from_secs(30);

fn event(id: &str, seq: u64, boot: u64, message: &str) -> Envelope {
    Envelope::new(
        DeviceId::parse(id).unwrap(),
        now_ms(),
        Payload::Event(Event {
            seq,
            at_ms: now_ms(),
            kind: EventKind::Error {
                message: message.into(),
            },
            boot: Some(boot),
        }),
    )
}

fn health(id: &str) -> Envelope {
    Envelope::new(
        DeviceId::parse(id).unwrap(),
        now_ms(),
        Payload::Health(Health::default()),
    )
}

async fn firmware(api: &fleet_api::Client, id: &str) -> Result<Option<String>, String> {
    let d = api.device(id).await.map_err(|e| e.to_string())?;
    Ok(d.device.firmware.map(|v| v.as_str().to_owned()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_cannot_lie_its_way_past_the_controller() {
    fleet_tests::install_crypto();
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let site = work.path().join("controller.toml");
    std::fs::write(&site, "[ingest]\nmax_messages_per_minute = 40\n").unwrap();
    let ctl = Controller::start(data.path(), &["--config", site.to_str().unwrap()]).unwrap();
    let csv = work.path().join("stations.csv");
    std::fs::write(&csv, "province,county,station_id\nIR-23,IR-23-TEH,ST-1\n").unwrap();
    assert!(
        ctl.fleetctl(&["registry", "import", csv.to_str().unwrap()])
            .unwrap()
            .0
    );
    let a = ctl.enrol("BB-A", "IR-23", "IR-23-TEH", "").unwrap();
    let b = ctl.enrol("BB-B", "IR-23", "IR-23-TEH", "").unwrap();
    let port = ctl.mqtt_port;
    let api = ctl.client();
    let (a_mqtt, el) = mqtt_connect(mqtt_tls(port, "BB-A", &a.ca, Some((&a.cert, &a.key))))
        .await
        .unwrap();
    mqtt_drive(el);

    // 1. A state with the clock an hour ahead, then one with the clock right.
    publish(&a_mqtt, &state("BB-A", "6.6.6", now_ms() + 3_600_000), true).await;
    eventually(T, "the state from an hour ahead", || async {
        let fw = firmware(&api, "BB-A").await?;
        (fw.as_deref() == Some("6.6.6"))
            .then_some(())
            .ok_or(format!("{fw:?}"))
    })
    .await
    .unwrap();
    // Past the few seconds a clock may be ahead (MAX_CLOCK_AHEAD_MS).
    tokio::time::sleep(Duration::from_secs(6)).await;
    publish(&a_mqtt, &state("BB-A", "2.4.1", now_ms()), true).await;
    eventually(T, "the later state with the clock right", || async {
        let fw = firmware(&api, "BB-A").await?;
        (fw.as_deref() == Some("2.4.1"))
            .then_some(())
            .ok_or(format!("{fw:?}"))
    })
    .await
    .unwrap();

    // 2. Events 1 and 2, then the sequence file is lost: 1 again, new boot id.
    publish(&a_mqtt, &event("BB-A", 1, 0x1111, "first run 1"), false).await;
    publish(&a_mqtt, &event("BB-A", 2, 0x1111, "first run 2"), false).await;
    publish(&a_mqtt, &event("BB-A", 1, 0x2222, "second run 1"), false).await;
    // 3. Sequence numbers past 2^53 - 1 are refused.
    publish(
        &a_mqtt,
        &event("BB-A", u64::MAX, 0x2222, "far too far"),
        false,
    )
    .await;
    publish(&a_mqtt, &event("BB-A", 1 << 53, 0x2222, "too far"), false).await;
    let events = eventually(T, "three events stored", || async {
        let d = api.device("BB-A").await.map_err(|e| e.to_string())?;
        let got: Vec<String> = d
            .events
            .iter()
            .map(|e| {
                e.event["error"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        let m = api.metrics().await.map_err(|e| e.to_string())?;
        let refused = metric(
            &m,
            "fleet_ingest_rejected_total",
            "reason=\"seq-out-of-range\"",
        );
        (got.len() == 3 && refused == 2.0)
            .then_some(got.clone())
            .ok_or(format!("{got:?}, {refused} refused"))
    })
    .await
    .unwrap();
    assert_eq!(events, ["second run 1", "first run 2", "first run 1"]);

    // 4. B floods 100 health reports; 40 a minute are allowed.
    let (b_mqtt, el) = mqtt_connect(mqtt_tls(port, "BB-B", &b.ca, Some((&b.cert, &b.key))))
        .await
        .unwrap();
    mqtt_drive(el);
    for _ in 0..100 {
        publish(&b_mqtt, &health("BB-B"), false).await;
    }
    let dropped = eventually(T, "the flood dropped and counted", || async {
        let m = api.metrics().await.map_err(|e| e.to_string())?;
        let dropped = metric(&m, "fleet_ingest_dropped_total", "reason=\"rate\"");
        let health = metric(&m, "fleet_ingest_messages_total", "kind=\"health\"");
        (health >= 100.0 && dropped > 0.0)
            .then_some(dropped)
            .ok_or(format!("{health} health messages, {dropped} dropped"))
    })
    .await
    .unwrap();
    // 40 at once, then 40 a minute: a few more may pass while it arrives
    // (up to 20 more on a machine slow enough to take 30 s over it).
    assert!((40.0..=60.0).contains(&dropped), "{dropped} dropped");
    // A was not held back by B.
    publish(&a_mqtt, &state("BB-A", "2.4.2", now_ms()), true).await;
    eventually(T, "A's next state", || async {
        let fw = firmware(&api, "BB-A").await?;
        (fw.as_deref() == Some("2.4.2"))
            .then_some(())
            .ok_or(format!("{fw:?}"))
    })
    .await
    .unwrap();
    let m = within(20, "GET /metrics", api.metrics()).await.unwrap();
    assert!(!m.contains("BB-B"), "no per-device labels");
    let log = ctl.stop().unwrap();
    let over = log
        .lines()
        .filter(|l| l.contains("over its rate limit"))
        .count();
    assert_eq!(
        over, 1,
        "one line for the flood, not one per message:\n{log}"
    );
}

/// With `--insecure-dev` the broker checks no certificate, so a retired
/// device still reaches ingest, which drops its reports.
#[tokio::test(flavor = "multi_thread")]
async fn a_retired_device_reports_are_dropped_and_counted_and_logged_once() {
    let data = tempfile::tempdir().unwrap();
    let mut ctl = Controller::start(data.path(), &["--insecure-dev"]).unwrap();
    let api = ctl.client();
    fleet_tests::builders::import_registry(
        &api,
        "province,county,station_id\nIR-23,IR-23-TEH,ST-1\n",
    )
    .await;
    register(
        &api,
        vec![registration("BB-R", "IR-23", Some("IR-23-TEH"), "enrolled")],
    )
    .await;
    let (ok, out, err) = ctl.fleetctl(&["device", "retire", "BB-R"]).unwrap();
    assert!(ok && out.contains("retired"), "{out}{err}");
    let r = mqtt_client(mqtt_plain(ctl.mqtt_port, "BB-R"));
    // The broker restarts after the retirement (to reread its CRL): a
    // report sent into that restart may be lost, so the device keeps
    // reporting until three drops are counted.
    let sent = std::sync::atomic::AtomicU64::new(0);
    eventually(T, "three drops counted", || async {
        let n = sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        publish(&r, &state("BB-R", &format!("2.4.{n}"), now_ms()), true).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let m = api.metrics().await.map_err(|e| e.to_string())?;
        let dropped = metric(&m, "fleet_ingest_dropped_total", "reason=\"not-enrolled\"");
        (dropped >= 3.0)
            .then_some(())
            .ok_or(format!("{dropped} dropped"))
    })
    .await
    .unwrap();
    let d = within(20, "R's detail", api.device("BB-R")).await.unwrap();
    assert!(
        d.state.is_none(),
        "a retired device's state was applied: {d:?}"
    );
    ctl.proc
        .wait_for_line("not enrolled", Duration::from_secs(5))
        .unwrap();
    let log = ctl.stop().unwrap();
    let lines = log
        .lines()
        .filter(|l| l.contains("not enrolled (retired"))
        .count();
    assert_eq!(lines, 1, "logged once per device:\n{log}");
}
