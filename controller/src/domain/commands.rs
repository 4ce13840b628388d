//! Operators' one-off commands to a device (pure): which actions exist,
//! how long a command may wait for its device, which devices a selector
//! reaches, what a device's answer makes of a stored command, and when a
//! log upload is taken. The device answers with a `command-result` event.

use std::collections::HashSet;

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
/// The most entries one selector list (provinces, counties, devices) may
/// hold: a whole province is named by its code, not by its devices.
pub const MAX_SELECTOR_ENTRIES: usize = 10_000;
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
    #[error("selector.{field} names {count} entries, above the cap of {MAX_SELECTOR_ENTRIES}; name a province or county instead, or send several requests")]
    SelectorTooLarge { field: &'static str, count: usize },
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
/// `at_ms`: when the device answered (its clock, capped at the receipt).
/// A failure the device sent after the expiry is the device refusing an
/// expired command: `expired`. A success wins over the sweeper's `expired`
/// only when it came at or before the expiry (the device ran it in time;
/// its answer arrived late). Once logs were taken for the command
/// (`uploaded`), a failure is a second delivery's refused upload, not the
/// command's outcome: it changes nothing.
pub fn settle(
    held: CommandState,
    expires_ms: u64,
    ok: bool,
    at_ms: u64,
    uploaded: bool,
) -> Option<CommandState> {
    let in_time = at_ms <= expires_ms;
    match held {
        CommandState::Ok | CommandState::Failed => None,
        _ if !ok && uploaded => None,
        CommandState::Sent | CommandState::Expired if ok && in_time => Some(CommandState::Ok),
        // Ran after its expiry: the sweeper's word stands.
        CommandState::Expired if ok => None,
        CommandState::Expired => Some(CommandState::Expired),
        CommandState::Sent if !in_time => Some(CommandState::Expired),
        CommandState::Sent => Some(CommandState::Failed),
    }
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
    /// A set: each named device is looked up directly, and a name given
    /// twice gets one command.
    pub devices: HashSet<DeviceId>,
}

/// Why a selector is refused for this caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutOfScope {
    /// A named province (or a named county's province) the caller does not see.
    Province(ProvinceCode),
}

/// Refuse a selector list longer than [`MAX_SELECTOR_ENTRIES`], before
/// anything is built from it.
pub fn check_selector_len(field: &'static str, count: usize) -> Result<(), CommandError> {
    if count > MAX_SELECTOR_ENTRIES {
        Err(CommandError::SelectorTooLarge { field, count })
    } else {
        Ok(())
    }
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
    // Past the expiry first: the sweeper also spends an expired command's
    // token, and "expired" is the truer answer then.
    if now_ms > held.expires_ms {
        return Err(UploadRefused::Expired(id.to_owned()));
    }
    let Some(want) = &held.token_sha256 else {
        return Err(UploadRefused::Used(id.to_owned()));
    };
    if token_sha256(token) != *want {
        return Err(UploadRefused::BadToken(id.to_owned()));
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
        let shown = format!("{c:?}");
        assert!(
            !shown.contains(&"11".repeat(32)),
            "the token is not logged: {shown}"
        );
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
        assert_eq!(settle(Sent, 100, true, 50, false), Some(Ok));
        assert_eq!(
            settle(Sent, 100, false, 100, false),
            Some(Failed),
            "at the expiry it still runs"
        );
        assert_eq!(settle(Sent, 100, false, 101, false), Some(Expired));
        assert_eq!(settle(Sent, 100, true, 101, false), Some(Expired));
        assert_eq!(settle(Expired, 100, false, 101, false), Some(Expired));
        assert_eq!(
            settle(Expired, 100, true, 100, false),
            Some(Ok),
            "ran in time, answered late"
        );
        assert_eq!(
            settle(Expired, 100, true, 101, false),
            None,
            "ran after its expiry: the sweeper's word stands"
        );
        for held in [Ok, Failed] {
            for ok in [true, false] {
                assert_eq!(settle(held, 100, ok, 50, false), None, "a re-delivery");
            }
        }
        for s in [Sent, Ok, Failed, Expired] {
            assert_eq!(CommandState::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn once_logs_are_taken_a_failure_does_not_settle_the_command() {
        use CommandState::*;
        // The second delivery's upload was refused (its token spent).
        assert_eq!(settle(Sent, 100, false, 50, true), None);
        assert_eq!(settle(Expired, 100, false, 150, true), None);
        assert_eq!(settle(Sent, 100, true, 50, true), Some(Ok));
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
            devices: [tehran.reg.id.clone(), sari.reg.id.clone()].into(),
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
    fn a_selector_list_is_capped() {
        assert_eq!(check_selector_len("devices", MAX_SELECTOR_ENTRIES), Ok(()));
        let refused = check_selector_len("devices", MAX_SELECTOR_ENTRIES + 1).unwrap_err();
        assert_eq!(
            refused,
            CommandError::SelectorTooLarge {
                field: "devices",
                count: MAX_SELECTOR_ENTRIES + 1
            }
        );
        assert!(refused.to_string().contains("10000"), "{refused}");
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
        assert_eq!(
            check_upload(&dev, "c", Some(&used), "secret", 101),
            Err(UploadRefused::Expired("c".into())),
            "spent by the sweeper at its expiry"
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
