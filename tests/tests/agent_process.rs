//! End to end with a real `fleet-agent` process and its config file: a
//! failing check makes the device `unhealthy`; a device that stops
//! answering without disconnecting becomes `offline` once the broker's
//! keep-alive window passes (its last will), long before the freshness
//! window; it is `ready` again when it comes back.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;
use std::time::Duration;

use fleet_api::types::Readiness;
use fleet_tests::{eventually, within, Controller, Proc};

const REGISTRY: &str = "province,county,county_name_en,station_id,station_name\n\
    IR-02,IR-02-SARI,Sari,ST-SARI-1,School 1\n";

async fn readiness_of(ctl: &Controller, id: &str) -> Result<Readiness, String> {
    ctl.client()
        .device(id)
        .await
        .map(|d| d.device.readiness)
        .map_err(|e| e.to_string())
}

async fn wait_for(ctl: &Controller, id: &str, want: Readiness, agent: &Proc) {
    eventually(Duration::from_secs(20), &format!("{id} {want}"), || async {
        let got = readiness_of(ctl, id).await?;
        if got == want {
            Ok(())
        } else {
            Err(got.to_string())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nagent output:\n{}", agent.output()));
}

#[tokio::test(flavor = "multi_thread")]
async fn real_agent_is_unhealthy_on_a_failing_check_offline_when_silent_and_ready_on_return() {
    let data = tempfile::tempdir().unwrap();
    // A freshness window far longer than the test: offline can only come
    // from the broker's keep-alive and the last will.
    let ctl = Controller::start(data.path(), &["--freshness-secs", "3600"]).unwrap();
    let work = tempfile::tempdir().unwrap();

    // Operator side: registry, baseline, device.
    let csv = work.path().join("stations.csv");
    std::fs::write(&csv, REGISTRY).unwrap();
    let (ok, out, err) = ctl
        .fleetctl(&["registry", "import", csv.to_str().unwrap()])
        .unwrap();
    assert!(
        ok && out.contains("1 counties and 1 stations"),
        "{out}{err}"
    );
    let (ok, _, err) = ctl
        .fleetctl(&["baseline", "set", "ballot-box-v2", "2.4.0"])
        .unwrap();
    assert!(ok, "{err}");
    let paper = work.path().join("paper-loaded");
    std::fs::write(&paper, "").unwrap();
    // The warehouse makes a shipment; the device enrols with its token.
    let dev = ctl
        .enrol(
            "BB-02-000001",
            "IR-02",
            "IR-02-SARI",
            &format!(
                r#"[mqtt]
keep_alive_secs = 2
backoff_base_ms = 100
backoff_max_ms = 1000
[health]
sample_secs = 1
[checks]
interval_secs = 1
[[checks.list]]
name = "printer"
command = ["test", "-e", "{paper}"]
timeout_secs = 5
"#,
                paper = paper.display(),
            ),
        )
        .unwrap();
    assert_eq!(
        within(
            20,
            "the device's readiness",
            readiness_of(&ctl, "BB-02-000001")
        )
        .await
        .unwrap(),
        Readiness::NeverSeen
    );
    let (ok, d, err) = ctl.fleetctl(&["device", "BB-02-000001"]).unwrap();
    assert!(ok, "{err}");
    assert!(d.contains("enrolled"), "{d}");
    let conf = dev.config.clone();
    let conf_s = conf.to_str().unwrap();
    let agent = Proc::spawn("fleet-agent", &["run", "--config", conf_s], &[]).unwrap();
    wait_for(&ctl, "BB-02-000001", Readiness::Ready, &agent).await;

    // The printer runs out of paper: unhealthy, with the check named.
    std::fs::remove_file(&paper).unwrap();
    wait_for(&ctl, "BB-02-000001", Readiness::Unhealthy, &agent).await;
    eventually(
        Duration::from_secs(30),
        "the check-failed event in the device detail",
        || async {
            let (ok, detail, err) = ctl
                .fleetctl(&["device", "BB-02-000001"])
                .map_err(|e| e.to_string())?;
            (ok && detail.contains("printer FAIL") && detail.contains("check-failed"))
                .then_some(())
                .ok_or(format!("{detail}{err}"))
        },
    )
    .await
    .unwrap();
    std::fs::write(&paper, "").unwrap();
    wait_for(&ctl, "BB-02-000001", Readiness::Ready, &agent).await;

    // Frozen without a goodbye (socket open, no pings): the broker gives up
    // after 1.5 x keep-alive and publishes the will.
    let pid = agent.pid().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    wait_for(&ctl, "BB-02-000001", Readiness::Offline, &agent).await;
    // It wakes up, reconnects (a new session, so the old will cannot
    // override it) and is ready again.
    assert!(Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    wait_for(&ctl, "BB-02-000001", Readiness::Ready, &agent).await;

    // Killed outright: offline again.
    let mut agent = agent;
    agent.kill();
    wait_for(&ctl, "BB-02-000001", Readiness::Offline, &agent).await;
    ctl.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn fleetctl_operator_errors_say_what_is_wrong() {
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start(data.path(), &[]).unwrap();
    let work = tempfile::tempdir().unwrap();
    let csv = work.path().join("bad.csv");
    std::fs::write(&csv, "province,county,station_id\nIR-02,IR-02-SARI,ST-1\nIR-45,IR-45-X,ST-2\nIR-02,IR-23-TEH,ST-3\n").unwrap();
    let (ok, _, err) = ctl
        .fleetctl(&["registry", "import", csv.to_str().unwrap()])
        .unwrap();
    assert!(!ok);
    assert!(
        err.contains("line 3:") && err.contains("line 4:") && err.contains("nothing was imported"),
        "{err}"
    );
    let (ok, _, err) = ctl
        .fleetctl(&["registry", "import", "/nonexistent.csv"])
        .unwrap();
    assert!(!ok && err.contains("cannot read /nonexistent.csv"), "{err}");
    let (ok, _, err) = ctl.fleetctl(&["readiness", "--province", "IR-99"]).unwrap();
    assert!(
        !ok && err.contains("IR-99") && err.contains("HTTP 400"),
        "{err}"
    );
    let (ok, _, err) = ctl.fleetctl(&["device", "NOPE"]).unwrap();
    assert!(!ok && err.contains("not registered"), "{err}");
    let (ok, _, err) = ctl
        .fleetctl(&["baseline", "set", "ballot-box-v2", "latest"])
        .unwrap();
    assert!(!ok && err.contains("MAJOR.MINOR.PATCH"), "{err}");
    let (ok, _, err) =
        fleet_tests::fleetctl("http://127.0.0.1:9", &ctl.token, &["readiness"]).unwrap();
    assert!(!ok && err.contains("cannot reach the controller"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    ctl.stop().unwrap();
}
