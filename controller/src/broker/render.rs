//! Mosquitto's configuration and ACL, central and provincial. Pure: the
//! managed brokers of `serve` and `fleet-controller broker-config` (whose
//! output Ansible deploys) render through the same functions, so the field
//! runs what the tests run. Every option is one of Mosquitto 2.0.11's
//! (`mosquitto.conf(5)` on Debian 12).

use std::path::{Path, PathBuf};

use fleet_protocol::topic::bridge_identity;
use fleet_protocol::ProvinceCode;

use super::BrokerTls;

/// Where and how a broker listens, and where its files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `user` line: the account a root-started Mosquitto drops to.
    pub user: Option<String>,
    /// The address the device listener binds (`127.0.0.1` on one machine).
    pub bind: String,
    pub port: u16,
    /// Mutual TLS on the listener; `None` only with `--insecure-dev`.
    pub tls: Option<BrokerTls>,
    /// The ACL file.
    pub acl: PathBuf,
    /// Persistence, pid file and log.
    pub state: PathBuf,
}

impl Layout {
    /// A managed broker's layout in its directory `dir` (see `account`).
    pub fn managed(
        dir: &Path,
        port: u16,
        tls: Option<&BrokerTls>,
        account: Option<&super::account::Account>,
    ) -> Self {
        Self {
            user: account.map(|a| a.name.clone()),
            bind: "127.0.0.1".to_owned(),
            port,
            tls: tls.cloned(),
            acl: dir.join("acl"),
            state: super::account::state_dir(dir),
        }
    }
}

/// The bridge of a provincial broker to the central one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    /// The provincial broker's name; its bridge identity is `bridge.{name}`.
    pub name: String,
    /// The provinces it serves (written in the config's header only: the
    /// central broker's ACL and the controller decide who may speak for whom).
    pub provinces: Vec<ProvinceCode>,
    /// The central broker (or a relay in front of it), `host:port`.
    pub address: String,
    /// CA, client certificate and key of the bridge; `None` only with
    /// `--insecure-dev`.
    pub tls: Option<BridgeTls>,
    /// Bounds of the queue held for the central broker while the uplink is
    /// down (Mosquitto applies them to every client; only the bridge ever
    /// queues many).
    pub queue: QueueBounds,
    /// Its reconnect backoff while the uplink is down.
    pub retry: BridgeRetry,
}

/// A bridge's `restart_timeout MIN MAX`: after a lost or refused
/// connection Mosquitto waits a random time growing from MIN up to MAX
/// seconds ("decorrelated jitter") before the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeRetry {
    pub min_secs: u32,
    pub max_secs: u32,
}

impl BridgeRetry {
    /// `1 <= min <= max <= 3600`, else why not.
    pub fn new(min_secs: u32, max_secs: u32) -> Result<Self, String> {
        if min_secs == 0 {
            return Err("the bridge's first retry waits at least 1 second".into());
        }
        if max_secs < min_secs {
            return Err(format!(
                "bridge retry: max {max_secs} s is below min {min_secs} s"
            ));
        }
        if max_secs > 3600 {
            return Err(format!(
                "bridge retry: max {max_secs} s; at most 3600 (a link would come back up to that long after its uplink)"
            ));
        }
        Ok(Self { min_secs, max_secs })
    }

    /// `MIN,MAX`, as `broker-config --bridge-retry` takes it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once(',')
            .ok_or_else(|| format!("{s:?}: expected MIN,MAX (seconds)"))?;
        let n = |v: &str| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| format!("{s:?}: {v:?} is not a number of seconds"))
        };
        Self::new(n(a)?, n(b)?)
    }
}

impl Default for BridgeRetry {
    fn default() -> Self {
        Self {
            min_secs: RESTART_TIMEOUT.0,
            max_secs: RESTART_TIMEOUT.1,
        }
    }
}

/// The bridge's TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `max_queued_messages` and `max_queued_bytes` of a provincial broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueBounds {
    pub messages: u64,
    pub bytes: u64,
}

impl Default for QueueBounds {
    /// About eight hours of uplink outage for the largest provincial
    /// broker planned ([`OutageLoad::PLAN`]: 15,000 devices): 975,000
    /// queued messages an hour, most of them copies of retained reports
    /// (see [`OutageLoad`]). The bytes bound counts each copy's payload
    /// (a few hundred bytes at most), so the message bound is the one met.
    fn default() -> Self {
        Self {
            messages: 8_000_000,
            bytes: 2 * 1024 * 1024 * 1024,
        }
    }
}

/// The bridge's reconnect backoff while the uplink is down: Mosquitto's
/// "decorrelated jitter" from 10 s up to 300 s. A link comes back at most
/// about five minutes after the uplink; every attempt costs a copy of
/// every retained report in the queue (below), so fewer attempts are
/// worth the wait (`restart_timeout 2 60` made about 97 an hour).
pub const RESTART_TIMEOUT: (u32, u32) = (10, 300);

/// What an uplink outage queues on a provincial broker, per hour.
/// Mosquitto 2.0.11 (Debian 12; eclipse/mosquitto#2248) subscribes the
/// bridge's local topics again on each reconnect attempt and so queues one
/// more copy of every retained message they match: each device's presence
/// and state. Queued per hour: `devices × (retained × attempts + reports)`;
/// an outage lasts `max_queued_messages / that` hours before Mosquitto
/// drops each NEW QoS 1 message (events of the outage included).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutageLoad {
    pub devices: u64,
    /// Retained reports per device the bridge carries (presence, state).
    pub retained_per_device: u64,
    /// Reconnect attempts an hour: 3600 s over the mean backoff. With
    /// [`RESTART_TIMEOUT`] a simulation of the documented jitter gives about
    /// 20 (mean 180 s); planned with 24.
    pub attempts_per_hour: u64,
    /// The devices' own QoS 1 reports an hour (presence, state, events).
    pub reports_per_device_hour: u64,
}

impl OutageLoad {
    /// The largest group of provinces on one broker (15,000 devices, each
    /// sending a few dozen QoS 1 reports in an hour of trouble).
    pub const PLAN: OutageLoad = OutageLoad {
        devices: 15_000,
        retained_per_device: 2,
        attempts_per_hour: 24,
        reports_per_device_hour: 17,
    };

    /// Messages queued per hour of outage.
    pub fn per_hour(&self) -> u64 {
        self.devices
            * (self.retained_per_device * self.attempts_per_hour + self.reports_per_device_hour)
    }

    /// Hours of outage before the queue is full.
    pub fn hours(&self, bounds: QueueBounds) -> f64 {
        bounds.messages as f64 / self.per_hour().max(1) as f64
    }
}

/// The device report kinds a bridge carries up at QoS 1 (retained ones keep
/// their retain flag: the bridge announces itself with `try_private`).
pub const BRIDGE_UP_QOS1: [&str; 4] = ["presence", "state", "events", "csr"];
/// Carried up at QoS 0: periodic metrics, never queued during an outage.
pub const BRIDGE_UP_QOS0: [&str; 1] = ["health"];
/// Carried down at QoS 1 from the controller to the devices.
pub const BRIDGE_DOWN: [&str; 3] = ["desired", "cmd", "cert"];

const HEADER: &str = "# Written by fleet-controller; edits here are overwritten.\n";

/// A device's own topics: it writes its reports and certificate requests,
/// reads its desired state, commands and renewed certificates (checked on
/// every delivery: Mosquitto's ACL does not check SUBSCRIBE, so what a
/// device subscribes to gives it nothing else; decision 0008).
const DEVICE_PATTERNS: &str = "pattern write fleet/v1/dev/%u/presence\n\
     pattern write fleet/v1/dev/%u/state\n\
     pattern write fleet/v1/dev/%u/health\n\
     pattern write fleet/v1/dev/%u/events\n\
     pattern read fleet/v1/dev/%u/desired\n\
     pattern read fleet/v1/dev/%u/cmd\n\
     pattern write fleet/v1/dev/%u/csr\n\
     pattern read fleet/v1/dev/%u/cert\n";

/// Who may touch which topic on the central broker: a device (its
/// certificate name is its user name and its client id) writes its own
/// reports and certificate requests and reads its own desired state,
/// commands and renewed certificates, nothing else; the controller reads
/// and writes all.
///
/// Each provincial broker of the tier (`bridges`, by name) gets a `user
/// bridge.{name}` block of plain `topic` lines: it writes and reads the
/// device topics under its own prefix `fleet/v1/b/bridge.{name}/` only, and
/// its link state on `fleet/v1/bridge/bridge.{name}/state`. No `pattern`
/// line opens `fleet/v1/b/`: a pattern applies to every user, so it would
/// let any device (user `BB-1`) publish retained messages under
/// `fleet/v1/b/BB-1/…` without bound. A bridge not in the tier may write
/// nothing there. The controller then accepts a device's message from a
/// bridge only if that bridge serves the device's province (a device id has
/// no dot, so no device is a bridge). The observer reads everything and
/// writes nothing.
pub fn render_acl(controller: &str, bridges: &[String]) -> String {
    let mut blocks = String::new();
    for name in bridges {
        let identity = bridge_identity(name);
        blocks.push_str(&format!("user {identity}\n"));
        for kind in BRIDGE_UP_QOS1.iter().chain(&BRIDGE_UP_QOS0) {
            blocks.push_str(&format!("topic write fleet/v1/b/{identity}/dev/+/{kind}\n"));
        }
        for kind in BRIDGE_DOWN {
            blocks.push_str(&format!("topic read fleet/v1/b/{identity}/dev/+/{kind}\n"));
        }
        blocks.push_str(&format!(
            "topic write {}\n\n",
            fleet_protocol::topic::bridge_state_topic(&identity)
        ));
    }
    format!(
        "# Written by fleet-controller at every start; edits here are overwritten.\n\
         user {controller}\n\
         topic readwrite fleet/v1/dev/#\n\
         topic readwrite fleet/v1/b/#\n\
         topic read fleet/v1/bridge/#\n\
         \n\
         user {observer}\n\
         topic read fleet/v1/#\n\
         \n\
         {blocks}\
         {DEVICE_PATTERNS}",
        observer = crate::pki::OBSERVER_IDENTITY
    )
}

/// The provincial broker's ACL: its devices as on the central broker, and
/// the observer (read-only, to watch a province on its own broker). The
/// bridge is the broker's own internal client, which Mosquitto does not
/// check against the ACL; what it may do is decided on the central broker.
/// The controller never connects here.
pub fn render_provincial_acl() -> String {
    format!(
        "{HEADER}\
         user {observer}\n\
         topic read fleet/v1/#\n\
         \n\
         {DEVICE_PATTERNS}",
        observer = crate::pki::OBSERVER_IDENTITY
    )
}

/// The lines every broker has: who it runs as, its device listener
/// (mutual TLS, certificate name = user name = client id, the ACL),
/// persistence, packet and in-flight limits, pid file and log.
fn common(l: &Layout) -> String {
    // Started by root, Mosquitto drops to this user after reading this file;
    // started by anyone else, it keeps that user (and ignores the line).
    let user = l
        .user
        .as_ref()
        .map(|u| format!("user {u}\n"))
        .unwrap_or_default();
    let security = match &l.tls {
        // The certificate name becomes the user name and the client id, so a
        // device can neither claim another's session nor pass the ACL as
        // another device.
        Some(t) => format!(
            "cafile {}\n\
             certfile {}\n\
             keyfile {}\n\
             crlfile {}\n\
             require_certificate true\n\
             use_identity_as_username true\n\
             use_username_as_clientid true\n\
             allow_anonymous false\n\
             acl_file {}\n",
            t.ca.display(),
            t.cert.display(),
            t.key.display(),
            t.crl.display(),
            l.acl.display()
        ),
        None => "allow_anonymous true\n".to_owned(),
    };
    format!(
        "{user}\
         per_listener_settings false\n\
         listener {port} {bind}\n\
         {security}\
         persistence true\n\
         persistence_location {state}/\n\
         autosave_interval 30\n\
         persistent_client_expiration 30d\n\
         max_packet_size 16384\n\
         max_inflight_messages 1000\n",
        port = l.port,
        bind = l.bind,
        state = l.state.display()
    )
}

fn logging(l: &Layout) -> String {
    format!(
        "pid_file {state}/mosquitto.pid\n\
         log_dest file {state}/mosquitto.log\n\
         log_type error\n\
         log_type warning\n\
         log_type notice\n\
         connection_messages true\n",
        state = l.state.display()
    )
}

/// The central broker's config.
///
/// The queue limit is per client and must hold a whole fleet reconnecting at
/// once for the controller (Mosquitto drops QoS 1 messages past it without a
/// word); devices themselves are only ever sent a handful of messages.
pub fn render_central(l: &Layout) -> String {
    format!(
        "{HEADER}{common}max_queued_messages 1000000\n{logging}",
        common = common(l),
        logging = logging(l)
    )
}

/// The config file the managed central Mosquitto runs with.
pub fn render_config(
    dir: &Path,
    port: u16,
    tls: Option<&BrokerTls>,
    account: Option<&super::account::Account>,
) -> String {
    render_central(&Layout::managed(dir, port, tls, account))
}

/// A provincial broker's config: its device listener as the central one's,
/// persistence, bounded queues for an uplink outage, and its bridge to the
/// central broker (the `connection` section comes last: every line after
/// it belongs to the bridge).
pub fn render_provincial(l: &Layout, b: &Bridge) -> String {
    let identity = bridge_identity(&b.name);
    let provinces: Vec<String> = b.provinces.iter().map(ToString::to_string).collect();
    let tls = match &b.tls {
        // Hostname verification stays on (no bridge_insecure): the central
        // broker's certificate must name the host of `address`.
        Some(t) => format!(
            "bridge_cafile {}\n\
             bridge_certfile {}\n\
             bridge_keyfile {}\n",
            t.ca.display(),
            t.cert.display(),
            t.key.display()
        ),
        None => String::new(),
    };
    let mut topics = String::new();
    let remote = format!("fleet/v1/b/{identity}/");
    for kind in BRIDGE_UP_QOS1 {
        topics.push_str(&format!("topic dev/+/{kind} out 1 fleet/v1/ {remote}\n"));
    }
    for kind in BRIDGE_UP_QOS0 {
        topics.push_str(&format!("topic dev/+/{kind} out 0 fleet/v1/ {remote}\n"));
    }
    for kind in BRIDGE_DOWN {
        topics.push_str(&format!("topic dev/+/{kind} in 1 fleet/v1/ {remote}\n"));
    }
    format!(
        "{HEADER}\
         # Provincial broker {name}: provinces {provinces}.\n\
         {common}\
         # While the uplink is down the bridge's session queues what goes up\n\
         # (QoS 1 only: Mosquitto queues QoS 0 for no one, so health reports\n\
         # of the outage are not sent later). Mosquitto 2.0.11 also queues one\n\
         # more copy of every retained presence and state on each reconnect\n\
         # attempt (eclipse/mosquitto#2248), so per hour of outage it queues\n\
         #   devices x (2 retained x attempts/h + reports/device/h)\n\
         # = 15,000 x (2 x 24 + 17) = 975,000 for 15,000 devices with\n\
         # restart_timeout 10 300 (about 20 attempts an hour; 24 planned):\n\
         # these bounds hold about 8 hours (about 40 minutes with 2 60).\n\
         # Each copy costs about 64 bytes of memory (measured on 2.0.11) and\n\
         # its payload in max_queued_bytes. When the queue is full, Mosquitto\n\
         # drops each NEW QoS 1 message and keeps the older ones: the first\n\
         # hours of an outage survive, the newest reports are lost (retained\n\
         # presence and state are sent again by devices on their next change\n\
         # or reconnection). The controller ignores the copies (not counted\n\
         # against a device's rate limit). Persisted every 30 s and on a clean\n\
         # stop.\n\
         max_queued_messages {messages}\n\
         max_queued_bytes {bytes}\n\
         {logging}\
         # Revocation: the managed brokers reload the CRL (SIGHUP) at every\n\
         # retirement; a broker Ansible runs must be given the new CRL by\n\
         # the controller's broker.crl_hook (copy it here, then SIGHUP).\n\
         \n\
         connection {identity}\n\
         address {address}\n\
         bridge_protocol_version mqttv311\n\
         remote_clientid {identity}\n\
         cleansession false\n\
         try_private true\n\
         notifications true\n\
         notification_topic fleet/v1/bridge/{identity}/state\n\
         keepalive_interval 20\n\
         restart_timeout {base} {cap}\n\
         start_type automatic\n\
         {tls}\
         {topics}",
        name = b.name,
        provinces = provinces.join(","),
        common = common(l),
        messages = b.queue.messages,
        bytes = b.queue.bytes,
        logging = logging(l),
        address = b.address,
        base = b.retry.min_secs,
        cap = b.retry.max_secs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> BrokerTls {
        BrokerTls {
            ca: "/etc/mosquitto/fleet/ca.crt".into(),
            cert: "/etc/mosquitto/fleet/broker.crt".into(),
            key: "/etc/mosquitto/fleet/broker.key".into(),
            crl: "/etc/mosquitto/fleet/crl.pem".into(),
        }
    }

    fn layout() -> Layout {
        Layout {
            user: Some("mosquitto".into()),
            bind: "0.0.0.0".into(),
            port: 8883,
            tls: Some(tls()),
            acl: "/etc/mosquitto/fleet/acl".into(),
            state: "/var/lib/mosquitto".into(),
        }
    }

    fn bridge() -> Bridge {
        Bridge {
            name: "north".into(),
            provinces: vec![
                ProvinceCode::parse("IR-02").unwrap(),
                ProvinceCode::parse("IR-27").unwrap(),
            ],
            address: "central.fleet:8883".into(),
            tls: Some(BridgeTls {
                ca: "/etc/mosquitto/fleet/ca.crt".into(),
                cert: "/etc/mosquitto/fleet/bridge.north.crt".into(),
                key: "/etc/mosquitto/fleet/bridge.north.key".into(),
            }),
            queue: QueueBounds::default(),
            retry: BridgeRetry::default(),
        }
    }

    fn lines(c: &str) -> Vec<&str> {
        c.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn config_listens_on_loopback_only() {
        let c = render_config(Path::new("/data/mosquitto"), 18831, None, None);
        assert!(c.contains("listener 18831 127.0.0.1\n"));
        assert!(c.contains("persistence_location /data/mosquitto/state/\n"));
        assert!(!c.contains("user "), "not root: no user line");
        assert!(!c.contains("0.0.0.0"));
        // An abandoned session does not hold a queue for ever.
        assert!(c.contains("persistent_client_expiration 30d\n"));
        assert!(
            !c.contains("connection "),
            "the central broker has no bridge"
        );
    }

    #[test]
    fn the_provincial_listener_is_the_central_one() {
        let central = render_central(&layout());
        let provincial = render_provincial(&layout(), &bridge());
        for line in [
            "user mosquitto",
            "listener 8883 0.0.0.0",
            "cafile /etc/mosquitto/fleet/ca.crt",
            "certfile /etc/mosquitto/fleet/broker.crt",
            "keyfile /etc/mosquitto/fleet/broker.key",
            "crlfile /etc/mosquitto/fleet/crl.pem",
            "require_certificate true",
            "use_identity_as_username true",
            "use_username_as_clientid true",
            "allow_anonymous false",
            "acl_file /etc/mosquitto/fleet/acl",
            "persistence true",
            "persistence_location /var/lib/mosquitto/",
            "persistent_client_expiration 30d",
            "max_packet_size 16384",
        ] {
            assert!(lines(&central).contains(&line), "central lacks {line}");
            assert!(
                lines(&provincial).contains(&line),
                "provincial lacks {line}"
            );
        }
    }

    #[test]
    fn the_provincial_broker_queues_bounded_and_bridges_under_its_prefix() {
        let c = render_provincial(&layout(), &bridge());
        let l = lines(&c);
        let bridge_at = l
            .iter()
            .position(|x| *x == "connection bridge.north")
            .expect("a bridge");
        // Every global option comes before the bridge section.
        for global in [
            "max_queued_messages 8000000",
            "max_queued_bytes 2147483648",
            "autosave_interval 30",
            "log_dest file /var/lib/mosquitto/mosquitto.log",
        ] {
            let at = l.iter().position(|x| *x == global).expect(global);
            assert!(at < bridge_at, "{global} after the connection");
        }
        let section = &l[bridge_at..];
        for line in [
            "address central.fleet:8883",
            "bridge_protocol_version mqttv311",
            "remote_clientid bridge.north",
            "cleansession false",
            "try_private true",
            "notifications true",
            "notification_topic fleet/v1/bridge/bridge.north/state",
            "keepalive_interval 20",
            "restart_timeout 10 300",
            "bridge_cafile /etc/mosquitto/fleet/ca.crt",
            "bridge_certfile /etc/mosquitto/fleet/bridge.north.crt",
            "bridge_keyfile /etc/mosquitto/fleet/bridge.north.key",
            "topic dev/+/presence out 1 fleet/v1/ fleet/v1/b/bridge.north/",
            "topic dev/+/state out 1 fleet/v1/ fleet/v1/b/bridge.north/",
            "topic dev/+/events out 1 fleet/v1/ fleet/v1/b/bridge.north/",
            "topic dev/+/csr out 1 fleet/v1/ fleet/v1/b/bridge.north/",
            "topic dev/+/health out 0 fleet/v1/ fleet/v1/b/bridge.north/",
            "topic dev/+/desired in 1 fleet/v1/ fleet/v1/b/bridge.north/",
            "topic dev/+/cmd in 1 fleet/v1/ fleet/v1/b/bridge.north/",
            "topic dev/+/cert in 1 fleet/v1/ fleet/v1/b/bridge.north/",
        ] {
            assert!(section.contains(&line), "bridge lacks {line}");
        }
        assert_eq!(
            section.iter().filter(|x| x.starts_with("topic ")).count(),
            8,
            "no other topic crosses the bridge"
        );
        assert!(
            !c.contains("bridge_insecure"),
            "hostname verification stays on"
        );
        assert!(c.contains("IR-02,IR-27"));
        // What is dropped first is written down where the bounds are.
        assert!(c.contains("drops each NEW QoS 1 message"));
    }

    #[test]
    fn without_tls_there_are_no_certificates_anywhere() {
        let mut l = layout();
        l.tls = None;
        let mut b = bridge();
        b.tls = None;
        let c = render_provincial(&l, &b);
        assert!(c.contains("allow_anonymous true\n"));
        assert!(!c.contains("cafile"));
        assert!(!c.contains("acl_file"));
    }

    #[test]
    fn the_provincial_acl_confines_devices_and_has_no_controller() {
        let acl = render_provincial_acl();
        assert!(acl.contains("pattern write fleet/v1/dev/%u/state\n"));
        assert!(acl.contains("pattern read fleet/v1/dev/%u/desired\n"));
        assert!(acl.contains("user fleet.observer\ntopic read fleet/v1/#\n"));
        assert!(!acl.contains("fleet.controller"));
        assert!(!acl.contains("readwrite"));
        assert!(
            !acl.contains("fleet/v1/b/"),
            "nothing here speaks for a bridge"
        );
        // The central ACL holds the same device lines.
        assert!(render_acl("fleet.controller", &[]).ends_with(DEVICE_PATTERNS));
    }

    #[test]
    fn the_central_acl_names_each_bridge_and_opens_no_bridge_prefix_to_every_user() {
        let acl = render_acl("fleet.controller", &["p01".to_owned(), "north".to_owned()]);
        // No pattern line reaches the bridged or link topics: a pattern
        // applies to every user, devices included.
        for line in acl.lines().filter(|l| l.starts_with("pattern ")) {
            assert!(
                line.starts_with("pattern write fleet/v1/dev/%u/")
                    || line.starts_with("pattern read fleet/v1/dev/%u/"),
                "{line}"
            );
        }
        assert!(!acl.contains("%u/dev/+"), "{acl}");
        assert!(!acl.contains("fleet/v1/bridge/%u"), "{acl}");
        // Each bridge: its own block, its own prefix, its own link state.
        for name in ["p01", "north"] {
            let id = format!("bridge.{name}");
            let block: Vec<&str> = acl
                .split("\n\n")
                .find(|b| b.starts_with(&format!("user {id}\n")))
                .unwrap_or_else(|| panic!("no block for {id} in {acl}"))
                .lines()
                .skip(1)
                .collect();
            let mut want: Vec<String> = ["presence", "state", "events", "csr", "health"]
                .iter()
                .map(|k| format!("topic write fleet/v1/b/{id}/dev/+/{k}"))
                .chain(
                    ["desired", "cmd", "cert"]
                        .iter()
                        .map(|k| format!("topic read fleet/v1/b/{id}/dev/+/{k}")),
                )
                .chain([format!("topic write fleet/v1/bridge/{id}/state")])
                .collect();
            let mut got: Vec<String> = block.iter().map(|l| (*l).to_owned()).collect();
            want.sort();
            got.sort();
            assert_eq!(got, want, "{id}");
        }
        // The controller and the observer keep theirs; no bridge, no block.
        assert!(acl.contains("user fleet.controller\ntopic readwrite fleet/v1/dev/#\ntopic readwrite fleet/v1/b/#\ntopic read fleet/v1/bridge/#\n"));
        assert!(acl.contains("user fleet.observer\ntopic read fleet/v1/#\n"));
        assert!(!render_acl("fleet.controller", &[]).contains("bridge."));
    }

    #[test]
    fn the_bridge_retry_is_rendered_and_checked() {
        let mut b = bridge();
        assert!(lines(&render_provincial(&layout(), &b)).contains(&"restart_timeout 10 300"));
        b.retry = BridgeRetry::parse("2, 60").unwrap();
        let c = render_provincial(&layout(), &b);
        assert!(lines(&c).contains(&"restart_timeout 2 60"), "{c}");
        for bad in ["0,60", "60,2", "10,3601", "10", "a,b"] {
            assert!(BridgeRetry::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn the_default_queue_holds_hours_of_outage_for_the_largest_broker() {
        let plan = OutageLoad::PLAN;
        assert_eq!(plan.per_hour(), 975_000);
        let hours = plan.hours(QueueBounds::default());
        assert!(hours >= 8.0, "{hours} h");
        // The old backoff (restart_timeout 2 60, about 97 attempts an
        // hour) filled the old bound in well under an hour.
        let old = OutageLoad {
            attempts_per_hour: 97,
            ..plan
        };
        let old_bounds = QueueBounds {
            messages: 2_000_000,
            bytes: 1024 * 1024 * 1024,
        };
        assert!(old.hours(old_bounds) < 1.0);
        // The bytes bound is not the one met first: copies and reports are
        // well under 256 bytes each (presence 51, a state with one check 79).
        let d = QueueBounds::default();
        assert!(d.bytes >= d.messages * 256);
    }
}
