//! The core without a broker: each test feeds inputs at chosen times and
//! asserts the exact actions, wire flags included.

use std::time::Duration;

use fleet_protocol::{
    Action as CommandAction, CheckResult, Command, Desired, DeviceId, Envelope, Event, EventKind,
    Health, Model, Payload, Presence, PresenceStatus, State, Topic, TopicKind, UpdateStatus,
    Version,
};

use super::*;
use crate::health::{HealthPolicy, Thresholds};

const T0: u64 = 1_700_000_000_000;
const SESSION: u64 = T0 + 500;
const SAMPLE_EVERY: Duration = Duration::from_secs(15);
const CHECKS_EVERY: Duration = Duration::from_secs(60);

/// The boot id of the core under test.
const BOOT: u64 = 0x5eed_b007;

fn device() -> DeviceId {
    DeviceId::parse("BB-23-000123").unwrap()
}

fn config() -> CoreConfig {
    CoreConfig {
        device: device(),
        model: Model::parse("ballot-box-v2").unwrap(),
        firmware: Version::parse("2.4.0").unwrap(),
        agent: Version::parse("0.1.0").unwrap(),
        health_sample: SAMPLE_EVERY,
        health: HealthPolicy {
            report_every: Duration::from_secs(300),
            thresholds: Thresholds::default(),
        },
        checks_interval: CHECKS_EVERY,
        boot: BOOT,
        renewal: None,
    }
}

fn check(name: &str, passed: bool) -> CheckResult {
    CheckResult {
        name: name.into(),
        passed,
        message: (!passed).then(|| "paper jam".to_string()),
    }
}

/// The desired state handed on to the update driver.
fn to_updates(config_rev: u32, sent_at_ms: u64, retained: bool) -> Action {
    Action::UpdateDesired {
        desired: Desired {
            config_rev,
            ..Desired::default()
        },
        sent_at_ms,
        retained,
    }
}

fn printer(passed: bool) -> Vec<CheckResult> {
    vec![check("printer", passed)]
}

fn normal() -> Health {
    Health {
        cpu_pct: 10,
        mem_used_pct: 40,
        disk_free_pct: 60,
        temp_c: Some(45),
        battery_pct: Some(90),
        uptime_s: 100,
        clock_offset_ms: None,
        disk_free_mb: 5000,
        window: None,
    }
}

fn envelope(now: u64, payload: Payload) -> Envelope {
    Envelope::new(device(), now, payload)
}

fn subscribe(kind: TopicKind) -> Action {
    Action::Subscribe {
        topic: Topic::new(device(), kind),
        qos: Qos::AtLeastOnce,
    }
}

fn presence(now: u64, status: PresenceStatus, session: u64) -> Action {
    Action::Publish {
        envelope: envelope(
            now,
            Payload::Presence(Presence {
                status,
                agent: Version::parse("0.1.0").unwrap(),
                session: Some(session),
            }),
        ),
        qos: Qos::AtLeastOnce,
        retain: true,
    }
}

fn state_msg(now: u64, checks: Vec<CheckResult>, config_rev: u32) -> Action {
    Action::Publish {
        envelope: envelope(
            now,
            Payload::State(State {
                model: Model::parse("ballot-box-v2").unwrap(),
                firmware: Version::parse("2.4.0").unwrap(),
                agent: Version::parse("0.1.0").unwrap(),
                update: UpdateStatus::Idle,
                checks,
                config_rev,
            }),
        ),
        qos: Qos::AtLeastOnce,
        retain: true,
    }
}

fn health_msg(now: u64, health: Health) -> Action {
    Action::Publish {
        envelope: envelope(now, Payload::Health(health)),
        qos: Qos::AtMostOnce,
        retain: false,
    }
}

/// An event numbered `seq`, made at `at_ms`, handed to the outbox.
fn enqueue(seq: u64, at_ms: u64, kind: EventKind) -> Action {
    Action::Enqueue(Event {
        seq,
        at_ms,
        kind,
        boot: Some(BOOT),
    })
}

fn boot() -> EventKind {
    EventKind::Boot {
        firmware: Version::parse("2.4.0").unwrap(),
    }
}

fn result(id: &str, ok: bool, message: &str) -> EventKind {
    EventKind::CommandResult {
        id: id.into(),
        ok,
        message: message.into(),
    }
}

fn command(id: &str, expires_at_ms: u64, action: CommandAction) -> Command {
    Command {
        id: id.into(),
        expires_at_ms,
        action,
        upload: None,
    }
}

/// Started with `last_seq` persisted, connected at `T0 + 1000` with no
/// saved session, first checks completed (all passing) at `T0 + 2000`; the
/// boot event is number `last_seq + 1`. No health sample was sent yet.
fn running(last_seq: u64) -> AgentCore {
    let mut core = AgentCore::new(config(), last_seq);
    core.on(Input::Started, T0);
    core.on(
        Input::Connected {
            session_present: false,
            session: SESSION,
        },
        T0 + 1000,
    );
    let actions = core.on(Input::ChecksCompleted(printer(true)), T0 + 2000);
    assert_eq!(actions, vec![state_msg(T0 + 2000, printer(true), 0)]);
    core
}

#[test]
fn start_commits_the_boot_event_runs_checks_samples_and_arms_both_timers() {
    let mut core = AgentCore::new(config(), 41);
    let actions = core.on(Input::Started, T0);
    assert_eq!(
        actions,
        vec![
            enqueue(42, T0, boot()),
            Action::RunChecks,
            Action::SampleHealth,
            Action::ArmTimer {
                timer: Timer::Health,
                after: SAMPLE_EVERY
            },
            Action::ArmTimer {
                timer: Timer::Checks,
                after: CHECKS_EVERY
            },
        ]
    );
    // The outbox keeps the boot event until it is connected and acknowledged.
    assert_eq!(core.last_seq(), 42);
}

#[test]
fn health_sampled_while_offline_is_kept_for_the_outbox_not_sent() {
    let mut core = AgentCore::new(config(), 0);
    core.on(Input::Started, T0);
    // The first sample only primes the CPU measure.
    assert_eq!(core.on(Input::HealthSampled(normal()), T0 + 1), vec![]);
    assert_eq!(
        core.on(Input::HealthSampled(normal()), T0 + 5),
        vec![Action::KeepHealth {
            sample: normal(),
            at_ms: T0 + 5
        }]
    );
}

#[test]
fn connect_without_saved_session_subscribes_says_online_and_samples() {
    let mut core = AgentCore::new(config(), 0);
    core.on(Input::Started, T0);
    let actions = core.on(
        Input::Connected {
            session_present: false,
            session: SESSION,
        },
        T0 + 1000,
    );
    // No state yet: the first checks have not completed.
    assert_eq!(
        actions,
        vec![
            subscribe(TopicKind::Desired),
            subscribe(TopicKind::Cmd),
            presence(T0 + 1000, PresenceStatus::Online, SESSION),
            Action::SampleHealth,
        ]
    );
    // Events wait in the outbox, which the runtime drains.
    assert!(core.connected());
}

#[test]
fn connect_with_saved_session_does_not_subscribe_again_but_repeats_presence_and_state() {
    let mut core = running(0);
    assert_eq!(core.on(Input::Disconnected, T0 + 3000), vec![]);
    assert!(!core.connected());
    let actions = core.on(
        Input::Connected {
            session_present: true,
            session: SESSION + 9000,
        },
        T0 + 9000,
    );
    // The broker kept the subscriptions; the state sent on the last
    // connection was never acknowledged, so it goes out again.
    assert_eq!(
        actions,
        vec![
            presence(T0 + 9000, PresenceStatus::Online, SESSION + 9000),
            state_msg(T0 + 9000, printer(true), 0),
            Action::SampleHealth,
        ]
    );
}

#[test]
fn events_made_while_offline_are_committed_at_once_and_state_waits_for_a_connection() {
    let mut core = AgentCore::new(config(), 0);
    core.on(Input::Started, T0);
    let actions = core.on(Input::ChecksCompleted(printer(false)), T0 + 100);
    // Numbered and committed now; the state goes only when connected.
    assert_eq!(
        actions,
        vec![enqueue(
            2,
            T0 + 100,
            EventKind::CheckFailed {
                name: "printer".into(),
                message: "paper jam".into()
            }
        )]
    );
    let actions = core.on(
        Input::Connected {
            session_present: false,
            session: SESSION,
        },
        T0 + 1000,
    );
    assert_eq!(
        actions,
        vec![
            subscribe(TopicKind::Desired),
            subscribe(TopicKind::Cmd),
            presence(T0 + 1000, PresenceStatus::Online, SESSION),
            state_msg(T0 + 1000, printer(false), 0),
            Action::SampleHealth,
        ]
    );
}

/// The digest of the state `state_msg(_, checks, config_rev)` carries.
fn digest_of(checks: Vec<CheckResult>, config_rev: u32) -> u64 {
    let Action::Publish {
        envelope: Envelope {
            payload: Payload::State(state),
            ..
        },
        ..
    } = state_msg(0, checks, config_rev)
    else {
        unreachable!("state_msg makes a state publish")
    };
    crate::reporter::state_digest(&device(), &state)
}

fn reconnect(core: &mut AgentCore, at: u64) -> Vec<Action> {
    core.on(Input::Disconnected, at - 1);
    core.on(
        Input::Connected {
            session_present: true,
            session: at,
        },
        at,
    )
}

#[test]
fn an_acknowledged_unchanged_state_is_not_sent_again_on_a_reconnect() {
    let mut core = running(0);
    core.on(
        Input::StateAcknowledged(digest_of(printer(true), 0)),
        T0 + 2500,
    );
    assert_eq!(
        reconnect(&mut core, T0 + 9000),
        vec![
            presence(T0 + 9000, PresenceStatus::Online, T0 + 9000),
            Action::SampleHealth,
        ]
    );
    // Unchanged checks on the new connection: still nothing.
    assert_eq!(
        core.on(Input::ChecksCompleted(printer(true)), T0 + 10_000),
        vec![]
    );
}

#[test]
fn a_state_changed_since_the_acknowledged_one_is_sent_on_a_reconnect() {
    let mut core = running(0);
    core.on(
        Input::StateAcknowledged(digest_of(printer(true), 0)),
        T0 + 2500,
    );
    // The printer fails while offline: the event waits in the outbox, the
    // state for the connection.
    core.on(Input::Disconnected, T0 + 3000);
    let offline = core.on(Input::ChecksCompleted(printer(false)), T0 + 4000);
    assert!(
        !offline.iter().any(|a| matches!(a, Action::Publish { .. })),
        "{offline:?}"
    );
    let actions = core.on(
        Input::Connected {
            session_present: true,
            session: T0 + 9000,
        },
        T0 + 9000,
    );
    assert_eq!(
        actions,
        vec![
            presence(T0 + 9000, PresenceStatus::Online, T0 + 9000),
            state_msg(T0 + 9000, printer(false), 0),
            Action::SampleHealth,
        ]
    );
    // Sent, not yet acknowledged, and the connection drops: sent again.
    let again = reconnect(&mut core, T0 + 20_000);
    assert!(again.contains(&state_msg(T0 + 20_000, printer(false), 0)));
    // Acknowledged now: the next reconnect is quiet about state.
    core.on(
        Input::StateAcknowledged(digest_of(printer(false), 0)),
        T0 + 20_500,
    );
    let quiet = reconnect(&mut core, T0 + 30_000);
    assert!(
        !quiet.iter().any(|a| matches!(
            a,
            Action::Publish {
                envelope: Envelope {
                    payload: Payload::State(_),
                    ..
                },
                ..
            }
        )),
        "{quiet:?}"
    );
}

#[test]
fn after_a_restart_the_acknowledged_digest_from_the_outbox_keeps_an_unchanged_state_quiet() {
    // An earlier run's acknowledgement, read back from the outbox's file.
    let acked = digest_of(printer(true), 0);
    let start = |digest: Option<u64>| {
        let mut core = AgentCore::new(config(), 5);
        if let Some(d) = digest {
            core.on(Input::StateAcknowledged(d), T0);
        }
        core.on(Input::Started, T0);
        core.on(
            Input::Connected {
                session_present: true,
                session: SESSION,
            },
            T0 + 1000,
        );
        core
    };
    let mut restarted = start(Some(acked));
    assert_eq!(
        restarted.on(Input::ChecksCompleted(printer(true)), T0 + 2000),
        vec![]
    );
    // The same checks with a new desired config revision: changed, sent.
    let mut changed = start(Some(acked));
    changed.on(Input::ChecksCompleted(printer(true)), T0 + 2000);
    let desired = Input::DesiredReceived {
        desired: Desired {
            config_rev: 4,
            firmware: None,
            agent: None,
            freeze: Vec::new(),
        },
        sent_at_ms: T0 + 3000,
        retained: true,
    };
    assert_eq!(
        changed.on(desired, T0 + 3000),
        vec![
            state_msg(T0 + 3000, printer(true), 4),
            to_updates(4, T0 + 3000, true)
        ]
    );
    // Never acknowledged (first connection after enrolment): sent.
    let mut fresh = start(None);
    assert_eq!(
        fresh.on(Input::ChecksCompleted(printer(true)), T0 + 2000),
        vec![state_msg(T0 + 2000, printer(true), 0)]
    );
}

#[test]
fn state_change_is_sent_once_and_unchanged_state_not_again() {
    let mut core = running(0);
    // `running` asserted the first state went out; the same results again
    // say nothing.
    assert_eq!(
        core.on(Input::ChecksCompleted(printer(true)), T0 + 62_000),
        vec![]
    );
    let desired = Input::DesiredReceived {
        desired: Desired {
            config_rev: 3,
            firmware: None,
            agent: None,
            freeze: Vec::new(),
        },
        sent_at_ms: T0 + 70_000,
        retained: false,
    };
    assert_eq!(
        core.on(desired.clone(), T0 + 70_000),
        vec![
            state_msg(T0 + 70_000, printer(true), 3),
            to_updates(3, T0 + 70_000, false)
        ]
    );
    // Unchanged: no state; the update driver hears it again (it decides).
    assert_eq!(
        core.on(desired, T0 + 71_000),
        vec![to_updates(3, T0 + 70_000, false)]
    );
}

#[test]
fn health_timer_rearms_and_asks_for_a_sample() {
    let mut core = running(0);
    assert_eq!(
        core.on(Input::TimerFired(Timer::Health), T0 + 15_000),
        vec![
            Action::ArmTimer {
                timer: Timer::Health,
                after: SAMPLE_EVERY
            },
            Action::SampleHealth,
        ]
    );
}

#[test]
fn health_threshold_crossed_is_sent_at_once_before_the_report_timer_is_due() {
    let mut core = running(0);
    let t = T0 + 3000;
    assert_eq!(
        core.on(Input::HealthSampled(normal()), t),
        vec![health_msg(t, normal())]
    );
    // Report every 300 s: a normal sample 15 s later says nothing.
    assert_eq!(core.on(Input::HealthSampled(normal()), t + 15_000), vec![]);
    let hot = Health {
        temp_c: Some(85),
        ..normal()
    };
    assert_eq!(
        core.on(Input::HealthSampled(hot.clone()), t + 30_000),
        vec![health_msg(t + 30_000, hot.clone())]
    );
    assert_eq!(core.on(Input::HealthSampled(hot), t + 45_000), vec![]);
    // Cooling down is a crossing too.
    assert_eq!(
        core.on(Input::HealthSampled(normal()), t + 60_000),
        vec![health_msg(t + 60_000, normal())]
    );
}

#[test]
fn failing_check_persists_the_next_seq_then_sends_check_failed_and_state() {
    let mut core = running(41);
    let t = T0 + 62_000;
    let actions = core.on(Input::ChecksCompleted(printer(false)), t);
    assert_eq!(
        actions,
        vec![
            enqueue(
                43,
                t,
                EventKind::CheckFailed {
                    name: "printer".into(),
                    message: "paper jam".into()
                }
            ),
            state_msg(t, printer(false), 0),
        ]
    );
    // Still failing: no new event, no new state.
    assert_eq!(
        core.on(Input::ChecksCompleted(printer(false)), t + 60_000),
        vec![]
    );
}

#[test]
fn recovering_check_sends_check_recovered_and_state() {
    let mut core = running(41);
    core.on(Input::ChecksCompleted(printer(false)), T0 + 62_000);
    let t = T0 + 122_000;
    let actions = core.on(Input::ChecksCompleted(printer(true)), t);
    assert_eq!(
        actions,
        vec![
            enqueue(
                44,
                t,
                EventKind::CheckRecovered {
                    name: "printer".into()
                }
            ),
            state_msg(t, printer(true), 0),
        ]
    );
}

#[test]
fn checks_timer_rearms_and_never_starts_a_second_run_beside_a_running_one() {
    let mut core = running(0);
    let rearm = Action::ArmTimer {
        timer: Timer::Checks,
        after: CHECKS_EVERY,
    };
    assert_eq!(
        core.on(Input::TimerFired(Timer::Checks), T0 + 60_000),
        vec![rearm.clone(), Action::RunChecks]
    );
    // Still running a minute later: only re-arm, and run once it ends.
    assert_eq!(
        core.on(Input::TimerFired(Timer::Checks), T0 + 120_000),
        vec![rearm]
    );
    assert_eq!(
        core.on(Input::ChecksCompleted(printer(true)), T0 + 121_000),
        vec![Action::RunChecks]
    );
}

#[test]
fn sequence_numbers_continue_from_the_persisted_value_after_a_restart() {
    let mut first = running(0);
    first.on(Input::ChecksCompleted(printer(false)), T0 + 62_000);
    let persisted = first.last_seq();
    assert_eq!(persisted, 2);

    let mut second = AgentCore::new(config(), persisted);
    assert_eq!(
        second.on(Input::Started, T0 + 600_000)[0],
        enqueue(3, T0 + 600_000, boot())
    );
}

#[test]
fn live_desired_state_dates_the_clock_and_reports_its_config_revision() {
    let mut core = running(0);
    let now = T0 + 5000;
    let actions = core.on(
        Input::DesiredReceived {
            desired: Desired {
                config_rev: 7,
                firmware: None,
                agent: None,
                freeze: Vec::new(),
            },
            sent_at_ms: now - 1500,
            retained: false,
        },
        now,
    );
    assert_eq!(
        actions,
        vec![
            state_msg(now, printer(true), 7),
            to_updates(7, now - 1500, false)
        ]
    );
    // Our clock is 1.5 s ahead of the controller's.
    let dated = Health {
        clock_offset_ms: Some(1500),
        ..normal()
    };
    assert_eq!(
        core.on(Input::HealthSampled(normal()), now + 1),
        vec![health_msg(now + 1, dated)]
    );
}

#[test]
fn retained_desired_state_does_not_date_the_clock() {
    let mut core = running(0);
    let now = T0 + 5000;
    let actions = core.on(
        Input::DesiredReceived {
            desired: Desired::default(),
            sent_at_ms: T0 - 86_400_000,
            retained: true,
        },
        now,
    );
    // Same config revision (0): nothing to report either.
    assert_eq!(actions, vec![to_updates(0, T0 - 86_400_000, true)]);
    assert_eq!(
        core.on(Input::HealthSampled(normal()), now + 1),
        vec![health_msg(now + 1, normal())]
    );
}

#[test]
fn reboot_command_asks_the_runtime_to_reboot_then_reports_the_outcome() {
    let mut core = running(0);
    let now = T0 + 5000;
    let actions = core.on(
        Input::CommandReceived(command("c-1", now + 60_000, CommandAction::Reboot)),
        now,
    );
    assert_eq!(
        actions,
        vec![Action::Reboot {
            command: "c-1".into()
        }]
    );
    let actions = core.on(
        Input::RebootAttempted {
            command: "c-1".into(),
            outcome: Ok(()),
        },
        now,
    );
    assert_eq!(
        actions,
        vec![enqueue(2, now, result("c-1", true, "rebooting")),]
    );
    let actions = core.on(
        Input::RebootAttempted {
            command: "c-2".into(),
            outcome: Err("no reboot command is configured".into()),
        },
        now,
    );
    assert_eq!(
        actions,
        vec![enqueue(
            3,
            now,
            result("c-2", false, "no reboot command is configured")
        ),]
    );
}

#[test]
fn run_checks_command_reports_started_and_runs_the_checks() {
    let mut core = running(0);
    let now = T0 + 5000;
    let actions = core.on(
        Input::CommandReceived(command("c-1", now + 60_000, CommandAction::RunChecks)),
        now,
    );
    assert_eq!(
        actions,
        vec![
            enqueue(2, now, result("c-1", true, "checks started")),
            Action::RunChecks,
        ]
    );
}

#[test]
fn expired_command_is_rejected_without_acting() {
    let mut core = running(0);
    let now = T0 + 5000;
    let actions = core.on(
        Input::CommandReceived(command("c-1", now - 1, CommandAction::Reboot)),
        now,
    );
    assert_eq!(
        actions,
        vec![enqueue(
            2,
            now,
            result("c-1", false, "expired before it arrived")
        ),]
    );
}

#[test]
fn upload_logs_asks_the_runtime_to_upload_and_answers_with_the_bytes_taken() {
    let mut core = running(0);
    let now = T0 + 5000;
    let ticket = fleet_protocol::UploadTicket {
        path: "/api/v1/devices/BB-23-000123/logs/c-1".into(),
        token: "t".into(),
    };
    let cmd = Command {
        upload: Some(ticket.clone()),
        ..command("c-1", now, CommandAction::UploadLogs)
    };
    assert_eq!(
        core.on(Input::CommandReceived(cmd), now),
        vec![Action::UploadLogs {
            command: "c-1".into(),
            ticket
        }],
        "nothing is said before the runtime tried"
    );
    assert_eq!(
        core.on(
            Input::LogsUploaded {
                command: "c-1".into(),
                outcome: Ok(4096)
            },
            now + 1
        ),
        vec![enqueue(
            2,
            now + 1,
            result("c-1", true, "uploaded 4096 bytes of logs")
        )]
    );
    assert_eq!(
        core.on(
            Input::LogsUploaded {
                command: "c-2".into(),
                outcome: Err("no log files are configured ([logs] paths)".into())
            },
            now + 2
        ),
        vec![enqueue(
            3,
            now + 2,
            result("c-2", false, "no log files are configured ([logs] paths)")
        )]
    );
}

#[test]
fn upload_logs_without_a_ticket_or_after_expiry_uploads_nothing() {
    let mut core = running(0);
    let now = T0 + 5000;
    assert_eq!(
        core.on(
            Input::CommandReceived(command("c-1", now, CommandAction::UploadLogs)),
            now,
        ),
        vec![enqueue(
            2,
            now,
            result("c-1", false, "the command carries no upload ticket")
        )]
    );
    let late = Command {
        upload: Some(fleet_protocol::UploadTicket {
            path: "/p".into(),
            token: "t".into(),
        }),
        ..command("c-2", now - 1, CommandAction::UploadLogs)
    };
    assert_eq!(
        core.on(Input::CommandReceived(late), now),
        vec![enqueue(
            3,
            now,
            result("c-2", false, "expired before it arrived")
        )]
    );
}

#[test]
fn outbox_reports_and_storage_faults_become_events_once_per_fault() {
    let mut core = running(0);
    let now = T0 + 5000;
    let dropped = EventKind::OutboxDropped {
        health_samples: 12,
        oldest_ms: T0,
        newest_ms: T0 + 10,
        other_events: 2,
    };
    assert_eq!(
        core.on(Input::Report(dropped.clone()), now),
        vec![enqueue(2, now, dropped)]
    );
    let fault = EventKind::StorageFault {
        message: "disk full".into(),
    };
    assert_eq!(
        core.on(Input::StorageFailed("disk full".into()), now),
        vec![enqueue(3, now, fault.clone())]
    );
    // Still failing: said once.
    assert_eq!(
        core.on(Input::StorageFailed("disk full".into()), now + 1),
        vec![]
    );
    assert_eq!(core.on(Input::StorageRecovered, now + 2), vec![]);
    assert_eq!(
        core.on(Input::StorageFailed("disk full".into()), now + 3),
        vec![enqueue(4, now + 3, fault)]
    );
}

#[test]
fn refused_state_is_sent_again_on_the_next_look() {
    let mut core = running(0);
    let t = T0 + 62_000;
    let actions = core.on(Input::ChecksCompleted(printer(false)), t);
    let Some(Action::Publish { envelope, .. }) = actions.last().cloned() else {
        panic!("no state publish in {actions:?}");
    };
    assert_eq!(core.on(Input::PublishRefused(envelope), t), vec![]);
    assert_eq!(
        core.on(Input::ChecksCompleted(printer(false)), t + 60_000),
        vec![state_msg(t + 60_000, printer(false), 0)]
    );
}

#[test]
fn events_while_disconnected_are_committed_the_same_way() {
    let mut core = running(0);
    core.on(Input::Disconnected, T0 + 3000);
    let actions = core.on(
        Input::CommandReceived(command("c-1", T0, CommandAction::RunChecks)),
        T0 + 4000,
    );
    assert_eq!(
        actions,
        vec![enqueue(
            2,
            T0 + 4000,
            result("c-1", false, "expired before it arrived")
        )]
    );
}

#[test]
fn shutdown_says_offline_and_disconnects_when_connected() {
    let mut core = running(0);
    assert_eq!(
        core.on(Input::ShutdownRequested, T0 + 9000),
        vec![
            presence(T0 + 9000, PresenceStatus::Offline, SESSION),
            Action::Disconnect,
        ]
    );
}

#[test]
fn shutdown_while_disconnected_does_nothing() {
    let mut core = AgentCore::new(config(), 0);
    core.on(Input::Started, T0);
    assert_eq!(core.on(Input::ShutdownRequested, T0 + 9000), vec![]);
}

#[test]
fn incoming_accepts_only_this_devices_desired_state_and_commands() {
    let on = |kind| Topic::new(device(), kind).to_string();
    let desired = Desired {
        config_rev: 4,
        firmware: None,
        agent: None,
        freeze: Vec::new(),
    };
    let bytes = envelope(T0, Payload::Desired(desired.clone()))
        .to_cbor()
        .unwrap();
    assert_eq!(
        incoming(&device(), &on(TopicKind::Desired), &bytes, true),
        Ok(Input::DesiredReceived {
            desired,
            sent_at_ms: T0,
            retained: true
        })
    );
    let cmd = command("c-1", T0, CommandAction::RunChecks);
    let bytes = envelope(T0, Payload::Command(cmd.clone()))
        .to_cbor()
        .unwrap();
    assert_eq!(
        incoming(&device(), &on(TopicKind::Cmd), &bytes, false),
        Ok(Input::CommandReceived(cmd))
    );

    let other = DeviceId::parse("BB-23-000999").unwrap();
    let theirs = Topic::new(other.clone(), TopicKind::Cmd).to_string();
    assert!(matches!(
        incoming(&device(), &theirs, &bytes, false),
        Err(IncomingError::OtherDevice { other: o, .. }) if o == other
    ));
    assert!(matches!(
        incoming(&device(), "fleet/v1/elsewhere", &bytes, false),
        Err(IncomingError::Topic { .. })
    ));
    assert!(matches!(
        incoming(&device(), &on(TopicKind::Cmd), b"\xff\x00", false),
        Err(IncomingError::Malformed { .. })
    ));
    let health = envelope(T0, Payload::Health(normal())).to_cbor().unwrap();
    assert!(matches!(
        incoming(&device(), &on(TopicKind::Health), &health, false),
        Err(IncomingError::UnexpectedKind {
            kind: TopicKind::Health,
            ..
        })
    ));
}

// ---- certificate renewal ----

const DAY_MS: u64 = 86_400_000;

fn renewing_config(new_key: bool) -> CoreConfig {
    CoreConfig {
        renewal: Some(RenewalPolicy {
            at_fraction: 2.0 / 3.0,
            answer_timeout: Duration::from_secs(60),
            retry_after: Duration::from_secs(300),
            new_key,
        }),
        ..config()
    }
}

/// A certificate of 300 days from T0: due at day 200.
fn cert(serial: &str, from: u64) -> CertInfo {
    CertInfo {
        serial: serial.into(),
        not_before_ms: from,
        not_after_ms: from + 300 * DAY_MS,
    }
}

/// A core that started, connected, and uses `cert("01", T0)`.
fn renewing_core(new_key: bool) -> AgentCore {
    let mut core = AgentCore::new(renewing_config(new_key), 0);
    core.on(Input::Started, T0);
    core.on(
        Input::Connected {
            session_present: true,
            session: SESSION,
        },
        T0,
    );
    core.on(Input::ChecksCompleted(printer(true)), T0);
    let out = core.on(Input::CertificateInUse(cert("01", T0)), T0);
    assert_eq!(
        out,
        [Action::ArmTimer {
            timer: Timer::Renewal,
            after: Duration::from_millis(200 * DAY_MS),
        }],
        "the renewal is armed at two thirds of the certificate's life"
    );
    core
}

fn request_sent(out: &[Action]) -> bool {
    out.iter().any(|a| {
        matches!(a, Action::Publish { envelope, qos: Qos::AtLeastOnce, retain: false }
            if matches!(&envelope.payload, Payload::CertRequest(r) if r.csr_pem == "CSR"))
    })
}

#[test]
fn renews_at_two_thirds_of_the_certificates_life_not_before() {
    let mut core = renewing_core(false);
    // A timer that fires early (a clock change) only re-arms.
    let early = T0 + 199 * DAY_MS;
    assert_eq!(
        core.on(Input::TimerFired(Timer::Renewal), early),
        [Action::ArmTimer {
            timer: Timer::Renewal,
            after: Duration::from_millis(DAY_MS),
        }]
    );
    let due = T0 + 200 * DAY_MS;
    assert_eq!(
        core.on(Input::TimerFired(Timer::Renewal), due),
        [Action::MakeCertRequest { new_key: false }]
    );
    let out = core.on(Input::CertRequestMade(Ok("CSR".into())), due);
    assert_eq!(
        out[0],
        subscribe(TopicKind::Cert),
        "subscribed before asking"
    );
    assert!(request_sent(&out), "{out:?}");
    assert!(out.contains(&Action::ArmTimer {
        timer: Timer::Renewal,
        after: Duration::from_secs(60),
    }));
    // The certificate comes back: tried, then in use, and the next renewal
    // is armed from the new certificate's dates.
    assert_eq!(
        core.on(Input::CertificateReceived("CERT".into()), due + 1000),
        [Action::TryCertificate {
            cert_pem: "CERT".into()
        }]
    );
    assert_eq!(core.renewal(), &Renewal::Installing);
    let out = core.on(Input::CertificateTried(Ok(cert("02", due))), due + 2000);
    assert_eq!(
        out,
        [Action::ArmTimer {
            timer: Timer::Renewal,
            after: Duration::from_millis(200 * DAY_MS - 2000),
        }]
    );
    assert_eq!(core.renewal(), &Renewal::Idle);
}

#[test]
fn a_new_key_is_asked_for_when_configured() {
    let mut core = renewing_core(true);
    assert_eq!(
        core.on(Input::TimerFired(Timer::Renewal), T0 + 250 * DAY_MS),
        [Action::MakeCertRequest { new_key: true }]
    );
}

#[test]
fn never_two_renewals_at_once() {
    let mut core = renewing_core(false);
    let due = T0 + 200 * DAY_MS;
    core.on(Input::TimerFired(Timer::Renewal), due);
    core.on(Input::CertRequestMade(Ok("CSR".into())), due);
    // The command during a renewal answers that one is under way and asks
    // for nothing.
    let cmd = Command {
        id: "c-1".into(),
        expires_at_ms: due + 60_000,
        action: CommandAction::RenewCertificate,
        upload: None,
    };
    let out = core.on(Input::CommandReceived(cmd), due + 10);
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::MakeCertRequest { .. })),
        "{out:?}"
    );
    assert!(out.iter().any(|a| matches!(a, Action::Enqueue(e)
        if matches!(&e.kind, EventKind::CommandResult { ok: false, message, .. } if message.contains("already under way")))));
    // A second delivery of the same certificate while it is being tried
    // is not tried twice.
    core.on(Input::CertificateReceived("CERT".into()), due + 20);
    assert!(core
        .on(Input::CertificateReceived("CERT".into()), due + 30)
        .is_empty());
}

#[test]
fn the_command_renews_at_once_and_answers_when_done() {
    let mut core = renewing_core(false);
    let now = T0 + DAY_MS;
    let cmd = Command {
        id: "c-9".into(),
        expires_at_ms: now + 60_000,
        action: CommandAction::RenewCertificate,
        upload: None,
    };
    assert_eq!(
        core.on(Input::CommandReceived(cmd), now),
        [Action::MakeCertRequest { new_key: false }]
    );
    core.on(Input::CertRequestMade(Ok("CSR".into())), now);
    core.on(Input::CertificateReceived("CERT".into()), now + 10);
    let out = core.on(Input::CertificateTried(Ok(cert("03", now))), now + 20);
    assert!(out.iter().any(|a| matches!(a, Action::Enqueue(e)
            if matches!(&e.kind, EventKind::CommandResult { id, ok: true, message } if id == "c-9" && message.contains("03")))), "{out:?}");
}

#[test]
fn a_failed_renewal_is_tried_again_later() {
    let mut core = renewing_core(false);
    let due = T0 + 200 * DAY_MS;
    core.on(Input::TimerFired(Timer::Renewal), due);
    core.on(Input::CertRequestMade(Ok("CSR".into())), due);
    // No answer within the timeout: given up, retried after retry_after.
    assert_eq!(
        core.on(Input::TimerFired(Timer::Renewal), due + 60_000),
        [Action::ArmTimer {
            timer: Timer::Renewal,
            after: Duration::from_secs(300),
        }]
    );
    assert_eq!(core.renewal(), &Renewal::Idle);
    // A late answer to the abandoned attempt is not installed.
    assert!(core
        .on(Input::CertificateReceived("LATE".into()), due + 61_000)
        .is_empty());
    let retry = due + 360_000;
    assert_eq!(
        core.on(Input::TimerFired(Timer::Renewal), retry),
        [Action::MakeCertRequest { new_key: false }]
    );
    core.on(Input::CertRequestMade(Ok("CSR".into())), retry);
    core.on(Input::CertificateReceived("CERT".into()), retry + 10);
    // The new certificate did not connect: the old one is back in use, and
    // the renewal is tried again later.
    assert_eq!(
        core.on(
            Input::CertificateTried(Err("handshake refused".into())),
            retry + 20
        ),
        [Action::ArmTimer {
            timer: Timer::Renewal,
            after: Duration::from_secs(300),
        }]
    );
    // A request that could not be made is a failure too.
    core.on(Input::TimerFired(Timer::Renewal), retry + 400_000);
    assert_eq!(
        core.on(
            Input::CertRequestMade(Err("no key".into())),
            retry + 400_000
        ),
        [Action::ArmTimer {
            timer: Timer::Renewal,
            after: Duration::from_secs(300),
        }]
    );
}

#[test]
fn a_renewal_due_while_offline_waits_for_the_connection() {
    let mut core = renewing_core(false);
    core.on(Input::Disconnected, T0 + DAY_MS);
    let due = T0 + 200 * DAY_MS;
    assert!(core.on(Input::TimerFired(Timer::Renewal), due).is_empty());
    assert_eq!(core.renewal(), &Renewal::Wanted);
    let out = core.on(
        Input::Connected {
            session_present: true,
            session: SESSION + 1,
        },
        due + 5000,
    );
    assert_eq!(
        out.last(),
        Some(&Action::MakeCertRequest { new_key: false })
    );
}

#[test]
fn without_a_certificate_the_command_is_refused() {
    let mut core = AgentCore::new(config(), 0);
    core.on(Input::Started, T0);
    let cmd = Command {
        id: "c-2".into(),
        expires_at_ms: T0 + 60_000,
        action: CommandAction::RenewCertificate,
        upload: None,
    };
    let out = core.on(Input::CommandReceived(cmd), T0);
    assert!(!out
        .iter()
        .any(|a| matches!(a, Action::MakeCertRequest { .. })));
    assert_eq!(core.last_seq(), 2, "boot and the refusal");
    assert!(matches!(
        out.last(),
        Some(Action::Enqueue(Event {
            kind: EventKind::CommandResult { ok: false, .. },
            ..
        }))
    ));
}

#[test]
fn a_renewed_certificate_arrives_as_an_input() {
    let bytes = Envelope::new(
        device(),
        T0,
        Payload::CertIssued(fleet_protocol::CertIssued {
            cert_pem: "PEM".into(),
        }),
    )
    .to_cbor()
    .unwrap();
    assert_eq!(
        incoming(
            &device(),
            &Topic::new(device(), TopicKind::Cert).to_string(),
            &bytes,
            false
        )
        .unwrap(),
        Input::CertificateReceived("PEM".into())
    );
}

#[test]
fn the_update_status_and_a_committed_firmware_reach_the_state() {
    let mut core = running(0);
    let out = core.on(Input::UpdateStatus(UpdateStatus::Downloading), T0 + 10);
    let Some(Action::Publish {
        envelope: Envelope {
            payload: Payload::State(state),
            ..
        },
        ..
    }) = out.first()
    else {
        panic!("{out:#?}")
    };
    assert_eq!(state.update, UpdateStatus::Downloading);
    let out = core.on(
        Input::FirmwareChanged(Version::parse("2.5.0").unwrap()),
        T0 + 20,
    );
    let Some(Action::Publish {
        envelope: Envelope {
            payload: Payload::State(state),
            ..
        },
        ..
    }) = out.first()
    else {
        panic!("{out:#?}")
    };
    assert_eq!(state.firmware, Version::parse("2.5.0").unwrap());
    // Unchanged: nothing.
    assert!(core
        .on(Input::UpdateStatus(UpdateStatus::Downloading), T0 + 30)
        .is_empty());
}

#[test]
fn a_command_delivered_again_is_not_run_again() {
    let mut core = running(0);
    let now = T0 + 5000;
    let ticket = fleet_protocol::UploadTicket {
        path: "/api/v1/devices/BB-23-000123/logs/c-1".into(),
        token: "t".into(),
    };
    let cmd = Command {
        upload: Some(ticket.clone()),
        ..command("c-1", now + 60_000, CommandAction::UploadLogs)
    };
    assert_eq!(
        core.on(Input::CommandReceived(cmd.clone()), now),
        vec![Action::UploadLogs {
            command: "c-1".into(),
            ticket
        }]
    );
    // QoS 1 re-delivers it: the token was spent, nothing is done or said.
    assert_eq!(core.on(Input::CommandReceived(cmd), now + 10), vec![]);
    let reboot = command("c-2", now + 60_000, CommandAction::Reboot);
    assert_eq!(
        core.on(Input::CommandReceived(reboot.clone()), now + 20),
        vec![Action::Reboot {
            command: "c-2".into()
        }]
    );
    assert_eq!(core.on(Input::CommandReceived(reboot), now + 30), vec![]);
}

#[test]
fn a_desired_state_that_waited_in_the_broker_does_not_revive_an_expired_command() {
    let mut core = running(0);
    let now = T0 + 5000;
    // Published an hour ago while we were off, delivered now from our
    // session's queue (not flagged retained): it reads as our clock an
    // hour ahead.
    core.on(
        Input::DesiredReceived {
            desired: Desired::default(),
            sent_at_ms: now - 3_600_000,
            retained: false,
        },
        now,
    );
    // Expired a minute ago by both clocks: not run.
    let stale = command("c-1", now - 60_000, CommandAction::Reboot);
    assert_eq!(
        core.on(Input::CommandReceived(stale), now + 1),
        vec![enqueue(
            2,
            now + 1,
            result("c-1", false, "expired before it arrived")
        )]
    );
}

#[test]
fn a_command_expires_by_the_controllers_clock_when_ours_is_behind() {
    let mut core = running(0);
    // Our clock is 10 minutes behind the controller's.
    let now = T0 + 5000;
    let behind = 600_000;
    core.on(
        Input::DesiredReceived {
            desired: Desired::default(),
            sent_at_ms: now + behind,
            retained: false,
        },
        now,
    );
    // Expired 5 minutes ago on the controller, 5 minutes ahead on our clock.
    let stale = command("c-1", now + behind - 300_000, CommandAction::Reboot);
    assert_eq!(
        core.on(Input::CommandReceived(stale), now + 1),
        vec![enqueue(
            2,
            now + 1,
            result("c-1", false, "expired before it arrived")
        )]
    );
    let fresh = command("c-2", now + behind + 60_000, CommandAction::Reboot);
    assert_eq!(
        core.on(Input::CommandReceived(fresh), now + 2),
        vec![Action::Reboot {
            command: "c-2".into()
        }]
    );
}
