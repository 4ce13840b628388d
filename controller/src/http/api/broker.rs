//! Where devices reach the broker.

use axum::extract::State;
use axum::Json;
use fleet_api::types::BrokerInfo;

use crate::http::AppState;

pub async fn broker(State(st): State<AppState>) -> Json<BrokerInfo> {
    Json(st.broker.clone())
}
