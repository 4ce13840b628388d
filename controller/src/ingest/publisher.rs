//! The ingest's MQTT client, as the one publisher of what the controller
//! tells devices (desired state, commands, renewed certificates) and the
//! one place that acknowledges devices' messages to the broker.
//!
//! Everything sent to a device goes back the way its last accepted message
//! came ([`Reach`]): through the bridge it came through, under that
//! bridge's prefix (`fleet/v1/b/bridge.NAME/dev/{id}/…`, which the bridge
//! carries down to the plain topic on the provincial broker), or on the
//! plain topic if it came directly (a device enrolled before its province
//! had a provincial broker keeps connecting to the central one). A device
//! not heard since the start is sent on its province's route.
//!
//! Acknowledgements are manual: a QoS 1 message is acknowledged once its
//! effect is committed to the store (the store writer runs
//! [`Publisher::ack_after_commit`]'s closure after the batch commits), or at
//! once when it has no effect to commit. A controller killed before the
//! commit leaves the message unacknowledged, and the broker delivers it
//! again to the persistent session; ingest is idempotent, so a message
//! delivered twice is stored once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fleet_protocol::{Command, Desired, DeviceId, EncodeError, Envelope, Payload};
use rumqttc::{AsyncClient, Publish, QoS};

use crate::broker::tier::Tier;
pub use crate::domain::fleet::Reach;
use crate::store::AfterCommit;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot encode the {kind} message for {device}: {source}")]
    Encode {
        kind: &'static str,
        device: DeviceId,
        source: EncodeError,
    },
    #[error("cannot queue the {kind} message for {device}: {source}")]
    Queue {
        kind: &'static str,
        device: DeviceId,
        source: rumqttc::ClientError,
    },
}

impl PublishError {
    fn queue(kind: &'static str, device: &DeviceId, source: rumqttc::ClientError) -> Self {
        PublishError::Queue {
            kind,
            device: device.clone(),
            source,
        }
    }
}

/// A handle on the ingest's client; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    client: AsyncClient,
    /// Which connection to the broker is current: a new one after every
    /// lost connection and every CONNACK. An acknowledgement is sent only
    /// on the connection its message came on (a packet id of an older
    /// connection may name another message on this one).
    connection: Arc<AtomicU64>,
    /// Held over every change of a desired state (read, store, fleet,
    /// send): one controller-wide lock, so no change is lost to another
    /// made at the same time, and what is sent last is the newest.
    desired_lock: Arc<tokio::sync::Mutex<()>>,
    /// The route to each province's devices.
    tier: Arc<Tier>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("connection", &self.connection.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn new(client: AsyncClient, tier: Arc<Tier>) -> Self {
        Self {
            client,
            connection: Arc::new(AtomicU64::new(0)),
            desired_lock: Arc::default(),
            tier,
        }
    }

    /// The topic `env` goes out on to a device: the way it was last heard
    /// (directly, or through that bridge), else through its province's
    /// bridge if the tier has one.
    pub(crate) fn topic_for(&self, env: &Envelope, to: &Reach) -> String {
        match &to.heard {
            Some(route) => env.topic().routed(route.as_deref()),
            None => env
                .topic()
                .routed(self.tier.route_of(to.province).as_deref()),
        }
    }

    /// The lock every change of a desired state holds (see
    /// [`update_desired`]); a sender of stored desired states holds it too
    /// while it reads and sends one, so it never sends an older one last.
    pub(crate) async fn lock_desired(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.desired_lock.lock().await
    }

    pub(crate) fn client(&self) -> &AsyncClient {
        &self.client
    }

    /// The connection changed (lost, or a new CONNACK).
    pub(crate) fn next_connection(&self) {
        self.connection.fetch_add(1, Ordering::SeqCst);
    }

    /// Acknowledge a message now (one with no effect to commit).
    pub(crate) fn ack_now(&self, publish: &Publish) {
        if publish.qos != QoS::AtMostOnce {
            // A full request queue loses only this acknowledgement: the
            // broker sends the message again on the next connection.
            if self.client.try_ack(publish).is_err() {
                metrics::counter!("fleet_ingest_request_queue_full_total", "what" => "ack")
                    .increment(1);
            }
        }
    }

    /// What the store writer runs once the message's effect is committed:
    /// acknowledge it, if it came on the connection still current.
    pub(crate) fn ack_after_commit(&self, publish: Publish) -> AfterCommit {
        let me = self.clone();
        let connection = self.connection.load(Ordering::SeqCst);
        Box::new(move || {
            if me.connection.load(Ordering::SeqCst) == connection {
                me.ack_now(&publish);
            }
        })
    }

    fn encode(
        &self,
        device: &DeviceId,
        to: &Reach,
        now_ms: u64,
        payload: Payload,
    ) -> Result<(String, Vec<u8>), PublishError> {
        let kind = payload.kind().as_str();
        let env = Envelope::new(device.clone(), now_ms, payload);
        let bytes = env.to_cbor().map_err(|source| PublishError::Encode {
            kind,
            device: device.clone(),
            source,
        })?;
        Ok((self.topic_for(&env, to), bytes))
    }

    /// Send a device's desired state, retained (QoS 1), waiting for room
    /// in the client's queue. Not from the ingest loop itself (it must keep
    /// polling): use [`Publisher::try_desired`] there.
    pub async fn desired(
        &self,
        device: &DeviceId,
        to: &Reach,
        desired: &Desired,
        now_ms: u64,
    ) -> Result<(), PublishError> {
        let (topic, bytes) = self.encode(device, to, now_ms, Payload::Desired(desired.clone()))?;
        self.client
            .publish(topic, QoS::AtLeastOnce, true, bytes)
            .await
            .map_err(|source| PublishError::queue("desired", device, source))
    }

    /// [`Publisher::desired`] without waiting: a full queue is an error.
    pub(crate) fn try_desired(
        &self,
        device: &DeviceId,
        to: &Reach,
        desired: &Desired,
        now_ms: u64,
    ) -> Result<(), PublishError> {
        let (topic, bytes) = self.encode(device, to, now_ms, Payload::Desired(desired.clone()))?;
        self.client
            .try_publish(topic, QoS::AtLeastOnce, true, bytes)
            .map_err(|source| {
                metrics::counter!("fleet_ingest_request_queue_full_total", "what" => "desired")
                    .increment(1);
                PublishError::queue("desired", device, source)
            })
    }

    /// Send a one-off command (QoS 1, not retained: a command is not a
    /// state to keep; an offline device gets it from its persistent session
    /// until it expires).
    pub async fn command(
        &self,
        device: &DeviceId,
        to: &Reach,
        command: &Command,
        now_ms: u64,
    ) -> Result<(), PublishError> {
        let (topic, bytes) = self.encode(device, to, now_ms, Payload::Command(command.clone()))?;
        self.client
            .publish(topic, QoS::AtLeastOnce, false, bytes)
            .await
            .map_err(|source| PublishError::queue("cmd", device, source))
    }
}

/// Why a desired state was not set.
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    #[error("device {0} is not registered")]
    UnknownDevice(DeviceId),
    #[error("cannot store the desired state: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Set a device's desired state: stored first (the controller's record),
/// then held in the fleet, then sent retained. A send that fails is logged,
/// not an error: the state is recorded and goes out again when the device
/// comes online. This is the one way desired state changes (a rollout sets
/// firmware targets through it). What is sent carries the fleet's freeze
/// windows, whatever `desired.freeze` says.
///
/// It replaces the whole state: to change one field of what is there, use
/// [`update_desired`].
pub async fn set_desired(
    store: &crate::store::Store,
    fleet: &std::sync::RwLock<crate::domain::fleet::Fleet>,
    publisher: &Publisher,
    device: &DeviceId,
    desired: Desired,
    now_ms: u64,
) -> Result<(), DesiredError> {
    update_desired(store, fleet, publisher, device, |d| *d = desired, now_ms)
        .await
        .map(drop)
}

/// Change a device's desired state: `change` is applied to the state held
/// now (the default when it has none), and the result stored, held and sent
/// as [`set_desired`] does, all under the one lock of desired changes, so a
/// change of one field (a rollout's firmware target, an operator's agent
/// target) never loses another made at the same time. Returns what was set.
pub async fn update_desired(
    store: &crate::store::Store,
    fleet: &std::sync::RwLock<crate::domain::fleet::Fleet>,
    publisher: &Publisher,
    device: &DeviceId,
    change: impl FnOnce(&mut Desired),
    now_ms: u64,
) -> Result<Desired, DesiredError> {
    let _held = publisher.lock_desired().await;
    let (to, mut desired) = {
        let fleet = fleet.read().expect("fleet lock is never poisoned");
        let held = fleet
            .get(device)
            .ok_or_else(|| DesiredError::UnknownDevice(device.clone()))?;
        (
            held.reach(),
            crate::domain::desired::desired_of(held.desired.as_ref(), &[]),
        )
    };
    change(&mut desired);
    store.set_desired(device, &desired, now_ms).await?;
    let sent = {
        let mut fleet = fleet.write().expect("fleet lock is never poisoned");
        fleet.set_desired(device, desired.clone(), now_ms);
        fleet
            .desired_for(device)
            .expect("the device was known a moment ago and devices are never removed")
    };
    if let Err(e) = publisher.desired(device, &to, &sent, now_ms).await {
        tracing::warn!(error = %e, "desired state stored; it is sent when the device comes online");
    }
    Ok(desired)
}
