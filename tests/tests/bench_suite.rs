//! CI's small bench suite: every `fleet-sim bench …` as a real process,
//! small (1,000 devices through 2 provincial brokers; store and decode
//! with their small flags), each writing its JSON report into a temporary
//! `--out`. Each report must have its figures: named, finite numbers, with
//! their units, the machine and the commit. Timings are never asserted.
//!
//! `bench tier --storm` shares one fleet start between footprint, queries,
//! the reconnect storm and ingest; `bench rollout` needs a fleet of
//! updating devices and starts its own. The two fleets run one after the
//! other (a lock), store and decode beside them.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use fleet_tests::Proc;
use serde_json::Value;

/// One bench fleet at a time on this 2-core machine.
static FLEET: Mutex<()> = Mutex::new(());

/// A report's figures by name: (value, unit), after checking what every
/// report carries and that every figure is a finite number.
fn figures(out: &Path, bench: &str) -> BTreeMap<String, (f64, String)> {
    let path = out.join(format!("{bench}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["bench"], bench);
    for key in ["date", "commit", "command"] {
        assert!(
            v[key].as_str().is_some_and(|s| !s.is_empty()),
            "{bench}: no {key}"
        );
    }
    assert!(v["machine"]["cores"].as_u64().unwrap() >= 1, "{bench}");
    assert!(v["machine"]["memory_mib"].as_u64().unwrap() > 0, "{bench}");
    let mut out = BTreeMap::new();
    for f in v["figures"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap().to_owned();
        let value = f["value"]
            .as_f64()
            .unwrap_or_else(|| panic!("{bench}: {name} is not a number: {f}"));
        assert!(value.is_finite(), "{bench}: {name} = {value}");
        out.insert(name, (value, f["unit"].as_str().unwrap().to_owned()));
    }
    out
}

/// Each (name, unit) is among the figures.
fn has(figures: &BTreeMap<String, (f64, String)>, bench: &str, want: &[(&str, &str)]) {
    for (name, unit) in want {
        let (_, u) = figures
            .get(*name)
            .unwrap_or_else(|| panic!("{bench}: no figure {name:?} in {figures:?}"));
        assert_eq!(u, unit, "{bench}: {name}");
    }
}

fn run(args: &[&str], timeout: Duration) -> String {
    let mut p = Proc::spawn("fleet-sim", args, &[("RUST_BACKTRACE", "0")]).unwrap();
    let status = p.wait(timeout).unwrap();
    let output = p.output();
    assert!(status.success(), "fleet-sim {args:?}: {status}\n{output}");
    output
}

/// A directory the brokers (their own user) can reach: not a 0700 temp dir.
fn work_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    dir
}

#[test]
fn tier_benches_on_one_fleet_write_their_figures() {
    let _one = FLEET.lock().unwrap_or_else(|e| e.into_inner());
    let work = work_dir();
    let (out, state) = (work.path().join("out"), work.path().join("state"));
    run(
        &[
            "bench",
            "tier",
            "--storm",
            "--devices",
            "1000",
            "--provincial-brokers",
            "2",
            "--health-secs",
            "4",
            "--window-secs",
            "4",
            "--warmup-secs",
            "2",
            "--max-steps",
            "1",
            "--queries",
            "100",
            "--state-root",
            state.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        Duration::from_secs(600),
    );

    let f = figures(&out, "footprint");
    has(
        &f,
        "footprint",
        &[
            ("simulator per device", "KiB"),
            ("controller per device", "KiB"),
            ("mosquitto resident", "MiB"),
            ("mosquitto-p01 resident", "MiB"),
            ("mosquitto-p02 resident", "MiB"),
            ("mosquitto-p01 per connection", "KiB"),
        ],
    );

    let f = figures(&out, "queries");
    has(
        &f,
        "queries",
        &[
            ("national: p50", "ms"),
            ("national: p99", "ms"),
            ("IR-23: p99", "ms"),
        ],
    );

    let f = figures(&out, "storm");
    let mut want = Vec::new();
    for phase in ["central", "provincial"] {
        for (name, unit) in [
            ("broker running again", "s"),
            ("as many connections again", "s"),
            ("devices to reconnect", "devices"),
            ("devices reconnected", "devices"),
            ("every device online", "s"),
            ("reconnects at peak", "devices/s"),
            ("readiness exact", "s"),
            ("controller peak CPU", "% of a core"),
            ("controller peak resident memory", "MiB"),
            ("broker central peak CPU", "% of a core"),
            ("broker p01 peak resident memory", "MiB"),
            ("broker p02 peak CPU", "% of a core"),
        ] {
            want.push((format!("{phase}: {name}"), unit));
        }
    }
    let want: Vec<(&str, &str)> = want.iter().map(|(n, u)| (n.as_str(), *u)).collect();
    has(&f, "storm", &want);
    // Every device of the restarted provincial broker came back (the
    // bench waits for it; the figures say so).
    let expected = f["provincial: devices to reconnect"].0;
    assert!(expected > 0.0, "{f:?}");
    assert_eq!(f["provincial: devices reconnected"].0, expected);

    let f = figures(&out, "ingest");
    has(
        &f,
        "ingest",
        &[
            ("a: controller applied", "msg/s"),
            ("a: observer", "msg/s"),
            ("a: ratio", "ratio"),
            ("a: controller CPU", "% of a core"),
        ],
    );
    // The window covered a health interval: the stream was seen.
    assert!(f["a: observer"].0 > 0.0, "{f:?}");
}

#[test]
fn rollout_bench_writes_its_figures() {
    let _one = FLEET.lock().unwrap_or_else(|e| e.into_inner());
    let work = work_dir();
    let (out, state) = (work.path().join("out"), work.path().join("state"));
    run(
        &[
            "bench",
            "rollout",
            "--devices",
            "1000",
            "--provincial-brokers",
            "2",
            "--install-ms",
            "300",
            "--download-ms",
            "100",
            "--reboot-ms",
            "300",
            "--image-kib",
            "4",
            "--max-downloads-per-province",
            "20",
            "--timeout-secs",
            "400",
            "--state-root",
            state.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        Duration::from_secs(600),
    );
    let f = figures(&out, "rollout");
    has(
        &f,
        "rollout",
        &[
            ("create to complete", "s"),
            ("devices succeeded", "devices"),
            ("wave 0 (canary): duration", "s"),
            ("wave 0 (canary): control-loop passes", "passes"),
            ("wave 1 (IR-23+IR-02): duration", "s"),
            ("wave 3 (rest): duration", "s"),
            ("control-loop pass p50", "ms"),
            ("control-loop pass p99", "ms"),
            ("desired states published", "messages"),
            ("device messages (observer)", "messages"),
        ],
    );
    assert!(f["devices succeeded"].0 > 0.0, "{f:?}");
    assert!(f["desired states published"].0 > 0.0, "{f:?}");
}

#[test]
fn store_and_decode_benches_write_their_figures() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().to_str().unwrap();
    run(
        &[
            "bench",
            "store",
            "--devices",
            "1000",
            "--seconds",
            "2",
            "--out",
            out,
        ],
        Duration::from_secs(300),
    );
    has(
        &figures(work.path(), "store"),
        "store",
        &[
            ("write rate, batched", "msg/s"),
            ("write rate, batch_max = 1", "msg/s"),
            ("history per 100k devices per day", "MiB"),
        ],
    );
    run(
        &["bench", "decode", "--messages", "20000", "--out", out],
        Duration::from_secs(300),
    );
    has(
        &figures(work.path(), "decode"),
        "decode",
        &[
            ("decode, field mix, direct", "msg/s"),
            ("decode, field mix, via a bridge", "msg/s"),
            ("bridged / direct", "ratio"),
        ],
    );
}
