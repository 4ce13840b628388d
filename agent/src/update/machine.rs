//! The update state machine (pure): where an update stands and what to do
//! next. The driver ([`super::driver`]) feeds it an [`Input`] with the
//! trusted time and carries out the [`Action`]s in order. It never touches
//! the disk, the network or a clock.
//!
//! The steps, each persisted ([`Action::Persist`]) before it starts:
//!
//! ```text
//! Idle ─desired─▶ (fetch + verify metadata) ─▶ Downloading ─▶ Verifying ─▶ Installing
//!   ▲                                                                        │
//!   │                                                                        ▼
//!   ├── Committed ◀── mark-good ◀── Checking ◀── booted the new slot ◀── Rebooting
//!   └── RolledBack ◀── booted the old slot ◀── RollingBack (mark-bad, reboot) ◀┘ (checks fail / deadline)
//! ```
//!
//! Given the persisted step at start ([`Input::Started`]), the machine
//! resumes (a download, a hash check, an install are started again) or
//! decides from the booted slot: the expected slot means the new image
//! runs (health check); any other means the bootloader already fell back,
//! and the update ends rolled back without a commit (thin-edge's RAUC
//! workflow). Success ([`UpdateOutcome::Committed`]) is reported only after
//! the commit.
//!
//! A freeze window (from desired state, persisted) stops any install inside
//! it, whatever the controller asks: Frozen is reported once and the
//! machine waits for the window's end.

use std::time::Duration;

use fleet_protocol::{
    ArtifactKind, CheckResult, EventKind, FreezeWindow, TargetFirmware, UpdateOutcome, UpdatePhase,
    UpdateStatus, Version,
};
use serde::{Deserialize, Serialize};

/// A target whose metadata the TUF client verified (signatures, expiry,
/// model, artifact): what the machine needs to fetch, check and install it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The TUF target name (`firmware/MODEL/VERSION.tar`).
    pub name: String,
    pub artifact: ArtifactKind,
    pub version: Version,
    /// The signed SHA-256 (hex) and length.
    pub sha256: String,
    pub len: u64,
    /// Where the driver fetches it: a URL or a file path (opaque here).
    pub location: String,
}

/// The persisted step: written (fsync, rename) before the step starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    Idle,
    Downloading {
        target: Target,
    },
    Verifying {
        target: Target,
    },
    Installing {
        target: Target,
        from_slot: String,
    },
    Rebooting {
        target: Target,
        from_slot: String,
        to_slot: String,
    },
    Checking {
        target: Target,
        from_slot: String,
        to_slot: String,
    },
    RollingBack {
        target: Target,
        from_slot: String,
        to_slot: String,
        reason: String,
    },
}

impl Step {
    /// The step's name, as in `test_hooks.update_hold_at`.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Idle => "idle",
            Step::Downloading { .. } => "downloading",
            Step::Verifying { .. } => "verifying",
            Step::Installing { .. } => "installing",
            Step::Rebooting { .. } => "rebooting",
            Step::Checking { .. } => "checking",
            Step::RollingBack { .. } => "rolling-back",
        }
    }

    fn target(&self) -> Option<&Target> {
        match self {
            Step::Idle => None,
            Step::Downloading { target }
            | Step::Verifying { target }
            | Step::Installing { target, .. }
            | Step::Rebooting { target, .. }
            | Step::Checking { target, .. }
            | Step::RollingBack { target, .. } => Some(target),
        }
    }
}

/// Everything the machine keeps across restarts (`STATE/update/state.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    pub step: Step,
    /// The freeze windows last received: they hold offline and after a restart.
    #[serde(default)]
    pub freeze: Vec<FreezeWindow>,
    /// A target given up on (refused by verification, or rolled back): not
    /// tried again until the desired state names another one, or the same
    /// one with another attempt (a rollout's retry-failed).
    #[serde(default)]
    pub given_up: Option<String>,
    /// The desired attempt of `given_up` (0 in state files written before
    /// attempts existed, which is also the controller's first attempt).
    #[serde(default)]
    pub given_up_attempt: u32,
    /// The desired attempt of the update under way (what `given_up_attempt`
    /// takes when it ends given up, even after a restart).
    #[serde(default)]
    pub attempt: u32,
    /// The SHA-256 of the image in the booted slot, when known (the base of
    /// a delta).
    #[serde(default)]
    pub installed_sha256: Option<String>,
}

impl Default for Persisted {
    fn default() -> Self {
        Self {
            step: Step::Idle,
            freeze: Vec::new(),
            given_up: None,
            given_up_attempt: 0,
            attempt: 0,
            installed_sha256: None,
        }
    }
}

/// The machine's timers; the driver keeps one deadline per timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpdateTimer {
    /// The new image must be healthy by now, or it is rolled back.
    HealthDeadline,
    /// A freeze window ended, or a failed attempt is tried again.
    Reconsider,
}

/// Why a verified-metadata step did not give a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    /// True when the same target would be refused again (bad signature,
    /// other model, older version): it is given up. False for a transient
    /// cause (network), tried again later.
    pub permanent: bool,
}

/// Something that happened, told to [`UpdateMachine::on`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The agent started (a boot, for the directory installer) and the
    /// installer says which slot is booted.
    Started {
        booted_slot: String,
    },
    /// The controller's desired state (or, offline, the USB request).
    Desired {
        firmware: Option<TargetFirmware>,
        agent: Option<TargetFirmware>,
        freeze: Vec<FreezeWindow>,
    },
    /// The answer to [`Action::FetchMetadata`].
    MetadataChecked(Result<Target, Refusal>),
    DownloadProgress {
        bytes: u64,
        total: u64,
    },
    /// The answer to [`Action::Download`].
    Downloaded(Result<(), String>),
    /// The answer to [`Action::CheckHash`].
    HashChecked(Result<(), String>),
    /// The answer to [`Action::Install`]: the slot written.
    Installed(Result<String, String>),
    /// The answer to [`Action::HandOverAgent`].
    AgentHandedOver(Result<(), String>),
    /// The answer to [`Action::Reboot`] when the reboot could not start.
    RebootFailed(String),
    /// The broker connection came up or went.
    Connected(bool),
    /// The configured checks ran.
    Checks(Vec<CheckResult>),
    /// The answer to [`Action::MarkGood`].
    Committed(Result<(), String>),
    /// The answer to [`Action::MarkBad`].
    MarkedBad(Result<(), String>),
    TimerFired(UpdateTimer),
}

/// What the driver does, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write this to `state.json` (fsync, rename) before the next action.
    Persist(Persisted),
    /// An event for the core to number and commit to the outbox.
    Report(EventKind),
    /// The update status the device reports in its state.
    Status(UpdateStatus),
    /// Refresh the TUF metadata and look up `name`: answer
    /// [`Input::MetadataChecked`] (model and artifact checked by the client).
    FetchMetadata {
        name: String,
        artifact: ArtifactKind,
        version: Version,
    },
    /// Fetch the target into the download directory (resume; delta when
    /// `from_sha256` is known); progress as [`Input::DownloadProgress`],
    /// answer [`Input::Downloaded`].
    Download {
        target: Target,
        from_sha256: Option<String>,
    },
    /// Hash the downloaded file against the signed hash and length.
    CheckHash {
        target: Target,
    },
    /// Write the image to the inactive slot; answer [`Input::Installed`].
    Install {
        target: Target,
    },
    /// Give a verified agent binary to `update::agent_binary`.
    HandOverAgent {
        target: Target,
    },
    /// Restart into the new (or, rolling back, the old) slot.
    Reboot,
    /// Start the new agent binary in place of this process (its trial).
    RestartAgent,
    MarkGood,
    MarkBad,
    /// Remove what the download directory holds.
    DiscardDownload,
    ArmTimer {
        timer: UpdateTimer,
        after: Duration,
    },
    DisarmTimer(UpdateTimer),
    /// The firmware the device now runs, committed.
    FirmwareCommitted(Version),
}

/// What the machine needs to know about the device and its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineConfig {
    /// The firmware version of the booted slot.
    pub firmware: Version,
    /// This agent's version.
    pub agent: Version,
    pub health_deadline: Duration,
    /// A target larger than this is refused before downloading; 0: no cap.
    pub max_download_bytes: u64,
    /// After a transient failure, the same desired state is tried again after this.
    pub retry_after: Duration,
}

/// At most one download progress event per this many percent, or per
/// [`PROGRESS_EVERY_MS`].
const PROGRESS_PCT: u64 = 5;
const PROGRESS_EVERY_MS: u64 = 10_000;

/// The update machine. Create it with [`UpdateMachine::new`] from the
/// persisted state, then feed [`Input::Started`].
#[derive(Debug)]
pub struct UpdateMachine {
    cfg: MachineConfig,
    p: Persisted,
    booted_slot: Option<String>,
    /// The last desired targets (for a retry or the end of a freeze).
    want_firmware: Option<TargetFirmware>,
    want_agent: Option<TargetFirmware>,
    /// Metadata asked for this name; the answer is awaited.
    fetching: Option<String>,
    /// Downloaded and verified, held back by a freeze window.
    frozen: Option<Target>,
    frozen_reported: Option<String>,
    connected: bool,
    /// The checks that ran since the health check started: all passed?
    checks_ok: Option<Result<(), String>>,
    last_progress: (u64, u64),
}

impl UpdateMachine {
    pub fn new(cfg: MachineConfig, persisted: Persisted) -> Self {
        Self {
            cfg,
            p: persisted,
            booted_slot: None,
            want_firmware: None,
            want_agent: None,
            fetching: None,
            frozen: None,
            frozen_reported: None,
            connected: false,
            checks_ok: None,
            last_progress: (0, 0),
        }
    }

    pub fn step(&self) -> &Step {
        &self.p.step
    }

    pub fn persisted(&self) -> &Persisted {
        &self.p
    }

    /// Whether a freeze window holds at `now_ms`.
    pub fn frozen_at(&self, now_ms: u64) -> Option<FreezeWindow> {
        self.p.freeze.iter().copied().find(|w| w.contains(now_ms))
    }

    /// Idle, or held by a freeze window (nothing more happens before it ends).
    pub fn idle_or_frozen(&self) -> bool {
        (self.p.step == Step::Idle && self.fetching.is_none())
            || self.frozen.is_some()
            || (self.p.step == Step::Idle && self.frozen_reported.is_some())
    }

    /// Nothing under way: no step past idle and no metadata awaited.
    pub fn idle(&self) -> bool {
        self.p.step == Step::Idle && self.fetching.is_none() && self.frozen.is_none()
    }

    pub fn on(&mut self, input: Input, now_ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Started { booted_slot } => self.on_started(booted_slot, now_ms, &mut out),
            Input::Desired {
                firmware,
                agent,
                freeze,
            } => {
                if freeze != self.p.freeze {
                    self.p.freeze = freeze;
                    out.push(Action::Persist(self.p.clone()));
                }
                self.want_firmware = firmware;
                self.want_agent = agent;
                // A held install goes on once no window covers now (the
                // windows were cleared or moved).
                if self.frozen.is_some() && self.frozen_at(now_ms).is_none() {
                    if let Some(target) = self.frozen.take() {
                        out.push(Action::DisarmTimer(UpdateTimer::Reconsider));
                        self.ready_to_install(target, now_ms, &mut out);
                    }
                }
                self.reconcile(now_ms, &mut out);
            }
            Input::MetadataChecked(result) => self.on_metadata(result, now_ms, &mut out),
            Input::DownloadProgress { bytes, total } => {
                if let Step::Downloading { target } = &self.p.step {
                    let pct = |b: u64| (b * 100).checked_div(total).unwrap_or(0);
                    let (last_bytes, last_ms) = self.last_progress;
                    if pct(bytes) >= pct(last_bytes) + PROGRESS_PCT
                        || now_ms.saturating_sub(last_ms) >= PROGRESS_EVERY_MS
                        || (bytes == total && last_bytes != total)
                    {
                        self.last_progress = (bytes, now_ms);
                        out.push(Action::Report(progress(
                            target,
                            UpdatePhase::Downloading,
                            bytes,
                            total,
                        )));
                    }
                }
            }
            Input::Downloaded(result) => {
                let Step::Downloading { target } = &self.p.step else {
                    return out;
                };
                let target = target.clone();
                match result {
                    Ok(()) => self.enter(Step::Verifying { target }, now_ms, &mut out),
                    Err(why) => self.fail(&target, &why, false, now_ms, &mut out),
                }
            }
            Input::HashChecked(result) => {
                let Step::Verifying { target } = &self.p.step else {
                    return out;
                };
                let target = target.clone();
                match result {
                    Ok(()) => self.ready_to_install(target, now_ms, &mut out),
                    Err(why) => {
                        // A later download may be good (a corrupt transfer).
                        out.push(Action::DiscardDownload);
                        self.fail(&target, &why, false, now_ms, &mut out)
                    }
                }
            }
            Input::Installed(result) => {
                let Step::Installing { target, from_slot } = &self.p.step else {
                    return out;
                };
                let (target, from_slot) = (target.clone(), from_slot.clone());
                match result {
                    Ok(to_slot) => {
                        out.push(Action::DiscardDownload);
                        self.enter(
                            Step::Rebooting {
                                target,
                                from_slot,
                                to_slot,
                            },
                            now_ms,
                            &mut out,
                        );
                    }
                    Err(why) => {
                        out.push(Action::DiscardDownload);
                        self.fail(
                            &target,
                            &format!("install failed: {why}"),
                            false,
                            now_ms,
                            &mut out,
                        )
                    }
                }
            }
            Input::AgentHandedOver(result) => {
                let Step::Installing { target, .. } = &self.p.step else {
                    return out;
                };
                let target = target.clone();
                match result {
                    // Swapped: the new agent's trial (agent_binary) decides
                    // and reports the result; this agent restarts into it.
                    Ok(()) => {
                        self.p.step = Step::Idle;
                        out.push(Action::Persist(self.p.clone()));
                        out.push(Action::Report(progress(
                            &target,
                            UpdatePhase::Rebooting,
                            0,
                            0,
                        )));
                        out.push(Action::Status(UpdateStatus::Idle));
                        out.push(Action::RestartAgent);
                    }
                    Err(why) => self.fail(&target, &why, false, now_ms, &mut out),
                }
            }
            Input::RebootFailed(why) => match self.p.step.clone() {
                Step::Rebooting { target, .. } => {
                    // Nothing booted the new slot: take it back.
                    self.roll_back(&target, &format!("reboot failed: {why}"), now_ms, &mut out);
                }
                Step::RollingBack { target, reason, .. } => {
                    self.end(
                        &target,
                        UpdateOutcome::Failed,
                        &format!("{reason}; the reboot into the old slot failed: {why}"),
                        true,
                        &mut out,
                    );
                }
                _ => {}
            },
            Input::Connected(up) => {
                self.connected = up;
                self.health_verdict(now_ms, &mut out);
            }
            Input::Checks(results) => {
                if matches!(self.p.step, Step::Checking { .. }) {
                    let failed: Vec<String> = results
                        .iter()
                        .filter(|c| !c.passed)
                        .map(|c| match &c.message {
                            Some(m) => format!("{}: {m}", c.name),
                            None => c.name.clone(),
                        })
                        .collect();
                    self.checks_ok = Some(if failed.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("checks failed: {}", failed.join(", ")))
                    });
                    self.health_verdict(now_ms, &mut out);
                }
            }
            Input::Committed(result) => {
                let Step::Checking { target, .. } = &self.p.step else {
                    return out;
                };
                let target = target.clone();
                match result {
                    Ok(()) => {
                        self.p.installed_sha256 = Some(target.sha256.clone());
                        self.p.given_up = None;
                        out.push(Action::FirmwareCommitted(target.version.clone()));
                        self.end(
                            &target,
                            UpdateOutcome::Committed,
                            "committed",
                            false,
                            &mut out,
                        );
                    }
                    Err(why) => {
                        self.roll_back(&target, &format!("commit failed: {why}"), now_ms, &mut out)
                    }
                }
            }
            Input::MarkedBad(result) => {
                if let Step::RollingBack { .. } = &self.p.step {
                    if let Err(why) = result {
                        tracing::warn!(reason = %why, "mark-bad failed; rebooting anyway");
                    }
                    out.push(Action::Reboot);
                }
            }
            Input::TimerFired(UpdateTimer::HealthDeadline) => {
                if let Step::Checking { target, .. } = &self.p.step {
                    let target = target.clone();
                    let why = match (&self.checks_ok, self.connected) {
                        (_, false) => {
                            "the broker was not reached before the health deadline".to_string()
                        }
                        (Some(Err(why)), true) => why.clone(),
                        _ => "the checks did not pass before the health deadline".to_string(),
                    };
                    self.roll_back(&target, &why, now_ms, &mut out);
                }
            }
            Input::TimerFired(UpdateTimer::Reconsider) => {
                if let Some(target) = self.frozen.take() {
                    self.ready_to_install(target, now_ms, &mut out);
                } else {
                    self.reconcile(now_ms, &mut out);
                }
            }
        }
        out
    }

    fn on_started(&mut self, booted: String, now_ms: u64, out: &mut Vec<Action>) {
        self.booted_slot = Some(booted.clone());
        match self.p.step.clone() {
            Step::Idle => {
                out.push(Action::Status(UpdateStatus::Idle));
                self.reconcile(now_ms, out);
            }
            Step::Downloading { target } => self.enter(Step::Downloading { target }, now_ms, out),
            Step::Verifying { target } => self.enter(Step::Verifying { target }, now_ms, out),
            // Booted another slot than the one the install started from: the
            // install had finished (it sets the one-shot boot last) and the
            // device restarted before `rebooting` was written. The old slot
            // is the fallback and is never written; the new one is checked.
            Step::Installing { target, from_slot } if booted != from_slot => self.enter(
                Step::Checking {
                    target,
                    from_slot,
                    to_slot: booted,
                },
                now_ms,
                out,
            ),
            // A half-written slot is written again from the start, after the
            // image is hashed again (it may have changed on disk since).
            Step::Installing { target, .. } => self.enter(Step::Verifying { target }, now_ms, out),
            Step::Rebooting {
                target,
                from_slot,
                to_slot,
            }
            | Step::Checking {
                target,
                from_slot,
                to_slot,
            } => {
                if booted == to_slot {
                    self.enter(
                        Step::Checking {
                            target,
                            from_slot,
                            to_slot,
                        },
                        now_ms,
                        out,
                    );
                } else {
                    let why = format!(
                        "the bootloader booted slot {booted}, not the new slot {to_slot}: it fell back, nothing was committed"
                    );
                    self.end(&target, UpdateOutcome::RolledBack, &why, true, out);
                }
            }
            Step::RollingBack {
                target,
                from_slot,
                to_slot,
                reason,
            } => {
                if booted == to_slot {
                    // The reboot did not happen, or did not take: again.
                    self.enter(
                        Step::RollingBack {
                            target,
                            from_slot,
                            to_slot,
                            reason,
                        },
                        now_ms,
                        out,
                    );
                } else {
                    self.end(&target, UpdateOutcome::RolledBack, &reason, true, out);
                }
            }
        }
    }

    /// Start what the desired state asks when nothing is under way.
    fn reconcile(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        if !self.idle() || self.booted_slot.is_none() {
            return;
        }
        let wanted = [
            (
                ArtifactKind::Firmware,
                self.want_firmware.clone(),
                self.cfg.firmware.clone(),
            ),
            (
                ArtifactKind::Agent,
                self.want_agent.clone(),
                self.cfg.agent.clone(),
            ),
        ];
        for (artifact, want, installed) in wanted {
            let Some(want) = want else { continue };
            if want.version == installed {
                continue;
            }
            if self.p.given_up.as_deref() == Some(want.manifest.as_str())
                && self.p.given_up_attempt == want.attempt
            {
                continue;
            }
            if let Some(w) = self.frozen_at(now_ms) {
                self.report_frozen(&want.manifest, artifact, &want.version, w, now_ms, out);
                return;
            }
            if want.version < installed {
                let why = format!(
                    "refused: {} is older than the installed {installed}",
                    want.version
                );
                self.p.given_up = Some(want.manifest.clone());
                self.p.given_up_attempt = want.attempt;
                out.push(Action::Persist(self.p.clone()));
                out.push(Action::Status(UpdateStatus::Failed));
                out.push(Action::Report(result(
                    artifact,
                    &want.version,
                    UpdateOutcome::Failed,
                    &why,
                    false,
                )));
                return;
            }
            self.fetching = Some(want.manifest.clone());
            out.push(Action::FetchMetadata {
                name: want.manifest.clone(),
                artifact,
                version: want.version.clone(),
            });
            return;
        }
    }

    fn on_metadata(&mut self, res: Result<Target, Refusal>, now_ms: u64, out: &mut Vec<Action>) {
        let Some(name) = self.fetching.take() else {
            return;
        };
        let (artifact, version, attempt) = match (&self.want_firmware, &self.want_agent) {
            (Some(f), _) if f.manifest == name => {
                (ArtifactKind::Firmware, f.version.clone(), f.attempt)
            }
            (_, Some(a)) if a.manifest == name => {
                (ArtifactKind::Agent, a.version.clone(), a.attempt)
            }
            _ => return self.reconcile(now_ms, out), // desired changed meanwhile
        };
        let refusal = match res {
            Ok(target) => self
                .check_target(&target, &name, artifact, &version)
                .err()
                .map_or_else(
                    || {
                        self.p.attempt = attempt;
                        self.enter(Step::Downloading { target }, now_ms, out);
                        None
                    },
                    Some,
                ),
            Err(r) => Some(r),
        };
        let Some(r) = refusal else { return };
        if r.permanent {
            self.p.given_up = Some(name);
            self.p.given_up_attempt = attempt;
            out.push(Action::Persist(self.p.clone()));
        } else {
            out.push(Action::ArmTimer {
                timer: UpdateTimer::Reconsider,
                after: self.cfg.retry_after,
            });
        }
        out.push(Action::Status(UpdateStatus::Failed));
        out.push(Action::Report(result(
            artifact,
            &version,
            UpdateOutcome::Failed,
            &r.reason,
            !r.permanent,
        )));
    }

    /// What the machine checks itself on a verified target: the one asked
    /// for, not older than installed, within the download cap.
    fn check_target(
        &self,
        t: &Target,
        name: &str,
        artifact: ArtifactKind,
        version: &Version,
    ) -> Result<(), Refusal> {
        let refuse = |reason: String| Refusal {
            reason,
            permanent: true,
        };
        if t.name != name || t.artifact != artifact || &t.version != version {
            return Err(refuse(format!(
                "refused: the signed target {} ({} {}) is not the one asked for ({name}, {version})",
                t.name,
                t.artifact.as_str(),
                t.version
            )));
        }
        let installed = match artifact {
            ArtifactKind::Firmware => &self.cfg.firmware,
            ArtifactKind::Agent => &self.cfg.agent,
        };
        if t.version < *installed {
            return Err(refuse(format!(
                "refused: {} is older than the installed {installed}",
                t.version
            )));
        }
        if self.cfg.max_download_bytes > 0 && t.len > self.cfg.max_download_bytes {
            return Err(refuse(format!(
                "refused: {} bytes is over update.max_download_bytes ({})",
                t.len, self.cfg.max_download_bytes
            )));
        }
        Ok(())
    }

    /// Downloaded and verified: install unless a freeze window holds.
    fn ready_to_install(&mut self, target: Target, now_ms: u64, out: &mut Vec<Action>) {
        if let Some(w) = self.frozen_at(now_ms) {
            let (name, artifact, version) =
                (target.name.clone(), target.artifact, target.version.clone());
            self.frozen = Some(target);
            self.report_frozen(&name, artifact, &version, w, now_ms, out);
            return;
        }
        let from_slot = self.booted_slot.clone().unwrap_or_default();
        self.enter(Step::Installing { target, from_slot }, now_ms, out);
    }

    fn report_frozen(
        &mut self,
        name: &str,
        artifact: ArtifactKind,
        version: &Version,
        w: FreezeWindow,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        if self.frozen_reported.as_deref() != Some(name) {
            self.frozen_reported = Some(name.to_owned());
            out.push(Action::Report(EventKind::UpdateProgress {
                version: version.clone(),
                phase: UpdatePhase::Frozen,
                bytes: 0,
                total: 0,
                artifact,
            }));
        }
        out.push(Action::ArmTimer {
            timer: UpdateTimer::Reconsider,
            after: Duration::from_millis(w.to_ms.saturating_sub(now_ms).max(1)),
        });
    }

    /// Persist `step`, then start it.
    fn enter(&mut self, step: Step, now_ms: u64, out: &mut Vec<Action>) {
        self.p.step = step.clone();
        out.push(Action::Persist(self.p.clone()));
        match step {
            Step::Idle => out.push(Action::Status(UpdateStatus::Idle)),
            Step::Downloading { target } => {
                self.last_progress = (0, now_ms);
                out.push(Action::Status(UpdateStatus::Downloading));
                out.push(Action::Report(progress(
                    &target,
                    UpdatePhase::Downloading,
                    0,
                    target.len,
                )));
                let from_sha256 = match target.artifact {
                    ArtifactKind::Firmware => self.p.installed_sha256.clone(),
                    ArtifactKind::Agent => None,
                };
                out.push(Action::Download {
                    target,
                    from_sha256,
                });
            }
            Step::Verifying { target } => {
                out.push(Action::Status(UpdateStatus::Verifying));
                out.push(Action::Report(progress(
                    &target,
                    UpdatePhase::Verifying,
                    target.len,
                    target.len,
                )));
                out.push(Action::CheckHash { target });
            }
            Step::Installing { target, .. } => {
                out.push(Action::Status(UpdateStatus::Installing));
                out.push(Action::Report(progress(
                    &target,
                    UpdatePhase::Installing,
                    target.len,
                    target.len,
                )));
                out.push(match target.artifact {
                    ArtifactKind::Firmware => Action::Install { target },
                    ArtifactKind::Agent => Action::HandOverAgent { target },
                });
            }
            Step::Rebooting { target, .. } => {
                out.push(Action::Status(UpdateStatus::Rebooting));
                out.push(Action::Report(progress(
                    &target,
                    UpdatePhase::Rebooting,
                    0,
                    0,
                )));
                out.push(Action::Reboot);
            }
            Step::Checking { target, .. } => {
                self.checks_ok = None;
                out.push(Action::Status(UpdateStatus::Checking));
                out.push(Action::Report(progress(
                    &target,
                    UpdatePhase::Checking,
                    0,
                    0,
                )));
                out.push(Action::ArmTimer {
                    timer: UpdateTimer::HealthDeadline,
                    after: self.cfg.health_deadline,
                });
            }
            Step::RollingBack { .. } => {
                out.push(Action::Status(UpdateStatus::Failed));
                out.push(Action::MarkBad);
            }
        }
    }

    /// In Checking: commit once connected and the checks passed.
    fn health_verdict(&mut self, _now_ms: u64, out: &mut Vec<Action>) {
        if !matches!(self.p.step, Step::Checking { .. }) {
            return;
        }
        if self.connected && self.checks_ok == Some(Ok(())) {
            out.push(Action::DisarmTimer(UpdateTimer::HealthDeadline));
            out.push(Action::MarkGood);
        }
    }

    fn roll_back(&mut self, target: &Target, why: &str, now_ms: u64, out: &mut Vec<Action>) {
        let (from_slot, to_slot) = match &self.p.step {
            Step::Rebooting {
                from_slot, to_slot, ..
            }
            | Step::Checking {
                from_slot, to_slot, ..
            } => (from_slot.clone(), to_slot.clone()),
            _ => return,
        };
        out.push(Action::DisarmTimer(UpdateTimer::HealthDeadline));
        self.enter(
            Step::RollingBack {
                target: target.clone(),
                from_slot,
                to_slot,
                reason: why.to_owned(),
            },
            now_ms,
            out,
        );
    }

    /// A failure before anything was installed: the device never left its image.
    fn fail(
        &mut self,
        target: &Target,
        why: &str,
        permanent: bool,
        _now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        self.end(target, UpdateOutcome::Failed, why, permanent, out);
        if !permanent {
            out.push(Action::ArmTimer {
                timer: UpdateTimer::Reconsider,
                after: self.cfg.retry_after,
            });
        }
    }

    /// The update is over: back to idle (persisted), then the result.
    fn end(
        &mut self,
        target: &Target,
        outcome: UpdateOutcome,
        why: &str,
        give_up: bool,
        out: &mut Vec<Action>,
    ) {
        self.p.step = Step::Idle;
        if give_up {
            self.p.given_up = Some(target.name.clone());
            self.p.given_up_attempt = self.p.attempt;
        }
        self.frozen_reported = None;
        out.push(Action::Persist(self.p.clone()));
        out.push(Action::Status(match outcome {
            UpdateOutcome::Committed => UpdateStatus::Idle,
            UpdateOutcome::RolledBack | UpdateOutcome::Failed => UpdateStatus::Failed,
        }));
        out.push(Action::Report(result(
            target.artifact,
            &target.version,
            outcome,
            why,
            outcome == UpdateOutcome::Failed && !give_up,
        )));
    }

    /// The step's target, if an update is under way.
    pub fn current_target(&self) -> Option<&Target> {
        self.p.step.target()
    }
}

fn progress(t: &Target, phase: UpdatePhase, bytes: u64, total: u64) -> EventKind {
    EventKind::UpdateProgress {
        version: t.version.clone(),
        phase,
        bytes,
        total,
        artifact: t.artifact,
    }
}

/// `retrying`: the attempt failed for a passing cause and the machine
/// tries the same target again by itself (`retry_after`).
fn result(
    artifact: ArtifactKind,
    version: &Version,
    outcome: UpdateOutcome,
    why: &str,
    retrying: bool,
) -> EventKind {
    EventKind::UpdateResult {
        version: version.clone(),
        ok: outcome == UpdateOutcome::Committed,
        message: why.to_owned(),
        outcome,
        artifact,
        retrying,
    }
}
