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
pub(super) async fn with_fleet_and_target() -> TestApp {
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

/// A second loop over the app's store and fleet, as a restarted controller
/// would start it; answers once it has restored (`list` waits for that).
async fn restarted_loop(
    app: &TestApp,
) -> (
    crate::rollouts::Rollouts,
    rumqttc::EventLoop,
    crate::store::TrackSender,
) {
    let (publisher, eventloop) = unconnected_client();
    let (tracks, track_rx) = crate::rollouts::track_channel();
    let (rollouts, _task) = crate::rollouts::spawn(
        crate::rollouts::Deps {
            store: app.store.clone(),
            fleet: Arc::clone(&app.fleet),
            publisher,
            access: Arc::clone(&app.access),
        },
        crate::rollouts::RolloutsConfig {
            tick: std::time::Duration::from_secs(3600),
            join_every_ticks: 1000,
        },
        track_rx,
        None,
    );
    within(STEP, "the restored loop answering", rollouts.list(None))
        .await
        .unwrap();
    (rollouts, eventloop, tracks)
}

fn stored_firmware(all: &[(DeviceId, fleet_protocol::Desired)], id: &str) -> Option<u32> {
    all.iter()
        .find(|(d, _)| d.as_str() == id)
        .and_then(|(_, d)| d.firmware.as_ref().map(|f| f.attempt))
}

#[tokio::test]
async fn a_member_stored_released_without_its_desired_state_is_sent_again_on_restore() {
    let app = with_fleet_and_target().await;
    ok(app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "selector": { "devices": ["BB-SARI"] } })),
        )
        .await);
    ok(app
        .json("POST", "/api/v1/rollouts/1/pause", json!({}))
        .await);
    // The member row is stored released (before the desired state was set).
    let rows = app.store.rollout_members(1).await.unwrap();
    assert_eq!(rows[0].state, "released");
    // As if the controller had been killed between the two: no desired state.
    let sari = DeviceId::parse("BB-SARI").unwrap();
    app.store
        .set_desired(&sari, &fleet_protocol::Desired::default(), 1)
        .await
        .unwrap();
    app.fleet
        .write()
        .unwrap()
        .set_desired(&sari, fleet_protocol::Desired::default(), 1);
    let before = app.store.load_desired().await.unwrap();
    assert_eq!(stored_firmware(&before, "BB-SARI"), None);

    let (_loop, mut mqtt, _) = restarted_loop(&app).await;
    let after = app.store.load_desired().await.unwrap();
    assert_eq!(stored_firmware(&after, "BB-SARI"), Some(0), "{after:?}");
    mqtt.clean();
    assert_eq!(mqtt.pending.len(), 1, "sent again, retained");

    // Idempotent: a second restart sends nothing more.
    let (_loop2, mut mqtt2, _) = restarted_loop(&app).await;
    mqtt2.clean();
    assert!(mqtt2.pending.is_empty());
}

#[tokio::test]
async fn a_release_whose_desired_state_cannot_be_set_goes_back_to_pending() {
    let app = with_fleet_and_target().await;
    // A device the fleet holds but the store does not know: storing its
    // desired state fails (foreign key).
    {
        let mut fleet = app.fleet.write().unwrap();
        let sari = fleet.get(&DeviceId::parse("BB-SARI").unwrap()).unwrap();
        let (mut reg, status) = (sari.reg.clone(), sari.status.clone());
        reg.id = DeviceId::parse("BB-GHOST").unwrap();
        fleet.upsert(reg, status, crate::clock::unix_ms());
    }
    let (status, view) = app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "selector": { "devices": ["BB-GHOST", "BB-SARI"] } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["counters"]["downloading"], 1, "{view}");
    assert_eq!(view["counters"]["pending"], 1, "{view}");
    let (_, pending) = app.get("/api/v1/rollouts/1/members?state=pending").await;
    assert_eq!(pending[0]["device"], "BB-GHOST", "{pending}");
    assert_eq!(pending[0]["released_ms"], Value::Null);
    assert!(
        pending[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("not released"),
        "{pending}"
    );
}

/// A member's state as a loop holds it, once it is `want` (bounded).
async fn member_becomes(rollouts: &crate::rollouts::Rollouts, device: &str, want: &str) {
    let device = device.to_owned();
    let want = want.to_owned();
    fleet_tests::eventually(
        std::time::Duration::from_secs(STEP),
        &format!("{device} {want}"),
        || async {
            let members = rollouts
                .members(1, None, None)
                .await
                .map_err(|e| e.to_string())?;
            let m = members
                .iter()
                .find(|m| m.device.as_str() == device)
                .ok_or("no such member")?;
            let state = serde_json::to_value(m.state).unwrap();
            if state == want.as_str() {
                Ok(())
            } else {
                Err(format!("{device} is {state}"))
            }
        },
    )
    .await
    .unwrap();
}

fn track(
    started_ms: u64,
    last_event_ms: u64,
    outcome: Option<crate::domain::updates::Outcome>,
) -> crate::domain::updates::Track {
    crate::domain::updates::Track {
        artifact: ArtifactKind::Firmware,
        version: Version::parse("2.5.0").unwrap(),
        phase: Some(fleet_protocol::UpdatePhase::Downloading),
        bytes: 0,
        total: 0,
        outcome,
        message: String::new(),
        started_ms,
        last_event_ms,
        last_at_ms: last_event_ms,
    }
}

#[tokio::test]
async fn a_track_that_continues_after_a_sweeper_time_out_still_counts_for_a_later_release() {
    use crate::domain::updates::Outcome;
    let app = with_fleet_and_target().await;
    ok(app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "selector": { "devices": ["BB-SARI"] } })),
        )
        .await);
    ok(app
        .json("POST", "/api/v1/rollouts/1/pause", json!({}))
        .await);
    let released = app.store.rollout_members(1).await.unwrap()[0]
        .released_ms
        .unwrap();
    let (rollouts, _mqtt, tracks) = restarted_loop(&app).await;
    let sari = DeviceId::parse("BB-SARI").unwrap();
    // An update to 2.5.0 that ended before the release is not this one's.
    tracks
        .send((
            sari.clone(),
            track(released - 7_200_000, released - 1, Some(Outcome::Failed)),
        ))
        .unwrap();
    // The sweeper timed the device out before the release; it comes back
    // after it: the same track, its start kept, runs on.
    tracks
        .send((
            sari.clone(),
            track(released - 7_200_000, released + 1, None),
        ))
        .unwrap();
    member_becomes(&rollouts, "BB-SARI", "downloading").await;
    tracks
        .send((
            sari,
            track(released - 7_200_000, released + 2, Some(Outcome::Committed)),
        ))
        .unwrap();
    member_becomes(&rollouts, "BB-SARI", "succeeded").await;
}

/// Mark a registered device offline.
fn offline(app: &TestApp, id: &str) {
    let mut fleet = app.fleet.write().unwrap();
    let d = fleet.get(&DeviceId::parse(id).unwrap()).unwrap();
    let (reg, mut status) = (d.reg.clone(), d.status.clone());
    status.presence = Some(PresenceStatus::Offline);
    fleet.upsert(reg, status, crate::clock::unix_ms());
}

async fn members_of(app: &TestApp, id: u64) -> Vec<Value> {
    app.get(&format!("/api/v1/rollouts/{id}/members"))
        .await
        .1
        .as_array()
        .unwrap()
        .clone()
}

fn member<'a>(members: &'a [Value], device: &str) -> &'a Value {
    members
        .iter()
        .find(|m| m["device"] == device)
        .unwrap_or_else(|| panic!("{device} in {members:?}"))
}

#[tokio::test]
async fn a_completed_rollout_never_releases_over_a_newer_rollout_or_a_target_set_after_it() {
    let app = with_fleet_and_target().await;
    ok(app
        .json(
            "POST",
            "/api/v1/devices",
            json!({ "devices": [dev("BB-MARK", "IR-02", Some("IR-02-SARI"))] }),
        )
        .await);
    for id in ["BB-TEH", "BB-RAY", "BB-MARK"] {
        offline(&app, id);
    }
    let (_, first) = app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "policy": { "success_threshold_pct": 0.0 } })),
        )
        .await;
    assert_eq!(first["phase"], "completed", "{first}");
    assert_eq!(first["counters"]["pending"], 3, "{first}");
    // A newer rollout holds BB-TEH, even aborted.
    ok(app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "selector": { "devices": ["BB-TEH"] } })),
        )
        .await);
    ok(app
        .json("POST", "/api/v1/rollouts/2/abort", json!({}))
        .await);
    // An operator sets BB-RAY's target after the first one completed.
    let (publisher, _mqtt) = unconnected_client();
    let ray = DeviceId::parse("BB-RAY").unwrap();
    let other = fleet_protocol::Desired {
        firmware: Some(fleet_protocol::TargetFirmware {
            version: Version::parse("2.4.0").unwrap(),
            manifest: "firmware/ballot-box-v2/2.4.0.tar".into(),
            attempt: 0,
        }),
        ..Default::default()
    };
    crate::ingest::set_desired(
        &app.store,
        &app.fleet,
        &publisher,
        &ray,
        other,
        crate::clock::unix_ms() + 1,
    )
    .await
    .unwrap();

    for id in ["BB-TEH", "BB-RAY", "BB-MARK"] {
        online(&app, id);
    }
    // BB-MARK, a straggler of its own, shows the passes ran.
    let mut members = Vec::new();
    within(STEP, "the first rollout's own straggler released", async {
        loop {
            members = members_of(&app, 1).await;
            if member(&members, "BB-MARK")["state"] == "released" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    // Passes go on; once more for good measure after the mark.
    let again = members_of(&app, 1).await;
    for m in [&members, &again] {
        assert_eq!(member(m, "BB-TEH")["state"], "pending", "{m:?}");
        assert_eq!(member(m, "BB-RAY")["state"], "pending", "{m:?}");
    }
    let stored = app.store.load_desired().await.unwrap();
    let ray_now = stored.iter().find(|(d, _)| d == &ray).unwrap();
    assert_eq!(
        ray_now.1.firmware.as_ref().unwrap().version.to_string(),
        "2.4.0"
    );
    assert!(stored_firmware(&stored, "BB-TEH").is_none(), "{stored:?}");
    // Its own straggler's release is audited, once for the pass, by id.
    let (_, entries) = app.get("/api/v1/audit?target=rollout-1").await;
    let released: Vec<&Value> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "rollout.stragglers-released")
        .collect();
    assert_eq!(released.len(), 1, "{entries}");
    assert_eq!(released[0]["actor"], "controller");
    let detail: Value = match &released[0]["detail"] {
        Value::String(s) => serde_json::from_str(s).unwrap(),
        v => v.clone(),
    };
    assert_eq!(detail["count"], 1, "{detail}");
    assert_eq!(detail["devices"], json!(["BB-MARK"]));
}

#[tokio::test]
async fn only_the_newest_include_new_rollout_takes_a_device_registered_later() {
    let app = with_fleet_and_target().await;
    let (_, first) = app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "selector": { "include_new": true }, "policy": { "success_threshold_pct": 0.0 } })),
        )
        .await;
    assert_eq!(first["phase"], "completed", "{first}");
    ok(app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "selector": { "provinces": ["IR-23"], "include_new": true } })),
        )
        .await);
    ok(app
        .json(
            "POST",
            "/api/v1/devices",
            json!({ "devices": [dev("BB-LATE", "IR-23", Some("IR-23-TEH"))] }),
        )
        .await);
    online(&app, "BB-LATE");
    within(STEP, "the new device joining the newer rollout", async {
        while !members_of(&app, 2)
            .await
            .iter()
            .any(|m| m["device"] == "BB-LATE")
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        !members_of(&app, 1)
            .await
            .iter()
            .any(|m| m["device"] == "BB-LATE"),
        "the older include_new rollout does not take it"
    );
    let actions = super::firmware::audit_actions(&app, "target=rollout-2").await;
    assert!(
        actions.contains(&"rollout.joined".to_owned()),
        "{actions:?}"
    );
}

#[tokio::test]
async fn a_rollout_completed_again_after_a_restart_is_audited_once() {
    let app = with_fleet_and_target().await;
    let (_, first) = app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "policy": { "success_threshold_pct": 0.0 } })),
        )
        .await;
    assert_eq!(first["phase"], "completed", "{first}");
    let count = |actions: &[String], what: &str| actions.iter().filter(|a| *a == what).count();
    let actions = super::firmware::audit_actions(&app, "target=rollout-1").await;
    assert_eq!(count(&actions, "rollout.complete"), 1, "{actions:?}");
    assert_eq!(count(&actions, "baseline.set"), 1, "{actions:?}");
    // As if the controller stopped after the audit entry, before the
    // status was written: stored as running.
    let mut status = app.store.rollouts(true).await.unwrap()[0].status.clone();
    status.phase = "running".into();
    status.finished_ms = None;
    app.store
        .persist_rollouts(&[crate::store::RolloutChanges {
            status: Some((1, status)),
            members: Vec::new(),
            log: Vec::new(),
        }])
        .await
        .unwrap();
    let (rollouts, _mqtt, _tracks) = restarted_loop(&app).await;
    fleet_tests::eventually(
        std::time::Duration::from_secs(STEP),
        "completed again",
        || async {
            let list = rollouts.list(None).await.map_err(|e| e.to_string())?;
            let phase = serde_json::to_value(list[0].phase).unwrap();
            if phase == "completed" {
                Ok(())
            } else {
                Err(format!("{phase}"))
            }
        },
    )
    .await
    .unwrap();
    let actions = super::firmware::audit_actions(&app, "target=rollout-1").await;
    assert_eq!(count(&actions, "rollout.complete"), 1, "{actions:?}");
    assert_eq!(count(&actions, "baseline.set"), 1, "{actions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_of_two_fields_of_a_desired_state_at_once_keep_both() {
    let app = with_fleet_and_target().await;
    let (publisher, _mqtt) = unconnected_client();
    let target = |v: &str| fleet_protocol::TargetFirmware {
        version: Version::parse(v).unwrap(),
        manifest: format!("x/{v}.tar"),
        attempt: 0,
    };
    let ids = ["BB-TEH", "BB-RAY", "BB-SARI"].map(|d| DeviceId::parse(d).unwrap());
    let mut changes = tokio::task::JoinSet::new();
    for (i, device) in ids.iter().enumerate() {
        for round in 0..4u32 {
            for firmware in [true, false] {
                let t = target(&format!("{}.{round}.{i}", u8::from(firmware) + 1));
                let (store, fleet, publisher, device) = (
                    app.store.clone(),
                    Arc::clone(&app.fleet),
                    publisher.clone(),
                    device.clone(),
                );
                changes.spawn(async move {
                    crate::ingest::update_desired(
                        &store,
                        &fleet,
                        &publisher,
                        &device,
                        |d| {
                            if firmware {
                                d.firmware = Some(t);
                            } else {
                                d.agent = Some(t);
                            }
                        },
                        1,
                    )
                    .await
                    .unwrap();
                });
            }
        }
    }
    within(STEP, "the changes", async {
        while let Some(r) = changes.join_next().await {
            r.unwrap();
        }
    })
    .await;
    let stored = app.store.load_desired().await.unwrap();
    for device in &ids {
        let (_, d) = stored.iter().find(|(id, _)| id == device).unwrap();
        let held = app
            .fleet
            .read()
            .unwrap()
            .get(device)
            .unwrap()
            .desired
            .clone();
        assert_eq!(held.as_ref(), Some(d), "the fleet holds what is stored");
        assert!(d.firmware.is_some() && d.agent.is_some(), "{device}: {d:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_windows_added_at_the_same_time_are_all_kept() {
    let app = with_fleet_and_target().await;
    let day = 86_400_000u64;
    let add = |i: u64| {
        app.json(
            "POST",
            "/api/v1/freeze",
            json!({ "from": 2_000_000_000_000 + i * day, "to": 2_000_000_000_000 + i * day + 3_600_000, "reason": format!("day {i}") }),
        )
    };
    let (a, b, c, d, e, f) = tokio::join!(add(0), add(1), add(2), add(3), add(4), add(5));
    for r in [a, b, c, d, e, f] {
        ok(r);
    }
    let (_, windows) = app.get("/api/v1/freeze").await;
    assert_eq!(windows["windows"].as_array().unwrap().len(), 6, "{windows}");
    assert_eq!(app.fleet.read().unwrap().freeze().len(), 6);
}

#[tokio::test]
async fn a_freeze_republication_sends_the_desired_state_held_at_send_time_and_stops_for_a_newer_one(
) {
    let app = with_fleet_and_target().await;
    let (publisher, mut mqtt) = unconnected_client();
    let sari = DeviceId::parse("BB-SARI").unwrap();
    let with = |v: &str| fleet_protocol::Desired {
        firmware: Some(fleet_protocol::TargetFirmware {
            version: Version::parse(v).unwrap(),
            manifest: format!("firmware/ballot-box-v2/{v}.tar"),
            attempt: 0,
        }),
        ..Default::default()
    };
    crate::ingest::set_desired(&app.store, &app.fleet, &publisher, &sari, with("2.4.0"), 1)
        .await
        .unwrap();
    let changes = std::sync::Arc::new(crate::http::api::freeze::FreezeChanges::default());
    let generation = changes.bump();
    // The state changes after the freeze change listed the devices and
    // before its background task sends: the newer one goes out.
    crate::ingest::set_desired(&app.store, &app.fleet, &publisher, &sari, with("2.5.0"), 2)
        .await
        .unwrap();
    mqtt.clean();
    mqtt.pending.clear();
    let sent = within(
        STEP,
        "the republication",
        crate::http::api::freeze::republish(
            Arc::clone(&app.fleet),
            publisher.clone(),
            Arc::clone(&changes),
            generation,
            vec![sari.clone()],
        ),
    )
    .await;
    assert_eq!(sent, 1);
    mqtt.clean();
    let versions: Vec<String> = mqtt
        .pending
        .drain(..)
        .filter_map(|r| match r {
            rumqttc::Request::Publish(p) => {
                let topic = fleet_protocol::Topic::parse(&p.topic).unwrap();
                match fleet_protocol::Envelope::from_cbor_on(&topic, &p.payload)
                    .unwrap()
                    .payload
                {
                    Payload::Desired(d) => Some(d.firmware.unwrap().version.to_string()),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect();
    assert_eq!(versions, ["2.5.0"]);
    // A newer change started: the older task sends nothing.
    changes.bump();
    let sent = within(
        STEP,
        "the stale republication",
        crate::http::api::freeze::republish(
            Arc::clone(&app.fleet),
            publisher,
            changes,
            generation,
            vec![sari],
        ),
    )
    .await;
    assert_eq!(sent, 0);
}

#[tokio::test]
async fn a_technician_sees_no_other_province_in_the_selector_the_log_or_the_pause_reason() {
    let app = with_fleet_and_target().await;
    ok(app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "selector": {
                "provinces": ["IR-23", "IR-02"],
                "counties": ["IR-23-TEH", "IR-02-SARI"],
                "devices": ["BB-TEH", "BB-SARI"],
            } })),
        )
        .await);
    ok(app
        .json(
            "POST",
            "/api/v1/rollouts/1/pause",
            json!({ "reason": "IR-23: 2 of 2 devices failed" }),
        )
        .await);
    let tech = app.token_for(Role::ProvinceTech, &["IR-02"]).await;
    let (status, view) = app
        .call_as(Some(&tech), "GET", "/api/v1/rollouts/1", None, "")
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let sel = &view["selector"];
    assert_eq!(sel["provinces"], json!(["IR-02"]), "{view}");
    assert_eq!(sel["counties"], json!(["IR-02-SARI"]), "{view}");
    assert_eq!(sel["devices"], json!(["BB-SARI"]), "{view}");
    assert_eq!(view["log"], json!([]), "{view}");
    assert_eq!(view["paused_reason"], "paused by central operations");
    let (_, list) = app
        .call_as(Some(&tech), "GET", "/api/v1/rollouts", None, "")
        .await;
    assert_eq!(list[0]["paused_reason"], "paused by central operations");
    // Central operations see it all.
    let (_, full) = app.get("/api/v1/rollouts/1").await;
    assert_eq!(full["paused_reason"], "IR-23: 2 of 2 devices failed");
    assert_eq!(full["selector"]["devices"], json!(["BB-TEH", "BB-SARI"]));
    assert!(!full["log"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn resuming_a_paused_rollout_inside_a_freeze_window_holds_it_as_documented() {
    let app = with_fleet_and_target().await;
    ok(app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "canary": { "devices": 1 } })),
        )
        .await);
    ok(app
        .json("POST", "/api/v1/rollouts/1/pause", json!({}))
        .await);
    let now = crate::clock::unix_ms();
    ok(app
        .json(
            "POST",
            "/api/v1/freeze",
            json!({ "from": now - 60_000, "to": now + 3_600_000, "reason": "election day" }),
        )
        .await);
    let (status, v) = app
        .json("POST", "/api/v1/rollouts/1/resume", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["phase"], "running");
    assert!(v["held"].as_str().unwrap().contains("election day"), "{v}");
    assert!(fleet_api::endpoints::RESUME_ROLLOUT
        .description
        .contains("held"));
}

#[tokio::test]
async fn an_aborted_rollout_is_read_from_the_store_after_a_restart() {
    let app = with_fleet_and_target().await;
    offline(&app, "BB-TEH");
    let (_, first) = app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "policy": { "success_threshold_pct": 0.0 } })),
        )
        .await;
    assert_eq!(first["phase"], "completed", "{first}");
    ok(app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "selector": { "devices": ["BB-TEH", "BB-SARI"] } })),
        )
        .await);
    let aborted = ok(app
        .json("POST", "/api/v1/rollouts/2/abort", json!({}))
        .await);
    assert_eq!(aborted["phase"], "aborted");
    let (rollouts, _mqtt, _tracks) = restarted_loop(&app).await;
    let list = within(STEP, "the list", rollouts.list(None)).await.unwrap();
    let ids: Vec<u64> = list.iter().map(|s| s.id).collect();
    assert_eq!(ids, [2, 1], "newest first");
    assert_eq!(list[0].counters.total, 2);
    let scoped = within(
        STEP,
        "a scoped list",
        rollouts.list(Some(vec![ProvinceCode::parse("IR-02").unwrap()])),
    )
    .await
    .unwrap();
    assert_eq!(scoped[0].counters.total, 1, "IR-02 only");
    let shown = within(STEP, "the view", rollouts.show(2, None))
        .await
        .unwrap();
    assert_eq!(shown.summary.counters.total, 2);
    assert!(!shown.log.is_empty());
    let members = within(STEP, "the members", rollouts.members(2, None, None))
        .await
        .unwrap();
    assert_eq!(members.len(), 2);
    let err = within(
        STEP,
        "a refused action",
        rollouts.act(
            2,
            fleet_api::types::RolloutAction::Pause,
            None,
            Caller::system("test"),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(err.to_string(), "cannot pause a rollout that is aborted");
}

#[tokio::test]
async fn the_download_limit_of_a_province_counts_every_rollouts_downloads() {
    let app = with_fleet_and_target().await;
    let one = json!({ "max_downloads_per_province": 1 });
    let (_, a) = app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "selector": { "devices": ["BB-TEH"] }, "policy": one })),
        )
        .await;
    assert_eq!(a["counters"]["downloading"], 1, "{a}");
    let (_, b) = app
        .json(
            "POST",
            "/api/v1/rollouts",
            rollout(json!({ "selector": { "devices": ["BB-RAY", "BB-SARI"] }, "policy": one })),
        )
        .await;
    // IR-23's one slot is rollout 1's; IR-02's is free.
    assert_eq!(b["counters"]["downloading"], 1, "{b}");
    let (_, pending) = app.get("/api/v1/rollouts/2/members?state=pending").await;
    assert_eq!(pending[0]["device"], "BB-RAY", "{pending}");
}
