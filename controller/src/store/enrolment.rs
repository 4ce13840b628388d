//! Shipments' enrolment tokens and issued certificates.

use fleet_protocol::DeviceId;
use sqlx::Row;

use super::{corrupt, to_i64, to_u64, Store, StoreError};
use crate::domain::enrolment::TokenState;

/// A device of a shipment and the state of its enrolment token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipmentDevice {
    pub device: DeviceId,
    pub expires_at_ms: u64,
    pub used_at_ms: Option<u64>,
}

fn device_of(table: &'static str, r: &sqlx::sqlite::SqliteRow) -> Result<DeviceId, StoreError> {
    let id: String = r.get(0);
    DeviceId::parse(&id).map_err(|e| corrupt(table, format!("{id}: {e}")))
}

impl Store {
    /// Store a shipment's enrolment tokens (hashes only).
    pub async fn insert_enrol_tokens(
        &self,
        shipment: &str,
        tokens: &[(DeviceId, String)],
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        for (device, hash) in tokens {
            sqlx::query(
                "INSERT INTO enrol_tokens (hash, device, shipment, created_at_ms, expires_at_ms)
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(hash)
            .bind(device.as_str())
            .bind(shipment)
            .bind(to_i64(now_ms))
            .bind(to_i64(expires_at_ms))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn enrol_token(&self, hash: &str) -> Result<Option<TokenState>, StoreError> {
        sqlx::query("SELECT device, expires_at_ms, used_at_ms FROM enrol_tokens WHERE hash = ?")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| {
                Ok(TokenState {
                    device: device_of("enrol_tokens", &r)?,
                    expires_at_ms: to_u64(r.get(1)),
                    used_at_ms: r.get::<Option<i64>, _>(2).map(to_u64),
                })
            })
            .transpose()
    }

    /// Use a token and record the certificate, in one transaction. False
    /// (and nothing written) if the token was used meanwhile.
    pub async fn complete_enrolment(
        &self,
        hash: &str,
        device: &DeviceId,
        serial: &str,
        now_ms: u64,
        not_after_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let awaiting =
            sqlx::query("SELECT 1 FROM devices WHERE id = ? AND lifecycle = 'registered'")
                .bind(device.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
        if !awaiting {
            return Ok(false);
        }
        let used = sqlx::query(
            "UPDATE enrol_tokens SET used_at_ms = ? WHERE hash = ? AND used_at_ms IS NULL",
        )
        .bind(to_i64(now_ms))
        .bind(hash)
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO certificates (serial, device, issued_at_ms, not_after_ms) VALUES (?, ?, ?, ?)",
        )
        .bind(serial)
        .bind(device.as_str())
        .bind(to_i64(now_ms))
        .bind(to_i64(not_after_ms))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE devices SET lifecycle = 'enrolled' WHERE id = ? AND lifecycle = 'registered'",
        )
        .bind(device.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Record a renewed certificate of a device still in service (enrolled,
    /// shipped or deployed). False (nothing written) if it is not, e.g.
    /// retired meanwhile.
    pub async fn insert_renewed_certificate(
        &self,
        device: &DeviceId,
        serial: &str,
        now_ms: u64,
        not_after_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "INSERT INTO certificates (serial, device, issued_at_ms, not_after_ms)
             SELECT ?, id, ?, ? FROM devices
             WHERE id = ? AND lifecycle IN ('enrolled', 'shipped', 'deployed')",
        )
        .bind(serial)
        .bind(to_i64(now_ms))
        .bind(to_i64(not_after_ms))
        .bind(device.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// The nearest expiries of certificates that are not revoked and not
    /// yet replaced by a later one of the same device: (device, serial,
    /// not_after_ms), soonest first.
    pub async fn nearest_device_expiries(
        &self,
        limit: u32,
    ) -> Result<Vec<(DeviceId, String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.device, c.serial, c.not_after_ms FROM certificates c
             WHERE c.revoked_at_ms IS NULL
               AND c.not_after_ms = (SELECT MAX(d.not_after_ms) FROM certificates d
                                     WHERE d.device = c.device AND d.revoked_at_ms IS NULL)
             ORDER BY c.not_after_ms LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    device_of("certificates", r)?,
                    r.get::<String, _>(1),
                    to_u64(r.get(2)),
                ))
            })
            .collect()
    }

    /// The devices of a shipment with their token's state.
    pub async fn shipment(&self, shipment: &str) -> Result<Vec<ShipmentDevice>, StoreError> {
        let rows = sqlx::query(
            "SELECT device, expires_at_ms, used_at_ms FROM enrol_tokens WHERE shipment = ? ORDER BY device",
        )
        .bind(shipment)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ShipmentDevice {
                    device: device_of("enrol_tokens", r)?,
                    expires_at_ms: to_u64(r.get(1)),
                    used_at_ms: r.get::<Option<i64>, _>(2).map(to_u64),
                })
            })
            .collect()
    }
}
