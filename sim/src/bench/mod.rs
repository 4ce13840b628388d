//! Bench mode: start a real controller (and, for the agent bench, a real
//! agent process), drive it, and print measured figures. Targets are
//! checked by reading these figures, never by a timed test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fleet_protocol::{DeviceId, Envelope, Payload};

use crate::plan::{Plan, PlanConfig, MODELS};

pub mod decode;
pub mod store;
use crate::run::Api;

/// A binary next to this one (same cargo profile directory), or `explicit`.
pub fn sibling_bin(name: &str, explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let exe = std::env::current_exe()?;
    let p = exe.with_file_name(name);
    if !p.is_file() {
        bail!(
            "{} not found; build it (cargo build --release --bins) or pass its path",
            p.display()
        );
    }
    Ok(p)
}

pub mod fleet;
pub mod footprint;
pub mod ingest;
pub mod observer;
pub mod procfs;
pub mod queries;
pub mod rollout;
pub mod storm;
pub mod tier;

/// A controller's data directory: temporary (removed on drop) or kept.
pub enum DataDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl DataDir {
    pub fn path(&self) -> &Path {
        match self {
            DataDir::Temp(t) => t.path(),
            DataDir::Kept(p) => p,
        }
    }
}

/// A controller process on a data dir (temporary unless given), stopped on drop.
pub struct ControllerProc {
    child: Child,
    pub api: String,
    pub token: String,
    pub data_dir: DataDir,
}

impl ControllerProc {
    pub fn start(bin: &Path) -> anyhow::Result<Self> {
        Self::start_with(bin, &[], |_| Ok(()))
    }

    /// [`ControllerProc::start`], calling `before_serve` with the data
    /// directory after `init` and before `serve` (e.g. `firmware-init`).
    pub fn start_with(
        bin: &Path,
        env: &[(&str, &str)],
        before_serve: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        Self::start_in(bin, None, &[], env, before_serve)
    }

    /// Start on `dir` (kept; `init` only when it has no admin token yet,
    /// else its token is read) or a temporary one, with `serve_args` added
    /// to `serve` (e.g. `--provincial-brokers 2`).
    pub fn start_in(
        bin: &Path,
        dir: Option<&Path>,
        serve_args: &[String],
        env: &[(&str, &str)],
        before_serve: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        let data_dir = match dir {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .with_context(|| format!("cannot create {}", d.display()))?;
                DataDir::Kept(d.to_owned())
            }
            None => DataDir::Temp(tempfile::tempdir()?),
        };
        let token_file = data_dir.path().join("admin.token");
        let token = if token_file.exists() {
            std::fs::read_to_string(&token_file)?.trim().to_owned()
        } else {
            let init = Command::new(bin)
                .args(["init", "--data-dir"])
                .arg(data_dir.path())
                .output()
                .with_context(|| format!("cannot run {} init", bin.display()))?;
            if !init.status.success() {
                bail!(
                    "{} init failed: {}",
                    bin.display(),
                    String::from_utf8_lossy(&init.stderr)
                );
            }
            let token = String::from_utf8(init.stdout)?.trim().to_owned();
            before_serve(data_dir.path())?;
            token
        };
        let mut child = Command::new(bin)
            .args(["serve", "--data-dir"])
            .arg(data_dir.path())
            .args(["--http", "127.0.0.1:0"])
            .args(serve_args)
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stderr = child.stderr.take().context("stderr is piped")?;
        // The controller's log, kept for a look after the bench:
        // DATA/controller.log (appended to, run after run).
        let log_path = data_dir.path().join("controller.log");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if !sent && line.contains("ready: api ") {
                    let _ = tx.send(line);
                    sent = true;
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .context("the controller did not become ready within 30 s")?;
        let api = line
            .split("api ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .context("unexpected ready line")?
            .to_owned();
        Ok(Self {
            child,
            api,
            token,
            data_dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn ca(&self) -> PathBuf {
        self.data_dir.path().join("pki/ca.crt")
    }

    pub fn broker_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data_dir.path().join("mosquitto/state/mosquitto.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Every managed broker's pid (`DATA/mosquitto*/state/mosquitto.pid`:
    /// the central one and the provincial ones), by directory name.
    pub fn broker_pids(&self) -> Vec<(String, u32)> {
        broker_pids_in(self.data_dir.path())
    }
}

/// Every managed broker's pid under a controller's data directory
/// (`DIR/mosquitto*/state/mosquitto.pid`), by directory name.
pub fn broker_pids_in(data_dir: &Path) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("mosquitto") {
            continue;
        }
        let pid = std::fs::read_to_string(e.path().join("state/mosquitto.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        if let Some(pid) = pid {
            out.push((name, pid));
        }
    }
    out.sort();
    out
}

impl Drop for ControllerProc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        // Its brokers save their persistence on the way out: at 100,000
        // devices that is 150 MB for the central one. A kill before they
        // are done leaves them running.
        let end = Instant::now() + Duration::from_secs(120);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if it cannot say).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / clock_ticks())
}

/// Resident memory in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

pub async fn set_baselines(api: &Api) -> anyhow::Result<()> {
    for (model, baseline, _) in MODELS {
        api.client
            .set_baseline(model, baseline)
            .await
            .with_context(|| format!("cannot set the baseline of {model}"))?;
    }
    Ok(())
}

pub struct AgentBench {
    pub duration: Duration,
    pub controller_bin: Option<PathBuf>,
    pub agent_bin: Option<PathBuf>,
}

pub async fn agent(b: AgentBench) -> anyhow::Result<()> {
    let ctl_bin = sibling_bin("fleet-controller", b.controller_bin)?;
    let agent_bin = sibling_bin("fleet-agent", b.agent_bin)?;
    let ctl = ControllerProc::start(&ctl_bin)?;
    let api = Api::new(&ctl.api, &ctl.token, Some(&ctl.ca()))?;
    set_baselines(&api).await?;
    let plan = Plan::new(&PlanConfig {
        devices: 1,
        provinces: vec![fleet_protocol::ProvinceCode::parse("IR-23")?],
        offline_share: 0.0,
        failing_share: 0.0,
        outdated_share: 0.0,
        seed: 1,
    })?;
    api.client.import_registry(plan.registry_csv()).await?;
    let d = &plan.devices[0];
    let batch = api
        .client
        .enrol_batch(
            format!(
                "serial,model,province,county,station\n{},{},{},{},{}\n",
                d.id, d.model, d.province, d.county, d.station
            ),
            &fleet_api::types::EnrolBatchQuery::default(),
        )
        .await?;
    let token = batch
        .devices
        .into_iter()
        .next()
        .context("no enrolment token")?
        .token;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("firmware-version"), d.firmware.as_str())?;
    let conf = dir.path().join("agent.toml");
    std::fs::write(
        &conf,
        format!(
            "[device]\nid = \"{}\"\nmodel = \"{}\"\nfirmware_version_file = \"{}\"\nstate_dir = \"{}\"\n\
             [health]\nsample_secs = 15\nreport_secs = 60\n\
             [checks]\ninterval_secs = 60\n[[checks.list]]\nname = \"printer\"\ncommand = [\"true\"]\n",
            d.id,
            d.model,
            dir.path().join("firmware-version").display(),
            dir.path().join("state").display()
        ),
    )?;
    let enrolled = Command::new(&agent_bin)
        .args([
            "enrol",
            "--controller",
            &ctl.api,
            "--token",
            &token,
            "--config",
        ])
        .arg(&conf)
        .arg("--ca")
        .arg(ctl.ca())
        .output()?;
    if !enrolled.status.success() {
        bail!(
            "fleet-agent enrol failed: {}",
            String::from_utf8_lossy(&enrolled.stderr)
        );
    }
    let mut child = Command::new(&agent_bin)
        .args(["run", "--config"])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", agent_bin.display()))?;
    let pid = child.id();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let readiness = api.client.device(d.id.as_str()).await?.device.readiness;
    let (cpu0, t0) = (cpu_seconds(pid)?, Instant::now());
    let mut peak = 0;
    while t0.elapsed() < b.duration {
        peak = peak.max(rss_kib(pid)?);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cpu1 = cpu_seconds(pid)?;
    let secs = t0.elapsed().as_secs_f64();
    let rss = rss_kib(pid)?;
    let _ = child.kill();
    let _ = child.wait();

    let mut hw = fleet_agent::SystemHardware::new(d.firmware.clone(), "/".into(), vec![], vec![]);
    let mut h = fleet_agent::Hardware::sample(&mut hw);
    h.clock_offset_ms = Some(-1250);
    let env = Envelope::new(
        DeviceId::parse("BB-23-000123")?,
        fleet_agent::unix_ms(),
        Payload::Health(h),
    );
    let cbor = env.to_cbor()?.len();
    let json = serde_json::to_string(&env)?.len();
    let size = std::fs::metadata(&agent_bin)?.len();

    println!(
        "agent bench: {} ({:.2} MB on disk)",
        agent_bin.display(),
        size as f64 / 1_000_000.0
    );
    println!("  readiness seen by the controller: {readiness}");
    println!(
        "  resident memory: {:.2} MiB now, {:.2} MiB peak over {secs:.0} s",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!(
        "  CPU while idle and reporting: {:.3} % of one core",
        (cpu1 - cpu0) / secs * 100.0
    );
    println!("  health message: {cbor} bytes CBOR, {json} bytes JSON (device id BB-23-000123)");
    Ok(())
}

pub(crate) fn run_ok(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A small image: a tarball with a VERSION file and a payload of
/// `payload` bytes.
pub(crate) fn make_image(path: &Path, version: &str, payload: usize) -> anyhow::Result<()> {
    let mut b = tar::Builder::new(std::fs::File::create(path)?);
    for (name, data) in [
        ("VERSION", format!("{version}\n").into_bytes()),
        ("app/ballot.bin", vec![7u8; payload]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_slice())?;
    }
    b.finish()?;
    Ok(())
}

/// Sum of a counter's series (any labels) in Prometheus text.
pub fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A quantile of a summary (`name{quantile="q"}`, how the controller's
/// exporter renders a histogram), else from cumulative buckets (upper bounds).
pub(crate) fn quantile(text: &str, name: &str, q: f64) -> Option<f64> {
    let summary = format!("{name}{{quantile=\"{q}\"}}");
    if let Some(v) = text
        .lines()
        .find(|l| l.starts_with(&summary))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    {
        return Some(v);
    }
    let bucket = format!("{name}_bucket");
    let mut b: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&bucket))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total = b.last()?.1;
    b.into_iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(le, _)| le)
}
