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

/// Check the chain, then every anchor (`SEQ:HASH`) written down earlier.
pub async fn verify(client: &Client, anchors: &[String]) -> Result<Intact, CommandError> {
    let anchors = anchors
        .iter()
        .map(|a| parse_anchor(a))
        .collect::<Result<Vec<_>, _>>()?;
    let v = client.audit_verify().await?;
    if v.intact {
        for (seq, expected) in anchors {
            let found = client
                .audit(&AuditQuery {
                    seq: Some(seq),
                    limit: Some(1),
                    ..AuditQuery::default()
                })
                .await?
                .into_iter()
                .next()
                .map_or_else(|| "no such entry".to_owned(), |e| e.hash);
            if found != expected {
                return Err(CommandError::AnchorMismatch {
                    seq,
                    expected,
                    found,
                });
            }
        }
        Ok(Intact {
            entries: v.entries.unwrap_or(0),
            head_hash: v.head_hash,
        })
    } else {
        Err(CommandError::AuditBroken {
            seq: v.first_broken.unwrap_or(0),
            reason: v.reason.unwrap_or_default(),
        })
    }
}

fn parse_anchor(a: &str) -> Result<(u64, String), CommandError> {
    let bad = || CommandError::BadAnchor(a.to_owned());
    let (seq, hash) = a.split_once(':').ok_or_else(bad)?;
    let seq = seq.trim().parse().map_err(|_| bad())?;
    let hash = hash.trim();
    if hash.is_empty() || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok((seq, hash.to_ascii_lowercase()))
}

/// The whole chain checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intact {
    pub entries: u64,
    /// The last entry's hash: the anchor to write down off the machine.
    pub head_hash: Option<String>,
}

impl Report for Intact {
    fn json(&self) -> Value {
        let v = match &self.head_hash {
            Some(h) => fleet_api::AuditVerification::intact_at(self.entries, h.clone()),
            None => fleet_api::AuditVerification::intact(self.entries),
        };
        to_json(&v)
    }

    fn table(&self) -> View {
        View::Text(match &self.head_hash {
            Some(h) => format!(
                "audit log intact: {} entries\nhead (write it down off this machine; check later with --anchor): {}:{h}\n",
                self.entries, self.entries
            ),
            None => format!("audit log intact: {} entries\n", self.entries),
        })
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
            render(
                &Intact {
                    entries: 4,
                    head_hash: None
                },
                Output::Table
            ),
            "audit log intact: 4 entries\n"
        );
        let with_head = render(
            &Intact {
                entries: 4,
                head_hash: Some("ab12".into()),
            },
            Output::Table,
        );
        assert!(with_head.contains("4:ab12"), "{with_head}");
    }

    #[test]
    fn anchors_parse_as_seq_colon_hex() {
        assert_eq!(parse_anchor("12:AB01").unwrap(), (12, "ab01".into()));
        for bad in ["12", "x:ab", "12:", "12:zz"] {
            assert!(parse_anchor(bad).is_err(), "{bad}");
        }
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
