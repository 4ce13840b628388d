//! Where each device's update stands (pure), from its `update-progress` and
//! `update-result` events, and when the controller gives up on a device
//! that went to reboot into a new image and never came back (hawkBit #693):
//! such a device ends `timed-out`.
//!
//! One track per device: its last update. An event for another artifact or
//! version starts a new track; a progress event after a result of the same
//! version is a new attempt. Events arrive out of order (the agent's outbox
//! drains by priority, and progress may be dropped from a full one), so an
//! event older by the device's clock than the last one applied to the same
//! update changes nothing.

use fleet_protocol::{ArtifactKind, EventKind, UpdateOutcome, UpdatePhase, Version};

/// How an update ended, as the controller sees it: the device's own
/// outcome, or `TimedOut` when it went silent after `rebooting`/`checking`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    RolledBack,
    Failed,
    TimedOut,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Committed,
        Outcome::RolledBack,
        Outcome::Failed,
        Outcome::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Committed => "committed",
            Outcome::RolledBack => "rolled-back",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed-out",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl From<UpdateOutcome> for Outcome {
    fn from(o: UpdateOutcome) -> Self {
        match o {
            UpdateOutcome::Committed => Outcome::Committed,
            UpdateOutcome::RolledBack => Outcome::RolledBack,
            UpdateOutcome::Failed => Outcome::Failed,
        }
    }
}

/// The name of a phase, as stored and shown.
pub fn phase_name(p: UpdatePhase) -> &'static str {
    match p {
        UpdatePhase::Downloading => "downloading",
        UpdatePhase::Verifying => "verifying",
        UpdatePhase::Installing => "installing",
        UpdatePhase::Rebooting => "rebooting",
        UpdatePhase::Checking => "checking",
        UpdatePhase::Frozen => "frozen",
    }
}

pub fn parse_phase(s: &str) -> Option<UpdatePhase> {
    [
        UpdatePhase::Downloading,
        UpdatePhase::Verifying,
        UpdatePhase::Installing,
        UpdatePhase::Rebooting,
        UpdatePhase::Checking,
        UpdatePhase::Frozen,
    ]
    .into_iter()
    .find(|p| phase_name(*p) == s)
}

/// A device's last update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub artifact: ArtifactKind,
    pub version: Version,
    /// The last phase reported (kept after the end, to say where it stopped).
    pub phase: Option<UpdatePhase>,
    pub bytes: u64,
    pub total: u64,
    /// `None` while it runs.
    pub outcome: Option<Outcome>,
    pub message: String,
    /// Controller clock: when its first event arrived.
    pub started_ms: u64,
    /// Controller clock: when its last event arrived.
    pub last_event_ms: u64,
    /// Device clock of the last event applied (orders late arrivals).
    pub last_at_ms: u64,
}

/// What an event did to a device's track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Not an update event, or one older than what is held.
    Unchanged,
    /// The new track; `ended` is the outcome when this event ended it.
    Changed {
        track: Track,
        ended: Option<Outcome>,
    },
}

/// Apply one event (device clock `at_ms`, received at `received_ms`) to a
/// device's track.
pub fn apply(held: Option<&Track>, kind: &EventKind, at_ms: u64, received_ms: u64) -> Applied {
    let (artifact, version, phase, bytes, total, result) = match kind {
        EventKind::UpdateProgress {
            version,
            phase,
            bytes,
            total,
            artifact,
        } => (*artifact, version, Some(*phase), *bytes, *total, None),
        // A failed attempt the agent tries again by itself does not end
        // the update: the track runs on, saying why it waits.
        EventKind::UpdateResult {
            version,
            message,
            artifact,
            retrying: true,
            ..
        } => (
            *artifact,
            version,
            None,
            0,
            0,
            Some((None, message.clone())),
        ),
        EventKind::UpdateResult {
            version,
            message,
            outcome,
            artifact,
            ..
        } => (
            *artifact,
            version,
            None,
            0,
            0,
            Some((Some(Outcome::from(*outcome)), message.clone())),
        ),
        _ => return Applied::Unchanged,
    };
    let same = held.filter(|t| t.artifact == artifact && &t.version == version);
    if let Some(t) = same {
        if at_ms < t.last_at_ms {
            return Applied::Unchanged;
        }
    }
    // A progress event after the end of the same update is a new attempt;
    // after a time-out (the controller's verdict, not the device's) it is
    // the device coming back: the same update runs again.
    let continues = same.filter(|t| {
        t.outcome.is_none()
            || t.outcome == Some(Outcome::TimedOut)
            || result.as_ref().is_some_and(|(o, _)| o.is_some())
    });
    let mut track = match continues {
        Some(t) => t.clone(),
        None => Track {
            artifact,
            version: version.clone(),
            phase: None,
            bytes: 0,
            total: 0,
            outcome: None,
            message: String::new(),
            started_ms: received_ms,
            last_event_ms: received_ms,
            last_at_ms: at_ms,
        },
    };
    track.last_event_ms = received_ms;
    track.last_at_ms = at_ms;
    let mut ended = None;
    match result {
        None => {
            track.phase = phase;
            track.bytes = bytes;
            track.total = total;
            track.outcome = None;
            track.message.clear();
        }
        Some((None, message)) => {
            track.outcome = None;
            track.message = format!("will retry: {message}");
        }
        Some((Some(outcome), message)) => {
            track.outcome = Some(outcome);
            track.message = message;
            ended = Some(outcome);
        }
    }
    Applied::Changed { track, ended }
}

/// Whether a running update is past its deadline: the device said it was
/// rebooting into the new image (or health-checking it) and has said
/// nothing since, for `timeout_ms`.
pub fn timed_out(t: &Track, now_ms: u64, timeout_ms: u64) -> bool {
    t.outcome.is_none()
        && matches!(
            t.phase,
            Some(UpdatePhase::Rebooting | UpdatePhase::Checking)
        )
        && now_ms.saturating_sub(t.last_event_ms) >= timeout_ms
}

/// The phases after which silence means the device may not come back.
pub const WAITING_PHASES: [UpdatePhase; 2] = [UpdatePhase::Rebooting, UpdatePhase::Checking];

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn progress(version: &str, phase: UpdatePhase, bytes: u64) -> EventKind {
        EventKind::UpdateProgress {
            version: v(version),
            phase,
            bytes,
            total: 1000,
            artifact: ArtifactKind::Firmware,
        }
    }

    fn result(version: &str, outcome: UpdateOutcome, message: &str) -> EventKind {
        EventKind::UpdateResult {
            version: v(version),
            ok: outcome == UpdateOutcome::Committed,
            message: message.into(),
            outcome,
            artifact: ArtifactKind::Firmware,
            retrying: false,
        }
    }

    #[test]
    fn a_failed_attempt_the_agent_retries_by_itself_does_not_end_the_update() {
        let mut retry = result("2.5.0", UpdateOutcome::Failed, "connection refused");
        if let EventKind::UpdateResult { retrying, .. } = &mut retry {
            *retrying = true;
        }
        let (t, ended) = run(&[
            (progress("2.5.0", UpdatePhase::Downloading, 10), 1, 100),
            (retry, 2, 200),
        ]);
        let t = t.unwrap();
        assert_eq!(ended, []);
        assert_eq!(t.outcome, None);
        assert_eq!(t.phase, Some(UpdatePhase::Downloading));
        assert_eq!(t.message, "will retry: connection refused");
        // The next attempt goes on in the same track, and its commit ends it.
        let (t, ended) = run(&[
            (progress("2.5.0", UpdatePhase::Downloading, 10), 1, 100),
            (t_retry(), 2, 200),
            (progress("2.5.0", UpdatePhase::Downloading, 500), 3, 300),
            (
                result("2.5.0", UpdateOutcome::Committed, "committed"),
                4,
                400,
            ),
        ]);
        let t = t.unwrap();
        assert_eq!(ended, [Outcome::Committed]);
        assert_eq!((t.started_ms, t.outcome), (100, Some(Outcome::Committed)));
    }

    fn t_retry() -> EventKind {
        let mut e = result("2.5.0", UpdateOutcome::Failed, "timeout");
        if let EventKind::UpdateResult { retrying, .. } = &mut e {
            *retrying = true;
        }
        e
    }

    /// Apply events in order; each (event, device ms, controller ms).
    fn run(events: &[(EventKind, u64, u64)]) -> (Option<Track>, Vec<Outcome>) {
        let mut held: Option<Track> = None;
        let mut ended = vec![];
        for (e, at, received) in events {
            if let Applied::Changed { track, ended: end } = apply(held.as_ref(), e, *at, *received)
            {
                held = Some(track);
                ended.extend(end);
            }
        }
        (held, ended)
    }

    #[test]
    fn progress_then_commit_ends_committed_and_keeps_when_it_started() {
        let (t, ended) = run(&[
            (progress("2.5.0", UpdatePhase::Downloading, 0), 10, 100),
            (progress("2.5.0", UpdatePhase::Downloading, 500), 11, 110),
            (progress("2.5.0", UpdatePhase::Rebooting, 1000), 12, 120),
            (result("2.5.0", UpdateOutcome::Committed, "ok"), 13, 130),
        ]);
        let t = t.unwrap();
        assert_eq!(ended, [Outcome::Committed]);
        assert_eq!(t.outcome, Some(Outcome::Committed));
        assert_eq!(t.phase, Some(UpdatePhase::Rebooting), "where it was last");
        assert_eq!((t.bytes, t.total), (1000, 1000));
        assert_eq!((t.started_ms, t.last_event_ms), (100, 130));
        assert!(!timed_out(&t, u64::MAX, 1));
    }

    #[test]
    fn silence_after_rebooting_or_checking_times_out_and_nothing_else_does() {
        let at = |phase| {
            run(&[(progress("2.5.0", phase, 1000), 1, 1_000)])
                .0
                .unwrap()
        };
        for phase in WAITING_PHASES {
            let t = at(phase);
            assert!(!timed_out(&t, 1_000 + 2_999, 3_000), "{phase:?} too early");
            assert!(timed_out(&t, 1_000 + 3_000, 3_000), "{phase:?}");
        }
        for phase in [
            UpdatePhase::Downloading,
            UpdatePhase::Verifying,
            UpdatePhase::Installing,
            UpdatePhase::Frozen,
        ] {
            assert!(!timed_out(&at(phase), u64::MAX, 3_000), "{phase:?}");
        }
    }

    #[test]
    fn a_late_result_after_a_time_out_replaces_it() {
        let (t, _) = run(&[(progress("2.5.0", UpdatePhase::Rebooting, 0), 5, 1_000)]);
        let mut t = t.unwrap();
        assert!(timed_out(&t, 10_000, 3_000));
        t.outcome = Some(Outcome::TimedOut);
        let Applied::Changed { track, ended } = apply(
            Some(&t),
            &result("2.5.0", UpdateOutcome::Committed, "booted"),
            6,
            20_000,
        ) else {
            panic!("a result changes the track");
        };
        assert_eq!(track.outcome, Some(Outcome::Committed));
        assert_eq!(ended, Some(Outcome::Committed));
        assert_eq!(track.started_ms, 1_000, "the same update");
    }

    #[test]
    fn a_device_heard_from_after_its_time_out_runs_the_same_update_again() {
        let (t, _) = run(&[(progress("2.5.0", UpdatePhase::Rebooting, 0), 5, 1_000)]);
        let mut t = t.unwrap();
        t.outcome = Some(Outcome::TimedOut);
        t.message = "no word".into();
        let Applied::Changed { track, ended } = apply(
            Some(&t),
            &progress("2.5.0", UpdatePhase::Checking, 0),
            6,
            9_000,
        ) else {
            panic!("a progress event changes the track");
        };
        assert_eq!(ended, None);
        assert_eq!(track.outcome, None, "running again");
        assert!(track.message.is_empty());
        assert_eq!(track.phase, Some(UpdatePhase::Checking));
        assert_eq!(track.started_ms, 1_000, "the same update");
    }

    #[test]
    fn an_older_event_of_the_same_update_changes_nothing() {
        let (t, _) = run(&[
            (progress("2.5.0", UpdatePhase::Rebooting, 1000), 20, 100),
            (result("2.5.0", UpdateOutcome::Committed, "ok"), 30, 110),
        ]);
        let t = t.unwrap();
        // A progress event drained late from the outbox.
        assert_eq!(
            apply(
                Some(&t),
                &progress("2.5.0", UpdatePhase::Downloading, 10),
                10,
                120
            ),
            Applied::Unchanged
        );
        // Other kinds of event are not updates.
        assert_eq!(
            apply(
                Some(&t),
                &EventKind::Error {
                    message: "x".into()
                },
                40,
                130
            ),
            Applied::Unchanged
        );
    }

    #[test]
    fn another_version_or_a_retry_after_the_end_starts_a_new_track() {
        let (t, ended) = run(&[
            (
                result("2.5.0", UpdateOutcome::Failed, "hash mismatch"),
                1,
                100,
            ),
            (progress("2.5.0", UpdatePhase::Downloading, 0), 2, 200),
        ]);
        let t = t.unwrap();
        assert_eq!(ended, [Outcome::Failed]);
        assert_eq!(t.outcome, None, "a new attempt runs");
        assert_eq!(t.started_ms, 200);
        assert!(t.message.is_empty());
        let (t, _) = run(&[
            (progress("2.5.0", UpdatePhase::Installing, 0), 1, 100),
            (progress("2.6.0", UpdatePhase::Downloading, 0), 2, 200),
        ]);
        let t = t.unwrap();
        assert_eq!(t.version, v("2.6.0"));
        assert_eq!(t.started_ms, 200);
    }

    #[test]
    fn names_read_back() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::parse("done"), None);
        for p in WAITING_PHASES {
            assert_eq!(parse_phase(phase_name(p)), Some(p));
        }
        assert_eq!(
            parse_phase(phase_name(UpdatePhase::Frozen)),
            Some(UpdatePhase::Frozen)
        );
    }
}
