//! The router driven with `oneshot`: a real SQLite file, no socket.

use std::sync::{Arc, RwLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;
use crate::fleet::Fleet;
use crate::store::Store;

struct TestApp {
    router: Router,
    fleet: Arc<RwLock<Fleet>>,
    _dir: tempfile::TempDir,
}

async fn test_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("fleet.db")).await.unwrap();
    let fleet = Arc::new(RwLock::new(Fleet::new(60_000)));
    let state = AppState {
        fleet: Arc::clone(&fleet),
        store,
        broker: BrokerInfo {
            host: "127.0.0.1".into(),
            port: 1,
        },
        metrics: crate::metrics_handle(),
    };
    TestApp {
        router: app(state),
        fleet,
        _dir: dir,
    }
}

impl TestApp {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        body: Option<Body>,
        ctype: &str,
    ) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", ctype)
            .body(body.unwrap_or_else(Body::empty))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
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
    app.csv(REGISTRY).await;
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
    app.csv(REGISTRY).await;
    app.json(
        "POST",
        "/api/v1/devices",
        json!({ "devices": [
            dev("BB-1", "IR-23", Some("IR-23-TEH")),
            dev("BB-2", "IR-23", Some("IR-23-RAY")),
            dev("BB-3", "IR-23", None),
            dev("BB-4", "IR-02", Some("IR-02-SARI")),
        ]}),
    )
    .await;
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
    app.csv(REGISTRY).await;
    let devices: Vec<Value> = (0..25)
        .map(|i| dev(&format!("BB-{i:02}"), "IR-23", Some("IR-23-TEH")))
        .collect();
    app.json("POST", "/api/v1/devices", json!({ "devices": devices }))
        .await;
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
