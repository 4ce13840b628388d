//! Where each member stands ([`DevState`]) and the counts of members per
//! state ([`Counters`], the ones Mender shows).

use serde::{Deserialize, Serialize};

/// Where one member of a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DevState {
    /// Not released yet.
    Pending,
    /// Desired state sent, nothing heard yet (holds a download slot).
    Released,
    /// `downloading` or `verifying` (holds a download slot).
    Downloading,
    Installing,
    /// `rebooting` or `checking`.
    Rebooting,
    Succeeded,
    /// `failed` or `rolled-back`.
    Failed,
    /// Released and no result within the policy's device timeout (or the
    /// update tracker gave up on it after a reboot).
    TimedOut,
    /// Not updated on purpose (wrong model, not in service, already on the
    /// version), or held by a freeze window on the device (`frozen`).
    Skipped,
}

impl DevState {
    pub const ALL: [DevState; 9] = [
        DevState::Pending,
        DevState::Released,
        DevState::Downloading,
        DevState::Installing,
        DevState::Rebooting,
        DevState::Succeeded,
        DevState::Failed,
        DevState::TimedOut,
        DevState::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DevState::Pending => "pending",
            DevState::Released => "released",
            DevState::Downloading => "downloading",
            DevState::Installing => "installing",
            DevState::Rebooting => "rebooting",
            DevState::Succeeded => "succeeded",
            DevState::Failed => "failed",
            DevState::TimedOut => "timed-out",
            DevState::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Takes one of its province's download slots.
    pub fn holds_slot(self) -> bool {
        matches!(self, DevState::Released | DevState::Downloading)
    }

    /// Released and not ended: the device timeout runs.
    pub fn in_flight(self) -> bool {
        matches!(
            self,
            DevState::Released | DevState::Downloading | DevState::Installing | DevState::Rebooting
        )
    }

    /// Counts against the failure threshold.
    pub fn is_failure(self) -> bool {
        matches!(self, DevState::Failed | DevState::TimedOut)
    }
}

/// How many members are in each state. `downloading` counts Released and
/// Downloading members (Mender's "downloading": the device has been told).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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

impl Counters {
    fn slot(&mut self, s: DevState) -> &mut u32 {
        match s {
            DevState::Pending => &mut self.pending,
            DevState::Released | DevState::Downloading => &mut self.downloading,
            DevState::Installing => &mut self.installing,
            DevState::Rebooting => &mut self.rebooting,
            DevState::Succeeded => &mut self.succeeded,
            DevState::Failed => &mut self.failed,
            DevState::TimedOut => &mut self.timed_out,
            DevState::Skipped => &mut self.skipped,
        }
    }

    pub fn add(&mut self, s: DevState) {
        self.total += 1;
        *self.slot(s) += 1;
    }

    pub fn remove(&mut self, s: DevState) {
        self.total -= 1;
        *self.slot(s) -= 1;
    }

    /// The counts of these states.
    pub fn of(states: impl IntoIterator<Item = DevState>) -> Counters {
        let mut c = Counters::default();
        for s in states {
            c.add(s);
        }
        c
    }

    pub fn merge(&mut self, o: &Counters) {
        self.total += o.total;
        self.pending += o.pending;
        self.downloading += o.downloading;
        self.installing += o.installing;
        self.rebooting += o.rebooting;
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        self.timed_out += o.timed_out;
        self.skipped += o.skipped;
    }

    /// The members the thresholds are counted over.
    pub fn non_skipped(&self) -> u32 {
        self.total - self.skipped
    }

    /// Failed and timed out.
    pub fn failures(&self) -> u32 {
        self.failed + self.timed_out
    }

    /// The parts add up to the total.
    pub fn is_consistent(&self) -> bool {
        self.pending
            + self.downloading
            + self.installing
            + self.rebooting
            + self.succeeded
            + self.failed
            + self.timed_out
            + self.skipped
            == self.total
    }
}
