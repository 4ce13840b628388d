//! Message bodies, one per topic kind. CBOR uses integer field tags in maps
//! (`#[n(..)]`), so a reader skips fields it does not know and a field may be
//! added in a later release without breaking agents still on the old one.
//! Tags are never reused.

use minicbor::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::ids::{Model, Version};

/// `presence`: retained, and the agent's last will says `Offline`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cbor(map)]
pub struct Presence {
    #[n(0)]
    pub status: PresenceStatus,
    #[n(1)]
    pub agent: Version,
    /// Which MQTT connection this is about: the agent's clock (Unix ms) when
    /// it opened the connection. A last will from an older connection that
    /// the broker delivers late carries a smaller value and is ignored.
    #[n(2)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cbor(index_only)]
#[serde(rename_all = "kebab-case")]
pub enum PresenceStatus {
    #[n(0)]
    Online,
    #[n(1)]
    Offline,
}

/// `state`: the full reported state, sent on connect and on change.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cbor(map)]
pub struct State {
    #[n(0)]
    pub model: Model,
    #[n(1)]
    pub firmware: Version,
    #[n(2)]
    pub agent: Version,
    #[n(3)]
    pub update: UpdateStatus,
    #[n(4)]
    pub checks: Vec<CheckResult>,
    #[n(5)]
    pub config_rev: u32,
}

impl State {
    pub fn all_checks_pass(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cbor(index_only)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateStatus {
    #[n(0)]
    Idle,
    #[n(1)]
    Downloading,
    #[n(2)]
    Installing,
    #[n(3)]
    Rebooting,
    #[n(4)]
    Failed,
    #[n(5)]
    Verifying,
    /// Booted a new image, health check running, not yet committed.
    #[n(6)]
    Checking,
}

/// The result of one configured check (printer, card reader, …).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cbor(map)]
pub struct CheckResult {
    #[n(0)]
    pub name: String,
    #[n(1)]
    pub passed: bool,
    #[n(2)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `health`: periodic metrics, kept small (well under 100 bytes of CBOR).
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode, Serialize, Deserialize)]
#[cbor(map)]
pub struct Health {
    #[n(0)]
    pub cpu_pct: u8,
    #[n(1)]
    pub mem_used_pct: u8,
    #[n(2)]
    pub disk_free_pct: u8,
    #[n(3)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_c: Option<i16>,
    #[n(4)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_pct: Option<u8>,
    #[n(5)]
    pub uptime_s: u64,
    #[n(6)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
    #[n(7)]
    pub disk_free_mb: u64,
    /// Set when this message stands for several samples taken while the
    /// device was offline (coalesced by the agent's outbox): the fields
    /// above are the last sample, and the window holds min and max.
    #[n(8)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<HealthWindow>,
}

/// Several health samples coalesced into one: the interval they cover, how
/// many there were, and min and max of each metric (the last value is the
/// [`Health`] carrying this window).
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode, Serialize, Deserialize)]
#[cbor(map)]
pub struct HealthWindow {
    #[n(0)]
    pub from_ms: u64,
    #[n(1)]
    pub to_ms: u64,
    #[n(2)]
    pub samples: u32,
    #[n(3)]
    pub cpu_pct: (u8, u8),
    #[n(4)]
    pub mem_used_pct: (u8, u8),
    #[n(5)]
    pub disk_free_pct: (u8, u8),
    #[n(6)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_c: Option<(i16, i16)>,
    #[n(7)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_pct: Option<(u8, u8)>,
    #[n(8)]
    pub disk_free_mb: (u64, u64),
}

/// `events`: things that happened, each with the device's sequence number so
/// that re-delivery is idempotent. An event is known by (device, `boot`,
/// `seq`): a device that lost its sequence file starts again at 1 under a
/// new boot id, and its new events are not mistaken for old ones.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cbor(map)]
pub struct Event {
    #[n(0)]
    pub seq: u64,
    #[n(1)]
    pub at_ms: u64,
    #[n(2)]
    pub kind: EventKind,
    /// A random id the agent draws at each start; the same for every event
    /// numbered during that run. Agents before it send none (read as 0).
    #[n(3)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<u64>,
}

impl Event {
    /// The largest sequence number a controller accepts: 2^53 - 1, the
    /// largest integer a JSON reader (the console, `fleetctl`, JavaScript)
    /// holds exactly, and well inside SQLite's signed 64-bit INTEGER. A real
    /// device numbering 1,000 events a second needs 285,000 years to get
    /// there; a number beyond it is a corrupt or lying sequence file.
    pub const MAX_SEQ: u64 = (1 << 53) - 1;

    /// Whether `seq` is one a controller accepts (1 ..= [`Self::MAX_SEQ`]).
    pub fn seq_in_range(&self) -> bool {
        (1..=Self::MAX_SEQ).contains(&self.seq)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    #[n(0)]
    Boot {
        #[n(0)]
        firmware: Version,
    },
    #[n(1)]
    CheckFailed {
        #[n(0)]
        name: String,
        #[n(1)]
        message: String,
    },
    #[n(2)]
    CheckRecovered {
        #[n(0)]
        name: String,
    },
    #[n(3)]
    CommandResult {
        #[n(0)]
        id: String,
        #[n(1)]
        ok: bool,
        #[n(2)]
        message: String,
    },
    #[n(4)]
    Error {
        #[n(0)]
        message: String,
    },
    /// The result of installing a firmware update (never dropped from the
    /// agent's outbox).
    /// `ok` is true exactly when `outcome` is [`UpdateOutcome::Committed`].
    #[n(5)]
    UpdateResult {
        #[n(0)]
        version: Version,
        #[n(1)]
        ok: bool,
        #[n(2)]
        message: String,
        #[n(3)]
        #[cbor(default)]
        #[serde(default)]
        outcome: UpdateOutcome,
        #[n(4)]
        #[cbor(default)]
        #[serde(default)]
        artifact: ArtifactKind,
        /// The attempt failed for a passing cause (the network, the
        /// controller away, a full disk) and the agent tries the same
        /// target again by itself: the update is not over. Agents before
        /// it send none (read as false).
        #[n(5)]
        #[cbor(default)]
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        retrying: bool,
    },
    /// The agent's outbox was full and dropped records, the oldest health
    /// samples first: `health_samples` samples and `other_events` events
    /// that may be dropped (boot, check recovered, error), the oldest taken
    /// at `oldest_ms` and the newest at `newest_ms` (agent clock).
    /// `other_events` came later: a reader without it skips it, and a report
    /// from an agent without it reads as 0.
    #[n(6)]
    OutboxDropped {
        #[n(0)]
        health_samples: u64,
        #[n(1)]
        oldest_ms: u64,
        #[n(2)]
        newest_ms: u64,
        #[n(3)]
        #[cbor(default)]
        #[serde(default)]
        other_events: u64,
    },
    /// The agent could not write its state directory (disk full, read-only):
    /// what it keeps now lives in memory only until the disk recovers.
    #[n(7)]
    StorageFault {
        #[n(0)]
        message: String,
    },
    /// An update moved on: it reached `phase` (and, while downloading,
    /// `bytes` of `total`). May be dropped from a full outbox; the
    /// [`EventKind::UpdateResult`] that ends it never is.
    #[n(8)]
    UpdateProgress {
        #[n(0)]
        version: Version,
        #[n(1)]
        phase: UpdatePhase,
        #[n(2)]
        bytes: u64,
        #[n(3)]
        total: u64,
        #[n(4)]
        #[cbor(default)]
        #[serde(default)]
        artifact: ArtifactKind,
    },
}

/// Where a running update is. Persisted by the agent before each step starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cbor(index_only)]
#[serde(rename_all = "kebab-case")]
pub enum UpdatePhase {
    /// Metadata fetched and the target accepted; the image is coming.
    #[n(0)]
    Downloading,
    /// The image (or the patched image) is checked against the signed hash.
    #[n(1)]
    Verifying,
    /// Written to the inactive slot.
    #[n(2)]
    Installing,
    /// The device is restarting into the new slot.
    #[n(3)]
    Rebooting,
    /// Booted the new slot; health check (broker reachable, checks pass)
    /// before the commit deadline.
    #[n(4)]
    Checking,
    /// Ready to install, held back by a freeze window.
    #[n(5)]
    Frozen,
}

/// How an update ended. Only `Committed` is success: the device booted the
/// new image, passed its health check and committed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode, Serialize, Deserialize)]
#[cbor(index_only)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOutcome {
    #[n(0)]
    Committed,
    /// Installed and booted, then undone: the health check failed, the
    /// bootloader fell back, or the new agent could not reach the broker.
    #[n(1)]
    RolledBack,
    /// Stopped before anything was installed (verification, download,
    /// disk): the device never left its working image.
    #[default]
    #[n(2)]
    Failed,
}

/// What an update replaces: the firmware image (A/B slots) or the agent's
/// own binary.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Encode, Decode, Serialize, Deserialize,
)]
#[cbor(index_only)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactKind {
    #[default]
    #[n(0)]
    Firmware,
    #[n(1)]
    Agent,
}

impl ArtifactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Firmware => "firmware",
            ArtifactKind::Agent => "agent",
        }
    }

    /// The kind named by [`ArtifactKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [ArtifactKind::Firmware, ArtifactKind::Agent]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// A time range (Unix ms, `from_ms` inclusive, `to_ms` exclusive) in which
/// nothing may be installed: the freeze before election day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cbor(map)]
pub struct FreezeWindow {
    #[n(0)]
    pub from_ms: u64,
    #[n(1)]
    pub to_ms: u64,
}

impl FreezeWindow {
    pub fn contains(&self, at_ms: u64) -> bool {
        (self.from_ms..self.to_ms).contains(&at_ms)
    }
}

/// `desired`: what the controller wants the device to run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode, Serialize, Deserialize)]
#[cbor(map)]
pub struct Desired {
    #[n(0)]
    pub config_rev: u32,
    #[n(1)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<TargetFirmware>,
    /// The agent binary the device should run.
    #[n(2)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<TargetFirmware>,
    /// Freeze windows: the agent keeps them and installs nothing inside one,
    /// whatever it is asked later.
    #[n(3)]
    #[cbor(default)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<FreezeWindow>,
}

/// A signed artifact the device should run: its version and its TUF target
/// name in the firmware repository (see `fleet_protocol::firmware`). The
/// agent trusts neither: it looks the target up in metadata it verified.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cbor(map)]
pub struct TargetFirmware {
    #[n(0)]
    pub version: Version,
    /// The TUF target name, e.g. `firmware/ballot-box-v2/1.4.0.tar`.
    #[n(1)]
    pub manifest: String,
    /// Which attempt at this target the controller asks for (0 at first).
    /// A device gives up on a target that failed or rolled back; the
    /// controller asks for it again (a rollout's retry-failed) by sending
    /// the same target with a higher attempt. Older agents skip the field.
    #[n(2)]
    #[cbor(default)]
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// `cmd`: a one-off command; its result comes back as an event.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cbor(map)]
pub struct Command {
    #[n(0)]
    pub id: String,
    #[n(1)]
    pub expires_at_ms: u64,
    #[n(2)]
    pub action: Action,
    /// Where and with which one-use token to upload logs (only for
    /// [`Action::UploadLogs`]). Older agents skip the field.
    #[n(3)]
    #[cbor(default)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadTicket>,
}

/// A one-use permission to upload logs for one command: the controller's
/// path (`/api/v1/devices/{id}/logs/{command}`) and the bearer token, of
/// which the controller keeps only the SHA-256. Its `Debug` leaves the
/// token out: commands are logged.
#[derive(Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cbor(map)]
pub struct UploadTicket {
    #[n(0)]
    pub path: String,
    #[n(1)]
    pub token: String,
}

impl std::fmt::Debug for UploadTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadTicket")
            .field("path", &self.path)
            .field("token", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cbor(index_only)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    #[n(0)]
    Reboot,
    #[n(1)]
    RunChecks,
    #[n(2)]
    UploadLogs,
    /// Renew the device certificate now (as at two thirds of its life).
    #[n(3)]
    RenewCertificate,
}

/// `csr`: a device asks for a new certificate over its mutual-TLS session
/// (its current identity). The controller takes only the public key.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cbor(map)]
pub struct CertRequest {
    /// PKCS#10 request, PEM; its subject must be the device's id.
    #[n(0)]
    pub csr_pem: String,
    /// Whether the request carries a new key (informational, audited).
    #[n(1)]
    #[serde(default)]
    pub new_key: bool,
}

/// `cert`: the controller's answer to a [`CertRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cbor(map)]
pub struct CertIssued {
    /// The new certificate, PEM, signed by the fleet CA.
    #[n(0)]
    pub cert_pem: String,
}
