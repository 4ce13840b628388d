//! When each simulated device (re)connected, and the histogram of reconnect
//! times after an outage (the broker restarted, a link returned).
//!
//! Every agent sends its full state on each connection, so the times its
//! state was sent are its connection times (plus a few state changes).
//! [`Recorder`] collects them while the fleet runs and writes them as JSON
//! (`fleet-sim run --connections-out FILE`, rewritten every 2 s);
//! [`histogram`] (pure) turns the first connection of each device after a
//! moment (the outage) into buckets of delay, which `fleet-sim reconnects
//! FILE --since-ms T` prints. Agents reconnect with exponential backoff and
//! full jitter (`fleet_agent::backoff`), so the delays spread out instead
//! of arriving in the same instant.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Device id → the Unix times (ms) its state was sent.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Connections {
    pub devices: BTreeMap<String, Vec<u64>>,
}

/// Shared by the fleet's watcher tasks.
#[derive(Debug, Default, Clone)]
pub struct Recorder(Arc<Mutex<Connections>>);

impl Recorder {
    pub fn record(&self, device: &str, at_ms: u64) {
        self.0
            .lock()
            .expect("recorder lock")
            .devices
            .entry(device.to_owned())
            .or_default()
            .push(at_ms);
    }

    pub fn snapshot(&self) -> Connections {
        self.0.lock().expect("recorder lock").clone()
    }

    /// Write the JSON whole, then rename it into place.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec(&self.snapshot()).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, json)?;
        std::fs::rename(tmp, path)
    }
}

/// Reconnect delays after `since_ms`, bucketed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Histogram {
    pub since_ms: u64,
    pub bucket_ms: u64,
    /// Devices in the file.
    pub devices: usize,
    /// Devices that connected after `since_ms`.
    pub reconnected: usize,
    /// Devices that did not (still offline, as far as the file says).
    pub missing: Vec<String>,
    /// (bucket start in ms after `since_ms`, devices whose first connection fell in it).
    pub buckets: Vec<(u64, usize)>,
    pub min_ms: u64,
    pub p50_ms: u64,
    pub p90_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

/// The delay of each device's first connection after `since_ms`.
pub fn histogram(c: &Connections, since_ms: u64, bucket_ms: u64) -> Histogram {
    let bucket_ms = bucket_ms.max(1);
    let mut delays = Vec::new();
    let mut missing = Vec::new();
    for (device, times) in &c.devices {
        match times.iter().filter(|t| **t >= since_ms).min() {
            Some(t) => delays.push(t - since_ms),
            None => missing.push(device.clone()),
        }
    }
    delays.sort_unstable();
    let mut buckets: BTreeMap<u64, usize> = BTreeMap::new();
    for d in &delays {
        *buckets.entry(d / bucket_ms * bucket_ms).or_default() += 1;
    }
    let pct = |p: usize| -> u64 {
        if delays.is_empty() {
            0
        } else {
            delays[(delays.len() - 1) * p / 100]
        }
    };
    Histogram {
        since_ms,
        bucket_ms,
        devices: c.devices.len(),
        reconnected: delays.len(),
        missing,
        buckets: buckets.into_iter().collect(),
        min_ms: delays.first().copied().unwrap_or(0),
        p50_ms: pct(50),
        p90_ms: pct(90),
        p99_ms: pct(99),
        max_ms: delays.last().copied().unwrap_or(0),
    }
}

impl std::fmt::Display for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} of {} devices reconnected; delay min {} ms, p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
            self.reconnected,
            self.devices,
            self.min_ms,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.max_ms
        )?;
        let widest = self.buckets.iter().map(|b| b.1).max().unwrap_or(1).max(1);
        for (start, n) in &self.buckets {
            let bar = "#".repeat((n * 50).div_ceil(widest));
            writeln!(
                f,
                "{:>7}-{:<7} ms {:>6}  {bar}",
                start,
                start + self.bucket_ms,
                n
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conns(list: &[(&str, &[u64])]) -> Connections {
        Connections {
            devices: list
                .iter()
                .map(|(d, t)| ((*d).to_owned(), t.to_vec()))
                .collect(),
        }
    }

    #[test]
    fn first_connection_after_the_outage_counts_and_missing_devices_are_named() {
        let c = conns(&[
            ("a", &[100, 1_050, 1_900]),
            ("b", &[120, 1_420]),
            ("c", &[130]),
            ("d", &[140, 2_210]),
        ]);
        let h = histogram(&c, 1_000, 500);
        assert_eq!(h.devices, 4);
        assert_eq!(h.reconnected, 3);
        assert_eq!(h.missing, vec!["c".to_owned()]);
        // delays 50, 420, 1210
        assert_eq!(h.buckets, vec![(0, 2), (1_000, 1)]);
        assert_eq!((h.min_ms, h.p50_ms, h.max_ms), (50, 420, 1_210));
    }

    #[test]
    fn an_empty_file_gives_an_empty_histogram() {
        let h = histogram(&Connections::default(), 5, 100);
        assert_eq!(h.reconnected, 0);
        assert!(h.buckets.is_empty());
        assert_eq!(h.max_ms, 0);
    }

    #[test]
    fn the_recorder_writes_what_it_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let r = Recorder::default();
        r.record("x", 1);
        r.record("x", 2);
        let f = dir.path().join("c.json");
        r.write(&f).unwrap();
        let back: Connections = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        assert_eq!(back, conns(&[("x", &[1, 2])]));
    }
}
