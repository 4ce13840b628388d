//! Operators' one-off commands to a device.

use fleet_protocol::DeviceId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/v1/devices/{id}/commands`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CommandRequest {
    /// `reboot`, `run-checks` or `renew-certificate`.
    pub action: String,
    /// How long the command may wait for an offline device, in seconds:
    /// 1 to 86400 (a day); 600 when left out. A device that gets it later
    /// answers that it expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<u64>,
}

/// A command sent: its result comes back as the device's `command-result`
/// event with the same id (see the device's events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CommandSent {
    /// `cmd-` and 16 hex digits.
    pub id: String,
    #[schema(value_type = String)]
    pub device: DeviceId,
    pub action: String,
    /// Unix ms after which the device refuses it.
    pub expires_at_ms: u64,
}
