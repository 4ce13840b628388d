//! The batched writer: what devices report, coalesced per device and
//! written in one transaction per batch.

use std::collections::HashMap;
use std::time::Duration;

use fleet_protocol::{DeviceId, Event, PresenceStatus};
use tokio::sync::mpsc;
use tracing::{error, warn};

use super::{to_i64, Store, StoreError};
use crate::domain::fleet::Status;

impl Store {
    /// One transaction for a whole batch of reported data.
    pub async fn write_batch(&self, batch: &Batch) -> Result<(), StoreError> {
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
                "INSERT INTO events (device, seq, at_ms, received_ms, kind, body_json)
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(device, seq) DO NOTHING",
            )
            .bind(id.as_str())
            .bind(to_i64(e.seq))
            .bind(to_i64(e.at_ms))
            .bind(to_i64(*received_ms))
            .bind(kind)
            .bind(body.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
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

/// Batching knobs of the writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    pub max_batch: usize,
    pub max_delay: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_batch: 5_000,
            max_delay: Duration::from_millis(200),
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
                match store.write_batch(&batch).await {
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
