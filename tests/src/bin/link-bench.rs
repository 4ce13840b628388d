//! `link-bench`: what one real, healthy agent costs on its link, per link
//! profile, measured on the wire: the veth counters of a namespaced host
//! (`fleet_tests::link::Host`), both directions, counting TCP/IP and TLS
//! bytes. The counters include a 14-byte Ethernet header per frame, which a
//! serial or PPP link does not carry; every figure is printed with it and,
//! after a slash, without it (frames are counted too). IPv6 is turned off
//! on the link, so the kernel's router solicitations are not counted. Needs
//! root, like the link tests.
//!
//! ```sh
//! cargo build -p fleet-agent -p fleet-controller -p fleetctl -p fleet-tests --bins
//! target/debug/link-bench [--profiles slow,normal,dial-up] [--kbit 56] [--loss 0]
//!                         [--units 6] [--reconnects 3] [--cross-check-minutes 16]
//! ```
//!
//! For each profile, one device enrolled through the link, its agent run
//! as shipped with the profile (`link.profile`), healthy: one passing check
//! configured, health thresholds out of reach (this machine's CPU is shared
//! with builds). Each phase restarts the agent with a few keys overridden
//! through its environment (`FLEET_AGENT__…`) and measures after the
//! connection's first burst:
//!
//! - unit costs, each averaged over `--units` occurrences at short
//!   intervals: one keep-alive exchange (PINGREQ, PINGRESP and their TCP
//!   acknowledgements; keep-alive 3 s, nothing else sent), one health
//!   report (QoS 0; every 3 s, pings an hour apart; counted at the
//!   controller's ingest) and one check outcome change (its event and the
//!   new state, both QoS 1 with their PUBACKs; a check that flips each run);
//! - the hour of a healthy idle device, computed from those: the profile's
//!   pings per hour × a ping + its health reports per hour × a report (no
//!   state: it is sent on connection and on change only, and a healthy
//!   device's checks do not change);
//! - one reconnection (the forwarder drops the connection, as a NAT that
//!   forgets it does; the agent connects again after its backoff): TCP,
//!   TLS, MQTT CONNECT, subscriptions, presence, state and the desired
//!   state the controller sends back, with `link.tls_resumption` on and off,
//!   `--reconnects` times each. A resumed TLS 1.3 handshake sends no
//!   certificate chains and no signatures, so the difference between the
//!   two (printed) shows whether the handshakes resumed;
//! - catching up after a day offline: the link is cut, the outbox is given
//!   a day's health samples and events (`fleet_tests::offline_day`: only
//!   the passage of time is simulated), the agent is started, and the link
//!   returns: the bytes until every record arrived;
//! - on the slow profile only, a cross-check: the agent as shipped for
//!   `--cross-check-minutes` real minutes, the bytes measured against what
//!   the unit costs predict for the pings and reports that fell in that
//!   time (0 skips it).
//!
//! `--loss` (nftables, random) adds retransmissions to every figure; the
//! unit costs are meant without it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fleet_agent::link::{LinkProfile, ProfileName};
use fleet_tests::link::{enrol_through, Host, NsDevice};
use fleet_tests::proxy::Proxy;
use fleet_tests::{metric, offline_day, Controller, Proc};

/// Bytes and Ethernet frames on the link, both directions.
#[derive(Debug, Clone, Copy, Default)]
struct Wire {
    bytes: u64,
    frames: u64,
}

impl Wire {
    fn read(host: &Host) -> anyhow::Result<Self> {
        let read = |what: &str| -> anyhow::Result<u64> {
            let p = format!("/sys/class/net/{}/statistics/{what}", host.name);
            std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read {p}"))?
                .trim()
                .parse()
                .with_context(|| format!("{p} is not a number"))
        };
        Ok(Wire {
            bytes: read("rx_bytes")? + read("tx_bytes")?,
            frames: read("rx_packets")? + read("tx_packets")?,
        })
    }

    fn since(self, earlier: Wire) -> Wire {
        Wire {
            bytes: self.bytes.saturating_sub(earlier.bytes),
            frames: self.frames.saturating_sub(earlier.frames),
        }
    }

    /// Without the 14-byte Ethernet header of each frame.
    fn ip_bytes(self) -> u64 {
        self.bytes.saturating_sub(14 * self.frames)
    }

    fn per(self, n: f64) -> PerUnit {
        PerUnit {
            bytes: self.bytes as f64 / n,
            ip: self.ip_bytes() as f64 / n,
            frames: self.frames as f64 / n,
        }
    }
}

/// A cost averaged over several occurrences.
#[derive(Debug, Clone, Copy, Default)]
struct PerUnit {
    bytes: f64,
    ip: f64,
    frames: f64,
}

impl std::fmt::Display for PerUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} B / {:.0} B IP ({:.1} frames)",
            self.bytes, self.ip, self.frames
        )
    }
}

struct Args {
    profiles: Vec<ProfileName>,
    kbit: u32,
    loss: u8,
    units: u32,
    reconnects: u32,
    cross_check_minutes: f64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        profiles: vec![ProfileName::Slow, ProfileName::Normal, ProfileName::DialUp],
        kbit: 56,
        loss: 0,
        units: 6,
        reconnects: 3,
        cross_check_minutes: 16.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--profiles" => {
                a.profiles = value()?
                    .split(',')
                    .map(|p| p.trim().parse().map_err(anyhow::Error::msg))
                    .collect::<anyhow::Result<_>>()?
            }
            "--kbit" => a.kbit = value()?.parse()?,
            "--loss" => a.loss = value()?.parse()?,
            "--units" => a.units = value()?.parse::<u32>()?.max(1),
            "--reconnects" => a.reconnects = value()?.parse::<u32>()?.max(1),
            "--cross-check-minutes" => a.cross_check_minutes = value()?.parse()?,
            other => bail!("unknown argument {other}; see the source's header"),
        }
    }
    Ok(a)
}

/// Seconds between keep-alive pings and between health reports in the
/// unit measurements.
const UNIT_SECS: u64 = 3;
/// What a new connection sends first (presence, state, subscriptions,
/// health, the desired state back) is over by then.
const SETTLE: Duration = Duration::from_secs(8);

struct Bench {
    host: Host,
    ctl: Controller,
    broker: Proxy,
    _api: Proxy,
    rt: tokio::runtime::Runtime,
    a: Args,
}

impl Bench {
    /// A counter of the controller's ingest (`fleet_ingest_messages_total`
    /// of `kind`); the API is reached on loopback, not through the link.
    fn ingested(&self, kind: &str) -> anyhow::Result<f64> {
        let text = self
            .rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(20), self.ctl.client().metrics()).await
            })
            .context("GET /metrics timed out")??;
        Ok(metric(
            &text,
            "fleet_ingest_messages_total",
            &format!("kind=\"{kind}\""),
        ))
    }

    /// The agent of `dev`, with `env` overriding its config, connected
    /// and past its first burst.
    fn start_agent(&self, dev: &NsDevice, env: &[(&str, &str)]) -> anyhow::Result<Proc> {
        let config = dev.config.to_str().context("utf-8 path")?;
        let mut agent = self
            .host
            .spawn_bin("fleet-agent", &["run", "--config", config], env)?;
        agent.wait_for_line("connected to broker", Duration::from_secs(180))?;
        std::thread::sleep(SETTLE);
        Ok(agent)
    }

    fn measure(&self, for_: Duration) -> anyhow::Result<Wire> {
        let before = Wire::read(&self.host)?;
        std::thread::sleep(for_);
        Ok(Wire::read(&self.host)?.since(before))
    }

    fn profile(&self, name: ProfileName, n: usize) -> anyhow::Result<()> {
        let p = LinkProfile::of(name);
        let id = format!("BB-07-BENCH{n}");
        let flip = tempfile::tempdir()?;
        let (flip_on, flip_state) = (flip.path().join("on"), flip.path().join("state"));
        // A check that passes, except while `on` exists: then it fails and
        // passes by turns.
        let check = format!(
            "test ! -e {on} || {{ if [ -e {st} ]; then rm {st}; exit 1; else touch {st}; fi; }}",
            on = flip_on.display(),
            st = flip_state.display()
        );
        let toml = format!(
            "[link]\nprofile = \"{name}\"\n\
             [mqtt]\nbackoff_base_ms = 500\nbackoff_max_ms = 2000\n\
             [health]\ncpu_pct_high = 101\nmem_used_pct_high = 101\ndisk_free_pct_low = 0\n\
             temp_c_high = 1000\nbattery_pct_low = 0\n\
             [[checks.list]]\nname = \"printer\"\ncommand = [\"sh\", \"-c\", {check:?}]\n"
        );
        let before = Wire::read(&self.host)?;
        let dev = enrol_through(&self.ctl, &self.host, &id, "IR-07", "IR-07-ZAHE", &toml)?;
        let enrol = Wire::read(&self.host)?.since(before);
        println!("\n== profile {name} (keep-alive {} s, health report every {} s, sample every {} s, checks every {} s, coalesce {} s)",
            p.keep_alive_secs, p.health_report_secs, p.health_sample_secs, p.checks_interval_secs, p.coalesce_secs);
        println!(
            "enrolment (HTTPS through the link): {} B / {} B IP",
            enrol.bytes,
            enrol.ip_bytes()
        );

        let unit = UNIT_SECS.to_string();
        let units = f64::from(self.a.units);
        let window = Duration::from_secs(UNIT_SECS * u64::from(self.a.units));

        // One keep-alive exchange: pings every UNIT_SECS, nothing else.
        let mut agent = self.start_agent(
            &dev,
            &[
                ("FLEET_AGENT__MQTT__KEEP_ALIVE_SECS", &unit),
                ("FLEET_AGENT__HEALTH__REPORT_SECS", "86400"),
            ],
        )?;
        let health0 = self.ingested("health")?;
        let ping = self.measure(window)?.per(units);
        let stray = self.ingested("health")? - health0;
        agent.terminate(Duration::from_secs(20))?;
        if stray > 0.0 {
            println!("  (note: {stray} health reports fell in the keep-alive window)");
        }

        // One health report: every UNIT_SECS, pings an hour apart.
        let mut agent = self.start_agent(
            &dev,
            &[
                ("FLEET_AGENT__MQTT__KEEP_ALIVE_SECS", "3600"),
                ("FLEET_AGENT__HEALTH__SAMPLE_SECS", "1"),
                ("FLEET_AGENT__HEALTH__REPORT_SECS", &unit),
            ],
        )?;
        let health0 = self.ingested("health")?;
        let wire = self.measure(window)?;
        let reports = self.ingested("health")? - health0;
        agent.terminate(Duration::from_secs(20))?;
        if reports < 1.0 {
            bail!("no health report reached the controller in the health window");
        }
        let health = wire.per(reports);

        // One check outcome change: its event and the new state.
        std::fs::write(&flip_on, "")?;
        let mut agent = self.start_agent(
            &dev,
            &[
                ("FLEET_AGENT__MQTT__KEEP_ALIVE_SECS", "3600"),
                ("FLEET_AGENT__HEALTH__REPORT_SECS", "86400"),
                ("FLEET_AGENT__CHECKS__INTERVAL_SECS", &unit),
            ],
        )?;
        let (ev0, st0) = (self.ingested("events")?, self.ingested("state")?);
        let wire = self.measure(window)?;
        let (events, states) = (
            self.ingested("events")? - ev0,
            self.ingested("state")? - st0,
        );
        agent.terminate(Duration::from_secs(20))?;
        std::fs::remove_file(&flip_on)?;
        let _ = std::fs::remove_file(&flip_state);
        let change = wire.per(events.max(1.0));

        println!(
            "unit costs (averaged): keep-alive exchange {ping} over {} pings; \
             health report {health} over {reports} reports; \
             check outcome change (event + state, QoS 1) {change} over {events} events and {states} states",
            self.a.units
        );
        let pings_h = 3600.0 / p.keep_alive_secs as f64;
        let reports_h = 3600.0 / p.health_report_secs as f64;
        let hour = pings_h * ping.bytes + reports_h * health.bytes;
        let hour_ip = pings_h * ping.ip + reports_h * health.ip;
        println!(
            "healthy idle hour: {hour:.0} B / {hour_ip:.0} B IP, computed from measured unit costs: \
             {pings_h:.0} pings x {:.0} B + {reports_h:.0} reports x {:.0} B \
             (no state: sent on connection and on change only; passing checks send nothing) [target <= 2048]",
            ping.bytes, health.bytes
        );

        // A reconnection, with and without TLS session resumption.
        let mut per_mode = Vec::new();
        for resumption in [true, false] {
            let on = if resumption { "true" } else { "false" };
            let mut agent = self.start_agent(
                &dev,
                &[
                    ("FLEET_AGENT__MQTT__KEEP_ALIVE_SECS", "3600"),
                    ("FLEET_AGENT__HEALTH__REPORT_SECS", "86400"),
                    ("FLEET_AGENT__LINK__TLS_RESUMPTION", on),
                ],
            )?;
            let mut total = Wire::default();
            let mut down = 0u64;
            for _ in 0..self.a.reconnects {
                let connected = agent.output().matches("connected to broker").count();
                let before = Wire::read(&self.host)?;
                let down_before = self.host.bytes()?.to_host;
                self.broker.sever();
                let end = Instant::now() + Duration::from_secs(180);
                while agent.output().matches("connected to broker").count() == connected {
                    if Instant::now() > end {
                        bail!("the agent did not reconnect within 180 s");
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                std::thread::sleep(SETTLE);
                let w = Wire::read(&self.host)?.since(before);
                down += self.host.bytes()?.to_host - down_before;
                total.bytes += w.bytes;
                total.frames += w.frames;
            }
            agent.terminate(Duration::from_secs(20))?;
            let n = f64::from(self.a.reconnects);
            let per = total.per(n);
            println!(
                "reconnect, tls_resumption = {on}: {per} per reconnection over {} ({:.0} B of them to the device)",
                self.a.reconnects,
                down as f64 / n
            );
            per_mode.push(per);
        }
        if let [resumed, full] = per_mode[..] {
            // A resumed TLS 1.3 handshake carries no certificates and no
            // signatures: the difference is the sign that it resumed.
            println!(
                "  session resumption saves {:.0} B per reconnection ({:.0} %): {}",
                full.bytes - resumed.bytes,
                100.0 * (full.bytes - resumed.bytes) / full.bytes,
                if full.bytes - resumed.bytes > 1000.0 {
                    "the handshakes resumed (the certificate chains were not sent again)"
                } else {
                    "NO RESUMPTION SEEN (the two cost the same)"
                }
            );
        }

        // A day offline, then the link returns.
        self.host.cut()?;
        let day = offline_day::fill(
            &dev.state_dir(),
            &id,
            p.health_sample_secs,
            p.coalesce_secs,
            fleet_agent::unix_ms(),
        )?;
        let (ev0, h0) = (self.ingested("events")?, self.ingested("health")?);
        let config = dev.config.to_str().context("utf-8 path")?;
        let mut agent = self
            .host
            .spawn_bin("fleet-agent", &["run", "--config", config], &[])?;
        agent.wait_for_line("outbox opened", Duration::from_secs(30))?;
        std::thread::sleep(Duration::from_secs(3));
        let before = Wire::read(&self.host)?;
        self.host.restore()?;
        let end = Instant::now() + Duration::from_secs(600);
        loop {
            let events = self.ingested("events")? - ev0;
            let health = self.ingested("health")? - h0;
            if events >= day.events.len() as f64 && health >= day.health_records as f64 {
                break;
            }
            if Instant::now() > end {
                bail!("the day's records did not arrive within 600 s: {events} events, {health} health");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // The last acknowledgements.
        std::thread::sleep(Duration::from_secs(3));
        let catch_up = Wire::read(&self.host)?.since(before);
        agent.terminate(Duration::from_secs(20))?;
        println!(
            "catch-up after a day offline ({} health samples in {} records, {} events; {} B in the outbox): \
             {} B / {} B IP ({} frames) from the link's return, reconnection included [target <= 20480]",
            day.health_samples,
            day.health_records,
            day.events.len(),
            day.outbox_bytes,
            catch_up.bytes,
            catch_up.ip_bytes(),
            catch_up.frames
        );

        if name == ProfileName::Slow && self.a.cross_check_minutes > 0.0 {
            self.cross_check(&dev, p, ping, health)?;
        }
        Ok(())
    }

    /// The slow profile as shipped for some real minutes, against what the
    /// unit costs predict.
    fn cross_check(
        &self,
        dev: &NsDevice,
        p: LinkProfile,
        ping: PerUnit,
        health: PerUnit,
    ) -> anyhow::Result<()> {
        let config = dev.config.to_str().context("utf-8 path")?;
        let mut agent = self
            .host
            .spawn_bin("fleet-agent", &["run", "--config", config], &[])?;
        agent.wait_for_line("connected to broker", Duration::from_secs(180))?;
        let connected = Instant::now();
        std::thread::sleep(SETTLE);
        let h0 = self.ingested("health")?;
        let from = connected.elapsed().as_secs_f64();
        let secs = self.a.cross_check_minutes * 60.0;
        let wire = self.measure(Duration::from_secs_f64(secs))?;
        let to = connected.elapsed().as_secs_f64();
        let reports = self.ingested("health")? - h0;
        agent.terminate(Duration::from_secs(20))?;
        // rumqttc pings every keep-alive from the connection on, whatever
        // else was sent.
        let k = p.keep_alive_secs as f64;
        let pings = ((to / k).floor() - (from / k).floor()).max(0.0);
        let predicted = pings * ping.bytes + reports * health.bytes;
        println!(
            "cross-check, the slow profile as shipped for {:.1} min: measured {} B / {} B IP ({} frames); \
             predicted from the unit costs for the {pings} pings and {reports} health reports in that time: {predicted:.0} B",
            secs / 60.0,
            wire.bytes,
            wire.ip_bytes(),
            wire.frames
        );
        Ok(())
    }
}

/// IPv6 off on both ends of the link. The devices and the controller
/// speak IPv4 here; left on, each end's kernel sends IPv6 router
/// solicitations (70 B each, every few minutes while the link is young),
/// which a device's serial or PPP link would not carry and which the
/// slow profile's cross-check first counted as the agent's.
fn quiet_ipv6(host: &Host) -> anyhow::Result<()> {
    let off = |ns: Option<&str>, dev: &str| -> anyhow::Result<()> {
        let key = format!("net.ipv6.conf.{dev}.disable_ipv6=1");
        let out = match ns {
            Some(_) => host.run("sysctl", &["-q", "-w", &key])?,
            None => std::process::Command::new("sysctl")
                .args(["-q", "-w", &key])
                .output()
                .context("cannot run sysctl")?,
        };
        if !out.status.success() {
            bail!(
                "sysctl {key} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    };
    off(None, &host.name)?;
    off(Some(&host.name), "eth0")
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let host = Host::new()?;
    quiet_ipv6(&host)?;
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
    let api = host.forward(api_port)?;
    let broker = host.forward(ctl.mqtt_port)?;
    host.rate(a.kbit)?;
    host.loss(a.loss)?;
    println!(
        "link-bench: {} kbit/s both ways (tc tbf), {} % random loss (nftables); \
         bytes on the veth link, both directions, TCP/IP + TLS; each figure with the \
         14-byte Ethernet header per frame / without it",
        a.kbit, a.loss
    );
    let bench = Bench {
        host,
        ctl,
        broker,
        _api: api,
        rt,
        a,
    };
    let profiles = bench.a.profiles.clone();
    let mut result = Ok(());
    for (n, name) in profiles.into_iter().enumerate() {
        if let Err(e) = bench.profile(name, n + 1) {
            result = Err(e.context(format!("profile {name}")));
            break;
        }
    }
    let Bench { host, ctl, .. } = bench;
    drop(host);
    ctl.stop()?;
    result
}
