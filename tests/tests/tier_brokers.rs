//! The provincial broker tier, end to end with real processes: `serve
//! --provincial-brokers 2` starts two supervised provincial Mosquittos
//! bridged over mutual TLS to the central one; a device enrolled in a
//! province of p01 is told p01's port and what it sends there appears on
//! the central broker under `fleet/v1/b/bridge.p01/`; a client holding
//! bridge p02's certificate cannot speak for p01 nor for a directly
//! connected device; a killed provincial broker comes back on its port; and
//! `fleet-controller broker-config --role provincial` renders a config that
//! a Mosquitto started here accepts and bridges with (hostname checked);
//! a retired device is refused by its provincial broker.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_tests::builders::{mqtt_connect, mqtt_drive, mqtt_tls, now_ms, publish, state};
use fleet_tests::{
    eventually, free_port, issue_cert, run_bin, within, Controller, EnrolledDevice, Identity, Proc,
};
use rumqttc::{AsyncClient, Event, Packet, QoS};

/// Topics (and payloads) the observer was given on the central broker, in order.
type Topics = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

async fn observe(port: u16, id: &Identity) -> Topics {
    let (client, mut events) = mqtt_connect(mqtt_tls(
        port,
        "fleet.observer",
        &id.ca,
        Some((&id.cert, &id.key)),
    ))
    .await
    .unwrap();
    within(
        10,
        "subscribing",
        client.subscribe("fleet/v1/#", QoS::AtLeastOnce),
    )
    .await
    .unwrap();
    let seen: Topics = Arc::default();
    let (tx, rx) = tokio::sync::oneshot::channel();
    {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            let _keep = client;
            let mut tx = Some(tx);
            while let Ok(ev) = events.poll().await {
                match ev {
                    Event::Incoming(Packet::Publish(p)) => {
                        seen.lock().unwrap().push((p.topic, p.payload.to_vec()))
                    }
                    Event::Incoming(Packet::SubAck(_)) => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    _ => {}
                }
            }
        });
    }
    within(10, "the observer's subscription", rx).await.unwrap();
    seen
}

async fn wait_seen(seen: &Topics, topic: &str) {
    eventually(Duration::from_secs(20), topic, || async {
        seen.lock()
            .unwrap()
            .iter()
            .any(|(t, _)| t == topic)
            .then_some(())
            .ok_or_else(|| "not yet".to_owned())
    })
    .await
    .unwrap();
}

/// Publish the device's state on the broker at `port` (as the device).
async fn send_state(port: u16, dev: &EnrolledDevice, firmware: &str) -> AsyncClient {
    let (client, events) = mqtt_connect(mqtt_tls(
        port,
        &dev.id,
        &dev.ca,
        Some((&dev.cert, &dev.key)),
    ))
    .await
    .unwrap();
    mqtt_drive(events);
    publish(&client, &state(&dev.id, firmware, now_ms()), true).await;
    client
}

/// `provincial broker p01 mqtts://127.0.0.1:PORT provinces …` → PORT.
fn logged_port(output: &str, name: &str) -> u16 {
    let needle = format!("provincial broker {name} mqtts://127.0.0.1:");
    output
        .lines()
        .find_map(|l| l.split(&needle).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no line for {name} in:\n{output}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tier_of_provincial_brokers_bridges_each_province_under_its_own_name_only() {
    fleet_tests::install_crypto();
    let data = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    // Identities first: issue-cert writes the audit log, so not beside a
    // running controller.
    fleet_tests::init_data_dir(data.path()).unwrap();
    let observer = issue_cert(data.path(), certs.path(), "observer", "observer").unwrap();
    let rogue = issue_cert(data.path(), certs.path(), "bridge", "p02").unwrap();
    issue_cert(data.path(), certs.path(), "bridge", "p09").unwrap();

    let ctl = Controller::start(data.path(), &["--provincial-brokers", "2"]).unwrap();
    let output = ctl.proc.output();
    let p01_port = logged_port(&output, "p01");
    let p02_port = logged_port(&output, "p02");

    // The API tells the same tier, ports set.
    let tier = within(20, "brokers", ctl.client().brokers()).await.unwrap();
    assert_eq!(tier.central.port, ctl.mqtt_port);
    assert_eq!(tier.provincial.len(), 2);
    let p01 = &tier.provincial[0];
    assert_eq!(
        (
            p01.name.as_str(),
            p01.port,
            p01.bridge.as_str(),
            p01.managed
        ),
        ("p01", p01_port, "bridge.p01", true)
    );
    assert_eq!(tier.provincial[1].port, p02_port);
    let (ok, json, err) = ctl.fleetctl(&["brokers", "--output", "json"]).unwrap();
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["provincial"][1]["bridge"], "bridge.p02");

    // A device of a p01 province is told p01 at enrolment.
    let province = p01.provinces[0].to_string();
    let county = format!("{province}-AAA");
    ctl.import_registry(&format!(
        "province,county,station_id\n{province},{county},ST-1\n"
    ))
    .unwrap();
    let dev = ctl.enrol("BB-TIER-1", &province, &county, "").unwrap();
    let told: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dev.dir.path().join("state/broker.json")).unwrap())
            .unwrap();
    assert_eq!(told["port"], p01_port, "{told}");

    // What it sends on p01 reaches the central broker under p01's name.
    let seen = observe(ctl.mqtt_port, &observer).await;
    let _device = send_state(p01_port, &dev, "2.4.0").await;
    wait_seen(&seen, "fleet/v1/b/bridge.p01/dev/BB-TIER-1/state").await;

    // A compromised p02 (its certificate) cannot speak for p01's devices,
    // nor for a device on the central broker, nor for p01's link; under its
    // own prefix it can. Its payload ("forged") is no real message's.
    let (rogue_client, rogue_events) = mqtt_connect(mqtt_tls(
        ctl.mqtt_port,
        "bridge.p02",
        &rogue.ca,
        Some((&rogue.cert, &rogue.key)),
    ))
    .await
    .unwrap();
    mqtt_drive(rogue_events);
    let forged = [
        "fleet/v1/b/bridge.p01/dev/BB-VICTIM/state",
        "fleet/v1/dev/BB-VICTIM/state",
        "fleet/v1/b/bridge.p01/dev/BB-TIER-1/events",
        "fleet/v1/bridge/bridge.p01/state",
    ];
    for topic in forged {
        within(
            10,
            "queueing a forged publish",
            rogue_client.publish(topic, QoS::AtLeastOnce, false, b"forged".to_vec()),
        )
        .await
        .unwrap();
    }
    // Published after the forged ones by the same client: once it arrives,
    // the forged ones would have.
    let control = "fleet/v1/b/bridge.p02/dev/BB-CONTROL/state";
    within(
        10,
        "queueing the control publish",
        rogue_client.publish(control, QoS::AtLeastOnce, false, b"forged".to_vec()),
    )
    .await
    .unwrap();
    wait_seen(&seen, control).await;
    {
        let seen = seen.lock().unwrap();
        for topic in forged {
            assert!(
                !seen.iter().any(|(t, p)| t == topic && p == b"forged"),
                "the observer was given a forged {topic}"
            );
        }
    }

    // A device connected directly to the central broker cannot publish
    // anywhere under fleet/v1/b/: not under its own name (the old %u
    // patterns let it, without bound), nor under a bridge's prefix.
    let (dev_client, dev_events) = mqtt_connect(mqtt_tls(
        ctl.mqtt_port,
        &dev.id,
        &dev.ca,
        Some((&dev.cert, &dev.key)),
    ))
    .await
    .unwrap();
    mqtt_drive(dev_events);
    let by_device = [
        format!("fleet/v1/b/{}/dev/ANY/state", dev.id),
        format!("fleet/v1/b/{}/dev/{}/state", dev.id, dev.id),
        format!("fleet/v1/b/bridge.p01/dev/{}/state", dev.id),
        format!("fleet/v1/bridge/{}/state", dev.id),
    ];
    for topic in &by_device {
        within(
            10,
            "queueing a device's publish under fleet/v1/b/",
            dev_client.publish(topic, QoS::AtLeastOnce, true, b"forged".to_vec()),
        )
        .await
        .unwrap();
    }
    let dev_control = format!("fleet/v1/dev/{}/state", dev.id);
    publish(&dev_client, &state(&dev.id, "2.4.0", now_ms()), true).await;
    wait_seen(&seen, &dev_control).await;
    {
        let seen = seen.lock().unwrap();
        for topic in &by_device {
            assert!(
                !seen.iter().any(|(t, p)| t == topic && p == b"forged"),
                "a device published {topic} on the central broker"
            );
        }
    }
    drop(dev_client);

    // A killed provincial Mosquitto comes back on its port and bridges again.
    let pid_file = data.path().join("mosquitto-p01/state/mosquitto.pid");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let status = Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually(Duration::from_secs(30), "p01 restarted", || async {
        let now = std::fs::read_to_string(&pid_file).unwrap_or_default();
        (now.trim() != pid.trim()
            && !now.trim().is_empty()
            && std::net::TcpStream::connect(("127.0.0.1", p01_port)).is_ok())
        .then_some(())
        .ok_or_else(|| format!("pid file says {now:?}"))
    })
    .await
    .unwrap();
    seen.lock().unwrap().clear();
    eventually(
        Duration::from_secs(30),
        "a state through p01 again",
        || async {
            let _c = send_state(p01_port, &dev, "2.4.1").await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            seen.lock()
                .unwrap()
                .iter()
                .any(|(t, _)| t == "fleet/v1/b/bridge.p01/dev/BB-TIER-1/state")
                .then_some(())
                .ok_or_else(|| "not yet".to_owned())
        },
    )
    .await
    .unwrap();

    // broker-config renders what Mosquittos started here run: a central
    // broker whose ACL names bridge p09 (--bridges), and the provincial p09
    // bridged to it, the central broker's name checked (localhost is in its
    // SANs). The controller's central broker does not know p09: its bridge
    // may write nothing there.
    let conf_dir = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let central_conf = tempfile::tempdir().unwrap();
    let central_state = tempfile::tempdir().unwrap();
    let pki = data.path().join("pki");
    let port = free_port();
    let central_port = free_port();
    let p = |f: &str| pki.join(f).to_str().unwrap().to_owned();
    let (ok, _, err) = run_bin(
        "fleet-controller",
        &[
            "broker-config",
            "--role",
            "central",
            "--bridges",
            "p09",
            "--listen",
            &format!("127.0.0.1:{central_port}"),
            "--cafile",
            &p("ca.crt"),
            "--certfile",
            &p("broker.crt"),
            "--keyfile",
            &p("broker.key"),
            "--crlfile",
            &p("ca.crl"),
            "--state-dir",
            central_state.path().to_str().unwrap(),
            "--user",
            "root",
            "--out",
            central_conf.path().to_str().unwrap(),
        ],
    )
    .unwrap();
    assert!(ok, "broker-config --role central failed: {err}");
    let acl = std::fs::read_to_string(central_conf.path().join("acl")).unwrap();
    assert!(acl.contains("user bridge.p09\n"), "{acl}");
    let mut cmd = Command::new(fleet_tests::mosquitto_binary().unwrap());
    cmd.arg("-c")
        .arg(central_conf.path().join("mosquitto.conf"));
    let mut central = Proc::from_command("mosquitto", cmd).unwrap();
    eventually(
        Duration::from_secs(30),
        "the rendered central broker",
        || async {
            std::net::TcpStream::connect(("127.0.0.1", central_port))
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    )
    .await
    .unwrap();
    let seen = observe(central_port, &observer).await;
    let (ok, _, err) = run_bin(
        "fleet-controller",
        &[
            "broker-config",
            "--role",
            "provincial",
            "--name",
            "p09",
            "--provinces",
            &province,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--central",
            &format!("localhost:{central_port}"),
            "--cafile",
            &p("ca.crt"),
            "--certfile",
            &p("broker.crt"),
            "--keyfile",
            &p("broker.key"),
            "--crlfile",
            &p("ca.crl"),
            "--bridge-certfile",
            certs.path().join("bridge.p09.crt").to_str().unwrap(),
            "--bridge-keyfile",
            certs.path().join("bridge.p09.key").to_str().unwrap(),
            "--state-dir",
            state_dir.path().to_str().unwrap(),
            // Keep this test's user (ignored unless run as root).
            "--user",
            "root",
            "--out",
            conf_dir.path().to_str().unwrap(),
        ],
    )
    .unwrap();
    assert!(ok, "broker-config failed: {err}");
    let mut cmd = Command::new(fleet_tests::mosquitto_binary().unwrap());
    cmd.arg("-c").arg(conf_dir.path().join("mosquitto.conf"));
    let mut mosquitto = Proc::from_command("mosquitto", cmd).unwrap();
    eventually(Duration::from_secs(30), "the rendered broker", || async {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap();
    let log = state_dir.path().join("mosquitto.log");
    let bridged = eventually(
        Duration::from_secs(30),
        "p09 through its bridge",
        || async {
            let _c = send_state(port, &dev, "2.4.2").await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            seen.lock()
                .unwrap()
                .iter()
                .any(|(t, _)| t == "fleet/v1/b/bridge.p09/dev/BB-TIER-1/state")
                .then_some(())
                .ok_or_else(|| std::fs::read_to_string(&log).unwrap_or_default())
        },
    )
    .await;
    mosquitto.kill();
    central.kill();
    bridged.unwrap();

    // Retired, the device is refused by its own provincial broker (its CRL
    // reloaded, its session there taken over) when the API answers; and
    // its session on the central broker, where a device enrolled before
    // the tier still connects directly, is taken over too.
    let mut cuts = vec![];
    for (port, at) in [(p01_port, "p01"), (ctl.mqtt_port, "central")] {
        let (held, held_events) = mqtt_connect(mqtt_tls(
            port,
            &dev.id,
            &dev.ca,
            Some((&dev.cert, &dev.key)),
        ))
        .await
        .unwrap();
        let (cut_tx, cut_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _keep = held;
            let mut events = held_events;
            while events.poll().await.is_ok() {}
            let _ = cut_tx.send(());
        });
        cuts.push((at, cut_rx));
    }
    let (ok, out, err) = ctl.fleetctl(&["device", "retire", &dev.id]).unwrap();
    assert!(ok, "retire failed: {out}{err}");
    for (at, cut_rx) in cuts {
        within(
            20,
            &format!("the held session on {at} cut by the takeover"),
            cut_rx,
        )
        .await
        .unwrap();
    }
    let again = mqtt_connect(mqtt_tls(
        ctl.mqtt_port,
        &dev.id,
        &dev.ca,
        Some((&dev.cert, &dev.key)),
    ))
    .await;
    assert!(
        again.is_err(),
        "a retired device still connects to the central broker"
    );
    let again = mqtt_connect(mqtt_tls(
        p01_port,
        &dev.id,
        &dev.ca,
        Some((&dev.cert, &dev.key)),
    ))
    .await;
    assert!(again.is_err(), "a retired device still connects to p01");
    ctl.stop().unwrap();
}
