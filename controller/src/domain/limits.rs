//! Limits on what one device may cost the controller (pure, `now` passed in):
//! a token bucket per device on messages and bytes per minute, and a limit
//! on log lines per device, so one misbehaving device can neither flood the
//! fleet state and the store nor the log.

use std::collections::HashMap;
use std::hash::Hash;

/// Milliseconds per minute: the buckets count in "per-minute" units scaled by
/// this, so refilling is exact integer arithmetic.
const MINUTE_MS: u128 = 60_000;

/// The limits per device (`[ingest]` in the controller's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub messages_per_minute: u32,
    pub bytes_per_minute: u64,
}

/// Whether a message is within its device's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Over the limit: drop it. `first` is the first drop since the device
    /// was last within its limits (worth a log line).
    Drop {
        first: bool,
    },
}

/// One device's buckets, in tokens × [`MINUTE_MS`]. Full is one minute's
/// allowance, so a device may send a minute's worth at once (the burst after
/// a reconnect) and then at the steady rate.
#[derive(Debug, Clone)]
struct Bucket {
    messages: u128,
    bytes: u128,
    at_ms: u64,
    dropping: bool,
}

/// A token bucket per device.
#[derive(Debug)]
pub struct RateLimiter<K> {
    limits: RateLimits,
    buckets: HashMap<K, Bucket>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            buckets: HashMap::new(),
        }
    }

    /// Take one message of `bytes` from `device`'s allowance at `now_ms`.
    /// Callers pass only registered devices, which bounds the map.
    pub fn admit(&mut self, device: &K, bytes: usize, now_ms: u64) -> Admit {
        let msg_cap = u128::from(self.limits.messages_per_minute) * MINUTE_MS;
        let byte_cap = u128::from(self.limits.bytes_per_minute) * MINUTE_MS;
        let b = self.buckets.entry(device.clone()).or_insert(Bucket {
            messages: msg_cap,
            bytes: byte_cap,
            at_ms: now_ms,
            dropping: false,
        });
        // A clock that went back refills nothing.
        let elapsed = u128::from(now_ms.saturating_sub(b.at_ms));
        b.at_ms = b.at_ms.max(now_ms);
        b.messages =
            (b.messages + elapsed * u128::from(self.limits.messages_per_minute)).min(msg_cap);
        b.bytes = (b.bytes + elapsed * u128::from(self.limits.bytes_per_minute)).min(byte_cap);
        let msg_cost = MINUTE_MS;
        let byte_cost = (bytes as u128) * MINUTE_MS;
        if b.messages >= msg_cost && b.bytes >= byte_cost {
            b.messages -= msg_cost;
            b.bytes -= byte_cost;
            b.dropping = false;
            Admit::Yes
        } else {
            let first = !b.dropping;
            b.dropping = true;
            Admit::Drop { first }
        }
    }
}

/// Whether to write a log line about a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLine {
    /// Write it; `suppressed` lines about this device were left out since
    /// the last one written (say so in the line).
    Write {
        suppressed: u64,
    },
    Suppress,
}

#[derive(Debug, Clone)]
struct Window {
    start_ms: u64,
    written: u32,
    suppressed: u64,
}

/// At most `per_minute` log lines per device in each minute; the rest are
/// counted and the count goes on the next line written. Holds at most
/// `max_devices` devices (older windows are forgotten first), so made-up
/// ids cannot grow it without bound.
#[derive(Debug)]
pub struct LogLimiter<K> {
    per_minute: u32,
    max_devices: usize,
    windows: HashMap<K, Window>,
}

impl<K: Eq + Hash + Clone> LogLimiter<K> {
    pub fn new(per_minute: u32, max_devices: usize) -> Self {
        Self {
            per_minute,
            max_devices,
            windows: HashMap::new(),
        }
    }

    pub fn line(&mut self, device: &K, now_ms: u64) -> LogLine {
        let minute = MINUTE_MS as u64;
        if !self.windows.contains_key(device) && self.windows.len() >= self.max_devices {
            self.windows
                .retain(|_, w| now_ms.saturating_sub(w.start_ms) < minute || w.suppressed > 0);
            if self.windows.len() >= self.max_devices {
                return LogLine::Suppress;
            }
        }
        let w = self.windows.entry(device.clone()).or_insert(Window {
            start_ms: now_ms,
            written: 0,
            suppressed: 0,
        });
        if now_ms.saturating_sub(w.start_ms) >= minute {
            w.start_ms = now_ms;
            w.written = 0;
        }
        if w.written < self.per_minute {
            w.written += 1;
            LogLine::Write {
                suppressed: std::mem::take(&mut w.suppressed),
            }
        } else {
            w.suppressed += 1;
            LogLine::Suppress
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RateLimits = RateLimits {
        messages_per_minute: 60,
        bytes_per_minute: 6_000,
    };

    #[test]
    fn a_device_over_its_messages_per_minute_is_dropped_until_it_refills() {
        let mut r = RateLimiter::new(LIMITS);
        let admitted = (0..100)
            .filter(|_| r.admit(&"A", 10, 1_000) == Admit::Yes)
            .count();
        assert_eq!(admitted, 60, "a minute's allowance at once, then nothing");
        assert_eq!(r.admit(&"A", 10, 1_000), Admit::Drop { first: false });
        // Another device has its own bucket.
        assert_eq!(r.admit(&"B", 10, 1_000), Admit::Yes);
        // One message a second comes back.
        assert_eq!(r.admit(&"A", 10, 1_999), Admit::Drop { first: false });
        assert_eq!(r.admit(&"A", 10, 2_000), Admit::Yes);
        assert_eq!(r.admit(&"A", 10, 2_000), Admit::Drop { first: true });
        // A minute later it is full again, and no fuller.
        let admitted = (0..100)
            .filter(|_| r.admit(&"A", 10, 600_000) == Admit::Yes)
            .count();
        assert_eq!(admitted, 60);
    }

    #[test]
    fn a_device_over_its_bytes_per_minute_is_dropped() {
        let mut r = RateLimiter::new(LIMITS);
        assert_eq!(r.admit(&"A", 5_000, 0), Admit::Yes);
        assert_eq!(r.admit(&"A", 1_001, 0), Admit::Drop { first: true });
        assert_eq!(r.admit(&"A", 1_000, 0), Admit::Yes);
        // 100 bytes a second refill.
        assert_eq!(r.admit(&"A", 100, 999), Admit::Drop { first: true });
        assert_eq!(r.admit(&"A", 100, 1_000), Admit::Yes);
        // A message bigger than a minute's allowance never passes.
        assert!(matches!(r.admit(&"B", 6_001, 0), Admit::Drop { .. }));
    }

    #[test]
    fn a_clock_going_back_refills_nothing() {
        let mut r = RateLimiter::new(LIMITS);
        for _ in 0..60 {
            assert_eq!(r.admit(&"A", 1, 10_000), Admit::Yes);
        }
        assert!(matches!(r.admit(&"A", 1, 0), Admit::Drop { .. }));
        assert!(matches!(r.admit(&"A", 1, 10_500), Admit::Drop { .. }));
        assert_eq!(r.admit(&"A", 1, 11_000), Admit::Yes);
    }

    #[test]
    fn log_lines_about_one_device_are_limited_per_minute_and_the_rest_counted() {
        let mut l = LogLimiter::new(2, 100);
        assert_eq!(l.line(&"A", 0), LogLine::Write { suppressed: 0 });
        assert_eq!(l.line(&"A", 1), LogLine::Write { suppressed: 0 });
        for t in 2..1_000 {
            assert_eq!(l.line(&"A", t), LogLine::Suppress);
        }
        assert_eq!(
            l.line(&"B", 5),
            LogLine::Write { suppressed: 0 },
            "per device"
        );
        assert_eq!(l.line(&"A", 60_000), LogLine::Write { suppressed: 998 });
        assert_eq!(l.line(&"A", 60_001), LogLine::Write { suppressed: 0 });
        assert_eq!(l.line(&"A", 60_002), LogLine::Suppress);
    }

    #[test]
    fn the_log_limiter_holds_a_bounded_number_of_devices() {
        let mut l = LogLimiter::new(1, 3);
        for id in ["a", "b", "c"] {
            assert_eq!(l.line(&id, 0), LogLine::Write { suppressed: 0 });
        }
        assert_eq!(l.line(&"d", 10), LogLine::Suppress, "full");
        assert_eq!(l.windows.len(), 3);
        // A minute on, the quiet devices' windows are forgotten.
        assert_eq!(l.line(&"d", 60_000), LogLine::Write { suppressed: 0 });
        assert!(l.windows.len() <= 3);
    }
}
