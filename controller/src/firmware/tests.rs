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
fn a_delta_is_made_once_between_two_stored_images_and_applies() {
    let (dir, _keys, fw) = set_up();
    let repo = fw.repo().unwrap();
    let old: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let mut new = old.clone();
    new[1000..1100].fill(7);
    new.extend_from_slice(b"version 2.5.0\n");
    let mut shas = vec![];
    for (name, bytes) in [("old", &old), ("new", &new)] {
        let f = dir.path().join(name);
        std::fs::write(&f, bytes).unwrap();
        let sha = fleet_repo::metadata::sha256_hex(bytes);
        repo.stage_image(&sha, &f).unwrap();
        shas.push(sha);
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
    // An unknown image is not guessed at.
    let unknown = "f".repeat(64);
    assert!(matches!(
        delta(&fw, &shas[0], &unknown),
        Err(FirmwareError::UnknownImage(s)) if s == unknown
    ));
    assert!(matches!(
        delta(&fw, "../x", &shas[1]),
        Err(FirmwareError::BadSha256(_))
    ));
}

#[test]
fn nothing_is_served_before_firmware_init() {
    let dir = tempfile::tempdir().unwrap();
    let fw = Firmware::new(dir.path(), 1);
    assert!(matches!(fw.repo(), Err(FirmwareError::NotSetUp)));
    assert!(fw.refresh(SystemTime::now()).unwrap().is_none());
}
