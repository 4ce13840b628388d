//! `fleet-sim bench store`: the SQLite write rate with the writer's
//! batching and without it (`batch_max = 1`), and the bytes on disk that
//! one day of the field's traffic adds, per 100,000 devices.
//!
//! fleet-sim links no controller code: the measuring is done by the
//! controller's hidden `bench-store` subcommand (the real store writer on a
//! real file, fed as the ingest feeds it), one process per measurement,
//! each printing one JSON object; this file runs them and reports.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use serde::Deserialize;

use super::sibling_bin;
use crate::report::Report;

pub struct StoreBench {
    pub devices: usize,
    pub seconds: u64,
    /// Devices of the simulated day (default: `devices`).
    pub day_devices: Option<usize>,
    pub controller_bin: Option<PathBuf>,
    pub out: PathBuf,
}

/// What `fleet-controller bench-store` prints for the write rate.
#[derive(Debug, Deserialize)]
pub struct Rate {
    pub devices: usize,
    pub batch_max: usize,
    pub batch_delay_ms: u64,
    pub write_queue: usize,
    pub messages: u64,
    pub acknowledged: u64,
    pub seconds: f64,
    pub messages_per_s: f64,
}

/// What it prints for the simulated day.
#[derive(Debug, Deserialize)]
pub struct Day {
    pub devices: usize,
    pub rates: DayRates,
    pub base_bytes: u64,
    pub day_bytes: u64,
    pub day_bytes_per_100k_devices: f64,
    pub base_bytes_per_100k_devices: f64,
    pub messages: u64,
    pub seconds: f64,
}

#[derive(Debug, Deserialize)]
pub struct DayRates {
    pub health: u32,
    pub health_written: u32,
    pub states: u32,
    pub presence: u32,
    pub events: u32,
}

fn run_controller<T: for<'de> Deserialize<'de>>(
    bin: &Path,
    data_dir: &Path,
    args: &[String],
) -> anyhow::Result<T> {
    let out = Command::new(bin)
        .arg("bench-store")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .with_context(|| format!("cannot run {} bench-store", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} bench-store {} failed: {}",
            bin.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    serde_json::from_str(text.trim())
        .with_context(|| format!("unexpected bench-store output: {text}"))
}

const MIB: f64 = 1024.0 * 1024.0;

/// Run the three measurements and report them.
pub fn store(b: StoreBench) -> anyhow::Result<PathBuf> {
    let bin = sibling_bin("fleet-controller", b.controller_bin.clone())?;
    let dir = tempfile::tempdir()?;
    let common = vec![
        "--devices".to_owned(),
        b.devices.to_string(),
        "--seconds".to_owned(),
        b.seconds.to_string(),
    ];
    eprintln!("writing for {} s with the configured batching…", b.seconds);
    let batched: Rate = run_controller(&bin, &dir.path().join("batched"), &common)?;
    eprintln!("writing for {} s with batch_max = 1…", b.seconds);
    let mut one = common.clone();
    one.extend(["--batch-max".to_owned(), "1".to_owned()]);
    let unbatched: Rate = run_controller(&bin, &dir.path().join("unbatched"), &one)?;
    let day_devices = b.day_devices.unwrap_or(b.devices);
    eprintln!("one simulated day of {day_devices} devices…");
    let day: Day = run_controller(
        &bin,
        &dir.path().join("day"),
        &[
            "--devices".to_owned(),
            day_devices.to_string(),
            "--day".to_owned(),
        ],
    )?;

    let mut r = Report::new("store");
    r.param("devices", b.devices)
        .param("seconds", b.seconds)
        .param("batch_max", batched.batch_max)
        .param("batch_delay_ms", batched.batch_delay_ms)
        .param("write_queue", batched.write_queue)
        .param("day_devices", day.devices);
    r.figure(
        "write rate, batched",
        batched.messages_per_s.round(),
        "msg/s",
    )
    .figure(
        "write rate, batch_max = 1",
        unbatched.messages_per_s.round(),
        "msg/s",
    )
    .figure(
        "batched / unbatched",
        batched.messages_per_s / unbatched.messages_per_s.max(1e-9),
        "ratio",
    )
    .figure("messages written, batched", batched.messages as f64, "msg")
    .figure(
        "messages written, batch_max = 1",
        unbatched.messages as f64,
        "msg",
    )
    .figure(
        "history per 100k devices per day",
        day.day_bytes_per_100k_devices / MIB,
        "MiB",
    )
    .figure(
        "status rows per 100k devices",
        day.base_bytes_per_100k_devices / MIB,
        "MiB",
    )
    .figure(
        "simulated day, bytes per device",
        day.day_bytes as f64 / day.devices.max(1) as f64,
        "B",
    );
    let rates = &day.rates;
    r.note(
        "write rate: messages committed per second, from the first message to the last commit, \
         handed over as the ingest does (a status per message, the event of an events message, \
         an acknowledgement after the commit for QoS 1); mix of every 10 messages: 8 health, \
         1 state, 1 event, round robin over the devices; the real writer, schema and \
         migrations, WAL, synchronous=NORMAL, one file",
    )
    .note(format!(
        "size: one simulated day per device: {} presence changes, {} state changes, {} events \
         (one of them a boot: a new event stream), health every 60 s ({} a day) which only \
         rewrites the device's status row in place, so {} of them are written; measured as \
         database + WAL after a checkpoint (TRUNCATE), before and after the day, scaled to \
         100,000 devices. There is no readiness history table yet (readiness is counted in \
         memory, not sampled to the store), so nothing is stored for it",
        rates.presence, rates.states, rates.events, rates.health, rates.health_written
    ))
    .note(format!(
        "events are kept up to ingest.events_kept_per_device (500 by default) per device, so \
         the history stops growing after about {} days at this rate; deleted events leave \
         free pages that SQLite reuses (no VACUUM)",
        500 / rates.events.max(1)
    ));
    if batched.acknowledged == 0 || unbatched.acknowledged == 0 {
        r.note("no QoS 1 message was acknowledged: the run was too short to measure");
    }
    r.finish(&b.out)
}
