//! Device events, as reported (written by the batched writer).

use sqlx::Row;

use fleet_protocol::DeviceId;
use serde::Serialize;

use super::writer::boot_from_i64;
use super::{corrupt, to_u64, Store, StoreError};

/// A stored device event.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    /// The agent run that numbered it (`None`: an agent before boot ids).
    pub boot: Option<u64>,
    pub seq: u64,
    pub at_ms: u64,
    pub received_ms: u64,
    pub kind: String,
    pub event: serde_json::Value,
}

impl Store {
    /// A device's newest events, newest first (in the order they arrived:
    /// sequence numbers start again after a lost sequence file).
    pub async fn recent_events(
        &self,
        device: &DeviceId,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at_ms, received_ms, kind, body_json, boot FROM events
             WHERE device = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(device.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let body: String = r.get(4);
                Ok(StoredEvent {
                    boot: boot_from_i64(r.get(5)),
                    seq: to_u64(r.get(0)),
                    at_ms: to_u64(r.get(1)),
                    received_ms: to_u64(r.get(2)),
                    kind: r.get(3),
                    event: serde_json::from_str(&body).map_err(|e| corrupt("events", e))?,
                })
            })
            .collect()
    }
}
