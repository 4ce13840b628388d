//! Updates of the device's software.
//!
//! - [`agent_binary`]: the agent's own binary: the swap, the trial of a new
//!   agent (it must reach the broker within a deadline) and the rollback.

pub mod agent_binary;
