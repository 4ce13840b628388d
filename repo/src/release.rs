//! The release team's offline side: the key set (`KEYS/`), signing images
//! into targets.json, and rotating a role's key through a new root.
//!
//! ```text
//! KEYS/root-1.pem … root-N.pem   KEYS/targets.pem
//! KEYS/root.json  KEYS/N.root.json        (newest root, and every version)
//! KEYS/targets.json                        (newest signed targets)
//! KEYS/controller/snapshot.pem  KEYS/controller/timestamp.pem
//! KEYS/release.json                        (the lifetimes chosen at init)
//! KEYS/retired/                            (keys replaced by a rotation)
//! ```

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use fleet_protocol::firmware::{target_name, TargetCustom};
use serde::{Deserialize, Serialize};
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::key::Key;
use tough::schema::{Hashes, RoleKeys, RoleType, Root, Signed, Target, Targets};
use tough::sign::Sign;
use tough::TargetName;

use crate::error::RepoError;
use crate::keys::{self, PublicKeyInfo};
use crate::metadata::{self, days, expiry, SPEC_VERSION};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitOptions {
    pub root_keys: u8,
    pub root_threshold: u8,
    pub root_expires_days: u32,
    pub targets_expires_days: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            root_keys: 1,
            root_threshold: 1,
            root_expires_days: 365,
            targets_expires_days: 365,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct InitSummary {
    pub keys_dir: PathBuf,
    pub root_version: u64,
    pub root_key_ids: Vec<String>,
    pub root_threshold: u8,
    pub targets_key_id: String,
    pub snapshot_key_id: String,
    pub timestamp_key_id: String,
    pub root_expires: String,
    pub targets_expires: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SignedTarget {
    pub name: String,
    pub sha256: String,
    pub length: u64,
    pub custom: TargetCustom,
    pub targets_version: u64,
    pub targets_expires: String,
    /// KEYS/targets.json, to upload to the controller.
    pub targets_path: PathBuf,
    /// The same image was already signed under this name: nothing changed.
    pub unchanged: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Root,
    Targets,
    Snapshot,
    Timestamp,
}

impl Role {
    pub fn role_type(self) -> RoleType {
        match self {
            Role::Root => RoleType::Root,
            Role::Targets => RoleType::Targets,
            Role::Snapshot => RoleType::Snapshot,
            Role::Timestamp => RoleType::Timestamp,
        }
    }
}

impl std::str::FromStr for Role {
    type Err = RepoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "root" => Ok(Role::Root),
            "targets" => Ok(Role::Targets),
            "snapshot" => Ok(Role::Snapshot),
            "timestamp" => Ok(Role::Timestamp),
            other => Err(RepoError::InvalidOptions {
                reason: format!("unknown role {other:?} (root, targets, snapshot, timestamp)"),
            }),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.role_type().fmt(f)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RotateSummary {
    pub role: Role,
    pub old_key_ids: Vec<String>,
    pub new_key_ids: Vec<String>,
    /// Where the new key(s) were written.
    pub new_key_paths: Vec<PathBuf>,
    pub root_version: u64,
    pub root_path: PathBuf,
    /// Set when targets.json was re-signed with a new targets key.
    pub targets_version: Option<u64>,
}

/// Lifetimes chosen at init, reused by later signatures.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Settings {
    root_expires_days: u32,
    targets_expires_days: u32,
}

pub fn root_key_path(keys_dir: &Path, n: u8) -> PathBuf {
    keys_dir.join(format!("root-{n}.pem"))
}
pub fn targets_key_path(keys_dir: &Path) -> PathBuf {
    keys_dir.join("targets.pem")
}
pub fn snapshot_key_path(keys_dir: &Path) -> PathBuf {
    keys_dir.join("controller").join("snapshot.pem")
}
pub fn timestamp_key_path(keys_dir: &Path) -> PathBuf {
    keys_dir.join("controller").join("timestamp.pem")
}
pub fn root_json_path(keys_dir: &Path) -> PathBuf {
    keys_dir.join("root.json")
}
pub fn targets_json_path(keys_dir: &Path) -> PathBuf {
    keys_dir.join("targets.json")
}
fn settings_path(keys_dir: &Path) -> PathBuf {
    keys_dir.join("release.json")
}

/// Creates the key set and root version 1 (signed by every root key) and an
/// empty targets.json version 1.
pub fn init(
    keys_dir: &Path,
    opts: &InitOptions,
    now: SystemTime,
) -> Result<InitSummary, RepoError> {
    if opts.root_keys == 0 || opts.root_threshold == 0 || opts.root_threshold > opts.root_keys {
        return Err(RepoError::InvalidOptions {
            reason: format!(
                "root threshold {} of {} keys: need 1 <= threshold <= keys",
                opts.root_threshold, opts.root_keys
            ),
        });
    }
    if opts.root_expires_days == 0 || opts.targets_expires_days == 0 {
        return Err(RepoError::InvalidOptions {
            reason: "expiry must be at least one day".into(),
        });
    }
    if root_json_path(keys_dir).exists() {
        return Err(RepoError::AlreadyInitialised {
            path: keys_dir.to_path_buf(),
        });
    }
    std::fs::create_dir_all(keys_dir).map_err(RepoError::io(keys_dir))?;

    let mut root_infos = Vec::new();
    for n in 1..=opts.root_keys {
        root_infos.push(keys::generate(&root_key_path(keys_dir, n))?);
    }
    let targets = keys::generate(&targets_key_path(keys_dir))?;
    let snapshot = keys::generate(&snapshot_key_path(keys_dir))?;
    let timestamp = keys::generate(&timestamp_key_path(keys_dir))?;

    let root_expires = expiry(now, days(opts.root_expires_days))?;
    let mut root = Root {
        spec_version: SPEC_VERSION.into(),
        consistent_snapshot: true,
        version: NonZeroU64::MIN,
        expires: root_expires,
        keys: HashMap::new(),
        roles: HashMap::new(),
        _extra: HashMap::new(),
    };
    set_role(
        &mut root,
        RoleType::Root,
        &root_infos,
        u64::from(opts.root_threshold),
    )?;
    set_role(
        &mut root,
        RoleType::Targets,
        std::slice::from_ref(&targets),
        1,
    )?;
    set_role(
        &mut root,
        RoleType::Snapshot,
        std::slice::from_ref(&snapshot),
        1,
    )?;
    set_role(
        &mut root,
        RoleType::Timestamp,
        std::slice::from_ref(&timestamp),
        1,
    )?;

    let signers = load_all(
        &(1..=opts.root_keys)
            .map(|n| root_key_path(keys_dir, n))
            .collect::<Vec<_>>(),
    )?;
    let signed_root = metadata::sign_role(root, &refs(&signers))?;
    metadata::verify(&signed_root.signed, &signed_root)?;
    write_root(keys_dir, &signed_root)?;

    let targets_expires = expiry(now, days(opts.targets_expires_days))?;
    let empty = Targets {
        spec_version: SPEC_VERSION.into(),
        version: NonZeroU64::MIN,
        expires: targets_expires,
        targets: HashMap::new(),
        delegations: None,
        _extra: HashMap::new(),
    };
    let targets_signer = keys::load(&targets_key_path(keys_dir))?;
    let signed_targets = metadata::sign_role(empty, &[targets_signer.as_ref()])?;
    metadata::write_atomic(
        &targets_json_path(keys_dir),
        &metadata::to_bytes(&signed_targets)?,
    )?;
    let settings = Settings {
        root_expires_days: opts.root_expires_days,
        targets_expires_days: opts.targets_expires_days,
    };
    metadata::write_atomic(
        &settings_path(keys_dir),
        &serde_json::to_vec_pretty(&settings).map_err(|e| RepoError::Malformed {
            what: "release.json".into(),
            reason: e.to_string(),
        })?,
    )?;

    Ok(InitSummary {
        keys_dir: keys_dir.to_path_buf(),
        root_version: 1,
        root_key_ids: root_infos.iter().map(|k| k.key_id.clone()).collect(),
        root_threshold: opts.root_threshold,
        targets_key_id: targets.key_id,
        snapshot_key_id: snapshot.key_id,
        timestamp_key_id: timestamp.key_id,
        root_expires: root_expires.to_string(),
        targets_expires: targets_expires.to_string(),
    })
}

/// Hashes `image` (reporting progress), adds it to KEYS/targets.json under
/// its target name with `custom`, bumps the version and re-signs. A name
/// already signed with other content is refused: a version is never re-used.
pub fn sign(
    keys_dir: &Path,
    image: &Path,
    custom: &TargetCustom,
    now: SystemTime,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<SignedTarget, RepoError> {
    let root = read_root(keys_dir)?;
    let settings = read_settings(keys_dir)?;
    let targets_path = targets_json_path(keys_dir);
    let (current, _) = metadata::read::<Targets>(&targets_path)?;
    let signer = keys::load(&targets_key_path(keys_dir))?;
    metadata::ensure_role_key(&root.signed, RoleType::Targets, signer.as_ref())?;

    let (sha256, length) = metadata::sha256_file(image, progress)?;
    let name = target_name(custom.artifact, &custom.model, &custom.version);
    let tname = TargetName::new(name.clone()).map_err(|e| RepoError::BadTarget {
        name: name.clone(),
        reason: e.to_string(),
    })?;
    if let Some(existing) = current.signed.targets.get(&tname) {
        let existing_sha = hex::encode(existing.hashes.sha256.as_ref());
        if existing_sha == sha256 && existing.length == length {
            return Ok(SignedTarget {
                name,
                sha256,
                length,
                custom: custom.clone(),
                targets_version: current.signed.version.get(),
                targets_expires: current.signed.expires.to_string(),
                targets_path,
                unchanged: true,
            });
        }
        return Err(RepoError::NameTaken {
            name,
            existing_sha256: existing_sha,
        });
    }

    let mut next = current.signed.clone();
    next.targets
        .insert(tname, make_target(&sha256, length, custom)?);
    next.version = bump(next.version);
    next.expires = expiry(now, days(settings.targets_expires_days))?;
    let signed = metadata::sign_role(next, &[signer.as_ref()])?;
    metadata::verify(&root.signed, &signed)?;
    metadata::write_atomic(&targets_path, &metadata::to_bytes(&signed)?)?;
    Ok(SignedTarget {
        name,
        sha256,
        length,
        custom: custom.clone(),
        targets_version: signed.signed.version.get(),
        targets_expires: signed.signed.expires.to_string(),
        targets_path,
        unchanged: false,
    })
}

/// A TUF target entry for an image with `custom` as its custom metadata.
pub fn make_target(
    sha256_hex: &str,
    length: u64,
    custom: &TargetCustom,
) -> Result<Target, RepoError> {
    let sha = hex::decode(sha256_hex).map_err(|e| RepoError::Malformed {
        what: "sha256".into(),
        reason: e.to_string(),
    })?;
    let custom_map = match serde_json::to_value(custom) {
        Ok(serde_json::Value::Object(m)) => m.into_iter().collect(),
        _ => {
            return Err(RepoError::Malformed {
                what: "custom".into(),
                reason: "not a JSON object".into(),
            })
        }
    };
    Ok(Target {
        length,
        hashes: Hashes {
            sha256: Decoded::<Hex>::from(sha),
            _extra: HashMap::new(),
        },
        custom: custom_map,
        _extra: HashMap::new(),
    })
}

/// Replaces `role`'s key(s) with new ones: writes root N+1 signed by
/// `signing_root_keys` (default: KEYS/root-*.pem; they must reach the
/// current root threshold) and by the new root keys. Rotating `root`
/// replaces every root key; rotating `targets` also re-signs targets.json
/// with the new key. Replaced keys move to KEYS/retired/.
pub fn rotate(
    keys_dir: &Path,
    role: Role,
    signing_root_keys: &[PathBuf],
    now: SystemTime,
) -> Result<RotateSummary, RepoError> {
    let current = read_root(keys_dir)?;
    let settings = read_settings(keys_dir)?;
    let old_root = &current.signed;

    let signing_paths: Vec<PathBuf> = if signing_root_keys.is_empty() {
        existing_root_key_paths(keys_dir)
    } else {
        signing_root_keys.to_vec()
    };
    let old_signers = load_all(&signing_paths)?;
    let old_root_ids = metadata::role_key_ids(old_root, RoleType::Root);
    let mut usable = 0u64;
    let mut seen = Vec::new();
    for s in &old_signers {
        let id = keys::key_id_hex(&s.tuf_key())?;
        if old_root_ids.contains(&id) && !seen.contains(&id) {
            usable += 1;
            seen.push(id);
        }
    }
    let need = old_root
        .roles
        .get(&RoleType::Root)
        .map(|r| r.threshold.get())
        .unwrap_or(1);
    if usable < need {
        return Err(RepoError::BelowThreshold {
            role: "root".into(),
            have: usable,
            need,
        });
    }

    let old_key_ids = metadata::role_key_ids(old_root, role.role_type());
    // New keys are made under temporary names and renamed once root N+1 is written.
    let staged: Vec<(PathBuf, PathBuf)> = match role {
        Role::Root => (1..=u8::try_from(old_key_ids.len()).unwrap_or(u8::MAX))
            .map(|n| {
                let final_path = root_key_path(keys_dir, n);
                (final_path.with_extension("pem.new"), final_path)
            })
            .collect(),
        Role::Targets => vec![(keys_dir.join("targets.pem.new"), targets_key_path(keys_dir))],
        Role::Snapshot => vec![(
            keys_dir.join("controller/snapshot.pem.new"),
            snapshot_key_path(keys_dir),
        )],
        Role::Timestamp => vec![(
            keys_dir.join("controller/timestamp.pem.new"),
            timestamp_key_path(keys_dir),
        )],
    };
    let mut new_infos = Vec::new();
    for (tmp, _) in &staged {
        let _ = std::fs::remove_file(tmp);
        new_infos.push(keys::generate(tmp)?);
    }

    let mut next = old_root.clone();
    let threshold = next
        .roles
        .get(&role.role_type())
        .map(|r| r.threshold.get())
        .unwrap_or(1);
    set_role(&mut next, role.role_type(), &new_infos, threshold)?;
    prune_keys(&mut next);
    next.version = bump(next.version);
    next.expires = expiry(now, days(settings.root_expires_days))?;

    let mut signer_refs = refs(&old_signers);
    let new_root_signers = if role == Role::Root {
        load_all(
            &staged
                .iter()
                .map(|(tmp, _)| tmp.clone())
                .collect::<Vec<_>>(),
        )?
    } else {
        Vec::new()
    };
    signer_refs.extend(refs(&new_root_signers));
    let signed = metadata::sign_role(next, &signer_refs)?;
    // Valid under the old root (the chain a device follows) and under itself.
    metadata::verify(old_root, &signed)?;
    metadata::verify(&signed.signed, &signed)?;

    let version = signed.signed.version.get();
    let root_path = keys_dir.join(format!("{version}.root.json"));
    metadata::write_atomic(&root_path, &metadata::to_bytes(&signed)?)?;

    let retired = keys_dir.join("retired");
    for (tmp, final_path) in &staged {
        if final_path.exists() {
            std::fs::create_dir_all(&retired).map_err(RepoError::io(&retired))?;
            let old_id = keys::key_id(final_path).unwrap_or_else(|_| "unknown".into());
            let stem = final_path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("key");
            let dest = retired.join(format!("{stem}-{}.pem", &old_id[..old_id.len().min(16)]));
            std::fs::rename(final_path, &dest).map_err(RepoError::io(final_path))?;
        }
        std::fs::rename(tmp, final_path).map_err(RepoError::io(tmp))?;
    }
    metadata::write_atomic(&root_json_path(keys_dir), &metadata::to_bytes(&signed)?)?;

    let mut targets_version = None;
    if role == Role::Targets {
        let targets_path = targets_json_path(keys_dir);
        let (current_targets, _) = metadata::read::<Targets>(&targets_path)?;
        let mut t = current_targets.signed;
        t.version = bump(t.version);
        t.expires = expiry(now, days(settings.targets_expires_days))?;
        let signer = keys::load(&targets_key_path(keys_dir))?;
        let signed_t = metadata::sign_role(t, &[signer.as_ref()])?;
        metadata::verify(&signed.signed, &signed_t)?;
        metadata::write_atomic(&targets_path, &metadata::to_bytes(&signed_t)?)?;
        targets_version = Some(signed_t.signed.version.get());
    }

    Ok(RotateSummary {
        role,
        old_key_ids,
        new_key_ids: new_infos.into_iter().map(|k| k.key_id).collect(),
        new_key_paths: staged.into_iter().map(|(_, p)| p).collect(),
        root_version: version,
        root_path,
        targets_version,
    })
}

/// Lists `infos` as the keys of `role` in `root`, with `threshold`.
pub fn set_role(
    root: &mut Root,
    role: RoleType,
    infos: &[PublicKeyInfo],
    threshold: u64,
) -> Result<(), RepoError> {
    let mut keyids = Vec::new();
    for info in infos {
        let id: Decoded<Hex> = info.key.key_id().map_err(|e| RepoError::Sign {
            reason: format!("key id: {e}"),
        })?;
        root.keys.insert(id.clone(), info.key.clone());
        keyids.push(id);
    }
    root.roles.insert(
        role,
        RoleKeys {
            keyids,
            threshold: NonZeroU64::new(threshold).ok_or_else(|| RepoError::InvalidOptions {
                reason: "threshold 0".into(),
            })?,
            _extra: HashMap::new(),
        },
    );
    Ok(())
}

/// Drops keys no role lists any more.
fn prune_keys(root: &mut Root) {
    let used: Vec<Decoded<Hex>> = root
        .roles
        .values()
        .flat_map(|r| r.keyids.iter().cloned())
        .collect();
    root.keys.retain(|id, _: &mut Key| used.contains(id));
}

fn bump(v: NonZeroU64) -> NonZeroU64 {
    v.checked_add(1).unwrap_or(v)
}

fn read_root(keys_dir: &Path) -> Result<Signed<Root>, RepoError> {
    let path = root_json_path(keys_dir);
    if !path.exists() {
        return Err(RepoError::NotInitialised {
            path: keys_dir.to_path_buf(),
            what: "release key directory (run `fleetctl release keys init`)",
        });
    }
    Ok(metadata::read::<Root>(&path)?.0)
}

fn read_settings(keys_dir: &Path) -> Result<Settings, RepoError> {
    let path = settings_path(keys_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RepoError::Malformed {
            what: path.display().to_string(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings {
            root_expires_days: 365,
            targets_expires_days: 365,
        }),
        Err(e) => Err(RepoError::Io { path, source: e }),
    }
}

fn write_root(keys_dir: &Path, signed: &Signed<Root>) -> Result<(), RepoError> {
    let bytes = metadata::to_bytes(signed)?;
    let v = signed.signed.version.get();
    metadata::write_atomic(&keys_dir.join(format!("{v}.root.json")), &bytes)?;
    metadata::write_atomic(&root_json_path(keys_dir), &bytes)
}

fn existing_root_key_paths(keys_dir: &Path) -> Vec<PathBuf> {
    (1..=u8::MAX)
        .map(|n| root_key_path(keys_dir, n))
        .take_while(|p| p.exists())
        .collect()
}

fn load_all(paths: &[PathBuf]) -> Result<Vec<Box<dyn Sign>>, RepoError> {
    paths.iter().map(|p| keys::load(p)).collect()
}

fn refs(signers: &[Box<dyn Sign>]) -> Vec<&dyn Sign> {
    signers.iter().map(|s| s.as_ref()).collect()
}
