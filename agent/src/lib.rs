//! fleet-agent: the daemon on every ballot box and identity laptop.
//!
//! - [`config`]: the layered configuration (built-in commented defaults, site
//!   file, `FLEET_AGENT__…` environment) and the small per-component configs.
//! - [`enrol`]: make the device key, request a certificate with an
//!   enrolment token, keep the identity.
//! - [`tls`]: the device's mutual-TLS client configuration.
//! - [`tuf_cli`]: `fleet-agent tuf`, the TUF verifier of [`update::tuf`]
//!   behind the TUF conformance client protocol (init, refresh, download).
//! - [`renew`]: certificate renewal's files: requests, a renewed
//!   certificate kept beside the old until a connection with it succeeded.
//! - [`core`]: the agent's core (pure): [`core::AgentCore`] takes each
//!   [`core::Input`] (connected, a timer, a health sample, check results,
//!   desired state, a command, …) with the time it happened and returns the
//!   [`core::Action`]s to take: subscribe, publish, persist the event
//!   sequence number, sample, run the checks, reboot, arm a timer,
//!   disconnect. It decides everything and touches nothing.
//! - [`backoff`]: reconnect delays, exponential with full jitter (pure).
//! - [`health`]: when to send a health report: timer or threshold crossing (pure).
//! - [`reporter`]: what changed and must be published: state, check events (pure).
//! - [`hardware`]: the [`Hardware`] trait, and the real one (sysinfo, battery
//!   from `/sys/class/power_supply`, configured check commands).
//! - [`logs`]: the upload-logs command: which tail of the log files to
//!   send (pure), reading them and sending them with the command's token.
//! - [`process`]: logging and the shutdown signal for the binaries.
//! - [`runtime`]: the event loop around the core: it owns the MQTT
//!   connection (last will, reconnect backoff), the hardware, the timers and
//!   the [`SeqStore`]; it turns what happens into inputs, reading the clock
//!   once per input, and carries out the actions. `fleet-sim` runs it with
//!   simulated hardware.
//! - [`update`]: updates of the device's software: the pure update state
//!   machine ([`update::machine`]), its persisted step, the installers
//!   (directory A/B, RAUC, a command hook), the driver beside the event
//!   loop, the TUF client and trusted clock; [`update::agent_binary`]
//!   swaps the agent's own binary and gives the new one a trial.
//! - [`tuf_cli`]: `fleet-agent tuf`, the TUF conformance client protocol.

pub mod backoff;
pub mod config;
pub mod core;
pub mod download;
pub mod durable;
pub mod enrol;
pub mod hardware;
pub mod health;
pub mod link;
pub mod logs;
pub mod outbox;
pub mod process;
pub mod renew;
pub mod reporter;
pub mod runtime;
pub mod tls;
pub mod tuf_cli;
pub mod update;

pub use config::AgentConfig;
pub use hardware::{Hardware, SystemHardware};
pub use runtime::{run, RuntimeConfig, SeqStore};

/// The agent's own version, reported in presence and state (and the
/// version a new agent's trial expects): the crate's, unless
/// `test_hooks.agent_version` set another ([`set_test_agent_version`]).
pub fn agent_version() -> fleet_protocol::Version {
    TEST_AGENT_VERSION.get().cloned().unwrap_or_else(|| {
        fleet_protocol::Version::parse(env!("CARGO_PKG_VERSION")).expect("crate version is semver")
    })
}

static TEST_AGENT_VERSION: std::sync::OnceLock<fleet_protocol::Version> =
    std::sync::OnceLock::new();

/// Test hook (`test_hooks.agent_version`): this process reports `version`,
/// so that the current build stands in for a rebuilt agent in the
/// self-update tests. Set once, by `fleet-agent run`, before the agent
/// starts; a second call is ignored.
pub fn set_test_agent_version(version: fleet_protocol::Version) {
    let _ = TEST_AGENT_VERSION.set(version);
}

/// Unix time in milliseconds (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
