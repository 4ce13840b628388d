//! firmware-images/build-test-image, run for real: a tarball holding VERSION
//! and a payload, the same bytes for the same version, and versions that
//! differ in a few KiB only (a bidiff patch between them applies; note the
//! raw patch is as long as the image: its bytes are mostly zero runs, which
//! only a compression layer would remove).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-images/build-test-image")
}

fn build(version: &str, out: &Path, size_kb: Option<u32>) -> std::process::Output {
    let mut cmd = Command::new(script());
    cmd.arg(version).arg(out);
    if let Some(kb) = size_kb {
        cmd.arg(kb.to_string());
    }
    cmd.output().unwrap()
}

fn built(version: &str, out: &Path, size_kb: Option<u32>) -> Vec<u8> {
    let o = build(version, out, size_kb);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(out).unwrap()
}

fn member(tar: &Path, name: &str) -> Vec<u8> {
    let o = Command::new("tar")
        .arg("-xOf")
        .arg(tar)
        .arg(name)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

#[test]
fn the_image_holds_its_version_and_a_payload_of_the_asked_size() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fw.tar");
    built("1.4.0-rc.1", &out, Some(32));
    assert_eq!(member(&out, "VERSION"), b"1.4.0-rc.1\n");
    assert_eq!(member(&out, "payload/base.bin").len(), 32 * 1024);
    assert_eq!(member(&out, "payload/build-info"), b"version=1.4.0-rc.1\n");
}

#[test]
fn the_same_version_gives_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let a = built("2.0.0", &tmp.path().join("a.tar"), None);
    let b = built("2.0.0", &tmp.path().join("b.tar"), None);
    let c = built("2.0.1", &tmp.path().join("c.tar"), None);
    assert!(
        a.len() > 256 * 1024,
        "default size 256 KiB, got {}",
        a.len()
    );
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn versions_differ_in_a_few_kib_and_a_delta_between_them_applies() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, new, patch, out) = (
        tmp.path().join("old.tar"),
        tmp.path().join("new.tar"),
        tmp.path().join("patch"),
        tmp.path().join("out.tar"),
    );
    let a = built("1.0.0", &old, Some(512));
    let b = built("1.1.0", &new, Some(512));
    assert_eq!(a.len(), b.len());
    let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert!(
        differing > 0 && differing <= 8 * 1024,
        "{differing} bytes differ"
    );
    let patch_len = fleet_repo::delta::make(&old, &new, &patch).unwrap();
    fleet_repo::delta::apply(&old, &patch, &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), b);
    eprintln!("512 KiB image, 1.0.0 -> 1.1.0: {differing} bytes differ, patch {patch_len} bytes");
}

#[test]
fn a_bad_version_or_size_is_refused_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.tar");
    for (version, size) in [("1.0", None), ("v1.0.0", None), ("1.0.0", Some(0))] {
        let o = build(version, &out, size);
        assert_eq!(o.status.code(), Some(2), "{version} {size:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("build-test-image:"));
        assert!(!out.exists());
    }
}
