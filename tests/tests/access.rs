//! End to end: initialising a data directory, operator tokens through
//! fleetctl, and the audit chain catching edits to the store itself.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use fleet_tests::{run_bin, Controller, Proc};

#[tokio::test(flavor = "multi_thread")]
async fn init_serve_and_tokens() {
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
    assert!(ctl.api.starts_with("https://"));
    let plain = format!("{}/healthz", ctl.api.replacen("https://", "http://", 1));
    assert!(reqwest::get(&plain).await.is_err(), "plain HTTP answered");
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

    // create a province-scoped token, use it, list, revoke
    let (ok, tech, err) = ctl
        .fleetctl(&[
            "token",
            "create",
            "--role",
            "province-tech",
            "--province",
            "IR-02",
            "--name",
            "Sari office",
        ])
        .unwrap();
    assert!(ok, "{err}");
    let tech = tech.trim().to_owned();
    let (ok, rows, err) = ctl
        .fleetctl_as(&tech, &["readiness", "--output", "json"])
        .unwrap();
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&rows).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["province"], "IR-02");
    let (ok, _, err) = ctl
        .fleetctl_as(&tech, &["readiness", "--province", "IR-23"])
        .unwrap();
    assert!(
        !ok && err.contains("HTTP 403") && err.contains("IR-02"),
        "{err}"
    );
    let (ok, _, err) = ctl
        .fleetctl_as(&tech, &["baseline", "set", "ballot-box-v2", "2.4.0"])
        .unwrap();
    assert!(!ok && err.contains("HTTP 403"), "{err}");
    let (ok, _, err) = ctl
        .fleetctl(&["token", "create", "--role", "province-tech"])
        .unwrap();
    assert!(!ok && err.contains("at least one province"), "{err}");

    let (ok, list, _) = ctl
        .fleetctl(&["token", "list", "--output", "json"])
        .unwrap();
    assert!(ok);
    assert!(!list.contains(&tech[4..]), "tokens are never shown again");
    let list: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    let id = list.iter().find(|t| t["name"] == "Sari office").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ok, _, err) = ctl.fleetctl(&["token", "revoke", &id]).unwrap();
    assert!(ok, "{err}");
    let (ok, _, err) = ctl.fleetctl_as(&tech, &["readiness"]).unwrap();
    assert!(!ok && err.contains("HTTP 401"), "revoked at once: {err}");

    // the audit log has all of it, by actor
    let (ok, out, err) = ctl
        .fleetctl(&[
            "audit",
            "list",
            "--actor",
            "first admin",
            "--output",
            "json",
        ])
        .unwrap();
    assert!(ok, "{err}");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["token.revoke", "token.create"]);
    assert_eq!(entries[0]["source"], "127.0.0.1");
    let (ok, out, _) = ctl.fleetctl(&["audit", "verify"]).unwrap();
    assert!(ok && out.contains("intact: 4 entries"), "{out}");
    ctl.stop().unwrap();
}

/// Tamper with the database behind the controller's back (dropping the
/// append-only triggers first, as an intruder with the file would), then
/// ask `fleetctl audit verify`.
async fn tampered(sql: &[&str], want_entry: u64) {
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start(data.path(), &[]).unwrap();
    for (model, v) in [
        ("ballot-box-v2", "2.4.0"),
        ("id-laptop", "1.8.2"),
        ("ballot-box-v2", "2.4.1"),
        ("id-laptop", "1.8.3"),
    ] {
        assert!(ctl.fleetctl(&["baseline", "set", model, v]).unwrap().0);
    }
    let (ok, out, _) = ctl.fleetctl(&["audit", "verify"]).unwrap();
    assert!(ok && out.contains("intact: 6 entries"), "{out}");
    ctl.stop().unwrap();

    let url = format!("sqlite://{}", data.path().join("fleet.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    // Editing through the normal path is refused outright.
    let refused = sqlx::query("UPDATE audit SET actor = 'x' WHERE seq = 3")
        .execute(&pool)
        .await;
    assert!(refused.unwrap_err().to_string().contains("append-only"));
    sqlx::query("DROP TRIGGER audit_no_update")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DROP TRIGGER audit_no_delete")
        .execute(&pool)
        .await
        .unwrap();
    for q in sql {
        sqlx::query(q).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let ctl = Controller::start(data.path(), &[]).unwrap();
    let (ok, _, err) = ctl.fleetctl(&["audit", "verify"]).unwrap();
    assert!(!ok, "tampering went unnoticed");
    assert!(
        err.contains(&format!("broken at entry #{want_entry}")),
        "{err}"
    );
    ctl.stop().unwrap();
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
async fn warehouse_batch_through_fleetctl() {
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
