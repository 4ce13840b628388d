//! Where devices reach the broker.

use axum::extract::State;
use axum::{Extension, Json};

use crate::access::Caller;
use crate::domain::auth::Permission;
use crate::http::{ApiError, AppState, BrokerInfo};

pub async fn broker(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<BrokerInfo>, ApiError> {
    caller.require(Permission::ReadFleet)?;
    Ok(Json(st.broker.clone()))
}
