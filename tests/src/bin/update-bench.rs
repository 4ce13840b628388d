//! `update-bench`: the time to update one real device on loopback, end to
//! end: from `fleetctl device update` until the controller holds the
//! device's committed result (desired state over MQTT, signed metadata and
//! the image over HTTPS with the fleet CA from the controller's TUF routes,
//! verify, install into a directory slot, reboot = the agent exits and is
//! started again, health check, commit). Then the same for a second
//! version, which comes as a delta against the committed image. A figure,
//! not a test: nothing is asserted beyond the updates committing.
//!
//! ```sh
//! cargo build -p fleet-agent -p fleet-controller -p fleetctl -p fleet-tests --bins
//! target/debug/update-bench [--runs 3]
//! ```
//!
//! Each run uses a fresh controller, release key set and device. The
//! agent's reconnect backoff is 100 ms to 1 s, so a reboot costs about one
//! start of the agent and one connection.

use std::time::{Duration, Instant};

use anyhow::Context;
use fleet_tests::update::{until_result_for, ControllerSetup};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs: u32 = match args.iter().position(|a| a == "--runs") {
        Some(i) => args
            .get(i + 1)
            .context("--runs N")?
            .parse()
            .context("--runs N")?,
        None => 3,
    };
    let (mut full_times, mut delta_times) = (Vec::new(), Vec::new());
    let mut sizes = None;
    for run in 0..runs {
        let id = format!("BB-23-BENCH-{run}");
        let setup = ControllerSetup::start(&id, "")?;
        let image = setup.upload("2.5.0")?.length;
        setup.upload("2.6.0")?;
        let mut agent = setup.agent();
        agent.start();
        // Connected and idle before the clock starts.
        tokio::time::sleep(Duration::from_secs(2)).await;

        let t0 = Instant::now();
        setup.update("2.5.0")?;
        let r = until_result_for(&setup.ctl, &id, &mut agent, Some("2.5.0"), 300).await;
        anyhow::ensure!(r["outcome"] == "committed", "run {run}: {r}");
        full_times.push(t0.elapsed());

        let t1 = Instant::now();
        setup.update("2.6.0")?;
        let r = until_result_for(&setup.ctl, &id, &mut agent, Some("2.6.0"), 300).await;
        anyhow::ensure!(r["outcome"] == "committed", "run {run}: {r}");
        delta_times.push(t1.elapsed());
        let out = agent.output();
        let delta = out
            .lines()
            .find(|l| l.contains("image rebuilt from a delta"))
            .and_then(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("delta_bytes="))
                    .and_then(|v| v.parse::<u64>().ok())
            });
        sizes = Some((image, delta));
        agent.kill();
        setup.ctl.stop()?;
        println!(
            "run {run}: full image {:?}, delta {:?}",
            full_times[full_times.len() - 1],
            delta_times[delta_times.len() - 1]
        );
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (image, delta) = sizes.context("no run")?;
    println!(
        "update one device on loopback, fleetctl device update -> committed result at the controller ({runs} runs, median):"
    );
    println!(
        "  full image ({image} bytes):  {:?}",
        median(&mut full_times)
    );
    match delta {
        Some(d) => println!("  delta ({d} bytes):       {:?}", median(&mut delta_times)),
        None => println!(
            "  second update (no delta used): {:?}",
            median(&mut delta_times)
        ),
    }
    Ok(())
}
