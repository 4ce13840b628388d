//! The web console under `/ui` (decision 0018): server-rendered HTML
//! (maud), one small script for live numbers, every asset embedded.
//!
//! Sign-in takes the same operator tokens as the API and opens a session
//! (cookie `__Host-sandogh`: HttpOnly, Secure, SameSite=Strict). Every
//! request resolves the session's token again, so the role and province
//! scope are the API's, checked by the same code: the console's actions
//! call the API's handlers, after the same permission check the API's
//! router makes ([`permitted`]). Every form carries the session's CSRF
//! token ([`Posted`]); sign-in has a double-submit cookie of its own.

pub mod assets;
mod audit;
mod bench;
mod devices;
pub mod i18n;
mod layout;
mod pdf;
mod readiness;
mod report;
mod rollouts;
pub mod sampler;
pub mod session;

use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use fleet_api::endpoints::{Auth, Endpoint};
use maud::html;
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::access::Caller;
use crate::clock::unix_ms;
use crate::http::{ApiError, AppState};
use i18n::{Lang, Msg};
use session::{Session, SessionError, Sessions};

pub const SESSION_COOKIE: &str = "__Host-sandogh";
pub const LOGIN_COOKIE: &str = "__Host-sandogh-login";

/// `[console]`, as the controller runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleConfig {
    pub sessions: session::Limits,
    pub sample_every: Duration,
    pub sample_keep: Duration,
    /// How often a page polls for its numbers.
    pub live_secs: u64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            sessions: session::Limits::default(),
            sample_every: Duration::from_secs(300),
            sample_keep: Duration::from_secs(30 * 86_400),
            live_secs: 10,
        }
    }
}

/// The console's state in [`AppState`].
#[derive(Debug, Default)]
pub struct Console {
    pub config: ConsoleConfig,
    sessions: Mutex<Sessions>,
}

impl Console {
    pub fn new(config: ConsoleConfig) -> Self {
        Console {
            config,
            sessions: Mutex::new(Sessions::new(config.sessions)),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open sessions (for tests and metrics).
    pub fn session_count(&self) -> usize {
        self.sessions().len()
    }
}

/// 32 random bytes, hex (a session id, a CSRF token).
fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(readiness::national))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/lang", post(set_lang))
        .route("/ui/assets/{name}", get(assets::serve))
        .route("/ui/p/{province}", get(readiness::province))
        .route("/ui/c/{county}", get(readiness::county))
        .route("/ui/live/readiness", get(readiness::live))
        .route("/ui/devices", get(devices::list))
        .route("/ui/devices/{id}", get(devices::detail))
        .route("/ui/devices/{id}/act", post(devices::act))
        .route("/ui/rollouts", get(rollouts::list))
        .route("/ui/rollouts/{id}", get(rollouts::show))
        .route("/ui/rollouts/{id}/act", post(rollouts::act))
        .route("/ui/live/rollout/{id}", get(rollouts::live))
        .route("/ui/freeze", post(rollouts::add_freeze))
        .route("/ui/freeze/clear", post(rollouts::clear_freeze))
        .route("/ui/bench", get(bench::list).post(bench::create))
        .route("/ui/bench/{id}", get(bench::show))
        .route("/ui/bench/{id}/sheet", post(bench::reissue))
        .route("/ui/live/shipment/{id}", get(bench::live))
        .route("/ui/audit", get(audit::page))
        .route("/ui/report", get(report::page))
        .route("/ui/report.pdf", get(report::pdf))
        .layer(axum::middleware::map_response(guard_headers))
}

/// Every console answer: scripts, styles and forms from this origin only,
/// never inside another site's frame, no referrer to elsewhere.
async fn guard_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// A 500 page (the cause is in the controller's log).
fn internal_page(v: &Viewer) -> Response {
    let body = layout::page(
        v,
        v.t(Msg::Refused),
        layout::Nav::None,
        None,
        html! { p.note.bad role="alert" { "internal error; see the controller log" } },
    );
    (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
}

/// The answer to a live request: the document with the time of the
/// answer (`at`), an ETag over its numbers, and 304 when the browser's
/// copy still matches.
pub fn live_answer(v: &Viewer, doc: serde_json::Value, headers: &HeaderMap) -> Response {
    let body = doc.to_string();
    let tag = format!("\"{}\"", assets::short_hash(body.as_bytes(), 8));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h == tag);
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut doc = doc;
        doc["at"] = v.lang.datetime(unix_ms()).into();
        (
            [(header::CONTENT_TYPE, "application/json")],
            doc.to_string(),
        )
            .into_response()
    };
    if let Ok(t) = HeaderValue::from_str(&tag) {
        r.headers_mut().insert(header::ETAG, t);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The signed-in operator of a console request, with the session's
/// language and CSRF token. A request without a live session is sent to
/// the sign-in page (a live-update request gets a bare 401).
pub struct Viewer {
    pub caller: Caller,
    pub lang: Lang,
    pub csrf: String,
    /// This page's path and query (the language switch comes back to it).
    pub path: String,
    /// How often the page polls for its numbers (`[console] live_secs`).
    pub live_secs: u64,
    sid: String,
}

impl Viewer {
    pub fn t(&self, m: Msg) -> &'static str {
        self.lang.t(m)
    }

    /// Whether the caller may use `e` as the API's router would let it.
    pub fn may(&self, e: &Endpoint) -> bool {
        permitted(e, &self.caller)
    }
}

/// The API's own permission check for an endpoint (its `Auth::Bearer`
/// list): what the console offers and does, it checks the same way.
pub fn permitted(e: &Endpoint, caller: &Caller) -> bool {
    match e.auth {
        Auth::Bearer(any_of) => any_of.iter().any(|p| caller.principal.may(*p)),
        Auth::Public | Auth::EnrolmentToken | Auth::UploadTicket => true,
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn source(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<crate::http::tls::Peer>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0 .0.ip().to_string())
}

/// Where a request without a session goes.
pub enum NoSession {
    Login { next: String, expired: bool },
    Bare,
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        match self {
            NoSession::Bare => StatusCode::UNAUTHORIZED.into_response(),
            NoSession::Login { next, expired } => {
                let mut to = format!("/ui/login?next={}", encode(&next));
                if expired {
                    to.push_str("&m=expired");
                }
                Redirect::to(&to).into_response()
            }
        }
    }
}

/// Percent-encoding of a query value (only what a `/ui/…` path holds).
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `Host` a request named, when it is a plain host name or address
/// with an optional port (the enrolment sheet's controller address).
pub fn bench_host(host: Option<&str>) -> Option<&str> {
    host.filter(|h| {
        !h.is_empty()
            && h.len() <= 255
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
    })
}

/// A place to return to after sign-in: a console path, nothing else.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && !n.contains("//")
                && !n.contains('\\')
                && !n.chars().any(|c| c.is_control() || c.is_whitespace()) =>
        {
            n.to_owned()
        }
        _ => "/ui/".to_owned(),
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = NoSession;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, NoSession> {
        let live = parts.uri.path().starts_with("/ui/live/");
        let next = parts
            .uri
            .path_and_query()
            .map_or("/ui/", |p| p.as_str())
            .to_owned();
        let refuse = |expired| {
            if live {
                NoSession::Bare
            } else {
                NoSession::Login {
                    next: next.clone(),
                    expired,
                }
            }
        };
        let Some(sid) = cookie(&parts.headers, SESSION_COOKIE).map(str::to_owned) else {
            return Err(refuse(false));
        };
        let now = unix_ms();
        // A live page polling for its numbers does not keep a session
        // alive: only someone using the console does.
        let touched = if live {
            st.console.sessions().peek(&sid, now)
        } else {
            st.console.sessions().touch(&sid, now)
        };
        let session = match touched {
            Ok(s) => s,
            Err(SessionError::Expired) => return Err(refuse(true)),
            Err(SessionError::Unknown) => return Err(refuse(false)),
        };
        let principal = match st.access.authenticate(&session.token, now) {
            Ok(p) => p,
            Err(why) => {
                // Revoked or expired since sign-in: the session ends with it.
                let why = crate::http::Unauthenticated::from(why);
                metrics::counter!("fleet_auth_failures_total", "reason" => why.reason())
                    .increment(1);
                st.console.sessions().close(&sid);
                return Err(refuse(true));
            }
        };
        Ok(Viewer {
            caller: Caller {
                principal,
                source: source(parts),
            },
            lang: session.lang,
            csrf: session.csrf,
            // A page answering a form comes back to the console's home:
            // its own address is not one to GET again.
            path: if parts.method == axum::http::Method::GET {
                safe_next(Some(&next))
            } else {
                "/ui/".to_owned()
            },
            live_secs: st.console.config.live_secs,
            sid,
        })
    }
}

/// A form with the session's CSRF token (`_csrf`), from the console's own
/// origin.
pub trait CsrfForm {
    fn csrf(&self) -> &str;
}

/// A console form post: a live session, the same origin (when the browser
/// says), and the session's CSRF token in the form; else 403 and nothing
/// is done.
pub struct Posted<T> {
    pub viewer: Viewer,
    pub form: T,
}

impl<T> FromRequest<AppState> for Posted<T>
where
    T: DeserializeOwned + CsrfForm + Send,
{
    type Rejection = Response;

    async fn from_request(req: Request, st: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, st)
            .await
            .map_err(IntoResponse::into_response)?;
        if !same_origin(&parts.headers) {
            return Err(refusal(&viewer, "the form came from another site"));
        }
        let req = Request::from_parts(parts, body);
        let Form(form) = Form::<T>::from_request(req, st)
            .await
            .map_err(|e| refusal(&viewer, &e.body_text()))?;
        if !session::same(form.csrf(), &viewer.csrf) {
            return Err(refusal(
                &viewer,
                "the form's security token is missing or stale; reload the page and try again",
            ));
        }
        Ok(Posted { viewer, form })
    }
}

/// `Origin` (or failing that `Referer`), when the browser sends one, names
/// this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let from = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    match (from, host) {
        (None, _) => true,
        (Some(from), Some(host)) => {
            let rest = from
                .strip_prefix("https://")
                .or_else(|| from.strip_prefix("http://"));
            rest.is_some_and(|r| r.split('/').next() == Some(host))
        }
        (Some(_), None) => false,
    }
}

fn refusal(v: &Viewer, why: &str) -> Response {
    let body = layout::page(
        v,
        v.t(Msg::Refused),
        layout::Nav::None,
        None,
        html! { p.note.bad role="alert" { (why) } },
    );
    (StatusCode::FORBIDDEN, body).into_response()
}

/// An API error as a console page, with the API's status and message.
pub fn error_page(v: &Viewer, e: &ApiError) -> Response {
    let status = e.status();
    let msg = if status.is_server_error() {
        tracing::error!(error = %e, "console request failed");
        "internal error; see the controller log".to_owned()
    } else {
        e.to_string()
    };
    let title = match status {
        StatusCode::NOT_FOUND => v.t(Msg::NotFound),
        StatusCode::FORBIDDEN => v.t(Msg::Forbidden),
        _ => v.t(Msg::Refused),
    };
    let body = layout::page(
        v,
        title,
        layout::Nav::None,
        None,
        html! { p.note.bad role="alert" { (msg) } },
    );
    (status, body).into_response()
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn set_cookie(r: &mut Response, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    lang: Option<String>,
    /// `expired` or `out`: why the page is shown.
    m: Option<String>,
}

fn login_lang(q_lang: Option<&str>, headers: &HeaderMap) -> Lang {
    q_lang.and_then(Lang::parse).unwrap_or_else(|| {
        Lang::from_accept(
            headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        )
    })
}

async fn login_page(Query(q): Query<LoginQuery>, headers: HeaderMap) -> Response {
    let lang = login_lang(q.lang.as_deref(), &headers);
    let note = match q.m.as_deref() {
        Some("expired") => Some((lang.t(Msg::SessionEnded), "")),
        Some("out") => Some((lang.t(Msg::SignedOut), "ok")),
        _ => None,
    };
    login_form(lang, &safe_next(q.next.as_deref()), note, StatusCode::OK)
}

/// The sign-in page with a fresh double-submit CSRF token.
fn login_form(lang: Lang, next: &str, note: Option<(&str, &str)>, status: StatusCode) -> Response {
    let csrf = random_hex();
    let other = lang.other();
    let body = html! {
        (maud::DOCTYPE)
        html lang=(lang.as_str()) dir=(lang.dir()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (lang.t(Msg::SignIn)) " · " (lang.t(Msg::Console)) }
                link rel="stylesheet" href=(assets::url("app.css"));
            }
            body {
                main.login id="main" {
                    h1 { (lang.t(Msg::Console)) }
                    @if let Some((text, class)) = note {
                        p.note.(class) role="status" { (text) }
                    }
                    form method="post" action="/ui/login" {
                        input type="hidden" name="_csrf" value=(csrf);
                        input type="hidden" name="next" value=(next);
                        input type="hidden" name="lang" value=(lang.as_str());
                        label for="token" { (lang.t(Msg::Token)) }
                        input id="token" name="token" type="password" autocomplete="off"
                            required autofocus aria-describedby="token-help";
                        p.muted id="token-help" { (lang.t(Msg::TokenHelp)) }
                        button type="submit" { (lang.t(Msg::SignIn)) }
                    }
                    p {
                        a href={ "/ui/login?lang=" (other.as_str()) "&next=" (encode(next)) }
                            lang=(other.as_str()) hreflang=(other.as_str()) { (other.name()) }
                    }
                }
            }
        }
    };
    let mut r = (status, body).into_response();
    set_cookie(
        &mut r,
        format!("{LOGIN_COOKIE}={csrf}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=3600"),
    );
    no_store(r)
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    #[serde(rename = "_csrf")]
    csrf: String,
    next: Option<String>,
    lang: Option<String>,
}

async fn login(
    State(st): State<AppState>,
    connect: Option<axum::Extension<ConnectInfo<crate::http::tls::Peer>>>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let lang = login_lang(f.lang.as_deref(), &headers);
    let next = safe_next(f.next.as_deref());
    let source = connect.map_or_else(|| "unknown".to_owned(), |c| c.0 .0 .0.ip().to_string());
    let csrf_ok = cookie(&headers, LOGIN_COOKIE).is_some_and(|c| session::same(c, &f.csrf))
        && same_origin(&headers);
    if !csrf_ok {
        return login_form(
            lang,
            &next,
            Some((
                "The sign-in form was stale or came from elsewhere; try again.",
                "bad",
            )),
            StatusCode::FORBIDDEN,
        );
    }
    let now = unix_ms();
    let principal = match st.access.authenticate(f.token.trim(), now) {
        Ok(p) => p,
        Err(why) => {
            let why = crate::http::Unauthenticated::from(why);
            metrics::counter!("fleet_auth_failures_total", "reason" => why.reason()).increment(1);
            if let Some(not_logged) = st.access.auth_failure_to_log(&source, now) {
                tracing::warn!(%source, reason = why.reason(), not_logged_since_last = not_logged,
                    "console sign-in refused (logged once a minute per address)");
            }
            return login_form(
                lang,
                &next,
                Some((lang.t(Msg::BadToken), "bad")),
                StatusCode::UNAUTHORIZED,
            );
        }
    };
    let caller = Caller { principal, source };
    if let Err(e) = st
        .access
        .record(
            &caller,
            "console.sign-in",
            &caller.principal.token_id,
            serde_json::json!({}),
        )
        .await
    {
        tracing::error!(error = %e, "cannot record a console sign-in");
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot write the audit log",
        )
            .into_response();
    }
    // The operator's language, as last chosen; else the sign-in page's.
    let lang = match st.store.console_lang(&caller.principal.token_id).await {
        Ok(Some(l)) => Lang::parse(&l).unwrap_or(lang),
        _ => lang,
    };
    let sid = random_hex();
    let opened = st.console.sessions().open(
        sid.clone(),
        Session {
            token: f.token.trim().to_owned(),
            token_id: caller.principal.token_id.clone(),
            csrf: random_hex(),
            lang,
            opened_ms: now,
            last_ms: now,
        },
        now,
    );
    if let Err(full) = opened {
        tracing::warn!(error = %full, "console sign-in refused");
        return login_form(
            lang,
            &next,
            Some((lang.t(Msg::ConsoleFull), "bad")),
            StatusCode::SERVICE_UNAVAILABLE,
        );
    }
    let max_age = st.console.config.sessions.max_age_ms / 1000;
    let mut r = Redirect::to(&next).into_response();
    set_cookie(
        &mut r,
        format!(
            "{SESSION_COOKIE}={sid}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}"
        ),
    );
    set_cookie(
        &mut r,
        format!("{LOGIN_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    no_store(r)
}

/// A device's or a rollout's action: its name, `confirm=yes` once the
/// confirmation page was answered, and a reason where one is asked (a
/// rollout's pause).
#[derive(Deserialize)]
pub struct ActionForm {
    #[serde(rename = "_csrf")]
    csrf: String,
    action: String,
    confirm: Option<String>,
    reason: Option<String>,
}

impl CsrfForm for ActionForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// A form with nothing but its CSRF token (and where to go next).
#[derive(Deserialize)]
pub struct PlainForm {
    #[serde(rename = "_csrf")]
    csrf: String,
    next: Option<String>,
    lang: Option<String>,
}

impl CsrfForm for PlainForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn logout(State(st): State<AppState>, p: Posted<PlainForm>) -> Response {
    st.console.sessions().close(&p.viewer.sid);
    let c = &p.viewer.caller;
    if let Err(e) = st
        .access
        .record(
            c,
            "console.sign-out",
            &c.principal.token_id,
            serde_json::json!({}),
        )
        .await
    {
        tracing::error!(error = %e, "cannot record a console sign-out");
    }
    let mut r =
        Redirect::to(&format!("/ui/login?m=out&lang={}", p.viewer.lang.as_str())).into_response();
    set_cookie(
        &mut r,
        format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    no_store(r)
}

/// Switch the language: for this session at once, and remembered for the
/// operator's next sign-in.
async fn set_lang(State(st): State<AppState>, p: Posted<PlainForm>) -> Response {
    let Some(lang) = p.form.lang.as_deref().and_then(Lang::parse) else {
        return refusal(&p.viewer, "lang: expected en or fa");
    };
    st.console.sessions().set_lang(&p.viewer.sid, lang);
    if let Err(e) = st
        .store
        .set_console_lang(
            &p.viewer.caller.principal.token_id,
            lang.as_str(),
            unix_ms(),
        )
        .await
    {
        tracing::warn!(error = %e, "cannot remember a console language");
    }
    Redirect::to(&safe_next(p.form.next.as_deref())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_console_path_is_a_place_to_return_to() {
        assert_eq!(
            safe_next(Some("/ui/p/IR-02?sort=name")),
            "/ui/p/IR-02?sort=name"
        );
        for bad in [
            "https://evil.example/ui/",
            "//evil.example/ui/",
            "/ui//evil.example",
            "/ui/\\evil",
            "/ui/\n",
            "/ui/a b",
            "/api/v1/tokens",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/ui/");
    }

    #[test]
    fn a_host_header_is_a_host_name_and_port_or_nothing() {
        assert_eq!(bench_host(Some("console.test")), Some("console.test"));
        assert_eq!(bench_host(Some("10.1.2.3:8443")), Some("10.1.2.3:8443"));
        assert_eq!(bench_host(Some("[::1]:8080")), Some("[::1]:8080"));
        assert_eq!(bench_host(Some("a b")), None);
        assert_eq!(bench_host(Some("x/y")), None);
        assert_eq!(bench_host(Some(&"a".repeat(300))), None);
        assert_eq!(bench_host(None), None);
    }
}
