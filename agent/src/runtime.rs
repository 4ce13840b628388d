//! The agent's event loop: the I/O around the pure [`AgentCore`]. It owns
//! the MQTT connection task (client id = device id, `clean_session = false`,
//! last will = offline, reconnect with backoff), the hardware, the timers and
//! the durable [`Outbox`]; it turns what happens into [`Input`]s, reading the
//! clock once per input, and carries out the [`CoreAction`]s the core returns.
//!
//! Events leave through the outbox: committed first, published QoS 1 within
//! the link's in-flight window, removed on the broker's PUBACK. rumqttc does
//! not say which packet id a publish got, so every publish the loop hands
//! over records a tag (the outbox key, or none) in a queue shared with the
//! connection task, which pairs each `Outgoing::Publish(pkid)` with the next
//! tag (requests are served in order) and each PUBACK with its key. When a
//! connection is lost the task drops rumqttc's own copies of unacknowledged
//! publishes and the tags, under the same lock; the outbox sends its records
//! again on the next connection (the controller recognises a repeat by
//! boot id and sequence number).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fleet_protocol::{
    CheckResult, Envelope, EventKind, Model, Payload, Presence, PresenceStatus, Topic, TopicKind,
};
use rand::{rngs::SmallRng, SeedableRng};
use rumqttc::{
    AsyncClient, Event as MqttEvent, EventLoop, LastWill, MqttOptions, NetworkOptions, Packet, QoS,
    Request,
};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::core::{
    incoming, Action as CoreAction, AgentCore, CertInfo, CoreConfig, Input, Qos, RenewalPolicy,
    Timer,
};
use crate::hardware::Hardware;
use crate::health::HealthPolicy;
use crate::outbox::{Limits, Outbox, OutboxConfig, Stored};
use crate::reporter::state_digest;
use crate::update::agent_binary;
use crate::update::driver::{Note as UpdateNote, Told};
use crate::{agent_version, unix_ms};

/// Requests queued between the loop and the MQTT connection.
const CLIENT_CAPACITY: usize = 64;
/// Largest packet in either direction; every payload kind is far below.
pub const MAX_PACKET: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub host: String,
    pub port: u16,
    pub keep_alive: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Mutual TLS with the device's certificate; `None` is plaintext, for
    /// development brokers only.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub device: fleet_protocol::DeviceId,
    pub model: Model,
    pub link: LinkConfig,
    pub health_sample: Duration,
    pub health: HealthPolicy,
    pub checks_interval: Duration,
    pub seq: SeqStore,
    /// Signalled each time a state message is handed to the broker (the
    /// simulator and tests wait on it).
    pub state_sent: Option<Arc<Notify>>,
    /// Signalled each time the broker acknowledges a state message (it is
    /// then the broker's, retained): the simulator powers a device off
    /// only after this, never with its only state still in a queue.
    pub state_acked: Option<Arc<Notify>>,
    /// Signalled at each accepted connection (CONNACK): an unchanged state
    /// is not sent again on a reconnect, so the simulator counts
    /// reconnections here.
    pub connected: Option<Arc<Notify>>,
    /// The certificate files and how they are renewed; `None`: never
    /// (plaintext development, the simulator's in-memory identities).
    pub renewal: Option<RenewalSetup>,
    /// `STATE/update`: where a new agent binary's trial is recorded
    /// ([`crate::update::agent_binary`]); `None`: no self-update (the simulator).
    pub update_dir: Option<PathBuf>,
}

/// Where the device's identity is and how it is renewed.
#[derive(Debug, Clone)]
pub struct RenewalSetup {
    pub files: crate::tls::TlsFiles,
    pub policy: RenewalPolicy,
}

/// A renewed certificate's TLS configuration, handed from the loop to the
/// connection task, which tries it at the next (clean) disconnect.
type SwapSlot = Arc<std::sync::Mutex<Option<Arc<rustls::ClientConfig>>>>;

/// Where events wait until the broker acknowledged them, with their
/// sequence numbers: the outbox file on a device, memory in the simulator.
#[derive(Debug, Clone)]
pub enum SeqStore {
    /// In memory only, numbering after this one (the simulator).
    Memory(u64),
    /// The outbox's redb file; `legacy_seq`: the sequence file of agents
    /// before the outbox, whose number is taken over once.
    Outbox {
        file: PathBuf,
        legacy_seq: Option<PathBuf>,
    },
}

/// How long a reboot by exit waits for the outbox to be acknowledged.
const REBOOT_FLUSH: Duration = Duration::from_secs(2);

/// Why [`run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The shutdown future completed, or the link closed for good.
    Shutdown,
    /// An update reboots by exiting (`update.reboot_by_exit`): whoever runs
    /// the agent starts it again on the same state directory, and that
    /// start is the boot (the simulator does, after `--reboot-ms`).
    Reboot,
}

/// What the link profile and the outbox settings add to [`RuntimeConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Bytes of records the outbox holds at most (health goes first).
    pub outbox_max_bytes: u64,
    /// Between attempts to use the outbox's file again after it failed.
    pub disk_retry: Duration,
    /// Outbox records published and not yet acknowledged, at most.
    pub inflight: usize,
    /// Bytes of those, at most (one record always goes).
    pub inflight_bytes: u64,
    /// Health samples taken offline are coalesced per this interval.
    pub coalesce: Duration,
    /// TCP connect, TLS handshake and MQTT CONNACK together.
    pub connect_timeout: Duration,
    /// Writing (flushing) one packet to the socket.
    pub write_timeout: Duration,
    /// Test hook: a directory whose files each hold one event (JSON, as
    /// fleet-protocol's `EventKind`); each file is removed, then its event
    /// numbered and committed like any other. `None`: off (always, in the field).
    pub event_hook_dir: Option<PathBuf>,
    /// Firmware updates (`[update]`); `None`: off.
    pub update: Option<crate::update::UpdateConfig>,
    /// Log uploads (`[logs]`); `None`: the upload-logs command is refused.
    pub logs: Option<crate::logs::LogsConfig>,
}

impl Default for RuntimeOptions {
    /// The normal link profile's values.
    fn default() -> Self {
        Self {
            outbox_max_bytes: 16 * 1024 * 1024,
            disk_retry: Duration::from_secs(30),
            inflight: 8,
            inflight_bytes: 32 * 1024,
            coalesce: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            event_hook_dir: None,
            update: None,
            logs: None,
        }
    }
}

/// What a QoS 1 publish is, for when the broker acknowledges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    /// The outbox record with this key.
    Record(u64),
    /// The state with this digest.
    State(u64),
}

/// The packet identifiers' tags, shared by the loop (which pushes one per
/// publish it hands over) and the connection task (which pops one per
/// `Outgoing::Publish`).
type Tags = Arc<std::sync::Mutex<VecDeque<Option<Tag>>>>;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot encode the last will: {0}")]
    Will(#[from] fleet_protocol::EncodeError),
}

fn mqtt_qos(qos: Qos) -> QoS {
    match qos {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
    }
}

/// The deadlines of the core's timers, on the monotonic clock.
#[derive(Debug, Default)]
struct Timers(Vec<(Timer, Instant)>);

impl Timers {
    fn arm(&mut self, timer: Timer, at: Instant) {
        self.0.retain(|(t, _)| *t != timer);
        self.0.push((timer, at));
    }

    fn next(&self) -> Option<(Timer, Instant)> {
        self.0.iter().copied().min_by_key(|(_, at)| *at)
    }

    fn disarm(&mut self, timer: Timer) {
        self.0.retain(|(t, _)| *t != timer);
    }
}

/// What carries out the core's actions: the MQTT client, the hardware, the
/// outbox, the timers and the checks task.
struct Io<H: Hardware> {
    device: fleet_protocol::DeviceId,
    hw: H,
    client: AsyncClient,
    outbox: Outbox,
    tags: Tags,
    /// A connection is up (the outbox drains only then).
    online: bool,
    timers: Timers,
    checks_tx: mpsc::Sender<Vec<CheckResult>>,
    state_sent: Option<Arc<Notify>>,
    state_acked: Option<Arc<Notify>>,
    /// Our DISCONNECT is queued.
    disconnecting: bool,
    renewal: Option<RenewalSetup>,
    swap: SwapSlot,
    /// The renewed certificate being tried.
    trying: Option<CertInfo>,
    /// The update driver, when updates are on.
    update: Option<mpsc::Sender<UpdateNote>>,
    logs: Option<crate::logs::LogsConfig>,
    /// Log uploads' answers: the command and the bytes taken, or why not.
    logs_tx: mpsc::Sender<(String, Result<u64, String>)>,
}

impl<H: Hardware> Io<H> {
    /// Tell the core about `input` and carry out what it decides, including
    /// the inputs that actions answer at once (a sample, a reboot attempt, a
    /// refused publish). The clock is read once per input.
    fn handle(&mut self, core: &mut AgentCore, input: Input) {
        let mut todo: VecDeque<CoreAction> = core.on(input, unix_ms()).into();
        // Once an event is refused, the later ones in this batch are handed
        // back too, so that events leave in sequence order.
        let mut events_refused = false;
        while let Some(action) = todo.pop_front() {
            let Some(answer) = self.perform(action, &mut events_refused) else {
                continue;
            };
            for follow in core.on(answer, unix_ms()).into_iter().rev() {
                todo.push_front(follow);
            }
        }
        self.pump();
    }

    /// Tell the update driver (if any); it never blocks the loop.
    fn note(&self, note: UpdateNote) {
        if let Some(tx) = &self.update {
            if let Err(e) = tx.try_send(note) {
                warn!(error = %e, "the update driver is busy; a note to it was dropped");
            }
        }
    }

    /// Hand the broker what the outbox says goes next, within the window.
    fn pump(&mut self) {
        if !self.online {
            return;
        }
        let mut refused = false;
        for record in self.outbox.next_to_send() {
            if refused {
                self.outbox.not_sent(record.key);
                continue;
            }
            let topic = Topic::new(self.device.clone(), record.kind).to_string();
            if let Err(e) = self.send(
                Some(Tag::Record(record.key)),
                topic,
                QoS::AtLeastOnce,
                false,
                record.payload,
            ) {
                debug!(error = %e, "publish queue full; the outbox tries again later");
                self.outbox.not_sent(record.key);
                refused = true;
            }
        }
    }

    /// Queue a publish with its tag (see the module documentation).
    fn send(
        &self,
        tag: Option<Tag>,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), rumqttc::ClientError> {
        let mut tags = self.tags.lock().expect("tags lock");
        tags.push_back(tag);
        let sent = self.client.try_publish(topic, qos, retain, payload);
        if sent.is_err() {
            tags.pop_back();
        }
        sent
    }

    /// A connection came up or went.
    fn link(&mut self, up: bool) {
        self.online = up;
        if !up {
            self.outbox.connection_lost();
        }
    }

    /// The broker acknowledged a publish of ours.
    fn acked(&mut self, core: &mut AgentCore, tag: Tag) {
        match tag {
            Tag::Record(key) => self.outbox.acked(key),
            Tag::State(digest) => {
                self.outbox.state_acknowledged(digest);
                self.handle(core, Input::StateAcknowledged(digest));
                if let Some(n) = &self.state_acked {
                    n.notify_one();
                }
            }
        }
        // Removing or saving may have found the disk failing.
        if let Some(why) = self.outbox.fault() {
            let why = why.to_owned();
            self.handle(core, Input::StorageFailed(why));
        }
        self.pump();
    }

    /// What the outbox's answer means for the core.
    fn stored(&self, stored: Stored) -> Option<Input> {
        match stored {
            Stored::Memory(why) => Some(Input::StorageFailed(why)),
            Stored::Committed | Stored::Refused => None,
        }
    }

    fn perform(&mut self, action: CoreAction, events_refused: &mut bool) -> Option<Input> {
        match action {
            CoreAction::Subscribe { topic, qos } => {
                if let Err(e) = self.client.try_subscribe(topic.to_string(), mqtt_qos(qos)) {
                    warn!(%topic, error = %e, "cannot queue subscription");
                }
                None
            }
            CoreAction::Publish {
                envelope,
                qos,
                retain,
            } => {
                let kind = envelope.payload.kind();
                if kind == TopicKind::Events && *events_refused {
                    return Some(Input::PublishRefused(envelope));
                }
                // The state's acknowledgement is remembered (by digest), so
                // an unchanged state is not sent again.
                let tag = match &envelope.payload {
                    Payload::State(state) => Some(Tag::State(state_digest(&self.device, state))),
                    _ => None,
                };
                let sent = match envelope.to_cbor() {
                    Ok(bytes) => match self.send(
                        tag,
                        envelope.topic().to_string(),
                        mqtt_qos(qos),
                        retain,
                        bytes,
                    ) {
                        Ok(()) => true,
                        Err(e) => {
                            debug!(%kind, error = %e, "publish queue full");
                            false
                        }
                    },
                    Err(e) => {
                        warn!(error = %e, "not sending an oversize message");
                        false
                    }
                };
                if sent {
                    if kind == TopicKind::State {
                        if let Some(n) = &self.state_sent {
                            n.notify_one();
                        }
                    }
                    None
                } else {
                    *events_refused |= kind == TopicKind::Events;
                    Some(Input::PublishRefused(envelope))
                }
            }
            CoreAction::Enqueue(event) => {
                let stored = self.outbox.add_event(event, unix_ms());
                if stored == Stored::Refused {
                    warn!("outbox full: an event that may be dropped was not kept");
                }
                self.stored(stored)
            }
            CoreAction::KeepHealth { sample, at_ms } => {
                let stored = self.outbox.add_health_sample(sample, at_ms)?;
                self.stored(stored)
            }
            CoreAction::SampleHealth => Some(Input::HealthSampled(self.hw.sample())),
            CoreAction::RunChecks => {
                let checks = self.hw.run_checks();
                let tx = self.checks_tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(checks.await).await;
                });
                None
            }
            CoreAction::Reboot { command } => Some(Input::RebootAttempted {
                command,
                outcome: self.hw.reboot(),
            }),
            CoreAction::UploadLogs { command, ticket } => {
                let Some(cfg) = self.logs.clone() else {
                    return Some(Input::LogsUploaded {
                        command,
                        outcome: Err(crate::logs::LogsError::NotConfigured.to_string()),
                    });
                };
                let tx = self.logs_tx.clone();
                let device = self.device.clone();
                tokio::spawn(async move {
                    let outcome = crate::logs::upload(&cfg, &device, &command, &ticket)
                        .await
                        .map_err(|e| e.to_string());
                    match &outcome {
                        Ok(bytes) => info!(%command, bytes, "logs uploaded"),
                        Err(why) => warn!(%command, error = %why, "logs not uploaded"),
                    }
                    let _ = tx.send((command, outcome)).await;
                });
                None
            }
            CoreAction::ArmTimer { timer, after } => {
                self.timers.arm(timer, Instant::now() + after);
                None
            }
            CoreAction::MakeCertRequest { new_key } => {
                Some(Input::CertRequestMade(match &self.renewal {
                    Some(r) => crate::renew::make_request(&r.files, &self.device, new_key),
                    None => Err("this agent has no certificate files".into()),
                }))
            }
            CoreAction::TryCertificate { cert_pem } => {
                let Some(r) = &self.renewal else {
                    return Some(Input::CertificateTried(Err(
                        "this agent has no certificate files".into(),
                    )));
                };
                match crate::renew::stage(&r.files, &self.device, &cert_pem) {
                    Ok((tls, info)) => {
                        info!(serial = %info.serial, "trying the renewed certificate (the old one is kept until it works)");
                        *self.swap.lock().expect("swap slot lock") = Some(tls);
                        if let Err(e) = self.client.try_disconnect() {
                            self.swap.lock().expect("swap slot lock").take();
                            crate::renew::abandon(&r.files);
                            return Some(Input::CertificateTried(Err(format!(
                                "cannot reconnect: {e}"
                            ))));
                        }
                        self.trying = Some(info);
                        None
                    }
                    Err(why) => {
                        crate::renew::abandon(&r.files);
                        Some(Input::CertificateTried(Err(why)))
                    }
                }
            }
            CoreAction::UpdateDesired {
                desired,
                sent_at_ms,
                retained,
            } => {
                self.note(UpdateNote::Desired {
                    desired,
                    sent_at_ms,
                    retained,
                });
                None
            }
            CoreAction::Disconnect => {
                if let Err(e) = self.client.try_disconnect() {
                    warn!(device = %self.device, error = %e, "cannot queue the disconnect");
                } else {
                    self.disconnecting = true;
                }
                None
            }
        }
    }
}

/// The last will for the connection identified by `session`.
fn last_will(device: &fleet_protocol::DeviceId, session: u64) -> Result<LastWill, RuntimeError> {
    let will = Envelope::new(
        device.clone(),
        session,
        Payload::Presence(Presence {
            status: PresenceStatus::Offline,
            agent: agent_version(),
            session: Some(session),
        }),
    );
    Ok(LastWill::new(
        will.topic().to_string(),
        will.to_cbor()?,
        QoS::AtLeastOnce,
        true,
    ))
}

fn mqtt_options(cfg: &RuntimeConfig, session: u64) -> Result<MqttOptions, RuntimeError> {
    let mut opts = MqttOptions::new(cfg.device.as_str(), &cfg.link.host, cfg.link.port);
    opts.set_keep_alive(cfg.link.keep_alive)
        .set_clean_session(false)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_last_will(last_will(&cfg.device, session)?);
    if let Some(tls) = &cfg.link.tls {
        opts.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::clone(tls)),
        ));
    }
    Ok(opts)
}

/// The connection task ends with the agent, however the agent ends
/// (returning, or its future dropped): a dead agent holds no connection open.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the connection task tells the agent loop.
enum Link {
    Connected {
        session_present: bool,
        session: u64,
    },
    Lost,
    Message(rumqttc::Publish),
    /// The broker acknowledged this publish (an outbox record, a state).
    Acked(Tag),
    /// Our own DISCONNECT went out.
    Closed,
    /// The connection with a renewed certificate succeeded, or why not
    /// (then the old certificate is in use again).
    Tried(Result<(), String>),
}

/// Own the MQTT connection: poll it without ever being cancelled (a
/// connection attempt dropped half-way would close a socket the broker
/// already counts as this device, and fire its will), back off with jitter
/// after errors, and give every new connection its own session id and will.
async fn drive(
    mut eventloop: EventLoop,
    device: fleet_protocol::DeviceId,
    link: LinkConfig,
    mut session: u64,
    tx: mpsc::Sender<Link>,
    swap: SwapSlot,
    tags: Tags,
) {
    // QoS 1 publishes in flight: packet id -> what it is.
    let mut keys: HashMap<u16, Tag> = HashMap::new();
    // Forget every publish not yet acknowledged: rumqttc's copies (the
    // outbox sends its own again) and the tags, under the tags' lock so no
    // publish slips in between.
    let forget = |eventloop: &mut EventLoop, keys: &mut HashMap<u16, Tag>| {
        let mut tags = tags.lock().expect("tags lock");
        eventloop.clean();
        eventloop
            .pending
            .retain(|r| !matches!(r, Request::Publish(_)));
        eventloop.state.events.clear();
        tags.clear();
        keys.clear();
    };
    let mut backoff = Backoff::new(link.backoff_base, link.backoff_max);
    let mut rng = SmallRng::from_entropy();
    let mut current = link.tls.clone();
    // A renewed certificate whose first connection is being made.
    let mut trying: Option<Arc<rustls::ClientConfig>> = None;
    let set_tls = |eventloop: &mut EventLoop, tls: &Arc<rustls::ClientConfig>| {
        eventloop
            .mqtt_options
            .set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(Arc::clone(tls)),
            ));
    };
    loop {
        let event = eventloop.poll().await;
        let sent = match event {
            Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                info!(session_present = ack.session_present, "connected to broker");
                backoff.reset();
                if let Some(tls) = trying.take() {
                    current = Some(tls);
                    if tx.send(Link::Tried(Ok(()))).await.is_err() {
                        return;
                    }
                }
                tx.send(Link::Connected {
                    session_present: ack.session_present,
                    session,
                })
                .await
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => tx.send(Link::Message(p)).await,
            Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Publish(pkid))) => {
                let tag = tags.lock().expect("tags lock").pop_front().flatten();
                if let Some(tag) = tag {
                    keys.insert(pkid, tag);
                }
                Ok(())
            }
            Ok(MqttEvent::Incoming(Packet::PubAck(ack))) => match keys.remove(&ack.pkid) {
                Some(tag) => tx.send(Link::Acked(tag)).await,
                None => Ok(()),
            },
            Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                let renewed = swap.lock().expect("swap slot lock").take();
                let Some(tls) = renewed else {
                    let _ = tx.send(Link::Closed).await;
                    return;
                };
                // A clean disconnect (no will: the device never looks
                // offline), then the same session with the new certificate.
                forget(&mut eventloop, &mut keys);
                set_tls(&mut eventloop, &tls);
                trying = Some(tls);
                session = unix_ms().max(session + 1);
                if let Ok(will) = last_will(&device, session) {
                    eventloop.mqtt_options.set_last_will(will);
                }
                tx.send(Link::Lost).await
            }
            Ok(_) => Ok(()),
            Err(e) if trying.is_some() => {
                // The renewed certificate did not connect: back to the old.
                forget(&mut eventloop, &mut keys);
                trying = None;
                if let Some(old) = &current {
                    set_tls(&mut eventloop, old);
                }
                warn!(device = %device, error = %e, "the renewed certificate did not connect; the old one is used again");
                tx.send(Link::Tried(Err(format!("connection with it failed: {e}"))))
                    .await
            }
            Err(e) => {
                forget(&mut eventloop, &mut keys);
                let delay = backoff.next_delay(&mut rng);
                warn!(device = %device, error = %e, retry_in_ms = delay.as_millis() as u64, "broker connection lost");
                let sent = tx.send(Link::Lost).await;
                tokio::time::sleep(delay).await;
                // The next connection is a new session with its own will.
                session = unix_ms().max(session + 1);
                match last_will(&device, session) {
                    Ok(will) => {
                        eventloop.mqtt_options.set_last_will(will);
                    }
                    Err(e) => warn!(error = %e, "cannot encode the last will"),
                }
                sent
            }
        };
        if sent.is_err() {
            return; // the agent loop is gone
        }
    }
}

/// Run the agent until `shutdown` completes; then say offline and disconnect.
/// The link profile is the normal one ([`RuntimeOptions::default`]).
pub async fn run<H: Hardware>(
    cfg: RuntimeConfig,
    hw: H,
    shutdown: impl Future<Output = ()>,
) -> Result<Stopped, RuntimeError> {
    run_with(cfg, RuntimeOptions::default(), hw, shutdown).await
}

/// [`run`] with the link profile's and the outbox's settings.
pub async fn run_with<H: Hardware>(
    cfg: RuntimeConfig,
    opts: RuntimeOptions,
    hw: H,
    shutdown: impl Future<Output = ()>,
) -> Result<Stopped, RuntimeError> {
    // A new agent binary on trial: decided here if it can be (a rollback
    // starts the previous binary and does not return), else watched below.
    let trial = cfg
        .update_dir
        .as_deref()
        .and_then(|dir| agent_binary::begin(dir, &agent_version(), unix_ms()));
    let session = unix_ms();
    let mqtt = mqtt_options(&cfg, session)?;
    let (client, mut eventloop) = AsyncClient::new(mqtt, CLIENT_CAPACITY);
    // rumqttc 0.25 has one network timeout: for connecting (TCP, TLS
    // handshake, CONNACK) and for flushing each write. The larger of the two
    // settings bounds both.
    let mut net = NetworkOptions::new();
    net.set_connection_timeout(
        opts.connect_timeout
            .max(opts.write_timeout)
            .as_secs()
            .max(1),
    );
    eventloop.set_network_options(net);
    let tags: Tags = Arc::default();
    let swap: SwapSlot = Arc::default();
    let (link_tx, mut link_rx) = mpsc::channel::<Link>(CLIENT_CAPACITY);
    let link = AbortOnDrop(tokio::spawn(drive(
        eventloop,
        cfg.device.clone(),
        cfg.link.clone(),
        session,
        link_tx,
        Arc::clone(&swap),
        Arc::clone(&tags),
    )));
    let (checks_tx, mut checks_rx) = mpsc::channel::<Vec<CheckResult>>(1);
    let (logs_tx, mut logs_rx) = mpsc::channel::<(String, Result<u64, String>)>(4);

    let (file, legacy_seq, start_seq) = match &cfg.seq {
        SeqStore::Memory(n) => (None, None, *n),
        SeqStore::Outbox { file, legacy_seq } => (Some(file.clone()), legacy_seq.clone(), 0),
    };
    let (outbox, open_fault) = Outbox::open(
        cfg.device.clone(),
        &OutboxConfig {
            path: file,
            legacy_seq,
            limits: Limits {
                max_bytes: opts.outbox_max_bytes,
                window: opts.inflight.max(1),
                window_bytes: opts.inflight_bytes,
            },
            coalesce: opts.coalesce,
            start_seq,
            retry: opts.disk_retry,
        },
    );
    let last_seq = outbox.last_seq();
    // Updates: boot the installer first (the firmware reported is the
    // booted slot's), then the driver beside this loop.
    let mut firmware = hw.firmware();
    let mut update_err = None;
    let mut update = None;
    if let Some(ucfg) = &opts.update {
        match crate::update::driver::prepare(ucfg) {
            Ok(prepared) => {
                if let Some(v) = &prepared.firmware {
                    firmware = v.clone();
                }
                let repo = crate::update::repository::TufRepository::new(ucfg, cfg.model.clone());
                update = Some(crate::update::driver::spawn(
                    ucfg.clone(),
                    prepared,
                    firmware.clone(),
                    agent_version(),
                    repo,
                ));
            }
            Err(e) => {
                warn!(error = %e, "updates are configured but cannot start");
                update_err = Some(format!("updates cannot start: {e}"));
            }
        }
    }
    let (update_tx, mut told_rx, _update_task) = match update {
        Some((tx, rx, task)) => (Some(tx), Some(rx), Some(AbortOnDrop(task))),
        None => (None, None, None),
    };
    let mut core = AgentCore::new(
        CoreConfig {
            device: cfg.device.clone(),
            model: cfg.model.clone(),
            firmware,
            agent: agent_version(),
            health_sample: cfg.health_sample,
            health: cfg.health.clone(),
            checks_interval: cfg.checks_interval,
            // A fresh id per start: events numbered in this run are told
            // apart from those of any run before, whatever the sequence file says.
            boot: rand::random::<u64>().max(1),
            renewal: cfg.renewal.as_ref().map(|r| r.policy.clone()),
        },
        last_seq,
    );
    let mut io = Io {
        device: cfg.device.clone(),
        hw,
        client,
        outbox,
        tags,
        online: false,
        timers: Timers::default(),
        checks_tx,
        state_sent: cfg.state_sent.clone(),
        state_acked: cfg.state_acked.clone(),
        disconnecting: false,
        renewal: cfg.renewal.clone(),
        swap,
        trying: None,
        update: update_tx,
        logs: opts.logs.clone(),
        logs_tx,
    };
    info!(device = %cfg.device, broker = %format!("{}:{}", cfg.link.host, cfg.link.port), "agent starting");
    if let Some(digest) = io.outbox.acked_state() {
        // An earlier run's acknowledged state: not sent again unchanged.
        io.handle(&mut core, Input::StateAcknowledged(digest));
    }
    io.handle(&mut core, Input::Started);
    if let Some(why) = open_fault {
        io.handle(&mut core, Input::StorageFailed(why));
    }
    if let Some(message) = update_err {
        io.handle(&mut core, Input::Report(EventKind::Error { message }));
    }
    let trial_connected = Arc::new(Notify::new());
    let (trial_tx, mut trial_rx) = mpsc::channel::<()>(1);
    deliver_agent_results(&mut io, &mut core, cfg.update_dir.as_deref());
    let _trial = trial.map(|t| {
        AbortOnDrop(tokio::spawn(
            t.watch(Arc::clone(&trial_connected), trial_tx),
        ))
    });
    let mut hook = opts
        .event_hook_dir
        .clone()
        .map(|dir| (dir, tokio::time::interval(Duration::from_millis(100))));
    if let Some(r) = &cfg.renewal {
        match crate::renew::current(&r.files) {
            Ok(info) => io.handle(&mut core, Input::CertificateInUse(info)),
            Err(e) => {
                warn!(error = %e, "cannot read the certificate's dates; it will not be renewed")
            }
        }
    }

    let mut restart_into: Option<PathBuf> = None;
    let mut stopped = Stopped::Shutdown;
    // A reboot by exit waits (bounded) for the broker to acknowledge what
    // the outbox holds, so the `rebooting` report leaves before the device
    // goes (a device that never comes back is then timed out by the
    // controller, not left `installing`).
    let mut reboot_at: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        if let Some(at) = reboot_at {
            if !io.online || io.outbox.policy().is_empty() || tokio::time::Instant::now() >= at {
                info!("rebooting into the new slot: the agent stops (update.reboot_by_exit)");
                io.handle(&mut core, Input::ShutdownRequested);
                stopped = Stopped::Reboot;
                break;
            }
        }
        let reboot_due = async {
            match reboot_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let next_timer = io.timers.next();
        let timer_due = async {
            match next_timer {
                Some((_, at)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let retry_in = io.outbox.retry_in(unix_ms());
        let disk_due = async {
            match retry_in {
                Some(after) => tokio::time::sleep(after).await,
                None => std::future::pending().await,
            }
        };
        let told_due = async {
            match &mut told_rx {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let hook_due = async {
            match &mut hook {
                Some((dir, tick)) => {
                    tick.tick().await;
                    dir.clone()
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => {
                io.handle(&mut core, Input::ShutdownRequested);
                break;
            }
            event = link_rx.recv() => match event {
                Some(Link::Connected { session_present, session }) => {
                    io.link(true);
                    if let Some(n) = &cfg.connected {
                        n.notify_one();
                    }
                    trial_connected.notify_one();
                    // What was coalesced offline, and what was dropped, go out
                    // with everything else waiting.
                    if let Some(stored) = io.outbox.flush_health() {
                        if let Some(input) = io.stored(stored) {
                            io.handle(&mut core, input);
                        }
                    }
                    if let Some(dropped) = io.outbox.unreported_drops() {
                        if dropped.events > 0 {
                            warn!(events = dropped.events, "the outbox dropped events (boot, check recovered, error) while full");
                        }
                        io.handle(&mut core, Input::Report(dropped.report()));
                    }
                    io.handle(&mut core, Input::Connected { session_present, session });
                    io.note(UpdateNote::Connected(true));
                }
                Some(Link::Acked(tag)) => io.acked(&mut core, tag),
                Some(Link::Message(p)) => {
                    match incoming(&cfg.device, &p.topic, &p.payload, p.retain) {
                        Ok(input) => io.handle(&mut core, input),
                        Err(e) => warn!(error = %e, "message ignored"),
                    }
                }
                Some(Link::Lost) => {
                    io.link(false);
                    io.handle(&mut core, Input::Disconnected);
                    io.note(UpdateNote::Connected(false));
                }
                Some(Link::Tried(result)) => {
                    let tried = io.trying.take();
                    let answer = match (result, &io.renewal, tried) {
                        (Ok(()), Some(r), Some(info)) => crate::renew::commit(&r.files).map(|()| info),
                        (Ok(()), _, _) => Err("no renewal was being tried".into()),
                        (Err(why), r, _) => {
                            if let Some(r) = r {
                                crate::renew::abandon(&r.files);
                            }
                            Err(why)
                        }
                    };
                    io.handle(&mut core, Input::CertificateTried(answer));
                }
                Some(Link::Closed) | None => break,
            },
            () = timer_due => {
                if let Some((timer, _)) = next_timer {
                    io.timers.disarm(timer);
                    io.handle(&mut core, Input::TimerFired(timer));
                }
            }
            Some((command, outcome)) = logs_rx.recv() => {
                io.handle(&mut core, Input::LogsUploaded { command, outcome });
            }
            Some(results) = checks_rx.recv() => {
                io.note(UpdateNote::Checks(results.clone()));
                io.handle(&mut core, Input::ChecksCompleted(results));
            }
            Some(()) = trial_rx.recv() => deliver_agent_results(&mut io, &mut core, cfg.update_dir.as_deref()),
            Some(told) = told_due => match told {
                Told::Report(kind) => io.handle(&mut core, Input::Report(kind)),
                Told::Status(status) => io.handle(&mut core, Input::UpdateStatus(status)),
                Told::Firmware(version) => io.handle(&mut core, Input::FirmwareChanged(version)),
                Told::Exit => {
                    reboot_at = Some(tokio::time::Instant::now() + REBOOT_FLUSH);
                }
                Told::RestartAgent(exe) => {
                    info!(exe = %exe.display(), "a new agent binary is in place: restarting into it");
                    io.handle(&mut core, Input::ShutdownRequested);
                    restart_into = Some(exe);
                    break;
                }
            },
            () = reboot_due => {}
            () = disk_due => {
                if let Some(was) = io.outbox.retry_disk(unix_ms()) {
                    debug!(was = %was, "storage recovered");
                    io.handle(&mut core, Input::StorageRecovered);
                }
            }
            dir = hook_due => {
                for kind in take_hook_events(&dir) {
                    io.handle(&mut core, Input::Report(kind));
                }
            }
        }
    }
    // Samples of the interval being filled are kept for the next run.
    io.outbox.flush_health();

    if io.disconnecting {
        // Let the connection task send the offline presence and DISCONNECT.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(event) = link_rx.recv().await {
                if matches!(event, Link::Closed | Link::Lost) {
                    break;
                }
            }
        })
        .await;
    }
    drop(link);
    info!(device = %cfg.device, "agent stopped");
    if let Some(exe) = restart_into {
        // The outbox and the update state are on disk; this process is
        // replaced (exec), and the new binary's start is its trial.
        drop(io);
        let e = agent_binary::restart(&exe);
        warn!(error = %e, "cannot start the new agent binary; the next start of the service will");
    }
    Ok(stopped)
}

/// The agent's own update results waiting in `dir` go to the core (which
/// numbers them and commits them to the outbox); then their files go.
fn deliver_agent_results<H: Hardware>(
    io: &mut Io<H>,
    core: &mut AgentCore,
    dir: Option<&std::path::Path>,
) {
    for (file, kind) in dir.map(agent_binary::pending_results).unwrap_or_default() {
        io.handle(core, Input::Report(kind));
        agent_binary::delivered(&file);
    }
}

/// The test hook's events waiting in `dir`, oldest name first. Each file
/// is removed before its event is returned, so an event is never made
/// twice (a crash in between loses the file's event, which was never
/// acknowledged).
fn take_hook_events(dir: &std::path::Path) -> Vec<EventKind> {
    let mut out = Vec::new();
    for path in crate::durable::json_files(dir) {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if std::fs::remove_file(&path).is_err() {
            continue;
        }
        match serde_json::from_str::<EventKind>(&text) {
            Ok(kind) => out.push(kind),
            Err(e) => warn!(file = %path.display(), error = %e, "test hook: not an event"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_events_are_taken_in_name_order_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("b.json"),
            r#"{"error":{"message":"second"}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("a.json"),
            r#"{"error":{"message":"first"}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("c.json"), "not json").unwrap();
        std::fs::write(dir.path().join("d.tmp"), "ignored").unwrap();
        let got = take_hook_events(dir.path());
        assert_eq!(
            got,
            vec![
                EventKind::Error {
                    message: "first".into()
                },
                EventKind::Error {
                    message: "second".into()
                }
            ]
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "only the file that is not .json stays");
        assert!(take_hook_events(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn timers_fire_earliest_first_and_rearm_replaces() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        assert_eq!(timers.next(), None);
        timers.arm(Timer::Checks, t0 + Duration::from_secs(5));
        timers.arm(Timer::Health, t0 + Duration::from_secs(9));
        assert_eq!(
            timers.next(),
            Some((Timer::Checks, t0 + Duration::from_secs(5)))
        );
        timers.arm(Timer::Checks, t0 + Duration::from_secs(20));
        assert_eq!(
            timers.next(),
            Some((Timer::Health, t0 + Duration::from_secs(9)))
        );
        timers.disarm(Timer::Health);
        assert_eq!(
            timers.next(),
            Some((Timer::Checks, t0 + Duration::from_secs(20)))
        );
    }
}
