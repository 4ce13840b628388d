//! `fleet-controller`: parse arguments, load the configuration, start
//! tracing, and call into the library (`startup`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fleet_controller::config::{BrokerKind, ControllerConfig, Site};
use fleet_controller::startup::{self, Application};

#[derive(Parser)]
#[command(name = "fleet-controller", version, about = "Sandogh fleet controller")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

// Parsed once per run: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Prepare a new data directory: the fleet CA, the broker's and the
    /// controller's certificates, and the first admin token (printed once,
    /// and written to DIR/admin.token with mode 0600).
    Init {
        #[arg(long, env = "FLEET_DATA_DIR")]
        data_dir: PathBuf,
        /// Use this CA certificate (PEM), made elsewhere, instead of making
        /// a new CA; needs --ca-key. The controller signs device
        /// certificates with it at enrolment, so its key lives in DIR/pki.
        #[arg(long, requires = "ca_key")]
        ca_cert: Option<PathBuf>,
        /// The key (PEM) of --ca-cert; checked to be that certificate's.
        #[arg(long, requires = "ca_cert")]
        ca_key: Option<PathBuf>,
        /// A host name or address the broker's and the API's certificates
        /// carry besides localhost and 127.0.0.1: where devices, bridges
        /// and operators reach them (repeat it; renewals keep them).
        #[arg(long = "server-name", value_name = "HOST")]
        server_names: Vec<String>,
    },
    /// Run the controller: managed Mosquitto, SQLite store, ingest, HTTP API.
    /// Flags override the configuration (defaults, site file, environment).
    Serve {
        /// Site configuration file (default: /etc/fleet-controller/controller.toml if it exists).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where the database, the broker's files and logs live (data.dir).
        #[arg(long, env = "FLEET_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// HTTP API address; port 0 picks a free port, the ready line says which (http.listen).
        #[arg(long)]
        http: Option<String>,
        /// Port for the managed Mosquitto (default: the last one used, or a free one).
        #[arg(long, conflicts_with = "broker")]
        mqtt_port: Option<u16>,
        /// Use an external broker HOST:PORT instead of managing Mosquitto.
        #[arg(long)]
        broker: Option<String>,
        /// Seconds without any message after which a device counts as offline
        /// (readiness.freshness_secs, default 900).
        #[arg(long)]
        freshness_secs: Option<u64>,
        /// Plaintext MQTT without client certificates. Development only.
        #[arg(long)]
        insecure_dev: bool,
        /// Start N managed provincial brokers on this machine (p01 … pNN,
        /// the provinces split by population), each bridged to the central
        /// broker; replaces the configuration's [[broker.provincial]].
        #[arg(long)]
        provincial_brokers: Option<usize>,
    },
    /// Render a Mosquitto configuration and ACL as the managed brokers run
    /// them, for a broker set up elsewhere (Ansible): the central broker,
    /// or a provincial one bridged to it. Writes OUT/mosquitto.conf and
    /// OUT/acl, or prints both to stdout.
    BrokerConfig {
        #[arg(long, value_parser = ["central", "provincial"])]
        role: String,
        /// The provincial broker's name ([a-z0-9-]{1,32}); its bridge's
        /// certificate name is bridge.NAME (`issue-cert --kind bridge`).
        #[arg(long, required_if_eq("role", "provincial"))]
        name: Option<String>,
        /// The provinces it serves, e.g. IR-02,IR-27.
        #[arg(long, value_delimiter = ',', required_if_eq("role", "provincial"))]
        provinces: Vec<String>,
        /// Central: the names of the provincial brokers bridged to it, e.g.
        /// p01,p02 (each bridge.NAME may write only under
        /// fleet/v1/b/bridge.NAME/ and its link state). Without it, no
        /// bridge may publish on the central broker.
        #[arg(long, value_delimiter = ',')]
        bridges: Vec<String>,
        /// The device listener.
        #[arg(long, default_value = "0.0.0.0:8883")]
        listen: String,
        /// The central broker the bridge connects to, HOST:PORT; its
        /// certificate must name HOST (no hostname check is skipped).
        #[arg(long, required_if_eq("role", "provincial"))]
        central: Option<String>,
        #[arg(long, default_value = "/etc/mosquitto/fleet/ca.crt")]
        cafile: PathBuf,
        #[arg(long, default_value = "/etc/mosquitto/fleet/broker.crt")]
        certfile: PathBuf,
        #[arg(long, default_value = "/etc/mosquitto/fleet/broker.key")]
        keyfile: PathBuf,
        /// The fleet CRL (the controller's broker.crl_hook keeps it current).
        #[arg(long, default_value = "/etc/mosquitto/fleet/crl.pem")]
        crlfile: PathBuf,
        /// Default: /etc/mosquitto/fleet/bridge.NAME.crt.
        #[arg(long)]
        bridge_certfile: Option<PathBuf>,
        /// Default: /etc/mosquitto/fleet/bridge.NAME.key.
        #[arg(long)]
        bridge_keyfile: Option<PathBuf>,
        /// Where the ACL is read from. Default: OUT/acl, else /etc/mosquitto/fleet/acl.
        #[arg(long)]
        acl_file: Option<PathBuf>,
        /// Persistence, pid file and log.
        #[arg(long, default_value = "/var/lib/mosquitto")]
        state_dir: PathBuf,
        /// The account a root-started Mosquitto drops to (`user` line).
        #[arg(long)]
        user: Option<String>,
        /// Provincial: QoS 1 messages queued per client while the uplink is down.
        #[arg(long)]
        max_queued_messages: Option<u64>,
        /// Provincial: bytes queued per client while the uplink is down.
        #[arg(long)]
        max_queued_bytes: Option<u64>,
        /// Provincial: the bridge's reconnect backoff, MIN,MAX seconds
        /// (Mosquitto's restart_timeout; default 10,300).
        #[arg(long, value_parser = parse_bridge_retry)]
        bridge_retry: Option<fleet_controller::broker::render::BridgeRetry>,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Set the firmware repository up (DATA/firmware/): the release team's
    /// root.json and its first targets.json, and the controller's snapshot
    /// and timestamp keys (copied to DATA/firmware/keys/ with mode 0600;
    /// delete the originals). Root and targets keys never come here. It
    /// writes the audit log: run it with the controller stopped.
    FirmwareInit {
        #[arg(long, alias = "data", env = "FLEET_DATA_DIR")]
        data_dir: PathBuf,
        /// KEYS/root.json from `fleetctl release keys init`.
        #[arg(long)]
        root: PathBuf,
        /// KEYS/targets.json.
        #[arg(long)]
        targets: PathBuf,
        /// KEYS/controller/snapshot.pem.
        #[arg(long)]
        snapshot_key: PathBuf,
        /// KEYS/controller/timestamp.pem.
        #[arg(long)]
        timestamp_key: PathBuf,
    },
    /// Print the built-in configuration: every key, documented, with its default.
    DefaultConfig,
    /// Issue a certificate from the fleet CA: a client certificate for the
    /// bridge of a provincial broker (`--kind bridge --name north`:
    /// certificate name bridge.north) or for the read-only observer
    /// (`--kind observer`: fleet.observer, reads every fleet topic on the
    /// central broker); or the server certificate of a provincial broker
    /// set up elsewhere (`--kind server --name broker.north --host
    /// north.fleet`). Writes OUT/NAME.crt, OUT/NAME.key (0600) and
    /// OUT/ca.crt, and records it in the audit log.
    IssueCert {
        #[arg(long, env = "FLEET_DATA_DIR")]
        data_dir: PathBuf,
        #[arg(long, value_parser = ["bridge", "observer", "server"])]
        kind: String,
        /// Bridge: the provincial broker's name ([a-z0-9-]{1,32}). Server:
        /// the certificate's name (a-z 0-9 . -).
        #[arg(long, required_if_eq_any([("kind", "bridge"), ("kind", "server")]))]
        name: Option<String>,
        /// Server: a host name or address devices reach the broker at
        /// (repeat it; localhost and 127.0.0.1 are always in).
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        #[arg(long)]
        out: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Drive the store writer as fast as it accepts, on a new database in
    /// DIR, and print one JSON object (for `fleet-sim bench store`).
    #[command(hide = true)]
    BenchStore {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        devices: usize,
        /// How long to write (the write rate; ignored with --day).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The writer's batch size (default: the configured store.batch_max).
        #[arg(long)]
        batch_max: Option<usize>,
        /// Instead of the write rate: one simulated day of the field's
        /// traffic, and the bytes it adds on disk.
        #[arg(long)]
        day: bool,
    },
    /// Back the database and its audit head up while the controller runs:
    /// OUT/fleet-STAMP.db (a consistent copy, its audit chain checked) and
    /// OUT/fleet-STAMP.head; keeps the newest --keep. To restore, with the
    /// controller stopped, copy them back as DATA/fleet.db and
    /// DATA/audit.head (and delete DATA/fleet.db-wal and -shm).
    Backup {
        #[arg(long, env = "FLEET_DATA_DIR")]
        data_dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// How many backups to keep.
        #[arg(long, default_value_t = 14)]
        keep: usize,
    },
    /// The audit log, on this machine.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// After the head file (DIR/audit.head) was lost or damaged: check that
    /// the chain itself is intact, write the head anew from its last entry,
    /// and record the reseal (who, why, what the head said) in the log.
    /// Run it with the controller stopped.
    Reseal {
        #[arg(long, env = "FLEET_DATA_DIR")]
        data_dir: PathBuf,
        /// Why, for the log (e.g. "disk replaced, head lost").
        #[arg(long)]
        reason: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLEET_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(
            std::env::var_os("NO_COLOR").is_none()
                && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Cmd::Backup {
            data_dir,
            out,
            keep,
        } => runtime()?.block_on(async move {
            let done = startup::backup(&data_dir, &out, keep).await?;
            println!("{}", serde_json::to_string(&done)?);
            eprintln!(
                "backed up {} ({} bytes, {} audit entries) and {}",
                done.db.display(),
                done.bytes,
                done.audit_entries,
                done.head.display()
            );
            Ok(())
        }),
        Cmd::Audit {
            command: AuditCmd::Reseal { data_dir, reason },
        } => runtime()?.block_on(async move {
            let who = format!(
                "fleet-controller audit reseal ({})",
                std::env::var("USER").unwrap_or_else(|_| "local".into())
            );
            let seq = startup::reseal_audit(&data_dir, &who, &reason).await?;
            eprintln!("audit head resealed; the reseal is entry #{seq}");
            Ok(())
        }),
        Cmd::FirmwareInit {
            data_dir,
            root,
            targets,
            snapshot_key,
            timestamp_key,
        } => runtime()?.block_on(async move {
            let who = format!(
                "fleet-controller firmware-init ({})",
                std::env::var("USER").unwrap_or_else(|_| "local".into())
            );
            let files = fleet_controller::firmware::InitFiles {
                root,
                targets,
                snapshot_key,
                timestamp_key,
            };
            let done = startup::firmware_init(&data_dir, &files, &who).await?;
            eprintln!(
                "firmware repository set up in {} (root version {}, targets version {}); the controller serves it at /api/v1/tuf. Delete the copied key files now.",
                done.repo.display(),
                done.root_version,
                done.targets_version
            );
            Ok(())
        }),
        Cmd::IssueCert {
            data_dir,
            kind,
            name,
            hosts,
            out,
            days,
        } => runtime()?.block_on(async move {
            let who = format!(
                "fleet-controller issue-cert ({})",
                std::env::var("USER").unwrap_or_else(|_| "local".into())
            );
            let (identity, server_hosts) = match (kind.as_str(), name) {
                ("server", Some(n)) => {
                    anyhow::ensure!(
                        fleet_controller::pki::valid_server_name(&n)
                            && n.parse::<std::net::IpAddr>().is_err(),
                        "--name {n:?}: use a-z 0-9 . -"
                    );
                    (n, Some(hosts.as_slice()))
                }
                ("server", None) => anyhow::bail!("--kind server needs --name"),
                _ if !hosts.is_empty() => anyhow::bail!("--host is for --kind server"),
                ("bridge", Some(n)) => {
                    anyhow::ensure!(
                        fleet_protocol::topic::valid_broker_name(&n),
                        "--name {n:?}: use 1-32 of a-z 0-9 -"
                    );
                    (fleet_protocol::topic::bridge_identity(&n), None)
                }
                ("bridge", None) => anyhow::bail!("--kind bridge needs --name"),
                _ => (fleet_controller::pki::OBSERVER_IDENTITY.to_owned(), None),
            };
            let files =
                startup::issue_cert(&data_dir, &identity, server_hosts, &out, days, &who).await?;
            for f in files {
                println!("{}", f.display());
            }
            Ok(())
        }),
        Cmd::BenchStore {
            data_dir,
            devices,
            seconds,
            batch_max,
            day,
        } => {
            let cfg = ControllerConfig::load(Site::Default, std::env::vars().collect())?;
            let mut writer = cfg.writer();
            if let Some(m) = batch_max {
                anyhow::ensure!(m > 0, "--batch-max must be at least 1");
                writer.max_batch = m;
            }
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("cannot create {}", data_dir.display()))?;
            let db = data_dir.join(if day { "day.db" } else { "rate.db" });
            anyhow::ensure!(
                !db.exists(),
                "{} exists: give an empty directory",
                db.display()
            );
            use fleet_controller::store::bench;
            let out = runtime()?.block_on(async move {
                anyhow::Ok(if day {
                    serde_json::to_value(
                        bench::day_size(
                            &db,
                            devices,
                            bench::DayRates::default(),
                            writer,
                            cfg.ingest.write_queue,
                        )
                        .await?,
                    )?
                } else {
                    serde_json::to_value(
                        bench::write_rate(
                            &db,
                            devices,
                            std::time::Duration::from_secs(seconds.max(1)),
                            writer,
                            cfg.ingest.write_queue,
                        )
                        .await?,
                    )?
                })
            })?;
            println!("{out}");
            Ok(())
        }
        Cmd::BrokerConfig {
            role,
            name,
            provinces,
            bridges,
            listen,
            central,
            cafile,
            certfile,
            keyfile,
            crlfile,
            bridge_certfile,
            bridge_keyfile,
            acl_file,
            state_dir,
            user,
            max_queued_messages,
            max_queued_bytes,
            bridge_retry,
            out,
        } => {
            use fleet_controller::broker::render;
            let (bind, port) = listen
                .rsplit_once(':')
                .with_context(|| format!("--listen {listen:?}: expected ADDR:PORT"))?;
            let port: u16 = port
                .parse()
                .with_context(|| format!("--listen {listen:?}: bad port"))?;
            let acl = acl_file.unwrap_or_else(|| {
                out.as_ref().map_or_else(
                    || PathBuf::from("/etc/mosquitto/fleet/acl"),
                    |o| o.join("acl"),
                )
            });
            let layout = render::Layout {
                user,
                bind: bind.to_owned(),
                port,
                tls: Some(fleet_controller::broker::BrokerTls {
                    ca: cafile.clone(),
                    cert: certfile,
                    key: keyfile,
                    crl: crlfile,
                }),
                acl,
                state: state_dir,
            };
            let (config, acl) = if role == "central" {
                let bridges: Vec<String> = bridges.iter().map(|b| b.trim().to_owned()).collect();
                for b in &bridges {
                    anyhow::ensure!(
                        fleet_protocol::topic::valid_broker_name(b),
                        "--bridges {b:?}: a provincial broker's name is 1-32 of a-z 0-9 -"
                    );
                }
                (
                    render::render_central(&layout),
                    render::render_acl(fleet_controller::pki::CONTROLLER_IDENTITY, &bridges),
                )
            } else {
                anyhow::ensure!(
                    bridges.is_empty(),
                    "--bridges is for --role central (the provincial broker's bridge is --name)"
                );
                let name = name.context("--role provincial needs --name")?;
                anyhow::ensure!(
                    fleet_protocol::topic::valid_broker_name(&name),
                    "--name {name:?}: use 1-32 of a-z 0-9 -"
                );
                let provinces = provinces
                    .iter()
                    .map(|p| fleet_protocol::ProvinceCode::parse(p.trim()))
                    .collect::<Result<Vec<_>, _>>()
                    .context("--provinces")?;
                anyhow::ensure!(!provinces.is_empty(), "--provinces: at least one");
                let address = central.context("--role provincial needs --central HOST:PORT")?;
                anyhow::ensure!(
                    address.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()),
                    "--central {address:?}: expected HOST:PORT"
                );
                let identity = fleet_protocol::topic::bridge_identity(&name);
                let defaults = render::QueueBounds::default();
                let bridge = render::Bridge {
                    provinces,
                    address,
                    tls: Some(render::BridgeTls {
                        ca: cafile,
                        cert: bridge_certfile.unwrap_or_else(|| {
                            PathBuf::from(format!("/etc/mosquitto/fleet/{identity}.crt"))
                        }),
                        key: bridge_keyfile.unwrap_or_else(|| {
                            PathBuf::from(format!("/etc/mosquitto/fleet/{identity}.key"))
                        }),
                    }),
                    queue: render::QueueBounds {
                        messages: max_queued_messages.unwrap_or(defaults.messages),
                        bytes: max_queued_bytes.unwrap_or(defaults.bytes),
                    },
                    retry: bridge_retry.unwrap_or_default(),
                    name,
                };
                (
                    render::render_provincial(&layout, &bridge),
                    render::render_provincial_acl(),
                )
            };
            match out {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                    for (file, text) in [("mosquitto.conf", &config), ("acl", &acl)] {
                        let path = dir.join(file);
                        std::fs::write(&path, text)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                        println!("{}", path.display());
                    }
                }
                None => print!("# ---- mosquitto.conf\n{config}\n# ---- acl\n{acl}"),
            }
            Ok(())
        }
        Cmd::DefaultConfig => {
            print!("{}", fleet_controller::config::DEFAULT_TOML);
            Ok(())
        }
        Cmd::Init {
            data_dir,
            ca_cert,
            ca_key,
            server_names,
        } => runtime()?.block_on(async move {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
            };
            let ca = match (&ca_cert, &ca_key) {
                (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                _ => None,
            };
            let opts = fleet_controller::pki::InitOptions { ca, server_names };
            let done = startup::init(&data_dir, &opts).await?;
            println!("{}", done.admin_token);
            eprintln!(
                "Initialised {}. The admin token above is shown once; it is also in {} (mode 0600).",
                data_dir.display(),
                done.token_file.display()
            );
            Ok(())
        }),
        Cmd::Serve {
            config,
            data_dir,
            http,
            mqtt_port,
            broker,
            freshness_secs,
            insecure_dev,
            provincial_brokers,
        } => {
            let site = config.as_deref().map_or(Site::Default, Site::File);
            let mut cfg = ControllerConfig::load(site, std::env::vars().collect())?;
            if let Some(dir) = data_dir {
                cfg.data.dir = dir;
            }
            if let Some(http) = http {
                cfg.http.listen = http;
            }
            if let Some(port) = mqtt_port {
                cfg.broker.mode = BrokerKind::Managed;
                cfg.broker.port = port;
            }
            if let Some(b) = broker {
                let (host, port) = b
                    .rsplit_once(':')
                    .with_context(|| format!("--broker {b:?}: expected HOST:PORT"))?;
                cfg.broker.mode = BrokerKind::External;
                cfg.broker.host = host.to_owned();
                cfg.broker.port = port
                    .parse()
                    .with_context(|| format!("--broker {b:?}: bad port"))?;
            }
            if let Some(secs) = freshness_secs {
                cfg.readiness.freshness_secs = secs.max(1);
            }
            cfg.broker.insecure_dev |= insecure_dev;
            if let Some(n) = provincial_brokers.filter(|n| *n > 0) {
                cfg.broker.set_managed_tier(n)?;
            }
            cfg.validate()?;
            cfg.data_dir()?;
            runtime()?.block_on(async move {
                let listener = tokio::net::TcpListener::bind(&cfg.http.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", cfg.http.listen))?;
                // Installed before the ready line: a SIGTERM right after it
                // must shut down cleanly, not kill the process.
                let shutdown = shutdown_signal()?;
                Application::build(cfg, listener)
                    .await?
                    .run_until_stopped(shutdown)
                    .await
            })
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the async runtime")
}

/// SIGTERM or SIGINT. The handlers are installed when this is called, not
/// when the returned future is first polled.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install a SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

fn parse_bridge_retry(s: &str) -> Result<fleet_controller::broker::render::BridgeRetry, String> {
    fleet_controller::broker::render::BridgeRetry::parse(s)
}
