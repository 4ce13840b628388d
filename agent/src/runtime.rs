//! The agent's event loop: the I/O around the pure parts. One MQTT session
//! (client id = device id, `clean_session = false`, last will = offline),
//! presence and state on every connection, health on the [`HealthReporter`]'s
//! say, checks on a timer beside the session, desired state and commands in.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fleet_protocol::{
    Action, CheckResult, Command, Envelope, Event, EventKind, Model, Payload, Presence,
    PresenceStatus, State, Topic, TopicKind, UpdateStatus,
};
use rand::{rngs::SmallRng, SeedableRng};
use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::hardware::Hardware;
use crate::health::{HealthPolicy, HealthReporter};
use crate::reporter::{check_events, StateReporter};
use crate::{agent_version, unix_ms};

/// Events kept in memory while the broker is unreachable (the durable
/// on-disk outbox replaces this bound later).
const PENDING_EVENTS: usize = 256;
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
}

/// Where the next event sequence number lives: a small file on a device,
/// memory in the simulator.
#[derive(Debug, Clone)]
pub enum SeqStore {
    Memory(u64),
    File { path: PathBuf, next: Option<u64> },
}

impl SeqStore {
    pub fn file(path: PathBuf) -> Self {
        SeqStore::File { path, next: None }
    }

    /// The next sequence number, persisted before it is used.
    pub fn next_seq(&mut self) -> u64 {
        match self {
            SeqStore::Memory(n) => {
                *n += 1;
                *n
            }
            SeqStore::File { path, next } => {
                let current = next.unwrap_or_else(|| {
                    std::fs::read_to_string(&*path)
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(0)
                });
                let n = current + 1;
                let tmp = path.with_extension("tmp");
                if let Err(e) =
                    std::fs::write(&tmp, n.to_string()).and_then(|()| std::fs::rename(&tmp, &*path))
                {
                    warn!(path = %path.display(), error = %e, "cannot persist the event sequence number");
                }
                *next = Some(n);
                n
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot encode the last will: {0}")]
    Will(#[from] fleet_protocol::EncodeError),
}

fn qos(kind: TopicKind) -> QoS {
    match kind {
        TopicKind::Health => QoS::AtMostOnce,
        _ => QoS::AtLeastOnce,
    }
}

struct Agent<H: Hardware> {
    cfg: RuntimeConfig,
    hw: H,
    client: AsyncClient,
    connected: bool,
    state: StateReporter,
    health: HealthReporter,
    checks: Vec<CheckResult>,
    checks_done: bool,
    config_rev: u32,
    clock_offset_ms: Option<i64>,
    pending_events: VecDeque<Event>,
    /// The current connection's id, also in its last will.
    session: u64,
}

impl<H: Hardware> Agent<H> {
    fn publish(&self, payload: Payload) -> bool {
        let env = Envelope::new(self.cfg.device.clone(), unix_ms(), payload);
        let kind = env.payload.kind();
        let bytes = match env.to_cbor() {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "not sending an oversize message");
                return false;
            }
        };
        match self
            .client
            .try_publish(env.topic().to_string(), qos(kind), kind.retained(), bytes)
        {
            Ok(()) => true,
            Err(e) => {
                debug!(%kind, error = %e, "publish queue full");
                false
            }
        }
    }

    fn current_state(&self) -> State {
        State {
            model: self.cfg.model.clone(),
            firmware: self.hw.firmware(),
            agent: agent_version(),
            update: UpdateStatus::Idle,
            checks: self.checks.clone(),
            config_rev: self.config_rev,
        }
    }

    fn send_state_if_changed(&mut self) {
        if !self.connected || !self.checks_done {
            return;
        }
        let state = self.current_state();
        if self.state.needs_send(&state) && self.publish(Payload::State(state.clone())) {
            self.state.sent(state);
            if let Some(n) = &self.cfg.state_sent {
                n.notify_one();
            }
        }
    }

    fn push_event(&mut self, kind: EventKind) {
        let event = Event {
            seq: self.cfg.seq.next_seq(),
            at_ms: unix_ms(),
            kind,
        };
        if self.pending_events.len() >= PENDING_EVENTS {
            self.pending_events.pop_front();
        }
        self.pending_events.push_back(event);
        self.flush_events();
    }

    fn flush_events(&mut self) {
        while self.connected {
            let Some(event) = self.pending_events.front().cloned() else {
                break;
            };
            if !self.publish(Payload::Event(event)) {
                break;
            }
            self.pending_events.pop_front();
        }
    }

    fn on_connected(&mut self, session_present: bool) {
        self.connected = true;
        if !session_present {
            // The broker kept nothing for us: subscribe again.
            for kind in [TopicKind::Desired, TopicKind::Cmd] {
                let topic = Topic::new(self.cfg.device.clone(), kind).to_string();
                if let Err(e) = self.client.try_subscribe(topic, QoS::AtLeastOnce) {
                    warn!(error = %e, "cannot queue subscription");
                }
            }
        }
        self.publish(Payload::Presence(Presence {
            status: PresenceStatus::Online,
            agent: agent_version(),
            session: Some(self.session),
        }));
        self.state.connection_established();
        self.send_state_if_changed();
        self.flush_events();
        // A fresh sample right away (sent if none went out yet, or if due).
        self.on_health_tick();
    }

    fn on_health_tick(&mut self) {
        let mut sample = self.hw.sample();
        sample.clock_offset_ms = self.clock_offset_ms;
        let now = unix_ms();
        if self.connected
            && self.health.should_report(now, &sample)
            && self.publish(Payload::Health(sample.clone()))
        {
            self.health.reported(now, &sample);
        }
    }

    fn on_checks(&mut self, results: Vec<CheckResult>) {
        for event in check_events(&self.checks, &results) {
            self.push_event(event);
        }
        self.checks = results;
        self.checks_done = true;
        self.send_state_if_changed();
    }

    /// Returns true when the checks must run now.
    fn on_message(&mut self, topic: &str, payload: &[u8], retained: bool) -> bool {
        let topic = match Topic::parse(topic) {
            Ok(t) if t.device == self.cfg.device => t,
            Ok(t) => {
                warn!(topic = %t, "message for another device ignored");
                return false;
            }
            Err(e) => {
                warn!(error = %e, "message on an unknown topic ignored");
                return false;
            }
        };
        let env = match Envelope::from_cbor_on(&topic, payload) {
            Ok(env) => env,
            Err(e) => {
                warn!(%topic, error = %e, "malformed message ignored");
                return false;
            }
        };
        let offset = i64::try_from(unix_ms()).unwrap_or(i64::MAX)
            - i64::try_from(env.sent_at_ms).unwrap_or(i64::MAX);
        match env.payload {
            Payload::Desired(desired) => {
                // A retained copy may be old; only a live one dates the clock.
                if !retained {
                    self.clock_offset_ms = Some(offset);
                }
                if desired.config_rev != self.config_rev {
                    info!(rev = desired.config_rev, "new desired config revision");
                    self.config_rev = desired.config_rev;
                    self.send_state_if_changed();
                }
                if let Some(target) = desired.firmware {
                    debug!(version = %target.version, "desired firmware noted; updates are not handled by this agent build");
                }
                false
            }
            Payload::Command(cmd) => self.on_command(cmd),
            other => {
                warn!(kind = %other.kind(), "unexpected message kind ignored");
                false
            }
        }
    }

    fn on_command(&mut self, cmd: Command) -> bool {
        let result = |ok: bool, message: &str| EventKind::CommandResult {
            id: cmd.id.clone(),
            ok,
            message: message.to_owned(),
        };
        if cmd.expires_at_ms < unix_ms() {
            self.push_event(result(false, "expired before it arrived"));
            return false;
        }
        info!(id = %cmd.id, action = ?cmd.action, "command received");
        match cmd.action {
            Action::RunChecks => {
                self.push_event(result(true, "checks started"));
                true
            }
            Action::Reboot => {
                let outcome = self.hw.reboot();
                match outcome {
                    Ok(()) => self.push_event(result(true, "rebooting")),
                    Err(e) => self.push_event(result(false, &e)),
                }
                false
            }
            Action::UploadLogs => {
                self.push_event(result(
                    false,
                    "log upload is not supported by this agent build",
                ));
                false
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
) {
    let mut backoff = Backoff::new(link.backoff_base, link.backoff_max);
    let mut rng = SmallRng::from_entropy();
    loop {
        let event = eventloop.poll().await;
        let sent = match event {
            Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                info!(session_present = ack.session_present, "connected to broker");
                backoff.reset();
                tx.send(Link::Connected {
                    session_present: ack.session_present,
                    session,
                })
                .await
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => tx.send(Link::Message(p)).await,
            Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                let _ = tx.send(Link::Closed).await;
                return;
            }
            Ok(_) => Ok(()),
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
    let (link_tx, mut link_rx) = mpsc::channel::<Link>(CLIENT_CAPACITY);
    let link = AbortOnDrop(tokio::spawn(drive(
        eventloop,
        cfg.device.clone(),
        cfg.link.clone(),
        session,
        link_tx,
    )));
    let mut health_tick = tokio::time::interval(cfg.health_sample);
    health_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut checks_tick = tokio::time::interval(cfg.checks_interval);
    checks_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (checks_tx, mut checks_rx) = mpsc::channel::<Vec<CheckResult>>(1);
    let mut checks_running = false;
    let mut run_checks_now = false;

    let mut agent = Agent {
        health: HealthReporter::new(cfg.health.clone()),
        cfg,
        hw,
        client,
        connected: false,
        state: StateReporter::default(),
        checks: Vec::new(),
        checks_done: false,
        config_rev: 0,
        clock_offset_ms: None,
        pending_events: VecDeque::new(),
        session,
    };
    let firmware = agent.hw.firmware();
    agent.push_event(EventKind::Boot { firmware });
    info!(device = %agent.cfg.device, broker = %format!("{}:{}", agent.cfg.link.host, agent.cfg.link.port), "agent starting");

    tokio::pin!(shutdown);
    loop {
        if run_checks_now && !checks_running {
            run_checks_now = false;
            checks_running = true;
            let fut = agent.hw.run_checks();
            let tx = checks_tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(fut.await).await;
            });
        }
        tokio::select! {
            () = &mut shutdown => break,
            event = link_rx.recv() => match event {
                Some(Link::Connected { session_present, session }) => {
                    agent.session = session;
                    agent.on_connected(session_present);
                }
                Some(Link::Message(p)) => {
                    run_checks_now |= agent.on_message(&p.topic, &p.payload, p.retain);
                }
                Some(Link::Lost) => agent.connected = false,
                Some(Link::Closed) | None => break,
            },
            _ = health_tick.tick() => agent.on_health_tick(),
            _ = checks_tick.tick() => run_checks_now = true,
            Some(results) = checks_rx.recv() => {
                checks_running = false;
                agent.on_checks(results);
            }
        }
    }

    if agent.connected {
        agent.publish(Payload::Presence(Presence {
            status: PresenceStatus::Offline,
            agent: agent_version(),
            session: Some(agent.session),
        }));
        let _ = agent.client.try_disconnect();
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
    info!(device = %agent.cfg.device, "agent stopped");
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
        assert_eq!(a.next_seq(), 1);
        assert_eq!(a.next_seq(), 2);
        let mut b = SeqStore::file(path);
        assert_eq!(b.next_seq(), 3);
        let mut m = SeqStore::Memory(0);
        assert_eq!((m.next_seq(), m.next_seq()), (1, 2));
    }
}
