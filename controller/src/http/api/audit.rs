//! The audit log and its verification.

use axum::extract::{Query, State};
use axum::Json;
use fleet_api::types::{AuditEntry, AuditQuery, AuditVerification};

use crate::http::{ApiError, AppState};
use crate::store::AuditFilter;

pub async fn audit_list(
    State(st): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let entries = st
        .store
        .audit_entries(&AuditFilter {
            actor: q.actor.filter(|s| !s.is_empty()),
            target: q.target.filter(|s| !s.is_empty()),
            since_ms: q.since_ms,
            until_ms: q.until_ms,
            seq: q.seq,
            action: q.action.filter(|s| !s.is_empty()),
            limit: q.limit.unwrap_or(100).min(10_000),
        })
        .await?;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| AuditEntry {
                seq: e.seq,
                at_ms: e.at_ms,
                actor: e.actor,
                role: e.role,
                action: e.action,
                target: e.target,
                source: e.source,
                detail: e.detail,
                prev_hash: e.prev_hash,
                hash: e.hash,
            })
            .collect(),
    ))
}

pub async fn audit_verify(State(st): State<AppState>) -> Result<Json<AuditVerification>, ApiError> {
    Ok(Json(match st.access.verify().await? {
        Ok(0) => AuditVerification::intact(0),
        Ok(n) => match st.store.audit_entry(n).await? {
            Some(last) => AuditVerification::intact_at(n, last.hash),
            None => AuditVerification::intact(n),
        },
        Err(broken) => AuditVerification::broken(broken.seq, broken.reason),
    }))
}
