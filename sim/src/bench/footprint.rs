//! `fleet-sim bench footprint`: memory per simulated device (the shards'
//! resident memory / devices), per connection in each broker (its
//! resident memory after the devices connected minus before, / the
//! connections it holds), the controller's per device; and each process's
//! open files against its limit.

use std::path::PathBuf;

use super::fleet::{BenchFleet, FleetOptions};
use super::{procfs, rss_kib};
use crate::report::Report;

#[derive(Debug, Clone)]
pub struct FootprintOptions {
    pub fleet: FleetOptions,
    pub out: PathBuf,
}

/// KiB per unit; 0 when there are none.
pub fn per(kib: f64, units: usize) -> f64 {
    if units == 0 {
        0.0
    } else {
        kib / units as f64
    }
}

pub async fn run(o: FootprintOptions) -> anyhow::Result<PathBuf> {
    let fleet = BenchFleet::start(o.fleet.clone()).await?;
    let mut r = Report::new("footprint");
    let result = measure(&fleet, &mut r);
    fleet.stop().await;
    result?;
    r.finish(&o.out)
}

pub fn measure(fleet: &BenchFleet, r: &mut Report) -> anyhow::Result<()> {
    super::ingest::common_params(r, fleet);
    let devices = fleet.opts.devices;
    let mut fds = Vec::new();
    let sims = fleet.sim_pids();
    let mut sim_kib = 0u64;
    for (i, pid) in sims.iter().enumerate() {
        sim_kib += rss_kib(*pid)?;
        fds.push((format!("fleet-sim shard {i}"), *pid));
    }
    r.figure("simulator per device", per(sim_kib as f64, devices), "KiB")
        .figure("simulator total", sim_kib as f64 / 1024.0, "MiB");
    let ctl = fleet.controller_pid();
    r.figure(
        "controller per device",
        per(rss_kib(ctl)? as f64, devices),
        "KiB",
    );
    fds.push(("fleet-controller".into(), ctl));
    for (name, pid) in fleet.broker_pids() {
        let before = fleet
            .brokers_before
            .iter()
            .find(|(n, p, _)| *n == name && *p == pid)
            .map(|(_, _, kib)| *kib);
        let now = rss_kib(pid)?;
        let tcp = procfs::tcp_use(pid);
        match before {
            Some(b) => {
                r.figure(
                    &format!("{name} per connection"),
                    per(now.saturating_sub(b) as f64, tcp.connections),
                    "KiB",
                );
            }
            None => {
                r.note(format!("{name} restarted since the fleet started (pid {pid}): no memory before its devices, no figure per connection"));
            }
        }
        r.figure(&format!("{name} connections"), tcp.connections as f64, "")
            .figure(&format!("{name} resident"), now as f64 / 1024.0, "MiB");
        fds.push((name, pid));
    }
    for (name, pid) in fds {
        let (open, limit) = procfs::open_files(pid);
        r.figure(&format!("{name} open files"), open as f64, "");
        if let Some(l) = limit {
            r.figure(&format!("{name} open files limit"), l as f64, "");
        }
    }
    if fleet.enrolled_now == 0 {
        r.note("brokers' memory before the devices: measured at controller start (the devices were cached, none enrolled)");
    }
    r.note("connections: established TCP sockets of the broker (devices, the controller, the observer if any, bridges)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_unit() {
        assert_eq!(per(1_000.0, 4), 250.0);
        assert_eq!(per(1_000.0, 0), 0.0);
    }
}
