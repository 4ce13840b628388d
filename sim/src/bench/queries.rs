//! `fleet-sim bench queries`: with the fleet up and ingesting, K
//! sequential readiness queries over HTTPS (one keep-alive connection, an
//! admin token), national (`GET /api/v1/readiness`) and one province
//! (`?province=IR-23`): p50, p99 and max in ms for each; goal p99 ≤ 10 ms.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fleet_api::types::ReadinessQuery;

use super::fleet::{BenchFleet, FleetOptions};
use crate::report::{percentile, Report};

#[derive(Debug, Clone)]
pub struct QueriesOptions {
    pub fleet: FleetOptions,
    /// Queries of each kind.
    pub queries: usize,
    /// After the fleet is up, before the first query.
    pub warmup: Duration,
    pub province: String,
    pub out: PathBuf,
}

/// p50, p99 and max of latencies in ms (sorted in place).
pub fn summary(ms: &mut [f64]) -> (f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    (
        percentile(ms, 50.0),
        percentile(ms, 99.0),
        ms.last().copied().unwrap_or(0.0),
    )
}

pub async fn run(o: QueriesOptions) -> anyhow::Result<PathBuf> {
    let mut fleet = BenchFleet::start(o.fleet.clone()).await?;
    let mut r = Report::new("queries");
    let result = measure(&mut fleet, &o, &mut r).await;
    fleet.stop().await;
    result?;
    r.finish(&o.out)
}

pub async fn measure(
    fleet: &mut BenchFleet,
    o: &QueriesOptions,
    r: &mut Report,
) -> anyhow::Result<()> {
    super::ingest::common_params(r, fleet);
    r.param("queries", o.queries)
        .param("province", o.province.clone());
    tokio::time::sleep(o.warmup).await;
    let national = ReadinessQuery::default();
    let one = ReadinessQuery {
        province: Some(o.province.clone()),
        ..ReadinessQuery::default()
    };
    // One query of each first: the connection is open and warm.
    fleet.api.client.readiness(&national).await?;
    fleet.api.client.readiness(&one).await?;
    for (name, q) in [("national", &national), (o.province.as_str(), &one)] {
        let mut ms = Vec::with_capacity(o.queries);
        for _ in 0..o.queries {
            let t = Instant::now();
            fleet.api.client.readiness(q).await?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let (p50, p99, max) = summary(&mut ms);
        r.figure(&format!("{name}: p50"), p50, "ms")
            .figure_with_goal(&format!("{name}: p99"), p99, "ms", "<= 10")
            .figure(&format!("{name}: max"), max, "ms");
    }
    r.note("sequential GET /api/v1/readiness over one keep-alive HTTPS connection while the fleet reports; timed in the client (request to parsed answer)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summary() {
        let mut v: Vec<f64> = (1..=200).rev().map(|i| f64::from(i) / 10.0).collect();
        let (p50, p99, max) = summary(&mut v);
        assert_eq!(max, 20.0);
        assert_eq!(p50, 10.1);
        assert_eq!(p99, 19.8);
        assert_eq!(summary(&mut []), (0.0, 0.0, 0.0));
    }
}
