//! Per-address limits (pure, `now` in milliseconds comes in): how many
//! times something may happen per key within a sliding window, and a log
//! gate that lets one line per key through per window and counts the rest.
//!
//! Memory is bounded: at most [`MAX_KEYS`] keys are remembered; when a new
//! key comes and the table is full, keys with nothing inside the window are
//! forgotten first, then the key heard from longest ago.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// How many keys (source addresses) one limiter remembers.
pub const MAX_KEYS: usize = 10_000;

/// A failed authentication is logged at most once per this window per
/// source address (every one is counted in `/metrics`).
pub const AUTH_FAILURE_LOG_WINDOW_MS: u64 = 60_000;

/// Refused enrolments one source address may have within
/// [`ENROL_REFUSAL_WINDOW_MS`]; past that, its attempts answer 429 until the
/// oldest refusal leaves the window. Enrolments that succeed are not counted:
/// a warehouse bench, or a province behind one address, enrols hundreds of
/// good tokens at once.
pub const ENROL_REFUSALS_PER_WINDOW: u32 = 10;
pub const ENROL_REFUSAL_WINDOW_MS: u64 = 60_000;

/// Refused log uploads (wrong, used or expired token; no such command) one
/// source address may have within [`UPLOAD_REFUSAL_WINDOW_MS`], as for
/// enrolments: the upload route takes any bearer, and each refusal of an
/// existing command is audited.
pub const UPLOAD_REFUSALS_PER_WINDOW: u32 = 10;
pub const UPLOAD_REFUSAL_WINDOW_MS: u64 = 60_000;

/// At most `limit` events per key within any `window_ms`.
#[derive(Debug)]
pub struct Throttle<K> {
    limit: usize,
    window_ms: u64,
    max_keys: usize,
    /// Per key, the times of its events inside the window, oldest first.
    seen: HashMap<K, VecDeque<u64>>,
}

impl<K: Eq + Hash + Clone> Throttle<K> {
    pub fn new(limit: u32, window_ms: u64) -> Self {
        Self::with_max_keys(limit, window_ms, MAX_KEYS)
    }

    pub fn with_max_keys(limit: u32, window_ms: u64, max_keys: usize) -> Self {
        Self {
            limit: usize::try_from(limit).unwrap_or(usize::MAX).max(1),
            window_ms,
            max_keys: max_keys.max(1),
            seen: HashMap::new(),
        }
    }

    /// How long until `key` may have another event: `None` while it is
    /// under its limit at `now`.
    pub fn wait_ms(&mut self, key: &K, now: u64) -> Option<u64> {
        let window = self.window_ms;
        let times = self.seen.get_mut(key)?;
        while times.front().is_some_and(|t| t + window <= now) {
            times.pop_front();
        }
        if times.is_empty() {
            self.seen.remove(key);
            return None;
        }
        if times.len() < self.limit {
            return None;
        }
        times.front().map(|oldest| oldest + window - now)
    }

    /// Count one event of `key` at `now` if it is under its limit; false
    /// (and nothing counted) when it is not.
    pub fn admit(&mut self, key: &K, now: u64) -> bool {
        if self.wait_ms(key, now).is_some() {
            return false;
        }
        if !self.seen.contains_key(key) {
            self.make_room(now);
        }
        self.seen.entry(key.clone()).or_default().push_back(now);
        true
    }

    /// How many keys are remembered.
    pub fn keys(&self) -> usize {
        self.seen.len()
    }

    fn make_room(&mut self, now: u64) {
        if self.seen.len() < self.max_keys {
            return;
        }
        let window = self.window_ms;
        self.seen
            .retain(|_, times| times.back().is_some_and(|t| t + window > now));
        if self.seen.len() >= self.max_keys {
            let stalest = self
                .seen
                .iter()
                .min_by_key(|(_, times)| times.back().copied().unwrap_or(0))
                .map(|(k, _)| k.clone());
            if let Some(k) = stalest {
                self.seen.remove(&k);
            }
        }
    }
}

/// One log line per key per window; the lines held back are counted and
/// told with the next line that goes through.
#[derive(Debug)]
pub struct LogGate<K> {
    throttle: Throttle<K>,
    held_back: HashMap<K, u64>,
}

impl<K: Eq + Hash + Clone> LogGate<K> {
    pub fn new(window_ms: u64) -> Self {
        Self {
            throttle: Throttle::new(1, window_ms),
            held_back: HashMap::new(),
        }
    }

    /// `Some(n)` when a line about `key` may be logged at `now`, `n` being
    /// how many were held back since the last one; `None` to hold it back.
    pub fn pass(&mut self, key: &K, now: u64) -> Option<u64> {
        if self.throttle.admit(key, now) {
            Some(self.held_back.remove(key).unwrap_or(0))
        } else {
            if self.held_back.len() < MAX_KEYS || self.held_back.contains_key(key) {
                *self.held_back.entry(key.clone()).or_default() += 1;
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn a_key_gets_its_limit_per_window_and_no_more() {
        let mut t = Throttle::new(3, MIN);
        let a = "192.0.2.1".to_owned();
        assert!(t.admit(&a, 0));
        assert!(t.admit(&a, 10));
        assert!(t.admit(&a, 20));
        assert!(!t.admit(&a, 30), "the fourth inside the minute");
        assert_eq!(t.wait_ms(&a, 30), Some(MIN - 30));
        // A refused event is not counted: the window slides from the first.
        assert!(!t.admit(&a, MIN - 1));
        assert!(t.admit(&a, MIN), "the first one left the window");
        assert!(!t.admit(&a, MIN + 5));
        assert!(t.admit(&a, MIN + 10));
    }

    #[test]
    fn keys_are_limited_apart() {
        let mut t = Throttle::new(1, MIN);
        assert!(t.admit(&"a", 0));
        assert!(!t.admit(&"a", 1));
        assert!(t.admit(&"b", 1), "another address is not held up");
        assert_eq!(t.wait_ms(&"c", 1), None);
    }

    #[test]
    fn memory_stays_bounded_and_forgets_the_stalest_first() {
        let mut t = Throttle::with_max_keys(1, MIN, 3);
        for (i, k) in ["a", "b", "c"].iter().enumerate() {
            assert!(t.admit(k, i as u64));
        }
        assert!(t.admit(&"d", 10));
        assert_eq!(t.keys(), 3);
        assert_eq!(t.wait_ms(&"a", 10), None, "a, the stalest, was forgotten");
        assert!(t.wait_ms(&"c", 10).is_some(), "c is still limited");
        // Past the window, every old key makes room at once.
        assert!(t.admit(&"e", 2 * MIN));
        assert_eq!(t.keys(), 1);
    }

    #[test]
    fn the_log_gate_passes_one_line_per_window_and_counts_the_rest() {
        let mut g = LogGate::new(MIN);
        assert_eq!(g.pass(&"a", 0), Some(0));
        assert_eq!(g.pass(&"a", 1), None);
        assert_eq!(g.pass(&"a", 2), None);
        assert_eq!(g.pass(&"b", 3), Some(0), "another address logs");
        assert_eq!(g.pass(&"a", MIN - 1), None);
        assert_eq!(g.pass(&"a", MIN), Some(3), "three held back");
        assert_eq!(g.pass(&"a", MIN + 1), None);
        assert_eq!(g.pass(&"a", 2 * MIN), Some(1));
    }
}
