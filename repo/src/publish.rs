//! The controller's side of the repository: it holds the snapshot and
//! timestamp keys only. It stores images, and publishes a targets.json or a
//! root.json the release team signed after checking them; it can never add
//! or change a target, because that takes the offline targets key.
//!
//! ```text
//! DIR/metadata/1.root.json … N.root.json  root.json (= newest)
//! DIR/metadata/timestamp.json  V.snapshot.json  V.targets.json
//! DIR/targets/SHA256.firmware/MODEL/VERSION.tar   (tough: target_file_path)
//! DIR/targets/firmware/MODEL/SHA256.VERSION.tar   (TUF spec: target_file_path_spec)
//! DIR/../images/SHA256                             (content-addressed store)
//! ```

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use fleet_protocol::firmware::{target_name, TargetCustom};
use serde::Serialize;
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::{Hashes, Metafile, Role, RoleType, Root, Signed, Snapshot, Targets, Timestamp};
use tough::sign::Sign;
use tough::TargetName;

use crate::error::RepoError;
use crate::keys;
use crate::metadata::{self, SPEC_VERSION};

/// How long the controller's own signatures last. The controller re-signs
/// when less than half is left ([`Repo::refresh`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub snapshot: Duration,
    pub timestamp: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            snapshot: metadata::days(30),
            timestamp: metadata::days(1),
        }
    }
}

/// What a publication produced: the version of each role now served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Published {
    pub root_version: u64,
    pub targets_version: u64,
    pub snapshot_version: u64,
    pub timestamp_version: u64,
    /// Target names new in this targets version.
    pub added: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetEntry {
    pub name: String,
    pub custom: TargetCustom,
    pub sha256: String,
    pub len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleStatus {
    pub version: u64,
    /// RFC 3339.
    pub expires: String,
    pub expires_unix_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoStatus {
    pub root: RoleStatus,
    pub targets: RoleStatus,
    pub snapshot: RoleStatus,
    pub timestamp: RoleStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportSummary {
    pub dest: PathBuf,
    pub metadata_files: usize,
    pub target_files: usize,
    pub bytes: u64,
}

/// The path, relative to `DIR/targets/`, of a target's file. With
/// consistent snapshots tough fetches `SHA256.NAME` (the digest prefixes
/// the whole target name, e.g. `ab12….firmware/box/1.0.0.tar`), so that is
/// where the file lives.
pub fn target_file_path(name: &str, sha256_hex: &str) -> String {
    format!("{sha256_hex}.{name}")
}

/// The TUF specification's path for the same file (python-tuf's, the
/// conformance suite's): the digest prefixes the base name,
/// `firmware/box/ab12….1.0.0.tar`. The served tree has both (hard links);
/// an export has tough's only.
pub fn target_file_path_spec(name: &str, sha256_hex: &str) -> String {
    match name.rsplit_once('/') {
        Some((dir, base)) => format!("{dir}/{sha256_hex}.{base}"),
        None => format!("{sha256_hex}.{name}"),
    }
}

pub struct Repo {
    dir: PathBuf,
    images: PathBuf,
    snapshot_key: PathBuf,
    timestamp_key: PathBuf,
    lifetimes: Lifetimes,
    /// One writer at a time: publications and refreshes each bump versions.
    write: Mutex<()>,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repo")
            .field("dir", &self.dir)
            .field("lifetimes", &self.lifetimes)
            .finish_non_exhaustive()
    }
}

/// The metadata currently served.
struct Current {
    root: Signed<Root>,
    targets: Signed<Targets>,
    snapshot: Signed<Snapshot>,
    timestamp: Signed<Timestamp>,
}

impl Repo {
    /// Sets up `dir` from the release team's root.json and targets.json.
    /// Checks root is signed by itself to its threshold, and that the two
    /// keys are root's snapshot and timestamp keys. Images that targets.json
    /// lists must be staged first (normally it is the empty version 1).
    pub fn init(
        dir: &Path,
        root_json: &[u8],
        targets_json: &[u8],
        snapshot_key: &Path,
        timestamp_key: &Path,
        now: SystemTime,
    ) -> Result<Published, RepoError> {
        let repo = Repo::at(dir, snapshot_key, timestamp_key);
        // timestamp.json is written last: an init that stopped half-way can run again.
        if repo.meta("timestamp.json").exists() {
            return Err(RepoError::AlreadyInitialised {
                path: dir.to_path_buf(),
            });
        }
        let _guard = repo.lock();
        let root: Signed<Root> = metadata::parse("root.json", root_json)?;
        check_root_shape(&root)?;
        metadata::verify(&root.signed, &root)?;
        metadata::check_expiry(RoleType::Root, root.signed.expires, now)?;
        repo.check_controller_keys(&root.signed)?;

        let targets = repo.check_targets(&root.signed, targets_json, 0, now)?;
        let v = root.signed.version.get();
        metadata::write_atomic(&repo.meta(&format!("{v}.root.json")), root_json)?;
        metadata::write_atomic(&repo.meta("root.json"), root_json)?;
        repo.write_targets_and_below(&root.signed, &targets, targets_json, 0, 0, now)
    }

    /// Opens a repository made by [`Repo::init`].
    pub fn open(dir: &Path, snapshot_key: &Path, timestamp_key: &Path) -> Result<Repo, RepoError> {
        let repo = Repo::at(dir, snapshot_key, timestamp_key);
        if !repo.meta("timestamp.json").exists() {
            return Err(RepoError::NotInitialised {
                path: dir.to_path_buf(),
                what: "firmware repository",
            });
        }
        // Fail now, not at the first publication, on a missing or foreign key.
        let current = repo.current()?;
        repo.check_controller_keys(&current.root.signed)?;
        Ok(repo)
    }

    /// Uses other lifetimes for the snapshot and timestamp the controller signs.
    pub fn with_lifetimes(mut self, lifetimes: Lifetimes) -> Repo {
        self.lifetimes = lifetimes;
        self
    }

    fn at(dir: &Path, snapshot_key: &Path, timestamp_key: &Path) -> Repo {
        let images = dir
            .parent()
            .map(|p| p.join("images"))
            .unwrap_or_else(|| dir.join("images"));
        Repo {
            dir: dir.to_path_buf(),
            images,
            snapshot_key: snapshot_key.to_path_buf(),
            timestamp_key: timestamp_key.to_path_buf(),
            lifetimes: Lifetimes::default(),
            write: Mutex::new(()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is (); a panic while holding it leaves nothing half-done in memory.
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn meta(&self, file: &str) -> PathBuf {
        self.dir.join("metadata").join(file)
    }

    /// Adds `file`, whose sha256 must be `sha256_hex`, to the image store
    /// (a hard link when it can, else a copy; `file` itself is left alone).
    pub fn stage_image(&self, sha256_hex: &str, file: &Path) -> Result<(), RepoError> {
        self.image_slot(sha256_hex)?;
        let (actual, _) = metadata::sha256_file(file, &mut |_, _| {})?;
        if actual != sha256_hex {
            return Err(RepoError::HashMismatch {
                expected: sha256_hex.to_string(),
                actual,
            });
        }
        self.stage_hashed_image(sha256_hex, file)
    }

    /// As [`Self::stage_image`], for a file whose sha256 the caller computed
    /// while writing it (the controller hashes an upload as it streams in):
    /// the file is not read a second time.
    pub fn stage_hashed_image(&self, sha256_hex: &str, file: &Path) -> Result<(), RepoError> {
        let dest = self.image_slot(sha256_hex)?;
        if dest.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.images).map_err(RepoError::io(&self.images))?;
        link_or_copy(file, &dest)
    }

    /// The stored image with this sha256, if any.
    pub fn image_path(&self, sha256_hex: &str) -> Option<PathBuf> {
        self.image_slot(sha256_hex).ok().filter(|p| p.is_file())
    }

    fn image_slot(&self, sha256_hex: &str) -> Result<PathBuf, RepoError> {
        if !metadata::is_sha256_hex(sha256_hex) {
            return Err(RepoError::Malformed {
                what: "sha256".into(),
                reason: format!("{sha256_hex:?} is not 64 lower-case hex digits"),
            });
        }
        Ok(self.images.join(sha256_hex))
    }

    /// Publishes a targets.json the release team signed: checked against the
    /// current root's targets keys and threshold, newer than the current
    /// version, not expired, and every target's image staged with that exact
    /// sha256 and length. Then writes V.targets.json, a new snapshot and a
    /// new timestamp (in that order: the timestamp makes it visible).
    pub fn publish_targets(
        &self,
        targets_json: &[u8],
        now: SystemTime,
    ) -> Result<Published, RepoError> {
        let _guard = self.lock();
        let cur = self.current()?;
        let targets = self.check_targets(
            &cur.root.signed,
            targets_json,
            cur.targets.signed.version.get(),
            now,
        )?;
        let mut published = self.write_targets_and_below(
            &cur.root.signed,
            &targets,
            targets_json,
            cur.snapshot.signed.version.get(),
            cur.timestamp.signed.version.get(),
            now,
        )?;
        let before: BTreeSet<&TargetName> = cur.targets.signed.targets.keys().collect();
        published.added = targets
            .signed
            .targets
            .keys()
            .filter(|n| !before.contains(n))
            .map(|n| n.raw().to_string())
            .collect();
        published.added.sort();
        Ok(published)
    }

    /// Publishes root N+1: signed by the current root's threshold and by its
    /// own. The controller's snapshot and timestamp keys must be the new
    /// root's (install a rotated key first). Re-signs snapshot and timestamp.
    pub fn publish_root(&self, root_json: &[u8], now: SystemTime) -> Result<Published, RepoError> {
        let _guard = self.lock();
        let cur = self.current()?;
        let new: Signed<Root> = metadata::parse("root.json", root_json)?;
        check_root_shape(&new)?;
        let current_v = cur.root.signed.version.get();
        let offered = new.signed.version.get();
        if offered <= current_v {
            return Err(RepoError::VersionNotNewer {
                role: "root".into(),
                current: current_v,
                offered,
            });
        }
        if offered != current_v + 1 {
            return Err(RepoError::VersionGap {
                role: "root".into(),
                current: current_v,
                offered,
            });
        }
        metadata::verify(&cur.root.signed, &new)?;
        metadata::verify(&new.signed, &new)?;
        metadata::check_expiry(RoleType::Root, new.signed.expires, now)?;
        self.check_controller_keys(&new.signed)?;

        metadata::write_atomic(&self.meta(&format!("{offered}.root.json")), root_json)?;
        metadata::write_atomic(&self.meta("root.json"), root_json)?;
        let snapshot = self.resign_snapshot(&cur.snapshot, now)?;
        let timestamp = self.sign_timestamp(&snapshot, cur.timestamp.signed.version.get(), now)?;
        Ok(Published {
            root_version: offered,
            targets_version: cur.targets.signed.version.get(),
            snapshot_version: snapshot.signed.version.get(),
            timestamp_version: timestamp.signed.version.get(),
            added: Vec::new(),
        })
    }

    /// Re-signs the timestamp (and the snapshot) when less than half of its
    /// lifetime is left at `now`. `None` when nothing needed signing.
    pub fn refresh(&self, now: SystemTime) -> Result<Option<Published>, RepoError> {
        let _guard = self.lock();
        let cur = self.current()?;
        let now_j = metadata::to_jiff(now)?;
        let left = |expires: jiff::Timestamp| -> Duration {
            let secs = expires.as_second() - now_j.as_second();
            Duration::from_secs(u64::try_from(secs).unwrap_or(0))
        };
        let snapshot_due = left(cur.snapshot.signed.expires) < self.lifetimes.snapshot / 2;
        let timestamp_due =
            snapshot_due || left(cur.timestamp.signed.expires) < self.lifetimes.timestamp / 2;
        if !timestamp_due {
            return Ok(None);
        }
        let snapshot = if snapshot_due {
            self.resign_snapshot(&cur.snapshot, now)?
        } else {
            cur.snapshot
        };
        let timestamp = self.sign_timestamp(&snapshot, cur.timestamp.signed.version.get(), now)?;
        Ok(Some(Published {
            root_version: cur.root.signed.version.get(),
            targets_version: cur.targets.signed.version.get(),
            snapshot_version: snapshot.signed.version.get(),
            timestamp_version: timestamp.signed.version.get(),
            added: Vec::new(),
        }))
    }

    /// The targets currently published, by name.
    pub fn targets(&self) -> Result<Vec<TargetEntry>, RepoError> {
        let cur = self.current()?;
        let mut out = Vec::new();
        for (name, target) in &cur.targets.signed.targets {
            out.push(TargetEntry {
                name: name.raw().to_string(),
                custom: parse_custom(name.raw(), &target.custom)?,
                sha256: hex::encode(target.hashes.sha256.as_ref()),
                len: target.length,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn status(&self) -> Result<RepoStatus, RepoError> {
        let cur = self.current()?;
        let st = |version: NonZeroU64, expires: jiff::Timestamp| RoleStatus {
            version: version.get(),
            expires: expires.to_string(),
            expires_unix_ms: metadata::unix_ms(expires),
        };
        Ok(RepoStatus {
            root: st(cur.root.signed.version, cur.root.signed.expires),
            targets: st(cur.targets.signed.version, cur.targets.signed.expires),
            snapshot: st(cur.snapshot.signed.version, cur.snapshot.signed.expires),
            timestamp: st(cur.timestamp.signed.version, cur.timestamp.signed.expires),
        })
    }

    /// Copies the served tree (every root version, the current timestamp,
    /// snapshot and targets metadata, and the current targets' files) to
    /// `dest` in the same layout, for a USB update. `progress(done, total)`
    /// counts bytes.
    pub fn export(
        &self,
        dest: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<ExportSummary, RepoError> {
        let (files, metadata_files, target_files) = {
            let _guard = self.lock();
            let cur = self.current()?;
            let mut files: Vec<(PathBuf, PathBuf)> = Vec::new();
            let meta_dir = self.dir.join("metadata");
            for v in 1..=cur.root.signed.version.get() {
                let f = format!("{v}.root.json");
                if self.meta(&f).exists() {
                    files.push((self.meta(&f), dest.join("metadata").join(&f)));
                }
            }
            for f in [
                "root.json".to_string(),
                "timestamp.json".to_string(),
                format!("{}.snapshot.json", cur.snapshot.signed.version),
                format!("{}.targets.json", cur.targets.signed.version),
            ] {
                files.push((meta_dir.join(&f), dest.join("metadata").join(&f)));
            }
            let metadata_files = files.len();
            for (name, target) in &cur.targets.signed.targets {
                let rel = target_file_path(name.raw(), &hex::encode(target.hashes.sha256.as_ref()));
                files.push((
                    self.dir.join("targets").join(&rel),
                    dest.join("targets").join(&rel),
                ));
            }
            let target_files = files.len() - metadata_files;
            (files, metadata_files, target_files)
        };
        let mut total = 0;
        for (src, _) in &files {
            total += std::fs::metadata(src).map_err(RepoError::io(src))?.len();
        }
        let mut done = 0;
        progress(0, total);
        for (src, dst) in &files {
            done += copy_with_progress(src, dst, &mut |n| {
                progress(done + n, total);
            })?;
            progress(done, total);
        }
        Ok(ExportSummary {
            dest: dest.to_path_buf(),
            metadata_files,
            target_files,
            bytes: done,
        })
    }

    fn current(&self) -> Result<Current, RepoError> {
        let (root, _) = metadata::read::<Root>(&self.meta("root.json"))?;
        let (timestamp, _) = metadata::read::<Timestamp>(&self.meta("timestamp.json"))?;
        let sv = meta_version(&timestamp.signed.meta, "snapshot.json", "timestamp")?;
        let (snapshot, _) = metadata::read::<Snapshot>(&self.meta(&format!("{sv}.snapshot.json")))?;
        let tv = meta_version(&snapshot.signed.meta, "targets.json", "snapshot")?;
        let (targets, _) = metadata::read::<Targets>(&self.meta(&format!("{tv}.targets.json")))?;
        Ok(Current {
            root,
            targets,
            snapshot,
            timestamp,
        })
    }

    fn check_controller_keys(&self, root: &Root) -> Result<(), RepoError> {
        let snapshot = keys::load(&self.snapshot_key)?;
        metadata::ensure_role_key(root, RoleType::Snapshot, snapshot.as_ref())?;
        let timestamp = keys::load(&self.timestamp_key)?;
        metadata::ensure_role_key(root, RoleType::Timestamp, timestamp.as_ref())
    }

    fn check_targets(
        &self,
        root: &Root,
        targets_json: &[u8],
        current_version: u64,
        now: SystemTime,
    ) -> Result<Signed<Targets>, RepoError> {
        let targets: Signed<Targets> = metadata::parse("targets.json", targets_json)?;
        metadata::verify(root, &targets)?;
        let offered = targets.signed.version.get();
        if offered <= current_version {
            return Err(RepoError::VersionNotNewer {
                role: "targets".into(),
                current: current_version,
                offered,
            });
        }
        metadata::check_expiry(RoleType::Targets, targets.signed.expires, now)?;
        if targets
            .signed
            .delegations
            .as_ref()
            .is_some_and(|d| !d.roles.is_empty())
        {
            return Err(RepoError::Malformed {
                what: "targets.json".into(),
                reason: "delegations are not used by this repository".into(),
            });
        }
        for (name, target) in &targets.signed.targets {
            let name = name.raw();
            let custom = parse_custom(name, &target.custom)?;
            let expected = target_name(custom.artifact, &custom.model, &custom.version);
            if expected != name {
                return Err(RepoError::BadTarget {
                    name: name.to_string(),
                    reason: format!("custom metadata names it {expected}"),
                });
            }
            let sha = hex::encode(target.hashes.sha256.as_ref());
            let image = self
                .image_path(&sha)
                .ok_or_else(|| RepoError::ImageMissing {
                    name: name.to_string(),
                    sha256: sha.clone(),
                })?;
            let len = std::fs::metadata(&image)
                .map_err(RepoError::io(&image))?
                .len();
            if len != target.length {
                return Err(RepoError::LengthMismatch {
                    name: name.to_string(),
                    expected: target.length,
                    actual: len,
                });
            }
        }
        Ok(targets)
    }

    /// Links the targets' files, writes V.targets.json, then snapshot and timestamp.
    fn write_targets_and_below(
        &self,
        root: &Root,
        targets: &Signed<Targets>,
        targets_json: &[u8],
        snapshot_version: u64,
        timestamp_version: u64,
        now: SystemTime,
    ) -> Result<Published, RepoError> {
        for (name, target) in &targets.signed.targets {
            let sha = hex::encode(target.hashes.sha256.as_ref());
            for rel in [
                target_file_path(name.raw(), &sha),
                target_file_path_spec(name.raw(), &sha),
            ] {
                let dest = self.dir.join("targets").join(rel);
                if dest.exists() {
                    continue;
                }
                let image = self
                    .image_path(&sha)
                    .ok_or_else(|| RepoError::ImageMissing {
                        name: name.raw().to_string(),
                        sha256: sha.clone(),
                    })?;
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent).map_err(RepoError::io(parent))?;
                }
                link_or_copy(&image, &dest)?;
            }
        }
        let tv = targets.signed.version;
        metadata::write_atomic(&self.meta(&format!("{tv}.targets.json")), targets_json)?;
        let mut snap = Snapshot::new(
            SPEC_VERSION.into(),
            next_version(snapshot_version),
            metadata::expiry(now, self.lifetimes.snapshot)?,
        );
        snap.meta
            .insert("targets.json".into(), metafile(tv, targets_json));
        let snapshot = self.sign_snapshot(snap)?;
        let timestamp = self.sign_timestamp(&snapshot, timestamp_version, now)?;
        Ok(Published {
            root_version: root.version.get(),
            targets_version: tv.get(),
            snapshot_version: snapshot.signed.version.get(),
            timestamp_version: timestamp.signed.version.get(),
            added: targets
                .signed
                .targets
                .keys()
                .map(|n| n.raw().to_string())
                .collect(),
        })
    }

    fn resign_snapshot(
        &self,
        current: &Signed<Snapshot>,
        now: SystemTime,
    ) -> Result<Signed<Snapshot>, RepoError> {
        let mut snap = current.signed.clone();
        snap.version = next_version(snap.version.get());
        snap.expires = metadata::expiry(now, self.lifetimes.snapshot)?;
        self.sign_snapshot(snap)
    }

    fn sign_snapshot(&self, snap: Snapshot) -> Result<Signed<Snapshot>, RepoError> {
        let key = keys::load(&self.snapshot_key)?;
        let signed = metadata::sign_role(snap, &[key.as_ref()])?;
        let file = signed.signed.filename(true);
        metadata::write_atomic(&self.meta(&file), &metadata::to_bytes(&signed)?)?;
        Ok(signed)
    }

    fn sign_timestamp(
        &self,
        snapshot: &Signed<Snapshot>,
        current_version: u64,
        now: SystemTime,
    ) -> Result<Signed<Timestamp>, RepoError> {
        let snapshot_bytes = std::fs::read(self.meta(&snapshot.signed.filename(true)))
            .map_err(RepoError::io(self.meta(&snapshot.signed.filename(true))))?;
        let mut ts = Timestamp::new(
            SPEC_VERSION.into(),
            next_version(current_version),
            metadata::expiry(now, self.lifetimes.timestamp)?,
        );
        ts.meta.insert(
            "snapshot.json".into(),
            metafile(snapshot.signed.version, &snapshot_bytes),
        );
        let key: Box<dyn Sign> = keys::load(&self.timestamp_key)?;
        let signed = metadata::sign_role(ts, &[key.as_ref()])?;
        metadata::write_atomic(&self.meta("timestamp.json"), &metadata::to_bytes(&signed)?)?;
        Ok(signed)
    }
}

fn check_root_shape(root: &Signed<Root>) -> Result<(), RepoError> {
    if !root.signed.consistent_snapshot {
        return Err(RepoError::Malformed {
            what: "root.json".into(),
            reason: "consistent_snapshot must be true".into(),
        });
    }
    for role in [
        RoleType::Root,
        RoleType::Targets,
        RoleType::Snapshot,
        RoleType::Timestamp,
    ] {
        if !root.signed.roles.contains_key(&role) {
            return Err(RepoError::Malformed {
                what: "root.json".into(),
                reason: format!("no {role} role"),
            });
        }
    }
    Ok(())
}

fn parse_custom(
    name: &str,
    custom: &HashMap<String, serde_json::Value>,
) -> Result<TargetCustom, RepoError> {
    let obj: serde_json::Map<String, serde_json::Value> =
        custom.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    serde_json::from_value(serde_json::Value::Object(obj)).map_err(|e| RepoError::BadTarget {
        name: name.to_string(),
        reason: format!("custom metadata: {e}"),
    })
}

fn meta_version(
    meta: &HashMap<String, Metafile>,
    file: &str,
    role: &str,
) -> Result<NonZeroU64, RepoError> {
    meta.get(file)
        .map(|m| m.version)
        .ok_or_else(|| RepoError::Malformed {
            what: format!("{role}.json"),
            reason: format!("does not list {file}"),
        })
}

fn metafile(version: NonZeroU64, bytes: &[u8]) -> Metafile {
    let sha = hex::decode(metadata::sha256_hex(bytes)).unwrap_or_default();
    Metafile {
        length: Some(bytes.len() as u64),
        hashes: Some(Hashes {
            sha256: Decoded::<Hex>::from(sha),
            _extra: HashMap::new(),
        }),
        version,
        _extra: HashMap::new(),
    }
}

fn next_version(v: u64) -> NonZeroU64 {
    NonZeroU64::new(v.saturating_add(1)).unwrap_or(NonZeroU64::MIN)
}

fn link_or_copy(src: &Path, dest: &Path) -> Result<(), RepoError> {
    if std::fs::hard_link(src, dest).is_ok() {
        return Ok(());
    }
    let tmp = dest.with_extension("partial");
    std::fs::copy(src, &tmp).map_err(RepoError::io(src))?;
    std::fs::rename(&tmp, dest).map_err(RepoError::io(dest))
}

fn copy_with_progress(
    src: &Path,
    dst: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, RepoError> {
    use std::io::{Read, Write};
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(RepoError::io(parent))?;
    }
    let mut input = std::fs::File::open(src).map_err(RepoError::io(src))?;
    let mut out = std::fs::File::create(dst).map_err(RepoError::io(dst))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut n_total = 0;
    loop {
        let n = input.read(&mut buf).map_err(RepoError::io(src))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(RepoError::io(dst))?;
        n_total += n as u64;
        progress(n_total);
    }
    out.sync_all().map_err(RepoError::io(dst))?;
    Ok(n_total)
}
