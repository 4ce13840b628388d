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
pub mod revocation;
pub mod tier;
pub use kick::Kicker;
pub use revocation::{CrlHook, Revocation, RevocationError};
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

/// The managed broker's own config.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Mosquitto's directory: config, ACL, copies of the TLS files, and
    /// `state/` (persistence, log, pid file), see [`account`].
    pub dir: PathBuf,
    /// Fixed port; `None` reuses the last port or picks a free one.
    pub port: Option<u16>,
    /// Mutual TLS; `None` only with `--insecure-dev`.
    pub tls: Option<BrokerTls>,
}

/// The files of the broker's mutual-TLS listener.
#[derive(Debug, Clone)]
pub struct BrokerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub crl: PathBuf,
}

/// Who may touch which topic: a device (its certificate name is its user
/// name and its client id) writes its own reports and certificate requests
/// and reads its own desired state, commands and renewed certificates,
/// nothing else; the controller reads and writes all.
///
/// Behind a provincial broker, its bridge (user `bridge.{name}`) writes and
/// reads the same topics under its own prefix `fleet/v1/b/bridge.{name}/`
/// only, and its link state on `fleet/v1/bridge/bridge.{name}/state`; the
/// controller then accepts a device's message from a bridge only if that
/// bridge serves the device's province (a device id has no dot, so no
/// device is a bridge). The observer reads everything and writes nothing.
pub fn render_acl(controller: &str) -> String {
    format!(
        "# Written by fleet-controller at every start; edits here are overwritten.\n\
         user {controller}\n\
         topic readwrite fleet/v1/dev/#\n\
         topic readwrite fleet/v1/b/#\n\
         topic read fleet/v1/bridge/#\n\
         \n\
         user {observer}\n\
         topic read fleet/v1/#\n\
         \n\
         pattern write fleet/v1/b/%u/dev/+/presence\n\
         pattern write fleet/v1/b/%u/dev/+/state\n\
         pattern write fleet/v1/b/%u/dev/+/health\n\
         pattern write fleet/v1/b/%u/dev/+/events\n\
         pattern write fleet/v1/b/%u/dev/+/csr\n\
         pattern read fleet/v1/b/%u/dev/+/desired\n\
         pattern read fleet/v1/b/%u/dev/+/cmd\n\
         pattern read fleet/v1/b/%u/dev/+/cert\n\
         pattern write fleet/v1/bridge/%u/state\n\
         \n\
         pattern write fleet/v1/dev/%u/presence\n\
         pattern write fleet/v1/dev/%u/state\n\
         pattern write fleet/v1/dev/%u/health\n\
         pattern write fleet/v1/dev/%u/events\n\
         pattern read fleet/v1/dev/%u/desired\n\
         pattern read fleet/v1/dev/%u/cmd\n\
         pattern write fleet/v1/dev/%u/csr\n\
         pattern read fleet/v1/dev/%u/cert\n",
        observer = crate::pki::OBSERVER_IDENTITY
    )
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

/// The config file Mosquitto runs with. Written anew at every start.
///
/// The queue limit is per client and must hold a whole fleet reconnecting at
/// once for the controller (Mosquitto drops QoS 1 messages past it without a
/// word); devices themselves are only ever sent a handful of messages.
pub fn render_config(
    dir: &Path,
    port: u16,
    tls: Option<&BrokerTls>,
    account: Option<&account::Account>,
) -> String {
    // Started by root, Mosquitto drops to this user after reading this file;
    // started by anyone else, it keeps that user (and ignores the line).
    let user = account
        .map(|a| format!("user {}\n", a.name))
        .unwrap_or_default();
    let state = account::state_dir(dir);
    let security = match tls {
        // The certificate name becomes the user name and the client id, so a
        // device can neither claim another's session nor pass the ACL as
        // another device.
        Some(t) => format!(
            "cafile {}\n\
             certfile {}\n\
             keyfile {}\n\
             crlfile {}\n\
             require_certificate true\n\
             use_identity_as_username true\n\
             use_username_as_clientid true\n\
             allow_anonymous false\n\
             acl_file {}/acl\n",
            t.ca.display(),
            t.cert.display(),
            t.key.display(),
            t.crl.display(),
            dir.display()
        ),
        None => "allow_anonymous true\n".to_owned(),
    };
    format!(
        "# Written by fleet-controller at every start; edits here are overwritten.\n\
         {user}\
         per_listener_settings false\n\
         listener {port} 127.0.0.1\n\
         {security}\
         persistence true\n\
         persistence_location {state}/\n\
         autosave_interval 30\n\
         persistent_client_expiration 30d\n\
         max_packet_size 16384\n\
         max_inflight_messages 1000\n\
         max_queued_messages 1000000\n\
         pid_file {state}/mosquitto.pid\n\
         log_dest file {state}/mosquitto.log\n\
         log_type error\n\
         log_type warning\n\
         log_type notice\n\
         connection_messages true\n",
        state = state.display()
    )
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

pub struct ManagedBroker {
    port: u16,
    stop: watch::Sender<bool>,
    reload: mpsc::Sender<Reload>,
    task: tokio::task::JoinHandle<()>,
}

/// A reload asked of the supervisor, answered once the signal is sent.
type Reload = oneshot::Sender<Result<(), String>>;

/// Asks the supervisor to send Mosquitto SIGHUP, which makes it re-read its
/// config, ACL and CRL without dropping a connection (see
/// docs/decisions/0010-revocation-and-broker-reload.md).
#[derive(Clone)]
pub struct BrokerReloader {
    reload: mpsc::Sender<Reload>,
}

impl BrokerReloader {
    /// Send SIGHUP to the running Mosquitto; `Ok` once it is sent.
    pub async fn reload(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.reload
            .send(tx)
            .await
            .map_err(|_| "the broker supervisor has stopped".to_owned())?;
        rx.await
            .map_err(|_| "the broker supervisor has stopped".to_owned())?
    }
}

impl ManagedBroker {
    pub async fn start(cfg: BrokerConfig) -> Result<Self, BrokerError> {
        let bin = find_mosquitto()?;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| BrokerError::Io { path, source }
        };
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
            let account = account.clone();
            move || match &tls {
                Some(t) => account::stage_tls(t, &dir, account.as_ref()).map(Some),
                None => Ok(None),
            }
        };
        let staged = stage()?;
        let conf = cfg.dir.join("mosquitto.conf");
        account::write_readable(
            &conf,
            render_config(&cfg.dir, port, staged.as_ref(), account.as_ref()).as_bytes(),
            account.as_ref(),
        )?;
        account::write_readable(
            &cfg.dir.join("acl"),
            render_acl(crate::pki::CONTROLLER_IDENTITY).as_bytes(),
            account.as_ref(),
        )?;
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
        info!(port, config = %conf.display(), "managed mosquitto started");
        let (stop, stop_rx) = watch::channel(false);
        let (reload, reload_rx) = mpsc::channel(16);
        let task = tokio::spawn(supervise(
            child,
            spawn,
            stage,
            port,
            stop_rx.clone(),
            reload_rx,
        ));
        tokio::spawn(keep_log_bounded(log, stop_rx));
        Ok(Self {
            port,
            stop,
            reload,
            task,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that makes Mosquitto re-read its CRL (SIGHUP), keeping
    /// every connection.
    pub fn reloader(&self) -> BrokerReloader {
        BrokerReloader {
            reload: self.reload.clone(),
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
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
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
async fn hang_up(child: &Child) -> Result<(), String> {
    let pid = child
        .id()
        .ok_or_else(|| "mosquitto is not running".to_owned())?;
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .await
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if status.success() {
        info!(pid, "managed mosquitto reloaded (SIGHUP)");
        Ok(())
    } else {
        Err(format!("kill -HUP {pid}: {status}"))
    }
}

async fn supervise(
    mut child: Child,
    spawn: impl Fn() -> Result<Child, BrokerError> + Send + 'static,
    stage: impl Fn() -> Result<Option<BrokerTls>, BrokerError> + Send + 'static,
    port: u16,
    mut stop: watch::Receiver<bool>,
    mut reload: mpsc::Receiver<Reload>,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        tokio::select! {
            Some(reply) = reload.recv() => {
                metrics::counter!("fleet_broker_reloads_total").increment(1);
                // The broker rereads its copies: renew them first.
                let done = match stage() {
                    Ok(_) => hang_up(&child).await,
                    Err(e) => Err(e.to_string()),
                };
                let _ = reply.send(done);
            }
            status = child.wait() => {
                metrics::counter!("fleet_broker_restarts_total").increment(1);
                warn!(?status, retry_in_ms = delay.as_millis() as u64, "managed mosquitto exited; restarting it");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
                if let Err(e) = stage() {
                    warn!(error = %e, "cannot stage the broker's TLS files again; it restarts with the copies it had");
                }
                match spawn() {
                    Ok(c) => {
                        child = c;
                        if wait_listening(port, Duration::from_secs(10)).await {
                            info!(port, "managed mosquitto restarted");
                            delay = Duration::from_millis(200);
                        } else {
                            delay = (delay * 2).min(Duration::from_secs(10));
                        }
                    }
                    Err(e) => {
                        error!(error = %e, "cannot restart mosquitto");
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
                info!("managed mosquitto stopped");
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

    #[test]
    fn config_listens_on_loopback_only() {
        let c = render_config(Path::new("/data/mosquitto"), 18831, None, None);
        assert!(c.contains("listener 18831 127.0.0.1\n"));
        assert!(c.contains("persistence_location /data/mosquitto/state/\n"));
        assert!(!c.contains("user "), "not root: no user line");
        assert!(!c.contains("0.0.0.0"));
        // An abandoned session does not hold a queue for ever.
        assert!(c.contains("persistent_client_expiration 30d\n"));
    }

    #[tokio::test]
    async fn starts_restarts_and_stops() {
        fleet_tests::within(
            60,
            "the managed broker starting, restarting and stopping",
            async {
                let dir = tempfile::tempdir().unwrap();
                let broker = ManagedBroker::start(BrokerConfig {
                    dir: dir.path().to_owned(),
                    port: None,
                    tls: None,
                })
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
                let again = ManagedBroker::start(BrokerConfig {
                    dir: dir.path().to_owned(),
                    port: None,
                    tls: None,
                })
                .await
                .unwrap();
                assert_eq!(again.port(), port);
                again.stop().await;
            },
        )
        .await;
    }
}
