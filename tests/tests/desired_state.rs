//! The controller owns each device's desired state (decision 0012); the
//! retained message on the broker is a cache of it. A real
//! `fleet-controller` process with its managed Mosquitto and a real
//! `fleet-agent` process:
//!
//! (a) a desired state stored for the device (there is no API route to set
//!     one yet: the row is written into the store while the controller is
//!     stopped, which is where `ingest::set_desired` records it too, and
//!     the controller loads it at start) reaches the agent: its reported
//!     state carries the configuration revision;
//! (b) the device goes offline: the retained desired message is the stored
//!     one, not an empty default; the device comes back and has it again;
//! (c) the broker's persistence is lost (controller stopped, the
//!     `mosquitto.db` deleted, controller started): the controller sends
//!     every stored desired state again (the broker did not know its
//!     session), before the device even connects;
//! (d) the managed Mosquitto is SIGKILLed under the running controller: its
//!     supervisor starts it again, the device is `ready` again within one
//!     reconnect cycle, and the desired state is still retained.
//!
//! "The retained message" is read by an observer connecting with the
//! device's own certificate while its agent is stopped: the broker makes
//! the certificate's name the client id (decision 0003), so an observer
//! with the controller's certificate would take over the controller's own
//! session; a device may read its own desired topic, and the observer
//! publishes no presence, so the controller has no reason to send anything.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use fleet_api::types::Readiness;
use fleet_protocol::{Desired, Envelope, Payload, Topic};
use fleet_tests::builders::mqtt_tls;
use fleet_tests::{eventually, within, Controller, EnrolledDevice, Proc};
use rumqttc::{AsyncClient, Event, Packet, QoS};

const REGISTRY: &str = "province,county,county_name_en,station_id,station_name\n\
    IR-23,IR-23-TEH,Tehran,ST-TEH-1,School 1\n";
const DEVICE: &str = "BB-23-DESIRED";
const CONFIG_REV: u32 = 7;
const FIRMWARE: &str = "2.5.0";
const MANIFEST: &str = "targets/ballot-box-v2-2.5.0";
/// The agent's reconnect backoff, at most.
const BACKOFF_MAX_MS: u64 = 1000;

fn unix_ms() -> i64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    i64::try_from(ms).unwrap()
}

/// The desired state the store holds for the device, written while the
/// controller is stopped.
async fn store_desired(data: &std::path::Path) {
    let url = format!("sqlite://{}", data.join("fleet.db").display());
    let db = within(10, "opening the store", sqlx::SqlitePool::connect(&url))
        .await
        .unwrap();
    let done = sqlx::query(
        "INSERT INTO desired (device, config_rev, firmware_version, firmware_manifest, updated_ms)
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(DEVICE)
    .bind(i64::from(CONFIG_REV))
    .bind(FIRMWARE)
    .bind(MANIFEST)
    .bind(unix_ms())
    .execute(&db)
    .await
    .unwrap();
    assert_eq!(done.rows_affected(), 1);
    db.close().await;
}

fn want(d: &Desired) -> Result<(), String> {
    let firmware = d
        .firmware
        .as_ref()
        .map(|f| (f.version.to_string(), f.manifest.as_str()));
    if d.config_rev == CONFIG_REV && firmware == Some((FIRMWARE.to_owned(), MANIFEST)) {
        Ok(())
    } else {
        Err(format!("not the stored desired state: {d:?}"))
    }
}

/// The retained message on the device's desired topic, read with the
/// device's certificate (its agent must be stopped); `Err` if the broker
/// holds none.
async fn retained_desired(port: u16, dev: &EnrolledDevice) -> Result<Desired, String> {
    let opts = mqtt_tls(port, DEVICE, &dev.ca, Some((&dev.cert, &dev.key)));
    let (client, mut el) = AsyncClient::new(opts, 16);
    let topic = format!("fleet/v1/dev/{DEVICE}/desired");
    client
        .subscribe(&topic, QoS::AtLeastOnce)
        .await
        .map_err(|e| e.to_string())?;
    let mut subscribed = false;
    let got = loop {
        // The retained message comes right after the SUBACK; nothing
        // within 3 s of it means the broker holds none.
        let wait = if subscribed { 3 } else { 15 };
        match tokio::time::timeout(Duration::from_secs(wait), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => subscribed = true,
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) if p.topic == topic => {
                if !p.retain {
                    break Err("a live desired message, not the retained one".to_owned());
                }
                let t = Topic::parse(&p.topic).map_err(|e| e.to_string())?;
                let env = Envelope::from_cbor_on(&t, &p.payload).map_err(|e| e.to_string())?;
                break match env.payload {
                    Payload::Desired(d) => Ok(d),
                    other => Err(format!("not a desired state: {other:?}")),
                };
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => break Err(format!("observer connection: {e}")),
            Err(_) if subscribed => break Err("nothing retained".to_owned()),
            Err(_) => break Err("no SUBACK within 15 s".to_owned()),
        }
    };
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while el.poll().await.is_ok() {}
    })
    .await;
    got
}

fn start_agent(dev: &EnrolledDevice) -> Proc {
    let conf = dev.config.to_str().unwrap();
    Proc::spawn("fleet-agent", &["run", "--config", conf], &[]).unwrap()
}

/// The device reports the stored configuration revision (this agent run
/// started at 0, so it received it) and is ready.
async fn reports_stored_revision(ctl: &Controller, agent: &Proc, what: &str) {
    let client = ctl.client();
    eventually(Duration::from_secs(30), what, || async {
        let d = client.device(DEVICE).await.map_err(|e| e.to_string())?;
        let rev = d.state.as_ref().map(|s| s.config_rev);
        if rev == Some(CONFIG_REV) && d.device.readiness == Readiness::Ready {
            Ok(())
        } else {
            Err(format!("config_rev {rev:?}, {}", d.device.readiness))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nagent output:\n{}", agent.output()));
}

/// The managed Mosquitto's pid, from its pid file (`None` while a restart
/// has not written it yet).
fn mosquitto_pid(data: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(data.join("mosquitto/state/mosquitto.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stored_desired_state_survives_offline_devices_lost_persistence_and_broker_kills() {
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start(data.path(), &["--freshness-secs", "3600"]).unwrap();
    ctl.import_registry(REGISTRY).unwrap();
    let dev = ctl
        .enrol(
            DEVICE,
            "IR-23",
            "IR-23-TEH",
            &format!(
                "[mqtt]\nkeep_alive_secs = 5\nbackoff_base_ms = 100\nbackoff_max_ms = {BACKOFF_MAX_MS}\n"
            ),
        )
        .unwrap();
    ctl.stop().unwrap();

    // (a) Stored, then the controller starts and the device connects.
    store_desired(data.path()).await;
    let ctl = Controller::start(data.path(), &["--freshness-secs", "3600"]).unwrap();
    let port = ctl.mqtt_port;
    let d = within(20, "the device page", ctl.client().device(DEVICE))
        .await
        .unwrap();
    assert_eq!(
        (
            d.desired.config_rev,
            d.desired.firmware.map(|v| v.to_string())
        ),
        (CONFIG_REV, Some(FIRMWARE.to_owned())),
        "the controller's record"
    );
    let mut agent = start_agent(&dev);
    reports_stored_revision(&ctl, &agent, "(a) the agent reports the stored revision").await;

    // (b) Offline: the broker keeps the stored state, not an empty one.
    agent.terminate(Duration::from_secs(20)).unwrap();
    let retained = within(
        30,
        "(b) the retained desired state",
        retained_desired(port, &dev),
    )
    .await
    .unwrap();
    want(&retained).unwrap();
    let mut agent = start_agent(&dev);
    reports_stored_revision(&ctl, &agent, "(b) the agent back with the stored revision").await;
    agent.terminate(Duration::from_secs(20)).unwrap();

    // (c) The broker's persistence is lost while everything is down.
    ctl.stop().unwrap();
    let db = data.path().join("mosquitto/state/mosquitto.db");
    assert!(
        db.exists(),
        "the managed broker saved nothing at {}",
        db.display()
    );
    std::fs::remove_file(&db).unwrap();
    let mut ctl = Controller::start(data.path(), &["--freshness-secs", "3600"]).unwrap();
    assert_eq!(ctl.mqtt_port, port, "the broker came back on its port");
    // Before the device connects: the controller sent it again by itself.
    let retained = eventually(
        Duration::from_secs(30),
        "(c) the desired state sent again to a broker that lost it",
        || async {
            let d = retained_desired(port, &dev).await?;
            want(&d).map(|()| d)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\ncontroller output:\n{}", ctl.proc.output()));
    want(&retained).unwrap();
    // The controller logs it when it queues them, so the line is there or
    // on its way (the reader thread may lag behind the broker).
    ctl.proc
        .wait_for_line("desired states sent again", Duration::from_secs(10))
        .expect("the controller says why it sent them");
    let mut agent = start_agent(&dev);
    reports_stored_revision(&ctl, &agent, "(c) the agent gets it from the new broker").await;

    // (d) The broker is killed under the running controller.
    let pid = mosquitto_pid(data.path()).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let killed_at = Instant::now();
    let client = ctl.client();
    // One reconnect cycle: the supervisor's first restart (200 ms, then the
    // port listens), the agent's backoff (at most BACKOFF_MAX_MS), a TLS
    // connection and the first reports; 30 s bounds it generously on a
    // loaded machine.
    // Ready alone could be what was held from before the kill: the new
    // broker's pid and the agent's second connection say it came back.
    eventually(
        Duration::from_secs(30),
        "(d) the device reconnected to the restarted broker and ready",
        || async {
            let d = client.device(DEVICE).await.map_err(|e| e.to_string())?;
            let back = mosquitto_pid(data.path()).is_some_and(|p| p != pid);
            let connections = agent.output().matches("connected to broker").count();
            if back && connections >= 2 && d.device.readiness == Readiness::Ready {
                Ok(())
            } else {
                Err(format!(
                    "broker back: {back}; agent connections {connections}; {}",
                    d.device.readiness
                ))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nagent output:\n{}", agent.output()));
    println!(
        "broker SIGKILLed: the device was ready again after {:.1?}",
        killed_at.elapsed()
    );
    agent.terminate(Duration::from_secs(20)).unwrap();
    // The killed broker had perhaps not saved it (autosave every 30 s): the
    // controller sends it again once it has reconnected, which may come
    // after the agent's reconnection.
    let retained = eventually(
        Duration::from_secs(30),
        "(d) the retained desired state",
        || async {
            let d = retained_desired(port, &dev).await?;
            want(&d).map(|()| d)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\ncontroller output:\n{}", ctl.proc.output()));
    want(&retained).unwrap();
    ctl.stop().unwrap();
}
