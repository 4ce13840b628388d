//! `fleet-sim bench storm`: the reconnect storm. With the bench fleet up
//! and readiness exact, (1) the central broker's Mosquitto is killed
//! (SIGKILL: a crash, not a clean restart; the controller's supervisor
//! starts it again on the same port), then (2) the provincial broker with
//! the most devices is killed the same way. Each phase measures, from the
//! kill:
//!
//! - when the broker ran again (a new pid),
//! - when it held as many connections as before the kill (devices,
//!   bridges, the controller),
//! - when every device that was connected to it had connected again (the
//!   simulator's connection records, as `fleet-sim reconnects` reads them),
//!   and the most devices that reconnected in one second,
//! - when readiness was exactly the plan's again (national and per
//!   province; link-down or offline devices are not the plan's),
//! - the peak CPU (% of one core, from `/proc/PID/stat` ticks) and resident
//!   memory of the controller and of every broker, sampled every 250 ms.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use fleet_api::types::ReadinessQuery;

use super::fleet::{readiness_matches, BenchFleet, FleetOptions};
use super::ingest::common_params;
use super::{broker_pids_in, clock_ticks, procfs, rss_kib};
use crate::plan::Condition;
use crate::reconnects::{histogram, Connections};
use crate::report::Report;

/// How often processes are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct StormOptions {
    pub fleet: FleetOptions,
    pub out: PathBuf,
}

/// One process's peaks over a phase.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Peak {
    /// % of one core between two samples.
    pub cpu_pct: f64,
    pub rss_kib: u64,
}

/// Peak CPU and memory per process name, from samples of (pid, ticks,
/// resident KiB). A name's pid may change (a broker restarted): CPU is
/// only taken between two samples of the same pid.
#[derive(Debug, Default)]
pub struct Peaks {
    last: HashMap<u32, (u64, f64)>,
    pub peaks: BTreeMap<String, Peak>,
}

impl Peaks {
    /// One sample of `name` (process `pid`): `ticks` its utime + stime in
    /// clock ticks (`hz` a second), at `at_secs` on any steady clock.
    pub fn on_sample(
        &mut self,
        name: &str,
        pid: u32,
        ticks: u64,
        rss_kib: u64,
        at_secs: f64,
        hz: f64,
    ) {
        let peak = self.peaks.entry(name.to_owned()).or_default();
        peak.rss_kib = peak.rss_kib.max(rss_kib);
        if let Some((t0, s0)) = self.last.insert(pid, (ticks, at_secs)) {
            let secs = at_secs - s0;
            if secs > 0.0 && ticks >= t0 {
                let pct = (ticks - t0) as f64 / hz / secs * 100.0;
                peak.cpu_pct = peak.cpu_pct.max(pct);
            }
        }
    }

    /// Start a new phase: the peaks so far are returned and forgotten
    /// (the last samples stay, so CPU goes on from them).
    pub fn take(&mut self) -> BTreeMap<String, Peak> {
        std::mem::take(&mut self.peaks)
    }
}

/// utime + stime of a process in clock ticks.
pub fn stat_ticks(stat: &str) -> Option<u64> {
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The name a broker's data directory gives it in the report.
pub fn broker_label(dir: &str) -> String {
    match dir.strip_prefix("mosquitto-") {
        Some(name) => format!("broker {name}"),
        None => "broker central".to_owned(),
    }
}

/// Sample the controller and every broker every [`SAMPLE_EVERY`] until dropped.
struct Sampler {
    peaks: Arc<Mutex<Peaks>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(controller: u32, data_dir: PathBuf) -> Self {
        let peaks = Arc::new(Mutex::new(Peaks::default()));
        let keep = Arc::clone(&peaks);
        let hz = clock_ticks();
        let task = tokio::spawn(async move {
            let t0 = Instant::now();
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tick.tick().await;
                let mut procs = vec![("controller".to_owned(), controller)];
                procs.extend(
                    broker_pids_in(&data_dir)
                        .into_iter()
                        .map(|(d, p)| (broker_label(&d), p)),
                );
                let at = t0.elapsed().as_secs_f64();
                for (name, pid) in procs {
                    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .ok()
                        .and_then(|s| stat_ticks(&s));
                    if let (Some(ticks), Ok(rss)) = (ticks, rss_kib(pid)) {
                        if let Ok(mut p) = keep.lock() {
                            p.on_sample(&name, pid, ticks, rss, at, hz);
                        }
                    }
                }
            }
        });
        Self { peaks, task }
    }

    fn take(&self) -> BTreeMap<String, Peak> {
        self.peaks.lock().map(|mut p| p.take()).unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What one phase measured (seconds from the kill).
#[derive(Debug, Clone, Default)]
pub struct Phase {
    pub broker: String,
    pub devices_expected: usize,
    pub devices_reconnected: usize,
    pub connections_before: usize,
    pub broker_back: f64,
    pub connections_back: f64,
    /// The last expected device's first connection after the kill (0 with none).
    pub devices_back: f64,
    pub readiness_exact: f64,
    /// Readiness differed from the plan at some poll after the kill.
    pub readiness_left: bool,
    pub peak_reconnects_per_sec: usize,
    pub p50_reconnect: f64,
    pub peaks: BTreeMap<String, Peak>,
}

/// `fleet-sim bench storm` on its own fleet.
pub async fn run(o: StormOptions) -> anyhow::Result<PathBuf> {
    let work = tempfile::Builder::new().prefix("bench-storm-").tempdir()?;
    let mut opts = o.fleet.clone();
    opts.connections_out = Some(work.path().join("connections.json"));
    let mut fleet = BenchFleet::start(opts).await?;
    let mut r = Report::new("storm");
    let result = measure(&mut fleet, &mut r).await;
    fleet.stop().await;
    result?;
    r.finish(&o.out)
}

/// Both phases on a running fleet started with `connections_out`.
pub async fn measure(fleet: &mut BenchFleet, r: &mut Report) -> anyhow::Result<()> {
    let conns = fleet
        .opts
        .connections_out
        .clone()
        .context("the storm bench needs the fleet's connection records")?;
    common_params(r, fleet);
    let tier = fleet.api.client.brokers().await?;
    let ids = crate::run::Identities::load(&fleet.sim_state)?;
    // Each device's broker port; only devices that stay on (the plan's
    // offline ones power off after their first report).
    let mut by_port: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for d in &fleet.plan.devices {
        if d.condition == Condition::Offline {
            continue;
        }
        let port = ids
            .brokers
            .get(d.id.as_str())
            .map_or(tier.central.port, |b| b.port);
        by_port.entry(port).or_default().push(d.id.to_string());
    }
    let sampler = Sampler::start(fleet.controller_pid(), fleet.data_dir().to_owned());
    let mut phases = Vec::new();
    let central = by_port.get(&tier.central.port).cloned().unwrap_or_default();
    phases.push(phase(fleet, &sampler, &conns, "mosquitto", &central).await?);
    let busiest = tier
        .provincial
        .iter()
        .max_by_key(|b| by_port.get(&b.port).map_or(0, Vec::len));
    match busiest {
        Some(b) => {
            let devices = by_port.get(&b.port).cloned().unwrap_or_default();
            let dir = format!("mosquitto-{}", b.name);
            phases.push(phase(fleet, &sampler, &conns, &dir, &devices).await?);
        }
        None => {
            r.note("no provincial brokers (--provincial-brokers 0): only the central broker was restarted");
        }
    }
    for (i, p) in phases.iter().enumerate() {
        let tag = if i == 0 { "central" } else { "provincial" };
        r.param(&format!("{tag}_broker"), p.broker.as_str());
        r.figure(&format!("{tag}: broker running again"), p.broker_back, "s")
            .figure(
                &format!("{tag}: connections before"),
                p.connections_before as f64,
                "connections",
            )
            .figure(
                &format!("{tag}: as many connections again"),
                p.connections_back,
                "s",
            )
            .figure(
                &format!("{tag}: devices to reconnect"),
                p.devices_expected as f64,
                "devices",
            )
            .figure(
                &format!("{tag}: devices reconnected"),
                p.devices_reconnected as f64,
                "devices",
            )
            .figure(&format!("{tag}: every device online"), p.devices_back, "s")
            .figure(&format!("{tag}: reconnect delay p50"), p.p50_reconnect, "s")
            .figure(
                &format!("{tag}: reconnects at peak"),
                p.peak_reconnects_per_sec as f64,
                "devices/s",
            )
            .figure(&format!("{tag}: readiness exact"), p.readiness_exact, "s")
            .figure(
                &format!("{tag}: readiness left the plan"),
                if p.readiness_left { 1.0 } else { 0.0 },
                "yes=1",
            );
        for (name, peak) in &p.peaks {
            r.figure(
                &format!("{tag}: {name} peak CPU"),
                peak.cpu_pct,
                "% of a core",
            )
            .figure(
                &format!("{tag}: {name} peak resident memory"),
                peak.rss_kib as f64 / 1024.0,
                "MiB",
            );
        }
    }
    r.note("each broker is killed with SIGKILL (a crash; the controller's supervisor starts it again on its port); times are from the kill; readiness is polled every 250 ms, processes sampled every 250 ms");
    r.note("devices are those on the broker that stay on (the plan's offline devices powered off); through the tier the central broker has no devices, its clients are the bridges and the controller");
    drop(sampler);
    Ok(())
}

/// Kill `dir`'s broker and measure until everything is back.
async fn phase(
    fleet: &BenchFleet,
    sampler: &Sampler,
    conns: &Path,
    dir: &str,
    devices: &[String],
) -> anyhow::Result<Phase> {
    let expected = fleet.plan.expected();
    let pid_of = |d: &str| {
        broker_pids_in(fleet.data_dir())
            .into_iter()
            .find(|(n, _)| n == d)
            .map(|(_, p)| p)
    };
    let old = pid_of(dir).with_context(|| format!("no running broker {dir}"))?;
    let before = procfs::tcp_use(old).connections;
    let _ = sampler.take();
    let (t0, t0_ms) = (Instant::now(), now_ms());
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &old.to_string()])
        .status()?;
    if !killed.success() {
        bail!("cannot kill {dir} (pid {old})");
    }
    tracing::info!(
        broker = dir,
        pid = old,
        "killed; waiting for the fleet to come back"
    );
    let want: BTreeSet<&str> = devices.iter().map(String::as_str).collect();
    let mut p = Phase {
        broker: broker_label(dir),
        devices_expected: want.len(),
        connections_before: before,
        ..Phase::default()
    };
    let (mut back, mut conns_back, mut devs_back, mut exact) = (None, None, None, None);
    let timeout = Duration::from_secs(180 + fleet.opts.devices as u64 / 50);
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    let mut last = String::new();
    let mut records = Connections::default();
    let mut next_read = Instant::now();
    while exact.is_none() || devs_back.is_none() || conns_back.is_none() {
        tick.tick().await;
        let at = t0.elapsed().as_secs_f64();
        if t0.elapsed() > timeout {
            bail!(
                "{dir}: not back after {} s (broker {back:?}, connections {conns_back:?}, devices {devs_back:?}, readiness: {last})",
                timeout.as_secs()
            );
        }
        let now = pid_of(dir).filter(|p| *p != old && procfs::alive(*p));
        if back.is_none() && now.is_some() {
            back = Some(at);
        }
        let Some(new) = now else { continue };
        if conns_back.is_none() && procfs::tcp_use(new).connections >= before {
            conns_back = Some(at);
        }
        if devs_back.is_none() && Instant::now() >= next_read {
            // The records are rewritten every 2 s.
            next_read = Instant::now() + Duration::from_secs(1);
            if let Ok(bytes) = std::fs::read(conns) {
                if let Ok(c) = serde_json::from_slice::<Connections>(&bytes) {
                    records = c;
                }
            }
            let done = want.iter().all(|d| {
                records
                    .devices
                    .get(*d)
                    .is_some_and(|t| t.iter().any(|t| *t >= t0_ms))
            });
            if done {
                devs_back = Some(at);
            }
        }
        match fleet.api.client.readiness(&ReadinessQuery::default()).await {
            Ok(rows) => match readiness_matches(&rows, &expected) {
                Ok(()) if exact.is_none() && conns_back.is_some() => exact = Some(at),
                Ok(()) => {}
                Err(e) => {
                    p.readiness_left = true;
                    exact = None;
                    last = e;
                }
            },
            Err(e) => last = e.to_string(),
        }
    }
    let mine = Connections {
        devices: records
            .devices
            .into_iter()
            .filter(|(d, _)| want.contains(d.as_str()))
            .collect(),
    };
    let h = histogram(&mine, t0_ms, 1000);
    p.devices_reconnected = h.reconnected;
    p.devices_back = h.max_ms as f64 / 1000.0;
    p.p50_reconnect = h.p50_ms as f64 / 1000.0;
    p.peak_reconnects_per_sec = h.buckets.iter().map(|b| b.1).max().unwrap_or(0);
    p.broker_back = back.unwrap_or(f64::NAN);
    p.connections_back = conns_back.unwrap_or(f64::NAN);
    p.readiness_exact = exact.unwrap_or(f64::NAN);
    p.peaks = sampler.take();
    println!(
        "storm {}: running again {:.1} s, connections {:.1} s, {} of {} devices back by {:.1} s (peak {}/s), readiness exact {:.1} s",
        p.broker,
        p.broker_back,
        p.connections_back,
        p.devices_reconnected,
        p.devices_expected,
        p.devices_back,
        p.peak_reconnects_per_sec,
        p.readiness_exact
    );
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_take_cpu_between_samples_of_one_pid() {
        let mut p = Peaks::default();
        p.on_sample("broker p01", 10, 100, 5_000, 0.0, 100.0);
        // 50 ticks in 0.5 s at 100 Hz: a whole core.
        p.on_sample("broker p01", 10, 150, 6_000, 0.5, 100.0);
        p.on_sample("broker p01", 10, 160, 5_500, 1.0, 100.0);
        assert_eq!(
            p.peaks["broker p01"],
            Peak {
                cpu_pct: 100.0,
                rss_kib: 6_000
            }
        );
        // Restarted: a new pid has no CPU until its second sample.
        p.on_sample("broker p01", 11, 3, 1_000, 1.25, 100.0);
        assert_eq!(p.peaks["broker p01"].cpu_pct, 100.0);
        let first = p.take();
        assert_eq!(first.len(), 1);
        assert!(p.peaks.is_empty());
        p.on_sample("broker p01", 11, 8, 1_200, 1.5, 100.0);
        assert_eq!(
            p.peaks["broker p01"],
            Peak {
                cpu_pct: 20.0,
                rss_kib: 1_200
            }
        );
    }

    #[test]
    fn ticks_and_labels() {
        let stat = "42 (mosq (x)) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 1000 50";
        assert_eq!(stat_ticks(stat), Some(10));
        assert_eq!(stat_ticks("nonsense"), None);
        assert_eq!(broker_label("mosquitto"), "broker central");
        assert_eq!(broker_label("mosquitto-p02"), "broker p02");
    }
}
