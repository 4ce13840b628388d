//! The I/O around the update machine: it performs each [`Action`] (the
//! persisted step, the TUF client, downloads, installers, the reboot,
//! timers) and feeds the answers back as [`Input`]s with the trusted time.
//! It runs as its own task beside the agent's event loop: the loop tells it
//! what the core saw ([`Note`]: desired state, the broker link, check
//! results) and it tells the loop what the core must number, report or do
//! ([`Told`]). Blocking work (hashing, unpacking, commands) runs on
//! tokio's blocking pool.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use fleet_protocol::{ArtifactKind, CheckResult, Desired, EventKind, UpdateStatus, Version};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use super::config::{InstallerKind, UpdateConfig};
use super::error::{DriverError, InstallError};
use super::installer::{
    command::CommandInstaller, dir::DirInstaller, rauc::RaucInstaller, Installer,
};
use super::machine::{Action, Input, MachineConfig, Refusal, Target, UpdateMachine, UpdateTimer};
use super::state::StateFile;
use crate::download::{download, DownloadConfig, Expected};

/// What the agent's loop tells the driver.
#[derive(Debug, Clone)]
pub enum Note {
    Desired {
        desired: Desired,
        sent_at_ms: u64,
        retained: bool,
    },
    Connected(bool),
    Checks(Vec<CheckResult>),
}

/// What the driver tells the agent's loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Told {
    /// An event for the core to number and commit.
    Report(EventKind),
    Status(UpdateStatus),
    /// The committed firmware, reported from now on.
    Firmware(Version),
    /// Reboot by exiting (`update.reboot_by_exit`): the loop stops, the
    /// process exits 0, and the next start is the boot.
    Exit,
    /// A new agent binary is in place at this path: stop and start it
    /// ([`super::agent_binary::restart`]); its start is the trial.
    RestartAgent(PathBuf),
}

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Where signed metadata comes from: the TUF client and the trusted clock.
pub trait Repository: Send + Sync + 'static {
    /// Refresh the metadata and return the verified target `name`.
    fn check(
        &self,
        name: String,
        artifact: ArtifactKind,
        now_ms: u64,
    ) -> Boxed<Result<Target, Refusal>>;
    /// The trusted time now, from the system clock's reading.
    fn now(&self, system_ms: u64) -> u64 {
        system_ms
    }
    /// The controller's clock, from a live message (a lower bound for time).
    fn observe_controller(&self, _controller_ms: u64) {}
}

/// The installer and the slot this start booted, made before the core
/// (whose reported firmware is the booted slot's).
pub struct Prepared {
    pub installer: Arc<dyn Installer>,
    pub booted_slot: String,
    pub firmware: Option<Version>,
}

/// Make the configured installer and boot it (the directory installer
/// counts this start as a boot: call once per start).
pub fn prepare(cfg: &UpdateConfig) -> Result<Prepared, DriverError> {
    let installer: Arc<dyn Installer> = match &cfg.installer {
        InstallerKind::Dir { slots_dir } => Arc::new(DirInstaller::new(slots_dir)),
        InstallerKind::Rauc { program } => Arc::new(RaucInstaller::new(program)),
        InstallerKind::Command { hook } => Arc::new(CommandInstaller::new(hook.clone())?),
        InstallerKind::Custom(custom) => Arc::clone(&custom.0),
    };
    let booted_slot = installer.boot()?;
    let firmware = installer.booted_version();
    info!(slot = %booted_slot, firmware = ?firmware.as_ref().map(ToString::to_string), "booted");
    Ok(Prepared {
        installer,
        booted_slot,
        firmware,
    })
}

/// The image written to the new slot, until it is committed.
const PENDING_IMAGE: &str = "pending-image";
/// The image of the committed slot: the base of a delta.
const INSTALLED_IMAGE: &str = "installed-image";

/// The image being fetched: `STATE/update/download/image`.
pub fn image_path(update_dir: &Path) -> PathBuf {
    update_dir.join("download").join("image")
}

struct Driver<R: Repository> {
    cfg: UpdateConfig,
    machine: UpdateMachine,
    state: StateFile,
    installer: Arc<dyn Installer>,
    repo: Arc<R>,
    told: mpsc::Sender<Told>,
    answers: mpsc::Sender<Input>,
    timers: HashMap<UpdateTimer, Instant>,
    /// Where the new agent binary was swapped in, until the restart.
    swapped: Arc<std::sync::Mutex<Option<PathBuf>>>,
}

/// Start the driver's task. `firmware`: the booted firmware version.
pub fn spawn<R: Repository>(
    cfg: UpdateConfig,
    prepared: Prepared,
    firmware: Version,
    agent: Version,
    repo: R,
) -> (
    mpsc::Sender<Note>,
    mpsc::Receiver<Told>,
    tokio::task::JoinHandle<()>,
) {
    let (note_tx, note_rx) = mpsc::channel(64);
    let (told_tx, told_rx) = mpsc::channel(256);
    let task = tokio::spawn(run(cfg, prepared, firmware, agent, repo, note_rx, told_tx));
    (note_tx, told_rx, task)
}

async fn run<R: Repository>(
    cfg: UpdateConfig,
    prepared: Prepared,
    firmware: Version,
    agent: Version,
    repo: R,
    mut notes: mpsc::Receiver<Note>,
    told: mpsc::Sender<Told>,
) {
    let state = StateFile::in_dir(&cfg.dir);
    let persisted = match state.load() {
        Ok(p) => p,
        Err(e) => {
            // A damaged step cannot be resumed; the bootloader keeps the
            // device on a committed image, so start from idle.
            warn!(error = %e, "update state unreadable; starting from idle");
            let _ = told
                .send(Told::Report(EventKind::Error {
                    message: e.to_string(),
                }))
                .await;
            Default::default()
        }
    };
    let machine = UpdateMachine::new(
        MachineConfig {
            firmware,
            agent,
            health_deadline: cfg.health_deadline,
            max_download_bytes: cfg.max_download_bytes,
            retry_after: cfg.retry_after,
        },
        persisted,
    );
    let (answers_tx, mut answers) = mpsc::channel(64);
    let mut d = Driver {
        cfg,
        machine,
        state,
        installer: prepared.installer,
        repo: Arc::new(repo),
        told,
        answers: answers_tx,
        timers: HashMap::new(),
        swapped: Arc::default(),
    };
    d.feed(Input::Started {
        booted_slot: prepared.booted_slot,
    })
    .await;
    let usb = d.cfg.usb.clone();
    if let Some(target) = &usb {
        let freeze = d.machine.persisted().freeze.clone();
        d.feed(Input::Desired {
            firmware: Some(target.clone()),
            agent: None,
            freeze,
        })
        .await;
    }
    loop {
        if usb.is_some() && d.machine.idle_or_frozen() {
            // The offline update ended (or cannot go on now): stop.
            info!(step = d.machine.step().name(), "offline update over");
            d.tell(Told::Exit).await;
            return;
        }
        let next = d
            .timers
            .iter()
            .min_by_key(|(_, at)| **at)
            .map(|(t, at)| (*t, *at));
        let timer = async {
            match next {
                Some((_, at)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            note = notes.recv() => match note {
                Some(Note::Desired { .. }) if usb.is_some() => {}
                Some(Note::Desired { desired, sent_at_ms, retained }) => {
                    if !retained {
                        d.repo.observe_controller(sent_at_ms);
                    }
                    d.feed(Input::Desired {
                        firmware: desired.firmware,
                        agent: desired.agent,
                        freeze: desired.freeze,
                    })
                    .await;
                    info!(busy = !d.machine.idle(), step = d.machine.step().name(), "desired state taken");
                }
                Some(Note::Connected(up)) => d.feed(Input::Connected(up)).await,
                Some(Note::Checks(results)) => d.feed(Input::Checks(results)).await,
                None => return, // the agent stops
            },
            Some(input) = answers.recv() => d.feed(input).await,
            () = timer => {
                if let Some((t, _)) = next {
                    d.timers.remove(&t);
                    d.feed(Input::TimerFired(t)).await;
                }
            }
        }
    }
}

impl<R: Repository> Driver<R> {
    fn now(&self) -> u64 {
        self.repo.now(crate::unix_ms())
    }

    async fn feed(&mut self, input: Input) {
        let now = self.now();
        for action in self.machine.on(input, now) {
            if !self.perform(action).await {
                return;
            }
        }
    }

    async fn tell(&self, told: Told) {
        let _ = self.told.send(told).await;
    }

    /// Carry out one action; false stops the batch (a step that could not
    /// be persisted must not start).
    async fn perform(&mut self, action: Action) -> bool {
        match action {
            Action::Persist(p) => {
                if let Err(e) = self.state.save(&p) {
                    warn!(error = %e, "cannot persist the update step; not starting it");
                    self.tell(Told::Report(EventKind::Error {
                        message: e.to_string(),
                    }))
                    .await;
                    return false;
                }
                self.hold_if_asked(p.step.name()).await;
            }
            Action::Report(kind) => self.tell(Told::Report(kind)).await,
            Action::Status(s) => self.tell(Told::Status(s)).await,
            Action::FirmwareCommitted(v) => self.tell(Told::Firmware(v)).await,
            Action::FetchMetadata { name, artifact, .. } => {
                let (repo, answers, now) =
                    (Arc::clone(&self.repo), self.answers.clone(), self.now());
                tokio::spawn(async move {
                    let res = repo.check(name, artifact, now).await;
                    let _ = answers.send(Input::MetadataChecked(res)).await;
                });
            }
            Action::Download {
                target,
                from_sha256,
            } => {
                let (cfg, answers, told) =
                    (self.cfg.clone(), self.answers.clone(), self.told.clone());
                // The download's progress callback is not Send: it runs on
                // a thread of its own with its own small runtime.
                std::thread::spawn(move || {
                    let res = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())
                        .and_then(|rt| {
                            rt.block_on(async {
                                tokio::time::sleep(cfg.download_delay).await;
                                fetch(&cfg, &target, from_sha256.as_deref(), &answers, &told).await
                            })
                            .map_err(|e| e.to_string())
                        });
                    let _ = answers.blocking_send(Input::Downloaded(res));
                });
            }
            Action::CheckHash { target } => {
                let (image, answers) = (image_path(&self.cfg.dir), self.answers.clone());
                tokio::spawn(async move {
                    let res = tokio::task::spawn_blocking(move || check_hash(&image, &target))
                        .await
                        .unwrap_or_else(|e| {
                            Err(DriverError::Config {
                                key: "verify",
                                reason: e.to_string(),
                            })
                        });
                    let _ = answers
                        .send(Input::HashChecked(res.map_err(|e| e.to_string())))
                        .await;
                });
            }
            Action::Install { .. } => {
                let (image, pending) =
                    (image_path(&self.cfg.dir), self.cfg.dir.join(PENDING_IMAGE));
                self.blocking(
                    move |i| {
                        let slot = i.install(&image)?;
                        // Kept as the base of the next delta once committed.
                        let _ = std::fs::rename(&image, &pending);
                        Ok(slot)
                    },
                    Input::Installed,
                );
            }
            Action::HandOverAgent { target } => {
                let (dir, trial) = (self.cfg.dir.clone(), self.cfg.agent_trial);
                let (answers, swapped) = (self.answers.clone(), Arc::clone(&self.swapped));
                tokio::spawn(async move {
                    let res = tokio::task::spawn_blocking(move || {
                        super::agent_binary::install(
                            &dir,
                            &image_path(&dir),
                            &target.version,
                            &crate::agent_version(),
                            trial,
                            crate::unix_ms(),
                        )
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .map(|installed| {
                        *swapped.lock().expect("swapped lock") = Some(installed.exe);
                    });
                    let _ = answers.send(Input::AgentHandedOver(res)).await;
                });
            }
            Action::RestartAgent => {
                let exe = self.swapped.lock().expect("swapped lock").take();
                if let Some(exe) = exe {
                    self.tell(Told::RestartAgent(exe)).await;
                }
            }
            Action::MarkGood => {
                let (pending, installed) = (
                    self.cfg.dir.join(PENDING_IMAGE),
                    self.cfg.dir.join(INSTALLED_IMAGE),
                );
                self.blocking(
                    move |i| {
                        i.mark_good()?;
                        if pending.exists() {
                            let _ = std::fs::rename(&pending, &installed);
                        }
                        Ok(())
                    },
                    Input::Committed,
                )
            }
            Action::MarkBad => self.blocking(|i| i.mark_bad(), Input::MarkedBad),
            Action::Reboot => {
                if self.cfg.reboot_by_exit {
                    info!("rebooting: the agent exits (update.reboot_by_exit)");
                    self.tell(Told::Exit).await;
                } else {
                    let cmd = self.cfg.reboot.clone();
                    info!(command = ?cmd, "rebooting");
                    let res = tokio::task::spawn_blocking(move || {
                        super::installer::run(
                            &cmd[0],
                            &cmd[1..].iter().map(String::as_str).collect::<Vec<_>>(),
                        )
                    })
                    .await;
                    match res {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            let _ = self.answers.send(Input::RebootFailed(e.to_string())).await;
                        }
                        Err(e) => {
                            let _ = self.answers.send(Input::RebootFailed(e.to_string())).await;
                        }
                    }
                }
            }
            Action::DiscardDownload => {
                let dir = self.cfg.dir.join("download");
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        warn!(dir = %dir.display(), error = %e, "cannot clear the download directory");
                    }
                }
            }
            Action::ArmTimer { timer, after } => {
                self.timers.insert(timer, Instant::now() + after);
            }
            Action::DisarmTimer(timer) => {
                self.timers.remove(&timer);
            }
        }
        true
    }

    /// Run an installer call on the blocking pool; its answer comes back as `wrap(result)`.
    fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn Installer) -> Result<T, InstallError> + Send + 'static,
        wrap: fn(Result<T, String>) -> Input,
    ) {
        let (installer, answers) = (Arc::clone(&self.installer), self.answers.clone());
        tokio::spawn(async move {
            let res = tokio::task::spawn_blocking(move || call(installer.as_ref()))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            let _ = answers.send(wrap(res)).await;
        });
    }

    /// Test hook: stop here (after persisting `step`) until killed.
    async fn hold_if_asked(&self, step: &str) {
        let Some((hold, dir)) = &self.cfg.hold_at else {
            return;
        };
        if hold != step {
            return;
        }
        let marker = dir.join(format!("update-hold-{step}"));
        warn!(marker = %marker.display(), "test hook: holding the update after persisting {step}");
        let _ = std::fs::write(&marker, step);
        std::future::pending::<()>().await;
    }
}

/// Fetch the target into the download directory: a delta first when the
/// installed image is known, the full image otherwise or when the delta fails.
async fn fetch(
    cfg: &UpdateConfig,
    target: &Target,
    from_sha256: Option<&str>,
    answers: &mpsc::Sender<Input>,
    told: &mpsc::Sender<Told>,
) -> Result<(), DriverError> {
    let dir = cfg.dir.join("download");
    std::fs::create_dir_all(&dir).map_err(|source| DriverError::Read {
        path: dir.clone(),
        source,
    })?;
    let image = image_path(&cfg.dir);
    if image.exists() && check_hash(&image, target).is_ok() {
        return Ok(());
    }
    check_space(&dir, target.len)?;
    if let (true, Some(from)) = (cfg.delta, from_sha256) {
        if cfg.repo_url.starts_with("https://") && from != target.sha256 {
            match fetch_delta(cfg, target, from).await {
                Ok(()) => return Ok(()),
                Err(why) => {
                    warn!(reason = %why, "delta update failed; fetching the full image");
                    let _ = told
                        .send(Told::Report(EventKind::Error {
                            message: format!(
                                "delta {from} -> {} failed ({why}); the full image is fetched",
                                target.sha256
                            ),
                        }))
                        .await;
                }
            }
        }
    }
    let total = target.len;
    if let Some(path) = target.location.strip_prefix("file://") {
        copy_bounded(Path::new(path), &image, target, answers).await
    } else {
        let dl = DownloadConfig {
            ca_pem: cfg.ca_pem.clone(),
            ..Default::default()
        };
        let expected = Expected {
            len: Some(target.len),
            sha256: Some(target.sha256.clone()),
        };
        let answers = answers.clone();
        let mut progress = move |p: crate::download::Progress| {
            let _ = answers.try_send(Input::DownloadProgress {
                bytes: p.have,
                total,
            });
        };
        download(&target.location, &image, &expected, &dl, &mut progress)
            .await
            .map(drop)
            .map_err(|e| DriverError::Config {
                key: "download",
                reason: e.to_string(),
            })
    }
}

/// A delta from the controller (`REPO/delta/FROM/TO`), applied to the
/// committed image and checked against the signed length and hash.
async fn fetch_delta(cfg: &UpdateConfig, target: &Target, from: &str) -> Result<(), String> {
    let old = cfg.dir.join(INSTALLED_IMAGE);
    if !old.exists() {
        return Err("the installed image is not kept here".into());
    }
    let patch = cfg.dir.join("download").join("delta.patch");
    let url = format!("{}/delta/{from}/{}", cfg.repo_url, target.sha256);
    let dl = DownloadConfig {
        ca_pem: cfg.ca_pem.clone(),
        ..Default::default()
    };
    let got = download(&url, &patch, &Expected::default(), &dl, &mut |_| {})
        .await
        .map_err(|e| e.to_string())?;
    let signed = super::delta::Signed {
        len: target.len,
        sha256: target.sha256.clone(),
    };
    let image = image_path(&cfg.dir);
    let res =
        tokio::task::spawn_blocking(move || super::delta::apply(&old, &patch, &image, &signed))
            .await
            .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(cfg.dir.join("download").join("delta.patch"));
    res.map_err(|e| e.to_string())?;
    info!(
        delta_bytes = got.len,
        full_bytes = target.len,
        "image rebuilt from a delta"
    );
    Ok(())
}

/// Copy a file target (a USB repository) with progress, never more than
/// the signed length.
async fn copy_bounded(
    from: &Path,
    to: &Path,
    target: &Target,
    answers: &mpsc::Sender<Input>,
) -> Result<(), DriverError> {
    use std::io::{Read, Write};
    let (from, to, len) = (from.to_owned(), to.to_owned(), target.len);
    let answers = answers.clone();
    tokio::task::spawn_blocking(move || {
        let read_err = |source| DriverError::Read {
            path: from.clone(),
            source,
        };
        let mut src = std::fs::File::open(&from).map_err(read_err)?;
        let tmp = to.with_extension("part");
        let write_err = |source| DriverError::Read {
            path: tmp.clone(),
            source,
        };
        let mut dst = std::fs::File::create(&tmp).map_err(write_err)?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut have = 0u64;
        loop {
            let n = src.read(&mut buf).map_err(read_err)?;
            if n == 0 {
                break;
            }
            have += n as u64;
            if have > len {
                return Err(DriverError::LengthMismatch {
                    expected: len,
                    actual: have,
                });
            }
            dst.write_all(&buf[..n]).map_err(write_err)?;
            let _ = answers.try_send(Input::DownloadProgress {
                bytes: have,
                total: len,
            });
        }
        dst.sync_all().map_err(write_err)?;
        std::fs::rename(&tmp, &to).map_err(write_err)?;
        Ok(())
    })
    .await
    .map_err(|e| DriverError::Config {
        key: "download",
        reason: e.to_string(),
    })?
}

/// The file's length and SHA-256 against the signed ones.
pub fn check_hash(image: &Path, target: &Target) -> Result<(), DriverError> {
    use std::io::Read;
    let err = |source| DriverError::Read {
        path: image.to_owned(),
        source,
    };
    let mut f = std::fs::File::open(image).map_err(err)?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        len += n as u64;
        if len > target.len {
            break;
        }
        ctx.update(&buf[..n]);
    }
    if len != target.len {
        return Err(DriverError::LengthMismatch {
            expected: target.len,
            actual: len,
        });
    }
    let actual = hex::encode(ctx.finish().as_ref());
    if actual != target.sha256 {
        return Err(DriverError::HashMismatch {
            expected: target.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

/// Refuse a download the disk holding `dir` cannot take (with a margin).
fn check_space(dir: &Path, need: u64) -> Result<(), DriverError> {
    let disks = sysinfo::Disks::new_with_refreshed_list();
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let best = disks
        .list()
        .iter()
        .filter(|d| dir.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len());
    match best {
        Some(d) if d.available_space() < need.saturating_add(need / 10) => {
            Err(DriverError::NoSpace {
                dir: dir.clone(),
                need,
                free: d.available_space(),
            })
        }
        _ => Ok(()),
    }
}
