//! The driver's [`Repository`]: the TUF client (`update::tuf`) and the
//! trusted clock (`update::clock`) behind the driver's one question, "the
//! verified target NAME".

use fleet_protocol::ArtifactKind;

use super::config::UpdateConfig;
use super::driver::Repository;
use super::machine::{Refusal, Target};

pub struct TufRepository {
    _cfg: UpdateConfig,
}

impl TufRepository {
    pub fn new(cfg: &UpdateConfig) -> Self {
        Self { _cfg: cfg.clone() }
    }
}

impl Repository for TufRepository {
    fn check(
        &self,
        name: String,
        _artifact: ArtifactKind,
        _now_ms: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Target, Refusal>> + Send>> {
        Box::pin(async move {
            Err(Refusal {
                reason: format!("{name}: the TUF client is not in this build yet"),
                permanent: false,
            })
        })
    }
}
