//! Shared pieces of the update tests and the update bench: small real
//! firmware images (tarballs with a VERSION file), a real signed
//! repository made with fleet-repo (the release team's signer), and an
//! agent process started again whenever it exits (a reboot, with
//! `update.reboot_by_exit`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use fleet_protocol::firmware::TargetCustom;
use fleet_protocol::{ArtifactKind, Model, Version};
use fleet_repo::publish::Repo;
use fleet_repo::release::{self, InitOptions};
use serde_json::Value;

use crate::{eventually, Controller, EnrolledDevice, Proc};

/// The model of the test devices ([`Controller::enrol`]).
pub const MODEL: &str = "ballot-box-v2";
/// What the devices run before an update (slot a, and the version file).
pub const OLD: &str = "2.4.0";

/// A small but real image: a tarball with a VERSION file and a payload.
pub fn make_image(work: &Path, version: &str, model: &str) -> PathBuf {
    let src = work.join(format!("src-{model}-{version}"));
    std::fs::create_dir_all(src.join("app")).expect("update test set-up");
    std::fs::write(src.join("VERSION"), format!("{version}\n")).expect("update test set-up");
    let payload: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(31) ^ version.len() as u32) as u8)
        .collect();
    std::fs::write(src.join("app/ballot.bin"), payload).expect("update test set-up");
    std::fs::write(src.join("app/model"), model).expect("update test set-up");
    let out = work.join(format!("{model}-{version}.tar"));
    let ok = Command::new("tar")
        .arg("-cf")
        .arg(&out)
        .arg("-C")
        .arg(&src)
        .args(["VERSION", "app"])
        .status()
        .expect("update test set-up");
    assert!(ok.success(), "tar");
    out
}

/// The release team's keys, the controller-side repository, and its export.
pub struct Release {
    pub work: tempfile::TempDir,
    pub keys: PathBuf,
    pub repo: Repo,
    pub export: PathBuf,
}

impl Default for Release {
    fn default() -> Self {
        Self::new()
    }
}

impl Release {
    pub fn new() -> Self {
        let work = tempfile::tempdir().expect("update test set-up");
        let keys = work.path().join("release-keys");
        let opts = InitOptions {
            root_keys: 1,
            root_threshold: 1,
            root_expires_days: 365,
            targets_expires_days: 365,
        };
        release::init(&keys, &opts, SystemTime::now()).expect("update test set-up");
        let dir = work.path().join("firmware/repo");
        Repo::init(
            &dir,
            &std::fs::read(keys.join("root.json")).expect("update test set-up"),
            &std::fs::read(keys.join("targets.json")).expect("update test set-up"),
            &release::snapshot_key_path(&keys),
            &release::timestamp_key_path(&keys),
            SystemTime::now(),
        )
        .expect("update test set-up");
        let repo = Repo::open(
            &dir,
            &release::snapshot_key_path(&keys),
            &release::timestamp_key_path(&keys),
        )
        .expect("update test set-up");
        let export = work.path().join("usb");
        Release {
            work,
            keys,
            repo,
            export,
        }
    }

    /// Build, sign and publish an image; returns its sha256.
    pub fn publish(&self, model: &str, version: &str) -> String {
        let image = make_image(self.work.path(), version, model);
        let custom = TargetCustom {
            artifact: ArtifactKind::Firmware,
            model: Model::parse(model).expect("update test set-up"),
            version: Version::parse(version).expect("update test set-up"),
        };
        let signed = release::sign(
            &self.keys,
            &image,
            &custom,
            SystemTime::now(),
            &mut |_, _| {},
        )
        .expect("update test set-up");
        self.repo
            .stage_image(&signed.sha256, &image)
            .expect("update test set-up");
        self.repo
            .publish_targets(
                &std::fs::read(&signed.targets_path).expect("update test set-up"),
                SystemTime::now(),
            )
            .expect("update test set-up");
        signed.sha256
    }

    /// Export the repository (as `fleetctl firmware export` does).
    pub fn export(&self) -> &Path {
        if self.export.exists() {
            std::fs::remove_dir_all(&self.export).expect("update test set-up");
        }
        self.repo
            .export(&self.export, &mut |_, _| {})
            .expect("update test set-up");
        &self.export
    }

    pub fn root(&self) -> PathBuf {
        self.keys.join("1.root.json")
    }
}

/// The agent config for updates from `repo_url` into slots under the
/// device's directory; `extra` is appended.
pub fn update_config(release: &Release, repo_url: &str, slots: &Path, extra: &str) -> String {
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
pub fn seed_slots(slots: &Path, work: &Path) {
    let image = make_image(work, OLD, MODEL);
    let a = slots.join("a");
    std::fs::create_dir_all(&a).expect("update test set-up");
    let ok = Command::new("tar")
        .arg("-xf")
        .arg(&image)
        .arg("-C")
        .arg(&a)
        .status()
        .expect("update test set-up");
    assert!(ok.success());
    std::fs::write(slots.join("primary"), "a").expect("update test set-up");
    std::fs::write(slots.join("booted"), "a").expect("update test set-up");
}

/// One device's agent, started again whenever it exits (a reboot).
pub struct Agent {
    pub config: PathBuf,
    pub env: Vec<(String, String)>,
    pub proc: Option<Proc>,
    /// The output of the runs that ended.
    pub log: String,
    pub starts: u32,
    /// The agent binary to run (default: the build's `fleet-agent`); a
    /// copy when the test replaces it.
    pub binary: Option<PathBuf>,
}

impl Agent {
    pub fn new(dev: &EnrolledDevice, env: &[(&str, &str)]) -> Self {
        Agent {
            config: dev.config.clone(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            proc: None,
            log: String::new(),
            starts: 0,
            binary: None,
        }
    }

    pub fn start(&mut self) {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let args = [
            "run",
            "--config",
            self.config.to_str().expect("update test set-up"),
        ];
        self.proc = Some(
            match &self.binary {
                None => Proc::spawn("fleet-agent", &args, &env),
                Some(path) => {
                    let mut cmd = Command::new(path);
                    cmd.args(args).envs(env.iter().copied());
                    Proc::from_command("fleet-agent", cmd)
                }
            }
            .expect("update test set-up"),
        );
        self.starts += 1;
    }

    /// If the agent exited (rebooted), start it again; true if it did.
    pub fn reboot_if_exited(&mut self) -> bool {
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

    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
            self.log.push_str(&p.output());
            self.log.push('\n');
        }
    }

    pub fn output(&self) -> String {
        format!(
            "{}{}",
            self.log,
            self.proc.as_ref().map(|p| p.output()).unwrap_or_default()
        )
    }
}

/// The device's update events as the controller stored them (kind, body).
pub async fn update_events(ctl: &Controller, id: &str) -> Result<Vec<(String, Value)>, String> {
    let d = ctl.client().device(id).await.map_err(|e| e.to_string())?;
    Ok(d.events
        .iter()
        .filter(|e| e.kind.starts_with("update-"))
        .map(|e| (e.kind.clone(), e.event[&e.kind].clone()))
        .collect())
}

/// The device's update events once one of them is an `update-progress` in
/// `phase` (and, when given, for `artifact`). The outbox sends the result
/// before the progress that led to it, so progress may arrive after the
/// result: poll for it rather than read once.
pub async fn until_progress(
    ctl: &Controller,
    id: &str,
    phase: &str,
    artifact: Option<&str>,
) -> Vec<(String, Value)> {
    crate::eventually(
        std::time::Duration::from_secs(30),
        &format!("{id}'s {phase} progress"),
        || async {
            let events = update_events(ctl, id).await?;
            events
                .iter()
                .any(|(k, v)| {
                    k == "update-progress"
                        && v["phase"] == phase
                        && artifact.is_none_or(|a| v["artifact"] == a)
                })
                .then_some(events.clone())
                .ok_or(format!("{events:?}"))
        },
    )
    .await
    .unwrap()
}

/// Run the agent (rebooting it as it exits) until the controller has its
/// update result; returns the result's body.
pub async fn until_result(ctl: &Controller, id: &str, agent: &mut Agent, secs: u64) -> Value {
    until_result_for(ctl, id, agent, None, secs).await
}

/// [`until_result`] for the result of `version` (any when `None`).
pub async fn until_result_for(
    ctl: &Controller,
    id: &str,
    agent: &mut Agent,
    version: Option<&str>,
    secs: u64,
) -> Value {
    let what = format!("{id}'s update result");
    until_update_event(ctl, id, agent, &what, secs, |kind, body| {
        kind == "update-result" && version.is_none_or(|want| body["version"] == want)
    })
    .await
}

/// Run the agent (rebooting it as it exits) until the controller has an
/// update event of `id` that `wanted` picks by (kind, body); returns its
/// body. `what` names the wait when it times out.
pub async fn until_update_event(
    ctl: &Controller,
    id: &str,
    agent: &mut Agent,
    what: &str,
    secs: u64,
    wanted: impl Fn(&str, &Value) -> bool,
) -> Value {
    let out = eventually(Duration::from_secs(secs), what, || {
        agent.reboot_if_exited();
        async {
            let events = update_events(ctl, id).await?;
            events
                .iter()
                .find(|(k, v)| wanted(k, v))
                .map(|(_, v)| v.clone())
                .ok_or(format!("{events:?}"))
        }
    })
    .await;
    out.unwrap_or_else(|e| panic!("{e}\nagent output:\n{}", agent.output()))
}

/// The update result's outcome is `outcome` (else the result and the
/// agent's output are shown).
pub fn assert_outcome(result: &Value, outcome: &str, agent: &Agent) {
    assert_eq!(result["outcome"], outcome, "{result}\n{}", agent.output());
}

/// The booted slot (the bootloader stand-in's `booted` file).
pub fn booted(slots: &Path) -> String {
    std::fs::read_to_string(slots.join("booted")).expect("update test set-up")
}

pub fn slot_version(slots: &Path, slot: &str) -> String {
    std::fs::read_to_string(slots.join(slot).join("VERSION"))
        .expect("update test set-up")
        .trim()
        .to_owned()
}

/// The booted slot holds exactly a signed image's files: re-pack it the
/// way the test images are made and compare its hash with the signed ones.
pub fn booted_image_is_signed(slots: &Path, signed: &[(&str, &str)]) -> String {
    let slot = slots.join(booted(slots));
    let version = slot_version(slots, &booted(slots));
    let (_, sha) = signed
        .iter()
        .find(|(v, _)| *v == version)
        .unwrap_or_else(|| panic!("the booted slot runs {version}, which was never signed"));
    // The same files as the signed image, byte for byte.
    let work = tempfile::tempdir().expect("update test set-up");
    let reference = make_image(work.path(), &version, MODEL);
    let unpacked = work.path().join("ref");
    std::fs::create_dir_all(&unpacked).expect("update test set-up");
    assert!(Command::new("tar")
        .arg("-xf")
        .arg(&reference)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .expect("update test set-up")
        .success());
    for f in ["VERSION", "app/ballot.bin", "app/model"] {
        assert_eq!(
            std::fs::read(slot.join(f)).expect("update test set-up"),
            std::fs::read(unpacked.join(f)).expect("update test set-up"),
            "{f} in the booted slot"
        );
    }
    (*sha).to_owned()
}

pub async fn firmware_reported(ctl: &Controller, id: &str) -> Result<String, String> {
    let d = ctl.client().device(id).await.map_err(|e| e.to_string())?;
    d.state
        .map(|s| s.firmware.to_string())
        .ok_or_else(|| "no state yet".to_owned())
}

/// Wait until the controller shows the device reporting firmware `version`.
pub async fn until_firmware_reported(ctl: &Controller, id: &str, version: &str) {
    let what = format!("firmware {version} reported");
    eventually(Duration::from_secs(20), &what, || async {
        let v = firmware_reported(ctl, id).await?;
        (v == version).then_some(()).ok_or(v)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `fleet-controller firmware-init` for the controller data directory
/// `data` (the controller stopped), from the release key set `keys`.
pub fn firmware_init(data: &Path, keys: &Path) -> anyhow::Result<()> {
    let s = |p: PathBuf| p.to_string_lossy().into_owned();
    let (ok, out, err) = crate::run_bin(
        "fleet-controller",
        &[
            "firmware-init",
            "--data-dir",
            &s(data.to_owned()),
            "--root",
            &s(release::root_json_path(keys)),
            "--targets",
            &s(release::targets_json_path(keys)),
            "--snapshot-key",
            &s(release::snapshot_key_path(keys)),
            "--timestamp-key",
            &s(release::timestamp_key_path(keys)),
        ],
    )?;
    anyhow::ensure!(ok, "firmware-init: {out}{err}");
    Ok(())
}

/// A controller with a firmware repository (a fresh release key set,
/// `fleet-controller firmware-init`) and one enrolled device with directory
/// slots whose agent updates from the controller's TUF routes over HTTPS
/// with the fleet CA.
pub struct ControllerSetup {
    pub data: tempfile::TempDir,
    pub work: tempfile::TempDir,
    pub keys: PathBuf,
    pub ctl: Controller,
    pub dev: EnrolledDevice,
    pub slots: PathBuf,
}

const SETUP_REGISTRY: &str = "province,county,county_name_en,station_id,station_name\n\
    IR-23,IR-23-TEH,Tehran,ST-TEH-1,School 1\n";

impl ControllerSetup {
    /// `extra`: appended to the agent's config.
    pub fn start(id: &str, extra: &str) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let work = tempfile::tempdir()?;
        let keys = work.path().join("release-keys");
        release::init(&keys, &InitOptions::default(), SystemTime::now())?;
        let slots = work.path().join("slots");
        seed_slots(&slots, work.path());
        let ctl = Controller::start(data.path(), &["--freshness-secs", "3600"])?;
        ctl.import_registry(SETUP_REGISTRY)?;
        let config = format!(
            "[mqtt]\nkeep_alive_secs = 5\nbackoff_base_ms = 100\nbackoff_max_ms = 1000\n\
             [update]\nenabled = true\nrepo_url = \"https://placeholder.invalid/api/v1/tuf\"\n\
             trusted_root = \"{}\"\ninstaller = \"dir\"\nslots_dir = \"{}\"\n\
             health_deadline_secs = 30\nreboot_by_exit = true\nretry_secs = 3600\ndelta = true\n{extra}",
            keys.join("1.root.json").display(),
            slots.display()
        );
        let dev = ctl.enrol(id, "IR-23", "IR-23-TEH", &config)?;
        ctl.stop()?;
        firmware_init(data.path(), &keys)?;
        let ctl = Controller::start(data.path(), &["--freshness-secs", "3600"])?;
        Ok(Self {
            data,
            work,
            keys,
            ctl,
            dev,
            slots,
        })
    }

    /// Build and sign an image (the release workstation), then upload it
    /// with its signed targets (`fleetctl firmware upload`).
    pub fn upload(&self, version: &str) -> anyhow::Result<release::SignedTarget> {
        let image = make_image(self.work.path(), version, MODEL);
        let custom = TargetCustom {
            artifact: ArtifactKind::Firmware,
            model: Model::parse(MODEL)?,
            version: Version::parse(version)?,
        };
        self.upload_file(&image, &custom)
    }

    /// Sign `image` as `custom` and upload it.
    pub fn upload_file(
        &self,
        image: &Path,
        custom: &TargetCustom,
    ) -> anyhow::Result<release::SignedTarget> {
        let signed = release::sign(&self.keys, image, custom, SystemTime::now(), &mut |_, _| {})?;
        let (ok, out, err) = self.ctl.fleetctl(&[
            "firmware",
            "upload",
            &image.to_string_lossy(),
            "--targets",
            &signed.targets_path.to_string_lossy(),
        ])?;
        anyhow::ensure!(ok, "firmware upload: {out}{err}");
        Ok(signed)
    }

    /// `fleetctl device update ID --version V`.
    pub fn update(&self, version: &str) -> anyhow::Result<()> {
        self.update_with(version, &[])
    }

    /// `fleetctl device update ID --version V EXTRA…` (e.g. `--agent`).
    pub fn update_with(&self, version: &str, extra: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["device", "update", &self.dev.id, "--version", version];
        args.extend_from_slice(extra);
        let (ok, out, err) = self.ctl.fleetctl(&args)?;
        anyhow::ensure!(ok, "device update: {out}{err}");
        Ok(())
    }

    /// `fleetctl device update` to `version`, then run the agent (rebooting
    /// it as it exits) until the controller has that version's result;
    /// returns the result's body.
    pub async fn update_and_wait(&self, agent: &mut Agent, version: &str) -> Value {
        self.update(version).expect("fleetctl device update");
        until_result_for(&self.ctl, &self.dev.id, agent, Some(version), 120).await
    }

    /// The device's agent, pointed at this controller's TUF routes.
    pub fn agent(&self) -> Agent {
        let url = format!("{}/api/v1/tuf", self.ctl.api);
        Agent::new(&self.dev, &[("FLEET_AGENT__UPDATE__REPO_URL", &url)])
    }
}

/// A controller process with a firmware repository (a fresh release key
/// set, `fleet-controller firmware-init` before the first start), to
/// which signed images of any model are uploaded: the set-up of the
/// simulated-fleet update tests (`sim_update`, `rollout_fleet`).
pub struct FirmwareController {
    pub data: tempfile::TempDir,
    pub work: tempfile::TempDir,
    pub keys: PathBuf,
    pub ctl: Controller,
}

impl FirmwareController {
    /// `extra`, `env`: as [`Controller::start_with_env`].
    pub fn start(extra: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let work = tempfile::tempdir()?;
        let keys = work.path().join("release-keys");
        release::init(&keys, &InitOptions::default(), SystemTime::now())?;
        crate::init_data_dir(data.path())?;
        firmware_init(data.path(), &keys)?;
        let ctl = Controller::start_with_env(data.path(), extra, env)?;
        Ok(Self {
            data,
            work,
            keys,
            ctl,
        })
    }

    /// Build an image of `model` `version`, sign it with the release keys
    /// and upload it (`fleetctl firmware upload`).
    pub fn publish(&self, model: &str, version: &str) -> anyhow::Result<()> {
        let image = make_image(self.work.path(), version, model);
        let custom = TargetCustom {
            artifact: ArtifactKind::Firmware,
            model: Model::parse(model)?,
            version: Version::parse(version)?,
        };
        let signed = release::sign(
            &self.keys,
            &image,
            &custom,
            SystemTime::now(),
            &mut |_, _| {},
        )?;
        let (ok, out, err) = self.ctl.fleetctl(&[
            "firmware",
            "upload",
            &image.to_string_lossy(),
            "--targets",
            &signed.targets_path.to_string_lossy(),
        ])?;
        anyhow::ensure!(ok, "firmware upload: {out}{err}");
        Ok(())
    }
}
