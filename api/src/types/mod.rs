//! The bodies, query strings and answers of `/api/v1`, one module per
//! resource. Their JSON is the controller's JSON: field names, which
//! optional fields are left out and which are sent as `null`, and the
//! spelling of every enum value.
//!
//! Two rules decide a field's type:
//!
//! - Answers carry the validated types (`DeviceId`, `ProvinceCode`,
//!   [`Lifecycle`], [`Readiness`], [`crate::Role`] …): the controller builds
//!   them from what it already trusts, and a client can rely on them.
//! - Requests and query strings carry plain strings wherever the controller
//!   checks the value itself, so that a bad value is answered with the
//!   controller's own error body (`{"error": "province: …"}`, or a 422 with
//!   one line per bad item) and not with the web framework's plain-text
//!   rejection of a body it could not deserialize. Typed constructors
//!   (e.g. [`LifecycleMove::new`]) keep callers from spelling them by hand.

pub mod audit;
pub mod baselines;
pub mod broker;
pub mod commands;
pub mod devices;
pub mod enrolment;
pub mod error;
pub mod firmware;
pub mod health;
pub mod pki;
pub mod provinces;
pub mod readiness;
pub mod registry;
pub mod rollouts;
pub mod tokens;

pub use audit::{AuditEntry, AuditQuery, AuditVerification};
pub use baselines::{Baseline, BaselineRequest, Baselines};
pub use broker::{BrokerInfo, BrokerTier, ProvincialBrokerInfo};
pub use commands::{
    CommandRequest, CommandSelector, CommandSent, CommandSkipped, CommandView, CommandsRequest,
    CommandsSent, LogsUploaded,
};
pub use devices::{
    DesiredState, DeviceDetail, DeviceEvent, DevicePage, DeviceQuery, DeviceRegistration,
    DeviceSummary, EventGap, FreezeSpan, Lifecycle, LifecycleMove, LifecycleMoved, OutboxDrops,
    RegisterRequest, RegisterResponse, UnknownLifecycle, UpdateView,
};
pub use enrolment::{
    EnrolBatch, EnrolBatchQuery, EnrolRequest, EnrolResponse, EnrolToken, SelfTest, ShipmentDevice,
    ShipmentStatus,
};
pub use error::{ErrorBody, InvalidItem};
pub use firmware::{
    DeviceUpdateRequest, DeviceUpdateSet, FirmwareStatus, FirmwareTarget, FreezeAddRequest,
    FreezeRequest, FreezeWindowRequest, FreezeWindowView, FreezeWindows, ImageUploaded, RoleStatus,
    RootPublished, TargetsPublished, TimeSpec,
};
pub use health::{BrokerState, ControllerHealth, HealthStatus};
pub use pki::{CertExpiry, DeviceCertExpiry, PkiStatus};
pub use provinces::ProvinceRow;
pub use readiness::{Grouping, LinkStatus, Readiness, ReadinessQuery, ReadinessRow, Reason};
pub use registry::{CountyQuery, CountyRow, RegistryImported};
pub use rollouts::{
    CanaryRequest, Counters, MemberState, MemberView, MembersQuery, PauseRequest, PolicyRequest,
    PolicyView, ProvinceCounters, RolloutAction, RolloutLogEntry, RolloutPhase, RolloutRequest,
    RolloutSelector, RolloutSummary, RolloutView, WaveState, WaveView,
};
pub use tokens::{CreatedToken, TokenRequest, TokenRevoked, TokenRow};

/// Deserialize a field that is absent (`None`), `null` (`Some(None)`) or a
/// value (`Some(Some(v))`); plain serde reads `null` as `None` and so loses
/// the difference the controller makes.
pub(crate) fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    serde::Deserialize::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests;
