use std::time::SystemTime;

use fleet_repo::release::{self, InitOptions};

use super::*;

/// A release key set and a controller data directory with the repository
/// set up from it.
fn set_up() -> (tempfile::TempDir, PathBuf, Firmware) {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("release-keys");
    release::init(&keys, &InitOptions::default(), SystemTime::now()).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let files = InitFiles {
        root: release::root_json_path(&keys),
        targets: release::targets_json_path(&keys),
        snapshot_key: release::snapshot_key_path(&keys),
        timestamp_key: release::timestamp_key_path(&keys),
    };
    let done = init(&data, &files, SystemTime::now()).unwrap();
    assert_eq!((done.root_version, done.targets_version), (1, 1));
    (dir, keys, Firmware::new(&data, 1 << 20))
}

/// Sign `bytes` as firmware `model`/`version`, store it, publish the
/// targets; its sha256.
fn publish(
    keys: &Path,
    repo: &fleet_repo::publish::Repo,
    dir: &Path,
    model: &str,
    version: &str,
    bytes: &[u8],
) -> String {
    use fleet_protocol::firmware::TargetCustom;
    use fleet_protocol::{ArtifactKind, Model, Version};
    let f = dir.join(format!("{model}-{version}"));
    std::fs::write(&f, bytes).unwrap();
    let custom = TargetCustom {
        artifact: ArtifactKind::Firmware,
        model: Model::parse(model).unwrap(),
        version: Version::parse(version).unwrap(),
    };
    release::sign(keys, &f, &custom, SystemTime::now(), &mut |_, _| {}).unwrap();
    let sha = fleet_repo::metadata::sha256_hex(bytes);
    repo.stage_image(&sha, &f).unwrap();
    let targets = std::fs::read(release::targets_json_path(keys)).unwrap();
    repo.publish_targets(&targets, SystemTime::now()).unwrap();
    sha
}

#[test]
fn init_keeps_only_the_controller_keys_private_and_refuses_a_second_time() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, keys, fw) = set_up();
    for key in [fw.paths.snapshot_key(), fw.paths.timestamp_key()] {
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
    let names: Vec<String> = std::fs::read_dir(fw.paths.keys())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "only snapshot and timestamp: {names:?}");
    assert!(fw.paths.metadata().join("timestamp.json").is_file());
    let files = InitFiles {
        root: release::root_json_path(&keys),
        targets: release::targets_json_path(&keys),
        snapshot_key: release::snapshot_key_path(&keys),
        timestamp_key: release::timestamp_key_path(&keys),
    };
    let again = init(&dir.path().join("data"), &files, SystemTime::now());
    assert!(
        matches!(again, Err(FirmwareError::AlreadySetUp(_))),
        "{again:?}"
    );
}

#[test]
fn a_delta_is_made_once_between_two_published_images_and_applies() {
    let (dir, keys, fw) = set_up();
    let repo = fw.repo().unwrap();
    let old: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let mut new = old.clone();
    new[1000..1100].fill(7);
    new.extend_from_slice(b"version 2.5.0\n");
    let mut shas = vec![];
    for (version, bytes) in [("2.4.0", &old), ("2.5.0", &new)] {
        shas.push(publish(
            &keys,
            &repo,
            dir.path(),
            "ballot-box-v2",
            version,
            bytes,
        ));
    }
    let (ddir, name) = delta(&fw, &shas[0], &shas[1]).unwrap();
    let patch = ddir.join(&name);
    let made = std::fs::metadata(&patch).unwrap().modified().unwrap();
    // The second request takes the kept file.
    let (_, again) = delta(&fw, &shas[0], &shas[1]).unwrap();
    assert_eq!(again, name);
    assert_eq!(std::fs::metadata(&patch).unwrap().modified().unwrap(), made);
    let out = dir.path().join("patched");
    fleet_repo::delta::apply(&repo.image_path(&shas[0]).unwrap(), &patch, &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), new);
    // An unknown image is not guessed at; a stored image that is no
    // published target, or a target of another model, gets no delta.
    let unknown = "f".repeat(64);
    assert!(matches!(
        delta(&fw, &shas[0], &unknown),
        Err(FirmwareError::NotATarget(s)) if s == unknown
    ));
    let staged = dir.path().join("staged");
    std::fs::write(&staged, b"staged, never published").unwrap();
    let staged_sha = fleet_repo::metadata::sha256_hex(b"staged, never published");
    repo.stage_image(&staged_sha, &staged).unwrap();
    assert!(matches!(
        delta(&fw, &shas[0], &staged_sha),
        Err(FirmwareError::NotATarget(_))
    ));
    let laptop = publish(
        &keys,
        &repo,
        dir.path(),
        "id-laptop",
        "1.0.0",
        &new[..40_000],
    );
    assert!(matches!(
        delta(&fw, &shas[0], &laptop),
        Err(FirmwareError::DeltaAcross { .. })
    ));
    assert!(matches!(
        delta(&fw, "../x", &shas[1]),
        Err(FirmwareError::BadSha256(_))
    ));
    // Only from an older version to a newer one: an anonymous caller
    // cannot ask for every pair.
    assert!(matches!(
        delta(&fw, &shas[1], &shas[0]),
        Err(FirmwareError::DeltaBackwards { .. })
    ));
    // While a delta is being made, another request is answered at once
    // (the device fetches the full image) instead of waiting on a thread.
    let mut newest = new.clone();
    newest.extend_from_slice(b"version 2.6.0\n");
    let third = publish(&keys, &repo, dir.path(), "ballot-box-v2", "2.6.0", &newest);
    {
        let _busy = fw.making_delta.lock().unwrap();
        assert!(matches!(
            delta(&fw, &shas[1], &third),
            Err(FirmwareError::DeltaBusy)
        ));
    }
    assert!(delta(&fw, &shas[1], &third).is_ok());
}

#[test]
fn nothing_is_served_before_firmware_init() {
    let dir = tempfile::tempdir().unwrap();
    let fw = Firmware::new(dir.path(), 1);
    assert!(matches!(fw.repo(), Err(FirmwareError::NotSetUp)));
    assert!(fw.refresh(SystemTime::now()).unwrap().is_none());
}
