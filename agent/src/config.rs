//! Layered configuration: the commented defaults built into the binary
//! (`fleet-agent.default.toml`, the documentation of every key), then the
//! site file, then `FLEET_AGENT__SECTION__KEY` environment variables.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_protocol::{DeviceId, Model};
use serde::Deserialize;

use crate::core::RenewalPolicy;
use crate::health::{HealthPolicy, Thresholds};
use crate::link::{LinkProfile, ProfileName};
use crate::runtime::{LinkConfig, RenewalSetup, RuntimeConfig, RuntimeOptions, SeqStore};

pub const DEFAULT_TOML: &str = include_str!("../fleet-agent.default.toml");
pub const DEFAULT_SITE_FILE: &str = "/etc/fleet-agent/agent.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration file {path} does not exist")]
    Missing { path: PathBuf },
    #[error("configuration key {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("cannot read the firmware version from {path}: {reason}")]
    Firmware { path: PathBuf, reason: String },
    #[error("this device is not enrolled (no certificate in {dir}); run: fleet-agent enrol --controller URL --token TOKEN (or set mqtt.insecure_dev = true for a plaintext development broker)")]
    NotEnrolled { dir: PathBuf },
    #[error("the device identity in {dir} is unusable: {reason}")]
    Identity { dir: PathBuf, reason: String },
    #[error("cannot prepare the state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Deserialize)]
pub struct AgentConfig {
    pub device: DeviceSection,
    pub mqtt: MqttSection,
    pub health: HealthSection,
    pub checks: ChecksSection,
    pub commands: CommandsSection,
    pub certificate: CertificateSection,
    pub link: LinkSection,
    pub outbox: OutboxSection,
    pub test_hooks: TestHooksSection,
    pub update: crate::update::UpdateSection,
    pub logs: crate::logs::LogsSection,
}

/// `[link]`: the link profile and its per-key overrides.
#[derive(Debug, Clone, Deserialize)]
pub struct LinkSection {
    pub profile: String,
    pub connect_timeout_secs: Option<u64>,
    pub write_timeout_secs: Option<u64>,
    pub inflight: Option<usize>,
    pub inflight_bytes: Option<u64>,
    pub coalesce_secs: Option<u64>,
    pub tls_resumption: bool,
}

/// `[outbox]`.
#[derive(Debug, Clone, Deserialize)]
pub struct OutboxSection {
    pub max_bytes: u64,
    pub disk_retry_ms: u64,
}

/// `[test_hooks]`: off in the field.
#[derive(Debug, Clone, Deserialize)]
pub struct TestHooksSection {
    pub event_dir: PathBuf,
    /// Report this agent version instead of the build's ("": the build's).
    pub agent_version: String,
    /// Connect to this broker port instead of the enrolled one (0: off).
    pub broker_port: u16,
    /// After persisting this update step, write `event_dir/update-hold-STEP`
    /// and wait to be killed.
    pub update_hold_at: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CertificateSection {
    pub renew_at: f64,
    pub answer_timeout_secs: u64,
    pub retry_secs: u64,
    pub new_key: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DeviceSection {
    pub id: String,
    pub model: String,
    pub firmware_version_file: PathBuf,
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MqttSection {
    pub host: String,
    pub port: u16,
    pub insecure_dev: bool,
    pub keep_alive_secs: Option<u64>,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HealthSection {
    pub sample_secs: Option<u64>,
    pub report_secs: Option<u64>,
    pub cpu_pct_high: u8,
    pub mem_used_pct_high: u8,
    pub disk_free_pct_low: u8,
    pub temp_c_high: i16,
    pub battery_pct_low: u8,
    pub disk_mount: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChecksSection {
    pub interval_secs: Option<u64>,
    pub list: Vec<CheckSpec>,
}

/// One configured check: a command whose exit status is the verdict.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct CheckSpec {
    pub name: String,
    pub command: Vec<String>,
    #[serde(default = "default_check_timeout")]
    pub timeout_secs: u64,
}

fn default_check_timeout() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize)]
pub struct CommandsSection {
    pub reboot: Vec<String>,
}

impl AgentConfig {
    /// Defaults, then `site` (required if given explicitly; the default site
    /// file is optional), then the environment.
    /// Defaults, then `site` (or the default site file if it exists), then
    /// the process environment's `FLEET_AGENT__…` variables.
    pub fn load(site: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(site, std::env::vars().collect())
    }

    /// As [`AgentConfig::load`], with the environment given (tests pass
    /// their own instead of changing the process's).
    pub fn load_with_env(
        site: Option<&Path>,
        env: std::collections::HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        match site {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::Missing {
                        path: path.to_owned(),
                    });
                }
                builder =
                    builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
            }
            None => {
                builder = builder.add_source(
                    config::File::with_name(DEFAULT_SITE_FILE)
                        .format(config::FileFormat::Toml)
                        .required(false),
                );
            }
        }
        let cfg = builder
            .add_source(
                config::Environment::with_prefix("FLEET_AGENT")
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(
                        env.into_iter()
                            .filter(|(k, _)| k.starts_with("FLEET_AGENT"))
                            .collect(),
                    )),
            )
            .build()?
            .try_deserialize()?;
        Ok(cfg)
    }

    /// `test_hooks.agent_version`, when set.
    pub fn test_agent_version(&self) -> Result<Option<fleet_protocol::Version>, ConfigError> {
        let v = &self.test_hooks.agent_version;
        if v.is_empty() {
            return Ok(None);
        }
        fleet_protocol::Version::parse(v)
            .map(Some)
            .map_err(|e| ConfigError::Invalid {
                key: "test_hooks.agent_version",
                reason: e.to_string(),
            })
    }

    /// Where updates keep their state: `STATE/update`.
    pub fn update_dir(&self) -> PathBuf {
        self.device.state_dir.join("update")
    }

    /// How long a new agent binary has to reach the broker.
    pub fn agent_trial(&self) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(positive(
            "update.agent_trial_secs",
            self.update.agent_trial_secs,
        )?))
    }

    pub fn device_id(&self) -> Result<DeviceId, ConfigError> {
        DeviceId::parse(&self.device.id).map_err(|e| ConfigError::Invalid {
            key: "device.id",
            reason: e.to_string(),
        })
    }

    /// The link profile named in `link.profile`.
    pub fn profile(&self) -> Result<LinkProfile, ConfigError> {
        let name: ProfileName =
            self.link
                .profile
                .parse()
                .map_err(|reason| ConfigError::Invalid {
                    key: "link.profile",
                    reason,
                })?;
        Ok(LinkProfile::of(name))
    }

    /// The outbox's and the link's settings: the profile's, overridden key
    /// by key.
    pub fn options(&self) -> Result<RuntimeOptions, ConfigError> {
        let p = self.profile()?;
        let l = &self.link;
        let max_bytes = positive("outbox.max_bytes", self.outbox.max_bytes)?;
        let disk_retry_ms = positive("outbox.disk_retry_ms", self.outbox.disk_retry_ms)?;
        let hook = &self.test_hooks.event_dir;
        Ok(RuntimeOptions {
            outbox_max_bytes: max_bytes,
            disk_retry: Duration::from_millis(disk_retry_ms),
            inflight: usize::try_from(positive(
                "link.inflight",
                l.inflight.unwrap_or(p.inflight) as u64,
            )?)
            .unwrap_or(usize::MAX),
            inflight_bytes: positive(
                "link.inflight_bytes",
                l.inflight_bytes.unwrap_or(p.inflight_bytes),
            )?,
            coalesce: Duration::from_secs(positive(
                "link.coalesce_secs",
                l.coalesce_secs.unwrap_or(p.coalesce_secs),
            )?),
            connect_timeout: Duration::from_secs(positive(
                "link.connect_timeout_secs",
                l.connect_timeout_secs.unwrap_or(p.connect_timeout_secs),
            )?),
            write_timeout: Duration::from_secs(positive(
                "link.write_timeout_secs",
                l.write_timeout_secs.unwrap_or(p.write_timeout_secs),
            )?),
            event_hook_dir: (!hook.as_os_str().is_empty()).then(|| hook.clone()),
            // No paths: nothing to upload (the command's result says so).
            logs: self
                .logs
                .validate(
                    &self.device.state_dir,
                    &self.update.repo_url,
                    self.mqtt.insecure_dev,
                )
                .map_err(|reason| ConfigError::Invalid {
                    key: "logs",
                    reason,
                })?
                .configured(),
            update: self
                .update
                .validate(
                    &self.device.state_dir,
                    &self.commands.reboot,
                    &self.test_hooks.update_hold_at,
                    hook,
                )
                .map_err(|e| ConfigError::Invalid {
                    key: "update",
                    reason: e.to_string(),
                })?,
        })
    }

    /// Validate and turn the file's sections into the runtime's own config.
    pub fn runtime(&self) -> Result<RuntimeConfig, ConfigError> {
        let profile = self.profile()?;
        let device = self.device_id()?;
        let model = Model::parse(&self.device.model).map_err(|e| ConfigError::Invalid {
            key: "device.model",
            reason: e.to_string(),
        })?;
        let keep_alive = positive(
            "mqtt.keep_alive_secs",
            self.mqtt.keep_alive_secs.unwrap_or(profile.keep_alive_secs),
        )?;
        let sample = positive(
            "health.sample_secs",
            self.health
                .sample_secs
                .unwrap_or(profile.health_sample_secs),
        )?;
        let report = positive(
            "health.report_secs",
            self.health
                .report_secs
                .unwrap_or(profile.health_report_secs),
        )?;
        let checks_interval = positive(
            "checks.interval_secs",
            self.checks
                .interval_secs
                .unwrap_or(profile.checks_interval_secs),
        )?;
        for c in &self.checks.list {
            if c.name.is_empty() || c.name.len() > 32 {
                return Err(ConfigError::Invalid {
                    key: "checks.list.name",
                    reason: format!("{:?} must be 1 to 32 characters", c.name),
                });
            }
            if c.command.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "checks.list.command",
                    reason: format!("check {:?} has no command", c.name),
                });
            }
        }
        std::fs::create_dir_all(&self.device.state_dir).map_err(|source| {
            ConfigError::StateDir {
                path: self.device.state_dir.clone(),
                source,
            }
        })?;
        let files = crate::tls::TlsFiles::in_dir(&self.device.state_dir);
        if !(self.certificate.renew_at > 0.0 && self.certificate.renew_at < 1.0) {
            return Err(ConfigError::Invalid {
                key: "certificate.renew_at",
                reason: "a fraction of the certificate's life, between 0 and 1".into(),
            });
        }
        let answer_timeout = positive(
            "certificate.answer_timeout_secs",
            self.certificate.answer_timeout_secs,
        )?;
        let retry = positive("certificate.retry_secs", self.certificate.retry_secs)?;
        crate::renew::recover(&files);
        let (tls, host, port) = if files.exist() {
            let tls = crate::tls::client_config(&files).map_err(|e| ConfigError::Identity {
                dir: self.device.state_dir.clone(),
                reason: e.to_string(),
            })?;
            let tls = crate::tls::with_resumption(tls, self.link.tls_resumption);
            let broker = crate::enrol::saved_broker(&self.device.state_dir);
            let host = broker
                .as_ref()
                .map_or_else(|| self.mqtt.host.clone(), |b| b.host.clone());
            let port = broker.map_or(self.mqtt.port, |b| b.port);
            (Some(tls), host, port)
        } else if self.mqtt.insecure_dev {
            tracing::warn!(
                "mqtt.insecure_dev: talking to the broker WITHOUT TLS; development only"
            );
            (None, self.mqtt.host.clone(), self.mqtt.port)
        } else {
            return Err(ConfigError::NotEnrolled {
                dir: self.device.state_dir.clone(),
            });
        };
        let port = match self.test_hooks.broker_port {
            0 => port,
            hook => hook,
        };
        Ok(RuntimeConfig {
            device,
            model,
            link: LinkConfig {
                host,
                port,
                tls,
                keep_alive: Duration::from_secs(keep_alive),
                backoff_base: Duration::from_millis(self.mqtt.backoff_base_ms.max(1)),
                backoff_max: Duration::from_millis(self.mqtt.backoff_max_ms.max(1)),
            },
            health_sample: Duration::from_secs(sample),
            health: HealthPolicy {
                report_every: Duration::from_secs(report),
                thresholds: Thresholds {
                    cpu_pct_high: self.health.cpu_pct_high,
                    mem_used_pct_high: self.health.mem_used_pct_high,
                    disk_free_pct_low: self.health.disk_free_pct_low,
                    temp_c_high: self.health.temp_c_high,
                    battery_pct_low: self.health.battery_pct_low,
                },
            },
            checks_interval: Duration::from_secs(checks_interval),
            seq: SeqStore::Outbox {
                file: self.device.state_dir.join("outbox.redb"),
                legacy_seq: Some(self.device.state_dir.join("event-seq")),
            },
            state_sent: None,
            state_acked: None,
            connected: None,
            update_dir: Some(self.update_dir()),
            renewal: files.exist().then(|| RenewalSetup {
                files: files.clone(),
                policy: RenewalPolicy {
                    at_fraction: self.certificate.renew_at,
                    answer_timeout: Duration::from_secs(answer_timeout),
                    retry_after: Duration::from_secs(retry),
                    new_key: self.certificate.new_key,
                },
            }),
        })
    }
}

/// `v`, refused when zero (a key that counts or times something).
fn positive(key: &'static str, v: u64) -> Result<u64, ConfigError> {
    if v == 0 {
        Err(ConfigError::Invalid {
            key,
            reason: "must be greater than zero".into(),
        })
    } else {
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_need_an_id() {
        let cfg: AgentConfig = config::Config::builder()
            .add_source(config::File::from_str(
                DEFAULT_TOML,
                config::FileFormat::Toml,
            ))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        assert_eq!(cfg.mqtt.keep_alive_secs, None);
        assert_eq!(cfg.profile().unwrap().keep_alive_secs, 60);
        assert_eq!(cfg.options().unwrap(), RuntimeOptions::default());
        assert!(cfg.checks.list.is_empty());
        let err = cfg.runtime().unwrap_err();
        assert!(err.to_string().contains("device.id"), "{err}");
    }

    #[test]
    fn site_file_and_environment_layer_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("agent.toml");
        std::fs::write(
            &site,
            format!(
                r#"
[device]
id = "BB-23-000001"
model = "ballot-box-v2"
state_dir = "{}"
[mqtt]
port = 18830
insecure_dev = true
[[checks.list]]
name = "printer"
command = ["true"]
"#,
                dir.path().join("state").display()
            ),
        )
        .unwrap();
        let env = [("FLEET_AGENT__HEALTH__REPORT_SECS", "42")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let cfg = AgentConfig::load_with_env(Some(&site), env).unwrap();
        assert_eq!(cfg.mqtt.port, 18830);
        assert_eq!(cfg.mqtt.host, "127.0.0.1");
        assert_eq!(cfg.health.report_secs, Some(42));
        assert_eq!(cfg.checks.list[0].timeout_secs, 10);
        let rt = cfg.runtime().unwrap();
        assert_eq!(rt.device.as_str(), "BB-23-000001");
        assert_eq!(rt.health.report_every, Duration::from_secs(42));
    }

    #[test]
    fn plaintext_needs_insecure_dev_and_enrolment_wins() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("agent.toml");
        let state = dir.path().join("state");
        std::fs::write(
            &site,
            format!(
                "[device]\nid = \"BB-9\"\nmodel = \"ballot-box-v2\"\nstate_dir = \"{}\"\n",
                state.display()
            ),
        )
        .unwrap();
        let err = AgentConfig::load(Some(&site))
            .unwrap()
            .runtime()
            .unwrap_err();
        assert!(err.to_string().contains("fleet-agent enrol"), "{err}");
        // A saved identity is used, with the broker address enrolment gave.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .signed_by(&key, &rcgen::Issuer::from_params(&ca_params, &ca_key))
            .unwrap();
        crate::enrol::save(
            &crate::enrol::Identity {
                key_pem: key.serialize_pem(),
                cert_pem: cert.pem(),
                ca_pem: ca.pem(),
                broker: crate::enrol::Broker {
                    host: "10.1.2.3".into(),
                    port: 8883,
                },
            },
            &state,
        )
        .unwrap();
        let rt = AgentConfig::load(Some(&site)).unwrap().runtime().unwrap();
        assert!(rt.link.tls.is_some());
        assert_eq!((rt.link.host.as_str(), rt.link.port), ("10.1.2.3", 8883));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(state.join("device.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn the_link_profile_sets_timing_and_each_key_can_be_overridden() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("agent.toml");
        std::fs::write(
            &site,
            format!(
                "[device]\nid = \"BB-7\"\nmodel = \"ballot-box-v2\"\nstate_dir = \"{}\"\n\
                 [mqtt]\ninsecure_dev = true\n[link]\nprofile = \"slow\"\nwrite_timeout_secs = 600\n\
                 tls_resumption = false\n",
                dir.path().join("state").display()
            ),
        )
        .unwrap();
        let env = [
            ("FLEET_AGENT__LINK__INFLIGHT", "2"),
            ("FLEET_AGENT__HEALTH__SAMPLE_SECS", "30"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let cfg = AgentConfig::load_with_env(Some(&site), env).unwrap();
        let rt = cfg.runtime().unwrap();
        let slow = LinkProfile::of(ProfileName::Slow);
        assert_eq!(
            rt.link.keep_alive,
            Duration::from_secs(slow.keep_alive_secs)
        );
        assert_eq!(rt.health.report_every, Duration::from_secs(3600));
        assert_eq!(rt.health_sample, Duration::from_secs(30), "overridden");
        let opts = cfg.options().unwrap();
        assert_eq!(opts.inflight, 2, "overridden");
        assert_eq!(opts.write_timeout, Duration::from_secs(600), "overridden");
        assert_eq!(
            opts.connect_timeout,
            Duration::from_secs(slow.connect_timeout_secs)
        );
        assert_eq!(opts.coalesce, Duration::from_secs(3600));
        assert_eq!(opts.event_hook_dir, None);
        assert!(matches!(rt.seq, SeqStore::Outbox { .. }));

        let env = [("FLEET_AGENT__LINK__PROFILE", "carrier-pigeon")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let err = AgentConfig::load_with_env(Some(&site), env)
            .unwrap()
            .options()
            .unwrap_err();
        assert!(err.to_string().contains("link.profile"), "{err}");
    }

    #[test]
    fn the_agent_trial_and_the_stand_in_hooks_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("agent.toml");
        let state = dir.path().join("state");
        std::fs::write(
            &site,
            format!(
                "[device]\nid = \"BB-8\"\nmodel = \"ballot-box-v2\"\nstate_dir = \"{}\"\n\
                 [mqtt]\ninsecure_dev = true\nport = 1883\n",
                state.display()
            ),
        )
        .unwrap();
        let cfg = AgentConfig::load_with_env(Some(&site), HashMapEnv::new()).unwrap();
        assert_eq!(cfg.agent_trial().unwrap(), Duration::from_secs(120));
        assert_eq!(cfg.test_agent_version().unwrap(), None);
        let rt = cfg.runtime().unwrap();
        assert_eq!(rt.link.port, 1883);
        assert_eq!(rt.update_dir, Some(state.join("update")));

        let env = [
            ("FLEET_AGENT__UPDATE__AGENT_TRIAL_SECS", "3"),
            ("FLEET_AGENT__TEST_HOOKS__AGENT_VERSION", "9.9.9"),
            ("FLEET_AGENT__TEST_HOOKS__BROKER_PORT", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let cfg = AgentConfig::load_with_env(Some(&site), env).unwrap();
        assert_eq!(cfg.agent_trial().unwrap(), Duration::from_secs(3));
        assert_eq!(
            cfg.test_agent_version().unwrap(),
            Some(fleet_protocol::Version::parse("9.9.9").unwrap())
        );
        assert_eq!(cfg.runtime().unwrap().link.port, 1);

        let env = [
            ("FLEET_AGENT__UPDATE__AGENT_TRIAL_SECS", "0"),
            ("FLEET_AGENT__TEST_HOOKS__AGENT_VERSION", "nine"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let cfg = AgentConfig::load_with_env(Some(&site), env).unwrap();
        let err = cfg.agent_trial().unwrap_err();
        assert!(err.to_string().contains("update.agent_trial_secs"), "{err}");
        let err = cfg.test_agent_version().unwrap_err();
        assert!(
            err.to_string().contains("test_hooks.agent_version"),
            "{err}"
        );
    }

    type HashMapEnv = std::collections::HashMap<String, String>;

    #[test]
    fn bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("agent.toml");
        std::fs::write(
            &site,
            "[device]\nid = \"bad/id\"\nmodel = \"ballot-box-v2\"\n",
        )
        .unwrap();
        let err = AgentConfig::load(Some(&site))
            .unwrap()
            .runtime()
            .unwrap_err();
        assert!(err.to_string().contains("device.id"), "{err}");
        let missing = AgentConfig::load(Some(&dir.path().join("nope.toml"))).unwrap_err();
        assert!(missing.to_string().contains("does not exist"), "{missing}");
    }
}
