//! The API's accept loop, for HTTPS and (with `--insecure-dev`) plain HTTP
//! alike. `axum::serve` has no header-read timeout, no idle timeout and no
//! connection cap, so one client could hold thousands of half-sent requests
//! until the process ran out of files. Here every connection:
//!
//! - takes a slot, global ([`ServeConfig::max_connections`]) and per source
//!   address ([`ServeConfig::max_connections_per_ip`]); without one it is
//!   closed at once, so one address cannot crowd out an operator at another;
//! - completes its TLS handshake within [`ServeConfig::handshake_timeout`];
//! - sends its request headers within [`ServeConfig::header_read_timeout`]
//!   (hyper's timer, for every request of a keep-alive connection);
//! - is closed after [`ServeConfig::idle_timeout`] without a byte either way.
//!
//! On shutdown the loop stops accepting and waits for the connections it
//! holds to finish their requests (idle ones close at once).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, warn};

use super::tls::Peer;

/// How the listener treats its connections (`[http]` in the configuration).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// HTTPS with this configuration; `None` is plain HTTP (`--insecure-dev`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

/// Serve `router` on `listener` until `shutdown` completes, then drain.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cfg: ServeConfig,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Slots::new(cfg.max_connections, cfg.max_connections_per_ip));
    let acceptor = cfg.tls.clone().map(TlsAcceptor::from);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of files, most likely: wait instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match slots.take(addr.ip()) {
            Ok(slot) => slot,
            Err(full) => {
                debug!(%addr, limit = full.as_str(), "connection refused: too many connections");
                metrics::counter!("fleet_http_connections_refused_total", "limit" => full.as_str())
                    .increment(1);
                continue;
            }
        };
        let connection = Connection {
            addr,
            acceptor: acceptor.clone(),
            http: http.clone(),
            router: router.clone(),
            cfg: cfg.clone(),
            watcher: graceful.watcher(),
        };
        tokio::spawn(async move {
            connection.run(tcp).await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// One accepted connection and what it needs to be served.
struct Connection {
    addr: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    http: hyper::server::conn::http1::Builder,
    router: Router,
    cfg: ServeConfig,
    watcher: Watcher,
}

impl Connection {
    async fn run(self, tcp: TcpStream) {
        let addr = self.addr;
        match self.acceptor.clone() {
            None => self.serve_io(tcp).await,
            Some(acceptor) => {
                match tokio::time::timeout(self.cfg.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => self.serve_io(tls).await,
                    Ok(Err(e)) => debug!(%addr, error = %e, "TLS handshake failed"),
                    Err(_) => debug!(%addr, "TLS handshake timed out"),
                }
            }
        }
    }

    async fn serve_io<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let addr = self.addr;
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Tracked {
            io,
            activity: Arc::clone(&activity),
        });
        let service =
            TowerToHyperService::new(self.router.map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(Peer(addr)));
                req
            }));
        let conn = self.watcher.watch(self.http.serve_connection(io, service));
        tokio::pin!(conn);
        let idle = self.cfg.idle_timeout;
        loop {
            tokio::select! {
                done = &mut conn => {
                    if let Err(e) = done {
                        debug!(%addr, error = %e, "connection ended");
                    }
                    return;
                }
                () = tokio::time::sleep_until(activity.last() + idle) => {
                    if activity.last().elapsed() >= idle {
                        debug!(%addr, ?idle, "connection idle: closed");
                        metrics::counter!("fleet_http_connections_idle_closed_total").increment(1);
                        return;
                    }
                }
            }
        }
    }
}

/// When a connection last moved a byte either way.
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A stream that notes every byte read or written in its [`Activity`].
struct Tracked<I> {
    io: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    Total,
    PerAddress,
}

impl Full {
    fn as_str(self) -> &'static str {
        match self {
            Full::Total => "total",
            Full::PerAddress => "per-address",
        }
    }
}

/// Open connections, in total and per source address.
struct Slots {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Slots {
    fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self {
            max_total,
            max_per_ip,
            open: Mutex::default(),
        }
    }

    fn take(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Full> {
        let mut open = self.open.lock().expect("slot lock is never poisoned");
        if open.total >= self.max_total {
            return Err(Full::Total);
        }
        let mine = open.per_ip.entry(ip).or_insert(0);
        if *mine >= self.max_per_ip {
            return Err(Full::PerAddress);
        }
        *mine += 1;
        open.total += 1;
        Ok(Slot {
            slots: Arc::clone(self),
            ip,
        })
    }
}

/// A connection's place under the caps, given back on drop.
struct Slot {
    slots: Arc<Slots>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().expect("slot lock is never poisoned");
        open.total -= 1;
        if let Some(n) = open.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn one_address_gets_its_share_and_the_total_is_capped() {
        let slots = Arc::new(Slots::new(5, 3));
        let a: Vec<Slot> = (0..3)
            .map(|_| slots.take(ip("127.0.0.2")).unwrap())
            .collect();
        assert_eq!(
            slots.take(ip("127.0.0.2")).err(),
            Some(Full::PerAddress),
            "a fourth from the same address"
        );
        let b1 = slots.take(ip("127.0.0.1")).unwrap();
        let _b2 = slots.take(ip("127.0.0.1")).unwrap();
        assert_eq!(slots.take(ip("127.0.0.3")).err(), Some(Full::Total));
        drop(b1);
        let _c = slots.take(ip("127.0.0.3")).unwrap();
        drop(a);
        assert_eq!(
            slots.open.lock().unwrap().per_ip.get(&ip("127.0.0.2")),
            None,
            "an address without connections is forgotten"
        );
        assert_eq!(slots.open.lock().unwrap().total, 2);
        let _again = slots.take(ip("127.0.0.2")).unwrap();
    }
}
