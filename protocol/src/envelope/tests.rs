use proptest::prelude::*;

use super::*;
use crate::ids::{Model, Version};
use crate::message::*;

fn dev(s: &str) -> DeviceId {
    DeviceId::parse(s).unwrap()
}

pub(crate) fn typical_health() -> Envelope {
    Envelope::new(
        dev("BB-23-000123"),
        1_795_000_000_000,
        Payload::Health(Health {
            cpu_pct: 37,
            mem_used_pct: 62,
            disk_free_pct: 71,
            temp_c: Some(54),
            battery_pct: Some(88),
            uptime_s: 3_456_789,
            clock_offset_ms: Some(-1_250),
            disk_free_mb: 12_345,
            window: None,
        }),
    )
}

#[test]
fn health_report_is_under_100_bytes() {
    let bytes = typical_health().to_cbor().unwrap();
    let json = serde_json::to_string(&typical_health()).unwrap();
    println!(
        "typical health report: {} bytes CBOR, {} bytes JSON",
        bytes.len(),
        json.len()
    );
    assert!(bytes.len() < 100, "health is {} bytes", bytes.len());
    // Even with the longest allowed device id it stays within its limit.
    let mut long = typical_health();
    long.device = dev(&"x".repeat(64));
    assert!(long.to_cbor().unwrap().len() <= TopicKind::Health.max_payload());
}

#[test]
fn decode_on_topic_checks_kind_and_device() {
    let env = typical_health();
    let bytes = env.to_cbor().unwrap();
    assert_eq!(Envelope::from_cbor_on(&env.topic(), &bytes).unwrap(), env);

    let other = Topic::new(dev("BB-OTHER"), TopicKind::Health);
    assert!(matches!(
        Envelope::from_cbor_on(&other, &bytes),
        Err(DecodeError::DeviceMismatch { .. })
    ));
    let state_topic = Topic::new(env.device.clone(), TopicKind::State);
    assert!(matches!(
        Envelope::from_cbor_on(&state_topic, &bytes),
        Err(DecodeError::KindMismatch { .. })
    ));
}

#[test]
fn oversize_is_refused_before_decoding() {
    let topic = Topic::new(dev("BB-1"), TopicKind::Health);
    let big = vec![0u8; 10_000];
    assert!(matches!(
        Envelope::from_cbor_on(&topic, &big),
        Err(DecodeError::TooLarge { len: 10_000, .. })
    ));
    // and on the sending side
    let env = Envelope::new(
        dev("BB-1"),
        0,
        Payload::Event(Event {
            seq: 1,
            at_ms: 0,
            kind: EventKind::Error {
                message: "x".repeat(5000),
            },
            boot: None,
        }),
    );
    assert!(matches!(env.to_cbor(), Err(EncodeError::TooLarge { .. })));
}

/// A newer writer adds field 9 to the health map and field 7 to the
/// envelope: this (older) reader must skip both.
#[test]
fn unknown_fields_are_ignored() {
    let mut buf = Vec::new();
    let mut e = minicbor::Encoder::new(&mut buf);
    e.map(5).unwrap();
    e.u8(0).unwrap().u16(2).unwrap();
    e.u8(1).unwrap().str("BB-9").unwrap();
    e.u8(2).unwrap().u64(42).unwrap();
    e.u8(7).unwrap().str("a field from the future").unwrap();
    e.u8(3).unwrap();
    // payload: [variant index, [fields…]], the health fields a map
    e.array(2).unwrap().u8(2).unwrap().array(1).unwrap();
    e.map(6).unwrap();
    e.u8(0).unwrap().u8(5).unwrap();
    e.u8(1).unwrap().u8(6).unwrap();
    e.u8(2).unwrap().u8(7).unwrap();
    e.u8(5).unwrap().u64(100).unwrap();
    e.u8(7).unwrap().u64(1).unwrap();
    e.u8(9)
        .unwrap()
        .array(2)
        .unwrap()
        .u8(1)
        .unwrap()
        .str("x")
        .unwrap();
    let env = Envelope::from_cbor(&buf).unwrap();
    assert_eq!(env.v, 2);
    let Payload::Health(h) = env.payload else {
        panic!("not health")
    };
    assert_eq!((h.cpu_pct, h.mem_used_pct, h.uptime_s), (5, 6, 100));
    assert_eq!(h.temp_c, None);
}

#[test]
fn missing_required_field_is_an_error() {
    let mut buf = Vec::new();
    let mut e = minicbor::Encoder::new(&mut buf);
    e.map(1).unwrap().u8(0).unwrap().u16(1).unwrap();
    assert!(matches!(
        Envelope::from_cbor(&buf),
        Err(DecodeError::Cbor(_))
    ));
}

#[test]
fn json_form_round_trips_and_validates() {
    let env = typical_health();
    let json = env.to_json();
    assert!(json.contains("\"cpu_pct\": 37"), "{json}");
    assert_eq!(Envelope::from_json(&json).unwrap(), env);
    let forged = json.replace("BB-23-000123", "BB/../x");
    assert!(matches!(
        Envelope::from_json(&forged),
        Err(DecodeError::Json(_))
    ));
}

fn arb_version() -> impl Strategy<Value = Version> {
    (
        0u64..100,
        0u64..100,
        0u64..1000,
        proptest::option::of("[a-z0-9]{1,6}"),
    )
        .prop_map(|(a, b, c, pre)| {
            let s = match pre {
                Some(p) => format!("{a}.{b}.{c}-{p}"),
                None => format!("{a}.{b}.{c}"),
            };
            Version::parse(&s).unwrap()
        })
}

fn arb_device() -> impl Strategy<Value = DeviceId> {
    "[A-Za-z0-9_-]{1,64}".prop_map(|s| DeviceId::parse(&s).unwrap())
}

fn arb_payload() -> impl Strategy<Value = Payload> {
    let presence = (
        any::<bool>(),
        arb_version(),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(on, agent, session)| {
            Payload::Presence(Presence {
                status: if on {
                    PresenceStatus::Online
                } else {
                    PresenceStatus::Offline
                },
                agent,
                session,
            })
        });
    let state = (
        arb_version(),
        arb_version(),
        0u8..5,
        proptest::collection::vec(
            (
                "[a-z-]{1,16}",
                any::<bool>(),
                proptest::option::of(".{0,40}"),
            ),
            0..4,
        ),
        any::<u32>(),
    )
        .prop_map(|(fw, agent, upd, checks, rev)| {
            Payload::State(State {
                model: Model::parse("ballot-box-v2").unwrap(),
                firmware: fw,
                agent,
                update: [
                    UpdateStatus::Idle,
                    UpdateStatus::Downloading,
                    UpdateStatus::Installing,
                    UpdateStatus::Rebooting,
                    UpdateStatus::Failed,
                    UpdateStatus::Verifying,
                    UpdateStatus::Checking,
                ][usize::from(upd)],
                checks: checks
                    .into_iter()
                    .map(|(name, passed, message)| CheckResult {
                        name,
                        passed,
                        message,
                    })
                    .collect(),
                config_rev: rev,
            })
        });
    let health = (
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        proptest::option::of(any::<i16>()),
        proptest::option::of(any::<u8>()),
        any::<u64>(),
        proptest::option::of(any::<i64>()),
        any::<u64>(),
    )
        .prop_map(|(c, m, d, t, b, u, o, f)| {
            Payload::Health(Health {
                cpu_pct: c,
                mem_used_pct: m,
                disk_free_pct: d,
                temp_c: t,
                battery_pct: b,
                uptime_s: u,
                clock_offset_ms: o,
                disk_free_mb: f,
                window: None,
            })
        });
    let event = (
        any::<u64>(),
        any::<u64>(),
        ".{0,60}",
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(seq, at, msg, boot)| {
            Payload::Event(Event {
                seq,
                at_ms: at,
                kind: EventKind::CheckFailed {
                    name: "printer".into(),
                    message: msg,
                },
                boot,
            })
        });
    let desired = (
        any::<u32>(),
        proptest::option::of(arb_version()),
        proptest::option::of(arb_version()),
        proptest::collection::vec((any::<u64>(), any::<u64>()), 0..3),
    )
        .prop_map(|(rev, v, agent, freeze)| {
            Payload::Desired(Desired {
                config_rev: rev,
                firmware: v.map(|version| TargetFirmware {
                    version,
                    manifest: "firmware/ballot-box-v2/2.4.0.tar".into(),
                    attempt: 0,
                }),
                agent: agent.map(|version| TargetFirmware {
                    manifest: format!("agent/x86-64-linux/{version}"),
                    attempt: 0,
                    version,
                }),
                freeze: freeze
                    .into_iter()
                    .map(|(from_ms, to_ms)| FreezeWindow { from_ms, to_ms })
                    .collect(),
            })
        });
    let command = (
        "[a-z0-9-]{1,36}",
        any::<u64>(),
        proptest::option::of("[A-Za-z0-9_-]{1,43}"),
    )
        .prop_map(|(id, exp, token)| {
            Payload::Command(Command {
                action: if token.is_some() {
                    Action::UploadLogs
                } else {
                    Action::RunChecks
                },
                upload: token.map(|token| UploadTicket {
                    path: format!("/api/v1/devices/BB-1/logs/{id}"),
                    token,
                }),
                id,
                expires_at_ms: exp,
            })
        });
    prop_oneof![presence, state, health, event, desired, command]
}

proptest! {
    #[test]
    fn cbor_round_trip(device in arb_device(), at in any::<u64>(), payload in arb_payload()) {
        let env = Envelope::new(device, at, payload);
        let bytes = env.to_cbor().unwrap();
        prop_assert_eq!(Envelope::from_cbor_on(&env.topic(), &bytes).unwrap(), env.clone());
        prop_assert_eq!(Envelope::from_json(&env.to_json()).unwrap(), env);
    }

    #[test]
    fn any_bytes_decode_or_error(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Envelope::from_cbor(&bytes);
        let topic = Topic::new(DeviceId::parse("BB-1").unwrap(), TopicKind::State);
        let _ = Envelope::from_cbor_on(&topic, &bytes);
    }

    /// Mutating a valid message (flipped bytes, truncation) never panics.
    #[test]
    fn mutated_messages_decode_or_error(payload in arb_payload(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        let env = Envelope::new(DeviceId::parse("BB-1").unwrap(), 7, payload);
        let mut bytes = env.to_cbor().unwrap();
        for (i, b) in flips {
            let n = bytes.len();
            bytes[i % n] ^= b;
        }
        let _ = Envelope::from_cbor(&bytes);
        let n = bytes.len();
        bytes.truncate(cut % (n + 1));
        let _ = Envelope::from_cbor(&bytes);
    }

    #[test]
    fn any_string_topic_parses_or_errors(s in ".{0,120}") {
        let _ = Topic::parse(&s);
    }
}

/// The event as agents before the boot id wrote and read it (tags 0..=2).
#[derive(Debug, PartialEq, minicbor::Encode, minicbor::Decode)]
#[cbor(map)]
struct EventBeforeBoot {
    #[n(0)]
    seq: u64,
    #[n(1)]
    at_ms: u64,
    #[n(2)]
    kind: EventKind,
}

#[test]
fn events_with_and_without_a_boot_id_are_read_by_old_and_new_readers() {
    let kind = EventKind::Error {
        message: "x".into(),
    };
    let old = minicbor::to_vec(EventBeforeBoot {
        seq: 7,
        at_ms: 9,
        kind: kind.clone(),
    })
    .unwrap();
    let read: Event = minicbor::decode(&old).unwrap();
    assert_eq!(read.boot, None, "an old agent's event has no boot id");
    assert_eq!(read.seq, 7);
    let new = Event {
        seq: 7,
        at_ms: 9,
        kind: kind.clone(),
        boot: Some(0xdead_beef_0000_0001),
    };
    let bytes = minicbor::to_vec(&new).unwrap();
    assert_eq!(minicbor::decode::<Event>(&bytes).unwrap(), new);
    let by_old: EventBeforeBoot = minicbor::decode(&bytes).unwrap();
    assert_eq!(by_old.seq, 7, "an old reader skips the boot id");
    let without = Event { boot: None, ..new };
    assert_eq!(
        minicbor::to_vec(&without).unwrap(),
        old,
        "no boot id, same bytes as before"
    );
}

#[test]
fn sequence_numbers_beyond_2_pow_53_or_zero_are_out_of_range() {
    let at = |seq| Event {
        seq,
        at_ms: 0,
        kind: EventKind::Error {
            message: String::new(),
        },
        boot: None,
    };
    assert!(at(1).seq_in_range());
    assert!(at(Event::MAX_SEQ).seq_in_range());
    assert_eq!(Event::MAX_SEQ, 9_007_199_254_740_991);
    for bad in [0, Event::MAX_SEQ + 1, i64::MAX as u64, u64::MAX] {
        assert!(!at(bad).seq_in_range(), "{bad}");
    }
}

/// `outbox-dropped` as agents before `other_events` wrote and read it.
#[derive(Debug, PartialEq, minicbor::Encode, minicbor::Decode)]
enum DroppedBeforeOtherEvents {
    #[n(6)]
    OutboxDropped {
        #[n(0)]
        health_samples: u64,
        #[n(1)]
        oldest_ms: u64,
        #[n(2)]
        newest_ms: u64,
    },
}

#[test]
fn outbox_drop_reports_with_and_without_other_events_are_read_by_old_and_new_readers() {
    let old = minicbor::to_vec(DroppedBeforeOtherEvents::OutboxDropped {
        health_samples: 5,
        oldest_ms: 1,
        newest_ms: 2,
    })
    .unwrap();
    assert_eq!(
        minicbor::decode::<EventKind>(&old).unwrap(),
        EventKind::OutboxDropped {
            health_samples: 5,
            oldest_ms: 1,
            newest_ms: 2,
            other_events: 0,
        },
        "an old agent's report reads as no other events dropped"
    );
    let new = EventKind::OutboxDropped {
        health_samples: 5,
        oldest_ms: 1,
        newest_ms: 2,
        other_events: 3,
    };
    let bytes = minicbor::to_vec(&new).unwrap();
    assert_eq!(minicbor::decode::<EventKind>(&bytes).unwrap(), new);
    assert_eq!(
        minicbor::decode::<DroppedBeforeOtherEvents>(&bytes).unwrap(),
        DroppedBeforeOtherEvents::OutboxDropped {
            health_samples: 5,
            oldest_ms: 1,
            newest_ms: 2,
        },
        "an old reader skips the new count"
    );
    let json: EventKind = serde_json::from_str(
        r#"{"outbox-dropped":{"health_samples":5,"oldest_ms":1,"newest_ms":2}}"#,
    )
    .unwrap();
    assert_eq!(
        json,
        EventKind::OutboxDropped {
            health_samples: 5,
            oldest_ms: 1,
            newest_ms: 2,
            other_events: 0,
        }
    );
}

/// A command as controllers wrote it before upload tickets.
#[derive(Debug, minicbor::Encode, minicbor::Decode)]
#[cbor(map)]
struct CommandBeforeUpload {
    #[n(0)]
    id: String,
    #[n(1)]
    expires_at_ms: u64,
    #[n(2)]
    action: Action,
}

#[test]
fn commands_with_and_without_an_upload_ticket_are_read_by_old_and_new_readers() {
    let old = minicbor::to_vec(CommandBeforeUpload {
        id: "cmd-1".into(),
        expires_at_ms: 9,
        action: Action::RunChecks,
    })
    .unwrap();
    let read: Command = minicbor::decode(&old).unwrap();
    assert_eq!(
        read.upload, None,
        "an old controller's command has no ticket"
    );
    assert_eq!(
        minicbor::to_vec(&read).unwrap(),
        old,
        "no ticket, same bytes as before"
    );
    let new = Command {
        id: "cmd-2".into(),
        expires_at_ms: 9,
        action: Action::UploadLogs,
        upload: Some(UploadTicket {
            path: "/api/v1/devices/BB-1/logs/cmd-2".into(),
            token: "t0ken".into(),
        }),
    };
    let env = Envelope::new(dev("BB-1"), 5, Payload::Command(new.clone()));
    let bytes = env.to_cbor().unwrap();
    assert_eq!(Envelope::from_cbor_on(&env.topic(), &bytes).unwrap(), env);
    assert_eq!(Envelope::from_json(&env.to_json()).unwrap(), env);
    let by_old: CommandBeforeUpload = minicbor::decode(&minicbor::to_vec(&new).unwrap()).unwrap();
    assert_eq!(by_old.id, "cmd-2", "an old agent skips the ticket");
}
