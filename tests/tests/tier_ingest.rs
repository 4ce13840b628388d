//! End to end: ingest over the provincial tier. A real controller (managed
//! central Mosquitto over mutual TLS, SQLite) whose site config declares
//! two external provincial brokers, `p01` serving IR-02 and `p02` serving
//! IR-27 (the central ACL lets a bridge of the tier, and no other, publish
//! under its prefix); the test plays their bridges on the central broker
//! with the certificate
//! `fleet-controller issue-cert --kind bridge --name pNN` gives, as
//! Mosquitto's bridge would: its link state "1" retained, "0" as its last
//! will, and the devices' messages under `fleet/v1/b/bridge.p01/dev/…`.
//!
//! - What p01 forwards for its device is applied: readiness counts it.
//! - The same from `bridge.p02` (a valid bridge certificate, but p02 does
//!   not serve IR-02) is rejected, counted as `wrong-bridge`, not applied.
//! - What the controller sends the device (its desired state when it comes
//!   online, a command made through the API) goes to
//!   `fleet/v1/b/bridge.p01/dev/{id}/…`, where the bridge reads it.
//! - The bridge drops without DISCONNECT: its will says "0"; the province
//!   row shows the link down, and the device, silent since, is `link-down`,
//!   not `offline`.
//! - The bridge returns ("1") and the device reports again: readiness is
//!   exact again (ready, link up).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::time::Duration;

use fleet_api::types::{CommandRequest, Grouping, Readiness, ReadinessQuery, ReadinessRow};
use fleet_protocol::topic::bridge_state_topic;
use fleet_protocol::*;
use fleet_tests::builders::{mqtt_tls, now_ms, register, registration, state};
use fleet_tests::{eventually, free_port, metric, run_bin, within, Controller};
use rumqttc::{AsyncClient, Event, LastWill, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const DEVICE: &str = "BB-02-T1";
const PROVINCE: &str = "IR-02";

/// A client certificate from `fleet-controller issue-cert --kind bridge`.
fn bridge_cert(data: &Path, out: &Path, name: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (ok, stdout, err) = run_bin(
        "fleet-controller",
        &[
            "issue-cert",
            "--data-dir",
            data.to_str().unwrap(),
            "--kind",
            "bridge",
            "--name",
            name,
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .unwrap();
    assert!(ok, "issue-cert {name}: {stdout}{err}");
    // It prints the files it wrote: the certificate, its key, the CA.
    let read = |what: &str, is: &dyn Fn(&str) -> bool| {
        let path = stdout
            .lines()
            .find(|l| is(l))
            .unwrap_or_else(|| panic!("issue-cert printed no {what}: {stdout}"));
        assert!(path.starts_with(out.to_str().unwrap()), "{path}");
        std::fs::read(path).unwrap()
    };
    (
        read("CA", &|l| l.ends_with("/ca.crt")),
        read("certificate", &|l| {
            l.ends_with(".crt") && !l.ends_with("/ca.crt")
        }),
        read("key", &|l| l.ends_with(".key")),
    )
}

/// A bridge's session on the central broker: connected as `bridge.NAME`,
/// last will "0" (retained) on its link state, reading what comes down
/// its prefix. Dropping the task closes the socket without DISCONNECT.
struct Bridge {
    client: AsyncClient,
    identity: String,
    down: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    task: JoinHandle<()>,
}

impl Bridge {
    async fn connect(port: u16, name: &str, pem: &(Vec<u8>, Vec<u8>, Vec<u8>)) -> Bridge {
        let identity = format!("bridge.{name}");
        let mut opts = mqtt_tls(port, &identity, &pem.0, Some((&pem.1, &pem.2)));
        opts.set_last_will(LastWill::new(
            bridge_state_topic(&identity),
            "0",
            QoS::AtLeastOnce,
            true,
        ));
        let (client, mut el) = AsyncClient::new(opts, 64);
        let (tx, down) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(t) = ready_tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        within(15, "the bridge's CONNACK", ready_rx).await.unwrap();
        let b = Bridge {
            client,
            identity,
            down,
            task,
        };
        within(
            10,
            "subscribing to what comes down",
            b.client.subscribe(
                format!("fleet/v1/b/{}/dev/+/+", b.identity),
                QoS::AtLeastOnce,
            ),
        )
        .await
        .unwrap();
        b
    }

    async fn link(&self, up: bool) {
        within(
            10,
            "publishing the link state",
            self.client.publish(
                bridge_state_topic(&self.identity),
                QoS::AtLeastOnce,
                true,
                if up { "1" } else { "0" },
            ),
        )
        .await
        .unwrap();
    }

    /// Forward a device's message up, as the bridge maps it.
    async fn forward(&self, env: &Envelope, retain: bool) {
        within(
            10,
            "forwarding a device message",
            self.client.publish(
                env.topic().routed(Some(&self.identity)),
                QoS::AtLeastOnce,
                retain,
                env.to_cbor().unwrap(),
            ),
        )
        .await
        .unwrap();
    }

    /// Presence online, state and health of the device: what it sends on
    /// (re)connecting to its provincial broker.
    async fn device_reports(&self, session: u64, firmware: &str) {
        let id = DeviceId::parse(DEVICE).unwrap();
        let presence = Envelope::new(
            id.clone(),
            now_ms(),
            Payload::Presence(Presence {
                status: PresenceStatus::Online,
                agent: Version::parse("0.1.0").unwrap(),
                session: Some(session),
            }),
        );
        self.forward(&presence, true).await;
        self.forward(&state(DEVICE, firmware, now_ms()), true).await;
        self.forward(
            &Envelope::new(id, now_ms(), Payload::Health(Health::default())),
            false,
        )
        .await;
    }

    /// A health report forwarded every second (the device's timer), for
    /// as long as the returned task runs.
    fn heartbeat(&self) -> JoinHandle<()> {
        let client = self.client.clone();
        let topic = Topic::new(DeviceId::parse(DEVICE).unwrap(), TopicKind::Health)
            .routed(Some(&self.identity));
        tokio::spawn(async move {
            loop {
                let env = Envelope::new(
                    DeviceId::parse(DEVICE).unwrap(),
                    now_ms(),
                    Payload::Health(Health::default()),
                );
                let _ = client
                    .publish(&topic, QoS::AtMostOnce, false, env.to_cbor().unwrap())
                    .await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    /// The next message down whose topic ends with `kind`.
    async fn next_down(&mut self, kind: &str) -> (String, Envelope) {
        within(20, "a message down the bridge", async {
            loop {
                let (topic, payload) = self.down.recv().await.unwrap();
                if topic.ends_with(&format!("/{kind}")) {
                    let routed = Topic::parse_routed(&topic).unwrap();
                    let env = Envelope::from_cbor_on(&routed.topic, &payload).unwrap();
                    return (topic, env);
                }
            }
        })
        .await
    }
}

async fn row(api: &fleet_api::Client) -> Result<ReadinessRow, String> {
    let rows = api
        .readiness(&ReadinessQuery::new(
            Grouping::Province,
            Some(PROVINCE.to_owned()),
        ))
        .await
        .map_err(|e| e.to_string())?;
    rows.into_iter().next().ok_or_else(|| "no row".to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bridge_speaks_only_for_its_provinces_and_its_link_decides_link_down() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let site = work.path().join("controller.toml");
    std::fs::write(
        &site,
        format!(
            "[[broker.provincial]]\nname = \"p01\"\nprovinces = [\"{PROVINCE}\"]\n\
             host = \"127.0.0.1\"\nport = {}\nmanaged = false\n\
             [[broker.provincial]]\nname = \"p02\"\nprovinces = [\"IR-27\"]\n\
             host = \"127.0.0.1\"\nport = {}\nmanaged = false\n",
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    // A short freshness window, judged every second: the silent device
    // turns link-down within seconds.
    let ctl = Controller::start_with_env(
        data.path(),
        &["--config", site.to_str().unwrap(), "--freshness-secs", "4"],
        &[("FLEET_CONTROLLER__READINESS__TICK_SECS", "1")],
    )
    .unwrap();
    let api = ctl.client();
    ctl.import_registry(&format!(
        "province,county,station_id\n{PROVINCE},{PROVINCE}-SARI,ST-1\n"
    ))
    .unwrap();
    register(
        &api,
        vec![registration(
            DEVICE,
            PROVINCE,
            Some(&format!("{PROVINCE}-SARI")),
            "enrolled",
        )],
    )
    .await;
    let p01 = bridge_cert(data.path(), &work.path().join("p01"), "p01");
    let p02 = bridge_cert(data.path(), &work.path().join("p02"), "p02");

    // p01 comes up and forwards its device's reports: counted.
    let mut bridge = Bridge::connect(ctl.mqtt_port, "p01", &p01).await;
    bridge.link(true).await;
    bridge.device_reports(1, "2.4.0").await;
    let beat = bridge.heartbeat();
    let r = eventually(Duration::from_secs(20), "the device ready, link up", || {
        let api = &api;
        async move {
            let r = row(api).await?;
            let up = r.link.as_ref().is_some_and(|l| l.up && l.broker == "p01");
            (r.total == 1 && r.ready == 1 && up)
                .then_some(r.clone())
                .ok_or(format!("{r:?}"))
        }
    })
    .await
    .unwrap();
    assert!(r.reasons.is_empty(), "{r:?}");

    // Its desired state went down p01's prefix when it came online.
    let (topic, env) = bridge.next_down("desired").await;
    assert_eq!(topic, format!("fleet/v1/b/bridge.p01/dev/{DEVICE}/desired"));
    assert_eq!(env.device.as_str(), DEVICE);
    // A command made through the API goes the same way.
    let sent = within(
        20,
        "sending a command",
        api.command(
            DEVICE,
            &CommandRequest {
                action: "run-checks".into(),
                expires_in_s: None,
            },
        ),
    )
    .await
    .unwrap();
    let (topic, env) = bridge.next_down("cmd").await;
    assert_eq!(topic, format!("fleet/v1/b/bridge.p01/dev/{DEVICE}/cmd"));
    match env.payload {
        Payload::Command(c) => assert_eq!(c.id, sent.id),
        other => panic!("not a command: {other:?}"),
    }

    // After an outage Mosquitto 2.0.11 flushes one copy of each retained
    // report per reconnect attempt of the bridge: copies of the last state
    // are counted as duplicates and dropped before the rate limiter.
    let latest = state(DEVICE, "2.4.0", now_ms());
    for _ in 0..6 {
        bridge.forward(&latest, true).await;
    }
    eventually(Duration::from_secs(20), "the copies counted", || {
        let api = &api;
        async move {
            let m = api.metrics().await.map_err(|e| e.to_string())?;
            let n = metric(&m, "fleet_ingest_duplicates_total", "kind=\"state\"");
            (n >= 5.0).then_some(()).ok_or(format!("duplicates: {n}"))
        }
    })
    .await
    .unwrap();

    // p02 (a real bridge certificate, another province's broker) forges a
    // state for p01's device: rejected, counted, not applied.
    let forger = Bridge::connect(ctl.mqtt_port, "p02", &p02).await;
    forger
        .forward(&state(DEVICE, "6.6.6", now_ms()), false)
        .await;
    eventually(Duration::from_secs(20), "the forgery counted", || {
        let api = &api;
        async move {
            let m = api.metrics().await.map_err(|e| e.to_string())?;
            let n = metric(&m, "fleet_ingest_rejected_total", "reason=\"wrong-bridge\"");
            (n >= 1.0).then_some(()).ok_or(format!("wrong-bridge: {n}"))
        }
    })
    .await
    .unwrap();
    let d = within(20, "the device's detail", api.device(DEVICE))
        .await
        .unwrap();
    assert_eq!(
        d.device.firmware.as_ref().map(|v| v.as_str()),
        Some("2.4.0"),
        "the forged state was not applied: {d:?}"
    );
    forger.task.abort();

    // p01 drops without DISCONNECT: its will says the link is down. The
    // device, silent since, is link-down once its report is stale, not
    // offline.
    beat.abort();
    bridge.task.abort();
    let r = eventually(Duration::from_secs(30), "the device link-down", || {
        let api = &api;
        async move {
            let r = row(api).await?;
            let down = r.link.as_ref().is_some_and(|l| !l.up);
            (down && r.count(fleet_api::Reason::LinkDown) == 1)
                .then_some(r.clone())
                .ok_or(format!("{r:?}"))
        }
    })
    .await
    .unwrap();
    assert_eq!((r.total, r.ready), (1, 0), "{r:?}");
    assert_eq!(r.count(fleet_api::Reason::Offline), 0, "{r:?}");
    let d = within(20, "the device's detail", api.device(DEVICE))
        .await
        .unwrap();
    assert_eq!(d.device.readiness, Readiness::LinkDown);
    let (ok, text, err) = ctl.fleetctl(&["readiness"]).unwrap();
    assert!(ok, "{err}");
    assert!(
        text.contains(&format!("{PROVINCE} (p01): link down since "))
            && text.contains("(1 devices)"),
        "{text}"
    );

    // p01 is back and the device reports again: exact again.
    let bridge = Bridge::connect(ctl.mqtt_port, "p01", &p01).await;
    bridge.link(true).await;
    bridge.device_reports(2, "2.4.0").await;
    let beat = bridge.heartbeat();
    let r = eventually(Duration::from_secs(20), "ready again, link up", || {
        let api = &api;
        async move {
            let r = row(api).await?;
            let up = r.link.as_ref().is_some_and(|l| l.up);
            (r.ready == 1 && up)
                .then_some(r.clone())
                .ok_or(format!("{r:?}"))
        }
    })
    .await
    .unwrap();
    assert!(r.reasons.is_empty(), "{r:?}");
    let (ok, text, err) = ctl.fleetctl(&["readiness"]).unwrap();
    assert!(ok, "{err}");
    assert!(
        text.contains(&format!("{PROVINCE} (p01): link up")),
        "{text}"
    );
    beat.abort();
    bridge.task.abort();
    let log = ctl.stop().unwrap();
    assert!(
        log.contains("does not serve the device's province"),
        "the forgery was logged"
    );
    assert!(log.contains("link to the central broker is down"));
}

/// A device of a province behind a provincial broker that still connects
/// to the central broker directly (enrolled before the tier): what it is
/// sent (its desired state when it comes online, a command) comes on the
/// plain topic it can read, not down a bridge it is not behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_device_of_a_tier_province_heard_directly_is_answered_directly() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let site = work.path().join("controller.toml");
    std::fs::write(
        &site,
        format!(
            "[[broker.provincial]]\nname = \"p01\"\nprovinces = [\"{PROVINCE}\"]\n\
             host = \"127.0.0.1\"\nport = {}\nmanaged = false\n",
            free_port()
        ),
    )
    .unwrap();
    let ctl = Controller::start(data.path(), &["--config", site.to_str().unwrap()]).unwrap();
    let api = ctl.client();
    let county = format!("{PROVINCE}-SARI");
    ctl.import_registry(&format!(
        "province,county,station_id\n{PROVINCE},{county},ST-1\n"
    ))
    .unwrap();
    let dev = ctl.enrol("BB-02-DIRECT", PROVINCE, &county, "").unwrap();

    // The device on the central broker, reading its own topics.
    let (client, mut el) = AsyncClient::new(
        mqtt_tls(ctl.mqtt_port, &dev.id, &dev.ca, Some((&dev.cert, &dev.key))),
        64,
    );
    let (tx, mut down) = mpsc::unbounded_channel::<(String, Vec<u8>)>();
    let task = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    for kind in ["desired", "cmd"] {
        within(
            10,
            "subscribing",
            client.subscribe(format!("fleet/v1/dev/{}/{kind}", dev.id), QoS::AtLeastOnce),
        )
        .await
        .unwrap();
    }
    let id = DeviceId::parse(&dev.id).unwrap();
    let online = Envelope::new(
        id.clone(),
        now_ms(),
        Payload::Presence(Presence {
            status: PresenceStatus::Online,
            agent: Version::parse("0.1.0").unwrap(),
            session: Some(now_ms()),
        }),
    );
    for env in [online, state(&dev.id, "2.4.0", now_ms())] {
        within(
            10,
            "publishing",
            client.publish(
                env.topic().to_string(),
                QoS::AtLeastOnce,
                true,
                env.to_cbor().unwrap(),
            ),
        )
        .await
        .unwrap();
    }
    // Its desired state, sent when it came online, on the plain topic.
    let (topic, env) = next_plain(&mut down, "desired").await;
    assert_eq!(topic, format!("fleet/v1/dev/{}/desired", dev.id));
    assert_eq!(env.device, id);
    // A command made through the API, the same way.
    let sent = within(
        20,
        "sending a command",
        api.command(
            &dev.id,
            &CommandRequest {
                action: "run-checks".into(),
                expires_in_s: None,
            },
        ),
    )
    .await
    .unwrap();
    let (topic, env) = next_plain(&mut down, "cmd").await;
    assert_eq!(topic, format!("fleet/v1/dev/{}/cmd", dev.id));
    match env.payload {
        Payload::Command(c) => assert_eq!(c.id, sent.id),
        other => panic!("not a command: {other:?}"),
    }
    task.abort();
    let log = ctl.stop().unwrap();
    assert!(
        log.contains("heard directly on the central broker"),
        "the direct device was logged"
    );
}

/// The next message on a plain device topic ending with `kind`.
async fn next_plain(
    down: &mut mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    kind: &str,
) -> (String, Envelope) {
    within(20, "a message on the plain topic", async {
        loop {
            let (topic, payload) = down.recv().await.unwrap();
            if topic.ends_with(&format!("/{kind}")) {
                let t = Topic::parse(&topic).unwrap();
                return (topic, Envelope::from_cbor_on(&t, &payload).unwrap());
            }
        }
    })
    .await
}
