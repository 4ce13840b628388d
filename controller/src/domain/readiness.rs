//! The readiness model (pure). A device is ready when it is enrolled and
//! assigned, has reported, was seen within the freshness window, is not
//! updating, runs the baseline firmware of its model and passes every check.
//! Otherwise it has exactly one reason, the first that applies in the order
//! of [`Reason::ALL`].

use std::collections::BTreeMap;

use fleet_protocol::{PresenceStatus, UpdateStatus, Version};

// The reasons are the API's vocabulary too (`fleetctl devices --readiness
// offline`), so the one list lives in fleet-api.
pub use fleet_api::types::{Readiness, Reason};

fn index(r: Reason) -> usize {
    r as usize
}

/// Where the device's last update stands against its desired target
/// (from the controller's update track, not only what the device says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrackState {
    /// No track for the desired target, or it ended well, or the device
    /// holds it in a freeze window.
    #[default]
    None,
    /// A track for the desired target is running.
    Running,
    /// The last track for the desired target ended failed, rolled back or
    /// timed out, and the device does not run that version.
    Failed,
}

/// What classification looks at, borrowed from the device record.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub enrolled: bool,
    pub assigned: bool,
    pub reported: bool,
    pub last_seen_ms: Option<u64>,
    pub presence: Option<PresenceStatus>,
    pub update: Option<UpdateStatus>,
    pub firmware: Option<&'a Version>,
    pub baseline: Option<&'a Version>,
    pub checks_pass: bool,
    pub track: TrackState,
}

/// `None` means ready.
pub fn classify(i: &Inputs<'_>, now_ms: u64, freshness_ms: u64) -> Option<Reason> {
    if !i.enrolled || !i.assigned {
        return Some(Reason::NotEnrolled);
    }
    let Some(last_seen) = i.last_seen_ms.filter(|_| i.reported) else {
        return Some(Reason::NeverSeen);
    };
    if i.presence == Some(PresenceStatus::Offline)
        || now_ms.saturating_sub(last_seen) > freshness_ms
    {
        return Some(Reason::Offline);
    }
    if i.track == TrackState::Failed {
        return Some(Reason::UpdateFailed);
    }
    match i.update {
        Some(UpdateStatus::Failed) => return Some(Reason::UpdateFailed),
        Some(
            UpdateStatus::Downloading
            | UpdateStatus::Verifying
            | UpdateStatus::Installing
            | UpdateStatus::Rebooting
            | UpdateStatus::Checking,
        ) => return Some(Reason::Updating),
        Some(UpdateStatus::Idle) | None => {}
    }
    if i.track == TrackState::Running {
        return Some(Reason::Updating);
    }
    if let Some(baseline) = i.baseline {
        if i.firmware != Some(baseline) {
            return Some(Reason::Outdated);
        }
    }
    if !i.checks_pass {
        return Some(Reason::Unhealthy);
    }
    None
}

/// Devices of one group (a province or a county) by readiness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u32,
    pub ready: u32,
    reasons: [u32; 7],
}

impl Counts {
    pub fn add(&mut self, r: Option<Reason>) {
        self.total += 1;
        match r {
            None => self.ready += 1,
            Some(r) => self.reasons[index(r)] += 1,
        }
    }

    pub fn remove(&mut self, r: Option<Reason>) {
        self.total = self.total.saturating_sub(1);
        match r {
            None => self.ready = self.ready.saturating_sub(1),
            Some(r) => self.reasons[index(r)] = self.reasons[index(r)].saturating_sub(1),
        }
    }

    pub fn reason(&self, r: Reason) -> u32 {
        self.reasons[index(r)]
    }

    /// Reasons with a non-zero count, by name.
    pub fn reasons(&self) -> BTreeMap<&'static str, u32> {
        Reason::ALL
            .into_iter()
            .filter(|r| self.reason(*r) > 0)
            .map(|r| (r.as_str(), self.reason(r)))
            .collect()
    }

    pub fn merge(&mut self, other: &Counts) {
        self.total += other.total;
        self.ready += other.ready;
        for (a, b) in self.reasons.iter_mut().zip(other.reasons) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    const NOW: u64 = 1_000_000;
    const FRESH: u64 = 60_000;

    fn ready_inputs<'a>(fw: &'a Version, base: &'a Version) -> Inputs<'a> {
        Inputs {
            enrolled: true,
            assigned: true,
            reported: true,
            last_seen_ms: Some(NOW - 1_000),
            presence: Some(PresenceStatus::Online),
            update: Some(UpdateStatus::Idle),
            firmware: Some(fw),
            baseline: Some(base),
            checks_pass: true,
            track: TrackState::None,
        }
    }

    #[test]
    fn a_good_device_is_ready() {
        let (fw, base) = (v("2.4.0"), v("2.4.0"));
        assert_eq!(classify(&ready_inputs(&fw, &base), NOW, FRESH), None);
        // no baseline for the model: firmware is not judged
        let i = Inputs {
            baseline: None,
            ..ready_inputs(&fw, &base)
        };
        assert_eq!(classify(&i, NOW, FRESH), None);
    }

    #[test]
    fn each_reason_alone() {
        let (fw, base, old) = (v("2.4.0"), v("2.4.0"), v("2.3.1"));
        let ok = ready_inputs(&fw, &base);
        let cases: Vec<(Inputs, Reason)> = vec![
            (
                Inputs {
                    enrolled: false,
                    ..ok
                },
                Reason::NotEnrolled,
            ),
            (
                Inputs {
                    assigned: false,
                    ..ok
                },
                Reason::NotEnrolled,
            ),
            (
                Inputs {
                    reported: false,
                    ..ok
                },
                Reason::NeverSeen,
            ),
            (
                Inputs {
                    last_seen_ms: None,
                    ..ok
                },
                Reason::NeverSeen,
            ),
            (
                Inputs {
                    presence: Some(PresenceStatus::Offline),
                    ..ok
                },
                Reason::Offline,
            ),
            (
                Inputs {
                    last_seen_ms: Some(NOW - FRESH - 1),
                    ..ok
                },
                Reason::Offline,
            ),
            (
                Inputs {
                    update: Some(UpdateStatus::Failed),
                    ..ok
                },
                Reason::UpdateFailed,
            ),
            (
                Inputs {
                    update: Some(UpdateStatus::Downloading),
                    ..ok
                },
                Reason::Updating,
            ),
            (
                Inputs {
                    update: Some(UpdateStatus::Rebooting),
                    ..ok
                },
                Reason::Updating,
            ),
            (
                Inputs {
                    firmware: Some(&old),
                    ..ok
                },
                Reason::Outdated,
            ),
            (
                Inputs {
                    checks_pass: false,
                    ..ok
                },
                Reason::Unhealthy,
            ),
        ];
        for (i, want) in cases {
            assert_eq!(classify(&i, NOW, FRESH), Some(want), "{i:?}");
        }
        // exactly at the window's edge is still fresh
        let edge = Inputs {
            last_seen_ms: Some(NOW - FRESH),
            ..ok
        };
        assert_eq!(classify(&edge, NOW, FRESH), None);
    }

    #[test]
    fn first_match_wins() {
        let (fw, base, old) = (v("2.4.0"), v("2.4.0"), v("2.3.1"));
        let ok = ready_inputs(&fw, &base);
        let everything_wrong = Inputs {
            presence: Some(PresenceStatus::Offline),
            update: Some(UpdateStatus::Failed),
            firmware: Some(&old),
            checks_pass: false,
            ..ok
        };
        assert_eq!(
            classify(&everything_wrong, NOW, FRESH),
            Some(Reason::Offline)
        );
        let i = Inputs {
            presence: Some(PresenceStatus::Online),
            ..everything_wrong
        };
        assert_eq!(classify(&i, NOW, FRESH), Some(Reason::UpdateFailed));
        let i = Inputs { update: None, ..i };
        assert_eq!(classify(&i, NOW, FRESH), Some(Reason::Outdated));
        let i = Inputs {
            enrolled: false,
            ..i
        };
        assert_eq!(classify(&i, NOW, FRESH), Some(Reason::NotEnrolled));
    }

    #[test]
    fn counts_add_and_remove() {
        let mut c = Counts::default();
        c.add(None);
        c.add(Some(Reason::Offline));
        c.add(Some(Reason::Offline));
        assert_eq!((c.total, c.ready, c.reason(Reason::Offline)), (3, 1, 2));
        c.remove(Some(Reason::Offline));
        assert_eq!(c.reasons().get("offline"), Some(&1));
        assert_eq!(c.reasons().len(), 1);
        assert!("bogus".parse::<Reason>().is_err());
        assert_eq!(
            "update-failed".parse::<Reason>().unwrap(),
            Reason::UpdateFailed
        );
    }

    #[test]
    fn the_update_track_decides_updating_and_update_failed_even_when_the_device_says_idle() {
        let (fw, base) = (v("2.4.0"), v("2.4.0"));
        let ok = ready_inputs(&fw, &base);
        let running = Inputs {
            track: TrackState::Running,
            ..ok
        };
        assert_eq!(classify(&running, NOW, FRESH), Some(Reason::Updating));
        let failed = Inputs {
            track: TrackState::Failed,
            ..ok
        };
        assert_eq!(classify(&failed, NOW, FRESH), Some(Reason::UpdateFailed));
        // Offline still comes first.
        let offline = Inputs {
            presence: Some(PresenceStatus::Offline),
            ..failed
        };
        assert_eq!(classify(&offline, NOW, FRESH), Some(Reason::Offline));
        // update-failed comes before updating (the order of Reason::ALL).
        let again = Inputs {
            update: Some(UpdateStatus::Downloading),
            ..failed
        };
        assert_eq!(classify(&again, NOW, FRESH), Some(Reason::UpdateFailed));
    }
}
