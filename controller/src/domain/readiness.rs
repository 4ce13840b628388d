//! The readiness model (pure). A device is ready when it is enrolled and
//! assigned, has reported, was seen within the freshness window, is not
//! updating, runs the baseline firmware of its model and passes every check.
//! Otherwise it has exactly one reason, the first that applies in the order
//! of [`Reason::ALL`].
//!
//! A device behind a provincial broker whose bridge is down cannot be heard:
//! one that would be `offline` only because of that is `link-down` instead
//! (see [`Outage`]).

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

/// The last outage of the bridge link of the device's provincial broker,
/// while it matters to readiness: while the link is down, and for one
/// freshness window after it came back.
///
/// Why the window after: when the link returns, the provincial broker
/// delivers what it queued at QoS 1 (presence, state, events), but a device
/// that changed nothing has nothing queued, and its QoS 0 health reports of
/// the outage are lost. Its next report comes on its health timer, which is
/// shorter than the freshness window (it must be, for any device to stay
/// fresh). So for one window after the link's return a silent device is
/// still `link-down`; it becomes `offline` only if it says nothing for a
/// whole window with the link up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    /// When the link went down (the controller's receipt of the report).
    pub down_since_ms: u64,
    /// When it came back (`None`: still down).
    pub back_at_ms: Option<u64>,
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
    /// The outage of its province's bridge link, if one matters now.
    pub outage: Option<Outage>,
}

/// `None` means ready.
pub fn classify(i: &Inputs<'_>, now_ms: u64, freshness_ms: u64) -> Option<Reason> {
    if !i.enrolled || !i.assigned {
        return Some(Reason::NotEnrolled);
    }
    let Some(last_seen) = i.last_seen_ms.filter(|_| i.reported) else {
        return Some(Reason::NeverSeen);
    };
    let said_offline = i.presence == Some(PresenceStatus::Offline);
    if said_offline || now_ms.saturating_sub(last_seen) > freshness_ms {
        return Some(match i.outage {
            Some(o) if !offline_apart_from(o, last_seen, said_offline, freshness_ms) => {
                Reason::LinkDown
            }
            _ => Reason::Offline,
        });
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

/// Whether a device that would be offline is so for a reason of its own,
/// not the link's: it was already offline before the link went down (its
/// last message was already older than the freshness window then, or its
/// last presence, which is its last message (nothing follows a goodbye on
/// the same connection), said offline before), or it said offline after the
/// link came back (a goodbye the provincial broker queued and delivered).
fn offline_apart_from(o: Outage, last_seen_ms: u64, said_offline: bool, freshness_ms: u64) -> bool {
    let stale_before_cut = o.down_since_ms.saturating_sub(last_seen_ms) > freshness_ms;
    let goodbye_before_cut = said_offline && last_seen_ms < o.down_since_ms;
    let goodbye_after_return =
        said_offline && o.back_at_ms.is_some_and(|back| last_seen_ms >= back);
    stale_before_cut || goodbye_before_cut || goodbye_after_return
}

/// Devices of one group (a province or a county) by readiness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u32,
    pub ready: u32,
    reasons: [u32; Reason::ALL.len()],
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
            outage: None,
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

    const CUT: u64 = NOW - 10_000;

    fn down() -> Option<Outage> {
        Some(Outage {
            down_since_ms: CUT,
            back_at_ms: None,
        })
    }

    #[test]
    fn a_device_silent_since_the_link_went_down_is_link_down_not_offline() {
        let (fw, base) = (v("2.4.0"), v("2.4.0"));
        let seen_before_cut = Inputs {
            last_seen_ms: Some(CUT - 1_000),
            outage: down(),
            ..ready_inputs(&fw, &base)
        };
        // Ready until its report is older than the window, as with the link up.
        assert_eq!(classify(&seen_before_cut, NOW, FRESH), None);
        let stale_at = CUT - 1_000 + FRESH + 1;
        assert_eq!(
            classify(&seen_before_cut, stale_at, FRESH),
            Some(Reason::LinkDown)
        );
        // The same device with no link trouble is plainly offline then.
        let no_outage = Inputs {
            outage: None,
            ..seen_before_cut
        };
        assert_eq!(classify(&no_outage, stale_at, FRESH), Some(Reason::Offline));
        // Still link-down hours into the outage.
        assert_eq!(
            classify(&seen_before_cut, NOW + 3_600_000, FRESH),
            Some(Reason::LinkDown)
        );
    }

    #[test]
    fn a_device_already_offline_before_the_cut_stays_offline() {
        let (fw, base) = (v("2.4.0"), v("2.4.0"));
        let ok = ready_inputs(&fw, &base);
        let stale_at_cut = Inputs {
            last_seen_ms: Some(CUT - FRESH - 1),
            outage: down(),
            ..ok
        };
        assert_eq!(classify(&stale_at_cut, NOW, FRESH), Some(Reason::Offline));
        // Exactly a window old at the cut: it was still fresh then.
        let edge = Inputs {
            last_seen_ms: Some(CUT - FRESH),
            ..stale_at_cut
        };
        assert_eq!(classify(&edge, NOW, FRESH), Some(Reason::LinkDown));
        let goodbye_before_cut = Inputs {
            last_seen_ms: Some(CUT - 5),
            presence: Some(PresenceStatus::Offline),
            outage: down(),
            ..ok
        };
        assert_eq!(
            classify(&goodbye_before_cut, NOW, FRESH),
            Some(Reason::Offline)
        );
        // A goodbye received after the cut (only a device connected to the
        // central broker directly can send one then) is not told apart
        // from the link's trouble while the link is down.
        let goodbye_after_cut = Inputs {
            last_seen_ms: Some(CUT + 5),
            ..goodbye_before_cut
        };
        assert_eq!(
            classify(&goodbye_after_cut, NOW, FRESH),
            Some(Reason::LinkDown)
        );
    }

    #[test]
    fn when_the_link_is_back_a_silent_device_waits_one_window_and_a_goodbye_counts() {
        let (fw, base) = (v("2.4.0"), v("2.4.0"));
        let back = NOW + 600_000;
        let outage = Some(Outage {
            down_since_ms: CUT,
            back_at_ms: Some(back),
        });
        let silent = Inputs {
            last_seen_ms: Some(CUT - 1_000),
            outage,
            ..ready_inputs(&fw, &base)
        };
        assert_eq!(classify(&silent, back + 10, FRESH), Some(Reason::LinkDown));
        // Its fresh report after the return: judged as any device.
        let spoke = Inputs {
            last_seen_ms: Some(back + 5),
            ..silent
        };
        assert_eq!(classify(&spoke, back + 10, FRESH), None);
        // A goodbye the provincial broker queued, delivered after the return.
        let goodbye = Inputs {
            last_seen_ms: Some(back + 5),
            presence: Some(PresenceStatus::Offline),
            ..silent
        };
        assert_eq!(classify(&goodbye, back + 10, FRESH), Some(Reason::Offline));
        // A window after the return the outage no longer matters (the fleet
        // stops passing it): a device that said nothing is offline.
        let after = Inputs {
            outage: None,
            ..silent
        };
        assert_eq!(
            classify(&after, back + FRESH + 1, FRESH),
            Some(Reason::Offline)
        );
    }

    #[test]
    fn link_down_comes_after_never_seen_and_before_the_rest() {
        let (fw, base, old) = (v("2.4.0"), v("2.4.0"), v("2.3.1"));
        let stale_and_wrong = Inputs {
            last_seen_ms: Some(CUT - 1_000),
            update: Some(UpdateStatus::Failed),
            firmware: Some(&old),
            checks_pass: false,
            outage: down(),
            ..ready_inputs(&fw, &base)
        };
        let later = CUT + FRESH;
        assert_eq!(
            classify(&stale_and_wrong, later, FRESH),
            Some(Reason::LinkDown)
        );
        let never = Inputs {
            reported: false,
            ..stale_and_wrong
        };
        assert_eq!(classify(&never, later, FRESH), Some(Reason::NeverSeen));
        let pos = |r| Reason::ALL.iter().position(|x| *x == r).unwrap();
        assert_eq!(pos(Reason::LinkDown), pos(Reason::NeverSeen) + 1);
        assert_eq!(pos(Reason::Offline), pos(Reason::LinkDown) + 1);
    }
}
