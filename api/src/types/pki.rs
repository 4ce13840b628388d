//! `GET /api/v1/pki`: when the fleet's certificates expire.

use fleet_protocol::DeviceId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One service certificate (or the CA) and its validity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CertExpiry {
    /// `ca`, `broker`, `api` or `controller`.
    pub kind: String,
    pub serial: String,
    pub not_before_ms: u64,
    pub not_after_ms: u64,
}

/// A device's current (newest, unrevoked) certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceCertExpiry {
    #[schema(value_type = String)]
    pub device: DeviceId,
    pub serial: String,
    pub not_after_ms: u64,
}

/// The CA and service certificates, and the devices whose certificates
/// expire soonest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PkiStatus {
    pub certificates: Vec<CertExpiry>,
    /// Soonest first (at most 20).
    pub devices_expiring_first: Vec<DeviceCertExpiry>,
}
