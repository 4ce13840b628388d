//! `fleetctl token create|list|revoke`: operator tokens. A new token is
//! printed once, alone on stdout, so that a script can keep it.

use fleet_api::{Client, CreatedToken, TokenRequest, TokenRow};
use serde_json::Value;

use super::CommandError;
use crate::render::{cell, to_json, Grid, Report, View};

/// `role` goes as given: the controller names the roles when it refuses one.
pub async fn create(
    client: &Client,
    role: String,
    provinces: Vec<String>,
    name: Option<String>,
    expires_days: Option<u32>,
) -> Result<Created, CommandError> {
    let req = TokenRequest {
        role,
        provinces,
        name,
        expires_days,
    };
    Ok(Created(client.create_token(&req).await?))
}

/// A new token: the only time it is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created(pub CreatedToken);

impl Report for Created {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    fn table(&self) -> View {
        View::Text(format!("{}\n", self.0.token))
    }

    fn note(&self) -> Option<String> {
        let expires = self
            .0
            .expires_at_ms
            .map(|at| format!(", expires at {at} (unix ms)"))
            .unwrap_or_default();
        Some(format!(
            "token {} ({}, role {}{expires}) created; it is shown once:",
            self.0.id, self.0.name, self.0.role
        ))
    }
}

pub async fn list(client: &Client) -> Result<Tokens, CommandError> {
    Ok(Tokens(client.tokens().await?))
}

/// Stored tokens (never the tokens themselves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens(pub Vec<TokenRow>);

impl Report for Tokens {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    fn table(&self) -> View {
        let mut grid = Grid::new(&[
            "id",
            "name",
            "role",
            "provinces",
            "created_by",
            "created_at_ms",
            "expires_at_ms",
            "revoked_at_ms",
        ]);
        grid.rows = self
            .0
            .iter()
            .map(|t| {
                vec![
                    t.id.clone(),
                    t.name.clone(),
                    t.role.to_string(),
                    cell(&t.provinces),
                    t.created_by.clone(),
                    t.created_at_ms.to_string(),
                    cell(&t.expires_at_ms),
                    cell(&t.revoked_at_ms),
                ]
            })
            .collect();
        View::grid(grid)
    }
}

pub async fn revoke(client: &Client, id: String) -> Result<Revoked, CommandError> {
    client.revoke_token(&id).await?;
    Ok(Revoked { id })
}

/// The token that was revoked, as the operator named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub id: String,
}

impl Report for Revoked {
    fn json(&self) -> Value {
        to_json(&fleet_api::TokenRevoked {
            revoked: self.id.clone(),
        })
    }

    fn table(&self) -> View {
        View::Text(format!("token {} revoked\n", self.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{render, Output};
    use fleet_api::Role;

    #[test]
    fn created_prints_only_the_token_on_stdout() {
        let c = Created(CreatedToken {
            token: "sdg_secret".into(),
            id: "t1".into(),
            name: "Sari office".into(),
            role: Role::ProvinceTech,
            provinces: vec!["IR-02".parse().unwrap()],
            expires_at_ms: None,
        });
        assert_eq!(render(&c, Output::Table), "sdg_secret\n");
        assert_eq!(
            c.note().unwrap(),
            "token t1 (Sari office, role province-tech) created; it is shown once:"
        );
    }

    #[test]
    fn list_shows_provinces_as_a_list_and_unrevoked_as_empty() {
        let t = Tokens(vec![TokenRow {
            id: "t1".into(),
            name: "Sari office".into(),
            role: Role::ProvinceTech,
            provinces: vec!["IR-02".parse().unwrap(), "IR-27".parse().unwrap()],
            created_at_ms: 5,
            created_by: "first admin (t0)".into(),
            revoked_at_ms: None,
            expires_at_ms: None,
        }]);
        assert_eq!(
            render(&t, Output::Csv),
            "id,name,role,provinces,created_by,created_at_ms,expires_at_ms,revoked_at_ms\n\
             t1,Sari office,province-tech,\"[\"\"IR-02\"\",\"\"IR-27\"\"]\",first admin (t0),5,,\n"
        );
    }

    #[test]
    fn list_and_creation_say_when_a_token_expires() {
        let row = TokenRow {
            id: "t2".into(),
            name: "count night".into(),
            role: Role::Viewer,
            provinces: vec![],
            created_at_ms: 5,
            created_by: "first admin (t0)".into(),
            revoked_at_ms: None,
            expires_at_ms: Some(86_400_005),
        };
        let t = render(&Tokens(vec![row]), Output::Table);
        assert!(t.starts_with("ID  NAME         ROLE    PROVINCES  CREATED_BY        CREATED_AT_MS  EXPIRES_AT_MS  REVOKED_AT_MS\n"), "{t}");
        assert!(t.contains("  5              86400005\n"), "{t}");
        let c = Created(CreatedToken {
            token: "sdg_secret".into(),
            id: "t2".into(),
            name: "count night".into(),
            role: Role::Viewer,
            provinces: vec![],
            expires_at_ms: Some(86_400_005),
        });
        assert_eq!(
            c.note().unwrap(),
            "token t2 (count night, role viewer, expires at 86400005 (unix ms)) created; it is shown once:"
        );
    }
}
