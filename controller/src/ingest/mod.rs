//! Ingest: the controller's MQTT session. Every message is validated (topic
//! shape, size limit, CBOR, payload kind and device equal to the topic's,
//! device registered) before it touches the fleet; refusals are counted by
//! reason and logged, and change nothing. Accepted reports go to the store
//! writer in batches.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fleet_protocol::{DecodeError, Desired, Envelope, Payload, Topic, TopicKind};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::clock::unix_ms;
use crate::domain::fleet::{Fleet, Observed};
use crate::store::WriteOp;

#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub keep_alive: Duration,
    /// Mutual TLS with the controller's certificate (`None`: --insecure-dev).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Whether ingest holds a live session with the broker (for /healthz).
    pub connected: Arc<std::sync::atomic::AtomicBool>,
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("bad topic: {0}")]
    Topic(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    Forged(String),
    #[error("device {0} is not registered")]
    UnknownDevice(String),
}

impl Rejection {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::Topic(_) => "topic",
            Rejection::TooLarge(_) => "too-large",
            Rejection::Malformed(_) => "malformed",
            Rejection::Forged(_) => "forged",
            Rejection::UnknownDevice(_) => "unknown-device",
        }
    }
}

/// What to do after an accepted message.
#[derive(Debug)]
pub enum Accepted {
    /// A message the controller itself sends (desired, cmd): not ingested.
    Ignored,
    Applied(Box<(Envelope, Observed)>),
}

/// Validate one message and apply it to the fleet.
pub fn process(
    fleet: &RwLock<Fleet>,
    topic: &str,
    payload: &[u8],
    now_ms: u64,
) -> Result<Accepted, Rejection> {
    let topic = Topic::parse(topic).map_err(|e| Rejection::Topic(e.to_string()))?;
    if !topic.kind.from_agent() {
        return Ok(Accepted::Ignored);
    }
    let env = Envelope::from_cbor_on(&topic, payload).map_err(|e| match e {
        DecodeError::TooLarge { .. } => Rejection::TooLarge(e.to_string()),
        DecodeError::DeviceMismatch { .. } | DecodeError::KindMismatch { .. } => {
            Rejection::Forged(e.to_string())
        }
        _ => Rejection::Malformed(e.to_string()),
    })?;
    let observed = fleet
        .write()
        .expect("fleet lock is never poisoned: no code panics while holding it")
        .observe(&env, now_ms)
        .map_err(|e| Rejection::UnknownDevice(e.0.to_string()))?;
    Ok(Accepted::Applied(Box::new((env, observed))))
}

/// Unknown device ids already logged (bounded, so a flood of made-up ids
/// cannot grow memory).
struct LoggedOnce(HashSet<String>);

impl LoggedOnce {
    fn first(&mut self, id: &str) -> bool {
        if self.0.len() >= 10_000 {
            return false;
        }
        self.0.insert(id.to_owned())
    }
}

pub async fn run(
    cfg: IngestConfig,
    fleet: Arc<RwLock<Fleet>>,
    writer: mpsc::Sender<WriteOp>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut opts = MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
    opts.set_keep_alive(cfg.keep_alive)
        .set_clean_session(false)
        .set_max_packet_size(64 * 1024, 64 * 1024)
        .set_inflight(200);
    if let Some(tls) = &cfg.tls {
        opts.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::clone(tls)),
        ));
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    let mut unknown = LoggedOnce(HashSet::new());
    let mut retry = Duration::from_millis(100);
    // After shutdown is asked for, keep handling what still arrives (rumqttc
    // acknowledges every message it reads, so dropping one would lose it)
    // until our DISCONNECT is out.
    let mut stop_by: Option<tokio::time::Instant> = None;
    loop {
        let event = match stop_by {
            None => tokio::select! {
                _ = shutdown.changed() => {
                    let _ = client.try_disconnect();
                    stop_by = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                    continue;
                }
                e = eventloop.poll() => e,
            },
            Some(deadline) => match tokio::time::timeout_at(deadline, eventloop.poll()).await {
                Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) | Ok(Err(_)) | Err(_) => {
                    break
                }
                Ok(e) => e,
            },
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                retry = Duration::from_millis(100);
                cfg.connected
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                info!(session_present = ack.session_present, broker = %format!("{}:{}", cfg.host, cfg.port), "ingest connected");
                // Subscribe on every connection (harmless if the session
                // kept the subscriptions), and leave the shared group older
                // controllers joined, which any device could dilute.
                let filters = Topic::controller_filters()
                    .into_iter()
                    .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
                if let Err(e) = client.try_subscribe_many(filters) {
                    warn!(error = %e, "cannot subscribe");
                }
                for legacy in Topic::legacy_shared_filters() {
                    if let Err(e) = client.try_unsubscribe(legacy) {
                        warn!(error = %e, "cannot leave the legacy shared subscription");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let kind = p.topic.rsplit('/').next().unwrap_or("");
                let kind = kind
                    .parse::<TopicKind>()
                    .map(|k| k.as_str())
                    .unwrap_or("other");
                metrics::counter!("fleet_ingest_messages_total", "kind" => kind).increment(1);
                match process(&fleet, &p.topic, &p.payload, unix_ms()) {
                    Ok(Accepted::Ignored) => {}
                    Ok(Accepted::Applied(applied)) => {
                        let (env, observed) = *applied;
                        handle_applied(&client, &fleet, &writer, env, observed).await;
                    }
                    Err(rejection) => {
                        metrics::counter!("fleet_ingest_rejected_total", "reason" => rejection.label())
                            .increment(1);
                        match &rejection {
                            Rejection::UnknownDevice(id) => {
                                if unknown.first(id) {
                                    warn!(device = %id, topic = %p.topic, "message from an unregistered device rejected (logged once per device)");
                                }
                            }
                            _ => {
                                warn!(topic = %p.topic, bytes = p.payload.len(), reason = %rejection.label(), error = %rejection, "message rejected")
                            }
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                cfg.connected
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                if stop_by.is_some() {
                    break;
                }
                warn!(error = %e, retry_in_ms = retry.as_millis() as u64, "ingest lost the broker");
                tokio::select! {
                    _ = shutdown.changed() => break,
                    () = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(Duration::from_secs(5));
            }
        }
    }
    info!("ingest stopped");
}

async fn handle_applied(
    client: &AsyncClient,
    fleet: &RwLock<Fleet>,
    writer: &mpsc::Sender<WriteOp>,
    env: Envelope,
    observed: Observed,
) {
    let now = unix_ms();
    if observed.stale {
        metrics::counter!("fleet_ingest_stale_total").increment(1);
        debug!(device = %env.device, kind = %env.payload.kind(), "message older than what is known ignored (late will or redelivery)");
    }
    if let Some(event) = observed.event {
        let _ = writer
            .send(WriteOp::Event(env.device.clone(), event, now))
            .await;
    }
    let status = fleet
        .read()
        .expect("fleet lock is never poisoned")
        .get(&env.device)
        .map(|d| d.status.clone());
    if let Some(status) = status {
        let _ = writer
            .send(WriteOp::Status(env.device.clone(), Box::new(status)))
            .await;
    }
    if observed.reason_before != observed.reason_after {
        debug!(device = %env.device, before = ?observed.reason_before, after = ?observed.reason_after, "readiness changed");
    }
    if observed.came_online {
        // The broker may have lost the retained desired state: send it again.
        let desired = Envelope::new(
            env.device.clone(),
            now,
            Payload::Desired(Desired::default()),
        );
        match desired.to_cbor() {
            Ok(bytes) => {
                if let Err(e) =
                    client.try_publish(desired.topic().to_string(), QoS::AtLeastOnce, true, bytes)
                {
                    warn!(device = %env.device, error = %e, "cannot queue desired state");
                }
            }
            Err(e) => warn!(error = %e, "cannot encode desired state"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fleet::{Registration, Status};
    use crate::domain::lifecycle::Lifecycle;
    use fleet_protocol::*;

    fn fleet_with(id: &str) -> RwLock<Fleet> {
        let mut f = Fleet::new(60_000);
        f.upsert(
            Registration {
                id: DeviceId::parse(id).unwrap(),
                model: Model::parse("ballot-box-v2").unwrap(),
                province: ProvinceCode::parse("IR-23").unwrap(),
                county: Some(CountyCode::parse("IR-23-TEH").unwrap()),
                station: None,
                lifecycle: Lifecycle::Enrolled,
                registered_at_ms: 0,
            },
            Status::default(),
            0,
        );
        RwLock::new(f)
    }

    fn health(id: &str) -> Vec<u8> {
        Envelope::new(
            DeviceId::parse(id).unwrap(),
            0,
            Payload::Health(Health::default()),
        )
        .to_cbor()
        .unwrap()
    }

    #[test]
    fn accepts_a_good_message() {
        let f = fleet_with("A");
        let r = process(&f, "fleet/v1/dev/A/health", &health("A"), 5).unwrap();
        assert!(matches!(r, Accepted::Applied(..)));
        let fl = f.read().unwrap();
        assert_eq!(
            fl.get(&DeviceId::parse("A").unwrap())
                .unwrap()
                .status
                .last_seen_ms,
            Some(5)
        );
    }

    #[test]
    fn refusals_change_nothing() {
        let f = fleet_with("A");
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("fleet/v1/dev/A/health", health("B"), "forged"),
            ("fleet/v1/dev/A/state", health("A"), "forged"),
            (
                "fleet/v1/dev/A/health",
                b"\xff\x00garbage".to_vec(),
                "malformed",
            ),
            ("fleet/v1/dev/A/health", vec![0u8; 20_000], "too-large"),
            ("fleet/v1/dev/A/bogus", health("A"), "topic"),
            ("elsewhere/A", health("A"), "topic"),
            ("fleet/v1/dev/B/health", health("B"), "unknown-device"),
        ];
        for (topic, payload, label) in cases {
            let err = process(&f, topic, &payload, 5).unwrap_err();
            assert_eq!(err.label(), label, "{topic}: {err}");
        }
        let fl = f.read().unwrap();
        assert_eq!(fl.len(), 1);
        assert_eq!(
            fl.get(&DeviceId::parse("A").unwrap()).unwrap().status,
            Status::default()
        );
    }

    #[test]
    fn controller_messages_are_ignored() {
        let f = fleet_with("A");
        let desired = Envelope::new(
            DeviceId::parse("A").unwrap(),
            0,
            Payload::Desired(Desired::default()),
        )
        .to_cbor()
        .unwrap();
        assert!(matches!(
            process(&f, "fleet/v1/dev/A/desired", &desired, 5).unwrap(),
            Accepted::Ignored
        ));
    }
}
