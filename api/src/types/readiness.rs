//! `GET /api/v1/readiness`: how many devices are ready per province (or per
//! county), and why the others are not.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use fleet_protocol::{CountyCode, ProvinceCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Why a device is not ready; a device has exactly one, the first that
/// applies in the order of [`Reason::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Not enrolled yet, or not assigned to a county.
    NotEnrolled,
    /// Registered but has never reported its state.
    NeverSeen,
    /// Would be offline, but its province's provincial broker has lost its
    /// bridge to the central broker (or got it back less than a freshness
    /// window ago and the device has not spoken since): its silence may be
    /// the link's, not its own. A device already silent before the link
    /// went down stays `offline`.
    LinkDown,
    /// Said goodbye (or its last will did), or silent for longer than the
    /// freshness window.
    Offline,
    UpdateFailed,
    Updating,
    /// Firmware differs from its model's baseline.
    Outdated,
    /// A configured check fails.
    Unhealthy,
}

impl Reason {
    /// In the order they are checked.
    pub const ALL: [Reason; 8] = [
        Reason::NotEnrolled,
        Reason::NeverSeen,
        Reason::LinkDown,
        Reason::Offline,
        Reason::UpdateFailed,
        Reason::Updating,
        Reason::Outdated,
        Reason::Unhealthy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotEnrolled => "not-enrolled",
            Reason::NeverSeen => "never-seen",
            Reason::LinkDown => "link-down",
            Reason::Offline => "offline",
            Reason::UpdateFailed => "update-failed",
            Reason::Updating => "updating",
            Reason::Outdated => "outdated",
            Reason::Unhealthy => "unhealthy",
        }
    }
}

/// By name: a map keyed by reason serializes its keys in the order the
/// controller's name-keyed maps always had.
impl Ord for Reason {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Reason {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Reason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown reason {s:?}; one of: {}",
                    Reason::ALL.map(Reason::as_str).join(", ")
                )
            })
    }
}

/// A device's readiness: `ready`, or the one reason it is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Readiness {
    Ready,
    NotEnrolled,
    NeverSeen,
    LinkDown,
    Offline,
    UpdateFailed,
    Updating,
    Outdated,
    Unhealthy,
}

impl Readiness {
    pub const ALL: [Readiness; 9] = [
        Readiness::Ready,
        Readiness::NotEnrolled,
        Readiness::NeverSeen,
        Readiness::LinkDown,
        Readiness::Offline,
        Readiness::UpdateFailed,
        Readiness::Updating,
        Readiness::Outdated,
        Readiness::Unhealthy,
    ];

    /// `None` is ready.
    pub fn reason(self) -> Option<Reason> {
        match self {
            Readiness::Ready => None,
            Readiness::NotEnrolled => Some(Reason::NotEnrolled),
            Readiness::NeverSeen => Some(Reason::NeverSeen),
            Readiness::LinkDown => Some(Reason::LinkDown),
            Readiness::Offline => Some(Reason::Offline),
            Readiness::UpdateFailed => Some(Reason::UpdateFailed),
            Readiness::Updating => Some(Reason::Updating),
            Readiness::Outdated => Some(Reason::Outdated),
            Readiness::Unhealthy => Some(Reason::Unhealthy),
        }
    }

    pub fn as_str(self) -> &'static str {
        self.reason().map_or("ready", Reason::as_str)
    }
}

impl From<Option<Reason>> for Readiness {
    fn from(r: Option<Reason>) -> Self {
        match r {
            None => Readiness::Ready,
            Some(Reason::NotEnrolled) => Readiness::NotEnrolled,
            Some(Reason::NeverSeen) => Readiness::NeverSeen,
            Some(Reason::LinkDown) => Readiness::LinkDown,
            Some(Reason::Offline) => Readiness::Offline,
            Some(Reason::UpdateFailed) => Readiness::UpdateFailed,
            Some(Reason::Updating) => Readiness::Updating,
            Some(Reason::Outdated) => Readiness::Outdated,
            Some(Reason::Unhealthy) => Readiness::Unhealthy,
        }
    }
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `ready` or a reason name; anything else is refused with the reason's
/// error (the list the controller names today).
impl FromStr for Readiness {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "ready" {
            Ok(Readiness::Ready)
        } else {
            s.parse::<Reason>().map(|r| Readiness::from(Some(r)))
        }
    }
}

/// What the readiness report counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Grouping {
    #[default]
    Province,
    County,
}

impl Grouping {
    pub fn as_str(self) -> &'static str {
        match self {
            Grouping::Province => "province",
            Grouping::County => "county",
        }
    }
}

impl fmt::Display for Grouping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Grouping {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "province" => Ok(Grouping::Province),
            "county" => Ok(Grouping::County),
            other => Err(format!("{other:?} is not one of province, county")),
        }
    }
}

/// The query string of `GET /api/v1/readiness`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadinessQuery {
    /// `province` (default) or `county`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Only this province (e.g. `IR-23`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub province: Option<String>,
}

impl ReadinessQuery {
    pub fn new(by: Grouping, province: Option<String>) -> Self {
        Self {
            by: Some(by.as_str().to_owned()),
            province,
        }
    }
}

/// One row of the readiness report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReadinessRow {
    #[schema(value_type = String)]
    pub province: ProvinceCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub province_name: Option<String>,
    /// Only in rows by county; `null` for the province's devices not
    /// assigned to a county.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::present"
    )]
    #[schema(value_type = Option<String>, required = false)]
    pub county: Option<Option<CountyCode>>,
    pub total: u32,
    pub ready: u32,
    /// Reasons with a non-zero count.
    #[schema(value_type = BTreeMap<String, u32>)]
    pub reasons: BTreeMap<Reason, u32>,
    /// The bridge link of the provincial broker serving this province (a
    /// county row: its province's); absent for a province served by the
    /// central broker, and until the bridge first reported its link after
    /// the controller started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkStatus>,
}

/// A provincial broker's bridge link to the central broker, as the
/// controller last heard it (the bridge's `fleet/v1/bridge/bridge.NAME/state`
/// report, its last will when it drops).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LinkStatus {
    /// The provincial broker's name (e.g. `p01`).
    pub broker: String,
    pub up: bool,
    /// Since when it is up or down (the controller's receipt of the report
    /// that changed it; the first report after a controller start counts
    /// from then), Unix milliseconds.
    pub since_ms: u64,
}

impl ReadinessRow {
    /// How many devices have this reason.
    pub fn count(&self, r: Reason) -> u32 {
        self.reasons.get(&r).copied().unwrap_or(0)
    }
}
