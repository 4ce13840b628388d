//! Running a simulated fleet against a real controller: register the
//! registry and the devices through the HTTP API, learn the broker address,
//! then run one real agent (MQTT client) per device.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use fleet_agent::health::{HealthPolicy, Thresholds};
use fleet_agent::runtime::{LinkConfig, RuntimeConfig, SeqStore};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
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
}

pub struct Api {
    base: String,
    http: reqwest::Client,
    token: String,
}

impl Api {
    pub fn new(base: &str, token: &str) -> anyhow::Result<Self> {
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()?,
            token: token.trim().to_owned(),
        })
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .put(&url)
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the controller at {url}"))?;
        Self::check(resp).await
    }

    async fn check(resp: reqwest::Response) -> anyhow::Result<Value> {
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("controller answered {status}: {body}");
        }
        Ok(body)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the controller at {url}"))?;
        Self::check(resp).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the controller at {url}"))?;
        Self::check(resp).await
    }

    pub async fn post_text(&self, path: &str, body: String) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .header("content-type", "text/csv")
            .body(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the controller at {url}"))?;
        Self::check(resp).await
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

/// Register the plan's registry and devices with the controller.
pub async fn register(api: &Api, plan: &Plan, show_progress: bool) -> anyhow::Result<()> {
    let v = api
        .post_text("/api/v1/registry/import", plan.registry_csv())
        .await
        .context("importing the simulated registry")?;
    info!(counties = %v["counties"], stations = %v["stations"], "registry imported");
    let pb = bar(show_progress, plan.devices.len(), "registering");
    for chunk in plan.devices.chunks(500) {
        let devices: Vec<Value> = chunk
            .iter()
            .map(|d| {
                json!({
                    "id": d.id, "model": d.model, "province": d.province,
                    "county": d.county, "station": d.station, "lifecycle": "enrolled",
                })
            })
            .collect();
        api.post_json("/api/v1/devices", &json!({ "devices": devices }))
            .await
            .context("registering simulated devices")?;
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    info!(devices = plan.devices.len(), "devices registered");
    Ok(())
}

/// The fleet's agents, running until [`Fleet::stop`].
pub struct Fleet {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Start every planned device's agent. Returns once each has sent its first
/// state (or after `ready_timeout`), with the number that did.
pub async fn start(
    plan: &Plan,
    cfg: &RunConfig,
    host: &str,
    port: u16,
    ready_timeout: Duration,
) -> anyhow::Result<(Fleet, usize)> {
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(plan.devices.len());
    let mut reported = Vec::with_capacity(plan.devices.len());
    let pb = bar(cfg.show_progress, plan.devices.len(), "connecting");
    let gap = Duration::from_secs(1) / cfg.connect_rate.max(1);
    for (i, d) in plan.devices.iter().enumerate() {
        let notify = Arc::new(Notify::new());
        let rt = RuntimeConfig {
            device: d.id.clone(),
            model: d.model.clone(),
            link: LinkConfig {
                host: host.to_owned(),
                port,
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
        };
        let hw = SimHardware::new(
            d.firmware.clone(),
            d.condition == Condition::FailingCheck,
            i as u64,
        );
        let offline = d.condition == Condition::Offline;
        let mut stop_rx = stop_rx.clone();
        let first_state = Arc::clone(&notify);
        let shutdown = async move {
            if offline {
                // Report once, then power off (the agent says goodbye).
                first_state.notified().await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            } else {
                let _ = stop_rx.wait_for(|s| *s).await;
            }
        };
        tasks.push(tokio::spawn(async move {
            if let Err(e) = fleet_agent::run(rt, hw, shutdown).await {
                tracing::error!(error = %e, "simulated agent failed");
            }
        }));
        reported.push(notify);
        pb.inc(1);
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
        } else if tokio::time::timeout_at(deadline, n.notified())
            .await
            .is_ok()
        {
            ok += 1;
            // Keep the permit semantics for later waiters.
            n.notify_one();
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok((Fleet { stop, tasks }, ok))
}

/// Ask the controller where the broker is.
pub async fn broker_address(api: &Api) -> anyhow::Result<(String, u16)> {
    let b = api.get("/api/v1/broker").await?;
    let host = b["host"]
        .as_str()
        .context("controller did not say the broker host")?
        .to_owned();
    let port = b["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .context("controller did not say the broker port")?;
    Ok((host, port))
}
