//! When to send a health report (pure): at least every `report_every`, and at
//! once when the set of breached thresholds changes (a crossing in either
//! direction). Nothing else is sent: report by exception.

use std::time::Duration;

use fleet_protocol::Health;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds {
    pub cpu_pct_high: u8,
    pub mem_used_pct_high: u8,
    pub disk_free_pct_low: u8,
    pub temp_c_high: i16,
    pub battery_pct_low: u8,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            cpu_pct_high: 95,
            mem_used_pct_high: 90,
            disk_free_pct_low: 10,
            temp_c_high: 80,
            battery_pct_low: 20,
        }
    }
}

/// Which thresholds a sample breaches, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Breaches(u8);

impl Breaches {
    pub const CPU: u8 = 1;
    pub const MEMORY: u8 = 2;
    pub const DISK: u8 = 4;
    pub const TEMPERATURE: u8 = 8;
    pub const BATTERY: u8 = 16;

    pub fn of(h: &Health, t: &Thresholds) -> Self {
        let mut bits = 0;
        if h.cpu_pct >= t.cpu_pct_high {
            bits |= Self::CPU;
        }
        if h.mem_used_pct >= t.mem_used_pct_high {
            bits |= Self::MEMORY;
        }
        if h.disk_free_pct <= t.disk_free_pct_low {
            bits |= Self::DISK;
        }
        if h.temp_c.is_some_and(|c| c >= t.temp_c_high) {
            bits |= Self::TEMPERATURE;
        }
        if h.battery_pct.is_some_and(|b| b <= t.battery_pct_low) {
            bits |= Self::BATTERY;
        }
        Self(bits)
    }

    pub fn contains(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

#[derive(Debug, Clone)]
pub struct HealthPolicy {
    pub report_every: Duration,
    pub thresholds: Thresholds,
}

/// Remembers what was last reported; decides on each sample.
#[derive(Debug)]
pub struct HealthReporter {
    policy: HealthPolicy,
    last_report_ms: Option<u64>,
    last_breaches: Breaches,
    /// What the two fields above were before the latest [`Self::reported`],
    /// so a refused publish can be taken back.
    before: (Option<u64>, Breaches),
}

impl HealthReporter {
    pub fn new(policy: HealthPolicy) -> Self {
        Self {
            policy,
            last_report_ms: None,
            last_breaches: Breaches::default(),
            before: (None, Breaches::default()),
        }
    }

    /// Whether this sample must be reported now. Call [`Self::reported`]
    /// once it was actually handed to the broker.
    pub fn should_report(&self, now_ms: u64, sample: &Health) -> bool {
        let due = match self.last_report_ms {
            None => true,
            Some(last) => {
                now_ms.saturating_sub(last)
                    >= u64::try_from(self.policy.report_every.as_millis()).unwrap_or(u64::MAX)
            }
        };
        due || Breaches::of(sample, &self.policy.thresholds) != self.last_breaches
    }

    pub fn reported(&mut self, now_ms: u64, sample: &Health) {
        self.before = (self.last_report_ms, self.last_breaches);
        self.last_report_ms = Some(now_ms);
        self.last_breaches = Breaches::of(sample, &self.policy.thresholds);
    }

    /// The report last marked [`Self::reported`] never reached the broker:
    /// the next sample is judged as if it had not been sent.
    pub fn refused(&mut self) {
        (self.last_report_ms, self.last_breaches) = self.before;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            report_every: Duration::from_secs(300),
            thresholds: Thresholds::default(),
        }
    }

    fn normal() -> Health {
        Health {
            cpu_pct: 10,
            mem_used_pct: 40,
            disk_free_pct: 60,
            temp_c: Some(45),
            battery_pct: Some(90),
            uptime_s: 100,
            clock_offset_ms: None,
            disk_free_mb: 5000,
            window: None,
        }
    }

    #[test]
    fn first_sample_is_reported_then_only_on_timer() {
        let mut r = HealthReporter::new(policy());
        assert!(r.should_report(0, &normal()));
        r.reported(0, &normal());
        assert!(!r.should_report(15_000, &normal()));
        assert!(!r.should_report(299_999, &normal()));
        assert!(r.should_report(300_000, &normal()));
    }

    #[test]
    fn refused_report_is_taken_back() {
        let mut r = HealthReporter::new(policy());
        r.reported(0, &normal());
        r.reported(300_000, &normal());
        r.refused();
        assert!(r.should_report(300_001, &normal()));
    }

    #[test]
    fn crossing_reports_at_once_both_ways() {
        let mut r = HealthReporter::new(policy());
        r.reported(0, &normal());
        let hot = Health {
            temp_c: Some(85),
            ..normal()
        };
        assert!(r.should_report(1_000, &hot));
        r.reported(1_000, &hot);
        // still hot: nothing new to say
        assert!(!r.should_report(2_000, &hot));
        // cooled down: a crossing back is news too
        assert!(r.should_report(3_000, &normal()));
    }

    #[test]
    fn each_threshold_is_watched() {
        let t = Thresholds::default();
        let cases = [
            (
                Health {
                    cpu_pct: 99,
                    ..normal()
                },
                Breaches::CPU,
            ),
            (
                Health {
                    mem_used_pct: 95,
                    ..normal()
                },
                Breaches::MEMORY,
            ),
            (
                Health {
                    disk_free_pct: 5,
                    ..normal()
                },
                Breaches::DISK,
            ),
            (
                Health {
                    temp_c: Some(90),
                    ..normal()
                },
                Breaches::TEMPERATURE,
            ),
            (
                Health {
                    battery_pct: Some(5),
                    ..normal()
                },
                Breaches::BATTERY,
            ),
        ];
        for (h, bit) in cases {
            let b = Breaches::of(&h, &t);
            assert!(b.contains(bit), "{h:?}");
        }
        assert_eq!(Breaches::of(&normal(), &t), Breaches::default());
        // absent sensors never breach
        let no_sensors = Health {
            temp_c: None,
            battery_pct: None,
            ..normal()
        };
        assert_eq!(Breaches::of(&no_sensors, &t), Breaches::default());
    }
}
