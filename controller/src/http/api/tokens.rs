//! Operator tokens.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use fleet_api::types::{CreatedToken, TokenRequest, TokenRevoked, TokenRow};
use fleet_protocol::ProvinceCode;

use crate::access::Caller;
use crate::domain::auth::Role;
use crate::http::{parse, ApiError, AppState};

pub async fn create_token(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<TokenRequest>,
) -> Result<Json<CreatedToken>, ApiError> {
    let role: Role = parse("role", &req.role)?;
    let provinces = req
        .provinces
        .iter()
        .map(|p| parse::<ProvinceCode>("province", p))
        .collect::<Result<Vec<_>, _>>()?;
    let name = req.name.unwrap_or_else(|| role.as_str().to_owned());
    let (row, token) = st
        .access
        .create_token_expiring(&caller, &name, role, provinces, req.expires_days)
        .await?;
    Ok(Json(CreatedToken {
        token,
        id: row.id,
        name: row.name,
        role: row.role,
        provinces: row.provinces,
        expires_at_ms: row.expires_at_ms,
    }))
}

pub async fn list_tokens(State(st): State<AppState>) -> Result<Json<Vec<TokenRow>>, ApiError> {
    Ok(Json(
        st.access
            .tokens()
            .await?
            .into_iter()
            .map(|t| TokenRow {
                id: t.id,
                name: t.name,
                role: t.role,
                provinces: t.provinces,
                created_at_ms: t.created_at_ms,
                created_by: t.created_by,
                revoked_at_ms: t.revoked_at_ms,
                expires_at_ms: t.expires_at_ms,
            })
            .collect(),
    ))
}

pub async fn revoke_token(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<TokenRevoked>, ApiError> {
    if st.access.revoke(&caller, &id).await? {
        Ok(Json(TokenRevoked { revoked: id }))
    } else {
        Err(ApiError::UnknownToken(id))
    }
}
