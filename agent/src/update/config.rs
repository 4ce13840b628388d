//! `[update]`: the file's section and the driver's own validated config.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::error::DriverError;
use super::installer::Installer;

/// `[update]` as written in the file (documented in `fleet-agent.default.toml`).
#[derive(Debug, Clone, Deserialize)]
pub struct UpdateSection {
    pub enabled: bool,
    pub repo_url: String,
    pub trusted_root: PathBuf,
    pub installer: String,
    pub slots_dir: PathBuf,
    pub rauc: String,
    pub hook: Vec<String>,
    pub health_deadline_secs: u64,
    pub max_download_bytes: u64,
    pub delta: bool,
    pub agent_trial_secs: u64,
    pub reboot_by_exit: bool,
    pub retry_secs: u64,
}

/// Which installer writes the slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallerKind {
    Dir {
        slots_dir: PathBuf,
    },
    Rauc {
        program: String,
    },
    Command {
        hook: Vec<String>,
    },
    /// An installer given by the program that embeds the agent (the
    /// simulator's stand-in for hardware); never from the config file.
    Custom(CustomInstaller),
}

/// An [`Installer`] handed in by code (see [`InstallerKind::Custom`]).
/// Two are equal when they are the same object.
#[derive(Clone)]
pub struct CustomInstaller(pub Arc<dyn Installer>);

impl PartialEq for CustomInstaller {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CustomInstaller {}

impl std::fmt::Debug for CustomInstaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomInstaller")
    }
}

/// What the update driver needs, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateConfig {
    /// `STATE/update`: state.json, tuf/, download/, clock.json.
    pub dir: PathBuf,
    pub repo_url: String,
    pub trusted_root: PathBuf,
    pub installer: InstallerKind,
    pub health_deadline: Duration,
    pub max_download_bytes: u64,
    pub delta: bool,
    pub agent_trial: Duration,
    /// Reboot by exiting 0 (tests restart the agent); else `commands.reboot`.
    pub reboot_by_exit: bool,
    pub reboot: Vec<String>,
    pub retry_after: Duration,
    /// The fleet CA for HTTPS repositories.
    pub ca_pem: Option<Vec<u8>>,
    /// Test hook: after persisting this step, write `EVENT_DIR/update-hold-STEP` and wait.
    pub hold_at: Option<(String, PathBuf)>,
    /// `fleet-agent update --from DIR`: install this target from the
    /// directory repository, ignore the controller's desired state, and
    /// stop when the update is over (or rebooting).
    pub usb: Option<fleet_protocol::TargetFirmware>,
    /// Waited before each download starts: the simulator's slow links
    /// (`fleet-sim --download-ms`). Zero from the config file.
    pub download_delay: Duration,
}

impl UpdateSection {
    /// `None` when updates are off.
    pub fn validate(
        &self,
        state_dir: &Path,
        reboot: &[String],
        hold_at: &str,
        event_dir: &Path,
    ) -> Result<Option<UpdateConfig>, DriverError> {
        if !self.enabled {
            return Ok(None);
        }
        let bad = |key, reason: &str| DriverError::Config {
            key,
            reason: reason.to_owned(),
        };
        if !(self.repo_url.starts_with("https://") || self.repo_url.starts_with("file://")) {
            return Err(bad(
                "repo_url",
                "an https:// URL (the controller's /api/v1/tuf) or a file:/// directory",
            ));
        }
        if self.trusted_root.as_os_str().is_empty() {
            return Err(bad(
                "trusted_root",
                "the release team's root.json is needed",
            ));
        }
        for (key, v) in [
            ("health_deadline_secs", self.health_deadline_secs),
            ("agent_trial_secs", self.agent_trial_secs),
            ("retry_secs", self.retry_secs),
        ] {
            if v == 0 {
                return Err(bad(key, "must be greater than zero"));
            }
        }
        let installer = match self.installer.as_str() {
            "dir" => InstallerKind::Dir {
                slots_dir: if self.slots_dir.as_os_str().is_empty() {
                    state_dir.join("slots")
                } else {
                    self.slots_dir.clone()
                },
            },
            "rauc" => InstallerKind::Rauc {
                program: self.rauc.clone(),
            },
            "command" if !self.hook.is_empty() => InstallerKind::Command {
                hook: self.hook.clone(),
            },
            "command" => return Err(bad("hook", "the command installer needs a hook")),
            _ => return Err(bad("installer", "one of dir, rauc, command")),
        };
        if !self.reboot_by_exit && reboot.is_empty() {
            return Err(bad(
                "reboot_by_exit",
                "an update needs a reboot: set commands.reboot (or reboot_by_exit, tests only)",
            ));
        }
        let ca = state_dir.join("ca.crt");
        Ok(Some(UpdateConfig {
            dir: state_dir.join("update"),
            repo_url: self.repo_url.trim_end_matches('/').to_owned(),
            trusted_root: self.trusted_root.clone(),
            installer,
            health_deadline: Duration::from_secs(self.health_deadline_secs),
            max_download_bytes: self.max_download_bytes,
            delta: self.delta,
            agent_trial: Duration::from_secs(self.agent_trial_secs),
            reboot_by_exit: self.reboot_by_exit,
            reboot: reboot.to_vec(),
            retry_after: Duration::from_secs(self.retry_secs),
            ca_pem: std::fs::read(ca).ok(),
            hold_at: (!hold_at.is_empty() && !event_dir.as_os_str().is_empty())
                .then(|| (hold_at.to_owned(), event_dir.to_owned())),
            usb: None,
            download_delay: Duration::ZERO,
        }))
    }
}
