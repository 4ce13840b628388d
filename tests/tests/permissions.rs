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
    for d in ["", "pki", "mosquitto"] {
        std::fs::set_permissions(dir.join(d), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    for f in private_files {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    let ctl = InProcessController::start(dir, |_| {}).await.unwrap();
    for d in ["", "pki", "mosquitto"] {
        assert_eq!(mode(&dir.join(d)), 0o700, "{d:?}");
    }
    for f in private_files {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    within(30, "stopping", ctl.stop()).await.unwrap();
}
