//! Bearer-token authentication and the caller's permission and scope checks.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use fleet_protocol::ProvinceCode;
use tracing::warn;

use crate::access::Caller;
use crate::clock::unix_ms;
use crate::domain::auth::Permission;
use crate::http::{ApiError, AppState, Unauthenticated};

/// Resolve the bearer token into the caller, or refuse with 401. Every
/// refusal is counted in `fleet_auth_failures_total{reason}` and logged,
/// at most once a minute per source address (with how many were not).
pub async fn authenticate(
    State(st): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let source = req
        .extensions()
        .get::<ConnectInfo<super::tls::Peer>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0 .0.ip().to_string());
    let now = unix_ms();
    let principal = match bearer(req.headers())
        .and_then(|token| Ok(st.access.authenticate(token, now)?))
    {
        Ok(p) => p,
        Err(why) => {
            metrics::counter!("fleet_auth_failures_total", "reason" => why.reason()).increment(1);
            if let Some(not_logged) = st.access.auth_failure_to_log(&source, now) {
                warn!(
                    %source,
                    reason = why.reason(),
                    path = req.uri().path(),
                    not_logged_since_last = not_logged,
                    "authentication failed (logged once a minute per address; all are counted in fleet_auth_failures_total)"
                );
            }
            return Err(why.into());
        }
    };
    req.extensions_mut().insert(Caller { principal, source });
    Ok(next.run(req).await)
}

/// The token of `Authorization: Bearer TOKEN` (an operator's, or a log
/// upload's ticket).
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Result<&str, Unauthenticated> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(Unauthenticated::Missing)?;
    Ok(header
        .strip_prefix("Bearer ")
        .ok_or(Unauthenticated::NotBearer)?
        .trim())
}

/// Refuse a caller whose role has none of `any_of` (the route's entry in
/// the endpoint table); runs after [`authenticate`].
pub async fn require_any(
    any_of: &'static [Permission],
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = req
        .extensions()
        .get::<Caller>()
        .ok_or(Unauthenticated::Missing)?;
    if !any_of.iter().any(|p| caller.principal.may(*p)) {
        return Err(ApiError::NotPermitted(caller.principal.role));
    }
    Ok(next.run(req).await)
}

impl Caller {
    pub fn require(&self, p: Permission) -> Result<(), ApiError> {
        if self.principal.may(p) {
            Ok(())
        } else {
            Err(ApiError::NotPermitted(self.principal.role))
        }
    }

    /// Refuse an explicit province outside the caller's scope.
    pub fn require_province(&self, p: ProvinceCode) -> Result<(), ApiError> {
        if self.principal.sees(p) {
            Ok(())
        } else {
            Err(ApiError::OutOfScope(self.principal.provinces.clone()))
        }
    }
}
