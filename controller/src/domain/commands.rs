//! Operators' one-off commands to a device (pure): which actions exist,
//! how long a command may wait for its device, which devices a selector
//! reaches, what a device's answer makes of a stored command, and when a
//! log upload is taken. The device answers with a `command-result` event.

use fleet_protocol::{Action, Command, CountyCode, DeviceId, Model, ProvinceCode, UploadTicket};

use crate::domain::auth::Principal;
use crate::domain::fleet::Device;
use crate::domain::lifecycle::{Lifecycle, Rules};
use crate::domain::readiness::Readiness;

/// How long a command waits for an offline device when the operator does
/// not say: ten minutes.
pub const DEFAULT_EXPIRY_S: u64 = 600;
/// The longest a command may wait: a day. A device offline longer gets a
/// command that is no longer what the operator meant; send it again.
pub const MAX_EXPIRY_S: u64 = 86_400;
/// How many of a device's commands its page shows.
pub const SHOWN_PER_DEVICE: u32 = 20;

/// The actions an operator may send, by their API names.
pub const ACTIONS: [(&str, Action); 4] = [
    ("reboot", Action::Reboot),
    ("run-checks", Action::RunChecks),
    ("upload-logs", Action::UploadLogs),
    ("renew-certificate", Action::RenewCertificate),
];
/// Other names accepted for an action (the CLI's short forms).
pub const ALIASES: [(&str, Action); 1] = [("renew-cert", Action::RenewCertificate)];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown action {0:?}; one of: reboot, run-checks, upload-logs, renew-certificate (or renew-cert)")]
    UnknownAction(String),
    #[error("expires_in_s must be 1 to {MAX_EXPIRY_S} seconds, not {0}")]
    BadExpiry(u64),
    #[error("device {device} is {}, not in service: it cannot be sent commands", lifecycle.as_str())]
    NotInService {
        device: DeviceId,
        lifecycle: Lifecycle,
    },
    #[error("a selector must name provinces, counties or devices (an empty one would reach the whole fleet)")]
    EmptySelector,
}

pub fn parse_action(name: &str) -> Result<Action, CommandError> {
    ACTIONS
        .iter()
        .chain(ALIASES.iter())
        .find(|(n, _)| *n == name)
        .map(|(_, a)| *a)
        .ok_or_else(|| CommandError::UnknownAction(name.to_owned()))
}

pub fn action_name(action: Action) -> &'static str {
    match action {
        Action::Reboot => "reboot",
        Action::RunChecks => "run-checks",
        Action::UploadLogs => "upload-logs",
        Action::RenewCertificate => "renew-certificate",
    }
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

/// Where a device uploads the logs of command `id`.
pub fn logs_path(device: &DeviceId, id: &str) -> String {
    format!("/api/v1/devices/{device}/logs/{id}")
}

/// Whether `s` is a command id as [`command`] makes them: `cmd-` and 16
/// lower-case hex digits (safe in a file name).
pub fn is_command_id(s: &str) -> bool {
    s.strip_prefix("cmd-").is_some_and(|h| {
        h.len() == 16
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A command with its id made from `random` bytes; an upload-logs command
/// carries a one-use ticket whose token is made from `token` bytes.
pub fn command(
    random: [u8; 8],
    token: [u8; 32],
    device: &DeviceId,
    action: Action,
    expires_at_ms: u64,
) -> Command {
    let id = format!("cmd-{}", hex::encode(random));
    let upload = (action == Action::UploadLogs).then(|| UploadTicket {
        path: logs_path(device, &id),
        token: hex::encode(token),
    });
    Command {
        id,
        expires_at_ms,
        action,
        upload,
    }
}

/// What the controller keeps of an upload token: its SHA-256, hex.
pub fn token_sha256(token: &str) -> String {
    crate::domain::auth::token_hash(token)
}

/// Where a command stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandState {
    /// Published; no answer yet.
    Sent,
    Ok,
    Failed,
    /// Not answered before its expiry, or refused by the device as expired.
    Expired,
}

impl CommandState {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandState::Sent => "sent",
            CommandState::Ok => "ok",
            CommandState::Failed => "failed",
            CommandState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            CommandState::Sent,
            CommandState::Ok,
            CommandState::Failed,
            CommandState::Expired,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// The state a device's answer gives a stored command, or `None` when it
/// changes nothing (the command already has its answer: a re-delivery).
/// A failure the device sent after the expiry is the device refusing an
/// expired command: `expired`. A success wins even over the sweeper's
/// `expired` (the device ran it in time; its answer came late).
pub fn settle(held: CommandState, expires_ms: u64, ok: bool, at_ms: u64) -> Option<CommandState> {
    match held {
        CommandState::Ok | CommandState::Failed => None,
        CommandState::Sent | CommandState::Expired if ok => Some(CommandState::Ok),
        CommandState::Expired => Some(CommandState::Expired),
        CommandState::Sent if at_ms > expires_ms => Some(CommandState::Expired),
        CommandState::Sent => Some(CommandState::Failed),
    }
}

/// Whether the sweeper marks a command `expired` at `now_ms`.
pub fn is_overdue(state: CommandState, expires_ms: u64, now_ms: u64) -> bool {
    state == CommandState::Sent && now_ms > expires_ms
}

/// Which devices a selector names. Within a list any entry matches; across
/// fields all must (provinces and counties narrow, model and readiness
/// filter). At least one of provinces, counties or devices is required.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub provinces: Vec<ProvinceCode>,
    pub counties: Vec<CountyCode>,
    pub model: Option<Model>,
    pub readiness: Option<Readiness>,
    pub devices: Vec<DeviceId>,
}

/// Why a selector is refused for this caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutOfScope {
    /// A named province (or a named county's province) the caller does not see.
    Province(ProvinceCode),
}

impl Selector {
    pub fn check(&self) -> Result<(), CommandError> {
        if self.provinces.is_empty() && self.counties.is_empty() && self.devices.is_empty() {
            return Err(CommandError::EmptySelector);
        }
        Ok(())
    }

    /// A technician naming a province (or a county of one) outside its
    /// scope; named devices are checked one by one against the fleet.
    pub fn out_of_scope(&self, caller: &Principal) -> Option<OutOfScope> {
        self.provinces
            .iter()
            .copied()
            .chain(self.counties.iter().map(CountyCode::province))
            .find(|p| !caller.sees(*p))
            .map(OutOfScope::Province)
    }

    /// Whether `d` is selected for `caller`: never a device of a province
    /// the caller does not see, whatever the selector says.
    pub fn selects(&self, d: &Device, caller: &Principal) -> bool {
        caller.sees(d.reg.province)
            && (self.provinces.is_empty() || self.provinces.contains(&d.reg.province))
            && (self.counties.is_empty()
                || d.reg
                    .county
                    .as_ref()
                    .is_some_and(|c| self.counties.contains(c)))
            && (self.devices.is_empty() || self.devices.contains(&d.reg.id))
            && self.model.as_ref().is_none_or(|m| &d.reg.model == m)
            && self.readiness.is_none_or(|want| d.reason == want.reason())
    }
}

/// What the controller holds of a command when its logs arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldUpload {
    pub action: Action,
    pub expires_ms: u64,
    /// `None` once the token was used.
    pub token_sha256: Option<String>,
}

/// Why a log upload is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadRefused {
    #[error("no upload-logs command {command} for device {device}")]
    NoSuchCommand { device: DeviceId, command: String },
    #[error("the upload token of command {0} was already used")]
    Used(String),
    #[error("wrong upload token for command {0}")]
    BadToken(String),
    #[error("command {0} expired before its logs arrived")]
    Expired(String),
    #[error("{size} bytes of logs, above the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
}

/// Whether an upload with `token` for command `id` is taken at `now_ms`:
/// only for an upload-logs command, with its token, once, before expiry.
pub fn check_upload(
    device: &DeviceId,
    id: &str,
    held: Option<&HeldUpload>,
    token: &str,
    now_ms: u64,
) -> Result<(), UploadRefused> {
    let Some(held) = held.filter(|h| h.action == Action::UploadLogs) else {
        return Err(UploadRefused::NoSuchCommand {
            device: device.clone(),
            command: id.to_owned(),
        });
    };
    let Some(want) = &held.token_sha256 else {
        return Err(UploadRefused::Used(id.to_owned()));
    };
    if token_sha256(token) != *want {
        return Err(UploadRefused::BadToken(id.to_owned()));
    }
    if now_ms > held.expires_ms {
        return Err(UploadRefused::Expired(id.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::auth::Role;

    #[test]
    fn the_four_actions_parse_by_name_renew_cert_is_an_alias_and_others_are_refused() {
        for (name, action) in ACTIONS {
            assert_eq!(parse_action(name), Ok(action));
            assert_eq!(action_name(action), name);
        }
        assert_eq!(parse_action("upload-logs"), Ok(Action::UploadLogs));
        assert_eq!(parse_action("renew-cert"), Ok(Action::RenewCertificate));
        assert_eq!(
            parse_action("format-disk"),
            Err(CommandError::UnknownAction("format-disk".into()))
        );
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
    fn the_id_is_made_from_the_random_bytes_and_only_upload_logs_gets_a_ticket() {
        let dev = DeviceId::parse("BB-1").unwrap();
        let c = command([0xab; 8], [1; 32], &dev, Action::Reboot, 5);
        assert_eq!(c.id, "cmd-abababababababab");
        assert!(is_command_id(&c.id));
        assert_eq!(
            (c.expires_at_ms, c.action, c.upload),
            (5, Action::Reboot, None)
        );
        let c = command([0xcd; 8], [0x11; 32], &dev, Action::UploadLogs, 5);
        let t = c.upload.unwrap();
        assert_eq!(t.path, "/api/v1/devices/BB-1/logs/cmd-cdcdcdcdcdcdcdcd");
        assert_eq!(t.token, "11".repeat(32));
        for bad in [
            "cmd-ABABABABABABABAB",
            "cmd-abab",
            "../etc/passwd",
            "cmd-abababababababab0",
        ] {
            assert!(!is_command_id(bad), "{bad}");
        }
    }

    #[test]
    fn the_first_answer_settles_a_command_and_a_late_refusal_is_an_expiry() {
        use CommandState::*;
        assert_eq!(settle(Sent, 100, true, 50), Some(Ok));
        assert_eq!(
            settle(Sent, 100, false, 100),
            Some(Failed),
            "at the expiry it still runs"
        );
        assert_eq!(settle(Sent, 100, false, 101), Some(Expired));
        assert_eq!(settle(Expired, 100, false, 101), Some(Expired));
        assert_eq!(
            settle(Expired, 100, true, 90),
            Some(Ok),
            "ran in time, answered late"
        );
        for held in [Ok, Failed] {
            for ok in [true, false] {
                assert_eq!(settle(held, 100, ok, 50), None, "a re-delivery");
            }
        }
        assert!(!is_overdue(Sent, 100, 100));
        assert!(is_overdue(Sent, 100, 101));
        assert!(!is_overdue(Ok, 100, 101));
        for s in [Sent, Ok, Failed, Expired] {
            assert_eq!(CommandState::parse(s.as_str()), Some(s));
        }
    }

    fn principal(provinces: &[&str]) -> Principal {
        Principal {
            token_id: "t".into(),
            name: "n".into(),
            role: if provinces.is_empty() {
                Role::CentralOps
            } else {
                Role::ProvinceTech
            },
            provinces: provinces.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    fn device(id: &str, province: &str, county: Option<&str>, model: &str) -> Device {
        use crate::domain::fleet::{Registration, Status};
        let mut fleet = crate::domain::fleet::Fleet::new(60_000);
        let reg = Registration {
            id: DeviceId::parse(id).unwrap(),
            model: model.parse().unwrap(),
            province: province.parse().unwrap(),
            county: county.map(|c| c.parse().unwrap()),
            station: None,
            lifecycle: Lifecycle::Deployed,
            registered_at_ms: 0,
        };
        fleet.upsert(reg.clone(), Status::default(), 0);
        fleet.get(&reg.id).unwrap().clone()
    }

    #[test]
    fn a_selector_never_reaches_outside_the_callers_provinces() {
        let tech = principal(&["IR-02"]);
        let ops = principal(&[]);
        let sari = device("BB-1", "IR-02", Some("IR-02-SARI"), "ballot-box-v2");
        let tehran = device("BB-2", "IR-23", None, "ballot-box-v2");
        let laptop = device("BB-3", "IR-02", None, "id-laptop-v1");

        let by_device = Selector {
            devices: vec![tehran.reg.id.clone(), sari.reg.id.clone()],
            ..Selector::default()
        };
        assert!(by_device.selects(&sari, &tech));
        assert!(
            !by_device.selects(&tehran, &tech),
            "named, but not the tech's"
        );
        assert!(by_device.selects(&tehran, &ops));

        let province = Selector {
            provinces: vec!["IR-02".parse().unwrap()],
            model: Some("ballot-box-v2".parse().unwrap()),
            ..Selector::default()
        };
        assert!(province.selects(&sari, &tech));
        assert!(!province.selects(&laptop, &tech), "another model");
        assert!(!province.selects(&tehran, &ops), "another province");
        assert_eq!(province.out_of_scope(&tech), None);

        let county = Selector {
            counties: vec!["IR-02-SARI".parse().unwrap()],
            ..Selector::default()
        };
        assert!(county.selects(&sari, &tech));
        assert!(!county.selects(&laptop, &tech), "no county");

        let tehran_named = Selector {
            provinces: vec!["IR-23".parse().unwrap()],
            ..Selector::default()
        };
        assert_eq!(
            tehran_named.out_of_scope(&tech),
            Some(OutOfScope::Province("IR-23".parse().unwrap()))
        );
        assert_eq!(tehran_named.out_of_scope(&ops), None);
        assert_eq!(
            Selector::default().check(),
            Err(CommandError::EmptySelector)
        );
        assert_eq!(county.check(), Ok(()));
    }

    #[test]
    fn an_upload_is_taken_once_with_its_token_before_expiry() {
        let dev = DeviceId::parse("BB-1").unwrap();
        let held = HeldUpload {
            action: Action::UploadLogs,
            expires_ms: 100,
            token_sha256: Some(token_sha256("secret")),
        };
        assert_eq!(check_upload(&dev, "c", Some(&held), "secret", 100), Ok(()));
        assert_eq!(
            check_upload(&dev, "c", Some(&held), "guess", 50),
            Err(UploadRefused::BadToken("c".into()))
        );
        assert_eq!(
            check_upload(&dev, "c", Some(&held), "secret", 101),
            Err(UploadRefused::Expired("c".into()))
        );
        let used = HeldUpload {
            token_sha256: None,
            ..held.clone()
        };
        assert_eq!(
            check_upload(&dev, "c", Some(&used), "secret", 50),
            Err(UploadRefused::Used("c".into()))
        );
        let reboot = HeldUpload {
            action: Action::Reboot,
            ..held
        };
        for h in [None, Some(&reboot)] {
            assert!(matches!(
                check_upload(&dev, "c", h, "secret", 50),
                Err(UploadRefused::NoSuchCommand { .. })
            ));
        }
    }
}
