//! Enrolment (`/api/v1/enrol…`): a shipment of scanned serials becomes
//! registered devices with one single-use token each; a device presents its
//! token with a certificate request and receives its certificate.

use fleet_protocol::DeviceId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{BrokerInfo, Lifecycle};

/// The query string of `POST /api/v1/enrol/batch` (the body is the
/// shipment CSV: `serial,model,province[,county][,station]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EnrolBatchQuery {
    /// How long the tokens stay valid (default 168, 1 to 2160).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_hours: Option<u64>,
}

/// A registered shipment with its enrolment tokens, shown only now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnrolBatch {
    /// `shipment-` and 8 hex digits.
    pub shipment: String,
    pub expires_at_ms: u64,
    pub devices: Vec<EnrolToken>,
}

/// One device's single-use enrolment token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnrolToken {
    #[schema(value_type = String)]
    pub device: DeviceId,
    pub token: String,
}

/// The answer of `GET /api/v1/enrol/shipments/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShipmentStatus {
    pub shipment: String,
    pub devices: Vec<ShipmentDevice>,
}

/// A device of a shipment, on the warehouse bench.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShipmentDevice {
    #[schema(value_type = String)]
    pub device: DeviceId,
    pub lifecycle: Lifecycle,
    /// When its token was used (`null`: not enrolled yet).
    pub enrolled_at_ms: Option<u64>,
    pub token_expires_at_ms: u64,
    pub self_test: SelfTest,
    /// Enrolled and passed its self-test.
    pub ready_to_ship: bool,
}

/// The checks of a device's last reported state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum SelfTest {
    #[serde(rename = "passed")]
    Passed,
    #[serde(rename = "failed")]
    Failed,
    /// The device has not reported its state yet.
    #[serde(rename = "not yet")]
    NotYet,
}

/// The body of `POST /api/v1/enrol`, sent by the device itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnrolRequest {
    pub device: String,
    /// The device's single-use enrolment token (the credential here).
    pub token: String,
    /// PEM certificate signing request made with the device's own key.
    pub csr: String,
}

/// What enrolment gives a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnrolResponse {
    #[schema(value_type = String)]
    pub device: DeviceId,
    /// The device's client certificate (PEM).
    pub certificate: String,
    /// The fleet CA (PEM).
    pub ca: String,
    pub broker: BrokerInfo,
    /// Hex, as the CRL will name it when the device is retired.
    pub certificate_serial: String,
}
