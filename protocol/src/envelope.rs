//! The one versioned envelope around every payload, its CBOR (wire) and JSON
//! (debug) encodings, and the size limits.
//!
//! Compatibility rule: `v` is the writer's protocol version. A reader decodes
//! any `v >= 1`: fields it does not know are skipped (CBOR maps with integer
//! tags), so old and new agents coexist during a rollout.

use minicbor::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::ids::DeviceId;
use crate::message::{CertIssued, CertRequest, Command, Desired, Event, Health, Presence, State};
use crate::topic::{Topic, TopicKind};

pub const PROTOCOL_VERSION: u16 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cbor(map)]
pub struct Envelope {
    #[n(0)]
    pub v: u16,
    #[n(1)]
    pub device: DeviceId,
    /// Sender's clock, Unix milliseconds.
    #[n(2)]
    pub sent_at_ms: u64,
    #[n(3)]
    pub payload: Payload,
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Payload {
    #[n(0)]
    Presence(#[n(0)] Presence),
    #[n(1)]
    State(#[n(0)] State),
    #[n(2)]
    Health(#[n(0)] Health),
    #[n(3)]
    Event(#[n(0)] Event),
    #[n(4)]
    Desired(#[n(0)] Desired),
    #[n(5)]
    Command(#[n(0)] Command),
    #[n(6)]
    CertRequest(#[n(0)] CertRequest),
    #[n(7)]
    CertIssued(#[n(0)] CertIssued),
}

impl Payload {
    /// The topic kind this payload travels on.
    pub fn kind(&self) -> TopicKind {
        match self {
            Payload::Presence(_) => TopicKind::Presence,
            Payload::State(_) => TopicKind::State,
            Payload::Health(_) => TopicKind::Health,
            Payload::Event(_) => TopicKind::Events,
            Payload::Desired(_) => TopicKind::Desired,
            Payload::Command(_) => TopicKind::Cmd,
            Payload::CertRequest(_) => TopicKind::Csr,
            Payload::CertIssued(_) => TopicKind::Cert,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{kind} payload is {len} bytes, over its limit of {max}")]
    TooLarge {
        kind: TopicKind,
        len: usize,
        max: usize,
    },
    #[error("cannot encode: {0}")]
    Encoding(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{kind} payload is {len} bytes, over its limit of {max}")]
    TooLarge {
        kind: TopicKind,
        len: usize,
        max: usize,
    },
    #[error("malformed CBOR payload: {0}")]
    Cbor(String),
    #[error("malformed JSON payload: {0}")]
    Json(String),
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    #[error("a {payload} payload arrived on a {topic} topic")]
    KindMismatch {
        topic: TopicKind,
        payload: TopicKind,
    },
    #[error("payload names device {payload} but arrived on the topic of {topic}")]
    DeviceMismatch { topic: DeviceId, payload: DeviceId },
}

impl Envelope {
    pub fn new(device: DeviceId, sent_at_ms: u64, payload: Payload) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            device,
            sent_at_ms,
            payload,
        }
    }

    /// The topic this envelope belongs on.
    pub fn topic(&self) -> Topic {
        Topic::new(self.device.clone(), self.payload.kind())
    }

    /// Compact CBOR, refused if over the kind's size limit.
    pub fn to_cbor(&self) -> Result<Vec<u8>, EncodeError> {
        let bytes = minicbor::to_vec(self).map_err(|e| EncodeError::Encoding(e.to_string()))?;
        let kind = self.payload.kind();
        if bytes.len() > kind.max_payload() {
            return Err(EncodeError::TooLarge {
                kind,
                len: bytes.len(),
                max: kind.max_payload(),
            });
        }
        Ok(bytes)
    }

    /// Decode CBOR without a topic (for `fleetctl decode`); any byte string
    /// either decodes or gives an error.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, DecodeError> {
        let max = TopicKind::ALL
            .iter()
            .map(|k| k.max_payload())
            .max()
            .unwrap_or(0);
        if bytes.len() > max {
            return Err(DecodeError::TooLarge {
                kind: TopicKind::State,
                len: bytes.len(),
                max,
            });
        }
        let env: Envelope =
            minicbor::decode(bytes).map_err(|e| DecodeError::Cbor(e.to_string()))?;
        env.check_version()
    }

    /// Decode what arrived on `topic`: size limit first, then CBOR, then the
    /// payload must match the topic's kind and device.
    pub fn from_cbor_on(topic: &Topic, bytes: &[u8]) -> Result<Self, DecodeError> {
        let max = topic.kind.max_payload();
        if bytes.len() > max {
            return Err(DecodeError::TooLarge {
                kind: topic.kind,
                len: bytes.len(),
                max,
            });
        }
        let env: Envelope =
            minicbor::decode(bytes).map_err(|e| DecodeError::Cbor(e.to_string()))?;
        let env = env.check_version()?;
        if env.payload.kind() != topic.kind {
            return Err(DecodeError::KindMismatch {
                topic: topic.kind,
                payload: env.payload.kind(),
            });
        }
        if env.device != topic.device {
            return Err(DecodeError::DeviceMismatch {
                topic: topic.device.clone(),
                payload: env.device,
            });
        }
        Ok(env)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("envelope types always serialize to JSON")
    }

    pub fn from_json(text: &str) -> Result<Self, DecodeError> {
        let env: Envelope =
            serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
        env.check_version()
    }

    fn check_version(self) -> Result<Self, DecodeError> {
        if self.v == 0 {
            return Err(DecodeError::UnsupportedVersion(self.v));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests;
