//! The controller's repository: what it accepts from the release team and
//! what it refuses, on real files with real signatures.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::{Duration, SystemTime};

use common::{firmware, payload, Setup};
use fleet_repo::metadata;
use fleet_repo::publish::{target_file_path, Lifetimes};
use fleet_repo::release::{self, InitOptions};
use fleet_repo::{keys, RepoError};
use tough::schema::{Signed, Targets};

#[test]
fn signed_images_are_published_with_snapshot_and_timestamp() {
    let s = Setup::new(&InitOptions::default());
    let repo = s.controller();
    let a = s.image("a.tar", &payload(1, 10_000));
    let b = s.image("b.tar", &payload(2, 20_000));
    let ta = s.sign(&a, "ballot-box-v2", "1.0.0");
    let tb = s.sign(&b, "ballot-box-v2", "1.1.0");
    assert_eq!(tb.targets_version, 3, "init v1, then one bump per image");
    repo.stage_image(&ta.sha256, &a).unwrap();
    repo.stage_image(&tb.sha256, &b).unwrap();

    let published = repo
        .publish_targets(&s.targets_json(), SystemTime::now())
        .unwrap();
    assert_eq!(published.targets_version, 3);
    assert_eq!(published.snapshot_version, 2);
    assert_eq!(published.timestamp_version, 2);
    assert_eq!(
        published.added,
        vec![
            "firmware/ballot-box-v2/1.0.0.tar",
            "firmware/ballot-box-v2/1.1.0.tar"
        ]
    );

    let targets = repo.targets().unwrap();
    assert_eq!(targets.len(), 2);
    assert_eq!(targets[1].custom, firmware("ballot-box-v2", "1.1.0"));
    assert_eq!(targets[1].sha256, tb.sha256);
    assert_eq!(targets[1].len, 20_000);
    let served = s
        .repo_dir
        .join("targets")
        .join(target_file_path(&ta.name, &ta.sha256));
    assert_eq!(std::fs::read(served).unwrap(), payload(1, 10_000));
    assert_eq!(
        repo.image_path(&ta.sha256).unwrap(),
        s.repo_dir.parent().unwrap().join("images").join(&ta.sha256)
    );

    let status = repo.status().unwrap();
    assert_eq!((status.root.version, status.targets.version), (1, 3));
    assert_eq!((status.snapshot.version, status.timestamp.version), (2, 2));
    assert!(status.timestamp.expires_unix_ms < status.snapshot.expires_unix_ms);
}

#[test]
fn targets_signed_with_the_snapshot_key_are_refused() {
    let s = Setup::new(&InitOptions::default());
    let repo = s.controller();
    let img = s.image("evil.tar", &payload(9, 5_000));
    repo.stage_image(
        &metadata::sha256_file(&img, &mut |_, _| {}).unwrap().0,
        &img,
    )
    .unwrap();
    // The controller holds the snapshot key: it builds a targets.json with
    // its own target and signs it with that key.
    let (current, _) = metadata::read::<Targets>(&s.keys.join("targets.json")).unwrap();
    let mut forged = current.signed.clone();
    let (sha, len) = metadata::sha256_file(&img, &mut |_, _| {}).unwrap();
    forged.targets.insert(
        "firmware/ballot-box-v2/9.9.9.tar".try_into().unwrap(),
        release::make_target(&sha, len, &firmware("ballot-box-v2", "9.9.9")).unwrap(),
    );
    forged.version = forged.version.checked_add(1).unwrap();
    let snapshot_key = keys::load(&release::snapshot_key_path(&s.keys)).unwrap();
    let signed = metadata::sign_role(forged, &[snapshot_key.as_ref()]).unwrap();

    let err = repo
        .publish_targets(&metadata::to_bytes(&signed).unwrap(), SystemTime::now())
        .unwrap_err();
    assert!(
        matches!(err, RepoError::BelowThreshold { ref role, have: 0, need: 1 } if role == "targets"),
        "{err}"
    );
    assert!(repo.targets().unwrap().is_empty());
    assert_eq!(
        repo.status().unwrap().timestamp.version,
        1,
        "nothing re-signed"
    );
}

#[test]
fn an_edited_signed_targets_is_refused() {
    let s = Setup::new(&InitOptions::default());
    let repo = s.controller();
    let good = s.image("good.tar", &payload(1, 4_000));
    let evil = s.image("evil.tar", &payload(2, 4_000));
    let t = s.sign(&good, "ballot-box-v2", "1.0.0");
    repo.stage_image(&t.sha256, &good).unwrap();
    let (evil_sha, _) = metadata::sha256_file(&evil, &mut |_, _| {}).unwrap();
    repo.stage_image(&evil_sha, &evil).unwrap();

    // Same signatures, the target's hash swapped for another staged image.
    let mut signed: Signed<Targets> = serde_json::from_slice(&s.targets_json()).unwrap();
    let entry = signed
        .signed
        .targets
        .get_mut(&"firmware/ballot-box-v2/1.0.0.tar".try_into().unwrap())
        .unwrap();
    entry.hashes.sha256 = hex::decode(&evil_sha).unwrap().into();
    let err = repo
        .publish_targets(&metadata::to_bytes(&signed).unwrap(), SystemTime::now())
        .unwrap_err();
    assert!(
        matches!(err, RepoError::BelowThreshold { have: 0, .. }),
        "{err}"
    );

    // The untouched file goes through.
    repo.publish_targets(&s.targets_json(), SystemTime::now())
        .unwrap();
    assert_eq!(repo.targets().unwrap()[0].sha256, t.sha256);
}

#[test]
fn a_target_whose_image_is_not_staged_is_refused() {
    let s = Setup::new(&InitOptions::default());
    let repo = s.controller();
    let img = s.image("a.tar", &payload(1, 3_000));
    let t = s.sign(&img, "ballot-box-v2", "1.0.0");
    let err = repo
        .publish_targets(&s.targets_json(), SystemTime::now())
        .unwrap_err();
    assert!(
        matches!(err, RepoError::ImageMissing { ref name, ref sha256 } if *name == t.name && *sha256 == t.sha256),
        "{err}"
    );
}

#[test]
fn staging_checks_the_hash() {
    let s = Setup::new(&InitOptions::default());
    let repo = s.controller();
    let img = s.image("a.tar", &payload(1, 3_000));
    let wrong = "0".repeat(64);
    let err = repo.stage_image(&wrong, &img).unwrap_err();
    assert!(
        matches!(err, RepoError::HashMismatch { ref expected, .. } if *expected == wrong),
        "{err}"
    );
    assert!(repo.image_path(&wrong).is_none());
    let err = repo.stage_image("../../etc/passwd", &img).unwrap_err();
    assert!(matches!(err, RepoError::Malformed { .. }), "{err}");
}

#[test]
fn an_old_or_replayed_targets_version_is_refused() {
    let s = Setup::new(&InitOptions::default());
    let repo = s.controller();
    let img = s.image("a.tar", &payload(1, 3_000));
    let t = s.sign(&img, "ballot-box-v2", "1.0.0");
    repo.stage_image(&t.sha256, &img).unwrap();
    let v2 = s.targets_json();
    repo.publish_targets(&v2, SystemTime::now()).unwrap();
    let err = repo.publish_targets(&v2, SystemTime::now()).unwrap_err();
    assert!(
        matches!(
            err,
            RepoError::VersionNotNewer {
                current: 2,
                offered: 2,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn expired_targets_are_refused() {
    let s = Setup::new(&InitOptions {
        targets_expires_days: 1,
        ..InitOptions::default()
    });
    let repo = s.controller();
    let img = s.image("a.tar", &payload(1, 3_000));
    let t = s.sign(&img, "ballot-box-v2", "1.0.0");
    repo.stage_image(&t.sha256, &img).unwrap();
    let two_days_on = SystemTime::now() + Duration::from_secs(2 * 86_400);
    let err = repo
        .publish_targets(&s.targets_json(), two_days_on)
        .unwrap_err();
    assert!(
        matches!(err, RepoError::Expired { ref role, .. } if role == "targets"),
        "{err}"
    );
}

#[test]
fn signing_the_same_name_with_other_content_is_refused() {
    let s = Setup::new(&InitOptions::default());
    let a = s.image("a.tar", &payload(1, 3_000));
    let b = s.image("b.tar", &payload(2, 3_000));
    let first = s.sign(&a, "ballot-box-v2", "1.0.0");
    let again = s.sign(&a, "ballot-box-v2", "1.0.0");
    assert!(again.unchanged);
    assert_eq!(again.targets_version, first.targets_version);
    let err = release::sign(
        &s.keys,
        &b,
        &firmware("ballot-box-v2", "1.0.0"),
        SystemTime::now(),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(
        matches!(err, RepoError::NameTaken { ref existing_sha256, .. } if *existing_sha256 == first.sha256),
        "{err}"
    );
}

#[test]
fn signing_reports_hash_progress_up_to_the_image_length() {
    let s = Setup::new(&InitOptions::default());
    let img = s.image("big.tar", &payload(3, 1_000_000));
    let mut seen = Vec::new();
    release::sign(
        &s.keys,
        &img,
        &firmware("ballot-box-v2", "2.0.0"),
        SystemTime::now(),
        &mut |done, total| seen.push((done, total)),
    )
    .unwrap();
    assert!(seen.len() >= 2, "{seen:?}");
    assert_eq!(seen.last(), Some(&(1_000_000, 1_000_000)));
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
}

#[test]
fn init_refuses_keys_that_are_not_roots_snapshot_and_timestamp_keys() {
    let s = Setup::new(&InitOptions::default());
    let err = fleet_repo::publish::Repo::init(
        &s.repo_dir,
        &std::fs::read(s.keys.join("root.json")).unwrap(),
        &s.targets_json(),
        // The targets key where the snapshot key belongs.
        &release::targets_key_path(&s.keys),
        &release::timestamp_key_path(&s.keys),
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(
        matches!(err, RepoError::KeyNotInRoot { ref role, .. } if role == "snapshot"),
        "{err}"
    );
}

#[test]
fn refresh_resigns_the_timestamp_past_half_its_lifetime_and_the_snapshot_past_half_of_its() {
    let s = Setup::new(&InitOptions::default());
    let repo = s.controller().with_lifetimes(Lifetimes::default());
    let now = SystemTime::now();
    assert_eq!(
        repo.refresh(now).unwrap(),
        None,
        "fresh metadata is left alone"
    );

    let p = repo
        .refresh(now + Duration::from_secs(13 * 3600))
        .unwrap()
        .unwrap();
    assert_eq!((p.snapshot_version, p.timestamp_version), (1, 2));

    let p = repo
        .refresh(now + Duration::from_secs(16 * 86_400))
        .unwrap()
        .unwrap();
    assert_eq!((p.snapshot_version, p.timestamp_version), (2, 3));
    let status = repo.status().unwrap();
    assert_eq!(status.snapshot.version, 2);
    assert!(
        status.timestamp.expires_unix_ms
            > metadata::unix_ms(metadata::to_jiff(now).unwrap()) + 16 * 86_400_000
    );
}

#[test]
fn export_writes_the_served_tree() {
    let s = Setup::new(&InitOptions::default());
    let repo = s.controller();
    let img = s.image("a.tar", &payload(1, 50_000));
    let t = s.sign(&img, "ballot-box-v2", "1.0.0");
    repo.stage_image(&t.sha256, &img).unwrap();
    repo.publish_targets(&s.targets_json(), SystemTime::now())
        .unwrap();

    let dest = s.tmp.path().join("usb");
    let mut last = (0, 0);
    let summary = repo.export(&dest, &mut |d, t| last = (d, t)).unwrap();
    assert_eq!(summary.target_files, 1);
    assert_eq!(last.0, last.1);
    assert_eq!(last.0, summary.bytes);
    for f in [
        "1.root.json",
        "root.json",
        "timestamp.json",
        "2.snapshot.json",
        "2.targets.json",
    ] {
        assert!(dest.join("metadata").join(f).is_file(), "{f} missing");
    }
    let copied = dest
        .join("targets")
        .join(target_file_path(&t.name, &t.sha256));
    assert_eq!(std::fs::read(copied).unwrap(), payload(1, 50_000));
}

#[test]
fn key_files_are_private_pem_and_load_back() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("k.pem");
    let info = keys::generate(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(keys::key_id(&path).unwrap(), info.key_id);
    assert!(
        keys::generate(&path).is_err(),
        "an existing key is never overwritten"
    );
}
