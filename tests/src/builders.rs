//! Builders the tests share: fleet envelopes, raw MQTT clients (plain or
//! mutual TLS) that stand in for devices and observers, device
//! registrations and operator tokens through the typed API client.
//!
//! Setup helpers here check what they get back: a registration or a token
//! that the controller refused fails the test at once, with its message.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_api::client::Client;
use fleet_api::types::{CreatedToken, DeviceRegistration, RegisterRequest, TokenRequest};
use fleet_api::Role;
use fleet_protocol::{DeviceId, Envelope, Model, Payload, State, Topic, UpdateStatus, Version};
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};

use crate::within;

/// Milliseconds since the Unix epoch, for `sent_at_ms`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A `ballot-box-v2` device's full state with no checks, agent 0.1.0, idle.
pub fn state(id: &str, firmware: &str, sent_at_ms: u64) -> Envelope {
    Envelope::new(
        DeviceId::parse(id).expect("tests use valid device ids"),
        sent_at_ms,
        Payload::State(State {
            model: Model::parse("ballot-box-v2").expect("a valid model"),
            firmware: Version::parse(firmware).expect("tests use valid versions"),
            agent: Version::parse("0.1.0").expect("a valid version"),
            update: UpdateStatus::Idle,
            checks: vec![],
            config_rev: 0,
        }),
    )
}

/// Options of a plain-MQTT client on 127.0.0.1:`port` (keep-alive 5 s,
/// packets up to 64 KiB so that oversize payloads reach the broker).
pub fn mqtt_plain(port: u16, client_id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(64 * 1024, 64 * 1024);
    o
}

/// Options of a mutual-TLS client on 127.0.0.1:`port`, trusting `ca` and
/// presenting `cert` (certificate PEM, key PEM) if given.
pub fn mqtt_tls(
    port: u16,
    client_id: &str,
    ca: &[u8],
    cert: Option<(&[u8], &[u8])>,
) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
        ca: ca.to_vec(),
        alpn: None,
        client_auth: cert.map(|(c, k)| (c.to_vec(), k.to_vec())),
    }));
    o
}

/// A client whose event loop turns in the background for as long as the
/// test runs, retrying after errors (it reconnects after a broker restart).
pub fn mqtt_client(opts: MqttOptions) -> AsyncClient {
    let (c, mut el) = AsyncClient::new(opts, 64);
    tokio::spawn(async move {
        loop {
            if el.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    c
}

/// Connect and wait (10 s at most) for the CONNACK; the first error, or
/// "no answer", is the refusal.
pub async fn mqtt_connect(opts: MqttOptions) -> Result<(AsyncClient, EventLoop), String> {
    let (c, mut el) = AsyncClient::new(opts, 64);
    let r = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| "no answer".to_string())?;
    r.map(|()| (c, el))
}

/// Keep a connected client's event loop turning until it fails.
pub fn mqtt_drive(mut el: EventLoop) {
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
}

/// Every fleet message an observer decoded, in arrival order.
pub type Seen = Arc<Mutex<Vec<Envelope>>>;

/// A plain-MQTT observer subscribed to every fleet topic, recording each
/// message it can decode. The subscription is queued before this returns.
pub async fn mqtt_observer(port: u16) -> (AsyncClient, Seen) {
    let mut opts = MqttOptions::new(
        format!("observer-{}", crate::free_port()),
        "127.0.0.1",
        port,
    );
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(opts, 64);
    within(
        5,
        "queueing the observer's subscription",
        client.subscribe(Topic::fleet_filter(), QoS::AtLeastOnce),
    )
    .await
    .expect("the request queue of a new client has room");
    let seen: Seen = Arc::default();
    let sink = Arc::clone(&seen);
    // Returned once the broker has acknowledged the subscription, so that
    // nothing published after this returns can be missed.
    let (subscribed, acked) = tokio::sync::oneshot::channel::<()>();
    let mut subscribed = Some(subscribed);
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Ok(t) = Topic::parse(&p.topic) {
                        if let Ok(env) = Envelope::from_cbor_on(&t, &p.payload) {
                            sink.lock().expect("observer lock").push(env);
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    within(30, "the observer's SUBACK", acked)
        .await
        .expect("the observer's event loop runs");
    (client, seen)
}

/// Publish `env` on its own topic at QoS 1.
pub async fn publish(client: &AsyncClient, env: &Envelope, retain: bool) {
    within(
        10,
        "queueing a publish",
        client.publish(
            env.topic().to_string(),
            QoS::AtLeastOnce,
            retain,
            env.to_cbor().expect("test envelopes encode"),
        ),
    )
    .await
    .expect("the client's request queue accepts the publish");
}

/// A `ballot-box-v2` registration (`lifecycle`: `registered` or `enrolled`).
pub fn registration(
    id: &str,
    province: &str,
    county: Option<&str>,
    lifecycle: &str,
) -> DeviceRegistration {
    DeviceRegistration {
        id: id.to_owned(),
        model: "ballot-box-v2".to_owned(),
        province: province.to_owned(),
        county: county.map(str::to_owned),
        station: None,
        lifecycle: Some(lifecycle.to_owned()),
    }
}

/// Register `devices`; fails the test unless the controller accepts all.
pub async fn register(api: &Client, devices: Vec<DeviceRegistration>) {
    let n = devices.len() as u64;
    let answer = within(
        20,
        "registering devices",
        api.register(&RegisterRequest { devices }),
    )
    .await
    .unwrap_or_else(|e| panic!("registration refused: {e}"));
    assert_eq!(answer.registered, n, "every device registered: {answer:?}");
}

/// Import a registry CSV; fails the test unless the controller accepts it.
pub async fn import_registry(api: &Client, csv: &str) {
    within(
        20,
        "importing the registry",
        api.import_registry(csv.to_owned()),
    )
    .await
    .unwrap_or_else(|e| panic!("registry import refused: {e}"));
}

/// Make an operator token; fails the test unless the controller makes it.
pub async fn create_token(
    api: &Client,
    role: Role,
    provinces: &[&str],
    name: &str,
) -> CreatedToken {
    let req = TokenRequest::new(
        role,
        provinces.iter().map(|p| (*p).to_owned()).collect(),
        Some(name.to_owned()),
    );
    within(20, "creating a token", api.create_token(&req))
        .await
        .unwrap_or_else(|e| panic!("token creation refused: {e}"))
}
