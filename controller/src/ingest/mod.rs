//! Ingest: the controller's MQTT session. Every message is validated (topic
//! shape, device registered and enrolled, within its device's rate limit,
//! size limit, CBOR, payload kind and device equal to the topic's, event
//! sequence number in range) before it touches the fleet; refusals are
//! counted by reason (`fleet_ingest_rejected_total`, or
//! `fleet_ingest_dropped_total` for a retired or not-enrolled device and for
//! a device over its rate limit) and logged (once per device for unknown
//! and not-enrolled ones, a few lines a minute per device otherwise), and
//! change nothing. Accepted reports go to the store writer in batches, and
//! a message is acknowledged to the broker only once its effect is
//! committed ([`publisher`]): a controller killed mid-stream loses nothing
//! the devices were told was received.
//!
//! Behind a provincial broker, a device's messages reach the central broker
//! under its bridge's prefix (`fleet/v1/b/bridge.NAME/dev/…`); such a
//! message is applied only if that bridge serves the device's province
//! (`Tier::may_speak_for`), else it is refused as `wrong-bridge`: a
//! compromised provincial broker cannot speak for another province's
//! devices. A message on the plain topic is accepted as before (a device of
//! a tier province may still reach the central broker directly: enrolled
//! before the tier, it keeps the central broker's address; logged once per
//! device). The
//! bridges' link reports (`fleet/v1/bridge/bridge.NAME/state`) go to the
//! fleet's link table, which readiness reads (`link-down`).
//!
//! The ingest is also the one publisher of desired state: it sends a
//! device's stored desired state when the device comes online, and every
//! stored one when it connects to a broker that forgot its session
//! (`domain::desired::republish_all`). What it sends a device goes back the
//! way the device's last accepted message came (directly, or through that
//! bridge); a device not heard since the start, through its province's
//! bridge if the tier has one. A certificate request is answered on the
//! route it arrived on.

pub mod publisher;

pub use publisher::{set_desired, update_desired, DesiredError, PublishError, Publisher};

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fleet_protocol::topic::{bridge_state_filter, parse_bridge_state};
use fleet_protocol::{DecodeError, DeviceId, Envelope, Payload, ProvinceCode, Topic, TopicKind};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::broker::tier::Tier;
use crate::clock::unix_ms;
use crate::domain::fleet::{report_digest, Fleet, Observed, Reach};
use crate::domain::lifecycle::Rules;
use crate::domain::limits::{Admit, LogLimiter, LogLine, RateLimiter, RateLimits};
use crate::domain::links::LinkReport;
use crate::store::WriteOp;

/// Log lines per device per minute about its refused messages.
const LOG_LINES_PER_DEVICE_PER_MINUTE: u32 = 3;

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
    /// What one device may send per minute; the excess is dropped.
    pub limits: RateLimits,
    /// Signs devices' renewal requests (`None`: --insecure-dev, no CA use).
    pub renewer: Option<Renewer>,
    /// Where the controller's own identity is read again before each
    /// reconnection, so a renewed certificate is used (`None`: plaintext).
    pub identity: Option<crate::pki::PkiPaths>,
    /// The provincial tier: which bridge may speak for which province, and
    /// the route to each device.
    pub tier: Arc<Tier>,
}

/// What signing a device's renewal request needs.
#[derive(Clone)]
pub struct Renewer {
    pub store: crate::store::Store,
    pub access: Arc<crate::access::Access>,
    pub pki: crate::pki::PkiPaths,
    pub device_cert: time::Duration,
}

impl std::fmt::Debug for Renewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renewer")
            .field("pki", &self.pki)
            .field("device_cert", &self.device_cert)
            .finish_non_exhaustive()
    }
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
    #[error("device {0} is not enrolled (registered only, or retired)")]
    NotEnrolled(String),
    #[error("device {device} is over its rate limit")]
    RateLimited { device: String, first: bool },
    #[error("event sequence number {seq} is out of range (1 to 2^53 - 1)")]
    SeqOutOfRange { seq: u64 },
    #[error("{bridge} does not serve province {province} of device {device}")]
    WrongBridge {
        bridge: String,
        device: String,
        province: ProvinceCode,
    },
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
            Rejection::NotEnrolled(_) => "not-enrolled",
            Rejection::RateLimited { .. } => "rate",
            Rejection::SeqOutOfRange { .. } => "seq-out-of-range",
            Rejection::WrongBridge { .. } => "wrong-bridge",
        }
    }

    /// The metric it counts in: a drop (the device may send, but not this
    /// or not now) or a rejection (the message itself is wrong).
    pub fn metric(&self) -> &'static str {
        match self {
            Rejection::NotEnrolled(_) | Rejection::RateLimited { .. } => {
                "fleet_ingest_dropped_total"
            }
            _ => "fleet_ingest_rejected_total",
        }
    }
}

/// What to do after an accepted message.
#[derive(Debug)]
pub enum Accepted {
    /// A message the controller itself sends (desired, cmd): not ingested.
    Ignored,
    /// A presence or state that came through a bridge byte for byte equal
    /// to the last one processed for its device: a copy the provincial
    /// broker re-queued on a reconnect attempt (Mosquitto 2.0.11 queues
    /// every retained report again on each attempt during an uplink
    /// outage). Not counted by the rate limiter, not applied: the fleet
    /// holds it already.
    Duplicate,
    Applied(Box<Applied>),
}

/// An accepted message, applied to the fleet.
#[derive(Debug)]
pub struct Applied {
    pub env: Envelope,
    pub observed: Observed,
    /// The bridge it came through (`None`: directly).
    pub via: Option<String>,
    /// It came directly, from a device of a province the tier serves (a
    /// device enrolled before the tier, still on the central broker).
    pub direct_in_tier: bool,
}

/// Validate one message and apply it to the fleet. The cheap checks come
/// first: who sent it (the device, and the bridge it came through), whether
/// a bridged presence or state is a copy of the last one processed (the
/// flush of an uplink outage holds one per reconnect attempt; they must
/// not use up the device's rate limit and get its events dropped), and
/// whether it is within its device's limits, then decoding.
pub fn process(
    fleet: &RwLock<Fleet>,
    tier: &Tier,
    limiter: &mut RateLimiter<DeviceId>,
    topic: &str,
    payload: &[u8],
    now_ms: u64,
) -> Result<Accepted, Rejection> {
    let routed = Topic::parse_routed(topic).map_err(|e| Rejection::Topic(e.to_string()))?;
    let topic = routed.topic;
    if !topic.kind.from_agent() {
        return Ok(Accepted::Ignored);
    }
    // Retained reports: their digest, to know a copy.
    let digest = matches!(topic.kind, TopicKind::Presence | TopicKind::State)
        .then(|| report_digest(payload));
    let (known, copy) = {
        let fleet = fleet
            .read()
            .expect("fleet lock is never poisoned: no code panics while holding it");
        let known = fleet
            .get(&topic.device)
            .map(|d| (d.reg.lifecycle.is_enrolled(), d.reg.province));
        let copy = routed.via.is_some()
            && digest.is_some_and(|d| fleet.holds_report(&topic.device, topic.kind, d));
        (known, copy)
    };
    let province = match known {
        None => return Err(Rejection::UnknownDevice(topic.device.to_string())),
        Some((false, _)) => return Err(Rejection::NotEnrolled(topic.device.to_string())),
        Some((true, province)) => province,
    };
    if let Some(bridge) = &routed.via {
        if !tier.may_speak_for(bridge, province) {
            return Err(Rejection::WrongBridge {
                bridge: bridge.clone(),
                device: topic.device.to_string(),
                province,
            });
        }
    }
    if copy {
        return Ok(Accepted::Duplicate);
    }
    if let Admit::Drop { first } = limiter.admit(&topic.device, payload.len(), now_ms) {
        return Err(Rejection::RateLimited {
            device: topic.device.to_string(),
            first,
        });
    }
    let env = Envelope::from_cbor_on(&topic, payload).map_err(|e| match e {
        DecodeError::TooLarge { .. } => Rejection::TooLarge(e.to_string()),
        DecodeError::DeviceMismatch { .. } | DecodeError::KindMismatch { .. } => {
            Rejection::Forged(e.to_string())
        }
        _ => Rejection::Malformed(e.to_string()),
    })?;
    if let Payload::Event(e) = &env.payload {
        if !e.seq_in_range() {
            return Err(Rejection::SeqOutOfRange { seq: e.seq });
        }
    }
    let observed = {
        let mut fleet = fleet
            .write()
            .expect("fleet lock is never poisoned: no code panics while holding it");
        let observed = fleet
            .observe_via(&env, routed.via.as_deref(), now_ms)
            .map_err(|e| Rejection::UnknownDevice(e.0.to_string()))?;
        if let Some(d) = digest {
            fleet.note_report(&env.device, topic.kind, d);
        }
        observed
    };
    let direct_in_tier = routed.via.is_none() && tier.broker_of(province).is_some();
    Ok(Accepted::Applied(Box::new(Applied {
        env,
        observed,
        via: routed.via,
        direct_in_tier,
    })))
}

/// Unknown device ids (or bridge names) already logged (bounded, so a flood of made-up ids
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

/// Requests (acknowledgements, publications) waiting for the event loop.
const REQUEST_QUEUE: usize = 1 << 17;

/// The ingest's MQTT client (not connected yet: [`run`] drives it) and the
/// publisher handle others send through. Persistent session, manual
/// acknowledgements.
pub fn client(cfg: &IngestConfig) -> (Publisher, EventLoop) {
    let mut opts = MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
    opts.set_keep_alive(cfg.keep_alive)
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(64 * 1024, 64 * 1024)
        .set_inflight(200);
    if let Some(tls) = &cfg.tls {
        opts.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::clone(tls)),
        ));
    }
    // The client's request queue carries our acknowledgements and
    // publications to the event loop this task polls. 1,024 filled up while
    // 10,000 devices came online at once (a desired state for each): the
    // acknowledgements behind them were lost, the broker's window of
    // unacknowledged messages for us (max_inflight_messages) filled, and it
    // stopped sending until we reconnected. Room for every device of a
    // 100,000-device fleet and then some; a full queue is still counted
    // (fleet_ingest_request_queue_full_total).
    let (client, eventloop) = AsyncClient::new(opts, REQUEST_QUEUE);
    (Publisher::new(client, Arc::clone(&cfg.tier)), eventloop)
}

/// Send every stored desired state again (the broker may have lost the
/// retained copies), waiting for room in the client's queue.
async fn republish_all(publisher: Publisher, fleet: Arc<RwLock<Fleet>>) {
    let all: Vec<(DeviceId, Reach, fleet_protocol::Desired)> = {
        let fleet = fleet.read().expect("fleet lock is never poisoned");
        fleet
            .stored_desired()
            .into_iter()
            .filter_map(|(id, d)| Some((fleet.get(&id)?.reach(), id, d)))
            .map(|(to, id, d)| (id, to, d))
            .collect()
    };
    let now = unix_ms();
    let mut sent = 0u64;
    for (device, to, desired) in &all {
        match publisher.desired(device, to, desired, now).await {
            Ok(()) => sent += 1,
            Err(e) => warn!(error = %e, "cannot send a desired state again"),
        }
    }
    metrics::counter!("fleet_desired_published_total", "why" => "broker-forgot").increment(sent);
    info!(
        devices = sent,
        "desired states sent again: the broker did not know the ingest's session, so it may have lost its retained messages"
    );
}

/// Whether a new connection subscribes: the first of this process always,
/// a later one only when the broker did not keep the session.
fn subscribe_now(subscribed_before: bool, session_present: bool) -> bool {
    !subscribed_before || !session_present
}

pub async fn run(
    cfg: IngestConfig,
    fleet: Arc<RwLock<Fleet>>,
    writer: mpsc::Sender<WriteOp>,
    publisher: Publisher,
    mut eventloop: EventLoop,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = publisher.client().clone();
    let mut unknown = LoggedOnce(HashSet::new());
    let mut not_enrolled = LoggedOnce(HashSet::new());
    let mut unknown_bridges = LoggedOnce(HashSet::new());
    let mut direct_in_tier = LoggedOnce(HashSet::new());
    let mut limiter = RateLimiter::new(cfg.limits);
    let mut log_limit = LogLimiter::new(LOG_LINES_PER_DEVICE_PER_MINUTE, 10_000);
    let mut retry = Duration::from_millis(100);
    // Subscribed on a connection of this process: a later connection
    // whose session the broker kept does not subscribe again.
    let mut subscribed = false;
    // After shutdown is asked for, keep handling what still arrives until
    // our DISCONNECT is out; what is not acknowledged by then comes again
    // on the next start.
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
                publisher.next_connection();
                retry = Duration::from_millis(100);
                cfg.connected
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                info!(session_present = ack.session_present, broker = %format!("{}:{}", cfg.host, cfg.port), "ingest connected");
                // Subscribe once per start (an older controller's session
                // may lack filters added since) and whenever the broker lost
                // the session; not on every reconnection: each SUBSCRIBE
                // makes the broker send every retained message it matches
                // again (a presence and a state per device: 200,000 at
                // 100,000 devices), and a flood that overflows our queue on
                // the broker drops the news behind it. Then leave the shared
                // group older controllers joined, which any device could
                // dilute.
                if subscribe_now(subscribed, ack.session_present) {
                    let filters = Topic::controller_filters()
                        .into_iter()
                        .chain(Topic::bridged_controller_filters())
                        .chain([bridge_state_filter()])
                        .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
                    match client.try_subscribe_many(filters) {
                        Ok(()) => subscribed = true,
                        Err(e) => warn!(error = %e, "cannot subscribe"),
                    }
                }
                for legacy in Topic::legacy_shared_filters() {
                    if let Err(e) = client.try_unsubscribe(legacy) {
                        warn!(error = %e, "cannot leave the legacy shared subscription");
                    }
                }
                if crate::domain::desired::republish_all(ack.session_present) {
                    tokio::spawn(republish_all(publisher.clone(), Arc::clone(&fleet)));
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let kind = p.topic.rsplit('/').next().unwrap_or("");
                let kind = kind
                    .parse::<TopicKind>()
                    .map(|k| k.as_str())
                    .unwrap_or("other");
                metrics::counter!("fleet_ingest_messages_total", "kind" => kind).increment(1);
                let now = unix_ms();
                if let Some((bridge, up)) = parse_bridge_state(&p.topic, &p.payload) {
                    publisher.ack_now(&p);
                    link_report(&fleet, &cfg.tier, &mut unknown_bridges, bridge, up, now);
                    continue;
                }
                match process(&fleet, &cfg.tier, &mut limiter, &p.topic, &p.payload, now) {
                    Ok(Accepted::Ignored) => publisher.ack_now(&p),
                    Ok(Accepted::Duplicate) => {
                        metrics::counter!("fleet_ingest_duplicates_total", "kind" => kind)
                            .increment(1);
                        publisher.ack_now(&p);
                    }
                    Ok(Accepted::Applied(applied)) => {
                        metrics::counter!("fleet_ingest_applied_total", "kind" => kind)
                            .increment(1);
                        let Applied {
                            env,
                            observed,
                            via,
                            direct_in_tier: direct,
                        } = *applied;
                        if direct && direct_in_tier.first(env.device.as_str()) {
                            let province = fleet
                                .read()
                                .expect("fleet lock is never poisoned")
                                .get(&env.device)
                                .map(|d| d.reg.province);
                            let serving = province.and_then(|p| cfg.tier.route_of(p));
                            info!(device = %env.device, province = ?province, serving = ?serving, "device of a province behind a provincial broker heard directly on the central broker (enrolled before the tier?): what it is sent goes back directly while it is heard there (logged once per device)");
                        }
                        if matches!(env.payload, Payload::CertRequest(_)) {
                            // Nothing to commit: a lost renewal is asked for again.
                            publisher.ack_now(&p);
                            match &cfg.renewer {
                                Some(r) => {
                                    tokio::spawn(renew_certificate(
                                        r.clone(),
                                        publisher.clone(),
                                        Arc::clone(&fleet),
                                        env,
                                        via,
                                    ));
                                }
                                None => {
                                    debug!(device = %env.device, "renewal request ignored: no CA in use (--insecure-dev)")
                                }
                            }
                        } else {
                            handle_applied(&publisher, &fleet, &writer, env, observed).await;
                            if p.qos != QoS::AtMostOnce {
                                let ack = publisher.ack_after_commit(p.clone());
                                let _ = writer.send(WriteOp::AfterCommit(ack)).await;
                            }
                        }
                    }
                    Err(rejection) => {
                        // Refused: nothing to commit, and sending it again would not help.
                        publisher.ack_now(&p);
                        metrics::counter!(rejection.metric(), "reason" => rejection.label())
                            .increment(1);
                        match &rejection {
                            Rejection::UnknownDevice(id) => {
                                if unknown.first(id) {
                                    warn!(device = %id, topic = %p.topic, "message from an unregistered device rejected (logged once per device)");
                                }
                            }
                            Rejection::NotEnrolled(id) => {
                                if not_enrolled.first(id) {
                                    warn!(device = %id, topic = %p.topic, "message from a device that is not enrolled (retired, or registered only) dropped (logged once per device)");
                                }
                            }
                            Rejection::RateLimited { device, first } => {
                                // A line when a device goes over, then a few a minute.
                                if let (true, LogLine::Write { suppressed }) =
                                    (*first, log_limit.line(device, now))
                                {
                                    warn!(device = %device, limits = ?cfg.limits, suppressed, "device over its rate limit: its messages are dropped until it slows down");
                                }
                            }
                            Rejection::WrongBridge {
                                bridge,
                                device,
                                province,
                            } => {
                                if let LogLine::Write { suppressed } = log_limit.line(device, now) {
                                    let serving = cfg
                                        .tier
                                        .route_of(*province)
                                        .unwrap_or_else(|| "none (central broker)".to_owned());
                                    warn!(topic = %p.topic, bridge = %bridge, device = %device, province = %province, serving = %serving, reason = %rejection.label(), suppressed, "message from a bridge that does not serve the device's province rejected, not applied");
                                }
                            }
                            _ => {
                                let device = p
                                    .topic
                                    .split('/')
                                    .nth(3)
                                    .unwrap_or("")
                                    .chars()
                                    .take(64)
                                    .collect::<String>();
                                if let LogLine::Write { suppressed } = log_limit.line(&device, now)
                                {
                                    warn!(topic = %p.topic, bytes = p.payload.len(), reason = %rejection.label(), error = %rejection, suppressed, "message rejected")
                                }
                            }
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                // rumqttc dropped the acknowledgements still queued; those
                // the writer sends later belong to this lost connection.
                publisher.next_connection();
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
                // The controller's certificate may have been renewed.
                if let Some(paths) = &cfg.identity {
                    match reload_identity(paths) {
                        Ok(tls) => {
                            eventloop.mqtt_options.set_transport(
                                rumqttc::Transport::tls_with_config(
                                    rumqttc::TlsConfiguration::Rustls(tls),
                                ),
                            );
                        }
                        Err(e) => {
                            warn!(error = %e, "cannot read the controller's identity again; the one loaded is kept")
                        }
                    }
                }
            }
        }
    }
    info!("ingest stopped");
}

fn reload_identity(
    paths: &crate::pki::PkiPaths,
) -> Result<Arc<rustls::ClientConfig>, crate::pki::PkiError> {
    let read = |p: std::path::PathBuf| {
        std::fs::read(&p).map_err(|source| crate::pki::PkiError::Read { path: p, source })
    };
    crate::pki::tls_client_config(
        &read(paths.ca_cert())?,
        &read(paths.controller_cert())?,
        &read(paths.controller_key())?,
    )
}

/// A device asks for a new certificate over its mutual-TLS session: check
/// the request (`domain::renewal`), sign its public key with the fields the
/// controller decides, audit, record, and send the certificate back on the
/// device's `cert` topic, on the route the request came (`via`: the bridge
/// it came through, `None` directly). Refusals are counted and logged, not
/// audited (a device sending garbage must not fill the audit log).
async fn renew_certificate(
    r: Renewer,
    publisher: Publisher,
    fleet: Arc<RwLock<Fleet>>,
    env: Envelope,
    via: Option<String>,
) {
    use rand::RngCore;
    let Payload::CertRequest(req) = env.payload else {
        return;
    };
    let device = env.device;
    let now = unix_ms();
    let lifecycle = fleet
        .read()
        .expect("fleet lock is never poisoned")
        .get(&device)
        .map(|d| d.reg.lifecycle);
    let key = match crate::domain::renewal::check_request(&device, lifecycle, &req.csr_pem) {
        Ok(key) => key,
        Err(why) => {
            metrics::counter!("fleet_cert_renewals_refused_total").increment(1);
            warn!(device = %device, reason = %why, "certificate renewal refused");
            return;
        }
    };
    let mut params = crate::pki::leaf_params(
        device.as_str(),
        vec![],
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        r.device_cert,
    );
    let mut serial = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut serial);
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let not_after_ms = u64::try_from(params.not_after.unix_timestamp()).unwrap_or(0) * 1000;
    let serial_hex = hex::encode(serial);
    let cert = match crate::pki::Ca::load(&r.pki).and_then(|ca| ca.sign(&params, &key)) {
        Ok(c) => c,
        Err(e) => {
            warn!(device = %device, error = %e, "cannot sign a renewed certificate");
            return;
        }
    };
    let actor = format!("device {device} (renewal over mutual TLS)");
    let detail = serde_json::json!({
        "certificate_serial": serial_hex,
        "not_after_ms": not_after_ms,
        "new_key": req.new_key,
    });
    if let Err(e) = r
        .access
        .record_as(
            &actor,
            "device",
            "mqtt",
            "device.renew",
            device.as_str(),
            detail,
        )
        .await
    {
        warn!(device = %device, error = %e, "renewal not made: it cannot be audited");
        return;
    }
    match r
        .store
        .insert_renewed_certificate(&device, &serial_hex, now, not_after_ms)
        .await
    {
        Ok(true) => {}
        other => {
            let why = match other {
                Err(e) => e.to_string(),
                Ok(_) => "the device left service meanwhile".to_owned(),
            };
            r.access
                .failed_as(
                    &actor,
                    "device",
                    "mqtt",
                    "device.renew",
                    device.as_str(),
                    &why,
                )
                .await;
            return;
        }
    }
    let answer = Envelope::new(
        device.clone(),
        now,
        Payload::CertIssued(fleet_protocol::CertIssued { cert_pem: cert }),
    );
    // Back the way the request came: the device is there.
    let topic = answer.topic().routed(via.as_deref());
    match answer.to_cbor() {
        Ok(bytes) => {
            if let Err(e) = publisher
                .client()
                .publish(topic, QoS::AtLeastOnce, false, bytes)
                .await
            {
                warn!(device = %device, error = %e, "cannot send the renewed certificate");
                return;
            }
            metrics::counter!("fleet_cert_renewals_total").increment(1);
            info!(device = %device, serial = %serial_hex, not_after_ms, "device certificate renewed");
        }
        Err(e) => warn!(device = %device, error = %e, "cannot encode the renewed certificate"),
    }
}

/// A bridge's link report: into the fleet's link table (the devices behind
/// it are judged again), logged when it changes; a bridge not in the tier
/// is logged once and ignored.
fn link_report(
    fleet: &RwLock<Fleet>,
    tier: &Tier,
    unknown_bridges: &mut LoggedOnce,
    bridge: &str,
    up: bool,
    now_ms: u64,
) {
    let Some(broker) = tier.by_bridge(bridge) else {
        if unknown_bridges.first(bridge) {
            warn!(bridge, up, "link report of a bridge that is not in the provincial tier ignored (logged once per bridge)");
        }
        return;
    };
    let (report, changed) = fleet
        .write()
        .expect("fleet lock is never poisoned")
        .link_report(&broker.name, up, now_ms);
    match report {
        LinkReport::Changed { up: true, .. } => {
            metrics::counter!("fleet_bridge_link_changes_total", "up" => "true").increment(1);
            info!(broker = %broker.name, bridge, devices_changed = changed, "provincial broker's link to the central broker is up");
        }
        LinkReport::Changed { up: false, .. } => {
            metrics::counter!("fleet_bridge_link_changes_total", "up" => "false").increment(1);
            warn!(broker = %broker.name, bridge, devices_changed = changed, "provincial broker's link to the central broker is down: its devices are link-down, not offline");
        }
        LinkReport::Unchanged => {
            debug!(broker = %broker.name, up, "link report repeated")
        }
        LinkReport::NotInTier => {
            warn!(broker = %broker.name, "the tier and the fleet's link table disagree; report ignored")
        }
    }
}

async fn handle_applied(
    publisher: &Publisher,
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
    if observed.came_online && crate::domain::desired::send_on_online() {
        // The broker may have lost the retained desired state: send the
        // stored one again.
        let desired = {
            let fleet = fleet.read().expect("fleet lock is never poisoned");
            fleet
                .get(&env.device)
                .map(crate::domain::fleet::Device::reach)
                .zip(fleet.desired_for(&env.device))
        };
        if let Some((to, desired)) = desired {
            match publisher.try_desired(&env.device, &to, &desired, now) {
                Ok(()) => {
                    metrics::counter!("fleet_desired_published_total", "why" => "online")
                        .increment(1);
                }
                Err(e) => warn!(error = %e, "cannot send the desired state"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fleet::{Registration, Status};
    use crate::domain::lifecycle::Lifecycle;
    use fleet_protocol::Event;
    use fleet_protocol::*;

    #[test]
    fn a_reconnection_to_a_kept_session_does_not_subscribe_again() {
        // The first connection of a process subscribes, kept session or not.
        assert!(subscribe_now(false, true));
        assert!(subscribe_now(false, false));
        // Later: only when the broker lost the session (and its filters).
        assert!(!subscribe_now(true, true));
        assert!(subscribe_now(true, false));
    }

    fn fleet_with(id: &str) -> RwLock<Fleet> {
        fleet_of(&[(id, Lifecycle::Enrolled)])
    }

    fn fleet_of(devices: &[(&str, Lifecycle)]) -> RwLock<Fleet> {
        let mut f = Fleet::new(60_000);
        for (id, lifecycle) in devices {
            f.upsert(
                Registration {
                    id: DeviceId::parse(id).unwrap(),
                    model: Model::parse("ballot-box-v2").unwrap(),
                    province: ProvinceCode::parse("IR-23").unwrap(),
                    county: Some(CountyCode::parse("IR-23-TEH").unwrap()),
                    station: None,
                    lifecycle: *lifecycle,
                    registered_at_ms: 0,
                },
                Status::default(),
                0,
            );
        }
        RwLock::new(f)
    }

    const LIMITS: RateLimits = RateLimits {
        messages_per_minute: 100,
        bytes_per_minute: 100_000,
    };

    fn limiter() -> RateLimiter<DeviceId> {
        RateLimiter::new(LIMITS)
    }

    fn event(id: &str, seq: u64, boot: Option<u64>) -> Vec<u8> {
        Envelope::new(
            DeviceId::parse(id).unwrap(),
            0,
            Payload::Event(Event {
                seq,
                at_ms: 0,
                kind: EventKind::Error {
                    message: "x".into(),
                },
                boot,
            }),
        )
        .to_cbor()
        .unwrap()
    }

    #[test]
    fn reports_of_retired_and_not_enrolled_devices_are_dropped_and_change_nothing() {
        let f = fleet_of(&[
            ("R", Lifecycle::Retired),
            ("N", Lifecycle::Registered),
            ("S", Lifecycle::Shipped),
            ("D", Lifecycle::Deployed),
        ]);
        let mut l = limiter();
        for id in ["R", "N"] {
            let err = process(
                &f,
                &Tier::default(),
                &mut l,
                &format!("fleet/v1/dev/{id}/health"),
                &health(id),
                5,
            )
            .unwrap_err();
            assert_eq!(err.label(), "not-enrolled", "{id}: {err}");
            assert_eq!(err.metric(), "fleet_ingest_dropped_total");
            let fl = f.read().unwrap();
            let d = fl.get(&DeviceId::parse(id).unwrap()).unwrap();
            assert_eq!(d.status, Status::default(), "{id} changed");
        }
        for id in ["S", "D"] {
            let r = process(
                &f,
                &Tier::default(),
                &mut l,
                &format!("fleet/v1/dev/{id}/health"),
                &health(id),
                5,
            );
            assert!(matches!(r, Ok(Accepted::Applied(..))), "{id}: {r:?}");
        }
    }

    #[test]
    fn copies_of_retained_reports_flushed_by_a_bridge_do_not_use_up_the_rate_limit() {
        // After an uplink outage a provincial broker (Mosquitto 2.0.11)
        // flushes one copy of the device's retained presence and state per
        // reconnect attempt, then its events.
        let f = fleet_of(&[("A", Lifecycle::Enrolled)]);
        let tier = tier_p01();
        let mut l = limiter();
        let id = DeviceId::parse("A").unwrap();
        let presence = Envelope::new(
            id.clone(),
            1_000,
            Payload::Presence(Presence {
                status: PresenceStatus::Online,
                agent: Version::parse("0.1.0").unwrap(),
                session: Some(1_000),
            }),
        )
        .to_cbor()
        .unwrap();
        let state = |version: &str, at: u64| {
            Envelope::new(
                id.clone(),
                at,
                Payload::State(State {
                    model: Model::parse("ballot-box-v2").unwrap(),
                    firmware: Version::parse(version).unwrap(),
                    agent: Version::parse("0.1.0").unwrap(),
                    update: UpdateStatus::Idle,
                    checks: vec![],
                    config_rev: 0,
                }),
            )
            .to_cbor()
            .unwrap()
        };
        let up = |kind: &str| format!("fleet/v1/b/bridge.p01/dev/A/{kind}");
        for (kind, bytes) in [("presence", &presence), ("state", &state("1.0.0", 1_000))] {
            let r = process(&f, &tier, &mut l, &up(kind), bytes, 2_000);
            assert!(matches!(r, Ok(Accepted::Applied(..))), "{kind}: {r:?}");
        }
        // Three times the limit of copies within the minute.
        for _ in 0..(3 * LIMITS.messages_per_minute) {
            for (kind, bytes) in [("presence", &presence), ("state", &state("1.0.0", 1_000))] {
                let r = process(&f, &tier, &mut l, &up(kind), bytes, 3_000);
                assert!(matches!(r, Ok(Accepted::Duplicate)), "{kind}: {r:?}");
            }
        }
        // The events queued behind them are not dropped as rate-limited.
        for seq in 1..=10 {
            let r = process(
                &f,
                &tier,
                &mut l,
                &up("events"),
                &event("A", seq, Some(7)),
                4_000,
            );
            assert!(matches!(r, Ok(Accepted::Applied(..))), "event {seq}: {r:?}");
        }
        // A new state is no copy: applied.
        let r = process(
            &f,
            &tier,
            &mut l,
            &up("state"),
            &state("1.0.1", 5_000),
            5_000,
        );
        assert!(matches!(r, Ok(Accepted::Applied(..))), "{r:?}");
        assert_eq!(
            f.read()
                .unwrap()
                .get(&id)
                .unwrap()
                .status
                .state
                .as_ref()
                .unwrap()
                .firmware,
            Version::parse("1.0.1").unwrap()
        );
        // Copies are recognised only on a bridge's prefix: the same bytes
        // sent directly again and again are counted as ever.
        let mut limited = false;
        for _ in 0..(2 * LIMITS.messages_per_minute) {
            limited |= matches!(
                process(
                    &f,
                    &tier,
                    &mut l,
                    "fleet/v1/dev/A/presence",
                    &presence,
                    6_000
                ),
                Err(Rejection::RateLimited { .. })
            );
        }
        assert!(limited, "direct repeats were not counted");
    }

    #[test]
    fn a_flood_over_the_rate_limit_is_dropped_and_the_first_drop_is_marked() {
        let f = fleet_of(&[("A", Lifecycle::Enrolled), ("B", Lifecycle::Enrolled)]);
        let mut l = limiter();
        let mut applied = 0;
        let mut drops = vec![];
        for _ in 0..250 {
            match process(
                &f,
                &Tier::default(),
                &mut l,
                "fleet/v1/dev/A/health",
                &health("A"),
                5,
            ) {
                Ok(Accepted::Applied(..)) => applied += 1,
                Err(Rejection::RateLimited { first, .. }) => drops.push(first),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(applied, 100, "one minute's allowance");
        assert_eq!(drops.len(), 150);
        assert!(drops[0] && drops[1..].iter().all(|first| !first));
        // Another device is not held back by A.
        let r = process(
            &f,
            &Tier::default(),
            &mut l,
            "fleet/v1/dev/B/health",
            &health("B"),
            5,
        );
        assert!(matches!(r, Ok(Accepted::Applied(..))), "{r:?}");
        let err = Rejection::RateLimited {
            device: "A".into(),
            first: true,
        };
        assert_eq!(
            (err.metric(), err.label()),
            ("fleet_ingest_dropped_total", "rate")
        );
    }

    #[test]
    fn sequence_numbers_near_the_integer_limits_are_refused() {
        let f = fleet_with("A");
        let mut l = limiter();
        for seq in [
            0,
            Event::MAX_SEQ + 1,
            i64::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let err = process(
                &f,
                &Tier::default(),
                &mut l,
                "fleet/v1/dev/A/events",
                &event("A", seq, Some(1)),
                5,
            )
            .unwrap_err();
            assert_eq!(err.label(), "seq-out-of-range", "{seq}: {err}");
        }
        for (seq, boot) in [(1, None), (Event::MAX_SEQ, Some(u64::MAX))] {
            let r = process(
                &f,
                &Tier::default(),
                &mut l,
                "fleet/v1/dev/A/events",
                &event("A", seq, boot),
                5,
            );
            assert!(matches!(r, Ok(Accepted::Applied(..))), "{seq}: {r:?}");
        }
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
        let r = process(
            &f,
            &Tier::default(),
            &mut limiter(),
            "fleet/v1/dev/A/health",
            &health("A"),
            5,
        )
        .unwrap();
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
            let err =
                process(&f, &Tier::default(), &mut limiter(), topic, &payload, 5).unwrap_err();
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
            process(
                &f,
                &Tier::default(),
                &mut limiter(),
                "fleet/v1/dev/A/desired",
                &desired,
                5
            )
            .unwrap(),
            Accepted::Ignored
        ));
    }

    fn tier_p01() -> Tier {
        Tier::new(vec![crate::broker::tier::TierBroker {
            name: "p01".into(),
            provinces: vec![ProvinceCode::parse("IR-23").unwrap()],
            host: "127.0.0.1".into(),
            port: 0,
            managed: false,
            uplink: String::new(),
        }])
        .unwrap()
    }

    #[test]
    fn a_bridged_message_is_applied_only_from_the_bridge_of_the_devices_province() {
        let f = fleet_with("A");
        let tier = tier_p01();
        let mut l = limiter();
        let r = process(
            &f,
            &tier,
            &mut l,
            "fleet/v1/b/bridge.p01/dev/A/health",
            &health("A"),
            5,
        );
        assert!(matches!(r, Ok(Accepted::Applied(..))), "{r:?}");
        for forger in ["bridge.p02", "bridge.central"] {
            let err = process(
                &f,
                &tier,
                &mut l,
                &format!("fleet/v1/b/{forger}/dev/A/state"),
                &health("A"),
                9,
            )
            .unwrap_err();
            assert_eq!(err.label(), "wrong-bridge", "{forger}: {err}");
            assert_eq!(err.metric(), "fleet_ingest_rejected_total");
            assert!(err.to_string().contains("IR-23"), "{err}");
        }
        // Nothing but p01's report was applied.
        let fl = f.read().unwrap();
        let d = fl.get(&DeviceId::parse("A").unwrap()).unwrap();
        assert_eq!(d.status.last_seen_ms, Some(5));
        assert!(d.status.state.is_none());
        drop(fl);
        // Without a tier no bridge may speak for anyone; the plain topic
        // is accepted either way.
        let err = process(
            &f,
            &Tier::default(),
            &mut l,
            "fleet/v1/b/bridge.p01/dev/A/health",
            &health("A"),
            6,
        )
        .unwrap_err();
        assert_eq!(err.label(), "wrong-bridge");
        let r = process(&f, &tier, &mut l, "fleet/v1/dev/A/health", &health("A"), 7);
        assert!(matches!(r, Ok(Accepted::Applied(..))), "{r:?}");
        // A bad bridge name is a bad topic.
        let err = process(
            &f,
            &tier,
            &mut l,
            "fleet/v1/b/p01/dev/A/health",
            &health("A"),
            8,
        )
        .unwrap_err();
        assert_eq!(err.label(), "topic");
    }

    #[test]
    fn what_is_sent_to_a_device_goes_back_the_way_it_was_last_heard() {
        let (client, _eventloop) =
            rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("t", "127.0.0.1", 1), 4);
        let publisher = Publisher::new(client, Arc::new(tier_p01()));
        let env = Envelope::new(
            DeviceId::parse("A").unwrap(),
            0,
            Payload::Desired(Desired::default()),
        );
        let tehran = ProvinceCode::parse("IR-23").unwrap();
        let other = ProvinceCode::parse("IR-02").unwrap();
        // Not heard since the start: its province's route.
        assert_eq!(
            publisher.topic_for(&env, &Reach::province(tehran)),
            "fleet/v1/b/bridge.p01/dev/A/desired"
        );
        assert_eq!(
            publisher.topic_for(&env, &Reach::province(other)),
            "fleet/v1/dev/A/desired"
        );
        // Heard directly, though its province has a provincial broker.
        let direct = Reach {
            province: tehran,
            heard: Some(None),
        };
        assert_eq!(publisher.topic_for(&env, &direct), "fleet/v1/dev/A/desired");
        // Heard through a bridge.
        let bridged = Reach {
            province: tehran,
            heard: Some(Some("bridge.p01".into())),
        };
        assert_eq!(
            publisher.topic_for(&env, &bridged),
            "fleet/v1/b/bridge.p01/dev/A/desired"
        );
    }

    #[test]
    fn the_fleet_remembers_how_each_device_was_last_heard() {
        let f = fleet_of(&[("A", Lifecycle::Enrolled), ("B", Lifecycle::Enrolled)]);
        let tier = tier_p01();
        let mut l = limiter();
        let heard = |id: &str| {
            f.read()
                .unwrap()
                .get(&DeviceId::parse(id).unwrap())
                .unwrap()
                .reach()
                .heard
        };
        assert_eq!(heard("A"), None, "not heard since the start");
        // A device of p01's province heard directly: reached directly, and
        // flagged for the log line.
        let Ok(Accepted::Applied(a)) =
            process(&f, &tier, &mut l, "fleet/v1/dev/A/health", &health("A"), 5)
        else {
            panic!("not applied")
        };
        assert!(a.direct_in_tier && a.via.is_none());
        assert_eq!(heard("A"), Some(None));
        // Then through its bridge: reached through it.
        let Ok(Accepted::Applied(a)) = process(
            &f,
            &tier,
            &mut l,
            "fleet/v1/b/bridge.p01/dev/A/health",
            &health("A"),
            6,
        ) else {
            panic!("not applied")
        };
        assert!(!a.direct_in_tier);
        assert_eq!(a.via.as_deref(), Some("bridge.p01"));
        assert_eq!(heard("A"), Some(Some("bridge.p01".to_owned())));
        // A refused message changes nothing: B stays not heard.
        let _ = process(
            &f,
            &tier,
            &mut l,
            "fleet/v1/b/bridge.p02/dev/B/health",
            &health("B"),
            7,
        )
        .unwrap_err();
        assert_eq!(heard("B"), None);
        // Without a tier nobody is direct "in the tier".
        let Ok(Accepted::Applied(a)) = process(
            &f,
            &Tier::default(),
            &mut l,
            "fleet/v1/dev/B/health",
            &health("B"),
            8,
        ) else {
            panic!("not applied")
        };
        assert!(!a.direct_in_tier);
    }
}
