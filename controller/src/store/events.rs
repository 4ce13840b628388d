//! Device events, as reported (written by the batched writer).

use sqlx::Row;

use fleet_protocol::DeviceId;
use serde::Serialize;

use super::{corrupt, to_u64, Store, StoreError};

/// A stored device event.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    pub seq: u64,
    pub at_ms: u64,
    pub received_ms: u64,
    pub kind: String,
    pub event: serde_json::Value,
}

impl Store {
    pub async fn recent_events(
        &self,
        device: &DeviceId,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at_ms, received_ms, kind, body_json FROM events
             WHERE device = ? ORDER BY seq DESC LIMIT ?",
        )
        .bind(device.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let body: String = r.get(4);
                Ok(StoredEvent {
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
