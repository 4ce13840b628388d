//! The web console end to end in real browsers: Debian's Chromium, driven
//! by playwright-core (`tests/browser/console.mjs`), then Debian's Firefox
//! ESR, driven by puppeteer-core (`tests/browser/firefox.mjs`), against a real
//! controller process (managed Mosquitto over mutual TLS, SQLite, a signed
//! firmware target) with simulated devices reporting. The script:
//!
//! - signs in as a province technician and sees only that province;
//! - drills down province → county → station → device and runs its
//!   checks, whose result comes back from the device;
//! - switches to Persian and finds 2025-03-21 as ۱۴۰۴/۰۱/۰۱;
//! - starts, pauses and resumes a rollout as central operations;
//! - watches a shipment's devices turn enrolled on the bench page while
//!   real `fleet-agent enrol` runs (started here when the script says);
//! - prints the readiness report to PDF, and fetches the controller's own;
//! - takes a screenshot of every page in both languages
//!   (`target/ui-screens/`), and measures the bytes of a first visit and
//!   of a live update.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fleet_api::types::{
    CanaryRequest, FreezeWindowRequest, PolicyRequest, RolloutRequest, RolloutSelector, TimeSpec,
    TokenRequest,
};
use fleet_protocol::{Model, ProvinceCode, Version};
use fleet_sim::plan::{Condition, Plan, PlanConfig};
use fleet_sim::run::{self, Api, RunConfig};
use fleet_tests::update::{FirmwareController, MODEL, OLD};
use fleet_tests::{run_bin, within};

const ENV: [(&str, &str); 2] = [
    ("FLEET_CONTROLLER__ROLLOUTS__TICK_MS", "200"),
    // Pages poll every second, so the bench sees enrolments at once.
    ("FLEET_CONTROLLER__CONSOLE__LIVE_SECS", "1"),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The browsers and their drivers, installed by `scripts/ensure-deps`.
fn browser_tools() {
    for (path, what) in [
        ("/usr/bin/chromium", "apt-get install chromium"),
        ("/usr/bin/firefox-esr", "apt-get install firefox-esr"),
    ] {
        assert!(
            Path::new(path).exists(),
            "no {path}: run scripts/ensure-deps ({what})"
        );
    }
    for driver in ["playwright-core", "puppeteer-core"] {
        assert!(
            workspace()
                .join("tests/browser/node_modules")
                .join(driver)
                .exists(),
            "no {driver}: run scripts/ensure-deps (npm ci in tests/browser)"
        );
    }
}

async fn token(api: &fleet_api::Client, name: &str, role: &str, provinces: &[&str]) -> String {
    within(
        20,
        "creating a token",
        api.create_token(&TokenRequest {
            name: Some(name.into()),
            role: role.into(),
            provinces: provinces.iter().map(|p| (*p).to_owned()).collect(),
            expires_days: None,
        }),
    )
    .await
    .unwrap()
    .token
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_in_chromium_scope_drill_down_persian_rollout_bench_and_report() {
    browser_tools();
    let fc = FirmwareController::start(&["--freshness-secs", "3600"], &ENV).unwrap();
    fc.publish(MODEL, "2.5.0").unwrap();
    let ctl = &fc.ctl;
    let api = ctl.client();
    within(20, "the baseline", api.set_baseline(MODEL, OLD))
        .await
        .unwrap();

    // 24 simulated devices in Mazandaran and Tehran, reporting.
    let mut devices = Vec::new();
    for (i, p) in ["IR-02", "IR-23"].iter().enumerate() {
        let plan = Plan::new(&PlanConfig {
            devices: 12,
            seed: 11 + i as u64,
            provinces: vec![ProvinceCode::parse(p).unwrap()],
            offline_share: 0.0,
            failing_share: 0.2,
            outdated_share: 0.0,
        })
        .unwrap();
        devices.extend(plan.devices.into_iter().map(|mut d| {
            d.model = Model::parse(MODEL).unwrap();
            d.firmware = Version::parse(OLD).unwrap();
            if d.condition == Condition::Offline {
                d.condition = Condition::Healthy;
            }
            d
        }));
    }
    let plan = Plan { devices };
    let sim_api = Api::new(&ctl.api, &ctl.token, Some(&ctl.ca())).unwrap();
    let identities = within(
        120,
        "enrolling the fleet",
        run::enrol_fleet(&sim_api, &plan, None, false),
    )
    .await
    .unwrap();
    let broker = run::broker_address(&sim_api).await.unwrap();
    let cfg = RunConfig {
        controller: ctl.api.clone(),
        health_every: Duration::from_secs(30),
        keep_alive: Duration::from_secs(10),
        checks_every: Duration::from_secs(2),
        connect_rate: 100,
        backoff_max: Duration::from_secs(2),
        show_progress: false,
        update: None,
    };
    let (fleet, reported) = within(
        120,
        "the fleet reporting",
        run::start(&plan, &cfg, &broker, &identities, Duration::from_secs(90)),
    )
    .await
    .unwrap();
    assert_eq!(reported, plan.devices.len());
    let mazandaran = plan
        .devices
        .iter()
        .find(|d| d.province.to_string() == "IR-02" && d.condition == Condition::Healthy)
        .unwrap();

    // A freeze window over Nowruz 1404 (2025-03-21), and a draft rollout.
    within(
        20,
        "a freeze window",
        api.add_freeze(&FreezeWindowRequest {
            from: TimeSpec::Text("2025-03-21T00:00:00+03:30".into()),
            to: TimeSpec::Text("2025-03-23T00:00:00+03:30".into()),
            reason: "Nowruz".into(),
        }),
    )
    .await
    .unwrap();
    let rollout = within(
        20,
        "a draft rollout",
        api.create_rollout(&RolloutRequest {
            name: Some("election firmware 2.5.0".into()),
            artifact: "firmware".into(),
            model: MODEL.into(),
            version: "2.5.0".into(),
            platform: None,
            selector: RolloutSelector {
                provinces: vec!["IR-23".into()],
                ..Default::default()
            },
            canary: Some(CanaryRequest {
                devices: Some(2),
                percent: None,
            }),
            waves: vec![],
            policy: PolicyRequest::default(),
            draft: true,
        }),
    )
    .await
    .unwrap();

    // A shipment of three new boxes for the bench.
    let csv = "serial,model,province,county\n\
        BB-BENCH-01,ballot-box-v2,IR-23,\n\
        BB-BENCH-02,ballot-box-v2,IR-23,\n\
        BB-BENCH-03,ballot-box-v2,IR-23,\n";
    let batch = within(
        20,
        "a shipment",
        api.enrol_batch(csv.to_owned(), &Default::default()),
    )
    .await
    .unwrap();

    let central = token(&api, "ops", "central-ops", &[]).await;
    let tech = token(&api, "sari-tech", "province-tech", &["IR-02"]).await;
    let warehouse = token(&api, "bench", "warehouse", &[]).await;

    let screens = workspace().join("target/ui-screens");
    std::fs::create_dir_all(&screens).unwrap();
    let config = serde_json::json!({
        "url": ctl.api,
        "central": central,
        "tech": tech,
        "warehouse": warehouse,
        "device": mazandaran.id.to_string(),
        "county": mazandaran.county.to_string(),
        "station": mazandaran.station.to_string(),
        "rollout": rollout.summary.id,
        "shipment": batch.shipment,
        "shipment_devices": batch.devices.iter().map(|d| d.device.to_string()).collect::<Vec<_>>(),
        "screens": screens,
    });
    let mut node = Command::new("node")
        .arg(workspace().join("tests/browser/console.mjs"))
        .env("CONSOLE", config.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node (Debian's nodejs) runs the browser script");
    let out = node.stdout.take().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        println!("browser: {line}");
        if line == "BENCH_OPEN" {
            // The warehouse bench is on screen: enrol the shipment's
            // devices the way the bench does, one `fleet-agent enrol` each.
            for d in &batch.devices {
                enrol(ctl, d.device.as_ref(), &d.token);
            }
        }
        lines.push(line);
    }
    let status = node.wait().unwrap();
    assert!(
        status.success(),
        "the browser script failed:\n{}",
        lines.join("\n")
    );
    // Firefox ESR, the same console (puppeteer-core over WebDriver BiDi).
    let firefox = Command::new("node")
        .arg(workspace().join("tests/browser/firefox.mjs"))
        .env("CONSOLE", config.to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("node runs the Firefox script");
    let ff = String::from_utf8_lossy(&firefox.stdout).into_owned();
    println!("firefox:\n{ff}");
    assert!(firefox.status.success(), "the Firefox script failed:\n{ff}");
    for step in ["OK firefox-sign-in-scope", "OK firefox-persian"] {
        assert!(ff.lines().any(|l| l == step), "{step} missing:\n{ff}");
    }
    for step in [
        "OK tech-scope",
        "OK drill-down-run-checks",
        "OK persian-date",
        "OK rollout-start-pause-resume",
        "OK bench-enrolled",
        "OK report-pdf",
        "OK screenshots",
    ] {
        assert!(
            lines.iter().any(|l| l == step),
            "{step} missing:\n{}",
            lines.join("\n")
        );
    }
    // The bytes, as the browser counted them.
    let bytes = |key: &str| -> u64 {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("BYTES {key} ")))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(
        bytes("first-visit-fa") <= 150 * 1024,
        "{}",
        bytes("first-visit-fa")
    );
    assert!(bytes("first-visit-en") <= 150 * 1024);
    assert!(bytes("update") <= 5 * 1024, "{}", bytes("update"));
    // The rollout ended running, as the script left it, and the check the
    // technician ran is in the audit log under their name.
    let view = within(20, "the rollout", api.rollout(rollout.summary.id))
        .await
        .unwrap();
    assert_eq!(view.summary.phase.as_str(), "running");
    let audit = within(
        20,
        "the audit log",
        api.audit(&fleet_api::AuditQuery {
            target: Some(mazandaran.id.to_string()),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "device.command" && e.actor.starts_with("sari-tech")),
        "{audit:?}"
    );
    for f in [
        "report-en.pdf",
        "report-fa.pdf",
        "report-controller-en.pdf",
        "report-controller-fa.pdf",
    ] {
        let pdf = std::fs::read(screens.join(f)).unwrap();
        assert!(pdf.starts_with(b"%PDF-"), "{f}");
    }
    fleet.stop().await;
    fc.ctl.stop().unwrap();
}

/// `fleet-agent enrol` with a shipment token, as on the bench.
fn enrol(ctl: &fleet_tests::Controller, id: &str, token: &str) {
    let dir = tempfile::tempdir().unwrap();
    let fw = dir.path().join("firmware-version");
    std::fs::write(&fw, "2.4.0\n").unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[device]\nid = \"{id}\"\nmodel = \"ballot-box-v2\"\nfirmware_version_file = \"{}\"\nstate_dir = \"{}\"\n",
            fw.display(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let token_file = dir.path().join("enrol.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let (ok, out, err) = run_bin(
        "fleet-agent",
        &[
            "enrol",
            "--controller",
            &ctl.api,
            "--token-file",
            token_file.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--ca",
            ctl.ca().to_str().unwrap(),
        ],
    )
    .unwrap();
    assert!(ok, "fleet-agent enrol {id}: {out}{err}");
}
