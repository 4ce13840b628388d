//! The agent's core (pure): one state value, [`AgentCore`], that decides
//! everything the agent does. The runtime feeds it an [`Input`] with the
//! time it happened and carries out the returned [`Action`]s in order:
//! subscribe, publish, commit an event to the outbox, keep an offline health
//! sample, sample health, run the checks, reboot, arm a timer, make a certificate request, try a renewed
//! certificate, disconnect.
//!
//! Nothing here touches the network, the disk, the clock or the hardware,
//! so every decision is tested by plain synchronous tests (`tests.rs`).

mod config;
mod error;
mod handled;
mod incoming;
mod machine;
mod renewal;

pub use config::CoreConfig;
pub use error::IncomingError;
pub use incoming::incoming;
pub use machine::{Action, AgentCore, Input, Qos, Timer};
pub use renewal::{CertInfo, Renewal, RenewalPolicy};

#[cfg(test)]
mod tests;
