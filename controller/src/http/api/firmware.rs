//! The firmware repository for operators (`/api/v1/firmware…`): store an
//! image, publish targets metadata or a root the release team signed, and
//! look at what is published. Every change is audited before it is made.

use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::{Extension, Json};
use fleet_api::types::{
    FirmwareStatus, FirmwareTarget, ImageUploaded, RoleStatus, RootPublished, TargetsPublished,
};
use http_body_util::BodyExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::access::Caller;
use crate::firmware::{check_sha256, FirmwareError};
use crate::http::{audited, ApiError, AppState};

pub async fn status(State(st): State<AppState>) -> Result<Json<FirmwareStatus>, ApiError> {
    let (status, targets) = st
        .firmware
        .blocking(|fw| {
            let repo = fw.repo()?;
            Ok((repo.status()?, repo.targets()?))
        })
        .await?;
    let role = |name: &str, r: &fleet_repo::publish::RoleStatus| RoleStatus {
        role: name.to_owned(),
        version: r.version,
        expires: r.expires.clone(),
    };
    Ok(Json(FirmwareStatus {
        roles: vec![
            role("root", &status.root),
            role("targets", &status.targets),
            role("snapshot", &status.snapshot),
            role("timestamp", &status.timestamp),
        ],
        targets: targets
            .into_iter()
            .map(|t| FirmwareTarget {
                name: t.name,
                artifact: t.custom.artifact.as_str().to_owned(),
                model: t.custom.model.to_string(),
                version: t.custom.version.to_string(),
                sha256: t.sha256,
                len: t.len,
            })
            .collect(),
    }))
}

/// Stream the body to a file under `uploads/`, hashing as it comes and
/// stopping at `limit` bytes. Returns the file, its sha256 and length.
async fn receive(
    body: Body,
    dir: &std::path::Path,
    limit: u64,
) -> Result<(std::path::PathBuf, String, u64), FirmwareError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(FirmwareError::io(dir))?;
    let mut random = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
    let path = dir.join(format!("upload-{}", hex::encode(random)));
    let result = async {
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(FirmwareError::io(&path))?;
        let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut len = 0u64;
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| FirmwareError::Cut {
                bytes: len,
                reason: e.to_string(),
            })?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            let data: Bytes = data;
            len += data.len() as u64;
            if len > limit {
                return Err(FirmwareError::TooLarge { limit });
            }
            hash.update(&data);
            file.write_all(&data)
                .await
                .map_err(FirmwareError::io(&path))?;
        }
        file.sync_all().await.map_err(FirmwareError::io(&path))?;
        Ok((hex::encode(hash.finish().as_ref()), len))
    }
    .await;
    match result {
        Ok((sha, len)) => Ok((path, sha, len)),
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            Err(e)
        }
    }
}

pub async fn upload_image(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(sha256): Path<String>,
    body: Body,
) -> Result<Json<ImageUploaded>, ApiError> {
    check_sha256(&sha256)?;
    // Fail before reading gigabytes when there is no repository.
    st.firmware.blocking(|fw| fw.repo().map(|_| ())).await?;
    let detail = json!({ "sha256": sha256 });
    let fw = st.firmware.clone();
    let uploaded = audited(&st, &caller, "firmware.image", &sha256, detail, async {
        let (file, actual, len) = receive(body, &fw.paths.uploads(), fw.max_image_bytes).await?;
        if actual != sha256 {
            let _ = tokio::fs::remove_file(&file).await;
            return Err(FirmwareError::HashMismatch {
                expected: sha256.clone(),
                actual,
            }
            .into());
        }
        let stage = {
            let sha256 = sha256.clone();
            let file = file.clone();
            // Hashed above while it streamed in: not read a second time.
            fw.blocking(move |fw| Ok(fw.repo()?.stage_hashed_image(&sha256, &file)?))
                .await
        };
        let _ = tokio::fs::remove_file(&file).await;
        stage?;
        Ok(ImageUploaded {
            sha256: sha256.clone(),
            len,
            already_stored: false,
        })
    })
    .await?;
    metrics::counter!("fleet_firmware_images_uploaded_total").increment(1);
    Ok(Json(uploaded))
}

pub async fn image(
    State(st): State<AppState>,
    Path(sha256): Path<String>,
) -> Result<Json<ImageUploaded>, ApiError> {
    check_sha256(&sha256)?;
    let len = {
        let sha256 = sha256.clone();
        st.firmware
            .blocking(move |fw| {
                let path = fw
                    .repo()?
                    .image_path(&sha256)
                    .ok_or_else(|| FirmwareError::UnknownImage(sha256.clone()))?;
                Ok(std::fs::metadata(&path)
                    .map_err(FirmwareError::io(&path))?
                    .len())
            })
            .await?
    };
    Ok(Json(ImageUploaded {
        sha256,
        len,
        already_stored: true,
    }))
}

pub async fn publish_targets(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<TargetsPublished>, ApiError> {
    let offered = version_of(&body);
    let detail = json!({ "offered_version": offered, "bytes": body.len() });
    let published = audited(&st, &caller, "firmware.targets", "targets", detail, async {
        Ok(st
            .firmware
            .blocking(move |fw| Ok(fw.repo()?.publish_targets(&body, SystemTime::now())?))
            .await?)
    })
    .await?;
    Ok(Json(TargetsPublished {
        targets_version: published.targets_version,
        snapshot_version: published.snapshot_version,
        timestamp_version: published.timestamp_version,
        added: published.added,
    }))
}

pub async fn publish_root(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<RootPublished>, ApiError> {
    let offered = version_of(&body);
    let detail = json!({ "offered_version": offered, "bytes": body.len() });
    let published = audited(&st, &caller, "firmware.root", "root", detail, async {
        Ok(st
            .firmware
            .blocking(move |fw| Ok(fw.repo()?.publish_root(&body, SystemTime::now())?))
            .await?)
    })
    .await?;
    Ok(Json(RootPublished {
        root_version: published.root_version,
        timestamp_version: published.timestamp_version,
    }))
}

/// The `signed.version` a metadata body claims, for the audit entry (the
/// repository checks it; this only records what was offered).
fn version_of(body: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("signed")?
        .get("version")?
        .as_u64()
}
