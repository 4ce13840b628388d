//! What must be published (pure): the reported state when it differs from
//! the last one the broker acknowledged (kept across restarts as a digest),
//! and check events when a check starts failing or recovers.

use fleet_protocol::{CheckResult, DeviceId, Envelope, EventKind, Payload, State};

/// A state's digest: 64-bit FNV-1a over its CBOR encoding (in an envelope
/// stamped 0, so only the state counts). It tells a changed state from an
/// unchanged one across restarts; it protects nothing (the broker and the
/// controller see the state itself).
pub fn state_digest(device: &DeviceId, state: &State) -> u64 {
    let envelope = Envelope::new(device.clone(), 0, Payload::State(state.clone()));
    // A state over its size limit is never sent; any digest will do.
    let bytes = envelope.to_cbor().unwrap_or_default();
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Report by exception for the state: it goes out when it differs from
/// what went out on this connection, or, on a fresh connection, from the
/// last state the broker acknowledged (PUBACK). Nothing acknowledged yet
/// (a device the controller has never heard from): it goes out.
#[derive(Debug, Default)]
pub struct StateReporter {
    /// Handed to the broker on this connection (acknowledged or not).
    last_sent: Option<u64>,
    /// What `last_sent` was before the latest [`Self::sent`], so a refused
    /// publish can be taken back.
    before: Option<u64>,
    /// The last state the broker acknowledged, by digest.
    acked: Option<u64>,
}

impl StateReporter {
    /// A new connection: what was sent on the last one may not have arrived;
    /// what the broker acknowledged did.
    pub fn connection_established(&mut self) {
        self.last_sent = None;
        self.before = None;
    }

    pub fn needs_send(&self, digest: u64) -> bool {
        match self.last_sent {
            Some(sent) => sent != digest,
            None => self.acked != Some(digest),
        }
    }

    pub fn sent(&mut self, digest: u64) {
        self.before = self.last_sent.replace(digest);
    }

    /// The state last marked [`Self::sent`] never reached the broker: the
    /// next check compares against what went out before it.
    pub fn refused(&mut self) {
        self.last_sent = self.before.take();
    }

    /// The broker acknowledged the state with this digest (or an earlier
    /// run's acknowledgement, read back from the outbox's file).
    pub fn acknowledged(&mut self, digest: u64) {
        self.acked = Some(digest);
    }

    pub fn acked(&self) -> Option<u64> {
        self.acked
    }
}

/// Events for checks whose outcome changed between two runs. A check seen
/// for the first time produces an event only if it fails.
pub fn check_events(previous: &[CheckResult], current: &[CheckResult]) -> Vec<EventKind> {
    current
        .iter()
        .filter_map(|c| {
            let before = previous.iter().find(|p| p.name == c.name);
            match (before.map(|p| p.passed), c.passed) {
                (Some(true) | None, false) => Some(EventKind::CheckFailed {
                    name: c.name.clone(),
                    message: c.message.clone().unwrap_or_default(),
                }),
                (Some(false), true) => Some(EventKind::CheckRecovered {
                    name: c.name.clone(),
                }),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_protocol::{Model, UpdateStatus, Version};

    fn check(name: &str, passed: bool) -> CheckResult {
        CheckResult {
            name: name.into(),
            passed,
            message: (!passed).then(|| "no paper".to_string()),
        }
    }

    fn state(checks: Vec<CheckResult>) -> State {
        State {
            model: Model::parse("ballot-box-v2").unwrap(),
            firmware: Version::parse("2.4.0").unwrap(),
            agent: Version::parse("0.1.0").unwrap(),
            update: UpdateStatus::Idle,
            checks,
            config_rev: 0,
        }
    }

    fn digest(checks: Vec<CheckResult>) -> u64 {
        state_digest(&DeviceId::parse("BB-1").unwrap(), &state(checks))
    }

    #[test]
    fn digests_tell_states_apart_and_are_stable() {
        let ok = digest(vec![check("printer", true)]);
        assert_eq!(ok, digest(vec![check("printer", true)]));
        assert_ne!(ok, digest(vec![check("printer", false)]));
        assert_ne!(ok, digest(vec![]));
        let other = state_digest(
            &DeviceId::parse("BB-2").unwrap(),
            &state(vec![check("printer", true)]),
        );
        assert_ne!(ok, other, "the device is part of what is digested");
    }

    #[test]
    fn state_sent_on_change_and_on_reconnect_unless_acknowledged() {
        let mut r = StateReporter::default();
        let s = digest(vec![check("printer", true)]);
        assert!(r.needs_send(s), "nothing acknowledged yet");
        r.sent(s);
        assert!(!r.needs_send(s));
        let changed = digest(vec![check("printer", false)]);
        assert!(r.needs_send(changed));
        // Lost before its acknowledgement: sent again on the next connection.
        r.connection_established();
        assert!(r.needs_send(s));
        r.sent(s);
        r.acknowledged(s);
        r.connection_established();
        assert!(!r.needs_send(s), "acknowledged and unchanged");
        assert!(r.needs_send(changed));
    }

    #[test]
    fn refused_state_is_taken_back() {
        let mut r = StateReporter::default();
        let s = digest(vec![check("printer", true)]);
        r.sent(s);
        let changed = digest(vec![check("printer", false)]);
        r.sent(changed);
        r.refused();
        assert!(r.needs_send(changed));
        assert!(!r.needs_send(s));
    }

    #[test]
    fn events_on_transitions_only() {
        let ok = vec![check("printer", true), check("scanner", true)];
        let broken = vec![check("printer", false), check("scanner", true)];
        assert!(check_events(&ok, &ok).is_empty());
        let ev = check_events(&ok, &broken);
        assert_eq!(ev.len(), 1);
        assert!(
            matches!(&ev[0], EventKind::CheckFailed { name, message } if name == "printer" && message == "no paper")
        );
        assert!(check_events(&broken, &broken).is_empty());
        let ev = check_events(&broken, &ok);
        assert!(matches!(&ev[..], [EventKind::CheckRecovered { name }] if name == "printer"));
        // first run: only failures are news
        assert_eq!(check_events(&[], &broken).len(), 1);
        assert!(check_events(&[], &ok).is_empty());
    }
}
