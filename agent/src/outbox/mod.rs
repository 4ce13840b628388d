//! The agent's durable outbox: every event is committed to disk before it
//! is published and leaves only once the broker acknowledged it (its
//! PUBACK); health samples taken offline wait there too, coalesced.
//!
//! - [`policy`] (pure): admit, drop, coalesce, the drain order and the
//!   in-flight window. Unit-tested without a disk.
//! - [`store`]: the redb file behind it (`outbox.redb` in the state
//!   directory): records, the last sequence number, the drop tally.
//! - [`Outbox`] (this file): the two together, and what happens when the
//!   disk fails (full, read-only, damaged): records are then kept in memory
//!   and the fault is told to the caller, who reports it; the agent keeps
//!   running.

mod error;
pub mod policy;
pub mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use fleet_protocol::{DeviceId, Envelope, Event, EventKind, Health, Payload, TopicKind};
use tracing::{debug, info, warn};

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
    store: Option<Store>,
    memory: HashMap<u64, Vec<u8>>,
    last_seq: u64,
    /// The disk failed and has not worked since.
    fault: Option<String>,
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
                        Err(second) => (None, empty, Some(format!("{first}; {second}"))),
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
        let outbox = Self {
            device,
            policy,
            coalescer: Coalescer::new(u64::try_from(cfg.coalesce.as_millis()).unwrap_or(u64::MAX)),
            store,
            memory: HashMap::new(),
            last_seq: loaded.last_seq,
            fault: fault.clone(),
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
        self.fault.as_deref()
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
        let result = match &self.store {
            Some(store) => store.commit(&plan, &record, seq).map_err(|e| e.to_string()),
            None if self.fault.is_some() => Err(self.fault.clone().unwrap_or_default()),
            None => Ok(()), // memory by design
        };
        let stored = match result {
            Ok(()) => {
                if self.store.is_some() {
                    if let Some(why) = self.fault.take() {
                        info!(was = %why, "the outbox's disk works again");
                    }
                }
                for k in &plan.remove {
                    self.memory.remove(k);
                }
                if self.store.is_none() && plan.admitted {
                    self.memory.insert(plan.key, record);
                }
                if plan.admitted {
                    Stored::Committed
                } else {
                    Stored::Refused
                }
            }
            Err(why) => {
                // The disk failed: keep it in memory, drop what the plan
                // pushes out (those on disk stay there until it works).
                for k in &plan.remove {
                    self.memory.remove(k);
                }
                if plan.admitted {
                    self.memory.insert(plan.key, record);
                }
                if self.fault.is_none() {
                    warn!(error = %why, "the outbox cannot be written; keeping records in memory");
                }
                self.fault = Some(why.clone());
                if plan.admitted {
                    Stored::Memory(why)
                } else {
                    Stored::Refused
                }
            }
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
        if let Some(store) = &self.store {
            if let Err(e) = store.remove(key) {
                // It stays on disk and is sent again after a restart: a
                // duplicate the controller recognises by (boot, seq).
                warn!(key, error = %e, "cannot remove an acknowledged record from the outbox");
            }
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
