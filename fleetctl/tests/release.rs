//! `fleetctl release …` run as the real binary: the key set, signing an
//! image, rotating a key, and the errors an operator sees.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn fleetctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        // Nothing here may need a controller: point at one that is not there.
        .args(["--controller", "https://127.0.0.1:9"])
        .args(args)
        .output()
        .unwrap()
}

fn ok_json(args: &[&str]) -> Value {
    let out = fleetctl(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = fleetctl(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn keys_init_writes_the_key_set_and_refuses_to_run_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("release-keys");
    let args = [
        "release",
        "keys",
        "init",
        "--keys",
        s(&keys),
        "--root-keys",
        "3",
        "--root-threshold",
        "2",
        "--output",
        "json",
    ];
    let json = ok_json(&args);
    assert_eq!(json["root_key_ids"].as_array().unwrap().len(), 3);
    assert_eq!(json["root_threshold"], 2);
    for f in [
        "root-1.pem",
        "root-3.pem",
        "targets.pem",
        "root.json",
        "1.root.json",
        "targets.json",
        "controller/snapshot.pem",
        "controller/timestamp.pem",
    ] {
        assert!(keys.join(f).is_file(), "{f}");
    }
    let err = fails(&args);
    assert!(err.contains("already holds a release key set"), "{err}");

    let err = fails(&[
        "release",
        "keys",
        "init",
        "--keys",
        s(&tmp.path().join("other")),
        "--root-keys",
        "1",
        "--root-threshold",
        "2",
    ]);
    assert!(err.contains("threshold 2 of 1 keys"), "{err}");
}

#[test]
fn sign_adds_an_image_and_refuses_other_content_under_a_signed_version() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("k");
    ok_json(&[
        "release",
        "keys",
        "init",
        "--keys",
        s(&keys),
        "--output",
        "json",
    ]);
    let image = tmp.path().join("fw.tar");
    std::fs::write(&image, b"firmware 1.0.0 payload").unwrap();

    let json = ok_json(&[
        "release",
        "sign",
        s(&image),
        "--model",
        "ballot-box-v2",
        "--version",
        "1.0.0",
        "--keys",
        s(&keys),
        "--output",
        "json",
    ]);
    assert_eq!(json["name"], "firmware/ballot-box-v2/1.0.0.tar");
    assert_eq!(
        json["sha256"],
        fleet_repo::metadata::sha256_hex(b"firmware 1.0.0 payload")
    );
    assert_eq!(json["targets_version"], 2);
    assert_eq!(json["custom"]["artifact"], "firmware");
    let targets = std::fs::read_to_string(keys.join("targets.json")).unwrap();
    assert!(targets.contains("firmware/ballot-box-v2/1.0.0.tar"));

    std::fs::write(&image, b"something else").unwrap();
    let err = fails(&[
        "release",
        "sign",
        s(&image),
        "--model",
        "ballot-box-v2",
        "--version",
        "1.0.0",
        "--keys",
        s(&keys),
    ]);
    assert!(err.contains("already signed with other content"), "{err}");

    let agent = ok_json(&[
        "release",
        "sign",
        s(&image),
        "--agent",
        "--version",
        "0.2.0",
        "--keys",
        s(&keys),
        "--output",
        "json",
    ]);
    let platform = fleet_protocol::firmware::agent_platform();
    assert_eq!(agent["name"], format!("agent/{platform}/0.2.0"));
    assert_eq!(agent["targets_version"], 3);

    let err = fails(&[
        "release",
        "sign",
        s(&image),
        "--version",
        "1.0.0",
        "--keys",
        s(&keys),
    ]);
    assert!(err.contains("--model is required"), "{err}");
}

#[test]
fn sign_without_a_key_set_says_to_run_keys_init() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("fw.tar");
    std::fs::write(&image, b"x").unwrap();
    let err = fails(&[
        "release",
        "sign",
        s(&image),
        "--model",
        "m",
        "--version",
        "1.0.0",
        "--keys",
        s(&tmp.path().join("none")),
    ]);
    assert!(err.contains("fleetctl release keys init"), "{err}");
}

#[test]
fn rotate_writes_root_2_and_needs_the_root_threshold() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("k");
    ok_json(&[
        "release",
        "keys",
        "init",
        "--keys",
        s(&keys),
        "--root-keys",
        "2",
        "--root-threshold",
        "2",
        "--output",
        "json",
    ]);
    let one = keys.join("root-1.pem");
    let err = fails(&[
        "release",
        "keys",
        "rotate",
        "--keys",
        s(&keys),
        "--role",
        "timestamp",
        "--root-key",
        s(&one),
    ]);
    assert!(
        err.contains("1 valid signature(s) from root keys, 2 required"),
        "{err}"
    );

    let json = ok_json(&[
        "release",
        "keys",
        "rotate",
        "--keys",
        s(&keys),
        "--role",
        "targets",
        "--output",
        "json",
    ]);
    assert_eq!(json["role"], "targets");
    assert_eq!(json["root_version"], 2);
    assert_eq!(json["targets_version"], 2);
    assert!(keys.join("2.root.json").is_file());
    assert_ne!(json["old_key_ids"], json["new_key_ids"]);

    let err = fails(&[
        "release",
        "keys",
        "rotate",
        "--keys",
        s(&keys),
        "--role",
        "mirror",
    ]);
    assert!(err.contains("unknown role"), "{err}");
}
