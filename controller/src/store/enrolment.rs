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
