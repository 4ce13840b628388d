//! HTTP status codes are decided here and nowhere else. A 5xx is logged with
//! its cause and shown to the client as a plain message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::error;

use crate::domain::lifecycle::MoveRefused;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the current state (a lifecycle move that is not allowed).
    #[error("{0}")]
    Conflict(String),
    #[error("internal: {0}")]
    Internal(String),
    /// The request was understood but some items are wrong; nothing was changed.
    #[error("{message}")]
    Invalid {
        message: String,
        errors: serde_json::Value,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A lifecycle move the device's state does not allow.
    #[error(transparent)]
    MoveRefused(#[from] MoveRefused),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, json!({ "error": m })),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, json!({ "error": m })),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, json!({ "error": m })),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, json!({ "error": m })),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, json!({ "error": m })),
            ApiError::MoveRefused(e) => (StatusCode::CONFLICT, json!({ "error": e.to_string() })),
            ApiError::Internal(cause) => {
                error!(error = %cause, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({ "error": "internal error; see the controller log" }),
                )
            }
            ApiError::Invalid { message, errors } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "error": message, "errors": errors }),
            ),
            ApiError::Store(cause) => {
                error!(error = %cause, "request failed in the store");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({ "error": "internal error; see the controller log" }),
                )
            }
        };
        (status, Json(body)).into_response()
    }
}
