//! An independent TUF implementation, python-tuf's client (PyPI `tuf`,
//! installed by scripts/ensure-deps), verifies the repository fleet-repo
//! writes: signatures over canonical JSON, snapshot and timestamp hashes,
//! consistent snapshots, a root rotation, and the TUF specification's
//! target paths.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use common::{payload, Setup};
use fleet_repo::release::{self, InitOptions, Role};

fn python_tuf_reads(
    repo: &Path,
    root: &Path,
    work: &Path,
    target: &str,
) -> Result<Vec<u8>, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python_tuf_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(repo)
        .arg(root)
        .arg(work)
        .arg(target)
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "python-tuf is not installed (scripts/ensure-deps installs it): {stderr}"
    );
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(stderr)
    }
}

#[test]
fn python_tuf_loads_our_repository_across_a_root_rotation() {
    let s = Setup::new(&InitOptions {
        root_keys: 3,
        root_threshold: 2,
        ..InitOptions::default()
    });
    let repo = s.controller();
    let content = payload(5, 40_000);
    let img = s.image("fw.tar", &content);
    let t = s.sign(&img, "ballot-box-v2", "1.2.0");
    repo.stage_image(&t.sha256, &img).unwrap();
    repo.publish_targets(&s.targets_json(), SystemTime::now())
        .unwrap();

    let got = python_tuf_reads(
        &s.repo_dir,
        &s.keys.join("1.root.json"),
        &s.tmp.path().join("py1"),
        &t.name,
    )
    .unwrap();
    assert_eq!(got, content);

    let rotated = release::rotate(&s.keys, Role::Snapshot, &[], SystemTime::now()).unwrap();
    repo.publish_root(
        &std::fs::read(&rotated.root_path).unwrap(),
        SystemTime::now(),
    )
    .unwrap();
    let got = python_tuf_reads(
        &s.repo_dir,
        &s.keys.join("1.root.json"),
        &s.tmp.path().join("py2"),
        &t.name,
    )
    .unwrap();
    assert_eq!(got, content);
}

#[test]
fn python_tuf_refuses_a_publication_the_controller_signed_alone() {
    let s = Setup::new(&InitOptions::default());
    let repo = s.controller();
    let content = payload(6, 10_000);
    let img = s.image("fw.tar", &content);
    let t = s.sign(&img, "ballot-box-v2", "1.2.0");
    repo.stage_image(&t.sha256, &img).unwrap();
    repo.publish_targets(&s.targets_json(), SystemTime::now())
        .unwrap();

    let forged = common::controller_forges_a_publication(&s, &payload(66, 10_000));
    let err = python_tuf_reads(
        &s.repo_dir,
        &s.keys.join("1.root.json"),
        &s.tmp.path().join("py"),
        &forged,
    )
    .unwrap_err();
    assert!(
        err.contains("UnsignedMetadataError") && err.contains("targets"),
        "{err}"
    );
    eprintln!("python-tuf: {}", err.lines().last().unwrap_or_default());
}
