//! Devices: list, detail, registration.

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use fleet_protocol::{CountyCode, DeviceId, Model, ProvinceCode, StationId};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::access::Caller;
use crate::clock::unix_ms;
use crate::domain::auth::Permission;
use crate::domain::fleet::{Device, DeviceFilter, ReadinessFilter, Registration};
use crate::domain::lifecycle::Lifecycle;
use crate::domain::readiness::Reason;
use crate::domain::registration::{self, RegistrationError};
use crate::http::{audited, opt, parse, ApiError, AppState};

#[derive(Deserialize)]
pub struct ListQuery {
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

pub async fn list_devices(
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

pub async fn device_detail(
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
            .ok_or_else(|| ApiError::UnknownDevice(id.clone()))?;
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

/// Parse one device of a registration request and check it against the
/// caller's scope, the registry and the fleet. The outer error is the
/// store failing; the inner one is what is wrong with this device.
pub(crate) async fn validate_registration(
    st: &AppState,
    caller: &Caller,
    r: &DeviceRegistration,
    now: u64,
) -> Result<Result<Registration, RegistrationError>, ApiError> {
    let given = match parse_registration(r) {
        Ok(g) => g,
        Err(e) => return Ok(Err(e)),
    };
    let station_county = match &given.station {
        Some(s) => match st.store.station_county(s).await? {
            Some(of) => Some((s, of)),
            None => return Ok(Err(RegistrationError::UnknownStation(s.clone()))),
        },
        None => None,
    };
    let existing = st.fleet().get(&given.id).map(|d| d.reg.clone());
    let county = match registration::county_of(given.county.clone(), station_county) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let county_known = match &county {
        Some(c) => st.store.county_exists(c).await?,
        None => true,
    };
    Ok(decide(
        caller,
        given,
        existing.as_ref(),
        county,
        county_known,
        now,
    ))
}

pub struct Given {
    id: DeviceId,
    model: Model,
    province: ProvinceCode,
    county: Option<CountyCode>,
    station: Option<StationId>,
    lifecycle: Option<Lifecycle>,
}

fn parse_registration(r: &DeviceRegistration) -> Result<Given, RegistrationError> {
    let present = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    Ok(Given {
        id: DeviceId::parse(&r.id)?,
        model: Model::parse(&r.model)?,
        province: ProvinceCode::parse(&r.province)?,
        county: present(&r.county)
            .map(|c| CountyCode::parse(&c))
            .transpose()?,
        station: present(&r.station)
            .map(|s| StationId::parse(&s))
            .transpose()?,
        lifecycle: present(&r.lifecycle).map(|l| l.parse()).transpose()?,
    })
}

fn decide(
    caller: &Caller,
    g: Given,
    existing: Option<&Registration>,
    county: Option<CountyCode>,
    county_known: bool,
    now: u64,
) -> Result<Registration, RegistrationError> {
    if !caller.principal.sees(g.province) {
        return Err(RegistrationError::ProvinceOutOfScope(g.province));
    }
    if existing.is_some_and(|e| !caller.principal.sees(e.province)) {
        return Err(RegistrationError::DeviceOutOfScope(g.id));
    }
    if let Some(c) = &county {
        if c.province() != g.province {
            return Err(RegistrationError::CountyElsewhere {
                county: c.clone(),
                province: g.province,
            });
        }
        if !county_known {
            return Err(RegistrationError::UnknownCounty(c.clone()));
        }
    }
    let lifecycle = registration::lifecycle_of(&g.id, existing.map(|e| e.lifecycle), g.lifecycle)?;
    Ok(Registration {
        id: g.id,
        model: g.model,
        province: g.province,
        county,
        station: g.station,
        lifecycle,
        registered_at_ms: existing.map_or(now, |e| e.registered_at_ms),
    })
}

pub async fn register_devices(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<RegisterRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Permission::RegisterDevices)?;
    let now = unix_ms();
    let mut regs = Vec::with_capacity(req.devices.len());
    let mut errors = Vec::new();
    for (index, r) in req.devices.iter().enumerate() {
        match validate_registration(&st, &caller, r, now).await? {
            Ok(reg) => regs.push(reg),
            Err(e) => errors.push(json!({ "index": index, "id": r.id, "message": e.to_string() })),
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
