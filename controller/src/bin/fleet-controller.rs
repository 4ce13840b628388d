//! `fleet-controller`: parse arguments, start tracing, call `run`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fleet_controller::{BrokerMode, ServeConfig};

#[derive(Parser)]
#[command(name = "fleet-controller", version, about = "Sandogh fleet controller")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Prepare a new data directory: the fleet CA, the broker's and the
    /// controller's certificates, and the first admin token (printed once,
    /// and written to DIR/admin.token with mode 0600).
    Init {
        #[arg(long, env = "FLEET_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Run the controller: managed Mosquitto, SQLite store, ingest, HTTP API.
    Serve {
        /// Where the database, the broker's files and logs live.
        #[arg(long, env = "FLEET_DATA_DIR")]
        data_dir: PathBuf,
        /// HTTP API address (port 0 picks a free port; the ready line says which).
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: String,
        /// Port for the managed Mosquitto (default: the last one used, or a free one).
        #[arg(long, conflicts_with = "broker")]
        mqtt_port: Option<u16>,
        /// Use an external broker HOST:PORT instead of managing Mosquitto.
        #[arg(long)]
        broker: Option<String>,
        /// Seconds without any message after which a device counts as offline.
        #[arg(long, default_value_t = 900)]
        freshness_secs: u64,
        /// Plaintext MQTT without client certificates. Development only.
        #[arg(long)]
        insecure_dev: bool,
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
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match cli.command {
        Cmd::Init { data_dir } => rt.block_on(async move {
            let done = fleet_controller::init(&data_dir).await?;
            println!("{}", done.admin_token);
            eprintln!(
                "Initialised {}. The admin token above is shown once; it is also in {} (mode 0600).",
                data_dir.display(),
                done.token_file.display()
            );
            Ok(())
        }),
        Cmd::Serve {
            data_dir,
            http,
            mqtt_port,
            broker,
            freshness_secs,
            insecure_dev,
        } => rt.block_on(async move {
            let mut cfg = ServeConfig::new(data_dir);
            cfg.insecure_dev = insecure_dev;
            cfg.freshness = Duration::from_secs(freshness_secs.max(1));
            cfg.broker = match broker {
                Some(b) => {
                    let (host, port) = b
                        .rsplit_once(':')
                        .with_context(|| format!("--broker {b:?}: expected HOST:PORT"))?;
                    BrokerMode::External {
                        host: host.to_owned(),
                        port: port
                            .parse()
                            .with_context(|| format!("--broker {b:?}: bad port"))?,
                    }
                }
                None => BrokerMode::Managed { port: mqtt_port },
            };
            let listener = tokio::net::TcpListener::bind(&http)
                .await
                .with_context(|| format!("cannot listen on {http}"))?;
            fleet_controller::run(cfg, listener, shutdown_signal()).await
        }),
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on Linux");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
