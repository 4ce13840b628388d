//! Why a plan or an operator's action is refused.

use fleet_protocol::{DeviceId, ProvinceCode};

use super::engine::Phase;
use crate::domain::desired::rfc3339;

/// Why waves, candidates or a policy cannot make a rollout.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("province {province} is in wave group {first} and in group {second}")]
    ProvinceInTwoGroups {
        province: ProvinceCode,
        first: usize,
        second: usize,
    },
    #[error("wave group {index} names no province")]
    EmptyGroup { index: usize },
    #[error("a canary of 0 devices: leave the canary out")]
    EmptyCanary,
    #[error("canary percent {percent} is not in (0, 100]")]
    CanaryPercent { percent: f64 },
    #[error("device {device} is selected twice")]
    DuplicateDevice { device: DeviceId },
    #[error("policy: {field} = {value} ({why})")]
    Policy {
        field: &'static str,
        value: String,
        why: &'static str,
    },
}

/// Why allowed hours do not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoursError {
    #[error("allowed hours {given:?}: {why} (expected HH:MM-HH:MM, e.g. 02:00-06:00)")]
    Syntax { given: String, why: &'static str },
    #[error("UTC offset {offset_min} min is outside ±14 h")]
    Offset { offset_min: i32 },
}

/// Why the engine refuses an input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("cannot {action} a rollout that is {}", phase.as_str())]
    NotAllowed { action: &'static str, phase: Phase },
    #[error("inside a freeze window until {}: {reason}", rfc3339(*until_ms))]
    Frozen { reason: String, until_ms: u64 },
}
