//! Firmware (and agent) updates (issue 9): reconcile to the desired state
//! through signed TUF metadata, download, verify, install A/B, reboot,
//! health-check, commit or roll back.
//!
//! - [`machine`]: the update state machine (pure): [`machine::UpdateMachine`]
//!   takes each [`machine::Input`] with the trusted time and returns the
//!   [`machine::Action`]s; every step is persisted before it starts.
//! - [`state`]: the persisted step (`STATE/update/state.json`, fsync + rename).
//! - [`installer`]: where images go and which slot boots: directory A/B,
//!   RAUC, a command hook.
//! - [`driver`]: the I/O around the machine (TUF client, downloads,
//!   installers, reboot, timers), run beside the agent's event loop.
//! - [`repository`]: the TUF client and the trusted clock behind the driver.
//! - [`tuf`]: the TUF client: fetch and verify the repository's metadata
//!   (tough), check a target's model, artifact and version.
//! - [`clock`]: the trusted time expiry is checked against (pure).
//! - [`delta`]: rebuild an image from the installed one and a bidiff patch,
//!   bounded by and checked against the signed length and hash.
//! - [`agent_binary`]: the agent's own binary: the swap, the trial of a new
//!   agent (it must reach the broker within a deadline) and the rollback.
//! - [`config`], [`error`].

pub mod agent_binary;
pub mod clock;
pub mod config;
pub mod delta;
pub mod driver;
pub mod error;
pub mod installer;
pub mod machine;
pub mod repository;
pub mod state;
pub mod tuf;

pub use config::{InstallerKind, UpdateConfig, UpdateSection};
pub use machine::{Persisted, Step, Target, UpdateMachine};

#[cfg(test)]
mod tests;
