//! Closing a retired device's open session. Mosquitto 2.0 has no command
//! to disconnect a client (short of the dynamic-security plugin), and a
//! reload keeps every connection, revoked or not. But the broker takes the
//! client id from the certificate name, and a second connection with a
//! client id takes the session over, closing the first: so the controller
//! connects once under the device's name with a certificate it signs for
//! that moment (ten minutes, key kept in memory only), with a clean session
//! (which also drops what the broker queued for the device), and leaves.
//! The device's own reconnection then meets the new CRL and is refused.

use std::sync::Arc;
use std::time::Duration;

use fleet_protocol::DeviceId;
use rand::RngCore;
use rcgen::{ExtendedKeyUsagePurpose, KeyPair, SerialNumber};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet};

use crate::pki::{self, Ca};

/// How long the takeover connection may take.
const KICK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the broker listens, for the takeover connection.
#[derive(Debug, Clone)]
pub struct Kicker {
    pub host: String,
    pub port: u16,
}

impl Kicker {
    /// Take over `device`'s session and close it.
    pub async fn kick(&self, ca: &Ca, device: &DeviceId) -> Result<(), String> {
        let key = KeyPair::generate().map_err(|e| format!("key: {e}"))?;
        let mut params = pki::leaf_params(
            device.as_str(),
            vec![],
            ExtendedKeyUsagePurpose::ClientAuth,
            time::Duration::minutes(10),
        );
        let mut serial = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut serial);
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let cert = ca.sign(&params, &key).map_err(|e| e.to_string())?;
        let tls = pki::tls_client_config(
            ca.cert_pem().as_bytes(),
            cert.as_bytes(),
            key.serialize_pem().as_bytes(),
        )
        .map_err(|e| e.to_string())?;
        let mut opts = MqttOptions::new(device.as_str(), &self.host, self.port);
        opts.set_clean_session(true)
            .set_keep_alive(Duration::from_secs(5))
            .set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(Arc::clone(&tls)),
            ));
        let (client, mut events) = AsyncClient::new(opts, 8);
        tokio::time::timeout(KICK_TIMEOUT, async {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => break,
                    Ok(_) => {}
                    Err(e) => return Err(format!("takeover connection: {e}")),
                }
            }
            client
                .disconnect()
                .await
                .map_err(|e| format!("disconnect: {e}"))?;
            loop {
                match events.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return Ok(()),
                    Ok(_) => {}
                }
            }
        })
        .await
        .map_err(|_| format!("no answer within {} s", KICK_TIMEOUT.as_secs()))?
    }
}
