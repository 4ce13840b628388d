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

/// `fleetctl release ARGS… --keys KEYS`.
fn release<'a>(args: &[&'a str], keys: &'a Path) -> Vec<&'a str> {
    let mut all = vec!["release"];
    all.extend_from_slice(args);
    all.extend(["--keys", s(keys)]);
    all
}

/// [`release`] with `--output json`: it must succeed; its JSON.
fn release_json(args: &[&str], keys: &Path) -> Value {
    let mut all = release(args, keys);
    all.extend(["--output", "json"]);
    ok_json(&all)
}

/// [`release`]: it must fail; its stderr.
fn release_fails(args: &[&str], keys: &Path) -> String {
    fails(&release(args, keys))
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

    let other = tmp.path().join("other");
    let one_key = ["keys", "init", "--root-keys", "1", "--root-threshold", "2"];
    let err = release_fails(&one_key, &other);
    assert!(err.contains("threshold 2 of 1 keys"), "{err}");
}

#[test]
fn sign_adds_an_image_and_refuses_other_content_under_a_signed_version() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("k");
    release_json(&["keys", "init"], &keys);
    let image = tmp.path().join("fw.tar");
    std::fs::write(&image, b"firmware 1.0.0 payload").unwrap();
    let firmware_1 = [
        "sign",
        s(&image),
        "--model",
        "ballot-box-v2",
        "--version",
        "1.0.0",
    ];

    let json = release_json(&firmware_1, &keys);
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
    let err = release_fails(&firmware_1, &keys);
    assert!(err.contains("already signed with other content"), "{err}");

    let agent = release_json(&["sign", s(&image), "--agent", "--version", "0.2.0"], &keys);
    let platform = fleet_protocol::firmware::agent_platform();
    assert_eq!(agent["name"], format!("agent/{platform}/0.2.0"));
    assert_eq!(agent["targets_version"], 3);

    let err = release_fails(&["sign", s(&image), "--version", "1.0.0"], &keys);
    assert!(err.contains("--model is required"), "{err}");
}

#[test]
fn sign_without_a_key_set_says_to_run_keys_init() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("fw.tar");
    std::fs::write(&image, b"x").unwrap();
    let sign = ["sign", s(&image), "--model", "m", "--version", "1.0.0"];
    let err = release_fails(&sign, &tmp.path().join("none"));
    assert!(err.contains("fleetctl release keys init"), "{err}");
}

#[test]
fn rotate_writes_root_2_and_needs_the_root_threshold() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("k");
    let two_of_two = ["keys", "init", "--root-keys", "2", "--root-threshold", "2"];
    release_json(&two_of_two, &keys);
    let one = keys.join("root-1.pem");
    let err = release_fails(
        &[
            "keys",
            "rotate",
            "--role",
            "timestamp",
            "--root-key",
            s(&one),
        ],
        &keys,
    );
    assert!(
        err.contains("1 valid signature(s) from root keys, 2 required"),
        "{err}"
    );

    let json = release_json(&["keys", "rotate", "--role", "targets"], &keys);
    assert_eq!(json["role"], "targets");
    assert_eq!(json["root_version"], 2);
    assert_eq!(json["targets_version"], 2);
    assert!(keys.join("2.root.json").is_file());
    assert_ne!(json["old_key_ids"], json["new_key_ids"]);

    let err = release_fails(&["keys", "rotate", "--role", "mirror"], &keys);
    assert!(err.contains("unknown role"), "{err}");
}

#[test]
fn renew_re_signs_targets_and_root_with_a_later_expiry() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("k");
    let init = release_json(&["keys", "init"], &keys);
    let targets = release_json(&["renew", "--role", "targets"], &keys);
    assert_eq!(targets["version"], 2);
    assert!(targets["expires"].as_str().unwrap() >= init["targets_expires"].as_str().unwrap());
    let root = release_json(&["renew", "--role", "root"], &keys);
    assert_eq!(root["version"], 2);
    assert!(keys.join("2.root.json").is_file());
    let err = release_fails(&["renew", "--role", "snapshot"], &keys);
    assert!(err.contains("the controller re-signs snapshot"), "{err}");
}
