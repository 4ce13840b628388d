//! Enrolment routes: a shipment of scanned serials becomes registered
//! devices with one single-use, expiring token each; a device presents its
//! token with a certificate request and receives its certificate, the fleet
//! CA and the broker address. Its private key never leaves it.

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::{Extension, Json};
use fleet_api::types::{
    BrokerInfo, DeviceRegistration, EnrolBatch, EnrolBatchQuery, EnrolRequest, EnrolResponse,
    EnrolToken, InvalidItem, LifecycleMove, LifecycleMoved, SelfTest, ShipmentDevice,
    ShipmentStatus,
};
use fleet_protocol::DeviceId;
use rand::RngCore;
use rcgen::{CertificateSigningRequestParams, ExtendedKeyUsagePurpose, SerialNumber};
use serde_json::json;

use super::devices::validate_registration;
use crate::access::Caller;
use crate::clock::unix_ms;
use crate::domain::auth::{self, Permission};
use crate::domain::enrolment::{self, Refusal};
use crate::domain::lifecycle::{Lifecycle, Rules};
use crate::domain::registry::Errors;
use crate::http::{api, ApiError, AppState};
use crate::pki::{self, PkiPaths};

pub async fn enrol_batch(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<EnrolBatchQuery>,
    body: String,
) -> Result<Json<EnrolBatch>, ApiError> {
    let lines = enrolment::parse_shipment(&body).map_err(|errors| ApiError::Invalid {
        message: format!(
            "the shipment file has {} bad line(s); nothing was registered",
            errors.total()
        ),
        errors: api::line_items(errors.into_lines()),
    })?;
    let now = unix_ms();
    let mut regs = Vec::with_capacity(lines.len());
    let mut errors = Errors::default();
    for (i, l) in lines.iter().enumerate() {
        let line = i as u64 + 2;
        if st
            .fleet()
            .get(&l.serial)
            .is_some_and(|d| d.reg.lifecycle != Lifecycle::Registered)
        {
            errors.push(InvalidItem {
                index: None,
                line: Some(line),
                id: Some(l.serial.to_string()),
                message: format!("device {} is already enrolled", l.serial),
            });
            continue;
        }
        let r = DeviceRegistration {
            id: l.serial.to_string(),
            model: l.model.to_string(),
            province: l.province.to_string(),
            county: l.county.as_ref().map(ToString::to_string),
            station: l.station.as_ref().map(ToString::to_string),
            lifecycle: Some("registered".into()),
        };
        match validate_registration(&st, &caller, &r, now).await? {
            Ok(reg) => regs.push(reg),
            Err(e) => errors.push(InvalidItem {
                index: None,
                line: Some(line),
                id: Some(l.serial.to_string()),
                message: e.to_string(),
            }),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid {
            message: format!(
                "{} of {} devices are invalid; nothing was registered",
                errors.total(),
                lines.len()
            ),
            errors: errors.into_list(api::more_items),
        });
    }
    let hours = q
        .expires_hours
        .unwrap_or(enrolment::DEFAULT_TOKEN_HOURS)
        .clamp(1, 24 * 90);
    let expires_at_ms = now + hours * 3_600_000;
    let mut id = [0u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let shipment = format!("shipment-{}", hex::encode(id));
    let tokens: Vec<(DeviceId, String)> = regs
        .iter()
        .map(|r| (r.id.clone(), enrolment::new_enrol_token()))
        .collect();
    let hashes: Vec<(DeviceId, String)> = tokens
        .iter()
        .map(|(d, t)| (d.clone(), auth::token_hash(t)))
        .collect();
    crate::http::audited(
        &st,
        &caller,
        "enrol.batch",
        &shipment,
        json!({ "devices": tokens.iter().map(|(d, _)| d.to_string()).collect::<Vec<_>>(), "expires_at_ms": expires_at_ms }),
        async {
            st.store.upsert_devices(&regs).await?;
            st.store
                .insert_enrol_tokens(&shipment, &hashes, now, expires_at_ms)
                .await?;
            Ok(())
        },
    )
    .await?;
    {
        let mut fleet = st.fleet_mut();
        for reg in regs {
            fleet.register(reg, now);
        }
    }
    Ok(Json(EnrolBatch {
        shipment,
        expires_at_ms,
        devices: tokens
            .into_iter()
            .map(|(device, token)| EnrolToken { device, token })
            .collect(),
    }))
}

pub async fn shipment_status(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<ShipmentStatus>, ApiError> {
    let rows = st.store.shipment(&id).await?;
    if rows.is_empty() {
        return Err(ApiError::UnknownShipment(id));
    }
    let fleet = st.fleet();
    let devices: Vec<ShipmentDevice> = rows
        .into_iter()
        .filter_map(|row| {
            let d = fleet.get(&row.device)?;
            if !caller.principal.sees(d.reg.province) {
                return None;
            }
            let self_test = match &d.status.state {
                None => SelfTest::NotYet,
                Some(s) if s.all_checks_pass() => SelfTest::Passed,
                Some(_) => SelfTest::Failed,
            };
            Some(ShipmentDevice {
                lifecycle: d.reg.lifecycle,
                enrolled_at_ms: row.used_at_ms,
                token_expires_at_ms: row.expires_at_ms,
                self_test,
                ready_to_ship: d.reg.lifecycle == Lifecycle::Enrolled
                    && self_test == SelfTest::Passed,
                device: row.device,
            })
        })
        .collect();
    if devices.is_empty() {
        // Another province's shipment looks exactly like none.
        return Err(ApiError::UnknownShipment(id));
    }
    Ok(Json(ShipmentStatus {
        shipment: id,
        devices,
    }))
}

fn refused(device: &str, r: Refusal) -> ApiError {
    tracing::warn!(device, reason = %r, "enrolment refused");
    metrics::counter!("fleet_enrolment_refused_total").increment(1);
    ApiError::RefusedToken(r)
}

/// A device enrols. An address whose enrolments were refused too often
/// (a wrong token, a wrong serial, a bad request) waits with 429; its
/// successful enrolments are not counted (see `domain::throttle`).
pub async fn enrol_device(
    State(st): State<AppState>,
    connect: Option<Extension<ConnectInfo<crate::http::tls::Peer>>>,
    Json(req): Json<EnrolRequest>,
) -> Result<Json<EnrolResponse>, ApiError> {
    let source = connect.map_or_else(|| "unknown".to_owned(), |c| c.0 .0 .0.ip().to_string());
    let now = unix_ms();
    if let Some(wait_ms) = st.access.enrolment_wait_ms(&source, now) {
        metrics::counter!("fleet_enrolment_throttled_total").increment(1);
        return Err(ApiError::TooManyRequests {
            what: "refused enrolments",
            retry_after_secs: wait_ms.div_ceil(1000),
        });
    }
    let enrolled = enrol_checked(&st, &source, now, req).await;
    if enrolled
        .as_ref()
        .is_err_and(|e| e.status().is_client_error())
    {
        st.access.enrolment_refused(&source, now);
    }
    enrolled
}

async fn enrol_checked(
    st: &AppState,
    source: &str,
    now: u64,
    req: EnrolRequest,
) -> Result<Json<EnrolResponse>, ApiError> {
    let device: DeviceId = crate::http::parse("device", &req.device)?;
    let hash = auth::token_hash(req.token.trim());
    let token = st.store.enrol_token(&hash).await?;
    enrolment::check_token(token.as_ref(), &device, now)
        .map_err(|r| refused(device.as_str(), r))?;
    // Only a device still waiting for its certificate may enrol.
    let _one_at_a_time = st.lifecycle_lock.lock().await;
    match st.fleet().get(&device).map(|d| d.reg.lifecycle) {
        Some(Lifecycle::Registered) => {}
        Some(Lifecycle::Retired) => {
            return Err(refused(device.as_str(), Refusal::Retired(device.clone())))
        }
        _ => return Err(refused(device.as_str(), Refusal::Used)),
    }
    let csr = CertificateSigningRequestParams::from_pem(&req.csr)
        .map_err(|e| ApiError::BadCsr(e.to_string()))?;
    // Only the public key comes from the request: name, validity and usage
    // are the controller's.
    let mut params = pki::leaf_params(
        device.as_str(),
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
        st.cert_policy.device,
    );
    let mut serial = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut serial);
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let not_after_ms = u64::try_from(params.not_after.unix_timestamp()).unwrap_or(0) * 1000;
    let ca = pki::Ca::load(&PkiPaths::new(&st.data_dir))?;
    let cert = ca.sign(&params, &csr.public_key)?;
    let serial_hex = hex::encode(serial);
    let actor = format!("device {device} (enrolment token)");
    st.access
        .record_as(
            &actor,
            "device",
            source,
            "device.enrol",
            device.as_str(),
            json!({ "certificate_serial": serial_hex, "not_after_ms": not_after_ms }),
        )
        .await?;
    let completed = st
        .store
        .complete_enrolment(&hash, &device, &serial_hex, now, not_after_ms)
        .await;
    if !matches!(completed, Ok(true)) {
        let why = match &completed {
            Err(e) => e.to_string(),
            Ok(_) => Refusal::Used.to_string(),
        };
        st.access
            .failed_as(
                &actor,
                "device",
                source,
                "device.enrol",
                device.as_str(),
                &why,
            )
            .await;
        completed?;
        return Err(refused(device.as_str(), Refusal::Used));
    }
    let province = {
        let mut fleet = st.fleet_mut();
        fleet.set_lifecycle(&device, Lifecycle::Enrolled, now);
        fleet.get(&device).map(|d| d.reg.province)
    };
    // Its province's broker if the tier serves it, else the central one.
    let broker = match province.and_then(|p| st.tier.broker_of(p)) {
        Some(b) => BrokerInfo {
            host: b.host.clone(),
            port: b.port,
            tls: st.broker.tls,
        },
        None => st.broker.clone(),
    };
    Ok(Json(EnrolResponse {
        device,
        certificate: cert,
        ca: ca.cert_pem().to_owned(),
        broker,
        certificate_serial: serial_hex,
    }))
}

/// Ship, deploy or retire a device. Retiring revokes its certificate, and
/// answers only once the broker refuses it (see `retire`).
pub async fn move_device(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(req): Json<LifecycleMove>,
) -> Result<Json<LifecycleMoved>, ApiError> {
    let device: DeviceId = crate::http::parse("device id", &id)?;
    let to: Lifecycle = crate::http::parse("to", &req.to)?;
    caller.require(if to == Lifecycle::Retired {
        Permission::RetireDevices
    } else {
        Permission::MoveDevices
    })?;
    let _one_at_a_time = st.lifecycle_lock.lock().await;
    let from = st
        .fleet()
        .get(&device)
        .filter(|d| caller.principal.sees(d.reg.province))
        .map(|d| d.reg.lifecycle)
        .ok_or_else(|| ApiError::UnknownDevice(device.clone()))?;
    from.check_move(to)?;
    let now = unix_ms();
    let action = format!(
        "device.{}",
        match to {
            Lifecycle::Shipped => "ship",
            Lifecycle::Deployed => "deploy",
            Lifecycle::Retired => "retire",
            Lifecycle::Registered | Lifecycle::Enrolled => "move",
        }
    );
    let detail = json!({ "from": from.as_str(), "to": to.as_str() });
    crate::http::audited(&st, &caller, &action, device.as_str(), detail, async {
        if to == Lifecycle::Retired {
            retire(&st, &device, now).await
        } else if st.store.set_lifecycle(&device, from, to).await? {
            Ok(())
        } else {
            Err(ApiError::ChangedMeanwhile(device.clone()))
        }
    })
    .await?;
    st.fleet_mut().set_lifecycle(&device, to, now);
    Ok(Json(LifecycleMoved {
        device,
        lifecycle: to,
    }))
}

/// Retire: write the CRL with the device's certificates in it, have the
/// broker apply it and drop the device (managed: SIGHUP and a takeover of
/// its session, no other client reconnects; external: the CRL hook), and
/// only then revoke in the store. A broker that cannot be told refuses the
/// retirement before anything changes; one that fails to apply it gets the
/// previous CRL back and the device stays as it was.
async fn retire(st: &AppState, device: &DeviceId, now: u64) -> Result<(), ApiError> {
    let not_told = |source| ApiError::BrokerNotTold {
        device: device.clone(),
        source,
    };
    // The broker the device is on: its province's, if the tier serves it.
    let province = st.fleet().get(device).map(|d| d.reg.province);
    st.revocation.check(province).map_err(not_told)?;
    let revoked = st.store.revoked_if_retired(device, now).await?;
    let paths = PkiPaths::new(&st.data_dir);
    let ca = pki::Ca::load(&paths)?;
    let crl = ca.crl(now, &revoked)?;
    let previous = std::fs::read(paths.crl()).ok();
    write_crl(&paths, now, crl.as_bytes())?;
    if let Err(e) = st
        .revocation
        .apply(&paths.crl(), device, province, &ca)
        .await
    {
        if let Some(previous) = previous {
            if let Err(w) = write_crl(&paths, now, &previous) {
                tracing::error!(error = %w, "cannot put the previous CRL back");
            }
        }
        return Err(not_told(e));
    }
    st.store.retire(device, now).await?;
    Ok(())
}

/// Write the CRL whole, then rename it into place.
fn write_crl(paths: &PkiPaths, now: u64, crl: &[u8]) -> Result<(), ApiError> {
    let tmp = paths.crl().with_extension(format!("tmp-{now}"));
    std::fs::write(&tmp, crl)
        .and_then(|()| std::fs::rename(&tmp, paths.crl()))
        .map_err(|source| ApiError::CrlWrite {
            path: paths.crl(),
            source,
        })
}
