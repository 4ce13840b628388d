//! Issue 8, test 4: the controller SIGKILLed during ingest loses nothing a
//! device was told was received. A device (a real MQTT client over mutual
//! TLS, with the certificate `fleet-agent enrol` got) sends a counted
//! stream of events, one at a time, each waiting for its PUBACK; the
//! controller is SIGKILLed mid-stream and started again on the same data
//! directory (its start stops the orphaned Mosquitto, which saves the
//! controller's queued session, and starts a new one on the same port).
//! Every event the device got a PUBACK for is then in the store exactly
//! once: the controller acknowledges a message to the broker only after
//! the store committed it, so what it had read but not committed comes
//! again, and ingest is idempotent on (device, boot, seq).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_protocol::{DeviceId, Envelope, Event, EventKind, Payload};
use fleet_tests::builders::mqtt_tls;
use fleet_tests::{eventually, metric, within, Controller};
use rumqttc::{AsyncClient, Event as MqttEvent, Packet, QoS};

const DEVICE: &str = "BB-KILL-1";
const EVENTS: u64 = 1_500;
const BOOT: u64 = 0x5eed;

/// Enough for the whole stream: no rate limit and no pruning get in the way.
const ENV: [(&str, &str); 2] = [
    (
        "FLEET_CONTROLLER__INGEST__MAX_MESSAGES_PER_MINUTE",
        "1000000",
    ),
    ("FLEET_CONTROLLER__INGEST__EVENTS_KEPT_PER_DEVICE", "100000"),
];

fn event(seq: u64) -> Vec<u8> {
    Envelope::new(
        DeviceId::parse(DEVICE).unwrap(),
        seq,
        Payload::Event(Event {
            seq,
            at_ms: seq,
            kind: EventKind::Error {
                message: format!("event {seq}"),
            },
            boot: Some(BOOT),
        }),
    )
    .to_cbor()
    .unwrap()
}

/// Send events 1..=EVENTS one at a time; record those the broker
/// acknowledged. One that meets a lost connection is not counted (nor sent
/// again: a clean session drops it).
async fn stream(opts: rumqttc::MqttOptions, acked: Arc<Mutex<BTreeSet<u64>>>) {
    let (client, mut el) = AsyncClient::new(opts, 16);
    let topic = format!("fleet/v1/dev/{DEVICE}/events");
    for seq in 1..=EVENTS {
        client
            .publish(&topic, QoS::AtLeastOnce, false, event(seq))
            .await
            .unwrap();
        loop {
            match tokio::time::timeout(Duration::from_secs(30), el.poll()).await {
                Ok(Ok(MqttEvent::Incoming(Packet::PubAck(_)))) => {
                    acked.lock().unwrap().insert(seq);
                    break;
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
                Err(_) => panic!("no PUBACK nor error for event {seq} within 30 s"),
            }
        }
    }
}

async fn stored(db: &sqlx::SqlitePool) -> Vec<(u64, u64)> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT seq, COUNT(*) FROM events WHERE device = ? AND boot = ? GROUP BY seq",
    )
    .bind(DEVICE)
    .bind(i64::try_from(BOOT).unwrap())
    .fetch_all(db)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(s, n)| (u64::try_from(s).unwrap(), u64::try_from(n).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn no_acknowledged_event_is_missing_after_the_controller_is_killed_mid_stream() {
    let data = tempfile::tempdir().unwrap();
    let mut ctl = Controller::start_with_env(data.path(), &[], &ENV).unwrap();
    ctl.import_registry("province,county,station_id\nIR-23,IR-23-TEH,ST-1\n")
        .unwrap();
    let dev = ctl.enrol(DEVICE, "IR-23", "IR-23-TEH", "").unwrap();
    let port = ctl.mqtt_port;

    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let opts = mqtt_tls(port, DEVICE, &dev.ca, Some((&dev.cert, &dev.key)));
    let sender = tokio::spawn(stream(opts, Arc::clone(&acked)));

    // Mid-stream: a third of the events acknowledged, then SIGKILL.
    eventually(
        Duration::from_secs(120),
        "a third of the stream sent",
        || {
            let n = acked.lock().unwrap().len() as u64;
            async move {
                (n >= EVENTS / 3)
                    .then_some(())
                    .ok_or(format!("{n} acknowledged"))
            }
        },
    )
    .await
    .unwrap();
    ctl.proc.kill();
    let acked_at_kill = acked.lock().unwrap().len();

    // The device goes on sending to the broker the killed controller left
    // running; then the controller starts again on the same data directory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ctl = Controller::start_with_env(data.path(), &[], &ENV).unwrap();
    assert_eq!(
        ctl.mqtt_port, port,
        "the same port, so the device comes back"
    );
    within(300, "the whole stream sent", sender).await.unwrap();
    let acked: BTreeSet<u64> = acked.lock().unwrap().clone();
    assert!(
        acked.len() as u64 > EVENTS / 2,
        "most of the stream was acknowledged: {}",
        acked.len()
    );

    let url = format!(
        "sqlite://{}?mode=ro",
        data.path().join("fleet.db").display()
    );
    let db = within(10, "opening the store", sqlx::SqlitePool::connect(&url))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "every acknowledged event stored",
        || async {
            let have: BTreeSet<u64> = stored(&db).await.into_iter().map(|(s, _)| s).collect();
            let missing: Vec<u64> = acked.difference(&have).copied().collect();
            missing.is_empty().then_some(()).ok_or(format!(
                "{} missing: {:?}",
                missing.len(),
                &missing[..missing.len().min(20)]
            ))
        },
    )
    .await
    .unwrap();
    let rows = stored(&db).await;
    assert!(
        rows.iter().all(|(_, n)| *n == 1),
        "each event stored once: {:?}",
        rows.iter().filter(|(_, n)| *n != 1).collect::<Vec<_>>()
    );
    let metrics = within(20, "metrics", ctl.client().metrics()).await.unwrap();
    let duplicates = metric(&metrics, "fleet_ingest_duplicate_events_total", "");
    println!(
        "events sent {EVENTS}, acknowledged {} ({acked_at_kill} before the kill), stored {}, re-deliveries after the restart {duplicates}",
        acked.len(),
        rows.len()
    );
    db.close().await;
    ctl.stop().unwrap();
}
