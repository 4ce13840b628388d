//! `fleet-sim bench store` as a real process: it runs the controller's
//! store bench (the real writer on real SQLite files) three times and
//! writes its report. Checks the report's shape and that what it counted
//! was written, never its timings.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use fleet_tests::run_bin;

#[test]
fn bench_store_writes_a_report_with_every_figure() {
    let out = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = run_bin(
        "fleet-sim",
        &[
            "bench",
            "store",
            "--devices",
            "1000",
            "--seconds",
            "3",
            "--out",
            out.path().to_str().unwrap(),
        ],
    )
    .unwrap();
    assert!(ok, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let text = std::fs::read_to_string(out.path().join("store.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["bench"], "store");
    for key in ["date", "commit", "command"] {
        assert!(report[key].as_str().is_some_and(|s| !s.is_empty()), "{key}");
    }
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    assert_eq!(report["params"]["devices"], 1000);
    assert_eq!(report["params"]["seconds"], 3);
    assert_eq!(report["params"]["day_devices"], 1000);
    assert!(report["params"]["batch_max"].as_u64().unwrap() > 1);
    let figures = report["figures"].as_array().unwrap();
    let figure = |name: &str| {
        figures
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no figure {name:?} in {text}"))
    };
    for (name, unit) in [
        ("write rate, batched", "msg/s"),
        ("write rate, batch_max = 1", "msg/s"),
        ("batched / unbatched", "ratio"),
        ("messages written, batched", "msg"),
        ("messages written, batch_max = 1", "msg"),
        ("history per 100k devices per day", "MiB"),
        ("status rows per 100k devices", "MiB"),
        ("simulated day, bytes per device", "B"),
    ] {
        let f = figure(name);
        assert_eq!(f["unit"], unit, "{name}");
        assert!(f["value"].as_f64().unwrap() > 0.0, "{name}: {f}");
    }
    let notes = report["notes"].as_array().unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.as_str().unwrap().contains("presence changes")),
        "the assumed rates are written down: {notes:?}"
    );
    // The table was printed too.
    assert!(stdout.contains("write rate, batched"), "{stdout}");
}
