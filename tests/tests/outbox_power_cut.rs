//! Power cut: a real `fleet-agent` is SIGKILLed again and again while it
//! commits events (from the test hook) and drains its outbox to a real
//! controller over mutual TLS. After the restarts the outbox opens, and
//! every event the agent acknowledged (committed: its debug line "event
//! committed to the outbox", written after the commit returned) reaches
//! the controller's store exactly once, under its original boot id and
//! sequence number.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use fleet_tests::{eventually, within, Controller, Proc};

const REGISTRY: &str = "province,county,county_name_en,station_id,station_name\n\
    IR-02,IR-02-SARI,Sari,ST-SARI-1,School 1\n";

fn write_events(dir: &std::path::Path, round: usize, n: usize) {
    for i in 0..n {
        let body = format!(r#"{{"error":{{"message":"power-cut r{round} e{i}"}}}}"#);
        fleet_tests::hook_event(dir, &format!("r{round:03}-e{i:03}"), &body).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_committed_before_a_power_cut_is_delivered_once() {
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start(data.path(), &[]).unwrap();
    ctl.import_registry(REGISTRY).unwrap();
    let hook = tempfile::tempdir().unwrap();
    let dev = ctl
        .enrol(
            "BB-02-000077",
            "IR-02",
            "IR-02-SARI",
            &format!(
                "[mqtt]\nbackoff_base_ms = 50\nbackoff_max_ms = 300\n\
                 [health]\nsample_secs = 1\n[link]\ninflight = 2\n\
                 [test_hooks]\nevent_dir = \"{}\"\n",
                hook.path().display()
            ),
        )
        .unwrap();
    let conf = dev.config.to_str().unwrap().to_owned();
    let env = [("FLEET_AGENT_LOG", "info,fleet_agent::outbox=debug")];

    let mut acknowledged = BTreeSet::new();
    let mut outputs = Vec::new();
    for round in 0..8usize {
        write_events(hook.path(), round, 25);
        let mut agent = Proc::spawn("fleet-agent", &["run", "--config", &conf], &env).unwrap();
        agent
            .wait_for_line("outbox opened", Duration::from_secs(20))
            .unwrap();
        // Cut the power at a different moment each round: while it commits,
        // while it publishes, while it waits for acknowledgements. Counted
        // in commits, not in wall-clock time, so that a slow machine cuts as
        // late into the work as a fast one; then a round-dependent delay.
        let commits = 1 + 3 * round;
        let end = std::time::Instant::now() + Duration::from_secs(30);
        while fleet_tests::committed_events(&agent.output()).len() < commits
            && std::time::Instant::now() < end
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(30 * round as u64));
        agent.kill();
        let out = agent.output();
        assert!(!out.contains("cannot be opened"), "round {round}:\n{out}");
        acknowledged.extend(fleet_tests::committed_events(&out));
        outputs.push(out);
    }
    // Power back for good: the rest drains.
    let agent = Proc::spawn("fleet-agent", &["run", "--config", &conf], &env).unwrap();
    assert!(
        acknowledged.len() > 40,
        "the kills came too early to test anything: {} acknowledged",
        acknowledged.len()
    );

    let url = format!("sqlite://{}", data.path().join("fleet.db").display());
    let pool = within(10, "opening the store", sqlx::SqlitePool::connect(&url))
        .await
        .unwrap();
    let stored = eventually(
        Duration::from_secs(60),
        "every acknowledged event in the store",
        || async {
            let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
                "SELECT boot, seq, COUNT(*) FROM events WHERE device = 'BB-02-000077' GROUP BY boot, seq",
            )
            .fetch_all(&pool)
            .await
            .map_err(|e| e.to_string())?;
            let got: HashMap<(u64, u64), i64> = rows
                .into_iter()
                .map(|(b, s, n)| ((u64::from_ne_bytes(b.to_ne_bytes()), s as u64), n))
                .collect();
            let missing: Vec<_> = acknowledged
                .iter()
                .filter(|k| !got.contains_key(k))
                .collect();
            if missing.is_empty() {
                Ok(got)
            } else {
                Err(format!("{} of {} missing, e.g. {:?}", missing.len(), acknowledged.len(), &missing[..missing.len().min(3)]))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nlast agent:\n{}", agent.output()));
    println!(
        "{} events acknowledged over 8 power cuts, {} stored for the device",
        acknowledged.len(),
        stored.len()
    );
    for key in &acknowledged {
        assert_eq!(stored[key], 1, "{key:?} stored more than once");
    }
    // Each hook event's text arrived at most once: none was made twice.
    let texts: Vec<(String,)> = sqlx::query_as(
        "SELECT body_json FROM events WHERE device = 'BB-02-000077' AND kind = 'error'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let distinct: BTreeSet<&String> = texts.iter().map(|(t,)| t).collect();
    assert_eq!(distinct.len(), texts.len(), "an event was made twice");
    // Sequence numbers survived the cuts: no (boot, seq) was reused and the
    // numbers only grew from run to run.
    let seqs: BTreeSet<u64> = stored.keys().map(|(_, s)| *s).collect();
    assert_eq!(seqs.len(), stored.len(), "a sequence number was used twice");
    pool.close().await;
    drop(agent);
    ctl.stop().unwrap();
}
