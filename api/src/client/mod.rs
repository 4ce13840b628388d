//! The typed client of `/api/v1`: one method per endpoint, URLs built from
//! [`crate::endpoints`], bodies and answers as [`crate::types`]. HTTPS
//! trusts the fleet CA and nothing else; plain HTTP is for `--insecure-dev`.

mod commands;
mod error;
mod upload;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use error::ClientError;

use crate::endpoints::{self as ep, Auth, Endpoint, Method};
use crate::types::*;

/// How long one request may take unless [`Client::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Client {
    base: Url,
    http: reqwest::Client,
    token: Option<String>,
    timeout: Duration,
}

/// What a request carries.
enum Payload {
    Empty,
    Json(Vec<u8>),
    Csv(String),
    /// Raw bytes of a known length, streamed (an image upload).
    Stream(reqwest::Body, u64),
}

fn json<T: Serialize>(body: &T) -> Payload {
    Payload::Json(serde_json::to_vec(body).expect("request types serialize to JSON"))
}

impl Client {
    /// A client of the controller at `base` (`https://host:port`, or
    /// `http://…` with `--insecure-dev`). `ca_pem` is the fleet CA; HTTPS
    /// needs it and trusts nothing else.
    pub fn new(base: &str, ca_pem: Option<&[u8]>) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::BadUrl {
            url: base.to_owned(),
            reason: reason.to_owned(),
        };
        let url = Url::parse(base).map_err(|e| bad(&e.to_string()))?;
        match url.scheme() {
            "https" if ca_pem.is_none() => return Err(ClientError::NoCa),
            "https" | "http" => {}
            _ => {
                return Err(bad(
                    "it must start with https:// (or http:// with --insecure-dev)",
                ))
            }
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("it may not have a query or fragment"));
        }
        // Always our own TLS set-up: the ring provider, whether or not a
        // process-wide default is installed, and only the fleet CA.
        let tls = tls_config(ca_pem)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .build()
            .map_err(ClientError::Setup)?;
        Ok(Self {
            base: url,
            http,
            token: None,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// [`Client::new`] with the fleet CA read from a file (`--ca`).
    pub fn with_ca_file(base: &str, ca: Option<&Path>) -> Result<Self, ClientError> {
        let pem = ca
            .map(|path| {
                std::fs::read(path).map_err(|source| ClientError::CaRead {
                    path: path.to_owned(),
                    source,
                })
            })
            .transpose()?;
        Self::new(base, pem.as_deref())
    }

    /// The operator's bearer token (blank counts as none).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The controller's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The URL of `endpoint` with `args` in its `{…}` segments, in order,
    /// each percent-encoded as one path segment.
    pub fn url(&self, endpoint: &Endpoint, args: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .expect("an http(s) URL, checked in Client::new, has a path");
            segments.pop_if_empty();
            let mut args = args.iter();
            for s in endpoint.path.split('/').filter(|s| !s.is_empty()) {
                if s.starts_with("{*") {
                    // The rest of the path: one segment per '/'.
                    let rest = args
                        .next()
                        .expect("each client method passes one argument per path parameter");
                    for part in rest.split('/') {
                        segments.push(part);
                    }
                } else if s.starts_with('{') {
                    segments.push(
                        args.next()
                            .expect("each client method passes one argument per path parameter"),
                    );
                } else {
                    segments.push(s);
                }
            }
        }
        url
    }

    /// The request for `endpoint`, with its query string and credentials.
    fn request<Q: Serialize + ?Sized>(
        &self,
        endpoint: &Endpoint,
        args: &[&str],
        query: Option<&Q>,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let method = match endpoint.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut req = self
            .http
            .request(method, self.url(endpoint, args))
            .timeout(self.timeout);
        if let Some(q) = query {
            req = req.query(q);
        }
        if endpoint.auth != Auth::Public && !self.secret_may_travel() {
            return Err(ClientError::PlaintextSecret {
                url: self.base.to_string(),
            });
        }
        if let Auth::Bearer(_) | Auth::UploadTicket = endpoint.auth {
            req = req.bearer_auth(self.token.as_deref().ok_or(ClientError::NoToken)?);
        }
        Ok(req)
    }

    /// A bearer or enrolment token crosses the network only inside TLS;
    /// plain `http://` is for a development controller on this machine.
    fn secret_may_travel(&self) -> bool {
        self.base.scheme() == "https"
            || match self.base.host_str() {
                Some("localhost") => true,
                Some(host) => host
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback()),
                None => false,
            }
    }

    /// Send; the body of a success, or a refusal as [`ClientError::Http`].
    async fn send<Q: Serialize + ?Sized>(
        &self,
        endpoint: &Endpoint,
        args: &[&str],
        query: Option<&Q>,
        payload: Payload,
    ) -> Result<Vec<u8>, ClientError> {
        let req = self.request(endpoint, args, query)?;
        let req = match payload {
            Payload::Empty => req,
            Payload::Json(b) => req.header("content-type", "application/json").body(b),
            Payload::Csv(t) => req.header("content-type", "text/csv").body(t),
            Payload::Stream(body, len) => req
                .header("content-type", "application/octet-stream")
                .header("content-length", len)
                .timeout(LONG_TIMEOUT)
                .body(body),
        };
        let url = self.url(endpoint, args).to_string();
        let resp = req.send().await.map_err(|e| ClientError::Connect {
            url: url.clone(),
            source: e.without_url(),
        })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| ClientError::Read {
            url: url.clone(),
            source: e.without_url(),
        })?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        Err(refusal(status.as_u16(), &body))
    }

    async fn call<T: DeserializeOwned, Q: Serialize + ?Sized>(
        &self,
        endpoint: &Endpoint,
        args: &[&str],
        query: Option<&Q>,
        payload: Payload,
    ) -> Result<T, ClientError> {
        let answer = self.send(endpoint, args, query, payload).await?;
        serde_json::from_slice(&answer).map_err(|source| ClientError::Decode {
            what: endpoint.operation_id,
            source,
        })
    }

    /// `GET /healthz` (no token needed).
    pub async fn healthz(&self) -> Result<ControllerHealth, ClientError> {
        self.call(&ep::HEALTHZ, &[], NO_QUERY, Payload::Empty).await
    }

    /// `GET /metrics`: Prometheus text (refused to province-scoped tokens).
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let answer = self
            .send(&ep::METRICS, &[], NO_QUERY, Payload::Empty)
            .await?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }

    /// `GET /api/v1/openapi.json` (no token needed).
    pub async fn openapi(&self) -> Result<utoipa::openapi::OpenApi, ClientError> {
        self.call(&ep::OPENAPI, &[], NO_QUERY, Payload::Empty).await
    }

    pub async fn provinces(&self) -> Result<Vec<ProvinceRow>, ClientError> {
        self.call(&ep::PROVINCES, &[], NO_QUERY, Payload::Empty)
            .await
    }

    pub async fn readiness(&self, q: &ReadinessQuery) -> Result<Vec<ReadinessRow>, ClientError> {
        self.call(&ep::READINESS, &[], Some(q), Payload::Empty)
            .await
    }

    pub async fn devices(&self, q: &DeviceQuery) -> Result<DevicePage, ClientError> {
        self.call(&ep::DEVICES, &[], Some(q), Payload::Empty).await
    }

    pub async fn device(&self, id: &str) -> Result<DeviceDetail, ClientError> {
        self.call(&ep::DEVICE, &[id], NO_QUERY, Payload::Empty)
            .await
    }

    pub async fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, ClientError> {
        self.call(&ep::REGISTER, &[], NO_QUERY, json(req)).await
    }

    /// Ship, deploy or retire a device.
    pub async fn move_device(
        &self,
        id: &str,
        to: Lifecycle,
    ) -> Result<LifecycleMoved, ClientError> {
        self.call(
            &ep::MOVE_DEVICE,
            &[id],
            NO_QUERY,
            json(&LifecycleMove::new(to)),
        )
        .await
    }

    /// Send a device a one-off command.
    pub async fn command(
        &self,
        id: &str,
        req: &CommandRequest,
    ) -> Result<CommandSent, ClientError> {
        self.call(&ep::COMMAND, &[id], NO_QUERY, json(req)).await
    }

    /// Import the registry CSV.
    pub async fn import_registry(&self, csv: String) -> Result<RegistryImported, ClientError> {
        self.call(&ep::IMPORT_REGISTRY, &[], NO_QUERY, Payload::Csv(csv))
            .await
    }

    pub async fn counties(&self, q: &CountyQuery) -> Result<Vec<CountyRow>, ClientError> {
        self.call(&ep::COUNTIES, &[], Some(q), Payload::Empty).await
    }

    pub async fn baselines(&self) -> Result<Baselines, ClientError> {
        self.call(&ep::BASELINES, &[], NO_QUERY, Payload::Empty)
            .await
    }

    pub async fn set_baseline(&self, model: &str, version: &str) -> Result<Baseline, ClientError> {
        let body = BaselineRequest {
            version: version.to_owned(),
        };
        self.call(&ep::SET_BASELINE, &[model], NO_QUERY, json(&body))
            .await
    }

    pub async fn broker(&self) -> Result<BrokerInfo, ClientError> {
        self.call(&ep::BROKER, &[], NO_QUERY, Payload::Empty).await
    }

    /// The central broker and the provincial tier.
    pub async fn brokers(&self) -> Result<BrokerTier, ClientError> {
        self.call(&ep::BROKERS, &[], NO_QUERY, Payload::Empty).await
    }

    pub async fn pki(&self) -> Result<PkiStatus, ClientError> {
        self.call(&ep::PKI, &[], NO_QUERY, Payload::Empty).await
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRow>, ClientError> {
        self.call(&ep::TOKENS, &[], NO_QUERY, Payload::Empty).await
    }

    /// Make a token; the answer is the only time it is shown.
    pub async fn create_token(&self, req: &TokenRequest) -> Result<CreatedToken, ClientError> {
        self.call(&ep::CREATE_TOKEN, &[], NO_QUERY, json(req)).await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<TokenRevoked, ClientError> {
        self.call(&ep::REVOKE_TOKEN, &[id], NO_QUERY, Payload::Empty)
            .await
    }

    pub async fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, ClientError> {
        self.call(&ep::AUDIT, &[], Some(q), Payload::Empty).await
    }

    /// Check the audit chain. A broken chain is an answer, not an error.
    pub async fn audit_verify(&self) -> Result<AuditVerification, ClientError> {
        self.call(&ep::AUDIT_VERIFY, &[], NO_QUERY, Payload::Empty)
            .await
    }

    /// Register a shipment (CSV) and get one enrolment token per device.
    pub async fn enrol_batch(
        &self,
        csv: String,
        q: &EnrolBatchQuery,
    ) -> Result<EnrolBatch, ClientError> {
        self.call(&ep::ENROL_BATCH, &[], Some(q), Payload::Csv(csv))
            .await
    }

    pub async fn shipment(&self, id: &str) -> Result<ShipmentStatus, ClientError> {
        self.call(&ep::SHIPMENT, &[id], NO_QUERY, Payload::Empty)
            .await
    }

    /// A device enrols with its enrolment token (no bearer token needed).
    pub async fn enrol(&self, req: &EnrolRequest) -> Result<EnrolResponse, ClientError> {
        self.call(&ep::ENROL, &[], NO_QUERY, json(req)).await
    }
}

impl Client {
    /// `GET /api/v1/freeze`.
    pub async fn freeze(&self) -> Result<FreezeWindows, ClientError> {
        self.call(&ep::FREEZE, &[], NO_QUERY, Payload::Empty).await
    }

    /// `PUT /api/v1/freeze`: replace every freeze window (empty: clear).
    pub async fn set_freeze(&self, req: &FreezeRequest) -> Result<FreezeWindows, ClientError> {
        self.call(&ep::SET_FREEZE, &[], NO_QUERY, json(req)).await
    }

    /// `POST /api/v1/freeze`: add one window (with its reason).
    pub async fn add_freeze(&self, req: &FreezeAddRequest) -> Result<FreezeWindows, ClientError> {
        self.call(&ep::ADD_FREEZE, &[], NO_QUERY, json(req)).await
    }

    /// `DELETE /api/v1/freeze`: remove every window.
    pub async fn clear_freeze(&self) -> Result<FreezeWindows, ClientError> {
        self.call(&ep::CLEAR_FREEZE, &[], NO_QUERY, Payload::Empty)
            .await
    }

    /// `POST /api/v1/rollouts`.
    pub async fn create_rollout(&self, req: &RolloutRequest) -> Result<RolloutView, ClientError> {
        self.call(&ep::CREATE_ROLLOUT, &[], NO_QUERY, json(req))
            .await
    }

    /// `GET /api/v1/rollouts`.
    pub async fn rollouts(&self) -> Result<Vec<RolloutSummary>, ClientError> {
        self.call(&ep::ROLLOUTS, &[], NO_QUERY, Payload::Empty)
            .await
    }

    /// `GET /api/v1/rollouts/{id}`.
    pub async fn rollout(&self, id: u64) -> Result<RolloutView, ClientError> {
        let id = id.to_string();
        self.call(&ep::ROLLOUT, &[&id], NO_QUERY, Payload::Empty)
            .await
    }

    /// `GET /api/v1/rollouts/{id}/members[?state=…]`.
    pub async fn rollout_members(
        &self,
        id: u64,
        state: Option<MemberState>,
    ) -> Result<Vec<MemberView>, ClientError> {
        let id = id.to_string();
        let q = MembersQuery {
            state: state.map(|s| s.as_str().to_owned()),
        };
        self.call(&ep::ROLLOUT_MEMBERS, &[&id], Some(&q), Payload::Empty)
            .await
    }

    /// `POST /api/v1/rollouts/{id}/{start|pause|resume|abort|retry-failed}`;
    /// `reason` goes with a pause (ignored otherwise).
    pub async fn rollout_action(
        &self,
        id: u64,
        action: RolloutAction,
        reason: Option<&str>,
    ) -> Result<RolloutView, ClientError> {
        let id = id.to_string();
        let payload = match action {
            RolloutAction::Pause => json(&PauseRequest {
                reason: reason.map(str::to_owned),
            }),
            _ => Payload::Empty,
        };
        self.call(ep::rollout_action(action), &[&id], NO_QUERY, payload)
            .await
    }

    /// `POST /api/v1/devices/{id}/update`.
    pub async fn update_device(
        &self,
        id: &str,
        req: &DeviceUpdateRequest,
    ) -> Result<DeviceUpdateSet, ClientError> {
        self.call(&ep::DEVICE_UPDATE, &[id], NO_QUERY, json(req))
            .await
    }

    /// `GET /api/v1/firmware`.
    pub async fn firmware(&self) -> Result<FirmwareStatus, ClientError> {
        self.call(&ep::FIRMWARE_STATUS, &[], NO_QUERY, Payload::Empty)
            .await
    }

    /// `PUT /api/v1/firmware/images/{sha256}`: stream `file` as the body;
    /// `progress(sent, total)` is called as bytes leave.
    pub async fn upload_image(
        &self,
        sha256: &str,
        file: &Path,
        progress: impl Fn(u64, u64) + Send + Sync + Unpin + 'static,
    ) -> Result<ImageUploaded, ClientError> {
        // Ask first: an image already stored is not sent again (a weak
        // link), and a caller who may not upload learns it before sending
        // gigabytes (the refusal would come before the body is read, and a
        // client still writing sees the connection close, not the answer).
        match self.image(sha256).await {
            Ok(stored) => {
                progress(stored.len, stored.len);
                return Ok(stored);
            }
            Err(e) if e.status() == Some(404) => {}
            Err(e) => return Err(e),
        }
        let read = |source| ClientError::FileRead {
            path: file.to_owned(),
            source,
        };
        let f = tokio::fs::File::open(file).await.map_err(read)?;
        let len = f.metadata().await.map_err(read)?.len();
        let body = reqwest::Body::wrap(upload::FileBody::new(f, len, progress));
        self.call(
            &ep::UPLOAD_IMAGE,
            &[sha256],
            NO_QUERY,
            Payload::Stream(body, len),
        )
        .await
    }

    /// `GET /api/v1/firmware/images/{sha256}`: the stored image (404: none).
    pub async fn image(&self, sha256: &str) -> Result<ImageUploaded, ClientError> {
        self.call(&ep::IMAGE, &[sha256], NO_QUERY, Payload::Empty)
            .await
    }

    /// `POST /api/v1/firmware/targets`: a signed targets.json, as is.
    pub async fn publish_targets(&self, signed: Vec<u8>) -> Result<TargetsPublished, ClientError> {
        self.call(&ep::PUBLISH_TARGETS, &[], NO_QUERY, Payload::Json(signed))
            .await
    }

    /// `POST /api/v1/firmware/root`: a signed N.root.json, as is.
    pub async fn publish_root(&self, signed: Vec<u8>) -> Result<RootPublished, ClientError> {
        self.call(&ep::PUBLISH_ROOT, &[], NO_QUERY, Payload::Json(signed))
            .await
    }

    /// `GET /api/v1/tuf/metadata/{file}` (public): the bytes as served.
    pub async fn tuf_metadata(&self, file: &str) -> Result<Vec<u8>, ClientError> {
        self.send(&ep::TUF_METADATA, &[file], NO_QUERY, Payload::Empty)
            .await
    }

    /// `GET /api/v1/tuf/targets/{*path}` (public), written to `dest` as it
    /// arrives; `progress(bytes)` after each chunk. Returns the length.
    pub async fn tuf_target_to_file(
        &self,
        path: &str,
        dest: &Path,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, ClientError> {
        self.download(&ep::TUF_TARGET, &[path], dest, progress)
            .await
    }

    /// `GET /api/v1/tuf/delta/{from}/{to}` (public), written to `dest`.
    pub async fn tuf_delta_to_file(
        &self,
        from: &str,
        to: &str,
        dest: &Path,
    ) -> Result<u64, ClientError> {
        self.download(&ep::TUF_DELTA, &[from, to], dest, &mut |_| {})
            .await
    }

    async fn download(
        &self,
        endpoint: &Endpoint,
        args: &[&str],
        dest: &Path,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, ClientError> {
        use tokio::io::AsyncWriteExt;
        let url = self.url(endpoint, args).to_string();
        let mut resp = self
            .request(endpoint, args, NO_QUERY)?
            .timeout(LONG_TIMEOUT)
            .send()
            .await
            .map_err(|e| ClientError::Connect {
                url: url.clone(),
                source: e.without_url(),
            })?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(refusal(status.as_u16(), &body));
        }
        let write = |source| ClientError::FileWrite {
            path: dest.to_owned(),
            source,
        };
        let mut out = tokio::fs::File::create(dest).await.map_err(write)?;
        let mut len = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| ClientError::Read {
            url: url.clone(),
            source: e.without_url(),
        })? {
            out.write_all(&chunk).await.map_err(write)?;
            len += chunk.len() as u64;
            progress(len);
        }
        out.sync_all().await.map_err(write)?;
        Ok(len)
    }
}

/// How long a transfer of a whole image may take.
pub const LONG_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// "No query string", typed for the generic helpers.
const NO_QUERY: Option<&()> = None;

/// A refusal from its status and body: the controller's [`ErrorBody`], or
/// else (a proxy, or the framework refusing a body it could not read) the
/// start of the body's text, the best explanation there is.
fn refusal(status: u16, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => ClientError::Http {
            status,
            message: e.error,
            errors: e.errors.unwrap_or_default(),
        },
        Err(_) => {
            let text: String = String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(200)
                .collect();
            ClientError::Http {
                status,
                message: if text.is_empty() {
                    "request failed".to_owned()
                } else {
                    text
                },
                errors: Vec::new(),
            }
        }
    }
}

/// Trust `ca_pem` only (nothing at all without it: plain HTTP).
fn tls_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = ca_pem {
        let invalid = |reason: String| ClientError::CaInvalid { reason };
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("not PEM: {e}")))?;
        if certs.is_empty() {
            return Err(invalid("no certificate in it".into()));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| invalid(format!("not a CA certificate: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests;
