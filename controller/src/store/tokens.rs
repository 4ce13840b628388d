//! Operator tokens (hashes only).

use fleet_protocol::ProvinceCode;
use serde::Serialize;
use sqlx::Row;

use super::{corrupt, to_i64, to_u64, Store, StoreError};
use crate::domain::auth::Role;

/// A stored operator token (never the token itself).
#[derive(Debug, Clone, Serialize)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub provinces: Vec<ProvinceCode>,
    #[serde(skip)]
    pub hash: String,
    pub created_at_ms: u64,
    pub created_by: String,
    pub revoked_at_ms: Option<u64>,
    /// From when the token is refused; `None`: never.
    pub expires_at_ms: Option<u64>,
}

impl Store {
    pub async fn insert_token(&self, t: &TokenRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tokens (id, name, role, provinces, hash, created_at_ms, created_by, expires_at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(t.role.as_str())
        .bind(
            t.provinces
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        )
        .bind(&t.hash)
        .bind(to_i64(t.created_at_ms))
        .bind(&t.created_by)
        .bind(t.expires_at_ms.map(to_i64))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, role, provinces, hash, created_at_ms, created_by, revoked_at_ms,
                    expires_at_ms
             FROM tokens ORDER BY created_at_ms, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let id: String = r.get(0);
                let role: String = r.get(2);
                let provinces: String = r.get(3);
                let bad = |e: String| corrupt("tokens", format!("{id}: {e}"));
                Ok(TokenRow {
                    role: role.parse::<Role>().map_err(|e| bad(e.to_string()))?,
                    provinces: provinces
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(|p| ProvinceCode::parse(p).map_err(|e| bad(e.to_string())))
                        .collect::<Result<_, _>>()?,
                    name: r.get(1),
                    hash: r.get(4),
                    created_at_ms: to_u64(r.get(5)),
                    created_by: r.get(6),
                    revoked_at_ms: r.get::<Option<i64>, _>(7).map(to_u64),
                    expires_at_ms: r.get::<Option<i64>, _>(8).map(to_u64),
                    id,
                })
            })
            .collect()
    }

    /// Revoke a token; false if there is no such (unrevoked) token.
    pub async fn revoke_token(&self, id: &str, at_ms: u64) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE tokens SET revoked_at_ms = ? WHERE id = ? AND revoked_at_ms IS NULL",
        )
        .bind(to_i64(at_ms))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }
}
