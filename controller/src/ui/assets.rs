//! The console's files, embedded in the binary (the network has no
//! internet and no CDN): the style sheet, the one script, the Persian
//! font and its licence. Pages link them as `/ui/assets/NAME?v=HASH`;
//! such a URL never changes content, so it is cached for a year
//! (`immutable`), and every answer has an ETag for a revalidation.

use std::sync::LazyLock;

use axum::extract::{Path, Query};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub struct Asset {
    pub name: &'static str,
    pub mime: &'static str,
    pub bytes: Vec<u8>,
    /// The first 12 hex digits of its SHA-256.
    pub hash: String,
}

const FONTS: [(&str, &[u8]); 2] = [
    (
        "Vazirmatn-NL-Regular.woff2",
        include_bytes!("../../ui/fonts/Vazirmatn-NL-Regular.woff2"),
    ),
    (
        "Vazirmatn-NL-Bold.woff2",
        include_bytes!("../../ui/fonts/Vazirmatn-NL-Bold.woff2"),
    ),
];

/// The first `n` bytes of `bytes`' SHA-256, in hex (asset versions, live
/// documents' ETags).
pub fn short_hash(bytes: &[u8], n: usize) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    hex::encode(&d.as_ref()[..n.min(32)])
}

fn hash_of(bytes: &[u8]) -> String {
    short_hash(bytes, 6)
}

fn asset(name: &'static str, mime: &'static str, bytes: Vec<u8>) -> Asset {
    Asset {
        hash: hash_of(&bytes),
        name,
        mime,
        bytes,
    }
}

pub static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    let mut all: Vec<Asset> = FONTS
        .iter()
        .map(|(name, bytes)| asset(name, "font/woff2", bytes.to_vec()))
        .collect();
    // The sheet names the fonts with their hashes, so they are cached for
    // good too.
    let mut css = include_str!("../../ui/app.css").to_owned();
    for font in &all {
        css = css.replace(
            &format!("url({})", font.name),
            &format!("url({}?v={})", font.name, font.hash),
        );
    }
    all.push(asset(
        "app.css",
        "text/css; charset=utf-8",
        css.into_bytes(),
    ));
    all.push(asset(
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/app.js").to_vec(),
    ));
    all.push(asset(
        "Vazirmatn-OFL.txt",
        "text/plain; charset=utf-8",
        include_bytes!("../../ui/fonts/Vazirmatn-OFL.txt").to_vec(),
    ));
    all
});

pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// `/ui/assets/NAME?v=HASH`, as pages link it.
pub fn url(name: &str) -> String {
    let hash = find(name).map_or("", |a| a.hash.as_str());
    format!("/ui/assets/{name}?v={hash}")
}

#[derive(serde::Deserialize)]
pub struct Version {
    v: Option<String>,
}

pub async fn serve(
    Path(name): Path<String>,
    Query(q): Query<Version>,
    headers: HeaderMap,
) -> Response {
    let Some(a) = find(&name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let etag = format!("\"{}\"", a.hash);
    let cache = if q.v.as_deref() == Some(a.hash.as_str()) {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=3600"
    };
    let mut h = HeaderMap::new();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.mime));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if matches {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    (h, a.bytes.clone()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sheet_links_the_embedded_fonts_by_hash() {
        let css = String::from_utf8(find("app.css").unwrap().bytes.clone()).unwrap();
        for font in FONTS.map(|(n, _)| n) {
            let a = find(font).unwrap();
            assert!(
                css.contains(&format!("url({}?v={})", a.name, a.hash)),
                "{font} linked by hash"
            );
        }
        assert!(
            !css.contains("http:") && !css.contains("https:"),
            "no external URL"
        );
    }

    #[test]
    fn the_font_licence_ships_with_the_font() {
        let ofl = String::from_utf8(find("Vazirmatn-OFL.txt").unwrap().bytes.clone()).unwrap();
        assert!(ofl.contains("SIL Open Font License"));
    }
}
