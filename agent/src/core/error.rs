//! Why a message that arrived was not turned into an [`Input`](super::Input).

use fleet_protocol::{DecodeError, DeviceId, TopicError, TopicKind};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IncomingError {
    #[error("message on an unknown topic {topic:?}: {source}")]
    Topic { topic: String, source: TopicError },
    #[error("message for another device ({other}) on {topic:?}")]
    OtherDevice { topic: String, other: DeviceId },
    #[error("malformed message on {topic:?}: {source}")]
    Malformed { topic: String, source: DecodeError },
    #[error("a {kind} message is not for the agent (on {topic:?})")]
    UnexpectedKind { topic: String, kind: TopicKind },
}
