//! Operators and what they may do (pure): roles, permissions, province
//! scope, and bearer tokens (random, shown once, stored as SHA-256).

use std::fmt;
use std::str::FromStr;

use fleet_protocol::ProvinceCode;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::domain::UnknownName;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Admin,
    CentralOps,
    ProvinceTech,
    Warehouse,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::CentralOps,
        Role::ProvinceTech,
        Role::Warehouse,
        Role::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::CentralOps => "central-ops",
            Role::ProvinceTech => "province-tech",
            Role::Warehouse => "warehouse",
            Role::Viewer => "viewer",
        }
    }

    /// What the role may do (province scope comes on top, for province-tech).
    pub fn allows(self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::CentralOps => matches!(
                p,
                ReadFleet
                    | RegisterDevices
                    | ImportRegistry
                    | SetBaseline
                    | ReadAudit
                    | MoveDevices
                    | RetireDevices
            ),
            Role::ProvinceTech => matches!(p, ReadFleet),
            Role::Warehouse => matches!(p, ReadFleet | RegisterDevices | MoveDevices),
            Role::Viewer => matches!(p, ReadFleet),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownName {
                kind: "role",
                given: s.to_owned(),
                one_of: Role::ALL.map(Role::as_str).join(", "),
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Readiness, devices, registry, baselines, broker address, metrics.
    ReadFleet,
    RegisterDevices,
    ImportRegistry,
    SetBaseline,
    ManageTokens,
    ReadAudit,
    /// Ship and deploy devices (warehouse work).
    MoveDevices,
    /// Retire a device and revoke its certificate.
    RetireDevices,
}

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
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
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
