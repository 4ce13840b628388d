//! The audit log: filtered by actor, action, target and dates, newest
//! first, with the whole chain's verification on top.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use fleet_api::dates::{parse as parse_date, TEHRAN_OFFSET_MIN};
use fleet_api::endpoints as endpoint;
use fleet_api::types::AuditQuery;
use maud::html;
use serde::Deserialize;

use super::i18n::Msg;
use super::layout::{self, Nav};
use super::{error_page, Viewer};
use crate::http::api;
use crate::http::{ApiError, AppState};

/// Entries on one page.
const LIMIT: u32 = 200;

#[derive(Deserialize, Default)]
pub struct Filter {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    /// A date as operators write it (Jalali below year 1700).
    since: Option<String>,
    until: Option<String>,
}

fn nonempty(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

pub async fn page(State(st): State<AppState>, v: Viewer, Query(f): Query<Filter>) -> Response {
    if !v.may(&endpoint::AUDIT) {
        return error_page(&v, &ApiError::NotPermitted(v.caller.principal.role));
    }
    let date = |field: &'static str, s: &Option<String>| {
        nonempty(s)
            .map(|s| {
                parse_date(&s, TEHRAN_OFFSET_MIN).map_err(|e| ApiError::BadField {
                    field,
                    reason: e.to_string(),
                })
            })
            .transpose()
    };
    let (since_ms, until_ms) = match (date("since", &f.since), date("until", &f.until)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return error_page(&v, &e),
    };
    let q = AuditQuery {
        actor: nonempty(&f.actor),
        target: nonempty(&f.target),
        action: nonempty(&f.action),
        since_ms,
        until_ms,
        limit: Some(LIMIT),
        seq: None,
    };
    let entries = match api::audit::audit_list(State(st.clone()), Query(q)).await {
        Ok(Json(e)) => e,
        Err(e) => return error_page(&v, &e),
    };
    let verified = match api::audit::audit_verify(State(st.clone())).await {
        Ok(Json(v)) => v,
        Err(e) => return error_page(&v, &e),
    };
    let lang = v.lang;
    let content = html! {
        h1 { (v.t(Msg::Audit)) }
        @if verified.intact {
            p.note.ok role="status" {
                (v.t(Msg::ChainIntact)) " · " (lang.count(verified.entries.unwrap_or(0))) " " (v.t(Msg::Entries))
                @if let Some(h) = &verified.head_hash { " · " (v.t(Msg::Head)) " " code { (h) } }
            }
        } @else {
            p.note.bad role="alert" {
                (v.t(Msg::ChainBroken)) " "
                @if let Some(s) = verified.first_broken { "#" (lang.count(s)) " " }
                @if let Some(r) = &verified.reason { (r) }
            }
        }
        form.filters method="get" action="/ui/audit" role="search" {
            div { label for="a-actor" { (v.t(Msg::Actor)) } input id="a-actor" name="actor" value=[f.actor.as_deref()] size="14"; }
            div { label for="a-action" { (v.t(Msg::Action)) } input id="a-action" name="action" value=[f.action.as_deref()] placeholder="device." size="14"; }
            div { label for="a-target" { (v.t(Msg::TargetOf)) } input id="a-target" name="target" value=[f.target.as_deref()] size="14"; }
            div { label for="a-since" { (v.t(Msg::From)) } input id="a-since" name="since" value=[f.since.as_deref()] placeholder="1404-01-01" size="11"; }
            div { label for="a-until" { (v.t(Msg::To)) } input id="a-until" name="until" value=[f.until.as_deref()] size="11"; }
            div { button type="submit" { (v.t(Msg::Filter)) } }
        }
        p.muted { (lang.count(entries.len() as u64)) " " (v.t(Msg::Entries)) @if entries.len() as u32 == LIMIT { " (" (v.t(Msg::NewestOnly)) ")" } }
        table {
            thead { tr {
                th.n scope="col" { "#" }
                th scope="col" { (v.t(Msg::When)) }
                th scope="col" { (v.t(Msg::Actor)) }
                th scope="col" { (v.t(Msg::Action)) }
                th scope="col" { (v.t(Msg::TargetOf)) }
                th scope="col" { (v.t(Msg::Source)) }
                th scope="col" { (v.t(Msg::Detail)) }
            } }
            tbody {
                @for e in &entries {
                    tr {
                        td.n { (lang.count(e.seq)) }
                        td.nowrap { (lang.datetime(e.at_ms)) }
                        td { (e.actor) " " span.muted { (e.role) } }
                        td { code { (e.action) } }
                        td { (e.target) }
                        td { (e.source) }
                        td.detail { code dir="ltr" { (e.detail) } }
                    }
                }
            }
        }
    };
    layout::page(&v, v.t(Msg::Audit), Nav::Audit, None, content).into_response()
}
