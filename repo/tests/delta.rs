//! bidiff patches between two images: they rebuild the new image exactly,
//! and a damaged patch fails or gives other bytes (caught by the target's
//! hash), never a panic.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::payload;
use fleet_repo::delta;
use fleet_repo::metadata::sha256_hex;

fn images() -> (Vec<u8>, Vec<u8>) {
    let old = payload(7, 200_000);
    let mut new = old.clone();
    new[1000..1100].copy_from_slice(&[0xAB; 100]);
    new.splice(50_000..50_000, b"inserted in the middle".iter().copied());
    new.extend_from_slice(&payload(3, 5_000));
    (old, new)
}

/// The two images written to a fresh directory and the patch made between
/// them (`delta::make`).
struct Patched {
    tmp: tempfile::TempDir,
    /// The new image's bytes.
    new: Vec<u8>,
    /// The old image's file.
    old: std::path::PathBuf,
    /// The patch's file.
    patch: std::path::PathBuf,
    /// What `delta::make` said it wrote.
    patch_len: u64,
}

fn patched() -> Patched {
    let tmp = tempfile::tempdir().unwrap();
    let (old_bytes, new) = images();
    let (old, new_file, patch) = (
        tmp.path().join("old"),
        tmp.path().join("new"),
        tmp.path().join("patch"),
    );
    std::fs::write(&old, &old_bytes).unwrap();
    std::fs::write(&new_file, &new).unwrap();
    let patch_len = delta::make(&old, &new_file, &patch).unwrap();
    Patched {
        tmp,
        new,
        old,
        patch,
        patch_len,
    }
}

#[test]
fn a_patch_applied_to_the_old_image_gives_the_new_one() {
    let f = patched();
    let out = f.tmp.path().join("out");
    assert_eq!(f.patch_len, std::fs::metadata(&f.patch).unwrap().len());
    let written = delta::apply(&f.old, &f.patch, &out).unwrap();
    assert_eq!(written, f.new.len() as u64);
    assert_eq!(std::fs::read(&out).unwrap(), f.new);
}

#[test]
fn output_beyond_the_bound_is_refused() {
    let f = patched();
    let out = f.tmp.path().join("out");
    let len = f.new.len() as u64;
    let err = delta::apply_bounded(&f.old, &f.patch, &out, len - 1).unwrap_err();
    assert!(err.to_string().contains("exceeds"), "{err}");
    assert!(!out.exists(), "no partial output left as the result");
    assert_eq!(
        delta::apply_bounded(&f.old, &f.patch, &out, len).unwrap(),
        len
    );
}

#[test]
fn a_damaged_patch_gives_an_error_or_other_bytes_never_a_panic() {
    let Patched {
        tmp,
        new,
        old: o,
        patch: p,
        ..
    } = patched();
    let patch = std::fs::read(&p).unwrap();
    let want = sha256_hex(&new);

    let mut damaged: Vec<Vec<u8>> = Vec::new();
    // Every byte of the header and control area, flipped; then a sample of the rest.
    for i in (0..patch.len().min(256)).chain((256..patch.len()).step_by(997)) {
        for mask in [0x01u8, 0x80, 0xFF] {
            let mut d = patch.clone();
            d[i] ^= mask;
            damaged.push(d);
        }
    }
    for cut in [0, 3, 8, 9, patch.len() / 2, patch.len() - 1] {
        damaged.push(patch[..cut].to_vec());
    }
    damaged.push(vec![0xFF; 64]);
    assert!(damaged.len() > 700);

    let (mut errors, mut different, mut identical) = (0, 0, 0);
    for (i, d) in damaged.iter().enumerate() {
        let dp = tmp.path().join("damaged");
        let out = tmp.path().join(format!("out-{i}"));
        std::fs::write(&dp, d).unwrap();
        match delta::apply_bounded(&o, &dp, &out, new.len() as u64) {
            Err(_) => errors += 1,
            Ok(_) => {
                let got = sha256_hex(&std::fs::read(&out).unwrap());
                if got == want {
                    identical += 1;
                } else {
                    different += 1;
                }
                std::fs::remove_file(&out).unwrap();
            }
        }
    }
    // The patch is a checksummed LZ4 frame: damage fails while it is read.
    // A damaged bit the decoder ignores (a flag with no effect) still gives
    // the signed image, which is harmless; a different result would be
    // refused by the device's hash check. No case may panic (this loop ran).
    assert_eq!(errors + different + identical, damaged.len());
    assert!(
        errors * 100 >= damaged.len() * 99,
        "{errors} errors, {different} different, {identical} identical of {}",
        damaged.len()
    );
}
