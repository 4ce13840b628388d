//! Delta updates on the device: rebuild the new image from the installed
//! one and a bidiff patch (in an LZ4 frame) the controller served
//! (`bipatch`), then check it
//! like any downloaded image. The patch is not signed and need not be: the
//! result must have the signed length and SHA-256, or it is thrown away.
//! The output is bounded by the signed length while it is written, so a
//! hostile patch cannot fill the disk.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Limit and hash the rebuilt image must have (from the verified target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub len: u64,
    /// Lower-case hexadecimal SHA-256.
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the patch {path} is not a bidiff patch or is corrupt: {reason}")]
    BadPatch { path: PathBuf, reason: String },
    #[error("the patched image would pass the signed length of {limit} bytes; refused")]
    TooLong { limit: u64 },
    #[error("the patched image is {actual} bytes, the signed length is {expected}")]
    LengthMismatch { expected: u64, actual: u64 },
    #[error("the patched image's SHA-256 is {actual}, the signed one is {expected}")]
    HashMismatch { expected: String, actual: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DeltaError + '_ {
    move |source| DeltaError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Apply `patch` to `old`, writing `out` only if the result has the signed
/// length and SHA-256 (written to `OUT.part`, fsynced, renamed). Returns the
/// image's length.
pub fn apply(old: &Path, patch: &Path, out: &Path, signed: &Signed) -> Result<u64, DeltaError> {
    let old_file = std::fs::File::open(old).map_err(io(old))?;
    let patch_file = std::fs::File::open(patch).map_err(io(patch))?;
    let bad = |reason: String| DeltaError::BadPatch {
        path: patch.to_owned(),
        reason,
    };
    // The patch is bidiff's format in an LZ4 frame (fleet-repo's `delta`).
    let patch_stream = lz4_flex::frame::FrameDecoder::new(std::io::BufReader::new(patch_file));
    let mut reader =
        bipatch::Reader::new(patch_stream, old_file).map_err(|e| bad(e.to_string()))?;
    let mut part_name = out.as_os_str().to_owned();
    part_name.push(".part");
    let part = PathBuf::from(part_name);
    let result = (|| {
        let mut file = std::fs::File::create(&part).map_err(io(&part))?;
        let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut len = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // A patch that reads past the old image or ends inside an
                // instruction is corrupt, not an I/O failure of ours.
                Err(e) => return Err(bad(e.to_string())),
            };
            len += n as u64;
            if len > signed.len {
                return Err(DeltaError::TooLong { limit: signed.len });
            }
            hash.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(io(&part))?;
        }
        if len != signed.len {
            return Err(DeltaError::LengthMismatch {
                expected: signed.len,
                actual: len,
            });
        }
        let actual = hex::encode(hash.finish().as_ref());
        if !actual.eq_ignore_ascii_case(&signed.sha256) {
            return Err(DeltaError::HashMismatch {
                expected: signed.sha256.to_ascii_lowercase(),
                actual,
            });
        }
        file.sync_all().map_err(io(&part))?;
        Ok(len)
    })();
    let len = match result {
        Ok(len) => len,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    std::fs::rename(&part, out).map_err(io(out))?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::durable::sync_dir(dir).map_err(io(dir))?;
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(b: &[u8]) -> String {
        hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b).as_ref())
    }

    /// An old and a new "image": mostly the same bytes, some changed,
    /// some added, as two firmware versions are.
    fn images() -> (Vec<u8>, Vec<u8>) {
        let old: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut new = old.clone();
        for i in (1_000..new.len()).step_by(9_973) {
            new[i] ^= 0x5a;
        }
        new.splice(50_000..50_000, b"version=1.5.0\n".iter().copied());
        new.extend_from_slice(&[7u8; 3_000]);
        (old, new)
    }

    struct Case {
        _dir: tempfile::TempDir,
        old: PathBuf,
        patch: PathBuf,
        out: PathBuf,
        signed: Signed,
        patch_bytes: Vec<u8>,
        new: Vec<u8>,
    }

    fn case() -> Case {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = images();
        let mut raw = Vec::new();
        bidiff::simple_diff(&old, &new, &mut raw).unwrap();
        let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
        std::io::Write::write_all(&mut encoder, &raw).unwrap();
        let patch = encoder.finish().unwrap();
        let paths = (
            dir.path().join("old.tar"),
            dir.path().join("p.bidiff"),
            dir.path().join("new.tar"),
        );
        std::fs::write(&paths.0, &old).unwrap();
        std::fs::write(&paths.1, &patch).unwrap();
        Case {
            old: paths.0,
            patch: paths.1,
            out: paths.2,
            signed: Signed {
                len: new.len() as u64,
                sha256: sha256(&new),
            },
            patch_bytes: patch,
            new,
            _dir: dir,
        }
    }

    #[test]
    fn a_patch_rebuilds_the_signed_image() {
        let c = case();
        let len = apply(&c.old, &c.patch, &c.out, &c.signed).unwrap();
        assert_eq!(len, c.new.len() as u64);
        assert_eq!(std::fs::read(&c.out).unwrap(), c.new);
    }

    #[test]
    fn a_corrupted_patch_is_refused_and_leaves_nothing() {
        let c = case();
        let mut bytes = c.patch_bytes.clone();
        // Flip bytes inside the data (past the header): the result differs.
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 16] {
            *b ^= 0xff;
        }
        std::fs::write(&c.patch, &bytes).unwrap();
        let err = apply(&c.old, &c.patch, &c.out, &c.signed).unwrap_err();
        assert!(
            matches!(
                err,
                DeltaError::HashMismatch { .. }
                    | DeltaError::BadPatch { .. }
                    | DeltaError::TooLong { .. }
                    | DeltaError::LengthMismatch { .. }
            ),
            "{err}"
        );
        assert!(!c.out.exists());
        let mut part = c.out.as_os_str().to_owned();
        part.push(".part");
        assert!(!Path::new(&part).exists());
    }

    #[test]
    fn a_patch_for_the_right_length_but_other_content_is_a_hash_mismatch() {
        let c = case();
        let signed = Signed {
            len: c.signed.len,
            sha256: sha256(b"some other image"),
        };
        let err = apply(&c.old, &c.patch, &c.out, &signed).unwrap_err();
        assert!(matches!(err, DeltaError::HashMismatch { .. }), "{err}");
        assert!(!c.out.exists());
    }

    #[test]
    fn output_past_the_signed_length_is_cut_off() {
        let c = case();
        let signed = Signed {
            len: c.signed.len - 1,
            sha256: c.signed.sha256.clone(),
        };
        let err = apply(&c.old, &c.patch, &c.out, &signed).unwrap_err();
        assert!(
            matches!(err, DeltaError::TooLong { limit } if limit == signed.len),
            "{err}"
        );
        assert!(!c.out.exists());
    }

    #[test]
    fn a_file_that_is_no_patch_is_refused() {
        let c = case();
        std::fs::write(&c.patch, b"not a patch at all").unwrap();
        let err = apply(&c.old, &c.patch, &c.out, &c.signed).unwrap_err();
        assert!(matches!(err, DeltaError::BadPatch { .. }), "{err}");
    }
}
