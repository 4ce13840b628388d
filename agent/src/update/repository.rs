//! The driver's [`Repository`]: the TUF client ([`super::tuf`]) and the
//! trusted clock ([`super::clock`]) behind the driver's one question, "the
//! verified target NAME". The clock's floor is kept in
//! `STATE/update/clock.json`; it moves forward with each live desired state
//! (the controller's `sent_at_ms`) and each HTTPS answer's `Date` from the
//! repository.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use fleet_protocol::{firmware::agent_platform, ArtifactKind, Model};

use super::clock::TrustedClock;
use super::config::UpdateConfig;
use super::driver::Repository;
use super::machine::{Refusal, Target};
use super::tuf::{Source, TargetLocation, TufClient, TufError};

pub struct TufRepository {
    client: TufClient,
    model: Model,
    clock: Arc<Mutex<TrustedClock>>,
    clock_file: PathBuf,
    started: Instant,
}

/// Where the repository of `repo_url` is.
pub fn source(cfg: &UpdateConfig) -> Source {
    match cfg.repo_url.strip_prefix("file://") {
        Some(dir) => Source::Dir(PathBuf::from(dir)),
        None => Source::Https {
            base: cfg.repo_url.clone(),
            ca_pem: cfg.ca_pem.clone().unwrap_or_default(),
        },
    }
}

impl TufRepository {
    /// `model`: the device's hardware model (firmware targets are checked
    /// against it; agent targets against this build's platform).
    pub fn new(cfg: &UpdateConfig, model: Model) -> Self {
        let clock_file = cfg.dir.join("clock.json");
        let floor = super::clock::read(&clock_file).unwrap_or_default();
        Self {
            client: TufClient::new(source(cfg), cfg.dir.join("tuf"), cfg.trusted_root.clone()),
            model,
            clock: Arc::new(Mutex::new(TrustedClock::from_file(floor))),
            clock_file,
            started: Instant::now(),
        }
    }

    fn mono_ms(&self) -> u64 {
        mono_since(self.started)
    }
}

fn mono_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The controller said it is `controller_ms` now: anchor the trusted clock
/// on it and keep the raised floor.
fn observe(clock: &Mutex<TrustedClock>, clock_file: &Path, controller_ms: u64, mono_ms: u64) {
    let file = {
        let mut c = clock.lock().expect("clock lock");
        c.observe_controller(controller_ms, mono_ms);
        c.file()
    };
    if let Err(e) = super::clock::write(clock_file, &file) {
        tracing::warn!(file = %clock_file.display(), error = %e, "cannot keep the trusted clock's floor");
    }
}

/// Whether a TUF refusal may pass by itself (network, a datastore hiccup,
/// metadata that the controller will re-sign).
fn transient(e: &TufError) -> bool {
    matches!(
        e,
        TufError::Unreachable { .. } | TufError::Datastore { .. } | TufError::Expired { .. }
    )
}

impl Repository for TufRepository {
    fn check(
        &self,
        name: String,
        artifact: ArtifactKind,
        now_ms: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Target, Refusal>> + Send>> {
        let client = self.client.clone();
        let model = match artifact {
            ArtifactKind::Firmware => self.model.clone(),
            ArtifactKind::Agent => agent_platform(),
        };
        let clock = Arc::clone(&self.clock);
        let clock_file = self.clock_file.clone();
        let started = self.started;
        Box::pin(async move {
            let refuse = |e: TufError| Refusal {
                reason: format!("refused {name}: {e}"),
                permanent: !transient(&e),
            };
            let refreshed = client.refresh(now_ms).await;
            // The controller's Date header (over the fleet CA's TLS) moves
            // the trusted clock even when this refresh failed: a device whose
            // clock runs a year ahead sees fresh metadata as expired, and the
            // next try must use the controller's time.
            if let Some(date) = client.server_date_ms() {
                observe(&clock, &clock_file, date, mono_since(started));
            }
            let verified = refreshed.map_err(&refuse)?;
            let t = verified.target(&name, artifact, &model).map_err(&refuse)?;
            Ok(Target {
                name: t.name,
                artifact: t.artifact,
                version: t.version,
                sha256: t.sha256,
                len: t.len,
                location: match t.location {
                    TargetLocation::Url(u) => u,
                    TargetLocation::File(p) => format!("file://{}", p.display()),
                },
            })
        })
    }

    fn now(&self, system_ms: u64) -> u64 {
        let mono = self.mono_ms();
        self.clock.lock().expect("clock lock").now(system_ms, mono)
    }

    fn observe_controller(&self, controller_ms: u64) {
        observe(&self.clock, &self.clock_file, controller_ms, self.mono_ms());
    }
}

/// The newest signed firmware for `model` in the repository of `cfg`
/// (`fleet-agent update --from DIR` without `--version`).
pub async fn latest_firmware(
    cfg: &UpdateConfig,
    model: &Model,
) -> Result<fleet_protocol::TargetFirmware, String> {
    let repo = TufRepository::new(cfg, model.clone());
    let now = repo.now(crate::unix_ms());
    let verified = repo
        .client
        .refresh(now)
        .await
        .map_err(|e| format!("the repository does not verify: {e}"))?;
    let t = verified
        .latest(ArtifactKind::Firmware, model)
        .ok_or_else(|| format!("the repository holds no firmware for {model}"))?;
    Ok(fleet_protocol::TargetFirmware {
        version: t.version,
        manifest: t.name,
        attempt: 0,
    })
}
