//! The router driven with `oneshot`: a real SQLite file, no socket. Every
//! await is bounded ([`fleet_tests::within`], inside the helpers too), and
//! every setup call must answer 200 ([`ok`]).

use std::sync::{Arc, RwLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;
use crate::access::{Access, Caller};
use crate::domain::auth::Role;
use crate::domain::fleet::Fleet;
use crate::store::Store;
use fleet_api::endpoints::Auth;
use fleet_protocol::{DeviceId, ProvinceCode};
use fleet_tests::within;

/// Seconds any one step of these tests may take.
const STEP: u64 = 10;

/// The answer of a setup call, which must have succeeded.
#[track_caller]
fn ok((status, body): (StatusCode, Value)) -> Value {
    assert_eq!(status, StatusCode::OK, "a setup call was refused: {body}");
    body
}

/// The state every router test runs over: a real store and access in a
/// temporary directory, no broker: what is published stays in the MQTT
/// client's queue, read back through [`queued`].
fn test_state(
    fleet: Arc<RwLock<Fleet>>,
    store: Store,
    access: Arc<Access>,
    data_dir: std::path::PathBuf,
    publisher: crate::ingest::Publisher,
    console: crate::ui::ConsoleConfig,
) -> AppState {
    AppState {
        fleet: Arc::clone(&fleet),
        store: store.clone(),
        broker: BrokerInfo {
            host: "127.0.0.1".into(),
            port: 1,
            tls: true,
        },
        metrics: crate::startup::metrics_handle(),
        access: Arc::clone(&access),
        revocation: crate::broker::Revocation::NoBroker,
        tier: Arc::default(),
        console: Arc::new(crate::ui::Console::new(console)),
        lifecycle_lock: Arc::default(),
        freeze_changes: Arc::default(),
        ingest_connected: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        cert_policy: Default::default(),
        firmware: crate::firmware::Firmware::new(&data_dir, 1024 * 1024),
        rollouts: crate::rollouts::spawn(
            crate::rollouts::Deps {
                store,
                fleet,
                publisher: publisher.clone(),
                access,
            },
            // Fast passes, so a test does not wait on them.
            crate::rollouts::RolloutsConfig {
                tick: std::time::Duration::from_millis(50),
                join_every_ticks: 2,
            },
            crate::rollouts::track_channel().1,
            None,
        )
        .0,
        data_dir,
        publisher,
        max_log_bytes: 4096,
    }
}

/// An MQTT client that never connects: its queue holds what was published.
fn unconnected_client() -> (crate::ingest::Publisher, rumqttc::EventLoop) {
    let (client, eventloop) =
        rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("router-test", "127.0.0.1", 1), 64);
    (
        crate::ingest::Publisher::new(client, Default::default()),
        eventloop,
    )
}

/// What was published through the app's client since the last call:
/// (topic, retained, decoded envelope).
fn queued(app: &TestApp) -> Vec<(String, bool, fleet_protocol::Envelope)> {
    let mut eventloop = app.mqtt.lock().unwrap();
    eventloop.clean();
    eventloop
        .pending
        .drain(..)
        .filter_map(|r| match r {
            rumqttc::Request::Publish(p) => {
                let topic = fleet_protocol::Topic::parse(&p.topic).unwrap();
                let env = fleet_protocol::Envelope::from_cbor_on(&topic, &p.payload).unwrap();
                Some((p.topic.clone(), p.retain, env))
            }
            _ => None,
        })
        .collect()
}

struct TestApp {
    router: Router,
    fleet: Arc<RwLock<Fleet>>,
    access: Arc<Access>,
    store: Store,
    token: String,
    dir: tempfile::TempDir,
    mqtt: std::sync::Mutex<rumqttc::EventLoop>,
}

async fn test_app() -> TestApp {
    test_app_with(crate::ui::ConsoleConfig::default()).await
}

async fn test_app_with(console: crate::ui::ConsoleConfig) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let store = within(
        STEP,
        "opening the store",
        Store::open(&dir.path().join("fleet.db")),
    )
    .await
    .unwrap();
    let fleet = Arc::new(RwLock::new(Fleet::new(60_000)));
    let access = Arc::new(
        within(
            STEP,
            "loading access",
            Access::load(store.clone(), dir.path()),
        )
        .await
        .unwrap(),
    );
    let (_, token) = within(
        STEP,
        "creating the admin token",
        access.create_token(&Caller::system("test"), "test admin", Role::Admin, vec![]),
    )
    .await
    .unwrap();
    crate::pki::init(dir.path()).unwrap();
    let (publisher, eventloop) = unconnected_client();
    let state = test_state(
        Arc::clone(&fleet),
        store.clone(),
        Arc::clone(&access),
        dir.path().to_owned(),
        publisher,
        console,
    );
    TestApp {
        router: app(state),
        fleet,
        access,
        store,
        token,
        dir,
        mqtt: std::sync::Mutex::new(eventloop),
    }
}

impl TestApp {
    async fn token_for(&self, role: Role, provinces: &[&str]) -> String {
        let provinces = provinces
            .iter()
            .map(|p| ProvinceCode::parse(p).unwrap())
            .collect();
        within(
            STEP,
            "creating a token",
            self.access
                .create_token(&Caller::system("test"), role.as_str(), role, provinces),
        )
        .await
        .unwrap()
        .1
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        body: Option<Body>,
        ctype: &str,
    ) -> (StatusCode, Value) {
        self.call_as(Some(&self.token), method, uri, body, ctype)
            .await
    }

    async fn call_as(
        &self,
        token: Option<&str>,
        method: &str,
        uri: &str,
        body: Option<Body>,
        ctype: &str,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", ctype);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(body.unwrap_or_else(Body::empty)).unwrap();
        let what = format!("{method} {uri}");
        let resp = within(STEP, &what, self.router.clone().oneshot(req))
            .await
            .unwrap();
        let status = resp.status();
        let bytes = within(STEP, &what, resp.into_body().collect())
            .await
            .unwrap()
            .to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, value)
    }
    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call("GET", uri, None, "application/json").await
    }
    async fn json(&self, method: &str, uri: &str, v: Value) -> (StatusCode, Value) {
        self.call(
            method,
            uri,
            Some(Body::from(v.to_string())),
            "application/json",
        )
        .await
    }
    async fn csv(&self, text: &str) -> (StatusCode, Value) {
        self.call(
            "POST",
            "/api/v1/registry/import",
            Some(Body::from(text.to_owned())),
            "text/csv",
        )
        .await
    }
}

const REGISTRY: &str = "province,county,county_name_en,station_id,station_name\n\
    IR-23,IR-23-TEH,Tehran,ST-1,School 1\n\
    IR-23,IR-23-RAY,Rey,ST-2,School 2\n\
    IR-02,IR-02-SARI,Sari,ST-3,Mosque 1\n";

fn dev(id: &str, province: &str, county: Option<&str>) -> Value {
    json!({ "id": id, "model": "ballot-box-v2", "province": province, "county": county, "lifecycle": "enrolled" })
}

#[tokio::test]
async fn registry_import_reports_bad_lines_and_imports_nothing() {
    let app = test_app().await;
    let bad = format!("{REGISTRY}IR-99,IR-99-X,Nowhere,ST-4,\nIR-02,IR-23-TEH,Tehran,ST-5,\n");
    let (status, body) = app.csv(&bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let lines: Vec<u64> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![5, 6]);
    let (_, counties) = app.get("/api/v1/registry/counties").await;
    assert_eq!(counties.as_array().unwrap().len(), 0, "nothing imported");

    let (status, body) = app.csv(REGISTRY).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "counties": 3, "stations": 3 }));
    let (_, counties) = app.get("/api/v1/registry/counties?province=IR-23").await;
    assert_eq!(counties.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn registration_is_validated_all_or_nothing() {
    let app = test_app().await;
    ok(app.csv(REGISTRY).await);
    let (status, body) = app
        .json(
            "POST",
            "/api/v1/devices",
            json!({ "devices": [
                dev("BB-1", "IR-23", Some("IR-23-TEH")),
                dev("BB-2", "IR-23", Some("IR-02-SARI")),
                dev("BB-3", "IR-23", Some("IR-23-NOPE")),
                dev("bad/id", "IR-23", None),
                { "id": "BB-5", "model": "ballot-box-v2", "province": "IR-02", "station": "ST-1" },
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let idx: Vec<u64> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, vec![1, 2, 3, 4], "{body}");
    assert!(app.fleet.read().unwrap().is_empty());

    let (status, body) = app
        .json("POST", "/api/v1/devices", json!({ "devices": [
            dev("BB-1", "IR-23", Some("IR-23-TEH")),
            { "id": "BB-2", "model": "ballot-box-v2", "province": "IR-02", "station": "ST-3", "lifecycle": "enrolled" },
            dev("BB-3", "IR-23", None),
        ]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // the station implied its county
    let (_, d) = app.get("/api/v1/devices/BB-2").await;
    assert_eq!(d["device"]["county"], "IR-02-SARI");
}

#[tokio::test]
async fn readiness_lists_every_province_and_adds_up() {
    let app = test_app().await;
    ok(app.csv(REGISTRY).await);
    ok(app
        .json(
            "POST",
            "/api/v1/devices",
            json!({ "devices": [
                dev("BB-1", "IR-23", Some("IR-23-TEH")),
                dev("BB-2", "IR-23", Some("IR-23-RAY")),
                dev("BB-3", "IR-23", None),
                dev("BB-4", "IR-02", Some("IR-02-SARI")),
            ]}),
        )
        .await);
    let (status, rows) = app.get("/api/v1/readiness").await;
    assert_eq!(status, StatusCode::OK);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 31);
    let total: u64 = rows.iter().map(|r| r["total"].as_u64().unwrap()).sum();
    assert_eq!(total, 4);
    let teh = rows.iter().find(|r| r["province"] == "IR-23").unwrap();
    assert_eq!(
        teh["reasons"],
        json!({ "never-seen": 2, "not-enrolled": 1 })
    );

    let (_, rows) = app.get("/api/v1/readiness?by=county&province=IR-23").await;
    let counties: Vec<Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["county"].clone())
        .collect();
    assert_eq!(
        counties,
        vec![Value::Null, json!("IR-23-RAY"), json!("IR-23-TEH")]
    );

    let (status, body) = app.get("/api/v1/readiness?by=planet").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("planet"));
    let (status, _) = app.get("/api/v1/readiness?province=IR-77").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn device_list_filters_and_pages() {
    let app = test_app().await;
    ok(app.csv(REGISTRY).await);
    let devices: Vec<Value> = (0..25)
        .map(|i| dev(&format!("BB-{i:02}"), "IR-23", Some("IR-23-TEH")))
        .collect();
    ok(app
        .json("POST", "/api/v1/devices", json!({ "devices": devices }))
        .await);
    let (_, page) = app
        .get("/api/v1/devices?province=IR-23&per_page=10&page=3")
        .await;
    assert_eq!(page["total"], 25);
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["BB-20", "BB-21", "BB-22", "BB-23", "BB-24"]);
    let (_, none) = app.get("/api/v1/devices?province=IR-02").await;
    assert_eq!(none["total"], 0);
    let (_, never) = app
        .get("/api/v1/devices?readiness=never-seen&per_page=1")
        .await;
    assert_eq!(never["total"], 25);
    let (status, body) = app.get("/api/v1/devices?readiness=sleepy").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = app.get("/api/v1/devices/NOPE").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get("/api/v1/devices/bad%2Fid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn baselines_and_metrics() {
    let app = test_app().await;
    let (status, body) = app
        .json(
            "PUT",
            "/api/v1/baselines/ballot-box-v2",
            json!({ "version": "2.4.0" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, all) = app.get("/api/v1/baselines").await;
    assert_eq!(all, json!({ "ballot-box-v2": "2.4.0" }));
    let (status, _) = app
        .json(
            "PUT",
            "/api/v1/baselines/ballot-box-v2",
            json!({ "version": "two" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app
        .json(
            "PUT",
            "/api/v1/baselines/Bad%20Model",
            json!({ "version": "1.0.0" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, text) = app.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().unwrap();
    assert!(
        text.contains("fleet_devices{province=\"IR-23\",readiness=\"ready\"}"),
        "{text}"
    );
    assert!(!text.contains("device=\""), "no per-device labels");
}

/// Every endpoint with every role, no token and a revoked token: the
/// expected status for each, including province scoping.
#[tokio::test]
async fn role_by_endpoint_matrix() {
    let app = test_app().await;
    ok(app.csv(REGISTRY).await);
    ok(app
        .json(
            "POST",
            "/api/v1/devices",
            json!({ "devices": [
                dev("BB-TEH", "IR-23", Some("IR-23-TEH")),
                dev("BB-SARI", "IR-02", Some("IR-02-SARI")),
            ]}),
        )
        .await);

    let central = app.token_for(Role::CentralOps, &[]).await;
    let tech = app.token_for(Role::ProvinceTech, &["IR-02"]).await;
    let warehouse = app.token_for(Role::Warehouse, &[]).await;
    let viewer = app.token_for(Role::Viewer, &[]).await;
    let revoked = app.token_for(Role::Admin, &[]).await;
    let revoked_id = app.access.authenticate(&revoked, 0).unwrap().token_id;
    within(
        STEP,
        "revoking a token",
        app.access.revoke(&Caller::system("test"), &revoked_id),
    )
    .await
    .unwrap();

    const OK: u16 = 200;
    const DENY: u16 = 403;
    const NOAUTH: u16 = 401;
    const GONE: u16 = 404;
    const CONFLICT: u16 = 409;
    let register = json!({ "devices": [dev("BB-NEW", "IR-02", Some("IR-02-SARI"))] }).to_string();
    let token_req = json!({ "role": "viewer" }).to_string();
    // (method, uri, body, [admin, central-ops, province-tech(IR-02), warehouse, viewer])
    let cases: Vec<(&str, &str, Option<String>, [u16; 5])> = vec![
        ("GET", "/api/v1/readiness", None, [OK, OK, OK, OK, OK]),
        (
            "GET",
            "/api/v1/readiness?province=IR-02",
            None,
            [OK, OK, OK, OK, OK],
        ),
        (
            "GET",
            "/api/v1/readiness?province=IR-23",
            None,
            [OK, OK, DENY, OK, OK],
        ),
        (
            "GET",
            "/api/v1/readiness?by=county&province=IR-23",
            None,
            [OK, OK, DENY, OK, OK],
        ),
        ("GET", "/api/v1/devices", None, [OK, OK, OK, OK, OK]),
        (
            "GET",
            "/api/v1/devices?province=IR-23",
            None,
            [OK, OK, DENY, OK, OK],
        ),
        (
            "GET",
            "/api/v1/devices?county=IR-23-TEH",
            None,
            [OK, OK, DENY, OK, OK],
        ),
        ("GET", "/api/v1/devices/BB-SARI", None, [OK, OK, OK, OK, OK]),
        (
            "GET",
            "/api/v1/devices/BB-TEH",
            None,
            [OK, OK, GONE, OK, OK],
        ),
        (
            "POST",
            "/api/v1/devices",
            Some(register.clone()),
            [OK, OK, DENY, OK, DENY],
        ),
        (
            "POST",
            "/api/v1/registry/import",
            Some(REGISTRY.to_owned()),
            [OK, OK, DENY, DENY, DENY],
        ),
        (
            "GET",
            "/api/v1/registry/counties",
            None,
            [OK, OK, OK, OK, OK],
        ),
        (
            "GET",
            "/api/v1/registry/counties?province=IR-23",
            None,
            [OK, OK, DENY, OK, OK],
        ),
        ("GET", "/api/v1/baselines", None, [OK, OK, OK, OK, OK]),
        (
            "PUT",
            "/api/v1/baselines/ballot-box-v2",
            Some(json!({ "version": "2.4.0" }).to_string()),
            [OK, OK, DENY, DENY, DENY],
        ),
        ("GET", "/api/v1/provinces", None, [OK, OK, OK, OK, OK]),
        ("GET", "/api/v1/broker", None, [OK, OK, OK, OK, OK]),
        ("GET", "/metrics", None, [OK, OK, DENY, OK, OK]),
        ("GET", "/api/v1/tokens", None, [OK, DENY, DENY, DENY, DENY]),
        (
            "POST",
            "/api/v1/tokens",
            Some(token_req.clone()),
            [OK, DENY, DENY, DENY, DENY],
        ),
        (
            "DELETE",
            "/api/v1/tokens/tok_nonexistent",
            None,
            [GONE, DENY, DENY, DENY, DENY],
        ),
        ("GET", "/api/v1/audit", None, [OK, OK, DENY, DENY, DENY]),
        (
            "GET",
            "/api/v1/audit/verify",
            None,
            [OK, OK, DENY, DENY, DENY],
        ),
        (
            "POST",
            "/api/v1/enrol/batch",
            Some(
                "serial,model,province,county\nBB-SHIP,ballot-box-v2,IR-02,IR-02-SARI\n".to_owned(),
            ),
            [OK, OK, DENY, OK, DENY],
        ),
        (
            "GET",
            "/api/v1/enrol/shipments/shipment-none",
            None,
            [GONE, GONE, GONE, GONE, GONE],
        ),
        // lifecycle: an impossible move is 409 for whoever may move devices;
        // retiring needs more than moving (404: no such device, no harm done)
        (
            "POST",
            "/api/v1/devices/BB-SARI/lifecycle",
            Some(json!({ "to": "deployed" }).to_string()),
            [CONFLICT, CONFLICT, DENY, CONFLICT, DENY],
        ),
        (
            "POST",
            "/api/v1/devices/BB-NONE/lifecycle",
            Some(json!({ "to": "retired" }).to_string()),
            [GONE, GONE, DENY, DENY, DENY],
        ),
    ];
    let tokens = [app.token.clone(), central, tech.clone(), warehouse, viewer];
    let roles = [
        "admin",
        "central-ops",
        "province-tech",
        "warehouse",
        "viewer",
    ];
    let mut failures = Vec::new();
    for (method, uri, body, want) in &cases {
        let ctype = if uri.contains("registry/import") || uri.contains("enrol/batch") {
            "text/csv"
        } else {
            "application/json"
        };
        for (i, token) in tokens.iter().enumerate() {
            let (status, v) = app
                .call_as(
                    Some(token),
                    method,
                    uri,
                    body.clone().map(Body::from),
                    ctype,
                )
                .await;
            if status.as_u16() != want[i] {
                failures.push(format!(
                    "{method} {uri} as {}: {status} (want {}) {v}",
                    roles[i], want[i]
                ));
            }
        }
        for (who, token) in [
            ("no token", None),
            ("revoked token", Some(revoked.as_str())),
            ("garbage token", Some("sdg_nope")),
        ] {
            let (status, _) = app
                .call_as(token, method, uri, body.clone().map(Body::from), ctype)
                .await;
            if status.as_u16() != NOAUTH {
                failures.push(format!("{method} {uri} with {who}: {status} (want 401)"));
            }
        }
    }
    // /healthz is open to all.
    let (status, _) = app
        .call_as(None, "GET", "/healthz", None, "application/json")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Scoping inside lists: the technician of IR-02 sees only IR-02.
    let (_, rows) = app
        .call_as(
            Some(&tech),
            "GET",
            "/api/v1/readiness",
            None,
            "application/json",
        )
        .await;
    let provinces: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["province"].as_str().unwrap())
        .collect();
    assert_eq!(provinces, ["IR-02"]);
    let (_, list) = app
        .call_as(
            Some(&tech),
            "GET",
            "/api/v1/devices",
            None,
            "application/json",
        )
        .await;
    let items = list["items"].as_array().unwrap();
    assert!(!items.is_empty(), "the technician sees its devices: {list}");
    assert!(items.iter().all(|d| d["province"] == "IR-02"), "{list}");
    assert_eq!(list["total"], 3, "BB-SARI, BB-NEW, BB-SHIP: {list}");
    let (_, counties) = app
        .call_as(
            Some(&tech),
            "GET",
            "/api/v1/registry/counties",
            None,
            "application/json",
        )
        .await;
    let counties = counties.as_array().unwrap();
    assert!(!counties.is_empty(), "the technician sees its counties");
    assert!(counties.iter().all(|c| c["province"] == "IR-02"));
    // ...and a 404 for another province's device reads like a missing one.
    let (_, a) = app
        .call_as(
            Some(&tech),
            "GET",
            "/api/v1/devices/BB-TEH",
            None,
            "application/json",
        )
        .await;
    let (_, b) = app
        .call_as(
            Some(&tech),
            "GET",
            "/api/v1/devices/BB-NONE",
            None,
            "application/json",
        )
        .await;
    assert_eq!(
        a["error"].as_str().unwrap().replace("BB-TEH", "X"),
        b["error"].as_str().unwrap().replace("BB-NONE", "X")
    );
}

#[tokio::test]
async fn changes_are_audited_and_the_chain_verifies() {
    let app = test_app().await;
    ok(app.csv(REGISTRY).await);
    ok(app
        .json(
            "PUT",
            "/api/v1/baselines/ballot-box-v2",
            json!({ "version": "2.4.0" }),
        )
        .await);
    ok(app
        .json(
            "POST",
            "/api/v1/devices",
            json!({ "devices": [dev("BB-1", "IR-23", Some("IR-23-TEH"))] }),
        )
        .await);
    let (_, entries) = app.get("/api/v1/audit?limit=10").await;
    let actions: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "device.register",
            "baseline.set",
            "registry.import",
            "token.create"
        ]
    );
    let first = &entries[0];
    assert_eq!(first["target"], "BB-1");
    assert_eq!(first["role"], "admin");
    assert!(first["actor"].as_str().unwrap().contains("test admin"));
    let (_, by_device) = app.get("/api/v1/audit?target=BB-1").await;
    assert_eq!(by_device.as_array().unwrap().len(), 1);
    let (_, v) = app.get("/api/v1/audit/verify").await;
    assert_eq!(
        (&v["intact"], &v["entries"]),
        (&json!(true), &json!(4)),
        "{v}"
    );
    // The head's hash is there to be written down off the machine.
    let (_, last) = app.get("/api/v1/audit?seq=4").await;
    assert_eq!(v["head_hash"], last[0]["hash"], "{v} {last}");
    // A denied request changes nothing and leaves no entry.
    let viewer = app.token_for(Role::Viewer, &[]).await;
    let (status, _) = app
        .call_as(
            Some(&viewer),
            "PUT",
            "/api/v1/baselines/ballot-box-v2",
            Some(Body::from(json!({ "version": "9.9.9" }).to_string())),
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, v) = app.get("/api/v1/audit/verify").await;
    assert_eq!(
        v["entries"], 5,
        "only the viewer token's creation was added"
    );
    assert!(app.dir.path().join("audit.head").is_file());
}

fn csr(common_name: &str) -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    (key, pem)
}

async fn enrol(app: &TestApp, device: &str, token: &str, csr: &str) -> (StatusCode, Value) {
    app.call_as(
        None,
        "POST",
        "/api/v1/enrol",
        Some(Body::from(
            json!({ "device": device, "token": token, "csr": csr }).to_string(),
        )),
        "application/json",
    )
    .await
}

#[tokio::test]
async fn warehouse_enrolment_issues_certificates_the_ca_decides() {
    let app = test_app().await;
    ok(app.csv(REGISTRY).await);
    let warehouse = app.token_for(Role::Warehouse, &[]).await;
    let shipment = "serial,model,province,county\nBB-01,ballot-box-v2,IR-02,IR-02-SARI\nBB-02,ballot-box-v2,IR-02,IR-02-SARI\n";
    let (status, batch) = app
        .call_as(
            Some(&warehouse),
            "POST",
            "/api/v1/enrol/batch",
            Some(Body::from(shipment)),
            "text/csv",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    let ship = batch["shipment"].as_str().unwrap().to_owned();
    let token = |i: usize| batch["devices"][i]["token"].as_str().unwrap().to_owned();
    assert_eq!(batch["devices"][0]["device"], "BB-01");
    assert_eq!(
        app.get("/api/v1/devices/BB-01").await.1["device"]["lifecycle"],
        "registered"
    );

    // The request asks for another name, a SAN and a CA certificate: none of it is granted.
    let (_key, request) = csr("EVIL-NAME");
    let (status, issued) = enrol(&app, "BB-01", &token(0), &request).await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    let pem_text = issued["certificate"].as_str().unwrap().to_owned();
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap();
    assert_eq!(cn, "BB-01");
    assert!(cert.subject_alternative_name().unwrap().is_none());
    assert!(!cert.is_ca());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    let days = (cert.validity().not_after.timestamp()
        - time::OffsetDateTime::now_utc().unix_timestamp())
        / 86_400;
    assert!((364..=366).contains(&days), "{days}");
    assert!(issued["ca"].as_str().unwrap().contains("BEGIN CERTIFICATE"));
    assert_eq!(issued["broker"]["port"], 1);
    assert_eq!(
        app.get("/api/v1/devices/BB-01").await.1["device"]["lifecycle"],
        "enrolled"
    );

    // Used twice: refused, nothing issued.
    let (_k, again) = csr("BB-01");
    let (status, body) = enrol(&app, "BB-01", &token(0), &again).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["error"].as_str().unwrap().contains("already used"),
        "{body}"
    );
    // Another device's token: refused, and BB-02 stays registered.
    let (status, body) = enrol(&app, "BB-01", &token(1), &again).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["error"].as_str().unwrap().contains("another device"),
        "{body}"
    );
    let (status, body) = enrol(&app, "BB-02", "enr-made-up", &again).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["error"].as_str().unwrap().contains("unknown"),
        "{body}"
    );
    // A request not signed by the key it carries (proof of possession fails).
    let mut broken = again.clone();
    let mid = broken.len() / 2;
    let c = if &broken[mid..mid + 1] == "A" {
        "B"
    } else {
        "A"
    };
    broken.replace_range(mid..mid + 1, c);
    let (status, body) = enrol(&app, "BB-02", &token(1), &broken).await;
    // A malformed request is the client's mistake (400), not a refusal (403).
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("bad certificate request"),
        "{body}"
    );
    let (status, _) = enrol(&app, "BB-02", &token(1), "not a csr").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        app.get("/api/v1/devices/BB-02").await.1["device"]["lifecycle"],
        "registered"
    );
    // BB-02's token still works after all those refusals.
    let (status, _) = enrol(&app, "BB-02", &token(1), &again).await;
    assert_eq!(status, StatusCode::OK);

    // Expired: refused.
    ok(app.json("POST", "/api/v1/devices", json!({ "devices": [{ "id": "BB-03", "model": "ballot-box-v2", "province": "IR-02", "county": "IR-02-SARI" }] })).await);
    let old = "enr-00000000-00000000-00000000-00000000";
    within(
        STEP,
        "storing an expired enrolment token",
        app.store.insert_enrol_tokens(
            "shipment-old",
            &[(
                DeviceId::parse("BB-03").unwrap(),
                crate::domain::auth::token_hash(old),
            )],
            1,
            2,
        ),
    )
    .await
    .unwrap();
    let (status, body) = enrol(&app, "BB-03", old, &again).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    // Shipment status for the bench, and the audit trail.
    let (_, st) = app
        .call_as(
            Some(&warehouse),
            "GET",
            &format!("/api/v1/enrol/shipments/{ship}"),
            None,
            "application/json",
        )
        .await;
    let lifecycles: Vec<&str> = st["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["lifecycle"].as_str().unwrap())
        .collect();
    assert_eq!(lifecycles, ["enrolled", "enrolled"]);
    assert_eq!(st["devices"][0]["self_test"], "not yet");
    let (_, audit) = app.get("/api/v1/audit?target=BB-01").await;
    assert_eq!(audit[0]["action"], "device.enrol");
    assert_eq!(audit[0]["role"], "device");
    // Enrolled devices cannot be put back into a shipment.
    let (status, body) = app
        .call_as(
            Some(&warehouse),
            "POST",
            "/api/v1/enrol/batch",
            Some(Body::from(
                "serial,model,province\nBB-01,ballot-box-v2,IR-02\n",
            )),
            "text/csv",
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.to_string().contains("already enrolled"), "{body}");
    // Viewers cannot make shipments.
    let viewer = app.token_for(Role::Viewer, &[]).await;
    let (status, _) = app
        .call_as(
            Some(&viewer),
            "POST",
            "/api/v1/enrol/batch",
            Some(Body::from(shipment)),
            "text/csv",
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// Lifecycle only moves through enrolment and the checked moves: not by
/// re-registering, and a retired device cannot enrol again.
#[tokio::test]
async fn lifecycle_cannot_be_sidestepped() {
    let app = test_app().await;
    ok(app.csv(REGISTRY).await);
    let (status, batch) = app
        .call(
            "POST",
            "/api/v1/enrol/batch",
            Some(Body::from(
                "serial,model,province,county\nBB-R1,ballot-box-v2,IR-02,IR-02-SARI\n",
            )),
            "text/csv",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    let token = batch["devices"][0]["token"].as_str().unwrap().to_owned();
    let (status, _) = app
        .json(
            "POST",
            "/api/v1/devices/BB-R1/lifecycle",
            json!({ "to": "retired" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_k, request) = csr("BB-R1");
    let (status, body) = enrol(&app, "BB-R1", &token, &request).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        app.get("/api/v1/devices/BB-R1").await.1["device"]["lifecycle"],
        "retired"
    );
    // Re-registering cannot bring it back, nor retire or ship anything.
    for (id, lifecycle) in [("BB-R1", "registered"), ("BB-R1", "enrolled")] {
        let (status, body) = app
            .json("POST", "/api/v1/devices", json!({ "devices": [{ "id": id, "model": "ballot-box-v2", "province": "IR-02", "county": "IR-02-SARI", "lifecycle": lifecycle }] }))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    let (status, body) = app
        .json("POST", "/api/v1/devices", json!({ "devices": [{ "id": "BB-R2", "model": "ballot-box-v2", "province": "IR-02", "lifecycle": "retired" }] }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // Fixing a county keeps the lifecycle when none is given.
    ok(app
        .json(
            "POST",
            "/api/v1/devices",
            json!({ "devices": [dev("BB-R3", "IR-23", Some("IR-23-TEH"))] }),
        )
        .await);
    let (status, _) = app
        .json(
            "POST",
            "/api/v1/devices/BB-R3/lifecycle",
            json!({ "to": "shipped" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .json("POST", "/api/v1/devices", json!({ "devices": [{ "id": "BB-R3", "model": "ballot-box-v2", "province": "IR-23", "county": "IR-23-RAY" }] }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let d = app.get("/api/v1/devices/BB-R3").await.1;
    assert_eq!(
        (
            d["device"]["lifecycle"].as_str(),
            d["device"]["county"].as_str()
        ),
        (Some("shipped"), Some("IR-23-RAY"))
    );
    // The controller's MQTT identity can never be a device's.
    let (status, _) = app
        .json(
            "POST",
            "/api/v1/devices",
            json!({ "devices": [dev(crate::pki::CONTROLLER_IDENTITY, "IR-23", None)] }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // A technician of another province does not learn that a shipment exists.
    let tech = app.token_for(Role::ProvinceTech, &["IR-23"]).await;
    let ship = batch["shipment"].as_str().unwrap();
    let (status, _) = app
        .call_as(
            Some(&tech),
            "GET",
            &format!("/api/v1/enrol/shipments/{ship}"),
            None,
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The audit entry comes before the change; a change that then fails is
/// followed by a `.failed` entry naming the error.
#[tokio::test]
async fn failed_changes_are_recorded_after_their_entry() {
    let app = test_app().await;
    let state = test_state(
        Arc::clone(&app.fleet),
        app.store.clone(),
        Arc::clone(&app.access),
        app.dir.path().to_owned(),
        unconnected_client().0,
        Default::default(),
    );
    let caller = Caller::system("test");
    let r: Result<(), ApiError> = within(
        STEP,
        "an audited change that fails",
        super::audited(
            &state,
            &caller,
            "thing.change",
            "T-1",
            json!({ "n": 1 }),
            async { Err(ApiError::ChangedMeanwhile(DeviceId::parse("T-1").unwrap())) },
        ),
    )
    .await;
    assert!(r.is_err());
    let (_, entries) = app.get("/api/v1/audit?target=T-1").await;
    let actions: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["thing.change.failed", "thing.change"]);
    assert!(entries[0]["detail"]
        .as_str()
        .unwrap()
        .contains("changed meanwhile"));
    let (_, v) = app.get("/api/v1/audit/verify").await;
    assert_eq!(v["intact"], true);
}

/// Every route of the router is in the served OpenAPI document with its
/// method and the roles that may call it, and those roles are exactly the
/// ones the router lets through: each role is tried on each route.
#[tokio::test]
async fn openapi_document_lists_every_route_with_the_roles_the_router_enforces() {
    let app = test_app().await;
    let (status, doc) = app
        .call_as(
            None,
            "GET",
            "/api/v1/openapi.json",
            None,
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "served without a token: {doc}");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");

    let mut tokens = Vec::new();
    for role in fleet_api::roles::Role::ALL {
        let provinces: &[&str] = if role == Role::ProvinceTech {
            &["IR-23"]
        } else {
            &[]
        };
        tokens.push((role, app.token_for(role, provinces).await));
    }
    let routes = routes();
    assert!(
        routes.len() >= 20,
        "the router has only {} routes",
        routes.len()
    );
    let methods = |m: fleet_api::endpoints::Method| m.as_str().to_ascii_lowercase();
    for (e, _) in &routes {
        let op = &doc["paths"][e.openapi_path()][methods(e.method)];
        assert!(
            op.is_object(),
            "{} {} is not in the document",
            e.method,
            e.path
        );
        let listed: Vec<&str> = op["x-roles"]
            .as_array()
            .map(|a| a.iter().map(|r| r.as_str().unwrap()).collect())
            .unwrap_or_default();
        let Auth::Bearer(_) = e.auth else {
            assert!(listed.is_empty(), "{} {} is public", e.method, e.path);
            continue;
        };
        assert!(!listed.is_empty(), "{} {} names no role", e.method, e.path);
        // Fill the path's parameters with something that parses.
        let uri = e
            .path
            .replace("{id}", "BB-1")
            .replace("{model}", "ballot-box-v2")
            .replace("{sha256}", &"0".repeat(64));
        for (role, token) in &tokens {
            let (status, body) = app
                .call_as(
                    Some(token),
                    e.method.as_str(),
                    &uri,
                    None,
                    "application/json",
                )
                .await;
            let refused = status == StatusCode::FORBIDDEN
                && body["error"] == format!("role {role} may not do this");
            assert_eq!(
                refused,
                !listed.contains(&role.as_str()),
                "{role} on {} {}: {status} {body}; the document says {listed:?}",
                e.method,
                e.path
            );
        }
    }
    // And the document names no route the router does not serve.
    let served: Vec<(String, String)> = routes
        .iter()
        .map(|(e, _)| (e.openapi_path(), methods(e.method)))
        .collect();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(
                served.contains(&(path.clone(), method.clone())),
                "the document has {method} {path}, which the router does not serve"
            );
        }
    }
}

async fn send(router: Router, token: String, method: &str, uri: String, body: Value) -> StatusCode {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(body.to_string()))
        .unwrap();
    within(STEP, "a concurrent call", router.oneshot(req))
        .await
        .unwrap()
        .status()
}

/// Registration never changes a lifecycle, however the calls interleave:
/// a retirement racing with re-registrations stays a retirement, in the
/// fleet and in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registrations_racing_a_retirement_cannot_undo_it() {
    let app = test_app().await;
    ok(app
        .json(
            "POST",
            "/api/v1/devices",
            json!({ "devices": [dev("BB-RACE", "IR-23", None)] }),
        )
        .await);
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (router, token) = (app.router.clone(), app.token.clone());
        if i == 20 {
            calls.spawn(send(
                router,
                token,
                "POST",
                "/api/v1/devices/BB-RACE/lifecycle".into(),
                json!({ "to": "retired" }),
            ));
        }
        let (router, token) = (app.router.clone(), app.token.clone());
        calls.spawn(send(
            router,
            token,
            "POST",
            "/api/v1/devices".into(),
            json!({ "devices": [{ "id": "BB-RACE", "model": "ballot-box-v2", "province": "IR-23" }] }),
        ));
    }
    let mut statuses = Vec::new();
    while let Some(s) = within(STEP, "the racing calls", calls.join_next()).await {
        statuses.push(s.unwrap());
    }
    assert_eq!(statuses.len(), 41);
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let (_, d) = app.get("/api/v1/devices/BB-RACE").await;
    assert_eq!(d["device"]["lifecycle"], "retired", "in the fleet: {d}");
    let stored = within(STEP, "loading the store", app.store.load_devices())
        .await
        .unwrap();
    let (reg, _) = stored
        .iter()
        .find(|(r, _)| r.id.as_str() == "BB-RACE")
        .expect("the device is stored");
    assert_eq!(
        reg.lifecycle,
        crate::domain::lifecycle::Lifecycle::Retired,
        "in the store"
    );
}

/// Moving a shipped or deployed device to another province, county, station
/// or model needs its own permission, and the audit entry says what changed.
#[tokio::test]
async fn reassigning_a_deployed_device_needs_central_ops_and_is_audited_before_and_after() {
    let app = test_app().await;
    ok(app.csv(REGISTRY).await);
    ok(app
        .json(
            "POST",
            "/api/v1/devices",
            json!({ "devices": [dev("BB-FIELD", "IR-23", Some("IR-23-TEH"))] }),
        )
        .await);
    for to in ["shipped", "deployed"] {
        ok(app
            .json(
                "POST",
                "/api/v1/devices/BB-FIELD/lifecycle",
                json!({ "to": to }),
            )
            .await);
    }
    let moved = json!({ "devices": [{ "id": "BB-FIELD", "model": "ballot-box-v2", "province": "IR-02", "county": "IR-02-SARI" }] });
    let warehouse = app.token_for(Role::Warehouse, &[]).await;
    let (status, body) = app
        .call_as(
            Some(&warehouse),
            "POST",
            "/api/v1/devices",
            Some(Body::from(moved.to_string())),
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("reassign-devices"),
        "{body}"
    );
    // Re-registering it where it is stays allowed for the warehouse.
    let same = json!({ "devices": [{ "id": "BB-FIELD", "model": "ballot-box-v2", "province": "IR-23", "county": "IR-23-TEH" }] });
    let (status, body) = app
        .call_as(
            Some(&warehouse),
            "POST",
            "/api/v1/devices",
            Some(Body::from(same.to_string())),
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let central = app.token_for(Role::CentralOps, &[]).await;
    let (status, body) = app
        .call_as(
            Some(&central),
            "POST",
            "/api/v1/devices",
            Some(Body::from(moved.to_string())),
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, d) = app.get("/api/v1/devices/BB-FIELD").await;
    assert_eq!(d["device"]["province"], "IR-02");
    assert_eq!(d["device"]["lifecycle"], "deployed", "{d}");
    let (_, entries) = app.get("/api/v1/audit?target=BB-FIELD").await;
    let entry = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["action"] == "device.register" && e["detail"].as_str().unwrap().contains("changes")
        })
        .expect("the reassignment is in the audit log");
    let detail: Value = serde_json::from_str(entry["detail"].as_str().unwrap()).unwrap();
    assert_eq!(
        detail["changes"][0]["before"]["province"], "IR-23",
        "{detail}"
    );
    assert_eq!(
        detail["changes"][0]["after"]["province"], "IR-02",
        "{detail}"
    );
    assert_eq!(
        detail["changes"][0]["after"]["county"], "IR-02-SARI",
        "{detail}"
    );
}
mod commands;
mod console;
mod firmware;
mod operators;
mod rollouts;

/// `GET /api/v1/pki` (fleetctl pki status): every service certificate and
/// the CA with their dates, and the devices whose certificates end first.
#[tokio::test]
async fn pki_status_lists_each_certificate_with_its_dates() {
    let app = test_app().await;
    let v = ok(app.get("/api/v1/pki").await);
    let certs = v["certificates"].as_array().unwrap();
    let kinds: Vec<&str> = certs.iter().map(|c| c["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ca", "broker", "api", "controller"], "{v}");
    for c in certs {
        assert!(
            c["not_after_ms"].as_u64().unwrap() > c["not_before_ms"].as_u64().unwrap(),
            "{c}"
        );
        assert!(!c["serial"].as_str().unwrap().is_empty(), "{c}");
    }
    assert!(v["devices_expiring_first"].is_array(), "{v}");
}
