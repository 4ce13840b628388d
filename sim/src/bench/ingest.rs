//! `fleet-sim bench ingest`: does the controller keep up with the fleet's
//! stream through the tier? Over the same window, the messages the
//! controller applied (`fleet_ingest_applied_total` on its `/metrics`)
//! against the device messages a bare subscriber on the central broker
//! counted ([`super::observer`]); goal: ratio ≥ 0.95.
//!
//! Two phases on one fleet:
//! (a) the fleet's own rate (`--health-secs`, 60 s by default: 100,000
//!     devices give about 1,700 msg/s);
//! (b) the highest rate the tier sustains: the simulator is restarted with
//!     half the health interval each step (same devices, no enrolment;
//!     whole seconds down to 1 s, the controller's default per-device
//!     limit of 600 messages a minute being far above) until the ratio
//!     falls under 0.95 or the observer's rate stops growing (less than
//!     5 % more than the step before); the last step that held and the
//!     one that failed are reported.
//!
//! Also the old figures: controller CPU (% of one core) and resident
//! memory in phase (a), and each broker's CPU.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::fleet::{BenchFleet, FleetOptions};
use super::observer::Observer;
use super::{counter, cpu_seconds, rss_kib, sibling_bin};
use crate::report::Report;

/// The goal for the ratio.
pub const GOAL: f64 = 0.95;
/// A step must raise the observer's rate by this much to count as growing.
pub const GROWTH: f64 = 1.05;

/// Counters at both ends of a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub applied: (f64, f64),
    pub observed: (u64, u64),
    pub secs: f64,
}

/// Rates over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub controller: f64,
    pub observer: f64,
    /// controller / observer; 0 when the observer saw nothing (a number
    /// always, so the JSON holds one).
    pub ratio: f64,
}

pub fn rates(w: &Window) -> Rates {
    let secs = w.secs.max(f64::MIN_POSITIVE);
    let applied = (w.applied.1 - w.applied.0).max(0.0);
    let observed = w.observed.1.saturating_sub(w.observed.0) as f64;
    Rates {
        controller: applied / secs,
        observer: observed / secs,
        ratio: if observed > 0.0 {
            applied / observed
        } else {
            0.0
        },
    }
}

/// A step of phase (b) holds when the controller keeps up and the
/// observer's rate still grew over the previous step's.
pub fn step_holds(r: &Rates, previous_observer: Option<f64>) -> bool {
    r.ratio >= GOAL && previous_observer.is_none_or(|p| r.observer >= p * GROWTH)
}

/// The window actually measured: at least one health interval, since
/// every device sends its health at connect and the next a whole interval
/// later (a shorter window can fall between the two and count nothing).
pub fn effective_window(asked: Duration, health_secs: u64) -> Duration {
    asked.max(Duration::from_secs(health_secs))
}

/// Phase (b)'s health intervals after `start`: halved each step (whole
/// seconds, at least 1), at most `max` steps.
pub fn steps(start: u64, max: usize) -> Vec<u64> {
    let mut out = Vec::new();
    let mut h = start;
    while h > 1 && out.len() < max {
        h = (h / 2).max(1);
        out.push(h);
    }
    out
}

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub fleet: FleetOptions,
    /// Measured window W.
    pub window: Duration,
    /// After the fleet is up (or restarted), before W starts.
    pub warmup: Duration,
    /// Phase (b)'s steps at most (0: phase (a) only).
    pub max_steps: usize,
    pub out: PathBuf,
}

struct Sample {
    rates: Rates,
    /// The observer lost the broker during the window: its count is short.
    observer_lost: bool,
    cpu_pct: f64,
    brokers_cpu: Vec<(String, f64)>,
}

async fn applied(fleet: &BenchFleet) -> anyhow::Result<(f64, bool)> {
    let text = fleet.api.client.metrics().await?;
    if text.contains("fleet_ingest_applied_total") {
        Ok((counter(&text, "fleet_ingest_applied_total"), true))
    } else {
        // A controller from before the applied counter (or that applied
        // nothing yet): what it received.
        Ok((counter(&text, "fleet_ingest_messages_total"), false))
    }
}

async fn sample(
    fleet: &BenchFleet,
    obs: &Observer,
    o: &IngestOptions,
    window: Duration,
) -> anyhow::Result<Sample> {
    tokio::time::sleep(o.warmup).await;
    let pid = fleet.controller_pid();
    let brokers = fleet.broker_pids();
    let b0: Vec<f64> = brokers
        .iter()
        .map(|(_, p)| cpu_seconds(*p).unwrap_or(0.0))
        .collect();
    let cpu0 = cpu_seconds(pid)?;
    let (a0, o0, t0) = (applied(fleet).await?.0, obs.count(), Instant::now());
    let c0 = obs.connections();
    tokio::time::sleep(window).await;
    let observer_lost = obs.connections() != c0;
    let (a1, o1) = (applied(fleet).await?.0, obs.count());
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds(pid)?;
    let brokers_cpu = brokers
        .iter()
        .zip(b0)
        .map(|((name, p), c0)| {
            (
                name.clone(),
                (cpu_seconds(*p).unwrap_or(c0) - c0) / secs * 100.0,
            )
        })
        .collect();
    Ok(Sample {
        observer_lost,
        rates: rates(&Window {
            applied: (a0, a1),
            observed: (o0, o1),
            secs,
        }),
        cpu_pct: (cpu1 - cpu0) / secs * 100.0,
        brokers_cpu,
    })
}

/// `fleet-sim bench ingest` on its own fleet.
pub async fn run(o: IngestOptions) -> anyhow::Result<PathBuf> {
    let mut fleet = BenchFleet::start(o.fleet.clone()).await?;
    let mut r = Report::new("ingest");
    let result = measure(&mut fleet, &o, &mut r).await;
    fleet.stop().await;
    result?;
    r.finish(&o.out)
}

/// Both phases on a running fleet, into `r`.
pub async fn measure(
    fleet: &mut BenchFleet,
    o: &IngestOptions,
    r: &mut Report,
) -> anyhow::Result<()> {
    let bin = sibling_bin("fleet-controller", o.fleet.controller_bin.clone())?;
    let obs = Observer::start(&bin, fleet.data_dir(), &fleet.central).await?;
    let has_applied = applied(fleet).await?.1;
    common_params(r, fleet);
    let window = effective_window(o.window, o.fleet.health_secs);
    r.param("window_secs", window.as_secs())
        .param("warmup_secs", o.warmup.as_secs());
    if window > o.window {
        r.note(format!(
            "the window was raised from {} s to the health interval, {} s (a shorter one can fall between two health reports of every device and count nothing)",
            o.window.as_secs(),
            window.as_secs()
        ));
    }

    // (a) the fleet's own rate (measured again, once, if the observer
    // lost the broker during the window).
    let mut a = sample(fleet, &obs, o, window).await?;
    if a.observer_lost {
        a = sample(fleet, &obs, o, window).await?;
    }
    if a.observer_lost {
        r.note("a: the observer lost the broker during the window: its count is short");
    }
    r.figure("a: controller applied", a.rates.controller, "msg/s")
        .figure("a: observer", a.rates.observer, "msg/s")
        .figure_with_goal("a: ratio", a.rates.ratio, "ratio", ">= 0.95")
        .figure("a: controller CPU", a.cpu_pct, "% of a core")
        .figure(
            "a: controller resident memory",
            rss_kib(fleet.controller_pid())? as f64 / 1024.0,
            "MiB",
        );
    for (name, cpu) in &a.brokers_cpu {
        r.figure(&format!("a: {name} CPU"), *cpu, "% of a core");
    }
    println!(
        "ingest (a) health every {} s: controller {:.1} msg/s, observer {:.1} msg/s, ratio {:.3}",
        o.fleet.health_secs, a.rates.controller, a.rates.observer, a.rates.ratio
    );

    // (b) step the rate up.
    let (mut held, mut failed) = phase_a_start(o.fleet.health_secs, a.rates);
    if a.rates.observer <= 0.0 {
        r.note("a: the observer counted nothing in the window: phase b starts without a step held");
    }
    for h in steps(o.fleet.health_secs, o.max_steps) {
        if failed.is_some() {
            break;
        }
        fleet.restart_sim(h).await?;
        // "Running" means every device started, not that it reported: at
        // 100,000 devices the window would fall in the reconnection (a
        // 100,000-device step to 30 s measured 0.61 so). Wait until
        // readiness is the plan's again.
        if let Err(e) = fleet.wait_readiness().await {
            r.note(format!(
                "b: health every {h} s: sampled although readiness was not the plan's after the restart ({e:#})"
            ));
        }
        let mut s = sample(fleet, &obs, o, window).await?;
        if s.observer_lost {
            s = sample(fleet, &obs, o, window).await?;
        }
        if s.observer_lost {
            r.note(format!("b: health every {h} s: the observer lost the broker during the window: its count is short"));
        }
        println!(
            "ingest (b) health every {h} s: controller {:.1} msg/s, observer {:.1} msg/s, ratio {:.3}",
            s.rates.controller, s.rates.observer, s.rates.ratio
        );
        let before = held.map(|(_, r)| r.observer);
        if step_holds(&s.rates, before) {
            held = Some((h, s.rates));
        } else {
            failed = Some((h, s.rates));
        }
    }
    if o.max_steps > 0 {
        match held {
            Some((h, rates)) => {
                r.figure("b: last step held: health interval", h as f64, "s")
                    .figure("b: last step held: controller", rates.controller, "msg/s")
                    .figure("b: last step held: observer", rates.observer, "msg/s")
                    .figure("b: last step held: ratio", rates.ratio, "ratio");
            }
            None => {
                r.note("b: no step held (phase a under the goal or nothing observed, and no step after it held)");
            }
        }
        match failed {
            Some((h, rates)) => {
                r.figure("b: step failed: health interval", h as f64, "s")
                    .figure("b: step failed: controller", rates.controller, "msg/s")
                    .figure("b: step failed: observer", rates.observer, "msg/s")
                    .figure("b: step failed: ratio", rates.ratio, "ratio");
            }
            None => {
                r.note("b: no step failed up to the fastest step tried (health every 1 s, or --max-steps)");
            }
        }
    }
    r.note("b: each step restarts the simulator's shards with half the health interval (same devices, no enrolment); a step fails when the ratio is under 0.95 or the observer's rate grew less than 5 % over the step before");
    if !has_applied {
        r.note("the controller has no fleet_ingest_applied_total: the controller's figure is what it received (fleet_ingest_messages_total)");
    }
    Ok(())
}

/// Where phase (b) starts from phase (a) at `health_secs`: (held, failed).
/// Phase (a) held when the controller kept up; it failed when the ratio
/// was under the goal on a stream the observer saw; a window in which the
/// observer saw nothing is neither (phase b then steps on from nothing).
#[allow(clippy::type_complexity)]
pub fn phase_a_start(health_secs: u64, a: Rates) -> (Option<(u64, Rates)>, Option<(u64, Rates)>) {
    if a.observer <= 0.0 {
        (None, None)
    } else if a.ratio < GOAL {
        (None, Some((health_secs, a)))
    } else {
        (Some((health_secs, a)), None)
    }
}

/// The fleet's parameters, the same in every tier bench.
pub fn common_params(r: &mut Report, fleet: &BenchFleet) {
    r.param("devices", fleet.opts.devices)
        .param("seed", fleet.opts.seed)
        .param("provincial_brokers", fleet.opts.provincial_brokers)
        .param("health_secs", fleet.opts.health_secs)
        .param("shards", fleet.sim_pids().len())
        .param("enrolled_now", fleet.enrolled_now)
        .param("fleet_up_secs", (fleet.up_secs * 10.0).round() / 10.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_ratio_over_a_window() {
        let r = rates(&Window {
            applied: (1_000.0, 2_900.0),
            observed: (500, 2_500),
            secs: 10.0,
        });
        assert_eq!(r.controller, 190.0);
        assert_eq!(r.observer, 200.0);
        assert_eq!(r.ratio, 0.95);
        // Nothing observed: a ratio of 0, still a number.
        let r = rates(&Window {
            applied: (5.0, 5.0),
            observed: (7, 7),
            secs: 0.0,
        });
        assert_eq!(r.ratio, 0.0);
        assert!(r.controller.is_finite() && r.observer.is_finite());
    }

    #[test]
    fn a_step_holds_while_the_controller_keeps_up_and_the_stream_grows() {
        let at = |observer: f64, ratio: f64| Rates {
            controller: observer * ratio,
            observer,
            ratio,
        };
        assert!(step_holds(&at(100.0, 0.99), None));
        assert!(!step_holds(&at(100.0, 0.94), None));
        assert!(step_holds(&at(200.0, 0.96), Some(100.0)));
        // The observer's rate stopped growing: the tier is saturated.
        assert!(!step_holds(&at(104.0, 0.99), Some(100.0)));
    }

    #[test]
    fn the_window_is_at_least_one_health_interval() {
        assert_eq!(
            effective_window(Duration::from_secs(10), 60),
            Duration::from_secs(60)
        );
        assert_eq!(
            effective_window(Duration::from_secs(90), 60),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn phase_b_starts_from_what_phase_a_measured() {
        let at = |observer: f64, ratio: f64| Rates {
            controller: observer * ratio,
            observer,
            ratio,
        };
        let (held, failed) = phase_a_start(60, at(1000.0, 0.99));
        assert_eq!(held.map(|h| h.0), Some(60));
        assert!(failed.is_none());
        let (held, failed) = phase_a_start(60, at(1000.0, 0.5));
        assert!(held.is_none());
        assert_eq!(failed.map(|f| f.0), Some(60));
        // Nothing seen: not a failure of the controller.
        assert_eq!(phase_a_start(60, at(0.0, 0.0)), (None, None));
    }

    #[test]
    fn steps_halve_down_to_one_second() {
        assert_eq!(steps(60, 10), vec![30, 15, 7, 3, 1]);
        assert_eq!(steps(60, 2), vec![30, 15]);
        assert_eq!(steps(1, 10), Vec::<u64>::new());
        assert_eq!(steps(10, 0), Vec::<u64>::new());
    }
}
