//! `fleet-sim`: parse arguments, start tracing, run, plan or bench.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use fleet_protocol::ProvinceCode;
use fleet_sim::plan::{Plan, PlanConfig};
use fleet_sim::run::{self, Api, RunConfig};

#[derive(Parser)]
#[command(
    name = "fleet-sim",
    version,
    about = "Sandogh simulated fleet",
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Clone)]
struct PlanArgs {
    /// Number of simulated devices.
    #[arg(long, default_value_t = 2000)]
    devices: usize,
    /// Seed: the same seed gives the same fleet.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Comma-separated province codes (default: all 31, weighted by population).
    #[arg(long, value_delimiter = ',')]
    provinces: Vec<String>,
    /// Share of devices that report once and then power off.
    #[arg(long, default_value_t = 0.04)]
    offline_share: f64,
    /// Share of devices whose printer check fails.
    #[arg(long, default_value_t = 0.03)]
    failing_share: f64,
    /// Share of devices on the previous firmware.
    #[arg(long, default_value_t = 0.08)]
    outdated_share: f64,
}

impl PlanArgs {
    fn plan(&self) -> anyhow::Result<Plan> {
        let provinces = self
            .provinces
            .iter()
            .map(|p| ProvinceCode::parse(p.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Plan::new(&PlanConfig {
            devices: self.devices,
            seed: self.seed,
            provinces,
            offline_share: self.offline_share,
            failing_share: self.failing_share,
            outdated_share: self.outdated_share,
        })?)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InstallerArg {
    /// The agent's directory A/B installer on slots in each device's directory.
    Dir,
    /// A stand-in that keeps the slots in memory and takes --install-ms.
    Sim,
    /// No updates: the devices run without `[update]`.
    None,
}

/// How the simulated devices update (the real update driver and TUF
/// client against the controller's /api/v1/tuf).
#[derive(Args, Clone)]
struct UpdateArgs {
    #[arg(long, value_enum, default_value = "sim")]
    installer: InstallerArg,
    /// How long the sim installer takes to write a slot.
    #[arg(long, default_value_t = 2000)]
    install_ms: u64,
    /// Added before each download starts.
    #[arg(long, default_value_t = 0)]
    download_ms: u64,
    /// Between a device's reboot (its agent ends) and its next start.
    #[arg(long, default_value_t = 2000)]
    reboot_ms: u64,
    /// The agent's health deadline after booting a new image (failing
    /// checks roll back at this deadline).
    #[arg(long, default_value_t = 20)]
    health_deadline_secs: u64,
    /// Share of devices whose checks fail after booting a new image (rolled back).
    #[arg(long, default_value_t = 0.0)]
    fail_share: f64,
    /// Those devices fail only their first N attempts (a retry with a
    /// higher attempt then commits).
    #[arg(long, default_value_t = 1)]
    fail_attempts: u32,
    /// Share of devices that go to reboot and never come back.
    #[arg(long, default_value_t = 0.0)]
    never_return_share: f64,
    /// Where each device's update directory goes (default: a temporary
    /// directory removed at exit).
    #[arg(long)]
    update_dir: Option<PathBuf>,
}

impl UpdateArgs {
    fn sim(&self, seed: u64) -> Option<fleet_sim::update::SimUpdate> {
        use fleet_sim::update::{InstallerChoice, SimUpdate};
        let installer = match self.installer {
            InstallerArg::Dir => InstallerChoice::Dir,
            InstallerArg::Sim => InstallerChoice::Sim,
            InstallerArg::None => return None,
        };
        Some(SimUpdate {
            installer,
            install: Duration::from_millis(self.install_ms),
            download: Duration::from_millis(self.download_ms),
            reboot: Duration::from_millis(self.reboot_ms),
            health_deadline: Duration::from_secs(self.health_deadline_secs.max(1)),
            fail_share: self.fail_share,
            fail_attempts: self.fail_attempts,
            never_return_share: self.never_return_share,
            seed,
            dir: self.update_dir.clone(),
        })
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    /// Expected readiness per province, for people.
    Table,
    /// Expected readiness per province, as `fleetctl readiness --output json` prints it.
    Json,
    /// Every planned device as CSV: id, model, province, county, station, firmware, condition.
    Devices,
}

/// The flags of `run` (and of each shard it starts).
#[derive(Args, Clone)]
struct RunArgs {
    /// Controller base URL.
    #[arg(long, default_value = "https://127.0.0.1:8080")]
    controller: String,
    /// An admin (or central-ops) token; `fleet-controller init` wrote one to DATA/admin.token.
    #[arg(long, env = "FLEETCTL_TOKEN", hide_env_values = true)]
    token: String,
    /// The fleet CA (DATA/pki/ca.crt), to check the controller's HTTPS certificate.
    #[arg(long, env = "FLEETCTL_CA")]
    ca: Option<PathBuf>,
    #[command(flatten)]
    plan: PlanArgs,
    /// Seconds between health reports.
    #[arg(long, default_value_t = 60)]
    health_secs: u64,
    /// MQTT keep-alive seconds (the broker's last will fires after 1.5x).
    #[arg(long, default_value_t = 30)]
    keep_alive_secs: u64,
    /// Seconds between check runs.
    #[arg(long, default_value_t = 60)]
    checks_secs: u64,
    /// New MQTT connections per second while coming up (per shard).
    #[arg(long, default_value_t = 500)]
    connect_rate: u32,
    /// Keep the simulated devices' keys, certificates and brokers here, so
    /// the same fleet can run again against the same controller.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Write when each device connected (its state sent) to this JSON
    /// file, every 2 s; `fleet-sim reconnects FILE` reads it.
    #[arg(long)]
    connections_out: Option<PathBuf>,
    /// Processes to run the fleet in (default: devices / --max-per-process,
    /// rounded up). More than one: this process enrols, then starts each
    /// shard as a child process and waits for them.
    #[arg(long)]
    shards: Option<usize>,
    /// The most devices (connections) one process holds; at most 19,000
    /// (a process may hold 20,000 open files).
    #[arg(long, default_value_t = fleet_sim::shard::DEFAULT_MAX_PER_PROCESS)]
    max_per_process: usize,
    #[command(flatten)]
    update: Box<UpdateArgs>,
}

impl RunArgs {
    fn config(&self, show_progress: bool) -> RunConfig {
        RunConfig {
            controller: self.controller.clone(),
            health_every: Duration::from_secs(self.health_secs.max(1)),
            keep_alive: Duration::from_secs(self.keep_alive_secs.max(1)),
            checks_every: Duration::from_secs(self.checks_secs.max(1)),
            connect_rate: self.connect_rate,
            backoff_max: Duration::from_secs(10),
            show_progress,
            update: self.update.sim(self.plan.seed),
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Register the simulated fleet with the controller and run it until stopped.
    Run(Box<RunArgs>),
    /// One shard of a `run` (started by `run --shards N`, not by people).
    #[command(hide = true)]
    Shard {
        #[arg(long)]
        index: usize,
        #[arg(long)]
        of: usize,
        #[command(flatten)]
        run: Box<RunArgs>,
    },
    /// The histogram of reconnect delays after a moment (a broker restart,
    /// a link returning), from `run --connections-out`'s file.
    Reconnects {
        file: PathBuf,
        /// The moment, in Unix milliseconds: each device's first connection
        /// after it counts.
        #[arg(long)]
        since_ms: u64,
        #[arg(long, default_value_t = 250)]
        bucket_ms: u64,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Print the fleet a seed gives and the readiness it must produce.
    Plan {
        #[command(flatten)]
        plan: PlanArgs,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Measure the controller or the agent and print the figures.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
}

/// The fleet the tier benches start.
#[derive(Args, Clone)]
struct BenchFleetArgs {
    #[arg(long, default_value_t = 100_000)]
    devices: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Managed provincial brokers the controller starts (0: devices on the central broker).
    #[arg(long, default_value_t = 0)]
    provincial_brokers: usize,
    /// Seconds between each device's health reports (phase a of ingest).
    #[arg(long, default_value_t = 60)]
    health_secs: u64,
    /// Simulator processes (default: devices / --max-per-process, rounded up).
    #[arg(long)]
    shards: Option<usize>,
    #[arg(long, default_value_t = fleet_sim::shard::DEFAULT_MAX_PER_PROCESS)]
    max_per_process: usize,
    /// New connections per second per shard.
    #[arg(long, default_value_t = 500)]
    connect_rate: u32,
    /// Cached controller data and identities (default target/bench-state).
    #[arg(long)]
    state_root: Option<PathBuf>,
    #[arg(long)]
    controller_bin: Option<PathBuf>,
    /// Where the reports go (default target/bench).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl BenchFleetArgs {
    fn options(&self) -> fleet_sim::bench::fleet::FleetOptions {
        fleet_sim::bench::fleet::FleetOptions {
            devices: self.devices,
            seed: self.seed,
            provincial_brokers: self.provincial_brokers,
            health_secs: self.health_secs.max(1),
            shards: self.shards,
            max_per_process: self.max_per_process,
            connect_rate: self.connect_rate,
            controller_bin: self.controller_bin.clone(),
            state_root: self.state_root.clone(),
            update: None,
            all_healthy: false,
            connections_out: None,
            fresh_tag: None,
        }
    }

    fn out(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(fleet_sim::report::default_dir)
    }
}

#[derive(Args, Clone)]
struct IngestArgs {
    /// The measured window W, in seconds.
    #[arg(long, default_value_t = 60)]
    window_secs: u64,
    /// After the fleet is up (or restarted), before the window.
    #[arg(long, default_value_t = 15)]
    warmup_secs: u64,
    /// Phase b's steps at most (each halves the health interval; 0: phase a only).
    #[arg(long, default_value_t = 8)]
    max_steps: usize,
}

impl IngestArgs {
    fn options(&self, fleet: &BenchFleetArgs) -> fleet_sim::bench::ingest::IngestOptions {
        fleet_sim::bench::ingest::IngestOptions {
            fleet: fleet.options(),
            window: Duration::from_secs(self.window_secs.max(1)),
            warmup: Duration::from_secs(self.warmup_secs),
            max_steps: self.max_steps,
            out: fleet.out(),
        }
    }
}

#[derive(Args, Clone)]
struct QueriesArgs {
    /// Queries of each kind (national, one province).
    #[arg(long, default_value_t = 2000)]
    queries: usize,
    #[arg(long, default_value = "IR-23")]
    province: String,
}

impl QueriesArgs {
    fn options(&self, fleet: &BenchFleetArgs) -> fleet_sim::bench::queries::QueriesOptions {
        fleet_sim::bench::queries::QueriesOptions {
            fleet: fleet.options(),
            queries: self.queries,
            warmup: Duration::from_secs(5),
            province: self.province.clone(),
            out: fleet.out(),
        }
    }
}

#[derive(Subcommand)]
enum BenchCmd {
    /// The controller's applied messages against a bare subscriber on the
    /// central broker, through the tier: (a) at the fleet's own rate, (b)
    /// stepping the rate up to the highest the tier sustains.
    Ingest {
        #[command(flatten)]
        fleet: BenchFleetArgs,
        #[command(flatten)]
        ingest: IngestArgs,
    },
    /// Readiness query latency (national and one province) while the fleet reports.
    Queries {
        #[command(flatten)]
        fleet: BenchFleetArgs,
        #[command(flatten)]
        queries: QueriesArgs,
    },
    /// Memory per simulated device, per broker connection, per device in
    /// the controller; open files against the limit.
    Footprint {
        #[command(flatten)]
        fleet: BenchFleetArgs,
    },
    /// The reconnect storm: kill the central broker, then the provincial
    /// broker with the most devices; time until every device is online and
    /// readiness exact again, reconnects per second, peak CPU and memory of
    /// the controller and the brokers.
    Storm {
        #[command(flatten)]
        fleet: BenchFleetArgs,
    },
    /// Footprint, queries, (with --storm) the reconnect storm, and ingest
    /// on one fleet start (writes footprint.json, queries.json,
    /// storm.json and ingest.json).
    Tier {
        #[command(flatten)]
        fleet: BenchFleetArgs,
        #[command(flatten)]
        ingest: IngestArgs,
        #[command(flatten)]
        queries: QueriesArgs,
        /// Also the reconnect storm (before ingest).
        #[arg(long)]
        storm: bool,
    },
    /// One firmware rollout (canary, province groups, the rest) over the
    /// bench fleet of updating devices (simulated installer, real
    /// downloads), from creation to completion: per wave its duration and
    /// control-loop passes, messages sent.
    Rollout {
        #[command(flatten)]
        fleet: BenchFleetArgs,
        /// A wave of provinces (repeat, or separate with ';'): default
        /// IR-23,IR-02 then IR-05,IR-06; the rest is the last wave.
        #[arg(long = "waves", value_delimiter = ';')]
        waves: Vec<String>,
        #[arg(long, default_value_t = 2.0)]
        canary_percent: f64,
        #[arg(long, default_value_t = 40)]
        max_downloads_per_province: u32,
        /// How long the simulated installer takes to write a slot.
        #[arg(long, default_value_t = 2000)]
        install_ms: u64,
        /// Waited before each download starts.
        #[arg(long, default_value_t = 500)]
        download_ms: u64,
        #[arg(long, default_value_t = 2000)]
        reboot_ms: u64,
        /// Devices whose checks fail after booting the new image.
        #[arg(long, default_value_t = 0.0)]
        fail_share: f64,
        /// The image's payload in KiB (each device downloads it).
        #[arg(long, default_value_t = 100)]
        image_kib: usize,
        /// Give up when the rollout has not ended after this long.
        #[arg(long, default_value_t = 7200)]
        timeout_secs: u64,
        #[arg(long)]
        fleetctl_bin: Option<PathBuf>,
    },
    /// The store: SQLite write rate with the writer's batching and with
    /// batch_max = 1, and the bytes on disk per 100,000 devices per day.
    Store {
        #[arg(long, default_value_t = 10_000)]
        devices: usize,
        /// Seconds each write-rate run writes.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Devices of the simulated day (default: --devices).
        #[arg(long)]
        day_devices: Option<usize>,
        #[arg(long)]
        controller_bin: Option<PathBuf>,
        /// Where the report goes (default: target/bench).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The protocol's receive path on one core: topic parsed (direct or
    /// through a bridge) and envelope decoded and checked, messages/s.
    Decode {
        #[arg(long, default_value_t = 2_000_000)]
        messages: usize,
        /// Where the report goes (default: target/bench).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// One real fleet-agent process: resident memory, CPU, message sizes.
    Agent {
        #[arg(long, default_value_t = 60)]
        duration_secs: u64,
        #[arg(long)]
        controller_bin: Option<PathBuf>,
        /// The agent binary to measure (e.g. target/agent/fleet-agent).
        #[arg(long)]
        agent_bin: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    fleet_agent::process::init_tracing("FLEET_LOG", "info,fleet_agent=warn");
    if rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .is_err()
    {
        tracing::warn!("a TLS crypto provider was already installed");
    }
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match cli.command {
        Cmd::Plan { plan, output } => {
            let p = plan.plan()?;
            let rows = p.expected();
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Output::Devices => {
                    println!("id,model,province,county,station,firmware,condition");
                    for d in &p.devices {
                        println!(
                            "{},{},{},{},{},{},{}",
                            d.id,
                            d.model,
                            d.province,
                            d.county,
                            d.station,
                            d.firmware,
                            serde_json::to_value(d.condition)?.as_str().unwrap_or("")
                        );
                    }
                }
                Output::Table => {
                    println!("{:<8} {:>6} {:>6}  reasons", "PROVINCE", "TOTAL", "READY");
                    for r in rows {
                        println!(
                            "{:<8} {:>6} {:>6}  {:?}",
                            r.province, r.total, r.ready, r.reasons
                        );
                    }
                }
            }
            Ok(())
        }
        Cmd::Run(args) => rt.block_on(run_fleet(*args)),
        Cmd::Shard { index, of, run } => rt.block_on(run_shard(index, of, *run)),
        Cmd::Reconnects {
            file,
            since_ms,
            bucket_ms,
            output,
        } => {
            let c: fleet_sim::reconnects::Connections = serde_json::from_slice(
                &std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?,
            )
            .with_context(|| format!("{} is not a connections file", file.display()))?;
            let h = fleet_sim::reconnects::histogram(&c, since_ms, bucket_ms);
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&h)?),
                Output::Table | Output::Devices => print!("{h}"),
            }
            Ok(())
        }
        Cmd::Bench { what } => rt.block_on(async move {
            // Ctrl-C or SIGTERM drops the bench, and with it everything it
            // started (simulator shards, controller, brokers).
            let stop = fleet_agent::process::shutdown_signal()
                .context("cannot install signal handlers")?;
            let work = async move {
                match what {
                    BenchCmd::Ingest { fleet, ingest } => {
                        fleet_sim::bench::ingest::run(ingest.options(&fleet)).await?;
                        Ok(())
                    }
                    BenchCmd::Queries { fleet, queries } => {
                        fleet_sim::bench::queries::run(queries.options(&fleet)).await?;
                        Ok(())
                    }
                    BenchCmd::Footprint { fleet } => {
                        fleet_sim::bench::footprint::run(
                            fleet_sim::bench::footprint::FootprintOptions {
                                fleet: fleet.options(),
                                out: fleet.out(),
                            },
                        )
                        .await?;
                        Ok(())
                    }
                    BenchCmd::Storm { fleet } => {
                        fleet_sim::bench::storm::run(fleet_sim::bench::storm::StormOptions {
                            fleet: fleet.options(),
                            out: fleet.out(),
                        })
                        .await?;
                        Ok(())
                    }
                    BenchCmd::Tier {
                        fleet,
                        ingest,
                        queries,
                        storm,
                    } => {
                        fleet_sim::bench::tier::run(fleet_sim::bench::tier::TierOptions {
                            fleet: fleet.options(),
                            ingest: ingest.options(&fleet),
                            queries: queries.options(&fleet),
                            storm,
                            out: fleet.out(),
                        })
                        .await?;
                        Ok(())
                    }
                    BenchCmd::Rollout {
                        fleet,
                        waves,
                        canary_percent,
                        max_downloads_per_province,
                        install_ms,
                        download_ms,
                        reboot_ms,
                        fail_share,
                        image_kib,
                        timeout_secs,
                        fleetctl_bin,
                    } => {
                        let waves: Vec<Vec<String>> = if waves.is_empty() {
                            vec![
                                vec!["IR-23".into(), "IR-02".into()],
                                vec!["IR-05".into(), "IR-06".into()],
                            ]
                        } else {
                            waves
                                .iter()
                                .map(|w| w.split(',').map(|p| p.trim().to_owned()).collect())
                                .collect()
                        };
                        fleet_sim::bench::rollout::run(fleet_sim::bench::rollout::RolloutOptions {
                            fleet: fleet.options(),
                            waves,
                            canary_percent,
                            max_downloads_per_province,
                            install_ms,
                            download_ms,
                            reboot_ms,
                            fail_share,
                            image_kib,
                            timeout: Duration::from_secs(timeout_secs.max(1)),
                            fleetctl_bin,
                            out: fleet.out(),
                        })
                        .await?;
                        Ok(())
                    }
                    BenchCmd::Store {
                        devices,
                        seconds,
                        day_devices,
                        controller_bin,
                        out,
                    } => tokio::task::spawn_blocking(move || {
                        fleet_sim::bench::store::store(fleet_sim::bench::store::StoreBench {
                            devices,
                            seconds,
                            day_devices,
                            controller_bin,
                            out: out.unwrap_or_else(fleet_sim::report::default_dir),
                        })
                        .map(|_| ())
                    })
                    .await
                    .context("the store bench panicked")?,
                    BenchCmd::Decode { messages, out } => {
                        fleet_sim::bench::decode::decode(fleet_sim::bench::decode::DecodeBench {
                            messages,
                            out: out.unwrap_or_else(fleet_sim::report::default_dir),
                        })
                        .map(|_| ())
                    }
                    BenchCmd::Agent {
                        duration_secs,
                        controller_bin,
                        agent_bin,
                    } => {
                        fleet_sim::bench::agent(fleet_sim::bench::AgentBench {
                            duration: Duration::from_secs(duration_secs.max(1)),
                            controller_bin,
                            agent_bin,
                        })
                        .await
                    }
                }
            };
            tokio::select! {
                r = work => r,
                () = stop => anyhow::bail!("interrupted; what the bench started is stopped"),
            }
        }),
    }
}

/// `fleet-sim run`: enrol, then run the fleet here (one shard) or in
/// child processes (several).
async fn run_fleet(args: RunArgs) -> anyhow::Result<()> {
    let limit = fleet_sim::supervise::raise_open_files();
    let p = args.plan.plan()?;
    let max = fleet_sim::shard::check_max_per_process(args.max_per_process)?;
    let shards = args
        .shards
        .unwrap_or_else(|| fleet_sim::shard::default_shards(p.devices.len(), max));
    let slices = fleet_sim::shard::slices(p.devices.len(), shards, max)?;
    let api = Api::new(&args.controller, &args.token, args.ca.as_deref())?;
    let show = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing::info!(open_files = limit, shards, "starting the simulated fleet");
    // A temporary state directory when none is given and shards need one.
    let temp = match (&args.state_dir, shards) {
        (None, 2..) => Some(tempfile::Builder::new().prefix("fleet-sim-").tempdir()?),
        _ => None,
    };
    let state_dir = args
        .state_dir
        .clone()
        .or_else(|| temp.as_ref().map(|t| t.path().to_owned()));
    let identities = run::enrol_fleet(&api, &p, state_dir.as_deref(), show).await?;
    let shutdown =
        fleet_agent::process::shutdown_signal().context("cannot install signal handlers")?;
    if shards == 1 {
        let central = run::broker_address(&api).await?;
        return run_here(&p, &args, &central, &identities, shutdown, None).await;
    }
    let state_dir = state_dir.context("a state directory for the shards")?;
    // The `run` flags as given: every shard gets them.
    let run_args: Vec<std::ffi::OsString> = std::env::args_os().skip(2).collect();
    fleet_sim::supervise::supervise(
        fleet_sim::supervise::Sharded {
            exe: std::env::current_exe().context("cannot find this binary")?,
            run_args,
            slices,
            state_dir,
            connections_out: args.connections_out.clone(),
            show_progress: show,
        },
        shutdown,
    )
    .await
}

/// `fleet-sim shard`: run slice `index` of `of` of the plan with the
/// identities the parent enrolled, telling the parent how far it is on
/// standard output.
async fn run_shard(index: usize, of: usize, args: RunArgs) -> anyhow::Result<()> {
    fleet_sim::supervise::raise_open_files();
    let p = args.plan.plan()?;
    let range = fleet_sim::shard::slice(p.devices.len(), index, of, args.max_per_process)?;
    let mine = Plan {
        devices: p.devices[range].to_vec(),
    };
    let dir = args
        .state_dir
        .as_deref()
        .context("a shard needs --state-dir (its parent enrolled there)")?;
    let identities = run::Identities::load(dir)?;
    let api = Api::new(&args.controller, &args.token, args.ca.as_deref())?;
    let central = run::broker_address(&api).await?;
    let signal =
        fleet_agent::process::shutdown_signal().context("cannot install signal handlers")?;
    let shutdown = async move {
        tokio::select! {
            () = signal => {}
            () = fleet_sim::supervise::parent_gone() => {
                tracing::warn!(shard = index, "the parent is gone: stopping");
            }
        }
    };
    let progress = std::sync::Arc::new(fleet_sim::run::StartProgress::default());
    run_here(
        &mine,
        &args,
        &central,
        &identities,
        shutdown,
        Some(progress),
    )
    .await
}

/// Run `p`'s devices in this process until `shutdown`.
async fn run_here(
    p: &Plan,
    args: &RunArgs,
    central: &run::BrokerAddress,
    identities: &run::Identities,
    shutdown: impl std::future::Future<Output = ()>,
    progress: Option<std::sync::Arc<fleet_sim::run::StartProgress>>,
) -> anyhow::Result<()> {
    let show = progress.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let cfg = args.config(show);
    tokio::pin!(shutdown);
    let reporter = progress.clone().map(fleet_sim::supervise::report_progress);
    let (fleet, reported) = tokio::select! {
        started = run::start_counting(p, &cfg, central, identities, Duration::from_secs(30), progress.clone()) => started?,
        () = &mut shutdown => {
            tracing::info!("stopped while starting");
            return Ok(());
        }
    };
    if let Some(r) = reporter {
        r.abort();
        fleet_sim::supervise::report_running(reported);
    } else {
        tracing::info!(
            devices = p.devices.len(),
            reported,
            brokers = ?identities.per_broker(p.devices.iter().map(|d| d.id.as_str()), central),
            "simulated fleet running; Ctrl-C stops it"
        );
    }
    let recorder = fleet.connections.clone();
    let connections_out = args.connections_out.clone();
    let writer = async {
        let Some(path) = &connections_out else {
            return std::future::pending().await;
        };
        loop {
            if let Err(e) = recorder.write(path) {
                tracing::warn!(error = %e, "cannot write {}", path.display());
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    };
    tokio::select! {
        () = &mut shutdown => {}
        () = writer => {}
    }
    tracing::info!("stopping the simulated fleet");
    fleet.stop().await;
    if let Some(path) = &connections_out {
        recorder.write(path)?;
    }
    Ok(())
}
