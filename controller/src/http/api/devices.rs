//! Devices: list, detail, registration.

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use fleet_api::types::{
    DesiredState, DeviceDetail, DeviceEvent, DevicePage, DeviceQuery, DeviceRegistration,
    DeviceSummary, EventGap, FreezeSpan, InvalidItem, OutboxDrops, Readiness, RegisterRequest,
    RegisterResponse, UpdateView,
};
use fleet_protocol::{CountyCode, DeviceId, Model, ProvinceCode, StationId};
use serde_json::json;

use crate::access::Caller;
use crate::clock::unix_ms;
use crate::domain::auth::Permission;
use crate::domain::fleet::{Device, DeviceFilter, Registration};
use crate::domain::lifecycle::Lifecycle;
use crate::domain::registration::{self, RegistrationError};
use crate::domain::registry::Errors;
use crate::domain::updates;
use crate::http::{api, audited, opt, parse, ApiError, AppState};

pub(crate) fn summary(d: &Device) -> DeviceSummary {
    DeviceSummary {
        id: d.reg.id.clone(),
        model: d.reg.model.clone(),
        province: d.reg.province,
        county: d.reg.county.clone(),
        station: d.reg.station.clone(),
        lifecycle: d.reg.lifecycle,
        readiness: Readiness::from(d.reason),
        presence: d.status.presence,
        firmware: d.status.state.as_ref().map(|s| s.firmware.clone()),
        last_seen_ms: d.status.last_seen_ms,
    }
}

pub const MAX_PER_PAGE: u64 = 1000;

/// At most this many devices in one registration request (its body limit
/// is `http::REGISTER_BODY_LIMIT`); more is a 400, not 10,000 checks.
pub const MAX_DEVICES_PER_REQUEST: usize = 10_000;

pub async fn list_devices(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<DeviceQuery>,
) -> Result<Json<DevicePage>, ApiError> {
    let filter = DeviceFilter {
        province: opt("province", q.province.as_deref())?,
        county: opt("county", q.county.as_deref())?,
        station: opt("station", q.station.as_deref())?,
        model: opt("model", q.model.as_deref())?,
        readiness: opt("readiness", q.readiness.as_deref())?,
    };
    if let Some(p) = filter.province {
        caller.require_province(p)?;
    }
    if let Some(c) = &filter.county {
        caller.require_province(c.province())?;
    }
    let per_page = q.per_page.unwrap_or(100).clamp(1, MAX_PER_PAGE);
    let page = q.page.unwrap_or(1).max(1);
    let skip = (page - 1).saturating_mul(per_page);
    let fleet = st.fleet();
    let mut total = 0u64;
    let mut items = Vec::new();
    for d in fleet
        .devices(&filter)
        .filter(|d| caller.principal.sees(d.reg.province))
    {
        if total >= skip && (items.len() as u64) < per_page {
            items.push(summary(d));
        }
        total += 1;
    }
    Ok(Json(DevicePage {
        total,
        page,
        per_page,
        items,
    }))
}

pub async fn device_detail(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<DeviceDetail>, ApiError> {
    let id: DeviceId = parse("device id", &id)?;
    let (device, status, desired) = {
        let fleet = st.fleet();
        // Another province's device looks exactly like one that does not exist.
        let d = fleet
            .get(&id)
            .filter(|d| caller.principal.sees(d.reg.province))
            .ok_or_else(|| ApiError::UnknownDevice(id.clone()))?;
        (
            summary(d),
            d.status.clone(),
            crate::domain::desired::desired_of(d.desired.as_ref(), fleet.freeze()),
        )
    };
    let (gaps, missing_events) = st.store.event_gaps(&id, 20).await?;
    let outbox_drops = st.store.outbox_drops(&id).await?;
    let update = st.store.device_update(&id).await?.map(|t| UpdateView {
        artifact: t.artifact.as_str().to_owned(),
        version: t.version,
        phase: t.phase.map(|p| updates::phase_name(p).to_owned()),
        bytes: t.bytes,
        total: t.total,
        outcome: t.outcome.map(|o| o.as_str().to_owned()),
        message: t.message,
        started_ms: t.started_ms,
        last_event_ms: t.last_event_ms,
    });
    let commands = st
        .store
        .device_commands(&id, crate::domain::commands::SHOWN_PER_DEVICE)
        .await?
        .into_iter()
        .map(|c| fleet_api::types::CommandView {
            action: crate::domain::commands::action_name(c.action).to_owned(),
            id: c.id,
            issued_ms: c.issued_ms,
            expires_ms: c.expires_ms,
            issued_by: c.issued_by,
            state: c.state.as_str().to_owned(),
            result_ms: c.result_ms,
            message: c.message,
            upload_bytes: c.upload_bytes,
        })
        .collect();
    let events = st
        .store
        .recent_events(&id, 20)
        .await?
        .into_iter()
        .map(|e| DeviceEvent {
            seq: e.seq,
            at_ms: e.at_ms,
            received_ms: e.received_ms,
            kind: e.kind,
            event: e.event,
        })
        .collect();
    Ok(Json(DeviceDetail {
        device,
        state: status.state,
        health: status.health,
        health_at_ms: status.health_at_ms,
        events,
        desired: DesiredState {
            config_rev: desired.config_rev,
            manifest: desired.firmware.as_ref().map(|f| f.manifest.clone()),
            firmware: desired.firmware.map(|f| f.version),
            agent_manifest: desired.agent.as_ref().map(|f| f.manifest.clone()),
            agent: desired.agent.map(|f| f.version),
            freeze: desired
                .freeze
                .iter()
                .map(|w| FreezeSpan {
                    from_ms: w.from_ms,
                    to_ms: w.to_ms,
                })
                .collect(),
        },
        gaps: gaps
            .into_iter()
            .map(|g| EventGap {
                boot: g.boot,
                from_seq: g.from_seq,
                to_seq: g.to_seq,
                detected_ms: g.detected_ms,
            })
            .collect(),
        missing_events,
        outbox_drops: outbox_drops.map(|d| OutboxDrops {
            health_samples: d.health_samples,
            other_events: d.other_events,
            reports: d.reports,
            oldest_ms: d.oldest_ms,
            newest_ms: d.newest_ms,
            last_report_ms: d.last_report_ms,
        }),
        update,
        commands,
    }))
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
    let reg = Registration {
        id: g.id,
        model: g.model,
        province: g.province,
        county,
        station: g.station,
        lifecycle,
        registered_at_ms: existing.map_or(now, |e| e.registered_at_ms),
    };
    if let Some(e) = existing {
        if registration::reassigns(e, &reg) && !caller.principal.may(Permission::ReassignDevices) {
            return Err(RegistrationError::ReassignNotPermitted {
                id: reg.id,
                lifecycle: e.lifecycle,
            });
        }
    }
    Ok(reg)
}

/// Where a registration moves an existing device, for the audit entry.
fn placement(r: &Registration) -> serde_json::Value {
    json!({ "model": r.model, "province": r.province, "county": r.county, "station": r.station })
}

pub async fn register_devices(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<RegisterRequest>,
) -> Result<Json<RegisterResponse>, ApiError> {
    if req.devices.len() > MAX_DEVICES_PER_REQUEST {
        return Err(ApiError::BadField {
            field: "devices",
            reason: format!(
                "{} devices in one request; at most {MAX_DEVICES_PER_REQUEST}",
                req.devices.len()
            ),
        });
    }
    let now = unix_ms();
    // Registrations, enrolments and lifecycle moves one at a time, so what
    // was validated is what is written.
    let _one_at_a_time = st.lifecycle_lock.lock().await;
    let mut regs = Vec::with_capacity(req.devices.len());
    let mut errors = Errors::default();
    for (index, r) in req.devices.iter().enumerate() {
        match validate_registration(&st, &caller, r, now).await? {
            Ok(reg) => regs.push(reg),
            Err(e) => errors.push(InvalidItem {
                index: Some(index as u64),
                line: None,
                id: Some(r.id.clone()),
                message: e.to_string(),
            }),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid {
            message: format!(
                "{} of {} devices are invalid; none was registered",
                errors.total(),
                req.devices.len()
            ),
            errors: errors.into_list(api::more_items),
        });
    }
    let n = regs.len();
    let ids: Vec<String> = regs.iter().map(|r| r.id.to_string()).collect();
    let target = if n == 1 {
        ids[0].clone()
    } else {
        format!("{n} devices")
    };
    let changes: Vec<serde_json::Value> = {
        let fleet = st.fleet();
        regs.iter()
            .filter_map(|new| {
                let old = &fleet.get(&new.id)?.reg;
                let (before, after) = (placement(old), placement(new));
                (before != after).then(|| json!({ "id": new.id, "before": before, "after": after }))
            })
            .collect()
    };
    let detail = if changes.is_empty() {
        json!({ "devices": ids })
    } else {
        json!({ "devices": ids, "changes": changes })
    };
    audited(&st, &caller, "device.register", &target, detail, async {
        Ok(st.store.upsert_devices(&regs).await?)
    })
    .await?;
    let fleet_size = {
        let mut fleet = st.fleet_mut();
        for reg in regs {
            fleet.register(reg, now);
        }
        fleet.len()
    };
    Ok(Json(RegisterResponse {
        registered: n as u64,
        fleet_size: fleet_size as u64,
    }))
}
