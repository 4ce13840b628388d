//! `POST /api/v1/devices/{id}/commands`: who may send a command to which
//! device, the audit entry written before it goes out, and what goes out on
//! the device's `cmd` topic (read back from the MQTT client's queue).

use fleet_protocol::{Action, Payload};

use super::*;
use crate::clock::unix_ms;
use crate::domain::lifecycle::Lifecycle;

async fn devices(app: &TestApp) {
    ok(app.csv(REGISTRY).await);
    ok(app
        .json(
            "POST",
            "/api/v1/devices",
            json!({ "devices": [
                dev("BB-TEH", "IR-23", Some("IR-23-TEH")),
                dev("BB-SARI", "IR-02", Some("IR-02-SARI")),
                dev("BB-OLD", "IR-23", Some("IR-23-TEH")),
                { "id": "BB-NEW", "model": "ballot-box-v2", "province": "IR-23", "county": "IR-23-TEH" },
            ]}),
        )
        .await);
    app.fleet.write().unwrap().set_lifecycle(
        &DeviceId::parse("BB-OLD").unwrap(),
        Lifecycle::Retired,
        0,
    );
}

async fn command_as(app: &TestApp, token: &str, device: &str, body: Value) -> (StatusCode, Value) {
    app.call_as(
        Some(token),
        "POST",
        &format!("/api/v1/devices/{device}/commands"),
        Some(Body::from(body.to_string())),
        "application/json",
    )
    .await
}

#[tokio::test]
async fn commands_go_out_in_the_callers_scope_only() {
    let app = test_app().await;
    devices(&app).await;
    let central = app.token_for(Role::CentralOps, &[]).await;
    let tech = app.token_for(Role::ProvinceTech, &["IR-02"]).await;
    let warehouse = app.token_for(Role::Warehouse, &[]).await;
    let viewer = app.token_for(Role::Viewer, &[]).await;
    let reboot = json!({ "action": "reboot" });
    let cases = [
        (&app.token, "BB-TEH", StatusCode::OK),
        (&central, "BB-TEH", StatusCode::OK),
        (&tech, "BB-SARI", StatusCode::OK),
        // Another province's device looks like one that does not exist.
        (&tech, "BB-TEH", StatusCode::NOT_FOUND),
        (&warehouse, "BB-TEH", StatusCode::FORBIDDEN),
        (&viewer, "BB-TEH", StatusCode::FORBIDDEN),
    ];
    for (token, device, want) in cases {
        let (status, body) = command_as(&app, token, device, reboot.clone()).await;
        assert_eq!(status, want, "{device}: {body}");
    }
    let sent = queued(&app);
    let targets: Vec<&str> = sent.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(
        targets,
        [
            "fleet/v1/dev/BB-TEH/cmd",
            "fleet/v1/dev/BB-TEH/cmd",
            "fleet/v1/dev/BB-SARI/cmd"
        ],
        "only what was allowed went out"
    );
    assert!(sent.iter().all(|(_, retained, _)| !retained));
}

#[tokio::test]
async fn a_command_is_audited_then_sent_with_its_id_and_expiry() {
    let app = test_app().await;
    devices(&app).await;
    let before = unix_ms();
    let (status, answer) = command_as(
        &app,
        &app.token,
        "BB-TEH",
        json!({ "action": "renew-certificate", "expires_in_s": 120 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let id = answer["id"].as_str().unwrap();
    assert!(id.starts_with("cmd-") && id.len() == 20, "{id}");
    assert_eq!(answer["action"], "renew-certificate");
    let expires = answer["expires_at_ms"].as_u64().unwrap();
    assert!(expires >= before + 120_000 && expires <= unix_ms() + 120_000);

    let sent = queued(&app);
    assert_eq!(sent.len(), 1);
    let Payload::Command(cmd) = &sent[0].2.payload else {
        panic!("not a command: {:?}", sent[0].2);
    };
    assert_eq!(
        (cmd.id.as_str(), cmd.action, cmd.expires_at_ms),
        (id, Action::RenewCertificate, expires)
    );

    let (_, entries) = app.get("/api/v1/audit?target=BB-TEH&limit=5").await;
    let entry = &entries[0];
    assert_eq!(entry["action"], "device.command", "{entries}");
    let detail: Value = serde_json::from_str(entry["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["id"], id);
    assert_eq!(detail["action"], "renew-certificate");
}

#[tokio::test]
async fn unknown_devices_devices_out_of_service_and_bad_requests_are_refused() {
    let app = test_app().await;
    devices(&app).await;
    let cases = [
        (
            "BB-NOPE",
            json!({ "action": "reboot" }),
            StatusCode::NOT_FOUND,
            "not registered",
        ),
        (
            "BB-NEW",
            json!({ "action": "reboot" }),
            StatusCode::CONFLICT,
            "registered, not in service",
        ),
        (
            "BB-OLD",
            json!({ "action": "reboot" }),
            StatusCode::CONFLICT,
            "retired, not in service",
        ),
        (
            "BB-TEH",
            json!({ "action": "format" }),
            StatusCode::BAD_REQUEST,
            "unknown action",
        ),
        (
            "BB-TEH",
            json!({ "action": "reboot", "expires_in_s": 86_401 }),
            StatusCode::BAD_REQUEST,
            "1 to 86400",
        ),
        (
            "BB-TEH",
            json!({ "action": "reboot", "expires_in_s": 0 }),
            StatusCode::BAD_REQUEST,
            "1 to 86400",
        ),
        (
            "not a device!",
            json!({ "action": "reboot" }),
            StatusCode::BAD_REQUEST,
            "device id",
        ),
    ];
    for (device, body, want, says) in cases {
        let (status, answer) =
            command_as(&app, &app.token, &device.replace(' ', "%20"), body).await;
        assert_eq!(status, want, "{device}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(says), "{device}: {error}");
    }
    assert!(queued(&app).is_empty(), "nothing went out");
}

#[tokio::test]
async fn a_selector_reaches_the_callers_in_service_devices_and_each_command_is_stored() {
    let app = test_app().await;
    devices(&app).await;
    let tech = app.token_for(Role::ProvinceTech, &["IR-02"]).await;
    let (status, answer) = app
        .call_as(
            Some(&tech),
            "POST",
            "/api/v1/commands",
            Some(Body::from(
                json!({ "action": "run-checks", "selector": { "devices": ["BB-SARI"] } })
                    .to_string(),
            )),
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = app
        .json(
            "POST",
            "/api/v1/commands",
            json!({ "action": "renew-cert", "selector": { "provinces": ["IR-23"] } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let sent: Vec<&str> = answer["sent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["device"].as_str().unwrap())
        .collect();
    assert_eq!(sent, ["BB-TEH"], "{answer}");
    assert_eq!(answer["sent"][0]["action"], "renew-certificate");
    let skipped: Vec<&str> = answer["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["device"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, ["BB-NEW", "BB-OLD"], "not in service: {answer}");
    let topics: Vec<String> = queued(&app).into_iter().map(|(t, _, _)| t).collect();
    assert_eq!(
        topics,
        ["fleet/v1/dev/BB-SARI/cmd", "fleet/v1/dev/BB-TEH/cmd"]
    );
    // Stored with who sent it, waiting for the answer.
    let id = answer["sent"][0]["id"].as_str().unwrap();
    let row = app.store.command(id).await.unwrap().unwrap();
    assert_eq!(
        (row.device.as_str(), row.state.as_str()),
        ("BB-TEH", "sent")
    );
    assert!(row.issued_by.contains("test admin"), "{row:?}");
    let (_, entries) = app.get("/api/v1/audit?limit=1").await;
    assert_eq!(entries[0]["action"], "commands.send", "{entries}");
}

#[tokio::test]
async fn a_log_upload_too_large_or_cut_stores_nothing_and_keeps_the_token_for_a_whole_one() {
    let app = test_app().await;
    devices(&app).await;
    let (status, answer) = command_as(
        &app,
        &app.token,
        "BB-SARI",
        json!({ "action": "upload-logs" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let id = answer["id"].as_str().unwrap().to_owned();
    let sent = queued(&app);
    let Payload::Command(cmd) = &sent[0].2.payload else {
        panic!("not a command: {:?}", sent[0].2);
    };
    let ticket = cmd.upload.clone().unwrap();
    let row = app.store.command(&id).await.unwrap().unwrap();
    assert_eq!(
        row.upload_token_sha256,
        Some(crate::domain::commands::token_sha256(&ticket.token)),
        "only the token's hash is kept"
    );
    assert_ne!(
        row.upload_token_sha256.as_deref(),
        Some(ticket.token.as_str())
    );
    // No Content-Length: the body is counted as it streams (the test
    // state's limit is 4096 bytes).
    let upload = |body: Vec<u8>| {
        app.call_as(
            Some(&ticket.token),
            "PUT",
            &ticket.path,
            Some(Body::from(body)),
            "application/octet-stream",
        )
    };
    let (status, answer) = upload(vec![b'x'; 4097]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    let dir = app.dir.path().join("logs").join("BB-SARI");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "nothing stored, no part left: {left:?}");
    // Cut after a few bytes: nothing stored, the token kept.
    let cut = Body::new(CutShort { sent: false });
    let (status, answer) = app
        .call_as(
            Some(&ticket.token),
            "PUT",
            &ticket.path,
            Some(cut),
            "application/octet-stream",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "nothing stored, no part left: {left:?}");
    assert_eq!(
        app.store.command(&id).await.unwrap().unwrap().upload_bytes,
        None
    );
    // The whole upload, sent again with the same token, is taken.
    let (status, answer) = upload(b"whole logs".to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["bytes"], 10);
    assert_eq!(
        app.store.command(&id).await.unwrap().unwrap().upload_bytes,
        Some(10)
    );
    let (status, answer) = upload(b"again".to_vec()).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the token was spent: {answer}"
    );
    let stored = std::fs::read(dir.join(format!("{id}.log"))).unwrap();
    assert_eq!(stored, b"whole logs", "the refused upload changed nothing");
    let (status, _) = app.get("/api/v1/devices/BB-SARI/logs/..%2Fx").await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "only command ids name a file"
    );
}

/// A request body that sends a few bytes, then fails as a reset
/// connection would.
struct CutShort {
    sent: bool,
}

impl hyper::body::Body for CutShort {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let frame = if std::mem::replace(&mut self.sent, true) {
            Err(std::io::Error::other("connection reset"))
        } else {
            Ok(hyper::body::Frame::data(axum::body::Bytes::from_static(
                b"first part",
            )))
        };
        std::task::Poll::Ready(Some(frame))
    }
}

#[tokio::test]
async fn an_upload_for_no_such_command_writes_nothing_and_repeated_refusals_wait() {
    let app = test_app().await;
    devices(&app).await;
    let audited = |app: &TestApp| {
        let store = app.store.clone();
        async move { store.audit_chain().await.unwrap().len() }
    };
    let before = audited(&app).await;
    let path = "/api/v1/devices/BB-SARI/logs/cmd-0123456789abcdef";
    let put = || {
        app.call_as(
            Some("any-bearer"),
            "PUT",
            path,
            Some(Body::from("logs")),
            "application/octet-stream",
        )
    };
    for _ in 0..crate::domain::throttle::UPLOAD_REFUSALS_PER_WINDOW {
        let (status, answer) = put().await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    }
    assert_eq!(
        audited(&app).await,
        before,
        "no audit entry for a command that does not exist"
    );
    let (status, answer) = put().await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert!(
        answer.to_string().contains("refused log uploads"),
        "{answer}"
    );
    assert!(!app.dir.path().join("logs").join("BB-SARI").exists());
}

#[tokio::test]
async fn a_wrong_token_for_a_real_command_is_refused_audited_and_spends_nothing() {
    let app = test_app().await;
    devices(&app).await;
    let (status, answer) = command_as(
        &app,
        &app.token,
        "BB-SARI",
        json!({ "action": "upload-logs" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let id = answer["id"].as_str().unwrap().to_owned();
    let Payload::Command(cmd) = &queued(&app)[0].2.payload else {
        panic!("not a command");
    };
    let ticket = cmd.upload.clone().unwrap();
    let held = app.store.command(&id).await.unwrap().unwrap();
    let (status, answer) = app
        .call_as(
            Some("guess"),
            "PUT",
            &ticket.path,
            Some(Body::from("logs")),
            "application/octet-stream",
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(
        app.store.command(&id).await.unwrap().unwrap(),
        held,
        "the command is unchanged"
    );
    let (_, entries) = app.get("/api/v1/audit?limit=1").await;
    assert_eq!(entries[0]["action"], "device.logs.failed", "{entries}");
}

#[tokio::test]
async fn a_command_that_cannot_be_published_is_failed_with_why() {
    let app = test_app().await;
    devices(&app).await;
    // The client's queue goes away: every publication fails.
    let (_, other) =
        rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("gone", "127.0.0.1", 1), 1);
    drop(std::mem::replace(&mut *app.mqtt.lock().unwrap(), other));
    let (status, answer) =
        command_as(&app, &app.token, "BB-SARI", json!({ "action": "reboot" })).await;
    assert!(status.is_server_error(), "{status} {answer}");
    let dev = DeviceId::parse("BB-SARI").unwrap();
    let rows = app.store.device_commands(&dev, 5).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].state.as_str(), "failed");
    assert!(
        rows[0].message.starts_with("not published: "),
        "{:?}",
        rows[0].message
    );
}

#[tokio::test]
async fn a_selector_list_above_the_cap_is_400_saying_the_cap() {
    let app = test_app().await;
    devices(&app).await;
    let many: Vec<String> = (0..=crate::domain::commands::MAX_SELECTOR_ENTRIES)
        .map(|i| format!("BB-{i}"))
        .collect();
    let (status, answer) = app
        .json(
            "POST",
            "/api/v1/commands",
            json!({ "action": "reboot", "selector": { "devices": many } }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.to_string().contains("cap of 10000"), "{answer}");
    assert!(queued(&app).is_empty(), "nothing sent");
}

#[tokio::test]
async fn the_audit_list_of_a_device_finds_commands_sent_to_it_by_selector() {
    let app = test_app().await;
    devices(&app).await;
    let (status, answer) = app
        .json(
            "POST",
            "/api/v1/commands",
            json!({ "action": "run-checks", "selector": { "provinces": ["IR-02"] } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, entries) = app.get("/api/v1/audit?target=BB-SARI").await;
    assert_eq!(status, StatusCode::OK, "{entries}");
    let actions: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"commands.send"), "{entries}");
    let (_, entries) = app.get("/api/v1/audit?target=BB-TEH").await;
    assert!(
        !entries
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "commands.send"),
        "a device the selector did not reach: {entries}"
    );
}
