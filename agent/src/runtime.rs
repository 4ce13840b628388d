//! The agent's event loop: the I/O around the pure [`AgentCore`]. It owns
//! the MQTT connection task (client id = device id, `clean_session = false`,
//! last will = offline, reconnect with backoff), the hardware, the timers and
//! the sequence store; it turns what happens into [`Input`]s, reading the
//! clock once per input, and carries out the [`CoreAction`]s the core returns.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fleet_protocol::{CheckResult, Envelope, Model, Payload, Presence, PresenceStatus, TopicKind};
use rand::{rngs::SmallRng, SeedableRng};
use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Packet, QoS};
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
    /// The certificate files and how they are renewed; `None`: never
    /// (plaintext development, the simulator's in-memory identities).
    pub renewal: Option<RenewalSetup>,
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

/// Where the last event sequence number used is kept: a small file on a
/// device, memory in the simulator. The runtime reads it once at start and
/// writes it when the core says so ([`CoreAction::PersistSeq`]).
#[derive(Debug, Clone)]
pub enum SeqStore {
    Memory(u64),
    File { path: PathBuf },
}

#[derive(Debug, thiserror::Error)]
pub enum SeqError {
    #[error("cannot read the event sequence number from {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the event sequence file {path} holds {content:?}, not a number")]
    Corrupt { path: PathBuf, content: String },
    #[error("cannot write the event sequence number to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl SeqStore {
    pub fn file(path: PathBuf) -> Self {
        SeqStore::File { path }
    }

    /// The last sequence number persisted; 0 when none was yet.
    pub fn load(&self) -> Result<u64, SeqError> {
        match self {
            SeqStore::Memory(n) => Ok(*n),
            SeqStore::File { path } => match std::fs::read_to_string(path) {
                Ok(text) => text.trim().parse().map_err(|_| SeqError::Corrupt {
                    path: path.clone(),
                    content: text.chars().take(40).collect(),
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
                Err(source) => Err(SeqError::Read {
                    path: path.clone(),
                    source,
                }),
            },
        }
    }

    /// Persist `seq` as the last number used. The file is replaced whole
    /// (write, then rename), so a power cut leaves the old or the new number.
    pub fn save(&mut self, seq: u64) -> Result<(), SeqError> {
        match self {
            SeqStore::Memory(n) => {
                *n = seq;
                Ok(())
            }
            SeqStore::File { path } => {
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, seq.to_string())
                    .and_then(|()| std::fs::rename(&tmp, &*path))
                    .map_err(|source| SeqError::Write {
                        path: path.clone(),
                        source,
                    })
            }
        }
    }
}

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
/// sequence store, the timers and the checks task.
struct Io<H: Hardware> {
    device: fleet_protocol::DeviceId,
    hw: H,
    client: AsyncClient,
    seq: SeqStore,
    timers: Timers,
    checks_tx: mpsc::Sender<Vec<CheckResult>>,
    state_sent: Option<Arc<Notify>>,
    /// Our DISCONNECT is queued.
    disconnecting: bool,
    renewal: Option<RenewalSetup>,
    swap: SwapSlot,
    /// The renewed certificate being tried.
    trying: Option<CertInfo>,
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
                let sent = match envelope.to_cbor() {
                    Ok(bytes) => match self.client.try_publish(
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
            CoreAction::PersistSeq(n) => {
                if let Err(e) = self.seq.save(n) {
                    warn!(error = %e, "cannot persist the event sequence number");
                }
                None
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
) {
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
            Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                let renewed = swap.lock().expect("swap slot lock").take();
                let Some(tls) = renewed else {
                    let _ = tx.send(Link::Closed).await;
                    return;
                };
                // A clean disconnect (no will: the device never looks
                // offline), then the same session with the new certificate.
                eventloop.clean();
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
                trying = None;
                if let Some(old) = &current {
                    set_tls(&mut eventloop, old);
                }
                warn!(device = %device, error = %e, "the renewed certificate did not connect; the old one is used again");
                tx.send(Link::Tried(Err(format!("connection with it failed: {e}"))))
                    .await
            }
            Err(e) => {
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
pub async fn run<H: Hardware>(
    cfg: RuntimeConfig,
    hw: H,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RuntimeError> {
    let session = unix_ms();
    let opts = mqtt_options(&cfg, session)?;
    let (client, eventloop) = AsyncClient::new(opts, CLIENT_CAPACITY);
    let swap: SwapSlot = Arc::default();
    let (link_tx, mut link_rx) = mpsc::channel::<Link>(CLIENT_CAPACITY);
    let link = AbortOnDrop(tokio::spawn(drive(
        eventloop,
        cfg.device.clone(),
        cfg.link.clone(),
        session,
        link_tx,
        Arc::clone(&swap),
    )));
    let (checks_tx, mut checks_rx) = mpsc::channel::<Vec<CheckResult>>(1);

    let last_seq = cfg.seq.load().unwrap_or_else(|e| {
        warn!(error = %e, "event sequence numbers start again from 1");
        0
    });
    let mut core = AgentCore::new(
        CoreConfig {
            device: cfg.device.clone(),
            model: cfg.model.clone(),
            firmware: hw.firmware(),
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
        seq: cfg.seq.clone(),
        timers: Timers::default(),
        checks_tx,
        state_sent: cfg.state_sent.clone(),
        disconnecting: false,
        renewal: cfg.renewal.clone(),
        swap,
        trying: None,
    };
    info!(device = %cfg.device, broker = %format!("{}:{}", cfg.link.host, cfg.link.port), "agent starting");
    io.handle(&mut core, Input::Started);
    if let Some(r) = &cfg.renewal {
        match crate::renew::current(&r.files) {
            Ok(info) => io.handle(&mut core, Input::CertificateInUse(info)),
            Err(e) => {
                warn!(error = %e, "cannot read the certificate's dates; it will not be renewed")
            }
        }
    }

    tokio::pin!(shutdown);
    loop {
        let next_timer = io.timers.next();
        let timer_due = async {
            match next_timer {
                Some((_, at)) => tokio::time::sleep_until(at).await,
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
                    io.handle(&mut core, Input::Connected { session_present, session });
                }
                Some(Link::Message(p)) => {
                    match incoming(&cfg.device, &p.topic, &p.payload, p.retain) {
                        Ok(input) => io.handle(&mut core, input),
                        Err(e) => warn!(error = %e, "message ignored"),
                    }
                }
                Some(Link::Lost) => io.handle(&mut core, Input::Disconnected),
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
            Some(results) = checks_rx.recv() => io.handle(&mut core, Input::ChecksCompleted(results)),
        }
    }

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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_seq_survives_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("event-seq");
        let mut a = SeqStore::file(path.clone());
        assert_eq!(a.load().unwrap(), 0);
        a.save(1).unwrap();
        a.save(2).unwrap();
        let b = SeqStore::file(path.clone());
        assert_eq!(b.load().unwrap(), 2);
        let mut m = SeqStore::Memory(0);
        m.save(5).unwrap();
        assert_eq!(m.load().unwrap(), 5);
        std::fs::write(&path, "not a number").unwrap();
        assert!(matches!(b.load(), Err(SeqError::Corrupt { .. })));
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
