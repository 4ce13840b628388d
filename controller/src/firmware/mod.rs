//! The controller's firmware repository: a TUF repository
//! (`fleet_repo::publish::Repo`) over a content-addressed image store, under
//! `DATA/firmware/`:
//!
//! ```text
//! DATA/firmware/repo/metadata/…   N.root.json, timestamp.json, V.snapshot.json, V.targets.json
//! DATA/firmware/repo/targets/…    the target files, by consistent-snapshot name
//! DATA/firmware/images/SHA256     the image store (uploads land here)
//! DATA/firmware/deltas/FROM/TO.bidiff   patches made on first request
//! DATA/firmware/keys/{snapshot,timestamp}.pem   the only keys the controller holds (0600)
//! DATA/firmware/uploads/          uploads in progress
//! ```
//!
//! The controller holds only the snapshot and timestamp keys: it can serve,
//! re-sign the timestamp and publish what the release team signed, never
//! add a target. `fleet-controller firmware-init` sets it up; until then
//! the firmware routes answer 409.
//!
//! Everything in `fleet_repo` is blocking file work: callers run it on
//! `spawn_blocking`.

mod error;

pub use error::FirmwareError;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fleet_repo::publish::Repo;

/// `DATA/firmware`.
pub fn firmware_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("firmware")
}

/// Where everything of the repository lives.
#[derive(Debug, Clone)]
pub struct FirmwarePaths {
    pub dir: PathBuf,
}

impl FirmwarePaths {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: firmware_dir(data_dir),
        }
    }
    pub fn repo(&self) -> PathBuf {
        self.dir.join("repo")
    }
    pub fn metadata(&self) -> PathBuf {
        self.repo().join("metadata")
    }
    pub fn targets(&self) -> PathBuf {
        self.repo().join("targets")
    }
    pub fn keys(&self) -> PathBuf {
        self.dir.join("keys")
    }
    pub fn snapshot_key(&self) -> PathBuf {
        self.keys().join("snapshot.pem")
    }
    pub fn timestamp_key(&self) -> PathBuf {
        self.keys().join("timestamp.pem")
    }
    pub fn deltas(&self) -> PathBuf {
        self.dir.join("deltas")
    }
    pub fn uploads(&self) -> PathBuf {
        self.dir.join("uploads")
    }
    /// Whether `firmware-init` ran.
    pub fn initialised(&self) -> bool {
        self.metadata().join("root.json").is_file()
    }
}

/// What the firmware routes need: the paths, the repository once it is set
/// up (opened on first use, so a `firmware-init` while the controller runs
/// is picked up), and the upload limit. Cheap to clone.
#[derive(Clone)]
pub struct Firmware {
    pub paths: FirmwarePaths,
    pub max_image_bytes: u64,
    /// How long the snapshot and timestamp it signs last.
    lifetimes: fleet_repo::publish::Lifetimes,
    repo: Arc<Mutex<Option<Arc<Repo>>>>,
    /// One delta made at a time: making one holds both images in memory.
    making_delta: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Firmware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Firmware")
            .field("paths", &self.paths)
            .field("max_image_bytes", &self.max_image_bytes)
            .finish_non_exhaustive()
    }
}

impl Firmware {
    pub fn new(data_dir: &Path, max_image_bytes: u64) -> Self {
        Self {
            paths: FirmwarePaths::new(data_dir),
            max_image_bytes,
            lifetimes: fleet_repo::publish::Lifetimes::default(),
            repo: Arc::default(),
            making_delta: Arc::default(),
        }
    }

    /// Sign snapshots and timestamps with these lifetimes (the defaults:
    /// 30 days and 1 day).
    pub fn with_lifetimes(mut self, lifetimes: fleet_repo::publish::Lifetimes) -> Self {
        self.lifetimes = lifetimes;
        self
    }

    /// The repository, opened once (blocking: call from `spawn_blocking`
    /// or at start-up). `NotSetUp` until `firmware-init` ran.
    pub fn repo(&self) -> Result<Arc<Repo>, FirmwareError> {
        let mut held = self.repo.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = held.as_ref() {
            return Ok(Arc::clone(r));
        }
        if !self.paths.initialised() {
            return Err(FirmwareError::NotSetUp);
        }
        let repo = Arc::new(
            Repo::open(
                &self.paths.repo(),
                &self.paths.snapshot_key(),
                &self.paths.timestamp_key(),
            )?
            .with_lifetimes(self.lifetimes),
        );
        *held = Some(Arc::clone(&repo));
        Ok(repo)
    }

    /// Run blocking repository work off the async threads.
    pub async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Firmware) -> Result<T, FirmwareError> + Send + 'static,
    ) -> Result<T, FirmwareError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || work(&me))
            .await
            .map_err(|e| FirmwareError::Task(e.to_string()))?
    }

    /// Re-sign the timestamp (and snapshot) when past half their lifetime.
    /// `None`: not set up, or nothing was due.
    pub fn refresh(
        &self,
        now: SystemTime,
    ) -> Result<Option<fleet_repo::publish::Published>, FirmwareError> {
        match self.repo() {
            Ok(repo) => Ok(repo.refresh(now)?),
            Err(FirmwareError::NotSetUp) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// What `fleet-controller firmware-init` is given: the release team's
/// root.json and targets.json, and the controller's two keys.
#[derive(Debug, Clone)]
pub struct InitFiles {
    pub root: PathBuf,
    pub targets: PathBuf,
    pub snapshot_key: PathBuf,
    pub timestamp_key: PathBuf,
}

/// What `firmware-init` made.
#[derive(Debug, Clone)]
pub struct Initialised {
    pub repo: PathBuf,
    pub root_version: u64,
    pub targets_version: u64,
}

/// Set the repository up under `DATA/firmware/`: the two keys copied to
/// `keys/` (0600; delete the originals), then the repository checked and
/// written by `Repo::init` (root self-signed to threshold, the keys are
/// root's snapshot and timestamp keys).
pub fn init(
    data_dir: &Path,
    files: &InitFiles,
    now: SystemTime,
) -> Result<Initialised, FirmwareError> {
    let paths = FirmwarePaths::new(data_dir);
    if paths.initialised() {
        return Err(FirmwareError::AlreadySetUp(paths.repo()));
    }
    let read = |p: &Path| std::fs::read(p).map_err(FirmwareError::io(p));
    let root = read(&files.root)?;
    let targets = read(&files.targets)?;
    make_private_dir(&paths.dir)?;
    make_private_dir(&paths.keys())?;
    for (from, to) in [
        (&files.snapshot_key, paths.snapshot_key()),
        (&files.timestamp_key, paths.timestamp_key()),
    ] {
        let key = read(from)?;
        write_private(&to, &key)?;
    }
    std::fs::create_dir_all(paths.repo()).map_err(FirmwareError::io(&paths.repo()))?;
    let published = Repo::init(
        &paths.repo(),
        &root,
        &targets,
        &paths.snapshot_key(),
        &paths.timestamp_key(),
        now,
    )?;
    Ok(Initialised {
        repo: paths.repo(),
        root_version: published.root_version,
        targets_version: published.targets_version,
    })
}

fn make_private_dir(dir: &Path) -> Result<(), FirmwareError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(FirmwareError::io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(FirmwareError::io(dir))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), FirmwareError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(FirmwareError::io(path))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(FirmwareError::io(path))
}

/// A stored image's SHA-256 as the routes take it: 64 lower-case hex digits.
pub fn check_sha256(s: &str) -> Result<(), FirmwareError> {
    if fleet_repo::metadata::is_sha256_hex(s) {
        Ok(())
    } else {
        Err(FirmwareError::BadSha256(s.to_owned()))
    }
}

/// Images larger than this get no delta: bidiff holds both images and a
/// suffix array of the old one in memory (about ten times its size), and
/// the route is public. A device then fetches the full image.
pub const MAX_DELTA_IMAGE_BYTES: u64 = 256 * 1024 * 1024;

/// The patch from image `from` to image `to`, made once with
/// `fleet_repo::delta::make` and kept as `deltas/FROM/TO.bidiff`
/// (blocking). The route is public, so what an anonymous caller can make
/// the controller do is bounded: both must be published targets of the
/// same artifact and model, `from` an older version than `to` (no one makes
/// the controller diff arbitrary pairs of stored images), neither larger
/// than [`MAX_DELTA_IMAGE_BYTES`], and one delta is made at a time: a
/// request while another is being made is answered at once (503), never
/// queued on a blocking thread.
pub fn delta(fw: &Firmware, from: &str, to: &str) -> Result<(PathBuf, String), FirmwareError> {
    check_sha256(from)?;
    check_sha256(to)?;
    let repo = fw.repo()?;
    let targets = repo.targets()?;
    let target = |sha: &str| {
        targets
            .iter()
            .find(|t| t.sha256 == sha)
            .ok_or_else(|| FirmwareError::NotATarget(sha.to_owned()))
    };
    let (older, newer) = (target(from)?, target(to)?);
    if (older.custom.artifact, &older.custom.model) != (newer.custom.artifact, &newer.custom.model)
    {
        return Err(FirmwareError::DeltaAcross {
            from: from.to_owned(),
            to: to.to_owned(),
        });
    }
    if older.custom.version >= newer.custom.version {
        return Err(FirmwareError::DeltaBackwards {
            from: from.to_owned(),
            to: to.to_owned(),
        });
    }
    if older.len > MAX_DELTA_IMAGE_BYTES || newer.len > MAX_DELTA_IMAGE_BYTES {
        return Err(FirmwareError::DeltaTooLarge {
            limit: MAX_DELTA_IMAGE_BYTES,
        });
    }
    let old = repo
        .image_path(from)
        .ok_or_else(|| FirmwareError::UnknownImage(from.to_owned()))?;
    let new = repo
        .image_path(to)
        .ok_or_else(|| FirmwareError::UnknownImage(to.to_owned()))?;
    let dir = fw.paths.deltas().join(from);
    let name = format!("{to}.bidiff");
    let path = dir.join(&name);
    if path.is_file() {
        return Ok((dir, name));
    }
    let _one_at_a_time = match fw.making_delta.try_lock() {
        Ok(guard) => guard,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return Err(FirmwareError::DeltaBusy),
    };
    if path.is_file() {
        return Ok((dir, name)); // made while this request waited
    }
    std::fs::create_dir_all(&dir).map_err(FirmwareError::io(&dir))?;
    let tmp = dir.join(format!(
        ".{name}.{}.{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos()
    ));
    let made = fleet_repo::delta::make(&old, &new, &tmp);
    if let Err(e) = made {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    std::fs::rename(&tmp, &path).map_err(FirmwareError::io(&path))?;
    metrics::counter!("fleet_firmware_deltas_made_total").increment(1);
    Ok((dir, name))
}

#[cfg(test)]
mod tests;
