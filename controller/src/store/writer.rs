//! The batched writer: what devices report, coalesced per device and
//! written in one transaction per batch. Events are stored once per
//! (device, boot id, sequence number), and each device keeps only its newest
//! `events_kept_per_device` events: older ones are pruned in the same
//! transaction that adds new ones.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use fleet_protocol::{DeviceId, Event, EventKind, PresenceStatus};
use sqlx::Row;
use tokio::sync::mpsc;
use tracing::{error, warn};

use super::{to_i64, to_u64, Store, StoreError};
use crate::domain::fleet::Status;
use crate::domain::sequence::{self, Gap, Seen, Span};

/// What a batch did to the events it carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Events stored (new ones, and late ones filling a gap).
    pub stored: u64,
    /// Re-deliveries of events already received: nothing changed.
    pub duplicates: u64,
    /// Gaps found in a stream's sequence numbers.
    pub gaps: u64,
    /// Updates that ended with this batch, by outcome.
    pub update_results: Vec<crate::domain::updates::Outcome>,
    /// Commands settled by their device's answer in this batch, by state.
    pub command_results: Vec<crate::domain::commands::CommandState>,
    /// Every update track this batch changed, as written (in order).
    pub tracks: Vec<(DeviceId, crate::domain::updates::Track)>,
}

/// Where the writer (and the update sweeper) tell what update tracks they
/// changed, after the commit: the rollout loop listens.
pub type TrackSender = mpsc::UnboundedSender<(DeviceId, crate::domain::updates::Track)>;

impl Store {
    /// One transaction for a whole batch of reported data; then each device
    /// that got events keeps only its newest `events_kept` (at least one).
    /// Each event is judged against its stream's span of sequence numbers
    /// and recorded gaps (`domain::sequence`), so a re-delivery changes
    /// nothing even when the event itself was pruned long ago.
    pub async fn write_batch(
        &self,
        batch: &Batch,
        events_kept: u32,
    ) -> Result<Written, StoreError> {
        let mut tx = self.write_tx().await?;
        let mut written = Written::default();
        for (id, s) in &batch.statuses {
            sqlx::query(
                "INSERT INTO device_status (id, last_seen_ms, presence, state_json, health_json, health_at_ms, session, state_sent_at_ms, health_sampled_ms)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT(id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms,
                   presence = excluded.presence, state_json = excluded.state_json,
                   health_json = excluded.health_json, health_at_ms = excluded.health_at_ms,
                   session = excluded.session, state_sent_at_ms = excluded.state_sent_at_ms,
                   health_sampled_ms = excluded.health_sampled_ms",
            )
            .bind(id.as_str())
            .bind(s.last_seen_ms.map(to_i64))
            .bind(s.presence.map(|p| match p {
                PresenceStatus::Online => "online",
                PresenceStatus::Offline => "offline",
            }))
            .bind(s.state.as_ref().map(|v| serde_json::to_string(v).expect("state serializes")))
            .bind(s.health.as_ref().map(|v| serde_json::to_string(v).expect("health serializes")))
            .bind(s.health_at_ms.map(to_i64))
            .bind(s.session.map(to_i64))
            .bind(s.state_sent_at_ms.map(to_i64))
            .bind(s.health_sampled_ms.map(to_i64))
            .execute(&mut *tx)
            .await?;
        }
        let mut devices: HashSet<&DeviceId> = HashSet::new();
        for (id, e, received_ms) in &batch.events {
            let boot = boot_to_i64(e.boot);
            let span = sqlx::query(
                "SELECT first_seq, last_seq FROM event_streams WHERE device = ? AND boot = ?",
            )
            .bind(id.as_str())
            .bind(boot)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| Span {
                first: to_u64(r.get(0)),
                last: to_u64(r.get(1)),
            });
            let gap_with_seq = if span.is_some_and(|s| (s.first..=s.last).contains(&e.seq)) {
                sqlx::query(
                    "SELECT from_seq, to_seq FROM event_gaps
                     WHERE device = ?1 AND boot = ?2 AND from_seq <= ?3 AND to_seq >= ?3 LIMIT 1",
                )
                .bind(id.as_str())
                .bind(boot)
                .bind(to_i64(e.seq))
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| Gap {
                    from: to_u64(r.get(0)),
                    to: to_u64(r.get(1)),
                })
            } else {
                None
            };
            match sequence::judge(span, e.seq, gap_with_seq) {
                Seen::Duplicate => {
                    written.duplicates += 1;
                    continue;
                }
                Seen::New { span, gap } => {
                    sqlx::query(
                        "INSERT INTO event_streams (device, boot, first_seq, last_seq) VALUES (?, ?, ?, ?)
                         ON CONFLICT(device, boot) DO UPDATE SET first_seq = excluded.first_seq,
                           last_seq = excluded.last_seq",
                    )
                    .bind(id.as_str())
                    .bind(boot)
                    .bind(to_i64(span.first))
                    .bind(to_i64(span.last))
                    .execute(&mut *tx)
                    .await?;
                    if let Some(gap) = gap {
                        written.gaps += 1;
                        insert_gap(&mut tx, id, boot, gap, *received_ms).await?;
                    }
                }
                Seen::Late { gap } => {
                    let detected: i64 = sqlx::query_scalar(
                        "DELETE FROM event_gaps WHERE device = ? AND boot = ? AND from_seq = ?
                         RETURNING detected_ms",
                    )
                    .bind(id.as_str())
                    .bind(boot)
                    .bind(to_i64(gap.from))
                    .fetch_one(&mut *tx)
                    .await?;
                    for left in gap.fill(e.seq) {
                        insert_gap(&mut tx, id, boot, left, to_u64(detected)).await?;
                    }
                }
            }
            let body = serde_json::to_value(&e.kind).expect("event serializes");
            let kind = match &body {
                serde_json::Value::Object(m) => m.keys().next().cloned().unwrap_or_default(),
                serde_json::Value::String(s) => s.clone(),
                _ => String::new(),
            };
            sqlx::query(
                "INSERT INTO events (device, boot, seq, at_ms, received_ms, kind, body_json)
                 VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(device, boot, seq) DO NOTHING",
            )
            .bind(id.as_str())
            .bind(boot)
            .bind(to_i64(e.seq))
            .bind(to_i64(e.at_ms))
            .bind(to_i64(*received_ms))
            .bind(kind)
            .bind(body.to_string())
            .execute(&mut *tx)
            .await?;
            if let EventKind::OutboxDropped {
                health_samples,
                oldest_ms,
                newest_ms,
                other_events,
            } = &e.kind
            {
                sqlx::query(
                    "INSERT INTO outbox_drops (device, health_samples, other_events, reports, oldest_ms, newest_ms, last_report_ms)
                     VALUES (?, ?, ?, 1, ?, ?, ?)
                     ON CONFLICT(device) DO UPDATE SET
                       health_samples = health_samples + excluded.health_samples,
                       other_events = other_events + excluded.other_events,
                       reports = reports + 1,
                       oldest_ms = MIN(oldest_ms, excluded.oldest_ms),
                       newest_ms = MAX(newest_ms, excluded.newest_ms),
                       last_report_ms = excluded.last_report_ms",
                )
                .bind(id.as_str())
                .bind(to_i64(*health_samples))
                .bind(to_i64(*other_events))
                .bind(to_i64(*oldest_ms))
                .bind(to_i64(*newest_ms))
                .bind(to_i64(*received_ms))
                .execute(&mut *tx)
                .await?;
            }
            if let EventKind::CommandResult {
                id: command,
                ok,
                message,
            } = &e.kind
            {
                if let Some(state) = super::commands::settle(
                    &mut tx,
                    id,
                    command,
                    *ok,
                    message,
                    e.at_ms,
                    *received_ms,
                )
                .await?
                {
                    written.command_results.push(state);
                }
            }
            if matches!(
                e.kind,
                EventKind::UpdateProgress { .. } | EventKind::UpdateResult { .. }
            ) {
                let held = super::updates::held(&mut tx, id).await?;
                if let crate::domain::updates::Applied::Changed { track, ended } =
                    crate::domain::updates::apply(held.as_ref(), &e.kind, e.at_ms, *received_ms)
                {
                    super::updates::put(&mut tx, id, &track).await?;
                    written.update_results.extend(ended);
                    written.tracks.push((id.clone(), track));
                }
            }
            written.stored += 1;
            devices.insert(id);
        }
        for id in devices {
            sqlx::query(
                "DELETE FROM events WHERE device = ?1 AND id <= (
                     SELECT id FROM events WHERE device = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            )
            .bind(id.as_str())
            .bind(i64::from(events_kept.max(1)))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(written)
    }
}

async fn insert_gap(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    id: &DeviceId,
    boot: i64,
    gap: Gap,
    detected_ms: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO event_gaps (device, boot, from_seq, to_seq, detected_ms) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(id.as_str())
    .bind(boot)
    .bind(to_i64(gap.from))
    .bind(to_i64(gap.to))
    .bind(to_i64(detected_ms))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The boot id as stored: its 64 bits as SQLite's signed integer, 0 for none
/// (agents before the boot id; a new agent never draws 0).
pub(crate) fn boot_to_i64(boot: Option<u64>) -> i64 {
    i64::from_ne_bytes(boot.unwrap_or(0).to_ne_bytes())
}

pub(crate) fn boot_from_i64(stored: i64) -> Option<u64> {
    let boot = u64::from_ne_bytes(stored.to_ne_bytes());
    (boot != 0).then_some(boot)
}

/// Something to do once what came before it is committed: the ingest
/// acknowledges a device's message to the broker only then.
pub type AfterCommit = Box<dyn FnOnce() + Send + Sync>;

/// What the ingest hands to the writer.
pub enum WriteOp {
    Status(DeviceId, Box<Status>),
    Event(DeviceId, Event, u64),
    /// Run after the batch holding it (and so every op sent before it) is
    /// committed; dropped, not run, if the batch cannot be written.
    AfterCommit(AfterCommit),
}

impl std::fmt::Debug for WriteOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteOp::Status(id, s) => f.debug_tuple("Status").field(id).field(s).finish(),
            WriteOp::Event(id, e, at) => {
                f.debug_tuple("Event").field(id).field(e).field(at).finish()
            }
            WriteOp::AfterCommit(_) => f.write_str("AfterCommit"),
        }
    }
}

/// A batch, statuses coalesced per device (only the newest is written).
#[derive(Default)]
pub struct Batch {
    pub statuses: HashMap<DeviceId, Status>,
    pub events: Vec<(DeviceId, Event, u64)>,
    pub after_commit: Vec<AfterCommit>,
}

impl Batch {
    pub fn push(&mut self, op: WriteOp) {
        match op {
            WriteOp::Status(id, s) => {
                self.statuses.insert(id, *s);
            }
            WriteOp::Event(id, e, at) => self.events.push((id, e, at)),
            WriteOp::AfterCommit(f) => self.after_commit.push(f),
        }
    }

    pub fn len(&self) -> usize {
        self.statuses.len() + self.events.len() + self.after_commit.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Batching knobs of the writer, and the event retention.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    pub max_batch: usize,
    pub max_delay: Duration,
    /// Events kept per device, the newest.
    pub events_kept_per_device: u32,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_batch: 5_000,
            max_delay: Duration::from_millis(200),
            events_kept_per_device: 500,
        }
    }
}

/// Collect ops into batches (up to `max_batch` or `max_delay` after the
/// first) and write each in one transaction. Ends, after writing what it
/// has, when every sender is gone.
pub fn spawn_writer(
    store: Store,
    rx: mpsc::Receiver<WriteOp>,
    cfg: WriterConfig,
) -> tokio::task::JoinHandle<()> {
    spawn_writer_with_tracks(store, rx, cfg, None)
}

/// [`spawn_writer`], telling `tracks` of every update track a batch
/// changed once the batch is committed.
pub fn spawn_writer_with_tracks(
    store: Store,
    mut rx: mpsc::Receiver<WriteOp>,
    cfg: WriterConfig,
    tracks: Option<TrackSender>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            // The queue as this batch starts (the op just taken included):
            // full means the ingest was waiting on it (backpressure: it
            // never drops a report, the broker holds what it cannot hand
            // over meanwhile).
            let queued = rx.len() + 1;
            metrics::gauge!("fleet_store_write_queue_depth").set(queued as f64);
            if queued >= rx.max_capacity() {
                metrics::counter!("fleet_store_write_queue_full_total").increment(1);
            }
            let mut batch = Batch::default();
            batch.push(first);
            let deadline = tokio::time::Instant::now() + cfg.max_delay;
            while batch.len() < cfg.max_batch {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(op)) => batch.push(op),
                    Ok(None) | Err(_) => break,
                }
            }
            let mut attempt = 0;
            loop {
                match store.write_batch(&batch, cfg.events_kept_per_device).await {
                    Ok(mut w) => {
                        if let Some(tx) = &tracks {
                            for t in std::mem::take(&mut w.tracks) {
                                // The loop gone (shutting down): nobody to tell.
                                let _ = tx.send(t);
                            }
                        }
                        metrics::counter!("fleet_store_batches_total").increment(1);
                        metrics::counter!("fleet_ingest_events_stored_total").increment(w.stored);
                        metrics::counter!("fleet_ingest_duplicate_events_total")
                            .increment(w.duplicates);
                        metrics::counter!("fleet_ingest_event_gaps_total").increment(w.gaps);
                        for outcome in &w.update_results {
                            metrics::counter!("fleet_update_results_total", "outcome" => outcome.as_str())
                                .increment(1);
                        }
                        for state in &w.command_results {
                            metrics::counter!("fleet_command_results_total", "state" => state.as_str())
                                .increment(1);
                        }
                        if w.gaps > 0 {
                            warn!(
                                gaps = w.gaps,
                                "devices' event sequence numbers skipped some: gaps recorded"
                            );
                        }
                        for f in std::mem::take(&mut batch.after_commit) {
                            f();
                        }
                        break;
                    }
                    Err(e) if attempt < 3 => {
                        attempt += 1;
                        warn!(error = %e, attempt, "store write failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
                    }
                    Err(e) => {
                        metrics::counter!("fleet_store_errors_total").increment(1);
                        error!(error = %e, statuses = batch.statuses.len(), events = batch.events.len(),
                            "store write failed; its messages are not acknowledged, so the broker sends them again on the next connection, and the in-memory fleet keeps the latest status");
                        break;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use fleet_protocol::EventKind;

    use super::*;

    fn event(seq: u64, boot: Option<u64>, message: &str) -> Event {
        Event {
            seq,
            at_ms: seq,
            kind: EventKind::Error {
                message: message.into(),
            },
            boot,
        }
    }

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("fleet.db")).await.unwrap();
        (dir, store)
    }

    async fn write(store: &Store, events: &[Event], kept: u32) {
        let a = DeviceId::parse("A").unwrap();
        let mut batch = Batch::default();
        for e in events {
            batch.push(WriteOp::Event(a.clone(), e.clone(), 1));
        }
        store.write_batch(&batch, kept).await.unwrap();
    }

    async fn messages(store: &Store) -> Vec<String> {
        store
            .recent_events(&DeviceId::parse("A").unwrap(), 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event["error"]["message"].as_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn events_after_a_lost_sequence_file_are_stored_under_the_new_boot_id() {
        let (_dir, store) = store().await;
        write(
            &store,
            &[
                event(1, Some(11), "first run 1"),
                event(2, Some(11), "first run 2"),
            ],
            500,
        )
        .await;
        // The sequence file is lost: the next run numbers from 1 again.
        write(&store, &[event(1, Some(22), "second run 1")], 500).await;
        // A re-delivery is still stored once, and so are an old agent's.
        write(&store, &[event(1, Some(22), "second run 1 again")], 500).await;
        write(
            &store,
            &[
                event(1, None, "old agent 1"),
                event(1, None, "old agent 1 again"),
            ],
            500,
        )
        .await;
        assert_eq!(
            messages(&store).await,
            ["old agent 1", "second run 1", "first run 2", "first run 1"],
            "newest first"
        );
        let stored = store
            .recent_events(&DeviceId::parse("A").unwrap(), 100)
            .await
            .unwrap();
        assert_eq!(stored[0].boot, None);
        assert_eq!(stored[1].boot, Some(22));
    }

    #[tokio::test]
    async fn each_device_keeps_only_its_newest_events() {
        let (_dir, store) = store().await;
        let b = DeviceId::parse("B").unwrap();
        let mut batch = Batch::default();
        batch.push(WriteOp::Event(b.clone(), event(1, Some(1), "B's"), 1));
        store.write_batch(&batch, 3).await.unwrap();
        let events: Vec<Event> = (1..=10)
            .map(|n| event(n, Some(u64::MAX), &format!("e{n}")))
            .collect();
        write(&store, &events[..4], 3).await;
        assert_eq!(messages(&store).await, ["e4", "e3", "e2"]);
        write(&store, &events[4..], 3).await;
        assert_eq!(messages(&store).await, ["e10", "e9", "e8"]);
        assert_eq!(
            store.recent_events(&b, 100).await.unwrap().len(),
            1,
            "B untouched"
        );
    }

    async fn write_all(store: &Store, events: &[Event], kept: u32) -> Written {
        let a = DeviceId::parse("A").unwrap();
        let mut batch = Batch::default();
        for e in events {
            batch.push(WriteOp::Event(a.clone(), e.clone(), 1));
        }
        store.write_batch(&batch, kept).await.unwrap()
    }

    #[tokio::test]
    async fn a_redelivery_changes_nothing_even_after_its_event_was_pruned() {
        let (_dir, store) = store().await;
        let events: Vec<Event> = (1..=10)
            .map(|n| event(n, Some(7), &format!("e{n}")))
            .collect();
        let first = write_all(&store, &events, 3).await;
        assert_eq!((first.stored, first.duplicates), (10, 0));
        assert_eq!(messages(&store).await, ["e10", "e9", "e8"]);
        // The broker sends them all again (e1 to e7 were pruned meanwhile).
        let again = write_all(&store, &events, 3).await;
        assert_eq!((again.stored, again.duplicates, again.gaps), (0, 10, 0));
        assert_eq!(messages(&store).await, ["e10", "e9", "e8"]);
    }

    #[tokio::test]
    async fn a_priority_drain_out_of_order_loses_nothing_and_leaves_no_gap() {
        let (_dir, store) = store().await;
        let a = DeviceId::parse("A").unwrap();
        // The agent sends update results (2, 4) first, then the check
        // failure (3), then the boot event (1), each in its own batch.
        let mut stored = 0;
        for seq in [2, 4, 3, 1] {
            let w = write_all(&store, &[event(seq, Some(5), &seq.to_string())], 500).await;
            stored += w.stored;
            assert_eq!(w.duplicates, 0, "seq {seq} taken for a re-delivery");
        }
        assert_eq!(stored, 4);
        assert_eq!(store.event_gaps(&a, 10).await.unwrap().1, 0);
        // Now every one of them is a re-delivery.
        let again: Vec<Event> = (1..=4).map(|s| event(s, Some(5), "again")).collect();
        let w = write_all(&store, &again, 500).await;
        assert_eq!((w.stored, w.duplicates), (0, 4));
    }

    #[tokio::test]
    async fn a_skipped_sequence_number_is_a_gap_until_it_arrives() {
        let (_dir, store) = store().await;
        let a = DeviceId::parse("A").unwrap();
        let w = write_all(
            &store,
            &[
                event(1, Some(7), "1"),
                event(2, Some(7), "2"),
                event(6, Some(7), "6"),
            ],
            500,
        )
        .await;
        assert_eq!(w.gaps, 1);
        let (gaps, missing) = store.event_gaps(&a, 10).await.unwrap();
        assert_eq!(missing, 3);
        assert_eq!(
            (gaps[0].boot, gaps[0].from_seq, gaps[0].to_seq),
            (Some(7), 3, 5)
        );
        // A late one splits the gap; it is stored, not taken for a re-delivery.
        let w = write_all(&store, &[event(4, Some(7), "4 late")], 500).await;
        assert_eq!((w.stored, w.duplicates), (1, 0));
        let (gaps, missing) = store.event_gaps(&a, 10).await.unwrap();
        assert_eq!(missing, 2);
        let mut ranges: Vec<(u64, u64)> = gaps.iter().map(|g| (g.from_seq, g.to_seq)).collect();
        ranges.sort_unstable();
        assert_eq!(ranges, [(3, 3), (5, 5)]);
        // Another run of the agent is another stream: no gap across runs.
        let w = write_all(&store, &[event(40, Some(8), "next run")], 500).await;
        assert_eq!(w.gaps, 0);
        assert_eq!(messages(&store).await[0], "next run");
    }

    #[tokio::test]
    async fn outbox_drops_are_summed_once_per_event() {
        let (_dir, store) = store().await;
        let a = DeviceId::parse("A").unwrap();
        let dropped = |seq, samples, oldest, newest| Event {
            seq,
            at_ms: newest,
            kind: EventKind::OutboxDropped {
                health_samples: samples,
                oldest_ms: oldest,
                newest_ms: newest,
                other_events: seq,
            },
            boot: Some(3),
        };
        assert_eq!(store.outbox_drops(&a).await.unwrap(), None);
        let events = [dropped(1, 40, 1_000, 5_000), dropped(2, 2, 6_000, 7_000)];
        write_all(&store, &events, 500).await;
        write_all(&store, &events, 500).await;
        let d = store.outbox_drops(&a).await.unwrap().unwrap();
        assert_eq!(
            (
                d.health_samples,
                d.other_events,
                d.reports,
                d.oldest_ms,
                d.newest_ms
            ),
            (42, 3, 2, 1_000, 7_000)
        );
    }

    #[tokio::test]
    async fn what_waits_for_the_commit_runs_after_it_and_not_before() {
        let (_dir, store) = store().await;
        let (tx, rx) = mpsc::channel(16);
        let writer = spawn_writer(store.clone(), rx, WriterConfig::default());
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let a = DeviceId::parse("A").unwrap();
        tx.send(WriteOp::Event(a.clone(), event(1, Some(1), "x"), 1))
            .await
            .unwrap();
        let reader = store.clone();
        tx.send(WriteOp::AfterCommit(Box::new(move || {
            let _ = done_tx.send(());
        })))
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(10), done_rx)
            .await
            .unwrap()
            .unwrap();
        // By the time it ran, the event was in the store.
        assert_eq!(reader.recent_events(&a, 10).await.unwrap().len(), 1);
        drop(tx);
        tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_full_queue_holds_the_sender_back_and_loses_nothing() {
        let (_dir, store) = store().await;
        // A queue of 2 and batches of 3: the sender waits on the writer
        // most of the time.
        let (tx, rx) = mpsc::channel(2);
        let cfg = WriterConfig {
            max_batch: 3,
            ..WriterConfig::default()
        };
        let writer = spawn_writer(store.clone(), rx, cfg);
        let a = DeviceId::parse("A").unwrap();
        let committed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        for seq in 1..=50 {
            tokio::time::timeout(
                Duration::from_secs(10),
                tx.send(WriteOp::Event(a.clone(), event(seq, Some(9), "q"), 1)),
            )
            .await
            .unwrap()
            .unwrap();
            let c = std::sync::Arc::clone(&committed);
            tx.send(WriteOp::AfterCommit(Box::new(move || {
                c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })))
            .await
            .unwrap();
        }
        drop(tx);
        tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(committed.load(std::sync::atomic::Ordering::Relaxed), 50);
        assert_eq!(store.recent_events(&a, 100).await.unwrap().len(), 50);
        assert_eq!(store.event_gaps(&a, 10).await.unwrap().1, 0);
    }

    #[test]
    fn boot_ids_keep_all_64_bits() {
        for boot in [1, 0x8000_0000_0000_0000, u64::MAX] {
            assert_eq!(boot_from_i64(boot_to_i64(Some(boot))), Some(boot));
        }
        assert_eq!(boot_from_i64(boot_to_i64(None)), None);
    }
}
