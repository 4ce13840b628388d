//! End to end: a real controller process (managed Mosquitto, SQLite) and a
//! real `fleet-sim` process with 200 devices in 5 provinces. The readiness
//! the controller reports must equal, province by province, what the
//! simulator planned; and it must survive a controller restart.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use fleet_api::types::Readiness;
use fleet_tests::{eventually, run_bin, within, Controller, Proc};
use serde_json::Value;

const PROVINCES: &str = "IR-23,IR-10,IR-02,IR-07,IR-16";
const DEVICES: &str = "200";
const SEED: &str = "7";

fn plan_args(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec![
        "--devices",
        DEVICES,
        "--seed",
        SEED,
        "--provinces",
        PROVINCES,
    ];
    v.extend_from_slice(extra);
    v
}

/// Rows of `fleetctl readiness --output json`, keyed by province, without
/// the provinces that have no devices.
fn readiness(ctl: &Controller) -> Result<BTreeMap<String, Value>, String> {
    let (ok, out, err) = ctl
        .fleetctl(&["readiness", "--output", "json"])
        .map_err(|e| e.to_string())?;
    if !ok {
        return Err(err);
    }
    let rows: Vec<Value> = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    Ok(rows
        .into_iter()
        .filter(|r| r["total"].as_u64() != Some(0))
        .map(|r| (r["province"].as_str().unwrap_or("").to_owned(), r))
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_matches_the_simulated_fleet_and_survives_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start(data.path(), &["--freshness-secs", "600"]).unwrap();
    for (model, version) in [("ballot-box-v2", "2.4.0"), ("id-laptop", "1.8.2")] {
        let (ok, out, err) = ctl.fleetctl(&["baseline", "set", model, version]).unwrap();
        assert!(ok, "{out}{err}");
    }

    // What the simulator promises for this seed.
    let mut args = vec!["plan"];
    args.extend(plan_args(&["--output", "json"]));
    let (ok, out, err) = run_bin("fleet-sim", &args).unwrap();
    assert!(ok, "{err}");
    let expected: BTreeMap<String, Value> = serde_json::from_str::<Vec<Value>>(&out)
        .unwrap()
        .into_iter()
        .map(|r| (r["province"].as_str().unwrap().to_owned(), r))
        .collect();
    assert_eq!(expected.len(), 5);
    let total: u64 = expected
        .values()
        .map(|r| r["total"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 200);
    // The plan exercises every condition the simulator has.
    for reason in ["offline", "unhealthy", "outdated"] {
        let n: u64 = expected
            .values()
            .map(|r| r["reasons"][reason].as_u64().unwrap_or(0))
            .sum();
        assert!(n > 0, "plan has no {reason} device");
    }

    let api = ctl.api.clone();
    let mut run_args = vec!["run", "--controller", api.as_str()];
    run_args.extend(plan_args(&[
        "--keep-alive-secs",
        "5",
        "--health-secs",
        "5",
        "--checks-secs",
        "5",
    ]));
    let mut sim = Proc::spawn(
        "fleet-sim",
        &run_args,
        &[
            ("FLEETCTL_TOKEN", &ctl.token),
            ("FLEETCTL_CA", ctl.ca().to_str().unwrap()),
        ],
    )
    .unwrap();

    let matches = |ctl: &Controller| -> Result<(), String> {
        let got = readiness(ctl)?;
        if got == expected {
            Ok(())
        } else {
            Err(format!(
                "got {}",
                serde_json::to_string(&got).unwrap_or_default()
            ))
        }
    };
    eventually(
        Duration::from_secs(90),
        "readiness equal to the plan",
        || async { matches(&ctl) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nsim output:\n{}", sim.output()));

    // Drill-down by county adds up to the province.
    let (ok, out, _) = ctl
        .fleetctl(&[
            "readiness",
            "--by",
            "county",
            "--province",
            "IR-23",
            "--output",
            "json",
        ])
        .unwrap();
    assert!(ok);
    let counties: Vec<Value> = serde_json::from_str(&out).unwrap();
    let sum: u64 = counties.iter().map(|r| r["total"].as_u64().unwrap()).sum();
    assert_eq!(sum, expected["IR-23"]["total"].as_u64().unwrap());
    assert!(!counties.is_empty(), "IR-23 has counties: {out}");
    assert!(counties
        .iter()
        .all(|r| r["county"].as_str().unwrap().starts_with("IR-23-")));

    // CSV carries the same numbers.
    let (ok, csv, _) = ctl.fleetctl(&["readiness", "--output", "csv"]).unwrap();
    assert!(ok);
    let ilam = csv.lines().find(|l| l.starts_with("IR-16,")).unwrap();
    assert!(
        ilam.starts_with(&format!(
            "IR-16,{},{}",
            expected["IR-16"]["total"], expected["IR-16"]["ready"]
        )),
        "{ilam}"
    );

    // Restart the controller: nothing it knew is lost.
    let (ok, planned, err) = run_bin(
        "fleet-sim",
        &[&["plan"][..], &plan_args(&["--output", "devices"])].concat(),
    )
    .unwrap();
    assert!(ok, "{err}");
    let offline_id = planned
        .lines()
        .find(|l| l.ends_with(",offline"))
        .and_then(|l| l.split(',').next())
        .unwrap()
        .to_owned();
    let before = within(
        20,
        "the offline device's detail",
        ctl.client().device(&offline_id),
    )
    .await
    .unwrap();
    assert_eq!(before.device.readiness, Readiness::Offline);
    let log = ctl.stop().unwrap();
    let ctl = Controller::start(data.path(), &["--freshness-secs", "600"]).unwrap();
    let after = within(
        20,
        "the offline device's detail after the restart",
        ctl.client().device(&offline_id),
    )
    .await
    .unwrap();
    assert_eq!(
        after.device,
        before.device,
        "device state survives the restart; log:\n{}",
        log.lines()
            .filter(|l| l.contains(&offline_id) || !l.contains("SIM-"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(after.state, before.state);
    let (ok, baselines, err) = ctl
        .fleetctl(&["baseline", "list", "--output", "json"])
        .unwrap();
    assert!(ok, "{err}");
    assert!(
        baselines.contains("\"ballot-box-v2\": \"2.4.0\""),
        "{baselines}"
    );
    let totals: u64 = readiness(&ctl)
        .unwrap()
        .values()
        .map(|r| r["total"].as_u64().unwrap())
        .sum();
    assert_eq!(totals, 200);
    // The running fleet reconnects to the restarted broker and the picture
    // is the planned one again.
    eventually(
        Duration::from_secs(90),
        "readiness equal to the plan after restart",
        || async { matches(&ctl) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nsim output:\n{}", sim.output()));

    sim.terminate(Duration::from_secs(20)).unwrap();
    ctl.stop().unwrap();
}
