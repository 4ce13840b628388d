//! fleet-controller: ingest, fleet state, readiness, store, HTTP API and the
//! managed Mosquitto. `fleetctl` (the operators' CLI) lives in [`ctl`] and
//! talks to the HTTP API only.
//!
//! - [`readiness`]: the readiness model, one reason per device (pure).
//! - [`fleet`]: the in-memory fleet with incremental counts (pure).
//! - [`registry`]: counties and polling stations from the operator's CSV (pure).
//! - [`ingest`]: MQTT in: validate, apply, hand to the store writer.
//! - [`store`]: SQLite through sqlx, migrations, batched writes.
//! - [`broker`]: the managed Mosquitto (config, start, supervise, stop).
//! - [`auth`]: roles, permissions, province scope, tokens (pure).
//! - [`audit`]: the audit log's hash chain and its verification (pure).
//! - [`access`]: token cache and audit writer over the store.
//! - [`enrol`]: shipment CSV and enrolment-token checks (pure).
//! - [`pki`]: the fleet CA and the broker's and controller's certificates.
//! - [`sheet`]: the printable enrolment sheet, HTML and PDF with QR codes.
//! - [`api`]: axum router under `/api/v1`, `/healthz`, `/metrics`.
//! - [`ctl`]: fleetctl's client and output formats.

pub mod access;
pub mod api;
pub mod audit;
pub mod auth;
pub mod broker;
pub mod ctl;
pub mod enrol;
pub mod fleet;
pub mod https;
pub mod ingest;
pub mod pki;
pub mod readiness;
pub mod registry;
pub mod sheet;
pub mod store;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::api::{AppState, BrokerInfo};
use crate::broker::{BrokerConfig, ManagedBroker};
use crate::fleet::Fleet;
use crate::ingest::IngestConfig;
use crate::store::{Store, WriterConfig};

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

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

/// Which broker the controller uses.
#[derive(Debug, Clone)]
pub enum BrokerMode {
    /// Start and supervise Mosquitto; `None` picks the port.
    Managed { port: Option<u16> },
    /// A broker set up elsewhere (Ansible), `host:port`.
    External { host: String, port: u16 },
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub broker: BrokerMode,
    /// A device not heard from for this long is `offline`.
    pub freshness: Duration,
    /// How often readiness is re-judged for the passage of time.
    pub tick: Duration,
    pub client_id: String,
    /// Plaintext MQTT (development only; logged loudly).
    pub insecure_dev: bool,
}

impl ServeConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            broker: BrokerMode::Managed { port: None },
            freshness: Duration::from_secs(900),
            tick: Duration::from_secs(5),
            client_id: pki::CONTROLLER_IDENTITY.into(),
            insecure_dev: false,
        }
    }
}

/// Run the controller on `listener` until `shutdown` completes: broker,
/// store, ingest, readiness ticks and the HTTP API. On shutdown everything
/// pending is written before it returns.
pub async fn run(
    cfg: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context;
    pki::PkiPaths::new(&cfg.data_dir).require(&cfg.data_dir)?;
    let db_path = cfg.data_dir.join("fleet.db");
    let store = Store::open(&db_path)
        .await
        .context("cannot open the store")?;
    let access = Arc::new(access::Access::load(store.clone(), &cfg.data_dir).await?);

    let now = unix_ms();
    let freshness_ms = u64::try_from(cfg.freshness.as_millis()).unwrap_or(u64::MAX);
    let mut fleet = Fleet::new(freshness_ms);
    for (model, version) in store.baselines().await? {
        fleet.set_baseline(model, version, now);
    }
    let devices = store.load_devices().await?;
    let loaded = devices.len();
    for (reg, status) in devices {
        fleet.upsert(reg, status, now);
    }
    let fleet = Arc::new(RwLock::new(fleet));
    info!(devices = loaded, db = %db_path.display(), "fleet loaded");

    let paths = pki::PkiPaths::new(&cfg.data_dir);
    if cfg.insecure_dev {
        for _ in 0..3 {
            tracing::warn!("--insecure-dev: MQTT WITHOUT TLS or client certificates; any local program can pose as a device. Development only.");
        }
    }
    let tls = (!cfg.insecure_dev).then(|| broker::BrokerTls {
        ca: paths.ca_cert(),
        cert: paths.broker_cert(),
        key: paths.broker_key(),
        crl: paths.crl(),
    });
    let ingest_tls = if cfg.insecure_dev {
        None
    } else {
        let read = |p: std::path::PathBuf| {
            std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))
        };
        Some(tls_client_config(
            &read(paths.ca_cert())?,
            &read(paths.controller_cert())?,
            &read(paths.controller_key())?,
        )?)
    };
    let (managed, broker) = match &cfg.broker {
        BrokerMode::Managed { port } => {
            let b = ManagedBroker::start(BrokerConfig {
                dir: cfg.data_dir.join("mosquitto"),
                port: *port,
                tls,
            })
            .await?;
            let info = BrokerInfo {
                host: "127.0.0.1".into(),
                port: b.port(),
                tls: !cfg.insecure_dev,
            };
            (Some(b), info)
        }
        BrokerMode::External { host, port } => (
            None,
            BrokerInfo {
                host: host.clone(),
                port: *port,
                tls: !cfg.insecure_dev,
            },
        ),
    };
    let restarter = managed.as_ref().map(ManagedBroker::restarter);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (write_tx, write_rx) = mpsc::channel(10_000);
    let writer = store::spawn_writer(store.clone(), write_rx, WriterConfig::default());
    let ingest = tokio::spawn(ingest::run(
        IngestConfig {
            host: broker.host.clone(),
            port: broker.port,
            client_id: cfg.client_id.clone(),
            keep_alive: Duration::from_secs(30),
            tls: ingest_tls,
        },
        Arc::clone(&fleet),
        write_tx,
        stop_rx.clone(),
    ));
    let ticker = {
        let fleet = Arc::clone(&fleet);
        let mut stop = stop_rx.clone();
        let period = cfg.tick;
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
    };

    let state = AppState {
        fleet: Arc::clone(&fleet),
        store: store.clone(),
        broker: broker.clone(),
        metrics: metrics_handle(),
        access,
        data_dir: cfg.data_dir.clone(),
        broker_restarter: restarter,
        lifecycle_lock: Arc::default(),
    };
    let addr = listener.local_addr()?;
    info!(
        "fleet-controller ready: api {}://{addr} broker {}://{}:{} data {}",
        if cfg.insecure_dev { "http" } else { "https" },
        if cfg.insecure_dev { "mqtt" } else { "mqtts" },
        broker.host,
        broker.port,
        cfg.data_dir.display()
    );
    let app = api::app(state).into_make_service_with_connect_info::<https::Peer>();
    let served = if cfg.insecure_dev {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    } else {
        let tls = https::server_config(&paths.broker_cert(), &paths.broker_key())?;
        axum::serve(https::TlsListener::new(listener, tls)?, app)
            .with_graceful_shutdown(shutdown)
            .await
    };

    info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = ingest.await;
    let _ = ticker.await;
    // The ingest task held the last sender: the writer drains and ends.
    let _ = writer.await;
    if let Some(b) = managed {
        b.stop().await;
    }
    store.close().await;
    served.context("HTTP server failed")?;
    info!("stopped");
    Ok(())
}

/// What `fleet-controller init` made.
pub struct Initialised {
    pub admin_token: String,
    pub token_file: PathBuf,
}

/// Create the CA and the first admin token in a new data directory; the
/// token is also written to `DIR/admin.token` (mode 0600).
pub async fn init(data_dir: &std::path::Path) -> anyhow::Result<Initialised> {
    use anyhow::Context;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    pki::init(data_dir)?;
    let store = Store::open(&data_dir.join("fleet.db")).await?;
    let access = access::Access::load(store.clone(), data_dir).await?;
    let by = access::Caller::system("fleet-controller init");
    access
        .record(&by, "init", "fleet", serde_json::json!({ "ca": "created" }))
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

/// A rustls client configuration (ring) trusting `ca` and presenting `cert`.
pub fn tls_client_config(
    ca: &[u8],
    cert: &[u8],
    key: &[u8],
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca) {
        roots.add(c?)?;
    }
    let chain = CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?,
    ))
}
