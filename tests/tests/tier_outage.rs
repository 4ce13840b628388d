//! The provincial tier under an uplink outage, end to end with real parts:
//! a `fleet-controller serve` process (SQLite, its managed central
//! Mosquitto on a fixed port, mutual TLS), two managed provincial brokers
//! from a site config (`[[broker.provincial]]`), p01 (IR-02) bridged to the
//! central broker through a [`Proxy`] (its `uplink`), p02 (IR-07) directly;
//! real `fleet-agent` processes behind each.
//!
//! The proxy is cut for `FLEET_OUTAGE_SECS` (default 45 s, longer than the
//! 15 s freshness window; run it once with 300 for "several minutes"):
//!
//! - the controller sees p01's link down (the bridge's will on the central
//!   broker), with its since; p01's devices, silent past the window, are
//!   `link-down`, none `offline`; p02's device stays ready.
//! - meanwhile p01's devices send QoS 1 messages p01 queues for its bridge:
//!   a failing check (state change and a check-failed event), events
//!   through the agents' test hook at the start and at the end of the
//!   outage, an agent restart (goodbye, new boot event, new presence), and
//!   one agent killed for good (its last will).
//! - when the link returns: every event the agents committed is stored
//!   exactly once (the store, the device page's gaps and events); every
//!   retained state and presence of p01's devices on the central broker is
//!   the last one the device published on p01 (both read with the
//!   `fleet.observer` certificate), and the controller shows that state;
//!   readiness is exact again (the killed device `offline`, the failing one
//!   `unhealthy`, the restarted one ready, link up).
//!
//! Then p02's bridge certificate, on the central broker, forges a state for
//! a p01 device under its own prefix: rejected (`wrong-bridge` in
//! /metrics), nothing changes; a state through the real p01 bridge is
//! applied.
//!
//! The test prints how long the bridge took to come back and drain, and how
//! often the central broker delivered an event twice (QoS 1 allows it; the
//! store keeps one).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_api::types::{Grouping, Readiness, ReadinessQuery, ReadinessRow};
use fleet_api::Reason;
use fleet_protocol::{Envelope, Payload, Topic, TopicKind};
use fleet_tests::builders::{mqtt_connect, mqtt_tls, now_ms, state};
use fleet_tests::proxy::Proxy;
use fleet_tests::{
    eventually, free_port, issue_cert, metric, within, Controller, EnrolledDevice, Identity, Proc,
};
use rumqttc::{AsyncClient, Event, Packet, QoS};

/// p01's province (behind the proxy) and p02's.
const P01: (&str, &str) = ("IR-02", "IR-02-SARI");
const P02: (&str, &str) = ("IR-07", "IR-07-ZAHE");
/// The freshness window: an outage longer than this makes p01's devices
/// stale.
const FRESHNESS_SECS: u64 = 15;
/// The outbox's commit lines are what the agent acknowledged as durable.
const AGENT_LOG: &str = "info,fleet_agent::outbox=debug";

fn outage() -> Duration {
    let secs = std::env::var("FLEET_OUTAGE_SECS")
        .ok()
        .map(|s| {
            s.parse::<u64>()
                .expect("FLEET_OUTAGE_SECS is a number of seconds")
        })
        .unwrap_or(45);
    assert!(
        secs > FRESHNESS_SECS + 10,
        "the outage must outlast the freshness window ({FRESHNESS_SECS} s) with room to judge"
    );
    Duration::from_secs(secs)
}

/// What a subscriber was given: (topic, payload, retain), in order.
type Seen = Arc<Mutex<Vec<(String, Vec<u8>, bool)>>>;

/// Subscribe `filter` at QoS 1 on the broker at `port` as `client_id`,
/// recording every message until the returned client is dropped.
async fn record(port: u16, client_id: &str, id: &Identity, filter: &str) -> (AsyncClient, Seen) {
    let (client, mut events) =
        mqtt_connect(mqtt_tls(port, client_id, &id.ca, Some((&id.cert, &id.key))))
            .await
            .unwrap();
    within(
        10,
        "subscribing",
        client.subscribe(filter, QoS::AtLeastOnce),
    )
    .await
    .unwrap();
    let seen: Seen = Arc::default();
    let (tx, rx) = tokio::sync::oneshot::channel();
    {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            let mut tx = Some(tx);
            while let Ok(ev) = events.poll().await {
                match ev {
                    Event::Incoming(Packet::Publish(p)) => {
                        seen.lock()
                            .unwrap()
                            .push((p.topic, p.payload.to_vec(), p.retain))
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
    within(10, "the subscription", rx).await.unwrap();
    (client, seen)
}

/// The (boot, seq) of an event message on `topic` (plain or bridged).
fn event_key(topic: &str, payload: &[u8]) -> Option<(String, (u64, u64))> {
    let routed = Topic::parse_routed(topic).ok()?;
    if routed.topic.kind != TopicKind::Events {
        return None;
    }
    let env = Envelope::from_cbor_on(&routed.topic, payload).ok()?;
    match env.payload {
        Payload::Event(e) => Some((env.device.as_str().to_owned(), (e.boot.unwrap_or(0), e.seq))),
        _ => None,
    }
}

/// Per device, the last payload of `kind` in `seen` (retained ones only if
/// `retained`).
fn last_of(seen: &Seen, kind: TopicKind, retained: bool) -> BTreeMap<String, Vec<u8>> {
    let mut last = BTreeMap::new();
    for (topic, payload, retain) in seen.lock().unwrap().iter() {
        let Ok(routed) = Topic::parse_routed(topic) else {
            continue;
        };
        if routed.topic.kind == kind && (!retained || *retain) {
            last.insert(routed.topic.device.as_str().to_owned(), payload.clone());
        }
    }
    last
}

/// One real agent: its files, its runs.
struct Agent {
    dev: EnrolledDevice,
    /// Its hook directory and its printer's paper file.
    _files: tempfile::TempDir,
    hook: PathBuf,
    paper: PathBuf,
    proc: Option<Proc>,
    finished: Vec<String>,
    /// Events its current run must have committed.
    expected_now: usize,
    /// Hook files written so far (their names must be unique).
    hooked: usize,
}

impl Agent {
    fn enrol(ctl: &Controller, id: &str, (province, county): (&str, &str)) -> Agent {
        let files = tempfile::tempdir().unwrap();
        let hook = files.path().join("hook");
        std::fs::create_dir(&hook).unwrap();
        let paper = files.path().join("paper-loaded");
        std::fs::write(&paper, "").unwrap();
        let dev = ctl
            .enrol(
                id,
                province,
                county,
                &format!(
                    r#"[mqtt]
keep_alive_secs = 5
backoff_base_ms = 500
backoff_max_ms = 3000
[health]
sample_secs = 2
report_secs = 3
[checks]
interval_secs = 1
[[checks.list]]
name = "printer"
command = ["test", "-e", "{paper}"]
timeout_secs = 5
[test_hooks]
event_dir = "{hook}"
"#,
                    paper = paper.display(),
                    hook = hook.display(),
                ),
            )
            .unwrap_or_else(|e| panic!("enrolling {id}: {e:#}"));
        Agent {
            dev,
            _files: files,
            hook,
            paper,
            proc: None,
            finished: Vec::new(),
            expected_now: 0,
            hooked: 0,
        }
    }

    fn id(&self) -> &str {
        &self.dev.id
    }

    fn start(&mut self) {
        let conf = self.dev.config.to_str().unwrap().to_owned();
        self.proc = Some(
            Proc::spawn(
                "fleet-agent",
                &["run", "--config", &conf],
                &[("FLEET_AGENT_LOG", AGENT_LOG)],
            )
            .unwrap(),
        );
        // Its boot event, and the failing check's first failure.
        self.expected_now = 1 + usize::from(!self.paper.exists());
    }

    /// `n` error events through the test hook.
    fn emit(&mut self, n: usize) {
        for _ in 0..n {
            self.hooked += 1;
            fleet_tests::hook_event(
                &self.hook,
                &format!("e{:03}", self.hooked),
                &format!(
                    r#"{{"error":{{"message":"{} outage event {}"}}}}"#,
                    self.dev.id, self.hooked
                ),
            )
            .unwrap();
        }
        self.expected_now += n;
    }

    /// Fail the printer check: a state change and a check-failed event.
    fn fail_printer(&mut self) {
        std::fs::remove_file(&self.paper).unwrap();
        self.expected_now += 1;
    }

    fn output(&self) -> String {
        self.proc.as_ref().map(Proc::output).unwrap_or_default()
    }

    /// (committed by the current run, what it must commit).
    fn progress(&self) -> (usize, usize) {
        (
            fleet_tests::committed_events(&self.output()).len(),
            self.expected_now,
        )
    }

    /// End the current run: SIGKILL (its will) or SIGTERM (its goodbye).
    fn stop(&mut self, kill: bool) {
        let mut proc = self.proc.take().unwrap();
        if kill {
            proc.kill();
        } else {
            let status = proc.terminate(Duration::from_secs(20)).unwrap();
            assert!(
                status.success(),
                "{}: {status}\n{}",
                self.id(),
                proc.output()
            );
        }
        self.finished.push(proc.output());
    }

    /// Every (boot, seq) any of its runs committed.
    fn committed(&self) -> BTreeSet<(u64, u64)> {
        self.finished
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(self.output().as_str()))
            .flat_map(fleet_tests::committed_events)
            .collect()
    }
}

/// Wait until each agent's current run committed what it must.
async fn all_committed(agents: &[&Agent], what: &str) {
    eventually(Duration::from_secs(60), what, || {
        let behind: Vec<String> = agents
            .iter()
            .filter(|a| a.proc.is_some())
            .filter_map(|a| {
                let (have, want) = a.progress();
                (have < want).then(|| format!("{} {have}/{want}", a.id()))
            })
            .collect();
        async move {
            behind
                .is_empty()
                .then_some(())
                .ok_or(format!("behind: {behind:?}"))
        }
    })
    .await
    .unwrap();
}

async fn row(api: &fleet_api::Client, province: &str) -> Result<ReadinessRow, String> {
    let rows = api
        .readiness(&ReadinessQuery::new(
            Grouping::Province,
            Some(province.to_owned()),
        ))
        .await
        .map_err(|e| e.to_string())?;
    rows.into_iter()
        .next()
        .ok_or_else(|| format!("no row for {province}"))
}

/// Wait for `province`'s row to satisfy `ok`; returns it.
async fn row_until(
    api: &fleet_api::Client,
    province: &str,
    secs: u64,
    what: &str,
    ok: impl Fn(&ReadinessRow) -> bool,
) -> ReadinessRow {
    eventually(Duration::from_secs(secs), what, || async {
        let r = row(api, province).await?;
        if ok(&r) {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await
    .unwrap()
}

fn link_up(r: &ReadinessRow) -> bool {
    r.link.as_ref().is_some_and(|l| l.up)
}

type Stored = BTreeMap<String, Vec<(u64, u64)>>;

/// Every stored event of `devices`: (boot, seq), duplicates kept.
async fn stored(db: &sqlx::SqlitePool, devices: &[&str]) -> Result<Stored, String> {
    let mut all = BTreeMap::new();
    for d in devices {
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT boot, seq FROM events WHERE device = ? ORDER BY id")
                .bind(d)
                .fetch_all(db)
                .await
                .map_err(|e| e.to_string())?;
        all.insert(
            (*d).to_owned(),
            rows.into_iter()
                .map(|(b, s)| {
                    (
                        u64::from_ne_bytes(b.to_ne_bytes()),
                        u64::try_from(s).unwrap(),
                    )
                })
                .collect(),
        );
    }
    Ok(all)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uplink_outage_loses_no_qos1_message_and_readiness_says_link_down_then_exact() {
    let outage = outage();
    let test_start = Instant::now();
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    fleet_tests::init_data_dir(data.path()).unwrap();
    // Before the controller runs: issue-cert writes the audit log.
    let observer = issue_cert(
        data.path(),
        &work.path().join("observer"),
        "observer",
        "observer",
    )
    .unwrap();

    // p01's uplink goes through the proxy to the central broker's fixed port.
    let central = free_port();
    let proxy = Proxy::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SocketAddr::from(([127, 0, 0, 1], central)),
    )
    .unwrap();
    let site = work.path().join("controller.toml");
    std::fs::write(
        &site,
        format!(
            "[[broker.provincial]]\nname = \"p01\"\nprovinces = [\"{}\"]\nuplink = \"{}\"\n\n\
             [[broker.provincial]]\nname = \"p02\"\nprovinces = [\"{}\"]\n",
            P01.0, proxy.addr, P02.0
        ),
    )
    .unwrap();
    let freshness = FRESHNESS_SECS.to_string();
    let ctl = Controller::start_with_env(
        data.path(),
        &[
            "--config",
            site.to_str().unwrap(),
            "--mqtt-port",
            &central.to_string(),
            "--freshness-secs",
            &freshness,
        ],
        &[
            ("FLEET_CONTROLLER__READINESS__TICK_SECS", "1"),
            // The data path is what is tested, not the backoff: with the
            // default (10 s growing to 300 s) the link could come back up
            // to five minutes after the restore.
            ("FLEET_CONTROLLER__BROKER__BRIDGE_RETRY_MIN_SECS", "2"),
            ("FLEET_CONTROLLER__BROKER__BRIDGE_RETRY_MAX_SECS", "60"),
        ],
    )
    .unwrap();
    assert_eq!(ctl.mqtt_port, central);
    let api = ctl.client();
    let tier = within(20, "brokers", api.brokers()).await.unwrap();
    let p01_port = tier
        .provincial
        .iter()
        .find(|b| b.name == "p01")
        .unwrap()
        .port;
    ctl.import_registry(&format!(
        "province,county,station_id\n{},{},ST-1\n{},{},ST-2\n",
        P01.0, P01.1, P02.0, P02.1
    ))
    .unwrap();

    // What the devices publish on p01, and what the central broker hands on,
    // both seen by the observer from before the first device connects.
    let (_p01_watch, on_p01) =
        record(p01_port, "fleet.observer", &observer, "fleet/v1/dev/#").await;
    let (_central_watch, on_central) =
        record(central, "fleet.observer", &observer, "fleet/v1/b/#").await;

    let mut failing = Agent::enrol(&ctl, "BB-OUT-A1", P01);
    let mut restarted = Agent::enrol(&ctl, "BB-OUT-A2", P01);
    let mut killed = Agent::enrol(&ctl, "BB-OUT-A3", P01);
    let mut beyond = Agent::enrol(&ctl, "BB-OUT-B1", P02);
    let told: serde_json::Value = serde_json::from_slice(
        &std::fs::read(failing.dev.dir.path().join("state/broker.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(told["port"], p01_port, "enrolment names p01: {told}");
    for a in [&mut failing, &mut restarted, &mut killed, &mut beyond] {
        a.start();
    }
    let p01_ids = [failing.id(), restarted.id(), killed.id()].map(str::to_owned);

    // 1. All ready, both links up.
    row_until(&api, P01.0, 60, "p01's devices ready", |r| {
        r.total == 3 && r.ready == 3 && link_up(r)
    })
    .await;
    row_until(&api, P02.0, 60, "p02's device ready", |r| {
        r.total == 1 && r.ready == 1 && link_up(r)
    })
    .await;
    all_committed(&[&failing, &restarted, &killed, &beyond], "boot events").await;
    let setup = test_start.elapsed();

    // 2. Cut p01's uplink.
    let cut_at = Instant::now();
    let cut_ms = now_ms();
    proxy.cut();
    let r = row_until(&api, P01.0, 30, "p01's link down", |r| {
        r.link.as_ref().is_some_and(|l| !l.up)
    })
    .await;
    let link = r.link.unwrap();
    assert_eq!(link.broker, "p01");
    assert!(
        link.since_ms >= cut_ms && link.since_ms <= now_ms(),
        "down since the cut: {link:?}, cut at {cut_ms}"
    );

    // QoS 1 traffic p01 must queue: a failing check, events, a restart,
    // and a device gone for good (its will).
    failing.fail_printer();
    failing.emit(3);
    restarted.emit(2);
    killed.emit(2);
    all_committed(&[&failing, &restarted, &killed], "events at the cut").await;
    restarted.stop(false);
    restarted.start();
    restarted.emit(2);
    all_committed(&[&restarted], "the restarted agent's events").await;
    killed.stop(true);

    // Stale past the window: link-down, not offline; p02 unaffected.
    let r = row_until(&api, P01.0, 60, "p01's devices link-down", |r| {
        r.count(Reason::LinkDown) == 3
    })
    .await;
    assert_eq!(
        (r.total, r.ready, r.count(Reason::Offline)),
        (3, 0, 0),
        "{r:?}"
    );
    assert!(r.link.as_ref().is_some_and(|l| !l.up), "{r:?}");
    let d = within(20, "the killed device", api.device(killed.id()))
        .await
        .unwrap();
    assert_eq!(d.device.readiness, Readiness::LinkDown);
    let r = row(&api, P02.0).await.unwrap();
    assert_eq!((r.total, r.ready), (1, 1), "p02 unaffected: {r:?}");
    assert!(link_up(&r), "{r:?}");
    let (ok, text, err) = ctl.fleetctl(&["readiness"]).unwrap();
    assert!(ok, "{err}");
    assert!(
        text.contains(&format!("{} (p01): link down since ", P01.0))
            && text.contains(&format!("{} (p02): link up", P02.0)),
        "{text}"
    );
    println!(
        "p01's devices link-down {:.0?} after the cut",
        cut_at.elapsed()
    );

    // The rest of the outage, and a last round of events at its end.
    if let Some(left) = outage.checked_sub(cut_at.elapsed() + Duration::from_secs(5)) {
        tokio::time::sleep(left).await;
    }
    failing.emit(2);
    restarted.emit(2);
    all_committed(&[&failing, &restarted], "events at the end of the outage").await;
    if let Some(left) = outage.checked_sub(cut_at.elapsed()) {
        tokio::time::sleep(left).await;
    }
    let cut_for = cut_at.elapsed();
    let sent_during: usize = [&failing, &restarted, &killed]
        .iter()
        .map(|a| a.committed().len())
        .sum::<usize>()
        - 3; // the first boot events, sent before the cut

    // 3. Restore.
    let restored_at = Instant::now();
    proxy.restore();
    row_until(&api, P01.0, 180, "p01's link up again", link_up).await;
    let link_back = restored_at.elapsed();

    let url = format!(
        "sqlite://{}?mode=ro",
        data.path().join("fleet.db").display()
    );
    let db = within(10, "opening the store", sqlx::SqlitePool::connect(&url))
        .await
        .unwrap();
    let ids: Vec<&str> = p01_ids.iter().map(String::as_str).collect();
    let want: BTreeMap<String, BTreeSet<(u64, u64)>> = [&failing, &restarted, &killed]
        .iter()
        .map(|a| (a.id().to_owned(), a.committed()))
        .collect();
    eventually(
        Duration::from_secs(120),
        "every committed event stored",
        || async {
            let have = stored(&db, &ids).await?;
            let missing: Vec<String> = want
                .iter()
                .flat_map(|(d, w)| {
                    let h: BTreeSet<(u64, u64)> = have[d].iter().copied().collect();
                    w.difference(&h)
                        .map(move |k| format!("{d} {k:?}"))
                        .collect::<Vec<_>>()
                })
                .collect();
            missing
                .is_empty()
                .then_some(())
                .ok_or(format!("missing {missing:?}"))
        },
    )
    .await
    .unwrap();
    let drained = restored_at.elapsed();
    // Exactly once, nothing else: the store holds each committed event once.
    let have = stored(&db, &ids).await.unwrap();
    for (d, w) in &want {
        let mut h = have[d].clone();
        h.sort_unstable();
        let w: Vec<(u64, u64)> = w.iter().copied().collect();
        assert_eq!(h, w, "{d}: stored vs committed");
    }
    // What p01 was given is what the agents committed (no event the test
    // did not count).
    let published: BTreeSet<(String, (u64, u64))> = on_p01
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(t, p, _)| event_key(t, p))
        .filter(|(d, _)| p01_ids.contains(d))
        .collect();
    let committed: BTreeSet<(String, (u64, u64))> = want
        .iter()
        .flat_map(|(d, w)| w.iter().map(move |k| (d.clone(), *k)))
        .collect();
    assert_eq!(published, committed, "published on p01 vs committed");
    // The device pages: no gap, every event listed once.
    for a in [&failing, &restarted, &killed] {
        let d = within(20, "a device page", api.device(a.id()))
            .await
            .unwrap();
        assert!(
            d.gaps.is_empty() && d.missing_events == 0,
            "{}: {:?}",
            a.id(),
            d.gaps
        );
        let mut seqs: Vec<u64> = d.events.iter().map(|e| e.seq).collect();
        seqs.sort_unstable();
        let mut committed: Vec<u64> = a.committed().iter().map(|(_, s)| *s).collect();
        committed.sort_unstable();
        assert_eq!(seqs, committed, "{}: listed events", a.id());
    }
    // How often the central broker handed an event on more than once.
    let mut deliveries: BTreeMap<(String, (u64, u64)), usize> = BTreeMap::new();
    for (t, p, _) in on_central.lock().unwrap().iter() {
        if let Some(k) = event_key(t, p) {
            *deliveries.entry(k).or_default() += 1;
        }
    }
    let twice = deliveries.values().filter(|n| **n > 1).count();
    let metrics = within(20, "metrics", api.metrics()).await.unwrap();
    let duplicates = metric(&metrics, "fleet_ingest_duplicate_events_total", "");

    // 4. Readiness exact: the killed device offline (its will, queued at
    // p01), the failing one unhealthy, the restarted one ready, link up.
    let r = row_until(&api, P01.0, 60, "p01's readiness exact", |r| {
        r.ready == 1
            && r.count(Reason::Offline) == 1
            && r.count(Reason::Unhealthy) == 1
            && r.count(Reason::LinkDown) == 0
            && link_up(r)
    })
    .await;
    assert_eq!(r.total, 3, "{r:?}");
    let ready_exact = restored_at.elapsed();
    for (a, want) in [
        (&failing, Readiness::Unhealthy),
        (&restarted, Readiness::Ready),
        (&killed, Readiness::Offline),
    ] {
        let d = within(20, "a device page", api.device(a.id()))
            .await
            .unwrap();
        assert_eq!(d.device.readiness, want, "{}", a.id());
    }
    let r = row(&api, P02.0).await.unwrap();
    assert_eq!((r.total, r.ready), (1, 1), "{r:?}");

    // 5. Retained on the central broker: each device's last state and
    // presence on p01, and the controller shows that state.
    let last_state = last_of(&on_p01, TopicKind::State, false);
    let last_presence = last_of(&on_p01, TopicKind::Presence, false);
    for id in &p01_ids {
        assert!(
            last_state.contains_key(id) && last_presence.contains_key(id),
            "{id}"
        );
    }
    eventually(
        Duration::from_secs(30),
        "retained = last published",
        || async {
            let (_c, retained) = record(
                central,
                "fleet.observer",
                &observer,
                "fleet/v1/b/bridge.p01/dev/+/+",
            )
            .await;
            // Retained messages follow the SUBACK at once; give them a moment.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let states = last_of(&retained, TopicKind::State, true);
            let presences = last_of(&retained, TopicKind::Presence, true);
            let wrong: Vec<String> = p01_ids
                .iter()
                .filter(|id| {
                    states.get(*id) != last_state.get(*id)
                        || presences.get(*id) != last_presence.get(*id)
                })
                .cloned()
                .collect();
            wrong
                .is_empty()
                .then_some(())
                .ok_or(format!("differ: {wrong:?}"))
        },
    )
    .await
    .unwrap();
    for id in &p01_ids {
        let routed = Topic::parse_routed(&format!("fleet/v1/dev/{id}/state")).unwrap();
        let env = Envelope::from_cbor_on(&routed.topic, &last_state[id]).unwrap();
        let Payload::State(s) = env.payload else {
            panic!("not a state")
        };
        let d = within(20, "a device page", api.device(id)).await.unwrap();
        assert_eq!(d.state.as_ref(), Some(&s), "{id}: the controller's state");
    }
    let printer = |id: &str| -> bool {
        let routed = Topic::parse_routed(&format!("fleet/v1/dev/{id}/state")).unwrap();
        let env = Envelope::from_cbor_on(&routed.topic, &last_state[id]).unwrap();
        match env.payload {
            Payload::State(s) => s.checks.iter().any(|c| c.name == "printer" && c.passed),
            _ => panic!("not a state"),
        }
    };
    assert!(
        !printer(failing.id()),
        "the last state has the failed printer"
    );

    // 6. p02's bridge certificate forges a state for a p01 device under its
    // own prefix: rejected, counted, not applied. (Connecting as bridge.p02
    // takes the real p02 bridge's session over for a moment.)
    let pki = data.path().join("pki");
    let p02 = Identity {
        cert: std::fs::read(pki.join("bridge-p02.crt")).unwrap(),
        key: std::fs::read(pki.join("bridge-p02.key")).unwrap(),
        ca: std::fs::read(pki.join("ca.crt")).unwrap(),
    };
    let before = metric(
        &metrics,
        "fleet_ingest_rejected_total",
        "reason=\"wrong-bridge\"",
    );
    let (forger, forger_events) = mqtt_connect(mqtt_tls(
        central,
        "bridge.p02",
        &p02.ca,
        Some((&p02.cert, &p02.key)),
    ))
    .await
    .unwrap();
    fleet_tests::builders::mqtt_drive(forger_events);
    let forged = state(restarted.id(), "6.6.6", now_ms());
    within(
        10,
        "the forged publish",
        forger.publish(
            forged.topic().routed(Some("bridge.p02")),
            QoS::AtLeastOnce,
            false,
            forged.to_cbor().unwrap(),
        ),
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(20), "the forgery counted", || async {
        let m = api.metrics().await.map_err(|e| e.to_string())?;
        let n = metric(&m, "fleet_ingest_rejected_total", "reason=\"wrong-bridge\"");
        (n > before)
            .then_some(())
            .ok_or(format!("wrong-bridge: {n}"))
    })
    .await
    .unwrap();
    drop(forger);
    let d = within(20, "the forged device", api.device(restarted.id()))
        .await
        .unwrap();
    assert_ne!(
        d.device.firmware.as_ref().map(|v| v.as_str()),
        Some("6.6.6"),
        "the forged state was applied"
    );
    assert_eq!(d.device.readiness, Readiness::Ready);
    // Through the real bridge, a change is applied: the printer is back.
    std::fs::write(&failing.paper, "").unwrap();
    let r = row_until(&api, P01.0, 30, "the printer back through p01", |r| {
        r.ready == 2 && r.count(Reason::Offline) == 1
    })
    .await;
    assert_eq!(r.total, 3, "{r:?}");

    println!(
        "setup {setup:.0?}; outage {cut_for:.0?} ({} QoS 1 events sent behind it); \
         link up {link_back:.0?} after the restore, every event stored after {drained:.0?}, \
         readiness exact after {ready_exact:.0?}; events the central broker delivered \
         twice: {twice} of {}; duplicates the store dropped: {duplicates}; proxy \
         connections {}; whole test {:.0?}",
        sent_during,
        deliveries.len(),
        proxy.connections(),
        test_start.elapsed()
    );
    // What p01's Mosquitto said about its bridge (connections, errors).
    let p01_log =
        std::fs::read_to_string(data.path().join("mosquitto-p01/state/mosquitto.log")).unwrap();
    for line in p01_log.lines().filter(|l| {
        l.contains("bridge") || l.contains("Bridge") || l.contains("rror") || l.contains("arning")
    }) {
        println!("p01: {line}");
    }
    for a in [&mut failing, &mut restarted, &mut beyond] {
        a.stop(false);
    }
    let log = ctl.stop().unwrap();
    assert!(
        log.contains("does not serve the device's province"),
        "the forgery was logged"
    );
}
