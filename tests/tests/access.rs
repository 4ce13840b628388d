//! Initialising a data directory, operator tokens, roles and scope, and the
//! audit chain catching edits to the store itself. What the binaries do
//! (`serve`, `init`, fleetctl's messages and printed sheets) runs them as
//! processes; roles, scope and the audit chain over HTTP run the controller
//! in-process with the typed client.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use fleet_api::types::{AuditQuery, ReadinessQuery};
use fleet_api::Role;
use fleet_tests::builders::create_token;
use fleet_tests::{run_bin, within, Controller, InProcessController, Proc};

#[tokio::test(flavor = "multi_thread")]
async fn serve_wants_init_init_runs_once_and_fleetctl_wants_the_ca_and_a_valid_token() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();

    // serve on an uninitialised directory says what to run
    let mut p = Proc::spawn(
        "fleet-controller",
        &["serve", "--data-dir", dir, "--http", "127.0.0.1:0"],
        &[],
    )
    .unwrap();
    let status = p.wait(Duration::from_secs(20)).unwrap();
    assert!(!status.success());
    assert!(
        p.output()
            .contains(&format!("run: fleet-controller init --data-dir {dir}")),
        "{}",
        p.output()
    );

    // init prints the token once, writes it 0600, and refuses a second run
    let (ok, out, err) = run_bin("fleet-controller", &["init", "--data-dir", dir]).unwrap();
    assert!(ok, "{err}");
    let token = out.trim().to_owned();
    assert!(token.starts_with("sdg_"));
    let file = data.path().join("admin.token");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(data.path().join("pki/ca.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let (ok, _, err) = run_bin("fleet-controller", &["init", "--data-dir", dir]).unwrap();
    assert!(!ok && err.contains("already initialised"), "{err}");

    let ctl = Controller::start(data.path(), &[]).unwrap();
    assert_eq!(ctl.token, token);

    // HTTPS only: plain HTTP gets nowhere, and fleetctl wants the fleet CA.
    // (A raw request on purpose: the typed client refuses to try.)
    assert!(ctl.api.starts_with("https://"));
    let plain = format!("{}/healthz", ctl.api.replacen("https://", "http://", 1));
    let answered = within(20, "a plain HTTP request", reqwest::get(&plain)).await;
    assert!(answered.is_err(), "plain HTTP answered");
    let (ok, _, err) = run_bin(
        "fleetctl",
        &["--controller", &ctl.api, "--token", &token, "readiness"],
    )
    .unwrap();
    assert!(!ok && err.contains("pass --ca"), "{err}");

    // no token, a wrong token: clear errors
    let (ok, _, err) = run_bin(
        "fleetctl",
        &[
            "--controller",
            &ctl.api,
            "--ca",
            ctl.ca().to_str().unwrap(),
            "readiness",
        ],
    )
    .unwrap();
    assert!(
        !ok && err.contains("no token") && err.contains("FLEETCTL_TOKEN"),
        "{err}"
    );
    let (ok, _, err) = ctl.fleetctl_as("sdg_wrong", &["readiness"]).unwrap();
    assert!(
        !ok && err.contains("invalid or revoked token") && err.contains("HTTP 401"),
        "{err}"
    );
    ctl.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_province_token_sees_its_province_only_is_never_shown_again_and_dies_when_revoked() {
    let data = tempfile::tempdir().unwrap();
    let ctl = InProcessController::start(data.path(), |_| {})
        .await
        .unwrap();
    let admin = ctl.client();

    // a wrong token: a clear refusal
    let e = within(
        20,
        "readiness with a wrong token",
        ctl.client_as("sdg_wrong")
            .readiness(&ReadinessQuery::default()),
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string().contains("invalid or revoked token") && e.to_string().contains("HTTP 401"),
        "{e}"
    );

    // create a province-scoped token, use it, list, revoke
    let tech = create_token(&admin, Role::ProvinceTech, &["IR-02"], "Sari office").await;
    let as_tech = ctl.client_as(&tech.token);
    let rows = within(
        20,
        "readiness as the technician",
        as_tech.readiness(&ReadinessQuery::default()),
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].province.to_string(), "IR-02");
    let other = ReadinessQuery {
        province: Some("IR-23".to_owned()),
        ..ReadinessQuery::default()
    };
    let e = within(
        20,
        "another province's readiness",
        as_tech.readiness(&other),
    )
    .await
    .unwrap_err();
    assert!(
        e.status() == Some(403) && e.to_string().contains("IR-02"),
        "{e}"
    );
    let e = within(
        20,
        "a baseline set by the technician",
        as_tech.set_baseline("ballot-box-v2", "2.4.0"),
    )
    .await
    .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    let no_province = fleet_api::types::TokenRequest::new(Role::ProvinceTech, vec![], None);
    let e = within(
        20,
        "a province-tech token without a province",
        admin.create_token(&no_province),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("at least one province"), "{e}");

    let list = within(20, "the token list", admin.tokens()).await.unwrap();
    let shown = serde_json::to_string(&list).unwrap();
    assert!(
        !shown.contains(&tech.token[4..]),
        "tokens are never shown again"
    );
    let id = &list.iter().find(|t| t.name == "Sari office").unwrap().id;
    within(20, "revoking the token", admin.revoke_token(id))
        .await
        .unwrap();
    let e = within(
        20,
        "readiness with the revoked token",
        as_tech.readiness(&ReadinessQuery::default()),
    )
    .await
    .unwrap_err();
    assert_eq!(e.status(), Some(401), "revoked at once: {e}");

    // the audit log has all of it, by actor
    let by_admin = AuditQuery {
        actor: Some("first admin".to_owned()),
        ..AuditQuery::default()
    };
    let entries = within(20, "the audit log", admin.audit(&by_admin))
        .await
        .unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["token.revoke", "token.create"]);
    assert_eq!(entries[0].source, "127.0.0.1");
    let verified = within(20, "audit verify", admin.audit_verify())
        .await
        .unwrap();
    assert!(
        verified.intact && verified.entries == Some(4),
        "{verified:?}"
    );
    within(30, "stopping the controller", ctl.stop())
        .await
        .unwrap();
}

/// Tamper with the database behind the controller's back (dropping the
/// append-only triggers first, as an intruder with the file would), start
/// it again on the same directory and ask it to verify the audit chain.
async fn tampered(sql: &[&str], want_entry: u64) {
    let data = tempfile::tempdir().unwrap();
    let ctl = InProcessController::start(data.path(), |_| {})
        .await
        .unwrap();
    let admin = ctl.client();
    for (model, v) in [
        ("ballot-box-v2", "2.4.0"),
        ("id-laptop", "1.8.2"),
        ("ballot-box-v2", "2.4.1"),
        ("id-laptop", "1.8.3"),
    ] {
        within(20, "setting a baseline", admin.set_baseline(model, v))
            .await
            .unwrap();
    }
    let verified = within(20, "audit verify", admin.audit_verify())
        .await
        .unwrap();
    assert!(
        verified.intact && verified.entries == Some(6),
        "{verified:?}"
    );
    within(30, "stopping the controller", ctl.stop())
        .await
        .unwrap();

    let url = format!("sqlite://{}", data.path().join("fleet.db").display());
    let pool = within(10, "opening the store", sqlx::SqlitePool::connect(&url))
        .await
        .unwrap();
    // Editing through the normal path is refused outright.
    let refused = within(
        10,
        "an UPDATE of the audit table",
        sqlx::query("UPDATE audit SET actor = 'x' WHERE seq = 3").execute(&pool),
    )
    .await;
    assert!(refused.unwrap_err().to_string().contains("append-only"));
    for q in [
        "DROP TRIGGER audit_no_update",
        "DROP TRIGGER audit_no_delete",
    ]
    .iter()
    .chain(sql)
    {
        within(10, q, sqlx::query(q).execute(&pool)).await.unwrap();
    }
    within(10, "closing the store", pool.close()).await;

    let ctl = InProcessController::start(data.path(), |_| {})
        .await
        .unwrap();
    let verified = within(20, "audit verify", ctl.client().audit_verify())
        .await
        .unwrap();
    assert!(!verified.intact, "tampering went unnoticed");
    assert_eq!(verified.first_broken, Some(want_entry), "{verified:?}");
    within(30, "stopping the controller", ctl.stop())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_verify_names_an_edited_entry() {
    tampered(
        &["UPDATE audit SET detail = '{\"version\":\"9.9.9\"}' WHERE seq = 4"],
        4,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_verify_names_a_deleted_entry() {
    tampered(&["DELETE FROM audit WHERE seq = 3"], 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_verify_names_reordered_entries() {
    tampered(
        &[
            "UPDATE audit SET seq = 100 WHERE seq = 3",
            "UPDATE audit SET seq = 3 WHERE seq = 5",
            "UPDATE audit SET seq = 5 WHERE seq = 100",
        ],
        3,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_verify_names_a_cut_tail() {
    tampered(&["DELETE FROM audit WHERE seq = 6"], 6).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fleetctl_enrol_batch_prints_sheets_and_refuses_a_bad_row_whole() {
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start(data.path(), &[]).unwrap();
    let work = tempfile::tempdir().unwrap();
    let stations = work.path().join("stations.csv");
    std::fs::write(
        &stations,
        "province,county,station_id\nIR-02,IR-02-SARI,ST-1\n",
    )
    .unwrap();
    assert!(
        ctl.fleetctl(&["registry", "import", stations.to_str().unwrap()])
            .unwrap()
            .0
    );
    let (ok, wh, err) = ctl
        .fleetctl(&[
            "token",
            "create",
            "--role",
            "warehouse",
            "--name",
            "bench 3",
        ])
        .unwrap();
    assert!(ok, "{err}");
    let shipment = work.path().join("shipment.csv");
    std::fs::write(&shipment, "serial,model,province,county\nBB-02-000101,ballot-box-v2,IR-02,IR-02-SARI\nBB-02-000102,ballot-box-v2,IR-02,IR-02-SARI\n").unwrap();
    let (ok, out, err) = ctl
        .fleetctl_as(
            wh.trim(),
            &[
                "enrol",
                "batch",
                shipment.to_str().unwrap(),
                "--output",
                "json",
                "--sheet-dir",
                work.path().to_str().unwrap(),
            ],
        )
        .unwrap();
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = v["shipment"].as_str().unwrap();
    // The printable sheets, one QR code per device, readable by the operator only.
    use std::os::unix::fs::PermissionsExt;
    let html = std::fs::read_to_string(work.path().join(format!("{id}.html"))).unwrap();
    assert_eq!(html.matches("<svg").count(), 2);
    assert!(html.contains(v["devices"][1]["token"].as_str().unwrap()));
    let pdf = work.path().join(format!("{id}.pdf"));
    assert!(std::fs::read(&pdf).unwrap().starts_with(b"%PDF-"));
    assert_eq!(
        std::fs::metadata(&pdf).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(v["devices"].as_array().unwrap().len(), 2);
    assert!(v["devices"][0]["token"]
        .as_str()
        .unwrap()
        .starts_with("enr-"));
    let (ok, status, err) = ctl
        .fleetctl_as(wh.trim(), &["enrol", "status", id])
        .unwrap();
    assert!(ok, "{err}");
    assert_eq!(
        status
            .lines()
            .filter(|l| l.contains("registered") && l.contains("not yet"))
            .count(),
        2,
        "{status}"
    );
    // A bad row: line-numbered, nothing registered.
    std::fs::write(
        &shipment,
        "serial,model,province\nBB-02-000103,ballot-box-v2,IR-02\nBB/104,ballot-box-v2,IR-02\n",
    )
    .unwrap();
    let (ok, _, err) = ctl
        .fleetctl_as(
            wh.trim(),
            &[
                "enrol",
                "batch",
                shipment.to_str().unwrap(),
                "--sheet-dir",
                work.path().to_str().unwrap(),
            ],
        )
        .unwrap();
    assert!(!ok && err.contains("line 3:"), "{err}");
    let (_, d, _) = ctl.fleetctl(&["device", "BB-02-000103"]).unwrap();
    assert!(d.is_empty(), "nothing registered: {d}");
    ctl.stop().unwrap();
}
