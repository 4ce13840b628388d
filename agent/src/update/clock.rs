//! The agent's trusted time (pure): what "now" is when checking whether
//! TUF metadata expired.
//!
//! A ballot box's real-time clock may be a year off either way (a flat
//! RTC battery, a technician's typo), and the box may stay offline for
//! weeks. So:
//! - Once the controller's time is known (over a connection authenticated
//!   by the fleet CA), "now" is that time plus the monotonic time elapsed
//!   since, whatever the system clock says: a clock a year behind or ahead
//!   does not matter.
//! - Without it (after a restart, before the controller answered), "now"
//!   is the system clock, but never below the *floor*: the latest time the
//!   agent knows has passed from a trusted source. The floor persists
//!   (`STATE/update/clock.json`), so a clock reset to 2000 cannot make
//!   expired metadata look fresh (a freeze attack) after a reboot.
//! - "Now" never goes back within a run, except to the controller's time
//!   when it first arrives (it corrects a clock that was ahead).
//!
//! [`TrustedClock`] is pure; [`read()`] and [`write()`] persist its floor.
//!
//! The floor is raised only from trusted time (the controller's, and time
//! elapsed since it), never from the system clock: one that ran ahead once
//! would otherwise lock the device out of every update after it.

use serde::{Deserialize, Serialize};

/// The controller's time at a monotonic instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub controller_ms: u64,
    pub mono_ms: u64,
}

/// What persists across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClockFile {
    pub floor_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrustedClock {
    /// Unix ms known to have passed (persisted).
    pub floor_ms: u64,
    /// The controller's time, once seen in this run.
    pub anchor: Option<Anchor>,
    /// The last value `now` returned in this run (not persisted).
    last_ms: u64,
}

impl TrustedClock {
    /// A clock starting from the persisted floor.
    pub fn new(floor_ms: u64) -> Self {
        Self {
            floor_ms,
            anchor: None,
            last_ms: floor_ms,
        }
    }

    pub fn from_file(file: ClockFile) -> Self {
        Self::new(file.floor_ms)
    }

    /// What to persist (after [`Self::now`] or [`Self::observe_controller`]
    /// raised the floor).
    pub fn file(&self) -> ClockFile {
        ClockFile {
            floor_ms: self.floor_ms,
        }
    }

    /// The controller said it is `controller_ms` at monotonic `mono_ms`.
    /// Below the floor, or below the controller time already anchored (a
    /// desired state delivered late carries an old `sent_at`), it is taken
    /// as that: the floor came from the controller too, and time does not
    /// go back.
    pub fn observe_controller(&mut self, controller_ms: u64, mono_ms: u64) {
        let anchored = self.anchor.map_or(0, |a| {
            a.controller_ms
                .saturating_add(mono_ms.saturating_sub(a.mono_ms))
        });
        let at = controller_ms.max(self.floor_ms).max(anchored);
        self.anchor = Some(Anchor {
            controller_ms: at,
            mono_ms,
        });
        self.floor_ms = at;
        // The controller's time wins over whatever the system clock said.
        self.last_ms = at;
    }

    /// Raise the floor to a time known to have passed (e.g. from signed
    /// metadata); it never lowers it.
    pub fn observe_floor(&mut self, known_past_ms: u64) {
        self.floor_ms = self.floor_ms.max(known_past_ms);
        self.last_ms = self.last_ms.max(self.floor_ms);
    }

    /// Now, in Unix ms, given the system clock and the monotonic clock.
    pub fn now(&mut self, system_ms: u64, mono_ms: u64) -> u64 {
        let now = match self.anchor {
            Some(a) => {
                let t = a
                    .controller_ms
                    .saturating_add(mono_ms.saturating_sub(a.mono_ms));
                // Trusted: it raises the floor.
                self.floor_ms = self.floor_ms.max(t);
                t
            }
            None => system_ms,
        };
        let now = now.max(self.floor_ms).max(self.last_ms);
        self.last_ms = now;
        now
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The persisted floor (`STATE/update/clock.json`); a missing or unreadable
/// file is a floor of 0 (logged by the caller, not fatal: the controller's
/// time replaces it at the next contact).
pub fn read(path: &std::path::Path) -> Option<ClockFile> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Persist the floor: written beside, fsynced, renamed, directory fsynced.
pub fn write(path: &std::path::Path, file: &ClockFile) -> Result<(), ClockError> {
    let bytes = serde_json::to_vec(file).expect("a struct of one integer serialises");
    crate::durable::replace(path, &bytes).map_err(|source| ClockError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;
    const YEAR: u64 = 365 * DAY;
    /// 2026-11-24T00:00:00Z.
    const TRUE_NOW: u64 = 1_795_478_400_000;

    #[test]
    fn a_clock_a_year_behind_reads_the_controllers_time() {
        let mut c = TrustedClock::new(0);
        c.observe_controller(TRUE_NOW, 5_000);
        // One minute of monotonic time later, the system clock a year behind.
        assert_eq!(c.now(TRUE_NOW - YEAR, 65_000), TRUE_NOW + 60_000);
    }

    #[test]
    fn a_clock_a_year_ahead_reads_the_controllers_time() {
        let mut c = TrustedClock::new(0);
        // Before the controller answered, the system clock is all there is.
        assert_eq!(c.now(TRUE_NOW + YEAR, 1_000), TRUE_NOW + YEAR);
        c.observe_controller(TRUE_NOW, 2_000);
        assert_eq!(c.now(TRUE_NOW + YEAR, 3_000), TRUE_NOW + 1_000);
        // The untrusted system clock never became the floor.
        assert_eq!(c.file().floor_ms, TRUE_NOW + 1_000);
    }

    #[test]
    fn a_controller_time_delivered_late_does_not_move_the_clock_back() {
        let mut c = TrustedClock::new(0);
        c.observe_controller(TRUE_NOW, 1_000);
        // A desired state queued for an hour arrives 5 s later with its
        // old sent-at time (and no `now` call in between raised the floor).
        c.observe_controller(TRUE_NOW - 3_600_000, 6_000);
        assert_eq!(c.now(0, 6_000), TRUE_NOW + 5_000);
        assert_eq!(c.now(0, 7_000), TRUE_NOW + 6_000);
    }

    #[test]
    fn without_the_controller_now_never_goes_below_the_persisted_floor() {
        let mut first_run = TrustedClock::new(0);
        first_run.observe_controller(TRUE_NOW, 0);
        first_run.now(TRUE_NOW, 10 * DAY);
        let persisted = first_run.file();
        assert_eq!(persisted.floor_ms, TRUE_NOW + 10 * DAY);

        // Restart: the monotonic clock starts again, the RTC was reset to 2000.
        let json = serde_json::to_string(&persisted).unwrap();
        let mut c = TrustedClock::from_file(serde_json::from_str(&json).unwrap());
        assert_eq!(c.now(946_684_800_000, 0), TRUE_NOW + 10 * DAY);
    }

    #[test]
    fn without_the_controller_now_never_goes_back() {
        let mut c = TrustedClock::new(TRUE_NOW);
        assert_eq!(c.now(TRUE_NOW + 5_000, 0), TRUE_NOW + 5_000);
        // The system clock steps back by an hour.
        assert_eq!(c.now(TRUE_NOW + 5_000 - 3_600_000, 1), TRUE_NOW + 5_000);
        assert_eq!(c.now(TRUE_NOW + 9_000, 2), TRUE_NOW + 9_000);
        // Still, an unanchored system clock never raised the floor.
        assert_eq!(c.file().floor_ms, TRUE_NOW);
    }

    #[test]
    fn a_controller_time_below_the_floor_keeps_the_floor() {
        let mut c = TrustedClock::new(TRUE_NOW);
        c.observe_controller(TRUE_NOW - YEAR, 0);
        assert_eq!(c.now(0, 1_000), TRUE_NOW + 1_000);
    }

    #[test]
    fn the_floor_survives_a_write_and_a_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clock.json");
        assert_eq!(read(&path), None);
        write(&path, &ClockFile { floor_ms: TRUE_NOW }).unwrap();
        assert_eq!(read(&path), Some(ClockFile { floor_ms: TRUE_NOW }));
        std::fs::write(&path, b"garbage").unwrap();
        assert_eq!(read(&path), None);
    }

    #[test]
    fn an_observed_floor_only_raises() {
        let mut c = TrustedClock::new(TRUE_NOW);
        c.observe_floor(TRUE_NOW - DAY);
        assert_eq!(c.floor_ms, TRUE_NOW);
        c.observe_floor(TRUE_NOW + DAY);
        assert_eq!(c.now(TRUE_NOW - YEAR, 0), TRUE_NOW + DAY);
    }
}
