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

/// A recorded gap in one of a device's event streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredGap {
    pub boot: Option<u64>,
    pub from_seq: u64,
    pub to_seq: u64,
    pub detected_ms: u64,
}

/// What a device's outbox dropped while offline, summed over its reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxDrops {
    pub health_samples: u64,
    pub other_events: u64,
    pub reports: u64,
    pub oldest_ms: u64,
    pub newest_ms: u64,
    pub last_report_ms: u64,
}

impl Store {
    /// A device's open gaps, newest first (at most `limit`), and how many
    /// sequence numbers are missing in all of them.
    pub async fn event_gaps(
        &self,
        device: &DeviceId,
        limit: u32,
    ) -> Result<(Vec<StoredGap>, u64), StoreError> {
        let rows = sqlx::query(
            "SELECT boot, from_seq, to_seq, detected_ms FROM event_gaps
             WHERE device = ? ORDER BY detected_ms DESC, id DESC LIMIT ?",
        )
        .bind(device.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let missing: Option<i64> = sqlx::query_scalar(
            "SELECT SUM(to_seq - from_seq + 1) FROM event_gaps WHERE device = ?",
        )
        .bind(device.as_str())
        .fetch_one(&self.pool)
        .await?;
        let gaps = rows
            .into_iter()
            .map(|r| StoredGap {
                boot: boot_from_i64(r.get(0)),
                from_seq: to_u64(r.get(1)),
                to_seq: to_u64(r.get(2)),
                detected_ms: to_u64(r.get(3)),
            })
            .collect();
        Ok((gaps, missing.map_or(0, to_u64)))
    }

    pub async fn outbox_drops(&self, device: &DeviceId) -> Result<Option<OutboxDrops>, StoreError> {
        let row = sqlx::query(
            "SELECT health_samples, reports, oldest_ms, newest_ms, last_report_ms, other_events
             FROM outbox_drops WHERE device = ?",
        )
        .bind(device.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| OutboxDrops {
            health_samples: to_u64(r.get(0)),
            reports: to_u64(r.get(1)),
            oldest_ms: to_u64(r.get(2)),
            newest_ms: to_u64(r.get(3)),
            last_report_ms: to_u64(r.get(4)),
            other_events: to_u64(r.get(5)),
        }))
    }
}
