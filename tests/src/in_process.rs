//! The controller started in the test's own process, the way `serve` starts
//! it: `startup::init` on a fresh data directory, the default configuration
//! for that directory, `Application::build` on 127.0.0.1:0 and
//! `run_until_stopped` with a shutdown channel. It is stopped by
//! [`InProcessController::stop`], or, when a test fails half-way, by the
//! guard's `Drop`, which waits until the managed Mosquitto is stopped too.
//!
//! Needs a multi-threaded runtime (`#[tokio::test(flavor =
//! "multi_thread")]`): the guard blocks its thread while the controller's
//! task shuts down on another.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context};
use fleet_api::client::Client;
use fleet_controller::config::ControllerConfig;
use fleet_controller::startup::{self, Application};
use tokio::sync::oneshot;

/// How long a stop may take (the store writer drains, Mosquitto exits).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct InProcessController {
    /// `https://127.0.0.1:PORT` (`http://` with `insecure_dev`).
    pub api: String,
    pub addr: SocketAddr,
    pub broker_port: u16,
    pub data_dir: PathBuf,
    /// The first admin token, as `init` made it.
    pub token: String,
    shutdown: Option<oneshot::Sender<()>>,
    stopped: mpsc::Receiver<anyhow::Result<()>>,
    finished: bool,
}

impl InProcessController {
    /// Initialise `data_dir` (unless it holds an `admin.token` already) and
    /// start with the defaults for it; `configure` may change them first
    /// (e.g. `cfg.readiness.freshness_secs`).
    pub async fn start(
        data_dir: &Path,
        configure: impl FnOnce(&mut ControllerConfig),
    ) -> anyhow::Result<Self> {
        crate::install_crypto();
        let token_file = data_dir.join("admin.token");
        let token = if token_file.exists() {
            std::fs::read_to_string(&token_file)?.trim().to_owned()
        } else {
            tokio::time::timeout(
                Duration::from_secs(30),
                startup::init(data_dir, &Default::default()),
            )
            .await
            .context("init did not finish within 30 s")??
            .admin_token
        };
        let mut cfg = ControllerConfig::for_data_dir(data_dir);
        configure(&mut cfg);
        let insecure = cfg.broker.insecure_dev;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let app = tokio::time::timeout(Duration::from_secs(30), Application::build(cfg, listener))
            .await
            .context("Application::build did not finish within 30 s")??;
        let addr = app.local_addr()?;
        let broker_port = app.broker_port();
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let (done, stopped) = mpsc::channel();
        tokio::spawn(async move {
            let r = app
                .run_until_stopped(async {
                    let _ = shutdown_rx.await;
                })
                .await;
            let _ = done.send(r);
        });
        Ok(Self {
            api: format!("{}://{addr}", if insecure { "http" } else { "https" }),
            addr,
            broker_port,
            data_dir: data_dir.to_owned(),
            token,
            shutdown: Some(shutdown),
            stopped,
            finished: false,
        })
    }

    /// The fleet CA, which the HTTPS certificate chains to.
    pub fn ca(&self) -> PathBuf {
        self.data_dir.join("pki/ca.crt")
    }

    /// A typed client with the first admin token.
    pub fn client(&self) -> Client {
        self.client_as(&self.token)
    }

    /// A typed client with another token.
    pub fn client_as(&self, token: &str) -> Client {
        crate::client_for(&self.api, &self.ca(), Some(token))
    }

    /// Stop in order and wait for it; the controller's own result.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.finished = true;
        let end = tokio::time::Instant::now() + STOP_TIMEOUT;
        loop {
            match self.stopped.try_recv() {
                Ok(r) => return r,
                Err(mpsc::TryRecvError::Disconnected) => {
                    bail!("the controller task ended without a result (it panicked)")
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
            if tokio::time::Instant::now() > end {
                bail!("the controller did not stop within {STOP_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for InProcessController {
    /// A test that failed half-way: shut down and wait (on this thread; the
    /// controller's task runs on another) so the managed Mosquitto is gone
    /// before the test's temporary directory is.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let multi_thread = tokio::runtime::Handle::try_current()
            .map(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
            .unwrap_or(false);
        if multi_thread {
            let _ = self.stopped.recv_timeout(STOP_TIMEOUT);
        }
    }
}
