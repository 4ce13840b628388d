//! Bounded input: a real `fleet-controller serve` process is sent what an
//! attacker (or a careless script) would send, and must stay small and keep
//! answering its operators.
//!
//! - a maximal shipment CSV of bad lines answers a short 422 ("… and N
//!   more"), and the controller's peak resident memory stays under
//!   [`RESIDENT_BOUND`]; one byte more than the route's limit answers 413;
//! - thousands of nested JSON arrays answer 4xx and the controller keeps
//!   answering;
//! - one address holding many half-sent requests gets at most its share of
//!   connections, they are closed by the header-read timeout, an idle
//!   keep-alive connection is closed by the idle timeout, and an operator
//!   from another address is answered all along.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_api::Role;
use fleet_tests::builders::create_token;
use fleet_tests::{within, Controller};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// The controller's peak resident memory (VmHWM) after the CSV case. It
/// idles at about 20 MiB and peaked at 25 MiB with this case; before the
/// CSV was bounded, the same 2 MiB file of bad lines took it to 180 MiB
/// and a 45 MB answer (and the 16 MiB the route took then, to gigabytes).
const RESIDENT_BOUND_KIB: u64 = 100 * 1024;
const RESIDENT_BOUND: &str = "100 MiB";

/// The shipment route's body limit (controller/src/http/mod.rs).
const SHIPMENT_LIMIT: usize = 2 * 1024 * 1024;

fn tls_config(ctl: &Controller) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ctl.ca()).unwrap();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn raw_client(ctl: &Controller) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls((*tls_config(ctl)).clone())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// `(VmRSS, VmHWM)` of a process, in KiB.
fn resident_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_maximal_bad_shipment_answers_a_short_422_and_memory_stays_bounded() {
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start(data.path(), &[]).unwrap();
    let bench = create_token(&ctl.client(), Role::Warehouse, &[], "bench").await;
    let http = raw_client(&ctl);
    let url = format!("{}/api/v1/enrol/batch", ctl.api);

    // The largest body the route takes, every line of it bad.
    let header = "serial,model,province\n";
    let mut csv = String::with_capacity(SHIPMENT_LIMIT);
    csv.push_str(header);
    while csv.len() + 2 <= SHIPMENT_LIMIT {
        csv.push_str("x\n");
    }
    let lines = (csv.len() - header.len()) / 2;
    let started = Instant::now();
    let answer = within(
        60,
        "a maximal bad shipment",
        http.post(&url).bearer_auth(&bench.token).body(csv).send(),
    )
    .await
    .unwrap();
    let status = answer.status();
    let body = within(60, "its answer", answer.bytes()).await.unwrap();
    let (rss, hwm) = resident_kib(ctl.proc.pid());
    println!(
        "{lines} bad lines: {status}, answer {} bytes in {:?}; controller VmRSS {rss} KiB, VmHWM {hwm} KiB",
        body.len(),
        started.elapsed()
    );
    assert_eq!(
        status,
        422,
        "{}",
        String::from_utf8_lossy(&body[..body.len().min(500)])
    );
    assert!(
        body.len() <= 32 * 1024,
        "the answer to {lines} bad lines is {} bytes",
        body.len()
    );
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("more"), "no \"… and N more\": {text}");
    assert!(
        hwm <= RESIDENT_BOUND_KIB,
        "the controller peaked at {hwm} KiB resident (now {rss} KiB); bound {RESIDENT_BOUND}"
    );

    // One byte over the limit is refused before it is parsed.
    let over = format!("{header}{}", "x".repeat(SHIPMENT_LIMIT - header.len() + 1));
    let answer = within(
        60,
        "an oversize shipment",
        http.post(&url).bearer_auth(&bench.token).body(over).send(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status(), 413);
    within(20, "healthz afterwards", ctl.client().healthz())
        .await
        .unwrap();
    ctl.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn deeply_nested_json_is_refused_and_the_controller_keeps_answering() {
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start(data.path(), &[]).unwrap();
    let http = raw_client(&ctl);
    // Under the JSON body limit (64 KiB). No request type holds arbitrary
    // JSON: nesting where a field is expected is refused at its first
    // level, and nesting in an unknown field is skipped without recursion
    // (serde_json's ignore_value), so neither reaches the recursion limit.
    let depth = 30_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let unknown = format!(r#"{{"device":"BB-1","token":"enr-x","csr":"x","extra":{nested}}}"#);
    for (path, token, body) in [
        ("/api/v1/enrol", None, &nested),
        ("/api/v1/enrol", None, &unknown),
        ("/api/v1/devices", Some(ctl.token.as_str()), &nested),
        ("/api/v1/tokens", Some(ctl.token.as_str()), &nested),
    ] {
        let mut req = http
            .post(format!("{}{path}", ctl.api))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let answer = within(20, "a deeply nested body", req.send())
            .await
            .unwrap();
        let status = answer.status();
        let text = within(20, "its answer", answer.text()).await.unwrap();
        println!("{path}: {status} {text}");
        assert!(status.is_client_error(), "{path}: {status} {text}");
    }
    // And 100,000 deep (200 KB) is over the body limit of every JSON route.
    // The controller answers 413 from the Content-Length alone and closes
    // without reading the rest, so the client may see its write cut off
    // (broken pipe) before it reads the 413: both mean refused unread.
    let deeper = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let answer = within(
        20,
        "a 100,000-deep body",
        http.post(format!("{}/api/v1/enrol", ctl.api))
            .header("content-type", "application/json")
            .body(deeper)
            .send(),
    )
    .await;
    match answer {
        Ok(answer) => assert_eq!(answer.status(), 413, "a 200 KB JSON body"),
        Err(e) => assert!(
            e.is_request() && format!("{e:?}").contains("BodyWrite"),
            "a 200 KB JSON body: {e:?}"
        ),
    }
    within(20, "healthz afterwards", ctl.client().healthz())
        .await
        .unwrap();
    ctl.stop().unwrap();
}

/// Connections counted as they are opened and closed.
#[derive(Default)]
struct Held {
    /// Established (TCP, and TLS when asked) and not yet closed.
    open: AtomicUsize,
    /// Ended: refused, or closed by the controller.
    closed: AtomicUsize,
}

/// One connection from `from` that sends `first` (over TLS when `tls`) and
/// then holds on, counted in `held`.
async fn hold(
    from: &str,
    to: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    first: &'static [u8],
    held: Arc<Held>,
) {
    let closed = &held.closed;
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let Ok(tcp) = socket.connect(to).await else {
        closed.fetch_add(1, Ordering::SeqCst);
        return;
    };
    let mut buf = [0u8; 1024];
    match tls {
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let Ok(mut s) = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
            else {
                closed.fetch_add(1, Ordering::SeqCst);
                return;
            };
            held.open.fetch_add(1, Ordering::SeqCst);
            if s.write_all(first).await.is_ok() {
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            }
        }
        None => {
            let mut s = tcp;
            held.open.fetch_add(1, Ordering::SeqCst);
            if s.write_all(first).await.is_ok() {
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            }
        }
    }
    held.open.fetch_sub(1, Ordering::SeqCst);
    closed.fetch_add(1, Ordering::SeqCst);
}

/// A client that sends one header byte every 300 ms and never finishes:
/// never idle, but its headers never complete.
async fn drip(to: SocketAddr, tls: Arc<rustls::ClientConfig>, closed: Arc<AtomicUsize>) {
    let tcp = tokio::net::TcpStream::connect(to).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if s.write_all(b"X").await.is_err() || s.flush().await.is_err() {
            break;
        }
    }
    closed.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread")]
async fn half_sent_requests_from_one_address_neither_pile_up_nor_lock_out_an_operator() {
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start_with_env(
        data.path(),
        &[],
        &[
            ("FLEET_CONTROLLER__HTTP__MAX_CONNECTIONS_PER_IP", "50"),
            ("FLEET_CONTROLLER__HTTP__HEADER_READ_TIMEOUT_SECS", "2"),
            ("FLEET_CONTROLLER__HTTP__IDLE_TIMEOUT_SECS", "4"),
        ],
    )
    .unwrap();
    let to: SocketAddr = ctl.api.trim_start_matches("https://").parse().unwrap();
    let tls = tls_config(&ctl);
    let operator = ctl.client();

    // 300 half-sent requests over TLS from 127.0.0.2.
    let attackers = 300;
    let held = Arc::new(Held::default());
    let closed = &held.closed;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..attackers {
        tasks.spawn(hold(
            "127.0.0.2",
            to,
            Some(Arc::clone(&tls)),
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
            Arc::clone(&held),
        ));
    }
    // From the operator's address: a slow drip of header bytes, and a
    // request whose headers are complete but whose body never comes (out
    // of the header-read timeout's reach: only the idle timeout ends it).
    let dripped = Arc::new(AtomicUsize::new(0));
    tasks.spawn(drip(to, Arc::clone(&tls), Arc::clone(&dripped)));
    let idle = Arc::new(Held::default());
    let idled = &idle.closed;
    tasks.spawn(hold(
        "127.0.0.1",
        to,
        Some(Arc::clone(&tls)),
        b"POST /api/v1/enrol HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        Arc::clone(&idle),
    ));
    let idle_closed_at = Arc::new(std::sync::Mutex::new(None));
    let attacked = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // While they hold on, the operator is answered, and the attacker holds
    // at most its share. Counted before any header-read timeout (2 s) can
    // have closed one, so a refused connection is never replaced by a new
    // one in the count; connections still being opened are not counted.
    let held_early = held.open.load(Ordering::SeqCst);
    let answered = within(10, "the operator's request", operator.healthz()).await;

    // Everything the attacker holds is closed by the header-read timeout;
    // the drip by the header-read timeout too; the idle connection by the
    // idle timeout. The bound leaves room for a loaded machine.
    let end = attacked + Duration::from_secs(20);
    while Instant::now() < end
        && (closed.load(Ordering::SeqCst) < attackers
            || dripped.load(Ordering::SeqCst) < 1
            || idled.load(Ordering::SeqCst) < 1)
    {
        if idled.load(Ordering::SeqCst) == 1 {
            idle_closed_at
                .lock()
                .unwrap()
                .get_or_insert(attacked.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held_late = attackers - closed.load(Ordering::SeqCst);
    if idled.load(Ordering::SeqCst) == 1 {
        idle_closed_at
            .lock()
            .unwrap()
            .get_or_insert(attacked.elapsed());
    }
    let idle_closed_at = *idle_closed_at.lock().unwrap();
    let drip_held = dripped.load(Ordering::SeqCst) == 0;
    let idle_held = idled.load(Ordering::SeqCst) == 0;
    let answered_late = within(10, "the operator's request", operator.healthz()).await;
    tasks.abort_all();
    println!(
        "after 1.5 s: operator {}, attacker held {held_early} of {attackers}; \
         after {:?}: attacker held {held_late}, drip held: {drip_held}, idle held: {idle_held} \
         (closed after {idle_closed_at:?}), operator {}",
        if answered.is_ok() {
            "answered"
        } else {
            "refused"
        },
        attacked.elapsed(),
        if answered_late.is_ok() {
            "answered"
        } else {
            "refused"
        },
    );
    answered.unwrap();
    answered_late.unwrap();
    assert!(
        held_early <= 50,
        "one address held {held_early} connections"
    );
    assert_eq!(held_late, 0, "half-sent requests still held after 20 s");
    assert!(!drip_held, "a client dripping header bytes was held 20 s");
    assert!(!idle_held, "a request without its body was held 20 s");
    assert!(
        idle_closed_at.is_some_and(|t| t >= Duration::from_secs(3)),
        "the silent request was closed after {idle_closed_at:?}, before its idle timeout (4 s)"
    );
    ctl.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_goes_through_the_same_limits() {
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start_with_env(
        data.path(),
        &["--insecure-dev"],
        &[
            ("FLEET_CONTROLLER__HTTP__MAX_CONNECTIONS_PER_IP", "20"),
            ("FLEET_CONTROLLER__HTTP__HEADER_READ_TIMEOUT_SECS", "2"),
        ],
    )
    .unwrap();
    let to: SocketAddr = ctl.api.trim_start_matches("http://").parse().unwrap();
    let attackers = 100;
    let held = Arc::new(Held::default());
    let closed = &held.closed;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..attackers {
        tasks.spawn(hold(
            "127.0.0.2",
            to,
            None,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
            Arc::clone(&held),
        ));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Before the header-read timeout (2 s) closes any: see above.
    let held_early = held.open.load(Ordering::SeqCst);
    let answered = within(10, "the operator's request", ctl.client().healthz()).await;
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end && closed.load(Ordering::SeqCst) < attackers {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held_late = attackers - closed.load(Ordering::SeqCst);
    tasks.abort_all();
    println!("plain HTTP: attacker held {held_early} of {attackers}, then {held_late}");
    answered.unwrap();
    assert!(
        held_early <= 20,
        "one address held {held_early} connections"
    );
    assert_eq!(held_late, 0, "half-sent requests still held after 21 s");
    ctl.stop().unwrap();
}
