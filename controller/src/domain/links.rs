//! The bridge links of the provincial brokers (pure): for each broker of
//! the tier, whether its bridge to the central broker is up and since when,
//! as its link reports said (`fleet/v1/bridge/bridge.NAME/state`, the
//! bridge's last will when it drops), and the last outage while it still
//! matters to readiness ([`Outage`]).

use fleet_protocol::ProvinceCode;

use crate::domain::readiness::Outage;

/// A link as last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkState {
    pub up: bool,
    /// Since when it is up or down: the controller's receipt of the report
    /// that changed it. A first report after a start that says "up" counts
    /// from then; one that says "down" (the retained "0" of an outage that
    /// began before the start) from the newest report of the devices
    /// behind the broker (see [`Links::report_seen`]).
    pub since_ms: u64,
    /// The last outage (ongoing when the link is down).
    outage: Option<Outage>,
}

#[derive(Debug, Clone)]
struct BrokerLink {
    name: String,
    provinces: Vec<ProvinceCode>,
    /// `None` until its first report after the controller started.
    state: Option<LinkState>,
}

/// What a link report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkReport {
    /// No broker of that name in the tier: ignored.
    NotInTier,
    /// The link was known to be so already.
    Unchanged,
    /// The link changed (or was first heard of): the devices of these
    /// provinces are to be judged again.
    Changed {
        up: bool,
        provinces: Vec<ProvinceCode>,
    },
}

/// Every provincial broker's link; empty without a tier.
#[derive(Debug, Clone, Default)]
pub struct Links {
    brokers: Vec<BrokerLink>,
    /// Index into `brokers` by province number.
    by_province: [Option<usize>; 31],
}

impl Links {
    /// The tier's brokers by name with the provinces each serves.
    pub fn new(brokers: impl IntoIterator<Item = (String, Vec<ProvinceCode>)>) -> Self {
        let mut links = Links::default();
        for (name, provinces) in brokers {
            let i = links.brokers.len();
            for p in &provinces {
                links.by_province[usize::from(p.number())] = Some(i);
            }
            links.brokers.push(BrokerLink {
                name,
                provinces,
                state: None,
            });
        }
        links
    }

    /// Broker `name` says its link is `up` (or not), received at `now_ms`.
    /// A link that goes down again less than a freshness window after it
    /// came back continues the outage before (its devices may not have
    /// spoken in between).
    pub fn report(&mut self, name: &str, up: bool, now_ms: u64, freshness_ms: u64) -> LinkReport {
        self.report_seen(name, up, now_ms, freshness_ms, |_| None)
    }

    /// [`Links::report`], where the first report after a start may say
    /// "down": the link went down before the controller started (a restart
    /// during an outage reads the retained "0"), so the outage is taken to
    /// have begun at the newest report received from a device behind the
    /// broker (`newest_seen` of its provinces; nothing came through the
    /// link after it went down), or now if none was ever heard, never later
    /// than now. Taking it as "now" would make every device that was silent
    /// for a freshness window before the restart `offline`, not
    /// `link-down`.
    pub fn report_seen(
        &mut self,
        name: &str,
        up: bool,
        now_ms: u64,
        freshness_ms: u64,
        newest_seen: impl FnOnce(&[ProvinceCode]) -> Option<u64>,
    ) -> LinkReport {
        let Some(b) = self.brokers.iter_mut().find(|b| b.name == name) else {
            return LinkReport::NotInTier;
        };
        let mut since_ms = now_ms;
        let outage = match (b.state, up) {
            (Some(s), _) if s.up == up => return LinkReport::Unchanged,
            (None, true) => None,
            (Some(s), true) => s.outage.map(|o| Outage {
                back_at_ms: Some(now_ms),
                ..o
            }),
            (Some(s), false) => Some(match s.outage {
                Some(o)
                    if o.back_at_ms
                        .is_some_and(|back| now_ms <= back + freshness_ms) =>
                {
                    Outage {
                        back_at_ms: None,
                        ..o
                    }
                }
                _ => Outage {
                    down_since_ms: now_ms,
                    back_at_ms: None,
                },
            }),
            (None, false) => {
                since_ms = newest_seen(&b.provinces).map_or(now_ms, |seen| seen.min(now_ms));
                Some(Outage {
                    down_since_ms: since_ms,
                    back_at_ms: None,
                })
            }
        };
        b.state = Some(LinkState {
            up,
            since_ms,
            outage,
        });
        LinkReport::Changed {
            up,
            provinces: b.provinces.clone(),
        }
    }

    /// The broker serving `province` and its link, once reported.
    pub fn status_of(&self, province: ProvinceCode) -> Option<(&str, LinkState)> {
        let b = &self.brokers[self.by_province[usize::from(province.number())]?];
        Some((b.name.as_str(), b.state?))
    }

    /// The outage of `province`'s link if it matters to readiness at
    /// `now_ms`: while the link is down, and up to one freshness window
    /// after it came back.
    pub fn outage_of(
        &self,
        province: ProvinceCode,
        now_ms: u64,
        freshness_ms: u64,
    ) -> Option<Outage> {
        let (_, state) = self.status_of(province)?;
        state.outage.filter(|o| {
            o.back_at_ms
                .is_none_or(|back| now_ms <= back.saturating_add(freshness_ms))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(code: &str) -> ProvinceCode {
        ProvinceCode::parse(code).unwrap()
    }

    const FRESH: u64 = 60_000;

    fn links() -> Links {
        Links::new([("p01".to_owned(), vec![p("IR-02"), p("IR-27")])])
    }

    #[test]
    fn the_first_report_counts_from_its_receipt_and_repeats_change_nothing() {
        let mut l = links();
        assert_eq!(l.status_of(p("IR-02")), None, "unknown until reported");
        assert_eq!(l.status_of(p("IR-23")), None, "not in the tier");
        assert_eq!(
            l.report("p01", true, 1_000, FRESH),
            LinkReport::Changed {
                up: true,
                provinces: vec![p("IR-02"), p("IR-27")]
            }
        );
        assert_eq!(l.report("p01", true, 2_000, FRESH), LinkReport::Unchanged);
        let (name, s) = l.status_of(p("IR-27")).unwrap();
        assert_eq!((name, s.up, s.since_ms), ("p01", true, 1_000));
        assert_eq!(l.outage_of(p("IR-27"), 2_000, FRESH), None);
        assert_eq!(l.report("p99", false, 3_000, FRESH), LinkReport::NotInTier);
    }

    #[test]
    fn an_outage_matters_while_down_and_one_window_after_the_return() {
        let mut l = links();
        l.report("p01", false, 10_000, FRESH);
        let down = Outage {
            down_since_ms: 10_000,
            back_at_ms: None,
        };
        assert_eq!(l.outage_of(p("IR-02"), 500_000, FRESH), Some(down));
        l.report("p01", true, 600_000, FRESH);
        let (_, s) = l.status_of(p("IR-02")).unwrap();
        assert_eq!((s.up, s.since_ms), (true, 600_000));
        let back = Outage {
            back_at_ms: Some(600_000),
            ..down
        };
        assert_eq!(l.outage_of(p("IR-02"), 600_000 + FRESH, FRESH), Some(back));
        assert_eq!(l.outage_of(p("IR-02"), 600_001 + FRESH, FRESH), None);
        // Down again within the window: the same outage goes on.
        l.report("p01", false, 630_000, FRESH);
        assert_eq!(l.outage_of(p("IR-02"), 640_000, FRESH), Some(down));
        assert_eq!(l.status_of(p("IR-02")).unwrap().1.since_ms, 630_000);
        // Down again long after: a new outage.
        l.report("p01", true, 700_000, FRESH);
        l.report("p01", false, 900_000, FRESH);
        assert_eq!(
            l.outage_of(p("IR-02"), 900_000, FRESH),
            Some(Outage {
                down_since_ms: 900_000,
                back_at_ms: None
            })
        );
    }

    #[test]
    fn a_first_report_down_dates_the_outage_from_the_newest_device_report() {
        // A restart during an outage: the retained "0" is the first report.
        let mut l = links();
        let mut asked = vec![];
        l.report_seen("p01", false, 1_000_000, FRESH, |ps| {
            asked = ps.to_vec();
            Some(400_000)
        });
        assert_eq!(asked, vec![p("IR-02"), p("IR-27")], "its own provinces");
        let (_, s) = l.status_of(p("IR-02")).unwrap();
        assert_eq!((s.up, s.since_ms), (false, 400_000));
        assert_eq!(
            l.outage_of(p("IR-27"), 1_000_000, FRESH),
            Some(Outage {
                down_since_ms: 400_000,
                back_at_ms: None
            })
        );
        // Nobody ever heard behind it: from now. Never later than now.
        for seen in [None, Some(2_000_000)] {
            let mut l = links();
            l.report_seen("p01", false, 1_000_000, FRESH, |_| seen);
            assert_eq!(l.status_of(p("IR-02")).unwrap().1.since_ms, 1_000_000);
        }
        // Only the first report asks; a later "down" counts from its receipt.
        let mut l = links();
        l.report("p01", true, 1_000, FRESH);
        l.report_seen("p01", false, 500_000, FRESH, |_| panic!("not asked"));
        assert_eq!(l.status_of(p("IR-02")).unwrap().1.since_ms, 500_000);
        // A first "up" asks nothing either.
        let mut l = links();
        l.report_seen("p01", true, 7_000, FRESH, |_| panic!("not asked"));
        assert_eq!(l.status_of(p("IR-02")).unwrap().1.since_ms, 7_000);
    }
}
