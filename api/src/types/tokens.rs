//! Operator tokens (`/api/v1/tokens…`): made, listed, revoked. A token is
//! shown once, when it is made; afterwards only its row.

use fleet_protocol::ProvinceCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::roles::Role;

/// The body of `POST /api/v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// admin, central-ops, province-tech, warehouse or viewer.
    pub role: String,
    /// For province-tech (and only for it): the provinces it may see.
    #[serde(default)]
    pub provinces: Vec<String>,
    /// Who or what the token is for (default: the role's name).
    pub name: Option<String>,
}

impl TokenRequest {
    pub fn new(role: Role, provinces: Vec<String>, name: Option<String>) -> Self {
        Self {
            role: role.as_str().to_owned(),
            provinces,
            name,
        }
    }
}

/// A new token: the only time `token` is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The bearer token itself.
    pub token: String,
    pub id: String,
    pub name: String,
    pub role: Role,
    #[schema(value_type = Vec<String>)]
    pub provinces: Vec<ProvinceCode>,
}

/// A stored token (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Empty: every province.
    #[schema(value_type = Vec<String>)]
    pub provinces: Vec<ProvinceCode>,
    pub created_at_ms: u64,
    /// The actor who made it, "name (token id)".
    pub created_by: String,
    pub revoked_at_ms: Option<u64>,
}

/// The answer of `DELETE /api/v1/tokens/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenRevoked {
    /// The id of the revoked token.
    pub revoked: String,
}
