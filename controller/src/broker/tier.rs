//! The provincial broker tier: which broker serves which provinces, where
//! its devices reach it, and which bridge identity speaks for it on the
//! central broker. Pure: built from the configuration, asked by enrolment
//! (a device's broker), ingest (may this bridge speak for this device?),
//! the publisher (the route to a device) and readiness (whose link is down).

use std::collections::BTreeMap;

use fleet_protocol::topic::{bridge_identity, valid_broker_name};
use fleet_protocol::ProvinceCode;

/// One provincial broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierBroker {
    /// `[a-z0-9-]{1,32}`, e.g. `p01`.
    pub name: String,
    /// The provinces whose devices it serves; never empty, never shared.
    pub provinces: Vec<ProvinceCode>,
    /// Where its devices reach it (told to them at enrolment).
    pub host: String,
    /// 0 until a managed broker picked its port.
    pub port: u16,
    /// Started and supervised by this controller (else Ansible runs it).
    pub managed: bool,
    /// Where its bridge connects, `host:port`; empty: the central broker
    /// (a relay or proxy in between is given here).
    pub uplink: String,
}

impl TierBroker {
    /// Its bridge's certificate name, MQTT user and client id on the
    /// central broker: `bridge.{name}`.
    pub fn bridge(&self) -> String {
        bridge_identity(&self.name)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TierError {
    #[error("provincial broker name {0:?}: use 1-32 of a-z 0-9 -")]
    BadName(String),
    #[error("two provincial brokers are named {0:?}")]
    DuplicateName(String),
    #[error("provincial broker {0:?} serves no province")]
    NoProvinces(String),
    #[error("province {province} is served by both {first:?} and {second:?}")]
    SharedProvince {
        province: ProvinceCode,
        first: String,
        second: String,
    },
    #[error("cannot split 31 provinces over {0} brokers: use 1 to 31")]
    BadCount(usize),
}

/// The whole tier; empty when every device reaches the central broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tier {
    brokers: Vec<TierBroker>,
    by_province: BTreeMap<ProvinceCode, usize>,
}

impl Tier {
    pub fn new(brokers: Vec<TierBroker>) -> Result<Self, TierError> {
        let mut by_province = BTreeMap::new();
        for (i, b) in brokers.iter().enumerate() {
            if !valid_broker_name(&b.name) {
                return Err(TierError::BadName(b.name.clone()));
            }
            if brokers[..i].iter().any(|o| o.name == b.name) {
                return Err(TierError::DuplicateName(b.name.clone()));
            }
            if b.provinces.is_empty() {
                return Err(TierError::NoProvinces(b.name.clone()));
            }
            for p in &b.provinces {
                if let Some(j) = by_province.insert(*p, i) {
                    return Err(TierError::SharedProvince {
                        province: *p,
                        first: brokers[j].name.clone(),
                        second: b.name.clone(),
                    });
                }
            }
        }
        Ok(Self {
            brokers,
            by_province,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.brokers.is_empty()
    }

    pub fn brokers(&self) -> &[TierBroker] {
        &self.brokers
    }

    /// Set a managed broker's port once it listens.
    pub fn set_port(&mut self, name: &str, port: u16) {
        if let Some(b) = self.brokers.iter_mut().find(|b| b.name == name) {
            b.port = port;
        }
    }

    /// The broker that serves `province`, if any (else the central one).
    pub fn broker_of(&self, province: ProvinceCode) -> Option<&TierBroker> {
        self.by_province.get(&province).map(|&i| &self.brokers[i])
    }

    /// The bridge identity a device of `province` is reached through on the
    /// central broker (`None`: directly).
    pub fn route_of(&self, province: ProvinceCode) -> Option<String> {
        self.broker_of(province).map(TierBroker::bridge)
    }

    /// The broker whose bridge has this identity.
    pub fn by_bridge(&self, identity: &str) -> Option<&TierBroker> {
        self.brokers.iter().find(|b| b.bridge() == identity)
    }

    /// Whether bridge `identity` may speak for a device of `province`.
    pub fn may_speak_for(&self, identity: &str, province: ProvinceCode) -> bool {
        self.broker_of(province)
            .is_some_and(|b| b.bridge() == identity)
    }
}

/// Split the 31 provinces into `n` groups of about equal population (the
/// simulator and the field spread devices by it): the largest province
/// first, each to the lightest group so far. Deterministic; each group is
/// sorted by code, and the groups by their first province.
pub fn split_provinces(n: usize) -> Result<Vec<Vec<ProvinceCode>>, TierError> {
    let all: Vec<ProvinceCode> = ProvinceCode::all().collect();
    if n == 0 || n > all.len() {
        return Err(TierError::BadCount(n));
    }
    let mut by_size = all;
    by_size.sort_by_key(|p| (std::cmp::Reverse(p.info().population_k), *p));
    let mut groups: Vec<(u64, Vec<ProvinceCode>)> = vec![(0, Vec::new()); n];
    for p in by_size {
        let lightest = groups
            .iter_mut()
            .min_by_key(|(weight, g)| (*weight, g.len()))
            .expect("n >= 1");
        lightest.0 += u64::from(p.info().population_k);
        lightest.1.push(p);
    }
    let mut groups: Vec<Vec<ProvinceCode>> = groups
        .into_iter()
        .map(|(_, mut g)| {
            g.sort();
            g
        })
        .collect();
    groups.sort();
    Ok(groups)
}

/// The managed brokers `serve --provincial-brokers N` runs on this
/// machine: `p01` … `pNN` over [`split_provinces`], ports picked at start.
pub fn managed_tier(n: usize, host: &str) -> Result<Vec<TierBroker>, TierError> {
    Ok(split_provinces(n)?
        .into_iter()
        .enumerate()
        .map(|(i, provinces)| TierBroker {
            name: format!("p{:02}", i + 1),
            provinces,
            host: host.to_owned(),
            port: 0,
            managed: true,
            uplink: String::new(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(code: &str) -> ProvinceCode {
        ProvinceCode::parse(code).unwrap()
    }

    fn broker(name: &str, provinces: &[&str]) -> TierBroker {
        TierBroker {
            name: name.to_owned(),
            provinces: provinces.iter().map(|c| p(c)).collect(),
            host: "127.0.0.1".to_owned(),
            port: 0,
            managed: true,
            uplink: String::new(),
        }
    }

    #[test]
    fn a_split_covers_every_province_once_with_balanced_weight() {
        for n in [1, 2, 3, 7, 31] {
            let groups = split_provinces(n).unwrap();
            assert_eq!(groups.len(), n);
            let mut seen: Vec<ProvinceCode> = groups.iter().flatten().copied().collect();
            seen.sort();
            assert_eq!(seen, ProvinceCode::all().collect::<Vec<_>>(), "n={n}");
            let weights: Vec<u64> = groups
                .iter()
                .map(|g| g.iter().map(|p| u64::from(p.info().population_k)).sum())
                .collect();
            let largest_province = u64::from(p("IR-23").info().population_k);
            let (min, max) = (weights.iter().min().unwrap(), weights.iter().max().unwrap());
            // Greedy by size: no group exceeds the lightest by more than the largest province.
            assert!(max - min <= largest_province, "n={n}: {weights:?}");
        }
        assert_eq!(split_provinces(2).unwrap(), split_provinces(2).unwrap());
        assert_eq!(split_provinces(0), Err(TierError::BadCount(0)));
        assert_eq!(split_provinces(32), Err(TierError::BadCount(32)));
    }

    #[test]
    fn routes_and_who_may_speak_for_whom() {
        let tier = Tier::new(vec![
            broker("north", &["IR-02", "IR-01"]),
            broker("south", &["IR-07"]),
        ])
        .unwrap();
        assert_eq!(tier.route_of(p("IR-02")).as_deref(), Some("bridge.north"));
        assert_eq!(
            tier.route_of(p("IR-23")),
            None,
            "Tehran is served centrally"
        );
        assert!(tier.may_speak_for("bridge.north", p("IR-01")));
        assert!(!tier.may_speak_for("bridge.north", p("IR-07")));
        assert!(!tier.may_speak_for("bridge.south", p("IR-23")));
        assert_eq!(tier.by_bridge("bridge.south").unwrap().name, "south");
        let mut tier = tier;
        tier.set_port("south", 18830);
        assert_eq!(tier.broker_of(p("IR-07")).unwrap().port, 18830);
        assert!(Tier::default().is_empty());
    }

    #[test]
    fn a_bad_tier_is_refused_with_what_is_wrong() {
        let shared = Tier::new(vec![broker("a", &["IR-02"]), broker("b", &["IR-02"])]);
        assert!(matches!(shared, Err(TierError::SharedProvince { .. })));
        assert_eq!(
            Tier::new(vec![broker("a", &["IR-02"]), broker("a", &["IR-03"])]),
            Err(TierError::DuplicateName("a".into()))
        );
        assert_eq!(
            Tier::new(vec![broker("A", &["IR-02"])]),
            Err(TierError::BadName("A".into()))
        );
        assert_eq!(
            Tier::new(vec![broker("a", &[])]),
            Err(TierError::NoProvinces("a".into()))
        );
        let managed = managed_tier(3, "127.0.0.1").unwrap();
        assert_eq!(
            managed.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(),
            ["p01", "p02", "p03"]
        );
        assert!(Tier::new(managed).is_ok());
    }
}
