//! Readiness per province, sampled every few minutes into the store (the
//! national page's trend), and samples past their days dropped.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use fleet_protocol::ProvinceCode;

use crate::clock::unix_ms;
use crate::domain::fleet::Fleet;
use crate::store::{Sample, Store};

/// Every province's counts now (pure).
pub fn sample(fleet: &Fleet, at_ms: u64) -> Vec<Sample> {
    ProvinceCode::all()
        .map(|p| {
            let c = fleet.province_counts(p);
            Sample {
                at_ms,
                province: p,
                total: c.total,
                ready: c.ready,
                reasons: c
                    .reasons()
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
            }
        })
        .collect()
}

/// Sample now, then every `every`; a failed write is logged and the next
/// one tried.
pub fn spawn(
    fleet: Arc<RwLock<Fleet>>,
    store: Store,
    every: Duration,
    keep: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = unix_ms();
            let samples = {
                let f = fleet.read().expect("fleet lock is never poisoned");
                sample(&f, now)
            };
            let keep_from = now.saturating_sub(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX));
            if let Err(e) = store.add_samples(&samples, keep_from).await {
                tracing::warn!(error = %e, "cannot store the readiness samples");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_fleet_samples_every_province_at_zero() {
        let fleet = Fleet::new(60_000);
        let s = sample(&fleet, 7);
        assert_eq!(s.len(), 31);
        assert!(s
            .iter()
            .all(|x| x.at_ms == 7 && x.total == 0 && x.reasons.is_empty()));
    }
}
