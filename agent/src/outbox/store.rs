//! The outbox on disk: one redb file in the state directory. Every commit
//! is durable when it returns (redb's default, fsync at commit) and redb's
//! copy-on-write pages mean a power cut during a write leaves the last
//! committed state: nothing that was acknowledged is lost.
//!
//! Tables: `records` (key → a short header with class, time and health
//! sample count, then the encoded envelope exactly as it will be
//! published, so an event keeps its boot id and sequence number across
//! restarts) and `meta` (the last sequence number, the next key, the drop
//! tally, the digest of the last state the broker acknowledged).

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};

use super::error::OutboxError;
use super::policy::{Class, Dropped, Entry, Plan};

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const LAST_SEQ: &str = "last_seq";
const NEXT_KEY: &str = "next_key";
const DROPPED_HEALTH: &str = "dropped_health_samples";
const DROPPED_EVENTS: &str = "dropped_events";
const DROPPED_OLDEST: &str = "dropped_oldest_ms";
const DROPPED_NEWEST: &str = "dropped_newest_ms";
const ACKED_STATE: &str = "acked_state_digest";

/// Header: class (1 byte), time (8), health samples (4).
const HEADER: usize = 13;

/// A record as stored: header, then the payload.
pub fn encode_record(class: Class, at_ms: u64, samples: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(class.to_byte());
    out.extend_from_slice(&at_ms.to_le_bytes());
    out.extend_from_slice(&samples.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The entry a stored record stands for, and its payload.
pub fn decode_record(bytes: &[u8]) -> Option<(Entry, &[u8])> {
    if bytes.len() < HEADER {
        return None;
    }
    let class = Class::from_byte(bytes[0])?;
    let at_ms = u64::from_le_bytes(bytes[1..9].try_into().ok()?);
    let samples = u32::from_le_bytes(bytes[9..13].try_into().ok()?);
    let entry = Entry {
        class,
        bytes: u32::try_from(bytes.len()).ok()?,
        at_ms,
        samples,
    };
    Some((entry, &bytes[HEADER..]))
}

/// What the file held when it was opened.
#[derive(Debug, Default)]
pub struct Loaded {
    pub last_seq: u64,
    pub next_key: u64,
    pub dropped: Dropped,
    pub entries: Vec<(u64, Entry)>,
    /// Sequence number taken over from an old `event-seq` file.
    pub migrated_seq: Option<u64>,
    /// The digest of the last state the broker acknowledged.
    pub acked_state: Option<u64>,
}

/// The numbers [`Store::restore`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub next_key: u64,
    pub last_seq: u64,
    pub dropped: Dropped,
    pub acked_state: Option<u64>,
}

pub struct Store {
    path: PathBuf,
    db: Database,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn boxed<E: Into<redb::Error>>(e: E) -> Box<redb::Error> {
    Box::new(e.into())
}

impl Store {
    /// Open (or create) the outbox at `path`. `legacy_seq`: the sequence
    /// file of agents before the outbox; its number is taken over once
    /// (if higher) and the file removed.
    pub fn open(path: &Path, legacy_seq: Option<&Path>) -> Result<(Self, Loaded), OutboxError> {
        let open = |e: Box<redb::Error>| OutboxError::Open {
            path: path.to_owned(),
            source: e,
        };
        let db = Database::create(path).map_err(|e| open(boxed(e)))?;
        let store = Self {
            path: path.to_owned(),
            db,
        };
        // Create both tables, so that reading never meets a missing one.
        let tx = store.db.begin_write().map_err(|e| open(boxed(e)))?;
        {
            tx.open_table(RECORDS).map_err(|e| open(boxed(e)))?;
            tx.open_table(META).map_err(|e| open(boxed(e)))?;
        }
        tx.commit().map_err(|e| open(boxed(e)))?;
        let mut loaded = store.load()?;
        if let Some(file) = legacy_seq {
            match std::fs::read_to_string(file) {
                Ok(text) => {
                    let n: u64 = text.trim().parse().map_err(|_| OutboxError::LegacySeq {
                        path: file.to_owned(),
                        reason: format!(
                            "{:?} is not a number",
                            text.chars().take(40).collect::<String>()
                        ),
                    })?;
                    if n > loaded.last_seq {
                        store.set_meta(&[(LAST_SEQ, n)])?;
                        loaded.last_seq = n;
                    }
                    loaded.migrated_seq = Some(n);
                    // Taken over (and committed): the file is not read again.
                    let _ = std::fs::remove_file(file);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(OutboxError::LegacySeq {
                        path: file.to_owned(),
                        reason: e.to_string(),
                    })
                }
            }
        }
        Ok((store, loaded))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_err(&self, e: impl Into<redb::Error>) -> OutboxError {
        OutboxError::Read {
            path: self.path.clone(),
            source: boxed(e),
        }
    }

    fn write_err(&self, e: impl Into<redb::Error>) -> OutboxError {
        OutboxError::Write {
            path: self.path.clone(),
            source: boxed(e),
        }
    }

    fn load(&self) -> Result<Loaded, OutboxError> {
        let tx = self.db.begin_read().map_err(|e| self.read_err(e))?;
        let meta = tx.open_table(META).map_err(|e| self.read_err(e))?;
        let get = |k: &str| -> Result<u64, OutboxError> {
            Ok(meta
                .get(k)
                .map_err(|e| self.read_err(e))?
                .map_or(0, |v| v.value()))
        };
        let mut loaded = Loaded {
            last_seq: get(LAST_SEQ)?,
            next_key: get(NEXT_KEY)?.max(1),
            dropped: Dropped {
                health_samples: get(DROPPED_HEALTH)?,
                events: get(DROPPED_EVENTS)?,
                oldest_ms: get(DROPPED_OLDEST)?,
                newest_ms: get(DROPPED_NEWEST)?,
            },
            entries: Vec::new(),
            migrated_seq: None,
            acked_state: meta
                .get(ACKED_STATE)
                .map_err(|e| self.read_err(e))?
                .map(|v| v.value()),
        };
        let records = tx.open_table(RECORDS).map_err(|e| self.read_err(e))?;
        for row in records.iter().map_err(|e| self.read_err(e))? {
            let (k, v) = row.map_err(|e| self.read_err(e))?;
            let key = k.value();
            let (entry, _) = decode_record(v.value()).ok_or(OutboxError::Corrupt {
                path: self.path.clone(),
                key,
            })?;
            loaded.entries.push((key, entry));
        }
        Ok(loaded)
    }

    fn set_meta(&self, pairs: &[(&str, u64)]) -> Result<(), OutboxError> {
        let tx = self.db.begin_write().map_err(|e| self.write_err(e))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| self.write_err(e))?;
            for (k, v) in pairs {
                meta.insert(*k, *v).map_err(|e| self.write_err(e))?;
            }
        }
        tx.commit().map_err(|e| self.write_err(e))
    }

    /// Commit `plan` in one transaction: the new record (if admitted), the
    /// records it pushes out, the drop tally, the next key, and `last_seq`
    /// when the record is an event. Durable when this returns.
    pub fn commit(
        &self,
        plan: &Plan,
        record: &[u8],
        last_seq: Option<u64>,
    ) -> Result<(), OutboxError> {
        let tx = self.db.begin_write().map_err(|e| self.write_err(e))?;
        {
            let mut records = tx.open_table(RECORDS).map_err(|e| self.write_err(e))?;
            for k in &plan.remove {
                records.remove(*k).map_err(|e| self.write_err(e))?;
            }
            if plan.admitted {
                records
                    .insert(plan.key, record)
                    .map_err(|e| self.write_err(e))?;
            }
            let mut meta = tx.open_table(META).map_err(|e| self.write_err(e))?;
            let d = plan.dropped;
            let mut pairs = vec![
                (NEXT_KEY, plan.key + 1),
                (DROPPED_HEALTH, d.health_samples),
                (DROPPED_EVENTS, d.events),
                (DROPPED_OLDEST, d.oldest_ms),
                (DROPPED_NEWEST, d.newest_ms),
            ];
            if let Some(seq) = last_seq {
                let old = meta
                    .get(LAST_SEQ)
                    .map_err(|e| self.write_err(e))?
                    .map_or(0, |v| v.value());
                pairs.push((LAST_SEQ, old.max(seq)));
            }
            for (k, v) in pairs {
                meta.insert(k, v).map_err(|e| self.write_err(e))?;
            }
        }
        tx.commit().map_err(|e| self.write_err(e))
    }

    /// The broker acknowledged the state with this digest.
    pub fn save_acked_state(&self, digest: u64) -> Result<(), OutboxError> {
        self.set_meta(&[(ACKED_STATE, digest)])
    }

    /// After the disk failed and works again: make the file hold exactly
    /// what the outbox holds, in one transaction. Records whose key is not
    /// `kept` leave (acknowledged or dropped meanwhile), `records` are
    /// written (those held in memory, in key order), and the numbers
    /// follow: the next key, the last sequence number (never lower than
    /// the file's), the drop tally, the acknowledged state.
    pub fn restore(
        &self,
        kept: impl Fn(u64) -> bool,
        records: &std::collections::BTreeMap<u64, Vec<u8>>,
        meta: &Restored,
    ) -> Result<(), OutboxError> {
        let tx = self.db.begin_write().map_err(|e| self.write_err(e))?;
        {
            let mut table = tx.open_table(RECORDS).map_err(|e| self.write_err(e))?;
            let mut gone = Vec::new();
            for row in table.iter().map_err(|e| self.write_err(e))? {
                let (k, _) = row.map_err(|e| self.write_err(e))?;
                if !kept(k.value()) {
                    gone.push(k.value());
                }
            }
            for k in gone {
                table.remove(k).map_err(|e| self.write_err(e))?;
            }
            for (k, v) in records {
                table
                    .insert(*k, v.as_slice())
                    .map_err(|e| self.write_err(e))?;
            }
            let mut table = tx.open_table(META).map_err(|e| self.write_err(e))?;
            let old_seq = table
                .get(LAST_SEQ)
                .map_err(|e| self.write_err(e))?
                .map_or(0, |v| v.value());
            let d = meta.dropped;
            let mut pairs = vec![
                (NEXT_KEY, meta.next_key),
                (LAST_SEQ, old_seq.max(meta.last_seq)),
                (DROPPED_HEALTH, d.health_samples),
                (DROPPED_EVENTS, d.events),
                (DROPPED_OLDEST, d.oldest_ms),
                (DROPPED_NEWEST, d.newest_ms),
            ];
            if let Some(digest) = meta.acked_state {
                pairs.push((ACKED_STATE, digest));
            }
            for (k, v) in pairs {
                table.insert(k, v).map_err(|e| self.write_err(e))?;
            }
        }
        tx.commit().map_err(|e| self.write_err(e))
    }

    /// The broker acknowledged `key`.
    pub fn remove(&self, key: u64) -> Result<(), OutboxError> {
        let tx = self.db.begin_write().map_err(|e| self.write_err(e))?;
        {
            let mut records = tx.open_table(RECORDS).map_err(|e| self.write_err(e))?;
            records.remove(key).map_err(|e| self.write_err(e))?;
        }
        tx.commit().map_err(|e| self.write_err(e))
    }

    /// The stored record `key` (header included).
    pub fn get(&self, key: u64) -> Result<Option<Vec<u8>>, OutboxError> {
        let tx = self.db.begin_read().map_err(|e| self.read_err(e))?;
        let records = tx.open_table(RECORDS).map_err(|e| self.read_err(e))?;
        Ok(records
            .get(key)
            .map_err(|e| self.read_err(e))?
            .map(|v| v.value().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(key: u64, record: &[u8], remove: Vec<u64>) -> Plan {
        Plan {
            key,
            entry: decode_record(record).unwrap().0,
            admitted: true,
            remove,
            dropped: Dropped::default(),
            over_limit: false,
        }
    }

    #[test]
    fn records_and_numbers_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.redb");
        {
            let (store, loaded) = Store::open(&path, None).unwrap();
            assert_eq!((loaded.last_seq, loaded.next_key), (0, 1));
            assert!(loaded.entries.is_empty());
            let a = encode_record(Class::Update, 5, 0, b"update");
            let b = encode_record(Class::Health, 6, 3, b"health");
            store.commit(&plan(1, &a, vec![]), &a, Some(7)).unwrap();
            store.commit(&plan(2, &b, vec![]), &b, None).unwrap();
            let mut p = plan(3, &a, vec![2]);
            p.dropped = Dropped {
                health_samples: 3,
                events: 0,
                oldest_ms: 6,
                newest_ms: 6,
            };
            store.commit(&p, &a, Some(8)).unwrap();
            store.remove(1).unwrap();
            assert_eq!(store.get(1).unwrap(), None);
            assert_eq!(store.get(3).unwrap(), Some(a.clone()));
        }
        let (store, loaded) = Store::open(&path, None).unwrap();
        assert_eq!((loaded.last_seq, loaded.next_key), (8, 4));
        assert_eq!(loaded.dropped.health_samples, 3);
        assert_eq!(loaded.entries.len(), 1);
        assert_eq!(loaded.entries[0].0, 3);
        let rec = store.get(3).unwrap().unwrap();
        let (entry, payload) = decode_record(&rec).unwrap();
        assert_eq!(payload, b"update");
        assert_eq!((entry.at_ms, entry.bytes as usize), (5, rec.len()));
    }

    #[test]
    fn an_old_sequence_file_is_taken_over_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.redb");
        let seq = dir.path().join("event-seq");
        std::fs::write(&seq, "41").unwrap();
        let (_, loaded) = Store::open(&path, Some(&seq)).unwrap();
        assert_eq!((loaded.last_seq, loaded.migrated_seq), (41, Some(41)));
        assert!(!seq.exists());
        let (_, loaded) = Store::open(&path, Some(&seq)).unwrap();
        assert_eq!((loaded.last_seq, loaded.migrated_seq), (41, None));
        std::fs::write(&seq, "garbage").unwrap();
        assert!(matches!(
            Store::open(&path, Some(&seq)),
            Err(OutboxError::LegacySeq { .. })
        ));
    }

    #[test]
    fn a_damaged_record_header_is_refused() {
        assert!(decode_record(&[0, 1, 2]).is_none());
        assert!(decode_record(&encode_record(Class::Kept, 1, 0, b"x")[..]).is_some());
        let mut bad = encode_record(Class::Kept, 1, 0, b"x");
        bad[0] = 77;
        assert!(decode_record(&bad).is_none());
    }
}
