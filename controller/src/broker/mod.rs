//! The managed Mosquitto: the controller writes its config into the data
//! directory, starts it on the configured port (or the port it used last
//! time, or a free one), restarts it when it dies, reloads it (SIGHUP) when
//! the CRL changes, and stops it on shutdown. `revocation` tells a broker,
//! managed or external, that a device is retired.
//!
//! Until certificate enrolment lands, the listener is plain MQTT bound to
//! 127.0.0.1 only, so nothing off this machine can reach it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use tokio::sync::{mpsc, oneshot, watch};

pub mod account;
mod kick;
pub mod render;
pub mod revocation;
pub mod tier;
pub use kick::Kicker;
pub use render::{render_acl, render_config};
pub use revocation::{CrlHook, Revocation, RevocationError, TierRevocation, Where};
use tracing::{error, info, warn};

pub const MOSQUITTO_INSTALL: &str = "apt-get install -y mosquitto mosquitto-clients";

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("mosquitto is not installed; install it with: {MOSQUITTO_INSTALL}")]
    NotInstalled,
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start mosquitto: {0}")]
    Spawn(std::io::Error),
    #[error("mosquitto did not listen on 127.0.0.1:{port} within {secs} s; see {log}")]
    NotListening { port: u16, secs: u64, log: PathBuf },
    #[error("an earlier mosquitto of this data directory (pid {pid}, from {pid_file}) is still running and would not stop; stop it by hand before starting the controller")]
    Orphan { pid: u32, pid_file: PathBuf },
    #[error("the controller runs as root, so Mosquitto would drop to user {user}, but {why}; install Debian's mosquitto package (it makes the user) or run the controller as a service account")]
    NoAccount { user: String, why: String },
    #[error("Mosquitto runs as user {user} and cannot reach {dir}: {blocked_by} (mode {mode:o}) does not let it through; let it pass (chmod o+x, or chgrp {user} and chmod g+x) or put the data directory elsewhere")]
    Unreachable {
        user: String,
        dir: PathBuf,
        blocked_by: PathBuf,
        mode: u32,
    },
}

/// A managed broker's own config: the central one, or a provincial one
/// (with a bridge to the central).
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Mosquitto's directory: config, ACL, copies of the TLS files, and
    /// `state/` (persistence, log, pid file), see [`account`].
    pub dir: PathBuf,
    /// Fixed port; `None` reuses the last port or picks a free one.
    pub port: Option<u16>,
    /// Mutual TLS; `None` only with `--insecure-dev`.
    pub tls: Option<BrokerTls>,
    /// A provincial broker's bridge; `None`: the central broker.
    pub bridge: Option<ManagedBridge>,
    /// The central broker: the names of the tier's provincial brokers,
    /// whose bridges its ACL lets speak under their own prefixes.
    pub bridges: Vec<String>,
}

impl BrokerConfig {
    /// The central broker in `dir`, with the tier's provincial brokers
    /// (by name) whose bridges may speak through it.
    pub fn central(
        dir: PathBuf,
        port: Option<u16>,
        tls: Option<BrokerTls>,
        bridges: Vec<String>,
    ) -> Self {
        Self {
            dir,
            port,
            tls,
            bridge: None,
            bridges,
        }
    }

    /// `central` or the provincial broker's name, for the log.
    pub fn name(&self) -> &str {
        self.bridge.as_ref().map_or("central", |b| b.name.as_str())
    }
}

/// The bridge of a managed provincial broker.
#[derive(Debug, Clone)]
pub struct ManagedBridge {
    pub name: String,
    pub provinces: Vec<fleet_protocol::ProvinceCode>,
    /// The central broker, `host:port`.
    pub address: String,
    /// The bridge's client certificate and key (`DATA/pki/bridge-NAME.*`),
    /// staged into the broker's directory; `None` only with `--insecure-dev`.
    pub cert: Option<(PathBuf, PathBuf)>,
    /// The bridge's reconnect backoff (`[broker] bridge_retry_*_secs`).
    pub retry: render::BridgeRetry,
}

/// The files of the broker's mutual-TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub crl: PathBuf,
}

/// Mosquitto from `$PATH` or Debian's `/usr/sbin`.
pub fn find_mosquitto() -> Result<PathBuf, BrokerError> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("mosquitto"))
                .find(|p| p.is_file())
        })
        .or_else(|| Some(PathBuf::from("/usr/sbin/mosquitto")).filter(|p| p.is_file()))
        .ok_or(BrokerError::NotInstalled)
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The Mosquitto an earlier controller of this directory started, if it is
/// still running: its pid file names a live process started with our config.
fn orphan(dir: &Path) -> Option<u32> {
    // Where the pid file is, or was before the broker got `state/`.
    let pid: u32 = [pid_file(dir), dir.join("mosquitto.pid")]
        .iter()
        .find_map(|f| std::fs::read_to_string(f).ok()?.trim().parse().ok())?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let conf = dir.join("mosquitto.conf");
    let ours = String::from_utf8_lossy(&cmdline).contains(&*conf.to_string_lossy());
    ours.then_some(pid)
}

async fn stop_orphan(dir: &Path) -> Result<(), BrokerError> {
    let Some(pid) = orphan(dir) else {
        return Ok(());
    };
    warn!(pid, "an earlier mosquitto of this data directory is still running (the controller was killed?); stopping it");
    for signal in ["-TERM", "-KILL"] {
        let _ = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .await;
        for _ in 0..50 {
            if orphan(dir).is_none() || !Path::new(&format!("/proc/{pid}")).exists() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Err(BrokerError::Orphan {
        pid,
        pid_file: pid_file(dir),
    })
}

/// Stop the orphaned Mosquitto of every managed broker directory of
/// `data_dir` (`mosquitto` and any `mosquitto-NAME`), configured now or
/// not: a controller SIGKILLed, then started with fewer provincial brokers
/// (or none), would otherwise leave one running, bridging devices nobody
/// watches. Only a process started with that directory's config is
/// stopped. Returns the directories whose orphan was stopped.
pub async fn stop_orphans(data_dir: &Path) -> Result<Vec<PathBuf>, BrokerError> {
    let entries = match std::fs::read_dir(data_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(source) => {
            return Err(BrokerError::Io {
                path: data_dir.to_owned(),
                source,
            })
        }
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            (name == "mosquitto" || name.starts_with("mosquitto-"))
                && e.file_type().is_ok_and(|t| t.is_dir())
        })
        .map(|e| e.path())
        .collect();
    dirs.sort();
    let mut stopped = vec![];
    for dir in dirs {
        if orphan(&dir).is_some() {
            stop_orphan(&dir).await?;
            stopped.push(dir);
        }
    }
    Ok(stopped)
}

/// The managed Mosquitto's pid file.
pub fn pid_file(dir: &Path) -> PathBuf {
    account::state_dir(dir).join("mosquitto.pid")
}

/// The managed Mosquitto's log.
pub fn log_file(dir: &Path) -> PathBuf {
    account::state_dir(dir).join("mosquitto.log")
}

fn pick_port(cfg: &BrokerConfig) -> u16 {
    if let Some(p) = cfg.port {
        return p;
    }
    let remembered = std::fs::read_to_string(cfg.dir.join("port"))
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .filter(|p| *p != 0 && port_is_free(*p));
    remembered.unwrap_or_else(|| {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1883)
    })
}

async fn wait_listening(port: u16, timeout: Duration) -> bool {
    let end = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < end {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// A Mosquitto this controller runs: the central broker or a provincial
/// one. Each is supervised alike (restarted when it dies, reloaded with
/// SIGHUP, stopped with SIGTERM).
pub struct ManagedBroker {
    name: String,
    port: u16,
    stop: watch::Sender<bool>,
    control: mpsc::Sender<Control>,
    task: tokio::task::JoinHandle<()>,
}

/// What the supervisor is asked; answered once done.
enum Control {
    /// SIGHUP: re-read the ACL, the CRL and the listener's certificate.
    Reload(oneshot::Sender<Result<(), String>>),
    /// Stop and start again: Mosquitto 2.0.11 does not reload a bridge
    /// (its certificate) on SIGHUP.
    Restart(oneshot::Sender<Result<(), String>>),
}

/// Asks the supervisor to send Mosquitto SIGHUP, which makes it re-read its
/// config, ACL and CRL without dropping a connection (see
/// docs/decisions/0010-revocation-and-broker-reload.md), or to restart it.
#[derive(Clone)]
pub struct BrokerReloader {
    name: String,
    control: mpsc::Sender<Control>,
}

impl BrokerReloader {
    /// Send SIGHUP to the running Mosquitto; `Ok` once it is sent.
    pub async fn reload(&self) -> Result<(), String> {
        self.ask(Control::Reload).await
    }

    /// Restart Mosquitto (SIGTERM, which saves its persistence file, then
    /// start it again on its port); `Ok` once it listens again.
    pub async fn restart(&self) -> Result<(), String> {
        self.ask(Control::Restart).await
    }

    /// `central` or the provincial broker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn ask(
        &self,
        what: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Control,
    ) -> Result<(), String> {
        let stopped = || format!("the supervisor of broker {} has stopped", self.name);
        let (tx, rx) = oneshot::channel();
        self.control.send(what(tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// How the supervisor starts Mosquitto and stages its files again.
struct Launch<S, T> {
    name: String,
    port: u16,
    spawn: S,
    stage: T,
}

impl ManagedBroker {
    pub async fn start(cfg: BrokerConfig) -> Result<Self, BrokerError> {
        let bin = find_mosquitto()?;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| BrokerError::Io { path, source }
        };
        let name = cfg.name().to_owned();
        let account = account::broker_account()?;
        std::fs::create_dir_all(&cfg.dir).map_err(io(&cfg.dir))?;
        if let Some(a) = &account {
            account::check_reachable(&cfg.dir, a)?;
        }
        // A controller killed with SIGKILL leaves its Mosquitto running on
        // the devices' port with stale state: stop it first, so the port it
        // held (the one devices know) is ours again.
        stop_orphan(&cfg.dir).await?;
        account::prepare_dirs(&cfg.dir, account.as_ref())?;
        let port = pick_port(&cfg);
        // What Mosquitto reads after dropping to its user: copies it can
        // read and not rewrite, staged again before every reload.
        let stage = {
            let dir = cfg.dir.clone();
            let tls = cfg.tls.clone();
            let bridge_cert = cfg.bridge.as_ref().and_then(|b| b.cert.clone());
            let account = account.clone();
            move || -> Result<Option<BrokerTls>, BrokerError> {
                let Some(t) = &tls else { return Ok(None) };
                let staged = account::stage_tls(t, &dir, account.as_ref())?;
                if let Some((cert, key)) = &bridge_cert {
                    let to = account::staged_bridge(&dir);
                    for (src, dst) in [(cert, &to.cert), (key, &to.key)] {
                        let bytes = std::fs::read(src).map_err(|source| BrokerError::Io {
                            path: src.clone(),
                            source,
                        })?;
                        account::write_readable(dst, &bytes, account.as_ref())?;
                    }
                }
                Ok(Some(staged))
            }
        };
        let staged = stage()?;
        let conf = cfg.dir.join("mosquitto.conf");
        let layout = render::Layout::managed(&cfg.dir, port, staged.as_ref(), account.as_ref());
        let (config, acl) = match &cfg.bridge {
            None => (
                render::render_central(&layout),
                render_acl(crate::pki::CONTROLLER_IDENTITY, &cfg.bridges),
            ),
            Some(b) => (
                render::render_provincial(
                    &layout,
                    &render::Bridge {
                        name: b.name.clone(),
                        provinces: b.provinces.clone(),
                        address: b.address.clone(),
                        tls: staged.as_ref().map(|t| render::BridgeTls {
                            ca: t.ca.clone(),
                            ..account::staged_bridge(&cfg.dir)
                        }),
                        queue: render::QueueBounds::default(),
                        retry: b.retry,
                    },
                ),
                render::render_provincial_acl(),
            ),
        };
        account::write_readable(&conf, config.as_bytes(), account.as_ref())?;
        account::write_readable(&cfg.dir.join("acl"), acl.as_bytes(), account.as_ref())?;
        std::fs::write(cfg.dir.join("port"), port.to_string()).map_err(io(&cfg.dir))?;
        let log = log_file(&cfg.dir);

        let spawn = {
            let bin = bin.clone();
            let conf = conf.clone();
            move || {
                Command::new(&bin)
                    .arg("-c")
                    .arg(&conf)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(BrokerError::Spawn)
            }
        };
        let mut child = spawn()?;
        if !wait_listening(port, Duration::from_secs(10)).await {
            let _ = child.kill().await;
            return Err(BrokerError::NotListening {
                port,
                secs: 10,
                log,
            });
        }
        info!(broker = %name, port, config = %conf.display(), "managed mosquitto started");
        let (stop, stop_rx) = watch::channel(false);
        let (control, control_rx) = mpsc::channel(16);
        let task = tokio::spawn(supervise(
            child,
            Launch {
                name: name.clone(),
                port,
                spawn,
                stage,
            },
            stop_rx.clone(),
            control_rx,
        ));
        tokio::spawn(keep_log_bounded(log, stop_rx));
        Ok(Self {
            name,
            port,
            stop,
            control,
            task,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `central` or the provincial broker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A handle that makes Mosquitto re-read its CRL (SIGHUP), keeping
    /// every connection, or restarts it.
    pub fn reloader(&self) -> BrokerReloader {
        BrokerReloader {
            name: self.name.clone(),
            control: self.control.clone(),
        }
    }

    /// Stop Mosquitto (SIGTERM, so it saves its persistence file) and wait.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
        // Mosquitto saves its persistence file before it exits: at 15,000
        // devices (or the central broker of 100,000) that is 150 MB and
        // seconds of writing; a kill before it is done loses what changed
        // since the last autosave.
        if tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

/// SIGHUP: Mosquitto 2.0.11 re-reads its config, ACL and CRL and keeps
/// every connection (docs/decisions/0010-revocation-and-broker-reload.md).
async fn hang_up(child: &Child, name: &str) -> Result<(), String> {
    let pid = child
        .id()
        .ok_or_else(|| format!("mosquitto ({name}) is not running"))?;
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .await
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if status.success() {
        info!(broker = %name, pid, "managed mosquitto reloaded (SIGHUP)");
        Ok(())
    } else {
        Err(format!("kill -HUP {pid}: {status}"))
    }
}

async fn supervise<S, T>(
    mut child: Child,
    launch: Launch<S, T>,
    mut stop: watch::Receiver<bool>,
    mut control: mpsc::Receiver<Control>,
) where
    S: Fn() -> Result<Child, BrokerError> + Send + 'static,
    T: Fn() -> Result<Option<BrokerTls>, BrokerError> + Send + 'static,
{
    let Launch {
        name,
        port,
        spawn,
        stage,
    } = launch;
    let mut delay = Duration::from_millis(200);
    loop {
        tokio::select! {
            Some(asked) = control.recv() => match asked {
                Control::Reload(reply) => {
                    metrics::counter!("fleet_broker_reloads_total", "broker" => name.clone()).increment(1);
                    // The broker rereads its copies: renew them first.
                    let done = match stage() {
                        Ok(_) => hang_up(&child, &name).await,
                        Err(e) => Err(e.to_string()),
                    };
                    let _ = reply.send(done);
                }
                Control::Restart(reply) => {
                    if let Err(e) = stage() {
                        let _ = reply.send(Err(e.to_string()));
                        continue;
                    }
                    terminate(&mut child).await;
                    let done = match spawn() {
                        Ok(c) => {
                            child = c;
                            if wait_listening(port, Duration::from_secs(10)).await {
                                info!(broker = %name, port, "managed mosquitto restarted (asked)");
                                Ok(())
                            } else {
                                Err(format!("mosquitto ({name}) did not listen again on {port}"))
                            }
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    let _ = reply.send(done);
                }
            },
            status = child.wait() => {
                metrics::counter!("fleet_broker_restarts_total", "broker" => name.clone()).increment(1);
                warn!(broker = %name, ?status, retry_in_ms = delay.as_millis() as u64, "managed mosquitto exited; restarting it");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
                if let Err(e) = stage() {
                    warn!(broker = %name, error = %e, "cannot stage the broker's TLS files again; it restarts with the copies it had");
                }
                match spawn() {
                    Ok(c) => {
                        child = c;
                        if wait_listening(port, Duration::from_secs(10)).await {
                            info!(broker = %name, port, "managed mosquitto restarted");
                            delay = Duration::from_millis(200);
                        } else {
                            delay = (delay * 2).min(Duration::from_secs(10));
                        }
                    }
                    Err(e) => {
                        error!(broker = %name, error = %e, "cannot restart mosquitto");
                        delay = (delay * 2).min(Duration::from_secs(10));
                        // Keep the loop alive on a child that exits at once.
                        child = match Command::new("true").spawn() {
                            Ok(c) => c,
                            Err(_) => return,
                        };
                    }
                }
            }
            _ = stop.changed() => {
                terminate(&mut child).await;
                info!(broker = %name, "managed mosquitto stopped");
                return;
            }
        }
    }
}

/// Mosquitto's log may hold at most this much, plus one older file of the
/// same size (`mosquitto.log.1`): a broker that logs every connection of a
/// reconnecting fleet must not fill the disk.
pub const LOG_LIMIT_BYTES: u64 = 8 * 1024 * 1024;

/// Bound the log once: over the limit, keep it as `.1` and empty it.
/// Mosquitto appends (O_APPEND), so it writes on at the start of the
/// emptied file without being told.
pub fn bound_log(log: &Path, limit: u64) -> std::io::Result<bool> {
    match std::fs::metadata(log) {
        Ok(m) if m.len() > limit => {
            std::fs::copy(log, log.with_extension("log.1"))?;
            std::fs::OpenOptions::new()
                .write(true)
                .open(log)?
                .set_len(0)?;
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

async fn keep_log_bounded(log: PathBuf, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = every.tick() => match bound_log(&log, LOG_LIMIT_BYTES) {
                Ok(true) => info!(log = %log.display(), "mosquitto's log rotated"),
                Ok(false) => {}
                Err(e) => warn!(log = %log.display(), error = %e, "cannot bound mosquitto's log"),
            },
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_kept_under_its_limit_with_one_older_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("mosquitto.log");
        std::fs::write(&log, "a".repeat(100)).unwrap();
        assert!(
            !bound_log(&log, 1000).unwrap(),
            "under the limit: untouched"
        );
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 100);
        std::fs::write(&log, "b".repeat(2000)).unwrap();
        assert!(bound_log(&log, 1000).unwrap());
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("mosquitto.log.1")).unwrap(),
            "b".repeat(2000)
        );
        assert!(!bound_log(&dir.path().join("none.log"), 1000).unwrap());
    }

    #[tokio::test]
    async fn starts_restarts_and_stops() {
        fleet_tests::within(
            60,
            "the managed broker starting, restarting and stopping",
            async {
                let dir = tempfile::tempdir().unwrap();
                let broker = ManagedBroker::start(BrokerConfig::central(
                    dir.path().to_owned(),
                    None,
                    None,
                    vec![],
                ))
                .await
                .unwrap();
                let port = broker.port();
                assert!(wait_listening(port, Duration::from_secs(1)).await);
                let pid = std::fs::read_to_string(pid_file(dir.path())).unwrap();
                // Kill it behind the supervisor's back: it comes back on the same port.
                Command::new("kill")
                    .args(["-KILL", pid.trim()])
                    .status()
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut back = false;
                for _ in 0..100 {
                    let new_pid = std::fs::read_to_string(pid_file(dir.path())).unwrap_or_default();
                    if new_pid.trim() != pid.trim()
                        && wait_listening(port, Duration::from_millis(50)).await
                    {
                        back = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                assert!(back, "mosquitto was not restarted");
                broker.stop().await;
                assert!(
                    !wait_listening(port, Duration::from_millis(300)).await,
                    "still listening after stop"
                );
                // The next start reuses the remembered port.
                let again = ManagedBroker::start(BrokerConfig::central(
                    dir.path().to_owned(),
                    None,
                    None,
                    vec![],
                ))
                .await
                .unwrap();
                assert_eq!(again.port(), port);
                again.stop().await;
            },
        )
        .await;
    }
}
