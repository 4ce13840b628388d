//! From selected candidates to waves: the canary, one wave per group of
//! provinces, and the rest.

use std::collections::{BTreeMap, HashMap, HashSet};

use fleet_protocol::{DeviceId, ProvinceCode};

use super::counters::DevState;
use super::engine::Member;
use super::error::PlanError;

/// The first wave: a number of devices, or a share of the selected
/// devices that can take the update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Canary {
    Devices(u32),
    Percent(f64),
}

/// How the selected devices are split into waves: `[canary]` + one wave
/// per group + a last "rest" wave of every selected device not in an
/// earlier wave (only if it has a member, or if there are no groups).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WavesSpec {
    pub canary: Option<Canary>,
    pub groups: Vec<Vec<ProvinceCode>>,
}

/// What selection gives the engine: every selected device with its
/// province, and whether it can take the update (else Skipped with why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub device: DeviceId,
    pub province: ProvinceCode,
    /// Why it is not updated (`"already on 2.5.0"`); `None` = it can be.
    pub skip: Option<String>,
    /// Online when the plan is made: the canary takes online devices first.
    pub online: bool,
}

/// How many devices the canary takes of `eligible` (non-skipped) ones:
/// N (at most all), or ceil(P% of them), at least 1 when there is one.
pub fn canary_size(canary: Canary, eligible: usize) -> Result<usize, PlanError> {
    match canary {
        Canary::Devices(0) => Err(PlanError::EmptyCanary),
        Canary::Devices(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX).min(eligible)),
        Canary::Percent(p) if !(p > 0.0 && p <= 100.0) => {
            Err(PlanError::CanaryPercent { percent: p })
        }
        Canary::Percent(p) => {
            #[allow(clippy::cast_precision_loss)]
            let exact = p * eligible as f64 / 100.0;
            // A hair below the integer so that 5% of 300 is 15, not 16.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let n = (exact - 1e-9).ceil().max(1.0) as usize;
            Ok(n.min(eligible))
        }
    }
}

/// The waves' names: "canary", "IR-23+IR-30" per group, "rest".
pub fn wave_names(spec: &WavesSpec, rest: bool) -> Vec<String> {
    let mut names = Vec::new();
    if spec.canary.is_some() {
        names.push("canary".to_owned());
    }
    for g in &spec.groups {
        let n: Vec<String> = g.iter().map(ToString::to_string).collect();
        names.push(n.join("+"));
    }
    if rest || spec.groups.is_empty() {
        names.push("rest".to_owned());
    }
    names
}

/// Check the groups: none empty, no province in two.
fn group_of(spec: &WavesSpec) -> Result<HashMap<ProvinceCode, usize>, PlanError> {
    let mut of = HashMap::new();
    for (index, g) in spec.groups.iter().enumerate() {
        if g.is_empty() {
            return Err(PlanError::EmptyGroup { index });
        }
        for p in g {
            if let Some(first) = of.insert(*p, index) {
                return Err(PlanError::ProvinceInTwoGroups {
                    province: *p,
                    first: first.min(index),
                    second: index,
                });
            }
        }
    }
    Ok(of)
}

/// The waves' names and every member (Pending, or Skipped with why),
/// ordered by wave then device id.
pub fn plan(
    spec: &WavesSpec,
    candidates: Vec<Candidate>,
) -> Result<(Vec<String>, Vec<Member>), PlanError> {
    let group = group_of(spec)?;
    let mut seen = HashSet::new();
    for c in &candidates {
        if !seen.insert(&c.device) {
            return Err(PlanError::DuplicateDevice {
                device: c.device.clone(),
            });
        }
    }
    let first_group = usize::from(spec.canary.is_some());
    let rest_wave = first_group + spec.groups.len();

    // The canary: round-robin over provinces (sorted), within a province
    // online devices first, then by device id.
    let mut canary: HashSet<DeviceId> = HashSet::new();
    if let Some(c) = spec.canary {
        let mut by_province: BTreeMap<ProvinceCode, Vec<&Candidate>> = BTreeMap::new();
        for c in candidates.iter().filter(|c| c.skip.is_none()) {
            by_province.entry(c.province).or_default().push(c);
        }
        let eligible = by_province.values().map(Vec::len).sum();
        let want = canary_size(c, eligible)?;
        let mut queues: Vec<std::vec::IntoIter<&Candidate>> = by_province
            .into_values()
            .map(|mut v| {
                v.sort_by(|a, b| {
                    b.online
                        .cmp(&a.online)
                        .then_with(|| a.device.cmp(&b.device))
                });
                v.into_iter()
            })
            .collect();
        'pick: while canary.len() < want {
            for q in &mut queues {
                if let Some(c) = q.next() {
                    canary.insert(c.device.clone());
                    if canary.len() == want {
                        break 'pick;
                    }
                }
            }
        }
    }

    let mut members: Vec<Member> = candidates
        .into_iter()
        .map(|c| {
            let wave = if canary.contains(&c.device) {
                0
            } else {
                group
                    .get(&c.province)
                    .map_or(rest_wave, |g| first_group + g)
            };
            let (state, message) = match c.skip {
                Some(why) => (DevState::Skipped, why),
                None => (DevState::Pending, String::new()),
            };
            Member {
                device: c.device,
                province: c.province,
                wave,
                state,
                attempt: 0,
                released_ms: None,
                message,
            }
        })
        .collect();
    members.sort_by(|a, b| (a.wave, &a.device).cmp(&(b.wave, &b.device)));
    let rest = members.iter().any(|m| m.wave == rest_wave);
    Ok((wave_names(spec, rest), members))
}
