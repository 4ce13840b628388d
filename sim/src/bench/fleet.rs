//! The fleet the tier benches share: a controller process (with
//! `--provincial-brokers N` when N > 0), D enrolled devices, and a
//! `fleet-sim run` process (sharded over child processes) running them,
//! up until readiness shows exactly what the plan expects.
//!
//! Enrolling 100,000 devices takes long, so the controller's data
//! directory and the devices' identities are kept under
//! `target/bench-state/d{D}-s{seed}-p{N}/`: a second run with the same
//! devices, seed and brokers starts the same controller again and enrols
//! nobody ([`BenchFleet::enrolled_now`] says which it was).
//!
//! Everything it started is stopped on drop, on success and on error: the
//! simulator (SIGTERM, which it forwards to its shards; SIGKILL to any
//! left after 60 s) and then the controller (which stops its brokers).
//! Only pids it started are signalled.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fleet_api::types::{ReadinessQuery, ReadinessRow};

use super::{procfs, rss_kib, set_baselines, sibling_bin, ControllerProc};
use crate::plan::{ExpectedRow, Plan, PlanConfig};
use crate::run::{self, Api, BrokerAddress, Identities};

/// How to start the bench fleet.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub devices: usize,
    pub seed: u64,
    pub provincial_brokers: usize,
    pub health_secs: u64,
    /// `fleet-sim run --shards` (default: its own).
    pub shards: Option<usize>,
    pub max_per_process: usize,
    /// New connections per second per shard.
    pub connect_rate: u32,
    pub controller_bin: Option<PathBuf>,
    /// Where the cached controller data and identities go (default
    /// `target/bench-state`).
    pub state_root: Option<PathBuf>,
    /// Devices update for real with the simulator's installer (`None`:
    /// `--installer none`).
    pub update: Option<FleetUpdate>,
    /// Every device healthy, online and on the baseline (no offline,
    /// failing or outdated shares), as a rollout bench wants.
    pub all_healthy: bool,
    /// `fleet-sim run --connections-out` (when each device connected).
    pub connections_out: Option<PathBuf>,
    /// Added to the cache key (`d{D}-s{seed}-p{N}-{tag}`), and then the
    /// cache is not reused: a bench whose controller differs (firmware
    /// repository, images) starts from nothing each time.
    pub fresh_tag: Option<String>,
}

/// `fleet-sim run --installer sim …`: the agent's real update driver and
/// TUF client, the installer simulated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FleetUpdate {
    pub install_ms: u64,
    pub download_ms: u64,
    pub reboot_ms: u64,
    pub health_deadline_secs: u64,
    /// Devices whose checks fail after booting the new image.
    pub fail_share: f64,
}

impl FleetOptions {
    pub fn new(devices: usize, provincial_brokers: usize, health_secs: u64) -> Self {
        Self {
            devices,
            seed: 1,
            provincial_brokers,
            health_secs,
            shards: None,
            max_per_process: crate::shard::DEFAULT_MAX_PER_PROCESS,
            connect_rate: 500,
            controller_bin: None,
            state_root: None,
            update: None,
            all_healthy: false,
            connections_out: None,
            fresh_tag: None,
        }
    }

    pub fn plan(&self) -> anyhow::Result<Plan> {
        let mut cfg = PlanConfig {
            devices: self.devices,
            seed: self.seed,
            ..PlanConfig::default()
        };
        if self.all_healthy {
            cfg.offline_share = 0.0;
            cfg.failing_share = 0.0;
            cfg.outdated_share = 0.0;
        }
        Ok(Plan::new(&cfg)?)
    }

    /// The directory of this fleet's cached state under `root`.
    pub fn cache_key(&self) -> String {
        let mut key = format!(
            "d{}-s{}-p{}",
            self.devices, self.seed, self.provincial_brokers
        );
        if let Some(tag) = &self.fresh_tag {
            key.push('-');
            key.push_str(tag);
        }
        key
    }
}

/// `target/bench-state` (beside `target/bench`).
pub fn default_state_root() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("bench-state")
}

/// The running `fleet-sim run` process.
struct SimProc {
    child: Child,
    /// The shards it started, once known (signalled only if still its children).
    shards: Vec<u32>,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl SimProc {
    fn tail(&self) -> String {
        let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
        log[log.len().saturating_sub(20)..].join("\n")
    }

    fn stop(&mut self) {
        let pid = self.child.id();
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(70);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Its shards first (still its children), then itself.
        for s in procfs::children(pid) {
            if self.shards.contains(&s) {
                let _ = Command::new("kill")
                    .args(["-KILL", &s.to_string()])
                    .status();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SimProc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The bench fleet, up and counted.
pub struct BenchFleet {
    sim: Option<SimProc>,
    pub ctl: ControllerProc,
    pub api: Api,
    pub plan: Plan,
    pub opts: FleetOptions,
    /// Where the identities are (`--state-dir` of the simulator).
    pub sim_state: PathBuf,
    /// Devices enrolled by this start (0: all were cached).
    pub enrolled_now: usize,
    /// The central broker as the API names it.
    pub central: BrokerAddress,
    /// Each broker's (`DATA/mosquitto*`) pid and resident KiB before any
    /// device connected.
    pub brokers_before: Vec<(String, u32, u64)>,
    /// From starting the simulator to readiness exact.
    pub up_secs: f64,
}

impl BenchFleet {
    pub async fn start(opts: FleetOptions) -> anyhow::Result<Self> {
        Self::start_with(opts, &[], |_| Ok(())).await
    }

    /// [`BenchFleet::start`] with environment for the controller and
    /// `before_serve` called on its data directory after `init` (e.g.
    /// `firmware-init`).
    pub async fn start_with(
        opts: FleetOptions,
        env: &[(&str, &str)],
        before_serve: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        let bin = sibling_bin("fleet-controller", opts.controller_bin.clone())?;
        let plan = opts.plan()?;
        let root = opts.state_root.clone().unwrap_or_else(default_state_root);
        let dir = root.join(opts.cache_key());
        let (data, sim_state) = (dir.join("data"), dir.join("sim"));
        // A cache is whole or not used: identities for every device of
        // the plan, beside the controller that enrolled them.
        let cached = Identities::load(&sim_state)
            .map(|ids| {
                plan.devices
                    .iter()
                    .all(|d| ids.devices.contains_key(d.id.as_str()))
            })
            .unwrap_or(false);
        if (!cached || opts.fresh_tag.is_some()) && dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        let serve_args = if opts.provincial_brokers > 0 {
            vec![
                "--provincial-brokers".to_owned(),
                opts.provincial_brokers.to_string(),
            ]
        } else {
            Vec::new()
        };
        let ctl = ControllerProc::start_in(&bin, Some(&data), &serve_args, env, before_serve)?;
        let api = Api::new(&ctl.api, &ctl.token, Some(&ctl.ca()))?;
        let brokers_before = ctl
            .broker_pids()
            .into_iter()
            .map(|(name, pid)| (name, pid, rss_kib(pid).unwrap_or(0)))
            .collect();
        set_baselines(&api).await?;
        let before = Identities::load(&sim_state)?;
        let enrolled_now = plan
            .devices
            .iter()
            .filter(|d| !before.devices.contains_key(d.id.as_str()))
            .count();
        drop(before);
        run::enrol_fleet(&api, &plan, Some(&sim_state), true).await?;
        let central = run::broker_address(&api).await?;
        let mut fleet = Self {
            sim: None,
            ctl,
            api,
            plan,
            opts,
            sim_state,
            enrolled_now,
            central,
            brokers_before,
            up_secs: 0.0,
        };
        let started = Instant::now();
        fleet.start_sim(fleet.opts.health_secs)?;
        fleet.wait_readiness().await?;
        fleet.up_secs = started.elapsed().as_secs_f64();
        Ok(fleet)
    }

    /// Start `fleet-sim run` on the cached identities and wait until it
    /// says the whole fleet is running.
    fn start_sim(&mut self, health_secs: u64) -> anyhow::Result<()> {
        let exe = std::env::current_exe()?;
        let o = &self.opts;
        let mut cmd = Command::new(exe);
        cmd.arg("run")
            .args(["--controller", &self.ctl.api])
            .args(["--devices", &o.devices.to_string()])
            .args(["--seed", &o.seed.to_string()])
            .args(["--health-secs", &health_secs.to_string()])
            .args(["--keep-alive-secs", "60"])
            .args(["--connect-rate", &o.connect_rate.to_string()])
            .args(["--max-per-process", &o.max_per_process.to_string()])
            .arg("--state-dir")
            .arg(&self.sim_state)
            .env("FLEETCTL_TOKEN", &self.ctl.token)
            .env("FLEETCTL_CA", self.ctl.ca())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(n) = o.shards {
            cmd.args(["--shards", &n.to_string()]);
        }
        match o.update {
            // Checks often: a device's health check after booting a new
            // image waits for them.
            Some(u) => cmd
                .args(["--checks-secs", "5", "--installer", "sim"])
                .args(["--install-ms", &u.install_ms.to_string()])
                .args(["--download-ms", &u.download_ms.to_string()])
                .args(["--reboot-ms", &u.reboot_ms.to_string()])
                .args([
                    "--health-deadline-secs",
                    &u.health_deadline_secs.to_string(),
                ])
                .args(["--fail-share", &u.fail_share.to_string()]),
            None => cmd.args(["--checks-secs", "300", "--installer", "none"]),
        };
        if o.all_healthy {
            cmd.args(["--offline-share", "0", "--failing-share", "0"])
                .args(["--outdated-share", "0"]);
        }
        if let Some(path) = &o.connections_out {
            cmd.arg("--connections-out").arg(path);
        }
        let mut child = cmd.spawn().context("cannot start fleet-sim run")?;
        let stderr = child.stderr.take().context("stderr is piped")?;
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let keep = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("simulated fleet running") {
                    let _ = tx.send(line.clone());
                }
                if let Ok(mut l) = keep.lock() {
                    l.push(line);
                    let n = l.len();
                    if n > 200 {
                        l.drain(..n - 200);
                    }
                }
            }
        });
        let mut sim = SimProc {
            child,
            shards: Vec::new(),
            log,
        };
        // Connecting at connect_rate per shard, plus room for a slow machine.
        let timeout = Duration::from_secs(120 + (o.devices as u64 / 50));
        let end = Instant::now() + timeout;
        loop {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
                tracing::info!("{line}");
                break;
            }
            if let Ok(Some(st)) = sim.child.try_wait() {
                bail!("fleet-sim run ended with {st}:\n{}", sim.tail());
            }
            if Instant::now() > end {
                let tail = sim.tail();
                drop(sim);
                bail!(
                    "the fleet was not running after {} s:\n{tail}",
                    timeout.as_secs()
                );
            }
        }
        sim.shards = procfs::children(sim.child.id());
        self.sim = Some(sim);
        Ok(())
    }

    /// Stop the simulator and start it again with another health interval
    /// (the same devices, no enrolment); back when it runs again.
    pub async fn restart_sim(&mut self, health_secs: u64) -> anyhow::Result<()> {
        if let Some(mut s) = self.sim.take() {
            tokio::task::spawn_blocking(move || s.stop()).await?;
        }
        self.start_sim(health_secs)
    }

    /// Wait until readiness per province is the plan's, exactly.
    pub async fn wait_readiness(&self) -> anyhow::Result<()> {
        let expected = self.plan.expected();
        let timeout = Duration::from_secs(180 + self.opts.devices as u64 / 100);
        let end = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < end {
            match self.api.client.readiness(&ReadinessQuery::default()).await {
                Ok(rows) => match readiness_matches(&rows, &expected) {
                    Ok(()) => return Ok(()),
                    Err(e) => last = e,
                },
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        bail!(
            "readiness was not the plan's after {} s: {last}",
            timeout.as_secs()
        )
    }

    /// The simulator's processes holding devices: its shards, or itself
    /// when it runs the fleet in one process.
    pub fn sim_pids(&self) -> Vec<u32> {
        match &self.sim {
            Some(s) if s.shards.is_empty() => vec![s.child.id()],
            Some(s) => s.shards.clone(),
            None => Vec::new(),
        }
    }

    pub fn controller_pid(&self) -> u32 {
        self.ctl.pid()
    }

    /// Every managed broker now: (directory name, pid).
    pub fn broker_pids(&self) -> Vec<(String, u32)> {
        self.ctl.broker_pids()
    }

    pub fn data_dir(&self) -> &Path {
        self.ctl.data_dir.path()
    }

    /// Stop the simulator, then the controller and its brokers.
    pub async fn stop(mut self) {
        if let Some(mut s) = self.sim.take() {
            let _ = tokio::task::spawn_blocking(move || s.stop()).await;
        }
    }
}

impl Drop for BenchFleet {
    fn drop(&mut self) {
        // The simulator before the controller (a field dropped after this).
        if let Some(mut s) = self.sim.take() {
            s.stop();
        }
    }
}

/// Readiness rows (provinces with devices) equal to the plan's rows.
pub fn readiness_matches(rows: &[ReadinessRow], expected: &[ExpectedRow]) -> Result<(), String> {
    let got: Vec<ExpectedRow> = rows
        .iter()
        .filter(|r| r.total > 0)
        .map(|r| ExpectedRow {
            province: r.province.to_string(),
            total: r.total,
            ready: r.ready,
            reasons: r
                .reasons
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| (k.as_str().to_owned(), *n))
                .collect(),
        })
        .collect();
    let mut want = expected.to_vec();
    want.sort_by(|a, b| a.province.cmp(&b.province));
    let mut got = got;
    got.sort_by(|a, b| a.province.cmp(&b.province));
    if got == want {
        return Ok(());
    }
    let seen: u32 = got
        .iter()
        .map(|r| r.total - r.reasons.get("never-seen").copied().unwrap_or(0))
        .sum();
    let total: u32 = want.iter().map(|r| r.total).sum();
    let first = got
        .iter()
        .zip(&want)
        .find(|(g, w)| g != w)
        .map(|(g, w)| format!("{}: got {:?} want {:?}", g.province, g, w))
        .unwrap_or_else(|| format!("{} provinces, want {}", got.len(), want.len()));
    Err(format!("{seen} of {total} seen; first difference {first}"))
}
