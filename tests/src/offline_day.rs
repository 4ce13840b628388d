//! A day without a link, in a device's outbox: what a real agent has
//! waiting after 24 hours offline, made in a moment.
//!
//! The records are made by the agent library's own outbox
//! ([`fleet_agent::outbox::Outbox`], on the device's own `outbox.redb`)
//! with the calls the agent's runtime makes while it is offline:
//! `add_health_sample` for every health sample (one every `sample_secs`,
//! coalesced by the outbox into one record per `coalesce_secs`) and
//! `add_event` for each event, committed with its sequence number after
//! the file's last one. Only the passage of time is simulated: the
//! samples and events carry timestamps spread over the 24 hours before
//! `now`, and the numbering that the agent's core does is done here (one
//! boot id for the day, sequence numbers counting on from the file's).
//!
//! The agent must not be running on the file meanwhile (redb holds it
//! locked); start it afterwards and it sends what it finds.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use fleet_agent::outbox::{Class, Limits, Outbox, OutboxConfig, Stored};
use fleet_protocol::{DeviceId, Event, EventKind, Health, Version};

/// A day.
pub const DAY_MS: u64 = 24 * 3600 * 1000;

/// What [`fill`] left in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilledDay {
    /// Health samples fed to the outbox.
    pub health_samples: u32,
    /// Coalesced health records it holds afterwards.
    pub health_records: usize,
    /// The events committed, as (boot, seq), in order.
    pub events: Vec<(u64, u64)>,
    /// Bytes the outbox holds (records as stored).
    pub outbox_bytes: u64,
}

/// The events of an ordinary day on a polling-station device: three check
/// failures, each recovered minutes later, and an update's result; each
/// with its offset into the day (ms).
fn the_days_events() -> anyhow::Result<Vec<(u64, EventKind)>> {
    let h = 3600 * 1000;
    let m = 60 * 1000;
    let fail = |name: &str, message: &str| EventKind::CheckFailed {
        name: name.into(),
        message: message.into(),
    };
    let ok = |name: &str| EventKind::CheckRecovered { name: name.into() };
    Ok(vec![
        (3 * h, fail("printer", "paper out")),
        (3 * h + 20 * m, ok("printer")),
        (9 * h, fail("card-reader", "no reader on the USB bus")),
        (9 * h + 4 * m, ok("card-reader")),
        (
            14 * h,
            EventKind::UpdateResult {
                version: Version::parse("2.5.0").context("version")?,
                ok: true,
                message: "installed and committed".into(),
                outcome: fleet_protocol::UpdateOutcome::Committed,
                artifact: fleet_protocol::ArtifactKind::Firmware,
                retrying: false,
            },
        ),
        (20 * h, fail("touch-panel", "calibration drifted")),
        (20 * h + 30 * m, ok("touch-panel")),
    ])
}

/// A plausible health sample `i` samples into the day.
fn sample(i: u64, sample_secs: u64) -> Health {
    // A small, deterministic wobble: values move as a real device's do,
    // so coalescing has minima and maxima to keep.
    let wobble = |k: u64, span: u64| ((i.wrapping_mul(2_654_435_761) >> k) % span) as u8;
    Health {
        cpu_pct: 4 + wobble(7, 20),
        mem_used_pct: 38 + wobble(11, 6),
        disk_free_pct: 71,
        temp_c: Some(41 + i16::from(wobble(5, 9))),
        battery_pct: Some(100 - wobble(13, 3)),
        uptime_s: 86_400 * 3 + i * sample_secs,
        clock_offset_ms: Some(i64::from(wobble(3, 40)) - 20),
        disk_free_mb: 5_830 - i / 100,
        window: None,
    }
}

/// Put a day's health samples (one every `sample_secs`) and events into
/// the outbox in `state_dir` of device `device`, the day ending at
/// `now_ms`, coalesced per `coalesce_secs` as the agent's link profile
/// says. Returns what the outbox holds afterwards.
pub fn fill(
    state_dir: &Path,
    device: &str,
    sample_secs: u64,
    coalesce_secs: u64,
    now_ms: u64,
) -> anyhow::Result<FilledDay> {
    let device = DeviceId::parse(device).context("device id")?;
    let (mut outbox, fault) = Outbox::open(
        device,
        &OutboxConfig {
            path: Some(state_dir.join("outbox.redb")),
            legacy_seq: Some(state_dir.join("event-seq")),
            // The agent's defaults (`outbox.max_bytes`); the window does not
            // matter for filling.
            limits: Limits {
                max_bytes: 16 * 1024 * 1024,
                window: 1,
                window_bytes: 4096,
            },
            coalesce: Duration::from_secs(coalesce_secs),
            start_seq: 0,
            retry: Duration::from_secs(30),
        },
    );
    if let Some(why) = fault {
        bail!(
            "the outbox in {} cannot be used: {why}",
            state_dir.display()
        );
    }
    let start = now_ms.saturating_sub(DAY_MS);
    let boot = rand_boot(now_ms);
    let mut seq = outbox.last_seq();
    let mut events = the_days_events()?.into_iter().peekable();
    let mut committed = Vec::new();
    let step = sample_secs.max(1) * 1000;
    let mut samples = 0u32;
    let check = |stored: Stored, what: &str| -> anyhow::Result<()> {
        match stored {
            Stored::Committed => Ok(()),
            other => bail!("{what} was not committed to the outbox: {other:?}"),
        }
    };
    let mut i = 0u64;
    while start + i * step <= now_ms {
        let at = start + i * step;
        while let Some((offset, _)) = events.peek() {
            if start + offset > at {
                break;
            }
            let (offset, kind) = events.next().context("peeked")?;
            seq += 1;
            let event = Event {
                seq,
                at_ms: start + offset,
                kind,
                boot: Some(boot),
            };
            check(outbox.add_event(event, start + offset), "an event")?;
            committed.push((boot, seq));
        }
        if let Some(stored) = outbox.add_health_sample(sample(i, sample_secs), at) {
            check(stored, "a health record")?;
        }
        samples += 1;
        i += 1;
    }
    // The interval being filled is committed too (as at the agent's shutdown).
    if let Some(stored) = outbox.flush_health() {
        check(stored, "the last health record")?;
    }
    Ok(FilledDay {
        health_samples: samples,
        health_records: outbox.policy().count(Class::Health),
        events: committed,
        outbox_bytes: outbox.policy().used(),
    })
}

/// A boot id for the day's run (the agent draws one at random per start;
/// any non-zero number that differs from the running agent's will do).
fn rand_boot(now_ms: u64) -> u64 {
    (now_ms ^ 0x5a5a_0000_0000_0000 ^ u64::from(std::process::id())).max(1)
}
