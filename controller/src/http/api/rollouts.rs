//! Rollouts (`/api/v1/rollouts…`). The handlers ask the rollout loop
//! (`crate::rollouts`), which owns every engine.

use axum::extract::{Path, Query};
use axum::Json;
use fleet_api::types::{
    MemberView, MembersQuery, PauseRequest, RolloutRequest, RolloutSummary, RolloutView,
};

use crate::http::ApiError;

pub async fn create(Json(_req): Json<RolloutRequest>) -> Result<Json<RolloutView>, ApiError> {
    Err(ApiError::NotImplemented("POST /api/v1/rollouts"))
}

pub async fn list() -> Result<Json<Vec<RolloutSummary>>, ApiError> {
    Err(ApiError::NotImplemented("GET /api/v1/rollouts"))
}

pub async fn show(Path(_id): Path<String>) -> Result<Json<RolloutView>, ApiError> {
    Err(ApiError::NotImplemented("GET /api/v1/rollouts/{id}"))
}

pub async fn members(
    Path(_id): Path<String>,
    Query(_q): Query<MembersQuery>,
) -> Result<Json<Vec<MemberView>>, ApiError> {
    Err(ApiError::NotImplemented(
        "GET /api/v1/rollouts/{id}/members",
    ))
}

pub async fn start(Path(_id): Path<String>) -> Result<Json<RolloutView>, ApiError> {
    Err(ApiError::NotImplemented("rollout start"))
}

pub async fn pause(
    Path(_id): Path<String>,
    _req: Option<Json<PauseRequest>>,
) -> Result<Json<RolloutView>, ApiError> {
    Err(ApiError::NotImplemented("rollout pause"))
}

pub async fn resume(Path(_id): Path<String>) -> Result<Json<RolloutView>, ApiError> {
    Err(ApiError::NotImplemented("rollout resume"))
}

pub async fn abort(Path(_id): Path<String>) -> Result<Json<RolloutView>, ApiError> {
    Err(ApiError::NotImplemented("rollout abort"))
}

pub async fn retry_failed(Path(_id): Path<String>) -> Result<Json<RolloutView>, ApiError> {
    Err(ApiError::NotImplemented("rollout retry-failed"))
}
