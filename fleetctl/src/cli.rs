//! The command tree: every command, flag, environment variable, default and
//! help text of `fleetctl`. Parsing only; [`crate::commands`] runs them.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::render::Output;

#[derive(Parser)]
#[command(
    name = "fleetctl",
    version,
    about = "Sandogh operators' CLI (talks to the controller's HTTP API)"
)]
pub struct Cli {
    /// Controller base URL.
    #[arg(
        long,
        env = "FLEETCTL_CONTROLLER",
        default_value = "https://127.0.0.1:8080",
        global = true
    )]
    pub controller: String,
    /// Bearer token (`fleet-controller init` printed the first admin token
    /// and wrote it to DATA/admin.token).
    #[arg(long, env = "FLEETCTL_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// The fleet CA (DATA/pki/ca.crt): the controller's HTTPS certificate
    /// is checked against it and nothing else.
    #[arg(long, env = "FLEETCTL_CA", global = true)]
    pub ca: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum By {
    Province,
    County,
    /// The headline only: per model, how many devices run its baseline
    /// (the election firmware).
    Model,
}

// Parsed once per run: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Cmd {
    /// The headline (per model: how many devices are on the election
    /// firmware, its baseline; per province: how many are not ready and
    /// why), then readiness per province (or per county). `--by model`:
    /// the headline's counts alone, for scripts.
    Readiness {
        #[arg(long, value_enum, default_value = "province")]
        by: By,
        /// Only this province (e.g. IR-23).
        #[arg(long)]
        province: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// List devices, filtered and paged.
    Devices {
        #[arg(long)]
        province: Option<String>,
        #[arg(long)]
        county: Option<String>,
        /// A polling station's id.
        #[arg(long)]
        station: Option<String>,
        #[arg(long)]
        model: Option<String>,
        /// `ready` or a reason: not-enrolled, never-seen, link-down, offline, update-failed, updating, outdated, unhealthy.
        #[arg(long)]
        readiness: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: usize,
        #[arg(long, default_value_t = 100)]
        per_page: usize,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// One device: registration, last state and health, recent events;
    /// or move it through its life (`device ship|deploy|retire ID`).
    #[command(args_conflicts_with_subcommands = true)]
    Device {
        id: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
        #[command(subcommand)]
        command: Option<DeviceCmd>,
    },
    /// Counties and polling stations.
    Registry {
        #[command(subcommand)]
        command: RegistryCmd,
    },
    /// Target firmware per model (what `outdated` is measured against).
    Baseline {
        #[command(subcommand)]
        command: BaselineCmd,
    },
    /// Certificates: when the CA, the broker's, the API's, the controller's
    /// and the devices' certificates expire.
    Pki {
        #[command(subcommand)]
        command: PkiCmd,
    },
    /// The brokers devices connect to: the central one and each provincial
    /// broker with its provinces, address and bridge identity.
    Brokers {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Warehouse enrolment: a shipment of scanned serials, and its status.
    Enrol {
        #[command(subcommand)]
        command: EnrolCmd,
    },
    /// Operator tokens: create (shown once), list, revoke.
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// The hash-chained audit log of every change made through the API.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
    /// The release team's offline signing (no controller): TUF keys, signing
    /// images into targets.json, rotating a role's key.
    Release {
        #[command(subcommand)]
        command: ReleaseCmd,
    },
    /// Decode a CBOR payload (a file, or - for stdin) into its JSON form.
    // Firmware updates (issue 9): the controller's repository, freeze windows.
    /// The controller's firmware repository: upload what the release team
    /// signed, list it, publish a new root, export it to a directory.
    Firmware {
        #[command(subcommand)]
        command: FirmwareCmd,
    },
    /// Rollouts: one signed target on a selection of devices, in waves (a
    /// canary, groups of provinces, the rest), with brakes.
    Rollout {
        #[command(subcommand)]
        command: RolloutCmd,
    },
    /// The fleet's freeze window: no device installs anything inside it.
    Freeze {
        #[command(subcommand)]
        command: FreezeCmd,
    },
    Decode {
        file: PathBuf,
        /// The input is hexadecimal text (as `mosquitto_sub -F %x` prints).
        #[arg(long)]
        hex: bool,
    },
}

#[derive(Subcommand)]
pub enum DeviceCmd {
    /// Mark an enrolled device as shipped to its polling station.
    Ship { id: String },
    /// Mark a shipped device as deployed at its polling station.
    Deploy { id: String },
    /// Retire a device (lost, stolen, broken): its certificate is revoked and
    /// the broker refuses it from then on.
    Retire { id: String },
    /// Send a one-off command: `device cmd ID ACTION` to one device, or
    /// `device cmd --province P [--county C] [--model M] [--readiness R]
    /// ACTION` to every device the selector names (in your scope).
    /// Actions: reboot, run-checks, upload-logs, renew-cert
    /// (renew-certificate). Prints the command ids; a device's answer shows
    /// on `fleetctl device ID`, uploaded logs with `fleetctl device logs ID`.
    #[command(visible_alias = "cmd")]
    Command {
        /// ID ACTION, or ACTION alone with a selector.
        #[arg(num_args = 1..=2, required = true, value_name = "ID ACTION")]
        args: Vec<String>,
        #[arg(long = "province", value_name = "PROVINCE")]
        provinces: Vec<String>,
        #[arg(long = "county", value_name = "COUNTY")]
        counties: Vec<String>,
        #[arg(long)]
        model: Option<String>,
        /// `ready` or a reason (offline, outdated, …).
        #[arg(long)]
        readiness: Option<String>,
        /// How long it may wait for an offline device: e.g. 90s, 10m, 2h
        /// (at most 24h; default 10m).
        #[arg(long, value_parser = crate::commands::device::parse_duration)]
        expires_in: Option<u64>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// The logs a device uploaded (upload-logs): the newest, or those of
    /// --command; to stdout (control characters shown escaped) or, as
    /// sent, to -o FILE.
    Logs {
        id: String,
        /// The upload-logs command's id (default: the newest with logs).
        #[arg(long)]
        command: Option<String>,
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Tell a device which firmware (or, with --agent, agent) version to
    /// run; it must be a signed target in the controller's repository.
    Update {
        id: String,
        #[arg(long)]
        version: String,
        #[arg(long)]
        agent: bool,
        /// The agent's platform (default: the controller's own).
        #[arg(long, requires = "agent")]
        platform: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
pub enum FirmwareCmd {
    /// Upload IMAGE (streamed, with a progress bar), then the signed
    /// targets metadata that names it (`fleetctl release sign` wrote it).
    Upload {
        image: PathBuf,
        /// KEYS/targets.json.
        #[arg(long)]
        targets: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// The published targets and each role's version and expiry.
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Publish N+1.root.json (after `fleetctl release keys rotate`).
    Root {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Copy the served repository (metadata and every target, each checked
    /// against its sha256) to DIR, for `fleet-agent update --from DIR`.
    Export {
        dir: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum RolloutCmd {
    /// Create a rollout and start it (unless --draft). The selection is the
    /// union of --province, --county, --station, --device and
    /// --devices-file; none: every device of the model.
    Create {
        #[arg(long)]
        model: String,
        #[arg(long)]
        version: String,
        /// An agent rollout (the model is then the agent's platform).
        #[arg(long)]
        agent: bool,
        /// For --agent: the platform (default: the controller's own).
        #[arg(long, requires = "agent")]
        platform: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "province", value_name = "PROVINCE")]
        provinces: Vec<String>,
        #[arg(long = "county", value_name = "COUNTY")]
        counties: Vec<String>,
        #[arg(long = "station", value_name = "STATION")]
        stations: Vec<String>,
        #[arg(long = "device", value_name = "DEVICE")]
        devices: Vec<String>,
        /// A file of device ids, one a line (`#` starts a comment).
        #[arg(long)]
        devices_file: Option<PathBuf>,
        /// Devices registered later that match join the rollout.
        #[arg(long)]
        include_new: bool,
        /// The first wave: N devices (50) or a share of them (5%).
        #[arg(long, value_parser = crate::commands::rollout::parse_canary)]
        canary: Option<fleet_api::types::CanaryRequest>,
        /// A wave of provinces, after the canary (repeat: one wave each);
        /// every other selected device is in a last wave.
        #[arg(long = "wave", value_name = "IR-23,IR-30", value_parser = crate::commands::rollout::parse_wave)]
        waves: Vec<Vec<String>>,
        /// Pause when more than this share of a wave fails (default 2%).
        #[arg(long, value_parser = crate::commands::rollout::parse_percent)]
        fail_above: Option<f64>,
        /// A wave is done when this share succeeded (default 95%).
        #[arg(long, value_parser = crate::commands::rollout::parse_percent)]
        advance_at: Option<f64>,
        /// At most this many devices of a province downloading at once
        /// (default 40; 0: no limit).
        #[arg(long)]
        max_downloads_per_province: Option<u32>,
        /// Local hours when devices may be released, e.g. 02:00-06:00.
        #[arg(long, value_parser = crate::commands::rollout::parse_hours)]
        hours: Option<String>,
        /// The local time of --hours (default +03:30, Tehran).
        #[arg(long, value_parser = parse_utc_offset, allow_hyphen_values = true)]
        utc_offset: Option<i32>,
        /// A released device with no result by then counts as timed out
        /// (default 2h).
        #[arg(long, value_parser = crate::commands::rollout::parse_timeout)]
        device_timeout: Option<u64>,
        /// Create it without starting it (`rollout start ID` later).
        #[arg(long)]
        draft: bool,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Every rollout with its phase and counters.
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// One rollout: its plan, each wave with its provinces' counters, its
    /// log; --watch refreshes bars every 2 s until it is completed,
    /// aborted or paused (an operator must act: it says how); --members
    /// STATE lists its devices in that state.
    Show {
        id: u64,
        #[arg(long, conflicts_with = "members")]
        watch: bool,
        /// pending, released, downloading, installing, rebooting,
        /// succeeded, failed, timed-out, skipped (or `all`).
        #[arg(long, value_name = "STATE")]
        members: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Start a draft.
    Start {
        id: u64,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Pause a running rollout (devices already released carry on).
    Pause {
        id: u64,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    Resume {
        id: u64,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Release nothing more (devices keep what they installed).
    Abort {
        id: u64,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Release the failed and timed-out devices again, with a new attempt.
    RetryFailed {
        id: u64,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
pub enum FreezeCmd {
    /// Add a freeze window: `--from 1403-12-01 --to 1403-12-03 --reason
    /// "election day"`. Dates: Jalali (year below 1700) or Gregorian,
    /// YYYY-MM-DD (local midnight) or YYYY-MM-DDTHH:MM, local at
    /// --utc-offset; or RFC 3339, or Unix ms.
    Add {
        #[arg(long)]
        from: String,
        /// The end (not included).
        #[arg(long)]
        to: String,
        /// Why, shown to operators.
        #[arg(long, default_value = "")]
        reason: String,
        /// The local time of dates without an offset (Tehran: +03:30).
        #[arg(long, default_value = "+03:30", value_parser = parse_utc_offset, allow_hyphen_values = true)]
        utc_offset: i32,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Replace the freeze windows with FROM..TO (dates as for `add`).
    Set {
        from: String,
        to: String,
        #[arg(long, default_value = "+03:30", value_parser = parse_utc_offset, allow_hyphen_values = true)]
        utc_offset: i32,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// The windows, each end in the Jalali and Gregorian calendars, with the reason.
    List {
        #[arg(long, default_value = "+03:30", value_parser = parse_utc_offset, allow_hyphen_values = true)]
        utc_offset: i32,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Remove every freeze window.
    Clear,
}

fn parse_utc_offset(s: &str) -> Result<i32, String> {
    crate::dates::parse_offset(s).map_err(|e| e.to_string())
}

#[derive(Subcommand)]
pub enum EnrolCmd {
    /// Register a shipment (CSV: serial,model,province[,county][,station])
    /// and print one single-use enrolment token per device.
    Batch {
        file: PathBuf,
        /// How long the tokens stay valid.
        #[arg(long, default_value_t = 168)]
        expires_hours: u64,
        /// Where the printable sheets go (SHIPMENT.html and SHIPMENT.pdf,
        /// a QR code per device; readable by you only: they hold the tokens).
        #[arg(long, default_value = ".")]
        sheet_dir: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Which devices of a shipment are enrolled, passed their self-test and are ready to ship.
    Status {
        shipment: String,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a token; it is printed once and cannot be shown again.
    Create {
        /// admin, central-ops, province-tech, warehouse or viewer.
        #[arg(long)]
        role: String,
        /// For province-tech: the provinces it may see (IR-02,IR-27).
        #[arg(long, value_delimiter = ',')]
        province: Vec<String>,
        /// Who or what the token is for.
        #[arg(long)]
        name: Option<String>,
        /// Days until the token expires (1 to 3650; default: never).
        #[arg(long)]
        expires_days: Option<u32>,
    },
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Revoke a token at once.
    Revoke { id: String },
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Entries, newest first.
    List {
        /// Part of the actor's name or token id.
        #[arg(long)]
        actor: Option<String>,
        /// The device (or other target) changed.
        #[arg(long)]
        device: Option<String>,
        /// The action, or its beginning (`device.`, `rollout.`, `console.`).
        #[arg(long)]
        action: Option<String>,
        /// Unix milliseconds.
        #[arg(long)]
        since_ms: Option<u64>,
        #[arg(long)]
        until_ms: Option<u64>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Check the whole chain; exit status 1 names the first broken entry.
    /// Prints the head (last entry and its hash): write it down off this
    /// machine, and check it later with --anchor.
    Verify {
        /// A head written down earlier, `SEQ:HASH`: the entry must still
        /// have that hash (someone able to write the controller's data
        /// directory could otherwise rewrite the whole chain consistently).
        #[arg(long)]
        anchor: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum RegistryCmd {
    /// Import counties and stations from a CSV (province,county,station_id[,county_name_en,county_name_fa,station_name]).
    Import { file: PathBuf },
    /// List counties with their station counts.
    Counties {
        #[arg(long)]
        province: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
pub enum PkiCmd {
    /// Each service certificate and the CA with its dates, then the devices
    /// whose certificates end first.
    Status {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
pub enum BaselineCmd {
    /// Set the baseline firmware of a model.
    Set { model: String, version: String },
    /// Show every model's baseline.
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
pub enum ReleaseCmd {
    /// The TUF keys: make the set (root 1), or rotate one role's key.
    Keys {
        #[command(subcommand)]
        command: ReleaseKeysCmd,
    },
    /// Hash an image and add it to KEYS/targets.json (signed by the targets
    /// key, version bumped). A version already signed with other content is
    /// refused.
    Sign {
        image: PathBuf,
        /// Hardware model (firmware), or platform (agent; default: this
        /// machine's, e.g. x86-64-linux).
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        version: String,
        /// The image is a fleet-agent binary, not a firmware tarball.
        #[arg(long)]
        agent: bool,
        #[arg(long, default_value = "./release-keys")]
        keys: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Re-sign root (as N+1, same keys) or targets.json with a fresh
    /// expiry, when there is nothing new to sign before they expire.
    Renew {
        #[arg(long, default_value = "./release-keys")]
        keys: PathBuf,
        /// root | targets (the controller renews snapshot and timestamp).
        #[arg(long)]
        role: fleet_repo::release::Role,
        /// For root: a current root key to sign with (repeat up to the
        /// threshold; default: KEYS/root-*.pem).
        #[arg(long = "root-key")]
        root_key: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
pub enum ReleaseKeysCmd {
    /// Make the key set: root keys, the targets key, the controller's
    /// snapshot and timestamp keys, root.json version 1 and an empty
    /// targets.json.
    Init {
        #[arg(long, default_value = "./release-keys")]
        keys: PathBuf,
        #[arg(long, default_value_t = 1)]
        root_keys: u8,
        /// How many root keys must sign a new root.
        #[arg(long, default_value_t = 1)]
        root_threshold: u8,
        #[arg(long, default_value_t = 365)]
        root_expires_days: u32,
        #[arg(long, default_value_t = 365)]
        targets_expires_days: u32,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Replace a role's key (root: every root key): writes root N+1, signed
    /// by the current root keys (threshold) and the new ones.
    Rotate {
        #[arg(long, default_value = "./release-keys")]
        keys: PathBuf,
        /// root | targets | snapshot | timestamp
        #[arg(long)]
        role: fleet_repo::release::Role,
        /// A current root key to sign with (repeat up to the threshold;
        /// default: KEYS/root-*.pem).
        #[arg(long = "root-key")]
        root_key: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}
