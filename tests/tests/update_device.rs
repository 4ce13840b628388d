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
use std::process::Command;
use std::time::{Duration, SystemTime};

use fleet_protocol::firmware::TargetCustom;
use fleet_protocol::{ArtifactKind, Model, Version};
use fleet_repo::publish::Repo;
use fleet_repo::release::{self, InitOptions};
use fleet_tests::{eventually, within, Controller, EnrolledDevice, Proc};
use serde_json::Value;

const REGISTRY: &str = "province,county,county_name_en,station_id,station_name\n\
    IR-23,IR-23-TEH,Tehran,ST-TEH-1,School 1\n";
const MODEL: &str = "ballot-box-v2";
/// What the devices run before the update (slot a, and the version file).
const OLD: &str = "2.4.0";
const NEW: &str = "2.5.0";

/// A small but real image: a tarball with a VERSION file and a payload.
fn make_image(work: &Path, version: &str, model: &str) -> PathBuf {
    let src = work.join(format!("src-{model}-{version}"));
    std::fs::create_dir_all(src.join("app")).unwrap();
    std::fs::write(src.join("VERSION"), format!("{version}\n")).unwrap();
    let payload: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(31) ^ version.len() as u32) as u8)
        .collect();
    std::fs::write(src.join("app/ballot.bin"), payload).unwrap();
    std::fs::write(src.join("app/model"), model).unwrap();
    let out = work.join(format!("{model}-{version}.tar"));
    let ok = Command::new("tar")
        .arg("-cf")
        .arg(&out)
        .arg("-C")
        .arg(&src)
        .args(["VERSION", "app"])
        .status()
        .unwrap();
    assert!(ok.success(), "tar");
    out
}

/// The release team's keys, the controller-side repository, and its export.
struct Release {
    work: tempfile::TempDir,
    keys: PathBuf,
    repo: Repo,
    export: PathBuf,
}

impl Release {
    fn new() -> Self {
        let work = tempfile::tempdir().unwrap();
        let keys = work.path().join("release-keys");
        let opts = InitOptions {
            root_keys: 1,
            root_threshold: 1,
            root_expires_days: 365,
            targets_expires_days: 365,
        };
        release::init(&keys, &opts, SystemTime::now()).unwrap();
        let dir = work.path().join("firmware/repo");
        Repo::init(
            &dir,
            &std::fs::read(keys.join("root.json")).unwrap(),
            &std::fs::read(keys.join("targets.json")).unwrap(),
            &release::snapshot_key_path(&keys),
            &release::timestamp_key_path(&keys),
            SystemTime::now(),
        )
        .unwrap();
        let repo = Repo::open(
            &dir,
            &release::snapshot_key_path(&keys),
            &release::timestamp_key_path(&keys),
        )
        .unwrap();
        let export = work.path().join("usb");
        Release {
            work,
            keys,
            repo,
            export,
        }
    }

    /// Build, sign and publish an image; returns its sha256.
    fn publish(&self, model: &str, version: &str) -> String {
        let image = make_image(self.work.path(), version, model);
        let custom = TargetCustom {
            artifact: ArtifactKind::Firmware,
            model: Model::parse(model).unwrap(),
            version: Version::parse(version).unwrap(),
        };
        let signed = release::sign(
            &self.keys,
            &image,
            &custom,
            SystemTime::now(),
            &mut |_, _| {},
        )
        .unwrap();
        self.repo.stage_image(&signed.sha256, &image).unwrap();
        self.repo
            .publish_targets(
                &std::fs::read(&signed.targets_path).unwrap(),
                SystemTime::now(),
            )
            .unwrap();
        signed.sha256
    }

    /// Export the repository (as `fleetctl firmware export` does).
    fn export(&self) -> &Path {
        if self.export.exists() {
            std::fs::remove_dir_all(&self.export).unwrap();
        }
        self.repo.export(&self.export, &mut |_, _| {}).unwrap();
        &self.export
    }

    fn root(&self) -> PathBuf {
        self.keys.join("1.root.json")
    }
}

/// The agent config for updates from `repo_url` into slots under the
/// device's directory; `extra` is appended.
fn update_config(release: &Release, repo_url: &str, slots: &Path, extra: &str) -> String {
    format!(
        "[mqtt]\nkeep_alive_secs = 5\nbackoff_base_ms = 100\nbackoff_max_ms = 1000\n\
         [update]\nenabled = true\nrepo_url = \"{repo_url}\"\ntrusted_root = \"{}\"\n\
         installer = \"dir\"\nslots_dir = \"{}\"\nhealth_deadline_secs = 20\n\
         reboot_by_exit = true\nretry_secs = 3600\ndelta = false\n{extra}",
        release.root().display(),
        slots.display()
    )
}

/// Slot a holds the old image, unpacked, and is primary (as shipped).
fn seed_slots(slots: &Path, work: &Path) {
    let image = make_image(work, OLD, MODEL);
    let a = slots.join("a");
    std::fs::create_dir_all(&a).unwrap();
    let ok = Command::new("tar")
        .arg("-xf")
        .arg(&image)
        .arg("-C")
        .arg(&a)
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::write(slots.join("primary"), "a").unwrap();
}

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
        self.ctl.take().unwrap().stop().unwrap();
        let url = format!("sqlite://{}", self.data.path().join("fleet.db").display());
        let db = within(10, "opening the store", sqlx::SqlitePool::connect(&url))
            .await
            .unwrap();
        for (dev, _) in &self.devices {
            let done = sqlx::query(
                "INSERT INTO desired (device, config_rev, firmware_version, firmware_manifest, updated_ms)
                 VALUES (?, 1, ?, ?, 0)
                 ON CONFLICT(device) DO UPDATE SET firmware_version = excluded.firmware_version,
                   firmware_manifest = excluded.firmware_manifest",
            )
            .bind(&dev.id)
            .bind(version)
            .bind(format!("firmware/{MODEL}/{version}.tar"))
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

/// One device's agent, started again whenever it exits (a reboot).
struct Agent {
    config: PathBuf,
    env: Vec<(String, String)>,
    proc: Option<Proc>,
    /// The output of the runs that ended.
    log: String,
    starts: u32,
}

impl Agent {
    fn new(dev: &EnrolledDevice, env: &[(&str, &str)]) -> Self {
        Agent {
            config: dev.config.clone(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            proc: None,
            log: String::new(),
            starts: 0,
        }
    }

    fn start(&mut self) {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.proc = Some(
            Proc::spawn(
                "fleet-agent",
                &["run", "--config", self.config.to_str().unwrap()],
                &env,
            )
            .unwrap(),
        );
        self.starts += 1;
    }

    /// If the agent exited (rebooted), start it again; true if it did.
    fn reboot_if_exited(&mut self) -> bool {
        let exited = match &mut self.proc {
            Some(p) => p.wait(Duration::ZERO).is_ok(),
            None => true,
        };
        if exited {
            if let Some(p) = self.proc.take() {
                self.log.push_str(&p.output());
                self.log.push('\n');
            }
            self.start();
        }
        exited
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
            self.log.push_str(&p.output());
            self.log.push('\n');
        }
    }

    fn output(&self) -> String {
        format!(
            "{}{}",
            self.log,
            self.proc.as_ref().map(|p| p.output()).unwrap_or_default()
        )
    }
}

/// The device's update events as the controller stored them (kind, body).
async fn update_events(ctl: &Controller, id: &str) -> Result<Vec<(String, Value)>, String> {
    let d = ctl.client().device(id).await.map_err(|e| e.to_string())?;
    Ok(d.events
        .iter()
        .filter(|e| e.kind.starts_with("update-"))
        .map(|e| (e.kind.clone(), e.event[&e.kind].clone()))
        .collect())
}

/// Run the agent (rebooting it as it exits) until the controller has its
/// update result; returns the result's body.
async fn until_result(ctl: &Controller, id: &str, agent: &mut Agent, secs: u64) -> Value {
    let what = format!("{id}'s update result");
    let out = eventually(Duration::from_secs(secs), &what, || {
        agent.reboot_if_exited();
        async {
            let events = update_events(ctl, id).await?;
            events
                .iter()
                .find(|(k, _)| k == "update-result")
                .map(|(_, v)| v.clone())
                .ok_or(format!("{events:?}"))
        }
    })
    .await;
    out.unwrap_or_else(|e| panic!("{e}\nagent output:\n{}", agent.output()))
}

/// The booted slot (the bootloader stand-in's `booted` file).
fn booted(slots: &Path) -> String {
    std::fs::read_to_string(slots.join("booted")).unwrap()
}

fn slot_version(slots: &Path, slot: &str) -> String {
    std::fs::read_to_string(slots.join(slot).join("VERSION"))
        .unwrap()
        .trim()
        .to_owned()
}

/// The booted slot holds exactly a signed image's files: re-pack it the
/// way the test images are made and compare its hash with the signed ones.
fn booted_image_is_signed(slots: &Path, signed: &[(&str, &str)]) -> String {
    let slot = slots.join(booted(slots));
    let version = slot_version(slots, &booted(slots));
    let (_, sha) = signed
        .iter()
        .find(|(v, _)| *v == version)
        .unwrap_or_else(|| panic!("the booted slot runs {version}, which was never signed"));
    // The same files as the signed image, byte for byte.
    let work = tempfile::tempdir().unwrap();
    let reference = make_image(work.path(), &version, MODEL);
    let unpacked = work.path().join("ref");
    std::fs::create_dir_all(&unpacked).unwrap();
    assert!(Command::new("tar")
        .arg("-xf")
        .arg(&reference)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap()
        .success());
    for f in ["VERSION", "app/ballot.bin", "app/model"] {
        assert_eq!(
            std::fs::read(slot.join(f)).unwrap(),
            std::fs::read(unpacked.join(f)).unwrap(),
            "{f} in the booted slot"
        );
    }
    (*sha).to_owned()
}

async fn firmware_reported(ctl: &Controller, id: &str) -> Result<String, String> {
    let d = ctl.client().device(id).await.map_err(|e| e.to_string())?;
    d.state
        .map(|s| s.firmware.to_string())
        .ok_or_else(|| "no state yet".to_owned())
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
    assert_eq!(
        result["outcome"],
        "committed",
        "{result}\n{}",
        agent.output()
    );
    assert_eq!(result["ok"], true);
    assert_eq!(result["version"], NEW);
    assert!(agent.starts >= 2, "the new slot came with a reboot");

    // The new slot booted and committed; its version is reported.
    assert_eq!(booted(slots), "b");
    assert_eq!(std::fs::read_to_string(slots.join("primary")).unwrap(), "b");
    assert_eq!(slot_version(slots, "b"), NEW);
    assert_eq!(booted_image_is_signed(slots, &[(NEW, &sha_new)]), sha_new);
    let ctl = fleet.ctl();
    eventually(
        Duration::from_secs(20),
        "the new version reported",
        || async {
            let v = firmware_reported(ctl, id).await?;
            (v == NEW).then_some(()).ok_or(v)
        },
    )
    .await
    .unwrap();
    // The progress went through every phase before the result, in order.
    let events = update_events(ctl, id).await.unwrap();
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
