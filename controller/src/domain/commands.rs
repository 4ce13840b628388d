//! Operators' one-off commands to a device (pure): which actions exist,
//! how long a command may wait for its device, and which devices may be
//! sent one. The device answers with a `command-result` event.

use fleet_protocol::{Action, Command, DeviceId};

use crate::domain::lifecycle::{Lifecycle, Rules};

/// How long a command waits for an offline device when the operator does
/// not say: ten minutes.
pub const DEFAULT_EXPIRY_S: u64 = 600;
/// The longest a command may wait: a day. A device offline longer gets a
/// command that is no longer what the operator meant; send it again.
pub const MAX_EXPIRY_S: u64 = 86_400;

/// The actions an operator may send, by their API names.
pub const ACTIONS: [(&str, Action); 3] = [
    ("reboot", Action::Reboot),
    ("run-checks", Action::RunChecks),
    ("renew-certificate", Action::RenewCertificate),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown action {0:?}; one of: reboot, run-checks, renew-certificate")]
    UnknownAction(String),
    #[error("expires_in_s must be 1 to {MAX_EXPIRY_S} seconds, not {0}")]
    BadExpiry(u64),
    #[error("device {device} is {}, not in service: it cannot be sent commands", lifecycle.as_str())]
    NotInService {
        device: DeviceId,
        lifecycle: Lifecycle,
    },
}

pub fn parse_action(name: &str) -> Result<Action, CommandError> {
    ACTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| *a)
        .ok_or_else(|| CommandError::UnknownAction(name.to_owned()))
}

pub fn action_name(action: Action) -> &'static str {
    ACTIONS
        .iter()
        .find(|(_, a)| *a == action)
        .map_or("upload-logs", |(n, _)| n)
}

/// When a command sent at `now_ms` expires.
pub fn expires_at(now_ms: u64, expires_in_s: Option<u64>) -> Result<u64, CommandError> {
    let s = expires_in_s.unwrap_or(DEFAULT_EXPIRY_S);
    if !(1..=MAX_EXPIRY_S).contains(&s) {
        return Err(CommandError::BadExpiry(s));
    }
    Ok(now_ms + s * 1000)
}

/// Only a device in service (enrolled, shipped, deployed) holds a
/// certificate and a session to receive a command.
pub fn check_target(device: &DeviceId, lifecycle: Lifecycle) -> Result<(), CommandError> {
    if lifecycle.is_enrolled() {
        Ok(())
    } else {
        Err(CommandError::NotInService {
            device: device.clone(),
            lifecycle,
        })
    }
}

/// A command with its id made from `random` bytes.
pub fn command(random: [u8; 8], action: Action, expires_at_ms: u64) -> Command {
    Command {
        id: format!("cmd-{}", hex::encode(random)),
        expires_at_ms,
        action,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_actions_parse_by_name_and_others_are_refused() {
        for (name, action) in ACTIONS {
            assert_eq!(parse_action(name), Ok(action));
            assert_eq!(action_name(action), name);
        }
        assert_eq!(
            parse_action("format-disk"),
            Err(CommandError::UnknownAction("format-disk".into()))
        );
        assert!(parse_action("upload-logs").is_err());
    }

    #[test]
    fn expiry_has_a_default_and_a_cap() {
        assert_eq!(expires_at(1_000, None), Ok(1_000 + 600_000));
        assert_eq!(expires_at(0, Some(MAX_EXPIRY_S)), Ok(86_400_000));
        assert_eq!(
            expires_at(0, Some(MAX_EXPIRY_S + 1)),
            Err(CommandError::BadExpiry(86_401))
        );
        assert_eq!(expires_at(0, Some(0)), Err(CommandError::BadExpiry(0)));
    }

    #[test]
    fn only_devices_in_service_take_commands() {
        let id = DeviceId::parse("BB-1").unwrap();
        for l in [Lifecycle::Enrolled, Lifecycle::Shipped, Lifecycle::Deployed] {
            assert_eq!(check_target(&id, l), Ok(()));
        }
        for l in [Lifecycle::Registered, Lifecycle::Retired] {
            assert!(matches!(
                check_target(&id, l),
                Err(CommandError::NotInService { .. })
            ));
        }
    }

    #[test]
    fn the_id_is_made_from_the_random_bytes() {
        let c = command([0xab; 8], Action::Reboot, 5);
        assert_eq!(c.id, "cmd-abababababababab");
        assert_eq!((c.expires_at_ms, c.action), (5, Action::Reboot));
    }
}
