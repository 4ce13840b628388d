//! Why a rollout request is refused.

use fleet_api::types::InvalidItem;

use crate::domain::rollout::{EngineError, PlanError};

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("no rollout {0}")]
    Unknown(u64),
    /// The request's fields (one line each).
    #[error("the rollout request is not valid; nothing was created")]
    Invalid(Vec<String>),
    #[error("the plan cannot be made: {0}")]
    Plan(#[from] PlanError),
    /// Not allowed in the current phase, or inside a freeze window.
    #[error(transparent)]
    Refused(#[from] EngineError),
    #[error("{count} of the selected devices are in rollout {other} ({other_name}, {phase}) of the same artifact, e.g. {}", .devices.join(", "))]
    Overlap {
        other: u64,
        other_name: String,
        phase: &'static str,
        count: usize,
        /// Up to 5.
        devices: Vec<String>,
    },
    #[error("devices not registered: {}", .0.join(", "))]
    UnknownDevices(Vec<String>),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Access(#[from] crate::access::AccessError),
    #[error("the rollout loop is not running (the controller is stopping)")]
    Stopped,
}

impl RolloutError {
    /// The 422's items.
    pub fn items(&self) -> Vec<InvalidItem> {
        match self {
            RolloutError::Invalid(lines) => lines
                .iter()
                .enumerate()
                .map(|(i, m)| InvalidItem {
                    index: Some(i as u64),
                    line: None,
                    id: None,
                    message: m.clone(),
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}
