//! Simulated devices that update for real: each runs the agent's own update
//! driver and TUF client against the controller's `/api/v1/tuf`, with a
//! state directory of its own, and "reboots" by ending the agent run
//! (`update.reboot_by_exit`), after which [`crate::run`] starts it again on
//! the same directory.
//!
//! - [`SimUpdate`]: the options (`fleet-sim run --installer … --fail-share …`).
//! - [`roles`]: which devices fail their boot checks or never come back
//!   from a reboot (pure, from the seed).
//! - [`SimInstaller`]: the `--installer sim` stand-in.
//! - [`DeviceUpdate`]: one device's directory, update config and role.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_agent::update::error::InstallError;
use fleet_agent::update::installer::Installer;
use fleet_agent::update::{InstallerKind, Step, UpdateConfig};
use fleet_protocol::Version;
use rand::{rngs::SmallRng, seq::SliceRandom, SeedableRng};

/// Which installer the simulated devices use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallerChoice {
    /// The agent's real directory A/B installer, on slots in each device's
    /// directory (unpacks the image: disk and time per device).
    Dir,
    /// [`SimInstaller`]: keeps the slots in memory and waits `install`.
    Sim,
}

/// `fleet-sim run`'s update options.
#[derive(Debug, Clone)]
pub struct SimUpdate {
    pub installer: InstallerChoice,
    /// `--install-ms`: how long [`SimInstaller`] takes to write a slot.
    pub install: Duration,
    /// `--download-ms`: waited before each download starts.
    pub download: Duration,
    /// `--reboot-ms`: between the agent's end (a reboot) and its next start.
    pub reboot: Duration,
    /// The agent's health deadline after booting a new image.
    pub health_deadline: Duration,
    /// `--fail-share`: devices whose checks fail after booting a new image.
    pub fail_share: f64,
    /// `--fail-attempts`: those devices fail only their first N trial boots.
    pub fail_attempts: u32,
    /// `--never-return-share`: devices that go to reboot and never come back.
    pub never_return_share: f64,
    /// Chooses the devices of each share.
    pub seed: u64,
    /// Where the per-device directories go (a temporary directory when `None`).
    pub dir: Option<PathBuf>,
}

impl Default for SimUpdate {
    fn default() -> Self {
        Self {
            installer: InstallerChoice::Sim,
            install: Duration::from_secs(2),
            download: Duration::from_secs(1),
            reboot: Duration::from_secs(2),
            health_deadline: Duration::from_secs(20),
            fail_share: 0.0,
            fail_attempts: 1,
            never_return_share: 0.0,
            seed: 1,
            dir: None,
        }
    }
}

/// How a simulated device behaves in an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Installs, boots, passes its checks, commits.
    Healthy,
    /// Its checks fail on its first `fail_attempts` boots of a new image,
    /// so the agent rolls back; later attempts commit.
    FailsChecks,
    /// Goes to reboot and never comes back (the controller times it out).
    NeverReturns,
}

/// The role of each device: of the `eligible` ones (the others are
/// Healthy), exactly `round(share × eligible)` fail their checks and as
/// many again by the other share never return; disjoint, chosen by a
/// shuffle seeded with `seed`, so the same seed picks the same devices.
pub fn roles(eligible: &[bool], fail_share: f64, never_return_share: f64, seed: u64) -> Vec<Role> {
    let mut pool: Vec<usize> = (0..eligible.len()).filter(|&i| eligible[i]).collect();
    let count = |share: f64| ((share.clamp(0.0, 1.0) * pool.len() as f64).round()) as usize;
    let (fail, never) = (count(fail_share), count(never_return_share));
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x005e_ed0f_fa11);
    pool.shuffle(&mut rng);
    let mut out = vec![Role::Healthy; eligible.len()];
    for (k, &i) in pool.iter().enumerate() {
        if k < fail {
            out[i] = Role::FailsChecks;
        } else if k < fail + never {
            out[i] = Role::NeverReturns;
        }
    }
    out
}

/// A stand-in for hardware that cannot exist here (a real device writes a
/// partition through RAUC or its vendor's tool): two slots kept in
/// memory, the image's `VERSION` file read from the tarball, the
/// bootloader's one-shot "boot next" and fallback played as the directory
/// installer plays them, and `install` taking `--install-ms` (it sleeps on
/// the blocking pool, as a real write would hold a thread). Shared by a
/// device's successive agent runs, so a "reboot" keeps the slots.
pub struct SimInstaller {
    slots: Mutex<Slots>,
    install: Duration,
}

#[derive(Debug)]
struct Slots {
    versions: [Option<Version>; 2],
    primary: usize,
    boot_next: Option<usize>,
    booted: usize,
}

fn slot_name(i: usize) -> String {
    ["a", "b"][i].to_owned()
}

impl SimInstaller {
    /// Slot a holds `firmware` and is primary (as shipped).
    pub fn new(firmware: Version, install: Duration) -> Self {
        Self {
            slots: Mutex::new(Slots {
                versions: [Some(firmware), None],
                primary: 0,
                boot_next: None,
                booted: 0,
            }),
            install,
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        // A panic while holding it leaves plain data behind: keep going.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `VERSION` file of an image tarball.
fn image_version(image: &Path) -> Result<Version, InstallError> {
    let bad = |reason: String| InstallError::BadImage {
        path: image.to_owned(),
        reason,
    };
    let file = std::fs::File::open(image).map_err(|e| bad(e.to_string()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?;
        if path.to_str().map(|p| p.trim_start_matches("./")) == Some("VERSION") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).map_err(|e| bad(e.to_string()))?;
            return Version::parse(text.trim()).map_err(|e| bad(e.to_string()));
        }
    }
    Err(bad("no VERSION file in the image".into()))
}

impl Installer for SimInstaller {
    fn boot(&self) -> Result<String, InstallError> {
        let mut s = self.slots();
        s.booted = s.boot_next.take().unwrap_or(s.primary);
        Ok(slot_name(s.booted))
    }

    fn install(&self, image: &Path) -> Result<String, InstallError> {
        let version = image_version(image)?;
        std::thread::sleep(self.install);
        let mut s = self.slots();
        let other = 1 - s.booted;
        s.versions[other] = Some(version);
        s.boot_next = Some(other);
        Ok(slot_name(other))
    }

    fn mark_good(&self) -> Result<(), InstallError> {
        let mut s = self.slots();
        s.primary = s.booted;
        Ok(())
    }

    fn mark_bad(&self) -> Result<(), InstallError> {
        self.slots().boot_next = None;
        Ok(())
    }

    fn booted_version(&self) -> Option<Version> {
        let s = self.slots();
        s.versions[s.booted].clone()
    }
}

/// The fleet-wide part of every device's update config.
#[derive(Clone)]
pub struct FleetUpdate {
    pub sim: SimUpdate,
    /// `{controller}/api/v1/tuf`.
    pub repo_url: String,
    /// The trusted root the simulator fetched once from the controller. A
    /// real device ships the release team's root in its image and never
    /// takes it from the network; the simulator stands in for the factory.
    pub root: Arc<Vec<u8>>,
    /// The fleet CA (the repository is served over HTTPS).
    pub ca_pem: Option<Vec<u8>>,
}

/// One simulated device's update set-up: its directory, config and role.
pub struct DeviceUpdate {
    pub config: UpdateConfig,
    pub role: Role,
    /// Trial boots of a new image so far (the checks fail for the first
    /// `fail_attempts` of a [`Role::FailsChecks`] device).
    trials: u32,
    fail_attempts: u32,
    pub reboot: Duration,
}

impl DeviceUpdate {
    /// Make `dir` (the device's own): the trusted root, the slots (slot a
    /// holds `firmware` for the directory installer).
    pub fn new(
        fleet: &FleetUpdate,
        dir: &Path,
        firmware: &Version,
        role: Role,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let root = dir.join("root.json");
        std::fs::write(&root, fleet.root.as_slice())?;
        let sim = &fleet.sim;
        let installer = match sim.installer {
            InstallerChoice::Dir => {
                let slots = dir.join("slots");
                std::fs::create_dir_all(slots.join("a"))?;
                std::fs::write(slots.join("a/VERSION"), format!("{firmware}\n"))?;
                std::fs::write(slots.join("primary"), "a")?;
                InstallerKind::Dir { slots_dir: slots }
            }
            InstallerChoice::Sim => {
                InstallerKind::Custom(fleet_agent::update::config::CustomInstaller(Arc::new(
                    SimInstaller::new(firmware.clone(), sim.install),
                )))
            }
        };
        Ok(Self {
            config: UpdateConfig {
                dir: dir.join("update"),
                repo_url: fleet.repo_url.clone(),
                trusted_root: root,
                installer,
                health_deadline: sim.health_deadline,
                max_download_bytes: 0,
                delta: false,
                agent_trial: Duration::from_secs(60),
                reboot_by_exit: true,
                reboot: Vec::new(),
                retry_after: Duration::from_secs(30),
                ca_pem: fleet.ca_pem.clone(),
                hold_at: None,
                usb: None,
                download_delay: sim.download,
            },
            role,
            trials: 0,
            fail_attempts: sim.fail_attempts,
            reboot: sim.reboot,
        })
    }

    /// Called before each agent start: whether this start is the trial
    /// boot of a new image whose checks must fail.
    pub fn checks_fail_this_boot(&mut self) -> bool {
        let state = fleet_agent::update::state::StateFile::in_dir(&self.config.dir);
        let trial = matches!(
            state.load().map(|p| p.step),
            Ok(Step::Rebooting { .. } | Step::Checking { .. })
        );
        if !trial {
            return false;
        }
        self.trials += 1;
        self.role == Role::FailsChecks && self.trials <= self.fail_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(r: &[Role], role: Role) -> usize {
        r.iter().filter(|x| **x == role).count()
    }

    #[test]
    fn roles_take_exact_disjoint_shares_of_the_eligible_devices_and_follow_the_seed() {
        let eligible: Vec<bool> = (0..40).map(|i| i % 10 != 0).collect(); // 36 eligible
        let r = roles(&eligible, 0.25, 0.1, 7);
        assert_eq!(count(&r, Role::FailsChecks), 9);
        assert_eq!(count(&r, Role::NeverReturns), 4);
        assert_eq!(count(&r, Role::Healthy), 27);
        for (i, role) in r.iter().enumerate() {
            if !eligible[i] {
                assert_eq!(*role, Role::Healthy, "device {i} is not eligible");
            }
        }
        assert_eq!(roles(&eligible, 0.25, 0.1, 7), r);
        assert_ne!(roles(&eligible, 0.25, 0.1, 8), r);
        assert!(roles(&eligible, 0.0, 0.0, 7)
            .iter()
            .all(|x| *x == Role::Healthy));
    }

    fn image(dir: &Path, version: &str) -> PathBuf {
        let path = dir.join(format!("{version}.tar"));
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        let data = format!("{version}\n");
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "VERSION", data.as_bytes()).unwrap();
        b.finish().unwrap();
        path
    }

    #[test]
    fn the_sim_installer_boots_a_new_slot_once_and_falls_back_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let v = |s: &str| Version::parse(s).unwrap();
        let i = SimInstaller::new(v("2.4.0"), Duration::ZERO);
        assert_eq!(i.boot().unwrap(), "a");
        assert_eq!(i.install(&image(dir.path(), "2.5.0")).unwrap(), "b");
        assert_eq!(i.boot().unwrap(), "b");
        assert_eq!(i.booted_version(), Some(v("2.5.0")));
        i.mark_bad().unwrap();
        // Not committed: the next boot falls back.
        assert_eq!(i.boot().unwrap(), "a");
        assert_eq!(i.booted_version(), Some(v("2.4.0")));
        assert_eq!(i.install(&image(dir.path(), "2.5.0")).unwrap(), "b");
        assert_eq!(i.boot().unwrap(), "b");
        i.mark_good().unwrap();
        assert_eq!(i.boot().unwrap(), "b");
        assert_eq!(i.booted_version(), Some(v("2.5.0")));
        let err = i.install(&dir.path().join("missing.tar")).unwrap_err();
        assert!(matches!(err, InstallError::BadImage { .. }), "{err}");
    }
}
