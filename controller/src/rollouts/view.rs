//! The API's views of a rollout, in a reader's scope: a province
//! technician sees its provinces' members and counters over them only.

use std::collections::BTreeMap;

use fleet_api::types::{
    Counters as ApiCounters, MemberState, MemberView, ProvinceCounters, RolloutLogEntry,
    RolloutPhase, RolloutRequest, RolloutSelector, RolloutSummary, RolloutView, WaveState,
    WaveView,
};
use fleet_protocol::{CountyCode, DeviceId, ProvinceCode};

use super::spec::Spec;
use super::Scope;
use crate::domain::rollout::{Counters, DevState, Engine, Member, Phase, Status};
use crate::store::LogLine;

/// What the loop keeps of a rollout beside its engine.
#[derive(Debug, Clone)]
pub struct Meta {
    pub id: u64,
    pub request: RolloutRequest,
    pub spec: Spec,
    pub created_ms: u64,
    pub created_by: String,
}

pub fn phase(p: Phase) -> RolloutPhase {
    match p {
        Phase::Draft => RolloutPhase::Draft,
        Phase::Running => RolloutPhase::Running,
        Phase::Paused => RolloutPhase::Paused,
        Phase::Completed => RolloutPhase::Completed,
        Phase::Aborted => RolloutPhase::Aborted,
    }
}

pub fn state(s: DevState) -> MemberState {
    match s {
        DevState::Pending => MemberState::Pending,
        DevState::Released => MemberState::Released,
        DevState::Downloading => MemberState::Downloading,
        DevState::Installing => MemberState::Installing,
        DevState::Rebooting => MemberState::Rebooting,
        DevState::Succeeded => MemberState::Succeeded,
        DevState::Failed => MemberState::Failed,
        DevState::TimedOut => MemberState::TimedOut,
        DevState::Skipped => MemberState::Skipped,
    }
}

fn counters(c: &Counters) -> ApiCounters {
    ApiCounters {
        total: c.total,
        pending: c.pending,
        downloading: c.downloading,
        installing: c.installing,
        rebooting: c.rebooting,
        succeeded: c.succeeded,
        failed: c.failed,
        timed_out: c.timed_out,
        skipped: c.skipped,
    }
}

fn sees(scope: &Scope, p: ProvinceCode) -> bool {
    scope.as_ref().is_none_or(|s| s.contains(&p))
}

/// Per province (of one wave or all), in scope.
fn provinces(e: &Engine, wave: Option<usize>, scope: &Scope) -> Vec<ProvinceCounters> {
    e.province_counters(wave)
        .into_iter()
        .filter(|(p, _)| sees(scope, *p))
        .map(|(province, c)| ProvinceCounters {
            province,
            counters: counters(&c),
        })
        .collect()
}

/// Counters of one wave (or all) over the provinces in scope.
fn scoped(e: &Engine, wave: Option<usize>, scope: &Scope) -> ApiCounters {
    match (scope, wave) {
        (None, None) => counters(&e.counters()),
        (None, Some(w)) => counters(&e.wave_counters(w)),
        (Some(_), _) => {
            let mut c = Counters::default();
            for (p, pc) in e.province_counters(wave) {
                if sees(scope, p) {
                    c.merge(&pc);
                }
            }
            counters(&c)
        }
    }
}

pub fn summary(m: &Meta, e: &Engine, scope: &Scope) -> RolloutSummary {
    let s = e.status();
    RolloutSummary {
        id: m.id,
        name: m.spec.name.clone(),
        artifact: m.spec.target.artifact.as_str().to_owned(),
        model: m.spec.target.model.to_string(),
        version: m.spec.target.version.to_string(),
        phase: phase(s.phase),
        wave: u32::try_from(s.wave).unwrap_or(u32::MAX),
        wave_count: u32::try_from(e.wave_names().len()).unwrap_or(u32::MAX),
        // The reason may name other provinces and their counts.
        paused_reason: s.paused_reason.as_ref().map(|r| match scope {
            None => r.clone(),
            Some(_) => SCOPED_PAUSE.to_owned(),
        }),
        held: s.held.clone(),
        counters: scoped(e, None, scope),
        created_ms: m.created_ms,
    }
}

/// The summary of a rollout held without its engine (aborted), from its
/// counters per province.
pub fn dormant_summary(
    m: &Meta,
    s: &Status,
    wave_count: usize,
    by_province: &BTreeMap<ProvinceCode, Counters>,
    scope: &Scope,
) -> RolloutSummary {
    let mut c = Counters::default();
    for (p, pc) in by_province {
        if sees(scope, *p) {
            c.merge(pc);
        }
    }
    RolloutSummary {
        id: m.id,
        name: m.spec.name.clone(),
        artifact: m.spec.target.artifact.as_str().to_owned(),
        model: m.spec.target.model.to_string(),
        version: m.spec.target.version.to_string(),
        phase: phase(s.phase),
        wave: u32::try_from(s.wave).unwrap_or(u32::MAX),
        wave_count: u32::try_from(wave_count).unwrap_or(u32::MAX),
        paused_reason: s.paused_reason.as_ref().map(|r| match scope {
            None => r.clone(),
            Some(_) => SCOPED_PAUSE.to_owned(),
        }),
        held: s.held.clone(),
        counters: counters(&c),
        created_ms: m.created_ms,
    }
}

fn wave_state(e: &Engine, i: usize) -> WaveState {
    let s = e.status();
    match s.phase {
        Phase::Draft => WaveState::Pending,
        Phase::Completed => WaveState::Done,
        _ if i < s.wave => WaveState::Done,
        _ if i == s.wave => WaveState::Running,
        _ => WaveState::Pending,
    }
}

/// What a scoped reader is told of why a rollout is paused.
pub const SCOPED_PAUSE: &str = "paused by central operations";

/// The selector as a reader may see it: a scoped one sees only the
/// provinces, counties, stations (`station_seen`: one of its devices is
/// there) and devices (members in its provinces) of its scope.
fn selector(
    m: &Meta,
    e: &Engine,
    scope: &Scope,
    station_seen: &dyn Fn(&str) -> bool,
) -> RolloutSelector {
    let all = &m.request.selector;
    let Some(own) = scope else {
        return all.clone();
    };
    let mine = |p: Option<ProvinceCode>| p.is_some_and(|p| own.contains(&p));
    RolloutSelector {
        provinces: all
            .provinces
            .iter()
            .filter(|p| mine(ProvinceCode::parse(p).ok()))
            .cloned()
            .collect(),
        counties: all
            .counties
            .iter()
            .filter(|c| mine(CountyCode::parse(c).ok().map(|c| c.province())))
            .cloned()
            .collect(),
        stations: all
            .stations
            .iter()
            .filter(|s| station_seen(s))
            .cloned()
            .collect(),
        devices: all
            .devices
            .iter()
            .filter(|d| {
                mine(
                    DeviceId::parse(d)
                        .ok()
                        .and_then(|d| e.member(&d).map(|m| m.province)),
                )
            })
            .cloned()
            .collect(),
        include_new: all.include_new,
    }
}

/// A rollout as a reader sees it. A scoped reader (a province technician)
/// gets counters over its provinces only, the selector cut to them, no
/// log (its lines carry whole-rollout counts and other provinces), and a
/// generic pause reason.
pub fn view(
    m: &Meta,
    e: &Engine,
    scope: &Scope,
    log: Vec<LogLine>,
    station_seen: &dyn Fn(&str) -> bool,
) -> RolloutView {
    let s = e.status();
    let log = if scope.is_some() { Vec::new() } else { log };
    RolloutView {
        summary: summary(m, e, scope),
        target: m.spec.manifest.clone(),
        created_by: m.created_by.clone(),
        started_ms: s.started_ms,
        finished_ms: s.finished_ms,
        selector: selector(m, e, scope, station_seen),
        canary: m.request.canary.clone(),
        policy: m.spec.policy_view.clone(),
        waves: e
            .wave_names()
            .iter()
            .enumerate()
            .map(|(i, name)| WaveView {
                index: u32::try_from(i).unwrap_or(u32::MAX),
                name: name.clone(),
                state: wave_state(e, i),
                counters: scoped(e, Some(i), scope),
                provinces: provinces(e, Some(i), scope),
            })
            .collect(),
        provinces: provinces(e, None, scope),
        log: log
            .into_iter()
            .map(|l| RolloutLogEntry {
                at_ms: l.at_ms,
                kind: l.kind,
                detail: l.detail,
            })
            .collect(),
    }
}

pub fn member(m: &Member) -> MemberView {
    MemberView {
        device: m.device.clone(),
        province: m.province,
        wave: u32::try_from(m.wave).unwrap_or(u32::MAX),
        state: state(m.state),
        attempt: m.attempt,
        released_ms: m.released_ms,
        message: m.message.clone(),
    }
}

pub fn members(e: &Engine, scope: &Scope, only: Option<MemberState>) -> Vec<MemberView> {
    let mut out: Vec<MemberView> = e
        .members()
        .filter(|m| sees(scope, m.province))
        .filter(|m| only.is_none_or(|s| state(m.state) == s))
        .map(member)
        .collect();
    out.sort_by(|a, b| a.device.cmp(&b.device));
    out
}
