//! Namespaced hosts behind real, slow and broken links: the one helper every
//! link test builds its devices' network with.
//!
//! A [`Host`] is a Linux network namespace joined to the root namespace by a
//! veth pair, on a /30 of its own in 198.18.0.0/15 (the range RFC 2544 sets
//! aside for network tests), chosen from the test process's pid and a
//! counter so that parallel tests and processes never share one. On it:
//!
//! - [`Host::cut`] / [`Host::restore`]: every packet arriving on either end
//!   of the link is dropped (an nftables rule), as if the cable were pulled:
//!   senders see silence, not an error, and TCP retransmits until it gives
//!   up or the link returns.
//! - [`Host::rate`]: a token bucket filter (`tc … tbf`) on both ends.
//! - [`Host::loss`]: random loss on both ends (`nft … numgen random mod 100
//!   < P drop`). This kernel has no netem; for latency, see
//!   [`crate::proxy::Proxy::set_delay`].
//! - [`Host::bytes`]: the link's counters, which count every byte on the
//!   wire: TCP/IP and TLS, plus a 14-byte Ethernet header per packet.
//! - [`Host::run`], [`Host::spawn`], [`Host::spawn_bin`]: processes inside
//!   (`ip netns exec`).
//! - [`Host::forward`]: a forwarder on the root side of the link to a port
//!   on 127.0.0.1, where the controller's API and managed broker listen.
//!
//! Inside a host the name `localhost` is the root side of its link
//! (`/etc/netns/NAME/hosts`, which `ip netns exec` puts in place of
//! `/etc/hosts`). The controller's and the broker's certificates name
//! `localhost` and 127.0.0.1 only, so this is how a device in the namespace
//! reaches them with the certificate checked as usual: the controller is
//! told `broker.host = "localhost"` and the device is given
//! `https://localhost:PORT`, and [`Host::forward`] carries the port on.
//!
//! Everything is undone on drop (namespace, veth pair, nftables table,
//! `/etc/netns/NAME`), also when a test panics; a process killed outright
//! leaves its hosts behind, and the next [`Host::new`] on the machine
//! removes those whose process is gone.
//!
//! Needs root (CAP_NET_ADMIN), `ip`, `tc` and `nft` (`scripts/ensure-deps`
//! installs nftables). Where that is missing or the kernel refuses, the
//! error says so and the test fails: a link test never passes silently.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context};

use crate::proxy::Proxy;
use crate::Proc;

/// Every host's name starts with this, then the pid, `n`, and a counter.
const PREFIX: &str = "sdg";
/// The first address of 198.18.0.0/15.
const BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
/// /30s in 198.18.0.0/15.
const SLOTS: u32 = 1 << 15;
/// Hosts one process may hold at once before its slots wrap.
const PER_PROCESS: u32 = 32;
/// The namespace side of every link is called this (inside its namespace).
const INNER: &str = "eth0";
/// How to install what is missing.
pub const LINK_INSTALL: &str =
    "run scripts/ensure-deps as root (installs nftables; iproute2 gives ip and tc)";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// What the link does to packets now.
#[derive(Debug, Clone, Copy, Default)]
struct Shape {
    cut: bool,
    loss_percent: u8,
}

/// Bytes on the link so far, from the root side's interface counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkBytes {
    /// Sent by the host (into the root namespace).
    pub from_host: u64,
    /// Sent to the host.
    pub to_host: u64,
}

impl LinkBytes {
    pub fn total(&self) -> u64 {
        self.from_host + self.to_host
    }

    /// The bytes since `earlier`.
    pub fn since(&self, earlier: LinkBytes) -> LinkBytes {
        LinkBytes {
            from_host: self.from_host.saturating_sub(earlier.from_host),
            to_host: self.to_host.saturating_sub(earlier.to_host),
        }
    }
}

/// A network namespace with a veth link to the root namespace; removed on drop.
pub struct Host {
    /// The namespace's name, also the root side's interface name (≤ 15 chars).
    pub name: String,
    /// The root side of the link: what the host reaches as `localhost`.
    pub root_addr: Ipv4Addr,
    /// The host's own address.
    pub addr: Ipv4Addr,
    shape: Mutex<Shape>,
}

impl Host {
    /// A new host, or why none could be made (with what to do about it).
    pub fn new() -> anyhow::Result<Self> {
        preflight()?;
        sweep_stale();
        let pid = std::process::id();
        let mut last_err = None;
        for _ in 0..PER_PROCESS {
            let k = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("{PREFIX}{pid}n{k}");
            let slot = ((pid % (SLOTS / PER_PROCESS)) * PER_PROCESS + k % PER_PROCESS) % SLOTS;
            let net = BASE + slot * 4;
            let (root_addr, addr) = (Ipv4Addr::from(net + 1), Ipv4Addr::from(net + 2));
            if address_in_use(root_addr)? {
                continue;
            }
            let host = Host {
                name,
                root_addr,
                addr,
                shape: Mutex::new(Shape::default()),
            };
            match host.build() {
                Ok(()) => return Ok(host),
                Err(e) => last_err = Some(e),
            }
        }
        match last_err {
            Some(e) => Err(e.context(format!(
                "LINK TESTS CANNOT RUN: this machine refused a network namespace with a veth link ({LINK_INSTALL})"
            ))),
            None => bail!("LINK TESTS CANNOT RUN: every address slot of this process is in use"),
        }
    }

    /// [`Host::new`], or a panic that says loudly why link tests cannot run here.
    pub fn require() -> Self {
        match Self::new() {
            Ok(h) => h,
            Err(e) => panic!("\n\n*** {e:#} ***\n\n"),
        }
    }

    fn build(&self) -> anyhow::Result<()> {
        let (n, root) = (self.name.as_str(), self.root_addr.to_string());
        cmd("ip", &["netns", "add", n])?;
        cmd(
            "ip",
            &[
                "link", "add", n, "type", "veth", "peer", "name", INNER, "netns", n,
            ],
        )?;
        cmd("ip", &["addr", "add", &format!("{root}/30"), "dev", n])?;
        cmd("ip", &["link", "set", n, "up"])?;
        cmd(
            "ip",
            &[
                "-n",
                n,
                "addr",
                "add",
                &format!("{}/30", self.addr),
                "dev",
                INNER,
            ],
        )?;
        cmd("ip", &["-n", n, "link", "set", INNER, "up"])?;
        cmd("ip", &["-n", n, "link", "set", "lo", "up"])?;
        let etc = self.etc_dir();
        std::fs::create_dir_all(&etc).with_context(|| format!("cannot make {}", etc.display()))?;
        std::fs::write(
            etc.join("hosts"),
            format!(
                "# link test host {n}: localhost is the root side of its link\n{root} localhost\n{} {n}\n",
                self.addr
            ),
        )?;
        self.apply(Shape::default())
    }

    fn etc_dir(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.name)
    }

    /// The nftables table of this link in the root namespace.
    fn root_table(&self) -> String {
        format!("link_{}", self.name)
    }

    /// Write the drop rules for `shape` on both ends, atomically each.
    fn apply(&self, shape: Shape) -> anyhow::Result<()> {
        let rules = |iif: &str| {
            let mut r = String::new();
            if shape.cut {
                r.push_str(&format!("    iifname \"{iif}\" counter drop\n"));
            } else if shape.loss_percent > 0 {
                r.push_str(&format!(
                    "    iifname \"{iif}\" numgen random mod 100 < {} counter drop\n",
                    shape.loss_percent
                ));
            }
            r
        };
        let script = |table: &str, iif: &str| {
            format!(
                "table inet {table} {{}}\ndelete table inet {table}\n\
                 table inet {table} {{\n  chain input {{\n    type filter hook input priority -10; policy accept;\n{}  }}\n}}\n",
                rules(iif)
            )
        };
        nft(None, &script(&self.root_table(), &self.name))?;
        nft(Some(&self.name), &script("link", INNER))?;
        *self.shape.lock().expect("shape lock") = shape;
        Ok(())
    }

    fn shape(&self) -> Shape {
        *self.shape.lock().expect("shape lock")
    }

    /// Drop every packet on the link, both ways, until [`Host::restore`].
    pub fn cut(&self) -> anyhow::Result<()> {
        self.apply(Shape {
            cut: true,
            ..self.shape()
        })
    }

    /// Undo [`Host::cut`] (a configured loss stays).
    pub fn restore(&self) -> anyhow::Result<()> {
        self.apply(Shape {
            cut: false,
            ..self.shape()
        })
    }

    /// Drop `percent` % of the packets arriving at either end, at random.
    pub fn loss(&self, percent: u8) -> anyhow::Result<()> {
        if percent > 100 {
            bail!("loss of {percent} %");
        }
        self.apply(Shape {
            loss_percent: percent,
            ..self.shape()
        })
    }

    /// Limit both directions to `kbit` kbit/s (tc tbf); 0 removes the limit.
    pub fn rate(&self, kbit: u32) -> anyhow::Result<()> {
        for ns in [None, Some(self.name.as_str())] {
            let dev = if ns.is_some() { INNER } else { &self.name };
            let mut args: Vec<String> = Vec::new();
            if let Some(ns) = ns {
                args.extend(["-n".into(), ns.into()]);
            }
            if kbit == 0 {
                args.extend(["qdisc", "del", "dev", dev, "root"].map(String::from));
                let _ = cmd_owned("tc", &args);
                continue;
            }
            // The bucket holds at least one full frame, else nothing passes;
            // the queue holds about two seconds of traffic, like a modem's buffer.
            let bytes_per_sec = u64::from(kbit) * 1000 / 8;
            let burst = bytes_per_sec.div_ceil(10).max(1600);
            let limit = (bytes_per_sec * 2).max(16 * 1024);
            args.extend(
                [
                    "qdisc",
                    "replace",
                    "dev",
                    dev,
                    "root",
                    "tbf",
                    "rate",
                    &format!("{kbit}kbit"),
                    "burst",
                    &burst.to_string(),
                    "limit",
                    &limit.to_string(),
                ]
                .map(String::from),
            );
            cmd_owned("tc", &args)?;
        }
        Ok(())
    }

    /// The link's byte counters (`/sys/class/net/NAME/statistics`, root side).
    pub fn bytes(&self) -> anyhow::Result<LinkBytes> {
        let read = |what: &str| -> anyhow::Result<u64> {
            let p = format!("/sys/class/net/{}/statistics/{what}", self.name);
            std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read {p}"))?
                .trim()
                .parse()
                .with_context(|| format!("{p} is not a number"))
        };
        Ok(LinkBytes {
            from_host: read("rx_bytes")?,
            to_host: read("tx_bytes")?,
        })
    }

    /// Packets the link's rules dropped so far (cut and loss, both ends).
    pub fn dropped(&self) -> anyhow::Result<u64> {
        let count = |out: Output| {
            String::from_utf8_lossy(&out.stdout)
                .split("packets ")
                .skip(1)
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum::<u64>()
        };
        let root = Command::new("nft")
            .args(["list", "table", "inet", &self.root_table()])
            .output()?;
        let inner = self.run("nft", &["list", "table", "inet", "link"])?;
        Ok(count(root) + count(inner))
    }

    /// `ip netns exec NAME program args…`, not yet started.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]).args(args);
        c
    }

    /// Run `program args…` inside to completion.
    pub fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        self.command(program, args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {program} in {}", self.name))
    }

    /// Start `program args…` inside (`ip netns exec` execs it, so the
    /// child's pid is the program's); the caller stops it.
    pub fn spawn(&self, program: &str, args: &[&str]) -> anyhow::Result<std::process::Child> {
        self.command(program, args)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {program} in {}", self.name))
    }

    /// A workspace binary inside, its output collected, stopped on drop.
    pub fn spawn_bin(
        &self,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Proc> {
        let bin = crate::bin_path(name)?;
        let bin = bin.to_str().context("utf-8 binary path")?;
        let mut c = self.command(bin, args);
        for (k, v) in env {
            c.env(k, v);
        }
        Proc::from_command(name, c)
    }

    /// A workspace binary run inside to completion: (success, stdout, stderr).
    pub fn run_bin(&self, name: &str, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
        let bin = crate::bin_path(name)?;
        let out = self.run(bin.to_str().context("utf-8 binary path")?, args)?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// A forwarder from the root side of this link, port `port`, to
    /// 127.0.0.1:`port`: the host then reaches a service on the root's
    /// loopback as `localhost:port`, through the link.
    pub fn forward(&self, port: u16) -> anyhow::Result<Proxy> {
        Proxy::start(
            SocketAddr::from((self.root_addr, port)),
            SocketAddr::from(([127, 0, 0, 1], port)),
        )
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        remove(&self.name);
    }
}

/// Everything a host named `name` made, removed; errors are ignored (it
/// may be half made).
fn remove(name: &str) {
    let quiet = |program: &str, args: &[&str]| {
        let _ = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    };
    // Deleting the namespace removes its end of the veth pair, and so the pair.
    quiet("ip", &["netns", "del", name]);
    quiet("ip", &["link", "del", name]);
    quiet("nft", &["delete", "table", "inet", &format!("link_{name}")]);
    let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(name));
}

/// Remove the hosts of test processes that no longer run.
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('n').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            remove(name);
        }
    }
}

/// Root, and the tools.
fn preflight() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        bail!("LINK TESTS CANNOT RUN: they need root (CAP_NET_ADMIN) to make network namespaces; this process runs as uid {euid}");
    }
    for tool in ["ip", "tc", "nft"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            bail!("LINK TESTS CANNOT RUN: `{tool}` is not installed; {LINK_INSTALL}");
        }
    }
    Ok(())
}

fn address_in_use(addr: Ipv4Addr) -> anyhow::Result<bool> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .context("cannot run ip")?;
    let needle = format!(" {addr}/");
    Ok(String::from_utf8_lossy(&out.stdout).contains(&needle))
}

fn cmd(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn cmd_owned(program: &str, args: &[String]) -> anyhow::Result<()> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cmd(program, &args)
}

/// Feed `script` to `nft -f -`, in namespace `ns` or the root one.
fn nft(ns: Option<&str>, script: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "nft", "-f", "-"]);
            c
        }
        None => {
            let mut c = Command::new("nft");
            c.args(["-f", "-"]);
            c
        }
    };
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft")?;
    child
        .stdin
        .take()
        .context("nft's stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft refused the link's rules: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A device enrolled from inside a [`Host`]: its files (config, state
/// directory with the identity and the fleet CA).
pub struct NsDevice {
    pub id: String,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl NsDevice {
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

/// The warehouse's shipment of one device (root side, fleetctl), then
/// `fleet-agent enrol` inside `host` through its link against
/// `https://localhost:API_PORT` (forward the port first). `agent_toml` is
/// appended to the device's config. The controller must hand out
/// `broker.host = "localhost"` for the device to reach the broker later.
pub fn enrol_through(
    ctl: &crate::Controller,
    host: &Host,
    id: &str,
    province: &str,
    county: &str,
    agent_toml: &str,
) -> anyhow::Result<NsDevice> {
    let api_port: u16 = ctl
        .api
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .context("the controller's API port")?;
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name);
    let utf8 = |p: &std::path::Path| -> anyhow::Result<String> {
        Ok(p.to_str().context("utf-8 path")?.to_owned())
    };
    std::fs::write(
        path("shipment.csv"),
        format!("serial,model,province,county\n{id},ballot-box-v2,{province},{county}\n"),
    )?;
    let (ok, out, err) = ctl.fleetctl(&[
        "enrol",
        "batch",
        &utf8(&path("shipment.csv"))?,
        "--output",
        "json",
        "--sheet-dir",
        &utf8(dir.path())?,
    ])?;
    if !ok {
        bail!("enrol batch failed: {err}");
    }
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let token = v["devices"][0]["token"]
        .as_str()
        .context("no token in the batch answer")?;
    std::fs::write(path("enrol.token"), token)?;
    std::fs::write(path("firmware-version"), "2.4.0\n")?;
    let config = path("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[device]\nid = \"{id}\"\nmodel = \"ballot-box-v2\"\nfirmware_version_file = \"{}\"\nstate_dir = \"{}\"\n{agent_toml}",
            path("firmware-version").display(),
            path("state").display()
        ),
    )?;
    // The image's CA, as shipped.
    std::fs::copy(ctl.ca(), path("fleet-ca.crt"))?;
    let (ok, out, err) = host.run_bin(
        "fleet-agent",
        &[
            "enrol",
            "--controller",
            &format!("https://localhost:{api_port}"),
            "--ca",
            &utf8(&path("fleet-ca.crt"))?,
            "--token-file",
            &utf8(&path("enrol.token"))?,
            "--config",
            &utf8(&config)?,
        ],
    )?;
    if !ok {
        bail!("fleet-agent enrol through the link failed: {out}{err}");
    }
    Ok(NsDevice {
        id: id.to_owned(),
        dir,
        config,
    })
}
