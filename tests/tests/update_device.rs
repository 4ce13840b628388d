//! End to end: a real `fleet-agent` updates its firmware from a real signed
//! TUF repository (made with fleet-repo, the release team's signer, and
//! exported to a directory as for a USB stick), into real directory A/B
//! slots, reporting through a real controller and Mosquitto over mutual TLS.
//! A reboot is the agent exiting (`update.reboot_by_exit`) and the test
//! starting it again; each start is a boot for the directory installer's
//! bootloader stand-in.
//!
//! - (a) an update ends committed: the new slot booted, its version reported;
//! - (b) SIGKILL at each persisted step, then start again: every run ends
//!   committed or rolled back, the booted slot holding a signed image;
//! - (c) a check that fails on the new slot: rolled back, the old slot
//!   booted, the reason reported;
//! - (d) `fleet-agent update --from DIR` with the controller down: the
//!   result reaches it when it is back;
//! - (e) a freeze window in effect: nothing installed, Frozen reported;
//! - (f) an image for another model, and an older version: refused, the
//!   device stays on its image.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_tests::update::*;
use fleet_tests::{eventually, within, Controller, EnrolledDevice};

const REGISTRY: &str = "province,county,county_name_en,station_id,station_name\n\
    IR-23,IR-23-TEH,Tehran,ST-TEH-1,School 1\n";
const NEW: &str = "2.5.0";

/// A controller with the registry, and `n` enrolled devices with slots.
struct Fleet {
    data: tempfile::TempDir,
    ctl: Option<Controller>,
    devices: Vec<(EnrolledDevice, PathBuf)>,
}

fn fleet(ids: &[&str], config: impl Fn(&Path) -> String) -> Fleet {
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start(data.path(), &["--freshness-secs", "3600"]).unwrap();
    ctl.import_registry(REGISTRY).unwrap();
    let mut devices = Vec::new();
    for id in ids {
        let slots_holder = tempfile::tempdir().unwrap().keep();
        let slots = slots_holder.join("slots");
        seed_slots(&slots, &slots_holder);
        let dev = ctl
            .enrol(id, "IR-23", "IR-23-TEH", &config(&slots))
            .unwrap();
        devices.push((dev, slots));
    }
    Fleet {
        data,
        ctl: Some(ctl),
        devices,
    }
}

impl Fleet {
    fn ctl(&self) -> &Controller {
        self.ctl.as_ref().unwrap()
    }

    /// Store desired firmware `version` for every device (controller
    /// stopped meanwhile: the store is the controller's), then start it again.
    async fn want(&mut self, version: &str) {
        let all: Vec<(String, String, String)> = self
            .devices
            .iter()
            .map(|(d, _)| {
                (
                    d.id.clone(),
                    version.to_owned(),
                    format!("firmware/{MODEL}/{version}.tar"),
                )
            })
            .collect();
        self.want_each(&all).await;
    }

    /// Per device: (id, version, target name).
    async fn want_each(&mut self, wants: &[(String, String, String)]) {
        self.ctl.take().unwrap().stop().unwrap();
        let url = format!("sqlite://{}", self.data.path().join("fleet.db").display());
        let db = within(10, "opening the store", sqlx::SqlitePool::connect(&url))
            .await
            .unwrap();
        for (id, version, manifest) in wants {
            let done = sqlx::query(
                "INSERT INTO desired (device, config_rev, firmware_version, firmware_manifest, updated_ms)
                 VALUES (?, 1, ?, ?, 0)
                 ON CONFLICT(device) DO UPDATE SET firmware_version = excluded.firmware_version,
                   firmware_manifest = excluded.firmware_manifest",
            )
            .bind(id)
            .bind(version)
            .bind(manifest)
            .execute(&db)
            .await
            .unwrap();
            assert_eq!(done.rows_affected(), 1);
        }
        db.close().await;
        self.ctl =
            Some(Controller::start(self.data.path(), &["--freshness-secs", "3600"]).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_from_a_file_repository_commits_boots_the_new_slot_and_reports_its_version() {
    let release = Release::new();
    let sha_new = release.publish(MODEL, NEW);
    let url = format!("file://{}", release.export().display());
    let id = "BB-23-UPD-A";
    let mut fleet = fleet(&[id], |slots| update_config(&release, &url, slots, ""));
    fleet.want(NEW).await;
    let (dev, slots) = &fleet.devices[0];
    let mut agent = Agent::new(dev, &[]);
    agent.start();
    let result = until_result(fleet.ctl(), id, &mut agent, 90).await;
    assert_outcome(&result, "committed", &agent);
    assert_eq!(result["ok"], true);
    assert_eq!(result["version"], NEW);
    assert!(agent.starts >= 2, "the new slot came with a reboot");

    // The new slot booted and committed; its version is reported.
    assert_eq!(booted(slots), "b");
    assert_eq!(std::fs::read_to_string(slots.join("primary")).unwrap(), "b");
    assert_eq!(slot_version(slots, "b"), NEW);
    assert_eq!(booted_image_is_signed(slots, &[(NEW, &sha_new)]), sha_new);
    let ctl = fleet.ctl();
    until_firmware_reported(ctl, id, NEW).await;
    // The progress went through every phase before the result, in order.
    let events = until_progress(ctl, id, "checking", None).await;
    let mut phases: Vec<String> = events
        .iter()
        .rev() // the device page lists newest first
        .filter(|(k, _)| k == "update-progress")
        .map(|(_, v)| v["phase"].as_str().unwrap().to_owned())
        .collect();
    phases.dedup();
    assert_eq!(
        phases,
        [
            "downloading",
            "verifying",
            "installing",
            "rebooting",
            "checking"
        ],
        "{events:?}"
    );
    agent.kill();
}

/// The hook directory next to a device's slots (test_hooks.event_dir).
fn hooks(slots: &Path) -> PathBuf {
    let dir = slots.parent().unwrap().join("hooks");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn hooks_config(slots: &Path) -> String {
    format!("[test_hooks]\nevent_dir = \"{}\"\n", hooks(slots).display())
}

/// Run the agent (rebooting it as it exits) until it holds right after
/// persisting `step` (test_hooks.update_hold_at: its marker file appears).
async fn until_held_at(agent: &mut Agent, slots: &Path, step: &str) {
    let marker = hooks(slots).join(format!("update-hold-{step}"));
    let held = eventually(
        Duration::from_secs(90),
        &format!("holding at {step}"),
        || {
            agent.reboot_if_exited(); // the checking step comes after a reboot
            let seen = marker.exists();
            async move { seen.then_some(()).ok_or("not yet".to_owned()) }
        },
    )
    .await;
    held.unwrap_or_else(|e| panic!("{e}\n{}", agent.output()));
}

/// `fleet-agent update --from USB --config CONFIG [--version V]`, run to
/// its end: (success, stdout, stderr).
async fn update_from(usb: &Path, config: &Path, version: Option<&str>) -> (bool, String, String) {
    let mut args = vec![
        "update".to_owned(),
        "--from".to_owned(),
        usb.to_str().unwrap().to_owned(),
        "--config".to_owned(),
        config.to_str().unwrap().to_owned(),
    ];
    if let Some(v) = version {
        args.extend(["--version".to_owned(), v.to_owned()]);
    }
    let what = format!("fleet-agent {}", args.join(" "));
    within(
        120,
        &what,
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            fleet_tests::run_bin("fleet-agent", &args).unwrap()
        }),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_at_each_persisted_step_the_update_ends_committed_or_rolled_back_on_a_signed_image()
{
    // The step, and how the run ends after a SIGKILL right after the step
    // was persisted. Killed while checking, the next start is a boot that
    // never committed: the bootloader falls back to slot a.
    let steps = [
        ("downloading", "committed"),
        ("verifying", "committed"),
        ("installing", "committed"),
        ("rebooting", "committed"),
        ("checking", "rolled-back"),
    ];
    let release = Release::new();
    let sha_new = release.publish(MODEL, NEW);
    let url = format!("file://{}", release.export().display());
    let ids: Vec<String> = (0..steps.len())
        .map(|i| format!("BB-23-KILL-{i}"))
        .collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut fleet = fleet(&id_refs, |slots| {
        update_config(&release, &url, slots, &hooks_config(slots))
    });
    fleet.want(NEW).await;
    // The old image's hash, for "a signed image": slot a holds what the
    // device shipped with (2.4.0), built the same way.
    let work = tempfile::tempdir().unwrap();
    let old_image = make_image(work.path(), OLD, MODEL);
    let sha_old = sha256_hex(&std::fs::read(old_image).unwrap());

    let mut agents: Vec<Agent> = Vec::new();
    for ((dev, _), (step, _)) in fleet.devices.iter().zip(steps) {
        let mut agent = Agent::new(dev, &[("FLEET_AGENT__TEST_HOOKS__UPDATE_HOLD_AT", step)]);
        agent.start();
        agents.push(agent);
    }
    // Each holds right after persisting its step; then SIGKILL.
    for (((dev, slots), (step, _)), agent) in fleet.devices.iter().zip(steps).zip(&mut agents) {
        until_held_at(agent, slots, step).await;
        let state = std::fs::read_to_string(dev.dir.path().join("state/update/state.json"))
            .unwrap_or_else(|e| e.to_string());
        assert!(
            state.contains(&format!("\"step\": \"{step}\"")),
            "{step} was persisted before the hold: {state}\n{}",
            agent.output()
        );
        agent.kill();
        agent.env.clear();
    }
    // Started again (and rebooted as they ask), each ends as expected.
    for (((dev, slots), (step, outcome)), agent) in fleet.devices.iter().zip(steps).zip(&mut agents)
    {
        let result = until_result(fleet.ctl(), &dev.id, agent, 90).await;
        assert_eq!(
            result["outcome"],
            outcome,
            "killed at {step}: {result}\n{}",
            agent.output()
        );
        let sha = booted_image_is_signed(slots, &[(OLD, &sha_old), (NEW, &sha_new)]);
        let expect_slot = if outcome == "committed" { "b" } else { "a" };
        assert_eq!(booted(slots), expect_slot, "killed at {step}");
        assert_eq!(
            std::fs::read_to_string(slots.join("primary")).unwrap(),
            expect_slot,
            "killed at {step}: the committed slot"
        );
        assert_eq!(
            &sha,
            if outcome == "committed" {
                &sha_new
            } else {
                &sha_old
            }
        );
        agent.kill();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_check_failing_on_the_new_slot_rolls_back_to_the_old_slot_with_the_reason() {
    let release = Release::new();
    release.publish(MODEL, NEW);
    let url = format!("file://{}", release.export().display());
    // The second device is also killed right after persisting the
    // rolling-back step (before mark-bad): it ends rolled back all the same.
    let ids = ["BB-23-UPD-C", "BB-23-UPD-C-KILL"];
    let mut fleet = fleet(&ids, |slots| {
        // The card reader works on the old image only.
        let check = format!(
            "[[checks.list]]\nname = \"card-reader\"\ncommand = [\"sh\", \"-c\", \"grep -qx 2.4.0 {}/$(cat {}/booted)/VERSION || {{ echo no card reader; exit 1; }}\"]\n",
            slots.display(),
            slots.display()
        );
        update_config(
            &release,
            &url,
            slots,
            &format!("{check}{}", hooks_config(slots)),
        )
    });
    fleet.want(NEW).await;
    for (i, id) in ids.iter().enumerate() {
        let (dev, slots) = &fleet.devices[i];
        // Long enough for the restarted agent to reach the broker first on
        // a loaded machine, or the reason would be the broker, not the check.
        let mut env = vec![("FLEET_AGENT__UPDATE__HEALTH_DEADLINE_SECS", "10")];
        if i == 1 {
            env.push(("FLEET_AGENT__TEST_HOOKS__UPDATE_HOLD_AT", "rolling-back"));
        }
        let mut agent = Agent::new(dev, &env);
        agent.start();
        if i == 1 {
            until_held_at(&mut agent, slots, "rolling-back").await;
            agent.kill();
            agent
                .env
                .retain(|(k, _)| k != "FLEET_AGENT__TEST_HOOKS__UPDATE_HOLD_AT");
        }
        let result = until_result(fleet.ctl(), id, &mut agent, 90).await;
        assert_eq!(
            result["outcome"],
            "rolled-back",
            "{id}: {result}\n{}",
            agent.output()
        );
        assert_eq!(result["ok"], false);
        let message = result["message"].as_str().unwrap();
        assert!(
            message.contains("card-reader") && message.contains("no card reader"),
            "{id}: the reason names the failing check: {message}"
        );
        assert_eq!(booted(slots), "a");
        assert_eq!(std::fs::read_to_string(slots.join("primary")).unwrap(), "a");
        assert_eq!(slot_version(slots, "a"), OLD);
        until_firmware_reported(fleet.ctl(), id, OLD).await;
        // Given up: the desired state comes again at each connection, and
        // nothing more is tried.
        agent.kill();
        agent.start();
        let run = agent.proc.as_mut().unwrap();
        let line = run
            .wait_for_line("desired state taken", Duration::from_secs(30))
            .unwrap();
        assert!(line.contains("busy=false"), "{id}: {line}");
        assert_eq!(booted(slots), "a");
        assert!(!slots.join("boot-next").exists());
        agent.kill();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_offline_update_from_a_directory_reports_when_the_controller_is_back() {
    let release = Release::new();
    release.publish(MODEL, NEW);
    let usb = release.export().to_owned();
    let id = "BB-23-USB";
    // The daemon's own repository is unreachable: only the USB stick has it.
    let mut fleet = fleet(&[id], |slots| {
        update_config(&release, "https://127.0.0.1:9/api/v1/tuf", slots, "")
    });
    fleet.ctl.take().unwrap().stop().unwrap();
    let (dev, slots) = &fleet.devices[0];
    // An older version than the device runs: refused, exit status 1.
    let (ok, out, err) = update_from(&usb, &dev.config, Some("2.3.0")).await;
    assert!(!ok, "{out}{err}");
    assert!(err.contains("refused or rolled back"), "{out}{err}");
    assert!(!slots.join("boot-next").exists());
    let (ok, out, err) = update_from(&usb, &dev.config, None).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("updating to {NEW}")),
        "the newest for the model: {out}"
    );
    assert!(out.contains("update step: rebooting"), "{out}{err}");
    assert_eq!(
        std::fs::read_to_string(slots.join("boot-next")).unwrap(),
        "b"
    );

    // The controller comes back; the device boots the new slot, checks and commits.
    fleet.ctl = Some(Controller::start(fleet.data.path(), &["--freshness-secs", "3600"]).unwrap());
    let mut agent = Agent::new(dev, &[]);
    agent.start();
    let result = until_result(fleet.ctl(), id, &mut agent, 90).await;
    assert_outcome(&result, "committed", &agent);
    assert_eq!(booted(slots), "b");
    // The offline run's progress reached the controller too.
    until_progress(fleet.ctl(), id, "installing", None).await;
    agent.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn inside_a_freeze_window_nothing_is_installed_and_frozen_is_reported() {
    let release = Release::new();
    release.publish(MODEL, NEW);
    let usb = release.export().to_owned();
    let id = "BB-23-FROZEN";
    let mut fleet = fleet(&[id], |slots| {
        update_config(&release, "https://127.0.0.1:9/api/v1/tuf", slots, "")
    });
    let (dev, slots) = &fleet.devices[0];
    // The device knows a freeze window from an earlier desired state.
    let now = fleet_agent::unix_ms();
    let state = dev.dir.path().join("state/update");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("state.json"),
        format!(
            r#"{{"step":{{"step":"idle"}},"freeze":[{{"from_ms":{},"to_ms":{}}}]}}"#,
            now - 60_000,
            now + 3_600_000
        ),
    )
    .unwrap();
    let (ok, out, err) = update_from(&usb, &dev.config, Some(NEW)).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("update step: idle"), "{out}{err}");
    assert!(out.contains("held by a freeze window"), "{out}{err}");
    assert!(!slots.join("b").exists(), "nothing written to slot b");
    assert!(!slots.join("boot-next").exists());

    // The Frozen report reaches the controller when the agent is online.
    let mut agent = Agent::new(dev, &[]);
    agent.start();
    let ctl = fleet.ctl.as_ref().unwrap();
    let frozen = eventually(Duration::from_secs(60), "the frozen report", || async {
        let events = update_events(ctl, id).await?;
        events
            .iter()
            .find(|(k, v)| k == "update-progress" && v["phase"] == "frozen")
            .map(|(_, v)| v.clone())
            .ok_or(format!("{events:?}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.output()));
    assert_eq!(frozen["version"], NEW);
    let events = update_events(ctl, id).await.unwrap();
    assert!(
        !events.iter().any(|(k, _)| k == "update-result"),
        "no install, so no result: {events:?}"
    );
    assert_eq!(booted(slots), "a");
    agent.kill();
    fleet.ctl.take().unwrap().stop().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_for_another_model_or_an_older_version_is_refused_and_the_device_stays() {
    let release = Release::new();
    release.publish("laptop-v1", "2.6.0");
    release.publish(MODEL, "2.3.0");
    let url = format!("file://{}", release.export().display());
    let (other, older) = ("BB-23-OTHER", "BB-23-OLDER");
    let mut fleet = fleet(&[other, older], |slots| {
        update_config(&release, &url, slots, "")
    });
    fleet
        .want_each(&[
            // The controller (or an attacker on it) names the laptop image.
            (
                other.into(),
                "2.6.0".into(),
                "firmware/laptop-v1/2.6.0.tar".into(),
            ),
            (
                older.into(),
                "2.3.0".into(),
                format!("firmware/{MODEL}/2.3.0.tar"),
            ),
        ])
        .await;
    for (id, why) in [(other, "model"), (older, "older")] {
        let (dev, slots) = fleet.devices.iter().find(|(d, _)| d.id == id).unwrap();
        let mut agent = Agent::new(dev, &[]);
        agent.start();
        let result = until_result(fleet.ctl(), id, &mut agent, 60).await;
        assert_eq!(result["outcome"], "failed", "{id}: {result}");
        let message = result["message"].as_str().unwrap();
        assert!(
            message.contains(why),
            "{id}: the reason says {why}: {message}"
        );
        assert_eq!(agent.starts, 1, "{id}: no reboot");
        assert!(!slots.join("b").exists(), "{id}: nothing written");
        assert_eq!(booted(slots), "a");
        until_firmware_reported(fleet.ctl(), id, OLD).await;
        agent.kill();
    }
}
