//! The topic scheme, `fleet/v1/dev/{device id}/{kind}`. Topics are built and
//! parsed here and nowhere else.
//!
//! Behind a provincial broker, the same topics reach the central broker
//! under the bridge's own prefix, `fleet/v1/b/{bridge}/dev/{id}/{kind}`,
//! where `{bridge}` is the bridge's certificate name (`bridge.{name}`, see
//! [`bridge_identity`]). The central broker's ACL lets a bridge write and
//! read only under its own prefix, and the controller accepts a device's
//! message from a bridge only if that bridge serves the device's province.
//! A bridge reports its link on `fleet/v1/bridge/{bridge}/state` ("1" up,
//! "0" down; Mosquitto's bridge notifications, "0" as its last will).

use std::fmt;
use std::str::FromStr;

use crate::ids::DeviceId;

pub const ROOT: &str = "fleet/v1";
const DEV_PREFIX: &str = "fleet/v1/dev/";
const BRIDGED_PREFIX: &str = "fleet/v1/b/";
const BRIDGE_STATE_PREFIX: &str = "fleet/v1/bridge/";

/// What every bridge identity starts with. A device id cannot hold a dot,
/// so no device certificate can carry a bridge's name.
pub const BRIDGE_IDENTITY_PREFIX: &str = "bridge.";

/// A provincial broker's name: `[a-z0-9-]{1,32}` (e.g. `p01`, `north`).
pub fn valid_broker_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The certificate name (and MQTT user and client id) of the bridge of
/// provincial broker `name`: `bridge.{name}`.
pub fn bridge_identity(name: &str) -> String {
    format!("{BRIDGE_IDENTITY_PREFIX}{name}")
}

/// The provincial broker's name in a bridge identity, if it is one.
pub fn parse_bridge_identity(identity: &str) -> Option<&str> {
    identity
        .strip_prefix(BRIDGE_IDENTITY_PREFIX)
        .filter(|n| valid_broker_name(n))
}

/// Where a bridge reports its link to the central broker.
pub fn bridge_state_topic(identity: &str) -> String {
    format!("{BRIDGE_STATE_PREFIX}{identity}/state")
}

/// Every bridge's link state, for the controller.
pub fn bridge_state_filter() -> String {
    format!("{BRIDGE_STATE_PREFIX}+/state")
}

/// A bridge link report: the bridge identity and whether the link is up.
/// `None` for anything else (another topic, a malformed name or payload).
pub fn parse_bridge_state<'a>(topic: &'a str, payload: &[u8]) -> Option<(&'a str, bool)> {
    let identity = topic
        .strip_prefix(BRIDGE_STATE_PREFIX)?
        .strip_suffix("/state")?;
    parse_bridge_identity(identity)?;
    match payload {
        b"1" => Some((identity, true)),
        b"0" => Some((identity, false)),
        _ => None,
    }
}

/// A device topic and the bridge it came through (`None`: the device
/// speaks to the central broker itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Routed {
    /// The bridge identity (`bridge.{name}`).
    pub via: Option<String>,
    pub topic: Topic,
}

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
    #[error("topic {0:?} names no valid bridge (bridge.[a-z0-9-]{{1,32}})")]
    Bridge(String),
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
        Self::parse_tail(rest, topic)
    }

    /// `{id}/{kind}`, the part after `…/dev/` of `topic` (named in errors).
    fn parse_tail(rest: &str, topic: &str) -> Result<Self, TopicError> {
        let mut parts = rest.split('/');
        let (Some(id), Some(kind), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(TopicError::Shape(topic.to_owned()));
        };
        Ok(Self {
            device: DeviceId::parse(id)?,
            kind: kind.parse()?,
        })
    }

    /// A device topic, direct (`fleet/v1/dev/…`) or through a bridge
    /// (`fleet/v1/b/bridge.{name}/dev/…`).
    pub fn parse_routed(topic: &str) -> Result<Routed, TopicError> {
        let Some(rest) = topic.strip_prefix(BRIDGED_PREFIX) else {
            return Ok(Routed {
                via: None,
                topic: Self::parse(topic)?,
            });
        };
        let (identity, inner) = rest
            .split_once('/')
            .ok_or_else(|| TopicError::Shape(topic.to_owned()))?;
        if parse_bridge_identity(identity).is_none() {
            return Err(TopicError::Bridge(topic.to_owned()));
        }
        let inner = inner
            .strip_prefix("dev/")
            .ok_or_else(|| TopicError::Shape(topic.to_owned()))?;
        // Parsed in place: no copy of the topic per message.
        let topic = Self::parse_tail(inner, topic)?;
        Ok(Routed {
            via: Some(identity.to_owned()),
            topic,
        })
    }

    /// This topic as published on the central broker for a device behind
    /// bridge `via` (`None`: the plain topic).
    pub fn routed(&self, via: Option<&str>) -> String {
        match via {
            None => self.to_string(),
            Some(b) => format!("{BRIDGED_PREFIX}{b}/dev/{}/{}", self.device, self.kind),
        }
    }

    /// The controller's subscriptions to what agents behind any bridge
    /// publish, `fleet/v1/b/+/dev/+/{kind}`.
    pub fn bridged_controller_filters() -> Vec<String> {
        TopicKind::ALL
            .into_iter()
            .filter(|k| k.from_agent())
            .map(|k| format!("{BRIDGED_PREFIX}+/dev/+/{k}"))
            .collect()
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
    fn routed_topics_through_a_bridge() {
        let t = Topic::new(DeviceId::parse("BB-1").unwrap(), TopicKind::State);
        let up = t.routed(Some("bridge.p01"));
        assert_eq!(up, "fleet/v1/b/bridge.p01/dev/BB-1/state");
        let r = Topic::parse_routed(&up).unwrap();
        assert_eq!((r.via.as_deref(), &r.topic), (Some("bridge.p01"), &t));
        let direct = Topic::parse_routed("fleet/v1/dev/BB-1/state").unwrap();
        assert_eq!((direct.via, direct.topic), (None, t.clone()));
        assert_eq!(t.routed(None), "fleet/v1/dev/BB-1/state");
        for bad in [
            "fleet/v1/b/BB-2/dev/BB-1/state",    // a device's name, not a bridge
            "fleet/v1/b/bridge./dev/BB-1/state", // empty name
            "fleet/v1/b/bridge.P01/dev/BB-1/state", // upper case
            "fleet/v1/b/bridge.p01/BB-1/state",
            "fleet/v1/b/bridge.p01/dev/BB-1/state/x",
            "fleet/v1/b/bridge.p01",
            "fleet/v1/b/+/dev/BB-1/state",
        ] {
            assert!(Topic::parse_routed(bad).is_err(), "{bad:?} accepted");
        }
        // Errors name the topic as it arrived, not a rewritten one.
        let odd = "fleet/v1/b/bridge.p01/dev/BB-1/state/x";
        assert_eq!(
            Topic::parse_routed(odd),
            Err(TopicError::Shape(odd.to_owned()))
        );
        assert_eq!(
            Topic::bridged_controller_filters()[1],
            "fleet/v1/b/+/dev/+/state"
        );
    }

    #[test]
    fn bridge_identities_and_link_reports() {
        assert_eq!(bridge_identity("p01"), "bridge.p01");
        assert_eq!(parse_bridge_identity("bridge.p01"), Some("p01"));
        assert_eq!(parse_bridge_identity("bridge.P01"), None);
        assert_eq!(parse_bridge_identity("BB-1"), None);
        assert!(
            DeviceId::parse("bridge.p01").is_err(),
            "a device could take a bridge's name"
        );
        assert!(
            valid_broker_name("north-2") && !valid_broker_name("") && !valid_broker_name("a/b")
        );
        let topic = bridge_state_topic("bridge.p01");
        assert_eq!(topic, "fleet/v1/bridge/bridge.p01/state");
        assert_eq!(parse_bridge_state(&topic, b"1"), Some(("bridge.p01", true)));
        assert_eq!(
            parse_bridge_state(&topic, b"0"),
            Some(("bridge.p01", false))
        );
        assert_eq!(parse_bridge_state(&topic, b"up"), None);
        assert_eq!(parse_bridge_state("fleet/v1/bridge/BB-1/state", b"1"), None);
        assert_eq!(bridge_state_filter(), "fleet/v1/bridge/+/state");
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
