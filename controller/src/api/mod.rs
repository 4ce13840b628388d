//! The HTTP API under `/api/v1`, plus `/healthz` and `/metrics`. The router
//! is built by [`app`], so tests drive it with `oneshot` and no socket.

mod error;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Extension, Json, Router};
use fleet_protocol::{CountyCode, DeviceId, Model, ProvinceCode, StationId, Version};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use error::ApiError;

use crate::access::{Access, AccessError, Caller};
use crate::auth::{Permission, Role};
use crate::fleet::{Device, DeviceFilter, Fleet, Lifecycle, ReadinessFilter, Registration};
use crate::readiness::{Counts, Reason};
use crate::registry;
use crate::store::Store;
use crate::unix_ms;

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
    fn fleet(&self) -> std::sync::RwLockReadGuard<'_, Fleet> {
        self.fleet.read().expect("fleet lock is never poisoned")
    }

    fn fleet_mut(&self) -> std::sync::RwLockWriteGuard<'_, Fleet> {
        self.fleet.write().expect("fleet lock is never poisoned")
    }
}

pub fn app(state: AppState) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/provinces", get(provinces))
        .route("/api/v1/readiness", get(readiness))
        .route("/api/v1/devices", get(list_devices).post(register_devices))
        .route("/api/v1/devices/{id}", get(device_detail))
        .route("/api/v1/devices/{id}/lifecycle", post(move_device))
        .route(
            "/api/v1/registry/import",
            post(import_registry).layer(DefaultBodyLimit::max(64 * 1024 * 1024)),
        )
        .route("/api/v1/registry/counties", get(counties))
        .route("/api/v1/baselines", get(baselines))
        .route("/api/v1/baselines/{model}", put(set_baseline))
        .route("/api/v1/broker", get(broker))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .route("/api/v1/audit", get(audit_list))
        .route("/api/v1/audit/verify", get(audit_verify))
        .route("/api/v1/enrol/batch", post(enrol_batch))
        .route("/api/v1/enrol/shipments/{id}", get(shipment_status))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(healthz))
        // The enrolment token is the credential here, not a bearer token.
        .route("/api/v1/enrol", post(enrol_device))
        .merge(protected)
        .layer(DefaultBodyLimit::max(16 * 1024 * 1024))
        .with_state(state)
}

/// Resolve the bearer token into the caller, or refuse with 401.
async fn authenticate(
    State(st): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "missing bearer token (fleetctl: --token or FLEETCTL_TOKEN)".into(),
            )
        })?;
    let token = header
        .strip_prefix("Bearer ")
        .ok_or_else(|| {
            ApiError::Unauthorized("the Authorization header must be \"Bearer TOKEN\"".into())
        })?
        .trim();
    let principal = st
        .access
        .authenticate(token)
        .ok_or_else(|| ApiError::Unauthorized("invalid or revoked token".into()))?;
    let source = req
        .extensions()
        .get::<ConnectInfo<crate::https::Peer>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0 .0.ip().to_string());
    req.extensions_mut().insert(Caller { principal, source });
    Ok(next.run(req).await)
}

impl Caller {
    fn require(&self, p: Permission) -> Result<(), ApiError> {
        if self.principal.may(p) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "role {} may not do this",
                self.principal.role
            )))
        }
    }

    /// Refuse an explicit province outside the caller's scope.
    fn require_province(&self, p: ProvinceCode) -> Result<(), ApiError> {
        if self.principal.sees(p) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "your token is limited to {}",
                self.principal
                    .provinces
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }
}

/// Run `change` only after its audit entry is written, so no change made
/// through the API is missing from the log; a change that then fails gets a
/// `….failed` entry after it.
pub(super) async fn audited<T>(
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

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Invalid(m) => ApiError::BadRequest(m),
            AccessError::Store(s) => ApiError::Store(s),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

pub(super) fn parse<T: std::str::FromStr>(what: &str, v: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    v.parse()
        .map_err(|e| ApiError::BadRequest(format!("{what}: {e}")))
}

fn opt<T: std::str::FromStr>(what: &str, v: Option<&str>) -> Result<Option<T>, ApiError>
where
    T::Err: std::fmt::Display,
{
    v.filter(|s| !s.is_empty())
        .map(|s| parse(what, s))
        .transpose()
}

async fn healthz(State(st): State<AppState>) -> impl IntoResponse {
    let broker_up = tokio::net::TcpStream::connect((st.broker.host.as_str(), st.broker.port))
        .await
        .is_ok();
    Json(json!({
        "status": if broker_up { "ok" } else { "degraded" },
        "broker": if broker_up { "up" } else { "down" },
        "devices": st.fleet().len(),
    }))
}

async fn metrics(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<impl IntoResponse, ApiError> {
    caller.require(Permission::ReadFleet)?;
    if caller.principal.is_scoped() {
        return Err(ApiError::Forbidden(
            "metrics cover every province; a province-scoped token cannot read them".into(),
        ));
    }
    {
        let fleet = st.fleet();
        for p in ProvinceCode::all() {
            let c = fleet.province_counts(p);
            let province = p.to_string();
            metrics::gauge!("fleet_devices", "province" => province.clone(), "readiness" => "ready")
                .set(f64::from(c.ready));
            for r in Reason::ALL {
                metrics::gauge!("fleet_devices", "province" => province.clone(), "readiness" => r.as_str())
                    .set(f64::from(c.reason(r)));
            }
        }
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    ))
}

#[derive(Serialize)]
struct ProvinceOut {
    code: String,
    name_en: &'static str,
    name_fa: &'static str,
}

async fn provinces(
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<ProvinceOut>>, ApiError> {
    caller.require(Permission::ReadFleet)?;
    Ok(Json(
        ProvinceCode::all()
            .map(|p| ProvinceOut {
                code: p.to_string(),
                name_en: p.info().name_en,
                name_fa: p.info().name_fa,
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
struct ReadinessQuery {
    by: Option<String>,
    province: Option<String>,
}

/// One row of the readiness report.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ReadinessRow {
    pub province: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub province_name: Option<String>,
    #[serde(default, skip_serializing_if = "is_absent")]
    pub county: Option<Option<String>>,
    pub total: u32,
    pub ready: u32,
    pub reasons: BTreeMap<String, u32>,
}

fn is_absent(v: &Option<Option<String>>) -> bool {
    v.is_none()
}

fn row(province: ProvinceCode, county: Option<Option<String>>, c: &Counts) -> ReadinessRow {
    ReadinessRow {
        province: province.to_string(),
        province_name: Some(province.info().name_en.to_owned()),
        county,
        total: c.total,
        ready: c.ready,
        reasons: c
            .reasons()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    }
}

async fn readiness(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ReadinessQuery>,
) -> Result<Json<Vec<ReadinessRow>>, ApiError> {
    caller.require(Permission::ReadFleet)?;
    let province: Option<ProvinceCode> = opt("province", q.province.as_deref())?;
    if let Some(p) = province {
        caller.require_province(p)?;
    }
    let sees = |p: ProvinceCode| caller.principal.sees(p);
    let fleet = st.fleet();
    let rows = match q.by.as_deref().unwrap_or("province") {
        "province" => ProvinceCode::all()
            .filter(|p| province.is_none_or(|want| *p == want) && sees(*p))
            .map(|p| row(p, None, &fleet.province_counts(p)))
            .collect(),
        "county" => fleet
            .county_counts(province)
            .filter(|((p, _), _)| sees(*p))
            .map(|((p, c), counts)| row(*p, Some(c.as_ref().map(|c| c.to_string())), counts))
            .collect(),
        other => {
            return Err(ApiError::BadRequest(format!(
                "by: {other:?} is not one of province, county"
            )))
        }
    };
    Ok(Json(rows))
}

#[derive(Deserialize)]
struct ListQuery {
    province: Option<String>,
    county: Option<String>,
    model: Option<String>,
    readiness: Option<String>,
    page: Option<usize>,
    per_page: Option<usize>,
}

/// A device in lists.
#[derive(Debug, Serialize)]
pub struct DeviceSummary {
    pub id: String,
    pub model: String,
    pub province: String,
    pub county: Option<String>,
    pub station: Option<String>,
    pub lifecycle: Lifecycle,
    pub readiness: &'static str,
    pub presence: Option<fleet_protocol::PresenceStatus>,
    pub firmware: Option<String>,
    pub last_seen_ms: Option<u64>,
}

fn summary(d: &Device) -> DeviceSummary {
    DeviceSummary {
        id: d.reg.id.to_string(),
        model: d.reg.model.to_string(),
        province: d.reg.province.to_string(),
        county: d.reg.county.as_ref().map(ToString::to_string),
        station: d.reg.station.as_ref().map(ToString::to_string),
        lifecycle: d.reg.lifecycle,
        readiness: d.reason.map_or("ready", Reason::as_str),
        presence: d.status.presence,
        firmware: d.status.state.as_ref().map(|s| s.firmware.to_string()),
        last_seen_ms: d.status.last_seen_ms,
    }
}

pub const MAX_PER_PAGE: usize = 1000;

async fn list_devices(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Permission::ReadFleet)?;
    let filter = DeviceFilter {
        province: opt("province", q.province.as_deref())?,
        county: opt("county", q.county.as_deref())?,
        model: opt("model", q.model.as_deref())?,
        readiness: opt::<ReadinessFilter>("readiness", q.readiness.as_deref())?,
    };
    if let Some(p) = filter.province {
        caller.require_province(p)?;
    }
    if let Some(c) = &filter.county {
        caller.require_province(c.province())?;
    }
    let per_page = q.per_page.unwrap_or(100).clamp(1, MAX_PER_PAGE);
    let page = q.page.unwrap_or(1).max(1);
    let fleet = st.fleet();
    let mut total = 0usize;
    let mut items = Vec::new();
    for d in fleet
        .devices(&filter)
        .filter(|d| caller.principal.sees(d.reg.province))
    {
        if total >= (page - 1) * per_page && items.len() < per_page {
            items.push(summary(d));
        }
        total += 1;
    }
    Ok(Json(json!({
        "total": total,
        "page": page,
        "per_page": per_page,
        "items": items,
    })))
}

async fn device_detail(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Permission::ReadFleet)?;
    let id: DeviceId = parse("device id", &id)?;
    let (summary, status) = {
        let fleet = st.fleet();
        // Another province's device looks exactly like one that does not exist.
        let d = fleet
            .get(&id)
            .filter(|d| caller.principal.sees(d.reg.province))
            .ok_or_else(|| ApiError::NotFound(format!("device {id} is not registered")))?;
        (summary(d), d.status.clone())
    };
    let events = st.store.recent_events(&id, 20).await?;
    Ok(Json(json!({
        "device": summary,
        "state": status.state,
        "health": status.health,
        "health_at_ms": status.health_at_ms,
        "events": events,
    })))
}

/// One device in a registration request.
#[derive(Debug, Deserialize, Serialize)]
pub struct DeviceRegistration {
    pub id: String,
    pub model: String,
    pub province: String,
    #[serde(default)]
    pub county: Option<String>,
    #[serde(default)]
    pub station: Option<String>,
    /// `registered` (default) or `enrolled`. Until certificate enrolment
    /// exists, the registering operator vouches for enrolment.
    #[serde(default)]
    pub lifecycle: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct RegisterRequest {
    pub devices: Vec<DeviceRegistration>,
}

pub(super) async fn validate_registration(
    st: &AppState,
    caller: &Caller,
    r: &DeviceRegistration,
    now: u64,
) -> Result<Registration, String> {
    let id = DeviceId::parse(&r.id).map_err(|e| e.to_string())?;
    let model = Model::parse(&r.model).map_err(|e| e.to_string())?;
    let province = ProvinceCode::parse(&r.province).map_err(|e| e.to_string())?;
    if !caller.principal.sees(province) {
        return Err(format!("province {province} is outside your token's scope"));
    }
    if let Some(existing) = st.fleet().get(&id) {
        if !caller.principal.sees(existing.reg.province) {
            return Err(format!(
                "device {id} is registered in a province outside your token's scope"
            ));
        }
    }
    let mut county = r
        .county
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(CountyCode::parse)
        .transpose()
        .map_err(|e| e.to_string())?;
    let station = r
        .station
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(StationId::parse)
        .transpose()
        .map_err(|e| e.to_string())?;
    if let Some(s) = &station {
        let of = st
            .store
            .station_county(s)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!("station {s} is not in the registry (fleetctl registry import)")
            })?;
        match &county {
            Some(c) if c.as_str() != of => {
                return Err(format!("station {s} is in county {of}, not {c}"))
            }
            Some(_) => {}
            None => county = Some(CountyCode::parse(&of).map_err(|e| e.to_string())?),
        }
    }
    if let Some(c) = &county {
        if c.province() != province {
            return Err(format!("county {c} is not in province {province}"));
        }
        if !st.store.county_exists(c).await.map_err(|e| e.to_string())? {
            return Err(format!(
                "county {c} is not in the registry (fleetctl registry import)"
            ));
        }
    }
    // A new device starts registered (or enrolled, said by the operator;
    // see docs/decisions/0002). An existing device keeps its lifecycle: it
    // changes only through enrolment and `fleetctl device ship|deploy|retire`.
    let existing = st.fleet().get(&id).map(|d| d.reg.lifecycle);
    let asked = match r.lifecycle.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<Lifecycle>()?),
    };
    let lifecycle = match (existing, asked) {
        (Some(now), None) => now,
        (Some(now), Some(a)) if a == now => now,
        (Some(now), Some(a)) => {
            return Err(format!(
                "device {id} is {}; its lifecycle changes only through enrolment or fleetctl device ship|deploy|retire, not to {} by registration",
                now.as_str(),
                a.as_str()
            ))
        }
        (None, None) => Lifecycle::Registered,
        (None, Some(a @ (Lifecycle::Registered | Lifecycle::Enrolled))) => a,
        (None, Some(a)) => {
            return Err(format!(
                "a new device starts registered (or enrolled), not {}",
                a.as_str()
            ))
        }
    };
    let registered_at_ms = st.fleet().get(&id).map_or(now, |d| d.reg.registered_at_ms);
    Ok(Registration {
        id,
        model,
        province,
        county,
        station,
        lifecycle,
        registered_at_ms,
    })
}

async fn register_devices(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<RegisterRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Permission::RegisterDevices)?;
    let now = unix_ms();
    let mut regs = Vec::with_capacity(req.devices.len());
    let mut errors = Vec::new();
    for (index, r) in req.devices.iter().enumerate() {
        match validate_registration(&st, &caller, r, now).await {
            Ok(reg) => regs.push(reg),
            Err(message) => errors.push(json!({ "index": index, "id": r.id, "message": message })),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid {
            message: format!(
                "{} of {} devices are invalid; none was registered",
                errors.len(),
                req.devices.len()
            ),
            errors: serde_json::Value::Array(errors),
        });
    }
    let n = regs.len();
    let ids: Vec<String> = regs.iter().map(|r| r.id.to_string()).collect();
    let target = if n == 1 {
        ids[0].clone()
    } else {
        format!("{n} devices")
    };
    audited(
        &st,
        &caller,
        "device.register",
        &target,
        json!({ "devices": ids }),
        async { Ok(st.store.upsert_devices(&regs).await?) },
    )
    .await?;
    let fleet_size = {
        let mut fleet = st.fleet_mut();
        for reg in regs {
            fleet.register(reg, now);
        }
        fleet.len()
    };
    Ok(Json(json!({ "registered": n, "fleet_size": fleet_size })))
}

async fn import_registry(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: String,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Permission::ImportRegistry)?;
    let reg = registry::parse_csv(&body).map_err(|errors| ApiError::Invalid {
        message: format!(
            "the registry file has {} bad line(s); nothing was imported",
            errors.len()
        ),
        errors: serde_json::to_value(errors).expect("line errors serialize"),
    })?;
    audited(
        &st,
        &caller,
        "registry.import",
        "registry",
        json!({ "counties": reg.counties.len(), "stations": reg.stations.len() }),
        async { Ok(st.store.import_registry(&reg).await?) },
    )
    .await?;
    Ok(Json(json!({
        "counties": reg.counties.len(),
        "stations": reg.stations.len(),
    })))
}

#[derive(Deserialize)]
struct CountyQuery {
    province: Option<String>,
}

async fn counties(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<CountyQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Permission::ReadFleet)?;
    let province: Option<ProvinceCode> = opt("province", q.province.as_deref())?;
    if let Some(p) = province {
        caller.require_province(p)?;
    }
    let rows = st.store.counties(province).await?;
    Ok(Json(serde_json::Value::Array(
        rows.into_iter()
            .filter(|(_, p, _, _, _)| {
                ProvinceCode::parse(p).is_ok_and(|p| caller.principal.sees(p))
            })
            .map(|(code, province, name_en, name_fa, stations)| {
                json!({ "code": code, "province": province, "name_en": name_en, "name_fa": name_fa, "stations": stations })
            })
            .collect(),
    )))
}

async fn baselines(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<BTreeMap<String, String>>, ApiError> {
    caller.require(Permission::ReadFleet)?;
    Ok(Json(
        st.fleet()
            .baselines()
            .iter()
            .map(|(m, v)| (m.to_string(), v.to_string()))
            .collect(),
    ))
}

#[derive(Deserialize)]
struct BaselineBody {
    version: String,
}

async fn set_baseline(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(model): Path<String>,
    Json(body): Json<BaselineBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Permission::SetBaseline)?;
    let model: Model = parse("model", &model)?;
    let version: Version = parse("version", &body.version)?;
    let now = unix_ms();
    audited(
        &st,
        &caller,
        "baseline.set",
        model.as_str(),
        json!({ "version": version }),
        async { Ok(st.store.set_baseline(&model, &version, now).await?) },
    )
    .await?;
    st.fleet_mut()
        .set_baseline(model.clone(), version.clone(), now);
    Ok(Json(json!({ "model": model, "version": version })))
}

async fn broker(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<BrokerInfo>, ApiError> {
    caller.require(Permission::ReadFleet)?;
    Ok(Json(st.broker.clone()))
}

#[derive(Deserialize)]
struct TokenRequest {
    role: String,
    #[serde(default)]
    provinces: Vec<String>,
    name: Option<String>,
}

async fn create_token(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<TokenRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Permission::ManageTokens)?;
    let role: Role = parse("role", &req.role)?;
    let provinces = req
        .provinces
        .iter()
        .map(|p| parse::<ProvinceCode>("province", p))
        .collect::<Result<Vec<_>, _>>()?;
    let name = req.name.unwrap_or_else(|| role.as_str().to_owned());
    let (row, token) = st
        .access
        .create_token(&caller, &name, role, provinces)
        .await?;
    Ok(Json(
        json!({ "token": token, "id": row.id, "name": row.name, "role": row.role, "provinces": row.provinces }),
    ))
}

async fn list_tokens(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Permission::ManageTokens)?;
    Ok(Json(
        serde_json::to_value(st.access.tokens().await?).expect("token rows serialize"),
    ))
}

async fn revoke_token(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Permission::ManageTokens)?;
    if st.access.revoke(&caller, &id).await? {
        Ok(Json(json!({ "revoked": id })))
    } else {
        Err(ApiError::NotFound(format!("no live token with id {id}")))
    }
}

#[derive(Deserialize)]
struct AuditQuery {
    actor: Option<String>,
    target: Option<String>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    limit: Option<u32>,
}

async fn audit_list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Permission::ReadAudit)?;
    let entries = st
        .store
        .audit_entries(&crate::store::AuditFilter {
            actor: q.actor.filter(|s| !s.is_empty()),
            target: q.target.filter(|s| !s.is_empty()),
            since_ms: q.since_ms,
            until_ms: q.until_ms,
            limit: q.limit.unwrap_or(100).min(10_000),
        })
        .await?;
    Ok(Json(
        serde_json::to_value(entries).expect("entries serialize"),
    ))
}

async fn audit_verify(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Permission::ReadAudit)?;
    Ok(Json(match st.access.verify().await? {
        Ok(n) => json!({ "intact": true, "entries": n }),
        Err(broken) => {
            json!({ "intact": false, "first_broken": broken.seq, "reason": broken.reason })
        }
    }))
}

mod enrolment;
use enrolment::{enrol_batch, enrol_device, move_device, shipment_status};

#[cfg(test)]
mod tests;
