//! Telling the broker that a device is retired, before the API says so.
//!
//! Managed broker: SIGHUP (Mosquitto re-reads the CRL, every connection
//! stays), then the retired device's own session is taken over and closed
//! (see `kick`). Nobody else reconnects, however many devices are retired.
//! External broker: the configured `broker.crl_hook` gets the CRL's path and
//! must exit 0 once the broker applied it and holds no session of the
//! device; without a hook, retiring is refused. With a provincial tier,
//! every managed broker reloads, the session is closed on the device's own
//! broker and on the managed central one (a device of a tier province may
//! still be connected there directly), and the hook runs for external ones (a provincial broker Ansible
//! runs is told through it). See
//! docs/decisions/0010-revocation-and-broker-reload.md.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fleet_protocol::{DeviceId, ProvinceCode};
use tokio::process::Command;

use super::{BrokerReloader, Kicker};
use crate::pki::Ca;

/// An operator's command that hands the new CRL to an external broker.
#[derive(Debug, Clone)]
pub struct CrlHook {
    pub command: PathBuf,
    pub timeout: Duration,
}

/// How retirements reach the brokers.
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
    /// A provincial tier: every managed broker (central and provincial)
    /// reloads the CRL, the device's session is closed on its province's
    /// broker and on the central one (where a device enrolled before the
    /// tier still connects), each where managed, and the hook runs once
    /// when that broker or the central one is external.
    Tier(std::sync::Arc<TierRevocation>),
}

/// [`Revocation::Tier`].
pub struct TierRevocation {
    /// Every broker this controller runs, reloaded at every retirement.
    pub reloaders: Vec<BrokerReloader>,
    /// The central broker.
    pub central: Where,
    /// The broker of each province served by a provincial broker.
    pub provincial: std::collections::BTreeMap<ProvinceCode, Where>,
    /// `broker.crl_hook`, for the external brokers.
    pub hook: Option<CrlHook>,
}

/// Where a device's session is closed.
#[derive(Clone)]
pub enum Where {
    /// A managed broker: taken over (`None` without TLS).
    Managed(Option<Kicker>),
    /// A broker Ansible runs: the CRL hook's job.
    External,
}

impl TierRevocation {
    fn broker_of(&self, province: Option<ProvinceCode>) -> &Where {
        province
            .and_then(|p| self.provincial.get(&p))
            .unwrap_or(&self.central)
    }

    /// The managed brokers on which a retired device of `province` has its
    /// session taken over: its own broker's, and the central one's too when
    /// that is another (a device enrolled before its province got a
    /// provincial broker keeps connecting to the central broker, and a
    /// device may be moved; its own broker is tried first).
    fn kickers(&self, province: Option<ProvinceCode>) -> Vec<&Kicker> {
        let own = self.broker_of(province);
        let mut at = vec![own];
        if !std::ptr::eq(own, &self.central) {
            at.push(&self.central);
        }
        at.into_iter()
            .filter_map(|w| match w {
                Where::Managed(Some(k)) => Some(k),
                Where::Managed(None) | Where::External => None,
            })
            .collect()
    }

    /// Whether the hook must run for a device of `province`.
    fn needs_hook(&self, province: Option<ProvinceCode>) -> bool {
        matches!(self.central, Where::External)
            || matches!(self.broker_of(province), Where::External)
    }
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
    /// Whether a retirement of a device of `province` can reach its broker
    /// at all; asked before anything is changed.
    pub fn check(&self, province: Option<ProvinceCode>) -> Result<(), RevocationError> {
        match self {
            Revocation::External { hook: None } => Err(RevocationError::NoHook),
            Revocation::Tier(t) if t.hook.is_none() && t.needs_hook(province) => {
                Err(RevocationError::NoHook)
            }
            _ => Ok(()),
        }
    }

    /// Make the brokers apply `crl` (already in place) and drop `device`
    /// (of `province`). `Ok` means the brokers refuse the device from now on.
    pub async fn apply(
        &self,
        crl: &Path,
        device: &DeviceId,
        province: Option<ProvinceCode>,
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
            Revocation::Tier(t) => {
                for r in &t.reloaders {
                    r.reload()
                        .await
                        .map_err(|e| RevocationError::Reload(format!("{}: {e}", r.name())))?;
                }
                if t.needs_hook(province) {
                    let h = t.hook.as_ref().ok_or(RevocationError::NoHook)?;
                    run_hook(h, crl, device).await?;
                }
                for k in t.kickers(province) {
                    k.kick(ca, device).await.map_err(|e| {
                        RevocationError::Kick(format!("{}:{}: {e}", k.host, k.port))
                    })?;
                }
                Ok(())
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn kicker(port: u16) -> Where {
        Where::Managed(Some(Kicker {
            host: "127.0.0.1".into(),
            port,
        }))
    }

    fn ports(t: &TierRevocation, province: &str) -> Vec<u16> {
        t.kickers(Some(ProvinceCode::parse(province).unwrap()))
            .iter()
            .map(|k| k.port)
            .collect()
    }

    #[test]
    fn a_retired_device_of_a_tier_province_is_also_taken_over_on_the_central_broker() {
        let mut provincial = std::collections::BTreeMap::new();
        provincial.insert(ProvinceCode::parse("IR-02").unwrap(), kicker(2));
        provincial.insert(ProvinceCode::parse("IR-27").unwrap(), Where::External);
        let t = TierRevocation {
            reloaders: vec![],
            central: kicker(1),
            provincial,
            hook: None,
        };
        // Its own provincial broker first, then the central one.
        assert_eq!(ports(&t, "IR-02"), vec![2, 1]);
        // Behind an external provincial broker (the hook's job there).
        assert_eq!(ports(&t, "IR-27"), vec![1]);
        // A province the tier does not serve: the central broker, once.
        assert_eq!(ports(&t, "IR-23"), vec![1]);
        assert_eq!(
            t.kickers(None).iter().map(|k| k.port).collect::<Vec<_>>(),
            vec![1]
        );
        // An external central broker: only the managed provincial one.
        let t = TierRevocation {
            central: Where::External,
            ..t
        };
        assert_eq!(ports(&t, "IR-02"), vec![2]);
    }
}
