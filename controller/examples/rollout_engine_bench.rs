//! How long the pure rollout engine takes per input at fleet scale: a
//! rollout of 100,000 devices over the 31 provinces (canary 1%, two
//! province groups, the rest), 40 downloads per province, a tick a
//! second. Each simulated second every released device moves one step
//! (downloading, installing, rebooting, result; 2% fail their boot check
//! and are retried), 3% of the fleet is offline until the rollout
//! completes (stragglers). Prints the time per tick and per device event (p50, p99,
//! max) and the simulated time to complete. No assertion: figures only.
//!
//! `cargo run -p fleet-controller --example rollout_engine_bench [-- DEVICES]`

use std::collections::HashSet;
use std::time::{Duration, Instant};

use fleet_controller::domain::rollout::{
    Canary, Candidate, DevState, Engine, Input, Phase, Policy, WavesSpec, World,
};
use fleet_controller::domain::updates::Outcome;
use fleet_protocol::{DeviceId, ProvinceCode, UpdatePhase};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(100_000, |s| s.parse().expect("a number of devices"));
    let provinces: Vec<ProvinceCode> = ProvinceCode::all().collect();
    let candidates: Vec<Candidate> = (0..n)
        .map(|i| Candidate {
            device: DeviceId::parse(&format!("dev-{i:06}")).expect("a device id"),
            province: provinces[i % provinces.len()],
            skip: (i % 50 == 49).then(|| "already on 2.5.0".to_owned()),
            online: !is_offline(i),
        })
        .collect();
    let offline: HashSet<DeviceId> = candidates
        .iter()
        .enumerate()
        .filter(|(i, _)| is_offline(*i))
        .map(|(_, c)| c.device.clone())
        .collect();
    let spec = WavesSpec {
        canary: Some(Canary::Percent(1.0)),
        groups: vec![
            vec![provinces[23], provinces[30]],
            vec![provinces[1], provinces[2]],
        ],
    };
    let policy = Policy {
        failure_threshold_pct: 5.0,
        ..Policy::default()
    };
    let t = Instant::now();
    let mut e = Engine::new(1, policy, &spec, candidates).expect("a plan");
    println!("plan of {n} devices: {:?}", t.elapsed());

    let mut now: u64 = 1_781_740_800_000;
    let freeze = Vec::new();
    let mut ticks = Vec::new();
    let mut events = Vec::new();
    let mut seconds = 0u64;
    let mut attempts_failed = HashSet::new();
    let mut offline_now = offline.clone();
    let call = |e: &mut Engine, input: Input, now: u64, offline: &HashSet<DeviceId>| {
        let online = |d: &DeviceId| !offline.contains(d);
        let w = World {
            now_ms: now,
            freeze: &freeze,
            online: &online,
            elsewhere: &|_| 0,
        };
        let t = Instant::now();
        let out = e.on(input, &w);
        (t.elapsed(), out)
    };
    let (_, out) = call(&mut e, Input::Start, now, &offline_now);
    out.expect("started");
    while seconds < 100_000 {
        seconds += 1;
        now += 1000;
        if e.status().phase == Phase::Completed {
            offline_now.clear();
            let c = e.counters();
            if c.pending + c.downloading + c.installing + c.rebooting == 0 {
                break;
            }
        }
        // Every device in flight moves one step.
        let moving: Vec<(DeviceId, DevState)> = e
            .members()
            .filter(|m| m.state.in_flight())
            .map(|m| (m.device.clone(), m.state))
            .collect();
        for (device, state) in moving {
            let input = match state {
                DevState::Released => Input::Progress {
                    device,
                    phase: UpdatePhase::Downloading,
                },
                DevState::Downloading => Input::Progress {
                    device,
                    phase: UpdatePhase::Installing,
                },
                DevState::Installing => Input::Progress {
                    device,
                    phase: UpdatePhase::Rebooting,
                },
                _ => {
                    let fails =
                        device.as_str().ends_with("13") && attempts_failed.insert(device.clone());
                    Input::Ended {
                        device,
                        outcome: if fails {
                            Outcome::RolledBack
                        } else {
                            Outcome::Committed
                        },
                        message: String::new(),
                    }
                }
            };
            let (d, _) = call(&mut e, input, now, &offline_now);
            events.push(d);
        }
        let (d, _) = call(&mut e, Input::Tick, now, &offline_now);
        ticks.push(d);
        if e.status().phase == Phase::Paused {
            call(&mut e, Input::RetryFailed, now, &offline_now)
                .1
                .expect("retry");
            call(&mut e, Input::Resume, now, &offline_now)
                .1
                .expect("resume");
        }
    }
    let c = e.counters();
    println!(
        "completed after {seconds} simulated seconds: {} succeeded, {} skipped, {} failed, phase {}",
        c.succeeded,
        c.skipped,
        c.failed + c.timed_out,
        e.status().phase.as_str()
    );
    report("tick", &mut ticks);
    report("device event", &mut events);
}

/// 3% of the fleet: offline until the rollout completes.
fn is_offline(i: usize) -> bool {
    matches!(i % 100, 7 | 37 | 77)
}

fn report(what: &str, v: &mut [Duration]) {
    v.sort();
    let at = |q: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((v.len() as f64 - 1.0) * q) as usize;
        v[i]
    };
    println!(
        "{what}: {} calls, p50 {:?}, p99 {:?}, max {:?}",
        v.len(),
        at(0.5),
        at(0.99),
        v[v.len() - 1]
    );
}
