//! The managed broker restarts under 2,000 devices (issue 8, test 3): a
//! real `fleet-controller` process, a real `fleet-sim` process running
//! 2,000 real agents (each its own mutual-TLS MQTT connection), and the
//! broker's Mosquitto killed outright (SIGKILL, by the pid in
//! `DATA/mosquitto/state/mosquitto.pid`); the controller's supervisor starts it
//! again. Then:
//!
//! - every device reconnects (the sim records when each sent its state,
//!   which every connection does);
//! - the reconnections are spread out by the agents' backoff with full
//!   jitter, not all in one instant: no 100 ms holds half of them, and they
//!   span many buckets. The histogram is printed (`--nocapture`) for the
//!   notes; it is a figure of this run, not asserted;
//! - no device is left offline (the API's device list).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fleet_api::types::{DeviceQuery, Readiness};
use fleet_tests::{eventually, run_bin, Controller, Proc};

const DEVICES: usize = 2000;

fn mosquitto_pid(ctl: &Controller) -> Option<u32> {
    std::fs::read_to_string(ctl.data_dir.join("mosquitto/state/mosquitto.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `fleet-sim reconnects FILE --since-ms T` as JSON.
fn histogram(file: &std::path::Path, since_ms: u64, bucket_ms: u64, json: bool) -> String {
    let (ok, out, err) = run_bin(
        "fleet-sim",
        &[
            "reconnects",
            file.to_str().unwrap(),
            "--since-ms",
            &since_ms.to_string(),
            "--bucket-ms",
            &bucket_ms.to_string(),
            "--output",
            if json { "json" } else { "table" },
        ],
    )
    .unwrap();
    assert!(ok, "fleet-sim reconnects: {err}");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_broker_restart_every_device_reconnects_spread_out_and_none_is_left_offline() {
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start(data.path(), &["--freshness-secs", "3600"]).unwrap();
    let work = tempfile::tempdir().unwrap();
    let conns = work.path().join("connections.json");
    let devices = DEVICES.to_string();
    let mut sim = Proc::spawn(
        "fleet-sim",
        &[
            "run",
            "--controller",
            &ctl.api,
            "--devices",
            &devices,
            "--provinces",
            "IR-02,IR-07,IR-23",
            "--offline-share",
            "0",
            "--failing-share",
            "0",
            "--outdated-share",
            "0",
            "--health-secs",
            "600",
            "--checks-secs",
            "600",
            "--keep-alive-secs",
            "30",
            "--connections-out",
            conns.to_str().unwrap(),
        ],
        &[
            ("FLEETCTL_TOKEN", &ctl.token),
            ("FLEETCTL_CA", ctl.ca().to_str().unwrap()),
        ],
    )
    .unwrap();
    let line = sim
        .wait_for_line("simulated fleet running", Duration::from_secs(900))
        .unwrap();
    assert!(line.contains(&format!("reported={DEVICES}")), "{line}");

    let old = mosquitto_pid(&ctl).expect("the managed broker's pid file");
    let killed_at = unix_ms();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &old.to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    // The supervisor starts a new Mosquitto…
    eventually(Duration::from_secs(60), "a new broker process", || async {
        match mosquitto_pid(&ctl) {
            Some(p) if p != old && std::path::Path::new(&format!("/proc/{p}")).exists() => Ok(()),
            other => Err(format!("pid {other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\ncontroller:\n{}", ctl.proc.output()));

    // …and every device comes back to it.
    let text = eventually(
        Duration::from_secs(180),
        "every device reconnected",
        || async {
            if !conns.exists() {
                return Err("no connections file yet".into());
            }
            let out = histogram(&conns, killed_at, 100, true);
            let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
            let (n, of) = (v["reconnected"].as_u64(), v["devices"].as_u64());
            if n == Some(DEVICES as u64) && of == Some(DEVICES as u64) {
                Ok(out)
            } else {
                Err(format!("{n:?} of {of:?} reconnected"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nsim output (tail):\n{}", tail(&sim.output())));

    // Spread out: the jitter, not one burst.
    let h: serde_json::Value = serde_json::from_str(&text).unwrap();
    let buckets = h["buckets"].as_array().unwrap();
    let largest = buckets
        .iter()
        .map(|b| b[1].as_u64().unwrap())
        .max()
        .unwrap();
    println!(
        "broker restart with {DEVICES} devices, reconnect delay after the kill:\n{}",
        histogram(&conns, killed_at, 250, false)
    );
    assert!(
        buckets.len() >= 5,
        "reconnections fell in only {} buckets of 100 ms: {text}",
        buckets.len()
    );
    assert!(
        largest * 2 < DEVICES as u64,
        "{largest} of {DEVICES} reconnected within the same 100 ms: {text}"
    );

    // None left offline in the controller's view.
    let client = ctl.client();
    eventually(Duration::from_secs(60), "no device offline", || async {
        let q = DeviceQuery {
            readiness: Some("offline".into()),
            ..Default::default()
        };
        let page = client.devices(&q).await.map_err(|e| e.to_string())?;
        if page.total == 0 {
            Ok(())
        } else {
            Err(format!("{} offline", page.total))
        }
    })
    .await
    .unwrap();
    let all = client
        .devices(&DeviceQuery {
            per_page: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.total, DEVICES as u64);
    let ready = client
        .devices(&DeviceQuery {
            readiness: Some(Readiness::Ready.to_string()),
            per_page: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    println!(
        "after the restart: {} of {} devices ready",
        ready.total, all.total
    );

    sim.terminate(Duration::from_secs(60)).unwrap();
    ctl.stop().unwrap();
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
