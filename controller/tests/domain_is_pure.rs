//! The controller's `domain/` is pure: no async runtime, database, web
//! framework, MQTT client, file system or wall clock. This scans its source
//! so that CI fails the day one of them is named there.

use std::path::{Path, PathBuf};

/// What the domain must never name, with why.
const FORBIDDEN: &[(&str, &str)] = &[
    ("tokio", "async runtime"),
    ("sqlx", "database"),
    ("axum", "web framework"),
    ("rumqttc", "MQTT client"),
    ("std::fs", "file system"),
    ("std::net", "network"),
    ("std::process", "processes"),
    ("SystemTime", "wall clock: take `now` as a parameter"),
    ("Instant::now", "clock: take `now` as a parameter"),
    ("unix_ms", "clock: take `now` as a parameter"),
    ("crate::store", "the store is an edge"),
    ("crate::http", "HTTP is an edge"),
    ("crate::ingest", "ingest is an edge"),
    ("crate::broker", "the broker is an edge"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("the domain directory is readable") {
        let path = entry.expect("a readable entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A name stands as a word of a path: `tokio::…` or `use tokio`, not `tokio_like`.
fn names(line: &str, name: &str) -> bool {
    line.match_indices(name).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + name.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !word(before) && !word(after)
    })
}

#[test]
fn domain_names_no_io_crate_and_reads_no_clock() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domain");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    assert!(
        files.len() >= 7,
        "expected the domain's modules, found {files:?}"
    );
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for (name, why) in FORBIDDEN {
                if names(code, name) {
                    found.push(format!("{}:{}: {name} ({why})", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the domain must stay pure:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scan_sees_a_forbidden_name() {
    assert!(names("use tokio::sync::Mutex;", "tokio"));
    assert!(names(
        "    let t = std::time::SystemTime::now();",
        "SystemTime"
    ));
    assert!(!names("use tokio_like::x;", "tokio"));
    assert!(!names("let sqlxy = 1;", "sqlx"));
}
