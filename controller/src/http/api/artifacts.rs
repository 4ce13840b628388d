//! Artifacts for devices (`GET /api/v1/artifacts/{name}`): files under
//! `DATA/artifacts/`, served over the API's HTTPS with `Range` (one range;
//! several answer 416) so that a device on a link that keeps dropping
//! resumes where it stopped instead of starting again.
//!
//! - Names are `[A-Za-z0-9._-]{1,128}`, not starting with a dot: one plain
//!   file in that directory, never a path. Nothing lists the directory.
//! - Every answer carries a strong `ETag` (the file's length, modification
//!   time and inode). A `Range` with an `If-Range` that is not the current
//!   ETag is ignored and the whole file is sent (200), so a resumed download
//!   never stitches two versions together. (An HTTP date in `If-Range` is
//!   never taken as a match: a one-second date cannot tell two writes apart.)
//! - No token: a device has no API token, and what it fetches here is
//!   signed content it verifies itself (hash and length now, TUF metadata
//!   with the firmware work) before it uses a byte of it.
//!
//! Range, `Content-Range`, `Last-Modified` and `HEAD` come from
//! tower-http's `ServeFile`.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::http::{ApiError, AppState};

/// The directory under the data directory that holds the artifacts.
pub const ARTIFACTS_DIR: &str = "artifacts";
/// The longest artifact name.
pub const MAX_NAME_LEN: usize = 128;

/// `DATA/artifacts`.
pub fn artifacts_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(ARTIFACTS_DIR)
}

/// Why a name is not an artifact's.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err("1 to 128 characters");
    }
    if name.starts_with('.') {
        return Err("may not start with a dot");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("only letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

pub async fn artifact(
    State(st): State<AppState>,
    UrlPath(name): UrlPath<String>,
    req: Request,
) -> Result<Response, ApiError> {
    serve(&artifacts_dir(&st.data_dir), &name, req).await
}

/// Serve `dir/name` for `req` (the handler without the state).
pub async fn serve(dir: &Path, name: &str, mut req: Request) -> Result<Response, ApiError> {
    check_name(name).map_err(|reason| ApiError::BadField {
        field: "name",
        reason: reason.to_owned(),
    })?;
    let path = dir.join(name);
    let meta = match tokio::fs::metadata(&path).await {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Err(ApiError::UnknownArtifact(name.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::UnknownArtifact(name.to_owned()))
        }
        Err(source) => return Err(ApiError::ArtifactRead { path, source }),
    };
    let etag = etag(&meta);
    let if_range_fails = req
        .headers()
        .get(header::IF_RANGE)
        .is_some_and(|v| v.as_bytes() != etag.as_bytes());
    if if_range_fails {
        req.headers_mut().remove(header::RANGE);
    }
    let mut response = match ServeFile::new(&path).oneshot(req).await {
        Ok(r) => r.map(Body::new),
        Err(never) => match never {},
    };
    if response.status().is_server_error() {
        // ServeFile answers an unreadable file with a bare 500; say why here.
        return Err(ApiError::ArtifactRead {
            path,
            source: std::io::Error::other("the file could not be opened or read"),
        });
    }
    if response.status() == axum::http::StatusCode::NOT_FOUND {
        // Removed between the look and the open.
        return Err(ApiError::UnknownArtifact(name.to_owned()));
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    Ok(response)
}

/// A strong validator: the same length, modification time (to the
/// nanosecond) and inode mean the same file.
fn etag(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "\"{:x}-{:x}.{:x}-{:x}\"",
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use http_body_util::BodyExt;

    fn get(name: &str, headers: &[(header::HeaderName, &str)]) -> Request {
        let mut b = axum::http::Request::builder().uri(format!("/api/v1/artifacts/{name}"));
        for (k, v) in headers {
            b = b.header(k, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    async fn body(r: Response) -> Vec<u8> {
        fleet_tests::within(10, "reading a body", r.into_body().collect())
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    fn dir_with(name: &str, content: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(name), content).unwrap();
        dir
    }

    #[test]
    fn names_are_plain_file_names() {
        for good in ["image-2.4.1.raucb", "a", "A_b.c-d", &"x".repeat(128)] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "../fleet.db",
            "a/b",
            "a\\b",
            "%2e%2e",
            "a b",
            "é",
            &"x".repeat(129),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[tokio::test]
    async fn whole_file_then_a_range_with_its_etag() {
        let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let dir = dir_with("img.bin", &content);
        let whole = serve(dir.path(), "img.bin", get("img.bin", &[]))
            .await
            .unwrap();
        assert_eq!(whole.status(), StatusCode::OK);
        assert_eq!(whole.headers()[header::ACCEPT_RANGES], "bytes");
        let etag = whole.headers()[header::ETAG].to_str().unwrap().to_owned();
        assert_eq!(body(whole).await, content);

        let part = serve(
            dir.path(),
            "img.bin",
            get(
                "img.bin",
                &[(header::RANGE, "bytes=4000-"), (header::IF_RANGE, &etag)],
            ),
        )
        .await
        .unwrap();
        assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            part.headers()[header::CONTENT_RANGE],
            "bytes 4000-9999/10000"
        );
        assert_eq!(body(part).await, &content[4000..]);
    }

    #[tokio::test]
    async fn a_changed_file_is_sent_whole_despite_the_range() {
        let dir = dir_with("img.bin", b"old content, long enough");
        let first = serve(dir.path(), "img.bin", get("img.bin", &[]))
            .await
            .unwrap();
        let old_etag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
        // A new version under the same name (a new inode, as a rename gives).
        std::fs::write(dir.path().join("new"), b"new content").unwrap();
        std::fs::rename(dir.path().join("new"), dir.path().join("img.bin")).unwrap();
        let r = serve(
            dir.path(),
            "img.bin",
            get(
                "img.bin",
                &[(header::RANGE, "bytes=5-"), (header::IF_RANGE, &old_etag)],
            ),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_ne!(r.headers()[header::ETAG], old_etag.as_str());
        assert_eq!(body(r).await, b"new content");
    }

    #[tokio::test]
    async fn traversal_and_missing_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = dir.path().join(ARTIFACTS_DIR);
        std::fs::create_dir(&artifacts).unwrap();
        std::fs::write(dir.path().join("secret"), b"the store").unwrap();
        std::fs::create_dir(artifacts.join("sub")).unwrap();
        let status = |r: Result<Response, ApiError>| match r {
            Ok(r) => r.status(),
            Err(e) => e.status(),
        };
        assert_eq!(
            status(serve(&artifacts, "../secret", get("x", &[])).await),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(serve(&artifacts, "missing.bin", get("x", &[])).await),
            StatusCode::NOT_FOUND
        );
        // A directory is not an artifact (and is never listed).
        assert_eq!(
            status(serve(&artifacts, "sub", get("x", &[])).await),
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn a_range_past_the_end_answers_416() {
        let dir = dir_with("img.bin", b"0123456789");
        let r = serve(
            dir.path(),
            "img.bin",
            get("img.bin", &[(header::RANGE, "bytes=10-")]),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes */10");
    }
}
