//! The agent's durable outbox: every event is committed to disk before it
//! is published and leaves only once the broker acknowledged it (its
//! PUBACK); health samples taken offline wait there too, coalesced.
//!
//! - [`policy`] (pure): admit, drop, coalesce, the drain order and the
//!   in-flight window. Unit-tested without a disk.
//! - [`store`]: the redb file behind it (`outbox.redb` in the state
//!   directory): records, the last sequence number, the drop tally.
//! - [`disk`] (pure): whether records go to the file or to memory, and when
//!   a failing file is tried again.
//! - [`Outbox`] (this file): the three together. When the disk fails (full,
//!   read-only, damaged) records are kept in memory, still bounded by the
//!   policy, and the fault is told to the caller, who reports it; the agent
//!   keeps running. The file is reopened every `retry` until it works, and
//!   then takes the records held in memory, in order, with the numbers.
//!
//! The outbox's file also keeps the digest of the last state the broker
//! acknowledged, so an unchanged state is not sent again after a restart.

pub mod disk;
mod error;
pub mod policy;
pub mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use fleet_protocol::{DeviceId, Envelope, Event, EventKind, Health, Payload, TopicKind};
use tracing::{debug, info, warn};

pub use disk::{Disk, DiskAction, DiskInput};
pub use error::OutboxError;
pub use policy::{Class, Coalescer, Dropped, Entry, Limits, Plan, Policy};
pub use store::Store;

/// The outbox's own config (from the agent's `[outbox]` and link profile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxConfig {
    /// The redb file; `None` keeps everything in memory (the simulator).
    pub path: Option<PathBuf>,
    /// The sequence file of agents before the outbox, taken over once.
    pub legacy_seq: Option<PathBuf>,
    pub limits: Limits,
    /// Health samples taken offline are coalesced per this interval.
    pub coalesce: Duration,
    /// The last sequence number when there is no file (memory only).
    pub start_seq: u64,
    /// Between attempts to use a failing file again.
    pub retry: Duration,
}

/// Where a new record went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Committed: durable on disk (or, for an outbox without a file, kept).
    Committed,
    /// Kept in memory only: the disk failed (the reason).
    Memory(String),
    /// Not kept: the outbox is full and the record may be dropped.
    Refused,
}

/// One record to publish: QoS 1 on `kind`'s topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub key: u64,
    pub kind: TopicKind,
    pub payload: Vec<u8>,
}

/// The outbox: policy, coalescer, file, and the records kept in memory
/// while the file cannot be written.
#[derive(Debug)]
pub struct Outbox {
    device: DeviceId,
    policy: Policy,
    coalescer: Coalescer,
    path: Option<PathBuf>,
    legacy_seq: Option<PathBuf>,
    /// Open while the file works; `None` while records go to memory (or
    /// always, without a path).
    store: Option<Store>,
    /// The policy was built from the file, so its keys are the file's.
    /// False when the file could not be opened at start: its records are
    /// taken in (under new keys) once it can.
    file_loaded: bool,
    disk: Disk,
    /// Records not in the file: all of them while the disk fails.
    memory: BTreeMap<u64, Vec<u8>>,
    last_seq: u64,
    /// The digest of the last state the broker acknowledged.
    acked_state: Option<u64>,
}

impl Outbox {
    /// Open the file (or keep memory only). A file that cannot be opened
    /// (damaged, read-only disk) is moved aside once and a new one made;
    /// if that fails too the outbox lives in memory and the second value
    /// says why, for the caller to report.
    pub fn open(device: DeviceId, cfg: &OutboxConfig) -> (Self, Option<String>) {
        let empty = store::Loaded {
            last_seq: cfg.start_seq,
            next_key: 1,
            ..store::Loaded::default()
        };
        let (store, loaded, fault) = match &cfg.path {
            None => (None, empty, None),
            Some(path) => match Store::open(path, cfg.legacy_seq.as_deref()) {
                Ok((s, l)) => (Some(s), l, None),
                Err(first) => {
                    warn!(error = %first, "the outbox cannot be opened; moving it aside and starting a new one");
                    let aside = path.with_extension(format!("damaged-{}", crate::unix_ms()));
                    let retried = std::fs::rename(path, &aside)
                        .map_err(|e| e.to_string())
                        .and_then(|()| {
                            Store::open(path, cfg.legacy_seq.as_deref()).map_err(|e| e.to_string())
                        });
                    match retried {
                        Ok((s, l)) => (
                            Some(s),
                            l,
                            Some(format!("{first}; kept aside as {}", aside.display())),
                        ),
                        Err(second) => {
                            // A new file cannot be made either (a full or
                            // read-only disk, not a damaged file): put the
                            // old one back, to be taken in once it opens.
                            if aside.exists() {
                                let _ = std::fs::rename(&aside, path);
                            }
                            (None, empty, Some(format!("{first}; {second}")))
                        }
                    }
                }
            },
        };
        if let Some(n) = loaded.migrated_seq {
            info!(
                seq = n,
                "event sequence number taken over from the old sequence file"
            );
        }
        let policy = Policy::new(cfg.limits, loaded.entries, loaded.next_key, loaded.dropped);
        info!(
            records = policy.len(),
            bytes = policy.used(),
            last_seq = loaded.last_seq,
            file = ?cfg.path,
            "outbox opened"
        );
        let mut disk = Disk::new(u64::try_from(cfg.retry.as_millis()).unwrap_or(u64::MAX));
        if let Some(why) = &fault {
            if store.is_none() {
                disk.on(DiskInput::Failed(why.clone()), crate::unix_ms());
            }
        }
        let outbox = Self {
            device,
            policy,
            coalescer: Coalescer::new(u64::try_from(cfg.coalesce.as_millis()).unwrap_or(u64::MAX)),
            path: cfg.path.clone(),
            legacy_seq: cfg.legacy_seq.clone(),
            file_loaded: store.is_some(),
            store,
            disk,
            memory: BTreeMap::new(),
            last_seq: loaded.last_seq,
            acked_state: loaded.acked_state,
        };
        (outbox, fault)
    }

    /// The last event sequence number committed.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Why the disk is not used now, if it is not.
    pub fn fault(&self) -> Option<&str> {
        self.disk.fault()
    }

    /// Records held in memory (not in the file).
    pub fn in_memory(&self) -> usize {
        self.memory.len()
    }

    /// The digest of the last state the broker acknowledged (read from the
    /// file at start).
    pub fn acked_state(&self) -> Option<u64> {
        self.acked_state
    }

    /// The broker acknowledged the state with this digest: kept in the
    /// file (in memory while the disk fails, written once it works).
    pub fn state_acknowledged(&mut self, digest: u64) {
        self.acked_state = Some(digest);
        let saved = match &self.store {
            Some(store) => store.save_acked_state(digest).map_err(|e| e.to_string()),
            None => Ok(()),
        };
        if let Err(why) = saved {
            self.fail(why);
        }
    }

    /// How long until the failing file is tried again (`None`: it works).
    pub fn retry_in(&self, now_ms: u64) -> Option<Duration> {
        self.disk
            .next_try_ms()
            .map(|at| Duration::from_millis(at.saturating_sub(now_ms)))
    }

    /// Time passed: while the disk fails, reopen the file when due and, if
    /// it works, write the records held in memory to it. Returns what the
    /// fault was when the disk works again.
    pub fn retry_disk(&mut self, now_ms: u64) -> Option<String> {
        if !self
            .disk
            .on(DiskInput::Tick, now_ms)
            .contains(&DiskAction::Retry)
        {
            return None;
        }
        let moved = self.memory.len();
        let result = self.reopen();
        if let Err(why) = &result {
            debug!(error = %why, "the outbox's disk still fails");
        }
        self.disk
            .on(DiskInput::Retried(result), now_ms)
            .into_iter()
            .find_map(|a| match a {
                DiskAction::Recovered {
                    was,
                    after_ms,
                    tries,
                } => {
                    info!(
                        was = %was,
                        after_ms,
                        tries,
                        moved,
                        records = self.policy.len(),
                        "the outbox's disk works again; the records held in memory are on it"
                    );
                    Some(was)
                }
                _ => None,
            })
    }

    /// Open the file again and make it hold what the outbox holds (see
    /// [`Store::restore`]). A file that could not be opened at start has
    /// its records taken in, after those held (they were never sent).
    fn reopen(&mut self) -> Result<(), String> {
        let path = self.path.clone().ok_or("the outbox has no file")?;
        // redb keeps refusing writes after an I/O error until the database
        // is opened again, and it cannot be open twice.
        self.store = None;
        let (store, loaded) =
            Store::open(&path, self.legacy_seq.as_deref()).map_err(|e| e.to_string())?;
        let mut records = self.memory.clone();
        let mut adopted = Vec::new();
        let mut dropped = self.policy.dropped();
        let mut acked_state = self.acked_state;
        if !self.file_loaded {
            for (key, (old, entry)) in (self.policy.next_key()..).zip(&loaded.entries) {
                let bytes = store
                    .get(*old)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("record {old} went missing"))?;
                records.insert(key, bytes);
                adopted.push(*entry);
            }
            dropped.merge(loaded.dropped);
            acked_state = acked_state.or(loaded.acked_state);
        }
        let next_key = self.policy.next_key() + adopted.len() as u64;
        let last_seq = self.last_seq.max(loaded.last_seq);
        let policy = &self.policy;
        store
            .restore(
                |k| policy.entry(k).is_some(),
                &records,
                &store::Restored {
                    next_key,
                    last_seq,
                    dropped,
                    acked_state,
                },
            )
            .map_err(|e| e.to_string())?;
        // Written: take it in.
        for entry in adopted {
            self.policy.adopt(entry);
        }
        if !self.file_loaded {
            self.policy.merge_dropped(loaded.dropped);
            if !loaded.entries.is_empty() {
                info!(
                    records = loaded.entries.len(),
                    "records of an earlier run found in the outbox's file; they are sent too"
                );
            }
        }
        self.acked_state = acked_state;
        self.last_seq = last_seq;
        self.memory.clear();
        self.file_loaded = true;
        self.store = Some(store);
        Ok(())
    }

    /// What a failed write does, without a disk that fails on cue.
    #[cfg(test)]
    pub(crate) fn fail_for_test(&mut self, why: &str) {
        self.fail(why.to_owned());
    }

    /// The file failed (`why`): keep every record in memory from now on,
    /// reading those in the file while it can still be read, and close it
    /// (it is reopened when due).
    fn fail(&mut self, why: String) {
        if let Some(store) = self.store.take() {
            let on_disk: Vec<u64> = self
                .policy
                .keys()
                .filter(|k| !self.memory.contains_key(k))
                .collect();
            let mut unread = 0usize;
            for key in on_disk {
                match store.get(key) {
                    Ok(Some(record)) => {
                        self.memory.insert(key, record);
                    }
                    _ => unread += 1,
                }
            }
            if unread > 0 {
                // They stay in the file and are sent once it works again.
                warn!(
                    unread,
                    "records in the outbox's file cannot be read now; they wait for the disk"
                );
            }
        }
        for action in self.disk.on(DiskInput::Failed(why), crate::unix_ms()) {
            if let DiskAction::Report(reason) = action {
                warn!(error = %reason, "the outbox cannot be written; keeping records in memory until the disk works again");
            }
        }
    }

    /// Commit `event` (numbered by the core, with its boot id) before it
    /// is published. An outbox drop report resets the tally it reports.
    pub fn add_event(&mut self, event: Event, sent_at_ms: u64) -> Stored {
        let class = Class::of_event(&event.kind);
        let (seq, at_ms, boot) = (event.seq, event.at_ms, event.boot.unwrap_or(0));
        if matches!(event.kind, EventKind::OutboxDropped { .. }) {
            self.policy.drops_reported();
        }
        let envelope = Envelope::new(self.device.clone(), sent_at_ms, Payload::Event(event));
        let stored = self.add(class, at_ms, 0, &envelope, Some(seq));
        self.last_seq = self.last_seq.max(seq);
        if stored == Stored::Committed {
            // Acknowledged to the caller: durable from here on (the power
            // cut test counts these lines).
            debug!(
                seq,
                boot,
                durable = self.store.is_some(),
                "event committed to the outbox"
            );
        }
        stored
    }

    /// A health sample taken while offline: coalesced; a record is
    /// committed when its interval closes.
    pub fn add_health_sample(&mut self, sample: Health, at_ms: u64) -> Option<Stored> {
        let closed = self.coalescer.add(sample, at_ms)?;
        Some(self.add_health(closed))
    }

    /// Commit the interval being filled now (on connection, at shutdown).
    pub fn flush_health(&mut self) -> Option<Stored> {
        let open = self.coalescer.flush()?;
        Some(self.add_health(open))
    }

    fn add_health(&mut self, record: Health) -> Stored {
        let (at_ms, samples) = record
            .window
            .as_ref()
            .map_or((0, 1), |w| (w.to_ms, w.samples));
        let envelope = Envelope::new(self.device.clone(), at_ms, Payload::Health(record));
        self.add(Class::Health, at_ms, samples, &envelope, None)
    }

    fn add(
        &mut self,
        class: Class,
        at_ms: u64,
        samples: u32,
        envelope: &Envelope,
        seq: Option<u64>,
    ) -> Stored {
        let payload = match envelope.to_cbor() {
            Ok(p) => p,
            Err(e) => {
                // Over the topic's limit: it could never be published.
                warn!(error = %e, "not keeping a message that is over its size limit");
                return Stored::Refused;
            }
        };
        let record = store::encode_record(class, at_ms, samples, &payload);
        let entry = Entry {
            class,
            bytes: u32::try_from(record.len()).unwrap_or(u32::MAX),
            at_ms,
            samples,
        };
        let plan = self.policy.plan(entry);
        let before = self.policy.dropped();
        if plan.dropped != before && !plan.dropped.is_empty() {
            let health = plan.dropped.health_samples
                - before.health_samples.min(plan.dropped.health_samples);
            let events = plan.dropped.events - before.events.min(plan.dropped.events);
            warn!(
                health_samples = health,
                events,
                held_bytes = self.policy.used(),
                "outbox full: dropped the oldest health samples"
            );
        }
        if plan.over_limit {
            warn!(
                bytes = self.policy.used(),
                "outbox over its size limit: keeping a record that is never dropped"
            );
        }
        let written = self
            .store
            .as_ref()
            .map(|store| store.commit(&plan, &record, seq).map_err(|e| e.to_string()));
        let committed = match written {
            Some(Ok(())) => true,
            Some(Err(why)) => {
                self.fail(why);
                false
            }
            None => false,
        };
        // In memory: by design (no file), or while the disk fails. What the
        // plan pushes out of the file leaves it when the disk works again.
        for k in &plan.remove {
            self.memory.remove(k);
        }
        if !committed && plan.admitted {
            self.memory.insert(plan.key, record);
        }
        let stored = if !plan.admitted {
            Stored::Refused
        } else if committed || self.path.is_none() {
            Stored::Committed
        } else {
            Stored::Memory(self.fault().unwrap_or("the disk failed").to_owned())
        };
        self.policy.apply(&plan);
        stored
    }

    /// The records to publish now, most important first, within the
    /// window. Each leaves only through [`Outbox::acked`].
    pub fn next_to_send(&mut self) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for key in self.policy.next_to_send() {
            let record = match self.memory.get(&key) {
                Some(r) => Ok(Some(r.clone())),
                None => match &self.store {
                    Some(s) => s.get(key),
                    None if self.path.is_some() => {
                        // In the file, which cannot be read while the disk
                        // fails: it waits.
                        self.policy.not_sent(key);
                        continue;
                    }
                    None => Ok(None),
                },
            };
            let decoded = match &record {
                Ok(Some(r)) => store::decode_record(r),
                _ => None,
            };
            match decoded {
                Some((entry, payload)) => out.push(Outgoing {
                    key,
                    kind: if entry.class == Class::Health {
                        TopicKind::Health
                    } else {
                        TopicKind::Events
                    },
                    payload: payload.to_vec(),
                }),
                None => {
                    warn!(key, result = ?record.err(), "an outbox record cannot be read; it is dropped");
                    self.forget(key);
                }
            }
        }
        out
    }

    /// A record from [`Outbox::next_to_send`] was not handed to the broker.
    pub fn not_sent(&mut self, key: u64) {
        self.policy.not_sent(key);
    }

    /// The broker acknowledged `key`: it leaves the outbox.
    pub fn acked(&mut self, key: u64) {
        if self.policy.acked(key).is_some() {
            self.forget_bytes(key);
        }
    }

    fn forget(&mut self, key: u64) {
        self.policy.acked(key);
        self.forget_bytes(key);
    }

    fn forget_bytes(&mut self, key: u64) {
        if self.memory.remove(&key).is_some() {
            return;
        }
        let removed = match &self.store {
            Some(store) => store.remove(key).map_err(|e| e.to_string()),
            // While the disk fails it stays in the file; it leaves when
            // the file is made to hold what the outbox holds again.
            None => Ok(()),
        };
        if let Err(why) = removed {
            // If the agent restarts before the disk works, it is sent
            // again: a duplicate the controller recognises by (boot, seq).
            warn!(key, error = %why, "cannot remove an acknowledged record from the outbox");
            self.fail(why);
        }
    }

    /// The connection is gone: what was in flight is sent again.
    pub fn connection_lost(&mut self) {
        self.policy.connection_lost();
    }

    /// Drops not yet reported (the caller numbers the report and adds it
    /// with [`Outbox::add_event`], which resets the tally).
    pub fn unreported_drops(&self) -> Option<Dropped> {
        let d = self.policy.dropped();
        (!d.is_empty()).then_some(d)
    }
}

#[cfg(test)]
mod tests;
