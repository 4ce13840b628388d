//! `link-bench`: what one real agent costs on a link, measured on the wire
//! (the veth counters of a namespaced host: TCP/IP and TLS bytes, plus 14
//! bytes of Ethernet header per packet). Needs root, like the link tests.
//!
//! ```sh
//! cargo build --workspace --bins
//! target/debug/link-bench [--minutes 10] [--kbit 56] [--loss 3] [--agent-config FILE]
//! ```
//!
//! - idle: a healthy agent running for `--minutes` real minutes with its
//!   real intervals (the agent's defaults, or `--agent-config`, which is
//!   appended to the device's config: e.g. the dial-up profile or the TLS
//!   resumption switch once they exist), scaled to an hour. The scaling
//!   holds when the run spans several of the agent's longest periods
//!   (keep-alive 60 s, health report 300 s by default: 10 minutes or more);
//! - reconnect: the far side forgets the MQTT connection (the forwarder
//!   drops it, as a NAT does) and the agent connects again: the bytes of
//!   that reconnection (TCP, TLS handshake, MQTT CONNECT, presence, state);
//!   run it once with and once without session resumption in the agent's
//!   config to compare the two;
//! - catching up after N offline events: needs the durable outbox (another
//!   branch); not measured yet.

use std::time::{Duration, Instant};

use anyhow::Context;
use fleet_tests::link::{enrol_through, Host};
use fleet_tests::Controller;

struct Args {
    minutes: f64,
    kbit: u32,
    loss: u8,
    agent_config: String,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        minutes: 10.0,
        kbit: 56,
        loss: 3,
        agent_config: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--minutes" => a.minutes = value()?.parse()?,
            "--kbit" => a.kbit = value()?.parse()?,
            "--loss" => a.loss = value()?.parse()?,
            "--agent-config" => {
                let f = value()?;
                a.agent_config =
                    std::fs::read_to_string(&f).with_context(|| format!("cannot read {f}"))?;
            }
            other => anyhow::bail!("unknown argument {other}; see the source's header"),
        }
    }
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let host = Host::new()?;
    let data = tempfile::tempdir()?;
    let ctl = Controller::start_with_env(
        data.path(),
        &["--freshness-secs", "3600"],
        &[("FLEET_CONTROLLER__BROKER__HOST", "localhost")],
    )?;
    ctl.import_registry(
        "province,county,county_name_en,station_id,station_name\nIR-07,IR-07-ZAHE,Zahedan,ST-1,School\n",
    )?;
    let api_port: u16 = ctl.api.rsplit(':').next().context("api port")?.parse()?;
    let _api = host.forward(api_port)?;
    let broker = host.forward(ctl.mqtt_port)?;
    host.rate(a.kbit)?;
    host.loss(a.loss)?;
    let before = host.bytes()?;
    let dev = enrol_through(
        &ctl,
        &host,
        "BB-07-BENCH1",
        "IR-07",
        "IR-07-ZAHE",
        &a.agent_config,
    )?;
    let enrol = host.bytes()?.since(before);
    println!(
        "link: {} kbit/s, {} % loss; agent config additions: {}",
        a.kbit,
        a.loss,
        if a.agent_config.is_empty() {
            "none (defaults)"
        } else {
            "from --agent-config"
        }
    );
    println!(
        "enrolment: {} B on the wire ({} up, {} down)",
        enrol.total(),
        enrol.from_host,
        enrol.to_host
    );

    let config = dev.config.to_str().context("utf-8 path")?.to_owned();
    let mut agent = host.spawn_bin("fleet-agent", &["run", "--config", &config], &[])?;
    let before = host.bytes()?;
    agent.wait_for_line("connected to broker", Duration::from_secs(120))?;
    // Let the first state and presence through.
    std::thread::sleep(Duration::from_secs(10));
    let first = host.bytes()?.since(before);
    println!(
        "first connection and reports: {} B ({} up, {} down)",
        first.total(),
        first.from_host,
        first.to_host
    );

    let start = host.bytes()?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(a.minutes * 60.0));
    let idle = host.bytes()?.since(start);
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "idle, healthy: {} B in {:.1} min = {:.0} B per hour ({:.0} up, {:.0} down) [target <= 2048]",
        idle.total(),
        secs / 60.0,
        idle.total() as f64 * 3600.0 / secs,
        idle.from_host as f64 * 3600.0 / secs,
        idle.to_host as f64 * 3600.0 / secs
    );

    let connects = broker.connections();
    let before = host.bytes()?;
    broker.sever();
    let end = Instant::now() + Duration::from_secs(120);
    while broker.connections() == connects && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::ensure!(
        broker.connections() > connects,
        "the agent did not reconnect within 120 s"
    );
    std::thread::sleep(Duration::from_secs(10));
    let re = host.bytes()?.since(before);
    println!(
        "reconnect (as configured; compare with and without session resumption): {} B ({} up, {} down)",
        re.total(),
        re.from_host,
        re.to_host
    );
    println!("catch-up after offline events: not measured (needs the durable outbox)");
    agent.terminate(Duration::from_secs(20))?;
    drop(host);
    ctl.stop()?;
    Ok(())
}
