//! Retirement with an external broker: the controller tells it the new CRL
//! through `broker.crl_hook`, or refuses to retire when it cannot.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use fleet_api::types::{AuditQuery, Lifecycle};
use fleet_controller::config::BrokerKind;
use fleet_tests::builders::{import_registry, register, registration};
use fleet_tests::in_process::InProcessController;
use fleet_tests::within;

/// A hook script that records its arguments in `record` and exits `code`.
fn hook(dir: &std::path::Path, name: &str, code: i32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let record = dir.join(format!("{name}.args"));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\nexit {code}\n",
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

async fn external(
    data: &std::path::Path,
    crl_hook: Option<&std::path::Path>,
) -> InProcessController {
    // Nothing answers MQTT there: these tests are about the refusal and the
    // hook, which come before any broker is needed.
    let port = fleet_tests::free_port();
    let hook = crl_hook.map(|p| p.display().to_string());
    let ctl = InProcessController::start(data, |cfg| {
        cfg.broker.mode = BrokerKind::External;
        cfg.broker.host = "127.0.0.1".into();
        cfg.broker.port = port;
        if let Some(h) = hook {
            cfg.broker.crl_hook = h;
        }
    })
    .await
    .unwrap();
    import_registry(
        &ctl.client(),
        "province,county,station_id\nIR-23,IR-23-TEH,ST-1\n",
    )
    .await;
    register(
        &ctl.client(),
        vec![registration(
            "BB-X",
            "IR-23",
            Some("IR-23-TEH"),
            "registered",
        )],
    )
    .await;
    ctl
}

async fn retire_refused(ctl: &InProcessController) -> (u16, String) {
    let api = ctl.client();
    let err = within(
        20,
        "retiring BB-X",
        api.move_device("BB-X", Lifecycle::Retired),
    )
    .await
    .expect_err("retirement was accepted");
    let d = within(20, "BB-X", api.device("BB-X")).await.unwrap();
    assert_eq!(d.device.lifecycle, Lifecycle::Registered, "{d:?}");
    let audit = within(
        20,
        "the audit",
        api.audit(&AuditQuery {
            target: Some("BB-X".into()),
            ..AuditQuery::default()
        }),
    )
    .await
    .unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert!(
        actions.contains(&"device.retire") && actions.contains(&"device.retire.failed"),
        "{actions:?}"
    );
    (err.status().unwrap_or(0), err.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_external_broker_without_a_crl_hook_refuses_retirement_and_changes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let ctl = external(data.path(), None).await;
    let (status, message) = retire_refused(&ctl).await;
    assert_eq!(status, 409, "{message}");
    assert!(message.contains("crl_hook"), "{message}");
    within(30, "stopping", ctl.stop()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_external_broker_retires_only_when_its_crl_hook_succeeds() {
    let hooks = tempfile::tempdir().unwrap();
    let failing = hook(hooks.path(), "fails.sh", 1);
    let data = tempfile::tempdir().unwrap();
    let ctl = external(data.path(), Some(&failing)).await;
    let (status, message) = retire_refused(&ctl).await;
    assert_eq!(status, 503, "{message}");
    let args = std::fs::read_to_string(hooks.path().join("fails.sh.args")).unwrap();
    assert!(args.contains("pki/ca.crl"), "{args}");
    within(30, "stopping", ctl.stop()).await.unwrap();

    let working = hook(hooks.path(), "works.sh", 0);
    let ctl = external(data.path(), Some(&working)).await;
    let moved = within(
        20,
        "retiring BB-X",
        ctl.client().move_device("BB-X", Lifecycle::Retired),
    )
    .await
    .unwrap();
    assert_eq!(moved.lifecycle, Lifecycle::Retired);
    let args = std::fs::read_to_string(hooks.path().join("works.sh.args")).unwrap();
    let crl = data.path().join("pki/ca.crl");
    assert!(args.contains(&*crl.display().to_string()), "{args}");
    within(30, "stopping", ctl.stop()).await.unwrap();
}
