//! What the controller wants each device to run (pure). The controller owns
//! it: the store holds it, and the retained `desired` message on the broker
//! is only a cache that the ingest sends again when it may be gone.

use fleet_protocol::{Desired, FreezeWindow};

/// A device's desired state: what is stored for it, or the default
/// (configuration revision 0, no firmware target) when nothing is, with
/// the fleet's freeze windows (`freeze`) in place of whatever it held.
pub fn desired_of(stored: Option<&Desired>, freeze: &[FreezeWindow]) -> Desired {
    let mut d = stored.cloned().unwrap_or_default();
    d.freeze = freeze.to_vec();
    d
}

/// At most this many freeze windows (each desired state carries them all,
/// and a desired payload has a size limit).
pub const MAX_FREEZE_WINDOWS: usize = 32;

/// Why a list of freeze windows is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FreezeError {
    #[error("window {index}: it must end after it starts ({from_ms} .. {to_ms})")]
    Empty {
        index: usize,
        from_ms: u64,
        to_ms: u64,
    },
    #[error("at most {MAX_FREEZE_WINDOWS} windows ({given} given)")]
    TooMany { given: usize },
}

/// A time an operator wrote: Unix milliseconds, or RFC 3339 text.
pub fn parse_time(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|e| format!("{text:?}: {e}"));
    }
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{text:?} is neither Unix ms nor RFC 3339 ({e})"))?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("{text:?} is before 1970"))
}

/// Unix ms as RFC 3339 in UTC, to the second (`2026-06-18T20:30:00Z`).
pub fn rfc3339(ms: u64) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{ms} ms"),
    }
}

/// Check freeze windows and put them in order (by start; duplicates once).
pub fn freeze_windows(mut windows: Vec<FreezeWindow>) -> Result<Vec<FreezeWindow>, FreezeError> {
    if windows.len() > MAX_FREEZE_WINDOWS {
        return Err(FreezeError::TooMany {
            given: windows.len(),
        });
    }
    for (index, w) in windows.iter().enumerate() {
        if w.to_ms <= w.from_ms {
            return Err(FreezeError::Empty {
                index,
                from_ms: w.from_ms,
                to_ms: w.to_ms,
            });
        }
    }
    windows.sort_by_key(|w| (w.from_ms, w.to_ms));
    windows.dedup();
    Ok(windows)
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
    fn times_are_unix_ms_or_rfc_3339_and_read_back() {
        assert_eq!(parse_time("1750000000000"), Ok(1_750_000_000_000));
        assert_eq!(parse_time("2026-06-18T00:00:00Z"), Ok(1_781_740_800_000));
        assert_eq!(
            parse_time("2026-06-18T03:30:00+03:30"),
            Ok(1_781_740_800_000)
        );
        assert_eq!(rfc3339(1_781_740_800_000), "2026-06-18T00:00:00Z");
        assert!(parse_time("tomorrow").is_err());
        assert!(parse_time("").is_err());
    }

    #[test]
    fn freeze_windows_are_ordered_and_empty_ones_refused() {
        let w = |from_ms, to_ms| FreezeWindow { from_ms, to_ms };
        assert_eq!(
            freeze_windows(vec![w(50, 60), w(10, 20), w(50, 60)]).unwrap(),
            [w(10, 20), w(50, 60)]
        );
        assert_eq!(
            freeze_windows(vec![w(10, 20), w(30, 30)]),
            Err(FreezeError::Empty {
                index: 1,
                from_ms: 30,
                to_ms: 30
            })
        );
        assert!(matches!(
            freeze_windows(vec![w(1, 2); MAX_FREEZE_WINDOWS + 1]),
            Err(FreezeError::TooMany { .. })
        ));
        assert_eq!(freeze_windows(vec![]).unwrap(), []);
    }

    #[test]
    fn every_desired_state_carries_the_fleet_s_freeze_windows() {
        let freeze = [FreezeWindow {
            from_ms: 1,
            to_ms: 2,
        }];
        let mut stored = Desired {
            config_rev: 3,
            ..Desired::default()
        };
        stored.freeze = vec![FreezeWindow {
            from_ms: 7,
            to_ms: 8,
        }];
        assert_eq!(desired_of(Some(&stored), &freeze).freeze, freeze);
        assert_eq!(desired_of(Some(&stored), &freeze).config_rev, 3);
        assert_eq!(desired_of(None, &freeze).freeze, freeze);
    }

    #[test]
    fn no_stored_state_is_the_default_and_a_stored_one_is_itself() {
        assert_eq!(desired_of(None, &[]), Desired::default());
        let d = Desired {
            config_rev: 7,
            firmware: Some(TargetFirmware {
                version: Version::parse("2.5.0").unwrap(),
                manifest: "targets/ballot-box-v2-2.5.0".into(),
                attempt: 0,
            }),
            agent: None,
            freeze: Vec::new(),
        };
        assert_eq!(desired_of(Some(&d), &[]), d);
    }

    #[test]
    fn everything_is_sent_again_only_when_the_broker_forgot_the_session() {
        assert!(republish_all(false));
        assert!(!republish_all(true));
        assert!(send_on_online());
    }
}
