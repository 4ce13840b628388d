//! Permissions are checked and fixed at every start, not only when a file
//! is created.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use fleet_tests::in_process::InProcessController;
use fleet_tests::within;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn a_careless_chmod_is_undone_at_the_next_start() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    let ctl = InProcessController::start(dir, |_| {}).await.unwrap();
    within(
        20,
        "a change",
        ctl.client().set_baseline("ballot-box-v2", "2.4.0"),
    )
    .await
    .unwrap();
    within(30, "stopping", ctl.stop()).await.unwrap();

    let private_files = [
        "fleet.db",
        "audit.head",
        "admin.token",
        "pki/ca.key",
        "pki/broker.key",
    ];
    for d in ["", "pki", "mosquitto", "mosquitto/state"] {
        std::fs::set_permissions(dir.join(d), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    for f in private_files {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    let ctl = InProcessController::start(dir, |_| {}).await.unwrap();
    // Run by root, the managed Mosquitto drops to its own user, which is let
    // through the data directory and its own by group, without listing them
    // (docs/decisions/0014-mosquitto-runs-as-its-own-user.md).
    let passable = if fleet_controller::broker::account::running_as_root() {
        0o710
    } else {
        0o700
    };
    for (d, want) in [
        ("", passable),
        ("pki", 0o700),
        ("mosquitto", 0o710),
        ("mosquitto/state", 0o700),
    ] {
        assert_eq!(mode(&dir.join(d)), want, "{d:?}");
    }
    for f in private_files {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    within(30, "stopping", ctl.stop()).await.unwrap();
}
