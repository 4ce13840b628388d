//! Where devices reach the broker, and the provincial tier.

use axum::extract::State;
use axum::Json;
use fleet_api::types::{BrokerInfo, BrokerTier, ProvincialBrokerInfo};

use crate::http::AppState;

pub async fn broker(State(st): State<AppState>) -> Json<BrokerInfo> {
    Json(st.broker.clone())
}

pub async fn brokers(State(st): State<AppState>) -> Json<BrokerTier> {
    Json(BrokerTier {
        central: st.broker.clone(),
        provincial: st
            .tier
            .brokers()
            .iter()
            .map(|b| ProvincialBrokerInfo {
                name: b.name.clone(),
                provinces: b.provinces.clone(),
                host: b.host.clone(),
                port: b.port,
                tls: st.broker.tls,
                managed: b.managed,
                bridge: b.bridge(),
            })
            .collect(),
    })
}
