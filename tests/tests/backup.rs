//! `fleet-controller backup`, the real binary on real SQLite files: a copy
//! that restores and verifies, pruning to `--keep`, and a refusal (with no
//! file left behind) when the audit head is not in the database's chain.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;

use fleet_tests::run_bin;

fn backup(data: &Path, out: &Path, keep: &str) -> (bool, serde_json::Value, String) {
    let (ok, stdout, stderr) = run_bin(
        "fleet-controller",
        &[
            "backup",
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--keep",
            keep,
        ],
    )
    .unwrap();
    let v = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (ok, v, stderr)
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_backup_restores_verified_keeps_the_newest_and_refuses_a_foreign_head() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fleet_tests::init_data_dir(&data).unwrap();
    // More audit entries: two issued certificates.
    for n in ["north", "south"] {
        fleet_tests::issue_cert(&data, &dir.path().join("certs"), "bridge", n).unwrap();
    }
    let out = dir.path().join("backups");
    let (ok, first, err) = backup(&data, &out, "2");
    assert!(ok, "{err}");
    assert_eq!(first["audit_entries"], 4, "{first}"); // init, token, 2 certs
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // Restored into a new data directory (the PKI alongside), it is a
    // whole controller database whose chain and head verify: a backup of
    // it succeeds, and counts the same entries.
    let restored = dir.path().join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    std::fs::copy(first["db"].as_str().unwrap(), restored.join("fleet.db")).unwrap();
    std::fs::copy(first["head"].as_str().unwrap(), restored.join("audit.head")).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(data.join("pki"))
        .arg(&restored)
        .status()
        .unwrap();
    assert!(status.success());
    let (ok, again, err) = backup(&restored, &dir.path().join("b2"), "2");
    assert!(ok, "{err}");
    assert_eq!(again["audit_entries"], 4, "{again}");

    // --keep 2: the third backup prunes the first (names carry the second).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (ok, _, err) = backup(&data, &out, "2");
    assert!(ok, "{err}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (ok, third, err) = backup(&data, &out, "2");
    assert!(ok, "{err}");
    assert_eq!(third["pruned"][0], first["db"], "{third}");
    assert_eq!(files(&out).len(), 4, "{:?}", files(&out)); // 2 × (db, head)

    // A head that is not in the chain (tampering or a damaged file): no
    // backup, and nothing half-written left in OUT.
    let before = files(&out);
    std::fs::write(
        data.join("audit.head"),
        r#"{"seq":3,"hash":"0000000000000000000000000000000000000000000000000000000000000000"}"#,
    )
    .unwrap();
    let (ok, _, err) = backup(&data, &out, "2");
    assert!(!ok);
    assert!(err.contains("is not in the database's chain"), "{err}");
    assert_eq!(files(&out), before);
}
