//! Counties and polling stations.

use axum::extract::{Query, State};
use axum::{Extension, Json};
use fleet_protocol::ProvinceCode;
use serde::Deserialize;
use serde_json::json;

use crate::access::Caller;
use crate::domain::auth::Permission;
use crate::domain::registry;
use crate::http::{audited, opt, ApiError, AppState};

pub async fn import_registry(
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
pub struct CountyQuery {
    province: Option<String>,
}

pub async fn counties(
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
            .filter(|c| caller.principal.sees(c.province))
            .map(|c| {
                json!({ "code": c.code, "province": c.province, "name_en": c.name_en, "name_fa": c.name_fa, "stations": c.stations })
            })
            .collect(),
    )))
}
