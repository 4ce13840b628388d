//! From the bytes the broker delivered to an [`Input`]: the topic must be
//! this device's, the envelope must decode on it, and only desired state,
//! commands and renewed certificates are for the agent.

use fleet_protocol::{DeviceId, Envelope, Payload, Topic};

use super::error::IncomingError;
use super::machine::Input;

/// Decode one delivered message. `retained`: the broker's retain flag, which
/// says whether the message may be an old copy.
pub fn incoming(
    device: &DeviceId,
    topic: &str,
    payload: &[u8],
    retained: bool,
) -> Result<Input, IncomingError> {
    let parsed = Topic::parse(topic).map_err(|source| IncomingError::Topic {
        topic: topic.to_owned(),
        source,
    })?;
    if parsed.device != *device {
        return Err(IncomingError::OtherDevice {
            topic: topic.to_owned(),
            other: parsed.device,
        });
    }
    let env =
        Envelope::from_cbor_on(&parsed, payload).map_err(|source| IncomingError::Malformed {
            topic: topic.to_owned(),
            source,
        })?;
    match env.payload {
        Payload::Desired(desired) => Ok(Input::DesiredReceived {
            desired,
            sent_at_ms: env.sent_at_ms,
            retained,
        }),
        Payload::Command(command) => Ok(Input::CommandReceived(command)),
        Payload::CertIssued(issued) => Ok(Input::CertificateReceived(issued.cert_pem)),
        other => Err(IncomingError::UnexpectedKind {
            topic: topic.to_owned(),
            kind: other.kind(),
        }),
    }
}
