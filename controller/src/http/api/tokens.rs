//! Operator tokens.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use fleet_protocol::ProvinceCode;
use serde::Deserialize;
use serde_json::json;

use crate::access::Caller;
use crate::domain::auth::{Permission, Role};
use crate::http::{parse, ApiError, AppState};

#[derive(Deserialize)]
pub struct TokenRequest {
    role: String,
    #[serde(default)]
    provinces: Vec<String>,
    name: Option<String>,
}

pub async fn create_token(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<TokenRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Permission::ManageTokens)?;
    let role: Role = parse("role", &req.role)?;
    let provinces = req
        .provinces
        .iter()
        .map(|p| parse::<ProvinceCode>("province", p))
        .collect::<Result<Vec<_>, _>>()?;
    let name = req.name.unwrap_or_else(|| role.as_str().to_owned());
    let (row, token) = st
        .access
        .create_token(&caller, &name, role, provinces)
        .await?;
    Ok(Json(
        json!({ "token": token, "id": row.id, "name": row.name, "role": row.role, "provinces": row.provinces }),
    ))
}

pub async fn list_tokens(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Permission::ManageTokens)?;
    Ok(Json(
        serde_json::to_value(st.access.tokens().await?).expect("token rows serialize"),
    ))
}

pub async fn revoke_token(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Permission::ManageTokens)?;
    if st.access.revoke(&caller, &id).await? {
        Ok(Json(json!({ "revoked": id })))
    } else {
        Err(ApiError::UnknownToken(id))
    }
}
