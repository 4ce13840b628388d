//! The API's views of a rollout, in a reader's scope: a province
//! technician sees its provinces' members and counters over them only.

use fleet_api::types::{
    Counters as ApiCounters, MemberState, MemberView, ProvinceCounters, RolloutLogEntry,
    RolloutPhase, RolloutRequest, RolloutSummary, RolloutView, WaveState, WaveView,
};
use fleet_protocol::ProvinceCode;

use super::spec::Spec;
use super::Scope;
use crate::domain::rollout::{Counters, DevState, Engine, Member, Phase};
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
        paused_reason: s.paused_reason.clone(),
        held: s.held.clone(),
        counters: scoped(e, None, scope),
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

pub fn view(m: &Meta, e: &Engine, scope: &Scope, log: Vec<LogLine>) -> RolloutView {
    let s = e.status();
    RolloutView {
        summary: summary(m, e, scope),
        target: m.spec.manifest.clone(),
        created_by: m.created_by.clone(),
        started_ms: s.started_ms,
        finished_ms: s.finished_ms,
        selector: m.request.selector.clone(),
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
