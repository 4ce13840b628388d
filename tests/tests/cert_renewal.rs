//! End to end with short-lived certificates (minutes, through `[pki]`): a
//! real `fleet-agent` keeps reporting across two renewals of its own
//! certificate (its certificate changes twice, it stays ready), while the
//! controller renews the broker's certificate under the running fleet
//! (the broker restarts; the device reconnects and keeps reporting).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use fleet_api::types::Readiness;
use fleet_tests::{eventually, Controller, Proc};

const REGISTRY: &str = "province,county,county_name_en,station_id,station_name\n\
    IR-02,IR-02-SARI,Sari,ST-SARI-1,School 1\n";
const ID: &str = "BB-02-000777";

async fn ready(ctl: &Controller) -> Result<(), String> {
    let d = ctl.client().device(ID).await.map_err(|e| e.to_string())?;
    (d.device.readiness == Readiness::Ready)
        .then_some(())
        .ok_or_else(|| d.device.readiness.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_keeps_reporting_across_two_renewals_and_a_broker_certificate_renewal() {
    let data = tempfile::tempdir().unwrap();
    // Device and service certificates of 60 s (back-dated 6 s: renewed
    // about 38 s after issue), checked every 2 s.
    let ctl = Controller::start_with_env(
        data.path(),
        &["--freshness-secs", "3600"],
        &[
            ("FLEET_CONTROLLER__PKI__DEVICE_CERT_SECS", "60"),
            ("FLEET_CONTROLLER__PKI__SERVER_CERT_SECS", "60"),
            ("FLEET_CONTROLLER__PKI__RENEW_AT", "0.66"),
            ("FLEET_CONTROLLER__PKI__CHECK_SECS", "2"),
        ],
    )
    .unwrap();
    let broker_cert = data.path().join("pki/broker.crt");
    let broker_at_start = std::fs::read(&broker_cert).unwrap();
    ctl.import_registry(REGISTRY).unwrap();
    let (ok, _, err) = ctl
        .fleetctl(&["baseline", "set", "ballot-box-v2", "2.4.0"])
        .unwrap();
    assert!(ok, "{err}");
    let dev = ctl
        .enrol(
            ID,
            "IR-02",
            "IR-02-SARI",
            "[mqtt]\nkeep_alive_secs = 5\nbackoff_base_ms = 100\nbackoff_max_ms = 1000\n\
             [health]\nsample_secs = 1\nreport_secs = 2\n[checks]\ninterval_secs = 2\n\
             [certificate]\nanswer_timeout_secs = 10\nretry_secs = 3\n",
        )
        .unwrap();
    let cert_path = dev.dir.path().join("state/device.crt");
    let agent = Proc::spawn(
        "fleet-agent",
        &["run", "--config", dev.config.to_str().unwrap()],
        &[("FLEET_LOG", "info,fleet_agent=debug")],
    )
    .unwrap();
    let fail = |what: &str, agent: &Proc, e: anyhow::Error| -> ! {
        panic!(
            "{what}: {e}\nagent output:\n{}\ncontroller output:\n{}",
            agent.output(),
            ctl.proc.output()
        )
    };
    eventually(Duration::from_secs(20), "the device ready", || ready(&ctl))
        .await
        .unwrap_or_else(|e| fail("ready", &agent, e));

    // Two renewals: the certificate in use changes twice, and after each
    // the device is ready (reporting over the new identity).
    let mut seen = vec![dev.cert.clone()];
    for n in 1..=2 {
        eventually(Duration::from_secs(60), &format!("renewal {n}"), || async {
            let now = std::fs::read(&cert_path).map_err(|e| e.to_string())?;
            if seen.contains(&now) {
                Err("the same certificate".to_owned())
            } else {
                Ok(())
            }
        })
        .await
        .unwrap_or_else(|e| fail("renewal", &agent, e));
        seen.push(std::fs::read(&cert_path).unwrap());
        eventually(Duration::from_secs(30), "ready after the renewal", || {
            ready(&ctl)
        })
        .await
        .unwrap_or_else(|e| fail("ready after renewal", &agent, e));
    }
    assert!(
        !dev.dir.path().join("state/device.crt.new").exists()
            && !dev.dir.path().join("state/device.key.new").exists(),
        "the new files replaced the old ones"
    );

    // The broker's certificate was renewed under the running fleet (it
    // lives 60 s), and the device still reports: its last report is recent.
    assert_ne!(std::fs::read(&broker_cert).unwrap(), broker_at_start);
    let log = ctl.proc.output();
    assert!(
        log.contains("renewed certificates past their renewal point"),
        "{log}"
    );
    // The broker rereads its certificate on SIGHUP, for new connections: a
    // fresh connection made after the first broker certificate expired
    // (60 s) must succeed. Start the agent again to make one.
    drop(agent);
    // Read before the new agent starts, so its first report is newer.
    let before = ctl.client().device(ID).await.unwrap().device.last_seen_ms;
    let agent = Proc::spawn(
        "fleet-agent",
        &["run", "--config", dev.config.to_str().unwrap()],
        &[("FLEET_LOG", "info,fleet_agent=debug")],
    )
    .unwrap();
    eventually(Duration::from_secs(30), "a fresh report", || async {
        let d = ctl.client().device(ID).await.map_err(|e| e.to_string())?;
        (d.device.last_seen_ms > before && d.device.readiness == Readiness::Ready)
            .then_some(())
            .ok_or_else(|| format!("{:?} {}", d.device.last_seen_ms, d.device.readiness))
    })
    .await
    .unwrap_or_else(|e| fail("reporting after", &agent, e));

    // Recorded: each renewal is in the audit log, and /metrics has the
    // nearest expiry per kind.
    let (ok, audit, err) = ctl.fleetctl(&["audit", "list", "--device", ID]).unwrap();
    assert!(ok, "{err}");
    assert!(audit.matches("device.renew").count() >= 2, "{audit}");
    let metrics = ctl.client().metrics().await.unwrap();
    for kind in ["ca", "broker", "api", "controller", "device"] {
        assert!(
            metrics.contains(&format!("fleet_cert_expiry_seconds{{kind=\"{kind}\"}}")),
            "{kind}: {metrics}"
        );
    }
    // fleetctl pki status shows the same: every service certificate and
    // the device's current certificate.
    let (ok, out, err) = ctl
        .fleetctl(&["pki", "status", "--output", "json"])
        .unwrap();
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["certificates"].as_array().unwrap().len(), 4, "{out}");
    assert_eq!(status["devices_expiring_first"][0]["device"], ID, "{out}");
    drop(agent);
    ctl.stop().unwrap();
}
