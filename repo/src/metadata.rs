//! TUF metadata helpers shared by the release side and the controller side:
//! signing a role with tough's schema types, checking signatures and expiry,
//! times, atomic file writes and streaming hashes. Public so that tests (and
//! tools) can build metadata the normal paths refuse to build.

use std::io::{Read, Write};
use std::path::Path;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tough::schema::{Role, RoleType, Root, Signature, Signed};
use tough::sign::Sign;

use crate::error::RepoError;
use crate::keys::key_id_hex;

pub const SPEC_VERSION: &str = "1.0.0";

/// Signs `role` with each key, in order.
pub fn sign_role<T: Role>(role: T, keys: &[&dyn Sign]) -> Result<Signed<T>, RepoError> {
    let data = role.canonical_form().map_err(|e| RepoError::Sign {
        reason: format!("canonical JSON of {}: {e}", T::TYPE),
    })?;
    let rng = SystemRandom::new();
    let mut signatures = Vec::with_capacity(keys.len());
    for key in keys {
        let keyid = key.tuf_key().key_id().map_err(|e| RepoError::Sign {
            reason: format!("key id: {e}"),
        })?;
        let sig = sign_now(*key, &data, &rng)?;
        if signatures.iter().any(|s: &Signature| s.keyid == keyid) {
            continue;
        }
        signatures.push(Signature {
            keyid,
            sig: sig.into(),
        });
    }
    Ok(Signed {
        signed: role,
        signatures,
    })
}

/// tough's `Sign` is an async trait; a key from a file signs without
/// waiting, so one poll completes it. No runtime is needed, which keeps these
/// functions callable from inside the controller's runtime and from the
/// offline release tool alike.
fn sign_now(key: &dyn Sign, data: &[u8], rng: &SystemRandom) -> Result<Vec<u8>, RepoError> {
    let mut fut = key.sign(data, rng);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(sig)) => Ok(sig),
        Poll::Ready(Err(e)) => Err(RepoError::Sign {
            reason: e.to_string(),
        }),
        Poll::Pending => Err(RepoError::Sign {
            reason: "the key source signs asynchronously; only local keys are supported".into(),
        }),
    }
}

/// The bytes a metadata file holds (pretty JSON; signatures cover the
/// canonical form of `signed`, not these bytes).
pub fn to_bytes<T: Serialize>(signed: &Signed<T>) -> Result<Vec<u8>, RepoError> {
    let mut v = serde_json::to_vec_pretty(signed).map_err(|e| RepoError::Malformed {
        what: "metadata".into(),
        reason: e.to_string(),
    })?;
    v.push(b'\n');
    Ok(v)
}

pub fn parse<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<Signed<T>, RepoError> {
    serde_json::from_slice(bytes).map_err(|e| RepoError::Malformed {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

pub fn read<T: DeserializeOwned>(path: &Path) -> Result<(Signed<T>, Vec<u8>), RepoError> {
    let bytes = std::fs::read(path).map_err(RepoError::io(path))?;
    Ok((parse(&path.display().to_string(), &bytes)?, bytes))
}

/// Checks `signed` against `root`'s keys and threshold for the role `T`.
pub fn verify<T: Role>(root: &Root, signed: &Signed<T>) -> Result<(), RepoError> {
    let role = T::TYPE.to_string();
    match root.verify_role(signed) {
        Ok(()) => Ok(()),
        Err(tough::schema::Error::SignatureThreshold {
            threshold, valid, ..
        }) => Err(RepoError::BelowThreshold {
            role,
            have: valid,
            need: threshold,
        }),
        Err(e) => Err(RepoError::BadSignature {
            role,
            reason: e.to_string(),
        }),
    }
}

/// Refuses metadata that has expired at `now`.
pub fn check_expiry(
    role: RoleType,
    expires: jiff::Timestamp,
    now: SystemTime,
) -> Result<(), RepoError> {
    if expires <= to_jiff(now)? {
        return Err(RepoError::Expired {
            role: role.to_string(),
            at: expires.to_string(),
        });
    }
    Ok(())
}

/// The key ids (hex) that root lists for `role`.
pub fn role_key_ids(root: &Root, role: RoleType) -> Vec<String> {
    root.roles
        .get(&role)
        .map(|r| r.keyids.iter().map(|k| hex::encode(k.as_ref())).collect())
        .unwrap_or_default()
}

/// Refuses a key that root does not list for `role`.
pub fn ensure_role_key(root: &Root, role: RoleType, key: &dyn Sign) -> Result<(), RepoError> {
    let id = key_id_hex(&key.tuf_key())?;
    if role_key_ids(root, role).contains(&id) {
        Ok(())
    } else {
        Err(RepoError::KeyNotInRoot {
            role: role.to_string(),
            key_id: id,
        })
    }
}

/// `now` as a TUF time, whole seconds (metadata times carry no fraction so
/// they read back the same after a round trip).
pub fn to_jiff(now: SystemTime) -> Result<jiff::Timestamp, RepoError> {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| RepoError::Time {
            what: "before 1970".into(),
        })?
        .as_secs();
    jiff::Timestamp::from_second(secs as i64).map_err(|e| RepoError::Time {
        what: e.to_string(),
    })
}

pub fn expiry(now: SystemTime, lifetime: Duration) -> Result<jiff::Timestamp, RepoError> {
    to_jiff(now + lifetime)
}

pub fn days(d: u32) -> Duration {
    Duration::from_secs(u64::from(d) * 86_400)
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(t: jiff::Timestamp) -> u64 {
    u64::try_from(t.as_millisecond()).unwrap_or(0)
}

/// Writes `bytes` to `path` through a synced temporary file and a rename, so
/// a reader sees the old file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RepoError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(RepoError::io(parent))?;
    let tmp = parent.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let mut f = std::fs::File::create(&tmp).map_err(RepoError::io(&tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(RepoError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(RepoError::io(path))?;
    if let Ok(dir) = std::fs::File::open(parent) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Whether `s` is a SHA-256 as the repository names images: 64 lower-case
/// hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// sha256 (hex) and length of a file, calling `progress(done, total)` as it reads.
pub fn sha256_file(
    path: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(String, u64), RepoError> {
    let mut f = std::fs::File::open(path).map_err(RepoError::io(path))?;
    let total = f.metadata().map_err(RepoError::io(path))?.len();
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 256 * 1024];
    let mut done = 0u64;
    progress(0, total);
    loop {
        let n = f.read(&mut buf).map_err(RepoError::io(path))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        done += n as u64;
        progress(done, total.max(done));
    }
    Ok((hex::encode(ctx.finish().as_ref()), done))
}
