//! Retirement against the real broker over mutual TLS: the API answers
//! "retired" only once the broker refuses the device, a retired device's
//! open session is cut, and retiring many devices costs the rest of the
//! fleet nothing (see docs/decisions/0010-revocation-and-broker-reload.md).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fleet_api::types::Lifecycle;
use fleet_tests::builders::{mqtt_connect, mqtt_tls, register, registration};
use fleet_tests::{eventually, within, Controller, EnrolledDevice};
use rumqttc::EventLoop;

fn identity(d: &EnrolledDevice) -> Option<(&[u8], &[u8])> {
    Some((&d.cert, &d.key))
}

/// Keep a connected client's event loop turning, reconnecting after every
/// error, and count the connections it lost.
fn count_disconnects(mut el: EventLoop) -> Arc<AtomicU64> {
    let lost = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&lost);
    tokio::spawn(async move {
        let mut up = true;
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => up = true,
                Ok(_) => {}
                Err(_) => {
                    if up {
                        counted.fetch_add(1, Ordering::SeqCst);
                        up = false;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    lost
}

fn controller_with_county(data: &std::path::Path) -> Controller {
    let ctl = Controller::start(data, &[]).unwrap();
    ctl.import_registry("province,county,station_id\nIR-23,IR-23-TEH,ST-1\n")
        .unwrap();
    ctl
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retired_device_is_refused_and_cut_off_when_the_api_answers() {
    fleet_tests::install_crypto();
    let data = tempfile::tempdir().unwrap();
    let ctl = controller_with_county(data.path());
    let a = ctl.enrol("BB-A", "IR-23", "IR-23-TEH", "").unwrap();
    let port = ctl.mqtt_port;
    let (_a_client, el) = mqtt_connect(mqtt_tls(port, "BB-A", &a.ca, identity(&a)))
        .await
        .unwrap();
    let a_lost = count_disconnects(el);

    let moved = within(
        20,
        "retiring BB-A",
        ctl.client().move_device("BB-A", Lifecycle::Retired),
    )
    .await
    .unwrap();
    assert_eq!(moved.lifecycle, Lifecycle::Retired);
    // Right after the answer, not eventually: the broker refuses A...
    let r = mqtt_connect(mqtt_tls(port, "BB-A", &a.ca, identity(&a))).await;
    assert!(
        r.is_err(),
        "the broker admitted BB-A after the API said retired"
    );
    // ...and the session A held before is gone (its client task may take
    // a moment to see the cut on a loaded machine).
    eventually(
        Duration::from_secs(10),
        "BB-A's open session ended by its retirement",
        || async {
            match a_lost.load(Ordering::SeqCst) {
                0 => Err("BB-A's open session survived its retirement".to_owned()),
                _ => Ok(()),
            }
        },
    )
    .await
    .unwrap();
    ctl.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_retirements_in_a_row_cost_the_fleet_at_most_one_reconnection() {
    fleet_tests::install_crypto();
    let data = tempfile::tempdir().unwrap();
    let ctl = controller_with_county(data.path());
    let b = ctl.enrol("BB-B", "IR-23", "IR-23-TEH", "").unwrap();
    let port = ctl.mqtt_port;
    let api = ctl.client();
    let doomed: Vec<String> = (0..50).map(|i| format!("BB-R{i:02}")).collect();
    register(
        &api,
        doomed
            .iter()
            .map(|id| registration(id, "IR-23", Some("IR-23-TEH"), "registered"))
            .collect(),
    )
    .await;
    // B stays in the fleet and stays connected throughout.
    let (_b_client, el) = mqtt_connect(mqtt_tls(port, "BB-B", &b.ca, identity(&b)))
        .await
        .unwrap();
    let b_lost = count_disconnects(el);

    // One by one, as an operator does: `fleetctl device retire` each.
    let started = std::time::Instant::now();
    tokio::task::block_in_place(|| {
        for id in &doomed {
            let (ok, out, err) = ctl.fleetctl(&["device", "retire", id]).unwrap();
            assert!(ok && out.contains("retired"), "{id}: {out}{err}");
        }
    });
    println!("50 retirements took {:.1?}", started.elapsed());
    // Give a debounced or late restart the time to happen and be seen.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lost = b_lost.load(Ordering::SeqCst);
    assert!(lost <= 1, "BB-B lost its connection {lost} times");
    // The broker's own count: B connected once, at the start.
    let log = std::fs::read_to_string(data.path().join("mosquitto/state/mosquitto.log")).unwrap();
    let b_sessions = log.matches(" as BB-B (").count();
    assert!(b_sessions >= 1, "B never connected: {log}");
    assert!(
        b_sessions <= 2,
        "B connected {b_sessions} times (lost {lost})"
    );
    ctl.stop().unwrap();
}
