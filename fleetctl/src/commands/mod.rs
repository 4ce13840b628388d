//! One module per command group, each calling the typed client and
//! returning a typed result that [`crate::render`] prints. [`run`] only
//! routes a parsed command to its group.

pub mod audit;
pub mod baseline;
pub mod brokers;
pub mod decode;
pub mod device;
pub mod devices;
pub mod enrol;
pub mod firmware;
pub mod freeze;
pub mod pki;
pub mod readiness;
pub mod registry;
pub mod release;
pub mod rollout;
pub mod token;

use std::path::{Path, PathBuf};

use fleet_api::{Client, ClientError};

use crate::cli::{
    AuditCmd, BaselineCmd, Cli, Cmd, DeviceCmd, EnrolCmd, FirmwareCmd, FreezeCmd, PkiCmd,
    RegistryCmd, TokenCmd,
};
use crate::cli::{ReleaseCmd, ReleaseKeysCmd, RolloutCmd};
use crate::render::{Output, Report};

/// What can stop a command, each saying what the operator can do.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The controller could not be reached, or refused (its own words).
    #[error(transparent)]
    Api(#[from] ClientError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not UTF-8 text")]
    NotText { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("which device? fleetctl device ID")]
    NoDevice,
    #[error("not hexadecimal: {0}")]
    NotHex(hex::FromHexError),
    #[error("{0}")]
    NotAPayload(fleet_protocol::DecodeError),
    #[error("{0:?} is not a shipment id (shipment- and 8 hexadecimal digits, as `enrol batch` printed it)")]
    BadShipment(String),
    /// A release command (offline signing) failed.
    #[error(transparent)]
    Release(#[from] release::ReleaseError),
    #[error("the audit log is broken at entry #{seq}: {reason}")]
    AuditBroken { seq: u64, reason: String },
    /// The firmware repository's content is not what it should be.
    #[error("{0}")]
    Firmware(String),
    /// A value the operator gave, with what was expected.
    #[error("{0}")]
    Usage(String),
    /// A date or time the operator gave (`freeze add --from`).
    #[error(transparent)]
    Date(#[from] crate::dates::DateError),
    #[error("the freeze window must end after it starts: from {from} to {to}")]
    FreezeEmpty { from: String, to: String },
    #[error("--anchor {0:?}: expected SEQ:HASH, as `fleetctl audit verify` printed it")]
    BadAnchor(String),
    #[error(
        "the audit log was rewritten: entry #{seq} should have hash {expected}, it has {found}"
    )]
    AnchorMismatch {
        seq: u64,
        expected: String,
        found: String,
    },
}

/// A command's result and the format it was asked for.
pub struct Done {
    pub report: Box<dyn Report>,
    pub output: Output,
}

fn done(report: impl Report + 'static, output: Output) -> Result<Done, CommandError> {
    Ok(Done {
        report: Box::new(report),
        output,
    })
}

/// The client for `--controller`, `--ca` and `--token`.
pub fn client(cli: &Cli) -> Result<Client, ClientError> {
    Ok(Client::with_ca_file(&cli.controller, cli.ca.as_deref())?.with_token(cli.token.clone()))
}

/// Run one command. `decode` needs no controller, so no client is made for it.
pub async fn run(cli: Cli) -> Result<Done, CommandError> {
    use Output::Table;
    if let Cmd::Decode { file, hex } = &cli.command {
        return done(decode::run(file, *hex)?, Table);
    }
    if let Cmd::Release { command } = cli.command {
        return run_release(command);
    }
    let c = &client(&cli)?;
    match cli.command {
        Cmd::Readiness {
            by: crate::cli::By::Model,
            province,
            output,
        } => done(
            readiness::Headline(readiness::headline(c, province).await?),
            output,
        ),
        Cmd::Readiness {
            by,
            province,
            output,
        } => done(readiness::run(c, by, province).await?, output),
        Cmd::Devices {
            province,
            county,
            station,
            model,
            readiness,
            page,
            per_page,
            output,
        } => {
            let filter = devices::Filter {
                province,
                county,
                station,
                model,
                readiness,
                page,
                per_page,
            };
            done(devices::run(c, filter).await?, output)
        }
        Cmd::Device {
            id,
            output,
            command: None,
        } => done(device::show(c, id).await?, output),
        Cmd::Device {
            command: Some(cmd), ..
        } => {
            let (id, to) = match cmd {
                DeviceCmd::Command {
                    args,
                    provinces,
                    counties,
                    model,
                    readiness,
                    expires_in,
                    output,
                } => {
                    let selector = device::Selector {
                        provinces,
                        counties,
                        model,
                        readiness,
                    };
                    return match device::Target::of(args, selector)? {
                        device::Target::One { id, action } => {
                            done(device::command(c, &id, action, expires_in).await?, output)
                        }
                        device::Target::Many { selector, action } => done(
                            device::command_many(c, selector, action, expires_in).await?,
                            output,
                        ),
                    };
                }
                DeviceCmd::Logs {
                    id,
                    command,
                    out,
                    output,
                } => return done(device::logs(c, &id, command, out.as_deref()).await?, output),
                DeviceCmd::Update {
                    id,
                    version,
                    agent,
                    platform,
                    output,
                } => {
                    return done(
                        device::update(c, &id, version, agent, platform).await?,
                        output,
                    )
                }
                DeviceCmd::Ship { id } => (id, device::Move::Ship),
                DeviceCmd::Deploy { id } => (id, device::Move::Deploy),
                DeviceCmd::Retire { id } => (id, device::Move::Retire),
            };
            done(device::lifecycle(c, &id, to).await?, Table)
        }
        Cmd::Registry { command } => match command {
            RegistryCmd::Import { file } => done(registry::import(c, &file).await?, Table),
            RegistryCmd::Counties { province, output } => {
                done(registry::counties(c, province).await?, output)
            }
        },
        Cmd::Pki {
            command: PkiCmd::Status { output },
        } => done(pki::status(c).await?, output),
        Cmd::Brokers { output } => done(brokers::list(c).await?, output),
        Cmd::Baseline { command } => match command {
            BaselineCmd::Set { model, version } => {
                done(baseline::set(c, &model, &version).await?, Table)
            }
            BaselineCmd::List { output } => done(baseline::list(c).await?, output),
        },
        Cmd::Enrol { command } => match command {
            EnrolCmd::Batch {
                file,
                expires_hours,
                sheet_dir,
                output,
            } => {
                // The sheets name the controller as the operator gave it.
                let controller = cli.controller.trim_end_matches('/');
                let batch = enrol::Batch {
                    file: &file,
                    expires_hours,
                    sheet_dir: &sheet_dir,
                    controller,
                };
                done(enrol::batch(c, batch).await?, output)
            }
            EnrolCmd::Status { shipment, output } => {
                done(enrol::status(c, &shipment).await?, output)
            }
        },
        Cmd::Token { command } => match command {
            TokenCmd::Create {
                role,
                province,
                name,
                expires_days,
            } => done(
                token::create(c, role, province, name, expires_days).await?,
                Table,
            ),
            TokenCmd::List { output } => done(token::list(c).await?, output),
            TokenCmd::Revoke { id } => done(token::revoke(c, id).await?, Table),
        },
        Cmd::Audit { command } => match command {
            AuditCmd::List {
                actor,
                device,
                action,
                since_ms,
                until_ms,
                limit,
                output,
            } => {
                let q = fleet_api::AuditQuery {
                    actor,
                    target: device,
                    since_ms,
                    until_ms,
                    limit: Some(limit),
                    seq: None,
                    action,
                };
                done(audit::list(c, &q).await?, output)
            }
            AuditCmd::Verify { anchor } => done(audit::verify(c, &anchor).await?, Table),
        },
        Cmd::Firmware { command } => match command {
            FirmwareCmd::Upload {
                image,
                targets,
                output,
            } => done(firmware::upload(c, &image, &targets).await?, output),
            FirmwareCmd::List { output } => done(firmware::list(c).await?, output),
            FirmwareCmd::Root { file, output } => done(firmware::root(c, &file).await?, output),
            FirmwareCmd::Export { dir, output } => done(firmware::export(c, &dir).await?, output),
        },
        Cmd::Rollout { command } => run_rollout(c, command).await,
        Cmd::Freeze { command } => match command {
            FreezeCmd::Add {
                from,
                to,
                reason,
                utc_offset,
                output,
            } => {
                let w = freeze::Window {
                    from,
                    to,
                    reason,
                    utc_offset_min: utc_offset,
                };
                done(freeze::add(c, &w).await?, output)
            }
            FreezeCmd::Set {
                from,
                to,
                utc_offset,
                output,
            } => {
                let w = freeze::Window {
                    from,
                    to,
                    reason: String::new(),
                    utc_offset_min: utc_offset,
                };
                done(freeze::set(c, &w).await?, output)
            }
            FreezeCmd::List { utc_offset, output } => {
                done(freeze::list(c, utc_offset).await?, output)
            }
            FreezeCmd::Clear => done(freeze::clear(c).await?, Table),
        },
        Cmd::Decode { .. } => unreachable!("decode returned above"),
        Cmd::Release { .. } => unreachable!("release returned above"),
    }
}

/// The rollout group.
async fn run_rollout(c: &Client, command: RolloutCmd) -> Result<Done, CommandError> {
    use fleet_api::types::RolloutAction as A;
    let (id, act, reason, output) = match command {
        RolloutCmd::Create {
            model,
            version,
            agent,
            platform,
            name,
            provinces,
            counties,
            stations,
            devices,
            devices_file,
            include_new,
            canary,
            waves,
            fail_above,
            advance_at,
            max_downloads_per_province,
            hours,
            utc_offset,
            device_timeout,
            draft,
            output,
        } => {
            let args = rollout::Create {
                name,
                model,
                version,
                agent,
                platform,
                provinces,
                counties,
                stations,
                devices,
                devices_file,
                include_new,
                canary,
                waves,
                fail_above,
                advance_at,
                max_downloads_per_province,
                hours,
                utc_offset_min: utc_offset,
                device_timeout_s: device_timeout,
                draft,
            };
            return done(rollout::create(c, args).await?, output);
        }
        RolloutCmd::List { output } => return done(rollout::list(c).await?, output),
        RolloutCmd::Show {
            id,
            watch,
            members,
            output,
        } => {
            return match (watch, members) {
                (true, _) => done(
                    rollout::watch(c, id, output != Output::Table).await?,
                    output,
                ),
                (false, Some(state)) => {
                    let state = match state.as_str() {
                        "all" => None,
                        s => Some(s.parse().map_err(CommandError::Usage)?),
                    };
                    done(rollout::members(c, id, state).await?, output)
                }
                (false, None) => done(rollout::show(c, id).await?, output),
            }
        }
        RolloutCmd::Start { id, output } => (id, A::Start, None, output),
        RolloutCmd::Pause { id, reason, output } => (id, A::Pause, reason, output),
        RolloutCmd::Resume { id, output } => (id, A::Resume, None, output),
        RolloutCmd::Abort { id, output } => (id, A::Abort, None, output),
        RolloutCmd::RetryFailed { id, output } => (id, A::RetryFailed, None, output),
    };
    done(rollout::action(c, id, act, reason).await?, output)
}

/// The release group: offline, no client.
fn run_release(command: ReleaseCmd) -> Result<Done, CommandError> {
    match command {
        ReleaseCmd::Keys {
            command:
                ReleaseKeysCmd::Init {
                    keys,
                    root_keys,
                    root_threshold,
                    root_expires_days,
                    targets_expires_days,
                    output,
                },
        } => {
            let opts = fleet_repo::release::InitOptions {
                root_keys,
                root_threshold,
                root_expires_days,
                targets_expires_days,
            };
            done(release::init(&keys, &opts)?, output)
        }
        ReleaseCmd::Keys {
            command:
                ReleaseKeysCmd::Rotate {
                    keys,
                    role,
                    root_key,
                    output,
                },
        } => done(release::rotate(&keys, role, &root_key)?, output),
        ReleaseCmd::Sign {
            image,
            model,
            version,
            agent,
            keys,
            output,
        } => {
            let args = release::SignArgs {
                keys: &keys,
                image: &image,
                model,
                version,
                agent,
            };
            done(release::sign(args)?, output)
        }
        ReleaseCmd::Renew {
            keys,
            role,
            root_key,
            output,
        } => done(release::renew(&keys, role, &root_key)?, output),
    }
}

/// A file's bytes, or stdin's for `-`.
pub fn read_input(path: &Path) -> Result<Vec<u8>, CommandError> {
    let read = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map(|_| buf)
    } else {
        std::fs::read(path)
    };
    read.map_err(|source| CommandError::Read {
        path: path.to_owned(),
        source,
    })
}

/// A file (or stdin) as text: the CSV uploads.
pub fn read_text(path: &Path) -> Result<String, CommandError> {
    String::from_utf8(read_input(path)?).map_err(|_| CommandError::NotText {
        path: path.to_owned(),
    })
}
