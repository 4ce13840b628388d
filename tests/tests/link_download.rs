//! Resumable downloads, end to end: `fleet-agent fetch` (a real process)
//! against a real in-process controller serving `DATA/artifacts/` over
//! HTTPS with Range, through a forwarder ([`fleet_tests::proxy::Proxy`])
//! that cuts each connection after a number of bytes, as a link dropping
//! mid-transfer does. Also: a real HTTP server that ignores Range (the
//! download starts again from 0), and a wrong hash (an error, no file).
//!
//! The dial-up profile's download (through a namespaced host, with loss
//! and cuts of the link itself) is in `link_dialup.rs`.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use fleet_tests::proxy::Proxy;
use fleet_tests::{run_bin, within, InProcessController};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes that differ at every offset (a cut stitched wrong shows).
fn content(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn publish(ctl: &InProcessController, name: &str, bytes: &[u8]) {
    let dir = ctl.data_dir.join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// `fleet-agent fetch` with `args`, off the async threads, bounded.
async fn fetch(args: Vec<String>) -> (bool, String, String) {
    within(
        240,
        "fleet-agent fetch",
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_bin("fleet-agent", &args).unwrap()
        }),
    )
    .await
    .unwrap()
}

fn agent_config(dir: &Path, insecure: bool) -> PathBuf {
    let p = dir.join("agent.toml");
    std::fs::write(
        &p,
        format!(
            "[device]\nstate_dir = \"{}\"\n[mqtt]\ninsecure_dev = {insecure}\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    p
}

/// The number before `word` in fetch's summary line ("… 4 requests (3 resumed, 0 restarts)").
fn count(out: &str, word: &str) -> u32 {
    let line = out
        .lines()
        .find(|l| l.starts_with("fetched "))
        .unwrap_or("");
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || c == '(' || c == ',' || c == ')')
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        .find(|w| w[1] == word)
        .and_then(|w| w[0].parse().ok())
        .unwrap_or_else(|| panic!("no {word:?} in {out:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_cut_mid_transfer_resumes_and_arrives_whole() {
    let data = tempfile::tempdir().unwrap();
    let ctl = InProcessController::start(data.path(), |_| {})
        .await
        .unwrap();
    let bytes = content(1_000_000);
    publish(&ctl, "image-1.bin", &bytes);
    // Every connection is cut after 300 kB back to the client.
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], 0)), ctl.addr).unwrap();
    proxy.set_cut_after(Some(300_000));

    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("image-1.bin");
    let (ok, out, err) = fetch(vec![
        "fetch".into(),
        format!(
            "https://127.0.0.1:{}/api/v1/artifacts/image-1.bin",
            proxy.addr.port()
        ),
        dest.display().to_string(),
        "--sha256".into(),
        sha256_hex(&bytes),
        "--len".into(),
        bytes.len().to_string(),
        "--ca".into(),
        ctl.ca().display().to_string(),
        "--config".into(),
        agent_config(work.path(), false).display().to_string(),
    ])
    .await;
    assert!(ok, "fetch failed: {out}{err}");
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert!(count(&out, "resumed") >= 3, "{out}");
    assert_eq!(count(&out, "restarts"), 0, "{out}");
    assert!(proxy.connections() >= 4);
    assert!(!work.path().join("image-1.bin.part").exists());
    assert!(!work.path().join("image-1.bin.part.etag").exists());
    println!("{out}");
    ctl.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hash_mismatch_is_an_error_and_leaves_no_file() {
    let data = tempfile::tempdir().unwrap();
    let ctl = InProcessController::start(data.path(), |_| {})
        .await
        .unwrap();
    let bytes = content(100_000);
    publish(&ctl, "image-2.bin", &bytes);
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("image-2.bin");
    let wrong = sha256_hex(b"something else");
    let (ok, out, err) = fetch(vec![
        "fetch".into(),
        format!("{}/api/v1/artifacts/image-2.bin", ctl.api),
        dest.display().to_string(),
        "--sha256".into(),
        wrong.clone(),
        "--ca".into(),
        ctl.ca().display().to_string(),
        "--config".into(),
        agent_config(work.path(), false).display().to_string(),
    ])
    .await;
    assert!(!ok, "a wrong hash was accepted: {out}");
    assert!(
        err.contains(&format!(
            "SHA-256 is {}, expected {wrong}",
            sha256_hex(&bytes)
        )),
        "{err}"
    );
    assert!(!dest.exists());
    assert!(!work.path().join("image-2.bin.part").exists());

    // And a name that is not an artifact's is refused by the server (no retry loop).
    let (ok, _, err) = fetch(vec![
        "fetch".into(),
        format!("{}/api/v1/artifacts/..%2Ffleet.db", ctl.api),
        work.path().join("db").display().to_string(),
        "--ca".into(),
        ctl.ca().display().to_string(),
        "--config".into(),
        agent_config(work.path(), false).display().to_string(),
    ])
    .await;
    assert!(!ok);
    assert!(
        err.contains("HTTP 400") || err.contains("HTTP 404"),
        "{err}"
    );
    ctl.stop().await.unwrap();
}

/// A real HTTP/1.1 server that ignores Range: always 200 with the whole
/// file; the first answer is cut after `first_cut` bytes of body.
async fn range_ignoring_server(
    body: Vec<u8>,
    first_cut: usize,
) -> (SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut requests = Vec::new();
        for n in 0..2 {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut b).await.unwrap() == 0 {
                    break;
                }
                head.push(b[0]);
            }
            requests.push(String::from_utf8_lossy(&head).into_owned());
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: application/octet-stream\r\n\r\n",
                body.len()
            );
            s.write_all(answer.as_bytes()).await.unwrap();
            let end = if n == 0 { first_cut } else { body.len() };
            let _ = s.write_all(&body[..end]).await;
            let _ = s.shutdown().await;
        }
        requests
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_ignores_range_makes_the_download_start_again() {
    let bytes = content(200_000);
    let (addr, server) = range_ignoring_server(bytes.clone(), 70_000).await;
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("plain.bin");
    let (ok, out, err) = fetch(vec![
        "fetch".into(),
        format!("http://{addr}/plain.bin"),
        dest.display().to_string(),
        "--sha256".into(),
        sha256_hex(&bytes),
        "--config".into(),
        agent_config(work.path(), true).display().to_string(),
    ])
    .await;
    assert!(ok, "fetch failed: {out}{err}");
    let requests = within(10, "the server's requests", server).await.unwrap();
    // It asked to resume, got the whole file instead, and kept only that.
    assert!(
        requests[1]
            .to_ascii_lowercase()
            .contains("range: bytes=70000-"),
        "{requests:?}"
    );
    assert_eq!(count(&out, "restarts"), 1, "{out}");
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
}
