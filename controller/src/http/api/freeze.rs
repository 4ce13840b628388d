//! Freeze windows (`/api/v1/freeze`): fleet-wide, stored with their reasons,
//! carried by every desired state the controller sends; changing them sends
//! again, in the background, the desired state of every device that has one,
//! so devices learn them at once (an offline device gets the retained
//! message when it comes back). Changes go one at a time ([`FreezeChanges`]).

use axum::extract::State;
use axum::{Extension, Json};
use fleet_api::types::{
    FreezeAddRequest, FreezeRequest, FreezeWindowRequest, FreezeWindowView, FreezeWindows,
    InvalidItem, TimeSpec,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fleet_protocol::{DeviceId, FreezeWindow};
use serde_json::json;
use tracing::{debug, warn};

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

/// Freeze changes one at a time: the store and the fleet are changed
/// together under `lock` (a window added is never lost to another added at
/// the same time), and `generation` names the newest change: the
/// background re-publication of an older one stops when a newer starts.
#[derive(Debug, Default)]
pub struct FreezeChanges {
    lock: tokio::sync::Mutex<()>,
    generation: AtomicU64,
}

pub async fn set_freeze(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<FreezeRequest>,
) -> Result<Json<FreezeWindows>, ApiError> {
    change_freeze(st, caller, |_| req).await
}

/// Change the windows: `make` gets the stored ones and says the new set;
/// stored (audited), held by the fleet, and sent again in the background,
/// all under the lock of freeze changes.
async fn change_freeze(
    st: AppState,
    caller: Caller,
    make: impl FnOnce(Vec<(FreezeWindow, String)>) -> FreezeRequest,
) -> Result<Json<FreezeWindows>, ApiError> {
    let changes = Arc::clone(&st.freeze_changes);
    let _one_at_a_time = changes.lock.lock().await;
    let req = make(st.store.freeze_windows_with_reasons().await?);
    let windows = windows_of(&req)?;
    let detail = json!({
        "windows": windows.iter().map(|(w, r)| json!({"from_ms": w.from_ms, "to_ms": w.to_ms, "reason": r})).collect::<Vec<_>>(),
    });
    audited(&st, &caller, "freeze.set", "fleet", detail, async {
        Ok(st.store.set_freeze_with_reasons(&windows).await?)
    })
    .await?;
    let devices: Vec<DeviceId> = {
        let mut fleet = st.fleet_mut();
        fleet.set_freeze(windows.iter().map(|(w, _)| *w).collect());
        fleet
            .stored_desired()
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    };
    let now = unix_ms();
    let scheduled = devices.len() as u64;
    let generation = changes.generation.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::spawn(republish(
        Arc::clone(&st.fleet),
        st.publisher.clone(),
        Arc::clone(&changes),
        generation,
        devices,
    ));
    Ok(Json(view(&windows, now, scheduled)))
}

/// Send again the desired state of these devices with the fleet's windows,
/// in the background: at 100,000 devices it must not hold the request. Each
/// is read from the fleet when it is sent, under the lock of desired
/// changes (never an older state than one a rollout sent meanwhile), and
/// the task stops once a newer freeze change (`generation`) has started
/// its own. A device this misses gets them when it next comes online.
/// Returns how many were sent.
pub(crate) async fn republish(
    fleet: Arc<std::sync::RwLock<crate::domain::fleet::Fleet>>,
    publisher: crate::ingest::Publisher,
    changes: Arc<FreezeChanges>,
    generation: u64,
    devices: Vec<DeviceId>,
) -> u64 {
    let mut sent = 0u64;
    for device in &devices {
        if changes.generation.load(Ordering::SeqCst) != generation {
            debug!(
                left = devices.len() as u64 - sent,
                "a newer freeze change sends the desired states; this one stops"
            );
            break;
        }
        let _held = publisher.lock_desired().await;
        let held = {
            let fleet = fleet.read().expect("fleet lock is never poisoned");
            fleet
                .get(device)
                .map(crate::domain::fleet::Device::reach)
                .zip(fleet.desired_for(device))
        };
        let Some((to, d)) = held else {
            continue;
        };
        match publisher.desired(device, &to, &d, unix_ms()).await {
            Ok(()) => sent += 1,
            Err(e) => {
                warn!(error = %e, "freeze windows stored; this device gets them when it comes online")
            }
        }
    }
    metrics::counter!("fleet_desired_published_total", "why" => "freeze").increment(sent);
    sent
}

#[cfg(test)]
impl FreezeChanges {
    /// Start a newer change (tests).
    pub(crate) fn bump(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// `POST /api/v1/freeze`: one window more.
pub async fn add_freeze(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<FreezeAddRequest>,
) -> Result<Json<FreezeWindows>, ApiError> {
    change_freeze(st, caller, |stored| {
        let mut windows: Vec<FreezeWindowRequest> = stored
            .into_iter()
            .map(|(w, reason)| FreezeWindowRequest {
                from: TimeSpec::UnixMs(w.from_ms),
                to: TimeSpec::UnixMs(w.to_ms),
                reason,
            })
            .collect();
        windows.push(req);
        FreezeRequest { windows }
    })
    .await
}

/// `DELETE /api/v1/freeze`: no window.
pub async fn clear_freeze(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<FreezeWindows>, ApiError> {
    set_freeze(State(st), Extension(caller), Json(FreezeRequest::default())).await
}
