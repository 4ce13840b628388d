//! Operators' one-off commands to a device.

use fleet_protocol::{CountyCode, DeviceId, Model, ProvinceCode};

use super::Readiness;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/v1/devices/{id}/commands`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CommandRequest {
    /// `reboot`, `run-checks`, `upload-logs` or `renew-certificate`
    /// (`renew-cert` is the same).
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

/// `POST /api/v1/commands`: one command for every device a selector names
/// within the caller's scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CommandsRequest {
    /// `reboot`, `run-checks`, `upload-logs` or `renew-certificate`
    /// (`renew-cert` is the same).
    pub action: String,
    pub selector: CommandSelector,
    /// As in [`CommandRequest`]: 1 to 86400 seconds, 600 when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<u64>,
}

/// Which devices: within a list any entry matches; across fields all must
/// (a county narrows its province; model and readiness filter). At least
/// one of provinces, counties or devices must be named. Only devices in
/// service (enrolled, shipped, deployed) get a command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CommandSelector {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub provinces: Vec<ProvinceCode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub counties: Vec<CountyCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub model: Option<Model>,
    /// `ready` or a reason (`offline`, `outdated`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Readiness>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub devices: Vec<DeviceId>,
}

/// The commands a selector made, and the selected devices left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CommandsSent {
    pub sent: Vec<CommandSent>,
    #[serde(default)]
    pub skipped: Vec<CommandSkipped>,
}

/// A selected device that got no command, and why (not in service, or the
/// command could not be published).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CommandSkipped {
    #[schema(value_type = String)]
    pub device: DeviceId,
    pub reason: String,
}

/// A command as the controller holds it (on the device's page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CommandView {
    pub id: String,
    pub action: String,
    pub issued_ms: u64,
    pub expires_ms: u64,
    /// The name of the token that sent it.
    pub issued_by: String,
    /// `sent` (no answer yet), `ok`, `failed` or `expired`.
    pub state: String,
    /// When the answer arrived (or the command was marked expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_ms: Option<u64>,
    /// The device's answer.
    #[serde(default)]
    pub message: String,
    /// upload-logs: the bytes of logs taken
    /// (`GET /api/v1/devices/{id}/logs/{command}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_bytes: Option<u64>,
}

/// The answer to a device's log upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogsUploaded {
    #[schema(value_type = String)]
    pub device: DeviceId,
    pub command: String,
    pub bytes: u64,
}
