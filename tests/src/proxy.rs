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
//! [`Proxy::cut`] takes the link away until [`Proxy::restore`]: open
//! connections end and new ones are black-holed (accepted, then never
//! answered nor forwarded, as a dead uplink swallows packets) and closed
//! when the link is restored.
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
use tokio::sync::{mpsc, oneshot, watch, Notify};

/// A running forwarder; stopped on drop.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it forwards to.
    pub target: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    /// Bytes a connection carries back to its client before it is cut (0: no limit).
    cut_after: Arc<AtomicU64>,
    /// Bumped by [`Proxy::sever`]: every open connection ends.
    sever: watch::Sender<u64>,
    /// True while [`Proxy::cut`]: new connections are black-holed.
    cut: watch::Sender<bool>,
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
        let cut_after = Arc::new(AtomicU64::new(0));
        let (sever, sever_rx) = watch::channel(0u64);
        let (cut, cut_rx) = watch::channel(false);
        let shared = Shared {
            target,
            delay: Arc::clone(&delay_ms),
            count: Arc::clone(&connections),
            cut_after: Arc::clone(&cut_after),
            sever: sever_rx,
            cut: cut_rx,
        };
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
                        () = accept_loop(listener, shared) => {}
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
            cut_after,
            sever,
            cut,
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

    /// Cut each connection (new and open ones) once it has carried `bytes`
    /// back to its client, as a link dropping mid-transfer does; `None`
    /// lifts it.
    pub fn set_cut_after(&self, bytes: Option<u64>) {
        self.cut_after
            .store(bytes.map_or(0, |b| b.max(1)), Ordering::Relaxed);
    }

    /// End every open connection now.
    pub fn sever(&self) {
        self.sever.send_modify(|g| *g += 1);
    }

    /// Take the link away: end every open connection, and black-hole new
    /// ones (accepted, never forwarded nor answered) until
    /// [`Proxy::restore`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
        self.sever();
    }

    /// Give the link back: the black-holed connections are closed, new ones
    /// are forwarded again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
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

#[derive(Clone)]
struct Shared {
    target: SocketAddr,
    delay: Arc<AtomicU64>,
    count: Arc<AtomicU64>,
    cut_after: Arc<AtomicU64>,
    sever: watch::Receiver<u64>,
    cut: watch::Receiver<bool>,
}

async fn accept_loop(listener: TcpListener, shared: Shared) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        shared.count.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        if *shared.cut.borrow() {
            tokio::spawn(black_hole(inbound, shared.cut.clone()));
            continue;
        }
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(shared.target).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            // A sever (or a cut) must lose what was still in flight, as a
            // router that forgets the connection does: closed with linger
            // 0, the socket sends RST and drops its send buffer, instead of
            // the kernel delivering the megabytes already written (behind a
            // slow link) after the link returns. A normal end closes only
            // after both sides sent FIN, with nothing left to deliver.
            // (Deprecated for a linger that blocks the thread on drop; a
            // linger of 0 never blocks: the close is an immediate RST.)
            #[allow(deprecated)]
            let _ = inbound.set_linger(Some(Duration::ZERO));
            let _ = outbound.set_nodelay(true);
            // Cut while this one was connecting: it is never forwarded. (A
            // cut from here on is a sever this connection sees.)
            let mut sever = shared.sever.clone();
            sever.mark_unchanged();
            if *shared.cut.borrow() {
                drop(outbound);
                black_hole(inbound, shared.cut.clone()).await;
                return;
            }
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            let kill = Arc::new(Notify::new());
            // Each direction's end (EOF) is passed on as a FIN, so a close
            // on either side reaches the other; a cut or a sever drops both
            // sockets at once.
            tokio::select! {
                _ = async {
                    tokio::join!(
                        pipe(ri, wo, Arc::clone(&shared.delay), None),
                        pipe(ro, wi, Arc::clone(&shared.delay), Some((Arc::clone(&shared.cut_after), Arc::clone(&kill)))),
                    )
                } => {}
                () = kill.notified() => {}
                _ = sever.changed() => {}
            }
        });
    }
}

/// Hold `inbound` while the link is cut, reading and discarding what it
/// sends; when the link is restored, close it (RST).
async fn black_hole(mut inbound: TcpStream, mut cut: watch::Receiver<bool>) {
    #[allow(deprecated)] // linger 0 never blocks: see accept_loop
    let _ = inbound.set_linger(Some(Duration::ZERO));
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            r = inbound.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            changed = cut.changed() => {
                if changed.is_err() || !*cut.borrow() {
                    return;
                }
            }
        }
    }
}

/// Copy `from` to `to`, each chunk written `delay` after it was read; with
/// `budget`, wake `kill` once its limit of bytes has been written.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Arc<AtomicU64>,
    budget: Option<(Arc<AtomicU64>, Arc<Notify>)>,
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
        let mut written = 0u64;
        while let Some((due, mut chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            let limit = budget
                .as_ref()
                .map_or(0, |(cut_after, _)| cut_after.load(Ordering::Relaxed));
            let over = limit > 0 && written + chunk.len() as u64 >= limit;
            if over {
                chunk.truncate(usize::try_from(limit.saturating_sub(written)).unwrap_or(0));
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            written += chunk.len() as u64;
            if over {
                if let Some((_, kill)) = &budget {
                    kill.notify_one();
                }
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
