//! The batched writer: what devices report, coalesced per device and
//! written in one transaction per batch. Events are stored once per
//! (device, boot id, sequence number), and each device keeps only its newest
//! `events_kept_per_device` events: older ones are pruned in the same
//! transaction that adds new ones.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use fleet_protocol::{DeviceId, Event, PresenceStatus};
use tokio::sync::mpsc;
use tracing::{error, warn};

use super::{to_i64, Store, StoreError};
use crate::domain::fleet::Status;

impl Store {
    /// One transaction for a whole batch of reported data; then each device
    /// that got events keeps only its newest `events_kept` (at least one).
    pub async fn write_batch(&self, batch: &Batch, events_kept: u32) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        for (id, s) in &batch.statuses {
            sqlx::query(
                "INSERT INTO device_status (id, last_seen_ms, presence, state_json, health_json, health_at_ms, session, state_sent_at_ms)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT(id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms,
                   presence = excluded.presence, state_json = excluded.state_json,
                   health_json = excluded.health_json, health_at_ms = excluded.health_at_ms,
                   session = excluded.session, state_sent_at_ms = excluded.state_sent_at_ms",
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
            .execute(&mut *tx)
            .await?;
        }
        for (id, e, received_ms) in &batch.events {
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
            .bind(boot_to_i64(e.boot))
            .bind(to_i64(e.seq))
            .bind(to_i64(e.at_ms))
            .bind(to_i64(*received_ms))
            .bind(kind)
            .bind(body.to_string())
            .execute(&mut *tx)
            .await?;
        }
        let devices: HashSet<&DeviceId> = batch.events.iter().map(|(id, _, _)| id).collect();
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
        Ok(())
    }
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

/// What the ingest hands to the writer.
#[derive(Debug)]
pub enum WriteOp {
    Status(DeviceId, Box<Status>),
    Event(DeviceId, Event, u64),
}

/// A batch, statuses coalesced per device (only the newest is written).
#[derive(Debug, Default)]
pub struct Batch {
    pub statuses: HashMap<DeviceId, Status>,
    pub events: Vec<(DeviceId, Event, u64)>,
}

impl Batch {
    pub fn push(&mut self, op: WriteOp) {
        match op {
            WriteOp::Status(id, s) => {
                self.statuses.insert(id, *s);
            }
            WriteOp::Event(id, e, at) => self.events.push((id, e, at)),
        }
    }

    pub fn len(&self) -> usize {
        self.statuses.len() + self.events.len()
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
    mut rx: mpsc::Receiver<WriteOp>,
    cfg: WriterConfig,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
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
                    Ok(()) => {
                        metrics::counter!("fleet_store_batches_total").increment(1);
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
                            "store write failed; the in-memory fleet keeps the latest status and the next report is written again");
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

    #[test]
    fn boot_ids_keep_all_64_bits() {
        for boot in [1, 0x8000_0000_0000_0000, u64::MAX] {
            assert_eq!(boot_from_i64(boot_to_i64(Some(boot))), Some(boot));
        }
        assert_eq!(boot_from_i64(boot_to_i64(None)), None);
    }
}
