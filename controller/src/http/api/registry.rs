//! Counties and polling stations.

use axum::extract::{Query, State};
use axum::{Extension, Json};
use fleet_api::types::{CountyQuery, CountyRow, RegistryImported};
use fleet_protocol::ProvinceCode;
use serde_json::json;

use crate::access::Caller;
use crate::domain::registry;
use crate::http::{api, audited, opt, ApiError, AppState};

pub async fn import_registry(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: String,
) -> Result<Json<RegistryImported>, ApiError> {
    let reg = registry::parse_csv(&body).map_err(|errors| ApiError::Invalid {
        message: format!(
            "the registry file has {} bad line(s); nothing was imported",
            errors.total()
        ),
        errors: api::line_items(errors.into_lines()),
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
    Ok(Json(RegistryImported {
        counties: reg.counties.len() as u64,
        stations: reg.stations.len() as u64,
    }))
}

pub async fn counties(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<CountyQuery>,
) -> Result<Json<Vec<CountyRow>>, ApiError> {
    let province: Option<ProvinceCode> = opt("province", q.province.as_deref())?;
    if let Some(p) = province {
        caller.require_province(p)?;
    }
    let rows = st.store.counties(province).await?;
    Ok(Json(
        rows.into_iter()
            .filter(|c| caller.principal.sees(c.province))
            .map(|c| CountyRow {
                code: c.code,
                province: c.province,
                name_en: c.name_en,
                name_fa: c.name_fa,
                stations: u64::from(c.stations),
            })
            .collect(),
    ))
}
