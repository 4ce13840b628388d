//! The hash-chained audit log (`/api/v1/audit…`).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The query string of `GET /api/v1/audit`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Part of the actor's name or token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The device (or other target) changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
    /// At most this many entries (default 100, at most 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only the entry with this sequence number (to check a head written
    /// down earlier, off the machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The action, or its beginning (`device.` for every device action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub seq: u64,
    pub at_ms: u64,
    /// "name (token id)", or "device ID (enrolment token)".
    pub actor: String,
    /// The actor's role, or `device` for a device enrolling: not always a
    /// [`crate::Role`].
    pub role: String,
    /// e.g. `device.register`, `token.create`, `device.retire.failed`.
    pub action: String,
    pub target: String,
    /// Where the request came from (the client's address).
    pub source: String,
    /// JSON text with the particulars of the change (hashed as written).
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The answer of `GET /api/v1/audit/verify`: `{"intact": true, "entries": N}`
/// or `{"intact": false, "first_broken": SEQ, "reason": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditVerification {
    pub intact: bool,
    /// When intact: how many entries were checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    /// When broken: the first entry that is missing, edited or out of place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_broken: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When intact: the hash of the last entry. Written down off the
    /// machine (the daily report), it lets a later check prove that
    /// history up to that entry was not rewritten (`fleetctl audit verify
    /// --anchor SEQ:HASH`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_hash: Option<String>,
}

impl AuditVerification {
    pub fn intact(entries: u64) -> Self {
        Self {
            intact: true,
            entries: Some(entries),
            first_broken: None,
            reason: None,
            head_hash: None,
        }
    }

    /// Intact, with the last entry's hash.
    pub fn intact_at(entries: u64, head_hash: String) -> Self {
        Self {
            head_hash: Some(head_hash),
            ..Self::intact(entries)
        }
    }

    pub fn broken(first_broken: u64, reason: impl Into<String>) -> Self {
        Self {
            intact: false,
            entries: None,
            first_broken: Some(first_broken),
            reason: Some(reason.into()),
            head_hash: None,
        }
    }
}
