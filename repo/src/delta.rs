//! Binary deltas between two images (bidiff to make, bipatch to apply). The
//! patch format is bidiff's own, unchanged, so a device applies it with
//! bipatch alone; the result is trusted only after its sha256 matches the
//! signed target.

use std::io::{BufReader, Read, Write};
use std::path::Path;

use crate::error::RepoError;

/// Writes a patch turning `old` into `new` to `patch`; returns its length.
/// Holds both files in memory (bidiff sorts suffixes of `old`).
pub fn make(old: &Path, new: &Path, patch: &Path) -> Result<u64, RepoError> {
    let older = std::fs::read(old).map_err(RepoError::io(old))?;
    let newer = std::fs::read(new).map_err(RepoError::io(new))?;
    let mut out = Vec::new();
    bidiff::simple_diff(&older, &newer, &mut out).map_err(|e| RepoError::Delta {
        reason: format!("diff: {e}"),
    })?;
    crate::metadata::write_atomic(patch, &out)?;
    Ok(out.len() as u64)
}

/// Applies `patch` to `old`, writing `out`; returns the length written.
pub fn apply(old: &Path, patch: &Path, out: &Path) -> Result<u64, RepoError> {
    apply_bounded(old, patch, out, u64::MAX)
}

/// As [`apply`], but fails once the output would exceed `max_len` bytes (a
/// device passes the signed length of the target, so a hostile patch cannot
/// fill its disk).
pub fn apply_bounded(old: &Path, patch: &Path, out: &Path, max_len: u64) -> Result<u64, RepoError> {
    let old_file = std::fs::File::open(old).map_err(RepoError::io(old))?;
    let patch_file = std::fs::File::open(patch).map_err(RepoError::io(patch))?;
    let mut reader = bipatch::Reader::new(BufReader::new(patch_file), old_file).map_err(|e| {
        RepoError::Delta {
            reason: format!("patch header: {e}"),
        }
    })?;
    let tmp = out.with_extension("partial");
    let mut file = std::fs::File::create(&tmp).map_err(RepoError::io(&tmp))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut written: u64 = 0;
    let result = loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) => {
                break Err(RepoError::Delta {
                    reason: format!("patch does not apply: {e}"),
                })
            }
        };
        written += n as u64;
        if written > max_len {
            break Err(RepoError::Delta {
                reason: format!("output exceeds the {max_len} bytes allowed"),
            });
        }
        if let Err(e) = file.write_all(&buf[..n]) {
            break Err(RepoError::Io {
                path: tmp.clone(),
                source: e,
            });
        }
    };
    if let Err(e) = result.and_then(|()| file.sync_all().map_err(RepoError::io(&tmp))) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, out).map_err(RepoError::io(out))?;
    Ok(written)
}
