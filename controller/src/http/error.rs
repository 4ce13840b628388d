//! HTTP status codes are decided here and nowhere else: handlers return an
//! [`ApiError`] that says what happened, and [`IntoResponse`] picks the
//! status. A 5xx is logged with its whole cause chain and shown to the
//! client as a plain message.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use fleet_api::types::{ErrorBody, InvalidItem};
use fleet_protocol::{DeviceId, ProvinceCode};
use tracing::error;

use crate::access::AccessError;
use crate::domain::auth::{Role, TokenRefused};
use crate::domain::enrolment::Refusal;
use crate::domain::lifecycle::MoveRefused;
use crate::pki::PkiError;
use crate::store::StoreError;

/// Why a request carries no usable bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    #[error("missing bearer token (fleetctl: --token or FLEETCTL_TOKEN)")]
    Missing,
    #[error("the Authorization header must be \"Bearer TOKEN\"")]
    NotBearer,
    #[error("invalid or revoked token")]
    Invalid,
    #[error("this token has expired; ask an admin for a new one")]
    Expired,
}

impl Unauthenticated {
    /// The `reason` label of `fleet_auth_failures_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Unauthenticated::Missing => "missing",
            Unauthenticated::NotBearer => "not-bearer",
            Unauthenticated::Invalid => "invalid",
            Unauthenticated::Expired => "expired",
        }
    }
}

impl From<TokenRefused> for Unauthenticated {
    fn from(r: TokenRefused) -> Self {
        match r {
            TokenRefused::Invalid => Unauthenticated::Invalid,
            TokenRefused::Expired => Unauthenticated::Expired,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A path, query or body field that does not parse.
    #[error("{field}: {reason}")]
    BadField { field: &'static str, reason: String },
    /// A certificate signing request that does not parse.
    #[error("bad certificate request: {0}")]
    BadCsr(String),
    #[error(transparent)]
    Unauthenticated(#[from] Unauthenticated),
    #[error("role {0} may not do this")]
    NotPermitted(Role),
    #[error("your token is limited to {}", list(.0))]
    OutOfScope(Vec<ProvinceCode>),
    #[error("metrics cover every province; a province-scoped token cannot read them")]
    ScopedMetrics,
    /// Unknown, or in a province the caller does not see: the two look alike.
    #[error("device {0} is not registered")]
    UnknownDevice(DeviceId),
    #[error("no shipment {0}")]
    UnknownShipment(String),
    #[error("no live token with id {0}")]
    UnknownToken(String),
    #[error("no artifact {0}")]
    UnknownArtifact(String),
    #[error("cannot read the artifact {path}: {source}")]
    ArtifactRead {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// An enrolment the token or the device's state does not allow.
    #[error(transparent)]
    RefusedToken(Refusal),
    /// A lifecycle move the device's state does not allow.
    #[error(transparent)]
    MoveRefused(#[from] MoveRefused),
    #[error("device {0} changed meanwhile; look again")]
    ChangedMeanwhile(DeviceId),
    /// One source address asked too often; it may again after the wait.
    #[error("too many {what} from this address; try again in {retry_after_secs} s")]
    TooManyRequests {
        what: &'static str,
        retry_after_secs: u64,
    },
    /// The request was understood but some items are wrong; nothing was changed.
    #[error("{message}")]
    Invalid {
        message: String,
        errors: Vec<InvalidItem>,
    },
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("pki: {0}")]
    Pki(#[from] PkiError),
    /// The broker could not be told of a retirement; nothing was retired.
    #[error("device {device} is not retired: {source}")]
    BrokerNotTold {
        device: DeviceId,
        source: crate::broker::RevocationError,
    },
    /// A command the request or the device does not allow.
    #[error(transparent)]
    Command(#[from] crate::domain::commands::CommandError),
    #[error("the controller is not connected to its broker; try again when /healthz says ok")]
    BrokerUnavailable,
    /// A selector naming a province the caller does not see: answered
    /// like an unknown device.
    #[error("no device of {0} is within your reach")]
    UnknownProvince(ProvinceCode),
    /// A log upload refused (token, expiry, size).
    #[error(transparent)]
    Upload(#[from] crate::domain::commands::UploadRefused),
    #[error("no logs for command {command} of device {device}")]
    NoLogs { device: DeviceId, command: String },
    #[error("cannot write or read the logs {path}: {source}")]
    LogWrite {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot send: {0}")]
    Publish(#[from] crate::ingest::PublishError),
    #[error(
        "no signed target {0} in the firmware repository (upload it with fleetctl firmware upload)"
    )]
    UnknownTarget(String),
    #[error(transparent)]
    Firmware(#[from] crate::firmware::FirmwareError),
    #[error(transparent)]
    Desired(#[from] crate::ingest::DesiredError),
    #[error(transparent)]
    Rollout(crate::rollouts::RolloutError),
    #[error("cannot write the CRL {path}: {source}")]
    CrlWrite {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

fn list(provinces: &[ProvinceCode]) -> String {
    provinces
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The error and every cause under it, for the log.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            BadField { .. } | BadCsr(_) => StatusCode::BAD_REQUEST,
            Access(AccessError::Scope(_) | AccessError::BadName | AccessError::BadExpiry(_)) => {
                StatusCode::BAD_REQUEST
            }
            Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            NotPermitted(_) | OutOfScope(_) | ScopedMetrics | RefusedToken(_) => {
                StatusCode::FORBIDDEN
            }
            UnknownProvince(_) | NoLogs { .. } => StatusCode::NOT_FOUND,
            Upload(e) => upload_status(e),
            UnknownDevice(_) | UnknownShipment(_) | UnknownToken(_) | UnknownArtifact(_)
            | UnknownTarget(_) => StatusCode::NOT_FOUND,
            Firmware(e) => firmware_status(e),
            Desired(crate::ingest::DesiredError::UnknownDevice(_)) => StatusCode::NOT_FOUND,
            Desired(crate::ingest::DesiredError::Store(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            MoveRefused(_) | ChangedMeanwhile(_) => StatusCode::CONFLICT,
            BrokerNotTold {
                source: crate::broker::RevocationError::NoHook,
                ..
            } => StatusCode::CONFLICT,
            BrokerNotTold { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Command(
                crate::domain::commands::CommandError::UnknownAction(_)
                | crate::domain::commands::CommandError::BadExpiry(_)
                | crate::domain::commands::CommandError::EmptySelector
                | crate::domain::commands::CommandError::SelectorTooLarge { .. },
            ) => StatusCode::BAD_REQUEST,
            Command(crate::domain::commands::CommandError::NotInService { .. }) => {
                StatusCode::CONFLICT
            }
            BrokerUnavailable | Publish(_) => StatusCode::SERVICE_UNAVAILABLE,
            Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Rollout(e) => rollout_status(e),
            TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Access(_)
            | Store(_)
            | Pki(_)
            | CrlWrite { .. }
            | ArtifactRead { .. }
            | LogWrite { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

fn upload_status(e: &crate::domain::commands::UploadRefused) -> StatusCode {
    use crate::domain::commands::UploadRefused as U;
    match e {
        U::NoSuchCommand { .. } => StatusCode::NOT_FOUND,
        U::Used(_) | U::BadToken(_) | U::Expired(_) => StatusCode::FORBIDDEN,
        U::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
    }
}

impl From<crate::rollouts::RolloutError> for ApiError {
    fn from(e: crate::rollouts::RolloutError) -> Self {
        match e {
            crate::rollouts::RolloutError::Invalid(_) => ApiError::Invalid {
                message: e.to_string(),
                errors: e.items(),
            },
            e => ApiError::Rollout(e),
        }
    }
}

fn rollout_status(e: &crate::rollouts::RolloutError) -> StatusCode {
    use crate::rollouts::RolloutError as R;
    match e {
        R::Unknown(_) | R::UnknownDevices(_) => StatusCode::NOT_FOUND,
        R::Invalid(_) | R::Plan(_) => StatusCode::UNPROCESSABLE_ENTITY,
        R::Refused(_) | R::Overlap { .. } => StatusCode::CONFLICT,
        R::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        R::Store(_) | R::Access(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn firmware_status(e: &crate::firmware::FirmwareError) -> StatusCode {
    use crate::firmware::FirmwareError as F;
    match e {
        F::NotSetUp | F::AlreadySetUp(_) => StatusCode::CONFLICT,
        F::BadSha256(_) => StatusCode::BAD_REQUEST,
        F::UnknownImage(_)
        | F::NotATarget(_)
        | F::DeltaAcross { .. }
        | F::DeltaBackwards { .. }
        | F::DeltaTooLarge { .. } => StatusCode::NOT_FOUND,
        F::DeltaBusy => StatusCode::SERVICE_UNAVAILABLE,
        F::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        F::Cut { .. } => StatusCode::BAD_REQUEST,
        e if e.is_refusal() => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = match &self {
            ApiError::TooManyRequests {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        };
        let body = if status.is_server_error() {
            error!(error = %chain(&self), "request failed");
            ErrorBody {
                error: "internal error; see the controller log".into(),
                errors: None,
            }
        } else if let ApiError::Invalid { message, errors } = self {
            ErrorBody {
                error: message,
                errors: Some(errors),
            }
        } else {
            ErrorBody {
                error: self.to_string(),
                errors: None,
            }
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_request_is_400_and_a_refused_token_403() {
        assert_eq!(
            ApiError::BadCsr("x".into()).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ApiError::RefusedToken(Refusal::Expired).status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            ApiError::Access(AccessError::BadName).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ApiError::TooManyRequests {
                what: "refused enrolments",
                retry_after_secs: 5
            }
            .status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            ApiError::Access(AccessError::Tampered("x".into())).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn the_log_line_of_a_5xx_carries_every_cause() {
        let e = ApiError::CrlWrite {
            path: "/x/crl.pem".into(),
            source: std::io::Error::other("disk full"),
        };
        let line = chain(&e);
        assert!(
            line.contains("/x/crl.pem") && line.contains("disk full"),
            "{line}"
        );
    }
}
