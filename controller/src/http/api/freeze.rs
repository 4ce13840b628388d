//! Freeze windows (`/api/v1/freeze`): fleet-wide, stored with their reasons,
//! carried by every desired state the controller sends; changing them sends
//! again, in the background, the desired state of every device that has one,
//! so devices learn them at once (an offline device gets the retained
//! message when it comes back).

use axum::extract::State;
use axum::{Extension, Json};
use fleet_api::types::{
    FreezeAddRequest, FreezeRequest, FreezeWindowRequest, FreezeWindowView, FreezeWindows,
    InvalidItem, TimeSpec,
};
use fleet_protocol::{Desired, DeviceId, FreezeWindow};
use serde_json::json;
use tracing::warn;

use crate::access::Caller;
use crate::clock::unix_ms;
use crate::domain::desired::{self, parse_time, rfc3339};
use crate::http::{audited, ApiError, AppState};

fn view(windows: &[(FreezeWindow, String)], now_ms: u64, republished: u64) -> FreezeWindows {
    FreezeWindows {
        windows: windows
            .iter()
            .map(|(w, reason)| FreezeWindowView {
                from_ms: w.from_ms,
                to_ms: w.to_ms,
                from: rfc3339(w.from_ms),
                to: rfc3339(w.to_ms),
                active: w.contains(now_ms),
                reason: reason.clone(),
            })
            .collect(),
        republished,
    }
}

pub async fn freeze(State(st): State<AppState>) -> Result<Json<FreezeWindows>, ApiError> {
    let windows = st.store.freeze_windows_with_reasons().await?;
    Ok(Json(view(&windows, unix_ms(), 0)))
}

fn time_of(t: &TimeSpec) -> Result<u64, String> {
    match t {
        TimeSpec::UnixMs(ms) => Ok(*ms),
        TimeSpec::Text(text) => parse_time(text),
    }
}

/// The windows of a request with their reasons, or one 422 item per bad window.
fn windows_of(req: &FreezeRequest) -> Result<Vec<(FreezeWindow, String)>, ApiError> {
    let mut errors = Vec::new();
    let mut windows = Vec::new();
    for (index, w) in req.windows.iter().enumerate() {
        match (time_of(&w.from), time_of(&w.to)) {
            (Ok(from_ms), Ok(to_ms)) => {
                windows.push((FreezeWindow { from_ms, to_ms }, w.reason.trim().to_owned()));
            }
            (from, to) => {
                for (field, e) in [("from", from.err()), ("to", to.err())] {
                    if let Some(e) = e {
                        errors.push(InvalidItem {
                            index: Some(index as u64),
                            line: None,
                            id: None,
                            message: format!("{field}: {e}"),
                        });
                    }
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid {
            message: "some freeze windows are not valid; nothing was changed".into(),
            errors,
        });
    }
    let reasons: Vec<((u64, u64), String)> = windows
        .iter()
        .map(|(w, r)| ((w.from_ms, w.to_ms), r.clone()))
        .collect();
    let checked =
        desired::freeze_windows(windows.into_iter().map(|(w, _)| w).collect()).map_err(|e| {
            ApiError::Invalid {
                message: e.to_string(),
                errors: Vec::new(),
            }
        })?;
    // The first reason given for a window (the same window twice is one).
    Ok(checked
        .into_iter()
        .map(|w| {
            let reason = reasons
                .iter()
                .find(|(k, _)| *k == (w.from_ms, w.to_ms))
                .map(|(_, r)| r.clone())
                .unwrap_or_default();
            (w, reason)
        })
        .collect())
}

pub async fn set_freeze(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<FreezeRequest>,
) -> Result<Json<FreezeWindows>, ApiError> {
    let windows = windows_of(&req)?;
    let detail = json!({
        "windows": windows.iter().map(|(w, r)| json!({"from_ms": w.from_ms, "to_ms": w.to_ms, "reason": r})).collect::<Vec<_>>(),
    });
    audited(&st, &caller, "freeze.set", "fleet", detail, async {
        Ok(st.store.set_freeze_with_reasons(&windows).await?)
    })
    .await?;
    let all = {
        let mut fleet = st.fleet_mut();
        fleet.set_freeze(windows.iter().map(|(w, _)| *w).collect());
        fleet.stored_desired()
    };
    let now = unix_ms();
    let scheduled = all.len() as u64;
    tokio::spawn(republish(st.publisher.clone(), all));
    Ok(Json(view(&windows, now, scheduled)))
}

/// Send again every stored desired state with the new windows, in the
/// background: at 100,000 devices it must not hold the request. A device
/// this misses gets them when it next comes online.
async fn republish(publisher: crate::ingest::Publisher, all: Vec<(DeviceId, Desired)>) {
    let mut sent = 0u64;
    for (device, d) in &all {
        match publisher.desired(device, d, unix_ms()).await {
            Ok(()) => sent += 1,
            Err(e) => {
                warn!(error = %e, "freeze windows stored; this device gets them when it comes online")
            }
        }
    }
    metrics::counter!("fleet_desired_published_total", "why" => "freeze").increment(sent);
}

/// `POST /api/v1/freeze`: one window more.
pub async fn add_freeze(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<FreezeAddRequest>,
) -> Result<Json<FreezeWindows>, ApiError> {
    let mut all: Vec<FreezeWindowRequest> = st
        .store
        .freeze_windows_with_reasons()
        .await?
        .into_iter()
        .map(|(w, reason)| FreezeWindowRequest {
            from: TimeSpec::UnixMs(w.from_ms),
            to: TimeSpec::UnixMs(w.to_ms),
            reason,
        })
        .collect();
    all.push(req);
    set_freeze(
        State(st),
        Extension(caller),
        Json(FreezeRequest { windows: all }),
    )
    .await
}

/// `DELETE /api/v1/freeze`: no window.
pub async fn clear_freeze(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<FreezeWindows>, ApiError> {
    set_freeze(State(st), Extension(caller), Json(FreezeRequest::default())).await
}
