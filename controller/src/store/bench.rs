//! The store bench (`fleet-controller bench-store`, driven by `fleet-sim
//! bench store`): the real writer ([`spawn_writer`]) on a real SQLite file
//! with the real schema, fed what the ingest hands it (a status per
//! message, the event of an `events` message, an after-commit
//! acknowledgement per QoS 1 message), as fast as it accepts them through a
//! bounded queue like the ingest's.
//!
//! Two measurements:
//! - [`write_rate`]: messages committed per second for a fixed time (the
//!   drain after the last message is counted in the time);
//! - [`day_size`]: the bytes on disk that one simulated day of the field's
//!   traffic adds, after a WAL checkpoint, at the rates of [`DayRates`].
//!
//! The message mix and the rates are plain functions, unit-tested; the
//! figures are printed, never asserted.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_protocol::{
    CheckResult, DeviceId, Event, EventKind, Health, Model, PresenceStatus, ProvinceCode, State,
    UpdateStatus, Version,
};
use serde::Serialize;
use tokio::sync::mpsc;

use super::{spawn_writer, Store, StoreError, WriteOp, WriterConfig};
use crate::domain::fleet::{Registration, Status};
use crate::domain::lifecycle::Lifecycle;

/// What one simulated message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Health,
    State,
    Presence,
    Event,
}

/// The write-rate mix: of every 10 messages, 8 health, 1 state, 1 event
/// (heavier on states and events than the field's steady state, where
/// health is over 99 %: a reconnect storm's mix).
pub fn rate_mix(i: u64) -> Kind {
    match i % 10 {
        8 => Kind::State,
        9 => Kind::Event,
        _ => Kind::Health,
    }
}

/// What one device sends in a day, as assumed for the size on disk.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct DayRates {
    /// Health reports (every 60 s: 1,440 a day). Each rewrites the
    /// device's one status row in place, so only `health_written` of them
    /// are written here: more would rewrite the same row again.
    pub health: u32,
    pub health_written: u32,
    /// State changes (connect, check changes, config).
    pub states: u32,
    /// Presence changes (one reconnection: offline, online).
    pub presence: u32,
    /// Events (boot, check failed/recovered, errors), one boot among them:
    /// each agent start is a new event stream.
    pub events: u32,
}

impl Default for DayRates {
    fn default() -> Self {
        Self {
            health: 1_440,
            health_written: 24,
            states: 4,
            presence: 2,
            events: 12,
        }
    }
}

impl DayRates {
    /// The day's messages of one device, in order.
    pub fn day(&self) -> Vec<Kind> {
        let mut out = Vec::new();
        let per = |n: u32, k: Kind| std::iter::repeat_n(k, n as usize);
        out.extend(per(self.presence, Kind::Presence));
        out.extend(per(self.states, Kind::State));
        out.extend(per(self.events, Kind::Event));
        out.extend(per(self.health_written, Kind::Health));
        // Interleave: spread each kind over the day.
        let n = out.len();
        let mut spread: Vec<(usize, Kind)> = Vec::with_capacity(n);
        let mut seen = std::collections::HashMap::<u8, usize>::new();
        let totals = |k: Kind| match k {
            Kind::Presence => self.presence,
            Kind::State => self.states,
            Kind::Event => self.events,
            Kind::Health => self.health_written,
        } as usize;
        for k in out {
            let i = seen.entry(k as u8).or_default();
            spread.push(((*i * n) / totals(k).max(1), k));
            *i += 1;
        }
        spread.sort_by_key(|(at, _)| *at);
        spread.into_iter().map(|(_, k)| k).collect()
    }
}

/// The write-rate figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RateResult {
    pub devices: usize,
    pub batch_max: usize,
    pub batch_delay_ms: u64,
    pub write_queue: usize,
    pub messages: u64,
    pub health: u64,
    pub states: u64,
    pub events: u64,
    /// QoS 1 messages whose acknowledgement ran after their commit.
    pub acknowledged: u64,
    /// From the first message to the writer's last commit.
    pub seconds: f64,
    pub messages_per_s: f64,
}

/// The size figures of one simulated day.
#[derive(Debug, Clone, Serialize)]
pub struct SizeResult {
    pub devices: usize,
    pub rates: DayRates,
    /// Database + WAL after registration and every device's first
    /// presence, state and health (checkpointed).
    pub base_bytes: u64,
    /// The same after the day.
    pub after_day_bytes: u64,
    pub day_bytes: u64,
    pub day_bytes_per_100k_devices: f64,
    /// The status rows (what is held per device whatever the history).
    pub base_bytes_per_100k_devices: f64,
    pub messages: u64,
    pub seconds: f64,
}

/// One simulated device: its status as the fleet would hold it, and its
/// event counters.
struct Sim {
    id: DeviceId,
    status: Status,
    seq: u64,
    boot: u64,
    session: u64,
    /// Events sent so far (every 12th is a boot: a new agent run).
    events: u64,
}

fn state(config_rev: u32, failing: bool) -> State {
    let check = |name: &str, passed: bool| CheckResult {
        name: name.to_owned(),
        passed,
        message: (!passed).then(|| "no paper".to_owned()),
    };
    State {
        model: Model::parse("ballot-box-v2").expect("valid model"),
        firmware: Version::parse("2.3.1").expect("valid version"),
        agent: Version::parse("0.11.0").expect("valid version"),
        update: UpdateStatus::Idle,
        checks: vec![
            check("printer", !failing),
            check("card-reader", true),
            check("fingerprint", true),
            check("touch-panel", true),
        ],
        config_rev,
    }
}

fn health(n: u64) -> Health {
    Health {
        cpu_pct: (n % 60) as u8,
        mem_used_pct: 41,
        disk_free_pct: 72,
        temp_c: Some(48),
        battery_pct: Some(93),
        uptime_s: n * 60,
        clock_offset_ms: Some(-12),
        disk_free_mb: 5_120,
        window: None,
    }
}

fn event_kind(n: u64) -> EventKind {
    if n % 12 == 0 {
        return EventKind::Boot {
            firmware: Version::parse("2.3.1").expect("valid version"),
        };
    }
    match n % 3 {
        0 => EventKind::CheckFailed {
            name: "printer".into(),
            message: "no paper".into(),
        },
        1 => EventKind::CheckRecovered {
            name: "printer".into(),
        },
        _ => EventKind::Error {
            message: "card reader timed out once".into(),
        },
    }
}

/// Register `n` enrolled devices (spread over the provinces) and return
/// them as simulated devices.
async fn register(store: &Store, n: usize) -> Result<Vec<Sim>, StoreError> {
    let provinces: Vec<ProvinceCode> = ProvinceCode::all().collect();
    let mut sims = Vec::with_capacity(n);
    let mut regs = Vec::with_capacity(5_000);
    for i in 0..n {
        let id = DeviceId::parse(&format!("SB-{i:06}")).expect("valid id");
        regs.push(Registration {
            id: id.clone(),
            model: Model::parse("ballot-box-v2").expect("valid model"),
            province: provinces[i % provinces.len()],
            county: None,
            station: None,
            lifecycle: Lifecycle::Enrolled,
            registered_at_ms: 0,
        });
        sims.push(Sim {
            id,
            status: Status::default(),
            seq: 0,
            boot: 0x5eed_0000 + i as u64,
            session: 1,
            events: 0,
        });
        if regs.len() == 5_000 {
            store.upsert_devices(&regs).await?;
            regs.clear();
        }
    }
    store.upsert_devices(&regs).await?;
    Ok(sims)
}

/// Hand one message's ops to the writer as the ingest does: the event (if
/// any), the device's whole status, and for QoS 1 an acknowledgement to
/// run after the commit. Waits while the queue is full.
async fn send(
    tx: &mpsc::Sender<WriteOp>,
    d: &mut Sim,
    kind: Kind,
    now_ms: u64,
    acked: &Arc<AtomicU64>,
) -> Result<(), mpsc::error::SendError<WriteOp>> {
    d.status.last_seen_ms = Some(now_ms);
    match kind {
        Kind::Health => {
            d.status.health = Some(health(now_ms / 60_000));
            d.status.health_at_ms = Some(now_ms);
            d.status.health_sampled_ms = Some(now_ms);
        }
        Kind::State => {
            let rev = d.status.state.as_ref().map_or(1, |s| s.config_rev + 1);
            d.status.state = Some(state(rev, rev % 2 == 0));
            d.status.state_sent_at_ms = Some(now_ms);
        }
        Kind::Presence => {
            d.session += 1;
            d.status.presence = Some(if d.session % 2 == 0 {
                PresenceStatus::Online
            } else {
                PresenceStatus::Offline
            });
            d.status.session = Some(d.session);
        }
        Kind::Event => {
            let kind = event_kind(d.events);
            d.events += 1;
            d.seq += 1;
            if matches!(kind, EventKind::Boot { .. }) && d.seq > 1 {
                // An agent start: a new stream.
                d.boot += 1 << 32;
                d.seq = 1;
            }
            let e = Event {
                seq: d.seq,
                at_ms: now_ms,
                kind,
                boot: Some(d.boot),
            };
            tx.send(WriteOp::Event(d.id.clone(), e, now_ms)).await?;
        }
    }
    tx.send(WriteOp::Status(d.id.clone(), Box::new(d.status.clone())))
        .await?;
    if kind != Kind::Health {
        let acked = Arc::clone(acked);
        tx.send(WriteOp::AfterCommit(Box::new(move || {
            acked.fetch_add(1, Ordering::Relaxed);
        })))
        .await?;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store writer stopped before the bench ended")]
    WriterGone,
    #[error("cannot read the size of {path}: {source}")]
    Size {
        path: String,
        source: std::io::Error,
    },
}

fn now_ms() -> u64 {
    crate::clock::unix_ms()
}

/// Messages committed per second by the writer with `cfg`, for `duration`.
pub async fn write_rate(
    db: &Path,
    devices: usize,
    duration: Duration,
    cfg: WriterConfig,
    write_queue: usize,
) -> Result<RateResult, BenchError> {
    let store = Store::open(db).await?;
    let mut sims = register(&store, devices.max(1)).await?;
    let (tx, rx) = mpsc::channel(write_queue.max(1));
    let writer = spawn_writer(store.clone(), rx, cfg);
    let acked = Arc::new(AtomicU64::new(0));
    let (mut health, mut states, mut events) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < duration {
        // The clock is read once per 1,000 messages, as a batch of them
        // would arrive within the same millisecond or so.
        let now = now_ms();
        for _ in 0..1_000 {
            let kind = rate_mix(i);
            let n = sims.len();
            let d = &mut sims[(i as usize) % n];
            send(&tx, d, kind, now, &acked)
                .await
                .map_err(|_| BenchError::WriterGone)?;
            match kind {
                Kind::Health => health += 1,
                Kind::State => states += 1,
                _ => events += 1,
            }
            i += 1;
        }
    }
    drop(tx);
    writer.await.map_err(|_| BenchError::WriterGone)?;
    let seconds = start.elapsed().as_secs_f64();
    store.close().await;
    Ok(RateResult {
        devices: sims.len(),
        batch_max: cfg.max_batch,
        batch_delay_ms: u64::try_from(cfg.max_delay.as_millis()).unwrap_or(u64::MAX),
        write_queue,
        messages: i,
        health,
        states,
        events,
        acknowledged: acked.load(Ordering::Relaxed),
        seconds,
        messages_per_s: i as f64 / seconds.max(1e-9),
    })
}

/// Bytes on disk of the database and its WAL.
fn db_bytes(db: &Path) -> Result<u64, BenchError> {
    let mut total = 0;
    for suffix in ["", "-wal"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        match std::fs::metadata(&p) {
            Ok(m) => total += m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(BenchError::Size {
                    path: p.display().to_string(),
                    source,
                })
            }
        }
    }
    Ok(total)
}

/// Write `per_device` for every device (device by device, one message
/// each in turn) through a fresh writer, and wait for its last commit.
async fn stage(
    store: &Store,
    sims: &mut [Sim],
    per_device: &[Kind],
    cfg: WriterConfig,
    write_queue: usize,
    clock_ms: &mut u64,
) -> Result<u64, BenchError> {
    let (tx, rx) = mpsc::channel(write_queue.max(1));
    let writer = spawn_writer(store.clone(), rx, cfg);
    let acked = Arc::new(AtomicU64::new(0));
    let mut sent = 0;
    // Simulated time: the day's messages spread evenly over 24 hours.
    let step = 86_400_000 / (per_device.len() as u64).max(1);
    for kind in per_device {
        *clock_ms += step;
        for d in sims.iter_mut() {
            send(&tx, d, *kind, *clock_ms, &acked)
                .await
                .map_err(|_| BenchError::WriterGone)?;
            sent += 1;
        }
    }
    drop(tx);
    writer.await.map_err(|_| BenchError::WriterGone)?;
    Ok(sent)
}

/// The bytes one simulated day at `rates` adds to the database of
/// `devices` devices, measured after a WAL checkpoint.
pub async fn day_size(
    db: &Path,
    devices: usize,
    rates: DayRates,
    cfg: WriterConfig,
    write_queue: usize,
) -> Result<SizeResult, BenchError> {
    let store = Store::open(db).await?;
    let mut sims = register(&store, devices.max(1)).await?;
    let mut clock = now_ms();
    let start = Instant::now();
    let first = [Kind::Presence, Kind::State, Kind::Health];
    let mut messages = stage(&store, &mut sims, &first, cfg, write_queue, &mut clock).await?;
    store.checkpoint().await?;
    let base_bytes = db_bytes(db)?;
    messages += stage(
        &store,
        &mut sims,
        &rates.day(),
        cfg,
        write_queue,
        &mut clock,
    )
    .await?;
    store.checkpoint().await?;
    let after_day_bytes = db_bytes(db)?;
    let seconds = start.elapsed().as_secs_f64();
    store.close().await;
    let n = sims.len() as f64;
    let day_bytes = after_day_bytes.saturating_sub(base_bytes);
    Ok(SizeResult {
        devices: sims.len(),
        rates,
        base_bytes,
        after_day_bytes,
        day_bytes,
        day_bytes_per_100k_devices: day_bytes as f64 * 100_000.0 / n,
        base_bytes_per_100k_devices: base_bytes as f64 * 100_000.0 / n,
        messages,
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_mix_is_eight_health_one_state_one_event_in_ten() {
        let kinds: Vec<Kind> = (0..1_000).map(rate_mix).collect();
        let count = |k| kinds.iter().filter(|x| **x == k).count();
        assert_eq!(
            (
                count(Kind::Health),
                count(Kind::State),
                count(Kind::Event),
                count(Kind::Presence)
            ),
            (800, 100, 100, 0)
        );
    }

    #[test]
    fn a_day_holds_each_kind_as_often_as_its_rate_and_spreads_them() {
        let rates = DayRates::default();
        let day = rates.day();
        let count = |k| day.iter().filter(|x| **x == k).count() as u32;
        assert_eq!(count(Kind::Presence), rates.presence);
        assert_eq!(count(Kind::State), rates.states);
        assert_eq!(count(Kind::Event), rates.events);
        assert_eq!(count(Kind::Health), rates.health_written);
        // Not all events in a row: the day is interleaved.
        let longest_run = day
            .chunk_by(|a, b| a == b)
            .map(<[Kind]>::len)
            .max()
            .unwrap();
        assert!(longest_run < rates.health_written as usize, "{day:?}");
    }

    #[tokio::test]
    async fn the_write_rate_run_commits_every_message_it_counts() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("bench.db");
        let cfg = WriterConfig {
            max_batch: 1,
            ..WriterConfig::default()
        };
        let r = write_rate(&db, 20, Duration::from_millis(1), cfg, 100)
            .await
            .unwrap();
        assert_eq!(r.messages, r.health + r.states + r.events);
        assert_eq!(r.acknowledged, r.states + r.events, "{r:?}");
        assert_eq!(r.batch_max, 1);
        let store = Store::open(&db).await.unwrap();
        let last = DeviceId::parse("SB-000019").unwrap();
        assert!(!store.recent_events(&last, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_simulated_day_stores_its_events_and_grows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("day.db");
        let rates = DayRates::default();
        let r = day_size(&db, 50, rates, WriterConfig::default(), 1_000)
            .await
            .unwrap();
        assert_eq!(r.devices, 50);
        assert_eq!(
            r.messages,
            50 * u64::from(3 + rates.presence + rates.states + rates.events + rates.health_written)
        );
        assert!(r.after_day_bytes > r.base_bytes, "{r:?}");
        let store = Store::open(&db).await.unwrap();
        let d = DeviceId::parse("SB-000007").unwrap();
        assert_eq!(
            store.recent_events(&d, 100).await.unwrap().len(),
            rates.events as usize
        );
    }
}
