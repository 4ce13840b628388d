//! `fleetctl` rollouts and freeze windows end to end: the real `fleetctl`
//! binary against a real `fleet-controller` process with a firmware
//! repository (a release key set, `firmware-init`, a signed 2.5.0 uploaded
//! with `fleetctl firmware upload`) and registered devices:
//!
//! - `readiness` opens with the headline (N of M devices on the election
//!   firmware, then why each province's devices are not ready);
//!   `--by model` gives its counts as JSON;
//! - `device cmd --province P ACTION` sends one command per device of the
//!   province; `device logs` of a device that uploaded none says so;
//! - `freeze add` with Jalali dates and a reason; `freeze list` shows the
//!   window in both calendars with its reason, and its Unix ms are Tehran
//!   midnight; a Jalali day that does not exist is refused before anything
//!   is sent;
//! - `rollout create` for a version never signed is refused with the
//!   controller's 404 naming it; bad flags are refused by fleetctl itself;
//! - a draft rollout: created, listed, shown, started by resume, paused
//!   with a reason, resumed, aborted; an action the phase does not allow is
//!   refused with the phase named; `show --watch` of an aborted rollout
//!   prints its line and ends.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::SystemTime;

use fleet_protocol::firmware::TargetCustom;
use fleet_protocol::{ArtifactKind, Model, Version};
use fleet_repo::release::{self, InitOptions};
use fleet_tests::builders::{register, registration};
use fleet_tests::update::{firmware_init, make_image, MODEL};
use fleet_tests::{within, Controller};
use serde_json::Value;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// `fleetctl ARGS`: its stdout, failing the test (with stderr) if it failed.
fn ok(ctl: &Controller, args: &[&str]) -> String {
    let (ok, out, err) = ctl.fleetctl(args).unwrap();
    assert!(ok, "fleetctl {args:?}: {out}{err}");
    out
}

/// `fleetctl ARGS` that must fail: its stderr.
fn refused(ctl: &Controller, args: &[&str]) -> String {
    let (ok, out, err) = ctl.fleetctl(args).unwrap();
    assert!(!ok, "fleetctl {args:?} should fail: {out}");
    err
}

#[tokio::test(flavor = "multi_thread")]
async fn freeze_add_takes_jalali_dates_and_rollouts_are_driven_from_fleetctl() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let keys = work.path().join("release-keys");
    release::init(&keys, &InitOptions::default(), SystemTime::now()).unwrap();
    // firmware-init on a data directory `fleet-controller init` made.
    let ctl = Controller::start(data.path(), &[]).unwrap();
    ctl.stop().unwrap();
    firmware_init(data.path(), &keys).unwrap();
    let ctl = Controller::start(data.path(), &[]).unwrap();

    // A signed 2.5.0, uploaded as the release team would.
    let image = make_image(work.path(), "2.5.0", MODEL);
    let custom = TargetCustom {
        artifact: ArtifactKind::Firmware,
        model: Model::parse(MODEL).unwrap(),
        version: Version::parse("2.5.0").unwrap(),
    };
    let signed = release::sign(&keys, &image, &custom, SystemTime::now(), &mut |_, _| {}).unwrap();
    ok(
        &ctl,
        &[
            "firmware",
            "upload",
            image.to_str().unwrap(),
            "--targets",
            signed.targets_path.to_str().unwrap(),
        ],
    );
    let api = ctl.client();
    register(
        &api,
        vec![
            registration("BB-23-000001", "IR-23", None, "enrolled"),
            registration("BB-23-000002", "IR-23", None, "enrolled"),
            registration("BB-30-000001", "IR-30", None, "enrolled"),
            registration("BB-02-000001", "IR-02", None, "enrolled"),
            registration("BB-02-000002", "IR-02", None, "enrolled"),
        ],
    )
    .await;

    // --- the readiness headline -----------------------------------------
    // No device has reported a firmware yet: none is on the baseline.
    ok(&ctl, &["baseline", "set", MODEL, "2.5.0"]);
    let table = ok(&ctl, &["readiness"]);
    assert!(
        table.starts_with("0 of 5 ballot-box-v2 devices are on the election firmware 2.5.0\n"),
        "{table}"
    );
    assert!(table.contains("\nIR-02: 2 of 2 not ready ("), "{table}");
    let by_model = json(&ok(
        &ctl,
        &["readiness", "--by", "model", "--output", "json"],
    ));
    assert_eq!(
        by_model,
        serde_json::json!([{"model": MODEL, "baseline": "2.5.0", "on_baseline": 0, "total": 5}])
    );

    // --- device cmd to a selector, device logs ----------------------------
    // One command per device of the province (offline: it waits for them).
    let out = ok(
        &ctl,
        &[
            "device",
            "cmd",
            "--province",
            "IR-23",
            "upload-logs",
            "--output",
            "json",
        ],
    );
    let sent = json(&out);
    let devices: Vec<&str> = sent["sent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["device"].as_str().unwrap())
        .collect();
    assert_eq!(devices, ["BB-23-000001", "BB-23-000002"], "{out}");
    assert!(sent["sent"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["action"] == "upload-logs"));
    let err = refused(
        &ctl,
        &["device", "cmd", "--province", "IR-23", "format-disk"],
    );
    assert!(err.contains("\"format-disk\" is not an action"), "{err}");
    let err = refused(&ctl, &["device", "logs", "BB-23-000001"]);
    assert!(err.contains("BB-23-000001 has uploaded no logs"), "{err}");

    // --- freeze add with Jalali dates -----------------------------------
    // 1405-12-01 is 2027-02-20; midnight in Tehran (+03:30) is 20:30 UTC
    // the day before.
    let out = ok(
        &ctl,
        &[
            "freeze",
            "add",
            "--from",
            "1405-12-01",
            "--to",
            "1405-12-03",
            "--reason",
            "election day",
            "--output",
            "json",
        ],
    );
    let added = json(&out);
    assert_eq!(added["windows"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(added["windows"][0]["from_ms"], 1_803_069_000_000u64);
    assert_eq!(added["windows"][0]["to_ms"], 1_803_241_800_000u64);
    let listed = ok(&ctl, &["freeze", "list"]);
    assert!(
        listed.contains("1405-12-01 00:00 (2027-02-20) +03:30")
            && listed.contains("1405-12-03 00:00 (2027-02-22) +03:30"),
        "both calendars: {listed}"
    );
    assert!(listed.contains("election day"), "the reason: {listed}");
    // 1404 is not a leap year: Esfand has 29 days. Nothing is sent.
    let err = refused(
        &ctl,
        &[
            "freeze",
            "add",
            "--from",
            "1404-12-30",
            "--to",
            "1405-01-02",
        ],
    );
    assert!(
        err.contains("no day 30 in Jalali 1404-12, it has 29 days"),
        "{err}"
    );
    let windows = within(20, "the freeze windows", api.freeze())
        .await
        .unwrap();
    assert_eq!(windows.windows.len(), 1, "the bad window was not added");

    // --- rollout create refused -----------------------------------------
    let err = refused(
        &ctl,
        &["rollout", "create", "--model", MODEL, "--version", "9.9.9"],
    );
    assert!(err.contains("HTTP 404") && err.contains("9.9.9"), "{err}");
    let err = refused(
        &ctl,
        &[
            "rollout",
            "create",
            "--model",
            MODEL,
            "--version",
            "2.5.0",
            "--canary",
            "5x",
        ],
    );
    assert!(
        err.contains("expected a number of devices (50) or a percentage (5%)"),
        "{err}"
    );
    let err = refused(
        &ctl,
        &[
            "rollout",
            "create",
            "--model",
            MODEL,
            "--version",
            "2.5.0",
            "--wave",
            "IR-23,Tehran",
        ],
    );
    assert!(err.contains("\"Tehran\" is not a province code"), "{err}");

    // --- a draft: create, list, show, resume, pause, resume, abort ------
    let out = ok(
        &ctl,
        &[
            "rollout",
            "create",
            "--model",
            MODEL,
            "--version",
            "2.5.0",
            "--canary",
            "1",
            "--wave",
            "IR-23,IR-30",
            "--fail-above",
            "2%",
            "--max-downloads-per-province",
            "40",
            "--hours",
            "02:00-06:00",
            "--device-timeout",
            "2h",
            "--draft",
            "--output",
            "json",
        ],
    );
    let created = json(&out);
    assert_eq!(created["phase"], "draft", "{out}");
    assert_eq!(created["policy"]["failure_threshold_pct"], 2.0);
    assert_eq!(created["policy"]["device_timeout_s"], 7200);
    let id = created["id"].as_u64().unwrap().to_string();
    let names: Vec<&str> = created["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    // The canary is taken round-robin over the provinces, IR-02 first: the
    // other IR-02 device is the rest.
    assert_eq!(names, ["canary", "IR-23+IR-30", "rest"], "{out}");

    let list = ok(&ctl, &["rollout", "list", "--output", "csv"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with(&format!("{id},")) && l.contains(",draft,")),
        "{list}"
    );
    let shown = ok(&ctl, &["rollout", "show", &id]);
    assert!(shown.starts_with(&format!("rollout {id} (")), "{shown}");
    assert!(shown.contains("): draft,"), "{shown}");
    assert!(shown.contains("WAVE  NAME"), "{shown}");

    let err = refused(&ctl, &["rollout", "pause", &id]);
    assert!(err.contains("HTTP 409") && err.contains("draft"), "{err}");

    let resumed = json(&ok(&ctl, &["rollout", "resume", &id, "--output", "json"]));
    assert_eq!(resumed["phase"], "running", "resume starts a draft");
    let paused = json(&ok(
        &ctl,
        &[
            "rollout",
            "pause",
            &id,
            "--reason",
            "checking the printers",
            "--output",
            "json",
        ],
    ));
    assert_eq!(paused["phase"], "paused");
    let shown = ok(&ctl, &["rollout", "show", &id]);
    assert!(shown.contains("paused: "), "{shown}");
    assert!(shown.contains("checking the printers"), "{shown}");
    let resumed = json(&ok(&ctl, &["rollout", "resume", &id, "--output", "json"]));
    assert_eq!(resumed["phase"], "running");
    let aborted = json(&ok(&ctl, &["rollout", "abort", &id, "--output", "json"]));
    assert_eq!(aborted["phase"], "aborted");
    let err = refused(&ctl, &["rollout", "start", &id]);
    assert!(err.contains("HTTP 409") && err.contains("aborted"), "{err}");

    // --watch of a finished rollout: one line (no terminal), then the view.
    let out = ok(&ctl, &["rollout", "show", &id, "--watch"]);
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("rollout {id} (")) && first.contains("aborted"),
        "{out}"
    );

    ctl.stop().unwrap();
}
