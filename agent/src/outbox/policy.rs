//! What the outbox admits, drops, coalesces and sends first (pure).
//!
//! [`Policy`] knows every record by its key (the order it was committed
//! in), its [`Class`], its size and its time; it never sees the bytes. The
//! store ([`super::store`]) keeps the bytes; the runtime commits what a
//! [`Plan`] says and then [`Policy::apply`]s it.
//!
//! - Bounded: the records' bytes stay under `max_bytes`. When a new record
//!   does not fit, the oldest health records go first, then the oldest
//!   droppable events (boot, check recovered, error). Update results,
//!   check failures, command results (renewals among them) and the
//!   outbox's own reports are never dropped: if nothing else is left to
//!   drop, such an event is admitted over the bound (they are few and
//!   small), while a health record or a droppable event is refused.
//! - Drops are counted ([`Dropped`]) until they are reported.
//! - Drain order: update results, then check failures, then the rest in
//!   the order they were committed; at most `window` records (and about
//!   `window_bytes`) unacknowledged at once.
//! - [`Coalescer`]: health samples taken offline become one record per
//!   interval: the last sample, with min and max of each metric.

use std::collections::{BTreeMap, BTreeSet};

use fleet_protocol::{EventKind, Health, HealthWindow};

/// What a record is, which decides whether it may be dropped and when it
/// is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// An update result: sent first, never dropped.
    Update,
    /// A check failure: sent next, never dropped.
    CheckFailure,
    /// Never dropped: command results (renewals, enrolment self-tests, …),
    /// the outbox's drop reports, storage faults.
    Kept,
    /// Dropped after health when full: boot, check recovered, error, update
    /// progress (the update's result is kept).
    Droppable,
    /// A (coalesced) health record: the first to go.
    Health,
}

impl Class {
    pub fn of_event(kind: &EventKind) -> Self {
        match kind {
            EventKind::UpdateResult { .. } => Class::Update,
            EventKind::CheckFailed { .. } => Class::CheckFailure,
            EventKind::CommandResult { .. }
            | EventKind::OutboxDropped { .. }
            | EventKind::StorageFault { .. } => Class::Kept,
            EventKind::Boot { .. }
            | EventKind::CheckRecovered { .. }
            | EventKind::Error { .. }
            | EventKind::UpdateProgress { .. } => Class::Droppable,
        }
    }

    /// Drain rank: lower leaves first.
    fn rank(self) -> u8 {
        match self {
            Class::Update => 0,
            Class::CheckFailure => 1,
            Class::Kept | Class::Droppable | Class::Health => 2,
        }
    }

    pub fn to_byte(self) -> u8 {
        match self {
            Class::Update => 0,
            Class::CheckFailure => 1,
            Class::Kept => 2,
            Class::Droppable => 3,
            Class::Health => 4,
        }
    }

    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Class::Update,
            1 => Class::CheckFailure,
            2 => Class::Kept,
            3 => Class::Droppable,
            4 => Class::Health,
            _ => return None,
        })
    }
}

/// What the policy knows of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub class: Class,
    /// Its size as stored.
    pub bytes: u32,
    /// When it happened (an event's time, a health window's end).
    pub at_ms: u64,
    /// Health samples it stands for (0 for events).
    pub samples: u32,
}

/// Records dropped and not yet reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dropped {
    pub health_samples: u64,
    pub events: u64,
    pub oldest_ms: u64,
    pub newest_ms: u64,
}

impl Dropped {
    pub fn is_empty(&self) -> bool {
        self.health_samples == 0 && self.events == 0
    }

    fn add(&mut self, e: &Entry) {
        if e.class == Class::Health {
            self.health_samples += u64::from(e.samples.max(1));
        } else {
            self.events += 1;
        }
        self.oldest_ms = if self.is_first() {
            e.at_ms
        } else {
            self.oldest_ms.min(e.at_ms)
        };
        self.newest_ms = self.newest_ms.max(e.at_ms);
    }

    /// Fold in a tally kept elsewhere (a file that could not be read when
    /// the agent started, read once the disk works again).
    pub fn merge(&mut self, other: Dropped) {
        if other.is_empty() {
            return;
        }
        let first = self.is_first();
        self.health_samples += other.health_samples;
        self.events += other.events;
        self.oldest_ms = if first {
            other.oldest_ms
        } else {
            self.oldest_ms.min(other.oldest_ms)
        };
        self.newest_ms = self.newest_ms.max(other.newest_ms);
    }

    fn is_first(&self) -> bool {
        self.oldest_ms == 0 && self.newest_ms == 0
    }

    /// The event that reports the records dropped: health samples, and
    /// the events that may be dropped (boot, check recovered, error).
    pub fn report(&self) -> EventKind {
        EventKind::OutboxDropped {
            health_samples: self.health_samples,
            oldest_ms: self.oldest_ms,
            newest_ms: self.newest_ms,
            other_events: self.events,
        }
    }
}

/// How big the outbox may grow and how much may be unacknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    /// Records published and not yet acknowledged, at most.
    pub window: usize,
    /// Bytes published and not yet acknowledged, at most (one record is
    /// always allowed, whatever its size).
    pub window_bytes: u64,
}

/// What to commit for one new record: its key, the records it pushes out,
/// and the drop tally after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub key: u64,
    pub entry: Entry,
    /// False: the record is refused (full, and it may be dropped itself);
    /// nothing is written but the tally.
    pub admitted: bool,
    /// Records to delete in the same transaction.
    pub remove: Vec<u64>,
    /// The drop tally to store with it.
    pub dropped: Dropped,
    /// Admitted past `max_bytes` (only records that are never dropped).
    pub over_limit: bool,
}

/// The outbox's bookkeeping. Build it with [`Policy::new`] from what the
/// store holds.
#[derive(Debug)]
pub struct Policy {
    limits: Limits,
    entries: BTreeMap<u64, Entry>,
    /// Not yet handed to the broker, by (rank, key).
    unsent: BTreeSet<(u8, u64)>,
    inflight: BTreeSet<u64>,
    inflight_bytes: u64,
    used: u64,
    next_key: u64,
    dropped: Dropped,
}

impl Policy {
    /// `entries`: what the store holds; `next_key`: the key after the last
    /// one ever used; `dropped`: the stored tally.
    pub fn new(
        limits: Limits,
        entries: impl IntoIterator<Item = (u64, Entry)>,
        next_key: u64,
        dropped: Dropped,
    ) -> Self {
        let mut p = Self {
            limits,
            entries: BTreeMap::new(),
            unsent: BTreeSet::new(),
            inflight: BTreeSet::new(),
            inflight_bytes: 0,
            used: 0,
            next_key,
            dropped,
        };
        for (key, e) in entries {
            p.insert(key, e);
        }
        p.next_key = p
            .next_key
            .max(p.entries.keys().next_back().map_or(1, |k| k + 1));
        p
    }

    fn insert(&mut self, key: u64, e: Entry) {
        self.used += u64::from(e.bytes);
        self.unsent.insert((e.class.rank(), key));
        self.entries.insert(key, e);
    }

    fn remove(&mut self, key: u64) -> Option<Entry> {
        let e = self.entries.remove(&key)?;
        self.used -= u64::from(e.bytes);
        self.unsent.remove(&(e.class.rank(), key));
        if self.inflight.remove(&key) {
            self.inflight_bytes -= u64::from(e.bytes);
        }
        Some(e)
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held.
    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn next_key(&self) -> u64 {
        self.next_key
    }

    pub fn dropped(&self) -> Dropped {
        self.dropped
    }

    pub fn entry(&self, key: u64) -> Option<&Entry> {
        self.entries.get(&key)
    }

    /// The keys held, in commit order.
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries.keys().copied()
    }

    /// Take in a record the policy did not know (one found in a file that
    /// could not be opened at start): it gets the next key, after every
    /// record held, and counts toward the bound like any other.
    pub fn adopt(&mut self, entry: Entry) -> u64 {
        let key = self.next_key;
        self.insert(key, entry);
        self.next_key += 1;
        key
    }

    /// Fold a drop tally found in such a file into this one.
    pub fn merge_dropped(&mut self, other: Dropped) {
        self.dropped.merge(other);
    }

    /// Records of `class` held.
    pub fn count(&self, class: Class) -> usize {
        self.entries.values().filter(|e| e.class == class).count()
    }

    /// Decide where a new record goes and what it pushes out. Nothing
    /// changes until [`Policy::apply`].
    pub fn plan(&self, entry: Entry) -> Plan {
        let key = self.next_key;
        let mut dropped = self.dropped;
        let need = (self.used + u64::from(entry.bytes)).saturating_sub(self.limits.max_bytes);
        if need == 0 {
            return Plan {
                key,
                entry,
                admitted: true,
                remove: Vec::new(),
                dropped,
                over_limit: false,
            };
        }
        let mut remove = Vec::new();
        let mut freed = 0u64;
        for victim_class in [Class::Health, Class::Droppable] {
            if freed >= need {
                break;
            }
            // The new record never pushes out a more precious one.
            if victim_class == Class::Droppable && entry.class == Class::Health {
                break;
            }
            for (&k, e) in &self.entries {
                if freed >= need {
                    break;
                }
                if e.class == victim_class && !self.inflight.contains(&k) {
                    remove.push(k);
                    freed += u64::from(e.bytes);
                    dropped.add(e);
                }
            }
        }
        if freed >= need {
            return Plan {
                key,
                entry,
                admitted: true,
                remove,
                dropped,
                over_limit: false,
            };
        }
        match entry.class {
            Class::Health | Class::Droppable => {
                // Nothing it may push out is left: the new one goes instead,
                // and what was picked stays.
                let mut dropped = self.dropped;
                dropped.add(&entry);
                Plan {
                    key,
                    entry,
                    admitted: false,
                    remove: Vec::new(),
                    dropped,
                    over_limit: false,
                }
            }
            Class::Update | Class::CheckFailure | Class::Kept => Plan {
                key,
                entry,
                admitted: true,
                remove,
                dropped,
                over_limit: true,
            },
        }
    }

    /// The plan was committed: take it in.
    pub fn apply(&mut self, plan: &Plan) {
        for k in &plan.remove {
            self.remove(*k);
        }
        if plan.admitted {
            self.insert(plan.key, plan.entry);
        }
        self.next_key = self.next_key.max(plan.key + 1);
        self.dropped = plan.dropped;
    }

    /// The drop tally was reported (and the reset stored).
    pub fn drops_reported(&mut self) {
        self.dropped = Dropped::default();
    }

    /// The records to publish now, most important first, within the
    /// window; they count as in flight until acknowledged or the
    /// connection is lost.
    pub fn next_to_send(&mut self) -> Vec<u64> {
        let mut out = Vec::new();
        while self.inflight.len() < self.limits.window {
            let Some(&(rank, key)) = self.unsent.first() else {
                break;
            };
            let bytes = u64::from(self.entries[&key].bytes);
            if !self.inflight.is_empty() && self.inflight_bytes + bytes > self.limits.window_bytes {
                break;
            }
            self.unsent.remove(&(rank, key));
            self.inflight.insert(key);
            self.inflight_bytes += bytes;
            out.push(key);
        }
        out
    }

    /// A record handed out by [`Policy::next_to_send`] could not be
    /// published after all: it is sent again later.
    pub fn not_sent(&mut self, key: u64) {
        if let Some(e) = self.entries.get(&key) {
            if self.inflight.remove(&key) {
                self.inflight_bytes -= u64::from(e.bytes);
                self.unsent.insert((e.class.rank(), key));
            }
        }
    }

    /// The broker acknowledged `key`: it leaves. `None` if it was gone
    /// already (a duplicate acknowledgement).
    pub fn acked(&mut self, key: u64) -> Option<Entry> {
        self.remove(key)
    }

    /// The connection is gone: what was in flight is sent again on the
    /// next one.
    pub fn connection_lost(&mut self) {
        for key in std::mem::take(&mut self.inflight) {
            if let Some(e) = self.entries.get(&key) {
                self.unsent.insert((e.class.rank(), key));
            }
        }
        self.inflight_bytes = 0;
    }

    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }
}

/// Health samples taken while offline, coalesced per interval.
#[derive(Debug)]
pub struct Coalescer {
    interval_ms: u64,
    /// The interval being filled (its number) and the record so far.
    open: Option<(u64, Health)>,
}

impl Coalescer {
    pub fn new(interval_ms: u64) -> Self {
        Self {
            interval_ms: interval_ms.max(1),
            open: None,
        }
    }

    /// Add a sample taken at `at_ms`; returns the record of the interval it
    /// closed, if any.
    pub fn add(&mut self, sample: Health, at_ms: u64) -> Option<Health> {
        let bucket = at_ms / self.interval_ms;
        match &mut self.open {
            Some((b, acc)) if *b == bucket => {
                merge(acc, &sample, at_ms);
                None
            }
            _ => {
                let closed = self.open.take().map(|(_, h)| h);
                self.open = Some((bucket, start(sample, at_ms)));
                closed
            }
        }
    }

    /// The interval being filled, closed now (on connection, at shutdown).
    pub fn flush(&mut self) -> Option<Health> {
        self.open.take().map(|(_, h)| h)
    }

    /// Samples in the open interval.
    pub fn pending(&self) -> u32 {
        self.open
            .as_ref()
            .and_then(|(_, h)| h.window.as_ref())
            .map_or(0, |w| w.samples)
    }
}

/// A one-sample record.
pub fn start(mut sample: Health, at_ms: u64) -> Health {
    sample.window = Some(HealthWindow {
        from_ms: at_ms,
        to_ms: at_ms,
        samples: 1,
        cpu_pct: (sample.cpu_pct, sample.cpu_pct),
        mem_used_pct: (sample.mem_used_pct, sample.mem_used_pct),
        disk_free_pct: (sample.disk_free_pct, sample.disk_free_pct),
        temp_c: sample.temp_c.map(|t| (t, t)),
        battery_pct: sample.battery_pct.map(|b| (b, b)),
        disk_free_mb: (sample.disk_free_mb, sample.disk_free_mb),
    });
    sample
}

/// Fold `sample` (taken at `at_ms`) into `acc`: its values become the last,
/// min and max widen.
pub fn merge(acc: &mut Health, sample: &Health, at_ms: u64) {
    fn widen<T: Ord + Copy>(r: (T, T), v: T) -> (T, T) {
        (r.0.min(v), r.1.max(v))
    }
    fn widen_opt<T: Ord + Copy>(r: Option<(T, T)>, v: Option<T>) -> Option<(T, T)> {
        match (r, v) {
            (Some(r), Some(v)) => Some(widen(r, v)),
            (None, Some(v)) => Some((v, v)),
            (r, None) => r,
        }
    }
    let mut w = acc
        .window
        .take()
        .unwrap_or_else(|| start(acc.clone(), at_ms).window.unwrap_or_default());
    w.from_ms = w.from_ms.min(at_ms);
    w.to_ms = w.to_ms.max(at_ms);
    w.samples = w.samples.saturating_add(1);
    w.cpu_pct = widen(w.cpu_pct, sample.cpu_pct);
    w.mem_used_pct = widen(w.mem_used_pct, sample.mem_used_pct);
    w.disk_free_pct = widen(w.disk_free_pct, sample.disk_free_pct);
    w.temp_c = widen_opt(w.temp_c, sample.temp_c);
    w.battery_pct = widen_opt(w.battery_pct, sample.battery_pct);
    w.disk_free_mb = widen(w.disk_free_mb, sample.disk_free_mb);
    *acc = Health {
        window: Some(w),
        ..sample.clone()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_bytes: u64, window: usize) -> Limits {
        Limits {
            max_bytes,
            window,
            window_bytes: u64::MAX,
        }
    }

    fn e(class: Class, bytes: u32, at_ms: u64) -> Entry {
        Entry {
            class,
            bytes,
            at_ms,
            samples: u32::from(class == Class::Health) * 4,
        }
    }

    fn add(p: &mut Policy, entry: Entry) -> Plan {
        let plan = p.plan(entry);
        p.apply(&plan);
        plan
    }

    fn sample(cpu: u8, temp: Option<i16>) -> Health {
        Health {
            cpu_pct: cpu,
            mem_used_pct: 40,
            disk_free_pct: 60,
            temp_c: temp,
            battery_pct: None,
            uptime_s: 100,
            clock_offset_ms: None,
            disk_free_mb: 5000,
            window: None,
        }
    }

    #[test]
    fn admits_under_the_bound_and_keys_increase() {
        let mut p = Policy::new(limits(1000, 4), [], 1, Dropped::default());
        let a = add(&mut p, e(Class::Health, 100, 1));
        let b = add(&mut p, e(Class::Droppable, 100, 2));
        assert!(a.admitted && b.admitted && a.remove.is_empty());
        assert_eq!((a.key, b.key), (1, 2));
        assert_eq!((p.len(), p.used()), (2, 200));
    }

    #[test]
    fn full_drops_oldest_health_first_then_droppable_events_never_updates() {
        let mut p = Policy::new(limits(500, 4), [], 1, Dropped::default());
        add(&mut p, e(Class::Update, 100, 1));
        add(&mut p, e(Class::Droppable, 100, 2));
        add(&mut p, e(Class::Health, 100, 3));
        add(&mut p, e(Class::CheckFailure, 100, 4));
        add(&mut p, e(Class::Health, 100, 5));
        // Full: the next record pushes out the oldest health record.
        let plan = add(&mut p, e(Class::Kept, 100, 6));
        assert_eq!(plan.remove, vec![3]);
        assert_eq!(p.dropped().health_samples, 4);
        assert_eq!((p.dropped().oldest_ms, p.dropped().newest_ms), (3, 3));
        // Then the other health record, then the droppable event.
        let plan = add(&mut p, e(Class::Update, 200, 7));
        assert_eq!(plan.remove, vec![5, 2]);
        assert_eq!(p.dropped().health_samples, 8);
        assert_eq!(p.dropped().events, 1);
        assert_eq!((p.dropped().oldest_ms, p.dropped().newest_ms), (2, 5));
        // Only never-dropped records left: another update is still kept,
        // over the bound; health is refused and counted.
        let plan = add(&mut p, e(Class::Update, 100, 8));
        assert!(plan.admitted && plan.over_limit && plan.remove.is_empty());
        let plan = add(&mut p, e(Class::Health, 100, 9));
        assert!(!plan.admitted);
        assert_eq!(p.dropped().health_samples, 12);
        assert_eq!(p.count(Class::Update), 3);
        assert_eq!(p.count(Class::CheckFailure), 1);
        assert_eq!(p.count(Class::Health), 0);
        p.drops_reported();
        assert!(p.dropped().is_empty());
    }

    #[test]
    fn dropped_events_are_counted_apart_from_health_and_reported() {
        let mut p = Policy::new(limits(300, 4), [], 1, Dropped::default());
        add(&mut p, e(Class::Droppable, 100, 10)); // boot
        add(&mut p, e(Class::Droppable, 100, 20)); // error
        add(&mut p, e(Class::Health, 100, 30));
        // Two update results push out the health record, then the
        // oldest droppable event.
        add(&mut p, e(Class::Update, 100, 40));
        let plan = add(&mut p, e(Class::Update, 100, 50));
        assert_eq!(plan.remove, vec![1]);
        // Full of never-dropped records and one droppable event: a new
        // droppable event is refused, and counted.
        add(&mut p, e(Class::Update, 100, 55));
        let plan = add(&mut p, e(Class::Droppable, 100, 60));
        assert!(!plan.admitted);
        let d = p.dropped();
        assert_eq!((d.health_samples, d.events), (4, 3));
        assert_eq!((d.oldest_ms, d.newest_ms), (10, 60));
        assert_eq!(
            d.report(),
            EventKind::OutboxDropped {
                health_samples: 4,
                oldest_ms: 10,
                newest_ms: 60,
                other_events: 3,
            }
        );
    }

    #[test]
    fn adopted_records_come_after_those_held_and_tallies_merge() {
        let mut p = Policy::new(limits(1000, 8), [], 1, Dropped::default());
        add(&mut p, e(Class::Kept, 10, 50));
        assert_eq!(p.adopt(e(Class::Update, 10, 5)), 2);
        assert_eq!(p.keys().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(p.next_key(), 3);
        assert_eq!(p.used(), 20);
        assert_eq!(p.next_to_send(), vec![2, 1], "an update result still leads");
        p.merge_dropped(Dropped {
            health_samples: 4,
            events: 1,
            oldest_ms: 7,
            newest_ms: 9,
        });
        p.merge_dropped(Dropped {
            health_samples: 2,
            events: 0,
            oldest_ms: 3,
            newest_ms: 8,
        });
        assert_eq!(
            p.dropped(),
            Dropped {
                health_samples: 6,
                events: 1,
                oldest_ms: 3,
                newest_ms: 9
            }
        );
    }

    #[test]
    fn health_never_pushes_out_an_event() {
        let mut p = Policy::new(limits(200, 4), [], 1, Dropped::default());
        add(&mut p, e(Class::Droppable, 100, 1));
        add(&mut p, e(Class::Health, 100, 2));
        let plan = add(&mut p, e(Class::Health, 150, 3));
        // Pushing out the old health record is not enough; the event stays
        // and the new health record is refused instead.
        assert!(!plan.admitted && plan.remove.is_empty());
        assert_eq!(p.count(Class::Droppable), 1);
        assert_eq!(p.count(Class::Health), 1);
    }

    #[test]
    fn drains_updates_then_check_failures_then_the_rest_in_order_within_the_window() {
        let mut p = Policy::new(limits(10_000, 2), [], 1, Dropped::default());
        add(&mut p, e(Class::Health, 10, 1)); // 1
        add(&mut p, e(Class::Droppable, 10, 2)); // 2
        add(&mut p, e(Class::CheckFailure, 10, 3)); // 3
        add(&mut p, e(Class::Kept, 10, 4)); // 4
        add(&mut p, e(Class::Update, 10, 5)); // 5
        assert_eq!(p.next_to_send(), vec![5, 3]);
        // The window is full until something is acknowledged.
        assert_eq!(p.next_to_send(), Vec::<u64>::new());
        assert!(p.acked(5).is_some());
        assert!(p.acked(5).is_none(), "a duplicate ack is ignored");
        assert_eq!(p.next_to_send(), vec![1]);
        // Lost connection: in flight goes back, in its place.
        p.connection_lost();
        assert_eq!(p.inflight(), 0);
        assert_eq!(p.next_to_send(), vec![3, 1]);
        p.not_sent(1);
        assert!(p.acked(3).is_some());
        assert_eq!(p.next_to_send(), vec![1, 2]);
        assert!(p.acked(1).is_some() && p.acked(2).is_some());
        assert_eq!(p.next_to_send(), vec![4]);
    }

    #[test]
    fn window_bytes_bound_the_flight_but_one_record_always_goes() {
        let mut p = Policy::new(
            Limits {
                max_bytes: 100_000,
                window: 8,
                window_bytes: 1000,
            },
            [],
            1,
            Dropped::default(),
        );
        add(&mut p, e(Class::Kept, 4000, 1));
        add(&mut p, e(Class::Kept, 600, 2));
        add(&mut p, e(Class::Kept, 600, 3));
        assert_eq!(p.next_to_send(), vec![1]);
        p.acked(1);
        assert_eq!(p.next_to_send(), vec![2]);
    }

    #[test]
    fn in_flight_records_are_not_dropped() {
        let mut p = Policy::new(limits(200, 4), [], 1, Dropped::default());
        add(&mut p, e(Class::Health, 100, 1));
        add(&mut p, e(Class::Health, 100, 2));
        assert_eq!(p.next_to_send(), vec![1, 2]);
        let plan = add(&mut p, e(Class::Health, 100, 3));
        assert!(!plan.admitted);
    }

    #[test]
    fn rebuilt_from_the_store_continues_keys_and_tally() {
        let dropped = Dropped {
            health_samples: 7,
            events: 0,
            oldest_ms: 10,
            newest_ms: 20,
        };
        let mut p = Policy::new(
            limits(1000, 4),
            [(4, e(Class::Kept, 10, 1)), (9, e(Class::Update, 10, 2))],
            3,
            dropped,
        );
        assert_eq!(p.next_key(), 10);
        assert_eq!(p.dropped(), dropped);
        assert_eq!(p.next_to_send(), vec![9, 4]);
        assert_eq!(
            dropped.report(),
            EventKind::OutboxDropped {
                health_samples: 7,
                oldest_ms: 10,
                newest_ms: 20,
                other_events: 0,
            }
        );
    }

    #[test]
    fn classes_of_events_and_their_bytes_round_trip() {
        use fleet_protocol::Version;
        let v = Version::parse("1.0.0").unwrap();
        let cases = [
            (
                EventKind::UpdateResult {
                    version: v.clone(),
                    ok: true,
                    message: String::new(),
                    outcome: fleet_protocol::UpdateOutcome::Committed,
                    artifact: fleet_protocol::ArtifactKind::Firmware,
                    retrying: false,
                },
                Class::Update,
            ),
            (
                EventKind::CheckFailed {
                    name: "p".into(),
                    message: String::new(),
                },
                Class::CheckFailure,
            ),
            (
                EventKind::CommandResult {
                    id: "c".into(),
                    ok: true,
                    message: String::new(),
                },
                Class::Kept,
            ),
            (EventKind::Boot { firmware: v }, Class::Droppable),
        ];
        for (kind, class) in cases {
            assert_eq!(Class::of_event(&kind), class, "{kind:?}");
        }
        for c in [
            Class::Update,
            Class::CheckFailure,
            Class::Kept,
            Class::Droppable,
            Class::Health,
        ] {
            assert_eq!(Class::from_byte(c.to_byte()), Some(c));
        }
        assert_eq!(Class::from_byte(9), None);
    }

    #[test]
    fn offline_samples_become_one_record_per_interval_with_min_max_last() {
        let mut c = Coalescer::new(60_000);
        assert_eq!(c.add(sample(10, Some(40)), 0), None);
        assert_eq!(c.add(sample(90, Some(30)), 15_000), None);
        assert_eq!(c.add(sample(20, None), 30_000), None);
        assert_eq!(c.pending(), 3);
        // The next interval closes the first.
        let first = c.add(sample(5, Some(50)), 61_000).unwrap();
        assert_eq!(first.cpu_pct, 20, "the last sample's values");
        assert_eq!(first.temp_c, None);
        let w = first.window.unwrap();
        assert_eq!((w.from_ms, w.to_ms, w.samples), (0, 30_000, 3));
        assert_eq!(w.cpu_pct, (10, 90));
        assert_eq!(w.temp_c, Some((30, 40)));
        assert_eq!(w.disk_free_mb, (5000, 5000));
        let second = c.flush().unwrap();
        assert_eq!(second.window.unwrap().samples, 1);
        assert_eq!(c.flush(), None);
    }

    #[test]
    fn a_week_offline_is_a_record_per_interval() {
        let mut c = Coalescer::new(3_600_000);
        let mut records = 0;
        let mut samples = 0;
        for i in 0..(7 * 24 * 60) {
            if let Some(h) = c.add(sample((i % 100) as u8, Some(40)), i * 60_000) {
                records += 1;
                samples += h.window.unwrap().samples;
            }
        }
        let last = c.flush().unwrap();
        records += 1;
        samples += last.window.unwrap().samples;
        assert_eq!(records, 7 * 24);
        assert_eq!(samples, 7 * 24 * 60);
    }
}
