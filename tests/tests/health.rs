//! `/healthz` says whether ingest holds a live MQTT session, not merely
//! whether something answers on the broker's port.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use fleet_api::types::{BrokerState, HealthStatus};
use fleet_controller::config::BrokerKind;
use fleet_tests::in_process::InProcessController;
use fleet_tests::within;

#[tokio::test(flavor = "multi_thread")]
async fn healthz_is_degraded_when_the_broker_port_answers_but_is_no_broker() {
    // Something listens on the "broker" port, accepts, and never speaks MQTT.
    let impostor = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = impostor.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((s, _)) = impostor.accept().await {
            kept.push(s);
        }
    });
    let data = tempfile::tempdir().unwrap();
    let ctl = InProcessController::start(data.path(), |cfg| {
        cfg.broker.mode = BrokerKind::External;
        cfg.broker.host = "127.0.0.1".into();
        cfg.broker.port = port;
    })
    .await
    .unwrap();
    let health = within(20, "GET /healthz", ctl.client().healthz())
        .await
        .unwrap();
    assert_eq!(health.broker, BrokerState::Down, "{health:?}");
    assert_eq!(health.status, HealthStatus::Degraded, "{health:?}");
    within(30, "stopping", ctl.stop()).await.unwrap();
    held.abort();
}
