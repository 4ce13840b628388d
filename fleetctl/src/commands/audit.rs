//! `fleetctl audit list|verify`: the hash-chained log of every change made
//! through the API. A broken chain is an error (exit status 1) naming the
//! first broken entry.

use fleet_api::{AuditEntry, AuditQuery, Client};
use serde_json::Value;

use super::CommandError;
use crate::render::{to_json, Grid, Report, View};

pub async fn list(client: &Client, q: &AuditQuery) -> Result<Entries, CommandError> {
    Ok(Entries(client.audit(q).await?))
}

/// Entries, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entries(pub Vec<AuditEntry>);

impl Report for Entries {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    fn table(&self) -> View {
        let mut grid = Grid::new(&[
            "seq", "at_ms", "actor", "role", "action", "target", "source", "detail",
        ]);
        grid.rows = self
            .0
            .iter()
            .map(|e| {
                vec![
                    e.seq.to_string(),
                    e.at_ms.to_string(),
                    e.actor.clone(),
                    e.role.clone(),
                    e.action.clone(),
                    e.target.clone(),
                    e.source.clone(),
                    e.detail.clone(),
                ]
            })
            .collect();
        View::grid(grid)
    }
}

pub async fn verify(client: &Client) -> Result<Intact, CommandError> {
    let v = client.audit_verify().await?;
    if v.intact {
        Ok(Intact {
            entries: v.entries.unwrap_or(0),
        })
    } else {
        Err(CommandError::AuditBroken {
            seq: v.first_broken.unwrap_or(0),
            reason: v.reason.unwrap_or_default(),
        })
    }
}

/// The whole chain checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intact {
    pub entries: u64,
}

impl Report for Intact {
    fn json(&self) -> Value {
        to_json(&fleet_api::AuditVerification::intact(self.entries))
    }

    fn table(&self) -> View {
        View::Text(format!("audit log intact: {} entries\n", self.entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{render, Output};

    #[test]
    fn entries_table_has_every_column_and_the_detail_as_written() {
        let e = Entries(vec![AuditEntry {
            seq: 3,
            at_ms: 10,
            actor: "first admin (t0)".into(),
            role: "admin".into(),
            action: "baseline.set".into(),
            target: "ballot-box-v2".into(),
            source: "127.0.0.1".into(),
            detail: r#"{"version":"2.4.0"}"#.into(),
            prev_hash: "00".into(),
            hash: "11".into(),
        }]);
        let t = render(&e, Output::Table);
        assert!(t.starts_with("SEQ  AT_MS  ACTOR"), "{t}");
        assert!(t.contains(r#"{"version":"2.4.0"}"#), "{t}");
        let json: Vec<Value> = serde_json::from_str(&render(&e, Output::Json)).unwrap();
        assert_eq!(json.len(), 1);
        assert_eq!(json[0]["hash"], "11", "JSON has every field");
    }

    #[test]
    fn intact_says_how_many_entries() {
        assert_eq!(
            render(&Intact { entries: 4 }, Output::Table),
            "audit log intact: 4 entries\n"
        );
    }

    #[test]
    fn broken_names_the_entry() {
        let e = CommandError::AuditBroken {
            seq: 4,
            reason: "hash mismatch".into(),
        };
        assert_eq!(
            e.to_string(),
            "the audit log is broken at entry #4: hash mismatch"
        );
    }
}
