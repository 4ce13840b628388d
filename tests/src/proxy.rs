//! A small TCP forwarder for link tests, optionally adding latency.
//!
//! The controller's API and its managed Mosquitto listen on 127.0.0.1, which
//! a network namespace cannot reach. A [`Proxy`] bound to the root side of a
//! namespaced host's link (see [`crate::link::Host::forward`]) carries each
//! connection on to 127.0.0.1 unchanged: TLS runs end to end through it, so
//! the bytes on the link are the device's real TCP/IP and TLS bytes.
//!
//! This kernel has no netem, so latency comes from here: with a delay set,
//! every chunk read from one side is written to the other `delay` after it
//! arrived (chunks are queued, so the delay does not cut throughput).
//!
//! The forwarder runs on its own thread and tokio runtime, so synchronous
//! and asynchronous tests use it alike; dropping it stops it and closes
//! every connection it carries.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// A running forwarder; stopped on drop.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it forwards to.
    pub target: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listen on `listen` (port 0 picks one) and forward each connection to
    /// `target`.
    pub fn start(listen: SocketAddr, target: SocketAddr) -> anyhow::Result<Self> {
        let std_listener = std::net::TcpListener::bind(listen)
            .with_context(|| format!("the proxy cannot listen on {listen}"))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let delay_ms = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let (stop, stop_rx) = oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("the proxy's runtime")?;
        let (delay, count) = (Arc::clone(&delay_ms), Arc::clone(&connections));
        let thread = std::thread::Builder::new()
            .name(format!("proxy-{addr}"))
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("proxy {addr}: {e}");
                            return;
                        }
                    };
                    tokio::select! {
                        () = accept_loop(listener, target, delay, count) => {}
                        _ = stop_rx => {}
                    }
                });
                // Dropping the runtime here cancels every connection's tasks.
            })
            .context("the proxy's thread")?;
        Ok(Self {
            addr,
            target,
            delay_ms,
            connections,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Add `delay` to every chunk in each direction (a round trip gains
    /// twice this). Applies to connections made from now on and to chunks
    /// already flowing.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    delay: Arc<AtomicU64>,
    count: Arc<AtomicU64>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        count.fetch_add(1, Ordering::Relaxed);
        let delay = Arc::clone(&delay);
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            // Each direction's end (EOF) is passed on as a FIN, so a close
            // on either side reaches the other.
            tokio::join!(pipe(ri, wo, Arc::clone(&delay)), pipe(ro, wi, delay));
        });
    }
}

/// Copy `from` to `to`, each chunk written `delay` after it was read.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Arc<AtomicU64>,
) {
    let (tx, mut rx) = mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(256);
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = tokio::time::Instant::now()
                        + Duration::from_millis(delay.load(Ordering::Relaxed));
                    if tx.send((due, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
