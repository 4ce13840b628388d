//! Each device's last update (`domain::updates::Track`): written by the
//! batched writer as update events arrive, and marked `timed-out` by the
//! sweeper.

use fleet_protocol::{ArtifactKind, DeviceId, Version};
use sqlx::Row;

use super::{corrupt, to_i64, to_u64, Store, StoreError};
use crate::domain::updates::{self, Outcome, Track};

fn track_of(r: &sqlx::sqlite::SqliteRow) -> Result<Track, StoreError> {
    let c = |e: String| corrupt("device_updates", e);
    let artifact: String = r.get("artifact");
    let version: String = r.get("version");
    let phase: Option<String> = r.get("phase");
    let outcome: Option<String> = r.get("outcome");
    Ok(Track {
        artifact: ArtifactKind::parse(&artifact)
            .ok_or_else(|| c(format!("artifact {artifact:?}")))?,
        version: Version::parse(&version).map_err(|e| c(e.to_string()))?,
        phase: match phase {
            Some(p) => Some(updates::parse_phase(&p).ok_or_else(|| c(format!("phase {p:?}")))?),
            None => None,
        },
        bytes: to_u64(r.get("bytes")),
        total: to_u64(r.get("total")),
        outcome: match outcome {
            Some(o) => Some(Outcome::parse(&o).ok_or_else(|| c(format!("outcome {o:?}")))?),
            None => None,
        },
        message: r.get("message"),
        started_ms: to_u64(r.get("started_ms")),
        last_event_ms: to_u64(r.get("last_event_ms")),
        last_at_ms: to_u64(r.get("last_at_ms")),
    })
}

const COLUMNS: &str = "artifact, version, phase, bytes, total, outcome, message, started_ms, last_event_ms, last_at_ms";

pub(super) async fn held(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    device: &DeviceId,
) -> Result<Option<Track>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM device_updates WHERE device = ?"
    ))
    .bind(device.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(track_of).transpose()
}

pub(super) async fn put(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    device: &DeviceId,
    t: &Track,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT OR REPLACE INTO device_updates (device, {COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(device.as_str())
    .bind(t.artifact.as_str())
    .bind(t.version.to_string())
    .bind(t.phase.map(updates::phase_name))
    .bind(to_i64(t.bytes))
    .bind(to_i64(t.total))
    .bind(t.outcome.map(Outcome::as_str))
    .bind(&t.message)
    .bind(to_i64(t.started_ms))
    .bind(to_i64(t.last_event_ms))
    .bind(to_i64(t.last_at_ms))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// A device's last update, if it ever reported one.
    /// Every device's last update (for the in-memory fleet at start).
    pub async fn device_updates(&self) -> Result<Vec<(DeviceId, Track)>, StoreError> {
        let rows = sqlx::query(&format!("SELECT device, {COLUMNS} FROM device_updates"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.get("device");
                Ok((
                    DeviceId::parse(&id).map_err(|e| corrupt("device_updates", e))?,
                    track_of(r)?,
                ))
            })
            .collect()
    }

    pub async fn device_update(&self, device: &DeviceId) -> Result<Option<Track>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM device_updates WHERE device = ?"
        ))
        .bind(device.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(track_of).transpose()
    }

    /// Mark `timed-out` every running update whose device said rebooting or
    /// checking and nothing since, for `timeout_ms` (`domain::updates::timed_out`).
    /// Returns the devices marked, with their tracks as written.
    pub async fn time_out_updates(
        &self,
        now_ms: u64,
        timeout_ms: u64,
    ) -> Result<Vec<(DeviceId, Track)>, StoreError> {
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(&format!(
            "SELECT device, {COLUMNS} FROM device_updates
             WHERE outcome IS NULL AND phase IN ('rebooting', 'checking') AND last_event_ms <= ?"
        ))
        .bind(to_i64(now_ms.saturating_sub(timeout_ms)))
        .fetch_all(&mut *tx)
        .await?;
        let mut marked = Vec::new();
        for r in rows {
            let mut t = track_of(&r)?;
            if !updates::timed_out(&t, now_ms, timeout_ms) {
                continue;
            }
            let id: String = r.get("device");
            let device = DeviceId::parse(&id).map_err(|e| corrupt("device_updates", e))?;
            t.outcome = Some(Outcome::TimedOut);
            t.message = format!(
                "no word from the device for {} s after it said {}",
                timeout_ms / 1000,
                t.phase.map_or("?", updates::phase_name)
            );
            put(&mut tx, &device, &t).await?;
            marked.push((device, t));
        }
        tx.commit().await?;
        Ok(marked)
    }
}
