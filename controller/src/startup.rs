//! Start-up and shut-down as named steps. [`Application::build`] opens the
//! store, loads the fleet, starts the broker, the store writer, ingest and
//! the readiness ticker; [`Application::run_until_stopped`] serves the API
//! until the shutdown future completes, then stops everything in order
//! (ingest, ticker, writer drained, broker, store). Tests build it on port 0
//! with a temporary data directory.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::access::{self, Access};
use crate::broker::tier::Tier;
use crate::broker::{self, BrokerConfig, ManagedBroker};
use crate::clock::unix_ms;
use crate::config::{BrokerMode, ControllerConfig};
use crate::domain::auth;
use crate::domain::fleet::Fleet;
use crate::http::{self, AppState};
use crate::ingest::{self, IngestConfig};
use crate::pki::{self, PkiPaths};
use crate::store::{self, Store};
use fleet_api::types::BrokerInfo;

/// The process-wide Prometheus recorder (metrics are global by nature; tests
/// that start several apps in one process share it).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                warn!("a metrics recorder was already installed; /metrics may be incomplete");
            }
            handle
        })
        .clone()
}

/// A controller that is running everything but the HTTP API.
pub struct Application {
    cfg: ControllerConfig,
    data_dir: PathBuf,
    listener: TcpListener,
    state: AppState,
    store: Store,
    managed: Option<ManagedBroker>,
    /// The managed provincial brokers, in start order (stopped in reverse).
    provincial: Vec<ManagedBroker>,
    stop_tx: watch::Sender<bool>,
    ingest: JoinHandle<()>,
    ticker: JoinHandle<()>,
    rollout_loop: JoinHandle<()>,
    sweeper: JoinHandle<()>,
    command_sweeper: JoinHandle<()>,
    /// The console's readiness sampler (aborted at shutdown).
    sampler: JoinHandle<()>,
    firmware_refresh: JoinHandle<()>,
    cert_watch: JoinHandle<()>,
    writer: JoinHandle<()>,
    http_tls: Option<Arc<rustls::ServerConfig>>,
}

impl Application {
    /// Load, start the broker, start ingest: everything up to serving.
    pub async fn build(cfg: ControllerConfig, listener: TcpListener) -> anyhow::Result<Self> {
        let data_dir = cfg.data_dir()?.to_owned();
        let paths = PkiPaths::new(&data_dir);
        paths.require(&data_dir)?;
        raise_open_files();
        if pki::ensure_api_cert(&paths)? {
            info!("made the API its own certificate (pki/api.crt); it used the broker's before");
        }
        let policy = cfg.cert_policy();
        let renewed = pki::renew_service_certs(&paths, &policy, unix_ms())?;
        if !renewed.is_empty() {
            info!(?renewed, "renewed certificates past their renewal point");
        }
        // Root starts the managed Mosquitto, which then runs as its own user
        // and must be let through the data directory to its own.
        let broker_account = match cfg.broker_mode() {
            BrokerMode::Managed { .. } => broker::account::broker_account()?,
            BrokerMode::External { .. } => None,
        };
        secure_data_dir(&data_dir, broker_account.as_ref())?;
        warn_if_insecure(&cfg);
        let http_tls = http_tls(&cfg, &paths)?;
        let ingest_tls = ingest_tls(&cfg, &paths)?;

        let (store, access) = open_store(&data_dir).await?;
        let fleet = load_fleet(&cfg, &store).await?;
        // The provincial tier: who may speak for which province, the route
        // to each device, whose link readiness watches.
        // Managed brokers start first, so the tier holds their ports; the
        // orphans of every broker directory, configured now or not, before.
        let orphans = broker::stop_orphans(&data_dir).await?;
        if !orphans.is_empty() {
            info!(
                ?orphans,
                "stopped the mosquittos an earlier controller of this data directory left running"
            );
        }
        let (managed, broker) = start_broker(&cfg, &data_dir, &paths).await?;
        let (provincial, tier) =
            match start_provincial_brokers(&cfg, &data_dir, &paths, &broker, &policy).await {
                Ok(started) => started,
                Err(e) => {
                    // The provincial ones started are stopped already; the
                    // central one too (SIGTERM: it saves its persistence),
                    // not left to die with the process.
                    if let Some(m) = managed {
                        m.stop().await;
                    }
                    return Err(e);
                }
            };
        let tier = Arc::new(tier);
        fleet
            .write()
            .expect("fleet lock is never poisoned")
            .set_tier(
                tier.brokers()
                    .iter()
                    .map(|b| (b.name.clone(), b.provinces.clone())),
            );

        let (stop_tx, stop_rx) = watch::channel(false);
        let (write_tx, write_rx) = mpsc::channel(cfg.ingest.write_queue);
        let ingest_connected = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (track_tx, track_rx) = crate::rollouts::track_channel();
        let writer = store::spawn_writer_with_tracks(
            store.clone(),
            write_rx,
            cfg.writer(),
            Some(track_tx.clone()),
        );
        let ingest_cfg = IngestConfig {
            host: broker.host.clone(),
            port: broker.port,
            client_id: cfg.ingest.client_id.clone(),
            keep_alive: cfg.keep_alive(),
            tls: ingest_tls,
            connected: Arc::clone(&ingest_connected),
            limits: cfg.rate_limits(),
            renewer: (!cfg.broker.insecure_dev).then(|| ingest::Renewer {
                store: store.clone(),
                access: Arc::clone(&access),
                pki: paths.clone(),
                device_cert: cfg.cert_policy().device,
            }),
            identity: (!cfg.broker.insecure_dev).then(|| paths.clone()),
            tier: Arc::clone(&tier),
        };
        let (publisher, eventloop) = ingest::client(&ingest_cfg);
        let ingest = tokio::spawn(ingest::run(
            ingest_cfg,
            Arc::clone(&fleet),
            write_tx,
            publisher.clone(),
            eventloop,
            stop_rx.clone(),
        ));
        let ticker = start_ticker(&cfg, Arc::clone(&fleet), stop_rx.clone());
        let sweeper = start_update_sweeper(cfg.sweeper(), store.clone(), track_tx, stop_rx.clone());
        let command_sweeper =
            start_command_sweeper(cfg.command_sweep(), store.clone(), stop_rx.clone());
        let (rollouts, rollout_loop) = crate::rollouts::spawn(
            crate::rollouts::Deps {
                store: store.clone(),
                fleet: Arc::clone(&fleet),
                publisher: publisher.clone(),
                access: Arc::clone(&access),
            },
            cfg.rollouts(),
            track_rx,
            Some(stop_rx.clone()),
        );
        let firmware = crate::firmware::Firmware::new(&data_dir, cfg.firmware.max_image_bytes)
            .with_lifetimes(cfg.firmware_lifetimes());
        let firmware_refresh = start_firmware_refresh(
            firmware.clone(),
            std::time::Duration::from_secs(cfg.firmware.refresh_secs),
            stop_rx.clone(),
        );
        let cert_watch = start_cert_watch(
            paths.clone(),
            policy,
            store.clone(),
            managed.as_ref().map(ManagedBroker::reloader),
            provincial.iter().map(ManagedBroker::reloader).collect(),
            stop_rx,
        );

        let console = cfg.console();
        let sampler = crate::ui::sampler::spawn(
            Arc::clone(&fleet),
            store.clone(),
            console.sample_every,
            console.sample_keep,
        );
        let state = AppState {
            console: Arc::new(crate::ui::Console::new(console)),
            fleet,
            store: store.clone(),
            broker,
            metrics: metrics_handle(),
            access,
            data_dir: data_dir.clone(),
            revocation: revocation(&cfg, managed.as_ref(), &provincial, &tier),
            tier,
            lifecycle_lock: Arc::default(),
            freeze_changes: Arc::default(),
            ingest_connected,
            cert_policy: cfg.cert_policy(),
            publisher,
            firmware,
            max_log_bytes: cfg.commands.max_log_bytes,
            rollouts,
        };
        Ok(Self {
            cfg,
            data_dir,
            listener,
            state,
            store,
            managed,
            provincial,
            stop_tx,
            ingest,
            ticker,
            rollout_loop,
            sweeper,
            command_sweeper,
            sampler,
            firmware_refresh,
            cert_watch,
            writer,
            http_tls,
        })
    }

    /// Where the API listens (port 0 resolved).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The managed broker's port (or the external broker's).
    pub fn broker_port(&self) -> u16 {
        self.state.broker.port
    }

    /// Serve the API until `shutdown` completes, then stop in order; every
    /// pending write reaches the store before this returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.listener.local_addr()?;
        let insecure = self.cfg.broker.insecure_dev;
        for b in self.state.tier.brokers() {
            let provinces: Vec<String> = b.provinces.iter().map(ToString::to_string).collect();
            info!(
                "provincial broker {} {}://{}:{} provinces {}",
                b.name,
                if insecure { "mqtt" } else { "mqtts" },
                b.host,
                b.port,
                provinces.join(",")
            );
        }
        info!(
            "fleet-controller ready: api {}://{addr} broker {}://{}:{} data {}",
            if insecure { "http" } else { "https" },
            if insecure { "mqtt" } else { "mqtts" },
            self.state.broker.host,
            self.state.broker.port,
            self.data_dir.display()
        );
        let serve = self.cfg.serve(self.http_tls);
        http::serve::serve(self.listener, http::app(self.state), serve, shutdown).await;

        info!("shutting down");
        let _ = self.stop_tx.send(true);
        let _ = self.ingest.await;
        let _ = self.ticker.await;
        let _ = self.sweeper.await;
        let _ = self.command_sweeper.await;
        self.sampler.abort();
        let _ = self.sampler.await;
        let _ = self.rollout_loop.await;
        let _ = self.firmware_refresh.await;
        let _ = self.cert_watch.await;
        // The ingest task held the last sender: the writer drains and ends.
        let _ = self.writer.await;
        // The central broker started first: it stops last.
        for b in self.provincial.into_iter().rev() {
            b.stop().await;
        }
        if let Some(b) = self.managed {
            b.stop().await;
        }
        self.store.close().await;
        info!("stopped");
        Ok(())
    }
}

/// Permissions checked and fixed at every start, not only when a file is
/// made: a copied backup, a careless `chmod -R`, an old version's files.
/// The data directory and its private subdirectories are 0700; the
/// database, its WAL, the audit head, the admin token and every key 0600.
pub fn secure_data_dir(
    dir: &Path,
    broker: Option<&broker::account::Account>,
) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // The managed broker's user (when root started it) passes through to its
    // own directory by group, without listing this one: 0710.
    let top = if broker.is_some() { 0o710 } else { 0o700 };
    let mut wanted: Vec<(PathBuf, u32)> = vec![(dir.to_owned(), top), (dir.join("pki"), 0o700)];
    for f in [
        "fleet.db",
        "fleet.db-wal",
        "fleet.db-shm",
        "audit.head",
        "admin.token",
    ] {
        wanted.push((dir.join(f), 0o600));
    }
    if let Ok(entries) = std::fs::read_dir(dir.join("pki")) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "key") {
                wanted.push((e.path(), 0o600));
            }
        }
    }
    // The firmware repository's snapshot and timestamp keys.
    let firmware = crate::firmware::FirmwarePaths::new(dir);
    wanted.push((firmware.keys(), 0o700));
    wanted.push((firmware.snapshot_key(), 0o600));
    wanted.push((firmware.timestamp_key(), 0o600));
    for (path, mode) in wanted {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // not made yet
        };
        let had = meta.permissions().mode() & 0o777;
        if had != mode {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("cannot set the permissions of {}", path.display()))?;
            warn!(path = %path.display(), was = format!("{had:o}"), now = format!("{mode:o}"), "fixed permissions");
        }
    }
    if let Some(account) = broker {
        let meta =
            std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        if meta.gid() != account.gid {
            std::os::unix::fs::chown(dir, None, Some(account.gid)).with_context(|| {
                format!("cannot give {} to group {}", dir.display(), account.name)
            })?;
        }
    }
    Ok(())
}

fn warn_if_insecure(cfg: &ControllerConfig) {
    if cfg.broker.insecure_dev {
        for _ in 0..3 {
            warn!("--insecure-dev: MQTT WITHOUT TLS or client certificates; any local program can pose as a device. Development only.");
        }
    }
}

fn http_tls(
    cfg: &ControllerConfig,
    paths: &PkiPaths,
) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    if cfg.broker.insecure_dev {
        return Ok(None);
    }
    Ok(Some(http::tls::server_config(
        &paths.api_cert(),
        &paths.api_key(),
    )?))
}

fn ingest_tls(
    cfg: &ControllerConfig,
    paths: &PkiPaths,
) -> anyhow::Result<Option<Arc<rustls::ClientConfig>>> {
    if cfg.broker.insecure_dev {
        return Ok(None);
    }
    let read =
        |p: PathBuf| std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()));
    Ok(Some(pki::tls_client_config(
        &read(paths.ca_cert())?,
        &read(paths.controller_cert())?,
        &read(paths.controller_key())?,
    )?))
}

async fn open_store(data_dir: &Path) -> anyhow::Result<(Store, Arc<Access>)> {
    let store = Store::open(&data_dir.join("fleet.db"))
        .await
        .context("cannot open the store")?;
    let access = Arc::new(Access::load(store.clone(), data_dir).await?);
    Ok((store, access))
}

async fn load_fleet(cfg: &ControllerConfig, store: &Store) -> anyhow::Result<Arc<RwLock<Fleet>>> {
    let now = unix_ms();
    let freshness_ms = u64::try_from(cfg.freshness().as_millis()).unwrap_or(u64::MAX);
    let mut fleet = Fleet::new(freshness_ms);
    for (model, version) in store.baselines().await? {
        fleet.set_baseline(model, version, now);
    }
    let devices = store.load_devices().await?;
    let loaded = devices.len();
    for (reg, status) in devices {
        fleet.upsert(reg, status, now);
    }
    for (id, desired) in store.load_desired().await? {
        fleet.set_desired(&id, desired, now);
    }
    fleet.set_freeze(store.freeze_windows().await?);
    // After the desired states: readiness compares a track with the target.
    for (id, track) in store.device_updates().await? {
        fleet.set_track(&id, track, now);
    }
    info!(devices = loaded, "fleet loaded");
    Ok(Arc::new(RwLock::new(fleet)))
}

async fn start_broker(
    cfg: &ControllerConfig,
    data_dir: &Path,
    paths: &PkiPaths,
) -> anyhow::Result<(Option<ManagedBroker>, BrokerInfo)> {
    let tls = !cfg.broker.insecure_dev;
    Ok(match cfg.broker_mode() {
        BrokerMode::Managed { port } => {
            // Every broker of the tier, managed or not, bridges to it.
            let bridges = cfg
                .broker
                .tier()?
                .brokers()
                .iter()
                .map(|b| b.name.clone())
                .collect();
            let b = ManagedBroker::start(BrokerConfig::central(
                data_dir.join("mosquitto"),
                port,
                tls.then(|| broker_tls(paths)),
                bridges,
            ))
            .await?;
            let info = BrokerInfo {
                host: cfg.broker.host.clone(),
                port: b.port(),
                tls,
            };
            (Some(b), info)
        }
        BrokerMode::External { host, port } => (None, BrokerInfo { host, port, tls }),
    })
}

/// The files of a managed broker's device listener (every managed broker
/// serves the central broker's certificate, which names this host).
fn broker_tls(paths: &PkiPaths) -> broker::BrokerTls {
    broker::BrokerTls {
        ca: paths.ca_cert(),
        cert: paths.broker_cert(),
        key: paths.broker_key(),
        crl: paths.crl(),
    }
}

/// Raise this process's soft limit of open files to its hard limit:
/// Mosquitto inherits it, and each device connection is one open file.
fn raise_open_files() {
    use rlimit::Resource;
    match Resource::NOFILE.get() {
        Ok((soft, hard)) if soft < hard => match Resource::NOFILE.set(hard, hard) {
            Ok(()) => info!(
                was = soft,
                now = hard,
                "open files limit raised to the hard limit (the managed brokers inherit it)"
            ),
            Err(e) => warn!(soft, hard, error = %e, "cannot raise the open files limit"),
        },
        Ok((soft, _)) => info!(
            limit = soft,
            "open files limit (the managed brokers inherit it)"
        ),
        Err(e) => warn!(error = %e, "cannot read the open files limit"),
    }
}

/// Start the managed provincial brokers of the tier, after the central
/// one (their bridges connect to it): each gets its directory
/// `DATA/mosquitto-{name}/`, the central broker's server certificate for
/// its listener and its bridge's client certificate
/// (`DATA/pki/bridge-{name}.*`, issued or renewed here). Returns them and
/// the tier with their ports set.
async fn start_provincial_brokers(
    cfg: &ControllerConfig,
    data_dir: &Path,
    paths: &PkiPaths,
    central: &BrokerInfo,
    policy: &pki::CertPolicy,
) -> anyhow::Result<(Vec<ManagedBroker>, Tier)> {
    let mut tier = cfg.broker.tier()?;
    let retry = cfg.broker.bridge_retry()?;
    let tls = !cfg.broker.insecure_dev;
    let central_address = match cfg.broker_mode() {
        // The managed central broker listens on loopback only.
        BrokerMode::Managed { .. } => format!("127.0.0.1:{}", central.port),
        BrokerMode::External { host, port } => format!("{host}:{port}"),
    };
    let mut started = Vec::new();
    for b in tier.brokers().to_vec() {
        if !b.managed {
            continue;
        }
        let started_one =
            start_provincial_broker(paths, policy, tls, data_dir, &b, &central_address, retry)
                .await;
        match started_one {
            Ok(m) => {
                tier.set_port(&b.name, m.port());
                started.push(m);
            }
            Err(e) => {
                // A failed bridge certificate or broker stops the ones
                // started before it (SIGTERM; the caller stops the central).
                for m in started.into_iter().rev() {
                    m.stop().await;
                }
                return Err(e.context(format!("cannot start provincial broker {}", b.name)));
            }
        }
    }
    Ok((started, tier))
}

/// One managed provincial broker: its bridge certificate (issued or
/// renewed here), then its Mosquitto.
async fn start_provincial_broker(
    paths: &PkiPaths,
    policy: &pki::CertPolicy,
    tls: bool,
    data_dir: &Path,
    b: &crate::broker::tier::TierBroker,
    central_address: &str,
    retry: crate::broker::render::BridgeRetry,
) -> anyhow::Result<ManagedBroker> {
    if tls && pki::ensure_bridge_cert(paths, &b.name, policy, unix_ms())? {
        info!(broker = %b.name, cert = %paths.bridge_cert(&b.name).display(), "issued the bridge's client certificate");
    }
    Ok(ManagedBroker::start(BrokerConfig {
        dir: data_dir.join(format!("mosquitto-{}", b.name)),
        port: (b.port != 0).then_some(b.port),
        tls: tls.then(|| broker_tls(paths)),
        bridge: Some(broker::ManagedBridge {
            name: b.name.clone(),
            provinces: b.provinces.clone(),
            address: if b.uplink.is_empty() {
                central_address.to_owned()
            } else {
                b.uplink.clone()
            },
            cert: tls.then(|| (paths.bridge_cert(&b.name), paths.bridge_key(&b.name))),
            retry,
        }),
        bridges: Vec::new(),
    })
    .await?)
}

/// How a retirement reaches the brokers: SIGHUP and a takeover of the
/// device's session for a managed broker, the operator's hook for an
/// external one; with a tier, every managed broker reloads and the session
/// is closed on the device's own broker.
fn revocation(
    cfg: &ControllerConfig,
    managed: Option<&ManagedBroker>,
    provincial: &[ManagedBroker],
    tier: &Tier,
) -> broker::Revocation {
    let kicker = |port: u16| {
        (!cfg.broker.insecure_dev).then(|| broker::Kicker {
            host: "127.0.0.1".into(),
            port,
        })
    };
    if tier.is_empty() {
        return match managed {
            Some(b) => broker::Revocation::Managed {
                reloader: b.reloader(),
                kick: kicker(b.port()),
            },
            None => broker::Revocation::External {
                hook: cfg.crl_hook(),
            },
        };
    }
    let mut by_province = std::collections::BTreeMap::new();
    for b in tier.brokers() {
        let at = if b.managed {
            broker::Where::Managed(kicker(b.port))
        } else {
            broker::Where::External
        };
        for p in &b.provinces {
            by_province.insert(*p, at.clone());
        }
    }
    broker::Revocation::Tier(Arc::new(broker::TierRevocation {
        reloaders: managed
            .into_iter()
            .chain(provincial)
            .map(ManagedBroker::reloader)
            .collect(),
        central: match managed {
            Some(b) => broker::Where::Managed(kicker(b.port())),
            None => broker::Where::External,
        },
        provincial: by_province,
        hook: cfg.crl_hook(),
    }))
}

/// Re-judge readiness for the passage of time (the freshness window).
fn start_ticker(
    cfg: &ControllerConfig,
    fleet: Arc<RwLock<Fleet>>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let period = cfg.tick();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    let changed = fleet.write().expect("fleet lock is never poisoned").tick(unix_ms());
                    if changed > 0 {
                        info!(changed, "readiness changed with time (freshness window)");
                    }
                }
                _ = stop.changed() => break,
            }
        }
    })
}

/// Mark `timed-out` the updates of devices that went to reboot (or to
/// their health check) and said nothing since (`domain::updates`).
fn start_update_sweeper(
    cfg: crate::config::SweeperConfig,
    store: Store,
    tracks: crate::store::TrackSender,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let timeout_ms = u64::try_from(cfg.reboot_timeout.as_millis()).unwrap_or(u64::MAX);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(cfg.every);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.changed() => break,
            }
            match store.time_out_updates(unix_ms(), timeout_ms).await {
                Ok(marked) if marked.is_empty() => {}
                Ok(marked) => {
                    metrics::counter!("fleet_update_results_total", "outcome" => "timed-out")
                        .increment(marked.len() as u64);
                    for (device, track) in marked {
                        let _ = tracks.send((device.clone(), track));
                        warn!(device = %device, timeout_secs = timeout_ms / 1000, "update timed out: the device went to reboot into its new image (or to check it) and has not been heard from since");
                    }
                }
                Err(e) => warn!(error = %e, "cannot check running updates for their deadline"),
            }
        }
    })
}

/// Mark `expired` the commands still waiting for their device past their
/// expiry: the agent refuses them anyway, and an operator sees at once that
/// it never ran.
fn start_command_sweeper(
    every: std::time::Duration,
    store: Store,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.changed() => break,
            }
            match store.expire_commands(unix_ms()).await {
                Ok(0) => {}
                Ok(n) => {
                    metrics::counter!("fleet_command_results_total", "state" => "expired")
                        .increment(n);
                    info!(
                        commands = n,
                        "commands expired before their device answered"
                    );
                }
                Err(e) => warn!(error = %e, "cannot check waiting commands for their expiry"),
            }
        }
    })
}

/// Re-sign the repository's timestamp (and snapshot) metadata before they
/// expire: checked every `every` (a minute by default); signed anew when
/// less than half their lifetime is left. Nothing to do until the
/// repository is set up.
fn start_firmware_refresh(
    firmware: crate::firmware::Firmware,
    every: std::time::Duration,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.changed() => break,
            }
            match firmware
                .blocking(|fw| fw.refresh(std::time::SystemTime::now()))
                .await
            {
                Ok(None) => {}
                Ok(Some(p)) => {
                    metrics::counter!("fleet_firmware_timestamp_signed_total").increment(1);
                    info!(
                        timestamp_version = p.timestamp_version,
                        snapshot_version = p.snapshot_version,
                        "firmware repository: timestamp metadata signed anew before it expires"
                    );
                }
                Err(e) => {
                    warn!(error = %e, "firmware repository: cannot re-sign the timestamp metadata; devices refuse it once it expires")
                }
            }
        }
    })
}

/// Keep the certificate expiry gauges current and renew the broker's, the
/// API's and the controller's certificates past their renewal point: new
/// files, then the managed broker reloaded (SIGHUP: Mosquitto 2.0 rereads
/// its certificate and key for new connections; open ones stay). Ingest
/// rereads the controller's identity before each reconnection, and the API
/// presents its renewed certificate from the next handshake.
fn start_cert_watch(
    paths: PkiPaths,
    policy: pki::CertPolicy,
    store: Store,
    central: Option<crate::broker::BrokerReloader>,
    provincial: Vec<crate::broker::BrokerReloader>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(policy.check_every);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.changed() => break,
            }
            let now = unix_ms();
            match pki::renew_service_certs(&paths, &policy, now) {
                Ok(renewed) if renewed.is_empty() => {}
                Ok(renewed) => {
                    info!(?renewed, "renewed certificates past their renewal point");
                    if renewed.contains(&pki::CertKind::Broker) {
                        // Every managed broker serves the broker certificate.
                        for b in central.iter().chain(&provincial) {
                            if let Err(e) = b.reload().await {
                                warn!(broker = b.name(), error = %e, "cannot reload the broker for its renewed certificate");
                            }
                        }
                    }
                }
                Err(e) => warn!(error = %e, "cannot renew the service certificates"),
            }
            // The bridges' certificates, renewed alike; Mosquitto 2.0.11
            // rereads a bridge's only when it restarts.
            for b in &provincial {
                if !paths.bridge_cert(b.name()).is_file() {
                    continue; // --insecure-dev
                }
                match pki::ensure_bridge_cert(&paths, b.name(), &policy, now) {
                    Ok(false) => {}
                    Ok(true) => {
                        info!(
                            broker = b.name(),
                            "renewed the bridge's certificate; restarting its broker"
                        );
                        if let Err(e) = b.restart().await {
                            warn!(broker = b.name(), error = %e, "cannot restart the broker for its renewed bridge certificate");
                        }
                    }
                    Err(e) => {
                        warn!(broker = b.name(), error = %e, "cannot renew the bridge's certificate")
                    }
                }
            }
            record_expiries(&paths, &store, now).await;
        }
    })
}

/// `fleet_cert_expiry_seconds{kind}`: seconds until the nearest expiry of
/// each kind (device: the nearest among devices' current, unrevoked
/// certificates; absent while there is none).
pub async fn record_expiries(paths: &PkiPaths, store: &Store, now_ms: u64) {
    let secs = |not_after_ms: u64| (not_after_ms as f64 - now_ms as f64) / 1000.0;
    for kind in [
        pki::CertKind::Ca,
        pki::CertKind::Broker,
        pki::CertKind::Api,
        pki::CertKind::Controller,
    ] {
        if let Some(Ok((_, to, _))) = paths.cert_of(kind).map(|p| pki::validity(&p)) {
            metrics::gauge!("fleet_cert_expiry_seconds", "kind" => kind.as_str()).set(secs(to));
        }
    }
    if let Ok(nearest) = store.nearest_device_expiries(1).await {
        if let Some((_, _, to)) = nearest.first() {
            metrics::gauge!("fleet_cert_expiry_seconds", "kind" => "device").set(secs(*to));
        }
    }
}

/// What `fleet-controller init` made.
pub struct Initialised {
    pub admin_token: String,
    pub token_file: PathBuf,
}

/// Create the CA and the first admin token in a new data directory; the
/// token is also written to `DIR/admin.token` (mode 0600).
pub async fn init(data_dir: &Path, opts: &pki::InitOptions) -> anyhow::Result<Initialised> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    pki::init_with(data_dir, opts)?;
    let (store, access) = open_store(data_dir).await?;
    secure_data_dir(data_dir, None)?;
    let by = access::Caller::system("fleet-controller init");
    access
        .record(
            &by,
            "init",
            "fleet",
            serde_json::json!({
                "ca": if opts.ca.is_some() { "imported" } else { "created" },
                "server_names": opts.server_names,
            }),
        )
        .await?;
    let (_, token) = access
        .create_token(&by, "first admin", auth::Role::Admin, vec![])
        .await?;
    let token_file = data_dir.join("admin.token");
    pki::write_file(&token_file, format!("{token}\n").as_bytes(), true)?;
    store.close().await;
    Ok(Initialised {
        admin_token: token,
        token_file,
    })
}

/// `fleet-controller firmware-init`: set the firmware repository up under
/// `DATA/firmware/` from the release team's root.json and targets.json and
/// the controller's snapshot and timestamp keys, recorded in the audit log.
pub async fn firmware_init(
    data_dir: &Path,
    files: &crate::firmware::InitFiles,
    who: &str,
) -> anyhow::Result<crate::firmware::Initialised> {
    PkiPaths::new(data_dir).require(data_dir)?;
    let (store, access) = open_store(data_dir).await?;
    let by = access::Caller::system(who);
    access
        .record(
            &by,
            "firmware.init",
            "repository",
            serde_json::json!({
                "root": files.root, "targets": files.targets,
            }),
        )
        .await?;
    let done = {
        let data_dir = data_dir.to_owned();
        let files = files.clone();
        tokio::task::spawn_blocking(move || {
            crate::firmware::init(&data_dir, &files, std::time::SystemTime::now())
        })
        .await
        .context("the set-up task failed")?
    };
    if let Err(e) = &done {
        access
            .failed(&by, "firmware.init", "repository", &e.to_string())
            .await;
    }
    store.close().await;
    Ok(done?)
}

/// `fleet-controller issue-cert`: a certificate from the fleet CA, written
/// to `out` as `IDENTITY.crt`, `IDENTITY.key` (0600) and `ca.crt`,
/// recorded in the audit log first: a client certificate for `identity` (a
/// bridge or the observer), or with `server_hosts` the server certificate
/// of a broker set up elsewhere, valid for those hosts (and localhost).
/// Returns the files written.
pub async fn issue_cert(
    data_dir: &Path,
    identity: &str,
    server_hosts: Option<&[String]>,
    out: &Path,
    days: u32,
    who: &str,
) -> anyhow::Result<Vec<PathBuf>> {
    let paths = PkiPaths::new(data_dir);
    paths.require(data_dir)?;
    let (store, access) = open_store(data_dir).await?;
    let by = access::Caller::system(who);
    access
        .record(
            &by,
            "pki.issue",
            identity,
            serde_json::json!({ "out": out, "days": days, "hosts": server_hosts }),
        )
        .await?;
    let issued = (|| -> anyhow::Result<Vec<PathBuf>> {
        let valid_for = time::Duration::days(i64::from(days.max(1)));
        let (cert, key) = match server_hosts {
            Some(hosts) => crate::pki::issue_server(&paths, identity, hosts, valid_for)?,
            None => crate::pki::issue_client(&paths, identity, valid_for)?,
        };
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let files = vec![
            out.join(format!("{identity}.crt")),
            out.join(format!("{identity}.key")),
            out.join("ca.crt"),
        ];
        crate::pki::write_file(&files[0], cert.as_bytes(), false)?;
        crate::pki::write_file(&files[1], key.as_bytes(), true)?;
        std::fs::copy(paths.ca_cert(), &files[2])
            .with_context(|| format!("cannot write {}", files[2].display()))?;
        Ok(files)
    })();
    if let Err(e) = &issued {
        access
            .failed(&by, "pki.issue", identity, &e.to_string())
            .await;
    }
    store.close().await;
    issued
}

/// What `fleet-controller backup` wrote.
#[derive(Debug, serde::Serialize)]
pub struct BackupDone {
    /// The copy of the database.
    pub db: PathBuf,
    /// The audit head of that copy (its last entry).
    pub head: PathBuf,
    /// Entries in the copy's audit chain.
    pub audit_entries: u64,
    pub bytes: u64,
    /// Older backups deleted (past `keep`).
    pub pruned: Vec<PathBuf>,
}

/// `fleet-controller backup`: a consistent copy of `DATA/fleet.db` (taken
/// while the controller runs) and the audit head that goes with it, as
/// `OUT/fleet-STAMP.db` and `OUT/fleet-STAMP.head`; only the newest `keep`
/// pairs are kept. The copy's chain is checked whole, and the live head
/// must be one of its entries (the copy holds everything the head vouched
/// for when the backup began); its head file is its own last entry, so a
/// restore (both files back as `fleet.db` and `audit.head`) verifies.
pub async fn backup(data_dir: &Path, out: &Path, keep: usize) -> anyhow::Result<BackupDone> {
    use crate::domain::audit::{self, Head};
    PkiPaths::new(data_dir).require(data_dir)?;
    let db = data_dir.join("fleet.db");
    anyhow::ensure!(db.is_file(), "no database at {}", db.display());
    let live_head = access::read_head(&data_dir.join("audit.head"))?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        // Token hashes, device records, the audit log: the owner's only.
        std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", out.display()))?;
    }
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .context("cannot format the time")?;
    let partial = out.join(format!("fleet-{stamp}.db.partial"));
    let _ = std::fs::remove_file(&partial);
    let source = Store::open(&db).await.context("cannot open the store")?;
    let copied = source.copy_into(&partial).await;
    source.close().await;
    copied.with_context(|| format!("cannot copy the database to {}", partial.display()))?;
    let snapshot = Store::open(&partial)
        .await
        .context("cannot open the copy")?;
    let chain = snapshot.audit_chain().await;
    snapshot.close().await;
    let chain = chain.context("cannot read the copy's audit log")?;
    for suffix in ["-wal", "-shm"] {
        let mut p = partial.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    let last = chain.last().map(|e| Head {
        seq: e.seq,
        hash: e.hash.clone(),
    });
    let checked = audit::verify_chain(&chain)
        .map_err(|b| {
            anyhow::anyhow!(
                "the copy's audit chain is broken at entry #{}: {}",
                b.seq,
                b.reason
            )
        })
        .and_then(|_| {
            audit::check_head(&chain, live_head.as_ref()).map_err(|b| {
                anyhow::anyhow!(
                    "the audit head is not in the database's chain ({} entries): {}; look into it (fleet-controller audit reseal) before backing up",
                    chain.len(),
                    b.reason
                )
            })
        });
    if let Err(e) = checked {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    let db_out = out.join(format!("fleet-{stamp}.db"));
    let head_out = out.join(format!("fleet-{stamp}.head"));
    std::fs::rename(&partial, &db_out)
        .with_context(|| format!("cannot write {}", db_out.display()))?;
    if let Some(h) = &last {
        access::write_head(&head_out, h)?;
    }
    let bytes = std::fs::metadata(&db_out).map(|m| m.len()).unwrap_or(0);
    // Keep the newest `keep` (the names sort by time).
    let mut dbs: Vec<PathBuf> = std::fs::read_dir(out)
        .with_context(|| format!("cannot list {}", out.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("fleet-") && n.ends_with(".db"))
        })
        .collect();
    dbs.sort();
    let mut pruned = Vec::new();
    let excess = dbs.len().saturating_sub(keep.max(1));
    for old in dbs.into_iter().take(excess) {
        std::fs::remove_file(&old).with_context(|| format!("cannot delete {}", old.display()))?;
        let _ = std::fs::remove_file(old.with_extension("head"));
        pruned.push(old);
    }
    Ok(BackupDone {
        db: db_out,
        head: head_out,
        audit_entries: chain.len() as u64,
        bytes,
        pruned,
    })
}

/// `fleet-controller audit reseal`: write the audit head anew from the
/// chain's last entry after the head file was lost or damaged, recorded in
/// the log itself. Run it with the controller stopped.
pub async fn reseal_audit(data_dir: &Path, who: &str, why: &str) -> anyhow::Result<u64> {
    PkiPaths::new(data_dir).require(data_dir)?;
    let (store, access) = open_store(data_dir).await?;
    let by = access::Caller::system(who);
    let entry = access.reseal(&by, why).await;
    store.close().await;
    Ok(entry?.seq)
}
