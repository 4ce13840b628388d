//! Reconnect delays: exponential backoff with full jitter (the delay is drawn
//! uniformly from zero to the exponential ceiling), so that 100,000 devices
//! losing the broker together do not come back in the same second.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The ceiling for the current attempt: `min(max, base * 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next delay, drawn from `[0, ceiling]`; the ceiling then doubles.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rng.gen_range(0..=ms))
    }

    /// After a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::SmallRng, SeedableRng};

    #[test]
    fn ceiling_doubles_up_to_max() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let mut rng = SmallRng::seed_from_u64(1);
        let mut ceilings = vec![];
        for _ in 0..6 {
            ceilings.push(b.ceiling().as_secs());
            let d = b.next_delay(&mut rng);
            assert!(d <= Duration::from_secs(10));
        }
        assert_eq!(ceilings, vec![1, 2, 4, 8, 10, 10]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut rng = SmallRng::seed_from_u64(7);
        let delays: Vec<_> = (0..200)
            .map(|_| {
                let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
                for _ in 0..8 {
                    b.next_delay(&mut rng);
                }
                b.next_delay(&mut rng).as_millis()
            })
            .collect();
        let min = *delays.iter().min().unwrap();
        let max = *delays.iter().max().unwrap();
        // full jitter over [0, 256 s]: spread over most of the range
        assert!(min < 30_000 && max > 200_000, "min {min} max {max}");
    }

    #[test]
    fn huge_attempts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        let mut rng = SmallRng::seed_from_u64(3);
        for _ in 0..100 {
            assert!(b.next_delay(&mut rng) <= Duration::from_secs(60));
        }
    }
}
