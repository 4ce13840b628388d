//! When the device renews its certificate (pure): at a fraction of the
//! certificate's life (two thirds by default) and on the
//! `renew-certificate` command, one renewal at a time, again after a
//! failure. The certificate's dates are read at the runtime edge and told
//! to the core as a [`CertInfo`]; the core only compares them with `now`.

use std::time::Duration;

/// What the core knows of the certificate in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Hex serial number, for logs.
    pub serial: String,
    pub not_before_ms: u64,
    pub not_after_ms: u64,
}

impl CertInfo {
    /// When a certificate with these dates is due for renewal: at
    /// `fraction` of its life.
    pub fn renew_at_ms(&self, fraction: f64) -> u64 {
        let life = self.not_after_ms.saturating_sub(self.not_before_ms);
        // A fraction of a life in ms: far inside f64's exact integers.
        let part = (life as f64 * fraction.clamp(0.0, 1.0)) as u64;
        self.not_before_ms.saturating_add(part)
    }
}

/// How the device renews.
#[derive(Debug, Clone, PartialEq)]
pub struct RenewalPolicy {
    /// The fraction of the certificate's life after which it is renewed
    /// (0.66: two thirds).
    pub at_fraction: f64,
    /// How long to wait for the controller's certificate after sending the
    /// request before giving up on this attempt.
    pub answer_timeout: Duration,
    /// How long after a failed attempt the next one starts.
    pub retry_after: Duration,
    /// Make a new key for each renewal (else the current key is kept).
    pub new_key: bool,
}

/// Where a renewal stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Nothing under way.
    Idle,
    /// Due, waiting for a connection to send the request.
    Wanted,
    /// The runtime is making the request (and maybe a new key).
    Making,
    /// The request went out at `since_ms`; waiting for the certificate.
    Waiting { since_ms: u64 },
    /// The runtime is trying the new certificate (the old one is kept
    /// until a connection with the new one succeeded).
    Installing,
}

impl Renewal {
    /// A renewal is under way (a second one is not started).
    pub fn busy(&self) -> bool {
        !matches!(self, Renewal::Idle | Renewal::Wanted)
    }
}
