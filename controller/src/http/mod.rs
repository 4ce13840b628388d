//! The HTTP API under `/api/v1`, plus `/healthz`, `/metrics` and the web
//! console under `/ui` ([`crate::ui`]). The router
//! is built by [`app`], so tests drive it with `oneshot` and no socket.

pub mod api;
pub mod auth;
mod error;
pub mod serve;
pub mod tls;

use std::sync::{Arc, RwLock};

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;
use fleet_api::endpoints::{self as endpoint, Auth, Endpoint};
use fleet_api::types::BrokerInfo;
use metrics_exporter_prometheus::PrometheusHandle;

pub use error::{ApiError, Unauthenticated};

use crate::access::{Access, Caller};
use crate::domain::fleet::Fleet;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub fleet: Arc<RwLock<Fleet>>,
    pub store: Store,
    /// Where devices reach the broker (told to enrolling devices and fleet-sim).
    pub broker: BrokerInfo,
    pub metrics: PrometheusHandle,
    pub access: Arc<Access>,
    /// The data directory (the CA's files are under it).
    pub data_dir: std::path::PathBuf,
    /// How a retirement reaches the broker (managed reload, external hook).
    pub revocation: crate::broker::Revocation,
    /// One lifecycle change (enrolment, move, retirement with its CRL) at a time.
    pub lifecycle_lock: Arc<tokio::sync::Mutex<()>>,
    /// One freeze change (store and fleet) at a time, and which one is the
    /// newest (an older background re-publication stops).
    pub freeze_changes: Arc<api::freeze::FreezeChanges>,
    /// Set by ingest: whether it holds a live session with the broker.
    pub ingest_connected: Arc<std::sync::atomic::AtomicBool>,
    /// Lifetimes of the certificates issued (`[pki]`).
    pub cert_policy: crate::pki::CertPolicy,
    /// The ingest's MQTT client: the one publisher of commands and desired state.
    pub publisher: crate::ingest::Publisher,
    /// The firmware repository (set up by `fleet-controller firmware-init`).
    pub firmware: crate::firmware::Firmware,
    /// The largest log upload taken (`[commands] max_log_bytes`).
    pub max_log_bytes: u64,
    /// The rollout loop, which owns every rollout.
    pub rollouts: crate::rollouts::Rollouts,
    /// The provincial broker tier, every managed broker's port set: which
    /// broker serves a province (told to its devices at enrolment).
    pub tier: Arc<crate::broker::tier::Tier>,
    /// The web console's sessions and settings (`/ui`).
    pub console: Arc<crate::ui::Console>,
}

impl AppState {
    pub(crate) fn fleet(&self) -> std::sync::RwLockReadGuard<'_, Fleet> {
        self.fleet.read().expect("fleet lock is never poisoned")
    }

    pub(crate) fn fleet_mut(&self) -> std::sync::RwLockWriteGuard<'_, Fleet> {
        self.fleet.write().expect("fleet lock is never poisoned")
    }
}

/// The body limit of every route not named below (JSON of a token, an
/// enrolment request with its CSR, a baseline, a lifecycle move). A larger
/// body answers 413 before it is parsed.
pub const JSON_BODY_LIMIT: usize = 64 * 1024;
/// `POST /api/v1/devices`: up to `MAX_DEVICES_PER_REQUEST` (10,000) devices
/// at a few hundred bytes each.
pub const REGISTER_BODY_LIMIT: usize = 4 * 1024 * 1024;
/// `POST /api/v1/commands`: a selector naming up to
/// `domain::commands::MAX_SELECTOR_ENTRIES` (10,000) devices, counties or
/// provinces at tens of bytes each, so the cap, not the body limit, is
/// what an operator meets (and its 400 says so).
pub const COMMANDS_BODY_LIMIT: usize = 1024 * 1024;
/// `POST /api/v1/enrol/batch`: a shipment CSV of up to
/// `MAX_SHIPMENT_ROWS` (10,000) devices at about 60 bytes a line.
pub const SHIPMENT_BODY_LIMIT: usize = 2 * 1024 * 1024;
/// `POST /api/v1/registry/import`: the whole country's stations (about
/// 55,000 lines of 80 to 150 bytes) with room to spare.
pub const REGISTRY_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// `POST /api/v1/firmware/targets` and `…/root`: signed TUF metadata; a
/// targets.json lists every image ever signed (a few hundred bytes each).
pub const METADATA_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Every route the controller serves, each with its entry in fleet-api's
/// endpoint table: the path and method come from there, and so does who
/// may call it, which the router enforces and the OpenAPI document shows.
pub fn routes() -> Vec<(&'static Endpoint, MethodRouter<AppState>)> {
    use api::*;
    vec![
        (&endpoint::HEALTHZ, get(health::healthz)),
        (&endpoint::OPENAPI, get(openapi::document)),
        (&endpoint::METRICS, get(health::metrics)),
        (&endpoint::PROVINCES, get(readiness::provinces)),
        (&endpoint::READINESS, get(readiness::readiness)),
        (&endpoint::DEVICES, get(devices::list_devices)),
        (
            &endpoint::REGISTER,
            post(devices::register_devices).layer(DefaultBodyLimit::max(REGISTER_BODY_LIMIT)),
        ),
        (&endpoint::DEVICE, get(devices::device_detail)),
        (&endpoint::MOVE_DEVICE, post(enrolment::move_device)),
        (&endpoint::COMMAND, post(commands::send_command)),
        (
            &endpoint::IMPORT_REGISTRY,
            post(registry::import_registry).layer(DefaultBodyLimit::max(REGISTRY_BODY_LIMIT)),
        ),
        (&endpoint::COUNTIES, get(registry::counties)),
        (&endpoint::BASELINES, get(baselines::baselines)),
        (&endpoint::SET_BASELINE, put(baselines::set_baseline)),
        (&endpoint::BROKER, get(broker::broker)),
        (&endpoint::BROKERS, get(broker::brokers)),
        (&endpoint::PKI, get(pki::status)),
        (&endpoint::TOKENS, get(tokens::list_tokens)),
        (&endpoint::CREATE_TOKEN, post(tokens::create_token)),
        (&endpoint::REVOKE_TOKEN, delete(tokens::revoke_token)),
        (&endpoint::AUDIT, get(audit::audit_list)),
        (&endpoint::AUDIT_VERIFY, get(audit::audit_verify)),
        (
            &endpoint::ENROL_BATCH,
            post(enrolment::enrol_batch).layer(DefaultBodyLimit::max(SHIPMENT_BODY_LIMIT)),
        ),
        (&endpoint::SHIPMENT, get(enrolment::shipment_status)),
        // The enrolment token in the body is the credential here.
        (&endpoint::ENROL, post(enrolment::enrol_device)),
        // Signed content for devices, which hold no token.
        (&endpoint::ARTIFACT, get(artifacts::artifact)),
        // Firmware updates (issue 9).
        (&endpoint::FREEZE, get(freeze::freeze)),
        (&endpoint::SET_FREEZE, put(freeze::set_freeze)),
        (&endpoint::ADD_FREEZE, post(freeze::add_freeze)),
        (&endpoint::CLEAR_FREEZE, delete(freeze::clear_freeze)),
        // Rollouts (issue 10).
        (&endpoint::CREATE_ROLLOUT, post(rollouts::create)),
        (&endpoint::ROLLOUTS, get(rollouts::list)),
        (&endpoint::ROLLOUT, get(rollouts::show)),
        (&endpoint::ROLLOUT_MEMBERS, get(rollouts::members)),
        (&endpoint::START_ROLLOUT, post(rollouts::start)),
        (&endpoint::PAUSE_ROLLOUT, post(rollouts::pause)),
        (&endpoint::RESUME_ROLLOUT, post(rollouts::resume)),
        (&endpoint::ABORT_ROLLOUT, post(rollouts::abort)),
        (&endpoint::RETRY_ROLLOUT, post(rollouts::retry_failed)),
        (&endpoint::DEVICE_UPDATE, post(updates::update_device)),
        (&endpoint::FIRMWARE_STATUS, get(firmware::status)),
        // The image is streamed to disk; its own limit is firmware.max_image_bytes.
        (
            &endpoint::UPLOAD_IMAGE,
            put(firmware::upload_image).layer(DefaultBodyLimit::disable()),
        ),
        (&endpoint::IMAGE, get(firmware::image)),
        (
            &endpoint::PUBLISH_TARGETS,
            post(firmware::publish_targets).layer(DefaultBodyLimit::max(METADATA_BODY_LIMIT)),
        ),
        (
            &endpoint::PUBLISH_ROOT,
            post(firmware::publish_root).layer(DefaultBodyLimit::max(METADATA_BODY_LIMIT)),
        ),
        // Signed content for devices, which hold no token and verify it.
        (&endpoint::TUF_METADATA, get(tuf::metadata)),
        (&endpoint::TUF_TARGET, get(tuf::target)),
        (&endpoint::TUF_DELTA, get(tuf::delta)),
        // Remote commands (issue 10).
        (
            &endpoint::COMMANDS,
            post(commands::send_commands).layer(DefaultBodyLimit::max(COMMANDS_BODY_LIMIT)),
        ),
        // The upload ticket's token is the credential; the body is streamed
        // and bounded by commands.max_log_bytes.
        (
            &endpoint::UPLOAD_LOGS,
            put(commands::upload_logs).layer(DefaultBodyLimit::disable()),
        ),
        (&endpoint::DEVICE_LOGS, get(commands::device_logs)),
    ]
}

pub fn app(state: AppState) -> Router {
    let mut router = Router::new();
    for (e, handler) in routes() {
        let handler = match e.auth {
            Auth::Bearer(any_of) => handler
                .route_layer(middleware::from_fn(move |req, next| {
                    auth::require_any(any_of, req, next)
                }))
                .route_layer(middleware::from_fn_with_state(
                    state.clone(),
                    auth::authenticate,
                )),
            Auth::Public | Auth::EnrolmentToken | Auth::UploadTicket => handler,
        };
        router = router.route(e.path, handler);
    }
    router
        .merge(crate::ui::routes())
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
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
