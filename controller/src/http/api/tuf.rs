//! The repository for devices (`/api/v1/tuf/…`, no token): metadata,
//! target files with Range and If-Range, and bidiff patches between two
//! stored images. Devices trust none of it until they verified it against
//! the root installed with them.
//!
//! A target path has several segments (`SHA256.firmware/MODEL/VERSION.tar`):
//! each one must be a plain file name (`artifacts::check_name`: no `..`,
//! no leading dot, no separator), so a path can never leave
//! `DATA/firmware/repo/targets`.

use axum::extract::{Path, Request, State};
use axum::response::Response;

use crate::firmware::{self, FirmwareError};
use crate::http::api::artifacts::{check_name, serve};
use crate::http::{ApiError, AppState};

/// At most this many segments in a target path (`agent/PLATFORM/VERSION`
/// has three).
pub const MAX_TARGET_DEPTH: usize = 8;

pub async fn metadata(
    State(st): State<AppState>,
    Path(file): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    if !st.firmware.paths.initialised() {
        return Err(FirmwareError::NotSetUp.into());
    }
    serve(&st.firmware.paths.metadata(), &file, req).await
}

/// Split a target path into its directories and its file name, each
/// checked to be a plain name.
pub fn split_target_path(path: &str) -> Result<(Vec<&str>, &str), ApiError> {
    let bad = |reason: String| ApiError::BadField {
        field: "path",
        reason,
    };
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() > MAX_TARGET_DEPTH {
        return Err(bad(format!("at most {MAX_TARGET_DEPTH} segments")));
    }
    for s in &segments {
        check_name(s).map_err(|why| bad(format!("segment {s:?}: {why}")))?;
    }
    let (file, dirs) = segments
        .split_last()
        .expect("split always yields at least one segment");
    Ok((dirs.to_vec(), file))
}

pub async fn target(
    State(st): State<AppState>,
    Path(path): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (dirs, file) = split_target_path(&path)?;
    let mut dir = st.firmware.paths.targets();
    for d in dirs {
        dir.push(d);
    }
    serve(&dir, file, req).await
}

pub async fn delta(
    State(st): State<AppState>,
    Path((from, to)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let (dir, name) = st
        .firmware
        .blocking(move |fw| firmware::delta(fw, &from, &to))
        .await?;
    serve(&dir, &name, req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_paths_are_plain_segments_that_cannot_leave_the_directory() {
        let sha = "a".repeat(64);
        let good = format!("{sha}.firmware/ballot-box-v2/2.5.0.tar");
        let (dirs, file) = split_target_path(&good).unwrap();
        assert_eq!(dirs, [format!("{sha}.firmware").as_str(), "ballot-box-v2"]);
        assert_eq!(file, "2.5.0.tar");
        for bad in [
            "../fleet.db",
            "firmware/../../fleet.db",
            "firmware/./x",
            "firmware//x",
            "/etc/passwd",
            "firmware/.hidden",
            "firmware/x\\y",
            "",
            "a/b/c/d/e/f/g/h/i",
        ] {
            assert!(split_target_path(bad).is_err(), "{bad:?} accepted");
        }
    }
}
