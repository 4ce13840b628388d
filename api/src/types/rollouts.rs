//! Rollouts (`/api/v1/rollouts…`): one signed target put on a selection of
//! devices in waves (a canary, then groups of provinces, then the rest),
//! with brakes (a failure threshold that pauses), a success threshold that
//! advances a wave, a per-province download limit, allowed hours and a
//! per-device timeout.

use fleet_protocol::{DeviceId, ProvinceCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Which devices a rollout is for. The lists are a union (a device named by
/// any of them is selected); no list at all means the whole fleet of the
/// model. Only in-service devices (enrolled, shipped, deployed) of the
/// rollout's model take the update; a listed device of another model or
/// not in service is a member skipped with why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RolloutSelector {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provinces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counties: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stations: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Devices registered later that match join the rollout.
    #[serde(default)]
    pub include_new: bool,
}

/// The first wave: a number of devices, or a share of the selected ones
/// that can take the update (rounded up, at least one). One of the two.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CanaryRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
}

/// A rollout's policy as asked; every field has a default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PolicyRequest {
    /// Pause when the share of failed and timed-out devices of the current
    /// wave is above it (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold_pct: Option<f64>,
    /// A wave is done when the share of succeeded devices is at or above it
    /// (default 95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold_pct: Option<f64>,
    /// At most this many devices of a province download at once (default
    /// 40; 0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_downloads_per_province: Option<u32>,
    /// Local hours when devices may be released, `HH:MM-HH:MM` (wraps past
    /// midnight when the end is before the start). None: any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_hours: Option<String>,
    /// The offset of the allowed hours' local time from UTC, in minutes
    /// (default 210, Tehran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utc_offset_min: Option<i32>,
    /// A released device that has not reported a result by then counts as
    /// timed out (default 7200 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_timeout_s: Option<u64>,
}

/// The body of `POST /api/v1/rollouts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RolloutRequest {
    /// Default: `MODEL VERSION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `firmware` (default) or `agent`.
    #[serde(default = "firmware")]
    pub artifact: String,
    pub model: String,
    pub version: String,
    /// For the agent: the platform (default: the controller's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default)]
    pub selector: RolloutSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryRequest>,
    /// Groups of provinces, one wave each, after the canary; every selected
    /// device not in an earlier wave is in a last wave, `rest`.
    #[serde(default)]
    pub waves: Vec<Vec<String>>,
    #[serde(default)]
    pub policy: PolicyRequest,
    /// Create it without starting it.
    #[serde(default)]
    pub draft: bool,
}

fn firmware() -> String {
    "firmware".to_owned()
}

/// A rollout's policy as it runs (defaults filled in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PolicyView {
    pub failure_threshold_pct: f64,
    pub success_threshold_pct: f64,
    /// 0: no limit.
    pub max_downloads_per_province: u32,
    /// `HH:MM-HH:MM` local time; absent: any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_hours: Option<String>,
    pub utc_offset_min: i32,
    pub device_timeout_s: u64,
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutPhase {
    Draft,
    Running,
    Paused,
    Completed,
    Aborted,
}

impl RolloutPhase {
    pub const ALL: [RolloutPhase; 5] = [
        RolloutPhase::Draft,
        RolloutPhase::Running,
        RolloutPhase::Paused,
        RolloutPhase::Completed,
        RolloutPhase::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RolloutPhase::Draft => "draft",
            RolloutPhase::Running => "running",
            RolloutPhase::Paused => "paused",
            RolloutPhase::Completed => "completed",
            RolloutPhase::Aborted => "aborted",
        }
    }

    /// Nothing will change any more (a completed rollout still releases
    /// its stragglers, but its counters are final enough to stop watching).
    pub fn is_final(self) -> bool {
        matches!(self, RolloutPhase::Completed | RolloutPhase::Aborted)
    }
}

impl std::fmt::Display for RolloutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RolloutPhase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown rollout phase {s:?}"))
    }
}

/// Where one device of a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MemberState {
    Pending,
    /// Its desired state was sent; nothing heard yet (counted as downloading).
    Released,
    Downloading,
    Installing,
    Rebooting,
    Succeeded,
    Failed,
    TimedOut,
    Skipped,
}

impl MemberState {
    pub const ALL: [MemberState; 9] = [
        MemberState::Pending,
        MemberState::Released,
        MemberState::Downloading,
        MemberState::Installing,
        MemberState::Rebooting,
        MemberState::Succeeded,
        MemberState::Failed,
        MemberState::TimedOut,
        MemberState::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Pending => "pending",
            MemberState::Released => "released",
            MemberState::Downloading => "downloading",
            MemberState::Installing => "installing",
            MemberState::Rebooting => "rebooting",
            MemberState::Succeeded => "succeeded",
            MemberState::Failed => "failed",
            MemberState::TimedOut => "timed-out",
            MemberState::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for MemberState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for MemberState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown member state {s:?}; one of: {}",
                    Self::ALL.map(Self::as_str).join(", ")
                )
            })
    }
}

/// Per-device counters, as Mender shows them (`downloading` includes the
/// devices released that have not reported yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Counters {
    pub total: u32,
    pub pending: u32,
    pub downloading: u32,
    pub installing: u32,
    pub rebooting: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub timed_out: u32,
    pub skipped: u32,
}

/// One row of `GET /api/v1/rollouts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RolloutSummary {
    pub id: u64,
    pub name: String,
    /// `firmware` or `agent`.
    pub artifact: String,
    /// The hardware model (firmware) or platform (agent).
    pub model: String,
    pub version: String,
    pub phase: RolloutPhase,
    /// The current wave, from 0.
    pub wave: u32,
    pub wave_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_reason: Option<String>,
    /// Why nothing is released now (a freeze window, outside the allowed
    /// hours); not a phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// Over the members the caller sees (a province technician: its
    /// provinces only).
    pub counters: Counters,
    pub created_ms: u64,
}

/// One wave of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WaveView {
    pub index: u32,
    /// `canary`, the provinces of the group (`IR-23+IR-30`) or `rest`.
    pub name: String,
    pub state: WaveState,
    pub counters: Counters,
    pub provinces: Vec<ProvinceCounters>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WaveState {
    Pending,
    Running,
    Done,
}

/// The counters of one province (in a wave or the whole rollout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProvinceCounters {
    #[schema(value_type = String)]
    pub province: ProvinceCode,
    pub counters: Counters,
}

/// One line of a rollout's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RolloutLogEntry {
    pub at_ms: u64,
    /// `created`, `started`, `paused`, `resumed`, `wave-started`,
    /// `wave-done`, `completed`, `aborted`, `retry-failed`, `held`, …
    pub kind: String,
    pub detail: String,
}

/// `GET /api/v1/rollouts/{id}` and the answer of every action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RolloutView {
    #[serde(flatten)]
    pub summary: RolloutSummary,
    /// The TUF target name devices are told to fetch.
    pub target: String,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    pub selector: RolloutSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryRequest>,
    pub policy: PolicyView,
    pub waves: Vec<WaveView>,
    /// The whole rollout, per province.
    pub provinces: Vec<ProvinceCounters>,
    /// The last 50 entries, oldest first.
    pub log: Vec<RolloutLogEntry>,
}

/// One device of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    #[schema(value_type = String)]
    pub device: DeviceId,
    #[schema(value_type = String)]
    pub province: ProvinceCode,
    pub wave: u32,
    pub state: MemberState,
    /// Raised by retry-failed; the device tries a target again when it changes.
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_ms: Option<u64>,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The query of `GET /api/v1/rollouts/{id}/members`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MembersQuery {
    /// Only members in this state (`failed`, `timed-out`, `pending`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// The body of `POST /api/v1/rollouts/{id}/pause` (may be empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PauseRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What an operator may do to a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RolloutAction {
    Start,
    Pause,
    Resume,
    Abort,
    RetryFailed,
}

impl RolloutAction {
    pub const ALL: [RolloutAction; 5] = [
        RolloutAction::Start,
        RolloutAction::Pause,
        RolloutAction::Resume,
        RolloutAction::Abort,
        RolloutAction::RetryFailed,
    ];

    /// The last segment of its path, and its name in the audit log
    /// (`rollout.start`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutAction::Start => "start",
            RolloutAction::Pause => "pause",
            RolloutAction::Resume => "resume",
            RolloutAction::Abort => "abort",
            RolloutAction::RetryFailed => "retry-failed",
        }
    }
}

impl std::fmt::Display for RolloutAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RolloutAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown rollout action {s:?}; one of: {}",
                    Self::ALL.map(Self::as_str).join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_request_is_a_firmware_rollout_started_at_once_with_default_policy() {
        let r: RolloutRequest =
            serde_json::from_str(r#"{"model":"ballot-box-v2","version":"2.5.0"}"#).unwrap();
        assert_eq!(r.artifact, "firmware");
        assert!(!r.draft);
        assert_eq!(r.selector, RolloutSelector::default());
        assert_eq!(r.policy, PolicyRequest::default());
        assert!(r.waves.is_empty());
    }

    #[test]
    fn a_view_is_flat_json_with_the_summary_fields_at_the_top() {
        let summary = RolloutSummary {
            id: 7,
            name: "ballot-box-v2 2.5.0".into(),
            artifact: "firmware".into(),
            model: "ballot-box-v2".into(),
            version: "2.5.0".into(),
            phase: RolloutPhase::Running,
            wave: 1,
            wave_count: 3,
            paused_reason: None,
            held: None,
            counters: Counters::default(),
            created_ms: 1,
        };
        let view = RolloutView {
            summary,
            target: "firmware/ballot-box-v2/2.5.0.tar".into(),
            created_by: "tok_1".into(),
            started_ms: Some(2),
            finished_ms: None,
            selector: RolloutSelector::default(),
            canary: None,
            policy: PolicyView {
                failure_threshold_pct: 2.0,
                success_threshold_pct: 95.0,
                max_downloads_per_province: 40,
                allowed_hours: None,
                utc_offset_min: 210,
                device_timeout_s: 7200,
            },
            waves: vec![],
            provinces: vec![],
            log: vec![],
        };
        let v = serde_json::to_value(&view).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["phase"], "running");
        assert_eq!(v["target"], "firmware/ballot-box-v2/2.5.0.tar");
        let back: RolloutView = serde_json::from_value(v).unwrap();
        assert_eq!(back, view);
    }

    #[test]
    fn states_phases_and_actions_round_trip_through_their_names() {
        for s in MemberState::ALL {
            assert_eq!(s.as_str().parse::<MemberState>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for p in RolloutPhase::ALL {
            assert_eq!(p.as_str().parse::<RolloutPhase>().unwrap(), p);
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        for a in RolloutAction::ALL {
            assert_eq!(a.as_str().parse::<RolloutAction>().unwrap(), a);
        }
        assert!("sleeping".parse::<MemberState>().is_err());
    }
}
