//! Target firmware per model.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use fleet_api::types::{Baseline, BaselineRequest, Baselines};
use fleet_protocol::{Model, Version};
use serde_json::json;

use crate::access::Caller;
use crate::clock::unix_ms;
use crate::http::{audited, parse, ApiError, AppState};

pub async fn baselines(State(st): State<AppState>) -> Json<Baselines> {
    Json(Baselines(
        st.fleet()
            .baselines()
            .iter()
            .map(|(m, v)| (m.clone(), v.clone()))
            .collect(),
    ))
}

pub async fn set_baseline(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(model): Path<String>,
    Json(body): Json<BaselineRequest>,
) -> Result<Json<Baseline>, ApiError> {
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
    Ok(Json(Baseline { model, version }))
}
