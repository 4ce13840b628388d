//! The device list with its filters, a device's page, and the actions on
//! it (run checks, reboot, ship, deploy, retire). Every action asks for a
//! confirmation first (a page of its own, so it works without script),
//! then calls the API's own handler after the API's permission check:
//! scope, audit and refusals are the API's.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use fleet_api::endpoints as endpoint;
use fleet_api::types::{
    CommandRequest, DeviceDetail, DevicePage, DeviceQuery, Lifecycle, LifecycleMove, Readiness,
    Reason,
};
use fleet_protocol::ProvinceCode;
use maud::{html, Markup};
use serde::Deserialize;

use super::i18n::{Lang, Msg};
use super::layout::{self, Nav};
use super::{encode, error_page, permitted, Posted, Viewer};
use crate::clock::unix_ms;
use crate::domain::lifecycle::Rules;
use crate::http::api;
use crate::http::{ApiError, AppState};

const PER_PAGE: u64 = 50;

fn readiness_tag(lang: Lang, r: Readiness) -> Markup {
    html! { span.tag.(r.as_str()) { (lang.readiness(r)) } }
}

pub async fn list(State(st): State<AppState>, v: Viewer, Query(q): Query<DeviceQuery>) -> Response {
    if !v.may(&endpoint::DEVICES) {
        return error_page(&v, &ApiError::NotPermitted(v.caller.principal.role));
    }
    let q = DeviceQuery {
        per_page: Some(PER_PAGE),
        ..q
    };
    let page = match api::devices::list_devices(
        State(st.clone()),
        Extension(v.caller.clone()),
        Query(q.clone()),
    )
    .await
    {
        Ok(Json(p)) => p,
        Err(e) => return error_page(&v, &e),
    };
    let content = list_content(&v, &q, &page);
    layout::page(&v, v.t(Msg::Devices), Nav::Devices, None, content).into_response()
}

/// The query string of `q` at another page.
fn query_at(q: &DeviceQuery, page: u64) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("province", &q.province),
        ("county", &q.county),
        ("station", &q.station),
        ("model", &q.model),
        ("readiness", &q.readiness),
    ] {
        if let Some(v) = v.as_deref().filter(|s| !s.is_empty()) {
            parts.push(format!("{k}={}", encode(v)));
        }
    }
    parts.push(format!("page={page}"));
    parts.join("&")
}

fn list_content(v: &Viewer, q: &DeviceQuery, page: &DevicePage) -> Markup {
    let lang = v.lang;
    let now = unix_ms();
    let provinces: Vec<ProvinceCode> = ProvinceCode::all()
        .filter(|p| v.caller.principal.sees(*p))
        .collect();
    let pages = page.total.div_ceil(page.per_page.max(1)).max(1);
    let selected = |want: &Option<String>, have: &str| want.as_deref() == Some(have);
    html! {
        h1 { (v.t(Msg::Devices)) }
        form.filters method="get" action="/ui/devices" role="search" {
            div {
                label for="f-province" { (v.t(Msg::Province)) }
                select id="f-province" name="province" {
                    @if provinces.len() > 1 { option value="" { (v.t(Msg::Any)) } }
                    @for p in &provinces {
                        option value=(p) selected[selected(&q.province, &p.to_string())] { (lang.province(*p)) }
                    }
                }
            }
            div {
                label for="f-county" { (v.t(Msg::County)) }
                input id="f-county" name="county" value=[q.county.as_deref()] placeholder=[provinces.first().map(|p| format!("{p}-…"))] size="12";
            }
            div {
                label for="f-station" { (v.t(Msg::Station)) }
                input id="f-station" name="station" value=[q.station.as_deref()] size="10";
            }
            div {
                label for="f-readiness" { (v.t(Msg::Readiness)) }
                select id="f-readiness" name="readiness" {
                    option value="" { (v.t(Msg::Any)) }
                    option value="ready" selected[selected(&q.readiness, "ready")] { (v.t(Msg::Ready)) }
                    @for r in Reason::ALL {
                        option value=(r.as_str()) selected[selected(&q.readiness, r.as_str())] { (lang.reason(r)) }
                    }
                }
            }
            div {
                label for="f-model" { (v.t(Msg::Model)) }
                input id="f-model" name="model" value=[q.model.as_deref()] size="14";
            }
            div { button type="submit" { (v.t(Msg::Filter)) } }
        }
        p.muted {
            (lang.count(page.total)) " " (v.t(Msg::DevicesWord)) " · "
            (v.t(Msg::PageOf)) " " (lang.count(page.page)) " " (v.t(Msg::Of)) " " (lang.count(pages))
        }
        table {
            thead {
                tr {
                    th scope="col" { (v.t(Msg::Device)) }
                    th scope="col" { (v.t(Msg::Model)) }
                    th scope="col" { (v.t(Msg::Province)) }
                    th scope="col" { (v.t(Msg::County)) }
                    th scope="col" { (v.t(Msg::Station)) }
                    th scope="col" { (v.t(Msg::Lifecycle)) }
                    th scope="col" { (v.t(Msg::Readiness)) }
                    th scope="col" { (v.t(Msg::Firmware)) }
                    th scope="col" { (v.t(Msg::LastSeen)) }
                }
            }
            tbody {
                @for d in &page.items {
                    tr {
                        th scope="row" { a href={ "/ui/devices/" (d.id) } { (d.id) } }
                        td { (d.model) }
                        td { (lang.province(d.province)) }
                        td { @if let Some(c) = &d.county { (c) } }
                        td { @if let Some(s) = &d.station { (s) } }
                        td { (lang.lifecycle(d.lifecycle)) }
                        td { (readiness_tag(lang, d.readiness)) }
                        td { @if let Some(f) = &d.firmware { (f) } }
                        td { @match d.last_seen_ms { Some(ms) => (lang.ago(ms, now)), None => (v.t(Msg::Never)) } }
                    }
                }
            }
        }
        nav.pager aria-label=(v.t(Msg::PageOf)) {
            @if page.page > 1 {
                a rel="prev" href={ "/ui/devices?" (query_at(q, page.page - 1)) } { (v.t(Msg::Previous)) }
            }
            @if page.page < pages {
                a rel="next" href={ "/ui/devices?" (query_at(q, page.page + 1)) } { (v.t(Msg::Next)) }
            }
        }
    }
}

/// What can be done to a device from its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    RunChecks,
    Reboot,
    Move(Lifecycle),
}

impl Action {
    const ALL: [Action; 5] = [
        Action::RunChecks,
        Action::Reboot,
        Action::Move(Lifecycle::Shipped),
        Action::Move(Lifecycle::Deployed),
        Action::Move(Lifecycle::Retired),
    ];

    fn as_str(self) -> &'static str {
        match self {
            Action::RunChecks => "run-checks",
            Action::Reboot => "reboot",
            Action::Move(Lifecycle::Shipped) => "ship",
            Action::Move(Lifecycle::Deployed) => "deploy",
            Action::Move(_) => "retire",
        }
    }

    fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    fn label(self) -> Msg {
        match self {
            Action::RunChecks => Msg::RunChecks,
            Action::Reboot => Msg::Reboot,
            Action::Move(Lifecycle::Shipped) => Msg::Ship,
            Action::Move(Lifecycle::Deployed) => Msg::Deploy,
            Action::Move(_) => Msg::Retire,
        }
    }

    /// Whether `v` may do it to a device in `lifecycle` (the API decides
    /// again when it is done).
    fn offered(self, v: &Viewer, lifecycle: Lifecycle) -> bool {
        let caller = &v.caller;
        match self {
            Action::RunChecks | Action::Reboot => {
                permitted(&endpoint::COMMAND, caller) && lifecycle.is_enrolled()
            }
            Action::Move(to) => {
                permitted(&endpoint::MOVE_DEVICE, caller)
                    && caller.principal.may(if to == Lifecycle::Retired {
                        crate::domain::auth::Permission::RetireDevices
                    } else {
                        crate::domain::auth::Permission::MoveDevices
                    })
                    && lifecycle.check_move(to).is_ok()
            }
        }
    }
}

#[derive(Deserialize)]
pub struct DetailQuery {
    /// The action just done (shown once).
    done: Option<String>,
}

async fn fetch(st: &AppState, v: &Viewer, id: &str) -> Result<DeviceDetail, ApiError> {
    if !v.may(&endpoint::DEVICE) {
        return Err(ApiError::NotPermitted(v.caller.principal.role));
    }
    api::devices::device_detail(
        State(st.clone()),
        Extension(v.caller.clone()),
        Path(id.to_owned()),
    )
    .await
    .map(|Json(d)| d)
}

pub async fn detail(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<String>,
    Query(q): Query<DetailQuery>,
) -> Response {
    let d = match fetch(&st, &v, &id).await {
        Ok(d) => d,
        Err(e) => return error_page(&v, &e),
    };
    let done = q.done.as_deref().and_then(Action::parse);
    let content = detail_content(&v, &d, done);
    layout::page(&v, d.device.id.as_str(), Nav::Devices, None, content).into_response()
}

fn detail_content(v: &Viewer, d: &DeviceDetail, done: Option<Action>) -> Markup {
    let lang = v.lang;
    let s = &d.device;
    let now = unix_ms();
    let province = lang.province(s.province);
    let actions: Vec<Action> = Action::ALL
        .into_iter()
        .filter(|a| a.offered(v, s.lifecycle))
        .collect();
    html! {
        nav aria-label="breadcrumb" {
            ol.crumbs {
                li { a href="/ui/" { (v.t(Msg::National)) } }
                li { a href={ "/ui/p/" (s.province) } { (province) } }
                @if let Some(c) = &s.county { li { a href={ "/ui/c/" (c) } { (c) } } }
                li { span aria-current="page" { (s.id) } }
            }
        }
        h1 { (v.t(Msg::Device)) " " (s.id) " " (readiness_tag(lang, s.readiness)) }
        @if let Some(a) = done {
            p.note.ok role="status" { (v.t(a.label())) ": " (v.t(Msg::Done)) }
        }
        div.grid {
            section aria-labelledby="h-reg" {
                h2 id="h-reg" { (v.t(Msg::Registration)) }
                dl.kv {
                    dt { (v.t(Msg::Model)) } dd { (s.model) }
                    dt { (v.t(Msg::Province)) } dd { (province) " (" (s.province) ")" }
                    dt { (v.t(Msg::County)) } dd { @if let Some(c) = &s.county { (c) } @else { "–" } }
                    dt { (v.t(Msg::Station)) } dd { @if let Some(x) = &s.station { (x) } @else { "–" } }
                    dt { (v.t(Msg::Lifecycle)) } dd { (lang.lifecycle(s.lifecycle)) }
                    dt { (v.t(Msg::Presence)) } dd {
                        @match s.presence { Some(fleet_protocol::PresenceStatus::Online) => (v.t(Msg::Online)), Some(fleet_protocol::PresenceStatus::Offline) => (v.t(Msg::Offline)), None => "–" }
                    }
                    dt { (v.t(Msg::LastSeen)) } dd {
                        @match s.last_seen_ms { Some(ms) => { (lang.datetime(ms)) " (" (lang.ago(ms, now)) ")" }, None => (v.t(Msg::Never)) }
                    }
                    dt { (v.t(Msg::Firmware)) } dd { @if let Some(f) = &s.firmware { (f) } @else { "–" } }
                    @if let Some(state) = &d.state {
                        dt { (v.t(Msg::Agent)) } dd { (state.agent) }
                    }
                    dt { (v.t(Msg::Desired)) } dd {
                        @if let Some(f) = &d.desired.firmware { (v.t(Msg::Firmware)) " " (f) } @else { "–" }
                        @if let Some(a) = &d.desired.agent { " · " (v.t(Msg::Agent)) " " (a) }
                    }
                }
            }
            section aria-labelledby="h-health" {
                h2 id="h-health" { (v.t(Msg::Health)) }
                @match &d.health {
                    Some(h) => {
                        dl.kv {
                            dt { (v.t(Msg::Cpu)) } dd { (lang.digits(&format!("{}%", h.cpu_pct))) }
                            dt { (v.t(Msg::Memory)) } dd { (lang.digits(&format!("{}%", h.mem_used_pct))) }
                            dt { (v.t(Msg::Disk)) } dd { (lang.digits(&format!("{}%", h.disk_free_pct))) " " (v.t(Msg::Free)) " (" (lang.count(h.disk_free_mb)) " " (v.t(Msg::Megabytes)) ")" }
                            @if let Some(b) = h.battery_pct { dt { (v.t(Msg::Battery)) } dd { (lang.digits(&format!("{b}%"))) } }
                            @if let Some(t) = h.temp_c { dt { (v.t(Msg::Temperature)) } dd { (lang.digits(&format!("{t} °C"))) } }
                            dt { (v.t(Msg::Uptime)) } dd { (lang.count(h.uptime_s / 3600)) " " (v.t(Msg::Hours)) }
                            @if let Some(at) = d.health_at_ms { dt { (v.t(Msg::When)) } dd { (lang.ago(at, now)) } }
                        }
                    },
                    None => p.muted { (v.t(Msg::Nothing)) },
                }
                h2 id="h-checks" { (v.t(Msg::Checks)) }
                @match &d.state {
                    Some(state) if !state.checks.is_empty() => {
                        ul {
                            @for c in &state.checks {
                                li.(if c.passed { "ok" } else { "bad" }) { (c.name) ": " (if c.passed { "✓" } else { "✗" }) @if let Some(m) = &c.message { " " (m) } }
                            }
                        }
                    },
                    _ => p.muted { (v.t(Msg::Nothing)) },
                }
            }
        }
        @if !actions.is_empty() {
            section aria-labelledby="h-actions" {
                h2 id="h-actions" { (v.t(Msg::Actions)) }
                div.actions {
                    @for a in &actions {
                        form.inline method="post" action={ "/ui/devices/" (s.id) "/act" } {
                            input type="hidden" name="_csrf" value=(v.csrf);
                            input type="hidden" name="action" value=(a.as_str());
                            button type="submit" class=[matches!(a, Action::Move(Lifecycle::Retired)).then_some("danger")] { (v.t(a.label())) }
                        }
                    }
                }
            }
        }
        section aria-labelledby="h-commands" {
            h2 id="h-commands" { (v.t(Msg::Commands)) }
            @if d.commands.is_empty() { p.muted { (v.t(Msg::Nothing)) } } @else {
                table {
                    thead { tr {
                        th scope="col" { (v.t(Msg::Kind)) } th scope="col" { (v.t(Msg::When)) }
                        th scope="col" { (v.t(Msg::State)) } th scope="col" { (v.t(Msg::Result)) }
                    } }
                    tbody {
                        @for c in &d.commands {
                            tr {
                                td { (c.action) " " span.muted { (c.id) } }
                                td.nowrap { (lang.datetime(c.issued_ms)) }
                                td data-state=(c.state) { (command_state(lang, &c.state)) }
                                td { (c.message) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="h-update" {
            h2 id="h-update" { (v.t(Msg::UpdateHistory)) }
            @match &d.update {
                Some(u) => p {
                    (u.artifact) " " (u.version) " · "
                    (u.outcome.as_deref().or(u.phase.as_deref()).unwrap_or("–")) " · "
                    (lang.datetime(u.last_event_ms))
                    @if !u.message.is_empty() { " · " (u.message) }
                },
                None => p.muted { (v.t(Msg::Nothing)) },
            }
            @let past: Vec<_> = d.events.iter().filter(|e| e.kind == "update-result").collect();
            @if !past.is_empty() {
                table {
                    caption { (v.t(Msg::UpdateResults)) }
                    thead { tr { th scope="col" { (v.t(Msg::When)) } th scope="col" { (v.t(Msg::Detail)) } } }
                    tbody {
                        @for e in past {
                            tr { td.nowrap { (lang.datetime(e.at_ms)) } td.detail { code { (event_detail(&e.event)) } } }
                        }
                    }
                }
            }
        }
        section aria-labelledby="h-events" {
            h2 id="h-events" { (v.t(Msg::Events)) }
            @if d.events.is_empty() { p.muted { (v.t(Msg::Nothing)) } } @else {
                table {
                    thead { tr { th scope="col" { (v.t(Msg::When)) } th scope="col" { (v.t(Msg::Kind)) } th scope="col" { (v.t(Msg::Detail)) } } }
                    tbody {
                        @for e in &d.events {
                            tr {
                                td.nowrap { (lang.datetime(e.at_ms)) }
                                td { (e.kind) }
                                td.detail { code { (event_detail(&e.event)) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A command's state in the page's language.
fn command_state(lang: Lang, s: &str) -> &str {
    match s {
        "sent" => lang.t(Msg::Sent),
        "ok" => lang.t(Msg::CommandOk),
        "failed" => lang.t(Msg::FailedCount),
        "expired" => lang.t(Msg::Expired),
        other => other,
    }
}

/// An event's fields beyond its kind, short.
fn event_detail(e: &serde_json::Value) -> String {
    let text = match e {
        serde_json::Value::Object(m) => m
            .values()
            .next()
            .map_or_else(String::new, ToString::to_string),
        other => other.to_string(),
    };
    if text.chars().count() > 160 {
        format!("{}…", text.chars().take(160).collect::<String>())
    } else {
        text
    }
}

pub async fn act(
    State(st): State<AppState>,
    Path(id): Path<String>,
    p: Posted<super::ActionForm>,
) -> Response {
    let v = &p.viewer;
    let Some(action) = Action::parse(&p.form.action) else {
        return error_page(
            v,
            &ApiError::BadField {
                field: "action",
                reason: "expected run-checks, reboot, ship, deploy or retire".into(),
            },
        );
    };
    let d = match fetch(&st, v, &id).await {
        Ok(d) => d,
        Err(e) => return error_page(v, &e),
    };
    if p.form.confirm.as_deref() != Some("yes") {
        return confirm_page(v, &d, action).into_response();
    }
    let caller = Extension(v.caller.clone());
    let result = match action {
        Action::RunChecks | Action::Reboot => {
            if !permitted(&endpoint::COMMAND, &v.caller) {
                Err(ApiError::NotPermitted(v.caller.principal.role))
            } else {
                api::commands::send_command(
                    State(st.clone()),
                    caller,
                    Path(id.clone()),
                    Json(CommandRequest {
                        action: action.as_str().to_owned(),
                        expires_in_s: None,
                    }),
                )
                .await
                .map(|_| ())
            }
        }
        Action::Move(to) => {
            if !permitted(&endpoint::MOVE_DEVICE, &v.caller) {
                Err(ApiError::NotPermitted(v.caller.principal.role))
            } else {
                api::enrolment::move_device(
                    State(st.clone()),
                    caller,
                    Path(id.clone()),
                    Json(LifecycleMove::new(to)),
                )
                .await
                .map(|_| ())
            }
        }
    };
    match result {
        Ok(()) => Redirect::to(&format!(
            "/ui/devices/{}?done={}",
            encode(&id),
            action.as_str()
        ))
        .into_response(),
        Err(e) => error_page(v, &e),
    }
}

fn confirm_page(v: &Viewer, d: &DeviceDetail, a: Action) -> Markup {
    let id = d.device.id.as_str();
    layout::confirm(
        v,
        &layout::Confirm {
            nav: Nav::Devices,
            title: v.t(a.label()),
            subject: id,
            consequence: v.t(Msg::ConfirmDevice),
            post_to: &format!("/ui/devices/{id}/act"),
            action: a.as_str(),
            danger: matches!(a, Action::Move(Lifecycle::Retired)),
            back: &format!("/ui/devices/{id}"),
        },
    )
}
