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
    /// Days until the token expires (1 to 3650); absent: it never does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_days: Option<u32>,
}

impl TokenRequest {
    pub fn new(role: Role, provinces: Vec<String>, name: Option<String>) -> Self {
        Self {
            role: role.as_str().to_owned(),
            provinces,
            name,
            expires_days: None,
        }
    }

    /// The same request for a token that expires after `days`.
    pub fn expiring_in_days(self, days: u32) -> Self {
        Self {
            expires_days: Some(days),
            ..self
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
    /// When it stops being accepted (unix ms); absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
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
    /// When it stops being accepted (unix ms); absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

/// The answer of `DELETE /api/v1/tokens/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenRevoked {
    /// The id of the revoked token.
    pub revoked: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expiry_fields_are_left_out_when_absent_and_old_json_still_reads() {
        let old = json!({ "id": "t1", "name": "n", "role": "viewer", "provinces": [],
                          "created_at_ms": 1, "created_by": "a", "revoked_at_ms": null });
        let row: TokenRow = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(row.expires_at_ms, None);
        assert_eq!(serde_json::to_value(&row).unwrap(), old);
        let row = TokenRow {
            expires_at_ms: Some(9),
            ..row
        };
        assert_eq!(serde_json::to_value(&row).unwrap()["expires_at_ms"], 9);
        let req = TokenRequest::new(Role::Viewer, vec![], None).expiring_in_days(30);
        assert_eq!(serde_json::to_value(&req).unwrap()["expires_days"], 30);
    }
}
