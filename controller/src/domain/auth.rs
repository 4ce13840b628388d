//! Operators and what they may do (pure): roles, permissions, province
//! scope, and bearer tokens (random, shown once, stored as SHA-256).

use fleet_protocol::ProvinceCode;
use rand::RngCore;
use serde::Serialize;

// Roles and permissions are the API's vocabulary (the OpenAPI document
// lists, per route, the roles that may call it), so they live in fleet-api
// and the domain uses them from there.
pub use fleet_api::roles::{Permission, Role};

/// Who is calling, resolved from a valid token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub token_id: String,
    pub name: String,
    pub role: Role,
    /// Empty means every province.
    pub provinces: Vec<ProvinceCode>,
}

impl Principal {
    pub fn may(&self, p: Permission) -> bool {
        self.role.allows(p)
    }

    pub fn is_scoped(&self) -> bool {
        !self.provinces.is_empty()
    }

    pub fn sees(&self, p: ProvinceCode) -> bool {
        self.provinces.is_empty() || self.provinces.contains(&p)
    }

    /// "name (token id)", as the audit log records the actor.
    pub fn actor(&self) -> String {
        format!("{} ({})", self.name, self.token_id)
    }
}

/// Why a token cannot be created as asked.
pub fn check_scope(role: Role, provinces: &[ProvinceCode]) -> Result<(), ScopeError> {
    match (role, provinces.is_empty()) {
        (Role::ProvinceTech, true) => Err(ScopeError::ProvinceTechUnscoped),
        (Role::ProvinceTech, false) | (_, true) => Ok(()),
        (_, false) => Err(ScopeError::OnlyProvinceTech(role)),
    }
}

/// A token that cannot be created with the scope asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("a province-tech token needs at least one province")]
    ProvinceTechUnscoped,
    #[error("only province-tech tokens are scoped to provinces, not {0}")]
    OnlyProvinceTech(Role),
}

pub const TOKEN_PREFIX: &str = "sdg_";

/// The longest a token may be made to live: ten years.
pub const MAX_TOKEN_DAYS: u32 = 3650;

const DAY_MS: u64 = 86_400_000;

/// A token lifetime that cannot be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a token expires after 1 to {MAX_TOKEN_DAYS} days, not {0}")]
pub struct BadExpiry(pub u32);

/// When a token made at `now` to live `days` expires; `None`: never.
pub fn token_expiry(now: u64, days: Option<u32>) -> Result<Option<u64>, BadExpiry> {
    match days {
        None => Ok(None),
        Some(d) if (1..=MAX_TOKEN_DAYS).contains(&d) => Ok(Some(now + u64::from(d) * DAY_MS)),
        Some(d) => Err(BadExpiry(d)),
    }
}

/// Why a presented token does not stand for anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefused {
    #[error("invalid or revoked token")]
    Invalid,
    #[error("this token has expired; ask an admin for a new one")]
    Expired,
}

/// A live token's principal, unless its expiry has come at `now`.
pub fn check_expiry(
    principal: &Principal,
    expires_at_ms: Option<u64>,
    now: u64,
) -> Result<Principal, TokenRefused> {
    match expires_at_ms {
        Some(at) if now >= at => Err(TokenRefused::Expired),
        _ => Ok(principal.clone()),
    }
}

/// A new random token (shown once) and its id.
pub fn new_token() -> (String, String) {
    let mut secret = [0u8; 32];
    let mut id = [0u8; 4];
    let mut rng = rand::rngs::OsRng;
    rng.fill_bytes(&mut secret);
    rng.fill_bytes(&mut id);
    (
        format!("tok_{}", hex::encode(id)),
        format!("{TOKEN_PREFIX}{}", hex::encode(secret)),
    )
}

/// What is stored of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        token.as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_allow() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
            assert!(r.allows(Permission::ReadFleet));
        }
        assert!("root".parse::<Role>().is_err());
        assert!(!Role::Viewer.allows(Permission::SetBaseline));
        assert!(!Role::Warehouse.allows(Permission::ImportRegistry));
        assert!(Role::Warehouse.allows(Permission::RegisterDevices));
        assert!(!Role::CentralOps.allows(Permission::ManageTokens));
        assert!(Role::Admin.allows(Permission::ManageTokens));
        assert!(!Role::ProvinceTech.allows(Permission::ReadAudit));
    }

    #[test]
    fn scope_rules() {
        let maz = ProvinceCode::parse("IR-02").unwrap();
        assert!(check_scope(Role::ProvinceTech, &[]).is_err());
        assert!(check_scope(Role::ProvinceTech, &[maz]).is_ok());
        assert!(check_scope(Role::Viewer, &[maz]).is_err());
        let p = Principal {
            token_id: "tok_1".into(),
            name: "maz".into(),
            role: Role::ProvinceTech,
            provinces: vec![maz],
        };
        assert!(p.sees(maz));
        assert!(!p.sees(ProvinceCode::parse("IR-23").unwrap()));
    }

    #[test]
    fn a_token_expires_after_its_days_and_from_that_very_millisecond() {
        assert_eq!(token_expiry(1_000, None), Ok(None));
        assert_eq!(token_expiry(1_000, Some(1)), Ok(Some(1_000 + DAY_MS)));
        assert_eq!(token_expiry(0, Some(0)), Err(BadExpiry(0)));
        assert_eq!(
            token_expiry(0, Some(MAX_TOKEN_DAYS + 1)),
            Err(BadExpiry(3651))
        );
        let p = Principal {
            token_id: "tok_1".into(),
            name: "temp".into(),
            role: Role::Viewer,
            provinces: vec![],
        };
        assert_eq!(check_expiry(&p, Some(10), 9), Ok(p.clone()));
        assert_eq!(check_expiry(&p, Some(10), 10), Err(TokenRefused::Expired));
        assert_eq!(check_expiry(&p, None, u64::MAX), Ok(p));
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (id1, t1) = new_token();
        let (id2, t2) = new_token();
        assert_ne!(t1, t2);
        assert_ne!(id1, id2);
        assert!(t1.starts_with(TOKEN_PREFIX) && t1.len() == 4 + 64);
        assert_eq!(token_hash(&t1), token_hash(&t1));
        assert_ne!(token_hash(&t1), token_hash(&t2));
        assert!(!token_hash(&t1).contains(&t1[4..]));
    }
}
