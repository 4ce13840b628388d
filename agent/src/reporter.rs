//! What must be published (pure): the reported state when it changed (or on
//! every new connection), and check events when a check starts failing or
//! recovers.

use fleet_protocol::{CheckResult, EventKind, State};

#[derive(Debug, Default)]
pub struct StateReporter {
    last_sent: Option<State>,
    /// What `last_sent` was before the latest [`Self::sent`], so a refused
    /// publish can be taken back.
    before: Option<State>,
}

impl StateReporter {
    /// On a fresh connection the broker may have lost the retained state:
    /// forget what was sent so the next state goes out.
    pub fn connection_established(&mut self) {
        self.last_sent = None;
    }

    pub fn needs_send(&self, state: &State) -> bool {
        self.last_sent.as_ref() != Some(state)
    }

    pub fn sent(&mut self, state: State) {
        self.before = self.last_sent.replace(state);
    }

    /// The state last marked [`Self::sent`] never reached the broker: the
    /// next check compares against what went out before it.
    pub fn refused(&mut self) {
        self.last_sent = self.before.take();
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

    #[test]
    fn state_sent_on_change_and_on_reconnect() {
        let mut r = StateReporter::default();
        let s = state(vec![check("printer", true)]);
        assert!(r.needs_send(&s));
        r.sent(s.clone());
        assert!(!r.needs_send(&s));
        let changed = state(vec![check("printer", false)]);
        assert!(r.needs_send(&changed));
        r.connection_established();
        assert!(r.needs_send(&s));
    }

    #[test]
    fn refused_state_is_taken_back() {
        let mut r = StateReporter::default();
        let s = state(vec![check("printer", true)]);
        r.sent(s.clone());
        let changed = state(vec![check("printer", false)]);
        r.sent(changed.clone());
        r.refused();
        assert!(r.needs_send(&changed));
        assert!(!r.needs_send(&s));
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
