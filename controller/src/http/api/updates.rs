//! `POST /api/v1/devices/{id}/update`: tell one device which firmware or
//! agent version to run. The controller finds the signed target of that
//! version for the device's model (the agent: for the platform) and sets it
//! in the device's desired state; the device looks the target up in the
//! metadata it verifies itself, so the controller can point at a target
//! but never make one.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use fleet_api::types::{DeviceUpdateRequest, DeviceUpdateSet};
use fleet_protocol::firmware::{agent_platform, target_name};
use fleet_protocol::{ArtifactKind, DeviceId, Model, TargetFirmware, Version};
use serde_json::json;

use crate::access::Caller;
use crate::clock::unix_ms;
use crate::domain::commands;
use crate::http::{audited, parse, ApiError, AppState};

fn artifact_of(s: &str) -> Result<ArtifactKind, ApiError> {
    ArtifactKind::parse(s).ok_or_else(|| ApiError::Invalid {
        message: format!("artifact: {s:?} is neither firmware nor agent"),
        errors: Vec::new(),
    })
}

/// Refuse a target name the firmware repository does not publish (404).
pub(super) async fn ensure_published(st: &AppState, name: &str) -> Result<(), ApiError> {
    let known = {
        let name = name.to_owned();
        st.firmware
            .blocking(move |fw| Ok(fw.repo()?.targets()?.into_iter().any(|t| t.name == name)))
            .await?
    };
    if known {
        Ok(())
    } else {
        Err(ApiError::UnknownTarget(name.to_owned()))
    }
}

pub async fn update_device(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Json(req): Json<DeviceUpdateRequest>,
) -> Result<Json<DeviceUpdateSet>, ApiError> {
    let device: DeviceId = parse("device id", &id)?;
    let artifact = artifact_of(&req.artifact)?;
    let version: Version = parse("version", &req.version)?;
    let (model, lifecycle) = st
        .fleet()
        .get(&device)
        // Another province's device looks exactly like one that does not exist.
        .filter(|d| caller.principal.sees(d.reg.province))
        .map(|d| (d.reg.model.clone(), d.reg.lifecycle))
        .ok_or_else(|| ApiError::UnknownDevice(device.clone()))?;
    commands::check_target(&device, lifecycle)?;
    let model: Model = match artifact {
        ArtifactKind::Firmware => model,
        ArtifactKind::Agent => match req.platform.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => parse("platform", p)?,
            None => agent_platform(),
        },
    };
    let name = target_name(artifact, &model, &version);
    ensure_published(&st, &name).await?;
    let attempt = req.attempt.unwrap_or(0);
    let target = TargetFirmware {
        version: version.clone(),
        manifest: name.clone(),
        attempt,
    };
    let detail = json!({ "artifact": artifact.as_str(), "version": version, "target": name, "attempt": attempt });
    let now = unix_ms();
    audited(
        &st,
        &caller,
        "device.update",
        device.as_str(),
        detail,
        async {
            // Only this artifact's field changes, read and written under
            // the lock of desired changes (a rollout may set the other).
            crate::ingest::update_desired(
                &st.store,
                &st.fleet,
                &st.publisher,
                &device,
                |d| match artifact {
                    ArtifactKind::Firmware => d.firmware = Some(target),
                    ArtifactKind::Agent => d.agent = Some(target),
                },
                now,
            )
            .await
            .map(|_| ())
            .map_err(ApiError::from)
        },
    )
    .await?;
    metrics::counter!("fleet_device_updates_set_total", "artifact" => artifact.as_str())
        .increment(1);
    Ok(Json(DeviceUpdateSet {
        device,
        artifact: artifact.as_str().to_owned(),
        version: version.to_string(),
        target: name,
    }))
}
