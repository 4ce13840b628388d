//! The HTTP API under `/api/v1`, plus `/healthz` and `/metrics`. The router
//! is built by [`app`], so tests drive it with `oneshot` and no socket.

pub mod api;
pub mod auth;
mod error;
pub mod tls;

use std::sync::{Arc, RwLock};

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{delete, get, post, put};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

pub use error::{ApiError, Unauthenticated};

use crate::access::{Access, Caller};
use crate::domain::fleet::Fleet;
use crate::store::Store;

/// Where devices reach the broker, as told to `fleet-sim` and (later) to
/// enrolling devices.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerInfo {
    pub host: String,
    pub port: u16,
    /// Mutual TLS (false only with --insecure-dev).
    pub tls: bool,
}

#[derive(Clone)]
pub struct AppState {
    pub fleet: Arc<RwLock<Fleet>>,
    pub store: Store,
    pub broker: BrokerInfo,
    pub metrics: PrometheusHandle,
    pub access: Arc<Access>,
    /// The data directory (the CA's files are under it).
    pub data_dir: std::path::PathBuf,
    /// Restarts the managed broker after a revocation (None: external broker).
    pub broker_restarter: Option<crate::broker::BrokerRestarter>,
    /// One lifecycle change (enrolment, move, retirement with its CRL) at a time.
    pub lifecycle_lock: Arc<tokio::sync::Mutex<()>>,
}

impl AppState {
    pub(crate) fn fleet(&self) -> std::sync::RwLockReadGuard<'_, Fleet> {
        self.fleet.read().expect("fleet lock is never poisoned")
    }

    pub(crate) fn fleet_mut(&self) -> std::sync::RwLockWriteGuard<'_, Fleet> {
        self.fleet.write().expect("fleet lock is never poisoned")
    }
}

pub fn app(state: AppState) -> Router {
    let protected = Router::new()
        .route("/metrics", get(api::health::metrics))
        .route("/api/v1/provinces", get(api::readiness::provinces))
        .route("/api/v1/readiness", get(api::readiness::readiness))
        .route(
            "/api/v1/devices",
            get(api::devices::list_devices).post(api::devices::register_devices),
        )
        .route("/api/v1/devices/{id}", get(api::devices::device_detail))
        .route(
            "/api/v1/devices/{id}/lifecycle",
            post(api::enrolment::move_device),
        )
        .route(
            "/api/v1/registry/import",
            post(api::registry::import_registry).layer(DefaultBodyLimit::max(64 * 1024 * 1024)),
        )
        .route("/api/v1/registry/counties", get(api::registry::counties))
        .route("/api/v1/baselines", get(api::baselines::baselines))
        .route(
            "/api/v1/baselines/{model}",
            put(api::baselines::set_baseline),
        )
        .route("/api/v1/broker", get(api::broker::broker))
        .route(
            "/api/v1/tokens",
            get(api::tokens::list_tokens).post(api::tokens::create_token),
        )
        .route("/api/v1/tokens/{id}", delete(api::tokens::revoke_token))
        .route("/api/v1/audit", get(api::audit::audit_list))
        .route("/api/v1/audit/verify", get(api::audit::audit_verify))
        .route("/api/v1/enrol/batch", post(api::enrolment::enrol_batch))
        .route(
            "/api/v1/enrol/shipments/{id}",
            get(api::enrolment::shipment_status),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    Router::new()
        .route("/healthz", get(api::health::healthz))
        // The enrolment token is the credential here, not a bearer token.
        .route("/api/v1/enrol", post(api::enrolment::enrol_device))
        .merge(protected)
        .layer(DefaultBodyLimit::max(16 * 1024 * 1024))
        .with_state(state)
}

/// Run `change` only after its audit entry is written, so no change made
/// through the API is missing from the log; a change that then fails gets a
/// `….failed` entry after it.
pub(crate) async fn audited<T>(
    st: &AppState,
    caller: &Caller,
    action: &str,
    target: &str,
    detail: serde_json::Value,
    change: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    st.access.record(caller, action, target, detail).await?;
    match change.await {
        Ok(v) => Ok(v),
        Err(e) => {
            st.access
                .failed(caller, action, target, &e.to_string())
                .await;
            Err(e)
        }
    }
}

/// Parse a raw request field once, at the boundary.
pub(crate) fn parse<T: std::str::FromStr>(field: &'static str, v: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    v.parse().map_err(|e: T::Err| ApiError::BadField {
        field,
        reason: e.to_string(),
    })
}

/// An optional field: absent or empty is `None`.
pub(crate) fn opt<T: std::str::FromStr>(
    field: &'static str,
    v: Option<&str>,
) -> Result<Option<T>, ApiError>
where
    T::Err: std::fmt::Display,
{
    v.filter(|s| !s.is_empty())
        .map(|s| parse(field, s))
        .transpose()
}

#[cfg(test)]
mod tests;
