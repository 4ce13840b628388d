//! The rollouts' I/O loop: one task owns every [`Engine`] (the pure state
//! machine in `domain::rollout`) and does what they decide. API handlers
//! send it requests through a [`Rollouts`] handle (mpsc, answered on a
//! oneshot); the store writer and the update sweeper tell it of every
//! update track they changed, after their commit.
//!
//! Each tick (`[rollouts] tick_ms`): feed every live engine a `Tick` with
//! the world (now, freeze windows with their reasons, who is online),
//! release what they decide through `ingest::update_desired` (only the
//! rollout's field of the device's desired state changes, with the
//! member's attempt), and write every member and status that changed with
//! the log lines in one transaction. Every 10 ticks, devices registered
//! later that match a selector with `include_new` join. On start every
//! rollout not aborted is restored from the store and the current tracks
//! of its released members are fed again (the engine ignores what it
//! already knows). An aborted rollout keeps no engine: its summary
//! (counters per province) is kept, its members are read from the store
//! when it is shown.
//!
//! - `spec`: the request past validation.
//! - `view`: the API's views of an engine, in a caller's scope.
//! - `run`: the loop.

mod error;
mod run;
mod spec;
mod view;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use fleet_api::types::{
    MemberState, MemberView, RolloutAction, RolloutRequest, RolloutSummary, RolloutView,
};
use fleet_protocol::{DeviceId, ProvinceCode};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use error::RolloutError;
pub use spec::{parse as parse_spec, Spec};

use crate::access::{Access, Caller};
use crate::domain::fleet::Fleet;
use crate::domain::updates::Track;
use crate::ingest::Publisher;
use crate::store::Store;

/// What the loop needs from its configuration.
#[derive(Debug, Clone, Copy)]
pub struct RolloutsConfig {
    /// One control-loop pass every so often.
    pub tick: Duration,
    /// Devices registered later are offered to `include_new` rollouts
    /// every this many ticks.
    pub join_every_ticks: u64,
}

impl Default for RolloutsConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(1000),
            join_every_ticks: 10,
        }
    }
}

/// Which provinces a reader sees (`None`: all).
pub type Scope = Option<Vec<ProvinceCode>>;

/// The scope of a caller.
pub fn scope_of(caller: &Caller) -> Scope {
    caller
        .principal
        .is_scoped()
        .then(|| caller.principal.provinces.clone())
}

type Reply<T> = oneshot::Sender<Result<T, RolloutError>>;

/// What a handler asks of the loop.
pub(crate) enum Request {
    Create {
        request: Box<RolloutRequest>,
        spec: Box<Spec>,
        caller: Caller,
        reply: Reply<RolloutView>,
    },
    Act {
        id: u64,
        action: RolloutAction,
        reason: Option<String>,
        caller: Caller,
        reply: Reply<RolloutView>,
    },
    List {
        scope: Scope,
        reply: Reply<Vec<RolloutSummary>>,
    },
    Show {
        id: u64,
        scope: Scope,
        reply: Reply<RolloutView>,
    },
    Members {
        id: u64,
        scope: Scope,
        state: Option<MemberState>,
        reply: Reply<Vec<MemberView>>,
    },
}

/// The handle API handlers hold.
#[derive(Clone)]
pub struct Rollouts {
    tx: mpsc::Sender<Request>,
}

impl Rollouts {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, RolloutError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| RolloutError::Stopped)?;
        rx.await.map_err(|_| RolloutError::Stopped)?
    }

    pub async fn create(
        &self,
        request: RolloutRequest,
        spec: Spec,
        caller: Caller,
    ) -> Result<RolloutView, RolloutError> {
        self.ask(|reply| Request::Create {
            request: Box::new(request),
            spec: Box::new(spec),
            caller,
            reply,
        })
        .await
    }

    pub async fn act(
        &self,
        id: u64,
        action: RolloutAction,
        reason: Option<String>,
        caller: Caller,
    ) -> Result<RolloutView, RolloutError> {
        self.ask(|reply| Request::Act {
            id,
            action,
            reason,
            caller,
            reply,
        })
        .await
    }

    pub async fn list(&self, scope: Scope) -> Result<Vec<RolloutSummary>, RolloutError> {
        self.ask(|reply| Request::List { scope, reply }).await
    }

    pub async fn show(&self, id: u64, scope: Scope) -> Result<RolloutView, RolloutError> {
        self.ask(|reply| Request::Show { id, scope, reply }).await
    }

    pub async fn members(
        &self,
        id: u64,
        scope: Scope,
        state: Option<MemberState>,
    ) -> Result<Vec<MemberView>, RolloutError> {
        self.ask(|reply| Request::Members {
            id,
            scope,
            state,
            reply,
        })
        .await
    }
}

/// What the loop works with.
pub struct Deps {
    pub store: Store,
    pub fleet: Arc<RwLock<Fleet>>,
    pub publisher: Publisher,
    pub access: Arc<Access>,
}

/// Where the loop hears of changed update tracks.
///
/// Unbounded on purpose: the store writer sends one entry per track its
/// committed batch changed and must never wait on the loop (it holds the
/// ingest's acknowledgements). What it can hold is bounded by the ingest:
/// update events arrive at most at the broker's per-device rate and the
/// loop drains the channel between its passes (a pass is milliseconds at
/// 100,000 members: `fleet_rollout_tick_seconds`). A loop that stopped
/// draining would be a bug, not load; the entries are small (a device id
/// and a track).
pub type TrackReceiver = mpsc::UnboundedReceiver<(DeviceId, Track)>;

/// The channel the store writer and the sweeper send changed tracks on.
pub fn track_channel() -> (crate::store::TrackSender, TrackReceiver) {
    mpsc::unbounded_channel()
}

/// Start the loop: it restores every rollout from the store first (requests
/// wait meanwhile), then runs until `stop` turns true or its sender is
/// gone (`None`: until every [`Rollouts`] handle is dropped), writing what
/// it holds before it ends.
pub fn spawn(
    deps: Deps,
    cfg: RolloutsConfig,
    tracks: TrackReceiver,
    stop: Option<watch::Receiver<bool>>,
) -> (Rollouts, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(256);
    let handle = tokio::spawn(async move {
        match run::Loop::restore(deps).await {
            Ok(state) => state.run(cfg, rx, tracks, stop).await,
            Err(e) => {
                tracing::error!(error = %e, "cannot restore the rollouts; the rollout API answers 503")
            }
        }
    });
    (Rollouts { tx }, handle)
}
