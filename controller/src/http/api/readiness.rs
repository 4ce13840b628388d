//! Provinces and readiness per province or county.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::{Extension, Json};
use fleet_protocol::ProvinceCode;
use serde::{Deserialize, Serialize};

use crate::access::Caller;
use crate::domain::auth::Permission;
use crate::domain::readiness::Counts;
use crate::http::{opt, ApiError, AppState};

#[derive(Serialize)]
pub struct ProvinceOut {
    code: String,
    name_en: &'static str,
    name_fa: &'static str,
}

pub async fn provinces(
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
pub struct ReadinessQuery {
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

pub async fn readiness(
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
            return Err(ApiError::BadField {
                field: "by",
                reason: format!("{other:?} is not one of province, county"),
            })
        }
    };
    Ok(Json(rows))
}
