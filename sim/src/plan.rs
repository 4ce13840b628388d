//! The simulated fleet's plan (pure): which devices exist, where, on which
//! firmware and in which condition, decided by the seed alone. The plan also
//! says what readiness the controller must then show, so a test can compare
//! the two exactly.

use std::collections::BTreeMap;

use fleet_protocol::{CountyCode, DeviceId, Model, ProvinceCode, StationId, Version};
use rand::seq::SliceRandom;
use rand::{rngs::SmallRng, SeedableRng};
use serde::Serialize;

/// The models the simulator builds, with their baseline and old firmware.
pub const MODELS: [(&str, &str, &str); 2] = [
    ("ballot-box-v2", "2.4.0", "2.3.1"),
    ("id-laptop", "1.8.2", "1.7.0"),
];

pub const COUNTIES_PER_PROVINCE: usize = 3;
pub const STATIONS_PER_COUNTY: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    Healthy,
    /// Reports once, then powers off.
    Offline,
    /// One of its checks (the printer) fails.
    FailingCheck,
    /// Runs the previous firmware.
    Outdated,
}

impl Condition {
    /// The readiness reason the controller must show (None = ready), given
    /// that the baselines of [`MODELS`] are set.
    pub fn expected_reason(self) -> Option<&'static str> {
        match self {
            Condition::Healthy => None,
            Condition::Offline => Some("offline"),
            Condition::FailingCheck => Some("unhealthy"),
            Condition::Outdated => Some("outdated"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SimDevice {
    pub id: DeviceId,
    pub model: Model,
    pub province: ProvinceCode,
    pub county: CountyCode,
    pub station: StationId,
    pub firmware: Version,
    pub condition: Condition,
}

#[derive(Debug, Clone)]
pub struct PlanConfig {
    pub devices: usize,
    pub seed: u64,
    /// Only these provinces (all 31 when empty).
    pub provinces: Vec<ProvinceCode>,
    pub offline_share: f64,
    pub failing_share: f64,
    pub outdated_share: f64,
}

impl Default for PlanConfig {
    fn default() -> Self {
        Self {
            devices: 2000,
            seed: 1,
            provinces: Vec::new(),
            offline_share: 0.04,
            failing_share: 0.03,
            outdated_share: 0.08,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("shares must each be between 0 and 1 and add up to at most 1 (offline {0} + failing {1} + outdated {2})")]
    Shares(f64, f64, f64),
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub devices: Vec<SimDevice>,
}

/// Split `n` over `weights` in proportion (largest remainder), exactly.
pub fn apportion(n: usize, weights: &[u64]) -> Vec<usize> {
    let sum: u64 = weights.iter().sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let n128 = n as u128;
    let mut out: Vec<usize> = weights
        .iter()
        .map(|w| (n128 * u128::from(*w) / u128::from(sum)) as usize)
        .collect();
    let mut rest: Vec<(u128, usize)> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| (n128 * u128::from(*w) % u128::from(sum), i))
        .collect();
    rest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let missing = n - out.iter().sum::<usize>();
    for (_, i) in rest.into_iter().take(missing) {
        out[i] += 1;
    }
    out
}

fn county_code(p: ProvinceCode, c: usize) -> CountyCode {
    CountyCode::parse(&format!("{p}-SIM{}", c + 1)).expect("simulator county codes are valid")
}

fn station_id(p: ProvinceCode, c: usize, s: usize) -> StationId {
    StationId::parse(&format!("SIM-{:02}-{}-{}", p.number(), c + 1, s + 1))
        .expect("simulator station ids are valid")
}

impl Plan {
    pub fn new(cfg: &PlanConfig) -> Result<Self, PlanError> {
        let (o, f, u) = (cfg.offline_share, cfg.failing_share, cfg.outdated_share);
        let ok = |x: f64| (0.0..=1.0).contains(&x);
        if !(ok(o) && ok(f) && ok(u) && o + f + u <= 1.0) {
            return Err(PlanError::Shares(o, f, u));
        }
        let provinces: Vec<ProvinceCode> = if cfg.provinces.is_empty() {
            ProvinceCode::all().collect()
        } else {
            cfg.provinces.clone()
        };
        let weights: Vec<u64> = provinces
            .iter()
            .map(|p| u64::from(p.info().population_k))
            .collect();
        let per_province = apportion(cfg.devices, &weights);

        let n = cfg.devices;
        let round = |share: f64| ((n as f64) * share).round() as usize;
        let mut conditions = vec![Condition::Healthy; n];
        let (k_off, k_fail, k_out) = (round(o), round(f), round(u));
        let mut idx = 0;
        for (k, c) in [
            (k_off, Condition::Offline),
            (k_fail, Condition::FailingCheck),
            (k_out, Condition::Outdated),
        ] {
            for slot in conditions.iter_mut().skip(idx).take(k) {
                *slot = c;
            }
            idx += k;
        }
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        conditions.shuffle(&mut rng);

        let mut devices = Vec::with_capacity(n);
        let mut i = 0;
        for (p, count) in provinces.iter().zip(per_province) {
            for k in 0..count {
                let (model, baseline, old) = MODELS[usize::from(k % 5 == 4)];
                let condition = conditions[i];
                let c = k % COUNTIES_PER_PROVINCE;
                let s = (k / COUNTIES_PER_PROVINCE) % STATIONS_PER_COUNTY;
                devices.push(SimDevice {
                    id: DeviceId::parse(&format!("SIM-{:02}-{k:05}", p.number()))
                        .expect("simulator ids are valid"),
                    model: Model::parse(model).expect("valid model"),
                    province: *p,
                    county: county_code(*p, c),
                    station: station_id(*p, c, s),
                    firmware: Version::parse(if condition == Condition::Outdated {
                        old
                    } else {
                        baseline
                    })
                    .expect("valid version"),
                    condition,
                });
                i += 1;
            }
        }
        Ok(Plan { devices })
    }

    /// The registry CSV for the counties and stations the plan uses.
    pub fn registry_csv(&self) -> String {
        let mut out =
            String::from("province,county,county_name_en,county_name_fa,station_id,station_name\n");
        let mut seen = std::collections::BTreeSet::new();
        for d in &self.devices {
            if seen.insert(d.station.clone()) {
                out.push_str(&format!(
                    "{},{},{} (simulated),{},{},Simulated station {}\n",
                    d.province,
                    d.county,
                    d.county,
                    d.province.info().name_fa,
                    d.station,
                    d.station
                ));
            }
        }
        out
    }

    /// What `fleetctl readiness --output json` must show once every device
    /// has reported: one row per province of the plan.
    pub fn expected(&self) -> Vec<ExpectedRow> {
        let mut rows: BTreeMap<ProvinceCode, ExpectedRow> = BTreeMap::new();
        for d in &self.devices {
            let row = rows.entry(d.province).or_insert_with(|| ExpectedRow {
                province: d.province.to_string(),
                total: 0,
                ready: 0,
                reasons: BTreeMap::new(),
            });
            row.total += 1;
            match d.condition.expected_reason() {
                None => row.ready += 1,
                Some(r) => *row.reasons.entry(r.to_owned()).or_default() += 1,
            }
        }
        rows.into_values().collect()
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ExpectedRow {
    pub province: String,
    pub total: u32,
    pub ready: u32,
    pub reasons: BTreeMap<String, u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apportion_is_exact_and_proportional() {
        assert_eq!(apportion(10, &[1, 1]), vec![5, 5]);
        assert_eq!(apportion(10, &[2, 1]), vec![7, 3]);
        assert_eq!(apportion(0, &[2, 1]), vec![0, 0]);
        let w: Vec<u64> = ProvinceCode::all()
            .map(|p| u64::from(p.info().population_k))
            .collect();
        let a = apportion(2000, &w);
        assert_eq!(a.iter().sum::<usize>(), 2000);
        let tehran = a[23];
        assert_eq!(tehran, *a.iter().max().unwrap(), "Tehran is largest");
    }

    #[test]
    fn plan_is_deterministic_and_counts_match() {
        let cfg = PlanConfig {
            devices: 200,
            seed: 7,
            ..PlanConfig::default()
        };
        let a = Plan::new(&cfg).unwrap();
        let b = Plan::new(&cfg).unwrap();
        assert_eq!(a.expected(), b.expected());
        assert_eq!(a.devices.len(), 200);
        let off = a
            .devices
            .iter()
            .filter(|d| d.condition == Condition::Offline)
            .count();
        assert_eq!(off, 8);
        let other = Plan::new(&PlanConfig {
            seed: 8,
            ..cfg.clone()
        })
        .unwrap();
        assert_ne!(
            a.devices.iter().map(|d| d.condition).collect::<Vec<_>>(),
            other
                .devices
                .iter()
                .map(|d| d.condition)
                .collect::<Vec<_>>()
        );
        let total: u32 = a.expected().iter().map(|r| r.total).sum();
        assert_eq!(total, 200);
    }

    #[test]
    fn ids_are_unique_and_registry_covers_every_station() {
        let p = Plan::new(&PlanConfig::default()).unwrap();
        let ids: std::collections::HashSet<_> = p.devices.iter().map(|d| d.id.clone()).collect();
        assert_eq!(ids.len(), p.devices.len());
        let csv = p.registry_csv();
        for d in &p.devices {
            assert!(csv.contains(&format!(",{},", d.station)));
        }
    }

    #[test]
    fn bad_shares_are_refused() {
        let cfg = PlanConfig {
            offline_share: 0.7,
            failing_share: 0.5,
            ..PlanConfig::default()
        };
        assert!(Plan::new(&cfg).is_err());
    }
}
