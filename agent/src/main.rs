//! `fleet-agent`: parse arguments, load config, start tracing, run.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fleet_agent::{AgentConfig, Hardware, SystemHardware};

#[derive(Parser)]
#[command(name = "fleet-agent", version, about = "Sandogh device agent")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent until SIGINT/SIGTERM.
    Run {
        /// Site configuration file (default /etc/fleet-agent/agent.toml, optional).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the configured checks once and print the results.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the built-in default configuration, which documents every key.
    DefaultConfig,
    /// Enrol this device: make its key, send a certificate request with the
    /// enrolment token from the warehouse sheet, keep the certificate, the
    /// fleet CA and the broker address in the state directory.
    Enrol {
        /// The controller's base URL.
        #[arg(long)]
        controller: String,
        /// The device's enrolment token. On a shared bench prefer
        /// --token-file: an argument is visible to everyone through `ps`.
        #[arg(
            long,
            env = "FLEET_AGENT_ENROL_TOKEN",
            hide_env_values = true,
            conflicts_with = "token_file",
            required_unless_present = "token_file"
        )]
        token: Option<String>,
        /// Read the enrolment token from this file, or from standard input
        /// with `-` (e.g. piped from the QR scanner).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The fleet CA shipped with the device image, to check the
        /// controller's HTTPS certificate before sending anything.
        #[arg(long)]
        ca: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Install FILE as this device's agent binary, version VERSION, with a
    /// trial: the installed binary is kept (STATE/update/agent.prev), and
    /// the next start of the agent must reach the broker within
    /// update.agent_trial_secs, or the previous binary is put back (USB or
    /// manual updates; FILE must be verified already). Run it as the
    /// installed binary (the one the service starts): that is the one
    /// replaced. The running agent is not touched: restart it to begin the
    /// trial.
    SelfUpdate {
        /// The new agent binary.
        #[arg(long)]
        binary: PathBuf,
        /// Its version (it must report this one, and be newer).
        #[arg(long)]
        version: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The TUF verifier behind the TUF conformance client protocol: `tuf
    /// --metadata-dir D init ROOT`, `… --metadata-url U refresh`, `…
    /// --target-name P --target-base-url T --target-dir TD download`. Exit
    /// code 0 on success, 1 on any failure.
    Tuf(fleet_agent::tuf_cli::TufArgs),
    /// Update the firmware offline from an exported repository directory
    /// (`fleetctl firmware export DIR`, e.g. a USB stick): the same
    /// verification, installer and reboot as an update from the
    /// controller. Stop the running agent first. The results wait in the
    /// outbox until the device is next online.
    Update {
        /// The exported repository (DIR/metadata, DIR/targets).
        #[arg(long)]
        from: PathBuf,
        /// The version to install (default: the newest for this model).
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Download URL to DEST, resuming after cuts; DEST appears only when
    /// complete and verified (see fleet_agent::download).
    Fetch {
        url: String,
        dest: PathBuf,
        /// Expected SHA-256 (hex).
        #[arg(long)]
        sha256: Option<String>,
        /// Expected length in bytes.
        #[arg(long)]
        len: Option<u64>,
        /// The fleet CA (default: the one from enrolment in the state directory).
        #[arg(long)]
        ca: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    fleet_agent::process::init_tracing("FLEET_AGENT_LOG", "info");
    // One thread is plenty for an agent and keeps it small.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Cmd::DefaultConfig => {
            print!("{}", fleet_agent::config::DEFAULT_TOML);
            Ok(())
        }
        Cmd::Check { config } => {
            let cfg = AgentConfig::load(config.as_deref())?;
            let mut hw = hardware(&cfg)?;
            let results = rt.block_on(hw.run_checks());
            if print_checks(results) {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Enrol {
            controller,
            token,
            token_file,
            ca,
            config,
        } => {
            let cfg = AgentConfig::load(config.as_deref())?;
            let device = cfg.device_id()?;
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let token = match (token, token_file) {
                (Some(t), _) => t,
                (None, Some(path)) => fleet_agent::enrol::read_token(&path)?,
                (None, None) => anyhow::bail!("pass --token-file FILE (or - for standard input)"),
            };
            fleet_agent::enrol::check_transport(&controller, cfg.mqtt.insecure_dev)?;
            let shipped_ca = match &ca {
                Some(path) => Some(
                    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
                ),
                None if controller.starts_with("https://") => anyhow::bail!(
                    "the controller speaks HTTPS with the fleet's CA: pass --ca /path/to/fleet-ca.crt (the CA shipped in the device image)"
                ),
                None => None,
            };
            let client = fleet_api::Client::new(&controller, shipped_ca.as_deref())?;
            let identity = rt.block_on(fleet_agent::enrol::enrol(
                &client,
                &device,
                &token,
                shipped_ca.as_deref(),
            ))?;
            let files = fleet_agent::enrol::save(&identity, &cfg.device.state_dir)?;
            println!(
                "enrolled {device}: certificate {}, broker {}:{}",
                files.cert.display(),
                identity.broker.host,
                identity.broker.port
            );
            // The bench self-test: the configured checks, once, here; the
            // results reach the controller when `fleet-agent run` starts.
            let mut hw = hardware(&cfg)?;
            let results = rt.block_on(hw.run_checks());
            let failed = print_checks(results);
            println!("self-test: {}", if failed { "FAILED" } else { "passed" });
            if failed {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Update {
            from,
            version,
            config,
        } => {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let mut cfg = AgentConfig::load(config.as_deref())?;
            let from = std::fs::canonicalize(&from)
                .with_context(|| format!("cannot open {}", from.display()))?;
            cfg.update.enabled = true;
            cfg.update.repo_url = format!("file://{}", from.display());
            let runtime = cfg.runtime()?;
            let mut options = cfg.options()?;
            let ucfg = options
                .update
                .as_mut()
                .context("updates are not configured")?;
            let target = match version {
                Some(v) => {
                    let version = fleet_protocol::Version::parse(&v)
                        .map_err(|e| anyhow::anyhow!("--version {v}: {e}"))?;
                    fleet_protocol::TargetFirmware {
                        manifest: fleet_protocol::firmware::target_name(
                            fleet_protocol::ArtifactKind::Firmware,
                            &runtime.model,
                            &version,
                        ),
                        version,
                        attempt: 0,
                    }
                }
                None => rt
                    .block_on(fleet_agent::update::repository::latest_firmware(
                        ucfg,
                        &runtime.model,
                    ))
                    .map_err(|e| anyhow::anyhow!(e))?,
            };
            println!("updating to {} from {}", target.version, from.display());
            let name = target.manifest.clone();
            ucfg.usb = Some(target);
            let state = fleet_agent::update::state::StateFile::in_dir(&ucfg.dir);
            let hw = hardware(&cfg)?;
            let shutdown = {
                let _rt = rt.enter();
                fleet_agent::process::shutdown_signal().context("cannot install signal handlers")?
            };
            rt.block_on(fleet_agent::runtime::run_with(
                runtime, options, hw, shutdown,
            ))?;
            let after = state.load()?;
            println!("update step: {}", after.step.name());
            let now = fleet_agent::unix_ms();
            if after.given_up.as_deref() == Some(name.as_str()) {
                eprintln!("the update was refused or rolled back; the reason is in the device's update-result event (sent when it is next online)");
                std::process::exit(1);
            }
            if after.freeze.iter().any(|w| w.contains(now)) {
                println!("held by a freeze window: nothing was installed");
                return Ok(());
            }
            if matches!(after.step, fleet_agent::update::machine::Step::Idle) {
                // Nothing reached the reboot: a failure the running agent
                // tries again (a hash mismatch, expired metadata, a copy
                // that failed); the log above says which.
                eprintln!("no update was installed; the reason is in the log above and in the device's update events");
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Tuf(args) => {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            match rt.block_on(fleet_agent::tuf_cli::run(&args, fleet_agent::unix_ms())) {
                Ok(done) => {
                    println!("{done}");
                    Ok(())
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
            }
        }
        Cmd::Fetch {
            url,
            dest,
            sha256,
            len,
            ca,
            config,
        } => {
            let cfg = AgentConfig::load(config.as_deref())?;
            let ca = ca.unwrap_or_else(|| cfg.device.state_dir.join("ca.crt"));
            let ca_pem = std::fs::read(&ca).ok();
            let dl = fleet_agent::download::DownloadConfig {
                ca_pem,
                allow_plain_http: cfg.mqtt.insecure_dev,
                ..Default::default()
            };
            let expected = fleet_agent::download::Expected { len, sha256 };
            let done = rt.block_on(fleet_agent::download::download(
                &url,
                &dest,
                &expected,
                &dl,
                &mut |_| {},
            ))?;
            println!(
                "fetched {}: {} bytes, sha256 {}, {} requests ({} resumed, {} restarts)",
                dest.display(),
                done.len,
                done.sha256,
                done.requests,
                done.resumed,
                done.restarts
            );
            Ok(())
        }
        Cmd::SelfUpdate {
            binary,
            version,
            config,
        } => {
            let cfg = AgentConfig::load(config.as_deref())?;
            let version = fleet_protocol::Version::parse(&version)
                .with_context(|| format!("--version {version}"))?;
            let running = fleet_agent::agent_version();
            let done = fleet_agent::update::agent_binary::install(
                &cfg.update_dir(),
                &binary,
                &version,
                &running,
                cfg.agent_trial()?,
                fleet_agent::unix_ms(),
            )?;
            println!(
                "installed agent {version} at {} (was {running}, kept as {}); its next start is a trial of {} s",
                done.exe.display(),
                done.prev.display(),
                done.record.trial_ms / 1000
            );
            Ok(())
        }
        Cmd::Run { config } => {
            let cfg = AgentConfig::load(config.as_deref())?;
            if let Some(v) = cfg.test_agent_version()? {
                tracing::warn!(version = %v, "test_hooks.agent_version: reporting another version than the build's; tests only");
                fleet_agent::set_test_agent_version(v);
            }
            let runtime = cfg.runtime()?;
            let options = cfg.options()?;
            let hw = hardware(&cfg)?;
            let shutdown = {
                let _rt = rt.enter();
                fleet_agent::process::shutdown_signal().context("cannot install signal handlers")?
            };
            rt.block_on(fleet_agent::runtime::run_with(
                runtime, options, hw, shutdown,
            ))?;
            Ok(())
        }
    }
}

/// Print check results; true if any failed.
fn print_checks(results: Vec<fleet_protocol::CheckResult>) -> bool {
    let mut failed = false;
    for r in results {
        failed |= !r.passed;
        println!(
            "{:<20} {:<4} {}",
            r.name,
            if r.passed { "ok" } else { "FAIL" },
            r.message.unwrap_or_default()
        );
    }
    failed
}

fn hardware(cfg: &AgentConfig) -> anyhow::Result<SystemHardware> {
    let firmware =
        SystemHardware::read_firmware(&cfg.device.firmware_version_file).map_err(|reason| {
            fleet_agent::config::ConfigError::Firmware {
                path: cfg.device.firmware_version_file.clone(),
                reason,
            }
        })?;
    Ok(SystemHardware::new(
        firmware,
        cfg.health.disk_mount.clone(),
        cfg.checks.list.clone(),
        cfg.commands.reboot.clone(),
    ))
}
