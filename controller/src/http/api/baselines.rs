//! Target firmware per model.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use fleet_protocol::{Model, Version};
use serde::Deserialize;
use serde_json::json;

use crate::access::Caller;
use crate::clock::unix_ms;
use crate::domain::auth::Permission;
use crate::http::{audited, parse, ApiError, AppState};

pub async fn baselines(
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
pub struct BaselineBody {
    version: String,
}

pub async fn set_baseline(
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
