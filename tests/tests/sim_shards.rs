//! The sharded simulator end to end: a real controller process and a real
//! `fleet-sim run --shards 3` process, whose three shards are child
//! processes of it (`fleet-sim shard`), each with its slice of the plan.
//! Readiness must count all 300 devices exactly as planned, and a SIGTERM
//! to the parent must stop every shard. Then a small `fleet-sim bench
//! ingest` leaves its JSON with the figures named (no timing asserted).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use fleet_tests::{eventually, run_bin, Controller, Proc};
use serde_json::Value;

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Provinces with devices → (total, ready, reasons).
fn rows(v: Vec<Value>) -> BTreeMap<String, (u64, u64, Value)> {
    v.into_iter()
        .filter(|r| r["total"].as_u64() != Some(0))
        .map(|r| {
            (
                r["province"].as_str().unwrap().to_owned(),
                (
                    r["total"].as_u64().unwrap(),
                    r["ready"].as_u64().unwrap(),
                    r["reasons"].clone(),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_shards_run_the_whole_fleet_and_stop_together() {
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start(data.path(), &["--freshness-secs", "600"]).unwrap();
    for (model, version) in [("ballot-box-v2", "2.4.0"), ("id-laptop", "1.8.2")] {
        let (ok, out, err) = ctl.fleetctl(&["baseline", "set", model, version]).unwrap();
        assert!(ok, "{out}{err}");
    }
    let (ok, out, err) = run_bin(
        "fleet-sim",
        &["plan", "--devices", "300", "--output", "json"],
    )
    .unwrap();
    assert!(ok, "{err}");
    let expected = rows(serde_json::from_str(&out).unwrap());
    assert_eq!(expected.values().map(|r| r.0).sum::<u64>(), 300);

    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let mut sim = Proc::spawn(
        "fleet-sim",
        &[
            "run",
            "--controller",
            &ctl.api,
            "--devices",
            "300",
            "--shards",
            "3",
            "--health-secs",
            "5",
            "--keep-alive-secs",
            "5",
            "--checks-secs",
            "5",
            "--installer",
            "none",
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[
            ("FLEETCTL_TOKEN", &ctl.token),
            ("FLEETCTL_CA", ctl.ca().to_str().unwrap()),
        ],
    )
    .unwrap();
    let line = sim
        .wait_for_line("simulated fleet running", Duration::from_secs(300))
        .unwrap();
    assert!(line.contains("reported=300"), "{line}");
    assert!(line.contains("shards=3"), "{line}");

    // Three shard processes, children of the run.
    let shards = children(sim.pid());
    assert_eq!(shards.len(), 3, "children of the run: {shards:?}");
    for s in &shards {
        let c = cmdline(*s);
        assert!(c.contains(" shard "), "{s}: {c}");
    }
    let mut indices: Vec<String> = shards
        .iter()
        .map(|s| {
            let c = cmdline(*s);
            c.split("--index ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    indices.sort();
    assert_eq!(indices, ["0", "1", "2"]);
    // The identities the shards run on, each with its broker.
    let ids: Value =
        serde_json::from_slice(&std::fs::read(state.join("identities.json")).unwrap()).unwrap();
    assert_eq!(ids["devices"].as_object().unwrap().len(), 300);
    assert_eq!(ids["brokers"].as_object().unwrap().len(), 300);

    // Readiness counts every device as planned.
    eventually(
        Duration::from_secs(120),
        "readiness equal to the plan",
        || async {
            let (ok, out, err) = ctl
                .fleetctl(&["readiness", "--output", "json"])
                .map_err(|e| e.to_string())?;
            if !ok {
                return Err(err);
            }
            let got = rows(serde_json::from_str(&out).map_err(|e| e.to_string())?);
            if got == expected {
                Ok(())
            } else {
                Err(format!("got {got:?}"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nsim output:\n{}", sim.output()));

    // SIGTERM to the run: it stops every shard and exits cleanly.
    let status = sim.terminate(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "{status}\n{}", sim.output());
    for s in &shards {
        assert!(
            !cmdline(*s).contains("fleet-sim"),
            "shard {s} is still running: {}",
            cmdline(*s)
        );
    }
    ctl.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_ingest_bench_writes_its_figures() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("bench");
    let state = work.path().join("bench-state");
    let mut bench = Proc::spawn(
        "fleet-sim",
        &[
            "bench",
            "ingest",
            "--devices",
            "300",
            "--provincial-brokers",
            "0",
            "--health-secs",
            "4",
            "--window-secs",
            "5",
            "--warmup-secs",
            "2",
            "--max-steps",
            "1",
            "--state-root",
            state.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    )
    .unwrap();
    let status = bench.wait(Duration::from_secs(600)).unwrap();
    assert!(status.success(), "{}", bench.output());
    let v: Value =
        serde_json::from_slice(&std::fs::read(out.join("ingest.json")).unwrap()).unwrap();
    assert_eq!(v["bench"], "ingest");
    assert_eq!(v["params"]["devices"], 300);
    let figures: BTreeMap<String, Value> = v["figures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap().to_owned(), f["value"].clone()))
        .collect();
    for name in [
        "a: controller applied",
        "a: observer",
        "a: ratio",
        "a: controller CPU",
        "a: controller resident memory",
    ] {
        assert!(figures[name].is_number(), "{name}: {v}");
    }
    assert!(figures["a: ratio"].as_f64().unwrap().is_finite());
    // The bench stopped what it started: its controller's data directory
    // names no broker still running.
    let pid_file = state.join("d300-s1-p0/data/mosquitto/state/mosquitto.pid");
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        assert!(
            !cmdline(pid.trim().parse().unwrap()).contains("mosquitto"),
            "the bench's broker is still running"
        );
    }
}
