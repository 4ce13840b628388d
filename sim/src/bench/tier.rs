//! `fleet-sim bench tier`: the tier benches on one fleet start (starting
//! 100,000 devices takes minutes): footprint first (the brokers as the
//! devices left them), then queries during ingest, then (with `--storm`)
//! the reconnect storm, which leaves the fleet as it found it, then
//! ingest's two phases (phase b restarts the simulator). Writes
//! `footprint.json`, `queries.json`, `storm.json` and `ingest.json`.

use std::path::PathBuf;

use super::fleet::{BenchFleet, FleetOptions};
use super::ingest::IngestOptions;
use super::queries::QueriesOptions;
use crate::report::Report;

#[derive(Debug, Clone)]
pub struct TierOptions {
    pub fleet: FleetOptions,
    pub ingest: IngestOptions,
    pub queries: QueriesOptions,
    /// Run the reconnect storm too.
    pub storm: bool,
    pub out: PathBuf,
}

pub async fn run(o: TierOptions) -> anyhow::Result<Vec<PathBuf>> {
    let work = tempfile::Builder::new().prefix("bench-tier-").tempdir()?;
    let mut opts = o.fleet.clone();
    if o.storm {
        opts.connections_out = Some(work.path().join("connections.json"));
    }
    let mut fleet = BenchFleet::start(opts).await?;
    let result = all(&mut fleet, &o).await;
    fleet.stop().await;
    let reports = result?;
    reports.iter().map(|r| r.finish(&o.out)).collect()
}

async fn all(fleet: &mut BenchFleet, o: &TierOptions) -> anyhow::Result<Vec<Report>> {
    let mut footprint = Report::new("footprint");
    super::footprint::measure(fleet, &mut footprint)?;
    let mut queries = Report::new("queries");
    super::queries::measure(fleet, &o.queries, &mut queries).await?;
    let mut reports = vec![footprint, queries];
    if o.storm {
        let mut storm = Report::new("storm");
        super::storm::measure(fleet, &mut storm).await?;
        reports.push(storm);
    }
    let mut ingest = Report::new("ingest");
    super::ingest::measure(fleet, &o.ingest, &mut ingest).await?;
    reports.push(ingest);
    Ok(reports)
}
