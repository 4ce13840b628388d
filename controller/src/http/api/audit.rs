//! The audit log and its verification.

use axum::extract::{Query, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use crate::access::Caller;
use crate::domain::auth::Permission;
use crate::http::{ApiError, AppState};

#[derive(Deserialize)]
pub struct AuditQuery {
    actor: Option<String>,
    target: Option<String>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    limit: Option<u32>,
}

pub async fn audit_list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Permission::ReadAudit)?;
    let entries = st
        .store
        .audit_entries(&crate::store::AuditFilter {
            actor: q.actor.filter(|s| !s.is_empty()),
            target: q.target.filter(|s| !s.is_empty()),
            since_ms: q.since_ms,
            until_ms: q.until_ms,
            limit: q.limit.unwrap_or(100).min(10_000),
        })
        .await?;
    Ok(Json(
        serde_json::to_value(entries).expect("entries serialize"),
    ))
}

pub async fn audit_verify(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Permission::ReadAudit)?;
    Ok(Json(match st.access.verify().await? {
        Ok(n) => json!({ "intact": true, "entries": n }),
        Err(broken) => {
            json!({ "intact": false, "first_broken": broken.seq, "reason": broken.reason })
        }
    }))
}
