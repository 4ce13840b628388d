//! The firmware routes through the router: freeze windows (stored, sent
//! with every stored desired state, refused when malformed, audited), and
//! image uploads against the size limit, a repository never set up, and
//! the roles that may upload.

use fleet_protocol::Payload;

use super::*;

/// Set the repository up in the app's data directory from a fresh release
/// key set (as `fleet-controller firmware-init` does).
pub(super) fn firmware_init(app: &TestApp) {
    let keys = app.dir.path().join("release-keys");
    fleet_repo::release::init(
        &keys,
        &fleet_repo::release::InitOptions::default(),
        std::time::SystemTime::now(),
    )
    .unwrap();
    let files = crate::firmware::InitFiles {
        root: fleet_repo::release::root_json_path(&keys),
        targets: fleet_repo::release::targets_json_path(&keys),
        snapshot_key: fleet_repo::release::snapshot_key_path(&keys),
        timestamp_key: fleet_repo::release::timestamp_key_path(&keys),
    };
    crate::firmware::init(app.dir.path(), &files, std::time::SystemTime::now()).unwrap();
}

async fn put_image(app: &TestApp, token: &str, sha: &str, body: Vec<u8>) -> (StatusCode, Value) {
    app.call_as(
        Some(token),
        "PUT",
        &format!("/api/v1/firmware/images/{sha}"),
        Some(Body::from(body)),
        "application/octet-stream",
    )
    .await
}

/// Import the registry and register `devices` (each as [`dev`] gives).
pub(super) async fn registered(app: &TestApp, devices: Value) {
    ok(app.csv(REGISTRY).await);
    ok(app
        .json("POST", "/api/v1/devices", json!({ "devices": devices }))
        .await);
}

/// The actions of the audit entries `GET /api/v1/audit?QUERY` lists.
pub(super) async fn audit_actions(app: &TestApp, query: &str) -> Vec<String> {
    let (_, entries) = app.get(&format!("/api/v1/audit?{query}")).await;
    entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn freeze_windows_are_stored_sent_with_every_desired_state_and_audited() {
    let app = test_app().await;
    registered(
        &app,
        json!([
            dev("BB-TEH", "IR-23", Some("IR-23-TEH")),
            dev("BB-RAY", "IR-23", Some("IR-23-RAY")),
        ]),
    )
    .await;
    // One device has a stored desired state; the other has none.
    let teh = DeviceId::parse("BB-TEH").unwrap();
    app.fleet.write().unwrap().set_desired(
        &teh,
        fleet_protocol::Desired {
            config_rev: 3,
            ..Default::default()
        },
        0,
    );
    queued(&app);

    let (status, body) = app
        .json(
            "PUT",
            "/api/v1/freeze",
            json!({ "windows": [
                { "from": "2030-06-18T00:00:00Z", "to": 1_908_057_600_000u64 }
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["windows"][0]["from_ms"], 1_907_971_200_000u64);
    assert_eq!(body["windows"][0]["to"], "2030-06-19T00:00:00Z");
    assert_eq!(body["windows"][0]["active"], false);
    assert_eq!(body["republished"], 1);

    // Sent in the background.
    let mut sent = Vec::new();
    within(STEP, "the desired state sent again", async {
        while sent.is_empty() {
            sent = queued(&app);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(sent.len(), 1, "the device with a desired state: {sent:?}");
    let (topic, retained, env) = &sent[0];
    assert_eq!(topic, "fleet/v1/dev/BB-TEH/desired");
    assert!(retained);
    let Payload::Desired(d) = &env.payload else {
        panic!("{env:?}");
    };
    assert_eq!(d.config_rev, 3, "the stored desired state");
    assert_eq!(d.freeze.len(), 1);
    assert_eq!(d.freeze[0].to_ms, 1_908_057_600_000);

    let (_, listed) = app.get("/api/v1/freeze").await;
    assert_eq!(listed["windows"], body["windows"]);
    let stored = app.store.freeze_windows().await.unwrap();
    assert_eq!(stored.len(), 1);
    // The device page shows them with its desired state.
    let (_, page) = app.get("/api/v1/devices/BB-RAY").await;
    assert_eq!(
        page["desired"]["freeze"][0]["from_ms"],
        1_907_971_200_000u64
    );

    let (_, entries) = app.get("/api/v1/audit?target=fleet&limit=5").await;
    assert_eq!(entries[0]["action"], "freeze.set", "{entries}");

    // Malformed windows change nothing: one 422 item per bad time, and an
    // empty window is refused.
    let (status, body) = app
        .json(
            "PUT",
            "/api/v1/freeze",
            json!({ "windows": [{ "from": "tomorrow", "to": "2030-01-01T00:00:00Z" }] }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .starts_with("from: \"tomorrow\""));
    let (status, body) = app
        .json(
            "PUT",
            "/api/v1/freeze",
            json!({ "windows": [{ "from": 20, "to": 10 }] }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(app.store.freeze_windows().await.unwrap(), stored);

    // A viewer may read them, not set them.
    let viewer = app.token_for(Role::Viewer, &[]).await;
    let (status, _) = app
        .call_as(
            Some(&viewer),
            "GET",
            "/api/v1/freeze",
            None,
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .call_as(
            Some(&viewer),
            "PUT",
            "/api/v1/freeze",
            Some(Body::from(json!({ "windows": [] }).to_string())),
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn uploads_need_a_repository_a_firmware_role_a_matching_hash_and_room() {
    let app = test_app().await;
    let small = b"VERSION=2.5.0\n".to_vec();
    let sha = fleet_repo::metadata::sha256_hex(&small);
    // Before firmware-init: 409, whatever the body.
    let (status, body) = put_image(&app, &app.token, &sha, small.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    firmware_init(&app);
    let ops = app.token_for(Role::CentralOps, &[]).await;
    let (status, body) = put_image(&app, &ops, &sha, small.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({ "sha256": sha, "len": small.len(), "already_stored": false })
    );
    let (status, body) = app
        .call_as(
            Some(&ops),
            "GET",
            &format!("/api/v1/firmware/images/{sha}"),
            None,
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["already_stored"], true);
    let (status, _) = app
        .get(&format!("/api/v1/firmware/images/{}", "e".repeat(64)))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let stored = app.dir.path().join("firmware/images").join(&sha);
    assert_eq!(std::fs::read(&stored).unwrap(), small);

    // Not the bytes of that hash: 422, nothing kept.
    let other = fleet_repo::metadata::sha256_hex(b"other");
    let (status, body) = put_image(&app, &ops, &other, small.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"].as_str().unwrap().contains(&sha), "{body}");
    assert!(!app.dir.path().join("firmware/images").join(&other).exists());

    // Over firmware.max_image_bytes (1 MiB in these tests): 413, nothing kept.
    let big = vec![7u8; 1024 * 1024 + 1];
    let big_sha = fleet_repo::metadata::sha256_hex(&big);
    let (status, body) = put_image(&app, &ops, &big_sha, big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let left: Vec<_> = std::fs::read_dir(app.dir.path().join("firmware/uploads"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "partial uploads are removed: {left:?}");

    // Not a sha256: 400.
    let (status, _) = put_image(&app, &ops, "not-a-hash", small.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Roles without manage-firmware: 403.
    for role in [Role::ProvinceTech, Role::Warehouse, Role::Viewer] {
        let provinces: &[&str] = if role == Role::ProvinceTech {
            &["IR-23"]
        } else {
            &[]
        };
        let token = app.token_for(role, provinces).await;
        let (status, _) = put_image(&app, &token, &sha, small.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{role}");
    }

    let actions = audit_actions(&app, &format!("target={other}&limit=5")).await;
    assert_eq!(actions, ["firmware.image.failed", "firmware.image"]);
}

/// Sign `bytes` as a target with the release keys in the app's directory,
/// store the image and publish the targets (as `fleetctl firmware upload`
/// does through the routes).
pub(super) fn publish(
    app: &TestApp,
    custom: &fleet_protocol::firmware::TargetCustom,
    bytes: &[u8],
) {
    let keys = app.dir.path().join("release-keys");
    let image = app.dir.path().join(format!("image-{}", custom.version));
    std::fs::write(&image, bytes).unwrap();
    fleet_repo::release::sign(
        &keys,
        &image,
        custom,
        std::time::SystemTime::now(),
        &mut |_, _| {},
    )
    .unwrap();
    let fw = crate::firmware::Firmware::new(app.dir.path(), 1 << 20);
    let repo = fw.repo().unwrap();
    repo.stage_image(&fleet_repo::metadata::sha256_hex(bytes), &image)
        .unwrap();
    let targets = std::fs::read(fleet_repo::release::targets_json_path(&keys)).unwrap();
    repo.publish_targets(&targets, std::time::SystemTime::now())
        .unwrap();
}

/// `POST /api/v1/devices/{device}/update` with `token`.
async fn post_update(app: &TestApp, token: &str, device: &str, body: Value) -> (StatusCode, Value) {
    app.call_as(
        Some(token),
        "POST",
        &format!("/api/v1/devices/{device}/update"),
        Some(Body::from(body.to_string())),
        "application/json",
    )
    .await
}

#[tokio::test]
async fn a_device_is_pointed_at_a_signed_target_of_its_model_in_the_caller_s_scope() {
    use fleet_protocol::firmware::{agent_platform, TargetCustom};
    use fleet_protocol::{ArtifactKind, Model, Version};
    let app = test_app().await;
    registered(
        &app,
        json!([
            dev("BB-TEH", "IR-23", Some("IR-23-TEH")),
            dev("BB-SARI", "IR-02", Some("IR-02-SARI")),
            { "id": "BB-NEW", "model": "ballot-box-v2", "province": "IR-23", "county": "IR-23-TEH" },
        ]),
    )
    .await;
    let admin = &app.token;
    // No repository yet: 409.
    let (status, _) = post_update(&app, admin, "BB-TEH", json!({ "version": "2.5.0" })).await;
    assert_eq!(status, StatusCode::CONFLICT);

    firmware_init(&app);
    publish(
        &app,
        &TargetCustom {
            artifact: ArtifactKind::Firmware,
            model: Model::parse("ballot-box-v2").unwrap(),
            version: Version::parse("2.5.0").unwrap(),
        },
        b"firmware 2.5.0",
    );
    publish(
        &app,
        &TargetCustom {
            artifact: ArtifactKind::Agent,
            model: agent_platform(),
            version: Version::parse("0.3.0").unwrap(),
        },
        b"agent 0.3.0",
    );
    queued(&app);

    let tech = app.token_for(Role::ProvinceTech, &["IR-23"]).await;
    let (status, answer) = post_update(&app, &tech, "BB-TEH", json!({ "version": "2.5.0" })).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["target"], "firmware/ballot-box-v2/2.5.0.tar");
    let agent = json!({ "artifact": "agent", "version": "0.3.0" });
    let (status, answer) = post_update(&app, admin, "BB-TEH", agent).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["target"],
        format!("agent/{}/0.3.0", agent_platform())
    );

    // Both targets are in the stored and the sent desired state.
    let sent = queued(&app);
    let Some((_, true, env)) = sent.last() else {
        panic!("nothing retained was sent: {sent:?}");
    };
    let Payload::Desired(d) = &env.payload else {
        panic!("{env:?}");
    };
    assert_eq!(
        d.firmware.as_ref().unwrap().manifest,
        "firmware/ballot-box-v2/2.5.0.tar"
    );
    assert_eq!(d.agent.as_ref().unwrap().version.to_string(), "0.3.0");
    let stored = app.store.load_desired().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].1.firmware, d.firmware);
    assert_eq!(stored[0].1.agent, d.agent);

    // Refusals: another province's device looks absent, an unsigned version
    // is 404, an unknown artifact 422, a device not in service 409.
    for (token, device, body, want) in [
        (
            &tech,
            "BB-SARI",
            json!({ "version": "2.5.0" }),
            StatusCode::NOT_FOUND,
        ),
        (
            &app.token,
            "BB-TEH",
            json!({ "version": "2.6.0" }),
            StatusCode::NOT_FOUND,
        ),
        (
            &app.token,
            "BB-TEH",
            json!({ "artifact": "kernel", "version": "2.5.0" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &app.token,
            "BB-NEW",
            json!({ "version": "2.5.0" }),
            StatusCode::CONFLICT,
        ),
    ] {
        let (status, answer) = post_update(&app, token, device, body).await;
        assert_eq!(status, want, "{device}: {answer}");
    }
    let actions = audit_actions(&app, "target=BB-TEH&limit=10").await;
    assert_eq!(
        actions,
        ["device.update", "device.update"],
        "refusals before the audit change nothing"
    );
}
