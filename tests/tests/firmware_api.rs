//! The controller's firmware repository end to end: a real
//! `fleet-controller` process, a release key set made by
//! `fleet_repo::release::init` (as `fleetctl release keys init` does),
//! `fleet-controller firmware-init`, and `fleetctl`:
//!
//! - an image and its signed targets go up with `fleetctl firmware upload`,
//!   and `fleetctl firmware list` shows the target;
//! - a tampered targets.json is refused with a clear 422, and so is an
//!   image whose bytes do not match the sha256 it is sent under;
//! - a provincial technician (province-tech token) cannot upload;
//! - a target is served with Range and If-Range over the public TUF route;
//! - `fleetctl firmware export` writes a tree that tough's own
//!   `RepositoryLoader` loads over `file://`, and the target read through
//!   it is the image;
//! - the delta route answers a patch that `fleet_repo::delta::apply` turns
//!   into the new image; an unknown image answers 404;
//! - `fleetctl device update` points a device at a signed target (404 for
//!   a version never signed), and `fleetctl freeze set` puts a window into
//!   its desired state;
//! - every operator action above is in the audit log.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use fleet_api::types::DeviceUpdateRequest;
use fleet_api::Role;
use fleet_protocol::firmware::{target_name, TargetCustom};
use fleet_protocol::{ArtifactKind, Model, Version};
use fleet_repo::release::{self, InitOptions};
use fleet_tests::builders::{create_token, register, registration};
use fleet_tests::update::firmware_init;
use fleet_tests::{within, Controller};
use serde_json::Value;

const MODEL: &str = "ballot-box-v2";
const REGISTRY: &str = "province,county,county_name_en,station_id,station_name\n\
    IR-23,IR-23-TEH,Tehran,ST-TEH-1,School 1\n";

/// A small but real-looking image: 300 KB of varied bytes and its version.
fn image(dir: &Path, version: &str, change_at: usize) -> PathBuf {
    let mut bytes: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    bytes[change_at..change_at + 64].fill(0x5a);
    bytes.extend_from_slice(format!("VERSION={version}\n").as_bytes());
    let path = dir.join(format!("image-{version}.tar"));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn sign(keys: &Path, image: &Path, version: &str) -> release::SignedTarget {
    let custom = TargetCustom {
        artifact: ArtifactKind::Firmware,
        model: Model::parse(MODEL).unwrap(),
        version: Version::parse(version).unwrap(),
    };
    release::sign(keys, image, &custom, SystemTime::now(), &mut |_, _| {}).unwrap()
}

/// `fleetctl firmware upload IMAGE --targets TARGETS EXTRA…`.
fn upload<'a>(image: &'a Path, targets: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "firmware",
        "upload",
        image.to_str().unwrap(),
        "--targets",
        targets.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn sha256(path: &Path) -> String {
    fleet_repo::metadata::sha256_file(path, &mut |_, _| {})
        .unwrap()
        .0
}

/// A reqwest client trusting the fleet CA, for requests the typed client
/// does not make (Range headers).
fn raw_client(ctl: &Controller) -> reqwest::Client {
    fleet_tests::install_crypto();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ctl.ca()).unwrap()).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn images_and_signed_targets_are_published_served_exported_and_refused_when_wrong() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let ctl = Controller::start(data.path(), &[]).unwrap();
    let api = ctl.client();

    // Nothing before firmware-init: 409 with what to do.
    let before = api.firmware().await.unwrap_err();
    assert_eq!(before.status(), Some(409), "{before}");
    assert!(before.to_string().contains("firmware-init"), "{before}");

    // The release team's keys, and the controller's repository from them
    // (firmware-init writes the audit log: the controller is stopped).
    ctl.stop().unwrap();
    let keys = work.path().join("release-keys");
    release::init(&keys, &InitOptions::default(), SystemTime::now()).unwrap();
    firmware_init(data.path(), &keys).unwrap();
    let ctl = Controller::start(data.path(), &[]).unwrap();
    let api = ctl.client();

    // An image and its signed targets, through fleetctl.
    let v1 = image(work.path(), "2.5.0", 1_000);
    let signed = sign(&keys, &v1, "2.5.0");
    let name = target_name(
        ArtifactKind::Firmware,
        &Model::parse(MODEL).unwrap(),
        &Version::parse("2.5.0").unwrap(),
    );
    assert_eq!(signed.name, name);
    let targets_file = release::targets_json_path(&keys);
    let (ok, out, err) = ctl
        .fleetctl(&upload(&v1, &targets_file, &["--output", "json"]))
        .unwrap();
    assert!(ok, "upload: {out}{err}");
    let up = json(&out);
    assert_eq!(up["image"]["sha256"], sha256(&v1));
    assert_eq!(up["image"]["len"], std::fs::metadata(&v1).unwrap().len());
    assert_eq!(up["targets"]["added"], serde_json::json!([name]));

    let (ok, out, err) = ctl
        .fleetctl(&["firmware", "list", "--output", "json"])
        .unwrap();
    assert!(ok, "{err}");
    let listing = json(&out);
    let targets = listing["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 1, "{listing}");
    assert_eq!(targets[0]["name"], name);
    assert_eq!(targets[0]["sha256"], sha256(&v1));
    assert_eq!(targets[0]["model"], MODEL);
    let roles: Vec<&str> = listing["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["root", "targets", "snapshot", "timestamp"]);
    let (ok, table, _) = ctl.fleetctl(&["firmware", "list"]).unwrap();
    assert!(ok && table.contains(&name), "{table}");

    // A second image, signed; its targets.json tampered with after signing.
    let v2 = image(work.path(), "2.6.0", 150_000);
    sign(&keys, &v2, "2.6.0");
    let mut tampered: Value = json(&std::fs::read_to_string(&targets_file).unwrap());
    let name2 = name.replace("2.5.0", "2.6.0");
    tampered["signed"]["targets"][&name2]["custom"]["model"] = "id-laptop".into();
    let tampered_file = work.path().join("tampered-targets.json");
    std::fs::write(&tampered_file, serde_json::to_vec(&tampered).unwrap()).unwrap();
    let (ok, out, err) = ctl.fleetctl(&upload(&v2, &tampered_file, &[])).unwrap();
    assert!(!ok, "a tampered targets.json was accepted: {out}");
    assert!(err.contains("HTTP 422"), "{err}");
    assert!(err.contains("signature"), "says why: {err}");

    // An image sent under a sha256 that is not its own.
    let elsewhere = work.path().join("elsewhere");
    std::fs::write(&elsewhere, b"some other image").unwrap();
    let wrong = api
        .upload_image(&sha256(&elsewhere), &v2, |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(wrong.status(), Some(422), "{wrong}");
    assert!(wrong.to_string().contains("sha256"), "{wrong}");

    // A provincial technician may not upload (fleetctl asks whether the
    // image is stored first, and is refused before sending a byte of it).
    let tech = create_token(&api, Role::ProvinceTech, &["IR-23"], "tech").await;
    let small = v2.clone();
    let (ok, _, err) = ctl
        .fleetctl_as(&tech.token, &upload(&small, &targets_file, &[]))
        .unwrap();
    assert!(!ok && err.contains("HTTP 403"), "{err}");
    let denied = ctl
        .client_as(Some(&tech.token))
        .upload_image(&sha256(&small), &small, |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(denied.status(), Some(403), "{denied}");

    // The untampered targets.json goes up with its image.
    let (ok, out, err) = ctl
        .fleetctl(&upload(&v2, &targets_file, &["--output", "json"]))
        .unwrap();
    assert!(ok, "{out}{err}");
    let again = json(&out);
    assert_eq!(again["targets"]["added"], serde_json::json!([name2]));
    assert_eq!(
        again["image"]["already_stored"], true,
        "sent with the tampered targets already: {again}"
    );

    // A target over the public route, with Range and If-Range.
    let raw = raw_client(&ctl);
    let rel = fleet_repo::publish::target_file_path(&name, &sha256(&v1));
    let url = format!("{}/api/v1/tuf/targets/{rel}", ctl.api);
    let whole = within(20, "the whole target", raw.get(&url).send())
        .await
        .unwrap();
    assert_eq!(whole.status(), 200);
    let etag = whole.headers()["etag"].to_str().unwrap().to_owned();
    let v1_bytes = std::fs::read(&v1).unwrap();
    assert_eq!(whole.bytes().await.unwrap(), v1_bytes);
    let part = within(
        20,
        "a range of the target",
        raw.get(&url)
            .header("range", "bytes=100000-")
            .header("if-range", &etag)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap(), v1_bytes[100_000..]);
    // The TUF specification's path of the same file is served too.
    let spec = fleet_repo::publish::target_file_path_spec(&name, &sha256(&v1));
    let by_spec = within(
        20,
        "the target by the spec's path",
        raw.get(format!("{}/api/v1/tuf/targets/{spec}", ctl.api))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(by_spec.status(), 200);
    assert_eq!(by_spec.bytes().await.unwrap(), v1_bytes);
    let traversal = within(
        20,
        "a path out of the targets directory",
        raw.get(format!("{}/api/v1/tuf/targets/..%2F..%2Ffleet.db", ctl.api))
            .send(),
    )
    .await
    .unwrap();
    assert!(
        traversal.status() == 400 || traversal.status() == 404,
        "{}",
        traversal.status()
    );

    // Export, then load the tree with tough itself.
    let usb = work.path().join("usb");
    let (ok, out, err) = ctl
        .fleetctl(&[
            "firmware",
            "export",
            usb.to_str().unwrap(),
            "--output",
            "json",
        ])
        .unwrap();
    assert!(ok, "export: {out}{err}");
    let exported = json(&out);
    assert_eq!(exported["target_files"], 2, "{exported}");
    let root = std::fs::read(keys.join("1.root.json"))
        .or_else(|_| std::fs::read(release::root_json_path(&keys)))
        .unwrap();
    let file_url = |p: PathBuf| reqwest::Url::from_directory_path(p).unwrap();
    let datastore = work.path().join("tough-datastore");
    std::fs::create_dir(&datastore).unwrap();
    let loaded = within(
        30,
        "tough loading the exported repository",
        tough::RepositoryLoader::new(
            &root,
            file_url(usb.join("metadata")),
            file_url(usb.join("targets")),
        )
        .transport(tough::FilesystemTransport)
        .datastore(&datastore)
        .load(),
    )
    .await
    .unwrap();
    let tname = tough::TargetName::new(name.clone()).unwrap();
    assert!(loaded.targets().signed.targets.contains_key(&tname));
    let stream = within(20, "reading the target", loaded.read_target(&tname))
        .await
        .unwrap()
        .unwrap();
    let read = within(20, "the target's bytes", tough::IntoVec::into_vec(stream))
        .await
        .unwrap();
    assert_eq!(read, v1_bytes, "tough read the image back, checked");

    // A delta from 2.5.0 to 2.6.0, applied, is 2.6.0.
    let patch = work.path().join("patch");
    let patch_len = api
        .tuf_delta_to_file(&sha256(&v1), &sha256(&v2), &patch)
        .await
        .unwrap();
    assert!(patch_len > 0);
    eprintln!(
        "delta 2.5.0 -> 2.6.0: {patch_len} bytes of patch for a {} byte image",
        std::fs::metadata(&v2).unwrap().len()
    );
    let patched = work.path().join("patched");
    fleet_repo::delta::apply(&v1, &patch, &patched).unwrap();
    assert_eq!(
        std::fs::read(&patched).unwrap(),
        std::fs::read(&v2).unwrap()
    );
    let unknown = api
        .tuf_delta_to_file(&sha256(&v1), &"0".repeat(64), &patch)
        .await
        .unwrap_err();
    assert_eq!(unknown.status(), Some(404), "{unknown}");

    // A root key rotated on the workstation: root 2 goes up, and a
    // replayed root 2 is refused.
    let rotated = release::rotate(&keys, release::Role::Root, &[], SystemTime::now()).unwrap();
    assert_eq!(rotated.root_version, 2);
    let root2 = rotated.root_path.to_str().unwrap().to_owned();
    let (ok, out, err) = ctl
        .fleetctl(&["firmware", "root", &root2, "--output", "json"])
        .unwrap();
    assert!(ok, "{out}{err}");
    assert_eq!(json(&out)["root_version"], 2);
    let (ok, _, err) = ctl.fleetctl(&["firmware", "root", &root2]).unwrap();
    assert!(
        !ok && err.contains("HTTP 422") && err.contains("not newer"),
        "{err}"
    );
    let listing = api.firmware().await.unwrap();
    assert_eq!(listing.roles[0].role, "root");
    assert_eq!(listing.roles[0].version, 2);

    // Point a device at a signed target; a version never signed is 404.
    ctl.import_registry(REGISTRY).unwrap();
    register(
        &api,
        vec![registration(
            "BB-23-FW",
            "IR-23",
            Some("IR-23-TEH"),
            "enrolled",
        )],
    )
    .await;
    let (ok, out, err) = ctl
        .fleetctl(&["device", "update", "BB-23-FW", "--version", "2.6.0"])
        .unwrap();
    assert!(ok, "{out}{err}");
    let d = api.device("BB-23-FW").await.unwrap();
    assert_eq!(d.desired.manifest.as_deref(), Some(name2.as_str()));
    assert_eq!(d.desired.firmware.unwrap().to_string(), "2.6.0");
    let never = api
        .update_device(
            "BB-23-FW",
            &DeviceUpdateRequest {
                artifact: "firmware".into(),
                version: "9.9.9".into(),
                platform: None,
                attempt: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(never.status(), Some(404), "{never}");

    // A freeze window goes into the device's desired state.
    let (ok, out, err) = ctl
        .fleetctl(&[
            "freeze",
            "set",
            "2030-06-18T00:00:00Z",
            "2030-06-20T00:00:00Z",
        ])
        .unwrap();
    assert!(ok, "{out}{err}");
    let d = api.device("BB-23-FW").await.unwrap();
    assert_eq!(d.desired.freeze.len(), 1);
    assert_eq!(d.desired.freeze[0].from_ms, 1_907_971_200_000);
    let (ok, out, _) = ctl.fleetctl(&["freeze", "list"]).unwrap();
    assert!(ok && out.contains("2030-06-18T00:00:00Z"), "{out}");
    let (ok, _, err) = ctl.fleetctl(&["freeze", "clear"]).unwrap();
    assert!(ok, "{err}");
    assert!(api
        .device("BB-23-FW")
        .await
        .unwrap()
        .desired
        .freeze
        .is_empty());

    // Every change above is in the audit log.
    let (ok, out, err) = ctl
        .fleetctl(&["audit", "list", "--limit", "100", "--output", "json"])
        .unwrap();
    assert!(ok, "{err}");
    let actions: Vec<String> = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default().to_owned())
        .collect();
    for want in [
        "firmware.init",
        "firmware.image",
        "firmware.targets",
        "firmware.targets.failed",
        "firmware.root",
        "firmware.root.failed",
        "device.update",
        "freeze.set",
    ] {
        assert!(actions.iter().any(|a| a == want), "{want} in {actions:?}");
    }

    ctl.stop().unwrap();
}

/// The controller signs the timestamp anew before it expires: with a
/// timestamp lifetime of 6 s and a check every second, a published
/// timestamp is replaced by a newer version with no operator action.
#[tokio::test(flavor = "multi_thread")]
async fn the_timestamp_is_signed_anew_before_it_expires() {
    use fleet_tests::in_process::InProcessController;
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let ctl = InProcessController::start(data.path(), |cfg| {
        cfg.firmware.timestamp_expires_secs = 6;
        cfg.firmware.refresh_secs = 1;
    })
    .await
    .unwrap();
    let keys = work.path().join("release-keys");
    release::init(&keys, &InitOptions::default(), SystemTime::now()).unwrap();
    let files = fleet_controller::firmware::InitFiles {
        root: release::root_json_path(&keys),
        targets: release::targets_json_path(&keys),
        snapshot_key: release::snapshot_key_path(&keys),
        timestamp_key: release::timestamp_key_path(&keys),
    };
    fleet_controller::firmware::init(data.path(), &files, SystemTime::now()).unwrap();

    // A publication through the running controller signs a timestamp with
    // its configured (short) lifetime.
    let api = ctl.client();
    let v1 = image(work.path(), "2.5.0", 10);
    sign(&keys, &v1, "2.5.0");
    within(
        20,
        "uploading",
        api.upload_image(&sha256(&v1), &v1, |_, _| {}),
    )
    .await
    .unwrap();
    let published = within(
        20,
        "publishing",
        api.publish_targets(std::fs::read(release::targets_json_path(&keys)).unwrap()),
    )
    .await
    .unwrap();
    let timestamp_version = |bytes: Vec<u8>| {
        json(&String::from_utf8(bytes).unwrap())["signed"]["version"]
            .as_u64()
            .unwrap()
    };
    let first = timestamp_version(api.tuf_metadata("timestamp.json").await.unwrap());
    // At least the one just published: a re-signing may already have come
    // between the two requests on a slow machine.
    assert!(
        first >= published.timestamp_version,
        "{first} < {}",
        published.timestamp_version
    );

    let newer = fleet_tests::eventually(
        std::time::Duration::from_secs(30),
        "a timestamp signed anew",
        || async {
            let v = timestamp_version(
                api.tuf_metadata("timestamp.json")
                    .await
                    .map_err(|e| e.to_string())?,
            );
            (v > first).then_some(v).ok_or(format!("still version {v}"))
        },
    )
    .await
    .unwrap();
    assert!(newer > first);
    let status = api.firmware().await.unwrap();
    let ts = status.roles.iter().find(|r| r.role == "timestamp").unwrap();
    assert!(ts.version >= newer, "{} < {newer}", ts.version);
    within(30, "stopping", ctl.stop()).await.unwrap();
}
