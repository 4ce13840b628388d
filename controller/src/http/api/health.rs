//! `/healthz` (no token) and `/metrics` (Prometheus).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use fleet_api::types::{BrokerState, ControllerHealth, HealthStatus};
use fleet_protocol::ProvinceCode;

use crate::access::Caller;
use crate::domain::readiness::Reason;
use crate::http::{ApiError, AppState};

/// Whether ingest holds a live MQTT session with the broker (not merely
/// whether a port answers), read from ingest's own state: no broker
/// connection per call.
pub async fn healthz(State(st): State<AppState>) -> Json<ControllerHealth> {
    let broker_up = st
        .ingest_connected
        .load(std::sync::atomic::Ordering::Relaxed);
    Json(ControllerHealth {
        status: if broker_up {
            HealthStatus::Ok
        } else {
            HealthStatus::Degraded
        },
        broker: if broker_up {
            BrokerState::Up
        } else {
            BrokerState::Down
        },
        devices: st.fleet().len() as u64,
    })
}

pub async fn metrics(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<impl IntoResponse, ApiError> {
    if caller.principal.is_scoped() {
        return Err(ApiError::ScopedMetrics);
    }
    {
        let fleet = st.fleet();
        for p in ProvinceCode::all() {
            let c = fleet.province_counts(p);
            let province = p.to_string();
            metrics::gauge!("fleet_devices", "province" => province.clone(), "readiness" => "ready")
                .set(f64::from(c.ready));
            for r in Reason::ALL {
                metrics::gauge!("fleet_devices", "province" => province.clone(), "readiness" => r.as_str())
                    .set(f64::from(c.reason(r)));
            }
        }
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    ))
}
