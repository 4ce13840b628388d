//! Target firmware per model.

use fleet_protocol::{Model, Version};
use sqlx::Row;

use super::{corrupt, to_i64, Store, StoreError};

impl Store {
    pub async fn set_baseline(
        &self,
        model: &Model,
        version: &Version,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO baselines (model, version, set_at_ms) VALUES (?, ?, ?)
             ON CONFLICT(model) DO UPDATE SET version = excluded.version, set_at_ms = excluded.set_at_ms",
        )
        .bind(model.as_str())
        .bind(version.as_str())
        .bind(to_i64(at_ms))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn baselines(&self) -> Result<Vec<(Model, Version)>, StoreError> {
        let rows = sqlx::query("SELECT model, version FROM baselines ORDER BY model")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| {
                let m: String = r.get(0);
                let v: String = r.get(1);
                Ok((
                    Model::parse(&m).map_err(|e| corrupt("baselines", e))?,
                    Version::parse(&v).map_err(|e| corrupt("baselines", e))?,
                ))
            })
            .collect()
    }
}
