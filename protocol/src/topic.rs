//! The topic scheme, `fleet/v1/dev/{device id}/{kind}`. Topics are built and
//! parsed here and nowhere else.

use std::fmt;
use std::str::FromStr;

use crate::ids::DeviceId;

pub const ROOT: &str = "fleet/v1";
const DEV_PREFIX: &str = "fleet/v1/dev/";

/// What a topic carries; the last topic segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicKind {
    Presence,
    State,
    Health,
    Events,
    Desired,
    Cmd,
    /// A certificate request (PEM CSR) from a device renewing its
    /// certificate over its mutual-TLS session.
    Csr,
    /// The renewed certificate, sent to the device that asked.
    Cert,
}

impl TopicKind {
    pub const ALL: [TopicKind; 8] = [
        TopicKind::Presence,
        TopicKind::State,
        TopicKind::Health,
        TopicKind::Events,
        TopicKind::Desired,
        TopicKind::Cmd,
        TopicKind::Csr,
        TopicKind::Cert,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TopicKind::Presence => "presence",
            TopicKind::State => "state",
            TopicKind::Health => "health",
            TopicKind::Events => "events",
            TopicKind::Desired => "desired",
            TopicKind::Cmd => "cmd",
            TopicKind::Csr => "csr",
            TopicKind::Cert => "cert",
        }
    }

    /// Published by the agent (as opposed to sent to it by the controller).
    pub fn from_agent(self) -> bool {
        !matches!(self, TopicKind::Desired | TopicKind::Cmd | TopicKind::Cert)
    }

    /// Whether messages of this kind are retained by the broker.
    pub fn retained(self) -> bool {
        matches!(
            self,
            TopicKind::Presence | TopicKind::State | TopicKind::Desired
        )
    }

    /// Largest accepted payload, checked before sending and on receipt.
    pub fn max_payload(self) -> usize {
        match self {
            TopicKind::Presence => 256,
            TopicKind::Health => 256,
            TopicKind::State => 4096,
            TopicKind::Events => 4096,
            TopicKind::Desired => 4096,
            TopicKind::Cmd => 1024,
            // A PEM request for a P-256 or P-384 key is under 700 bytes;
            // an RSA-4096 one under 2 KiB.
            TopicKind::Csr => 3072,
            TopicKind::Cert => 4096,
        }
    }
}

impl fmt::Display for TopicKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TopicKind {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, TopicError> {
        TopicKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| TopicError::UnknownKind(s.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic {0:?} is not under {DEV_PREFIX}")]
    OutsideRoot(String),
    #[error("topic {0:?} does not have the shape fleet/v1/dev/{{id}}/{{kind}}")]
    Shape(String),
    #[error("unknown topic kind {0:?}")]
    UnknownKind(String),
    #[error("bad device id in topic: {0}")]
    Device(#[from] crate::ids::IdError),
}

/// A parsed device topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    pub device: DeviceId,
    pub kind: TopicKind,
}

impl Topic {
    pub fn new(device: DeviceId, kind: TopicKind) -> Self {
        Self { device, kind }
    }

    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        let rest = topic
            .strip_prefix(DEV_PREFIX)
            .ok_or_else(|| TopicError::OutsideRoot(topic.to_owned()))?;
        let mut parts = rest.split('/');
        let (Some(id), Some(kind), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(TopicError::Shape(topic.to_owned()));
        };
        Ok(Self {
            device: DeviceId::parse(id)?,
            kind: kind.parse()?,
        })
    }

    /// Everything under one device, `fleet/v1/dev/{id}/#`: what its ACL allows.
    pub fn device_filter(device: &DeviceId) -> String {
        format!("{DEV_PREFIX}{device}/#")
    }

    /// Every device's every topic, `fleet/v1/dev/+/+`.
    pub fn fleet_filter() -> String {
        format!("{DEV_PREFIX}+/+")
    }

    /// The controller's subscriptions to what agents publish (not the
    /// desired state and commands it sends itself). Plain, not shared: a
    /// shared group can be joined by any client that knows its name, and
    /// Mosquitto then drops every message it hands to a member the read ACL
    /// refuses (docs/decisions/0008-controller-subscriptions.md).
    pub fn controller_filters() -> Vec<String> {
        TopicKind::ALL
            .into_iter()
            .filter(|k| k.from_agent())
            .map(|k| format!("{DEV_PREFIX}+/{k}"))
            .collect()
    }

    /// The shared subscriptions earlier controllers made (`$share/controllers/…`):
    /// a persistent session may still hold them, so the controller drops them.
    pub fn legacy_shared_filters() -> Vec<String> {
        Self::controller_filters()
            .into_iter()
            .map(|f| format!("$share/controllers/{f}"))
            .collect()
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{DEV_PREFIX}{}/{}", self.device, self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_parse() {
        let t = Topic::new(DeviceId::parse("BB-1").unwrap(), TopicKind::Health);
        assert_eq!(t.to_string(), "fleet/v1/dev/BB-1/health");
        assert_eq!(Topic::parse(&t.to_string()).unwrap(), t);
        for k in TopicKind::ALL {
            let t = Topic::new(DeviceId::parse("x").unwrap(), k);
            assert_eq!(Topic::parse(&t.to_string()).unwrap().kind, k);
        }
    }

    #[test]
    fn rejects_forged_and_malformed() {
        for bad in [
            "fleet/v1/dev/BB-1",
            "fleet/v1/dev/BB-1/health/x",
            "fleet/v1/dev/BB-1/bogus",
            "fleet/v1/dev/+/health",
            "fleet/v1/dev//health",
            "fleet/v2/dev/BB-1/health",
            "other/BB-1/health",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn filters() {
        let d = DeviceId::parse("BB-7").unwrap();
        assert_eq!(Topic::device_filter(&d), "fleet/v1/dev/BB-7/#");
        assert_eq!(
            Topic::controller_filters(),
            [
                "fleet/v1/dev/+/presence",
                "fleet/v1/dev/+/state",
                "fleet/v1/dev/+/health",
                "fleet/v1/dev/+/events",
                "fleet/v1/dev/+/csr",
            ]
        );
        assert!(Topic::controller_filters()
            .iter()
            .all(|f| !f.starts_with("$share")));
        assert_eq!(
            Topic::legacy_shared_filters()[2],
            "$share/controllers/fleet/v1/dev/+/health"
        );
    }
}
