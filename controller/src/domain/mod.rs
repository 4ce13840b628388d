//! The controller's pure core: rules and state with no I/O. Nothing here
//! names tokio, sqlx, axum, rumqttc or the file system, and time comes in as
//! a `now` parameter (`tests/domain_is_pure.rs` fails the build otherwise).
//!
//! - [`readiness`]: one reason per device, and counts.
//! - [`fleet`]: the in-memory fleet with incremental counts per province and county.
//! - [`links`]: the provincial brokers' bridge links, up or down and since when.
//! - [`limits`]: per-device rate limits on messages and bytes, and on log lines.
//! - [`lifecycle`]: registered → enrolled → shipped → deployed → retired.
//! - [`registration`]: what a registration may say about a device.
//! - [`registry`]: counties and polling stations from the operator's CSV.
//! - [`enrolment`]: shipment CSV and enrolment-token checks.
//! - [`renewal`]: whether a device's certificate renewal request is signed,
//!   and when a certificate is due.
//! - [`auth`]: roles, permissions, province scope, operator tokens.
//! - [`audit`]: the audit log's hash chain and its verification.
//! - [`sequence`]: event sequence numbers per (device, boot): new,
//!   re-delivered, late, and the gaps they leave.
//! - [`desired`]: what the controller wants each device to run, and the
//!   freeze windows every desired state carries.
//! - [`updates`]: where each device's update stands, and when one that went
//!   to reboot is given up on (`timed-out`).
//! - [`commands`]: operators' one-off commands to a device.
//! - [`rollout`]: the rollout engine: waves across provinces, brakes,
//!   per-province download limits, timeouts.
//! - [`rollout_select`]: which devices a rollout is for, and which of them
//!   are skipped with why.
//! - [`throttle`]: per-address limits and a log gate, for failed
//!   authentications and refused enrolments.

/// A name that is not one of a closed list (a role, a readiness reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {given:?}; one of: {one_of}")]
pub struct UnknownName {
    pub kind: &'static str,
    pub given: String,
    pub one_of: String,
}

pub mod audit;
pub mod auth;
pub mod commands;
pub mod desired;
pub mod enrolment;
pub mod fleet;
pub mod lifecycle;
pub mod limits;
pub mod links;
pub mod readiness;
pub mod registration;
pub mod registry;
pub mod renewal;
pub mod rollout;
pub mod rollout_select;
pub mod sequence;
pub mod throttle;
pub mod updates;
