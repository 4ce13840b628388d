//! The agent's own binary: swap it for a new one, then give the new one a
//! trial. It must reach the broker within `update.agent_trial_secs` of its
//! first start (and within [`MAX_STARTS`] starts), or the previous binary
//! is put back and started in its place.
//!
//! Files, all in `STATE/update/`:
//! - `agent.prev`: the binary that was running before the swap (fsynced
//!   before anything else changes); kept after a commit, for the next
//!   update to replace.
//! - `agent-trial.json`: the [`TrialRecord`], written (fsync + rename)
//!   before the swap and before every step of the trial; it names the path
//!   that was swapped, so a rollback puts the previous binary back there
//!   whatever the running process's own image is.
//! - `agent-results/*.json`: the trial's result, an
//!   [`EventKind::UpdateResult`] (artifact agent) in JSON, written before
//!   the record is removed. The runtime hands each one to the agent core as
//!   [`crate::core::Input::Report`] (so it is numbered and committed to the
//!   durable outbox like any event) at start and whenever the trial
//!   ends, then removes the file ([`pending_results`], [`delivered`]). A
//!   rollback's result is delivered by the restored binary, at its start.
//!
//! The update driver, once it downloaded and verified an agent target,
//! calls [`install`] (with the target's version, the running
//! [`crate::agent_version`] and `update.agent_trial_secs`), reports the
//! restart as it likes, then [`restart`]s with the path [`install`] returns;
//! the trial, its result and a rollback need nothing more from it. The new
//! binary must report the target's version: a binary that starts with
//! another version while a trial is recorded (the swap never happened) is
//! replaced by the previous one and the update reported failed.
//! `fleet-agent self-update` calls [`install`] alone (the next start is the
//! trial).
//!
//! Every decision is made by the pure [`Trial`] and persisted in the record
//! before it is carried out, so a power cut or SIGKILL at any point either
//! finishes the same decision at the next start or goes on with the trial.
//!
//! The swap itself is `self_replace::self_replace` (the piece `self_update`
//! uses; `self_update` proper brings its own HTTP client, and the driver
//! already downloaded and verified the file). The restore writes the
//! recorded path with the same steps (a temporary file beside it, then a
//! rename) plus an fsync of the file and of its directory at each step.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fleet_protocol::{ArtifactKind, EventKind, UpdateOutcome, Version};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};
use tracing::{error, info, warn};

/// A new agent may start this many times without reaching the broker; the
/// start after that rolls it back (a binary that crashes before its
/// deadline would otherwise be restarted by its supervisor forever).
pub const MAX_STARTS: u32 = 3;

/// Environment variables of test hooks that make the current build stand
/// in for a rebuilt agent (`test_hooks.agent_version`, `test_hooks.broker_port`,
/// set by the tests' stand-in wrappers). The restored binary is started
/// without them: they belonged to the binary that was rolled back.
const STAND_IN_HOOKS: [&str; 2] = [
    "FLEET_AGENT__TEST_HOOKS__AGENT_VERSION",
    "FLEET_AGENT__TEST_HOOKS__BROKER_PORT",
];

#[derive(Debug, thiserror::Error)]
pub enum AgentBinaryError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the trial record {path} is unreadable: {reason}")]
    BadRecord { path: PathBuf, reason: String },
    #[error("a new agent ({version}) is on trial already; it must be confirmed or rolled back before another is installed")]
    TrialInProgress { version: Version },
    #[error("{offered} is not newer than the running agent {running}")]
    NotNewer { running: Version, offered: Version },
    #[error("cannot find the running agent's binary: {0}")]
    CurrentExe(std::io::Error),
    #[error("cannot swap {exe} for {new}: {source}")]
    Swap {
        exe: PathBuf,
        new: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {exe}: {source}")]
    Exec {
        exe: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AgentBinaryError {
    let path = path.to_owned();
    move |source| AgentBinaryError::Io {
        action,
        path,
        source,
    }
}

/// How a trial ended (persisted in the record before it is carried out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub outcome: UpdateOutcome,
    pub reason: String,
}

/// What is on trial, since when, and what was decided. Times are the
/// agent's wall clock (Unix ms); the wait itself is measured on the
/// monotonic clock and never longer than the trial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialRecord {
    pub version: Version,
    pub previous_version: Version,
    /// The path that was swapped (the installed agent), and is restored.
    pub exe: PathBuf,
    pub trial_ms: u64,
    pub installed_ms: u64,
    /// The new binary's first start.
    pub started_ms: Option<u64>,
    pub deadline_ms: Option<u64>,
    /// How many times the new binary started.
    pub starts: u32,
    /// Decided, and perhaps not yet carried out.
    pub decided: Option<Decision>,
}

/// What happens to a trial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrialInput {
    /// This process started with the record present; `running` is the
    /// version it reports.
    Started { running: Version },
    /// This run reached the broker (CONNACK).
    Connected,
    /// The wait asked for by [`TrialAction::Wait`] is over.
    WaitOver,
}

/// What the edges do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrialAction {
    /// Write the record (fsync + rename) before going on.
    Persist(TrialRecord),
    /// Wait at most this long for a connection, then say [`TrialInput::WaitOver`].
    Wait(Duration),
    /// The new binary stays: write the result, remove the record.
    Commit(EventKind),
    /// Put the previous binary back, write the result, remove the record,
    /// start the previous binary.
    RollBack(EventKind),
}

/// The trial's decisions (pure): `on` changes the record and says what to
/// do; it touches no file, clock or process.
#[derive(Debug, Clone)]
pub struct Trial {
    record: TrialRecord,
}

impl Trial {
    pub fn new(record: TrialRecord) -> Self {
        Self { record }
    }

    pub fn record(&self) -> &TrialRecord {
        &self.record
    }

    pub fn on(&mut self, input: TrialInput, now_ms: u64) -> Vec<TrialAction> {
        if let Some(decided) = &self.record.decided {
            // Decided before (perhaps by a run that was killed while
            // carrying it out): at a start, carry it out again (every step
            // can be repeated); otherwise it is done already.
            return match input {
                TrialInput::Started { .. } => vec![self.finish(decided.clone())],
                TrialInput::Connected | TrialInput::WaitOver => Vec::new(),
            };
        }
        match input {
            TrialInput::Started { running } => self.started(running, now_ms),
            TrialInput::Connected => self.decide(
                UpdateOutcome::Committed,
                "the new agent reached the broker".into(),
            ),
            TrialInput::WaitOver => {
                let secs = self.record.trial_ms / 1000;
                self.decide(
                    UpdateOutcome::RolledBack,
                    format!(
                        "the new agent did not reach the broker within {secs} s; agent {} restored",
                        self.record.previous_version
                    ),
                )
            }
        }
    }

    fn started(&mut self, running: Version, now_ms: u64) -> Vec<TrialAction> {
        let r = &mut self.record;
        if running != r.version {
            // The swap did not happen (a cut between the record and the
            // swap), or the binary is not the one the record names.
            let reason = format!(
                "the agent that started reports {running}, not {}: the new binary is not in place; agent {} restored",
                r.version, r.previous_version
            );
            return self.decide(UpdateOutcome::Failed, reason);
        }
        r.starts = r.starts.saturating_add(1);
        if r.starts > MAX_STARTS {
            let reason = format!(
                "the new agent started {} times without reaching the broker; agent {} restored",
                r.starts, r.previous_version
            );
            return self.decide(UpdateOutcome::RolledBack, reason);
        }
        let started = *r.started_ms.get_or_insert(now_ms);
        let deadline = started.saturating_add(r.trial_ms);
        r.deadline_ms = Some(deadline);
        if now_ms >= deadline {
            let reason = format!(
                "the new agent did not reach the broker within {} s of its first start; agent {} restored",
                r.trial_ms / 1000,
                r.previous_version
            );
            return self.decide(UpdateOutcome::RolledBack, reason);
        }
        // A clock that went back since the first start does not lengthen
        // the trial beyond its duration.
        let left = (deadline - now_ms).min(r.trial_ms);
        vec![
            TrialAction::Persist(self.record.clone()),
            TrialAction::Wait(Duration::from_millis(left)),
        ]
    }

    fn decide(&mut self, outcome: UpdateOutcome, reason: String) -> Vec<TrialAction> {
        let decision = Decision { outcome, reason };
        self.record.decided = Some(decision.clone());
        vec![
            TrialAction::Persist(self.record.clone()),
            self.finish(decision),
        ]
    }

    fn finish(&self, d: Decision) -> TrialAction {
        let result = EventKind::UpdateResult {
            version: self.record.version.clone(),
            ok: d.outcome == UpdateOutcome::Committed,
            message: d.reason,
            outcome: d.outcome,
            artifact: ArtifactKind::Agent,
            retrying: false,
        };
        if d.outcome == UpdateOutcome::Committed {
            TrialAction::Commit(result)
        } else {
            TrialAction::RollBack(result)
        }
    }
}

/// The files in `STATE/update/`.
#[derive(Debug, Clone)]
struct Files {
    dir: PathBuf,
}

impl Files {
    fn record(&self) -> PathBuf {
        self.dir.join("agent-trial.json")
    }

    fn prev(&self) -> PathBuf {
        self.dir.join("agent.prev")
    }

    fn results(&self) -> PathBuf {
        self.dir.join("agent-results")
    }

    fn read_record(&self) -> Result<Option<TrialRecord>, AgentBinaryError> {
        let path = self.record();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| AgentBinaryError::BadRecord {
                path,
                reason: e.to_string(),
            })
    }

    fn write_record(&self, record: &TrialRecord) -> Result<(), AgentBinaryError> {
        let json = serde_json::to_vec_pretty(record).expect("a trial record always serialises");
        write_durably(&self.record(), &json)
    }

    fn remove_record(&self) -> Result<(), AgentBinaryError> {
        let path = self.record();
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &path)(e)),
        }
        sync_dir(&self.dir)
    }

    /// The result file of the trial installed at `installed_ms`: one name
    /// per trial, so finishing a decision again rewrites the same file.
    fn write_result(&self, installed_ms: u64, result: &EventKind) -> Result<(), AgentBinaryError> {
        let dir = self.results();
        std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let json = serde_json::to_vec(result).expect("an event always serialises");
        write_durably(&dir.join(format!("{installed_ms:020}.json")), &json)
    }
}

/// `bytes` to `path` through a temporary file: written, fsynced, renamed
/// into place, then the directory fsynced. A cut leaves the old file or
/// the new one, never a part.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), AgentBinaryError> {
    crate::durable::replace(path, bytes).map_err(io_err("write durably", path))
}

/// `src`'s content to `dest` the same way, keeping `mode`.
fn copy_durably(src: &Path, dest: &Path, mode: u32) -> Result<(), AgentBinaryError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = dest.parent().unwrap_or(Path::new("."));
    let tmp = crate::durable::tmp_beside(dest);
    std::fs::copy(src, &tmp).map_err(io_err("copy to", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("set the mode of", &tmp))?;
    sync_file(&tmp)?;
    std::fs::rename(&tmp, dest).map_err(io_err("rename into place", dest))?;
    sync_dir(dir)
}

fn sync_file(path: &Path) -> Result<(), AgentBinaryError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err("fsync", path))
}

fn sync_dir(dir: &Path) -> Result<(), AgentBinaryError> {
    sync_file(dir)
}

fn mode_of(path: &Path) -> Result<u32, AgentBinaryError> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)
        .map_err(io_err("read the mode of", path))?
        .permissions()
        .mode())
}

/// The running agent's binary, as `self_replace` finds it (a symlink is
/// followed once).
fn running_exe() -> Result<PathBuf, AgentBinaryError> {
    let exe = std::env::current_exe().map_err(AgentBinaryError::CurrentExe)?;
    match std::fs::symlink_metadata(&exe) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::read_link(&exe).map_err(AgentBinaryError::CurrentExe)
        }
        _ => Ok(exe),
    }
}

/// What [`install`] did.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The path now holding the new binary; [`restart`] starts it.
    pub exe: PathBuf,
    pub prev: PathBuf,
    pub record: TrialRecord,
}

/// Install `new_binary` (downloaded and verified already) as the agent
/// `version`, replacing the running binary, with a trial of `trial`:
/// the running binary is copied to `dir/agent.prev` and fsynced, the trial
/// record written, and only then the binary swapped (and fsynced, with its
/// directory). The running process goes on; the new binary's first start
/// ([`restart`], or the next start of the service) is the trial. Blocking
/// (it copies and fsyncs a binary): the async driver calls it through
/// `spawn_blocking`.
pub fn install(
    dir: &Path,
    new_binary: &Path,
    version: &Version,
    running: &Version,
    trial: Duration,
    now_ms: u64,
) -> Result<Installed, AgentBinaryError> {
    let files = Files {
        dir: dir.to_owned(),
    };
    if let Some(r) = files.read_record()? {
        return Err(AgentBinaryError::TrialInProgress { version: r.version });
    }
    if version <= running {
        return Err(AgentBinaryError::NotNewer {
            running: running.clone(),
            offered: version.clone(),
        });
    }
    let meta = std::fs::metadata(new_binary).map_err(io_err("read", new_binary))?;
    if !meta.is_file() {
        return Err(io_err("install", new_binary)(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file",
        )));
    }
    let exe = running_exe()?;
    std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    copy_durably(&exe, &files.prev(), mode_of(&exe)?)?;
    let record = TrialRecord {
        version: version.clone(),
        previous_version: running.clone(),
        exe: exe.clone(),
        trial_ms: u64::try_from(trial.as_millis()).unwrap_or(u64::MAX),
        installed_ms: now_ms,
        started_ms: None,
        deadline_ms: None,
        starts: 0,
        decided: None,
    };
    files.write_record(&record)?;
    if let Err(source) = self_replace::self_replace(new_binary) {
        // Nothing was swapped: no trial.
        if let Err(e) = files.remove_record() {
            warn!(error = %e, "the swap failed and the trial record stays; the next start reports it failed");
        }
        return Err(AgentBinaryError::Swap {
            exe,
            new: new_binary.to_owned(),
            source,
        });
    }
    // self_replace renames a copy into place without an fsync.
    sync_file(&exe)?;
    sync_dir(exe.parent().unwrap_or(Path::new("/")))?;
    info!(%version, previous = %running, exe = %exe.display(), trial_secs = trial.as_secs(), "new agent installed; its next start is its trial");
    Ok(Installed {
        exe,
        prev: files.prev(),
        record,
    })
}

/// Replace this process with `exe`, with this process's arguments
/// (`exec`: same pid, so a supervisor sees no exit). Returns only on error.
pub fn restart(exe: &Path) -> AgentBinaryError {
    exec(exe, &[])
}

fn exec(exe: &Path, without: &[&str]) -> AgentBinaryError {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args);
    for var in without {
        cmd.env_remove(var);
    }
    let source = cmd.exec();
    AgentBinaryError::Exec {
        exe: exe.to_owned(),
        source,
    }
}

/// A trial waiting for its connection or its deadline ([`begin`]).
#[derive(Debug)]
pub struct Waiting {
    files: Files,
    trial: Trial,
    wait: Duration,
}

/// At the agent's start, before it connects: if a new binary is on trial,
/// count this start and decide what can be decided now (the wrong binary
/// started, too many starts, deadline passed: roll back, which starts the
/// previous binary and does not return; a decision a killed run did not
/// finish: finish it). `Some` when the trial goes on: run
/// [`Waiting::watch`]. `None`: no trial (any result is in
/// [`pending_results`]).
pub fn begin(dir: &Path, running: &Version, now_ms: u64) -> Option<Waiting> {
    let files = Files {
        dir: dir.to_owned(),
    };
    let record = match files.read_record() {
        Ok(Some(r)) => r,
        Ok(None) => return None,
        Err(e) => {
            error!(error = %e, "agent trial record unreadable; the running agent stays");
            return None;
        }
    };
    info!(version = %record.version, previous = %record.previous_version, starts = record.starts + 1, "agent trial: this start is a new agent's trial");
    let mut trial = Trial::new(record);
    let actions = trial.on(
        TrialInput::Started {
            running: running.clone(),
        },
        now_ms,
    );
    perform(&files, &trial, actions).map(|wait| Waiting { files, trial, wait })
}

/// Carry out `actions`; `Some(wait)` when the trial waits.
fn perform(files: &Files, trial: &Trial, actions: Vec<TrialAction>) -> Option<Duration> {
    let record = trial.record();
    for action in actions {
        match action {
            TrialAction::Persist(r) => {
                if let Err(e) = files.write_record(&r) {
                    // The decision still holds for this run; a cut before
                    // the record is written again repeats the step.
                    warn!(error = %e, "cannot write the agent trial record");
                }
            }
            TrialAction::Wait(left) => {
                info!(version = %record.version, left_ms = left.as_millis() as u64, "agent trial: waiting for the broker");
                return Some(left);
            }
            TrialAction::Commit(result) => {
                finish(files, record, &result);
                info!(version = %record.version, "agent trial: committed, the new agent stays");
            }
            TrialAction::RollBack(result) => {
                roll_back(files, record, result);
            }
        }
    }
    None
}

/// Write the result, then remove the record.
fn finish(files: &Files, record: &TrialRecord, result: &EventKind) {
    if let Err(e) = files.write_result(record.installed_ms, result) {
        error!(error = %e, ?result, "cannot keep the agent update's result; it is lost");
    }
    if let Err(e) = files.remove_record() {
        error!(error = %e, "cannot remove the agent trial record");
    }
}

/// Put `agent.prev` back at the recorded path, keep the result, remove
/// the record, start the previous binary. Returns only if it could not
/// (then the result says so and this binary goes on).
fn roll_back(files: &Files, record: &TrialRecord, result: EventKind) {
    let prev = files.prev();
    let restored = mode_of(&record.exe)
        .or_else(|_| mode_of(&prev))
        .and_then(|mode| copy_durably(&prev, &record.exe, mode));
    if let Err(e) = restored {
        error!(error = %e, exe = %record.exe.display(), "agent trial: cannot put the previous agent back; the new one stays");
        let failed = EventKind::UpdateResult {
            version: record.version.clone(),
            ok: false,
            message: format!("rollback failed, the new agent stays: {e}"),
            outcome: UpdateOutcome::Failed,
            artifact: ArtifactKind::Agent,
            retrying: false,
        };
        finish(files, record, &failed);
        return;
    }
    warn!(version = %record.version, previous = %record.previous_version, exe = %record.exe.display(), ?result, "agent trial: rolled back; starting the previous agent");
    finish(files, record, &result);
    let e = exec(&record.exe, &STAND_IN_HOOKS);
    // The previous binary is in place: a supervisor's restart starts it.
    error!(error = %e, "cannot start the restored agent; exiting");
    std::process::exit(70);
}

impl Waiting {
    /// Wait for `connected` (notified at each CONNACK) or the deadline,
    /// whichever comes first; commit (then say so on `done`) or roll back
    /// (which starts the previous binary).
    pub async fn watch(mut self, connected: Arc<Notify>, done: mpsc::Sender<()>) {
        let input = tokio::select! {
            () = connected.notified() => TrialInput::Connected,
            () = tokio::time::sleep(self.wait) => TrialInput::WaitOver,
        };
        let actions = self.trial.on(input, crate::unix_ms());
        if perform(&self.files, &self.trial, actions).is_none() {
            let _ = done.send(()).await;
        }
    }
}

/// Results waiting for the outbox, oldest first.
pub fn pending_results(dir: &Path) -> Vec<(PathBuf, EventKind)> {
    let results = Files {
        dir: dir.to_owned(),
    }
    .results();
    crate::durable::json_files(&results)
        .into_iter()
        .filter_map(|path| {
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<EventKind>(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(kind) => Some((path, kind)),
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "agent update result unreadable; skipped");
                    None
                }
            }
        })
        .collect()
}

/// The result in `file` is in the outbox now.
pub fn delivered(file: &Path) {
    if let Err(e) = std::fs::remove_file(file) {
        warn!(file = %file.display(), error = %e, "cannot remove a delivered agent update result");
    }
}

#[cfg(test)]
mod tests;
