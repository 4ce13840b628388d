//! Which lifecycle moves an operator may make (pure). The states themselves
//! (registered → enrolled → shipped → deployed → retired) and their one
//! parser are the API's vocabulary and live in fleet-api.

pub use fleet_api::types::{Lifecycle, UnknownLifecycle};

/// A move the lifecycle does not allow, with why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot move a {from} device to {to}: {why}")]
pub struct MoveRefused {
    pub from: Lifecycle,
    pub to: Lifecycle,
    pub why: String,
}

/// The rules of each state.
pub trait Rules: Copy {
    /// Holds a valid certificate and counts as enrolled for readiness.
    fn is_enrolled(self) -> bool;
    /// Whether an operator may move a device from `self` to `to`, and why not.
    fn check_move(self, to: Lifecycle) -> Result<(), MoveRefused>;
}

impl Rules for Lifecycle {
    fn is_enrolled(self) -> bool {
        matches!(
            self,
            Lifecycle::Enrolled | Lifecycle::Shipped | Lifecycle::Deployed
        )
    }

    fn check_move(self, to: Lifecycle) -> Result<(), MoveRefused> {
        use Lifecycle::*;
        if allows(self, to) {
            return Ok(());
        }
        let why = match (self, to) {
            (Retired, _) => "nothing leaves retired".to_owned(),
            (_, Registered) => "a device cannot be un-enrolled; retire it".to_owned(),
            (_, Enrolled) => {
                "a device becomes enrolled only through enrolment (fleet-agent enrol)".to_owned()
            }
            (Registered, _) => "the device is not enrolled yet".to_owned(),
            _ => {
                let next: Vec<&str> = Lifecycle::ALL
                    .into_iter()
                    .filter(|t| allows(self, *t))
                    .map(Lifecycle::as_str)
                    .collect();
                format!("allowed from {self}: {}", next.join(", "))
            }
        };
        Err(MoveRefused {
            from: self,
            to,
            why,
        })
    }
}

/// The moves an operator may make; registered → enrolled happens only
/// through enrolment.
fn allows(from: Lifecycle, to: Lifecycle) -> bool {
    use Lifecycle::*;
    matches!(
        (from, to),
        (Enrolled, Shipped) | (Shipped, Deployed) | (Deployed, Shipped)
    ) || (to == Retired && from != Retired)
}
