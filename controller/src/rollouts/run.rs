//! The loop: owns every engine, feeds them, does what they decide.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use fleet_api::types::{RolloutAction, RolloutRequest};
use fleet_protocol::{
    ArtifactKind, DeviceId, FreezeWindow, PresenceStatus, ProvinceCode, TargetFirmware,
};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use super::spec::{self, Spec};
use super::view::{self, Meta};
use super::{Deps, Request, RolloutError, RolloutsConfig, Scope};
use crate::access::Caller;
use crate::clock::unix_ms;
use crate::domain::rollout::{
    Candidate, Counters, Decision, DevState, Engine, EngineError, Input, Member, Phase, Status,
    World,
};
use crate::domain::rollout_select::{self, Selected};
use crate::domain::updates::Track;
use crate::store::{LogLine, RolloutChanges, StoredMember, StoredRollout, StoredStatus};

/// How many log lines a rollout's view carries.
const VIEW_LOG_LINES: u32 = 50;
/// How many devices an overlap refusal names.
const OVERLAP_NAMED: usize = 5;
/// How many device ids one audit entry of the loop's own names.
const AUDITED_IDS: usize = 500;

struct Live {
    meta: Meta,
    engine: Engine,
}

impl Live {
    fn artifact(&self) -> ArtifactKind {
        self.meta.spec.target.artifact
    }

    fn phase(&self) -> Phase {
        self.engine.status().phase
    }
}

/// An aborted rollout: no engine held (at 100,000 members it would be
/// memory for nothing), only what its summary needs; its members are read
/// from the store when it is shown.
struct Dormant {
    meta: Meta,
    status: Status,
    wave_count: usize,
    /// Its counters per province (a scoped summary adds its own).
    provinces: BTreeMap<ProvinceCode, Counters>,
    /// Its members that are pending stragglers of an older completed
    /// rollout of the same artifact: the older one must not release them.
    holds: BTreeSet<DeviceId>,
}

pub(super) struct Loop {
    deps: Deps,
    rollouts: BTreeMap<u64, Live>,
    dormant: BTreeMap<u64, Dormant>,
    next_id: u64,
    ticks: u64,
    freeze: Vec<(FreezeWindow, String)>,
    dirty_members: BTreeMap<u64, BTreeSet<DeviceId>>,
    dirty_status: BTreeSet<u64>,
    log: Vec<LogLine>,
    /// Stragglers of completed rollouts whose desired target someone else
    /// set after the rollout completed: never released by that rollout.
    handed_over: BTreeSet<(u64, DeviceId)>,
}

fn stored_status(s: &Status) -> StoredStatus {
    StoredStatus {
        phase: s.phase.as_str().to_owned(),
        wave: u32::try_from(s.wave).unwrap_or(u32::MAX),
        paused_reason: s.paused_reason.clone(),
        held: s.held.clone(),
        started_ms: s.started_ms,
        finished_ms: s.finished_ms,
    }
}

fn stored_member(m: &Member) -> StoredMember {
    StoredMember {
        device: m.device.clone(),
        province: m.province,
        wave: u32::try_from(m.wave).unwrap_or(u32::MAX),
        state: m.state.as_str().to_owned(),
        attempt: m.attempt,
        released_ms: m.released_ms,
        message: m.message.clone(),
    }
}

/// Members as stored, as the engine takes them (a row that no longer
/// parses is left out).
fn members_of(stored: Vec<StoredMember>) -> Vec<Member> {
    stored
        .into_iter()
        .filter_map(|m| {
            Some(Member {
                state: DevState::parse(&m.state)?,
                device: m.device,
                province: m.province,
                wave: usize::try_from(m.wave).ok()?,
                attempt: m.attempt,
                released_ms: m.released_ms,
                message: m.message,
            })
        })
        .collect()
}

/// The log's kind of a status note.
fn kind_of(note: &str) -> &str {
    if note.ends_with("completed") {
        "completed"
    } else if note.starts_with("wave ") {
        "wave-started"
    } else if note.starts_with("no longer held") {
        "unheld"
    } else {
        note.split([':', ' ', ';']).next().unwrap_or("status")
    }
}

fn candidate(s: Selected) -> Candidate {
    Candidate {
        device: s.device,
        province: s.province,
        skip: s.skip,
        online: s.online,
    }
}

fn is_online(fleet: &crate::domain::fleet::Fleet, d: &DeviceId) -> bool {
    fleet
        .get(d)
        .is_some_and(|x| x.status.presence == Some(PresenceStatus::Online))
}

impl Loop {
    /// Every rollout from the store; the tracks of released members fed again.
    pub(super) async fn restore(deps: Deps) -> Result<Self, RolloutError> {
        let stored = deps.store.rollouts(true).await?;
        let freeze = deps.store.freeze_windows_with_reasons().await?;
        let mut me = Loop {
            next_id: stored.iter().map(|r| r.id).max().unwrap_or(0) + 1,
            deps,
            rollouts: BTreeMap::new(),
            dormant: BTreeMap::new(),
            ticks: 0,
            freeze,
            dirty_members: BTreeMap::new(),
            dirty_status: BTreeSet::new(),
            log: Vec::new(),
            handed_over: BTreeSet::new(),
        };
        for r in stored {
            let request: RolloutRequest = match serde_json::from_str(&r.spec_json) {
                Ok(q) => q,
                Err(e) => {
                    error!(rollout = r.id, error = %e, "cannot read a stored rollout's request; it is left out");
                    continue;
                }
            };
            let spec = match spec::parse(&request) {
                Ok(s) => s,
                Err(e) => {
                    error!(rollout = r.id, errors = ?e, "a stored rollout's request no longer parses; it is left out");
                    continue;
                }
            };
            let Some(phase) = Phase::parse(&r.status.phase) else {
                error!(rollout = r.id, phase = %r.status.phase, "unknown stored phase; left out");
                continue;
            };
            let members = members_of(me.deps.store.rollout_members(r.id).await?);
            let status = Status {
                phase,
                wave: usize::try_from(r.status.wave).unwrap_or(0),
                paused_reason: r.status.paused_reason.clone(),
                held: r.status.held.clone(),
                started_ms: r.status.started_ms,
                finished_ms: r.status.finished_ms,
            };
            let engine = Engine::restore(r.id, spec.policy.clone(), &spec.waves, status, members);
            me.rollouts.insert(
                r.id,
                Live {
                    meta: Meta {
                        id: r.id,
                        request,
                        spec,
                        created_ms: r.created_ms,
                        created_by: r.created_by,
                    },
                    engine,
                },
            );
            if phase == Phase::Aborted {
                me.put_to_sleep(r.id);
            }
        }
        let live = me.rollouts.len();
        // What happened while the controller was down: every device's
        // current track, fed again (the engine ignores what it knows).
        let tracks = me.deps.store.device_updates().await?;
        for (device, track) in tracks {
            me.track(device, track).await;
        }
        me.republish_released().await;
        me.flush().await;
        info!(rollouts = live, "rollouts restored");
        Ok(me)
    }

    /// An aborted rollout gives up its engine.
    fn put_to_sleep(&mut self, id: u64) {
        let Some(live) = self.rollouts.remove(&id) else {
            return;
        };
        let artifact = live.artifact();
        let older: Vec<&Live> = self
            .rollouts
            .range(..id)
            .map(|(_, o)| o)
            .filter(|o| o.artifact() == artifact && o.phase() == Phase::Completed)
            .collect();
        let holds = live
            .engine
            .members()
            .filter(|m| {
                older.iter().any(|o| {
                    o.engine
                        .member(&m.device)
                        .is_some_and(|x| x.state == DevState::Pending)
                })
            })
            .map(|m| m.device.clone())
            .collect();
        self.dormant.insert(
            id,
            Dormant {
                status: live.engine.status().clone(),
                wave_count: live.engine.wave_names().len(),
                provinces: live.engine.province_counters(None),
                holds,
                meta: live.meta,
            },
        );
    }

    /// A dormant rollout's engine, from the store, for one read.
    async fn wake(&self, id: u64) -> Result<Option<Live>, RolloutError> {
        let Some(d) = self.dormant.get(&id) else {
            return Ok(None);
        };
        let members = members_of(self.deps.store.rollout_members(id).await?);
        let spec = &d.meta.spec;
        Ok(Some(Live {
            meta: d.meta.clone(),
            engine: Engine::restore(
                id,
                spec.policy.clone(),
                &spec.waves,
                d.status.clone(),
                members,
            ),
        }))
    }

    pub(super) async fn run(
        mut self,
        cfg: RolloutsConfig,
        mut requests: mpsc::Receiver<Request>,
        mut tracks: super::TrackReceiver,
        stop: Option<watch::Receiver<bool>>,
    ) {
        let stopped = async move {
            match stop {
                Some(mut s) => {
                    let _ = s.wait_for(|stop| *stop).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(stopped);
        let mut every = tokio::time::interval(cfg.tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut stopped => break,
                _ = every.tick() => {
                    let started = Instant::now();
                    self.tick(cfg).await;
                    metrics::histogram!("fleet_rollout_tick_seconds")
                        .record(started.elapsed().as_secs_f64());
                }
                r = requests.recv() => match r {
                    Some(r) => self.request(r).await,
                    None => break,
                },
                Some((device, track)) = tracks.recv() => self.track(device, track).await,
            }
        }
        // What arrived before the stop is still ours.
        while let Ok((device, track)) = tracks.try_recv() {
            self.track(device, track).await;
        }
        self.flush().await;
    }

    /// Feed one engine one input with the world as it is now.
    fn feed(&mut self, id: u64, input: Input) -> Result<Vec<Decision>, EngineError> {
        let now = unix_ms();
        let Some(mut live) = self.rollouts.remove(&id) else {
            return Ok(Vec::new());
        };
        let result = {
            let fleet = self
                .deps
                .fleet
                .read()
                .expect("fleet lock is never poisoned");
            let artifact = live.artifact();
            let completed = live.phase() == Phase::Completed;
            let rollouts = &self.rollouts;
            let handed_over = &self.handed_over;
            let dormant = &self.dormant;
            // A completed rollout's stragglers that a newer rollout of the
            // same artifact holds (started, in any phase, the device in any
            // state: aborted and skipped too), or whose desired target was
            // set by someone else after it completed, are not its own: it
            // sees them as offline and never releases them.
            let online = |d: &DeviceId| {
                is_online(&fleet, d)
                    && !(completed
                        && (handed_over.contains(&(id, d.clone()))
                            || rollouts.range(id + 1..).any(|(_, o)| {
                                o.artifact() == artifact
                                    && o.phase() != Phase::Draft
                                    && o.engine.member(d).is_some()
                            })
                            || dormant.range(id + 1..).any(|(_, o)| {
                                o.meta.spec.target.artifact == artifact && o.holds.contains(d)
                            })))
            };
            // Download slots are the province's, whichever rollout holds
            // them: those of every other live rollout count.
            let elsewhere = |p: ProvinceCode| -> u32 {
                rollouts
                    .values()
                    .filter(|o| !matches!(o.phase(), Phase::Aborted | Phase::Draft))
                    .map(|o| o.engine.downloads_in(p))
                    .sum()
            };
            let world = World {
                now_ms: now,
                freeze: &self.freeze,
                online: &online,
                elsewhere: &elsewhere,
            };
            live.engine.on(input, &world)
        };
        self.rollouts.insert(id, live);
        result
    }

    /// Do what an engine decided. `by`: the operator whose action it was
    /// (the engine's own decisions are audited as `controller`).
    ///
    /// Releases are stored first (their members' rows, one transaction),
    /// then sent: a controller killed in between finds the members
    /// released and sends their desired state again on restore. A release
    /// that cannot be stored or sent goes back to Pending (released again
    /// by a later pass).
    async fn decided(&mut self, id: u64, decisions: Vec<Decision>, by: Option<&Caller>) {
        // Releases of a rollout completed before this input (not by it, not
        // by an operator's action) are stragglers, audited as the loop's own.
        let stragglers_only = by.is_none()
            && !decisions.iter().any(|d| matches!(d, Decision::Completed))
            && self
                .rollouts
                .get(&id)
                .is_some_and(|l| l.phase() == Phase::Completed);
        let mut stragglers = Vec::new();
        let mut todo = decisions;
        while !todo.is_empty() {
            let batch = std::mem::take(&mut todo);
            let releases: Vec<DeviceId> = batch
                .iter()
                .filter_map(|d| match d {
                    Decision::Release { device, .. } => Some(device.clone()),
                    _ => None,
                })
                .collect();
            let stored = match self.persist_released(id, &releases).await {
                Ok(()) => true,
                Err(e) => {
                    error!(rollout = id, error = %e, devices = releases.len(), "cannot store the released members; they are not released now");
                    false
                }
            };
            for d in batch {
                if let Decision::Release { device, attempt } = d {
                    let sent = if stored {
                        self.release(id, &device, attempt).await
                    } else {
                        Err("the member could not be stored".to_owned())
                    };
                    if stragglers_only && sent.is_ok() {
                        stragglers.push(device.clone());
                    }
                    if let Err(why) = sent {
                        let input = Input::Unreleased {
                            device,
                            message: format!("not released: {why}"),
                        };
                        match self.feed(id, input) {
                            Ok(more) => todo.extend(more),
                            Err(e) => {
                                warn!(rollout = id, error = %e, "a failed release could not be undone")
                            }
                        }
                    }
                } else {
                    self.decided_one(id, d, by).await;
                }
            }
        }
        // A completed rollout's releases are its own doing: one entry a pass.
        self.audit_devices(id, "rollout.stragglers-released", &stragglers)
            .await;
    }

    /// Store the rows of members just released, before their desired
    /// state is set.
    async fn persist_released(
        &self,
        id: u64,
        devices: &[DeviceId],
    ) -> Result<(), crate::store::StoreError> {
        let Some(live) = self.rollouts.get(&id) else {
            return Ok(());
        };
        if devices.is_empty() {
            return Ok(());
        }
        let members = devices
            .iter()
            .filter_map(|d| live.engine.member(d))
            .map(|m| (id, stored_member(m)))
            .collect();
        self.deps
            .store
            .persist_rollouts(&[RolloutChanges {
                status: None,
                members,
                log: Vec::new(),
            }])
            .await
    }

    /// Every decision but a release ([`Self::decided`] sends those).
    async fn decided_one(&mut self, id: u64, d: Decision, by: Option<&Caller>) {
        let now = unix_ms();
        {
            match d {
                Decision::Release { .. } | Decision::Aborted => {}
                Decision::Member(device) => {
                    self.dirty_members.entry(id).or_default().insert(device);
                }
                Decision::Status { note } => {
                    self.dirty_status.insert(id);
                    self.log.push(LogLine {
                        rollout: id,
                        at_ms: now,
                        kind: kind_of(&note).to_owned(),
                        detail: note,
                    });
                }
                Decision::WaveStarted(w) => {
                    let name = self.wave_name(id, w);
                    self.audit_own(
                        id,
                        "rollout.wave-started",
                        json!({ "wave": w + 1, "name": name }),
                    )
                    .await;
                }
                Decision::WaveDone(w) => {
                    let name = self.wave_name(id, w);
                    self.audit_own(
                        id,
                        "rollout.wave-done",
                        json!({ "wave": w + 1, "name": name }),
                    )
                    .await;
                }
                Decision::Paused { reason } => {
                    if by.is_none() {
                        warn!(rollout = id, %reason, "rollout paused itself");
                        self.audit_own(id, "rollout.pause", json!({ "reason": reason }))
                            .await;
                    }
                }
                Decision::Completed => {
                    // A controller stopped after the audit entry and before
                    // the status was written completes it again on restore:
                    // once is enough.
                    if self.already_audited(id, "rollout.complete").await {
                        info!(
                            rollout = id,
                            "rollout completed again after a restart; already recorded"
                        );
                    } else {
                        info!(rollout = id, "rollout completed");
                        self.audit_own(id, "rollout.complete", json!({})).await;
                        self.set_baseline(id).await;
                    }
                }
            }
        }
    }

    fn wave_name(&self, id: u64, w: usize) -> String {
        self.rollouts
            .get(&id)
            .and_then(|l| l.engine.wave_names().get(w).cloned())
            .unwrap_or_default()
    }

    /// Whether the audit log holds `action` for this rollout already.
    async fn already_audited(&self, id: u64, action: &str) -> bool {
        let filter = crate::store::AuditFilter {
            target: Some(format!("rollout-{id}")),
            limit: 1000,
            ..Default::default()
        };
        match self.deps.store.audit_entries(&filter).await {
            Ok(entries) => entries.iter().any(|e| e.action == action),
            Err(e) => {
                warn!(rollout = id, error = %e, "cannot read the audit log; the entry is written");
                false
            }
        }
    }

    /// One audit entry for devices the loop acted on in one pass: the
    /// count and (up to [`AUDITED_IDS`]) their ids.
    async fn audit_devices(&self, id: u64, action: &str, devices: &[DeviceId]) {
        if devices.is_empty() {
            return;
        }
        let ids: Vec<&str> = devices
            .iter()
            .take(AUDITED_IDS)
            .map(DeviceId::as_str)
            .collect();
        self.audit_own(
            id,
            action,
            json!({ "count": devices.len(), "devices": ids, "more": devices.len().saturating_sub(AUDITED_IDS) }),
        )
        .await;
    }

    async fn audit_own(&self, id: u64, action: &str, detail: serde_json::Value) {
        let by = Caller::system("controller");
        if let Err(e) = self
            .deps
            .access
            .record_as(
                "controller",
                "controller",
                &by.source,
                action,
                &format!("rollout-{id}"),
                detail,
            )
            .await
        {
            error!(error = %e, rollout = id, action, "cannot write the rollout's own action to the audit log");
        }
    }

    /// Set the device's desired target for this rollout (only its field);
    /// why not, when it could not be set.
    async fn release(&mut self, id: u64, device: &DeviceId, attempt: u32) -> Result<(), String> {
        let Some(live) = self.rollouts.get(&id) else {
            return Ok(());
        };
        let t = &live.meta.spec.target;
        let target = TargetFirmware {
            version: t.version.clone(),
            manifest: live.meta.spec.manifest.clone(),
            attempt,
        };
        let artifact = t.artifact;
        let finished_ms = (live.phase() == Phase::Completed)
            .then_some(live.engine.status().finished_ms)
            .flatten();
        if let Some(finished_ms) = finished_ms {
            if let Some(other) = self
                .set_by_other(device, artifact, &target, finished_ms)
                .await
            {
                self.handed_over.insert((id, device.clone()));
                info!(rollout = id, device = %device, %other, "a straggler's desired target was set after the rollout completed; it is left alone");
                return Err(format!(
                    "its desired target {other} was set after the rollout completed"
                ));
            }
        }
        let d = &self.deps;
        // Only the rollout's field changes, read and written under the lock
        // of desired changes (an operator may set the other meanwhile).
        match crate::ingest::update_desired(
            &d.store,
            &d.fleet,
            &d.publisher,
            device,
            |desired| match artifact {
                ArtifactKind::Firmware => desired.firmware = Some(target),
                ArtifactKind::Agent => desired.agent = Some(target),
            },
            unix_ms(),
        )
        .await
        {
            Ok(_) => {
                metrics::counter!("fleet_rollout_releases_total").increment(1);
                metrics::counter!("fleet_desired_published_total", "why" => "rollout").increment(1);
                Ok(())
            }
            Err(e) => {
                warn!(rollout = id, device = %device, error = %e, "cannot set a released device's desired state; it goes back to pending");
                Err(e.to_string())
            }
        }
    }

    /// Restore: a member stored Released whose device's desired state
    /// does not carry the rollout's target (the controller stopped between
    /// storing the member and setting the desired state) is sent again.
    /// Idempotent: a desired state already set is left alone.
    async fn republish_released(&mut self) {
        let mut todo = Vec::new();
        for (id, live) in &self.rollouts {
            if live.phase() == Phase::Aborted {
                continue;
            }
            let t = &live.meta.spec.target;
            let fleet = self
                .deps
                .fleet
                .read()
                .expect("fleet lock is never poisoned");
            for m in live.engine.members() {
                if m.state != DevState::Released {
                    continue;
                }
                let desired = fleet.get(&m.device).and_then(|d| d.desired.as_ref());
                let field = desired.and_then(|d| match t.artifact {
                    ArtifactKind::Firmware => d.firmware.as_ref(),
                    ArtifactKind::Agent => d.agent.as_ref(),
                });
                let set = field.is_some_and(|f| {
                    f.version == t.version
                        && f.manifest == live.meta.spec.manifest
                        && f.attempt == m.attempt
                });
                if !set {
                    todo.push((*id, m.device.clone(), m.attempt));
                }
            }
        }
        if !todo.is_empty() {
            info!(
                devices = todo.len(),
                "released members without their desired state are sent again"
            );
        }
        for (id, device, attempt) in todo {
            if let Err(why) = self.release(id, &device, attempt).await {
                let input = Input::Unreleased {
                    device,
                    message: format!("not released: {why}"),
                };
                match self.feed(id, input) {
                    Ok(d) => self.decided(id, d, None).await,
                    Err(e) => {
                        warn!(rollout = id, error = %e, "a failed release could not be undone")
                    }
                }
            }
        }
    }

    /// The version of the device's desired target for `artifact` when it
    /// is not `ours` and was stored at or after `since_ms` (someone else
    /// set it: an operator, another rollout).
    async fn set_by_other(
        &self,
        device: &DeviceId,
        artifact: ArtifactKind,
        ours: &TargetFirmware,
        since_ms: u64,
    ) -> Option<String> {
        let current = {
            let fleet = self
                .deps
                .fleet
                .read()
                .expect("fleet lock is never poisoned");
            let d = fleet.get(device).and_then(|d| d.desired.as_ref());
            d.and_then(|d| match artifact {
                ArtifactKind::Firmware => d.firmware.clone(),
                ArtifactKind::Agent => d.agent.clone(),
            })
        }?;
        if current.version == ours.version && current.manifest == ours.manifest {
            return None;
        }
        match self.deps.store.desired_updated_ms(device).await {
            Ok(Some(at)) if at >= since_ms => Some(current.version.to_string()),
            Ok(_) => None,
            Err(e) => {
                warn!(device = %device, error = %e, "cannot read when a desired state was set; the straggler waits");
                Some(current.version.to_string())
            }
        }
    }

    /// A completed firmware rollout makes its version its model's baseline.
    async fn set_baseline(&mut self, id: u64) {
        let Some(live) = self.rollouts.get(&id) else {
            return;
        };
        let t = live.meta.spec.target.clone();
        if t.artifact != ArtifactKind::Firmware {
            return;
        }
        let now = unix_ms();
        if let Err(e) = self
            .deps
            .store
            .set_baseline(&t.model, &t.version, now)
            .await
        {
            error!(rollout = id, error = %e, "cannot store the baseline of a completed rollout");
            self.deps
                .access
                .failed_as(
                    "controller",
                    "controller",
                    &Caller::system("controller").source,
                    "baseline.set",
                    &format!("rollout-{id}"),
                    &e.to_string(),
                )
                .await;
            return;
        }
        self.audit_own(
            id,
            "baseline.set",
            json!({ "model": t.model, "version": t.version, "rollout": id }),
        )
        .await;
        self.deps
            .fleet
            .write()
            .expect("fleet lock is never poisoned")
            .set_baseline(t.model.clone(), t.version.clone(), now);
        self.log.push(LogLine {
            rollout: id,
            at_ms: now,
            kind: "baseline".into(),
            detail: format!("{} baseline set to {}", t.model, t.version),
        });
    }

    /// A device's update track changed: to the fleet (readiness) and to
    /// every live rollout that holds the device, if it is that rollout's
    /// target and its last event came at or after the device was released
    /// (a track keeps its start when it continues: a device coming back
    /// after the sweeper timed it out, or one already updating to this
    /// version when it was released).
    async fn track(&mut self, device: DeviceId, track: Track) {
        self.deps
            .fleet
            .write()
            .expect("fleet lock is never poisoned")
            .set_track(&device, track.clone(), unix_ms());
        let ids: Vec<u64> = self
            .rollouts
            .iter()
            .filter(|(_, l)| l.phase() != Phase::Aborted)
            .filter(|(_, l)| {
                l.artifact() == track.artifact && l.meta.spec.target.version == track.version
            })
            .filter(|(_, l)| {
                l.engine
                    .member(&device)
                    .and_then(|m| m.released_ms)
                    .is_some_and(|r| track.last_event_ms >= r)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let input = match (track.outcome, track.phase) {
                (Some(outcome), _) => Input::Ended {
                    device: device.clone(),
                    outcome,
                    message: track.message.clone(),
                },
                (None, Some(phase)) => Input::Progress {
                    device: device.clone(),
                    phase,
                },
                (None, None) => continue,
            };
            match self.feed(id, input) {
                Ok(d) => self.decided(id, d, None).await,
                Err(e) => warn!(rollout = id, error = %e, "an update event was refused"),
            }
        }
    }

    /// The freeze windows as stored now (a change through the API is
    /// seen by the next tick or operator action).
    async fn reload_freeze(&mut self) {
        match self.deps.store.freeze_windows_with_reasons().await {
            Ok(f) => self.freeze = f,
            Err(e) => warn!(error = %e, "cannot read the freeze windows; the last ones read hold"),
        }
    }

    async fn tick(&mut self, cfg: RolloutsConfig) {
        self.ticks += 1;
        self.reload_freeze().await;
        let ids: Vec<u64> = self
            .rollouts
            .iter()
            .filter(|(_, l)| !matches!(l.phase(), Phase::Aborted | Phase::Draft))
            .map(|(id, _)| *id)
            .collect();
        if self.ticks % cfg.join_every_ticks.max(1) == 0 {
            for id in &ids {
                self.offer_new(*id).await;
            }
        }
        for id in ids {
            match self.feed(id, Input::Tick) {
                Ok(d) => self.decided(id, d, None).await,
                Err(e) => warn!(rollout = id, error = %e, "a tick was refused"),
            }
        }
        self.flush().await;
    }

    /// `include_new`: devices that match and are in no rollout of the
    /// same artifact that is running, paused or completed join.
    async fn offer_new(&mut self, id: u64) {
        let Some(live) = self.rollouts.get(&id) else {
            return;
        };
        if !live.meta.spec.selector.include_new {
            return;
        }
        let artifact = live.artifact();
        let model = &live.meta.spec.target.model;
        // Only the newest include_new rollout of an artifact and model
        // takes devices registered later.
        let newer = self.rollouts.range(id + 1..).any(|(_, o)| {
            o.artifact() == artifact
                && &o.meta.spec.target.model == model
                && o.meta.spec.selector.include_new
                && !matches!(o.phase(), Phase::Aborted | Phase::Draft)
        });
        if newer {
            return;
        }
        let joining: Vec<Candidate> = {
            let fleet = self
                .deps
                .fleet
                .read()
                .expect("fleet lock is never poisoned");
            fleet
                .devices(&Default::default())
                .filter(|d| {
                    rollout_select::joins(&live.meta.spec.selector, &live.meta.spec.target, d)
                })
                .filter(|d| {
                    !self.rollouts.values().any(|o| {
                        o.artifact() == artifact
                            && o.phase() != Phase::Aborted
                            && o.engine.member(&d.reg.id).is_some()
                    })
                })
                .map(|d| Candidate {
                    device: d.reg.id.clone(),
                    province: d.reg.province,
                    skip: rollout_select::skip_reason(d, &live.meta.spec.target),
                    online: is_online(&fleet, &d.reg.id),
                })
                .collect()
        };
        if joining.is_empty() {
            return;
        }
        let n = joining.len();
        let ids: Vec<DeviceId> = joining.iter().map(|c| c.device.clone()).collect();
        for c in joining {
            match self.feed(id, Input::Join(c)) {
                Ok(d) => self.decided(id, d, None).await,
                Err(e) => warn!(rollout = id, error = %e, "a device could not join"),
            }
        }
        self.log.push(LogLine {
            rollout: id,
            at_ms: unix_ms(),
            kind: "joined".into(),
            detail: format!("{n} devices registered later joined"),
        });
        self.audit_devices(id, "rollout.joined", &ids).await;
    }

    /// Write every member and status that changed, with the log, in one
    /// transaction. On failure they stay dirty and go with the next tick.
    async fn flush(&mut self) {
        if self.dirty_members.is_empty() && self.dirty_status.is_empty() && self.log.is_empty() {
            return;
        }
        let mut changes = Vec::new();
        let ids: BTreeSet<u64> = self
            .dirty_members
            .keys()
            .chain(self.dirty_status.iter())
            .copied()
            .collect();
        for id in ids {
            let Some(live) = self.rollouts.get(&id) else {
                continue;
            };
            let members = self
                .dirty_members
                .get(&id)
                .into_iter()
                .flatten()
                .filter_map(|d| live.engine.member(d))
                .map(|m| (id, stored_member(m)))
                .collect();
            changes.push(RolloutChanges {
                status: self
                    .dirty_status
                    .contains(&id)
                    .then(|| (id, stored_status(live.engine.status()))),
                members,
                log: Vec::new(),
            });
        }
        changes.push(RolloutChanges {
            status: None,
            members: Vec::new(),
            log: std::mem::take(&mut self.log),
        });
        match self.deps.store.persist_rollouts(&changes).await {
            Ok(()) => {
                self.dirty_members.clear();
                self.dirty_status.clear();
            }
            Err(e) => {
                error!(error = %e, "cannot write the rollouts' changes; they are written with the next tick");
                self.log = changes.pop().map(|c| c.log).unwrap_or_default();
            }
        }
    }

    async fn request(&mut self, r: Request) {
        if matches!(r, Request::Create { .. } | Request::Act { .. }) {
            self.reload_freeze().await;
        }
        match r {
            Request::Create {
                request,
                spec,
                caller,
                reply,
            } => {
                let out = self.create(*request, *spec, &caller).await;
                let _ = reply.send(out);
            }
            Request::Act {
                id,
                action,
                reason,
                caller,
                reply,
            } => {
                let out = self.act(id, action, reason, &caller).await;
                let _ = reply.send(out);
            }
            Request::List { scope, reply } => {
                let mut out: Vec<_> = self
                    .rollouts
                    .values()
                    .map(|l| view::summary(&l.meta, &l.engine, &scope))
                    .chain(self.dormant.values().map(|d| {
                        view::dormant_summary(
                            &d.meta,
                            &d.status,
                            d.wave_count,
                            &d.provinces,
                            &scope,
                        )
                    }))
                    .collect();
                out.sort_by_key(|s| std::cmp::Reverse(s.id));
                let _ = reply.send(Ok(out));
            }
            Request::Show { id, scope, reply } => {
                // Its log as it stands, lines of this pass included.
                self.flush().await;
                let _ = reply.send(self.view(id, &scope).await);
            }
            Request::Members {
                id,
                scope,
                state,
                reply,
            } => {
                let out = match self.rollouts.get(&id) {
                    Some(l) => Ok(view::members(&l.engine, &scope, state)),
                    None => match self.wake(id).await {
                        Ok(Some(l)) => Ok(view::members(&l.engine, &scope, state)),
                        Ok(None) => Err(RolloutError::Unknown(id)),
                        Err(e) => Err(e),
                    },
                };
                let _ = reply.send(out);
            }
        }
    }

    async fn view(
        &self,
        id: u64,
        scope: &Scope,
    ) -> Result<fleet_api::types::RolloutView, RolloutError> {
        let woken;
        let live = match self.rollouts.get(&id) {
            Some(l) => l,
            None => {
                woken = self.wake(id).await?.ok_or(RolloutError::Unknown(id))?;
                &woken
            }
        };
        let log = match scope {
            None => self.deps.store.rollout_log(id, VIEW_LOG_LINES).await?,
            Some(_) => Vec::new(),
        };
        let fleet = self
            .deps
            .fleet
            .read()
            .expect("fleet lock is never poisoned");
        // A station is in a scoped reader's view when one of its devices is.
        let station_seen = |station: &str| {
            scope.as_ref().is_some_and(|own| {
                fleet.devices(&Default::default()).any(|d| {
                    own.contains(&d.reg.province)
                        && d.reg
                            .station
                            .as_ref()
                            .is_some_and(|s| s.as_str() == station)
                })
            })
        };
        Ok(view::view(
            &live.meta,
            &live.engine,
            scope,
            log,
            &station_seen,
        ))
    }

    /// Refuse when a selected device that can take the update is a
    /// non-skipped member of another running or paused rollout of the
    /// same artifact.
    fn overlap(
        &self,
        me: Option<u64>,
        artifact: ArtifactKind,
        devices: &mut dyn Iterator<Item = &DeviceId>,
    ) -> Result<(), RolloutError> {
        let others: Vec<&Live> = self
            .rollouts
            .values()
            .filter(|o| Some(o.meta.id) != me)
            .filter(|o| {
                o.artifact() == artifact && matches!(o.phase(), Phase::Running | Phase::Paused)
            })
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let mut hits: HashMap<u64, Vec<String>> = HashMap::new();
        for d in devices {
            for o in &others {
                if o.engine
                    .member(d)
                    .is_some_and(|m| m.state != DevState::Skipped)
                {
                    hits.entry(o.meta.id).or_default().push(d.to_string());
                }
            }
        }
        let Some((other, mut devices)) = hits.into_iter().max_by_key(|(id, v)| (v.len(), *id))
        else {
            return Ok(());
        };
        let o = &self.rollouts[&other];
        let count = devices.len();
        devices.sort();
        devices.truncate(OVERLAP_NAMED);
        Err(RolloutError::Overlap {
            other,
            other_name: o.meta.spec.name.clone(),
            phase: o.phase().as_str(),
            count,
            devices,
        })
    }

    async fn create(
        &mut self,
        request: RolloutRequest,
        spec: Spec,
        caller: &Caller,
    ) -> Result<fleet_api::types::RolloutView, RolloutError> {
        let selected = {
            let fleet = self
                .deps
                .fleet
                .read()
                .expect("fleet lock is never poisoned");
            rollout_select::select(
                &spec.selector,
                &spec.target,
                fleet.devices(&Default::default()),
                |d| is_online(&fleet, &d.reg.id),
            )
            .map_err(|rollout_select::SelectError::UnknownDevices(ids)| {
                RolloutError::UnknownDevices(ids.iter().map(ToString::to_string).collect())
            })?
        };
        let id = self.next_id;
        let engine = Engine::new(
            id,
            spec.policy.clone(),
            &spec.waves,
            selected.into_iter().map(candidate).collect(),
        )?;
        self.overlap(
            None,
            spec.target.artifact,
            &mut engine
                .members()
                .filter(|m| m.state != DevState::Skipped)
                .map(|m| &m.device),
        )?;
        let now = unix_ms();
        if !request.draft {
            let world = World {
                now_ms: now,
                freeze: &self.freeze,
                online: &|_| false,
                elsewhere: &|_| 0,
            };
            if let Some((reason, until_ms)) = world.frozen() {
                return Err(EngineError::Frozen {
                    reason: reason.to_owned(),
                    until_ms,
                }
                .into());
            }
        }
        let spec_json = serde_json::to_string(&request).expect("a request serializes");
        let detail = json!({
            "name": spec.name, "artifact": spec.target.artifact.as_str(), "model": spec.target.model,
            "version": spec.target.version, "members": engine.counters().total,
            "waves": engine.wave_names(),
        });
        let target = format!("rollout-{id}");
        self.deps
            .access
            .record(caller, "rollout.create", &target, detail)
            .await?;
        let stored = StoredRollout {
            id,
            name: spec.name.clone(),
            artifact: spec.target.artifact.as_str().to_owned(),
            model: spec.target.model.to_string(),
            version: spec.target.version.to_string(),
            manifest: spec.manifest.clone(),
            spec_json,
            wave_names: engine.wave_names().to_vec(),
            status: stored_status(engine.status()),
            created_ms: now,
            created_by: caller.principal.actor(),
        };
        let members: Vec<StoredMember> = engine.members().map(stored_member).collect();
        let c = engine.counters();
        let created_note = format!(
            "created by {}: {} devices ({} skipped) in {} waves",
            caller.principal.actor(),
            c.total,
            c.skipped,
            engine.wave_names().len()
        );
        if let Err(e) = self
            .deps
            .store
            .create_rollout(&stored, &members, &[(now, "created".into(), created_note)])
            .await
        {
            self.deps
                .access
                .failed(caller, "rollout.create", &target, &e.to_string())
                .await;
            return Err(e.into());
        }
        self.next_id += 1;
        self.rollouts.insert(
            id,
            Live {
                meta: Meta {
                    id,
                    request: request.clone(),
                    spec,
                    created_ms: now,
                    created_by: caller.principal.actor(),
                },
                engine,
            },
        );
        if !request.draft {
            return self.act(id, RolloutAction::Start, None, caller).await;
        }
        self.view(id, &None).await
    }

    async fn act(
        &mut self,
        id: u64,
        action: RolloutAction,
        reason: Option<String>,
        caller: &Caller,
    ) -> Result<fleet_api::types::RolloutView, RolloutError> {
        if self.dormant.contains_key(&id) {
            let audit_action = format!("rollout.{}", action.as_str());
            let e = EngineError::NotAllowed {
                action: action.as_str(),
                phase: Phase::Aborted,
            };
            self.deps
                .access
                .failed(
                    caller,
                    &audit_action,
                    &format!("rollout-{id}"),
                    &e.to_string(),
                )
                .await;
            return Err(e.into());
        }
        let live = self.rollouts.get(&id).ok_or(RolloutError::Unknown(id))?;
        let phase = live.phase();
        if matches!(action, RolloutAction::Start | RolloutAction::Resume) && phase == Phase::Draft {
            let devices: Vec<DeviceId> = live
                .engine
                .members()
                .filter(|m| m.state != DevState::Skipped)
                .map(|m| m.device.clone())
                .collect();
            self.overlap(Some(id), live.artifact(), &mut devices.iter())?;
        }
        let input = match action {
            RolloutAction::Start => Input::Start,
            RolloutAction::Pause => Input::Pause {
                reason: reason
                    .clone()
                    .filter(|r| !r.trim().is_empty())
                    .unwrap_or_else(|| format!("paused by {}", caller.principal.actor())),
            },
            RolloutAction::Resume => Input::Resume,
            RolloutAction::Abort => Input::Abort,
            RolloutAction::RetryFailed => Input::RetryFailed,
        };
        let audit_action = format!("rollout.{}", action.as_str());
        let target = format!("rollout-{id}");
        let detail = match &reason {
            Some(r) => json!({ "reason": r }),
            None => json!({}),
        };
        self.deps
            .access
            .record(caller, &audit_action, &target, detail)
            .await?;
        let decisions = match self.feed(id, input) {
            Ok(d) => d,
            Err(e) => {
                self.deps
                    .access
                    .failed(caller, &audit_action, &target, &e.to_string())
                    .await;
                return Err(e.into());
            }
        };
        if action == RolloutAction::RetryFailed {
            let n = decisions
                .iter()
                .filter(|d| matches!(d, Decision::Member(_)))
                .count();
            self.log.push(LogLine {
                rollout: id,
                at_ms: unix_ms(),
                kind: "retry-failed".into(),
                detail: format!(
                    "{} asked to retry the failed devices ({n} changed)",
                    caller.principal.actor()
                ),
            });
        }
        self.decided(id, decisions, Some(caller)).await;
        self.flush().await;
        let out = self.view(id, &None).await;
        if self
            .rollouts
            .get(&id)
            .is_some_and(|l| l.phase() == Phase::Aborted)
        {
            self.put_to_sleep(id);
        }
        out
    }
}
