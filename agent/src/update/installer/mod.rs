//! Installers: where an image goes and which slot boots. One trait, three
//! kinds: [`dir::DirInstaller`] (directory A/B slots and a bootloader
//! stand-in, for tests and simple devices), [`rauc::RaucInstaller`] (RAUC's
//! command line, for real hardware) and [`command::CommandInstaller`] (a
//! site's own hook).
//!
//! Calls block (they run commands and write files); the driver runs them off
//! the event loop.

pub mod command;
pub mod dir;
pub mod rauc;

use std::path::Path;

use fleet_protocol::Version;

use super::error::InstallError;

pub trait Installer: Send + Sync + 'static {
    /// Called once per agent start, before anything else: the slot the
    /// device booted. (The directory installer counts each start as a boot.)
    fn boot(&self) -> Result<String, InstallError>;
    /// Write `image` to the inactive slot and make it boot next (once: a
    /// boot that is not committed falls back). Returns the slot written.
    fn install(&self, image: &Path) -> Result<String, InstallError>;
    /// Commit the booted slot: it boots from now on.
    fn mark_good(&self) -> Result<(), InstallError>;
    /// Reject the booted slot: the next boot is the other one.
    fn mark_bad(&self) -> Result<(), InstallError>;
    /// The firmware version of the booted slot, when the installer knows it.
    fn booted_version(&self) -> Option<Version>;
}

/// Run `program args…`, returning its standard output; a non-zero exit is
/// an error carrying its standard error.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, InstallError> {
    let command = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| InstallError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(InstallError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests;
