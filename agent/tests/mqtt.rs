//! The agent runtime against a real Mosquitto: what it publishes, its last
//! will, reconnecting and re-subscribing after a broker restart.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_agent::hardware::CheckFuture;
use fleet_agent::health::{HealthPolicy, Thresholds};
use fleet_agent::runtime::{LinkConfig, RuntimeConfig, SeqStore};
use fleet_agent::Hardware;
use fleet_protocol::*;
use fleet_tests::builders::{mqtt_observer as observer, publish, Seen};
use fleet_tests::{eventually, within, Mosquitto};
use tokio::sync::oneshot;

#[derive(Clone)]
struct TestHardware {
    printer_ok: Arc<Mutex<bool>>,
}

impl Hardware for TestHardware {
    fn firmware(&self) -> Version {
        Version::parse("2.4.0").unwrap()
    }
    fn sample(&mut self) -> Health {
        Health {
            cpu_pct: 3,
            mem_used_pct: 20,
            disk_free_pct: 50,
            uptime_s: 10,
            disk_free_mb: 1000,
            ..Health::default()
        }
    }
    fn run_checks(&mut self) -> CheckFuture {
        let ok = *self.printer_ok.lock().unwrap();
        Box::pin(async move {
            vec![CheckResult {
                name: "printer".into(),
                passed: ok,
                message: (!ok).then(|| "paper jam".into()),
            }]
        })
    }
    fn reboot(&mut self) -> Result<(), String> {
        Err("not in tests".into())
    }
}

fn config(id: &str, port: u16) -> RuntimeConfig {
    RuntimeConfig {
        device: DeviceId::parse(id).unwrap(),
        model: Model::parse("ballot-box-v2").unwrap(),
        link: LinkConfig {
            host: "127.0.0.1".into(),
            port,
            keep_alive: Duration::from_secs(2),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(300),
            tls: None,
        },
        health_sample: Duration::from_millis(200),
        health: HealthPolicy {
            report_every: Duration::from_secs(3600),
            thresholds: Thresholds::default(),
        },
        checks_interval: Duration::from_millis(300),
        seq: SeqStore::Memory(0),
        state_sent: None,
        state_acked: None,
        connected: None,
        update_dir: None,
        renewal: None,
    }
}

fn latest<T>(seen: &Seen, f: impl Fn(&Payload) -> Option<T>) -> Option<T> {
    seen.lock()
        .unwrap()
        .iter()
        .rev()
        .find_map(|e| f(&e.payload))
}

fn presence(seen: &Seen) -> Option<PresenceStatus> {
    latest(seen, |p| match p {
        Payload::Presence(pr) => Some(pr.status),
        _ => None,
    })
}

fn state(seen: &Seen) -> Option<State> {
    latest(seen, |p| match p {
        Payload::State(s) => Some(s.clone()),
        _ => None,
    })
}

const T: Duration = Duration::from_secs(15);

#[tokio::test]
async fn reports_presence_state_health_by_exception_and_says_offline_when_stopped() {
    let broker = Mosquitto::start().unwrap();
    let (_obs, seen) = within(10, "the observer", observer(broker.port)).await;
    let hw = TestHardware {
        printer_ok: Arc::new(Mutex::new(true)),
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(fleet_agent::run(
        config("BB-T-1", broker.port),
        hw.clone(),
        async {
            let _ = stop_rx.await;
        },
    ));

    eventually(T, "online presence", || async {
        (presence(&seen) == Some(PresenceStatus::Online))
            .then_some(())
            .ok_or("no presence".to_string())
    })
    .await
    .unwrap();
    let s = eventually(T, "state with checks", || async {
        state(&seen)
            .filter(|s| !s.checks.is_empty())
            .ok_or("no state".to_string())
    })
    .await
    .unwrap();
    assert!(s.all_checks_pass());
    assert_eq!(s.firmware.as_str(), "2.4.0");
    eventually(T, "health and boot event", || async {
        let v = seen.lock().unwrap();
        let health = v.iter().any(|e| matches!(e.payload, Payload::Health(_)));
        let boot = v.iter().any(|e| {
            matches!(
                &e.payload,
                Payload::Event(Event {
                    kind: EventKind::Boot { .. },
                    ..
                })
            )
        });
        (health && boot)
            .then_some(())
            .ok_or(format!("{} messages", v.len()))
    })
    .await
    .unwrap();

    // A failing printer: state changes and a check-failed event goes out.
    *hw.printer_ok.lock().unwrap() = false;
    eventually(T, "failed check in state", || async {
        state(&seen)
            .filter(|s| !s.all_checks_pass())
            .map(|_| ())
            .ok_or("still passing".to_string())
    })
    .await
    .unwrap();
    // The event leaves through the outbox, separately from the state: it
    // may arrive a moment after it.
    eventually(T, "check-failed event", || async {
        seen.lock()
            .unwrap()
            .iter()
            .any(|e| matches!(&e.payload,
                Payload::Event(Event { kind: EventKind::CheckFailed { name, .. }, .. }) if name == "printer"))
            .then_some(())
            .ok_or("no check-failed event".to_string())
    })
    .await
    .unwrap();

    // Health is sent on the first sample only (report_every is an hour, no
    // threshold crossed): report by exception.
    let healths = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e.payload, Payload::Health(_)))
        .count();
    assert_eq!(healths, 1);

    stop_tx.send(()).unwrap();
    within(15, "the agent to stop", agent)
        .await
        .unwrap()
        .unwrap();
    eventually(T, "offline presence", || async {
        (presence(&seen) == Some(PresenceStatus::Offline))
            .then_some(())
            .ok_or("still online".to_string())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn last_will_says_offline_when_the_agent_dies_without_goodbye() {
    let broker = Mosquitto::start().unwrap();
    let (_obs, seen) = within(10, "the observer", observer(broker.port)).await;
    let hw = TestHardware {
        printer_ok: Arc::new(Mutex::new(true)),
    };
    let agent = tokio::spawn(fleet_agent::run(
        config("BB-T-2", broker.port),
        hw,
        std::future::pending(),
    ));
    eventually(T, "online", || async {
        (presence(&seen) == Some(PresenceStatus::Online))
            .then_some(())
            .ok_or("no presence".to_string())
    })
    .await
    .unwrap();
    // Dropping the task drops the connection without DISCONNECT.
    agent.abort();
    eventually(T, "last will", || async {
        (presence(&seen) == Some(PresenceStatus::Offline))
            .then_some(())
            .ok_or("still online".to_string())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn reconnects_and_resubscribes_after_broker_restart_without_resending_an_unchanged_state() {
    let mut broker = Mosquitto::start().unwrap();
    let hw = TestHardware {
        printer_ok: Arc::new(Mutex::new(true)),
    };
    let agent = tokio::spawn(fleet_agent::run(
        config("BB-T-3", broker.port),
        hw,
        std::future::pending(),
    ));
    let (_obs, seen) = within(10, "the observer", observer(broker.port)).await;
    eventually(T, "first state", || async {
        state(&seen).map(|_| ()).ok_or("none".to_string())
    })
    .await
    .unwrap();

    // The broker restarts with no saved sessions.
    broker.restart().unwrap();
    let (ctl, seen) = within(10, "the observer after the restart", observer(broker.port)).await;
    eventually(T, "online again after reconnect", || async {
        (presence(&seen) == Some(PresenceStatus::Online))
            .then_some(())
            .ok_or("no presence".to_string())
    })
    .await
    .unwrap();

    // The agent subscribed again: a desired state reaches it and it reports
    // the new config revision.
    let desired = Envelope::new(
        DeviceId::parse("BB-T-3").unwrap(),
        fleet_agent::unix_ms(),
        Payload::Desired(Desired {
            config_rev: 7,
            firmware: None,
            agent: None,
            freeze: Vec::new(),
        }),
    );
    eventually(T, "config_rev 7 in state", || {
        let ctl = ctl.clone();
        let desired = desired.clone();
        let seen = Arc::clone(&seen);
        async move {
            publish(&ctl, &desired, true).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            state(&seen)
                .filter(|s| s.config_rev == 7)
                .map(|_| ())
                .ok_or("old rev".to_string())
        }
    })
    .await
    .unwrap();
    // Report by exception: the broker acknowledged the state before the
    // restart and it did not change, so it was not sent again on the new
    // connection; only the changed one was.
    let states: Vec<u32> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::State(s) => Some(s.config_rev),
            _ => None,
        })
        .collect();
    assert!(
        !states.is_empty() && states.iter().all(|rev| *rev == 7),
        "{states:?}"
    );
    agent.abort();
}

/// The simulator powers a device off only once the broker has its state:
/// the signal comes with the broker's acknowledgement, and what it signals
/// is retained there for a subscriber that comes later.
#[tokio::test]
async fn the_state_acknowledged_by_the_broker_is_signalled_and_retained() {
    let broker = Mosquitto::start().unwrap();
    let hw = TestHardware {
        printer_ok: Arc::new(Mutex::new(true)),
    };
    let acked = Arc::new(tokio::sync::Notify::new());
    let mut cfg = config("BB-T-4", broker.port);
    cfg.state_acked = Some(Arc::clone(&acked));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(fleet_agent::run(cfg, hw, async {
        let _ = stop_rx.await;
    }));
    within(15, "the state's acknowledgement", acked.notified()).await;
    stop_tx.send(()).unwrap();
    within(15, "the agent to stop", agent)
        .await
        .unwrap()
        .unwrap();
    // Subscribed only now: what it gets is the retained state.
    let (_obs, seen) = within(10, "the observer", observer(broker.port)).await;
    eventually(T, "the retained state", || async {
        state(&seen)
            .map(|s| assert_eq!(s.firmware.as_str(), "2.4.0"))
            .ok_or("no retained state".to_string())
    })
    .await
    .unwrap();
}
