//! When the fleet's certificates expire (`fleetctl pki status`).

use axum::extract::State;
use axum::Json;
use fleet_api::types::{CertExpiry, DeviceCertExpiry, PkiStatus};

use crate::http::{ApiError, AppState};
use crate::pki::{self, CertKind, PkiPaths};

/// How many devices with the soonest expiry are listed.
const DEVICES_LISTED: u32 = 20;

pub async fn status(State(st): State<AppState>) -> Result<Json<PkiStatus>, ApiError> {
    let paths = PkiPaths::new(&st.data_dir);
    let mut certificates = Vec::new();
    for kind in [
        CertKind::Ca,
        CertKind::Broker,
        CertKind::Api,
        CertKind::Controller,
    ] {
        let Some(path) = paths.cert_of(kind) else {
            continue;
        };
        let (not_before_ms, not_after_ms, serial) = pki::validity(&path)?;
        certificates.push(CertExpiry {
            kind: kind.as_str().to_owned(),
            serial,
            not_before_ms,
            not_after_ms,
        });
    }
    let devices_expiring_first = st
        .store
        .nearest_device_expiries(DEVICES_LISTED)
        .await?
        .into_iter()
        .map(|(device, serial, not_after_ms)| DeviceCertExpiry {
            device,
            serial,
            not_after_ms,
        })
        .collect();
    Ok(Json(PkiStatus {
        certificates,
        devices_expiring_first,
    }))
}
