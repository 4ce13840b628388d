//! Provinces and readiness per province or county.

use axum::extract::{Query, State};
use axum::{Extension, Json};
use fleet_api::types::{Grouping, LinkStatus, ProvinceRow, ReadinessQuery, ReadinessRow, Reason};
use fleet_protocol::{CountyCode, ProvinceCode};

use crate::access::Caller;
use crate::domain::fleet::Fleet;
use crate::domain::readiness::Counts;
use crate::http::{opt, ApiError, AppState};

pub async fn provinces() -> Json<Vec<ProvinceRow>> {
    Json(
        ProvinceCode::all()
            .map(|p| ProvinceRow {
                code: p,
                name_en: p.info().name_en.to_owned(),
                name_fa: p.info().name_fa.to_owned(),
            })
            .collect(),
    )
}

fn row(
    fleet: &Fleet,
    province: ProvinceCode,
    county: Option<Option<CountyCode>>,
    c: &Counts,
) -> ReadinessRow {
    ReadinessRow {
        province,
        province_name: Some(province.info().name_en.to_owned()),
        county,
        total: c.total,
        ready: c.ready,
        reasons: Reason::ALL
            .into_iter()
            .filter(|r| c.reason(*r) > 0)
            .map(|r| (r, c.reason(r)))
            .collect(),
        link: fleet.link_of(province).map(|(broker, l)| LinkStatus {
            broker: broker.to_owned(),
            up: l.up,
            since_ms: l.since_ms,
        }),
    }
}

pub async fn readiness(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ReadinessQuery>,
) -> Result<Json<Vec<ReadinessRow>>, ApiError> {
    let province: Option<ProvinceCode> = opt("province", q.province.as_deref())?;
    if let Some(p) = province {
        caller.require_province(p)?;
    }
    let by: Grouping = opt("by", q.by.as_deref())?.unwrap_or_default();
    let sees = |p: ProvinceCode| caller.principal.sees(p);
    let fleet = st.fleet();
    let rows = match by {
        Grouping::Province => ProvinceCode::all()
            .filter(|p| province.is_none_or(|want| *p == want) && sees(*p))
            .map(|p| row(&fleet, p, None, &fleet.province_counts(p)))
            .collect(),
        Grouping::County => fleet
            .county_counts(province)
            .filter(|((p, _), _)| sees(*p))
            .map(|((p, c), counts)| row(&fleet, *p, Some(c.clone()), counts))
            .collect(),
    };
    Ok(Json(rows))
}
