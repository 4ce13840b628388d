//! `GET /healthz`: whether the controller runs and reaches its broker.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ControllerHealth {
    pub status: HealthStatus,
    pub broker: BrokerState,
    /// Registered devices.
    pub devices: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HealthStatus {
    Ok,
    /// Running, but the broker cannot be reached.
    Degraded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BrokerState {
    Up,
    Down,
}
