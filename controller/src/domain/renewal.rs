//! Certificate renewal over MQTT (pure): whether a device's certificate
//! request may be signed, and when a certificate is due for renewal. The
//! request arrives on `fleet/v1/dev/{id}/csr`, which only the device whose
//! certificate names `{id}` may write (broker ACL); the request's own
//! subject must name the same device, and the device must be enrolled,
//! shipped or deployed. Only the request's public key is used: name,
//! validity and usage are the controller's (`pki::leaf_params`).

use fleet_protocol::DeviceId;
use rcgen::{CertificateSigningRequestParams, DnType, DnValue, PublicKey};

use crate::domain::lifecycle::{Lifecycle, Rules};

/// Why a renewal request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenewRefusal {
    #[error("device {0} is not registered")]
    Unknown(DeviceId),
    #[error("device {device} is {lifecycle}, not enrolled, shipped or deployed")]
    NotInService {
        device: DeviceId,
        lifecycle: Lifecycle,
    },
    #[error("the certificate request does not parse or is not signed by its key: {0}")]
    Malformed(String),
    #[error(
        "the certificate request names {named:?}, not the device {device} whose topic it came on"
    )]
    WrongSubject { device: DeviceId, named: String },
}

/// Check a renewal request of `device` (in `lifecycle`, if known) and give
/// the public key to certify.
pub fn check_request(
    device: &DeviceId,
    lifecycle: Option<Lifecycle>,
    csr_pem: &str,
) -> Result<PublicKey, RenewRefusal> {
    match lifecycle {
        None => return Err(RenewRefusal::Unknown(device.clone())),
        Some(l) if !l.is_enrolled() => {
            return Err(RenewRefusal::NotInService {
                device: device.clone(),
                lifecycle: l,
            })
        }
        Some(_) => {}
    }
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| RenewRefusal::Malformed(e.to_string()))?;
    let named = csr
        .params
        .distinguished_name
        .get(&DnType::CommonName)
        .map(dn_text)
        .unwrap_or_default();
    if named != device.as_str() {
        return Err(RenewRefusal::WrongSubject {
            device: device.clone(),
            named,
        });
    }
    Ok(csr.public_key)
}

fn dn_text(v: &DnValue) -> String {
    match v {
        DnValue::Utf8String(s) => s.clone(),
        DnValue::PrintableString(s) => s.as_str().to_owned(),
        DnValue::Ia5String(s) => s.as_str().to_owned(),
        DnValue::TeletexString(s) => s.as_str().to_owned(),
        other => format!("{other:?}"),
    }
}

/// When a certificate valid from `not_before_ms` to `not_after_ms` is due
/// for renewal: at `fraction` of its life.
pub fn due_at_ms(not_before_ms: u64, not_after_ms: u64, fraction: f64) -> u64 {
    let life = not_after_ms.saturating_sub(not_before_ms);
    not_before_ms.saturating_add((life as f64 * fraction.clamp(0.0, 1.0)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(name: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn id(s: &str) -> DeviceId {
        DeviceId::parse(s).unwrap()
    }

    #[test]
    fn a_device_in_service_renews_with_a_request_in_its_own_name() {
        for l in [Lifecycle::Enrolled, Lifecycle::Shipped, Lifecycle::Deployed] {
            assert!(
                check_request(&id("BB-1"), Some(l), &csr("BB-1")).is_ok(),
                "{l:?}"
            );
        }
    }

    #[test]
    fn a_request_in_another_name_is_refused() {
        let err = check_request(&id("BB-1"), Some(Lifecycle::Deployed), &csr("BB-2")).unwrap_err();
        assert_eq!(
            err,
            RenewRefusal::WrongSubject {
                device: id("BB-1"),
                named: "BB-2".into()
            }
        );
        assert!(matches!(
            check_request(
                &id("BB-1"),
                Some(Lifecycle::Deployed),
                &csr("fleet.controller")
            ),
            Err(RenewRefusal::WrongSubject { .. })
        ));
    }

    #[test]
    fn retired_registered_and_unknown_devices_are_refused() {
        for l in [Lifecycle::Retired, Lifecycle::Registered] {
            assert!(matches!(
                check_request(&id("BB-1"), Some(l), &csr("BB-1")),
                Err(RenewRefusal::NotInService { .. })
            ));
        }
        assert_eq!(
            check_request(&id("BB-1"), None, &csr("BB-1")),
            Err(RenewRefusal::Unknown(id("BB-1")))
        );
    }

    #[test]
    fn garbage_and_tampered_requests_are_refused() {
        for bad in [
            String::new(),
            "garbage".to_owned(),
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
                .to_owned(),
            // A request whose signature no longer matches its content.
            csr("BB-1").replacen("QkItMT", "QkItMj", 1),
        ] {
            assert!(
                matches!(
                    check_request(&id("BB-1"), Some(Lifecycle::Deployed), &bad),
                    Err(RenewRefusal::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn due_at_two_thirds() {
        assert_eq!(due_at_ms(0, 90_000, 2.0 / 3.0), 60_000);
        assert_eq!(due_at_ms(1000, 1000, 0.66), 1000);
    }
}
