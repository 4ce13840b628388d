//! The state machine: what the agent knows (connected or not, last checks,
//! config revision, clock offset, the next sequence number) and what it does
//! about each input. Events are numbered here and handed to the durable
//! outbox ([`Action::Enqueue`]); the runtime publishes them from there.

use std::time::Duration;

use fleet_protocol::{
    Action as CommandAction, CertRequest, CheckResult, Command, Desired, Envelope, Event,
    EventKind, Health, Payload, Presence, PresenceStatus, State, Topic, TopicKind, UpdateStatus,
    UploadTicket, Version,
};
use tracing::{debug, info, warn};

use super::config::CoreConfig;
use super::renewal::{CertInfo, Renewal};
use crate::health::HealthReporter;
use crate::reporter::{check_events, state_digest, StateReporter};

/// MQTT delivery guarantee, named here so the core needs no MQTT client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
}

impl Qos {
    /// Health is periodic and the next report supersedes a lost one; every
    /// other kind must arrive.
    pub fn of(kind: TopicKind) -> Self {
        match kind {
            TopicKind::Health => Qos::AtMostOnce,
            _ => Qos::AtLeastOnce,
        }
    }
}

/// The core's timers; the runtime keeps at most one deadline per timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Take a health sample.
    Health,
    /// Run the configured checks.
    Checks,
    /// The certificate is due for renewal, an answer is late, or a failed
    /// renewal is tried again.
    Renewal,
}

/// Something that happened, told to [`AgentCore::on`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The agent starts; nothing is connected yet.
    Started,
    /// The broker accepted a connection. `session`: the connection's id, as
    /// in its last will.
    Connected {
        session_present: bool,
        session: u64,
    },
    /// The connection is gone; the runtime reconnects on its own.
    Disconnected,
    TimerFired(Timer),
    /// The answer to [`Action::SampleHealth`].
    HealthSampled(Health),
    /// The answer to [`Action::RunChecks`].
    ChecksCompleted(Vec<CheckResult>),
    DesiredReceived {
        desired: Desired,
        /// The controller's clock when it sent the message.
        sent_at_ms: u64,
        /// Delivered from the broker's retained copy (possibly old).
        retained: bool,
    },
    CommandReceived(Command),
    /// The answer to [`Action::UploadLogs`]: how many bytes the controller
    /// took, or why none.
    LogsUploaded {
        command: String,
        outcome: Result<u64, String>,
    },
    /// The answer to [`Action::Reboot`]: the reboot was started, or why not.
    RebootAttempted {
        command: String,
        outcome: Result<(), String>,
    },
    /// A [`Action::Publish`] could not be handed to the broker (queue full,
    /// or over its size limit).
    PublishRefused(Envelope),
    /// Something the runtime saw that becomes an event like any other
    /// (numbered, committed to the outbox): the outbox's drop report, an
    /// event from the test hook.
    Report(EventKind),
    /// The outbox's disk cannot be written (full, read-only, damaged):
    /// reported once until [`Input::StorageRecovered`].
    StorageFailed(String),
    /// The outbox's disk works again.
    StorageRecovered,
    /// The broker acknowledged the state with this digest
    /// ([`crate::reporter::state_digest`]); at start, the digest an earlier
    /// run's acknowledgement left in the outbox's file. An unchanged state
    /// is not sent again, on a reconnect or after a restart.
    StateAcknowledged(u64),
    /// The certificate the connection uses (at start, and after a
    /// renewal took effect), read by the runtime.
    CertificateInUse(CertInfo),
    /// The answer to [`Action::MakeCertRequest`]: the PEM request, or why not.
    CertRequestMade(Result<String, String>),
    /// The controller sent a certificate on this device's `cert` topic.
    CertificateReceived(String),
    /// The answer to [`Action::TryCertificate`]: a connection with the new
    /// certificate succeeded and it replaced the old one, or why it did not
    /// (the old one is in use again).
    CertificateTried(Result<CertInfo, String>),
    /// The update driver's status (reported in state).
    UpdateStatus(UpdateStatus),
    /// The update driver committed a new firmware: the device runs it.
    FirmwareChanged(Version),
    /// Stop: say goodbye if connected.
    ShutdownRequested,
}

/// Something the runtime must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Subscribe {
        topic: Topic,
        qos: Qos,
    },
    /// Publish on `envelope.topic()`. Refusals come back as
    /// [`Input::PublishRefused`].
    Publish {
        envelope: Envelope,
        qos: Qos,
        retain: bool,
    },
    /// Commit this event to the durable outbox (with its sequence number,
    /// which is stored with it); the runtime publishes it from there, QoS 1,
    /// and removes it on the broker's acknowledgement.
    Enqueue(Event),
    /// A health sample taken while offline: the outbox coalesces it with
    /// the others of its interval and sends the result on reconnection.
    KeepHealth {
        sample: Health,
        at_ms: u64,
    },
    /// Take a health sample and answer with [`Input::HealthSampled`].
    SampleHealth,
    /// Run the configured checks and answer with [`Input::ChecksCompleted`].
    RunChecks,
    /// Reboot the device for command `command`; answer with
    /// [`Input::RebootAttempted`].
    Reboot {
        command: String,
    },
    /// Upload the tail of the configured log files with `ticket` for command
    /// `command`; answer with [`Input::LogsUploaded`].
    UploadLogs {
        command: String,
        ticket: UploadTicket,
    },
    /// Fire [`Input::TimerFired`] after `after`, replacing any deadline the
    /// timer had.
    ArmTimer {
        timer: Timer,
        after: Duration,
    },
    /// Close the MQTT session cleanly (no last will).
    Disconnect,
    /// Make a certificate request with the device's key (a new one if
    /// `new_key`); answer with [`Input::CertRequestMade`].
    MakeCertRequest {
        new_key: bool,
    },
    /// Keep `cert_pem` beside the current certificate, reconnect with it,
    /// and replace the old one only once that connection succeeded (else go
    /// back to the old); answer with [`Input::CertificateTried`].
    TryCertificate {
        cert_pem: String,
    },
    /// Hand the desired state to the update driver (when updates are on),
    /// with the controller's clock when it sent it (a trusted-time hint,
    /// unless `retained`).
    UpdateDesired {
        desired: Desired,
        sent_at_ms: u64,
        retained: bool,
    },
}

/// The agent's state. Create it with [`AgentCore::new`], then feed it
/// [`Input::Started`] and everything that happens after.
#[derive(Debug)]
pub struct AgentCore {
    cfg: CoreConfig,
    connected: bool,
    /// The current connection's id, also in its last will.
    session: u64,
    state: StateReporter,
    health: HealthReporter,
    checks: Vec<CheckResult>,
    /// No state is sent before the first checks completed: a state without
    /// checks would read as a device with nothing to check.
    checks_done: bool,
    checks_running: bool,
    /// Checks were asked for while a run was going; run again when it ends.
    checks_wanted: bool,
    config_rev: u32,
    clock_offset_ms: Option<i64>,
    /// Commands acted on, until they expire: a re-delivery is ignored.
    handled: super::handled::Handled,
    last_seq: u64,
    /// A storage fault was reported and the disk has not recovered since.
    storage_fault: bool,
    /// The sample asked for at start only primes the CPU measurement: if no
    /// connection is up when it comes, it is not kept for the outbox.
    priming: bool,
    /// The certificate in use, when there is one.
    cert: Option<CertInfo>,
    renewal: Renewal,
    /// The `renew-certificate` command the current renewal answers.
    renewal_command: Option<String>,
    /// Where a firmware update stands, as the update driver said.
    update: UpdateStatus,
}

impl AgentCore {
    /// `last_seq`: the last event sequence number persisted by an earlier
    /// run (0 if none); the next event gets the number after it.
    pub fn new(cfg: CoreConfig, last_seq: u64) -> Self {
        Self {
            health: HealthReporter::new(cfg.health.clone()),
            cfg,
            connected: false,
            session: 0,
            state: StateReporter::default(),
            checks: Vec::new(),
            checks_done: false,
            checks_running: false,
            checks_wanted: false,
            config_rev: 0,
            clock_offset_ms: None,
            handled: super::handled::Handled::default(),
            last_seq,
            storage_fault: false,
            priming: false,
            cert: None,
            renewal: Renewal::Idle,
            renewal_command: None,
            update: UpdateStatus::Idle,
        }
    }

    /// Where the certificate renewal stands.
    pub fn renewal(&self) -> &Renewal {
        &self.renewal
    }

    pub fn connected(&self) -> bool {
        self.connected
    }

    /// The last sequence number given to an event.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Decide what to do about `input`, which happened at `now_ms` (Unix
    /// milliseconds).
    pub fn on(&mut self, input: Input, now_ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Started => self.on_started(now_ms, &mut out),
            Input::Connected {
                session_present,
                session,
            } => self.on_connected(session_present, session, now_ms, &mut out),
            Input::Disconnected => self.connected = false,
            Input::TimerFired(Timer::Health) => {
                out.push(Action::ArmTimer {
                    timer: Timer::Health,
                    after: self.cfg.health_sample,
                });
                out.push(Action::SampleHealth);
            }
            Input::TimerFired(Timer::Checks) => {
                out.push(Action::ArmTimer {
                    timer: Timer::Checks,
                    after: self.cfg.checks_interval,
                });
                self.want_checks(&mut out);
            }
            Input::HealthSampled(sample) => self.on_health(sample, now_ms, &mut out),
            Input::ChecksCompleted(results) => self.on_checks(results, now_ms, &mut out),
            Input::DesiredReceived {
                desired,
                sent_at_ms,
                retained,
            } => self.on_desired(desired, sent_at_ms, retained, now_ms, &mut out),
            Input::CommandReceived(command) => self.on_command(command, now_ms, &mut out),
            Input::LogsUploaded { command, outcome } => {
                let kind = match outcome {
                    Ok(bytes) => {
                        command_result(&command, true, &format!("uploaded {bytes} bytes of logs"))
                    }
                    Err(why) => command_result(&command, false, &why),
                };
                self.push_event(kind, now_ms, &mut out);
            }
            Input::RebootAttempted { command, outcome } => {
                let kind = match outcome {
                    Ok(()) => command_result(&command, true, "rebooting"),
                    Err(why) => command_result(&command, false, &why),
                };
                self.push_event(kind, now_ms, &mut out);
            }
            Input::PublishRefused(envelope) => self.on_refused(envelope),
            Input::Report(kind) => self.push_event(kind, now_ms, &mut out),
            Input::StorageFailed(message) => {
                if !self.storage_fault {
                    self.storage_fault = true;
                    self.push_event(EventKind::StorageFault { message }, now_ms, &mut out);
                }
            }
            Input::StorageRecovered => self.storage_fault = false,
            Input::StateAcknowledged(digest) => self.state.acknowledged(digest),
            Input::TimerFired(Timer::Renewal) => self.on_renewal_timer(now_ms, &mut out),
            Input::CertificateInUse(info) => self.on_cert_in_use(info, now_ms, &mut out),
            Input::CertRequestMade(made) => self.on_request_made(made, now_ms, &mut out),
            Input::CertificateReceived(cert_pem) => {
                if matches!(self.renewal, Renewal::Waiting { .. }) {
                    self.renewal = Renewal::Installing;
                    out.push(Action::TryCertificate { cert_pem });
                } else {
                    // A repeat delivery, or an answer to an attempt given up.
                    debug!("certificate ignored: no renewal is waiting for one");
                }
            }
            Input::CertificateTried(Ok(info)) => {
                info!(serial = %info.serial, "certificate renewed");
                if let Some(id) = self.renewal_command.take() {
                    let msg = format!("certificate renewed (serial {})", info.serial);
                    self.push_event(command_result(&id, true, &msg), now_ms, &mut out);
                }
                self.on_cert_in_use(info, now_ms, &mut out);
            }
            Input::CertificateTried(Err(why)) => self.renewal_failed(&why, now_ms, &mut out),
            Input::UpdateStatus(status) => {
                self.update = status;
                self.send_state_if_changed(now_ms, &mut out);
            }
            Input::FirmwareChanged(version) => {
                self.cfg.firmware = version;
                self.send_state_if_changed(now_ms, &mut out);
            }
            Input::ShutdownRequested => {
                if self.connected {
                    self.publish(self.presence(PresenceStatus::Offline), now_ms, &mut out);
                    out.push(Action::Disconnect);
                    self.connected = false;
                }
            }
        }
        out
    }

    fn on_started(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        let firmware = self.cfg.firmware.clone();
        self.push_event(EventKind::Boot { firmware }, now_ms, out);
        // Checks and a first sample at once: the sample is not sent before a
        // connection, but it starts the CPU measurement, which needs two.
        self.want_checks(out);
        self.priming = true;
        out.push(Action::SampleHealth);
        out.push(Action::ArmTimer {
            timer: Timer::Health,
            after: self.cfg.health_sample,
        });
        out.push(Action::ArmTimer {
            timer: Timer::Checks,
            after: self.cfg.checks_interval,
        });
    }

    fn on_connected(
        &mut self,
        session_present: bool,
        session: u64,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        self.connected = true;
        self.session = session;
        if !session_present {
            // The broker kept nothing for us: subscribe again.
            for kind in [TopicKind::Desired, TopicKind::Cmd] {
                out.push(Action::Subscribe {
                    topic: Topic::new(self.cfg.device.clone(), kind),
                    qos: Qos::AtLeastOnce,
                });
            }
        }
        self.publish(self.presence(PresenceStatus::Online), now_ms, out);
        // What went out on the last connection may be lost; what the broker
        // acknowledged is not sent again unless it changed.
        self.state.connection_established();
        self.send_state_if_changed(now_ms, out);
        // Events wait in the outbox, which the runtime drains now.
        // A fresh sample right away (sent if none went out yet, or if due).
        out.push(Action::SampleHealth);
        if self.renewal == Renewal::Wanted {
            self.start_renewal(now_ms, out);
        }
    }

    fn on_cert_in_use(&mut self, info: CertInfo, now_ms: u64, out: &mut Vec<Action>) {
        self.renewal = Renewal::Idle;
        let Some(policy) = &self.cfg.renewal else {
            self.cert = Some(info);
            return;
        };
        let due = info.renew_at_ms(policy.at_fraction);
        debug!(serial = %info.serial, renew_in_ms = due.saturating_sub(now_ms), "certificate in use");
        self.cert = Some(info);
        out.push(Action::ArmTimer {
            timer: Timer::Renewal,
            after: Duration::from_millis(due.saturating_sub(now_ms)),
        });
    }

    fn on_renewal_timer(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        let (Some(policy), Some(cert)) = (&self.cfg.renewal, &self.cert) else {
            return;
        };
        match self.renewal {
            Renewal::Idle => {
                let due = cert.renew_at_ms(policy.at_fraction);
                if now_ms >= due {
                    self.start_renewal(now_ms, out);
                } else {
                    out.push(Action::ArmTimer {
                        timer: Timer::Renewal,
                        after: Duration::from_millis(due - now_ms),
                    });
                }
            }
            Renewal::Waiting { since_ms } => {
                let timeout = u64::try_from(policy.answer_timeout.as_millis()).unwrap_or(u64::MAX);
                if now_ms.saturating_sub(since_ms) >= timeout {
                    self.renewal_failed("no certificate came back in time", now_ms, out);
                } else {
                    out.push(Action::ArmTimer {
                        timer: Timer::Renewal,
                        after: Duration::from_millis(timeout - (now_ms - since_ms)),
                    });
                }
            }
            // Waiting for a connection, or for the runtime's answer.
            Renewal::Wanted | Renewal::Making | Renewal::Installing => {}
        }
    }

    fn start_renewal(&mut self, _now_ms: u64, out: &mut Vec<Action>) {
        let Some(policy) = &self.cfg.renewal else {
            return;
        };
        if self.renewal.busy() {
            return;
        }
        if !self.connected {
            self.renewal = Renewal::Wanted;
            return;
        }
        info!("renewing the device certificate");
        self.renewal = Renewal::Making;
        out.push(Action::MakeCertRequest {
            new_key: policy.new_key,
        });
    }

    fn on_request_made(
        &mut self,
        made: Result<String, String>,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        if self.renewal != Renewal::Making {
            return;
        }
        let csr_pem = match made {
            Ok(pem) => pem,
            Err(why) => return self.renewal_failed(&why, now_ms, out),
        };
        if !self.connected {
            self.renewal = Renewal::Wanted;
            return;
        }
        let Some(policy) = &self.cfg.renewal else {
            return;
        };
        let (timeout, new_key) = (policy.answer_timeout, policy.new_key);
        // Subscribed before the request leaves (the broker handles both in
        // order), so the answer cannot miss us; a session from before
        // renewal existed has no such subscription.
        out.push(Action::Subscribe {
            topic: Topic::new(self.cfg.device.clone(), TopicKind::Cert),
            qos: Qos::AtLeastOnce,
        });
        self.publish(
            Payload::CertRequest(CertRequest { csr_pem, new_key }),
            now_ms,
            out,
        );
        self.renewal = Renewal::Waiting { since_ms: now_ms };
        out.push(Action::ArmTimer {
            timer: Timer::Renewal,
            after: timeout,
        });
    }

    fn renewal_failed(&mut self, why: &str, now_ms: u64, out: &mut Vec<Action>) {
        warn!(
            reason = why,
            "certificate renewal failed; trying again later"
        );
        self.renewal = Renewal::Idle;
        if let Some(id) = self.renewal_command.take() {
            let kind = command_result(&id, false, &format!("renewal failed: {why}"));
            self.push_event(kind, now_ms, out);
        }
        if let Some(policy) = &self.cfg.renewal {
            out.push(Action::ArmTimer {
                timer: Timer::Renewal,
                after: policy.retry_after,
            });
        }
    }

    fn on_health(&mut self, mut sample: Health, now_ms: u64, out: &mut Vec<Action>) {
        sample.clock_offset_ms = self.clock_offset_ms;
        let priming = std::mem::take(&mut self.priming);
        if !self.connected && priming {
            debug!("first sample taken before any connection: it only primes the CPU measure");
        } else if !self.connected {
            out.push(Action::KeepHealth {
                sample,
                at_ms: now_ms,
            });
        } else if self.health.should_report(now_ms, &sample) {
            self.health.reported(now_ms, &sample);
            self.publish(Payload::Health(sample), now_ms, out);
        }
    }

    fn on_checks(&mut self, results: Vec<CheckResult>, now_ms: u64, out: &mut Vec<Action>) {
        self.checks_running = false;
        for kind in check_events(&self.checks, &results) {
            self.push_event(kind, now_ms, out);
        }
        self.checks = results;
        self.checks_done = true;
        self.send_state_if_changed(now_ms, out);
        if std::mem::take(&mut self.checks_wanted) {
            self.want_checks(out);
        }
    }

    fn on_desired(
        &mut self,
        desired: Desired,
        sent_at_ms: u64,
        retained: bool,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        // A retained copy may be old; only a live one dates the clock.
        if !retained {
            let offset = i64::try_from(now_ms).unwrap_or(i64::MAX)
                - i64::try_from(sent_at_ms).unwrap_or(i64::MAX);
            self.clock_offset_ms = Some(offset);
        }
        if desired.config_rev != self.config_rev {
            info!(rev = desired.config_rev, "new desired config revision");
            self.config_rev = desired.config_rev;
            self.send_state_if_changed(now_ms, out);
        }
        out.push(Action::UpdateDesired {
            desired,
            sent_at_ms,
            retained,
        });
    }

    /// `now_ms` on the controller's clock, as far as this agent knows it
    /// (a command's expiry is the controller's time), never earlier than
    /// our own clock. The offset is measured as our time minus the send
    /// time of a desired state, so it includes the message's time in
    /// transit: a state that waited in the broker's queue for our session
    /// (delivered as live, not as retained) reads as a clock far ahead. A
    /// correction that would make an expired command look valid is
    /// therefore not taken; one that says the controller is ahead of us (our
    /// clock is behind) is.
    fn controller_ms(&self, now_ms: u64) -> u64 {
        let offset = self.clock_offset_ms.unwrap_or(0);
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        u64::try_from(now.saturating_sub(offset))
            .unwrap_or(0)
            .max(now_ms)
    }

    fn on_command(&mut self, command: Command, now_ms: u64, out: &mut Vec<Action>) {
        let controller_now = self.controller_ms(now_ms);
        if command.expires_at_ms < controller_now {
            let kind = command_result(&command.id, false, "expired before it arrived");
            self.push_event(kind, now_ms, out);
            return;
        }
        if !self
            .handled
            .first_time(&command.id, command.expires_at_ms, controller_now)
        {
            info!(id = %command.id, "command delivered again: already handled, ignored");
            return;
        }
        info!(id = %command.id, action = ?command.action, "command received");
        match command.action {
            CommandAction::RunChecks => {
                let kind = command_result(&command.id, true, "checks started");
                self.push_event(kind, now_ms, out);
                self.want_checks(out);
            }
            // The result event follows once the runtime tried.
            CommandAction::Reboot => out.push(Action::Reboot {
                command: command.id,
            }),
            CommandAction::RenewCertificate => {
                if self.cfg.renewal.is_none() || self.cert.is_none() {
                    let kind = command_result(
                        &command.id,
                        false,
                        "this agent has no certificate to renew",
                    );
                    self.push_event(kind, now_ms, out);
                } else if self.renewal.busy() || self.renewal_command.is_some() {
                    let kind = command_result(&command.id, false, "a renewal is already under way");
                    self.push_event(kind, now_ms, out);
                } else {
                    self.renewal_command = Some(command.id);
                    self.start_renewal(now_ms, out);
                }
            }
            // The result event follows once the runtime tried.
            CommandAction::UploadLogs => match command.upload {
                Some(ticket) => out.push(Action::UploadLogs {
                    command: command.id,
                    ticket,
                }),
                None => {
                    let kind =
                        command_result(&command.id, false, "the command carries no upload ticket");
                    self.push_event(kind, now_ms, out);
                }
            },
        }
    }

    fn on_refused(&mut self, envelope: Envelope) {
        match envelope.payload {
            Payload::State(_) => self.state.refused(),
            Payload::Health(_) => self.health.refused(),
            // Events come from the outbox, which keeps them until acknowledged;
            // presence is said again on the next connection.
            _ => {}
        }
    }

    fn want_checks(&mut self, out: &mut Vec<Action>) {
        if self.checks_running {
            self.checks_wanted = true;
        } else {
            self.checks_running = true;
            out.push(Action::RunChecks);
        }
    }

    fn presence(&self, status: PresenceStatus) -> Payload {
        Payload::Presence(Presence {
            status,
            agent: self.cfg.agent.clone(),
            session: Some(self.session),
        })
    }

    fn current_state(&self) -> State {
        State {
            model: self.cfg.model.clone(),
            firmware: self.cfg.firmware.clone(),
            agent: self.cfg.agent.clone(),
            update: self.update,
            checks: self.checks.clone(),
            config_rev: self.config_rev,
        }
    }

    fn send_state_if_changed(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        if !self.connected || !self.checks_done {
            return;
        }
        let state = self.current_state();
        let digest = state_digest(&self.cfg.device, &state);
        if self.state.needs_send(digest) {
            self.state.sent(digest);
            self.publish(Payload::State(state), now_ms, out);
        }
    }

    /// Number the event and hand it to the outbox, which commits it (with
    /// the number) before it is published.
    fn push_event(&mut self, kind: EventKind, now_ms: u64, out: &mut Vec<Action>) {
        self.last_seq += 1;
        out.push(Action::Enqueue(Event {
            seq: self.last_seq,
            at_ms: now_ms,
            kind,
            boot: Some(self.cfg.boot),
        }));
    }

    fn publish(&self, payload: Payload, now_ms: u64, out: &mut Vec<Action>) {
        let kind = payload.kind();
        out.push(Action::Publish {
            envelope: Envelope::new(self.cfg.device.clone(), now_ms, payload),
            qos: Qos::of(kind),
            retain: kind.retained(),
        });
    }
}

fn command_result(id: &str, ok: bool, message: &str) -> EventKind {
    EventKind::CommandResult {
        id: id.to_owned(),
        ok,
        message: message.to_owned(),
    }
}
