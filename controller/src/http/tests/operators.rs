//! The operators' side of hardening: failed authentications counted in
//! `/metrics`, tokens that expire, and refused enrolments from one address
//! slowed down with 429.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;

use super::*;
use crate::http::tls::Peer;

/// The value of one Prometheus series in `/metrics` (0 when it is absent).
fn series(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn metrics_text(app: &TestApp) -> String {
    let (status, text) = app.get("/metrics").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    text.as_str().unwrap().to_owned()
}

/// Metrics are process-wide and tests run in parallel, so each count is
/// checked to grow by at least what this test did.
#[tokio::test]
async fn wrong_and_missing_tokens_are_counted_in_metrics() {
    let app = test_app().await;
    let invalid = "fleet_auth_failures_total{reason=\"invalid\"}";
    let missing = "fleet_auth_failures_total{reason=\"missing\"}";
    let before = metrics_text(&app).await;
    for _ in 0..3 {
        let (status, body) = app
            .call_as(
                Some("sdg_not-a-token"),
                "GET",
                "/api/v1/readiness",
                None,
                "application/json",
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (status, _) = app
        .call_as(None, "GET", "/api/v1/devices", None, "application/json")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let after = metrics_text(&app).await;
    assert!(
        series(&after, invalid) >= series(&before, invalid) + 3.0,
        "three wrong tokens counted:\n{after}"
    );
    assert!(
        series(&after, missing) > series(&before, missing),
        "a missing token counted:\n{after}"
    );
}

/// A token made to expire is listed with its expiry; once past it, the
/// token is refused with 401 like a revoked one, also after a restart.
#[tokio::test]
async fn an_expired_token_is_refused_and_listed_with_its_expiry() {
    let app = test_app().await;
    let (status, made) = app
        .json(
            "POST",
            "/api/v1/tokens",
            json!({ "role": "viewer", "name": "temp", "expires_days": 30 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{made}");
    let now = crate::clock::unix_ms();
    let expires = made["expires_at_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("the new token says when it expires: {made}"));
    let month = 30 * 86_400_000;
    assert!(
        expires > now + month - 60_000 && expires <= now + month,
        "{made}"
    );
    let temp = made["token"].as_str().unwrap().to_owned();
    let id = made["id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .call_as(
            Some(&temp),
            "GET",
            "/api/v1/readiness",
            None,
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "valid until it expires");

    // A month later: the controller restarts over the same database, in
    // which the token's expiry has passed.
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        app.dir.path().join("fleet.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("UPDATE tokens SET expires_at_ms = ? WHERE id = ?")
        .bind(i64::try_from(now - 1).unwrap())
        .bind(&id)
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let access = Arc::new(
        Access::load(app.store.clone(), app.dir.path())
            .await
            .unwrap(),
    );
    let later = TestApp {
        router: app_over(&app, Arc::clone(&access)),
        fleet: Arc::clone(&app.fleet),
        access,
        store: app.store.clone(),
        token: app.token.clone(),
        dir: tempfile::tempdir().unwrap(),
        mqtt: std::sync::Mutex::new(super::unconnected_client().1),
    };
    let (status, body) = later
        .call_as(
            Some(&temp),
            "GET",
            "/api/v1/readiness",
            None,
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    let (status, rows) = later.get("/api/v1/tokens").await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap_or_else(|| panic!("the expired token is listed: {rows}"));
    assert_eq!(row["expires_at_ms"], now - 1, "{row}");
    // A token made without an expiry has none, and old clients see no new field.
    let admin = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "test admin")
        .unwrap();
    assert!(admin.get("expires_at_ms").is_none(), "{admin}");
}

/// The cached token is checked against `now` on every request: an expiry
/// that passes while the controller runs refuses the token at once.
#[tokio::test]
async fn the_token_cache_never_serves_an_expired_token() {
    let app = test_app().await;
    let (row, token) = app
        .access
        .create_token_expiring(
            &Caller::system("test"),
            "temp",
            Role::Viewer,
            vec![],
            Some(1),
        )
        .await
        .unwrap();
    let expires = row.expires_at_ms.unwrap();
    assert!(app.access.authenticate(&token, expires - 1).is_ok());
    assert_eq!(
        app.access.authenticate(&token, expires),
        Err(crate::domain::auth::TokenRefused::Expired)
    );
}

fn app_over(app: &TestApp, access: Arc<Access>) -> Router {
    super::app(super::test_state(
        Arc::clone(&app.fleet),
        app.store.clone(),
        access,
        app.dir.path().to_owned(),
        super::unconnected_client().0,
        Default::default(),
    ))
}

async fn enrol_from(app: &TestApp, from: &str, device: &str, token: &str) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method("POST")
        .uri("/api/v1/enrol")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({ "device": device, "token": token, "csr": "x" }).to_string(),
        ))
        .unwrap();
    let addr: SocketAddr = from.parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(Peer(addr)));
    let resp = within(STEP, "an enrolment", app.router.clone().oneshot(req))
        .await
        .unwrap();
    let status = resp.status();
    let bytes = within(STEP, "its body", resp.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Refused enrolments from one address are limited; another address is
/// not held up by it.
#[tokio::test]
async fn refused_enrolments_over_the_limit_from_one_address_answer_429() {
    let app = test_app().await;
    let attacker = "192.0.2.7:40000";
    for i in 0..10 {
        let (status, body) = enrol_from(&app, attacker, "BB-01", &format!("enr-guess-{i}")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "attempt {i}: {body}");
    }
    let (status, body) = enrol_from(&app, attacker, "BB-01", "enr-guess-10").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("too many"),
        "{body}"
    );
    let (status, body) = enrol_from(&app, "192.0.2.8:40000", "BB-01", "enr-guess").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another address: {body}");
}
