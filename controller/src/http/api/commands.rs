//! Operators' one-off commands to devices: checked (action, expiry, scope,
//! lifecycle), audited, stored, then published on each device's `cmd`
//! topic through the ingest's client. The result arrives as the device's
//! `command-result` event, which the store writer records on the command.
//! An upload-logs command carries a one-use token; the device sends its
//! logs with it to [`upload_logs`], and operators read them with
//! [`device_logs`].

use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use fleet_api::types::{
    CommandRequest, CommandSent, CommandSkipped, CommandsRequest, CommandsSent, LogsUploaded,
};
use fleet_protocol::{Action, Command, DeviceId};
use http_body_util::BodyExt;
use rand::RngCore;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tracing::warn;

use crate::access::Caller;
use crate::clock::unix_ms;
use crate::domain::commands::{self, CommandState, OutOfScope, Selector, UploadRefused};
use crate::http::{audited, parse, ApiError, AppState};
use crate::store::CommandRow;

/// `POST /api/v1/devices/{id}/commands`.
pub async fn send_command(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(req): Json<CommandRequest>,
) -> Result<Json<CommandSent>, ApiError> {
    let device: DeviceId = parse("device id", &id)?;
    let action = commands::parse_action(&req.action)?;
    let now = unix_ms();
    let expires_at_ms = commands::expires_at(now, req.expires_in_s)?;
    let lifecycle = st
        .fleet()
        .get(&device)
        // Another province's device looks exactly like one that does not exist.
        .filter(|d| caller.principal.sees(d.reg.province))
        .map(|d| d.reg.lifecycle)
        .ok_or_else(|| ApiError::UnknownDevice(device.clone()))?;
    commands::check_target(&device, lifecycle)?;
    check_broker(&st)?;
    let (command, row) = make(&caller, &device, action, now, expires_at_ms);
    let name = commands::action_name(action);
    let detail = json!({ "id": command.id, "action": name, "expires_at_ms": expires_at_ms });
    audited(
        &st,
        &caller,
        "device.command",
        device.as_str(),
        detail,
        async {
            st.store.insert_commands(std::slice::from_ref(&row)).await?;
            publish(&st, &device, &command, now).await
        },
    )
    .await?;
    metrics::counter!("fleet_commands_sent_total", "action" => name).increment(1);
    Ok(Json(sent(&device, &command)))
}

/// `POST /api/v1/commands`: one command per device the selector names in
/// the caller's scope.
pub async fn send_commands(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<CommandsRequest>,
) -> Result<Json<CommandsSent>, ApiError> {
    let action = commands::parse_action(&req.action)?;
    let now = unix_ms();
    let expires_at_ms = commands::expires_at(now, req.expires_in_s)?;
    let s = req.selector;
    commands::check_selector_len("provinces", s.provinces.len())?;
    commands::check_selector_len("counties", s.counties.len())?;
    commands::check_selector_len("devices", s.devices.len())?;
    let selector = Selector {
        provinces: s.provinces,
        counties: s.counties,
        model: s.model,
        readiness: s.readiness,
        devices: s.devices.into_iter().collect(),
    };
    selector.check()?;
    if let Some(OutOfScope::Province(p)) = selector.out_of_scope(&caller.principal) {
        return Err(ApiError::UnknownProvince(p));
    }
    let (targets, mut skipped) = {
        let fleet = st.fleet();
        // A named device the caller cannot see is refused like an unknown one.
        for d in &selector.devices {
            if !fleet
                .get(d)
                .is_some_and(|dev| caller.principal.sees(dev.reg.province))
            {
                return Err(ApiError::UnknownDevice(d.clone()));
            }
        }
        let filter = crate::domain::fleet::DeviceFilter::default();
        // Named devices are looked up one by one (all exist, checked
        // above); otherwise the fleet is walked once.
        let candidates: Box<dyn Iterator<Item = &crate::domain::fleet::Device>> =
            if selector.devices.is_empty() {
                Box::new(fleet.devices(&filter))
            } else {
                Box::new(selector.devices.iter().filter_map(|d| fleet.get(d)))
            };
        let mut targets = Vec::new();
        let mut skipped = Vec::new();
        for d in candidates.filter(|d| selector.selects(d, &caller.principal)) {
            match commands::check_target(&d.reg.id, d.reg.lifecycle) {
                Ok(()) => targets.push(d.reg.id.clone()),
                Err(e) => skipped.push(CommandSkipped {
                    device: d.reg.id.clone(),
                    reason: e.to_string(),
                }),
            }
        }
        targets.sort();
        skipped.sort_by(|a, b| a.device.cmp(&b.device));
        (targets, skipped)
    };
    check_broker(&st)?;
    let made: Vec<(Command, CommandRow)> = targets
        .iter()
        .map(|d| make(&caller, d, action, now, expires_at_ms))
        .collect();
    let name = commands::action_name(action);
    let mut named: Vec<String> = selector.devices.iter().map(ToString::to_string).collect();
    named.sort();
    let detail = json!({
        "action": name,
        "expires_at_ms": expires_at_ms,
        "selector": {
            "provinces": selector.provinces.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "counties": selector.counties.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "model": selector.model.as_ref().map(ToString::to_string),
            "readiness": selector.readiness,
            "devices": named,
        },
        "commands": made.iter().map(|(c, r)| json!({ "id": c.id, "device": r.device.as_str() })).collect::<Vec<_>>(),
    });
    let rows: Vec<CommandRow> = made.iter().map(|(_, r)| r.clone()).collect();
    let sent_list = audited(&st, &caller, "commands.send", name, detail, async {
        st.store.insert_commands(&rows).await?;
        let mut sent_list = Vec::new();
        for (command, row) in &made {
            match publish(&st, &row.device, command, now).await {
                Ok(()) => sent_list.push(sent(&row.device, command)),
                Err(e) => skipped.push(CommandSkipped {
                    device: row.device.clone(),
                    reason: e.to_string(),
                }),
            }
        }
        Ok(sent_list)
    })
    .await?;
    metrics::counter!("fleet_commands_sent_total", "action" => name)
        .increment(sent_list.len() as u64);
    Ok(Json(CommandsSent {
        sent: sent_list,
        skipped,
    }))
}

fn check_broker(st: &AppState) -> Result<(), ApiError> {
    if st.ingest_connected.load(Ordering::Relaxed) {
        Ok(())
    } else {
        // Queued now, it could be dropped if the broker comes back without
        // the controller's session: say so rather than pretend.
        Err(ApiError::BrokerUnavailable)
    }
}

/// A new command for `device` and the row that records it (state `sent`;
/// of an upload token, only its SHA-256).
fn make(
    caller: &Caller,
    device: &DeviceId,
    action: Action,
    now: u64,
    expires_at_ms: u64,
) -> (Command, CommandRow) {
    let mut random = [0u8; 8];
    let mut token = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut random);
    rand::rngs::OsRng.fill_bytes(&mut token);
    let command = commands::command(random, token, device, action, expires_at_ms);
    let row = CommandRow {
        id: command.id.clone(),
        device: device.clone(),
        action,
        issued_ms: now,
        expires_ms: expires_at_ms,
        issued_by: caller.principal.actor(),
        state: CommandState::Sent,
        result_ms: None,
        message: String::new(),
        upload_token_sha256: command
            .upload
            .as_ref()
            .map(|t| commands::token_sha256(&t.token)),
        upload_bytes: None,
    };
    (command, row)
}

/// Publish a stored command; one that cannot be published is failed in the
/// store with why.
async fn publish(
    st: &AppState,
    device: &DeviceId,
    command: &Command,
    now: u64,
) -> Result<(), ApiError> {
    // The way the device was last heard decides its route (else its
    // province's). Devices are never removed from the fleet.
    let to = st
        .fleet()
        .get(device)
        .map(crate::domain::fleet::Device::reach)
        .ok_or_else(|| ApiError::UnknownDevice(device.clone()))?;
    if let Err(e) = st.publisher.command(device, &to, command, now).await {
        let why = format!("not published: {e}");
        if let Err(store) = st.store.fail_command(&command.id, now, &why).await {
            warn!(command = %command.id, error = %store, "cannot record the failed publication");
        }
        return Err(e.into());
    }
    Ok(())
}

fn sent(device: &DeviceId, command: &Command) -> CommandSent {
    CommandSent {
        id: command.id.clone(),
        device: device.clone(),
        action: commands::action_name(command.action).to_owned(),
        expires_at_ms: command.expires_at_ms,
    }
}

/// Where a command's uploaded logs are kept: `DATA/logs/DEVICE/COMMAND.log`
/// (the device id and the command id are checked names, no path separators).
fn log_file(data_dir: &std::path::Path, device: &DeviceId, command: &str) -> std::path::PathBuf {
    data_dir
        .join("logs")
        .join(device.as_str())
        .join(format!("{command}.log"))
}

fn parse_command_id(id: &str) -> Result<(), ApiError> {
    if commands::is_command_id(id) {
        Ok(())
    } else {
        Err(ApiError::BadField {
            field: "command",
            reason: "a command id is cmd- and 16 hex digits".into(),
        })
    }
}

/// `PUT /api/v1/devices/{id}/logs/{command}`: the device's logs, taken
/// with the command's one-use token, bounded, stored atomically, audited.
/// Any bearer reaches this route, so the token is first checked read-only;
/// only a matching one writes anything. An address with too many refused
/// uploads waits with 429, as for enrolment.
pub async fn upload_logs(
    State(st): State<AppState>,
    connect: Option<Extension<ConnectInfo<crate::http::tls::Peer>>>,
    Path((id, command)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<LogsUploaded>, ApiError> {
    let source = connect.map_or_else(|| "unknown".to_owned(), |c| c.0 .0 .0.ip().to_string());
    let now = unix_ms();
    if let Some(wait_ms) = st.access.upload_wait_ms(&source, now) {
        metrics::counter!("fleet_log_uploads_throttled_total").increment(1);
        return Err(ApiError::TooManyRequests {
            what: "refused log uploads",
            retry_after_secs: wait_ms.div_ceil(1000),
        });
    }
    let taken = take_logs(&st, &source, now, &id, &command, &headers, body).await;
    if taken.as_ref().is_err_and(|e| e.status().is_client_error()) {
        st.access.upload_refused(&source, now);
    }
    taken
}

async fn take_logs(
    st: &AppState,
    source: &str,
    now: u64,
    id: &str,
    command: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Json<LogsUploaded>, ApiError> {
    let device: DeviceId = parse("device id", id)?;
    parse_command_id(command)?;
    let token = crate::http::auth::bearer(headers)?;
    let limit = st.max_log_bytes;
    // A declared length above the limit is refused before a byte is read.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(size) = declared.filter(|n| *n > limit) {
        return Err(UploadRefused::TooLarge { size, limit }.into());
    }
    let actor = format!("device {device} (upload token of {command})");
    let refuse = |e: ApiError| async {
        st.access
            .failed_as(
                &actor,
                "device",
                source,
                "device.logs",
                device.as_str(),
                &e.to_string(),
            )
            .await;
        e
    };
    // Read-only: a command that does not exist is refused without a write
    // (nor an audit entry: there is nothing to record it against).
    let held = st.store.upload_held(&device, command).await?;
    match commands::check_upload(&device, command, held.as_ref(), token, now) {
        Ok(()) => {}
        Err(e @ UploadRefused::NoSuchCommand { .. }) => {
            warn!(%device, command, source, "log upload for no such command refused");
            return Err(e.into());
        }
        Err(e) => return Err(refuse(e.into()).await),
    }
    // The token is spent only once the whole body is on disk, so an upload
    // cut short can be sent again with the same token.
    let path = log_file(&st.data_dir, &device, command);
    let dir = path
        .parent()
        .expect("a log file is inside its device's directory");
    let (part, bytes) = match receive(body, dir, &path, limit).await {
        Ok(got) => got,
        Err(e) => return Err(refuse(e).await),
    };
    let spent = match st
        .store
        .spend_upload_token(&device, command, token, unix_ms())
        .await
    {
        Ok(spent) => spent,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e.into());
        }
    };
    if let Err(e) = spent {
        // Another request with the same token won the race, or it expired
        // while the body came.
        let _ = tokio::fs::remove_file(&part).await;
        return Err(refuse(e.into()).await);
    }
    place(&part, dir, &path).await?;
    // Recorded before the audit entry: an audit failure must not lose
    // the fact that the logs are here.
    st.store.set_upload_bytes(command, bytes).await?;
    st.access
        .record_as(
            &actor,
            "device",
            source,
            "device.logs",
            device.as_str(),
            json!({ "command": command, "bytes": bytes }),
        )
        .await?;
    metrics::counter!("fleet_log_uploads_total").increment(1);
    metrics::counter!("fleet_log_upload_bytes_total").increment(bytes);
    Ok(Json(LogsUploaded {
        device,
        command: command.to_owned(),
        bytes,
    }))
}

/// Stream `body` into a file of its own beside `path` (racing uploads never
/// share one), at most `limit` bytes, synced; returns it and its length.
/// Nothing is left behind on failure.
async fn receive(
    body: Body,
    dir: &std::path::Path,
    path: &std::path::Path,
    limit: u64,
) -> Result<(std::path::PathBuf, u64), ApiError> {
    let write = |source| ApiError::LogWrite {
        path: path.to_owned(),
        source,
    };
    tokio::fs::create_dir_all(dir).await.map_err(write)?;
    let mut unique = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut unique);
    let part = path.with_extension(format!("log.{}.part", hex::encode(unique)));
    let result = async {
        let mut file = tokio::fs::File::create_new(&part).await.map_err(write)?;
        let mut len = 0u64;
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ApiError::BadField {
                field: "body",
                reason: format!("cut after {len} bytes: {e}"),
            })?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            let data: Bytes = data;
            len += data.len() as u64;
            if len > limit {
                return Err(UploadRefused::TooLarge { size: len, limit }.into());
            }
            file.write_all(&data).await.map_err(write)?;
        }
        file.sync_all().await.map_err(write)?;
        Ok(len)
    }
    .await;
    match result {
        Ok(len) => Ok((part, len)),
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            Err(e)
        }
    }
}

/// Rename a received upload into place: a reader sees the whole upload or
/// none.
async fn place(
    part: &std::path::Path,
    dir: &std::path::Path,
    path: &std::path::Path,
) -> Result<(), ApiError> {
    if let Err(source) = tokio::fs::rename(part, path).await {
        let _ = tokio::fs::remove_file(part).await;
        return Err(ApiError::LogWrite {
            path: path.to_owned(),
            source,
        });
    }
    if let Ok(d) = tokio::fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
    Ok(())
}

/// `GET /api/v1/devices/{id}/logs/{command}`.
pub async fn device_logs(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, command)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let device: DeviceId = parse("device id", &id)?;
    parse_command_id(&command)?;
    st.fleet()
        .get(&device)
        // Another province's device looks exactly like one that does not exist.
        .filter(|d| caller.principal.sees(d.reg.province))
        .ok_or_else(|| ApiError::UnknownDevice(device.clone()))?;
    let path = log_file(&st.data_dir, &device, &command);
    let bytes = match tokio::fs::read(&path).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::NoLogs { device, command })
        }
        Err(source) => return Err(ApiError::LogWrite { path, source }),
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        bytes,
    )
        .into_response())
}
