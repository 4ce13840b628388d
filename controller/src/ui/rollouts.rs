//! Rollouts: the list, one rollout's progress per wave and per province
//! with the Mender-style counters (live), its actions for the roles that
//! may (start, abort and retry-failed after a confirmation; pause, the
//! brake, and resume at once), and the fleet's freeze windows with
//! add and clear for the roles that manage firmware. Each action is the
//! API's handler, audited there.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use fleet_api::dates::{parse as parse_date, TEHRAN_OFFSET_MIN};
use fleet_api::endpoints::{self as endpoint, Endpoint};
use fleet_api::types::{
    Counters, FreezeWindowRequest, FreezeWindows, RolloutAction, RolloutPhase, RolloutSummary,
    RolloutView, TimeSpec, WaveState,
};
use maud::{html, Markup};
use serde::Deserialize;

use super::i18n::{Lang, Msg};
use super::layout::{self, Nav};
use super::{error_page, CsrfForm, Posted, Viewer};
use crate::http::api;
use crate::http::{ApiError, AppState};

fn phase(lang: Lang, p: RolloutPhase) -> &'static str {
    lang.t(match p {
        RolloutPhase::Draft => Msg::PhaseDraft,
        RolloutPhase::Running => Msg::PhaseRunning,
        RolloutPhase::Paused => Msg::PhasePaused,
        RolloutPhase::Completed => Msg::PhaseCompleted,
        RolloutPhase::Aborted => Msg::PhaseAborted,
    })
}

/// The counters' columns, in the order a device goes through them.
const COLUMNS: [(Msg, &str); 8] = [
    (Msg::Pending, "pending"),
    (Msg::Downloading, "downloading"),
    (Msg::Installing, "installing"),
    (Msg::Rebooting, "rebooting"),
    (Msg::Succeeded, "succeeded"),
    (Msg::FailedCount, "failed"),
    (Msg::TimedOut, "timed-out"),
    (Msg::Skipped, "skipped"),
];

fn value(c: &Counters, field: &str) -> u32 {
    match field {
        "pending" => c.pending,
        "downloading" => c.downloading,
        "installing" => c.installing,
        "rebooting" => c.rebooting,
        "succeeded" => c.succeeded,
        "failed" => c.failed,
        "timed-out" => c.timed_out,
        "skipped" => c.skipped,
        _ => c.total,
    }
}

fn progress(lang: Lang, key: &str, c: &Counters) -> Markup {
    let done = u64::from(c.succeeded);
    let total = u64::from(c.total);
    let width = (done * 100).checked_div(total).unwrap_or(0);
    html! {
        span.progress role="progressbar" aria-valuemin="0" aria-valuemax=(total) aria-valuenow=(done) {
            i data-bar=(key) style={ "width:" (width) "%" } {}
        }
        " " span data-pct=(key) { (lang.percent(done, total)) }
    }
}

/// Rows of counters: one per wave or province.
fn counters_table(v: &Viewer, caption: &str, rows: &[(String, String, &Counters)]) -> Markup {
    let lang = v.lang;
    html! {
        table {
            caption { (caption) }
            thead { tr {
                th scope="col" { (v.t(Msg::Name)) }
                th scope="col" { (v.t(Msg::Progress)) }
                th.n scope="col" { (v.t(Msg::Total)) }
                @for (label, _) in COLUMNS { th.n scope="col" { (v.t(label)) } }
            } }
            tbody {
                @for (key, label, c) in rows {
                    tr {
                        th scope="row" { (label) }
                        td { (progress(lang, key, c)) }
                        td.n data-k={ (key) ":t" } { (lang.count(u64::from(c.total))) }
                        @for (_, field) in COLUMNS {
                            td.n data-k={ (key) ":" (field) } data-z { (lang.count(u64::from(value(c, field)))) }
                        }
                    }
                }
            }
        }
    }
}

/// A wave's name in the page's language: the canary, a group of
/// provinces (`IR-23+IR-30`) by the names of those the reader sees (the
/// others are "other provinces", never named), or the rest.
fn wave_name(
    lang: Lang,
    name: &str,
    sees: impl Fn(fleet_protocol::ProvinceCode) -> bool,
) -> String {
    match name {
        "canary" => lang.t(Msg::Canary).to_owned(),
        "rest" => lang.t(Msg::Rest).to_owned(),
        group => {
            let mut names = Vec::new();
            let mut hidden = false;
            for code in group.split('+') {
                match fleet_protocol::ProvinceCode::parse(code) {
                    Ok(p) if sees(p) => names.push(lang.province(p).to_owned()),
                    _ => hidden = true,
                }
            }
            if hidden {
                names.push(lang.t(Msg::OtherProvinces).to_owned());
            }
            names.join(" + ")
        }
    }
}

pub async fn list(State(st): State<AppState>, v: Viewer) -> Response {
    if !v.may(&endpoint::ROLLOUTS) {
        return error_page(&v, &ApiError::NotPermitted(v.caller.principal.role));
    }
    let rollouts = match api::rollouts::list(State(st.clone()), Extension(v.caller.clone())).await {
        Ok(Json(r)) => r,
        Err(e) => return error_page(&v, &e),
    };
    let freeze = match api::freeze::freeze(State(st.clone())).await {
        Ok(Json(f)) => f,
        Err(e) => return error_page(&v, &e),
    };
    let content = html! {
        h1 { (v.t(Msg::Rollouts)) }
        (list_table(&v, &rollouts))
        (freeze_section(&v, &freeze))
    };
    layout::page(&v, v.t(Msg::Rollouts), Nav::Rollouts, None, content).into_response()
}

fn list_table(v: &Viewer, rollouts: &[RolloutSummary]) -> Markup {
    let lang = v.lang;
    html! {
        @if rollouts.is_empty() { p.muted { (v.t(Msg::Nothing)) } } @else {
            table {
                thead { tr {
                    th scope="col" { "#" }
                    th scope="col" { (v.t(Msg::Name)) }
                    th scope="col" { (v.t(Msg::Target)) }
                    th scope="col" { (v.t(Msg::State)) }
                    th scope="col" { (v.t(Msg::Wave)) }
                    th scope="col" { (v.t(Msg::Progress)) }
                    th scope="col" { (v.t(Msg::Created)) }
                } }
                tbody {
                    @for r in rollouts {
                        tr {
                            td { (lang.count(r.id)) }
                            th scope="row" { a href={ "/ui/rollouts/" (r.id) } { (r.name) } }
                            td { (r.artifact) " " (r.model) " " (r.version) }
                            td {
                                span.tag { (phase(lang, r.phase)) }
                                @if let Some(why) = &r.paused_reason { " " span.muted { (why) } }
                                @if let Some(held) = &r.held { " " span.warn { (held) } }
                            }
                            td { (lang.count(u64::from(r.wave) + 1)) " / " (lang.count(u64::from(r.wave_count))) }
                            td { (progress(lang, &format!("r{}", r.id), &r.counters)) }
                            td { (lang.datetime(r.created_ms)) }
                        }
                    }
                }
            }
        }
    }
}

fn freeze_section(v: &Viewer, f: &FreezeWindows) -> Markup {
    let lang = v.lang;
    let manage = v.may(&endpoint::ADD_FREEZE);
    html! {
        section aria-labelledby="h-freeze" {
            h2 id="h-freeze" { (v.t(Msg::FreezeWindows)) }
            p.muted { (v.t(Msg::FreezeHelp)) }
            @if f.windows.is_empty() { p.muted { (v.t(Msg::Nothing)) } } @else {
                table {
                    thead { tr {
                        th scope="col" { (v.t(Msg::From)) }
                        th scope="col" { (v.t(Msg::To)) }
                        th scope="col" { (v.t(Msg::Reason)) }
                        th scope="col" { (v.t(Msg::State)) }
                    } }
                    tbody {
                        @for w in &f.windows {
                            tr {
                                td { time datetime=(w.from) { (lang.datetime(w.from_ms)) } }
                                td { time datetime=(w.to) { (lang.datetime(w.to_ms)) } }
                                td { (w.reason) }
                                td { @if w.active { strong.bad { (v.t(Msg::ActiveNow)) } } }
                            }
                        }
                    }
                }
            }
            @if manage {
                form.filters method="post" action="/ui/freeze" {
                    input type="hidden" name="_csrf" value=(v.csrf);
                    div {
                        label for="fz-from" { (v.t(Msg::From)) }
                        input id="fz-from" name="from" required placeholder="1403-12-01" size="16" aria-describedby="fz-help";
                    }
                    div {
                        label for="fz-to" { (v.t(Msg::To)) }
                        input id="fz-to" name="to" required placeholder="1404-01-15" size="16";
                    }
                    div {
                        label for="fz-reason" { (v.t(Msg::Reason)) }
                        input id="fz-reason" name="reason" required size="24";
                    }
                    div { button type="submit" { (v.t(Msg::AddFreeze)) } }
                }
                p.muted id="fz-help" { (v.t(Msg::DateHelp)) }
                @if !f.windows.is_empty() {
                    form method="post" action="/ui/freeze/clear" {
                        input type="hidden" name="_csrf" value=(v.csrf);
                        button.danger type="submit" { (v.t(Msg::ClearFreeze)) }
                    }
                }
            }
        }
    }
}

async fn fetch(st: &AppState, v: &Viewer, id: &str) -> Result<RolloutView, ApiError> {
    if !v.may(&endpoint::ROLLOUT) {
        return Err(ApiError::NotPermitted(v.caller.principal.role));
    }
    api::rollouts::show(
        State(st.clone()),
        Extension(v.caller.clone()),
        Path(id.to_owned()),
    )
    .await
    .map(|Json(r)| r)
}

#[derive(Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

pub async fn show(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Response {
    let r = match fetch(&st, &v, &id).await {
        Ok(r) => r,
        Err(e) => return error_page(&v, &e),
    };
    let done = q
        .done
        .as_deref()
        .and_then(|d| d.parse::<RolloutAction>().ok());
    let content = show_content(&v, &r, done);
    let live = format!("/ui/live/rollout/{}", r.summary.id);
    layout::page(&v, &r.summary.name, Nav::Rollouts, Some(&live), content).into_response()
}

/// The actions the phase allows, and whether each asks first.
fn actions(p: RolloutPhase) -> Vec<(RolloutAction, bool)> {
    use RolloutAction::*;
    match p {
        RolloutPhase::Draft => vec![(Start, true), (Abort, true)],
        RolloutPhase::Running => vec![(Pause, false), (RetryFailed, true), (Abort, true)],
        RolloutPhase::Paused => vec![(Resume, false), (RetryFailed, true), (Abort, true)],
        RolloutPhase::Completed => vec![(RetryFailed, true)],
        RolloutPhase::Aborted => vec![],
    }
}

fn endpoint_of(a: RolloutAction) -> &'static Endpoint {
    match a {
        RolloutAction::Start => &endpoint::START_ROLLOUT,
        RolloutAction::Pause => &endpoint::PAUSE_ROLLOUT,
        RolloutAction::Resume => &endpoint::RESUME_ROLLOUT,
        RolloutAction::Abort => &endpoint::ABORT_ROLLOUT,
        RolloutAction::RetryFailed => &endpoint::RETRY_ROLLOUT,
    }
}

fn action_label(a: RolloutAction) -> Msg {
    match a {
        RolloutAction::Start => Msg::Start,
        RolloutAction::Pause => Msg::Pause,
        RolloutAction::Resume => Msg::Resume,
        RolloutAction::Abort => Msg::Abort,
        RolloutAction::RetryFailed => Msg::RetryFailed,
    }
}

fn show_content(v: &Viewer, r: &RolloutView, done: Option<RolloutAction>) -> Markup {
    let lang = v.lang;
    let s = &r.summary;
    let allowed: Vec<(RolloutAction, bool)> = actions(s.phase)
        .into_iter()
        .filter(|(a, _)| v.may(endpoint_of(*a)))
        .collect();
    let waves: Vec<(String, String, &Counters)> = r
        .waves
        .iter()
        .map(|w| {
            let state = match w.state {
                WaveState::Pending => v.t(Msg::Pending),
                WaveState::Running => v.t(Msg::PhaseRunning),
                WaveState::Done => v.t(Msg::Done),
            };
            (
                format!("w{}", w.index),
                format!(
                    "{} {} · {} ({state})",
                    v.t(Msg::Wave),
                    lang.count(u64::from(w.index) + 1),
                    wave_name(lang, &w.name, |p| v.caller.principal.sees(p))
                ),
                &w.counters,
            )
        })
        .collect();
    let provinces: Vec<(String, String, &Counters)> = r
        .provinces
        .iter()
        .map(|p| {
            (
                p.province.to_string(),
                lang.province(p.province).to_owned(),
                &p.counters,
            )
        })
        .collect();
    html! {
        nav aria-label="breadcrumb" {
            ol.crumbs { li { a href="/ui/rollouts" { (v.t(Msg::Rollouts)) } } li { span aria-current="page" { (s.name) } } }
        }
        h1 { (s.name) " " span.tag data-k="ro:ph" { (phase(lang, s.phase)) } }
        @if let Some(a) = done { p.note.ok role="status" { (v.t(action_label(a))) ": " (v.t(Msg::Done)) } }
        @if let Some(why) = &s.paused_reason { p.note.bad { (v.t(Msg::PhasePaused)) ": " (why) } }
        @if let Some(held) = &s.held { p.note { (held) } }
        dl.kv {
            dt { (v.t(Msg::Target)) } dd { (s.artifact) " " (s.model) " " (s.version) }
            dt { (v.t(Msg::Wave)) } dd { (lang.count(u64::from(s.wave) + 1)) " / " (lang.count(u64::from(s.wave_count))) }
            dt { (v.t(Msg::Progress)) } dd { (progress(lang, "all", &s.counters)) }
            dt { (v.t(Msg::Policy)) } dd {
                (lang.digits(&format!("{}% / {}%", r.policy.failure_threshold_pct, r.policy.success_threshold_pct)))
                " · " (v.t(Msg::MaxDownloads)) " " (lang.count(u64::from(r.policy.max_downloads_per_province)))
                @if let Some(h) = &r.policy.allowed_hours { " · " (lang.digits(h)) }
            }
            dt { (v.t(Msg::Created)) } dd { (lang.datetime(s.created_ms)) " · " (r.created_by) }
        }
        @if !allowed.is_empty() {
            div.actions.no-print {
                @for (a, ask) in &allowed {
                    form.inline method="post" action={ "/ui/rollouts/" (s.id) "/act" } {
                        input type="hidden" name="_csrf" value=(v.csrf);
                        input type="hidden" name="action" value=(a.as_str());
                        @if !ask { input type="hidden" name="confirm" value="yes"; }
                        button type="submit" class=[(*a == RolloutAction::Abort).then_some("danger")] { (v.t(action_label(*a))) }
                    }
                }
            }
        }
        (counters_table(v, v.t(Msg::Waves), &waves))
        (counters_table(v, v.t(Msg::ByProvince), &provinces))
        h2 { (v.t(Msg::Log)) }
        ul {
            @for e in r.log.iter().rev().take(20) {
                li { (lang.datetime(e.at_ms)) " · " (e.kind) @if !e.detail.is_empty() { " · " (e.detail) } }
            }
        }
    }
}

pub async fn act(
    State(st): State<AppState>,
    Path(id): Path<String>,
    p: Posted<super::ActionForm>,
) -> Response {
    let v = &p.viewer;
    let Ok(action) = p.form.action.parse::<RolloutAction>() else {
        return error_page(
            v,
            &ApiError::BadField {
                field: "action",
                reason: "expected start, pause, resume, abort or retry-failed".into(),
            },
        );
    };
    if !v.may(endpoint_of(action)) {
        return error_page(v, &ApiError::NotPermitted(v.caller.principal.role));
    }
    let r = match fetch(&st, v, &id).await {
        Ok(r) => r,
        Err(e) => return error_page(v, &e),
    };
    if p.form.confirm.as_deref() != Some("yes") {
        let id = r.summary.id;
        return layout::confirm(
            v,
            &layout::Confirm {
                nav: Nav::Rollouts,
                title: v.t(action_label(action)),
                subject: &r.summary.name,
                consequence: v.t(Msg::ConfirmRollout),
                post_to: &format!("/ui/rollouts/{id}/act"),
                action: action.as_str(),
                danger: action == RolloutAction::Abort,
                back: &format!("/ui/rollouts/{id}"),
            },
        )
        .into_response();
    }
    let (s, c, path) = (
        State(st.clone()),
        Extension(v.caller.clone()),
        Path(id.clone()),
    );
    let result = match action {
        RolloutAction::Start => api::rollouts::start(s, c, path).await,
        RolloutAction::Pause => {
            let reason = p
                .form
                .reason
                .clone()
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| {
                    format!("paused from the console by {}", v.caller.principal.name)
                });
            let body = serde_json::json!({ "reason": reason }).to_string();
            api::rollouts::pause(s, c, path, Bytes::from(body)).await
        }
        RolloutAction::Resume => api::rollouts::resume(s, c, path).await,
        RolloutAction::Abort => api::rollouts::abort(s, c, path).await,
        RolloutAction::RetryFailed => api::rollouts::retry_failed(s, c, path).await,
    };
    match result {
        Ok(Json(r)) => Redirect::to(&format!(
            "/ui/rollouts/{}?done={}",
            r.summary.id,
            action.as_str()
        ))
        .into_response(),
        Err(e) => error_page(v, &e),
    }
}

/// A rollout's numbers for the live script: per wave (`w0`…), per
/// province, `all`, and the phase (`ro:ph`).
pub async fn live(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    let r = match fetch(&st, &v, &id).await {
        Ok(r) => r,
        Err(e) => return (e.status(), e.to_string()).into_response(),
    };
    let mut rows = serde_json::Map::new();
    let mut put = |key: String, c: &Counters| {
        let mut m = serde_json::Map::new();
        m.insert("t".into(), c.total.into());
        // The bar and percentage show succeeded of total.
        m.insert("r".into(), c.succeeded.into());
        for (_, field) in COLUMNS {
            let n = value(c, field);
            if n > 0 {
                m.insert(field.into(), n.into());
            }
        }
        rows.insert(key, m.into());
    };
    for w in &r.waves {
        put(format!("w{}", w.index), &w.counters);
    }
    for p in &r.provinces {
        put(p.province.to_string(), &p.counters);
    }
    put("all".into(), &r.summary.counters);
    rows.insert(
        "ro".into(),
        serde_json::json!({ "ph": phase(v.lang, r.summary.phase) }),
    );
    super::live_answer(&v, serde_json::json!({ "rows": rows }), &headers)
}

#[derive(Deserialize)]
pub struct FreezeForm {
    #[serde(rename = "_csrf")]
    csrf: String,
    from: String,
    to: String,
    reason: String,
}

impl CsrfForm for FreezeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Add a freeze window; dates as operators write them (Jalali below year
/// 1700, at Tehran time unless an offset is given).
pub async fn add_freeze(State(st): State<AppState>, p: Posted<FreezeForm>) -> Response {
    let v = &p.viewer;
    if !v.may(&endpoint::ADD_FREEZE) {
        return error_page(v, &ApiError::NotPermitted(v.caller.principal.role));
    }
    let when = |field: &'static str, s: &str| {
        parse_date(s.trim(), TEHRAN_OFFSET_MIN).map_err(|e| ApiError::BadField {
            field,
            reason: e.to_string(),
        })
    };
    let (from, to) = match (when("from", &p.form.from), when("to", &p.form.to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => return error_page(v, &e),
    };
    let req = FreezeWindowRequest {
        from: TimeSpec::UnixMs(from),
        to: TimeSpec::UnixMs(to),
        reason: p.form.reason.trim().to_owned(),
    };
    match api::freeze::add_freeze(State(st), Extension(v.caller.clone()), Json(req)).await {
        Ok(_) => Redirect::to("/ui/rollouts#h-freeze").into_response(),
        Err(e) => error_page(v, &e),
    }
}

pub async fn clear_freeze(State(st): State<AppState>, p: Posted<super::PlainForm>) -> Response {
    let v = &p.viewer;
    if !v.may(&endpoint::CLEAR_FREEZE) {
        return error_page(v, &ApiError::NotPermitted(v.caller.principal.role));
    }
    match api::freeze::clear_freeze(State(st), Extension(v.caller.clone())).await {
        Ok(_) => Redirect::to("/ui/rollouts#h-freeze").into_response(),
        Err(e) => error_page(v, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_are_named_in_the_page_language() {
        let all = |_| true;
        assert_eq!(wave_name(Lang::En, "canary", all), "canary");
        assert_eq!(wave_name(Lang::En, "IR-23+IR-30", all), "Tehran + Alborz");
        assert_eq!(wave_name(Lang::Fa, "IR-23", all), "تهران");
        assert_eq!(wave_name(Lang::Fa, "rest", all), "بقیه");
    }

    #[test]
    fn a_reader_sees_only_the_names_of_their_provinces_in_a_wave() {
        let tehran = |p: fleet_protocol::ProvinceCode| p.to_string() == "IR-23";
        assert_eq!(
            wave_name(Lang::En, "IR-23+IR-30", tehran),
            "Tehran + other provinces"
        );
        assert_eq!(wave_name(Lang::En, "IR-30", tehran), "other provinces");
    }
}
