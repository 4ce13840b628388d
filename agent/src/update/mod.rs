//! Firmware (and agent) updates: reconcile to the desired state through
//! signed TUF metadata, download, verify, install A/B, reboot, health-check,
//! commit or roll back.
//!
//! - [`machine`]: the update state machine (pure): [`machine::UpdateMachine`]
//!   takes each [`machine::Input`] with the trusted time and returns the
//!   [`machine::Action`]s; every step is persisted before it starts.
//! - [`state`]: the persisted step (`STATE/update/state.json`, fsync + rename).
//! - [`installer`]: where images go and which slot boots: directory A/B,
//!   RAUC, a command hook.
//! - [`driver`]: the I/O around the machine (TUF client, downloads,
//!   installers, reboot, timers), run beside the agent's event loop.
//! - [`config`], [`error`].

pub mod config;
pub mod driver;
pub mod error;
pub mod installer;
pub mod machine;
pub mod repository;
pub mod state;

pub use config::{InstallerKind, UpdateConfig, UpdateSection};
pub use machine::{Persisted, Step, Target, UpdateMachine};

#[cfg(test)]
mod tests;
