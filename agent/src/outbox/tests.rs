//! The outbox with its real redb file: what is committed survives a
//! reopen byte for byte (boot id and sequence number included), leaves on
//! acknowledgement, and a disk that cannot be used is survived in memory.

use std::time::Duration;

use fleet_protocol::{DeviceId, Envelope, Event, EventKind, Health, Payload, TopicKind, Version};

use super::*;

fn device() -> DeviceId {
    DeviceId::parse("BB-1").unwrap()
}

fn cfg(path: Option<PathBuf>, max_bytes: u64) -> OutboxConfig {
    OutboxConfig {
        path,
        legacy_seq: None,
        limits: Limits {
            max_bytes,
            window: 4,
            window_bytes: u64::MAX,
        },
        coalesce: Duration::from_secs(60),
        start_seq: 0,
        retry: Duration::from_millis(1000),
    }
}

fn event(seq: u64, kind: EventKind) -> Event {
    Event {
        seq,
        at_ms: 1000 + seq,
        kind,
        boot: Some(77),
    }
}

fn update(ok: bool) -> EventKind {
    EventKind::UpdateResult {
        version: Version::parse("2.5.0").unwrap(),
        ok,
        message: "installed".into(),
        outcome: if ok {
            fleet_protocol::UpdateOutcome::Committed
        } else {
            fleet_protocol::UpdateOutcome::RolledBack
        },
        artifact: fleet_protocol::ArtifactKind::Firmware,
        retrying: false,
    }
}

fn sample(cpu: u8) -> Health {
    Health {
        cpu_pct: cpu,
        mem_used_pct: 40,
        disk_free_pct: 60,
        uptime_s: 10,
        disk_free_mb: 100,
        ..Health::default()
    }
}

fn decode(o: &Outgoing) -> Envelope {
    Envelope::from_cbor(&o.payload).unwrap()
}

#[test]
fn committed_events_survive_a_reopen_with_their_boot_and_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    {
        let (mut ob, fault) = Outbox::open(device(), &cfg(Some(path.clone()), 1 << 20));
        assert_eq!(fault, None);
        let boot = EventKind::Boot {
            firmware: Version::parse("2.4.0").unwrap(),
        };
        assert_eq!(ob.add_event(event(1, boot), 5), Stored::Committed);
        assert_eq!(ob.add_event(event(2, update(true)), 6), Stored::Committed);
        // Sent but not acknowledged when the power goes.
        assert_eq!(ob.next_to_send().len(), 2);
    }
    let (mut ob, _) = Outbox::open(device(), &cfg(Some(path.clone()), 1 << 20));
    assert_eq!(ob.last_seq(), 2);
    let out = ob.next_to_send();
    // The update result first, then the boot event.
    let seqs: Vec<(u64, Option<u64>)> = out
        .iter()
        .map(|o| match decode(o).payload {
            Payload::Event(e) => (e.seq, e.boot),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seqs, vec![(2, Some(77)), (1, Some(77))]);
    assert!(out.iter().all(|o| o.kind == TopicKind::Events));
    ob.acked(out[0].key);
    ob.acked(out[0].key); // a duplicate PUBACK is harmless
    drop(ob);
    let (mut ob, _) = Outbox::open(device(), &cfg(Some(path), 1 << 20));
    assert_eq!(ob.policy().len(), 1);
    assert_eq!(ob.next_to_send().len(), 1);
}

#[test]
fn offline_health_is_committed_per_interval_and_dropped_first_when_full() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    // Room for a few records only.
    let (mut ob, _) = Outbox::open(device(), &cfg(Some(path.clone()), 400));
    assert_eq!(ob.add_event(event(1, update(false)), 0), Stored::Committed);
    let mut refused_or_dropped = false;
    for minute in 0..20u64 {
        for s in 0..4u64 {
            let at = minute * 60_000 + s * 15_000;
            if let Some(stored) = ob.add_health_sample(sample((minute * 4 + s) as u8), at) {
                refused_or_dropped |= stored == Stored::Refused;
            }
        }
    }
    assert!(ob.flush_health().is_some());
    let dropped = ob.unreported_drops().expect("health was dropped");
    assert!(dropped.health_samples >= 4, "{dropped:?}");
    assert_eq!(dropped.health_samples % 4, 0, "whole intervals go");
    assert!(!refused_or_dropped || ob.policy().count(Class::Health) > 0);
    // The update result survives; the report resets the tally, on disk too.
    assert_eq!(ob.policy().count(Class::Update), 1);
    let report = event(2, dropped.report());
    assert_eq!(ob.add_event(report, 0), Stored::Committed);
    assert_eq!(ob.unreported_drops(), None);
    let coalesced = ob
        .next_to_send()
        .into_iter()
        .filter(|o| o.kind == TopicKind::Health)
        .map(|o| match decode(&o).payload {
            Payload::Health(h) => h,
            other => panic!("{other:?}"),
        })
        .collect::<Vec<_>>();
    for h in &coalesced {
        let w = h.window.as_ref().unwrap();
        assert_eq!(w.samples, 4);
        assert_eq!(
            w.cpu_pct.1, h.cpu_pct,
            "the last sample is the highest here"
        );
    }
    drop(ob);
    let (ob, _) = Outbox::open(device(), &cfg(Some(path), 400));
    assert_eq!(ob.unreported_drops(), None);
    assert_eq!(ob.last_seq(), 2);
}

#[test]
fn an_unusable_disk_is_reported_and_the_outbox_lives_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    // A path under a regular file can never be a directory entry.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let mut c = cfg(Some(blocker.join("outbox.redb")), 1 << 20);
    c.start_seq = 0;
    let (mut ob, fault) = Outbox::open(device(), &c);
    assert!(fault.is_some());
    assert!(ob.fault().is_some());
    assert!(matches!(
        ob.add_event(event(1, update(true)), 0),
        Stored::Memory(_)
    ));
    let out = ob.next_to_send();
    assert_eq!(out.len(), 1);
    ob.acked(out[0].key);
    assert!(ob.policy().is_empty());
}

#[test]
fn a_damaged_file_is_moved_aside_and_a_new_one_started() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    std::fs::write(&path, b"this is not a redb file at all, just text").unwrap();
    let (mut ob, fault) = Outbox::open(device(), &cfg(Some(path.clone()), 1 << 20));
    assert!(fault.unwrap().contains("kept aside"));
    assert_eq!(ob.add_event(event(1, update(true)), 0), Stored::Committed);
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("damaged"))
        .count();
    assert_eq!(aside, 1);
}

#[test]
fn without_a_file_it_starts_from_the_given_number() {
    let mut c = cfg(None, 1 << 20);
    c.start_seq = 9;
    let (mut ob, fault) = Outbox::open(device(), &c);
    assert_eq!((fault, ob.last_seq()), (None, 9));
    assert_eq!(ob.add_event(event(10, update(true)), 0), Stored::Committed);
    assert_eq!(ob.next_to_send().len(), 1);
}

fn seqs(out: &[Outgoing]) -> Vec<u64> {
    out.iter()
        .filter_map(|o| match decode(o).payload {
            Payload::Event(e) => Some(e.seq),
            _ => None,
        })
        .collect()
}

fn error(n: u64) -> EventKind {
    EventKind::Error {
        message: format!("e{n}"),
    }
}

#[test]
fn after_a_write_failure_records_wait_in_memory_and_go_to_the_reopened_file_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let (mut ob, _) = Outbox::open(device(), &cfg(Some(path.clone()), 1 << 20));
    assert_eq!(ob.add_event(event(1, error(1)), 0), Stored::Committed);
    assert_eq!(ob.add_event(event(2, error(2)), 0), Stored::Committed);
    ob.fail_for_test("No space left on device");
    assert_eq!(ob.fault(), Some("No space left on device"));
    // What was in the file is held in memory too, and new records go there.
    assert_eq!(ob.in_memory(), 2);
    assert!(matches!(
        ob.add_event(event(3, error(3)), 0),
        Stored::Memory(_)
    ));
    assert!(matches!(
        ob.add_event(event(4, update(true)), 0),
        Stored::Memory(_)
    ));
    // Sent and acknowledged while failing: 1 (in the file) and 4 leave.
    let out = ob.next_to_send();
    assert_eq!(seqs(&out), vec![4, 1, 2, 3]);
    ob.acked(out[0].key);
    ob.acked(out[1].key);
    ob.connection_lost();
    // Not due yet; then the file is held open elsewhere, so the retry fails.
    let now = crate::unix_ms();
    assert_eq!(ob.retry_disk(now), None);
    let holder = redb::Database::create(&path).unwrap();
    assert_eq!(ob.retry_disk(now + 1_000), None);
    assert!(ob.fault().is_some(), "still in memory");
    drop(holder);
    assert_eq!(ob.retry_disk(now + 1_500), None, "the next try is not due");
    let was = ob.retry_disk(now + 2_000).expect("recovered");
    assert!(was.contains("already open"), "the latest reason: {was}");
    assert_eq!((ob.fault(), ob.in_memory()), (None, 0));
    // New records are committed again, numbered after the rest.
    assert_eq!(ob.add_event(event(5, error(5)), 0), Stored::Committed);
    drop(ob);
    // The file holds exactly what the outbox held: 2, 3, 5 in that order,
    // the last sequence number 5.
    let (mut ob, fault) = Outbox::open(device(), &cfg(Some(path), 1 << 20));
    assert_eq!(fault, None);
    assert_eq!(ob.last_seq(), 5);
    assert_eq!(seqs(&ob.next_to_send()), vec![2, 3, 5]);
}

#[test]
fn a_file_that_could_not_be_opened_at_start_is_taken_in_once_it_opens() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // The state directory is a regular file: nothing can be opened in it.
    std::fs::write(&state, "").unwrap();
    let path = state.join("outbox.redb");
    let (mut ob, fault) = Outbox::open(device(), &cfg(Some(path.clone()), 1 << 20));
    assert!(fault.is_some());
    assert!(matches!(
        ob.add_event(event(1, error(101)), 0),
        Stored::Memory(_)
    ));
    ob.state_acknowledged(0xfeed);
    // The directory comes back, with an earlier run's file in it.
    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir(&state).unwrap();
    {
        let (mut earlier, _) = Outbox::open(device(), &cfg(Some(path.clone()), 1 << 20));
        for seq in 40..=41 {
            assert_eq!(
                earlier.add_event(event(seq, error(seq)), 0),
                Stored::Committed
            );
        }
    }
    let now = crate::unix_ms();
    assert!(ob.retry_disk(now + 1_000).is_some());
    assert_eq!(ob.policy().len(), 3);
    assert_eq!(ob.last_seq(), 41, "never lower than the file's");
    let out = ob.next_to_send();
    assert_eq!(seqs(&out), vec![1, 40, 41], "the earlier run's after ours");
    drop(ob);
    let (ob, _) = Outbox::open(device(), &cfg(Some(path), 1 << 20));
    assert_eq!(ob.policy().len(), 3);
    assert_eq!(ob.last_seq(), 41);
    assert_eq!(ob.acked_state(), Some(0xfeed));
}

#[test]
fn the_acknowledged_state_digest_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let (mut ob, _) = Outbox::open(device(), &cfg(Some(path.clone()), 1 << 20));
    assert_eq!(ob.acked_state(), None, "nothing acknowledged yet");
    ob.state_acknowledged(0x1234_5678_9abc);
    drop(ob);
    let (ob, _) = Outbox::open(device(), &cfg(Some(path), 1 << 20));
    assert_eq!(ob.acked_state(), Some(0x1234_5678_9abc));
}
