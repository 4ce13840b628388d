//! The audit log survives accidents and is honest about what it proves: a
//! lost or damaged head is recovered by an audited reseal, and a head
//! written down off the machine catches a chain rewritten consistently.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use fleet_tests::in_process::InProcessController;
use fleet_tests::{run_bin, within};

async fn set_baselines(ctl: &InProcessController, n: usize) -> Result<(), String> {
    for i in 0..n {
        within(
            20,
            "setting a baseline",
            ctl.client()
                .set_baseline("ballot-box-v2", &format!("2.4.{i}")),
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_or_damaged_head_is_resealed_on_the_record_and_changes_resume() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap().to_owned();
    let ctl = InProcessController::start(data.path(), |_| {})
        .await
        .unwrap();
    set_baselines(&ctl, 2).await.unwrap();
    within(30, "stopping", ctl.stop()).await.unwrap();

    for (damage, said) in [(None, "\"missing\""), (Some("{not json"), "does not parse")] {
        let head = data.path().join("audit.head");
        match damage {
            None => std::fs::remove_file(&head).unwrap(),
            Some(text) => std::fs::write(&head, text).unwrap(),
        }
        // Every change is refused while the head is lost or damaged...
        let ctl = InProcessController::start(data.path(), |_| {})
            .await
            .unwrap();
        let refused = set_baselines(&ctl, 1).await;
        assert!(refused.is_err(), "a change was recorded on a lost head");
        within(30, "stopping", ctl.stop()).await.unwrap();
        // ...until the documented recovery, which is itself recorded.
        let (ok, _, err) = run_bin(
            "fleet-controller",
            &[
                "audit",
                "reseal",
                "--data-dir",
                &dir,
                "--reason",
                "test: head lost",
            ],
        )
        .unwrap();
        assert!(ok, "{err}");
        assert!(err.contains("resealed"), "{err}");
        let ctl = InProcessController::start(data.path(), |_| {})
            .await
            .unwrap();
        set_baselines(&ctl, 1).await.unwrap();
        let v = within(20, "verify", ctl.client().audit_verify())
            .await
            .unwrap();
        assert!(v.intact, "{v:?}");
        let entries = within(
            20,
            "the reseal entry",
            ctl.client().audit(&fleet_api::AuditQuery {
                target: Some("audit".into()),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
        let reseal = entries
            .iter()
            .find(|e| e.action == "audit.reseal" && e.detail.contains(said))
            .unwrap_or_else(|| panic!("no reseal entry saying {said}: {entries:?}"));
        assert!(reseal.detail.contains("test: head lost"), "{reseal:?}");
        within(30, "stopping", ctl.stop()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_anchor_written_down_earlier_catches_a_rewritten_chain() {
    let data = tempfile::tempdir().unwrap();
    let ctl = InProcessController::start(data.path(), |_| {})
        .await
        .unwrap();
    set_baselines(&ctl, 2).await.unwrap();
    let ca = ctl.ca();
    let fleetctl = |extra: &[&str]| {
        let mut args = vec![
            "--controller",
            &ctl.api,
            "--token",
            &ctl.token,
            "--ca",
            ca.to_str().unwrap(),
            "audit",
            "verify",
        ];
        args.extend_from_slice(extra);
        run_bin("fleetctl", &args).unwrap()
    };
    let (ok, out, err) = fleetctl(&[]);
    assert!(ok, "{err}");
    let anchor = out
        .lines()
        .find_map(|l| l.rsplit_once(": ").filter(|_| l.starts_with("head")))
        .map(|(_, a)| a.trim().to_owned())
        .unwrap_or_else(|| panic!("no head printed: {out}"));
    let (ok, _, err) = fleetctl(&["--anchor", &anchor]);
    assert!(ok, "the true anchor was refused: {err}");
    let (seq, _) = anchor.split_once(':').unwrap();
    let forged = format!("{seq}:{}", "ab".repeat(32));
    let (ok, _, err) = fleetctl(&["--anchor", &forged]);
    assert!(!ok, "a wrong anchor passed");
    assert!(err.contains("was rewritten"), "{err}");
    within(30, "stopping", ctl.stop()).await.unwrap();
}
