//! Freeze windows (`/api/v1/freeze`): fleet-wide, stored, carried by every
//! desired state the controller sends; setting them sends again the desired
//! state of every device that has one, so devices learn them at once (an
//! offline device gets the retained message when it comes back).

use axum::extract::State;
use axum::{Extension, Json};
use fleet_api::types::{
    FreezeAddRequest, FreezeRequest, FreezeWindowRequest, FreezeWindowView, FreezeWindows,
    InvalidItem, TimeSpec,
};
use fleet_protocol::FreezeWindow;
use serde_json::json;
use tracing::warn;

use crate::access::Caller;
use crate::clock::unix_ms;
use crate::domain::desired::{self, parse_time, rfc3339};
use crate::http::{audited, ApiError, AppState};

fn view(windows: &[FreezeWindow], now_ms: u64, republished: u64) -> FreezeWindows {
    FreezeWindows {
        windows: windows
            .iter()
            .map(|w| FreezeWindowView {
                from_ms: w.from_ms,
                to_ms: w.to_ms,
                from: rfc3339(w.from_ms),
                to: rfc3339(w.to_ms),
                active: w.contains(now_ms),
                reason: String::new(),
            })
            .collect(),
        republished,
    }
}

pub async fn freeze(State(st): State<AppState>) -> Json<FreezeWindows> {
    let windows = st.fleet().freeze().to_vec();
    Json(view(&windows, unix_ms(), 0))
}

fn time_of(t: &TimeSpec) -> Result<u64, String> {
    match t {
        TimeSpec::UnixMs(ms) => Ok(*ms),
        TimeSpec::Text(text) => parse_time(text),
    }
}

/// The windows of a request, or one 422 item per bad window.
fn windows_of(req: &FreezeRequest) -> Result<Vec<FreezeWindow>, ApiError> {
    let mut errors = Vec::new();
    let mut windows = Vec::new();
    for (index, w) in req.windows.iter().enumerate() {
        match (time_of(&w.from), time_of(&w.to)) {
            (Ok(from_ms), Ok(to_ms)) => windows.push(FreezeWindow { from_ms, to_ms }),
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
    desired::freeze_windows(windows).map_err(|e| ApiError::Invalid {
        message: e.to_string(),
        errors: Vec::new(),
    })
}

pub async fn set_freeze(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<FreezeRequest>,
) -> Result<Json<FreezeWindows>, ApiError> {
    let windows = windows_of(&req)?;
    let detail = json!({
        "windows": windows.iter().map(|w| json!({"from_ms": w.from_ms, "to_ms": w.to_ms})).collect::<Vec<_>>(),
    });
    audited(&st, &caller, "freeze.set", "fleet", detail, async {
        Ok(st.store.set_freeze(&windows).await?)
    })
    .await?;
    let all = {
        let mut fleet = st.fleet_mut();
        fleet.set_freeze(windows.clone());
        fleet.stored_desired()
    };
    let now = unix_ms();
    let mut sent = 0u64;
    for (device, d) in &all {
        match st.publisher.desired(device, d, now).await {
            Ok(()) => sent += 1,
            Err(e) => {
                warn!(error = %e, "freeze windows stored; this device gets them when it comes online")
            }
        }
    }
    metrics::counter!("fleet_desired_published_total", "why" => "freeze").increment(sent);
    Ok(Json(view(&windows, now, sent)))
}

/// `POST /api/v1/freeze`: one window more.
pub async fn add_freeze(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<FreezeAddRequest>,
) -> Result<Json<FreezeWindows>, ApiError> {
    let mut all: Vec<FreezeWindowRequest> = st
        .fleet()
        .freeze()
        .iter()
        .map(|w| FreezeWindowRequest {
            from: TimeSpec::UnixMs(w.from_ms),
            to: TimeSpec::UnixMs(w.to_ms),
            reason: String::new(),
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
