//! Test helpers shared by every crate's integration tests and by the
//! end-to-end tests in `tests/tests/`:
//!
//! - this file: a real Mosquitto on a free port in a temporary directory,
//!   real processes of the workspace's binaries with their output captured
//!   ([`Controller`] is a `fleet-controller serve` process), [`within`]
//!   (an await with a deadline) and [`eventually`] (polling with one).
//! - [`in_process`]: [`InProcessController`], the controller started in the
//!   test's own process on port 0 with a temporary data directory, for API
//!   tests that do not need a separate process.
//! - [`builders`]: fleet envelopes, raw MQTT clients (plain and mutual TLS),
//!   device registrations and operator tokens.
//! - [`link`] and [`proxy`]: namespaced hosts behind slow, lossy or cut
//!   links, and the forwarders they reach the controller through.
//! - [`offline_day`]: a day without a link in a device's outbox, made
//!   through the agent library's own outbox.
//!
//! Both controllers hand out a typed [`fleet_api::client::Client`]; no test
//! builds an API URL or parses an API answer by hand, except where sending
//! something malformed or raw is the point of the test.
//!
//! Nothing here skips: a missing Mosquitto or binary is a failure whose
//! message says what to run.

#![allow(clippy::unwrap_used)]

pub mod builders;
pub mod in_process;
pub mod link;
pub mod offline_day;
pub mod proxy;
pub mod update;

pub use in_process::InProcessController;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

pub const MOSQUITTO_INSTALL: &str = "apt-get install -y mosquitto mosquitto-clients";

/// Where Mosquitto is: `$PATH`, then Debian's `/usr/sbin`.
pub fn mosquitto_binary() -> anyhow::Result<PathBuf> {
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("mosquitto"))
            .find(|p| p.is_file())
    });
    from_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/mosquitto")).filter(|p| p.is_file()))
        .ok_or_else(|| anyhow!("mosquitto is not installed; install it with: {MOSQUITTO_INSTALL}"))
}

/// A port that was free a moment ago (bind to port 0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 works on any test machine")
}

fn wait_for_port(port: u16, deadline: Duration) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// How many times Mosquitto's `log` says it opened a listener on `port`.
fn listen_lines(log: &Path, port: u16) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(&format!("listen socket on port {port}."))
        .count()
}

/// Wait until this `child` Mosquitto has opened its listener on `port`:
/// its log has more [`listen_lines`] than `before` (so another process
/// that took the port in the meantime is not mistaken for it), it is still
/// running, and the port answers.
fn wait_listening(child: &mut Child, log: &Path, port: u16, before: usize) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        if let Some(status) = child.try_wait()? {
            bail!("mosquitto exited ({status}) on port {port}");
        }
        if listen_lines(log, port) > before && wait_for_port(port, Duration::from_millis(200)) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("mosquitto did not listen on port {port} within 15 s")
}

/// A real Mosquitto listening on 127.0.0.1 on a free port, stopped on drop.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> anyhow::Result<Self> {
        let bin = mosquitto_binary()?;
        let dir = tempfile::tempdir()?;
        for _attempt in 0..5 {
            let port = free_port();
            let conf = dir.path().join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                     log_dest file {}\nlog_type all\n",
                    dir.path().join("mosquitto.log").display()
                ),
            )?;
            let mut child = Command::new(&bin)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot start {}", bin.display()))?;
            let log = dir.path().join("mosquitto.log");
            if wait_listening(&mut child, &log, port, listen_lines(&log, port)).is_ok() {
                return Ok(Self { port, child, dir });
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        bail!(
            "mosquitto did not start listening (see its log in {})",
            dir.path().display()
        )
    }

    /// The broker's log so far (every connection, subscription and refusal).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kill and start again on the same port, with no saved sessions.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let log = self.dir.path().join("mosquitto.log");
        let before = listen_lines(&log, self.port);
        let bin = mosquitto_binary()?;
        self.child = Command::new(&bin)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        wait_listening(&mut self.child, &log, self.port, before)
            .with_context(|| format!("mosquitto did not come back on port {}", self.port))
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A workspace binary, built by `cargo build --workspace --bins` (the test
/// script does this first) into the same target directory as the tests.
pub fn bin_path(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/debug/deps/<test binary> -> target/debug/<name>; a harness
    // binary (target/debug/link-bench) sits beside the others already.
    let parent = exe.parent();
    let dir = match parent {
        Some(p) if p.ends_with("deps") => p.parent(),
        other => other,
    }
    .ok_or_else(|| anyhow!("unexpected test binary location {}", exe.display()))?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: run `cargo build --workspace --bins` before the tests (scripts/test does)",
            path.display()
        );
    }
    Ok(path)
}

/// A child process whose stdout and stderr lines are collected, killed on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// The threads copying stdout and stderr into `lines`.
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Proc {
    pub fn spawn(name: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut cmd = Command::new(bin_path(name)?);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::from_command(name, cmd)
    }

    /// Start `cmd` (e.g. a binary inside a [`link::Host`]) the same way.
    pub fn from_command(name: &str, mut cmd: Command) -> anyhow::Result<Self> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1");
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = Arc::clone(&lines);
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            }));
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            lines,
            readers,
        })
    }

    /// After the process has exited: let the reader threads store its last
    /// lines, so that `output()` has everything it printed. Bounded, since
    /// a child of the process may still hold the pipes open.
    fn drain(&self) {
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end && self.readers.iter().any(|r| !r.is_finished()) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Wait for an output line containing `needle`; returns that line.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let end = Instant::now() + timeout;
        let find = |lines: &Mutex<Vec<String>>| {
            lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
                .cloned()
        };
        loop {
            if let Some(line) = find(&self.lines) {
                return Ok(line);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // It may have printed the line just before exiting.
                self.drain();
                if let Some(line) = find(&self.lines) {
                    return Ok(line);
                }
                bail!(
                    "{} exited ({status}) before printing {needle:?}; output:\n{}",
                    self.name,
                    self.output()
                );
            }
            if Instant::now() > end {
                bail!(
                    "{} did not print {needle:?} within {timeout:?}; output:\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGKILL: no goodbye, no DISCONNECT.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.drain();
    }

    /// SIGTERM and wait up to `timeout` for a clean exit.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.drain();
                return Ok(status);
            }
            if Instant::now() > end {
                self.kill();
                bail!("{} did not exit within {timeout:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Wait for the process to exit on its own.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.drain();
                return Ok(status);
            }
            if Instant::now() > end {
                bail!("{} still running after {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Proc {
    /// SIGTERM first, so a controller stops the Mosquitto it manages even
    /// when a test fails half-way; SIGKILL if it does not exit in time.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.terminate(Duration::from_secs(10));
        }
        // No drain: nobody reads the output any more.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Await `fut` for at most `secs` seconds; a hang fails the test with a
/// message that names `what` hung.
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs} s: {what}"),
    }
}

/// Poll `f` until it returns `Ok`, or fail after `timeout` with `what` and
/// the last value seen. An attempt that hangs is cut off at the deadline
/// too, so awaiting this is always bounded.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let end = Instant::now() + timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = "no attempt finished".to_owned();
    loop {
        match tokio::time::timeout_at(deadline, f()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("{last} (and the final attempt did not finish)"),
        };
        if Instant::now() > end {
            bail!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `fleet-controller serve` process on its own data dir, HTTP on a free
/// port (it prints which in its ready line), stopped on drop.
pub struct Controller {
    pub proc: Proc,
    pub api: String,
    pub mqtt_port: u16,
    pub data_dir: PathBuf,
    /// The first admin token (from `init`, read back from DIR/admin.token).
    pub token: String,
}

/// `fleet-controller init --data-dir DIR` unless DIR is initialised already.
pub fn init_data_dir(data_dir: &Path) -> anyhow::Result<String> {
    let token_file = data_dir.join("admin.token");
    if !token_file.exists() {
        let dir = data_dir.to_str().context("utf-8 temp path")?;
        let (ok, out, err) = run_bin("fleet-controller", &["init", "--data-dir", dir])?;
        if !ok {
            bail!("fleet-controller init failed: {err}");
        }
        let token = std::fs::read_to_string(&token_file)?;
        if token.trim() != out.trim() {
            bail!("init printed a different token than it wrote to admin.token");
        }
    }
    Ok(std::fs::read_to_string(&token_file)?.trim().to_owned())
}

/// The workspace's one rustls provider, for reqwest in tests.
pub fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

impl Controller {
    pub fn start(data_dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_env(data_dir, extra, &[])
    }

    /// [`Controller::start`] with extra environment variables (e.g.
    /// `FLEET_CONTROLLER__HTTP__MAX_CONNECTIONS_PER_IP`).
    pub fn start_with_env(
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1:0", data_dir, extra, env)
    }

    /// [`Controller::start_with_env`] with the API on `http` (e.g. a port
    /// from [`free_port`], so that a restart keeps the address devices use).
    pub fn start_on(
        http: &str,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        install_crypto();
        let token = init_data_dir(data_dir)?;
        let dir = data_dir.to_str().context("utf-8 temp path")?;
        let mut args = vec!["serve", "--data-dir", dir, "--http", http];
        args.extend_from_slice(extra);
        let mut env = env.to_vec();
        env.push(("FLEET_LOG", "info,fleet_controller=debug"));
        let mut proc = Proc::spawn("fleet-controller", &args, &env)?;
        let line = proc.wait_for_line("ready: api ", Duration::from_secs(30))?;
        let api = line
            .split("api ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .context("ready line without api address")?
            .to_owned();
        let mqtt_port = line
            .split("broker ")
            .nth(1)
            .and_then(|s| s.split("://").nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .context("ready line without broker address")?;
        Ok(Self {
            proc,
            api,
            mqtt_port,
            data_dir: data_dir.to_owned(),
            token,
        })
    }

    /// SIGTERM and wait for a clean exit; returns what it printed.
    pub fn stop(mut self) -> anyhow::Result<String> {
        let status = self.proc.terminate(Duration::from_secs(20))?;
        if !status.success() {
            bail!(
                "controller exited with {status}; output:\n{}",
                self.proc.output()
            );
        }
        Ok(self.proc.output())
    }

    /// `fleetctl --controller <this> args…`: (success, stdout, stderr).
    /// Import a registry CSV (counties and stations) through fleetctl;
    /// an import that fails is an error with fleetctl's output.
    pub fn import_registry(&self, csv: &str) -> anyhow::Result<()> {
        let work = tempfile::tempdir()?;
        let file = work.path().join("stations.csv");
        std::fs::write(&file, csv)?;
        let (ok, out, err) =
            self.fleetctl(&["registry", "import", file.to_str().context("utf-8 path")?])?;
        if !ok {
            bail!("fleetctl registry import failed: {out}{err}");
        }
        Ok(())
    }

    pub fn fleetctl(&self, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
        self.fleetctl_as(&self.token, args)
    }

    /// fleetctl with another token.
    pub fn fleetctl_as(
        &self,
        token: &str,
        args: &[&str],
    ) -> anyhow::Result<(bool, String, String)> {
        let ca = self.ca();
        let ca = ca.to_str().context("utf-8 path")?;
        run_bin(
            "fleetctl",
            &[
                &[
                    "--controller",
                    self.api.as_str(),
                    "--token",
                    token,
                    "--ca",
                    ca,
                ],
                args,
            ]
            .concat(),
        )
    }

    /// The fleet CA, which the controller's HTTPS certificate chains to.
    pub fn ca(&self) -> PathBuf {
        self.data_dir.join("pki/ca.crt")
    }

    /// A typed API client with the first admin token.
    pub fn client(&self) -> fleet_api::client::Client {
        client_for(&self.api, &self.ca(), Some(&self.token))
    }

    /// A typed API client with another token (`None`: none at all).
    pub fn client_as(&self, token: Option<&str>) -> fleet_api::client::Client {
        client_for(&self.api, &self.ca(), token)
    }
}

/// How long one API request of a test may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A typed client of the controller at `api` that trusts the fleet CA in
/// `ca` (read when the URL is `https://`).
pub fn client_for(api: &str, ca: &Path, token: Option<&str>) -> fleet_api::client::Client {
    install_crypto();
    let client = if api.starts_with("https://") {
        fleet_api::client::Client::with_ca_file(api, Some(ca))
    } else {
        fleet_api::client::Client::new(api, None)
    };
    client
        .unwrap_or_else(|e| panic!("a client of {api}: {e}"))
        .with_token(token.map(str::to_owned))
        .with_timeout(REQUEST_TIMEOUT)
}

/// Run `fleetctl --controller api --token token args…` to completion.
pub fn fleetctl(api: &str, token: &str, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    run_bin(
        "fleetctl",
        &[&["--controller", api, "--token", token], args].concat(),
    )
}

/// Run a workspace binary to completion: (success, stdout, stderr).
pub fn run_bin(name: &str, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    run_command(
        Command::new(bin_path(name)?)
            .args(args)
            .env("NO_COLOR", "1"),
    )
    .with_context(|| format!("cannot run {name}"))
}

/// Run `cmd` to its end: (success, stdout, stderr).
pub fn run_command(cmd: &mut Command) -> anyhow::Result<(bool, String, String)> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The sum of a Prometheus counter's samples whose line contains `labels`.
pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// (certificate, key, CA) PEM of a client identity issued by
/// `fleet-controller issue-cert` (a bridge or an observer).
pub struct Identity {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub ca: Vec<u8>,
}

/// `fleet-controller issue-cert --kind KIND --name NAME` on `data`, the
/// files written under `out`.
pub fn issue_cert(data: &Path, out: &Path, kind: &str, name: &str) -> anyhow::Result<Identity> {
    let (ok, stdout, err) = run_bin(
        "fleet-controller",
        &[
            "issue-cert",
            "--data-dir",
            data.to_str().context("utf-8 path")?,
            "--kind",
            kind,
            "--name",
            name,
            "--out",
            out.to_str().context("utf-8 path")?,
        ],
    )?;
    if !ok {
        bail!("issue-cert failed: {err}");
    }
    let files: Vec<&str> = stdout.lines().collect();
    if files.len() != 3 {
        bail!("issue-cert printed {} files, not 3: {stdout}", files.len());
    }
    Ok(Identity {
        cert: std::fs::read(files[0])?,
        key: std::fs::read(files[1])?,
        ca: std::fs::read(files[2])?,
    })
}

/// A device enrolled through the real flow: a shipment batch (fleetctl)
/// and `fleet-agent enrol`, with its agent config and identity files.
pub struct EnrolledDevice {
    pub id: String,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl Controller {
    /// Enrol a new device (its county must be in the registry already).
    /// `extra_config` is appended to the agent's config file.
    pub fn enrol(
        &self,
        id: &str,
        province: &str,
        county: &str,
        extra_config: &str,
    ) -> anyhow::Result<EnrolledDevice> {
        let dir = tempfile::tempdir()?;
        let shipment = dir.path().join("shipment.csv");
        std::fs::write(
            &shipment,
            format!("serial,model,province,county\n{id},ballot-box-v2,{province},{county}\n"),
        )?;
        let (ok, out, err) = self.fleetctl(&[
            "enrol",
            "batch",
            shipment.to_str().context("utf-8 path")?,
            "--output",
            "json",
            "--sheet-dir",
            dir.path().to_str().context("utf-8 path")?,
        ])?;
        if !ok {
            bail!("enrol batch failed: {err}");
        }
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let token = v["devices"][0]["token"]
            .as_str()
            .context("no token in the batch answer")?
            .to_owned();
        let fw = dir.path().join("firmware-version");
        std::fs::write(&fw, "2.4.0\n")?;
        let state = dir.path().join("state");
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[device]\nid = \"{id}\"\nmodel = \"ballot-box-v2\"\nfirmware_version_file = \"{}\"\nstate_dir = \"{}\"\n{extra_config}",
                fw.display(),
                state.display()
            ),
        )?;
        // The token goes through a file, as on a shared bench (an argument
        // would show in `ps`).
        let token_file = dir.path().join("enrol.token");
        std::fs::write(&token_file, format!("{token}\n"))?;
        let (ok, out, err) = run_bin(
            "fleet-agent",
            &[
                "enrol",
                "--controller",
                &self.api,
                "--token-file",
                token_file.to_str().context("utf-8 path")?,
                "--config",
                config.to_str().context("utf-8 path")?,
                "--ca",
                self.ca().to_str().context("utf-8 path")?,
            ],
        )?;
        if !ok {
            bail!("fleet-agent enrol failed: {out}{err}");
        }
        Ok(EnrolledDevice {
            id: id.to_owned(),
            ca: std::fs::read(state.join("ca.crt"))?,
            cert: std::fs::read(state.join("device.crt"))?,
            key: std::fs::read(state.join("device.key"))?,
            config,
            dir,
        })
    }
}

/// Hand a running agent one event through its `test_hooks.event_dir`: the
/// JSON of a fleet-protocol `EventKind`, written aside and renamed into
/// place whole, so the agent never reads half a file.
pub fn hook_event(dir: &Path, name: &str, json: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, dir.join(format!("{name}.json")))
}

/// (boot, seq) of every event a `fleet-agent`'s log (`output`, at debug
/// for `fleet_agent::outbox`) says it committed to its outbox file.
pub fn committed_events(output: &str) -> std::collections::BTreeSet<(u64, u64)> {
    output
        .lines()
        .filter(|l| l.contains("event committed to the outbox") && l.contains("durable=true"))
        .filter_map(|l| {
            let field = |name: &str| -> Option<u64> {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .and_then(|v| v.parse().ok())
            };
            Some((field("boot=")?, field("seq=")?))
        })
        .collect()
}
