//! The repository fleet-repo writes is valid TUF: tough's own client
//! (RepositoryLoader over file://, consistent snapshots) loads it, follows
//! root rotations from an old root, and refuses a root below threshold.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use common::{payload, Setup};
use fleet_repo::metadata;
use fleet_repo::publish::Repo;
use fleet_repo::release::{self, InitOptions, Role};
use fleet_repo::{keys, RepoError};
use tough::schema::Root;
use tough::{IntoVec, RepositoryLoader, TargetName};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { tokio::time::timeout(std::time::Duration::from_secs(30), f).await })
        .expect("tough finished within 30 s")
}

fn dir_url(p: &Path) -> url::Url {
    url::Url::from_directory_path(p).unwrap()
}

/// Loads `repo_dir` with tough, trusting `root`, and reads `target`.
fn load_target(
    repo_dir: &Path,
    root: &Path,
    datastore: &Path,
    target: &str,
) -> Result<Vec<u8>, String> {
    let root_bytes = std::fs::read(root).unwrap();
    std::fs::create_dir_all(datastore).unwrap();
    block_on(async {
        let repo = RepositoryLoader::new(
            &root_bytes,
            dir_url(&repo_dir.join("metadata")),
            dir_url(&repo_dir.join("targets")),
        )
        .datastore(datastore)
        .load()
        .await
        .map_err(|e| format!("load: {e}"))?;
        let stream = repo
            .read_target(&TargetName::new(target).unwrap())
            .await
            .map_err(|e| format!("read_target: {e}"))?
            .ok_or_else(|| format!("{target} not listed"))?;
        stream.into_vec().await.map_err(|e| format!("read: {e}"))
    })
}

/// [`load_target`] by a client that trusts root 1, with its datastore at
/// `ds` in the set-up's directory.
fn load_from_root_1(s: &Setup, repo_dir: &Path, ds: &str, target: &str) -> Result<Vec<u8>, String> {
    load_target(
        repo_dir,
        &s.keys.join("1.root.json"),
        &s.tmp.path().join(ds),
        target,
    )
}

/// `err` says one signature was given where the root's threshold is two.
fn assert_one_of_two_root_keys(err: &RepoError) {
    assert!(
        matches!(
            err,
            RepoError::BelowThreshold {
                have: 1,
                need: 2,
                ..
            }
        ),
        "{err}"
    );
}

fn publish_all(s: &Setup, repo: &Repo) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, version) in ["1.0.0", "1.1.0"].iter().enumerate() {
        let content = payload(i as u8, 30_000 + i * 1000);
        let img = s.image(&format!("{version}.tar"), &content);
        let t = s.sign(&img, "ballot-box-v2", version);
        repo.stage_image(&t.sha256, &img).unwrap();
        out.push((t.name, content));
    }
    repo.publish_targets(&s.targets_json(), SystemTime::now())
        .unwrap();
    out
}

#[test]
fn tough_loads_our_repository_and_reads_each_target() {
    let s = Setup::new(&InitOptions::default());
    let repo = s.controller();
    let images = publish_all(&s, &repo);
    assert_eq!(images.len(), 2);
    for (name, content) in &images {
        let ds = format!("ds-{}", name.replace('/', "_"));
        let got = load_from_root_1(&s, &s.repo_dir, &ds, name).unwrap();
        assert_eq!(&got, content, "{name}");
    }
}

#[test]
fn tough_loads_the_exported_tree() {
    let s = Setup::new(&InitOptions::default());
    let repo = s.controller();
    let images = publish_all(&s, &repo);
    let usb = s.tmp.path().join("usb");
    repo.export(&usb, &mut |_, _| {}).unwrap();
    let (name, content) = &images[1];
    let got = load_from_root_1(&s, &usb, "ds", name).unwrap();
    assert_eq!(&got, content);
}

/// Rotates `role`, publishes what the rotation produced, and checks a
/// client that trusts only root 1 still loads (walking 1 → N).
fn rotate_and_load(opts: &InitOptions, role: Role, signing: &[&str]) {
    let s = Setup::new(opts);
    let repo = s.controller();
    let images = publish_all(&s, &repo);
    let signing: Vec<PathBuf> = signing.iter().map(|f| s.keys.join(f)).collect();

    // A client that already holds root 1 and the current metadata.
    let (name, content) = &images[0];
    assert_eq!(
        &load_from_root_1(&s, &s.repo_dir, "ds", name).unwrap(),
        content
    );

    let old_key = match role {
        Role::Root => keys::key_id(&release::root_key_path(&s.keys, 1)).unwrap(),
        Role::Targets => keys::key_id(&release::targets_key_path(&s.keys)).unwrap(),
        Role::Snapshot => keys::key_id(&release::snapshot_key_path(&s.keys)).unwrap(),
        Role::Timestamp => keys::key_id(&release::timestamp_key_path(&s.keys)).unwrap(),
    };
    let summary = release::rotate(&s.keys, role, &signing, SystemTime::now()).unwrap();
    assert_eq!(summary.root_version, 2);
    assert!(summary.old_key_ids.contains(&old_key));
    assert!(!summary.new_key_ids.contains(&old_key));
    assert_eq!(summary.targets_version.is_some(), role == Role::Targets);

    // The controller's key paths point into KEYS/controller, which now hold
    // the new snapshot/timestamp keys (the operator's copy step).
    let published = repo
        .publish_root(
            &std::fs::read(&summary.root_path).unwrap(),
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(published.root_version, 2);
    if role == Role::Targets {
        repo.publish_targets(&s.targets_json(), SystemTime::now())
            .unwrap();
    }

    for (name, content) in &images {
        assert_eq!(
            &load_from_root_1(&s, &s.repo_dir, "ds", name).unwrap(),
            content,
            "{role} rotation, cached client, {name}"
        );
        let fresh = format!("fresh-{}", name.replace('/', "_"));
        assert_eq!(
            &load_from_root_1(&s, &s.repo_dir, &fresh, name).unwrap(),
            content,
            "{role} rotation, new client, {name}"
        );
    }
}

#[test]
fn rotating_the_targets_key_keeps_the_repository_loadable_from_root_1() {
    rotate_and_load(&InitOptions::default(), Role::Targets, &[]);
}

#[test]
fn rotating_the_snapshot_key_keeps_the_repository_loadable_from_root_1() {
    rotate_and_load(&InitOptions::default(), Role::Snapshot, &[]);
}

#[test]
fn rotating_the_timestamp_key_keeps_the_repository_loadable_from_root_1() {
    rotate_and_load(&InitOptions::default(), Role::Timestamp, &[]);
}

#[test]
fn rotating_the_root_keys_keeps_the_repository_loadable_from_root_1() {
    rotate_and_load(&InitOptions::default(), Role::Root, &[]);
}

fn two_of_three() -> InitOptions {
    InitOptions {
        root_keys: 3,
        root_threshold: 2,
        ..InitOptions::default()
    }
}

#[test]
fn with_root_threshold_two_a_rotation_signed_by_two_old_keys_loads() {
    rotate_and_load(
        &two_of_three(),
        Role::Timestamp,
        &["root-1.pem", "root-3.pem"],
    );
    rotate_and_load(&two_of_three(), Role::Root, &["root-1.pem", "root-2.pem"]);
}

#[test]
fn with_root_threshold_two_one_old_key_cannot_make_root_2() {
    let s = Setup::new(&two_of_three());
    let repo = s.controller();
    let images = publish_all(&s, &repo);

    let err = release::rotate(
        &s.keys,
        Role::Snapshot,
        &[s.keys.join("root-1.pem")],
        SystemTime::now(),
    )
    .unwrap_err();
    assert_one_of_two_root_keys(&err);
    assert!(!s.keys.join("2.root.json").exists(), "nothing written");

    // Forge root 2 with one root key (a new, valid-looking root).
    let (root1, _) = metadata::read::<Root>(&s.keys.join("1.root.json")).unwrap();
    let mut next = root1.signed.clone();
    next.version = next.version.checked_add(1).unwrap();
    let one = keys::load(&s.keys.join("root-1.pem")).unwrap();
    let forged = metadata::sign_role(next, &[one.as_ref()]).unwrap();
    let forged_bytes = metadata::to_bytes(&forged).unwrap();

    let err = repo
        .publish_root(&forged_bytes, SystemTime::now())
        .unwrap_err();
    assert!(
        matches!(err, RepoError::BelowThreshold { ref role, have: 1, need: 2 } if role == "root"),
        "{err}"
    );
    assert_eq!(repo.status().unwrap().root.version, 1);

    // Put it where tough would find it: tough refuses the whole load.
    let tampered = s.tmp.path().join("tampered");
    repo.export(&tampered, &mut |_, _| {}).unwrap();
    std::fs::write(tampered.join("metadata/2.root.json"), &forged_bytes).unwrap();
    let (name, _) = &images[0];
    let err = load_from_root_1(&s, &tampered, "ds", name).unwrap_err();
    assert!(err.starts_with("load:") && err.contains("root"), "{err}");
    eprintln!("tough refused the forged root: {err}");
}

#[test]
fn renewing_root_and_targets_extends_their_expiry_and_stays_loadable() {
    let s = Setup::new(&two_of_three());
    let repo = s.controller();
    let images = publish_all(&s, &repo);
    let before = repo.status().unwrap();

    let later = SystemTime::now() + std::time::Duration::from_secs(100 * 86_400);
    let signing = [s.keys.join("root-2.pem"), s.keys.join("root-3.pem")];
    let root = release::renew(&s.keys, Role::Root, &signing, later).unwrap();
    assert_eq!(root.version, 2);
    let targets = release::renew(&s.keys, Role::Targets, &[], later).unwrap();
    assert_eq!(targets.version, 4);
    repo.publish_root(&std::fs::read(&root.path).unwrap(), SystemTime::now())
        .unwrap();
    repo.publish_targets(&std::fs::read(&targets.path).unwrap(), SystemTime::now())
        .unwrap();

    let after = repo.status().unwrap();
    assert!(after.root.expires_unix_ms > before.root.expires_unix_ms + 99 * 86_400_000);
    assert!(after.targets.expires_unix_ms > before.targets.expires_unix_ms + 99 * 86_400_000);
    let (name, content) = &images[1];
    let got = load_from_root_1(&s, &s.repo_dir, "ds", name).unwrap();
    assert_eq!(&got, content);

    let err = release::renew(&s.keys, Role::Root, &[s.keys.join("root-1.pem")], later).unwrap_err();
    assert_one_of_two_root_keys(&err);
    let err = release::renew(&s.keys, Role::Timestamp, &[], later).unwrap_err();
    assert!(matches!(err, RepoError::InvalidOptions { .. }), "{err}");
}

#[test]
fn tough_refuses_a_publication_the_controller_signed_alone() {
    let s = Setup::new(&InitOptions::default());
    let repo = s.controller();
    publish_all(&s, &repo);
    let forged = common::controller_forges_a_publication(&s, &payload(66, 10_000));
    let err = load_from_root_1(&s, &s.repo_dir, "ds", &forged).unwrap_err();
    assert!(err.starts_with("load:") && err.contains("targets"), "{err}");
    eprintln!("tough refused the controller's own targets: {err}");
}
