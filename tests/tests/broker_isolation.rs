//! A device with a valid certificate cannot dilute or read the controller's
//! subscriptions, whatever it subscribes to (Mosquitto's `acl_file` does
//! not check SUBSCRIBE; see docs/decisions/0008-controller-subscriptions.md).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fleet_protocol::{DeviceId, Envelope, Health, Payload};
use fleet_tests::builders::{mqtt_connect, mqtt_tls, now_ms, publish};
use fleet_tests::{eventually, metric, within, Controller};
use rumqttc::{Event, Packet, QoS};

/// Every shared group and wildcard a device could try to join or read.
const GREEDY_FILTERS: &[&str] = &[
    "$share/controllers/fleet/v1/dev/+/health",
    "$share/controllers/fleet/v1/dev/+/+",
    "$share/controllers/fleet/v1/dev/#",
    "$share/controllers/#",
    "$share/controller/fleet/v1/dev/+/health",
    "$share/fleet/fleet/v1/dev/+/health",
    "$share/a/#",
    "fleet/v1/dev/+/health",
    "fleet/v1/dev/+/+",
    "fleet/#",
    "#",
    "+/+/+/+/+",
    "$SYS/#",
];

fn health(id: &str, uptime_s: u64) -> Envelope {
    Envelope::new(
        DeviceId::parse(id).unwrap(),
        now_ms(),
        Payload::Health(Health {
            cpu_pct: 5,
            mem_used_pct: 30,
            disk_free_pct: 70,
            temp_c: None,
            battery_pct: None,
            uptime_s,
            clock_offset_ms: None,
            disk_free_mb: 1000,
            window: None,
        }),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_subscribing_to_every_group_and_wildcard_takes_nothing_from_the_controller() {
    fleet_tests::install_crypto();
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start(data.path(), &[]).unwrap();
    ctl.import_registry("province,county,station_id\nIR-23,IR-23-TEH,ST-1\n")
        .unwrap();
    let thief = ctl.enrol("BB-THIEF", "IR-23", "IR-23-TEH", "").unwrap();
    let honest = ctl.enrol("BB-HONEST", "IR-23", "IR-23-TEH", "").unwrap();
    let port = ctl.mqtt_port;

    // The stolen device joins every group and wildcard it can think of, and
    // counts what it is given.
    let (thief_client, mut thief_loop) = mqtt_connect(mqtt_tls(
        port,
        "BB-THIEF",
        &thief.ca,
        Some((&thief.cert, &thief.key)),
    ))
    .await
    .unwrap();
    for f in GREEDY_FILTERS {
        within(
            10,
            "subscribing",
            thief_client.subscribe(*f, QoS::AtLeastOnce),
        )
        .await
        .unwrap();
    }
    let stolen = Arc::new(AtomicUsize::new(0));
    let suback = Arc::new(AtomicUsize::new(0));
    {
        let (stolen, suback) = (Arc::clone(&stolen), Arc::clone(&suback));
        tokio::spawn(async move {
            while let Ok(ev) = thief_loop.poll().await {
                match ev {
                    Event::Incoming(Packet::Publish(p)) if p.topic.contains("BB-HONEST") => {
                        stolen.fetch_add(1, Ordering::SeqCst);
                    }
                    Event::Incoming(Packet::SubAck(_)) => {
                        suback.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
        });
    }
    eventually(
        Duration::from_secs(30),
        "the thief's subscriptions",
        || async {
            let n = suback.load(Ordering::SeqCst);
            (n == GREEDY_FILTERS.len())
                .then_some(())
                .ok_or(format!("{n} subscriptions acknowledged"))
        },
    )
    .await
    .unwrap();

    // The honest device sends a counted stream of health reports.
    let api = ctl.client();
    let received = |text: &str| metric(text, "fleet_ingest_messages_total", "kind=\"health\"");
    let before = received(&within(20, "metrics", api.metrics()).await.unwrap());
    let (honest_client, honest_loop) = mqtt_connect(mqtt_tls(
        port,
        "BB-HONEST",
        &honest.ca,
        Some((&honest.cert, &honest.key)),
    ))
    .await
    .unwrap();
    fleet_tests::builders::mqtt_drive(honest_loop);
    const SENT: u64 = 200;
    for i in 0..SENT {
        publish(&honest_client, &health("BB-HONEST", i), false).await;
    }
    // Every one reaches the controller: none is handed to the thief's
    // group membership and dropped there.
    let _ = eventually(Duration::from_secs(30), "all health reports", || async {
        let text = api.metrics().await.map_err(|e| e.to_string())?;
        let n = received(&text) - before;
        (n >= SENT as f64)
            .then_some(n)
            .ok_or(format!("{n} of {SENT}"))
    })
    .await;
    let got = received(&within(20, "metrics", api.metrics()).await.unwrap()) - before;
    assert_eq!(got, SENT as f64, "the controller received {got} of {SENT}");
    assert_eq!(
        stolen.load(Ordering::SeqCst),
        0,
        "the thief was given another device's reports"
    );
}
