//! Rollouts through the router, with the real rollout loop over the real
//! store: create (started at once, devices released through their desired
//! state, audited), and the refusals: an unsigned target 404, an overlap
//! with a running rollout 409, inside a freeze window 409, an action the
//! phase does not allow 409, a bad plan 422; and a technician's scope.

use fleet_protocol::firmware::TargetCustom;
use fleet_protocol::{ArtifactKind, Model, Payload, PresenceStatus, Version};

use super::firmware::{firmware_init, publish, registered};
use super::*;

/// Mark a registered device online, as its presence would.
fn online(app: &TestApp, id: &str) {
    let mut fleet = app.fleet.write().unwrap();
    let d = fleet.get(&DeviceId::parse(id).unwrap()).unwrap();
    let (reg, mut status) = (d.reg.clone(), d.status.clone());
    status.presence = Some(PresenceStatus::Online);
    status.last_seen_ms = Some(crate::clock::unix_ms());
    fleet.upsert(reg, status, crate::clock::unix_ms());
}

/// Three devices in two provinces, online, and firmware 2.5.0 signed.
async fn with_fleet_and_target() -> TestApp {
    let app = test_app().await;
    registered(
        &app,
        json!([
            dev("BB-TEH", "IR-23", Some("IR-23-TEH")),
            dev("BB-RAY", "IR-23", Some("IR-23-RAY")),
            dev("BB-SARI", "IR-02", Some("IR-02-SARI")),
        ]),
    )
    .await;
    for id in ["BB-TEH", "BB-RAY", "BB-SARI"] {
        online(&app, id);
    }
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
    queued(&app);
    app
}

fn rollout(extra: Value) -> Value {
    let mut r = json!({ "model": "ballot-box-v2", "version": "2.5.0" });
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

/// Device ids whose desired firmware was sent retained since the last look.
fn released(app: &TestApp) -> Vec<(String, u32)> {
    queued(app)
        .into_iter()
        .filter_map(|(topic, retained, env)| match env.payload {
            Payload::Desired(d) if retained => {
                let f = d.firmware?;
                assert_eq!(f.manifest, "firmware/ballot-box-v2/2.5.0.tar");
                Some((topic, f.attempt))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_created_rollout_starts_its_canary_at_once_and_is_audited() {
    let app = with_fleet_and_target().await;
    let (status, view) = app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "canary": { "devices": 1 }, "waves": [["IR-23"]] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["phase"], "running");
    assert_eq!(view["wave"], 0);
    let names: Vec<&str> = view["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    // The canary is taken round-robin over the provinces in order: IR-02's
    // one device; IR-23's two are the next wave; no device is left for a rest.
    assert_eq!(names, ["canary", "IR-23"]);
    assert_eq!(view["counters"]["total"], 3);
    assert_eq!(view["waves"][0]["counters"]["total"], 1);
    assert_eq!(view["waves"][0]["counters"]["downloading"], 1, "{view}");
    assert_eq!(view["target"], "firmware/ballot-box-v2/2.5.0.tar");

    // Exactly the canary was released, through its stored desired state.
    let sent = released(&app);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].1, 0, "the first attempt");
    let stored = app.store.load_desired().await.unwrap();
    assert_eq!(stored.len(), 1);

    let (_, members) = app.get("/api/v1/rollouts/1/members?state=released").await;
    assert_eq!(members.as_array().unwrap().len(), 1, "{members}");
    assert_eq!(members[0]["device"], "BB-SARI");
    let (status, _) = app.get("/api/v1/rollouts/1/members?state=sleeping").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, list) = app.get("/api/v1/rollouts").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], 1);
    let (_, shown) = app.get("/api/v1/rollouts/1").await;
    let kinds: Vec<&str> = shown["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["created", "started"], "{shown}");

    let actions = super::firmware::audit_actions(&app, "target=rollout-1").await;
    assert!(
        actions.contains(&"rollout.create".to_owned()),
        "{actions:?}"
    );
    assert!(actions.contains(&"rollout.start".to_owned()), "{actions:?}");
    assert!(
        actions.contains(&"rollout.wave-started".to_owned()),
        "{actions:?}"
    );

    // Pause with a reason, resume, abort; pausing an aborted one is refused
    // naming the phase.
    let (status, v) = app
        .json(
            "POST",
            "/api/v1/rollouts/1/pause",
            json!({ "reason": "look at the canary" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["paused_reason"], "look at the canary");
    let (status, v) = app
        .json("POST", "/api/v1/rollouts/1/resume", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["phase"], "running");
    let (status, v) = app
        .json("POST", "/api/v1/rollouts/1/abort", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["phase"], "aborted");
    let (status, body) = app
        .json("POST", "/api/v1/rollouts/1/pause", json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "cannot pause a rollout that is aborted");
}

#[tokio::test]
async fn an_overlapping_rollout_is_refused_naming_the_other_and_the_devices() {
    let app = with_fleet_and_target().await;
    ok(app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "name": "first", "selector": { "provinces": ["IR-23"] } })),
        )
        .await);
    let (status, body) = app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "selector": { "devices": ["BB-RAY", "BB-SARI"] } })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("rollout 1 (first, running)"), "{msg}");
    assert!(msg.contains("1 of the selected devices"), "{msg}");
    assert!(msg.contains("BB-RAY"), "{msg}");
    // A rollout of other devices is fine.
    ok(app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "selector": { "provinces": ["IR-02"] } })),
        )
        .await);
}

#[tokio::test]
async fn nothing_starts_inside_a_freeze_window_and_bad_requests_are_named() {
    let app = with_fleet_and_target().await;
    let now = crate::clock::unix_ms();
    ok(app
        .json(
            "POST",
            "/api/v1/freeze",
            json!({ "from": now - 3_600_000, "to": now + 3_600_000, "reason": "election day" }),
        )
        .await);
    let (_, windows) = app.get("/api/v1/freeze").await;
    assert_eq!(windows["windows"][0]["reason"], "election day");

    let (status, body) = app
        .json("POST", "/api/v1/rollouts", rollout(json!({})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("election day"),
        "{body}"
    );
    assert_eq!(app.get("/api/v1/rollouts").await.1, json!([]));

    // A draft may be made; starting it is refused the same way.
    let (status, draft) = app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "draft": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{draft}");
    assert_eq!(draft["phase"], "draft");
    let (status, body) = app
        .json("POST", "/api/v1/rollouts/1/start", json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // Pausing a draft is not allowed, naming the phase.
    let (status, body) = app
        .json("POST", "/api/v1/rollouts/1/pause", json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "cannot pause a rollout that is draft");
    // Cleared: it starts.
    ok(app
        .call("DELETE", "/api/v1/freeze", None, "application/json")
        .await);
    let (status, body) = app
        .json("POST", "/api/v1/rollouts/1/start", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // An unsigned version is 404; an unknown rollout 404; a bad plan 422
    // with one line per bad field; a province in two waves 422.
    let (status, body) = app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "version": "9.9.9" })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(
        app.get("/api/v1/rollouts/77").await.0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "artifact": "kernel", "waves": [["IR-99"]] })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"].as_array().unwrap().len(), 2, "{body}");
    let (status, body) = app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "draft": true, "waves": [["IR-23"], ["IR-23"]] })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "draft": true, "selector": { "devices": ["BB-NOPE"] } })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn a_technician_sees_only_its_provinces_and_cannot_manage_rollouts() {
    let app = with_fleet_and_target().await;
    ok(app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "draft": true })),
        )
        .await);
    let tech = app.token_for(Role::ProvinceTech, &["IR-02"]).await;
    let (status, view) = app
        .call_as(Some(&tech), "GET", "/api/v1/rollouts/1", None, "")
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["counters"]["total"], 1, "IR-02 only: {view}");
    let provinces: Vec<&str> = view["provinces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["province"].as_str().unwrap())
        .collect();
    assert_eq!(provinces, ["IR-02"]);
    let (_, members) = app
        .call_as(Some(&tech), "GET", "/api/v1/rollouts/1/members", None, "")
        .await;
    let ids: Vec<&str> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["device"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["BB-SARI"]);
    let (_, list) = app
        .call_as(Some(&tech), "GET", "/api/v1/rollouts", None, "")
        .await;
    assert_eq!(list[0]["counters"]["total"], 1);

    for (method, uri) in [
        ("POST", "/api/v1/rollouts"),
        ("POST", "/api/v1/rollouts/1/start"),
        ("POST", "/api/v1/rollouts/1/abort"),
    ] {
        let (status, _) = app
            .call_as(
                Some(&tech),
                method,
                uri,
                Some(Body::from(rollout(json!({})).to_string())),
                "application/json",
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}");
    }
    let ops = app.token_for(Role::CentralOps, &[]).await;
    let (status, v) = app
        .call_as(
            Some(&ops),
            "POST",
            "/api/v1/rollouts/1/start",
            None,
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn a_device_registered_later_joins_an_include_new_rollout_and_is_released() {
    let app = with_fleet_and_target().await;
    let (status, v) = app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "selector": { "provinces": ["IR-23"], "include_new": true } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["counters"]["total"], 2);
    released(&app);
    ok(app
        .json(
            "POST",
            "/api/v1/devices",
            json!({ "devices": [dev("BB-LATE", "IR-23", Some("IR-23-TEH")), dev("BB-ELSE", "IR-02", Some("IR-02-SARI"))] }),
        )
        .await);
    online(&app, "BB-LATE");
    online(&app, "BB-ELSE");
    let mut members = Value::Null;
    within(STEP, "the new device joining", async {
        loop {
            members = app.get("/api/v1/rollouts/1/members").await.1;
            if members.as_array().unwrap().len() == 3 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let late = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["device"] == "BB-LATE")
        .unwrap_or_else(|| panic!("{members}"));
    assert_eq!(late["wave"], 0, "the last wave");
    // Released on a later pass (it is online and its province has room).
    let mut sent = Vec::new();
    within(STEP, "the new device released", async {
        while !sent
            .iter()
            .any(|(t, _): &(String, u32)| t.contains("BB-LATE"))
        {
            sent.extend(released(&app));
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        !sent.iter().any(|(t, _)| t.contains("BB-ELSE")),
        "another province's device does not join: {sent:?}"
    );
}

#[tokio::test]
async fn a_completed_rollout_hands_its_stragglers_to_a_newer_one() {
    let app = with_fleet_and_target().await;
    // BB-TEH is offline; a success threshold of 0 completes the first
    // rollout at once, leaving BB-TEH a pending straggler.
    {
        let mut fleet = app.fleet.write().unwrap();
        let d = fleet.get(&DeviceId::parse("BB-TEH").unwrap()).unwrap();
        let (reg, mut status) = (d.reg.clone(), d.status.clone());
        status.presence = Some(PresenceStatus::Offline);
        fleet.upsert(reg, status, crate::clock::unix_ms());
    }
    let (status, first) = app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "policy": { "success_threshold_pct": 0.0 } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["phase"], "completed", "{first}");
    assert_eq!(first["counters"]["pending"], 1, "{first}");
    // A completed rollout does not block a newer one over the same devices.
    let (status, second) = app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "selector": { "devices": ["BB-TEH"] } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["counters"]["pending"], 1, "{second}");
    released(&app);

    online(&app, "BB-TEH");
    within(STEP, "the straggler released by the newer rollout", async {
        loop {
            let (_, m) = app.get("/api/v1/rollouts/2/members").await;
            if m[0]["state"] == "released" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    // The older rollout had its turn in the same pass (rollouts are fed in
    // order of id) and every pass before: it still holds it pending.
    let (_, old) = app.get("/api/v1/rollouts/1/members").await;
    let teh = old
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["device"] == "BB-TEH")
        .unwrap();
    assert_eq!(teh["state"], "pending", "{old}");
}
