//! Simulated hardware behind the real agent's [`Hardware`] trait: plausible
//! metrics that wander a little, three peripheral checks, one of which fails
//! on devices planned that way.

use std::time::Instant;

use fleet_agent::hardware::CheckFuture;
use fleet_agent::Hardware;
use fleet_protocol::{CheckResult, Health, Version};
use rand::{rngs::SmallRng, Rng, SeedableRng};

pub struct SimHardware {
    firmware: Version,
    failing: bool,
    rng: SmallRng,
    booted: Instant,
    uptime_base_s: u64,
}

impl SimHardware {
    pub fn new(firmware: Version, failing: bool, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let uptime_base_s = rng.gen_range(600..400_000);
        Self {
            firmware,
            failing,
            rng,
            booted: Instant::now(),
            uptime_base_s,
        }
    }
}

impl Hardware for SimHardware {
    fn firmware(&self) -> Version {
        self.firmware.clone()
    }

    fn sample(&mut self) -> Health {
        let r = &mut self.rng;
        Health {
            cpu_pct: r.gen_range(1..35),
            mem_used_pct: r.gen_range(25..70),
            disk_free_pct: r.gen_range(30..80),
            temp_c: Some(r.gen_range(35..65)),
            battery_pct: Some(r.gen_range(40..100)),
            uptime_s: self.uptime_base_s + self.booted.elapsed().as_secs(),
            clock_offset_ms: None,
            disk_free_mb: r.gen_range(2_000..30_000),
            window: None,
        }
    }

    fn run_checks(&mut self) -> CheckFuture {
        let failing = self.failing;
        Box::pin(async move {
            vec![
                CheckResult {
                    name: "printer".into(),
                    passed: !failing,
                    message: failing.then(|| "paper jam".into()),
                },
                CheckResult {
                    name: "card-reader".into(),
                    passed: true,
                    message: None,
                },
                CheckResult {
                    name: "fingerprint".into(),
                    passed: true,
                    message: None,
                },
            ]
        })
    }

    fn reboot(&mut self) -> Result<(), String> {
        Err("simulated devices do not reboot".into())
    }
}
