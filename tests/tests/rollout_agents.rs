//! A rollout end to end with real agents: three enrolled `fleet-agent`
//! processes with directory A/B slots (two provinces), a signed 2.5.0
//! uploaded with `fleetctl firmware upload`, and a rollout of two waves
//! created through the API: a canary of one device, then the rest. Each
//! device fetches and verifies the target through the controller's TUF
//! routes, installs, reboots (exits and is started again), checks and
//! commits; the canary's success starts the second wave.
//!
//! In the middle of the second wave (its devices installed and gone to
//! reboot) the controller is SIGKILLed and started again on the same data
//! directory and address: nothing is lost
//! (the rollout is restored from the store, the devices' results arrive
//! through their outboxes), the rollout completes, every device runs
//! 2.5.0, and the model's baseline becomes 2.5.0.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use fleet_api::types::{
    AuditQuery, CanaryRequest, MemberState, RolloutPhase, RolloutRequest, RolloutView,
};
use fleet_protocol::firmware::TargetCustom;
use fleet_protocol::{ArtifactKind, Model, Version};
use fleet_repo::release::{self, InitOptions};
use fleet_tests::update::{
    booted, firmware_init, make_image, seed_slots, slot_version, until_firmware_reported, Agent,
    MODEL,
};
use fleet_tests::{eventually, free_port, metric, Controller, EnrolledDevice};

const REGISTRY: &str = "province,county,county_name_en,station_id,station_name\n\
    IR-23,IR-23-TEH,Tehran,ST-TEH-1,School 1\n\
    IR-02,IR-02-SARI,Sari,ST-SARI-1,School 2\n";

/// Device id, province, county.
const DEVICES: [(&str, &str, &str); 3] = [
    ("BB-RO-1", "IR-23", "IR-23-TEH"),
    ("BB-RO-2", "IR-23", "IR-23-TEH"),
    ("BB-RO-3", "IR-02", "IR-02-SARI"),
];

/// A fast control loop, so the test does not wait on ticks.
const ENV: [(&str, &str); 1] = [("FLEET_CONTROLLER__ROLLOUTS__TICK_MS", "200")];

struct Device {
    dev: EnrolledDevice,
    slots: PathBuf,
    agent: Agent,
}

fn start(http: &str, data: &std::path::Path) -> Controller {
    Controller::start_on(http, data, &["--freshness-secs", "3600"], &ENV).unwrap()
}

/// Every agent that exited (a reboot into its new image) starts again.
fn reboot_exited(devices: &mut [Device]) {
    for d in devices.iter_mut() {
        d.agent.reboot_if_exited();
    }
}

async fn view(ctl: &Controller, id: u64) -> Result<RolloutView, String> {
    ctl.client().rollout(id).await.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_two_wave_rollout_completes_across_a_controller_kill_and_sets_the_baseline() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let keys = work.path().join("release-keys");
    release::init(&keys, &InitOptions::default(), SystemTime::now()).unwrap();
    let http = format!("127.0.0.1:{}", free_port());

    // Enrol the devices, then set the repository up (the controller stopped).
    let ctl = start(&http, data.path());
    ctl.import_registry(REGISTRY).unwrap();
    let mut enrolled = Vec::new();
    for (id, province, county) in DEVICES {
        let slots = work.path().join(format!("slots-{id}"));
        let seed = work.path().join(format!("seed-{id}"));
        std::fs::create_dir_all(&seed).unwrap();
        seed_slots(&slots, &seed);
        let config = format!(
            "[mqtt]\nkeep_alive_secs = 5\nbackoff_base_ms = 100\nbackoff_max_ms = 1000\n\
             [update]\nenabled = true\nrepo_url = \"https://placeholder.invalid/api/v1/tuf\"\n\
             trusted_root = \"{}\"\ninstaller = \"dir\"\nslots_dir = \"{}\"\n\
             health_deadline_secs = 30\nreboot_by_exit = true\nretry_secs = 2\n",
            keys.join("1.root.json").display(),
            slots.display()
        );
        let dev = ctl.enrol(id, province, county, &config).unwrap();
        enrolled.push((dev, slots));
    }
    ctl.stop().unwrap();
    firmware_init(data.path(), &keys).unwrap();
    let mut ctl = start(&http, data.path());

    // The release team signs 2.5.0; it is uploaded.
    let image = make_image(work.path(), "2.5.0", MODEL);
    let custom = TargetCustom {
        artifact: ArtifactKind::Firmware,
        model: Model::parse(MODEL).unwrap(),
        version: Version::parse("2.5.0").unwrap(),
    };
    let signed = release::sign(&keys, &image, &custom, SystemTime::now(), &mut |_, _| {}).unwrap();
    let (ok, out, err) = ctl
        .fleetctl(&[
            "firmware",
            "upload",
            &image.to_string_lossy(),
            "--targets",
            &signed.targets_path.to_string_lossy(),
        ])
        .unwrap();
    assert!(ok, "firmware upload: {out}{err}");

    let url = format!("{}/api/v1/tuf", ctl.api);
    let mut devices: Vec<Device> = enrolled
        .into_iter()
        .map(|(dev, slots)| {
            let mut agent = Agent::new(&dev, &[("FLEET_AGENT__UPDATE__REPO_URL", &url)]);
            agent.start();
            Device { dev, slots, agent }
        })
        .collect();
    for d in &devices {
        until_firmware_reported(&ctl, &d.dev.id, "2.4.0").await;
    }

    // A canary of one device, then the rest.
    let created = ctl
        .client()
        .create_rollout(&RolloutRequest {
            name: Some("election firmware".into()),
            artifact: "firmware".into(),
            model: MODEL.into(),
            version: "2.5.0".into(),
            platform: None,
            selector: Default::default(),
            canary: Some(CanaryRequest {
                devices: Some(1),
                percent: None,
            }),
            waves: vec![],
            policy: Default::default(),
            draft: false,
        })
        .await
        .unwrap();
    let id = created.summary.id;
    let names: Vec<&str> = created.waves.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["canary", "rest"]);
    assert_eq!(created.summary.counters.total, 3);
    assert_eq!(created.waves[0].counters.total, 1);

    // The canary commits; the second wave starts on its own.
    let second = eventually(
        Duration::from_secs(180),
        "the canary done and the second wave released",
        || {
            reboot_exited(&mut devices);
            async {
                let v = view(&ctl, id).await?;
                (v.summary.wave == 1 && v.waves[1].counters.pending == 0)
                    .then_some(v.clone())
                    .ok_or(format!(
                        "{:?} wave {} {:?}",
                        v.summary.phase, v.summary.wave, v.waves
                    ))
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(second.waves[0].counters.succeeded, 1, "{second:?}");
    assert_eq!(second.summary.phase, RolloutPhase::Running);

    // Mid-wave: the second wave's devices installed and went to reboot
    // (their agents exited; they stay off for now). The controller dies
    // then, and comes back on the same data and address; then the devices
    // boot their new image, check it and commit, and say so through their
    // outboxes. (Killed while they download instead, a device's download
    // fails and it reports `failed` before it retries on its own: that
    // counts against the failure threshold and pauses the rollout.)
    let rest: Vec<String> = ctl
        .client()
        .rollout_members(id, None)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.wave == 1)
        .map(|m| m.device.to_string())
        .collect();
    assert_eq!(rest.len(), 2);
    eventually(
        Duration::from_secs(120),
        "the second wave's devices gone to reboot",
        || {
            let off: Vec<bool> = devices
                .iter_mut()
                .filter(|d| rest.contains(&d.dev.id))
                .map(|d| {
                    d.agent
                        .proc
                        .as_mut()
                        .is_some_and(|p| p.wait(Duration::ZERO).is_ok())
                })
                .collect();
            async move {
                off.iter()
                    .all(|o| *o)
                    .then_some(())
                    .ok_or(format!("{off:?}"))
            }
        },
    )
    .await
    .unwrap();
    let before = view(&ctl, id).await.unwrap();
    assert_eq!(before.summary.phase, RolloutPhase::Running);
    assert_eq!(
        before.waves[1].counters.succeeded, 0,
        "{:?}",
        before.waves[1]
    );
    println!("at the kill, wave 2: {:?}", before.waves[1].counters);
    ctl.proc.kill();
    ctl = start(&http, data.path());
    let after = view(&ctl, id).await.unwrap();
    assert_eq!(after.summary.phase, RolloutPhase::Running, "restored");
    assert_eq!(after.summary.wave, 1, "restored in its wave");
    println!("restored, wave 2: {:?}", after.waves[1].counters);
    reboot_exited(&mut devices);

    let done = eventually(
        Duration::from_secs(240),
        "the rollout completed after the restart",
        || {
            reboot_exited(&mut devices);
            async {
                let v = view(&ctl, id).await?;
                (v.summary.phase == RolloutPhase::Completed)
                    .then_some(v.clone())
                    .ok_or(format!(
                        "{:?} {:?} {:?}",
                        v.summary.phase, v.summary.counters, v.log
                    ))
            }
        },
    )
    .await
    .unwrap_or_else(|e| {
        let logs: Vec<String> = devices.iter().map(|d| d.agent.output()).collect();
        panic!("{e}\n{}", logs.join("\n----\n"))
    });
    assert_eq!(done.summary.counters.succeeded, 3, "{done:?}");
    assert_eq!(
        done.summary.counters.failed + done.summary.counters.timed_out,
        0
    );
    let members = ctl.client().rollout_members(id, None).await.unwrap();
    assert_eq!(members.len(), 3);
    assert!(
        members.iter().all(|m| m.state == MemberState::Succeeded),
        "{members:?}"
    );
    let kinds: Vec<&str> = done.log.iter().map(|l| l.kind.as_str()).collect();
    for kind in [
        "created",
        "started",
        "wave-started",
        "completed",
        "baseline",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }

    // Every device runs the signed 2.5.0 from its other slot.
    for d in &devices {
        assert_eq!(booted(&d.slots), "b", "{}", d.dev.id);
        assert_eq!(slot_version(&d.slots, "b"), "2.5.0", "{}", d.dev.id);
    }
    // The completed rollout made 2.5.0 the model's baseline, and said so in
    // the audit log as the controller.
    let baselines = ctl.client().baselines().await.unwrap();
    assert_eq!(
        baselines
            .0
            .get(&Model::parse(MODEL).unwrap())
            .map(ToString::to_string),
        Some("2.5.0".to_owned())
    );
    let audit = ctl
        .client()
        .audit(&AuditQuery {
            target: Some(format!("rollout-{id}")),
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<(&str, &str)> = audit
        .iter()
        .map(|e| (e.action.as_str(), e.actor.as_str()))
        .collect();
    assert!(
        actions.contains(&("rollout.complete", "controller")),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("rollout.wave-started", "controller")),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(|(a, _)| *a == "rollout.create"),
        "{actions:?}"
    );

    // Figures (printed, not asserted): the control loop's passes since the
    // restart, and the releases it made.
    let m = ctl.client().metrics().await.unwrap();
    let (sum, count) = (
        metric(&m, "fleet_rollout_tick_seconds_sum", ""),
        metric(&m, "fleet_rollout_tick_seconds_count", ""),
    );
    println!(
        "control loop since the restart: {} passes, mean {:.3} ms; releases {}",
        count.abs(),
        if count > 0.0 {
            sum * 1000.0 / count
        } else {
            0.0
        },
        metric(&m, "fleet_rollout_releases_total", "").abs()
    );

    for d in &mut devices {
        d.agent.kill();
    }
    ctl.stop().unwrap();
}
