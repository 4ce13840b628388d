//! The rollout state machine: inputs in, decisions out (see the module
//! header in `mod.rs` for the rules and their cost).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fleet_protocol::{DeviceId, FreezeWindow, ProvinceCode, UpdatePhase};

use super::counters::{Counters, DevState};
use super::error::{EngineError, PlanError};
use super::plan::{plan, wave_names, Candidate, WavesSpec};
use super::policy::Policy;
use crate::domain::updates::Outcome;

pub type RolloutId = u64;

/// One device of a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub device: DeviceId,
    pub province: ProvinceCode,
    /// Index into the waves.
    pub wave: usize,
    pub state: DevState,
    /// The rollout's attempt for this device (sent as `TargetFirmware.attempt`).
    pub attempt: u32,
    /// When its desired state was last set (`None` until released). A
    /// Skipped member with a release time is one its agent holds in a
    /// freeze window (`frozen`): its events still count.
    pub released_ms: Option<u64>,
    /// Why it is skipped, or how it failed.
    pub message: String,
}

impl Member {
    /// Skipped because its agent holds the install in a freeze window
    /// (known by its release time; its later events still count).
    pub fn is_frozen(&self) -> bool {
        self.state == DevState::Skipped && self.released_ms.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Draft,
    Running,
    Paused,
    Completed,
    Aborted,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Draft,
        Phase::Running,
        Phase::Paused,
        Phase::Completed,
        Phase::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Draft => "draft",
            Phase::Running => "running",
            Phase::Paused => "paused",
            Phase::Completed => "completed",
            Phase::Aborted => "aborted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// The rollout's own state (persisted beside its members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub phase: Phase,
    /// The current wave's index.
    pub wave: usize,
    pub paused_reason: Option<String>,
    /// Why nothing is released now (a freeze window, the allowed hours);
    /// not a phase.
    pub held: Option<String>,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
}

impl Status {
    pub fn draft() -> Status {
        Status {
            phase: Phase::Draft,
            wave: 0,
            paused_reason: None,
            held: None,
            started_ms: None,
            finished_ms: None,
        }
    }
}

/// What the engine reads of the world on each call.
pub struct World<'a> {
    pub now_ms: u64,
    /// The fleet's freeze windows, with their reasons.
    pub freeze: &'a [(FreezeWindow, String)],
    pub online: &'a dyn Fn(&DeviceId) -> bool,
    /// Download slots other rollouts hold in a province now (their
    /// Released+Downloading members): the per-province limit counts them.
    pub elsewhere: &'a dyn Fn(ProvinceCode) -> u32,
}

impl World<'_> {
    /// The freeze window that holds now (the one ending last), with its reason.
    pub fn frozen(&self) -> Option<(&str, u64)> {
        self.freeze
            .iter()
            .filter(|(w, _)| w.contains(self.now_ms))
            .max_by_key(|(w, _)| w.to_ms)
            .map(|(w, reason)| (reason.as_str(), w.to_ms))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Start,
    Pause {
        reason: String,
    },
    Resume,
    Abort,
    RetryFailed,
    /// From the device's update track for THIS rollout's artifact and
    /// version, only tracks whose last event came at or after the device
    /// was released (the I/O loop filters).
    Progress {
        device: DeviceId,
        phase: UpdatePhase,
    },
    Ended {
        device: DeviceId,
        outcome: Outcome,
        message: String,
    },
    /// A device registered later that matches the selector (include_new).
    Join(Candidate),
    /// The loop could not set a released device's desired state: the
    /// member goes back to Pending (its slot freed; released again by a
    /// later pass), `message` saying why. Only a Released member moves.
    Unreleased {
        device: DeviceId,
        message: String,
    },
    Tick,
}

impl Input {
    fn action(&self) -> &'static str {
        match self {
            Input::Start => "start",
            Input::Pause { .. } => "pause",
            Input::Resume => "resume",
            Input::Abort => "abort",
            Input::RetryFailed => "retry-failed",
            Input::Progress { .. } => "progress",
            Input::Ended { .. } => "ended",
            Input::Join(_) => "join",
            Input::Unreleased { .. } => "unrelease",
            Input::Tick => "tick",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Set the device's desired target (with this attempt) now.
    Release {
        device: DeviceId,
        attempt: u32,
    },
    /// A member's state changed (the loop persists it).
    Member(DeviceId),
    /// The rollout's status changed (persist + log); `note` says what.
    Status {
        note: String,
    },
    WaveStarted(usize),
    WaveDone(usize),
    Paused {
        reason: String,
    },
    Completed,
    Aborted,
}

const PROVINCES: usize = 31;

fn pi(p: ProvinceCode) -> usize {
    usize::from(p.number())
}

/// A rollout: its members, status, and the indexes that keep a tick cheap.
#[derive(Debug, Clone)]
pub struct Engine {
    id: RolloutId,
    policy: Policy,
    names: Vec<String>,
    status: Status,
    members: Vec<Member>,
    /// Per member: when its device timeout started (its release, or the
    /// end of a freeze hold on the device).
    clock_ms: Vec<u64>,
    index: HashMap<DeviceId, usize>,
    /// Per wave, per province.
    counts: Vec<[Counters; PROVINCES]>,
    /// Released+Downloading members per province.
    slots: [u32; PROVINCES],
    /// Per province: pending members in release order (wave, device id).
    pending: Vec<BTreeMap<(usize, DeviceId), usize>>,
    pending_total: usize,
    /// In-flight members by when their timeout started.
    deadlines: BTreeMap<(u64, DeviceId), usize>,
}

impl Engine {
    /// A draft rollout: waves assigned, every member Pending or Skipped.
    pub fn new(
        id: RolloutId,
        policy: Policy,
        waves: &WavesSpec,
        candidates: Vec<Candidate>,
    ) -> Result<Engine, PlanError> {
        policy.check()?;
        let (names, members) = plan(waves, candidates)?;
        Ok(Self::build(id, policy, names, Status::draft(), members))
    }

    /// The engine again from what was persisted: the same spec it was
    /// made with, its status and its members (any order). A member's
    /// device timeout counts from its `released_ms`.
    pub fn restore(
        id: RolloutId,
        policy: Policy,
        waves: &WavesSpec,
        status: Status,
        members: Vec<Member>,
    ) -> Engine {
        let rest_wave = usize::from(waves.canary.is_some()) + waves.groups.len();
        let rest = members.iter().any(|m| m.wave >= rest_wave);
        let names = wave_names(waves, rest);
        Self::build(id, policy, names, status, members)
    }

    fn build(
        id: RolloutId,
        policy: Policy,
        names: Vec<String>,
        status: Status,
        members: Vec<Member>,
    ) -> Engine {
        let mut status = status;
        status.wave = status.wave.min(names.len() - 1);
        let mut e = Engine {
            id,
            policy,
            counts: vec![[Counters::default(); PROVINCES]; names.len()],
            names,
            status,
            members: Vec::with_capacity(members.len()),
            clock_ms: Vec::with_capacity(members.len()),
            index: HashMap::with_capacity(members.len()),
            slots: [0; PROVINCES],
            pending: vec![BTreeMap::new(); PROVINCES],
            pending_total: 0,
            deadlines: BTreeMap::new(),
        };
        for m in members {
            e.insert(m);
        }
        e
    }

    /// Add a member to every index (a device already in is left alone).
    fn insert(&mut self, mut m: Member) -> bool {
        if self.index.contains_key(&m.device) {
            return false;
        }
        let last = self.names.len() - 1;
        m.wave = m.wave.min(last);
        let i = self.members.len();
        let p = pi(m.province);
        self.counts[m.wave][p].add(m.state);
        if m.state.holds_slot() {
            self.slots[p] += 1;
        }
        if m.state == DevState::Pending {
            self.pending[p].insert((m.wave, m.device.clone()), i);
            self.pending_total += 1;
        }
        let clock = m.released_ms.unwrap_or(0);
        if m.state.in_flight() {
            self.deadlines.insert((clock, m.device.clone()), i);
        }
        self.index.insert(m.device.clone(), i);
        self.clock_ms.push(clock);
        self.members.push(m);
        true
    }

    pub fn id(&self) -> RolloutId {
        self.id
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.iter()
    }

    pub fn member(&self, device: &DeviceId) -> Option<&Member> {
        self.index.get(device).map(|&i| &self.members[i])
    }

    pub fn wave_names(&self) -> &[String] {
        &self.names
    }

    pub fn counters(&self) -> Counters {
        let mut c = Counters::default();
        for w in &self.counts {
            for p in w {
                c.merge(p);
            }
        }
        c
    }

    /// The counters of one wave (all zero for a wave that does not exist).
    pub fn wave_counters(&self, wave: usize) -> Counters {
        let mut c = Counters::default();
        if let Some(w) = self.counts.get(wave) {
            for p in w {
                c.merge(p);
            }
        }
        c
    }

    /// Per province with a member, of one wave or of all.
    pub fn province_counters(&self, wave: Option<usize>) -> BTreeMap<ProvinceCode, Counters> {
        let mut out = BTreeMap::new();
        for (w, per) in self.counts.iter().enumerate() {
            if wave.is_some_and(|x| x != w) {
                continue;
            }
            for (p, c) in ProvinceCode::all().zip(per) {
                if c.total > 0 {
                    out.entry(p).or_insert_with(Counters::default).merge(c);
                }
            }
        }
        out
    }

    /// Released+Downloading members of a province now.
    pub fn downloads_in(&self, province: ProvinceCode) -> u32 {
        self.slots[pi(province)]
    }

    /// Apply one input.
    pub fn on(&mut self, input: Input, world: &World) -> Result<Vec<Decision>, EngineError> {
        let now = world.now_ms;
        let phase = self.status.phase;
        let refuse = |input: &Input| EngineError::NotAllowed {
            action: input.action(),
            phase,
        };
        let mut out = Vec::new();
        // The waves in which this input recorded a failure.
        let mut failed = BTreeSet::new();
        let mut release = false;
        match input {
            Input::Start | Input::Resume if phase == Phase::Draft => {
                if let Some((reason, until_ms)) = world.frozen() {
                    return Err(EngineError::Frozen {
                        reason: reason.to_owned(),
                        until_ms,
                    });
                }
                self.status.phase = Phase::Running;
                self.status.wave = 0;
                self.status.started_ms = Some(now);
                out.push(Decision::Status {
                    note: format!("started: wave 1 ({})", self.names[0]),
                });
                out.push(Decision::WaveStarted(0));
                release = true;
            }
            Input::Resume if phase == Phase::Paused => {
                self.status.phase = Phase::Running;
                self.status.paused_reason = None;
                out.push(Decision::Status {
                    note: "resumed".into(),
                });
                release = true;
            }
            Input::Pause { reason } if phase == Phase::Running => {
                self.pause(reason, &mut out);
            }
            Input::Abort if matches!(phase, Phase::Draft | Phase::Running | Phase::Paused) => {
                self.status.phase = Phase::Aborted;
                self.status.finished_ms = Some(now);
                self.status.held = None;
                out.push(Decision::Status {
                    note: "aborted".into(),
                });
                out.push(Decision::Aborted);
            }
            Input::RetryFailed
                if matches!(phase, Phase::Running | Phase::Paused | Phase::Completed) =>
            {
                self.retry_failed(now, &mut out);
            }
            Input::Join(c) if phase != Phase::Aborted => {
                let last = self.names.len() - 1;
                let (state, message) = match c.skip {
                    Some(why) => (DevState::Skipped, why),
                    None => (DevState::Pending, String::new()),
                };
                let device = c.device.clone();
                if self.insert(Member {
                    device: c.device,
                    province: c.province,
                    wave: last,
                    state,
                    attempt: 0,
                    released_ms: None,
                    message,
                }) {
                    out.push(Decision::Member(device));
                }
            }
            Input::Unreleased { device, message } => {
                if let Some(&i) = self.index.get(&device) {
                    if self.members[i].state == DevState::Released {
                        self.members[i].released_ms = None;
                        self.members[i].message = message;
                        self.set(i, DevState::Pending, now, &mut out);
                    }
                }
            }
            Input::Progress { device, phase } => {
                self.progress(&device, phase, now, &mut out);
            }
            Input::Ended {
                device,
                outcome,
                message,
            } => {
                failed.extend(self.ended(&device, outcome, message, now, &mut out));
            }
            Input::Tick => {
                if matches!(phase, Phase::Running | Phase::Paused | Phase::Completed) {
                    failed = self.timeouts(now, &mut out);
                }
                release = true;
            }
            other => return Err(refuse(&other)),
        }
        self.settle(world, &failed, release, &mut out);
        Ok(out)
    }

    fn pause(&mut self, reason: String, out: &mut Vec<Decision>) {
        self.status.phase = Phase::Paused;
        self.status.paused_reason = Some(reason.clone());
        out.push(Decision::Status {
            note: format!("paused: {reason}"),
        });
        out.push(Decision::Paused { reason });
    }

    /// Move member `i` to `new`, keeping every index and count.
    fn set(&mut self, i: usize, new: DevState, now: u64, out: &mut Vec<Decision>) {
        let m = &self.members[i];
        let old = m.state;
        let (w, p) = (m.wave, pi(m.province));
        if old == new {
            return;
        }
        let device = m.device.clone();
        self.counts[w][p].remove(old);
        self.counts[w][p].add(new);
        if old.holds_slot() {
            self.slots[p] -= 1;
        }
        if new.holds_slot() {
            self.slots[p] += 1;
        }
        if old == DevState::Pending {
            self.pending[p].remove(&(w, device.clone()));
            self.pending_total -= 1;
        }
        if new == DevState::Pending {
            self.pending[p].insert((w, device.clone()), i);
            self.pending_total += 1;
        }
        if old.in_flight() && !new.in_flight() {
            self.deadlines.remove(&(self.clock_ms[i], device.clone()));
        }
        if new.in_flight() && !old.in_flight() {
            self.clock_ms[i] = now;
            self.deadlines.insert((now, device.clone()), i);
        }
        self.members[i].state = new;
        out.push(Decision::Member(device));
    }

    /// A member released by this rollout whose events count: in flight,
    /// held by a freeze on the device, or ended.
    fn tracked(m: &Member) -> bool {
        !matches!(m.state, DevState::Pending | DevState::Skipped) || m.is_frozen()
    }

    fn progress(
        &mut self,
        device: &DeviceId,
        phase: UpdatePhase,
        now: u64,
        out: &mut Vec<Decision>,
    ) {
        let Some(&i) = self.index.get(device) else {
            return;
        };
        let m = &self.members[i];
        if !Self::tracked(m)
            || matches!(
                m.state,
                DevState::Succeeded | DevState::Failed | DevState::TimedOut
            )
        {
            return;
        }
        let new = match phase {
            UpdatePhase::Downloading | UpdatePhase::Verifying => DevState::Downloading,
            UpdatePhase::Installing => DevState::Installing,
            UpdatePhase::Rebooting | UpdatePhase::Checking => DevState::Rebooting,
            UpdatePhase::Frozen => DevState::Skipped,
        };
        if new != m.state {
            self.members[i].message = if new == DevState::Skipped {
                "frozen: the device holds the install in a freeze window".into()
            } else {
                String::new()
            };
        }
        self.set(i, new, now, out);
    }

    /// Returns the wave of the failure it recorded, if it recorded one.
    fn ended(
        &mut self,
        device: &DeviceId,
        outcome: Outcome,
        message: String,
        now: u64,
        out: &mut Vec<Decision>,
    ) -> Option<usize> {
        let i = *self.index.get(device)?;
        let m = &self.members[i];
        if !Self::tracked(m) || m.state == DevState::Succeeded {
            return None;
        }
        let new = match outcome {
            Outcome::Committed => DevState::Succeeded,
            Outcome::Failed | Outcome::RolledBack => DevState::Failed,
            Outcome::TimedOut => DevState::TimedOut,
        };
        // Only a success changes an ended failure (the device did update).
        if m.state.is_failure() && new != DevState::Succeeded {
            return None;
        }
        let wave = m.wave;
        self.members[i].message = message;
        self.set(i, new, now, out);
        new.is_failure().then_some(wave)
    }

    /// Returns the waves of the members it timed out.
    fn timeouts(&mut self, now: u64, out: &mut Vec<Decision>) -> BTreeSet<usize> {
        let mut failed = BTreeSet::new();
        let Some(cutoff) = now.checked_sub(self.policy.device_timeout_ms) else {
            return failed;
        };
        while let Some((&(at, _), &i)) = self.deadlines.first_key_value() {
            if at > cutoff {
                break;
            }
            self.members[i].message = format!(
                "no result within {} s of its release",
                self.policy.device_timeout_ms / 1000
            );
            failed.insert(self.members[i].wave);
            self.set(i, DevState::TimedOut, now, out);
        }
        failed
    }

    fn retry_failed(&mut self, now: u64, out: &mut Vec<Decision>) {
        let mut again: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].state.is_failure())
            .collect();
        again.sort_by(|&a, &b| self.members[a].device.cmp(&self.members[b].device));
        for i in again {
            let m = &mut self.members[i];
            m.attempt += 1;
            m.released_ms = None;
            m.message.clear();
            self.set(i, DevState::Pending, now, out);
        }
    }

    /// Why releases stop now, and whether it is a freeze (which also stops advancing).
    fn hold(&self, world: &World) -> Option<(String, bool)> {
        if let Some((reason, until)) = world.frozen() {
            return Some((
                format!(
                    "inside a freeze window until {}: {reason}",
                    crate::domain::desired::rfc3339(until)
                ),
                true,
            ));
        }
        let h = self.policy.allowed_hours?;
        (!h.contains(world.now_ms)).then(|| (format!("outside the allowed hours {h}"), false))
    }

    /// After every input: pause on failures, advance done waves, release.
    ///
    /// `failed`: the waves in which this input recorded a failure. Each is
    /// judged on its own counts, the current wave and earlier ones alike: a
    /// wave advances at its success threshold while some of its devices
    /// are still on their way, and a canary device that rolls back after
    /// the canary was done must still stop the rollout.
    fn settle(
        &mut self,
        world: &World,
        failed: &BTreeSet<usize>,
        mut release: bool,
        out: &mut Vec<Decision>,
    ) {
        let now = world.now_ms;
        if self.status.phase == Phase::Running {
            let current = self.status.wave;
            if let Some(reason) = failed
                .iter()
                .filter(|w| **w <= current)
                .find_map(|w| self.above_failure_threshold(*w))
            {
                self.pause(reason, out);
            }
        }
        // Depends only on the world and the policy: once for this input.
        let hold = self.hold(world);
        let frozen = hold.as_ref().is_some_and(|(_, f)| *f);
        while self.status.phase == Phase::Running && !frozen && self.wave_done(self.status.wave) {
            let w = self.status.wave;
            let c = self.wave_counters(w);
            out.push(Decision::WaveDone(w));
            let done = format!(
                "wave {} ({}) done: {} of {} succeeded",
                w + 1,
                self.names[w],
                c.succeeded,
                c.non_skipped()
            );
            if w + 1 < self.names.len() {
                self.status.wave = w + 1;
                out.push(Decision::Status {
                    note: format!("{done}; wave {} ({}) started", w + 2, self.names[w + 1]),
                });
                out.push(Decision::WaveStarted(w + 1));
            } else {
                self.status.phase = Phase::Completed;
                self.status.finished_ms = Some(now);
                out.push(Decision::Status {
                    note: format!("{done}; completed"),
                });
                out.push(Decision::Completed);
            }
            release = true;
        }
        let held = match self.status.phase {
            Phase::Running => hold.map(|(h, _)| h),
            Phase::Completed if self.pending_total > 0 => hold.map(|(h, _)| h),
            _ => None,
        };
        if held != self.status.held {
            let releasing = matches!(self.status.phase, Phase::Running | Phase::Completed);
            let note = match &held {
                Some(h) => Some(format!("held: {h}")),
                None if releasing => Some("no longer held".to_owned()),
                // Paused or aborted in this call: that status change says it.
                None => None,
            };
            self.status.held = held;
            out.extend(note.map(|note| Decision::Status { note }));
        }
        if release && self.status.held.is_none() {
            let upto = match self.status.phase {
                Phase::Running => self.status.wave,
                Phase::Completed => self.names.len() - 1,
                _ => return,
            };
            self.release(upto, world, out);
        }
    }

    fn wave_done(&self, w: usize) -> bool {
        let c = self.wave_counters(w);
        let n = c.non_skipped();
        n == 0 || f64::from(c.succeeded) * 100.0 >= self.policy.success_threshold_pct * f64::from(n)
    }

    fn above_failure_threshold(&self, w: usize) -> Option<String> {
        let c = self.wave_counters(w);
        let (f, n) = (c.failures(), c.non_skipped());
        let thr = self.policy.failure_threshold_pct;
        (n > 0 && f64::from(f) * 100.0 > thr * f64::from(n)).then(|| {
            format!(
                "wave {} ({}): {f} of {n} devices failed ({:.1}%), above the {thr}% threshold",
                w + 1,
                self.names[w],
                f64::from(f) * 100.0 / f64::from(n)
            )
        })
    }

    /// Release online pending members of waves `..=upto`, per province
    /// while it has a free download slot.
    fn release(&mut self, upto: usize, world: &World, out: &mut Vec<Decision>) {
        if self.pending_total == 0 {
            return;
        }
        let limit = self.policy.max_downloads_per_province;
        let mut picked = Vec::new();
        for p in 0..PROVINCES {
            let free = if limit == 0 {
                usize::MAX
            } else {
                let others = u8::try_from(p)
                    .ok()
                    .and_then(ProvinceCode::from_number)
                    .map_or(0, |c| (world.elsewhere)(c));
                usize::try_from(limit.saturating_sub(self.slots[p].saturating_add(others)))
                    .unwrap_or(usize::MAX)
            };
            if free == 0 {
                continue;
            }
            let start = picked.len();
            for (&(w, ref device), &i) in &self.pending[p] {
                if w > upto || picked.len() - start == free {
                    break;
                }
                if (world.online)(device) {
                    picked.push(i);
                }
            }
        }
        for i in picked {
            self.members[i].released_ms = Some(world.now_ms);
            self.members[i].message.clear();
            out.push(Decision::Release {
                device: self.members[i].device.clone(),
                attempt: self.members[i].attempt,
            });
            self.set(i, DevState::Released, world.now_ms, out);
        }
    }
}
