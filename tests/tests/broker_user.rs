//! Mosquitto does not run as root: started by a root controller it drops to
//! the `mosquitto` user, reads copies of its TLS files it cannot rewrite,
//! and still serves devices over mutual TLS, reloads for a retirement, and
//! is restarted by the supervisor. A data directory the broker's user cannot
//! reach is refused at start with a message naming the directory in the way.
//!
//! These tests need root (CI runs as root): without it there is no user to
//! drop to, and they fail saying so rather than pass.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use fleet_api::types::Lifecycle;
use fleet_controller::broker::account::{broker_account, running_as_root};
use fleet_controller::broker::pid_file;
use fleet_protocol::{DeviceId, Envelope, Event, EventKind, Payload};
use fleet_tests::builders::{mqtt_connect, mqtt_drive, mqtt_tls, now_ms, publish};
use fleet_tests::in_process::InProcessController;
use fleet_tests::{eventually, within, Controller};

fn uid_of(pid: &str) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    // Real, effective, saved, filesystem: all must have dropped.
    let ids: Vec<u32> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "{line}");
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "not all ids dropped: {line}"
    );
    ids[0]
}

fn require_root() {
    assert!(
        running_as_root(),
        "this test checks that a root-started broker drops to the mosquitto user: run it as root (CI does)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_root_started_broker_runs_as_mosquitto_and_still_serves_devices() {
    require_root();
    fleet_tests::install_crypto();
    let account = broker_account()
        .unwrap()
        .expect("root has a broker account");
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start(data.path(), &[]).unwrap();
    ctl.import_registry("province,county,station_id\nIR-23,IR-23-TEH,ST-1\n")
        .unwrap();
    let broker_dir = data.path().join("mosquitto");

    let pid = std::fs::read_to_string(pid_file(&broker_dir)).unwrap();
    assert_eq!(
        uid_of(&pid),
        account.uid,
        "mosquitto (pid {pid}) runs as root"
    );

    // What it reads it cannot rewrite: its config (read as root at the next
    // start), ACL and the copies of its certificate and key are root's.
    for f in [
        "mosquitto.conf",
        "acl",
        "broker.crt",
        "broker.key",
        "ca.crt",
        "crl.pem",
    ] {
        let meta = std::fs::metadata(broker_dir.join(f)).unwrap();
        assert_eq!(meta.uid(), 0, "{f} must stay root's");
        assert_eq!(
            meta.gid(),
            account.gid,
            "{f} is readable by the broker's group"
        );
        assert_eq!(meta.permissions().mode() & 0o777, 0o640, "{f}");
    }
    assert_eq!(std::fs::metadata(&broker_dir).unwrap().uid(), 0);
    assert_eq!(
        std::fs::metadata(broker_dir.join("state")).unwrap().uid(),
        account.uid
    );

    // A device still connects over mutual TLS and is heard.
    let dev = ctl.enrol("BB-U1", "IR-23", "IR-23-TEH", "").unwrap();
    let (client, el) = mqtt_connect(mqtt_tls(
        ctl.mqtt_port,
        "BB-U1",
        &dev.ca,
        Some((&dev.cert, &dev.key)),
    ))
    .await
    .unwrap();
    mqtt_drive(el);
    let event = Envelope::new(
        DeviceId::parse("BB-U1").unwrap(),
        now_ms(),
        Payload::Event(Event {
            seq: 1,
            at_ms: now_ms(),
            kind: EventKind::Error {
                message: "heard through a non-root broker".into(),
            },
            boot: Some(7),
        }),
    );
    publish(&client, &event, false).await;
    let api = ctl.client();
    eventually(
        Duration::from_secs(20),
        "the device's event is stored",
        || {
            let api = api.clone();
            async move {
                let d = api.device("BB-U1").await.map_err(|e| e.to_string())?;
                if d.events.is_empty() {
                    Err("no event yet".to_owned())
                } else {
                    Ok(())
                }
            }
        },
    )
    .await
    .unwrap();

    // Retiring it reloads the broker, which rereads its (re-staged) CRL as
    // mosquitto: the device is refused at once.
    within(20, "retiring", api.move_device("BB-U1", Lifecycle::Retired))
        .await
        .unwrap();
    let again = mqtt_connect(mqtt_tls(
        ctl.mqtt_port,
        "BB-U1",
        &dev.ca,
        Some((&dev.cert, &dev.key)),
    ))
    .await;
    assert!(again.is_err(), "a retired device was admitted");

    // Killed, it comes back, still as mosquitto.
    std::process::Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();
    let mut back = String::new();
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        back = std::fs::read_to_string(pid_file(&broker_dir)).unwrap_or_default();
        if !back.trim().is_empty()
            && back.trim() != pid.trim()
            && Path::new(&format!("/proc/{}", back.trim())).exists()
        {
            break;
        }
    }
    assert_ne!(
        back.trim(),
        pid.trim(),
        "the supervisor did not restart mosquitto"
    );
    assert_eq!(uid_of(&back), account.uid);
    ctl.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_directory_the_broker_cannot_reach_is_refused_by_name() {
    require_root();
    let top = tempfile::tempdir().unwrap(); // 0700, root's: closed to mosquitto
    let closed = top.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = closed.join("data");
    let err = match InProcessController::start(&data, |_| {}).await {
        Ok(ctl) => {
            within(30, "stopping", ctl.stop()).await.unwrap();
            panic!("the controller started with a broker that cannot reach its directory")
        }
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("cannot reach") && err.contains(&*closed.to_string_lossy()),
        "{err}"
    );
    // Let it through by group only, as the message says: it starts.
    let account = broker_account().unwrap().unwrap();
    std::os::unix::fs::chown(&closed, None, Some(account.gid)).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o710)).unwrap();
    let ctl = InProcessController::start(&data, |_| {}).await.unwrap();
    within(30, "stopping", ctl.stop()).await.unwrap();
}
