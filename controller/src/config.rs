//! The controller's layered configuration: the commented defaults built into
//! the binary (`fleet-controller.default.toml`, the documentation of every
//! key), then the site file, then `FLEET_CONTROLLER__SECTION__KEY`
//! environment variables; `fleet-controller serve`'s flags come last. Each
//! component gets its own small config from here ([`ControllerConfig::writer`],
//! [`ControllerConfig::broker_mode`], …), never the whole.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::limits::RateLimits;
use crate::http::serve::ServeConfig;
use crate::store::WriterConfig;

pub const DEFAULT_TOML: &str = include_str!("../fleet-controller.default.toml");
pub const DEFAULT_SITE_FILE: &str = "/etc/fleet-controller/controller.toml";
const ENV_PREFIX: &str = "FLEET_CONTROLLER";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration file {path} does not exist")]
    Missing { path: PathBuf },
    #[error("configuration key {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

#[derive(Debug, Clone, Deserialize)]
pub struct ControllerConfig {
    pub data: DataSection,
    pub http: HttpSection,
    pub broker: BrokerSection,
    pub ingest: IngestSection,
    pub store: StoreSection,
    pub readiness: ReadinessSection,
    pub pki: PkiSection,
    pub updates: UpdatesSection,
    pub firmware: FirmwareSection,
    pub commands: CommandsSection,
    pub rollouts: RolloutsSection,
    pub console: ConsoleSection,
}

/// The web console under `/ui` (issue 12).
#[derive(Debug, Clone, Deserialize)]
pub struct ConsoleSection {
    pub session_idle_minutes: u64,
    pub session_max_hours: u64,
    pub max_sessions: usize,
    pub max_sessions_per_token: usize,
    pub sample_minutes: u64,
    pub sample_keep_days: u64,
    pub live_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CommandsSection {
    pub max_log_bytes: u64,
    pub check_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RolloutsSection {
    pub tick_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct UpdatesSection {
    pub reboot_timeout_secs: u64,
    pub check_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FirmwareSection {
    pub max_image_bytes: u64,
    pub refresh_secs: u64,
    pub timestamp_expires_secs: u64,
    pub snapshot_expires_secs: u64,
}

/// What the update sweeper needs.
#[derive(Debug, Clone, Copy)]
pub struct SweeperConfig {
    /// Silence after `rebooting`/`checking` that makes an update `timed-out`.
    pub reboot_timeout: Duration,
    /// How often running updates are looked at.
    pub every: Duration,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PkiSection {
    pub device_cert_secs: u64,
    pub server_cert_secs: u64,
    pub renew_at: f64,
    pub check_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DataSection {
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSection {
    pub listen: String,
    pub header_read_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrokerKind {
    Managed,
    External,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BrokerSection {
    pub mode: BrokerKind,
    pub host: String,
    pub port: u16,
    pub insecure_dev: bool,
    pub crl_hook: String,
    pub crl_hook_timeout_secs: u64,
    /// The bridges' reconnect backoff (`restart_timeout MIN MAX`).
    pub bridge_retry_min_secs: u32,
    pub bridge_retry_max_secs: u32,
    /// The provincial tier (`[[broker.provincial]]`); empty: every device
    /// reaches the central broker.
    pub provincial: Vec<ProvincialSection>,
}

/// One provincial broker, `[[broker.provincial]]`.
#[derive(Debug, Clone, Deserialize)]
pub struct ProvincialSection {
    pub name: String,
    /// Province codes, e.g. `["IR-02", "IR-27"]`.
    pub provinces: Vec<String>,
    /// Where its devices reach it.
    #[serde(default = "loopback")]
    pub host: String,
    /// Managed: a fixed port, or 0 for the last one used (else a free one).
    /// Not managed: its port (required).
    #[serde(default)]
    pub port: u16,
    /// Started and supervised by this controller; false: Ansible runs it.
    #[serde(default = "yes")]
    pub managed: bool,
    /// Where its bridge connects, `host:port`; empty: the central broker.
    #[serde(default)]
    pub uplink: String,
}

fn loopback() -> String {
    "127.0.0.1".to_owned()
}

fn yes() -> bool {
    true
}

impl BrokerSection {
    /// The provincial bridges' reconnect backoff.
    pub fn bridge_retry(&self) -> Result<crate::broker::render::BridgeRetry, ConfigError> {
        crate::broker::render::BridgeRetry::new(
            self.bridge_retry_min_secs,
            self.bridge_retry_max_secs,
        )
        .map_err(|reason| ConfigError::Invalid {
            key: "broker.bridge_retry_min_secs",
            reason,
        })
    }

    /// The tier this section describes.
    pub fn tier(&self) -> Result<crate::broker::tier::Tier, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            key: "broker.provincial",
            reason,
        };
        let mut brokers = Vec::with_capacity(self.provincial.len());
        for b in &self.provincial {
            let provinces = b
                .provinces
                .iter()
                .map(|c| fleet_protocol::ProvinceCode::parse(c))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid(format!("{}: {e}", b.name)))?;
            if !b.managed && b.port == 0 {
                return Err(invalid(format!(
                    "{}: a broker this controller does not run needs its port",
                    b.name
                )));
            }
            brokers.push(crate::broker::tier::TierBroker {
                name: b.name.clone(),
                provinces,
                host: b.host.clone(),
                port: b.port,
                managed: b.managed,
                uplink: b.uplink.clone(),
            });
        }
        crate::broker::tier::Tier::new(brokers).map_err(|e| invalid(e.to_string()))
    }

    /// Replace the tier with `n` managed brokers on this machine
    /// (`serve --provincial-brokers N`).
    pub fn set_managed_tier(&mut self, n: usize) -> Result<(), ConfigError> {
        let brokers =
            crate::broker::tier::managed_tier(n, &self.host).map_err(|e| ConfigError::Invalid {
                key: "broker.provincial",
                reason: e.to_string(),
            })?;
        self.provincial = brokers
            .into_iter()
            .map(|b| ProvincialSection {
                name: b.name,
                provinces: b.provinces.iter().map(ToString::to_string).collect(),
                host: b.host,
                port: 0,
                managed: true,
                uplink: String::new(),
            })
            .collect();
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct IngestSection {
    pub client_id: String,
    pub keep_alive_secs: u64,
    pub write_queue: usize,
    pub max_messages_per_minute: u32,
    pub max_bytes_per_minute: u64,
    pub events_kept_per_device: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StoreSection {
    pub batch_max: usize,
    pub batch_delay_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReadinessSection {
    pub freshness_secs: u64,
    pub tick_secs: u64,
}

/// Which site file to read on top of the defaults.
#[derive(Debug, Clone, Copy)]
pub enum Site<'a> {
    /// [`DEFAULT_SITE_FILE`] if it exists.
    Default,
    /// This file, which must exist.
    File(&'a Path),
    /// None: the defaults and the environment only.
    Skip,
}

/// Which broker the controller uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerMode {
    /// Start and supervise Mosquitto; `None` picks the port.
    Managed { port: Option<u16> },
    /// A broker set up elsewhere (Ansible), `host:port`.
    External { host: String, port: u16 },
}

impl ControllerConfig {
    /// The built-in defaults alone.
    pub fn defaults() -> Self {
        Self::load(Site::Skip, HashMap::new()).expect("the built-in defaults are valid")
    }

    /// The defaults with `dir` as the data directory (tests, `init`).
    pub fn for_data_dir(dir: &Path) -> Self {
        let mut cfg = Self::defaults();
        cfg.data.dir = dir.to_owned();
        cfg
    }

    /// Defaults, then `site`, then the `FLEET_CONTROLLER__…` entries of
    /// `env` (the process environment, passed in so tests need not change it).
    pub fn load(site: Site<'_>, env: HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        builder = match site {
            Site::File(path) => {
                if !path.exists() {
                    return Err(ConfigError::Missing {
                        path: path.to_owned(),
                    });
                }
                builder.add_source(config::File::from(path).format(config::FileFormat::Toml))
            }
            Site::Skip => builder,
            Site::Default => builder.add_source(
                config::File::with_name(DEFAULT_SITE_FILE)
                    .format(config::FileFormat::Toml)
                    .required(false),
            ),
        };
        let env: HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        let cfg: Self = builder
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(env)),
            )
            .build()?
            .try_deserialize()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that the flags can break too: run again after applying them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.broker.mode == BrokerKind::External && self.broker.port == 0 {
            return invalid("broker.port", "an external broker needs its port");
        }
        self.broker.tier()?;
        self.broker.bridge_retry()?;
        if self.ingest.keep_alive_secs < 5 {
            return invalid("ingest.keep_alive_secs", "at least 5 seconds");
        }
        if self.ingest.write_queue == 0 {
            return invalid("ingest.write_queue", "at least 1");
        }
        if self.ingest.max_messages_per_minute == 0 {
            return invalid("ingest.max_messages_per_minute", "at least 1");
        }
        if self.ingest.max_bytes_per_minute < 10 * 1024 {
            return invalid(
                "ingest.max_bytes_per_minute",
                "at least 10240 (one payload of the largest kind)",
            );
        }
        if self.ingest.events_kept_per_device == 0 {
            return invalid("ingest.events_kept_per_device", "at least 1");
        }
        if self.store.batch_max == 0 {
            return invalid("store.batch_max", "at least 1");
        }
        if self.readiness.freshness_secs == 0 {
            return invalid("readiness.freshness_secs", "at least 1 second");
        }
        if self.readiness.tick_secs == 0 {
            return invalid("readiness.tick_secs", "at least 1 second");
        }
        if self.pki.device_cert_secs < 60 {
            return invalid("pki.device_cert_secs", "at least 60 seconds");
        }
        if self.pki.server_cert_secs < 60 {
            return invalid("pki.server_cert_secs", "at least 60 seconds");
        }
        if !(self.pki.renew_at > 0.0 && self.pki.renew_at < 1.0) {
            return invalid("pki.renew_at", "a fraction between 0 and 1");
        }
        if self.pki.check_secs == 0 {
            return invalid("pki.check_secs", "at least 1 second");
        }
        if self.http.header_read_timeout_secs == 0 {
            return invalid("http.header_read_timeout_secs", "at least 1 second");
        }
        if self.http.idle_timeout_secs == 0 {
            return invalid("http.idle_timeout_secs", "at least 1 second");
        }
        if self.http.max_connections == 0 {
            return invalid("http.max_connections", "at least 1");
        }
        if self.http.max_connections_per_ip == 0 {
            return invalid("http.max_connections_per_ip", "at least 1");
        }
        if self.updates.reboot_timeout_secs == 0 {
            return invalid("updates.reboot_timeout_secs", "at least 1 second");
        }
        if self.updates.check_secs == 0 {
            return invalid("updates.check_secs", "at least 1 second");
        }
        if self.commands.max_log_bytes == 0 {
            return invalid("commands.max_log_bytes", "at least 1");
        }
        if self.console.session_idle_minutes == 0 || self.console.session_max_hours == 0 {
            return invalid(
                "console.session_idle_minutes",
                "sessions need at least a minute of idle time and an hour of age",
            );
        }
        if self.console.max_sessions == 0 || self.console.max_sessions_per_token == 0 {
            return invalid("console.max_sessions", "at least 1 (and 1 per token)");
        }
        if self.console.sample_minutes == 0 || self.console.sample_keep_days == 0 {
            return invalid(
                "console.sample_minutes",
                "sampling needs at least a minute and a day of history",
            );
        }
        if self.console.live_secs == 0 {
            return invalid("console.live_secs", "at least 1 second");
        }
        if self.commands.check_secs == 0 {
            return invalid("commands.check_secs", "at least 1 second");
        }
        if self.firmware.max_image_bytes == 0 {
            return invalid("firmware.max_image_bytes", "at least 1");
        }
        if self.firmware.refresh_secs == 0 {
            return invalid("firmware.refresh_secs", "at least 1 second");
        }
        if self.firmware.timestamp_expires_secs < 2 {
            return invalid("firmware.timestamp_expires_secs", "at least 2 seconds");
        }
        if self.firmware.snapshot_expires_secs < self.firmware.timestamp_expires_secs {
            return invalid(
                "firmware.snapshot_expires_secs",
                "at least firmware.timestamp_expires_secs",
            );
        }
        Ok(())
    }

    /// The data directory, or why there is none.
    pub fn data_dir(&self) -> Result<&Path, ConfigError> {
        if self.data.dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "data.dir",
                reason: "no data directory: pass --data-dir (or FLEET_DATA_DIR), or set data.dir"
                    .into(),
            });
        }
        Ok(&self.data.dir)
    }

    pub fn broker_mode(&self) -> BrokerMode {
        match self.broker.mode {
            BrokerKind::Managed => BrokerMode::Managed {
                port: (self.broker.port != 0).then_some(self.broker.port),
            },
            BrokerKind::External => BrokerMode::External {
                host: self.broker.host.clone(),
                port: self.broker.port,
            },
        }
    }

    pub fn writer(&self) -> WriterConfig {
        WriterConfig {
            max_batch: self.store.batch_max,
            max_delay: Duration::from_millis(self.store.batch_delay_ms),
            events_kept_per_device: self.ingest.events_kept_per_device,
        }
    }

    /// What one device may send per minute.
    pub fn rate_limits(&self) -> RateLimits {
        RateLimits {
            messages_per_minute: self.ingest.max_messages_per_minute,
            bytes_per_minute: self.ingest.max_bytes_per_minute,
        }
    }

    /// The API listener's timeouts and caps; `tls` is `None` for plain HTTP.
    pub fn serve(&self, tls: Option<std::sync::Arc<rustls::ServerConfig>>) -> ServeConfig {
        ServeConfig {
            tls,
            handshake_timeout: crate::http::tls::HANDSHAKE_TIMEOUT,
            header_read_timeout: Duration::from_secs(self.http.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(self.http.idle_timeout_secs),
            max_connections: self.http.max_connections,
            max_connections_per_ip: self.http.max_connections_per_ip,
        }
    }

    pub fn freshness(&self) -> Duration {
        Duration::from_secs(self.readiness.freshness_secs)
    }

    /// How long the snapshot and timestamp the controller signs last.
    pub fn firmware_lifetimes(&self) -> fleet_repo::publish::Lifetimes {
        fleet_repo::publish::Lifetimes {
            snapshot: Duration::from_secs(self.firmware.snapshot_expires_secs),
            timestamp: Duration::from_secs(self.firmware.timestamp_expires_secs),
        }
    }

    pub fn rollouts(&self) -> crate::rollouts::RolloutsConfig {
        crate::rollouts::RolloutsConfig {
            tick: Duration::from_millis(self.rollouts.tick_ms.max(10)),
            ..Default::default()
        }
    }

    pub fn sweeper(&self) -> SweeperConfig {
        SweeperConfig {
            reboot_timeout: Duration::from_secs(self.updates.reboot_timeout_secs),
            every: Duration::from_secs(self.updates.check_secs),
        }
    }

    /// The console's sessions, sampling and live updates.
    pub fn console(&self) -> crate::ui::ConsoleConfig {
        let c = &self.console;
        crate::ui::ConsoleConfig {
            sessions: crate::ui::session::Limits {
                idle_ms: c.session_idle_minutes.saturating_mul(60_000),
                max_age_ms: c.session_max_hours.saturating_mul(3_600_000),
                max_sessions: c.max_sessions,
                max_per_token: c.max_sessions_per_token,
            },
            sample_every: Duration::from_secs(c.sample_minutes.saturating_mul(60)),
            sample_keep: Duration::from_secs(c.sample_keep_days.saturating_mul(86_400)),
            live_secs: c.live_secs,
        }
    }

    /// How often waiting commands are checked against their expiry.
    pub fn command_sweep(&self) -> Duration {
        Duration::from_secs(self.commands.check_secs)
    }

    pub fn tick(&self) -> Duration {
        Duration::from_secs(self.readiness.tick_secs)
    }

    /// The external broker's CRL hook, if one is set.
    pub fn crl_hook(&self) -> Option<crate::broker::CrlHook> {
        (!self.broker.crl_hook.trim().is_empty()).then(|| crate::broker::CrlHook {
            command: self.broker.crl_hook.trim().into(),
            timeout: Duration::from_secs(self.broker.crl_hook_timeout_secs.max(1)),
        })
    }

    /// Lifetimes and renewal of the certificates the controller issues.
    pub fn cert_policy(&self) -> crate::pki::CertPolicy {
        crate::pki::CertPolicy {
            device: time::Duration::seconds(
                i64::try_from(self.pki.device_cert_secs).unwrap_or(i64::MAX),
            ),
            server: time::Duration::seconds(
                i64::try_from(self.pki.server_cert_secs).unwrap_or(i64::MAX),
            ),
            renew_at: self.pki.renew_at,
            check_every: Duration::from_secs(self.pki.check_secs),
        }
    }

    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.ingest.keep_alive_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_match_what_was_hard_coded() {
        let cfg = ControllerConfig::defaults();
        assert_eq!(cfg.freshness(), Duration::from_secs(900));
        assert_eq!(cfg.tick(), Duration::from_secs(5));
        assert_eq!(cfg.keep_alive(), Duration::from_secs(120));
        assert_eq!(cfg.ingest.write_queue, 10_000);
        assert_eq!(cfg.ingest.client_id, crate::pki::CONTROLLER_IDENTITY);
        assert_eq!(cfg.writer().max_batch, 5_000);
        assert_eq!(cfg.writer().max_delay, Duration::from_millis(200));
        assert_eq!(cfg.writer().events_kept_per_device, 500);
        assert_eq!(
            cfg.rate_limits(),
            RateLimits {
                messages_per_minute: 600,
                bytes_per_minute: 1_048_576,
            }
        );
        assert_eq!(cfg.broker_mode(), BrokerMode::Managed { port: None });
        assert_eq!(cfg.http.listen, "127.0.0.1:8080");
        let serve = cfg.serve(None);
        assert_eq!(serve.header_read_timeout, Duration::from_secs(10));
        assert_eq!(serve.idle_timeout, Duration::from_secs(60));
        assert_eq!(serve.max_connections, 4096);
        assert_eq!(serve.max_connections_per_ip, 256);
        assert!(!cfg.broker.insecure_dev);
        let console = cfg.console();
        assert_eq!(console.sessions, crate::ui::session::Limits::default());
        assert_eq!(console.sample_every, Duration::from_secs(300));
        assert_eq!(console.sample_keep, Duration::from_secs(30 * 86_400));
        assert_eq!(console.live_secs, 10);
    }

    #[test]
    fn a_provincial_tier_from_the_site_file_or_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("controller.toml");
        std::fs::write(
            &site,
            "[[broker.provincial]]\nname = \"north\"\nprovinces = [\"IR-01\", \"IR-02\"]\n\
             [[broker.provincial]]\nname = \"south\"\nprovinces = [\"IR-07\"]\nhost = \"10.0.0.7\"\nport = 8883\nmanaged = false\n",
        )
        .unwrap();
        let cfg = ControllerConfig::load(Site::File(&site), env(&[])).unwrap();
        cfg.validate().unwrap();
        let tier = cfg.broker.tier().unwrap();
        let south = tier.by_bridge("bridge.south").unwrap();
        assert_eq!(
            (south.host.as_str(), south.port, south.managed),
            ("10.0.0.7", 8883, false)
        );
        let north = tier.by_bridge("bridge.north").unwrap();
        assert_eq!(
            (north.host.as_str(), north.port, north.managed),
            ("127.0.0.1", 0, true)
        );
        assert!(ControllerConfig::defaults()
            .broker
            .tier()
            .unwrap()
            .is_empty());

        std::fs::write(
            &site,
            "[[broker.provincial]]\nname = \"x\"\nprovinces = [\"IR-99\"]\n",
        )
        .unwrap();
        let bad = ControllerConfig::load(Site::File(&site), env(&[])).unwrap_err();
        assert!(bad.to_string().contains("IR-99"), "{bad}");

        let mut flag = ControllerConfig::defaults();
        flag.broker.set_managed_tier(2).unwrap();
        assert_eq!(flag.broker.tier().unwrap().brokers().len(), 2);
        assert!(flag.broker.set_managed_tier(0).is_err());
    }

    #[test]
    fn site_file_then_environment_override_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("controller.toml");
        std::fs::write(
            &site,
            "[data]\ndir = \"/srv/fleet\"\n[readiness]\nfreshness_secs = 600\ntick_secs = 2\n",
        )
        .unwrap();
        let cfg = ControllerConfig::load(
            Site::File(&site),
            env(&[
                ("FLEET_CONTROLLER__READINESS__FRESHNESS_SECS", "300"),
                ("FLEET_CONTROLLER__BROKER__MODE", "external"),
                ("FLEET_CONTROLLER__BROKER__HOST", "broker.example"),
                ("FLEET_CONTROLLER__BROKER__PORT", "8883"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.data_dir().unwrap(), Path::new("/srv/fleet"));
        assert_eq!(
            cfg.freshness(),
            Duration::from_secs(300),
            "env beats the file"
        );
        assert_eq!(
            cfg.tick(),
            Duration::from_secs(2),
            "the file beats the defaults"
        );
        assert_eq!(
            cfg.broker_mode(),
            BrokerMode::External {
                host: "broker.example".into(),
                port: 8883
            }
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = ControllerConfig::load(
            Site::Skip,
            env(&[("FLEET_CONTROLLER__READINESS__FRESHNESS_SECS", "0")]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("readiness.freshness_secs"),
            "{err}"
        );
        let err = ControllerConfig::load(
            Site::Skip,
            env(&[("FLEET_CONTROLLER__BROKER__MODE", "external")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("broker.port"), "{err}");
        let err = ControllerConfig::load(
            Site::Skip,
            env(&[("FLEET_CONTROLLER__HTTP__MAX_CONNECTIONS_PER_IP", "0")]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("http.max_connections_per_ip"),
            "{err}"
        );
        let missing =
            ControllerConfig::load(Site::File(Path::new("/nonexistent/c.toml")), env(&[]));
        assert!(matches!(missing, Err(ConfigError::Missing { .. })));
        let err = ControllerConfig::defaults().data_dir().unwrap_err();
        assert!(err.to_string().contains("--data-dir"), "{err}");
    }

    #[test]
    fn every_section_of_the_default_file_is_documented() {
        let mut keys = 0;
        let lines: Vec<&str> = DEFAULT_TOML.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.contains(" = ") && !line.starts_with('#') {
                keys += 1;
                assert!(
                    i > 0 && lines[i - 1].starts_with('#'),
                    "key without a comment above it: {line}"
                );
            }
        }
        assert!(keys >= 12, "found only {keys} keys");
    }
}
