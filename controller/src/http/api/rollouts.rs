//! Rollouts (`/api/v1/rollouts…`). The handlers check what they can at the
//! boundary (the request's fields, that the target is a published signed
//! target) and ask the rollout loop (`crate::rollouts`), which owns every
//! rollout, for the rest. Reads are in the caller's scope: a province
//! technician sees its provinces' members and counters over them only.

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use fleet_api::types::{
    MemberState, MemberView, MembersQuery, PauseRequest, RolloutAction, RolloutRequest,
    RolloutSummary, RolloutView,
};

use crate::access::Caller;
use crate::http::{opt, parse, ApiError, AppState};
use crate::rollouts::{parse_spec, scope_of, RolloutError};

fn id_of(s: &str) -> Result<u64, ApiError> {
    parse("rollout id", s)
}

pub async fn create(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<RolloutRequest>,
) -> Result<Json<RolloutView>, ApiError> {
    let spec = parse_spec(&req).map_err(RolloutError::Invalid)?;
    super::updates::ensure_published(&st, &spec.manifest).await?;
    Ok(Json(st.rollouts.create(req, spec, caller).await?))
}

pub async fn list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<RolloutSummary>>, ApiError> {
    Ok(Json(st.rollouts.list(scope_of(&caller)).await?))
}

pub async fn show(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<RolloutView>, ApiError> {
    Ok(Json(
        st.rollouts.show(id_of(&id)?, scope_of(&caller)).await?,
    ))
}

pub async fn members(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<MembersQuery>,
) -> Result<Json<Vec<MemberView>>, ApiError> {
    let state: Option<MemberState> = opt("state", q.state.as_deref())?;
    Ok(Json(
        st.rollouts
            .members(id_of(&id)?, scope_of(&caller), state)
            .await?,
    ))
}

async fn act(
    st: AppState,
    caller: Caller,
    id: &str,
    action: RolloutAction,
    reason: Option<String>,
) -> Result<Json<RolloutView>, ApiError> {
    Ok(Json(
        st.rollouts.act(id_of(id)?, action, reason, caller).await?,
    ))
}

pub async fn start(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<RolloutView>, ApiError> {
    act(st, caller, &id, RolloutAction::Start, None).await
}

/// The body may be empty (no reason).
pub async fn pause(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<RolloutView>, ApiError> {
    let req: PauseRequest = if body.iter().all(u8::is_ascii_whitespace) {
        PauseRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::BadField {
            field: "body",
            reason: e.to_string(),
        })?
    };
    act(st, caller, &id, RolloutAction::Pause, req.reason).await
}

pub async fn resume(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<RolloutView>, ApiError> {
    act(st, caller, &id, RolloutAction::Resume, None).await
}

pub async fn abort(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<RolloutView>, ApiError> {
    act(st, caller, &id, RolloutAction::Abort, None).await
}

pub async fn retry_failed(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<RolloutView>, ApiError> {
    act(st, caller, &id, RolloutAction::RetryFailed, None).await
}
