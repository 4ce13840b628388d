//! The firmware repository (`/api/v1/firmware…`), device updates
//! (`/api/v1/devices/{id}/update`) and freeze windows (`/api/v1/freeze`).
//! The repository's signed metadata itself is TUF JSON, served as is
//! under `/api/v1/tuf/…`.

use fleet_protocol::DeviceId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A point in time as an operator gives it: Unix milliseconds, or RFC 3339
/// text (`2026-06-18T00:00:00+03:30`). The controller parses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TimeSpec {
    UnixMs(u64),
    Text(String),
}

/// One window of `PUT /api/v1/freeze`: `from` inclusive, `to` exclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FreezeWindowRequest {
    /// Unix ms, or RFC 3339.
    #[schema(value_type = String)]
    pub from: TimeSpec,
    /// Unix ms, or RFC 3339.
    #[schema(value_type = String)]
    pub to: TimeSpec,
    /// Why (shown to operators; e.g. `election day`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The body of `POST /api/v1/freeze`: one window added to those held.
pub type FreezeAddRequest = FreezeWindowRequest;

/// The body of `PUT /api/v1/freeze`: every window (the list replaces the
/// one held; empty clears them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FreezeRequest {
    pub windows: Vec<FreezeWindowRequest>,
}

/// A freeze window as held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FreezeWindowView {
    pub from_ms: u64,
    pub to_ms: u64,
    /// `from_ms` and `to_ms` in RFC 3339 (UTC).
    pub from: String,
    pub to: String,
    /// Whether the controller's clock is inside it now.
    pub active: bool,
    #[serde(default)]
    pub reason: String,
}

/// The fleet's freeze windows (every desired state sent carries them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FreezeWindows {
    pub windows: Vec<FreezeWindowView>,
    /// Devices whose desired state will be sent again with them (after a
    /// change; the sending runs in the background).
    #[serde(default)]
    pub republished: u64,
}

/// The body of `POST /api/v1/devices/{id}/update`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceUpdateRequest {
    /// `firmware` (default) or `agent`.
    #[serde(default = "firmware")]
    pub artifact: String,
    pub version: String,
    /// For the agent: the platform (default: the controller's own, e.g.
    /// `x86-64-linux`). Firmware always follows the device's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// The attempt at this target (default 0). A device that gave up on
    /// the target (refused or rolled back) tries it again only when the
    /// attempt differs from the one it gave up at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

fn firmware() -> String {
    "firmware".to_owned()
}

/// A device's new desired artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceUpdateSet {
    #[schema(value_type = String)]
    pub device: DeviceId,
    pub artifact: String,
    pub version: String,
    /// The TUF target name the device is told to fetch and verify.
    pub target: String,
}

/// `PUT /api/v1/firmware/images/{sha256}`: the image is stored (and
/// `GET`: it is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageUploaded {
    pub sha256: String,
    pub len: u64,
    /// It was stored before this request: nothing was sent again.
    #[serde(default)]
    pub already_stored: bool,
}

/// `POST /api/v1/firmware/targets`: the new targets metadata is published,
/// with a new snapshot and timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TargetsPublished {
    pub targets_version: u64,
    pub snapshot_version: u64,
    pub timestamp_version: u64,
    /// Target names that were not in the previous targets metadata.
    pub added: Vec<String>,
}

/// `POST /api/v1/firmware/root`: the new root is published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RootPublished {
    pub root_version: u64,
    pub timestamp_version: u64,
}

/// One role's metadata as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RoleStatus {
    /// `root`, `targets`, `snapshot` or `timestamp`.
    pub role: String,
    pub version: u64,
    /// RFC 3339.
    pub expires: String,
}

/// One signed target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FirmwareTarget {
    /// `firmware/MODEL/VERSION.tar` or `agent/PLATFORM/VERSION`.
    pub name: String,
    /// `firmware` or `agent`.
    pub artifact: String,
    /// The hardware model (firmware) or platform (agent).
    pub model: String,
    pub version: String,
    pub sha256: String,
    pub len: u64,
}

/// `GET /api/v1/firmware`: the repository's roles and its targets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FirmwareStatus {
    pub roles: Vec<RoleStatus>,
    pub targets: Vec<FirmwareTarget>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_is_unix_ms_or_text() {
        let r: FreezeRequest = serde_json::from_str(
            r#"{"windows":[{"from":1750000000000,"to":"2026-06-19T00:00:00Z"}]}"#,
        )
        .unwrap();
        assert_eq!(r.windows[0].from, TimeSpec::UnixMs(1_750_000_000_000));
        assert_eq!(
            r.windows[0].to,
            TimeSpec::Text("2026-06-19T00:00:00Z".into())
        );
    }

    #[test]
    fn an_update_request_is_for_firmware_unless_it_says_agent() {
        let r: DeviceUpdateRequest = serde_json::from_str(r#"{"version":"2.5.0"}"#).unwrap();
        assert_eq!(r.artifact, "firmware");
        assert_eq!(r.platform, None);
    }
}
