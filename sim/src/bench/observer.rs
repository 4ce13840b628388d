//! A bare MQTT subscriber on the central broker that counts the devices'
//! messages (presence, state, health, events, csr), direct
//! (`fleet/v1/dev/+/+`) and through a provincial bridge
//! (`fleet/v1/b/+/dev/+/+`): the stream the controller must keep up with.
//! It connects as the read-only observer (`fleet.observer`, certificate
//! from `fleet-controller issue-cert --kind observer`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use fleet_protocol::Topic;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::run::BrokerAddress;

/// The filters the observer subscribes to.
pub const FILTERS: [&str; 2] = ["fleet/v1/dev/+/+", "fleet/v1/b/+/dev/+/+"];

/// Does this topic carry a device's message to the controller?
pub fn counts(topic: &str) -> bool {
    Topic::parse_routed(topic).is_ok_and(|r| r.topic.kind.from_agent())
}

pub struct Observer {
    count: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    subscribed: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    /// Issue the observer's certificate from `data_dir` with `bin`
    /// (`fleet-controller issue-cert --kind observer`), connect to
    /// `broker` and subscribe; back once subscribed.
    pub async fn start(
        bin: &Path,
        data_dir: &Path,
        broker: &BrokerAddress,
    ) -> anyhow::Result<Self> {
        let mut opts = MqttOptions::new("fleet.observer", broker.host.clone(), broker.port);
        // Long: under a flood the broker's ping answer queues behind the
        // messages, and a missed ping would drop the session (and messages).
        opts.set_keep_alive(Duration::from_secs(300))
            .set_clean_session(true)
            .set_max_packet_size(1 << 20, 1 << 20);
        if broker.tls {
            let out = data_dir.join("bench-observer");
            let done = std::process::Command::new(bin)
                .args(["issue-cert", "--kind", "observer", "--name", "observer"])
                .arg("--data-dir")
                .arg(data_dir)
                .arg("--out")
                .arg(&out)
                .output()
                .with_context(|| format!("cannot run {} issue-cert", bin.display()))?;
            if !done.status.success() {
                bail!(
                    "issue-cert --kind observer failed: {}",
                    String::from_utf8_lossy(&done.stderr)
                );
            }
            let read = |name: &str| {
                std::fs::read(out.join(name))
                    .with_context(|| format!("cannot read {}", out.join(name).display()))
            };
            let tls = fleet_agent::tls::client_config_pem(
                &read("ca.crt")?,
                &read("fleet.observer.crt")?,
                &read("fleet.observer.key")?,
            )?;
            opts.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls),
            ));
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 10_000);
        let count = Arc::new(AtomicU64::new(0));
        let subscribed = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let (c, s, n) = (
            Arc::clone(&count),
            Arc::clone(&subscribed),
            Arc::clone(&connections),
        );
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        n.fetch_add(1, Ordering::Relaxed);
                        for f in FILTERS {
                            let _ = client.subscribe(f, QoS::AtLeastOnce).await;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => s.store(true, Ordering::Relaxed),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if counts(&p.topic) {
                            c.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "the observer lost the broker");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        while !subscribed.load(Ordering::Relaxed) {
            if tokio::time::Instant::now() > end {
                task.abort();
                bail!("the observer did not subscribe within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            count,
            connections,
            subscribed,
            task,
        })
    }

    /// Device messages seen so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Connections made so far (more than one: it lost the broker, and
    /// messages, in between).
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_device_messages_count() {
        assert!(counts("fleet/v1/dev/BB-23-000001/health"));
        assert!(counts("fleet/v1/b/bridge.p01/dev/BB-23-000001/state"));
        assert!(!counts("fleet/v1/dev/BB-23-000001/desired"));
        assert!(!counts("fleet/v1/b/bridge.p01/dev/BB-23-000001/cmd"));
        assert!(!counts("fleet/v1/bridge/bridge.p01/state"));
    }
}
