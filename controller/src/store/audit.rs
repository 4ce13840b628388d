//! The audit log's rows (the chain itself is `domain::audit`).

use sqlx::Row;

use super::{to_i64, to_u64, Store, StoreError};

/// Filters for reading the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub target: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    pub seq: Option<u64>,
    /// The action, or its beginning.
    pub action: Option<String>,
    pub limit: u32,
}

fn audit_row(r: &sqlx::sqlite::SqliteRow) -> crate::domain::audit::Entry {
    crate::domain::audit::Entry {
        seq: to_u64(r.get(0)),
        at_ms: to_u64(r.get(1)),
        actor: r.get(2),
        role: r.get(3),
        action: r.get(4),
        target: r.get(5),
        source: r.get(6),
        detail: r.get(7),
        prev_hash: r.get(8),
        hash: r.get(9),
    }
}

const AUDIT_COLUMNS: &str =
    "seq, at_ms, actor, role, action, target, source, detail, prev_hash, hash";

impl Store {
    /// Append one entry to the audit chain (the caller serializes appends).
    pub async fn append_audit(
        &self,
        entry: crate::domain::audit::Entry,
    ) -> Result<crate::domain::audit::Entry, StoreError> {
        let mut tx = self.write_tx().await?;
        let last = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq DESC LIMIT 1"
        ))
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| audit_row(&r));
        let e = crate::domain::audit::seal(entry, last.as_ref());
        sqlx::query(&format!(
            "INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(to_i64(e.seq))
        .bind(to_i64(e.at_ms))
        .bind(&e.actor)
        .bind(&e.role)
        .bind(&e.action)
        .bind(&e.target)
        .bind(&e.source)
        .bind(&e.detail)
        .bind(&e.prev_hash)
        .bind(&e.hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(e)
    }

    pub async fn audit_entries(
        &self,
        f: &AuditFilter,
    ) -> Result<Vec<crate::domain::audit::Entry>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit
             WHERE (?1 IS NULL OR actor LIKE '%' || ?1 || '%')
               AND (?2 IS NULL OR target = ?2
                    -- A command sent by selector names its devices in the
                    -- detail, one entry for the one request.
                    OR (action = 'commands.send' AND EXISTS (
                        SELECT 1 FROM json_each(detail, '$.commands')
                         WHERE json_extract(value, '$.device') = ?2)))
               AND (?3 IS NULL OR at_ms >= ?3)
               AND (?4 IS NULL OR at_ms <= ?4)
               AND (?6 IS NULL OR seq = ?6)
               AND (?7 IS NULL OR substr(action, 1, length(?7)) = ?7)
             ORDER BY seq DESC LIMIT ?5"
        ))
        .bind(f.actor.as_deref())
        .bind(f.target.as_deref())
        .bind(f.since_ms.map(to_i64))
        .bind(f.until_ms.map(to_i64))
        .bind(i64::from(f.limit.max(1)))
        .bind(f.seq.map(to_i64))
        .bind(f.action.as_deref())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(audit_row).collect())
    }

    /// One audit entry by sequence number.
    pub async fn audit_entry(
        &self,
        seq: u64,
    ) -> Result<Option<crate::domain::audit::Entry>, StoreError> {
        Ok(
            sqlx::query(&format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE seq = ?"))
                .bind(to_i64(seq))
                .fetch_optional(&self.pool)
                .await?
                .map(|r| audit_row(&r)),
        )
    }

    /// The whole log in order, for verification.
    pub async fn audit_chain(&self) -> Result<Vec<crate::domain::audit::Entry>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(audit_row).collect())
    }
}
