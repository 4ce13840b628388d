//! Devices: the paged list, one device in detail, registration, and moves
//! through a device's life (`/api/v1/devices…`).

use std::fmt;
use std::str::FromStr;

use fleet_protocol::{
    CountyCode, DeviceId, EventKind, Health, Model, PresenceStatus, ProvinceCode, State, StationId,
    Version,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Readiness;

/// Where a device is in its life: registered (serial known) → enrolled
/// (certificate issued) → shipped → deployed → retired (certificate
/// revoked). A deployed device can be shipped back; nothing leaves retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Lifecycle {
    Registered,
    Enrolled,
    Shipped,
    Deployed,
    Retired,
}

impl Lifecycle {
    pub const ALL: [Lifecycle; 5] = [
        Lifecycle::Registered,
        Lifecycle::Enrolled,
        Lifecycle::Shipped,
        Lifecycle::Deployed,
        Lifecycle::Retired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Registered => "registered",
            Lifecycle::Enrolled => "enrolled",
            Lifecycle::Shipped => "shipped",
            Lifecycle::Deployed => "deployed",
            Lifecycle::Retired => "retired",
        }
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a lifecycle state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not one of registered, enrolled, shipped, deployed, retired")]
pub struct UnknownLifecycle {
    pub given: String,
}

/// The one parser of a lifecycle name (the controller prefixes the field: `to: …`).
impl FromStr for Lifecycle {
    type Err = UnknownLifecycle;
    fn from_str(s: &str) -> Result<Self, UnknownLifecycle> {
        Lifecycle::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| UnknownLifecycle {
                given: s.to_owned(),
            })
    }
}

/// The query string of `GET /api/v1/devices`. Every filter is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub province: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub county: Option<String>,
    /// A polling station's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `ready` or a reason: not-enrolled, never-seen, link-down, offline,
    /// update-failed, updating, outdated, unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<String>,
    /// From 1 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u64>,
    /// 1 to 1000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_page: Option<u64>,
}

/// One page of the device list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DevicePage {
    /// Devices matching the filters (on every page).
    pub total: u64,
    pub page: u64,
    pub per_page: u64,
    pub items: Vec<DeviceSummary>,
}

/// A device in lists. Unknown values are `null`, not left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceSummary {
    #[schema(value_type = String)]
    pub id: DeviceId,
    #[schema(value_type = String)]
    pub model: Model,
    #[schema(value_type = String)]
    pub province: ProvinceCode,
    #[schema(value_type = Option<String>)]
    pub county: Option<CountyCode>,
    #[schema(value_type = Option<String>)]
    pub station: Option<StationId>,
    pub lifecycle: Lifecycle,
    pub readiness: Readiness,
    /// `online` or `offline`, as the device last said.
    #[schema(value_type = Option<String>)]
    pub presence: Option<PresenceStatus>,
    /// The firmware version the device last reported.
    #[schema(value_type = Option<String>)]
    pub firmware: Option<Version>,
    pub last_seen_ms: Option<u64>,
}

/// One device: its summary, what it last reported, its recent events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceDetail {
    pub device: DeviceSummary,
    /// The last reported state (fleet-protocol `State`).
    #[schema(value_type = Option<Object>)]
    pub state: Option<State>,
    /// The last health report (fleet-protocol `Health`).
    #[schema(value_type = Option<Object>)]
    pub health: Option<Health>,
    pub health_at_ms: Option<u64>,
    /// The latest events, newest first.
    pub events: Vec<DeviceEvent>,
    /// What the controller wants the device to run (it owns this; the
    /// broker's retained message is a copy sent again when the device
    /// comes online).
    #[serde(default)]
    pub desired: DesiredState,
    /// Event sequence numbers the device skipped (newest first, at most 20).
    #[serde(default)]
    pub gaps: Vec<EventGap>,
    /// How many sequence numbers all its gaps miss.
    #[serde(default)]
    pub missing_events: u64,
    /// Health samples the device's outbox dropped while offline (from its
    /// `outbox-dropped` events); absent when it never dropped any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_drops: Option<OutboxDrops>,
    /// The device's last update (absent when it never reported one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateView>,
    /// Its newest commands (at most 20), newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<super::CommandView>,
}

/// A device's desired state, as the controller stores it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DesiredState {
    pub config_rev: u32,
    /// The firmware version it should run, when a target is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub firmware: Option<fleet_protocol::Version>,
    /// The signed manifest of that firmware.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// The agent version it should run, when a target is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub agent: Option<fleet_protocol::Version>,
    /// The TUF target name of that agent binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_manifest: Option<String>,
    /// The fleet's freeze windows (Unix ms, from inclusive, to exclusive),
    /// which the device is told with its desired state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<FreezeSpan>,
}

/// A freeze window in a desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FreezeSpan {
    pub from_ms: u64,
    pub to_ms: u64,
}

/// A device's last update, from its update-progress and update-result
/// events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpdateView {
    /// `firmware` or `agent`.
    pub artifact: String,
    #[schema(value_type = String)]
    pub version: Version,
    /// The last phase reported: downloading, verifying, installing,
    /// rebooting, checking, frozen.
    pub phase: Option<String>,
    /// Downloaded so far, of `total` (while downloading).
    pub bytes: u64,
    pub total: u64,
    /// `null` while it runs; committed, rolled-back, failed, or timed-out
    /// (the device said rebooting or checking, then nothing until the
    /// controller's deadline). Only committed is success.
    pub outcome: Option<String>,
    /// The device's reason, for an update that did not commit.
    pub message: String,
    /// The controller's clock: the update's first event.
    pub started_ms: u64,
    /// The controller's clock: its last event.
    pub last_event_ms: u64,
}

/// Sequence numbers `from_seq ..= to_seq` of one agent run (`boot`) that
/// did not arrive though a later one did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventGap {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<u64>,
    pub from_seq: u64,
    pub to_seq: u64,
    /// The controller's clock when the gap was seen.
    pub detected_ms: u64,
}

/// What a device's outbox dropped while offline, summed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutboxDrops {
    pub health_samples: u64,
    /// Events the outbox may drop when full (boot, check recovered, error);
    /// update results, check failures and command results it never drops.
    #[serde(default)]
    pub other_events: u64,
    /// How many `outbox-dropped` events said so.
    pub reports: u64,
    /// The device's clock: the oldest and newest samples dropped.
    pub oldest_ms: u64,
    pub newest_ms: u64,
    /// The controller's clock when the last report arrived.
    pub last_report_ms: u64,
}

/// A stored device event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceEvent {
    /// The device's sequence number.
    pub seq: u64,
    /// The device's clock when it happened.
    pub at_ms: u64,
    /// The controller's clock when it arrived.
    pub received_ms: u64,
    /// The event's kind (`boot`, `check-failed`, …).
    pub kind: String,
    /// The event as fleet-protocol's `EventKind` serializes it. Kept as
    /// JSON so that an older client still shows events of kinds added later.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

impl DeviceEvent {
    /// The event, if it is of a kind this build knows.
    pub fn decoded(&self) -> Option<EventKind> {
        serde_json::from_value(self.event.clone()).ok()
    }
}

/// The body of `POST /api/v1/devices`: register devices, or update their
/// registration. All or nothing: one bad device refuses the batch (422).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegisterRequest {
    pub devices: Vec<DeviceRegistration>,
}

/// One device in a registration request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceRegistration {
    pub id: String,
    pub model: String,
    pub province: String,
    #[serde(default)]
    pub county: Option<String>,
    #[serde(default)]
    pub station: Option<String>,
    /// `registered` (default) or `enrolled` for a new device; an existing
    /// device keeps its lifecycle.
    #[serde(default)]
    pub lifecycle: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegisterResponse {
    pub registered: u64,
    /// Registered devices after the change.
    pub fleet_size: u64,
}

/// The body of `POST /api/v1/devices/{id}/lifecycle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LifecycleMove {
    /// `shipped`, `deployed` or `retired`.
    pub to: String,
}

impl LifecycleMove {
    pub fn new(to: Lifecycle) -> Self {
        Self {
            to: to.as_str().to_owned(),
        }
    }
}

/// A device's lifecycle after a move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LifecycleMoved {
    #[schema(value_type = String)]
    pub device: DeviceId,
    pub lifecycle: Lifecycle,
}
