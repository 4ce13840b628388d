//! Devices: registration, lifecycle, and the last status of each, loaded at start.

use fleet_protocol::{CountyCode, DeviceId, Model, PresenceStatus, ProvinceCode, StationId};
use sqlx::Row;

use super::{corrupt, to_i64, to_u64, Store, StoreError};
use crate::domain::enrolment::RevokedCert;
use crate::domain::fleet::{Registration, Status};
use crate::domain::lifecycle::Lifecycle;

impl Store {
    /// Register devices. A new device gets the registration's lifecycle; an
    /// existing one keeps its own, whatever the registration says: only
    /// enrolment and the lifecycle moves change it (a registration that
    /// read an older lifecycle cannot write it back over a retirement).
    pub async fn upsert_devices(&self, regs: &[Registration]) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        for r in regs {
            sqlx::query(
                "INSERT INTO devices (id, model, province, county, station, lifecycle, registered_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT(id) DO UPDATE SET model = excluded.model, province = excluded.province,
                   county = excluded.county, station = excluded.station",
            )
            .bind(r.id.as_str())
            .bind(r.model.as_str())
            .bind(r.province.to_string())
            .bind(r.county.as_ref().map(|c| c.as_str().to_owned()))
            .bind(r.station.as_ref().map(|s| s.as_str().to_owned()))
            .bind(r.lifecycle.as_str())
            .bind(to_i64(r.registered_at_ms))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every device with its last status, for the in-memory fleet at start.
    pub async fn load_devices(&self) -> Result<Vec<(Registration, Status)>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.model, d.province, d.county, d.station, d.lifecycle, d.registered_at,
                    s.last_seen_ms, s.presence, s.state_json, s.health_json, s.health_at_ms, s.session, s.state_sent_at_ms, s.health_sampled_ms
             FROM devices d LEFT JOIN device_status s ON s.id = d.id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.get(0);
            let c = |e: fleet_protocol::IdError| corrupt("devices", format!("{id}: {e}"));
            let county: Option<String> = r.get(3);
            let station: Option<String> = r.get(4);
            let lifecycle: String = r.get(5);
            let reg = Registration {
                id: DeviceId::parse(&id).map_err(c)?,
                model: Model::parse(r.get(1)).map_err(c)?,
                province: ProvinceCode::parse(r.get(2)).map_err(c)?,
                county: county
                    .as_deref()
                    .map(CountyCode::parse)
                    .transpose()
                    .map_err(c)?,
                station: station
                    .as_deref()
                    .map(StationId::parse)
                    .transpose()
                    .map_err(c)?,
                lifecycle: lifecycle
                    .parse::<Lifecycle>()
                    .map_err(|e| corrupt("devices", format!("{id}: {e}")))?,
                registered_at_ms: to_u64(r.get(6)),
            };
            let presence: Option<String> = r.get(8);
            let state: Option<String> = r.get(9);
            let health: Option<String> = r.get(10);
            let json_err = |e: serde_json::Error| corrupt("device_status", format!("{id}: {e}"));
            let status = Status {
                last_seen_ms: r.get::<Option<i64>, _>(7).map(to_u64),
                presence: match presence.as_deref() {
                    Some("online") => Some(PresenceStatus::Online),
                    Some("offline") => Some(PresenceStatus::Offline),
                    _ => None,
                },
                state: state
                    .as_deref()
                    .map(serde_json::from_str)
                    .transpose()
                    .map_err(json_err)?,
                health: health
                    .as_deref()
                    .map(serde_json::from_str)
                    .transpose()
                    .map_err(json_err)?,
                health_at_ms: r.get::<Option<i64>, _>(11).map(to_u64),
                health_sampled_ms: r.get::<Option<i64>, _>(14).map(to_u64),
                session: r.get::<Option<i64>, _>(12).map(to_u64),
                state_sent_at_ms: r.get::<Option<i64>, _>(13).map(to_u64),
            };
            out.push((reg, status));
        }
        Ok(out)
    }

    /// Move a device from `from` to `to`; false if it was not at `from`.
    pub async fn set_lifecycle(
        &self,
        device: &DeviceId,
        from: Lifecycle,
        to: Lifecycle,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE devices SET lifecycle = ? WHERE id = ? AND lifecycle = ?")
            .bind(to.as_str())
            .bind(device.as_str())
            .bind(from.as_str())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Retire a device and revoke its certificates in one transaction;
    /// returns every revoked certificate (serial, revoked at) for the CRL.
    /// Every revoked certificate, with `device`'s live ones as if revoked
    /// at `now_ms`: the CRL a retirement of `device` will need. Changes
    /// nothing, so the broker can be told before the store is.
    pub async fn revoked_if_retired(
        &self,
        device: &DeviceId,
        now_ms: u64,
    ) -> Result<Vec<RevokedCert>, StoreError> {
        let rows = sqlx::query(
            "SELECT serial, COALESCE(revoked_at_ms, ?) FROM certificates \
             WHERE revoked_at_ms IS NOT NULL OR device = ? ORDER BY serial",
        )
        .bind(to_i64(now_ms))
        .bind(device.as_str())
        .fetch_all(&self.pool)
        .await?;
        revoked_certs(&rows)
    }

    pub async fn retire(
        &self,
        device: &DeviceId,
        now_ms: u64,
    ) -> Result<Vec<RevokedCert>, StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE devices SET lifecycle = 'retired' WHERE id = ?")
            .bind(device.as_str())
            .execute(&mut *tx)
            .await?;
        // Unused enrolment tokens die with the device.
        sqlx::query(
            "UPDATE enrol_tokens SET used_at_ms = ? WHERE device = ? AND used_at_ms IS NULL",
        )
        .bind(to_i64(now_ms))
        .bind(device.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE certificates SET revoked_at_ms = ? WHERE device = ? AND revoked_at_ms IS NULL",
        )
        .bind(to_i64(now_ms))
        .bind(device.as_str())
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(
            "SELECT serial, revoked_at_ms FROM certificates WHERE revoked_at_ms IS NOT NULL ORDER BY serial",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        revoked_certs(&rows)
    }
}

/// Rows of `serial, revoked_at_ms` as the CRL lists them; a serial that is
/// not hexadecimal is an error naming it, never a certificate left out.
fn revoked_certs(rows: &[sqlx::sqlite::SqliteRow]) -> Result<Vec<RevokedCert>, StoreError> {
    rows.iter()
        .map(|r| {
            let serial: String = r.get(0);
            Ok(RevokedCert {
                serial: hex::decode(&serial)
                    .map_err(|e| corrupt("certificates", format!("serial {serial}: {e}")))?,
                revoked_at_ms: to_u64(r.get(1)),
            })
        })
        .collect()
}
