//! Telling the broker that a device is retired, before the API says so.
//!
//! Managed broker: SIGHUP (Mosquitto re-reads the CRL, every connection
//! stays), then the retired device's own session is taken over and closed
//! (see `kick`). Nobody else reconnects, however many devices are retired.
//! External broker: the configured `broker.crl_hook` gets the CRL's path and
//! must exit 0 once the broker applied it and holds no session of the
//! device; without a hook, retiring is refused. See
//! docs/decisions/0010-revocation-and-broker-reload.md.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fleet_protocol::DeviceId;
use tokio::process::Command;

use super::{BrokerReloader, Kicker};
use crate::pki::Ca;

/// An operator's command that hands the new CRL to an external broker.
#[derive(Debug, Clone)]
pub struct CrlHook {
    pub command: PathBuf,
    pub timeout: Duration,
}

/// How retirements reach the broker.
#[derive(Clone)]
pub enum Revocation {
    /// No broker at all (tests of the HTTP layer alone).
    NoBroker,
    /// The controller's own Mosquitto; `kick` is `None` without TLS
    /// (`--insecure-dev`), where there are no certificates to revoke.
    Managed {
        reloader: BrokerReloader,
        kick: Option<Kicker>,
    },
    /// A broker set up elsewhere.
    External { hook: Option<CrlHook> },
}

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("the broker is external and broker.crl_hook is not set, so the controller cannot tell it to refuse the device's certificate; set broker.crl_hook (see fleet-controller.default.toml)")]
    NoHook,
    #[error("the CRL hook {command} failed: {reason}")]
    Hook { command: PathBuf, reason: String },
    #[error("the managed broker did not reload its CRL: {0}")]
    Reload(String),
    #[error("the device's open session could not be closed: {0}")]
    Kick(String),
}

impl Revocation {
    /// Whether a retirement can reach the broker at all; asked before
    /// anything is changed.
    pub fn check(&self) -> Result<(), RevocationError> {
        match self {
            Revocation::External { hook: None } => Err(RevocationError::NoHook),
            _ => Ok(()),
        }
    }

    /// Make the broker apply `crl` (already in place) and drop `device`.
    /// `Ok` means the broker refuses the device from now on.
    pub async fn apply(
        &self,
        crl: &Path,
        device: &DeviceId,
        ca: &Ca,
    ) -> Result<(), RevocationError> {
        match self {
            Revocation::NoBroker => Ok(()),
            Revocation::Managed { reloader, kick } => {
                reloader.reload().await.map_err(RevocationError::Reload)?;
                // The takeover's TLS handshake reaches Mosquitto after the
                // signal, and its single loop handles the reload first; the
                // device's reconnection comes later still.
                if let Some(k) = kick {
                    k.kick(ca, device).await.map_err(RevocationError::Kick)?;
                }
                Ok(())
            }
            Revocation::External { hook: None } => Err(RevocationError::NoHook),
            Revocation::External { hook: Some(h) } => run_hook(h, crl, device).await,
        }
    }
}

async fn run_hook(h: &CrlHook, crl: &Path, device: &DeviceId) -> Result<(), RevocationError> {
    let failed = |reason: String| RevocationError::Hook {
        command: h.command.clone(),
        reason,
    };
    let mut child = Command::new(&h.command)
        .arg(crl)
        .arg(device.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(format!("cannot start it: {e}")))?;
    let stderr = child.stderr.take();
    let status = tokio::time::timeout(h.timeout, child.wait())
        .await
        .map_err(|_| failed(format!("no exit within {} s", h.timeout.as_secs())))?
        .map_err(|e| failed(e.to_string()))?;
    if status.success() {
        return Ok(());
    }
    let mut said = String::new();
    if let Some(mut e) = stderr {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), e.read(&mut buf)).await {
            said = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
        }
    }
    Err(failed(format!("{status}; {said}")))
}
