//! The audit log's hash chain (pure). Each entry's hash covers the previous
//! entry's hash and all of its own fields, so editing, removing or
//! reordering any entry breaks the chain from that entry on; the head (last
//! sequence number and hash, kept outside the database) also catches a cut
//! tail.

use serde::{Deserialize, Serialize};

/// The hash before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub at_ms: u64,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub target: String,
    /// Where the request came from (the client's address).
    pub source: String,
    /// JSON with the particulars of the change.
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of an entry given the previous hash (fields length-delimited
/// through JSON, so no two different entries serialize alike).
pub fn entry_hash(prev_hash: &str, e: &Entry) -> String {
    let canonical = serde_json::to_string(&(
        prev_hash, e.seq, e.at_ms, &e.actor, &e.role, &e.action, &e.target, &e.source, &e.detail,
    ))
    .expect("tuples of strings and numbers serialize");
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        canonical.as_bytes(),
    ))
}

/// The first broken entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    /// The sequence number where the chain breaks (the first entry that is
    /// missing, edited or out of place).
    pub seq: u64,
    pub reason: String,
}

/// The last entry as the controller wrote it, kept outside the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

/// Check a whole log, in the order the store returns it (by sequence):
/// the chain itself, then that `head` is in it.
pub fn verify(entries: &[Entry], head: Option<&Head>) -> Result<u64, Broken> {
    verify_chain(entries)?;
    check_head(entries, head)
}

/// The chain alone: every entry in place, following the one before and
/// unaltered. Returns the number of entries.
pub fn verify_chain(entries: &[Entry]) -> Result<u64, Broken> {
    let mut prev = GENESIS.to_owned();
    for (i, e) in entries.iter().enumerate() {
        let want_seq = i as u64 + 1;
        if e.seq != want_seq {
            return Err(Broken {
                seq: want_seq,
                reason: format!(
                    "entry #{want_seq} is missing (found #{} in its place)",
                    e.seq
                ),
            });
        }
        if e.prev_hash != prev {
            return Err(Broken {
                seq: e.seq,
                reason: format!("entry #{} does not follow entry #{}", e.seq, e.seq - 1),
            });
        }
        if entry_hash(&prev, e) != e.hash {
            return Err(Broken {
                seq: e.seq,
                reason: format!("entry #{} was altered", e.seq),
            });
        }
        prev = e.hash.clone();
    }
    Ok(entries.len() as u64)
}

/// That `head` (the last entry as written) is one of the entries of a
/// chain already verified: entries written after it may follow, none it
/// vouched for may be missing or differ. Returns the number of entries.
pub fn check_head(entries: &[Entry], head: Option<&Head>) -> Result<u64, Broken> {
    let n = entries.len() as u64;
    match head {
        None if n > 0 => {
            return Err(Broken {
                seq: n,
                reason: "the head file (the last entry as written) is missing".into(),
            })
        }
        None => {}
        Some(h) if h.seq > n => {
            return Err(Broken {
                seq: n + 1,
                reason: format!("entries #{} to #{} are missing", n + 1, h.seq),
            })
        }
        Some(h) if h.seq > 0 => {
            // A rewritten chain re-hashed from some entry on cannot match
            // the head's hash of the entry it names.
            let at = &entries[usize::try_from(h.seq - 1).expect("h.seq <= n fits in usize")];
            if at.hash != h.hash {
                return Err(Broken {
                    seq: h.seq,
                    reason: format!("entry #{} differs from the one written", h.seq),
                });
            }
        }
        Some(_) => {}
    }
    Ok(n)
}

/// Complete an entry (sequence, chain) after `prev`.
pub fn seal(mut e: Entry, prev: Option<&Entry>) -> Entry {
    e.seq = prev.map_or(1, |p| p.seq + 1);
    e.prev_hash = prev.map_or_else(|| GENESIS.to_owned(), |p| p.hash.clone());
    e.hash = entry_hash(&e.prev_hash, &e);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> Entry {
        Entry {
            seq: 0,
            at_ms: 1000,
            actor: "admin (tok_1)".into(),
            role: "admin".into(),
            action: action.into(),
            target: "BB-1".into(),
            source: "127.0.0.1".into(),
            detail: "{}".into(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    fn chain(n: usize) -> Vec<Entry> {
        let mut v: Vec<Entry> = Vec::new();
        for i in 0..n {
            let e = seal(entry(&format!("action-{i}")), v.last());
            v.push(e);
        }
        v
    }

    fn head(v: &[Entry]) -> Head {
        let last = v.last().unwrap();
        Head {
            seq: last.seq,
            hash: last.hash.clone(),
        }
    }

    #[test]
    fn an_intact_chain_verifies() {
        let v = chain(5);
        assert_eq!(verify(&v, Some(&head(&v))), Ok(5));
        assert_eq!(verify(&[], None), Ok(0));
    }

    #[test]
    fn edits_deletions_and_reorders_are_named() {
        let v = chain(5);
        let h = head(&v);
        let mut edited = v.clone();
        edited[2].actor = "someone else".into();
        assert_eq!(verify(&edited, Some(&h)).unwrap_err().seq, 3);

        let mut deleted = v.clone();
        deleted.remove(1);
        assert_eq!(verify(&deleted, Some(&h)).unwrap_err().seq, 2);

        let mut reordered = v.clone();
        reordered.swap(1, 3);
        let (a, b) = (reordered[1].seq, reordered[3].seq);
        reordered[1].seq = b;
        reordered[3].seq = a;
        reordered[1].seq = 2;
        reordered[3].seq = 4;
        assert_eq!(verify(&reordered, Some(&h)).unwrap_err().seq, 2);

        // re-hashing an edit does not help: the next entry no longer follows
        let mut rehashed = v.clone();
        rehashed[2].detail = "{\"forged\":true}".into();
        rehashed[2].hash = entry_hash(&rehashed[2].prev_hash, &rehashed[2]);
        assert_eq!(verify(&rehashed, Some(&h)).unwrap_err().seq, 4);

        // a cut tail is caught by the head
        let cut = &v[..3];
        let err = verify(cut, Some(&h)).unwrap_err();
        assert_eq!(err.seq, 4);
        assert!(err.reason.contains("missing"));
        // ...a chain rewritten from an entry on and one entry longer, too
        let mut rewritten = v.clone();
        rewritten[2].detail = "{\"forged\":true}".into();
        for k in 2..5 {
            let prev = rewritten[k - 1].hash.clone();
            rewritten[k].prev_hash = prev.clone();
            rewritten[k].hash = entry_hash(&prev, &rewritten[k]);
        }
        let extra = seal(entry("cover"), rewritten.last());
        rewritten.push(extra);
        assert_eq!(verify(&rewritten, Some(&h)).unwrap_err().seq, 5);
        // ...and a missing head
        assert!(verify(&v, None).unwrap_err().reason.contains("head"));
        // ...and a re-chained last entry too
        let mut last = v.clone();
        last[4].detail = "{}x".into();
        last[4].hash = entry_hash(&last[4].prev_hash, &last[4]);
        assert_eq!(verify(&last, Some(&h)).unwrap_err().seq, 5);
    }
}
