//! `GET /api/v1/broker`: where devices reach the MQTT broker;
//! `GET /api/v1/brokers`: the central broker and the provincial tier.

use fleet_protocol::ProvinceCode;
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

/// The central broker and the provincial brokers bridged to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BrokerTier {
    /// Where devices of provinces outside the tier (and the controller) connect.
    pub central: BrokerInfo,
    /// Empty when every device reaches the central broker.
    pub provincial: Vec<ProvincialBrokerInfo>,
}

/// One provincial broker: where its devices reach it and which provinces
/// it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProvincialBrokerInfo {
    /// `[a-z0-9-]{1,32}`, e.g. `p01`.
    pub name: String,
    #[schema(value_type = Vec<String>)]
    pub provinces: Vec<ProvinceCode>,
    pub host: String,
    pub port: u16,
    /// Mutual TLS (false only with --insecure-dev).
    pub tls: bool,
    /// Started and supervised by the controller (else run by Ansible).
    pub managed: bool,
    /// Its bridge's identity on the central broker, `bridge.{name}`.
    pub bridge: String,
}
