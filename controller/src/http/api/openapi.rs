//! `GET /api/v1/openapi.json` (no token): the OpenAPI 3 document of this
//! API, built by fleet-api from the same endpoint table the router uses.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;

pub async fn document() -> impl IntoResponse {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT
            .get_or_init(fleet_api::openapi::document_json)
            .clone(),
    )
}
