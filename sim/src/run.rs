//! Running a simulated fleet against a real controller: register the
//! registry and the devices through the HTTP API, learn the broker address,
//! then run one real agent (MQTT client) per device.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fleet_agent::health::{HealthPolicy, Thresholds};
use fleet_agent::runtime::{LinkConfig, RuntimeConfig, RuntimeOptions, SeqStore, Stopped};
use fleet_api::client::Client;
use fleet_api::types::EnrolBatchQuery;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::{watch, Notify};
use tracing::info;

use crate::hardware::SimHardware;
use crate::plan::{Condition, Plan};

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub controller: String,
    pub health_every: Duration,
    pub keep_alive: Duration,
    pub checks_every: Duration,
    /// New connections per second while the fleet comes up.
    pub connect_rate: u32,
    pub backoff_max: Duration,
    pub show_progress: bool,
    /// Devices that update for real ([`crate::update`]); `None`: no `[update]`.
    pub update: Option<crate::update::SimUpdate>,
}

/// The controller as the simulator talks to it: the operator's typed API
/// client for everything an operator does (registry, shipments, baselines,
/// the broker address, metrics), and the same client without a token that
/// the simulated devices enrol with through the agent's own code
/// (`fleet_agent::enrol`), as a real device does.
pub struct Api {
    pub client: Client,
    /// The same controller without an operator token, as a device sees it.
    device_client: Client,
    /// The fleet CA the simulated devices "ship with" (checked against
    /// the one enrolment answers with).
    ca_pem: Option<std::sync::Arc<Vec<u8>>>,
}

impl Api {
    /// `ca`: the fleet CA, to check the controller's HTTPS certificate.
    pub fn new(base: &str, token: &str, ca: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let client = Client::with_ca_file(base, ca)?
            .with_token(Some(token.to_owned()))
            .with_timeout(Duration::from_secs(120));
        Ok(Self {
            client,
            device_client: Client::with_ca_file(base, ca)?.with_timeout(Duration::from_secs(120)),
            ca_pem: ca
                .map(|p| {
                    std::fs::read(p)
                        .map(std::sync::Arc::new)
                        .with_context(|| format!("cannot read {}", p.display()))
                })
                .transpose()?,
        })
    }
}

fn bar(show: bool, len: usize, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({elapsed})")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

/// Every simulated device's identity from enrolment (kept in the
/// `--state-dir` so a fleet can be run again against the same controller).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Identities {
    pub ca: String,
    /// device id -> (key PEM, certificate PEM)
    pub devices: std::collections::HashMap<String, (String, String)>,
    /// device id -> the broker its enrolment named (its province's). Files
    /// written before the provincial tier have none: those devices use the
    /// broker `GET /api/v1/broker` names.
    #[serde(default)]
    pub brokers: std::collections::HashMap<String, DeviceBroker>,
}

/// Where one device connects, as its enrolment answered (host and port;
/// TLS or not is the deployment's, from `GET /api/v1/broker`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct DeviceBroker {
    pub host: String,
    pub port: u16,
}

impl Identities {
    /// The broker `device` connects to: the one its enrolment named, else
    /// `central` (identity files from before the tier).
    pub fn broker_of(&self, device: &str, central: &BrokerAddress) -> BrokerAddress {
        match self.brokers.get(device) {
            Some(b) => BrokerAddress {
                host: b.host.clone(),
                port: b.port,
                tls: central.tls,
            },
            None => central.clone(),
        }
    }

    /// How many of `devices` connect to each broker (`host:port`).
    pub fn per_broker<'a>(
        &self,
        devices: impl IntoIterator<Item = &'a str>,
        central: &BrokerAddress,
    ) -> std::collections::BTreeMap<String, usize> {
        let mut out = std::collections::BTreeMap::new();
        for d in devices {
            let b = self.broker_of(d, central);
            *out.entry(format!("{}:{}", b.host, b.port)).or_default() += 1;
        }
        out
    }

    /// Read `DIR/identities.json` (an empty set when there is none).
    pub fn load(dir: &std::path::Path) -> anyhow::Result<Self> {
        let f = dir.join(IDENTITIES_FILE);
        if !f.exists() {
            return Ok(Self::default());
        }
        serde_json::from_slice(&std::fs::read(&f)?)
            .with_context(|| format!("cannot read {}", f.display()))
    }

    /// Write `DIR/identities.json` (0600: it holds private keys).
    pub fn save(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let f = dir.join(IDENTITIES_FILE);
        fleet_agent::enrol::write_private(&f, &serde_json::to_vec(self)?)
            .with_context(|| format!("cannot write {}", f.display()))
    }
}

const IDENTITIES_FILE: &str = "identities.json";

/// Import the plan's registry, then enrol every device that has no identity
/// yet through the real warehouse flow: a shipment batch (tokens), then one
/// key, certificate request and certificate per device.
pub async fn enrol_fleet(
    api: &Api,
    plan: &Plan,
    state_dir: Option<&std::path::Path>,
    show_progress: bool,
) -> anyhow::Result<Identities> {
    let v = api
        .client
        .import_registry(plan.registry_csv())
        .await
        .context("importing the simulated registry")?;
    info!(counties = %v.counties, stations = %v.stations, "registry imported");
    let mut ids = match state_dir {
        Some(d) => Identities::load(d)?,
        None => Identities::default(),
    };
    let todo: Vec<&crate::plan::SimDevice> = plan
        .devices
        .iter()
        .filter(|d| !ids.devices.contains_key(d.id.as_str()))
        .collect();
    let pb = bar(show_progress, todo.len(), "enrolling");
    let http = api.device_client.clone();
    let ca_pem = api.ca_pem.clone();
    for chunk in todo.chunks(500) {
        let mut csv = String::from("serial,model,province,county,station\n");
        for d in chunk {
            csv.push_str(&format!(
                "{},{},{},{},{}\n",
                d.id, d.model, d.province, d.county, d.station
            ));
        }
        let query = EnrolBatchQuery {
            expires_hours: Some(1),
        };
        let batch = api
            .client
            .enrol_batch(csv, &query)
            .await
            .context("making a shipment of the simulated devices (if they were enrolled by an earlier run, pass the same --state-dir, or start from a fresh controller data directory)")?;
        let tokens: Vec<(fleet_protocol::DeviceId, String)> = batch
            .devices
            .into_iter()
            .map(|d| (d.device, d.token))
            .collect();
        let mut set = tokio::task::JoinSet::new();
        let mut pending = tokens.into_iter();
        loop {
            while set.len() < 32 {
                let Some((device, token)) = pending.next() else {
                    break;
                };
                let http = http.clone();
                let ca_pem = ca_pem.clone();
                set.spawn(async move {
                    let r = fleet_agent::enrol::enrol(
                        &http,
                        &device,
                        &token,
                        ca_pem.as_deref().map(|v| v.as_slice()),
                    )
                    .await;
                    (device, r)
                });
            }
            let Some(done) = set.join_next().await else {
                break;
            };
            let (device, identity) = done?;
            let identity = identity.with_context(|| format!("enrolling {device}"))?;
            ids.ca = identity.ca_pem;
            ids.brokers.insert(
                device.to_string(),
                DeviceBroker {
                    host: identity.broker.host,
                    port: identity.broker.port,
                },
            );
            ids.devices
                .insert(device.to_string(), (identity.key_pem, identity.cert_pem));
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    if let Some(dir) = state_dir {
        if !todo.is_empty() || !dir.join(IDENTITIES_FILE).exists() {
            ids.save(dir)?;
        }
    }
    info!(
        devices = plan.devices.len(),
        enrolled_now = todo.len(),
        "simulated devices enrolled"
    );
    Ok(ids)
}

/// The fleet's agents, running until [`Fleet::stop`].
pub struct Fleet {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// When each device sent its state (every connection does).
    pub connections: crate::reconnects::Recorder,
    /// Each updating device's role, by device id.
    pub roles: std::collections::BTreeMap<String, crate::update::Role>,
    /// The devices' update directories, removed with the fleet (when the
    /// simulator made them).
    _update_dirs: Option<tempfile::TempDir>,
}

impl Fleet {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The fleet-wide update set-up: the first trusted root fetched once from
/// the controller's TUF repository (`1.root.json`, over HTTPS with the
/// fleet CA). A real device ships the release team's root in its image and
/// never takes it from the network; here the simulator plays the factory.
///
/// `None` when the controller has no firmware repository yet (HTTP 409,
/// `fleet-controller firmware-init` not run): the devices then run
/// without updates, as a device without `[update]` does, and a warning
/// says so.
async fn fleet_update(
    controller: &str,
    ca_pem: &str,
    sim: crate::update::SimUpdate,
) -> anyhow::Result<Option<crate::update::FleetUpdate>> {
    let ca = (!ca_pem.is_empty()).then(|| ca_pem.as_bytes().to_vec());
    let client = Client::new(controller, ca.as_deref())?.with_timeout(Duration::from_secs(60));
    let root = match client.tuf_metadata("1.root.json").await {
        Ok(root) => root,
        Err(e) if e.status() == Some(409) => {
            tracing::warn!(error = %e, "the controller has no firmware repository (fleet-controller firmware-init): the simulated devices run without updates");
            return Ok(None);
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(
                "fetching the trusted root (1.root.json) from the controller's firmware repository",
            ))
        }
    };
    Ok(Some(crate::update::FleetUpdate {
        sim,
        repo_url: format!("{}/api/v1/tuf", controller.trim_end_matches('/')),
        root: Arc::new(root),
        ca_pem: ca,
    }))
}

/// Everything a test or a bench needs in one call: enrol the plan's
/// devices (registry, shipment, certificates), ask where the broker is,
/// fetch the trusted root when `cfg.update` is set, and start the fleet.
/// Returns once each device reported (or after `ready_timeout`), with how
/// many did.
pub async fn launch(
    api: &Api,
    plan: &Plan,
    cfg: &RunConfig,
    ready_timeout: Duration,
) -> anyhow::Result<(Fleet, usize)> {
    let identities = enrol_fleet(api, plan, None, cfg.show_progress).await?;
    let broker = broker_address(api).await?;
    start(plan, cfg, &broker, &identities, ready_timeout).await
}

/// Start every planned device's agent, each against the broker its
/// enrolment named (`central`, `GET /api/v1/broker`, for identities that
/// name none). Returns once each has sent its first state (or after
/// `ready_timeout`), with the number that did.
pub async fn start(
    plan: &Plan,
    cfg: &RunConfig,
    central: &BrokerAddress,
    identities: &Identities,
    ready_timeout: Duration,
) -> anyhow::Result<(Fleet, usize)> {
    start_counting(plan, cfg, central, identities, ready_timeout, None).await
}

/// How far [`start_counting`] is, for someone else to read while it runs
/// (a shard tells its parent).
#[derive(Debug, Default)]
pub struct StartProgress {
    /// Agents started.
    pub started: std::sync::atomic::AtomicUsize,
    /// Agents that sent their first state (offline ones count when started).
    pub reported: std::sync::atomic::AtomicUsize,
}

/// [`start`], counting its progress into `progress`.
pub async fn start_counting(
    plan: &Plan,
    cfg: &RunConfig,
    central: &BrokerAddress,
    identities: &Identities,
    ready_timeout: Duration,
    progress: Option<Arc<StartProgress>>,
) -> anyhow::Result<(Fleet, usize)> {
    use std::sync::atomic::Ordering::Relaxed;
    let count = |f: fn(&StartProgress) -> &std::sync::atomic::AtomicUsize| {
        if let Some(p) = &progress {
            f(p).fetch_add(1, Relaxed);
        }
    };
    let updates = match &cfg.update {
        Some(sim) => match fleet_update(&cfg.controller, &identities.ca, sim.clone()).await? {
            None => None,
            Some(fleet) => {
                let (temp, base) = match &sim.dir {
                    Some(d) => {
                        std::fs::create_dir_all(d)?;
                        (None, d.clone())
                    }
                    None => {
                        let t = tempfile::Builder::new().prefix("fleet-sim-").tempdir()?;
                        let base = t.path().to_owned();
                        (Some(t), base)
                    }
                };
                let eligible: Vec<bool> = plan
                    .devices
                    .iter()
                    .map(|d| d.condition != Condition::Offline)
                    .collect();
                let roles = crate::update::roles(
                    &eligible,
                    sim.fail_share,
                    sim.never_return_share,
                    sim.seed,
                );
                Some((fleet, base, temp, roles))
            }
        },
        None => None,
    };
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(plan.devices.len());
    let mut reported = Vec::with_capacity(plan.devices.len());
    let mut connections_seen = Vec::with_capacity(plan.devices.len());
    let pb = bar(cfg.show_progress, plan.devices.len(), "connecting");
    let gap = Duration::from_secs(1) / cfg.connect_rate.max(1);
    for (i, d) in plan.devices.iter().enumerate() {
        let notify = Arc::new(Notify::new());
        let acked = Arc::new(Notify::new());
        let connected = Arc::new(Notify::new());
        let broker = identities.broker_of(d.id.as_str(), central);
        let tls = if broker.tls {
            let (key, cert) = identities
                .devices
                .get(d.id.as_str())
                .with_context(|| format!("{} has no identity", d.id))?;
            Some(fleet_agent::tls::client_config_pem(
                identities.ca.as_bytes(),
                cert.as_bytes(),
                key.as_bytes(),
            )?)
        } else {
            None
        };
        let rt = RuntimeConfig {
            device: d.id.clone(),
            model: d.model.clone(),
            link: LinkConfig {
                host: broker.host,
                port: broker.port,
                tls,
                keep_alive: cfg.keep_alive,
                backoff_base: Duration::from_millis(500),
                backoff_max: cfg.backoff_max,
            },
            health_sample: cfg.health_every,
            health: HealthPolicy {
                // Samples come on the same period: a small margin keeps it
                // one report per sample despite timer jitter.
                report_every: cfg.health_every.mul_f64(0.9),
                thresholds: Thresholds::default(),
            },
            checks_interval: cfg.checks_every,
            seq: SeqStore::Memory(0),
            state_sent: Some(Arc::clone(&notify)),
            state_acked: Some(Arc::clone(&acked)),
            connected: Some(Arc::clone(&connected)),
            update_dir: None,
            // In-memory identities: the simulator does not renew.
            renewal: None,
        };
        let mut device_update = match &updates {
            Some((fleet, base, _, roles)) => Some(
                crate::update::DeviceUpdate::new(
                    fleet,
                    &base.join(d.id.as_str()),
                    &d.firmware,
                    roles[i],
                )
                .with_context(|| format!("making {}'s update directory", d.id))?,
            ),
            None => None,
        };
        let (firmware, failing, seed) = (
            d.firmware.clone(),
            d.condition == Condition::FailingCheck,
            i as u64,
        );
        let offline = d.condition == Condition::Offline;
        let stop_rx = stop_rx.clone();
        let first_acked = Arc::clone(&acked);
        tasks.push(tokio::spawn(async move {
            let mut first = true;
            loop {
                // A new image's trial boot fails its checks on devices planned so.
                let trial_fails = device_update
                    .as_mut()
                    .is_some_and(|u| u.checks_fail_this_boot());
                let hw = SimHardware::new(firmware.clone(), failing || trial_fails, seed);
                let opts = RuntimeOptions {
                    update: device_update.as_ref().map(|u| u.config.clone()),
                    ..RuntimeOptions::default()
                };
                let mut stop_run = stop_rx.clone();
                let first_acked = Arc::clone(&first_acked);
                let power_off = offline && first;
                let shutdown = async move {
                    if power_off {
                        // Report once, then power off (the agent says goodbye),
                        // once the broker acknowledged the state: it is then
                        // retained and reaches the controller. Waiting a fixed
                        // time after it was queued lost 860 of 4,000 at
                        // 100,000 devices, whose connection took longer.
                        first_acked.notified().await;
                    } else {
                        let _ = stop_run.wait_for(|s| *s).await;
                    }
                };
                first = false;
                let stopped = fleet_agent::runtime::run_with(rt.clone(), opts, hw, shutdown).await;
                let mut stop_rx = stop_rx.clone();
                match (stopped, &device_update) {
                    (Ok(Stopped::Reboot), Some(u)) => {
                        if u.role == crate::update::Role::NeverReturns {
                            tracing::info!(device = %rt.device, "rebooting, and never coming back (--never-return-share)");
                            let _ = stop_rx.wait_for(|s| *s).await;
                            return;
                        }
                        tokio::select! {
                            () = tokio::time::sleep(u.reboot) => {}
                            _ = stop_rx.wait_for(|s| *s) => return,
                        }
                    }
                    (Ok(_), _) => return,
                    (Err(e), _) => {
                        tracing::error!(error = %e, "simulated agent failed");
                        return;
                    }
                }
            }
        }));
        reported.push(notify);
        connections_seen.push(connected);
        pb.inc(1);
        count(|p| &p.started);
        tokio::time::sleep(gap).await;
    }
    pb.finish_and_clear();
    // Offline devices consumed their permit; count the others.
    let pb = bar(cfg.show_progress, plan.devices.len(), "reporting");
    let mut ok = 0;
    let deadline = tokio::time::Instant::now() + ready_timeout;
    for (d, n) in plan.devices.iter().zip(&reported) {
        if d.condition == Condition::Offline {
            ok += 1;
            count(|p| &p.reported);
        } else if tokio::time::timeout_at(deadline, n.notified())
            .await
            .is_ok()
        {
            ok += 1;
            count(|p| &p.reported);
            // Keep the permit semantics for later waiters.
            n.notify_one();
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    // From now on, every accepted connection is recorded with its time.
    let connections = crate::reconnects::Recorder::default();
    for (d, n) in plan.devices.iter().zip(connections_seen) {
        if d.condition == Condition::Offline {
            continue;
        }
        let (rec, id, mut stop_rx) = (connections.clone(), d.id.to_string(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            // The connection it reported on (made already, its signal kept):
            // not a reconnection.
            tokio::select! {
                () = n.notified() => {}
                _ = stop_rx.wait_for(|s| *s) => return,
            }
            loop {
                tokio::select! {
                    () = n.notified() => rec.record(&id, fleet_agent::unix_ms()),
                    _ = stop_rx.wait_for(|s| *s) => return,
                }
            }
        }));
    }
    let (roles, update_dirs) = match updates {
        Some((_, _, temp, roles)) => (
            plan.devices
                .iter()
                .zip(roles)
                .map(|(d, r)| (d.id.to_string(), r))
                .collect(),
            temp,
        ),
        None => (Default::default(), None),
    };
    Ok((
        Fleet {
            stop,
            tasks,
            connections,
            roles,
            _update_dirs: update_dirs,
        },
        ok,
    ))
}

/// Where the simulated devices reach the broker.
#[derive(Debug, Clone)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// Ask the controller where the broker is.
pub async fn broker_address(api: &Api) -> anyhow::Result<BrokerAddress> {
    let b = api
        .client
        .broker()
        .await
        .context("asking the controller where the broker is")?;
    Ok(BrokerAddress {
        host: b.host,
        port: b.port,
        tls: b.tls,
    })
}
