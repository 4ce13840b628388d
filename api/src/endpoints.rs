//! Every route the controller serves, in one table: method, path (axum 0.8
//! syntax), how it authenticates, what it takes and what it answers. The
//! OpenAPI document is built from it and the client builds its URLs from
//! it, so the three cannot drift apart.

use crate::roles::{Permission, Role};

/// The HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a caller proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone.
    Public,
    /// A device's single-use enrolment token, in the request body.
    EnrolmentToken,
    /// An operator's bearer token whose role has any one of these permissions.
    Bearer(&'static [Permission]),
    /// A device's one-use upload token from an upload-logs command, as a
    /// bearer token (only the command's upload route takes it).
    UploadTicket,
}

/// A request or response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Empty,
    /// JSON of the named schema (a component of the OpenAPI document).
    Json(&'static str),
    /// A JSON array of the named schema.
    JsonList(&'static str),
    /// CSV text (`text/csv`).
    Csv,
    /// Plain text (`text/plain`), e.g. Prometheus metrics.
    Text,
    /// A JSON document with a schema of its own (the OpenAPI document).
    AnyJson,
    /// Raw bytes (`application/octet-stream`), e.g. an artifact.
    Binary,
}

/// One route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Unique; the OpenAPI `operationId`.
    pub operation_id: &'static str,
    pub method: Method,
    /// axum 0.8 syntax: `/api/v1/devices/{id}`.
    pub path: &'static str,
    pub summary: &'static str,
    /// Rules beyond the role (province scope, per-target permissions).
    pub description: &'static str,
    pub auth: Auth,
    /// The query string's type (it derives `utoipa::IntoParams`).
    pub query: Option<&'static str>,
    pub request: Body,
    pub response: Body,
    /// Statuses other than 200 it may answer, each with an [`crate::ErrorBody`].
    pub errors: &'static [u16],
}

impl Endpoint {
    /// The roles that may call it (for bearer endpoints; none otherwise).
    pub fn roles(&self) -> Vec<Role> {
        match self.auth {
            Auth::Bearer(any_of) => Role::ALL
                .into_iter()
                .filter(|r| any_of.iter().any(|p| r.allows(*p)))
                .collect(),
            Auth::Public | Auth::EnrolmentToken | Auth::UploadTicket => Vec::new(),
        }
    }

    /// The path as OpenAPI writes it: `{*rest}` is `{rest}`.
    pub fn openapi_path(&self) -> String {
        self.path.replace("{*", "{")
    }

    /// The names of the `{…}` segments of the path, in order (a trailing
    /// `{*rest}` takes the rest of the path, slashes included).
    pub fn path_params(&self) -> impl Iterator<Item = &'static str> {
        self.path.split('/').filter_map(|s| {
            s.strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .map(|s| s.trim_start_matches('*'))
        })
    }
}

/// The endpoint serving `method` on `path` (a template, as in the table).
pub fn endpoint(method: Method, path: &str) -> Option<&'static Endpoint> {
    ENDPOINTS
        .iter()
        .find(|e| e.method == method && e.path == path)
}

const READ: &[Permission] = &[Permission::ReadFleet];
/// Province-scoped tokens see only their provinces' devices; another
/// province's device answers 404 as if it did not exist.
const SCOPED: &str = "A province-tech token sees only its provinces: naming another province is refused (403), and another province's devices are left out.";

pub const HEALTHZ: Endpoint = Endpoint {
    operation_id: "healthz",
    method: Method::Get,
    path: "/healthz",
    summary: "Whether the controller runs and reaches its broker",
    description: "Public: for load balancers and monitoring.",
    auth: Auth::Public,
    query: None,
    request: Body::Empty,
    response: Body::Json("ControllerHealth"),
    errors: &[],
};

pub const METRICS: Endpoint = Endpoint {
    operation_id: "metrics",
    method: Method::Get,
    path: "/metrics",
    summary: "Prometheus metrics",
    description: "Metrics cover every province, so a province-scoped token (province-tech) is refused with 403 even though its role may read the fleet.",
    auth: Auth::Bearer(READ),
    query: None,
    request: Body::Empty,
    response: Body::Text,
    errors: &[401, 403],
};

pub const OPENAPI: Endpoint = Endpoint {
    operation_id: "openapi",
    method: Method::Get,
    path: "/api/v1/openapi.json",
    summary: "This OpenAPI document",
    description: "Public: it holds no fleet data.",
    auth: Auth::Public,
    query: None,
    request: Body::Empty,
    response: Body::AnyJson,
    errors: &[],
};

pub const PROVINCES: Endpoint = Endpoint {
    operation_id: "provinces",
    method: Method::Get,
    path: "/api/v1/provinces",
    summary: "The 31 provinces with their names",
    description: "",
    auth: Auth::Bearer(READ),
    query: None,
    request: Body::Empty,
    response: Body::JsonList("ProvinceRow"),
    errors: &[401, 403],
};

pub const READINESS: Endpoint = Endpoint {
    operation_id: "readiness",
    method: Method::Get,
    path: "/api/v1/readiness",
    summary: "Readiness per province or per county",
    description: SCOPED,
    auth: Auth::Bearer(READ),
    query: Some("ReadinessQuery"),
    request: Body::Empty,
    response: Body::JsonList("ReadinessRow"),
    errors: &[400, 401, 403],
};

pub const DEVICES: Endpoint = Endpoint {
    operation_id: "devices",
    method: Method::Get,
    path: "/api/v1/devices",
    summary: "Devices, filtered and paged",
    description: SCOPED,
    auth: Auth::Bearer(READ),
    query: Some("DeviceQuery"),
    request: Body::Empty,
    response: Body::Json("DevicePage"),
    errors: &[400, 401, 403],
};

pub const REGISTER: Endpoint = Endpoint {
    operation_id: "register",
    method: Method::Post,
    path: "/api/v1/devices",
    summary: "Register devices (all or nothing)",
    description: "A new device starts registered (or enrolled, if the request says so); an existing device keeps its lifecycle. Any bad device refuses the whole batch with 422 and one entry per bad device (by index). A province-tech token registers only in its provinces.",
    auth: Auth::Bearer(&[Permission::RegisterDevices]),
    query: None,
    request: Body::Json("RegisterRequest"),
    response: Body::Json("RegisterResponse"),
    errors: &[400, 401, 403, 422],
};

pub const DEVICE: Endpoint = Endpoint {
    operation_id: "device",
    method: Method::Get,
    path: "/api/v1/devices/{id}",
    summary: "One device: registration, last state and health, recent events",
    description: "Another province's device answers 404, as if it did not exist.",
    auth: Auth::Bearer(READ),
    query: None,
    request: Body::Empty,
    response: Body::Json("DeviceDetail"),
    errors: &[400, 401, 403, 404],
};

pub const MOVE_DEVICE: Endpoint = Endpoint {
    operation_id: "move_device",
    method: Method::Post,
    path: "/api/v1/devices/{id}/lifecycle",
    summary: "Ship, deploy or retire a device",
    description: "Shipping and deploying need move-devices; retiring needs retire-devices (it revokes the device's certificate and restarts a managed broker). A move the lifecycle does not allow answers 409.",
    auth: Auth::Bearer(&[Permission::MoveDevices, Permission::RetireDevices]),
    query: None,
    request: Body::Json("LifecycleMove"),
    response: Body::Json("LifecycleMoved"),
    errors: &[400, 401, 403, 404, 409],
};

pub const COMMAND: Endpoint = Endpoint {
    operation_id: "command",
    method: Method::Post,
    path: "/api/v1/devices/{id}/commands",
    summary: "Send a device a one-off command",
    description: "Actions: reboot, run-checks, upload-logs, renew-certificate (renew-cert is the same). The command is audited and stored, then published (QoS 1, not retained) on the device's cmd topic; an offline device gets it when it reconnects, until it expires. The answer gives the command id; the device's result arrives as its command-result event with that id. A province-tech token reaches only its provinces' devices (another province's device answers 404). A device not in service (registered only, or retired) answers 409; a controller without a broker connection answers 503.",
    auth: Auth::Bearer(&[Permission::SendCommands]),
    query: None,
    request: Body::Json("CommandRequest"),
    response: Body::Json("CommandSent"),
    errors: &[400, 401, 403, 404, 409, 503],
};

pub const IMPORT_REGISTRY: Endpoint = Endpoint {
    operation_id: "import_registry",
    method: Method::Post,
    path: "/api/v1/registry/import",
    summary: "Import counties and polling stations from CSV",
    description: "Columns: province, county, station_id (required); county_name_en, county_name_fa, station_name. Any bad line refuses the file with 422 and one entry per bad line. At most 64 MiB.",
    auth: Auth::Bearer(&[Permission::ImportRegistry]),
    query: None,
    request: Body::Csv,
    response: Body::Json("RegistryImported"),
    errors: &[401, 403, 422],
};

pub const COUNTIES: Endpoint = Endpoint {
    operation_id: "counties",
    method: Method::Get,
    path: "/api/v1/registry/counties",
    summary: "Counties with their station counts",
    description: SCOPED,
    auth: Auth::Bearer(READ),
    query: Some("CountyQuery"),
    request: Body::Empty,
    response: Body::JsonList("CountyRow"),
    errors: &[400, 401, 403],
};

pub const BASELINES: Endpoint = Endpoint {
    operation_id: "baselines",
    method: Method::Get,
    path: "/api/v1/baselines",
    summary: "Every model's baseline firmware",
    description: "",
    auth: Auth::Bearer(READ),
    query: None,
    request: Body::Empty,
    response: Body::Json("Baselines"),
    errors: &[401, 403],
};

pub const SET_BASELINE: Endpoint = Endpoint {
    operation_id: "set_baseline",
    method: Method::Put,
    path: "/api/v1/baselines/{model}",
    summary: "Set a model's baseline firmware",
    description: "",
    auth: Auth::Bearer(&[Permission::SetBaseline]),
    query: None,
    request: Body::Json("BaselineRequest"),
    response: Body::Json("Baseline"),
    errors: &[400, 401, 403],
};

pub const BROKER: Endpoint = Endpoint {
    operation_id: "broker",
    method: Method::Get,
    path: "/api/v1/broker",
    summary: "Where devices reach the MQTT broker",
    description: "",
    auth: Auth::Bearer(READ),
    query: None,
    request: Body::Empty,
    response: Body::Json("BrokerInfo"),
    errors: &[401, 403],
};

pub const BROKERS: Endpoint = Endpoint {
    operation_id: "brokers",
    method: Method::Get,
    path: "/api/v1/brokers",
    summary: "The central broker and the provincial brokers bridged to it",
    description: "A device connects to its province's broker (told at enrolment) if the tier serves its province, else to the central broker.",
    auth: Auth::Bearer(READ),
    query: None,
    request: Body::Empty,
    response: Body::Json("BrokerTier"),
    errors: &[401, 403],
};

pub const PKI: Endpoint = Endpoint {
    operation_id: "pki",
    method: Method::Get,
    path: "/api/v1/pki",
    summary: "When the CA, the service certificates and the devices' certificates expire",
    description: "Devices renew their own certificates at two thirds of their life; the controller renews the broker's, the API's and its own.",
    auth: Auth::Bearer(READ),
    query: None,
    request: Body::Empty,
    response: Body::Json("PkiStatus"),
    errors: &[401, 403],
};

pub const TOKENS: Endpoint = Endpoint {
    operation_id: "tokens",
    method: Method::Get,
    path: "/api/v1/tokens",
    summary: "Operator tokens (never the tokens themselves)",
    description: "",
    auth: Auth::Bearer(&[Permission::ManageTokens]),
    query: None,
    request: Body::Empty,
    response: Body::JsonList("TokenRow"),
    errors: &[401, 403],
};

pub const CREATE_TOKEN: Endpoint = Endpoint {
    operation_id: "create_token",
    method: Method::Post,
    path: "/api/v1/tokens",
    summary: "Make a token; it is shown once",
    description:
        "A province-tech token needs at least one province; no other role takes provinces.",
    auth: Auth::Bearer(&[Permission::ManageTokens]),
    query: None,
    request: Body::Json("TokenRequest"),
    response: Body::Json("CreatedToken"),
    errors: &[400, 401, 403],
};

pub const REVOKE_TOKEN: Endpoint = Endpoint {
    operation_id: "revoke_token",
    method: Method::Delete,
    path: "/api/v1/tokens/{id}",
    summary: "Revoke a token at once",
    description: "",
    auth: Auth::Bearer(&[Permission::ManageTokens]),
    query: None,
    request: Body::Empty,
    response: Body::Json("TokenRevoked"),
    errors: &[401, 403, 404],
};

pub const AUDIT: Endpoint = Endpoint {
    operation_id: "audit",
    method: Method::Get,
    path: "/api/v1/audit",
    summary: "Audit log entries, newest first",
    description: "",
    auth: Auth::Bearer(&[Permission::ReadAudit]),
    query: Some("AuditQuery"),
    request: Body::Empty,
    response: Body::JsonList("AuditEntry"),
    errors: &[401, 403],
};

pub const AUDIT_VERIFY: Endpoint = Endpoint {
    operation_id: "audit_verify",
    method: Method::Get,
    path: "/api/v1/audit/verify",
    summary: "Check the audit log's whole hash chain",
    description: "A broken chain is a 200 answer with intact false and the first broken entry.",
    auth: Auth::Bearer(&[Permission::ReadAudit]),
    query: None,
    request: Body::Empty,
    response: Body::Json("AuditVerification"),
    errors: &[401, 403],
};

pub const ENROL_BATCH: Endpoint = Endpoint {
    operation_id: "enrol_batch",
    method: Method::Post,
    path: "/api/v1/enrol/batch",
    summary: "Register a shipment and make one enrolment token per device",
    description: "The body is CSV: serial,model,province[,county][,station] with a header. Any bad line refuses the shipment with 422 and one entry per bad line. The tokens are shown only in this answer.",
    auth: Auth::Bearer(&[Permission::RegisterDevices]),
    query: Some("EnrolBatchQuery"),
    request: Body::Csv,
    response: Body::Json("EnrolBatch"),
    errors: &[401, 403, 422],
};

pub const SHIPMENT: Endpoint = Endpoint {
    operation_id: "shipment",
    method: Method::Get,
    path: "/api/v1/enrol/shipments/{id}",
    summary: "Which devices of a shipment are enrolled, tested and ready to ship",
    description: "Another province's shipment answers 404, as if it did not exist.",
    auth: Auth::Bearer(READ),
    query: None,
    request: Body::Empty,
    response: Body::Json("ShipmentStatus"),
    errors: &[401, 403, 404],
};

pub const ENROL: Endpoint = Endpoint {
    operation_id: "enrol",
    method: Method::Post,
    path: "/api/v1/enrol",
    summary: "A device enrols: its token and certificate request for its certificate",
    description: "No bearer token: the single-use, expiring enrolment token in the body is the credential. An unknown, used, expired or another device's token is refused with 403. After 10 refusals from one address within a minute, that address is answered 429 (with Retry-After) until its oldest refusal is a minute old.",
    auth: Auth::EnrolmentToken,
    query: None,
    request: Body::Json("EnrolRequest"),
    response: Body::Json("EnrolResponse"),
    errors: &[400, 403, 429],
};

pub const ARTIFACT: Endpoint = Endpoint {
    operation_id: "artifact",
    method: Method::Get,
    path: "/api/v1/artifacts/{name}",
    summary: "An artifact for devices (signed content), with Range",
    description: "Public: a device has no API token, and it verifies what it fetches (hash and length, TUF metadata) before using it. One byte range per request (206 with Content-Range; several or one past the end: 416). Every answer has a strong ETag; a Range whose If-Range is not the current ETag gets the whole file (200). Names are [A-Za-z0-9._-]{1,128}, not starting with a dot; the directory is never listed.",
    auth: Auth::Public,
    query: None,
    request: Body::Empty,
    response: Body::Binary,
    errors: &[400, 404, 416],
};

const FIRMWARE: &[Permission] = &[Permission::ManageFirmware];

pub const DEVICE_UPDATE: Endpoint = Endpoint {
    operation_id: "device_update",
    method: Method::Post,
    path: "/api/v1/devices/{id}/update",
    summary: "Tell a device which firmware or agent version to run",
    description: "Finds the signed target of that version for the device's model (the agent: for the platform, default the controller's own) and sets it in the device's desired state, which is stored and sent retained; the device fetches and verifies it through TUF itself. No such target answers 404 (or 422 for an artifact that is not firmware or agent). A province-tech token reaches only its provinces' devices (another province's device answers 404). Audited as device.update.",
    auth: Auth::Bearer(&[Permission::SendCommands]),
    query: None,
    request: Body::Json("DeviceUpdateRequest"),
    response: Body::Json("DeviceUpdateSet"),
    errors: &[400, 401, 403, 404, 409, 422],
};

pub const FREEZE: Endpoint = Endpoint {
    operation_id: "freeze",
    method: Method::Get,
    path: "/api/v1/freeze",
    summary: "The fleet's freeze windows",
    description: "",
    auth: Auth::Bearer(READ),
    query: None,
    request: Body::Empty,
    response: Body::Json("FreezeWindows"),
    errors: &[401, 403],
};

pub const SET_FREEZE: Endpoint = Endpoint {
    operation_id: "set_freeze",
    method: Method::Put,
    path: "/api/v1/freeze",
    summary: "Replace the fleet's freeze windows",
    description: "Times are Unix ms or RFC 3339; each window must end after it starts; at most 32. Every desired state the controller sends carries the windows, and setting them sends again the desired state of every device that has one. Devices install nothing inside a window they know. Audited as freeze.set.",
    auth: Auth::Bearer(FIRMWARE),
    query: None,
    request: Body::Json("FreezeRequest"),
    response: Body::Json("FreezeWindows"),
    errors: &[400, 401, 403, 422],
};

pub const ADD_FREEZE: Endpoint = Endpoint {
    operation_id: "add_freeze",
    method: Method::Post,
    path: "/api/v1/freeze",
    summary: "Add one freeze window (with its reason)",
    description: "Times are Unix ms or RFC 3339; the window must end after it starts; at most 32 in all. No rollout starts or advances inside a window, and devices install nothing inside one they know: the desired state of every device that has one is sent again with the windows, in the background. Audited as freeze.set with every window.",
    auth: Auth::Bearer(FIRMWARE),
    query: None,
    request: Body::Json("FreezeWindowRequest"),
    response: Body::Json("FreezeWindows"),
    errors: &[400, 401, 403, 422],
};

pub const CLEAR_FREEZE: Endpoint = Endpoint {
    operation_id: "clear_freeze",
    method: Method::Delete,
    path: "/api/v1/freeze",
    summary: "Remove every freeze window",
    description: "The same as PUT with no windows. Audited as freeze.set.",
    auth: Auth::Bearer(FIRMWARE),
    query: None,
    request: Body::Empty,
    response: Body::Json("FreezeWindows"),
    errors: &[401, 403],
};

const ROLLOUTS_MANAGE: &[Permission] = &[Permission::ManageRollouts];
/// Reading rollouts is open to every role that reads the fleet; a
/// province-scoped token sees only its provinces' members and counts.
const ROLLOUT_SCOPE: &str =
    "A province-tech token sees only the members of its provinces, and counters over them only.";

pub const CREATE_ROLLOUT: Endpoint = Endpoint {
    operation_id: "create_rollout",
    method: Method::Post,
    path: "/api/v1/rollouts",
    summary: "Create a rollout (and start it, unless draft)",
    description: "The target must be a published signed target of that model (firmware) or platform (agent) and version: 404 otherwise. Refused with 409 when a selected device is a member of another running or paused rollout of the same artifact (the answer names it, the count and up to 5 devices), or when started inside a freeze window. A bad plan (a province in two waves, an unknown province, thresholds out of range, bad hours) is 422. Audited as rollout.create (and rollout.start).",
    auth: Auth::Bearer(ROLLOUTS_MANAGE),
    query: None,
    request: Body::Json("RolloutRequest"),
    response: Body::Json("RolloutView"),
    errors: &[400, 401, 403, 404, 409, 422],
};

pub const ROLLOUTS: Endpoint = Endpoint {
    operation_id: "rollouts",
    method: Method::Get,
    path: "/api/v1/rollouts",
    summary: "Every rollout, newest first, with its counters",
    description: ROLLOUT_SCOPE,
    auth: Auth::Bearer(READ),
    query: None,
    request: Body::Empty,
    response: Body::JsonList("RolloutSummary"),
    errors: &[401, 403],
};

pub const ROLLOUT: Endpoint = Endpoint {
    operation_id: "rollout",
    method: Method::Get,
    path: "/api/v1/rollouts/{id}",
    summary: "One rollout: its plan, waves with counters per province, and its last 50 log entries",
    description: ROLLOUT_SCOPE,
    auth: Auth::Bearer(READ),
    query: None,
    request: Body::Empty,
    response: Body::Json("RolloutView"),
    errors: &[400, 401, 403, 404],
};

pub const ROLLOUT_MEMBERS: Endpoint = Endpoint {
    operation_id: "rollout_members",
    method: Method::Get,
    path: "/api/v1/rollouts/{id}/members",
    summary: "The devices of a rollout, optionally only those in one state",
    description: ROLLOUT_SCOPE,
    auth: Auth::Bearer(READ),
    query: Some("MembersQuery"),
    request: Body::Empty,
    response: Body::JsonList("MemberView"),
    errors: &[400, 401, 403, 404],
};

const ACTION_RULES: &str = "Answers 409, naming the phase, when the rollout's phase does not allow it (start: draft; pause: running; resume: paused or draft; abort: draft, running or paused; retry-failed: running, paused or completed). Start (and resume of a draft, which is a start) is refused with 409 inside a freeze window; resuming a paused rollout inside one is allowed: it is running again but held (its `held` says which window), releasing nothing and starting no wave until the window ends. Audited as rollout.ACTION with the caller.";

pub const START_ROLLOUT: Endpoint = Endpoint {
    operation_id: "start_rollout",
    method: Method::Post,
    path: "/api/v1/rollouts/{id}/start",
    summary: "Start a draft rollout",
    description: ACTION_RULES,
    auth: Auth::Bearer(ROLLOUTS_MANAGE),
    query: None,
    request: Body::Empty,
    response: Body::Json("RolloutView"),
    errors: &[400, 401, 403, 404, 409],
};

pub const PAUSE_ROLLOUT: Endpoint = Endpoint {
    operation_id: "pause_rollout",
    method: Method::Post,
    path: "/api/v1/rollouts/{id}/pause",
    summary: "Pause a running rollout (devices already released carry on)",
    description: ACTION_RULES,
    auth: Auth::Bearer(ROLLOUTS_MANAGE),
    query: None,
    request: Body::Json("PauseRequest"),
    response: Body::Json("RolloutView"),
    errors: &[400, 401, 403, 404, 409],
};

pub const RESUME_ROLLOUT: Endpoint = Endpoint {
    operation_id: "resume_rollout",
    method: Method::Post,
    path: "/api/v1/rollouts/{id}/resume",
    summary: "Resume a paused rollout",
    description: ACTION_RULES,
    auth: Auth::Bearer(ROLLOUTS_MANAGE),
    query: None,
    request: Body::Empty,
    response: Body::Json("RolloutView"),
    errors: &[400, 401, 403, 404, 409],
};

pub const ABORT_ROLLOUT: Endpoint = Endpoint {
    operation_id: "abort_rollout",
    method: Method::Post,
    path: "/api/v1/rollouts/{id}/abort",
    summary: "Abort a rollout: nothing more is released (devices keep what they installed)",
    description: ACTION_RULES,
    auth: Auth::Bearer(ROLLOUTS_MANAGE),
    query: None,
    request: Body::Empty,
    response: Body::Json("RolloutView"),
    errors: &[400, 401, 403, 404, 409],
};

pub const RETRY_ROLLOUT: Endpoint = Endpoint {
    operation_id: "retry_failed_rollout",
    method: Method::Post,
    path: "/api/v1/rollouts/{id}/retry-failed",
    summary: "Release again the failed and timed-out devices, with a new attempt",
    description: ACTION_RULES,
    auth: Auth::Bearer(ROLLOUTS_MANAGE),
    query: None,
    request: Body::Empty,
    response: Body::Json("RolloutView"),
    errors: &[400, 401, 403, 404, 409],
};

/// The endpoint of an operator's action on a rollout.
pub fn rollout_action(a: crate::types::RolloutAction) -> &'static Endpoint {
    use crate::types::RolloutAction::*;
    match a {
        Start => &START_ROLLOUT,
        Pause => &PAUSE_ROLLOUT,
        Resume => &RESUME_ROLLOUT,
        Abort => &ABORT_ROLLOUT,
        RetryFailed => &RETRY_ROLLOUT,
    }
}

pub const FIRMWARE_STATUS: Endpoint = Endpoint {
    operation_id: "firmware",
    method: Method::Get,
    path: "/api/v1/firmware",
    summary: "The firmware repository: each role's version and expiry, and the signed targets",
    description: "A controller whose repository was never set up (fleet-controller firmware-init) answers 409.",
    auth: Auth::Bearer(READ),
    query: None,
    request: Body::Empty,
    response: Body::Json("FirmwareStatus"),
    errors: &[401, 403, 409],
};

pub const UPLOAD_IMAGE: Endpoint = Endpoint {
    operation_id: "upload_image",
    method: Method::Put,
    path: "/api/v1/firmware/images/{sha256}",
    summary: "Store an image under its SHA-256 (before the targets metadata that names it)",
    description: "The raw body is streamed to disk and its hash checked: a body whose SHA-256 is not the one in the path is refused with 422 and nothing is kept. Larger than firmware.max_image_bytes answers 413. Audited as firmware.image.",
    auth: Auth::Bearer(FIRMWARE),
    query: None,
    request: Body::Binary,
    response: Body::Json("ImageUploaded"),
    errors: &[400, 401, 403, 409, 413, 422],
};

pub const IMAGE: Endpoint = Endpoint {
    operation_id: "image",
    method: Method::Get,
    path: "/api/v1/firmware/images/{sha256}",
    summary:
        "Whether an image is stored (fleetctl asks before uploading, and skips one already there)",
    description: "404 when no image with that SHA-256 is stored.",
    auth: Auth::Bearer(FIRMWARE),
    query: None,
    request: Body::Empty,
    response: Body::Json("ImageUploaded"),
    errors: &[400, 401, 403, 404, 409],
};

pub const PUBLISH_TARGETS: Endpoint = Endpoint {
    operation_id: "publish_targets",
    method: Method::Post,
    path: "/api/v1/firmware/targets",
    summary: "Publish targets metadata the release team signed",
    description: "The body is the signed targets.json (fleetctl release sign). It must be signed by the root's targets keys to threshold, newer than the one published, not expired, and every target's image must be stored with that hash and length; else 422 with the reason. The controller then signs a new snapshot and timestamp. Audited as firmware.targets.",
    auth: Auth::Bearer(FIRMWARE),
    query: None,
    request: Body::AnyJson,
    response: Body::Json("TargetsPublished"),
    errors: &[400, 401, 403, 409, 422],
};

pub const PUBLISH_ROOT: Endpoint = Endpoint {
    operation_id: "publish_root",
    method: Method::Post,
    path: "/api/v1/firmware/root",
    summary: "Publish a new root (key rotation)",
    description: "The body is N+1.root.json, signed by the current root's threshold and by its own. Refused with 422 otherwise. Audited as firmware.root.",
    auth: Auth::Bearer(FIRMWARE),
    query: None,
    request: Body::AnyJson,
    response: Body::Json("RootPublished"),
    errors: &[400, 401, 403, 409, 422],
};

/// Devices hold no token: everything under `/api/v1/tuf` is signed, and
/// they verify it.
const TUF_PUBLIC: &str = "Public: devices hold no API token, and they verify everything served here against the root of trust installed with them (TUF).";

pub const TUF_METADATA: Endpoint = Endpoint {
    operation_id: "tuf_metadata",
    method: Method::Get,
    path: "/api/v1/tuf/metadata/{file}",
    summary: "TUF metadata: N.root.json, timestamp.json, V.snapshot.json, V.targets.json",
    description: TUF_PUBLIC,
    auth: Auth::Public,
    query: None,
    request: Body::Empty,
    response: Body::AnyJson,
    errors: &[400, 404],
};

pub const TUF_TARGET: Endpoint = Endpoint {
    operation_id: "tuf_target",
    method: Method::Get,
    path: "/api/v1/tuf/targets/{*path}",
    summary: "A target file (consistent-snapshot name: DIR/SHA256.NAME), with Range",
    description: "Public, as the metadata. One byte range per request (206 with Content-Range; several or one past the end: 416); a strong ETag; a Range whose If-Range is not the current ETag gets the whole file.",
    auth: Auth::Public,
    query: None,
    request: Body::Empty,
    response: Body::Binary,
    errors: &[400, 404, 416],
};

pub const TUF_DELTA: Endpoint = Endpoint {
    operation_id: "tuf_delta",
    method: Method::Get,
    path: "/api/v1/tuf/delta/{from}/{to}",
    summary: "A bidiff patch from one stored image to another (by SHA-256)",
    description: "Both must be published targets of the same artifact and model (404 otherwise). Made on the first request (one at a time) and kept. The device applies it to its installed image and checks the result against the signed hash of the target, like a full image.",
    auth: Auth::Public,
    query: None,
    request: Body::Empty,
    response: Body::Binary,
    errors: &[400, 404],
};

pub const COMMANDS: Endpoint = Endpoint {
    operation_id: "commands",
    method: Method::Post,
    path: "/api/v1/commands",
    summary: "Send one command to every device a selector names",
    description: "One command (own id, same action and expiry) per selected device in service, each stored then published as for one device. A province-tech token reaches only its provinces: naming another province (or a county or device of one) answers 404 as an unknown device would, and nothing is sent. A selector must name provinces, counties or devices (400 otherwise). Devices selected but not in service are listed as skipped.",
    auth: Auth::Bearer(&[Permission::SendCommands]),
    query: None,
    request: Body::Json("CommandsRequest"),
    response: Body::Json("CommandsSent"),
    errors: &[400, 401, 403, 404, 503],
};

pub const UPLOAD_LOGS: Endpoint = Endpoint {
    operation_id: "upload_logs",
    method: Method::Put,
    path: "/api/v1/devices/{id}/logs/{command}",
    summary: "A device uploads its logs for an upload-logs command",
    description: "No operator token: the bearer token is the one-use token of the command's upload ticket (the controller keeps only its SHA-256). Taken once, before the command expires (403 otherwise: wrong, used or expired token), at most [commands] max_log_bytes (4 MiB by default; 413 above, nothing stored). Stored under DATA/logs/DEVICE/COMMAND.log and audited.",
    auth: Auth::UploadTicket,
    query: None,
    request: Body::Binary,
    response: Body::Json("LogsUploaded"),
    errors: &[400, 401, 403, 404, 413],
};

pub const DEVICE_LOGS: Endpoint = Endpoint {
    operation_id: "device_logs",
    method: Method::Get,
    path: "/api/v1/devices/{id}/logs/{command}",
    summary: "The logs a device uploaded for an upload-logs command",
    description: "Plain bytes, as the device sent them: the tail of each configured log file after a `==> PATH <==` line. A province-tech token reaches only its provinces' devices (another province's device answers 404).",
    auth: Auth::Bearer(READ),
    query: None,
    request: Body::Empty,
    response: Body::Binary,
    errors: &[400, 401, 403, 404],
};

/// Every route the controller serves.
pub const ENDPOINTS: &[Endpoint] = &[
    HEALTHZ,
    METRICS,
    OPENAPI,
    PROVINCES,
    READINESS,
    DEVICES,
    REGISTER,
    DEVICE,
    MOVE_DEVICE,
    COMMAND,
    IMPORT_REGISTRY,
    COUNTIES,
    BASELINES,
    SET_BASELINE,
    BROKER,
    BROKERS,
    PKI,
    TOKENS,
    CREATE_TOKEN,
    REVOKE_TOKEN,
    AUDIT,
    AUDIT_VERIFY,
    ENROL_BATCH,
    SHIPMENT,
    ENROL,
    ARTIFACT,
    DEVICE_UPDATE,
    FREEZE,
    SET_FREEZE,
    ADD_FREEZE,
    CLEAR_FREEZE,
    CREATE_ROLLOUT,
    ROLLOUTS,
    ROLLOUT,
    ROLLOUT_MEMBERS,
    START_ROLLOUT,
    PAUSE_ROLLOUT,
    RESUME_ROLLOUT,
    ABORT_ROLLOUT,
    RETRY_ROLLOUT,
    FIRMWARE_STATUS,
    UPLOAD_IMAGE,
    IMAGE,
    PUBLISH_TARGETS,
    PUBLISH_ROOT,
    TUF_METADATA,
    TUF_TARGET,
    TUF_DELTA,
    COMMANDS,
    UPLOAD_LOGS,
    DEVICE_LOGS,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_and_routes_are_unique() {
        assert!(!ENDPOINTS.is_empty());
        for (i, a) in ENDPOINTS.iter().enumerate() {
            for b in &ENDPOINTS[i + 1..] {
                assert_ne!(a.operation_id, b.operation_id);
                assert!(
                    (a.method, a.path) != (b.method, b.path),
                    "{} {} twice",
                    a.method,
                    a.path
                );
            }
        }
    }

    #[test]
    fn lookup_finds_each_endpoint_by_method_and_path() {
        for e in ENDPOINTS {
            assert_eq!(endpoint(e.method, e.path), Some(e));
        }
        assert_eq!(endpoint(Method::Delete, "/api/v1/devices"), None);
    }

    #[test]
    fn the_routes_of_the_controller_today_are_all_in_the_table() {
        // Every route the controller served when this table was made, and
        // those added since (the controller builds its router from the
        // table; its own test checks the router against the document).
        let today = [
            (Method::Get, "/healthz"),
            (Method::Get, "/metrics"),
            (Method::Get, "/api/v1/provinces"),
            (Method::Get, "/api/v1/readiness"),
            (Method::Get, "/api/v1/devices"),
            (Method::Post, "/api/v1/devices"),
            (Method::Get, "/api/v1/devices/{id}"),
            (Method::Post, "/api/v1/devices/{id}/lifecycle"),
            (Method::Post, "/api/v1/devices/{id}/commands"),
            (Method::Post, "/api/v1/registry/import"),
            (Method::Get, "/api/v1/registry/counties"),
            (Method::Get, "/api/v1/baselines"),
            (Method::Put, "/api/v1/baselines/{model}"),
            (Method::Get, "/api/v1/broker"),
            (Method::Get, "/api/v1/pki"),
            (Method::Get, "/api/v1/tokens"),
            (Method::Post, "/api/v1/tokens"),
            (Method::Delete, "/api/v1/tokens/{id}"),
            (Method::Get, "/api/v1/audit"),
            (Method::Get, "/api/v1/audit/verify"),
            (Method::Post, "/api/v1/enrol/batch"),
            (Method::Get, "/api/v1/enrol/shipments/{id}"),
            (Method::Post, "/api/v1/enrol"),
            (Method::Get, "/api/v1/artifacts/{name}"),
            (Method::Post, "/api/v1/devices/{id}/update"),
            (Method::Get, "/api/v1/freeze"),
            (Method::Put, "/api/v1/freeze"),
            (Method::Get, "/api/v1/firmware"),
            (Method::Put, "/api/v1/firmware/images/{sha256}"),
            (Method::Get, "/api/v1/firmware/images/{sha256}"),
            (Method::Post, "/api/v1/firmware/targets"),
            (Method::Post, "/api/v1/firmware/root"),
            (Method::Get, "/api/v1/tuf/metadata/{file}"),
            (Method::Get, "/api/v1/tuf/targets/{*path}"),
            (Method::Get, "/api/v1/tuf/delta/{from}/{to}"),
            (Method::Post, "/api/v1/freeze"),
            (Method::Delete, "/api/v1/freeze"),
            (Method::Post, "/api/v1/rollouts"),
            (Method::Get, "/api/v1/rollouts"),
            (Method::Get, "/api/v1/rollouts/{id}"),
            (Method::Get, "/api/v1/rollouts/{id}/members"),
            (Method::Post, "/api/v1/rollouts/{id}/start"),
            (Method::Post, "/api/v1/rollouts/{id}/pause"),
            (Method::Post, "/api/v1/rollouts/{id}/resume"),
            (Method::Post, "/api/v1/rollouts/{id}/abort"),
            (Method::Post, "/api/v1/rollouts/{id}/retry-failed"),
            (Method::Post, "/api/v1/commands"),
            (Method::Put, "/api/v1/devices/{id}/logs/{command}"),
            (Method::Get, "/api/v1/devices/{id}/logs/{command}"),
            (Method::Get, "/api/v1/brokers"),
        ];
        for (m, p) in today {
            assert!(endpoint(m, p).is_some(), "{m} {p} is missing");
        }
        // … plus the document itself.
        assert_eq!(ENDPOINTS.len(), today.len() + 1);
        assert_eq!(
            endpoint(Method::Get, "/api/v1/openapi.json"),
            Some(&OPENAPI)
        );
    }

    #[test]
    fn moving_a_device_is_open_to_whoever_may_move_or_retire() {
        assert_eq!(
            MOVE_DEVICE.roles(),
            [Role::Admin, Role::CentralOps, Role::Warehouse]
        );
        assert_eq!(TOKENS.roles(), [Role::Admin]);
        assert_eq!(
            COMMAND.roles(),
            [Role::Admin, Role::CentralOps, Role::ProvinceTech]
        );
        assert_eq!(READINESS.roles(), Role::ALL);
        assert!(ENROL.roles().is_empty());
        assert_eq!(UPLOAD_IMAGE.roles(), [Role::Admin, Role::CentralOps]);
        assert_eq!(SET_FREEZE.roles(), [Role::Admin, Role::CentralOps]);
        assert_eq!(DEVICE_UPDATE.roles(), COMMAND.roles());
        assert!(TUF_TARGET.roles().is_empty());
        assert_eq!(CREATE_ROLLOUT.roles(), [Role::Admin, Role::CentralOps]);
        assert_eq!(PAUSE_ROLLOUT.roles(), [Role::Admin, Role::CentralOps]);
        assert_eq!(ROLLOUTS.roles(), Role::ALL);
        assert_eq!(ROLLOUT_MEMBERS.roles(), Role::ALL);
        assert!(HEALTHZ.roles().is_empty());
    }

    #[test]
    fn path_parameters_are_named_from_the_template() {
        assert_eq!(MOVE_DEVICE.path_params().collect::<Vec<_>>(), ["id"]);
        assert_eq!(SET_BASELINE.path_params().collect::<Vec<_>>(), ["model"]);
        assert_eq!(DEVICES.path_params().count(), 0);
        assert_eq!(TUF_TARGET.path_params().collect::<Vec<_>>(), ["path"]);
        assert_eq!(TUF_DELTA.path_params().collect::<Vec<_>>(), ["from", "to"]);
    }
}
