//! `fleet-sim bench rollout`: one firmware rollout over the bench fleet
//! (the controller with `--provincial-brokers N`, the sharded simulator),
//! every device healthy and updating for real with the simulator's
//! installer: the agent's update driver and TUF client fetch the signed
//! metadata and the image from the controller's repository (a small image,
//! `--image-kib`), wait `--download-ms` before each download, and the
//! installer "writes" the slot in `--install-ms` without touching disk.
//!
//! Waves: a canary (`--canary-percent` of the targets), the province
//! groups (`--waves`), then the rest. Per wave: its duration, the
//! controller's control-loop passes during it (count and mean, from
//! `fleet_rollout_tick_seconds`' sum and count) and the exporter's p50/p99
//! of a pass when the wave ended; for the whole rollout: the messages the
//! controller sent (desired states published, `fleet_desired_published_total`)
//! and the device messages a bare observer on the central broker counted.
//!
//! At 100,000 devices: concurrent downloads are bounded per province by
//! the rollout's policy (`--max-downloads-per-province`), the per-address
//! HTTPS connection cap is raised for the one address every simulated
//! device comes from, and the controller's data is started afresh each run
//! (its repository and rollout differ from the tier benches' cache).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fleet_api::types::{
    CanaryRequest, MemberState, PolicyRequest, RolloutPhase, RolloutRequest, RolloutSelector,
    WaveState,
};

use super::fleet::{BenchFleet, FleetOptions, FleetUpdate};
use super::ingest::common_params;
use super::observer::Observer;
use super::{counter, make_image, quantile, run_ok, sibling_bin};
use crate::report::Report;

const MODEL: &str = "ballot-box-v2";
const VERSION: &str = "2.5.0";
const TICK: &str = "fleet_rollout_tick_seconds";

#[derive(Debug, Clone)]
pub struct RolloutOptions {
    pub fleet: FleetOptions,
    /// The province groups after the canary (each one wave).
    pub waves: Vec<Vec<String>>,
    pub canary_percent: f64,
    pub max_downloads_per_province: u32,
    pub install_ms: u64,
    pub download_ms: u64,
    pub reboot_ms: u64,
    pub fail_share: f64,
    /// The image's payload.
    pub image_kib: usize,
    pub timeout: Duration,
    pub fleetctl_bin: Option<PathBuf>,
    pub out: PathBuf,
}

/// The control loop's counters at a moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TickCounters {
    pub sum_secs: f64,
    pub count: f64,
}

impl TickCounters {
    pub fn read(metrics: &str) -> Self {
        Self {
            sum_secs: counter(metrics, &format!("{TICK}_sum")),
            count: counter(metrics, &format!("{TICK}_count")),
        }
    }

    /// Passes between `self` and `later`, and their mean in ms (0 with none).
    pub fn until(&self, later: &Self) -> (f64, f64) {
        let n = (later.count - self.count).max(0.0);
        let mean = if n > 0.0 {
            (later.sum_secs - self.sum_secs).max(0.0) / n * 1000.0
        } else {
            0.0
        };
        (n, mean)
    }
}

/// One wave as the bench saw it.
#[derive(Debug, Clone, Default)]
struct WaveSeen {
    name: String,
    started: Option<(f64, TickCounters)>,
    ended: Option<(f64, TickCounters, f64, f64)>,
    succeeded: u32,
    total: u32,
}

pub async fn run(o: RolloutOptions) -> anyhow::Result<PathBuf> {
    let bin = sibling_bin("fleet-controller", o.fleet.controller_bin.clone())?;
    let fleetctl = sibling_bin("fleetctl", o.fleetctl_bin.clone())?;
    let work = tempfile::Builder::new()
        .prefix("bench-rollout-")
        .tempdir()?;
    let keys = work.path().join("release-keys");
    run_ok(
        Command::new(&fleetctl)
            .args(["release", "keys", "init", "--keys"])
            .arg(&keys)
            .args(["--root-keys", "1", "--root-threshold", "1"]),
    )?;
    let mut opts = o.fleet.clone();
    opts.all_healthy = true;
    opts.fresh_tag = Some("rollout".into());
    opts.update = Some(FleetUpdate {
        install_ms: o.install_ms,
        download_ms: o.download_ms,
        reboot_ms: o.reboot_ms,
        health_deadline_secs: 60,
        fail_share: o.fail_share,
    });
    // Every simulated device connects from 127.0.0.1: the per-address cap
    // on HTTPS connections (256, for a real network) would refuse a wave's
    // metadata and image fetches that a real fleet makes from many addresses.
    let per_ip = (opts.devices + 256).to_string();
    let env = [(
        "FLEET_CONTROLLER__HTTP__MAX_CONNECTIONS_PER_IP",
        per_ip.as_str(),
    )];
    let mut fleet = BenchFleet::start_with(opts, &env, |data| {
        run_ok(
            Command::new(&bin)
                .args(["firmware-init", "--data-dir"])
                .arg(data)
                .arg("--root")
                .arg(keys.join("root.json"))
                .arg("--targets")
                .arg(keys.join("targets.json"))
                .arg("--snapshot-key")
                .arg(keys.join("controller/snapshot.pem"))
                .arg("--timestamp-key")
                .arg(keys.join("controller/timestamp.pem")),
        )
        .map(|_| ())
    })
    .await?;
    let mut r = Report::new("rollout");
    let result = measure(&mut fleet, &o, &fleetctl, &keys, &bin, &mut r).await;
    fleet.stop().await;
    result?;
    r.finish(&o.out)
}

async fn measure(
    fleet: &mut BenchFleet,
    o: &RolloutOptions,
    fleetctl: &std::path::Path,
    keys: &std::path::Path,
    bin: &std::path::Path,
    r: &mut Report,
) -> anyhow::Result<()> {
    let image = keys.with_file_name("image.tar");
    make_image(&image, VERSION, o.image_kib * 1024)?;
    let env = |c: &mut Command| {
        c.env("FLEETCTL_CONTROLLER", &fleet.ctl.api)
            .env("FLEETCTL_TOKEN", &fleet.ctl.token)
            .env("FLEETCTL_CA", fleet.ctl.ca());
    };
    let mut sign = Command::new(fleetctl);
    sign.arg("release")
        .arg("sign")
        .arg(&image)
        .arg("--keys")
        .arg(keys)
        .args(["--model", MODEL, "--version", VERSION]);
    env(&mut sign);
    run_ok(&mut sign)?;
    let mut upload = Command::new(fleetctl);
    upload
        .args(["firmware", "upload"])
        .arg(&image)
        .arg("--targets")
        .arg(keys.join("targets.json"));
    env(&mut upload);
    run_ok(&mut upload)?;

    let obs = Observer::start(bin, fleet.data_dir(), &fleet.central).await?;
    common_params(r, fleet);
    r.param("canary_percent", o.canary_percent)
        .param("waves", serde_json::to_value(&o.waves)?)
        .param("max_downloads_per_province", o.max_downloads_per_province)
        .param("install_ms", o.install_ms)
        .param("download_ms", o.download_ms)
        .param("reboot_ms", o.reboot_ms)
        .param("fail_share", o.fail_share)
        .param("image_kib", o.image_kib);
    let targeted = fleet
        .plan
        .devices
        .iter()
        .filter(|d| d.model.as_str() == MODEL)
        .count();
    let api = &fleet.api;
    let before = api.client.metrics().await?;
    let observed0 = obs.count();
    let started = Instant::now();
    let view = api
        .client
        .create_rollout(&RolloutRequest {
            name: Some("bench".into()),
            artifact: "firmware".into(),
            model: MODEL.into(),
            version: VERSION.into(),
            platform: None,
            selector: RolloutSelector::default(),
            canary: Some(CanaryRequest {
                devices: None,
                percent: Some(o.canary_percent),
            }),
            waves: o.waves.clone(),
            policy: PolicyRequest {
                failure_threshold_pct: Some(100.0),
                max_downloads_per_province: Some(o.max_downloads_per_province),
                device_timeout_s: Some(600),
                ..PolicyRequest::default()
            },
            draft: false,
        })
        .await
        .context("creating the rollout")?;
    let id = view.summary.id;
    let mut waves: BTreeMap<u32, WaveSeen> = BTreeMap::new();
    let done = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let v = api.client.rollout(id).await?;
        let now = started.elapsed().as_secs_f64();
        let changed = v.waves.iter().any(|w| {
            let seen = waves.get(&w.index);
            (w.state != WaveState::Pending && seen.is_none_or(|s| s.started.is_none()))
                || (w.state == WaveState::Done && seen.is_none_or(|s| s.ended.is_none()))
        });
        let metrics = if changed {
            api.client.metrics().await?
        } else {
            String::new()
        };
        for w in &v.waves {
            let seen = waves.entry(w.index).or_default();
            seen.name.clone_from(&w.name);
            seen.succeeded = w.counters.succeeded;
            seen.total = w.counters.total;
            if w.state != WaveState::Pending && seen.started.is_none() {
                seen.started = Some((now, TickCounters::read(&metrics)));
            }
            if w.state == WaveState::Done && seen.ended.is_none() {
                seen.ended = Some((
                    now,
                    TickCounters::read(&metrics),
                    quantile(&metrics, TICK, 0.5).unwrap_or(0.0) * 1000.0,
                    quantile(&metrics, TICK, 0.99).unwrap_or(0.0) * 1000.0,
                ));
            }
        }
        if matches!(
            v.summary.phase,
            RolloutPhase::Completed | RolloutPhase::Aborted | RolloutPhase::Paused
        ) {
            break v;
        }
        if started.elapsed() > o.timeout {
            bail!(
                "the rollout did not complete within {} s: {:?}",
                o.timeout.as_secs(),
                v.summary.counters
            );
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let after = api.client.metrics().await?;
    let observed = obs.count().saturating_sub(observed0) as f64;
    let mut why: BTreeMap<String, u32> = BTreeMap::new();
    for m in api
        .client
        .rollout_members(id, Some(MemberState::Failed))
        .await?
    {
        *why.entry(m.message).or_default() += 1;
    }
    let delta = |name: &str| counter(&after, name) - counter(&before, name);
    let published = delta("fleet_desired_published_total");
    let received = delta("fleet_ingest_messages_total");
    let c = done.summary.counters;
    r.param("targeted", targeted)
        .param("outcome", format!("{:?}", done.summary.phase));
    r.figure("create to complete", secs, "s")
        .figure("devices succeeded", f64::from(c.succeeded), "devices")
        .figure("devices failed", f64::from(c.failed), "devices");
    for (i, w) in &waves {
        let tag = format!("wave {i} ({})", w.name);
        let dur = match (w.started, w.ended) {
            (Some((s, _)), Some((e, ..))) => e - s,
            _ => f64::NAN,
        };
        r.figure(&format!("{tag}: duration"), dur, "s")
            .figure(
                &format!("{tag}: devices succeeded"),
                f64::from(w.succeeded),
                "devices",
            )
            .figure(&format!("{tag}: devices"), f64::from(w.total), "devices");
        if let (Some((_, t0)), Some((_, t1, p50, p99))) = (w.started, w.ended) {
            let (n, mean) = t0.until(&t1);
            r.figure(&format!("{tag}: control-loop passes"), n, "passes")
                .figure(&format!("{tag}: control-loop pass mean"), mean, "ms")
                .figure(
                    &format!("{tag}: control-loop pass p50 at its end"),
                    p50,
                    "ms",
                )
                .figure(
                    &format!("{tag}: control-loop pass p99 at its end"),
                    p99,
                    "ms",
                );
        }
    }
    let tick = |q| quantile(&after, TICK, q).unwrap_or(0.0) * 1000.0;
    let updated = f64::from(c.succeeded.max(1));
    r.figure("control-loop pass p50", tick(0.5), "ms")
        .figure("control-loop pass p99", tick(0.99), "ms")
        .figure("control-loop pass max", tick(1.0), "ms")
        .figure("desired states published", published, "messages")
        .figure("device messages (observer)", observed, "messages")
        .figure(
            "device messages (controller received)",
            received,
            "messages",
        )
        .figure(
            "MQTT messages per device updated",
            (published + observed) / updated,
            "messages",
        );
    let mut why: Vec<(String, u32)> = why.into_iter().collect();
    why.sort_by_key(|w| std::cmp::Reverse(w.1));
    for (message, n) in why.iter().take(5) {
        r.note(format!("failed: {n} x {message}"));
    }
    r.note("control-loop p50/p99 come from the controller's exporter (a summary over its recent passes); the per-wave mean from the sum and count of passes between the wave's start and end (polled every 0.5 s)");
    r.note("the simulated devices download the real (small) image from the controller's repository through TUF; only the install is simulated");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_loop_passes_between_two_readings() {
        let text = "# TYPE fleet_rollout_tick_seconds summary\n\
fleet_rollout_tick_seconds{quantile=\"0.5\"} 0.002\n\
fleet_rollout_tick_seconds_sum 0.5\n\
fleet_rollout_tick_seconds_count 100\n";
        let a = TickCounters::read(text);
        assert_eq!(
            a,
            TickCounters {
                sum_secs: 0.5,
                count: 100.0
            }
        );
        let b = TickCounters {
            sum_secs: 0.9,
            count: 300.0,
        };
        let (n, mean) = a.until(&b);
        assert_eq!(n, 200.0);
        assert!((mean - 2.0).abs() < 1e-9);
        assert_eq!(b.until(&b), (0.0, 0.0));
    }
}
