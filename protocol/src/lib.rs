//! The Sandogh wire protocol, shared by the agent and the controller and
//! nothing else (they never share code except through this crate).
//!
//! - [`ids`]: validated newtypes (`DeviceId`, `ProvinceCode`, `CountyCode`,
//!   `StationId`, `Model`, `Version`). Past this boundary code trusts them.
//! - [`provinces`]: the 31 provinces of Iran (ISO 3166-2:IR), built in.
//! - [`topic`]: the `fleet/v1/dev/{id}/{kind}` topic scheme; the only place
//!   topics are built or parsed.
//! - [`message`]: presence, state, health, events, desired state, commands,
//!   certificate requests and renewed certificates.
//! - [`firmware`]: TUF target names and the `custom` metadata of firmware
//!   and agent targets.
//! - [`envelope`]: the one versioned envelope, CBOR (wire) and JSON (debug)
//!   encodings, and the per-kind size limits checked on both sides.

pub mod envelope;
pub mod firmware;
pub mod ids;
pub mod message;
pub mod provinces;
pub mod topic;

pub use envelope::{DecodeError, EncodeError, Envelope, Payload, PROTOCOL_VERSION};
pub use ids::{CountyCode, DeviceId, IdError, Model, ProvinceCode, StationId, Version};
pub use message::{
    Action, ArtifactKind, CertIssued, CertRequest, CheckResult, Command, Desired, Event, EventKind,
    FreezeWindow, Health, HealthWindow, Presence, PresenceStatus, State, TargetFirmware,
    UpdateOutcome, UpdatePhase, UpdateStatus, UploadTicket,
};
pub use provinces::{Province, PROVINCES};
pub use topic::{Routed, Topic, TopicError, TopicKind};
