//! Where a device is in its life, and which moves an operator may make
//! (pure). The one parser of a lifecycle name is [`Lifecycle::from_str`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a device is in its life: registered (serial known) → enrolled
/// (certificate issued) → shipped → deployed → retired (certificate
/// revoked). A deployed device can be shipped back; nothing leaves retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lifecycle {
    Registered,
    Enrolled,
    Shipped,
    Deployed,
    Retired,
}

/// A name that is not a lifecycle state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not one of registered, enrolled, shipped, deployed, retired")]
pub struct UnknownLifecycle {
    pub given: String,
}

/// A move the lifecycle does not allow, with why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot move a {from} device to {to}: {why}")]
pub struct MoveRefused {
    pub from: Lifecycle,
    pub to: Lifecycle,
    pub why: String,
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

    /// Holds a valid certificate and counts as enrolled for readiness.
    pub fn is_enrolled(self) -> bool {
        matches!(
            self,
            Lifecycle::Enrolled | Lifecycle::Shipped | Lifecycle::Deployed
        )
    }

    /// Whether an operator may move a device from `self` to `to`.
    /// (Registered → enrolled happens only through enrolment.)
    fn allows(self, to: Lifecycle) -> bool {
        use Lifecycle::*;
        matches!(
            (self, to),
            (Enrolled, Shipped) | (Shipped, Deployed) | (Deployed, Shipped)
        ) || (to == Retired && self != Retired)
    }

    pub fn check_move(self, to: Lifecycle) -> Result<(), MoveRefused> {
        use Lifecycle::*;
        if self.allows(to) {
            return Ok(());
        }
        let why = match (self, to) {
            (Retired, _) => "nothing leaves retired".to_owned(),
            (_, Registered) => "a device cannot be un-enrolled; retire it".to_owned(),
            (_, Enrolled) => {
                "a device becomes enrolled only through enrolment (fleet-agent enrol)".to_owned()
            }
            (Registered, _) => "the device is not enrolled yet".to_owned(),
            _ => format!("allowed from {}: {}", self.as_str(), self.next().join(", ")),
        };
        Err(MoveRefused {
            from: self,
            to,
            why,
        })
    }

    fn next(self) -> Vec<&'static str> {
        Lifecycle::ALL
            .into_iter()
            .filter(|t| self.allows(*t))
            .map(Lifecycle::as_str)
            .collect()
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
