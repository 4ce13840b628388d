//! Counties and polling stations.

use fleet_protocol::{CountyCode, ProvinceCode, StationId};
use sqlx::Row;

use super::{corrupt, Store, StoreError};
use crate::domain::registry::Registry;

/// A county of the registry with its number of polling stations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountyRow {
    pub code: CountyCode,
    pub province: ProvinceCode,
    pub name_en: String,
    pub name_fa: String,
    pub stations: u32,
}

impl Store {
    pub async fn import_registry(&self, reg: &Registry) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        for c in reg.counties.values() {
            sqlx::query(
                "INSERT INTO counties (code, province, name_en, name_fa) VALUES (?, ?, ?, ?)
                 ON CONFLICT(code) DO UPDATE SET name_en = excluded.name_en, name_fa = excluded.name_fa",
            )
            .bind(c.code.as_str())
            .bind(c.province.to_string())
            .bind(&c.name_en)
            .bind(&c.name_fa)
            .execute(&mut *tx)
            .await?;
        }
        for s in reg.stations.values() {
            sqlx::query(
                "INSERT INTO stations (id, county, name) VALUES (?, ?, ?)
                 ON CONFLICT(id) DO UPDATE SET county = excluded.county, name = excluded.name",
            )
            .bind(s.id.as_str())
            .bind(s.county.as_str())
            .bind(&s.name)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Counties of the registry, with their station counts.
    pub async fn counties(
        &self,
        province: Option<ProvinceCode>,
    ) -> Result<Vec<CountyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.code, c.province, c.name_en, c.name_fa, COUNT(s.id) AS stations
             FROM counties c LEFT JOIN stations s ON s.county = c.code
             WHERE (?1 IS NULL OR c.province = ?1)
             GROUP BY c.code ORDER BY c.code",
        )
        .bind(province.map(|p| p.to_string()))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let code: String = r.get(0);
                let province: String = r.get(1);
                let stations: i64 = r.get(4);
                Ok(CountyRow {
                    code: CountyCode::parse(&code)
                        .map_err(|e| corrupt("counties", format!("{code}: {e}")))?,
                    province: ProvinceCode::parse(&province)
                        .map_err(|e| corrupt("counties", format!("{code}: {e}")))?,
                    name_en: r.get(2),
                    name_fa: r.get(3),
                    stations: u32::try_from(stations)
                        .map_err(|e| corrupt("stations", format!("{code}: {e}")))?,
                })
            })
            .collect()
    }

    pub async fn county_exists(&self, code: &CountyCode) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT 1 FROM counties WHERE code = ?")
            .bind(code.as_str())
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// The county a station belongs to, if the station exists.
    pub async fn station_county(&self, id: &StationId) -> Result<Option<CountyCode>, StoreError> {
        sqlx::query("SELECT county FROM stations WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| {
                let county: String = r.get(0);
                CountyCode::parse(&county).map_err(|e| corrupt("stations", format!("{id}: {e}")))
            })
            .transpose()
    }
}
