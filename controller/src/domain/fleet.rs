//! The in-memory fleet (pure): every registered device with what it last
//! reported and its readiness, and readiness counts per province and county
//! kept up to date incrementally (a change moves one device between two
//! buckets; nothing is recounted).

use std::collections::{BTreeMap, HashMap};

use fleet_protocol::{
    ArtifactKind, CountyCode, Desired, DeviceId, Envelope, Event, FreezeWindow, Health, Model,
    Payload, PresenceStatus, ProvinceCode, State, StationId, TopicKind, UpdatePhase, Version,
};
use serde::{Deserialize, Serialize};

use crate::domain::lifecycle::{Lifecycle, Rules};
use crate::domain::links::{LinkReport, LinkState, Links};
use crate::domain::readiness::{classify, Counts, Inputs, Outage, Readiness, Reason, TrackState};
use crate::domain::updates::{Outcome, Track};

/// How far ahead of the controller's clock a device's clock is believed when
/// its states are ordered. Enough for an NTP-synced device and a slow link
/// (a redelivered older state is still recognised as older); small enough
/// that a state sent with the clock far ahead (an hour, a year) holds back
/// only the states sent within these few seconds after it arrived, not every
/// later one.
pub const MAX_CLOCK_AHEAD_MS: u64 = 5_000;

/// Where a state sent at `sent_at_ms` (device clock) and received at
/// `received_ms` (controller clock) sits in its device's order: the device's
/// clock, bounded by the controller's.
pub fn order_key(sent_at_ms: u64, received_ms: u64) -> u64 {
    sent_at_ms.min(received_ms.saturating_add(MAX_CLOCK_AHEAD_MS))
}

/// What the operator said about a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub id: DeviceId,
    pub model: Model,
    pub province: ProvinceCode,
    pub county: Option<CountyCode>,
    pub station: Option<StationId>,
    pub lifecycle: Lifecycle,
    pub registered_at_ms: u64,
}

/// What the device said about itself, as last received.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub last_seen_ms: Option<u64>,
    pub presence: Option<PresenceStatus>,
    /// The connection id of the last accepted presence (see `Presence::session`).
    #[serde(default)]
    pub session: Option<u64>,
    /// When the state held here was sent, as far as the controller believes
    /// the device: its clock, but never later than [`MAX_CLOCK_AHEAD_MS`]
    /// past the controller's receive time (see [`order_key`]).
    #[serde(default)]
    pub state_sent_at_ms: Option<u64>,
    pub state: Option<State>,
    pub health: Option<Health>,
    pub health_at_ms: Option<u64>,
    /// When the health held was sampled, as far as the controller believes
    /// the device (the end of its window for samples coalesced offline,
    /// bounded like states by [`order_key`]): an older health arriving
    /// late does not replace it.
    #[serde(default)]
    pub health_sampled_ms: Option<u64>,
}

/// When a health report was sampled by the device's clock: the end of its
/// window when it stands for samples coalesced offline, else when it was sent.
pub fn health_sampled_at(h: &Health, sent_at_ms: u64) -> u64 {
    h.window
        .as_ref()
        .map_or(sent_at_ms, |w| w.to_ms.min(sent_at_ms))
}

/// How a device's message reached the central broker: directly (`None`)
/// or through a provincial broker's bridge (`Some("bridge.NAME")`).
pub type Route = Option<String>;

/// What is needed to send a device something: its province (whose route
/// the tier knows) and how it was last heard, if it was since the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    pub province: ProvinceCode,
    /// `None`: not heard since the controller started.
    pub heard: Option<Route>,
}

impl Reach {
    /// A device not heard since the start: its province's route.
    pub fn province(province: ProvinceCode) -> Self {
        Self {
            province,
            heard: None,
        }
    }
}

/// Digests of a device's last processed retained reports (presence,
/// state), in memory only: a provincial broker's bridge re-queues a copy
/// of every retained report on each reconnect attempt during an uplink
/// outage (Mosquitto 2.0.11, eclipse/mosquitto#2248), and the flush after
/// it must not push the device over its rate limit (see
/// [`Fleet::holds_report`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportDigests {
    presence: Option<u64>,
    state: Option<u64>,
    /// The session of the last "offline" heard, current or not: that
    /// connection is over, and an "online" of it arriving later is a late
    /// copy, not a new connection.
    ended_session: Option<u64>,
}

/// The digest of a report's bytes (SipHash with fixed keys: a device that
/// forged a collision would only hide its own report).
pub fn report_digest(payload: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    h.write(payload);
    h.finish()
}

#[derive(Debug, Clone)]
pub struct Device {
    pub reg: Registration,
    pub status: Status,
    /// Its last processed presence and state, by digest.
    pub reports: ReportDigests,
    /// How its last accepted message (not an older one arriving late)
    /// reached the central broker; `None` until it is heard after the
    /// start. In memory only: everything sent to the device goes back the
    /// same way (a device enrolled before the tier keeps connecting to the
    /// central broker).
    pub heard: Option<Route>,
    /// `None` is ready.
    pub reason: Option<Reason>,
    /// What the controller stored as this device's desired state (`None`:
    /// nothing, the default; see `domain::desired`).
    pub desired: Option<Desired>,
    /// Its last firmware update, as the store writer tracked it from its
    /// events.
    pub track: Option<Track>,
    /// Its last agent update (held apart: an agent update must not hide
    /// a failed firmware update).
    pub agent_track: Option<Track>,
}

impl Device {
    /// Where to send it what the controller tells it.
    pub fn reach(&self) -> Reach {
        Reach {
            province: self.reg.province,
            heard: self.heard.clone(),
        }
    }

    /// Where the device's last updates stand against its desired targets:
    /// failed when either failed, else running when either runs.
    fn track_state(&self) -> TrackState {
        let both = [self.track.as_ref(), self.agent_track.as_ref()].map(|t| self.state_of(t));
        if both.contains(&TrackState::Failed) {
            TrackState::Failed
        } else if both.contains(&TrackState::Running) {
            TrackState::Running
        } else {
            TrackState::None
        }
    }

    /// Where one update stands against its desired target.
    fn state_of(&self, track: Option<&Track>) -> TrackState {
        let (Some(t), Some(desired)) = (track, self.desired.as_ref()) else {
            return TrackState::None;
        };
        let target = match t.artifact {
            ArtifactKind::Firmware => desired.firmware.as_ref(),
            ArtifactKind::Agent => desired.agent.as_ref(),
        };
        if target.is_none_or(|target| target.version != t.version) {
            return TrackState::None;
        }
        let running = self.status.state.as_ref().map(|s| match t.artifact {
            ArtifactKind::Firmware => &s.firmware,
            ArtifactKind::Agent => &s.agent,
        });
        match t.outcome {
            None if t.phase == Some(UpdatePhase::Frozen) => TrackState::None,
            None => TrackState::Running,
            Some(Outcome::RolledBack | Outcome::Failed | Outcome::TimedOut)
                if running != Some(&t.version) =>
            {
                TrackState::Failed
            }
            Some(_) => TrackState::None,
        }
    }

    fn inputs<'a>(&'a self, baseline: Option<&'a Version>, outage: Option<Outage>) -> Inputs<'a> {
        let state = self.status.state.as_ref();
        Inputs {
            enrolled: self.reg.lifecycle.is_enrolled(),
            assigned: self.reg.county.is_some(),
            reported: state.is_some(),
            last_seen_ms: self.status.last_seen_ms,
            presence: self.status.presence,
            update: state.map(|s| s.update),
            firmware: state.map(|s| &s.firmware),
            baseline,
            checks_pass: state.is_none_or(State::all_checks_pass),
            track: self.track_state(),
            outage,
        }
    }
}

/// What an accepted message changed.
#[derive(Debug, Default, PartialEq)]
pub struct Observed {
    /// The device just said it is online: re-send its desired state.
    pub came_online: bool,
    /// An event to store (idempotent by sequence number).
    pub event: Option<Event>,
    pub reason_before: Option<Reason>,
    pub reason_after: Option<Reason>,
    /// An outdated last will, ignored.
    pub stale: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device {0} is not registered")]
pub struct UnknownDevice(pub DeviceId);

/// Filters for listing devices.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeviceFilter {
    pub province: Option<ProvinceCode>,
    pub county: Option<CountyCode>,
    pub station: Option<StationId>,
    pub model: Option<Model>,
    /// A reason name, or `ready`.
    pub readiness: Option<Readiness>,
}

impl DeviceFilter {
    pub fn matches(&self, d: &Device) -> bool {
        self.province.is_none_or(|p| d.reg.province == p)
            && self
                .county
                .as_ref()
                .is_none_or(|c| d.reg.county.as_ref() == Some(c))
            && self
                .station
                .as_ref()
                .is_none_or(|s| d.reg.station.as_ref() == Some(s))
            && self.model.as_ref().is_none_or(|m| &d.reg.model == m)
            && self.readiness.is_none_or(|want| d.reason == want.reason())
    }
}

type CountyKey = (ProvinceCode, Option<CountyCode>);

pub struct Fleet {
    devices: BTreeMap<DeviceId, Device>,
    baselines: HashMap<Model, Version>,
    tally: Tally,
    freshness_ms: u64,
    /// The fleet's freeze windows, carried by every desired state sent.
    freeze: Vec<FreezeWindow>,
    /// The provincial brokers' bridge links.
    links: Links,
}

impl Fleet {
    pub fn new(freshness_ms: u64) -> Self {
        Self {
            devices: BTreeMap::new(),
            baselines: HashMap::new(),
            tally: Tally {
                provinces: [Counts::default(); 31],
                counties: BTreeMap::new(),
            },
            freshness_ms,
            freeze: Vec::new(),
            links: Links::default(),
        }
    }

    /// The provincial tier: each broker by name with the provinces it
    /// serves (their links are unknown until reported).
    pub fn set_tier(&mut self, brokers: impl IntoIterator<Item = (String, Vec<ProvinceCode>)>) {
        self.links = Links::new(brokers);
    }

    /// A provincial broker reports its bridge link up or down: the devices
    /// of its provinces are judged again (and no other). Returns what the
    /// report did and how many devices changed readiness.
    ///
    /// A first report after the start that says "down" dates the outage
    /// from the newest report of a device behind the broker (devices heard
    /// directly on the central broker since the start are not behind it).
    pub fn link_report(&mut self, broker: &str, up: bool, now_ms: u64) -> (LinkReport, usize) {
        let devices = &self.devices;
        let report = self
            .links
            .report_seen(broker, up, now_ms, self.freshness_ms, |provinces| {
                devices
                    .values()
                    .filter(|d| provinces.contains(&d.reg.province))
                    .filter(|d| d.heard != Some(None))
                    .filter_map(|d| d.status.last_seen_ms)
                    .max()
            });
        let LinkReport::Changed { provinces, .. } = &report else {
            return (report, 0);
        };
        let (baselines, tally, links, fresh) = (
            &self.baselines,
            &mut self.tally,
            &self.links,
            self.freshness_ms,
        );
        let changed = self
            .devices
            .values_mut()
            .filter(|d| provinces.contains(&d.reg.province))
            .map(|d| judge(d, baselines, tally, links, now_ms, fresh))
            .filter(|(before, after)| before != after)
            .count();
        (report, changed)
    }

    /// The bridge link of the provincial broker serving `province`: its
    /// name and state, once it reported.
    pub fn link_of(&self, province: ProvinceCode) -> Option<(&str, LinkState)> {
        self.links.status_of(province)
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    pub fn freshness_ms(&self) -> u64 {
        self.freshness_ms
    }

    pub fn get(&self, id: &DeviceId) -> Option<&Device> {
        self.devices.get(id)
    }

    pub fn baselines(&self) -> &HashMap<Model, Version> {
        &self.baselines
    }

    /// Add or replace a device (registration or start-up load).
    pub fn upsert(&mut self, reg: Registration, status: Status, now_ms: u64) {
        let mut desired = None;
        let mut track = None;
        let mut agent_track = None;
        let mut heard = None;
        let mut reports = ReportDigests::default();
        if let Some(old) = self.devices.remove(&reg.id) {
            self.tally.remove(&old.reg, old.reason);
            desired = old.desired;
            track = old.track;
            agent_track = old.agent_track;
            heard = old.heard;
            reports = old.reports;
        }
        let mut d = Device {
            reg,
            status,
            reports,
            heard,
            reason: None,
            desired,
            track,
            agent_track,
        };
        let outage = self
            .links
            .outage_of(d.reg.province, now_ms, self.freshness_ms);
        d.reason = classify(
            &d.inputs(self.baselines.get(&d.reg.model), outage),
            now_ms,
            self.freshness_ms,
        );
        self.tally.add(&d.reg, d.reason);
        self.devices.insert(d.reg.id.clone(), d);
    }

    /// Change only a device's lifecycle (the rest of its registration may
    /// have changed meanwhile).
    pub fn set_lifecycle(&mut self, id: &DeviceId, lifecycle: Lifecycle, now_ms: u64) {
        if let Some(d) = self.devices.get_mut(id) {
            d.reg.lifecycle = lifecycle;
        }
        self.reclassify(id, now_ms);
    }

    /// Re-register a device, keeping what it reported.
    /// Register a device. An existing device keeps its lifecycle and its
    /// first registration time: registration never moves a device through
    /// its life, however calls interleave.
    pub fn register(&mut self, mut reg: Registration, now_ms: u64) {
        let status = match self.devices.get(&reg.id) {
            Some(d) => {
                reg.lifecycle = d.reg.lifecycle;
                reg.registered_at_ms = d.reg.registered_at_ms;
                d.status.clone()
            }
            None => Status::default(),
        };
        self.upsert(reg, status, now_ms);
    }

    fn reclassify(
        &mut self,
        id: &DeviceId,
        now_ms: u64,
    ) -> Option<(Option<Reason>, Option<Reason>)> {
        let d = self.devices.get_mut(id)?;
        Some(judge(
            d,
            &self.baselines,
            &mut self.tally,
            &self.links,
            now_ms,
            self.freshness_ms,
        ))
    }

    /// Whether `payload` on `kind` is byte for byte the last presence or
    /// state processed for `device` (a copy a bridge re-queued: processing
    /// it again changes nothing the fleet holds). Other kinds: never.
    pub fn holds_report(&self, device: &DeviceId, kind: TopicKind, digest: u64) -> bool {
        self.devices.get(device).is_some_and(|d| match kind {
            TopicKind::Presence => d.reports.presence == Some(digest),
            TopicKind::State => d.reports.state == Some(digest),
            _ => false,
        })
    }

    /// Remember the digest of the presence or state just processed for
    /// `device` (other kinds are not kept).
    pub fn note_report(&mut self, device: &DeviceId, kind: TopicKind, digest: u64) {
        if let Some(d) = self.devices.get_mut(device) {
            match kind {
                TopicKind::Presence => d.reports.presence = Some(digest),
                TopicKind::State => d.reports.state = Some(digest),
                _ => {}
            }
        }
    }

    /// Apply a validated message from a device that reached the central
    /// broker directly.
    pub fn observe(&mut self, env: &Envelope, now_ms: u64) -> Result<Observed, UnknownDevice> {
        self.observe_via(env, None, now_ms)
    }

    /// Apply a validated message from a device, which reached the central
    /// broker on `via` (`None`: directly; `Some(bridge identity)`): unless
    /// it is older than what is held, the device is reached that way from
    /// now on.
    pub fn observe_via(
        &mut self,
        env: &Envelope,
        via: Option<&str>,
        now_ms: u64,
    ) -> Result<Observed, UnknownDevice> {
        let d = self
            .devices
            .get_mut(&env.device)
            .ok_or_else(|| UnknownDevice(env.device.clone()))?;
        let mut out = Observed::default();
        match &env.payload {
            Payload::Presence(p) => {
                // A presence speaks for one connection (its session). An
                // "online" of a connection we have not seen is news: a new
                // connection, whatever its number (a device's clock may have
                // gone back). An "offline" counts only for the connection we
                // hold as current: a late will of an older connection, or a
                // repeat, is not news.
                // An "online" of a connection whose end we already heard
                // (its goodbye or will came first, or a copy of it arrives
                // late through a bridge) is not news either.
                let ended = p.status == PresenceStatus::Online
                    && p.session.is_some()
                    && d.reports.ended_session == p.session;
                let stale = ended
                    || match (p.session, d.status.session) {
                        (Some(new), Some(held)) => match p.status {
                            PresenceStatus::Online => new == held && d.status.presence.is_some(),
                            PresenceStatus::Offline => {
                                new != held || d.status.presence == Some(PresenceStatus::Offline)
                            }
                        },
                        _ => false,
                    };
                if p.status == PresenceStatus::Offline && p.session.is_some() {
                    d.reports.ended_session = p.session;
                }
                if stale {
                    out.stale = true;
                } else {
                    out.came_online = p.status == PresenceStatus::Online;
                    if out.came_online && p.session != d.status.session {
                        // A new connection: judge its states' order afresh
                        // (its clock may differ from the last connection's).
                        d.status.state_sent_at_ms = None;
                    }
                    d.status.presence = Some(p.status);
                    d.status.session = p.session.or(d.status.session);
                }
            }
            Payload::State(s) => {
                // The held state's place is bounded by when we received it,
                // so a clock far ahead cannot hold back later states.
                if d.status
                    .state_sent_at_ms
                    .is_some_and(|held| held >= env.sent_at_ms)
                {
                    // Redelivered, or older than the one held: keep the newer.
                    out.stale = true;
                } else {
                    d.status.state = Some(s.clone());
                    d.status.state_sent_at_ms = Some(order_key(env.sent_at_ms, now_ms));
                }
            }
            Payload::Health(h) => {
                let sampled = order_key(health_sampled_at(h, env.sent_at_ms), now_ms);
                if h.window.is_some()
                    && d.status
                        .health_sampled_ms
                        .is_some_and(|held| held > sampled)
                {
                    // Samples coalesced while offline, older than the
                    // current health held: history, not the present. (A
                    // live sample always replaces: a device clock set back
                    // must not freeze its health.)
                    out.stale = true;
                } else {
                    d.status.health = Some(h.clone());
                    d.status.health_at_ms = Some(now_ms);
                    d.status.health_sampled_ms = Some(sampled);
                }
            }
            Payload::Event(e) => out.event = Some(e.clone()),
            Payload::Desired(_)
            | Payload::Command(_)
            | Payload::CertRequest(_)
            | Payload::CertIssued(_) => {}
        }
        if !out.stale {
            d.status.last_seen_ms = Some(now_ms);
            if d.heard.as_ref().is_none_or(|held| held.as_deref() != via) {
                d.heard = Some(via.map(str::to_owned));
            }
        }
        let (before, after) = self.reclassify(&env.device, now_ms).expect("device exists");
        out.reason_before = before;
        out.reason_after = after;
        Ok(out)
    }

    /// Hold a device's desired state (after the store recorded it) and
    /// judge the device again (its readiness compares tracks with it).
    pub fn set_desired(&mut self, id: &DeviceId, desired: Desired, now_ms: u64) {
        if let Some(d) = self.devices.get_mut(id) {
            d.desired = Some(desired);
        }
        self.reclassify(id, now_ms);
    }

    /// Hold a device's last update track of its artifact (from the store
    /// writer, after its commit) and judge the device again.
    pub fn set_track(&mut self, id: &DeviceId, track: Track, now_ms: u64) {
        if let Some(d) = self.devices.get_mut(id) {
            match track.artifact {
                ArtifactKind::Firmware => d.track = Some(track),
                ArtifactKind::Agent => d.agent_track = Some(track),
            }
        }
        self.reclassify(id, now_ms);
    }

    /// Devices in service with a stored desired state, and that state
    /// with the freeze windows: what is sent again when the broker may have
    /// lost every retained message, or when the freeze windows change.
    pub fn stored_desired(&self) -> Vec<(DeviceId, Desired)> {
        self.devices
            .values()
            .filter(|d| d.reg.lifecycle.is_enrolled())
            .filter_map(|d| {
                let stored = d.desired.as_ref()?;
                Some((
                    d.reg.id.clone(),
                    crate::domain::desired::desired_of(Some(stored), &self.freeze),
                ))
            })
            .collect()
    }

    /// What is sent to a device as its desired state: the stored one (or
    /// the default) with the fleet's freeze windows.
    pub fn desired_for(&self, id: &DeviceId) -> Option<Desired> {
        let d = self.devices.get(id)?;
        Some(crate::domain::desired::desired_of(
            d.desired.as_ref(),
            &self.freeze,
        ))
    }

    /// The fleet's freeze windows.
    pub fn freeze(&self) -> &[FreezeWindow] {
        &self.freeze
    }

    /// Replace the freeze windows (after the store recorded them).
    pub fn set_freeze(&mut self, windows: Vec<FreezeWindow>) {
        self.freeze = windows;
    }

    /// Set a model's baseline firmware; every device of the model is judged again.
    pub fn set_baseline(&mut self, model: Model, version: Version, now_ms: u64) {
        self.baselines.insert(model.clone(), version);
        let ids: Vec<DeviceId> = self
            .devices
            .values()
            .filter(|d| d.reg.model == model)
            .map(|d| d.reg.id.clone())
            .collect();
        for id in ids {
            self.reclassify(&id, now_ms);
        }
    }

    /// Judge every device again for the passage of time (freshness window,
    /// and a link's outage that stops mattering a window after its return).
    /// Returns how many changed.
    pub fn tick(&mut self, now_ms: u64) -> usize {
        let (baselines, tally, links, fresh) = (
            &self.baselines,
            &mut self.tally,
            &self.links,
            self.freshness_ms,
        );
        self.devices
            .values_mut()
            .map(|d| judge(d, baselines, tally, links, now_ms, fresh))
            .filter(|(before, after)| before != after)
            .count()
    }

    pub fn province_counts(&self, p: ProvinceCode) -> Counts {
        self.tally.provinces[usize::from(p.number())]
    }

    /// Counts per county (devices without a county under `None`), optionally
    /// for one province.
    pub fn county_counts(
        &self,
        province: Option<ProvinceCode>,
    ) -> impl Iterator<Item = (&CountyKey, &Counts)> {
        self.tally
            .counties
            .iter()
            .filter(move |((p, _), _)| province.is_none_or(|want| *p == want))
    }

    pub fn devices<'a>(&'a self, filter: &'a DeviceFilter) -> impl Iterator<Item = &'a Device> {
        self.devices.values().filter(move |d| filter.matches(d))
    }
}

/// Readiness counts per province and per (province, county).
struct Tally {
    provinces: [Counts; 31],
    counties: BTreeMap<CountyKey, Counts>,
}

impl Tally {
    fn add(&mut self, reg: &Registration, reason: Option<Reason>) {
        self.provinces[usize::from(reg.province.number())].add(reason);
        self.counties
            .entry((reg.province, reg.county.clone()))
            .or_default()
            .add(reason);
    }

    fn remove(&mut self, reg: &Registration, reason: Option<Reason>) {
        self.provinces[usize::from(reg.province.number())].remove(reason);
        let key = (reg.province, reg.county.clone());
        if let Some(c) = self.counties.get_mut(&key) {
            c.remove(reason);
            if c.total == 0 {
                self.counties.remove(&key);
            }
        }
    }
}

/// Judge one device again; move its count if its readiness changed.
fn judge(
    d: &mut Device,
    baselines: &HashMap<Model, Version>,
    tally: &mut Tally,
    links: &Links,
    now_ms: u64,
    freshness_ms: u64,
) -> (Option<Reason>, Option<Reason>) {
    let before = d.reason;
    let outage = links.outage_of(d.reg.province, now_ms, freshness_ms);
    let after = classify(
        &d.inputs(baselines.get(&d.reg.model), outage),
        now_ms,
        freshness_ms,
    );
    if before != after {
        tally.remove(&d.reg, before);
        d.reason = after;
        tally.add(&d.reg, after);
    }
    (before, after)
}

#[cfg(test)]
mod tests;
