//! `fleet-sim bench decode`: how many device messages per second the
//! protocol's receive path takes on one core: the topic parsed (direct, or
//! routed through a provincial bridge) and the envelope decoded and checked
//! against it (size limit, CBOR, kind and device), as the ingest does for
//! every message before it touches the fleet.

use std::path::PathBuf;
use std::time::Instant;

use fleet_protocol::{
    CheckResult, DeviceId, Envelope, Event, EventKind, Health, Model, Payload, Presence,
    PresenceStatus, State, Topic, UpdateStatus, Version,
};

use crate::report::Report;

pub struct DecodeBench {
    /// Messages decoded per measurement.
    pub messages: usize,
    pub out: PathBuf,
}

/// A message as it arrives: its topic and its payload.
pub struct Wire {
    pub topic: String,
    pub payload: Vec<u8>,
}

fn payload(i: usize) -> Payload {
    let v = |s: &str| Version::parse(s).expect("valid version");
    match i % 20 {
        // The field's mix: mostly health.
        0 => Payload::State(State {
            model: Model::parse("ballot-box-v2").expect("valid model"),
            firmware: v("2.3.1"),
            agent: v("0.11.0"),
            update: UpdateStatus::Idle,
            checks: ["printer", "card-reader", "fingerprint", "touch-panel"]
                .into_iter()
                .map(|name| CheckResult {
                    name: name.to_owned(),
                    passed: true,
                    message: None,
                })
                .collect(),
            config_rev: 3,
        }),
        1 => Payload::Event(Event {
            seq: i as u64 + 1,
            at_ms: 1_700_000_000_000,
            kind: EventKind::CheckFailed {
                name: "printer".into(),
                message: "no paper".into(),
            },
            boot: Some(0x1234_5678_9abc),
        }),
        2 => Payload::Presence(Presence {
            status: PresenceStatus::Online,
            agent: v("0.11.0"),
            session: Some(1_700_000_000_000),
        }),
        _ => Payload::Health(Health {
            cpu_pct: 12,
            mem_used_pct: 41,
            disk_free_pct: 72,
            temp_c: Some(48),
            battery_pct: Some(93),
            uptime_s: 86_400,
            clock_offset_ms: Some(-12),
            disk_free_mb: 5_120,
            window: None,
        }),
    }
}

/// `n` distinct messages of `devices` devices, on their direct topics or
/// (with `via`) as the central broker shows them behind that bridge.
pub fn messages(n: usize, devices: usize, via: Option<&str>) -> Vec<Wire> {
    (0..n)
        .map(|i| {
            let device =
                DeviceId::parse(&format!("BB-{:06}", i % devices.max(1))).expect("valid device id");
            let env = Envelope::new(device, 1_700_000_000_000, payload(i));
            Wire {
                topic: env.topic().routed(via),
                payload: env.to_cbor().expect("encodes"),
            }
        })
        .collect()
}

/// Decode every message once, as the ingest does; returns how many were
/// accepted (all of them, for well-formed input).
pub fn decode_all(wire: &[Wire]) -> usize {
    wire.iter()
        .filter(|w| {
            Topic::parse_routed(&w.topic)
                .ok()
                .and_then(|r| Envelope::from_cbor_on(&r.topic, &w.payload).ok())
                .is_some()
        })
        .count()
}

/// Messages per second over `rounds` passes (after one warm-up pass).
fn rate(wire: &[Wire], rounds: usize) -> anyhow::Result<f64> {
    anyhow::ensure!(decode_all(wire) == wire.len(), "a message did not decode");
    let start = Instant::now();
    let mut decoded = 0;
    for _ in 0..rounds {
        decoded += decode_all(std::hint::black_box(wire));
    }
    Ok(decoded as f64 / start.elapsed().as_secs_f64().max(1e-9))
}

pub fn decode(b: DecodeBench) -> anyhow::Result<PathBuf> {
    // A pool of distinct messages small enough to stay in cache, passed
    // over as often as it takes to decode `messages`.
    let pool = 10_000.min(b.messages.max(1));
    let rounds = b.messages.div_ceil(pool);
    let direct = messages(pool, pool, None);
    let bridged = messages(pool, pool, Some("bridge.p01"));
    let health: Vec<Wire> = messages(pool * 20 / 17 + 20, pool, None)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 20 >= 3)
        .map(|(_, w)| w)
        .take(pool)
        .collect();
    let mut r = Report::new("decode");
    r.param("messages", rounds * pool).param("pool", pool);
    let d = rate(&direct, rounds)?;
    let br = rate(&bridged, rounds)?;
    let h = rate(&health, rounds)?;
    r.figure("decode, field mix, direct", d.round(), "msg/s")
        .figure("decode, field mix, via a bridge", br.round(), "msg/s")
        .figure("decode, health only", h.round(), "msg/s")
        .figure("bridged / direct", br / d.max(1e-9), "ratio")
        .figure(
            "health at 100k devices every 60 s, share of one core",
            100_000.0 / 60.0 / h.max(1e-9) * 100.0,
            "%",
        )
        .note(
            "one core, no I/O: Topic::parse_routed + Envelope::from_cbor_on (size limit, CBOR, \
             kind and device checked) per message; field mix of every 20 messages: 17 health, \
             1 state, 1 event, 1 presence",
        );
    r.finish(&b.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_message_decodes_direct_and_through_a_bridge() {
        for via in [None, Some("bridge.p07")] {
            let wire = messages(100, 7, via);
            assert_eq!(decode_all(&wire), 100);
            let r = Topic::parse_routed(&wire[3].topic).unwrap();
            assert_eq!(r.via.as_deref(), via);
        }
        // A payload on another device's topic is refused.
        let mut wire = messages(2, 2, None);
        wire[0].topic = wire[1].topic.clone();
        assert_eq!(decode_all(&wire), 1);
    }
}
