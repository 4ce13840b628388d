//! What the controller wants each device to run (pure). The controller owns
//! it: the store holds it, and the retained `desired` message on the broker
//! is only a cache that the ingest sends again when it may be gone.

use fleet_protocol::Desired;

/// A device's desired state: what is stored for it, or the default
/// (configuration revision 0, no firmware target) when nothing is.
pub fn desired_of(stored: Option<&Desired>) -> Desired {
    stored.cloned().unwrap_or_default()
}

/// Whether a (re)connection to the broker asks for every stored desired
/// state to be sent again. Mosquitto keeps retained messages and client
/// sessions in the same persistence file, so a broker that still knows the
/// ingest's persistent session (`session_present`) still holds the retained
/// messages; one that does not (a new broker, a lost or reset persistence
/// file) may have lost them all. One bit of the CONNACK, no comparison of
/// broker state: the cheap rule.
pub fn republish_all(session_present: bool) -> bool {
    !session_present
}

/// Whether a device's desired state must be sent when it says it came
/// online: always, since the broker may have lost the retained copy
/// (Mosquitto saves it only every `autosave_interval`), and sending the
/// same retained message again is harmless to an agent that reconciles.
pub fn send_on_online() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_protocol::{TargetFirmware, Version};

    #[test]
    fn no_stored_state_is_the_default_and_a_stored_one_is_itself() {
        assert_eq!(desired_of(None), Desired::default());
        let d = Desired {
            config_rev: 7,
            firmware: Some(TargetFirmware {
                version: Version::parse("2.5.0").unwrap(),
                manifest: "targets/ballot-box-v2-2.5.0".into(),
            }),
            agent: None,
            freeze: Vec::new(),
        };
        assert_eq!(desired_of(Some(&d)), d);
    }

    #[test]
    fn everything_is_sent_again_only_when_the_broker_forgot_the_session() {
        assert!(republish_all(false));
        assert!(!republish_all(true));
        assert!(send_on_online());
    }
}
