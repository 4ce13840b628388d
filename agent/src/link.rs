//! Link profiles (pure): what a normal, slow or dial-up link means for the
//! agent's timing. Each key of a profile can be overridden on its own in
//! the config file; what is not overridden comes from the profile.
//!
//! The slow profile aims at about 2 KB an hour on the wire for a healthy
//! device (TCP/IP and TLS counted): a keep-alive every 15 minutes (a
//! ping and its answer cost about 250 bytes with TLS and TCP), health
//! only on a threshold crossing or once an hour, checks every 15 minutes
//! (only changes are sent).

use std::fmt;
use std::str::FromStr;

/// The profiles' names, as in `link.profile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileName {
    Normal,
    Slow,
    DialUp,
}

impl FromStr for ProfileName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "normal" => Ok(ProfileName::Normal),
            "slow" => Ok(ProfileName::Slow),
            "dial-up" => Ok(ProfileName::DialUp),
            other => Err(format!(
                "{other:?} is not a link profile (normal, slow, dial-up)"
            )),
        }
    }
}

impl fmt::Display for ProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProfileName::Normal => "normal",
            ProfileName::Slow => "slow",
            ProfileName::DialUp => "dial-up",
        })
    }
}

/// Everything a profile sets (seconds unless named otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkProfile {
    pub keep_alive_secs: u64,
    pub health_sample_secs: u64,
    /// Health is sent at least this often (and on threshold crossings).
    pub health_report_secs: u64,
    pub checks_interval_secs: u64,
    /// TCP connect + TLS handshake + MQTT CONNACK.
    pub connect_timeout_secs: u64,
    /// Writing one packet (a large payload over a 2.4 kbit/s line needs
    /// far more than rumqttc's default 5 s).
    pub write_timeout_secs: u64,
    /// Outbox records unacknowledged at once.
    pub inflight: usize,
    /// Bytes of those at once.
    pub inflight_bytes: u64,
    /// Offline health samples coalesced per this interval.
    pub coalesce_secs: u64,
}

impl LinkProfile {
    pub fn of(name: ProfileName) -> Self {
        match name {
            ProfileName::Normal => Self {
                keep_alive_secs: 60,
                health_sample_secs: 15,
                health_report_secs: 300,
                checks_interval_secs: 300,
                connect_timeout_secs: 10,
                write_timeout_secs: 10,
                inflight: 8,
                inflight_bytes: 32 * 1024,
                coalesce_secs: 300,
            },
            ProfileName::Slow => Self {
                keep_alive_secs: 900,
                health_sample_secs: 60,
                health_report_secs: 3600,
                checks_interval_secs: 900,
                connect_timeout_secs: 30,
                write_timeout_secs: 60,
                inflight: 4,
                inflight_bytes: 8 * 1024,
                coalesce_secs: 3600,
            },
            ProfileName::DialUp => Self {
                keep_alive_secs: 1800,
                health_sample_secs: 120,
                health_report_secs: 3600,
                checks_interval_secs: 1800,
                connect_timeout_secs: 90,
                write_timeout_secs: 180,
                inflight: 1,
                inflight_bytes: 4 * 1024,
                coalesce_secs: 3600,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for name in [ProfileName::Normal, ProfileName::Slow, ProfileName::DialUp] {
            assert_eq!(name.to_string().parse::<ProfileName>(), Ok(name));
        }
        assert!("dialup".parse::<ProfileName>().is_err());
    }

    #[test]
    fn slower_links_talk_less_wait_longer_and_send_fewer_at_once() {
        let [n, s, d] =
            [ProfileName::Normal, ProfileName::Slow, ProfileName::DialUp].map(LinkProfile::of);
        for (a, b) in [(n, s), (s, d)] {
            assert!(a.keep_alive_secs < b.keep_alive_secs);
            assert!(a.health_report_secs <= b.health_report_secs);
            assert!(a.write_timeout_secs < b.write_timeout_secs);
            assert!(a.inflight > b.inflight);
        }
        // Health once an hour on the slow profile (and on crossings).
        assert_eq!(s.health_report_secs, 3600);
    }
}
