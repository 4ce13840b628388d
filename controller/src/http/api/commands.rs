//! Operators' one-off commands to a device: checked (action, expiry,
//! scope, lifecycle), audited, then published on the device's `cmd` topic
//! through the ingest's client. The result arrives as the device's
//! `command-result` event.

use std::sync::atomic::Ordering;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use fleet_api::types::{CommandRequest, CommandSent};
use fleet_protocol::DeviceId;
use rand::RngCore;
use serde_json::json;

use crate::access::Caller;
use crate::clock::unix_ms;
use crate::domain::commands;
use crate::http::{audited, parse, ApiError, AppState};

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
    if !st.ingest_connected.load(Ordering::Relaxed) {
        // Queued now, it could be dropped if the broker comes back without
        // the controller's session: say so rather than pretend.
        return Err(ApiError::BrokerUnavailable);
    }
    let mut random = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let command = commands::command(random, action, expires_at_ms);
    let name = commands::action_name(action);
    let detail = json!({ "id": command.id, "action": name, "expires_at_ms": expires_at_ms });
    audited(
        &st,
        &caller,
        "device.command",
        device.as_str(),
        detail,
        async {
            st.publisher
                .command(&device, &command, now)
                .await
                .map_err(ApiError::from)
        },
    )
    .await?;
    metrics::counter!("fleet_commands_sent_total", "action" => name).increment(1);
    Ok(Json(CommandSent {
        id: command.id,
        device,
        action: name.to_owned(),
        expires_at_ms,
    }))
}
