//! `GET /api/v1/broker`: where devices reach the MQTT broker.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where devices reach the broker, as told to `fleet-sim` and to enrolling
/// devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BrokerInfo {
    pub host: String,
    pub port: u16,
    /// Mutual TLS (false only with --insecure-dev).
    pub tls: bool,
}
