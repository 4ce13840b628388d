//! The web console's tables: each operator's language, readiness samples
//! per province (the trend), and the stations of a county by name.

use std::collections::BTreeMap;

use fleet_protocol::{CountyCode, ProvinceCode, StationId};
use sqlx::Row;

use super::{corrupt, to_i64, to_u64, Store, StoreError};

/// One province's readiness at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub at_ms: u64,
    pub province: ProvinceCode,
    pub total: u32,
    pub ready: u32,
    /// Non-zero counts per reason name.
    pub reasons: BTreeMap<String, u32>,
}

/// One device of a recent shipment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipmentLine {
    pub shipment: String,
    pub device: String,
    pub province: ProvinceCode,
    pub created_ms: u64,
    pub enrolled_ms: Option<u64>,
}

impl Store {
    /// The language an operator chose last (`en` or `fa`).
    pub async fn console_lang(&self, token_id: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query("SELECT lang FROM console_prefs WHERE token_id = ?")
                .bind(token_id)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.get(0)),
        )
    }

    pub async fn set_console_lang(
        &self,
        token_id: &str,
        lang: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO console_prefs (token_id, lang, updated_ms) VALUES (?, ?, ?)
             ON CONFLICT (token_id) DO UPDATE SET lang = excluded.lang, updated_ms = excluded.updated_ms",
        )
        .bind(token_id)
        .bind(lang)
        .bind(to_i64(now_ms))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Store one sampling of every province, and drop samples older than
    /// `keep_from_ms`.
    pub async fn add_samples(
        &self,
        samples: &[Sample],
        keep_from_ms: u64,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        for s in samples {
            let reasons =
                serde_json::to_string(&s.reasons).map_err(|e| corrupt("readiness_samples", e))?;
            sqlx::query(
                "INSERT OR REPLACE INTO readiness_samples (at_ms, province, total, ready, reasons)
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(to_i64(s.at_ms))
            .bind(s.province.to_string())
            .bind(i64::from(s.total))
            .bind(i64::from(s.ready))
            .bind(reasons)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM readiness_samples WHERE at_ms < ?")
            .bind(to_i64(keep_from_ms))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Samples taken at or after `from_ms`, oldest first.
    pub async fn samples_since(&self, from_ms: u64) -> Result<Vec<Sample>, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms, province, total, ready, reasons FROM readiness_samples
             WHERE at_ms >= ? ORDER BY at_ms, province",
        )
        .bind(to_i64(from_ms))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let province: String = r.get(1);
                let reasons: String = r.get(4);
                let count = |i: usize| -> Result<u32, StoreError> {
                    u32::try_from(r.get::<i64, _>(i))
                        .map_err(|e| corrupt("readiness_samples", format!("{province}: {e}")))
                };
                Ok(Sample {
                    at_ms: to_u64(r.get(0)),
                    province: ProvinceCode::parse(&province)
                        .map_err(|e| corrupt("readiness_samples", format!("{province}: {e}")))?,
                    total: count(2)?,
                    ready: count(3)?,
                    reasons: serde_json::from_str(&reasons)
                        .map_err(|e| corrupt("readiness_samples", format!("{province}: {e}")))?,
                })
            })
            .collect()
    }

    /// The devices of the newest `shipments` shipments: (shipment, device,
    /// its province, when the shipment was made, when the device enrolled).
    pub async fn recent_shipments(&self, shipments: u32) -> Result<Vec<ShipmentLine>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.shipment, t.device, d.province, t.created_at_ms, t.used_at_ms
             FROM enrol_tokens t JOIN devices d ON d.id = t.device
             WHERE t.shipment IN (SELECT shipment FROM enrol_tokens GROUP BY shipment
                                  ORDER BY MAX(created_at_ms) DESC LIMIT ?)
             ORDER BY t.created_at_ms DESC, t.shipment, t.device",
        )
        .bind(i64::from(shipments))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let province: String = r.get(2);
                Ok(ShipmentLine {
                    shipment: r.get(0),
                    device: r.get(1),
                    province: ProvinceCode::parse(&province)
                        .map_err(|e| corrupt("devices", format!("{province}: {e}")))?,
                    created_ms: to_u64(r.get(3)),
                    enrolled_ms: r.get::<Option<i64>, _>(4).map(to_u64),
                })
            })
            .collect()
    }

    /// The stations of a county with their names, by id.
    pub async fn stations_of(
        &self,
        county: &CountyCode,
    ) -> Result<Vec<(StationId, String)>, StoreError> {
        let rows = sqlx::query("SELECT id, name FROM stations WHERE county = ? ORDER BY id")
            .bind(county.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| {
                let id: String = r.get(0);
                Ok((
                    StationId::parse(&id).map_err(|e| corrupt("stations", format!("{id}: {e}")))?,
                    r.get(1),
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn samples_are_kept_for_their_days_and_languages_per_operator() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("fleet.db")).await.unwrap();
        let p = ProvinceCode::parse("IR-23").unwrap();
        let sample = |at_ms, ready| Sample {
            at_ms,
            province: p,
            total: 10,
            ready,
            reasons: BTreeMap::from([("offline".to_owned(), 10 - ready)]),
        };
        store.add_samples(&[sample(1_000, 4)], 0).await.unwrap();
        store.add_samples(&[sample(2_000, 7)], 1_500).await.unwrap();
        let kept = store.samples_since(0).await.unwrap();
        assert_eq!(kept, vec![sample(2_000, 7)], "the older one is dropped");

        assert_eq!(store.console_lang("tok-1").await.unwrap(), None);
        store.set_console_lang("tok-1", "fa", 1).await.unwrap();
        store.set_console_lang("tok-1", "en", 2).await.unwrap();
        store.set_console_lang("tok-2", "fa", 2).await.unwrap();
        assert_eq!(
            store.console_lang("tok-1").await.unwrap().as_deref(),
            Some("en")
        );
        assert_eq!(
            store.console_lang("tok-2").await.unwrap().as_deref(),
            Some("fa")
        );
    }
}
