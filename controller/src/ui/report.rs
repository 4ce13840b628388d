//! The printable readiness report, in Persian or English: the date in
//! both calendars, the national figure, the per-province table, and the
//! devices that are not ready grouped by reason and province. As a page
//! with print CSS (A4), and as a PDF made by the controller (`pdf.rs`).
//! The report covers the operator's scope only.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use fleet_api::endpoints as endpoint;
use fleet_api::types::Reason;
use fleet_protocol::ProvinceCode;
use maud::html;
use serde::Deserialize;

use super::i18n::{Lang, Msg};
use super::layout::{self, Nav};
use super::{error_page, Viewer};
use crate::clock::unix_ms;
use crate::domain::auth::Principal;
use crate::domain::fleet::{DeviceFilter, Fleet};
use crate::domain::readiness::Counts;
use crate::http::{ApiError, AppState};

/// Devices listed per reason and province; the rest are counted.
pub const LISTED_PER_GROUP: usize = 200;

/// One device that is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub device: String,
    pub county: String,
    pub station: String,
    pub last_seen_ms: Option<u64>,
}

/// The devices of one reason in one province.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub reason: Reason,
    pub province: ProvinceCode,
    pub lines: Vec<Line>,
    /// Not listed (beyond [`LISTED_PER_GROUP`]).
    pub more: usize,
}

/// What the report says, in the reader's scope (pure: from the fleet).
#[derive(Debug, Clone)]
pub struct Report {
    pub at_ms: u64,
    pub total: Counts,
    pub provinces: Vec<(ProvinceCode, Counts)>,
    pub groups: Vec<Group>,
}

pub fn build(fleet: &Fleet, who: &Principal, at_ms: u64) -> Report {
    let provinces: Vec<(ProvinceCode, Counts)> = ProvinceCode::all()
        .filter(|p| who.sees(*p))
        .map(|p| (p, fleet.province_counts(p)))
        .filter(|(_, c)| c.total > 0)
        .collect();
    let mut total = Counts::default();
    for (_, c) in &provinces {
        total.merge(c);
    }
    let mut by: BTreeMap<(usize, ProvinceCode), Group> = BTreeMap::new();
    for d in fleet.devices(&DeviceFilter::default()) {
        let Some(reason) = d.reason else { continue };
        if !who.sees(d.reg.province) {
            continue;
        }
        let order = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        let g = by.entry((order, d.reg.province)).or_insert_with(|| Group {
            reason,
            province: d.reg.province,
            lines: vec![],
            more: 0,
        });
        if g.lines.len() < LISTED_PER_GROUP {
            g.lines.push(Line {
                device: d.reg.id.to_string(),
                county: d
                    .reg
                    .county
                    .as_ref()
                    .map_or_else(String::new, ToString::to_string),
                station: d
                    .reg
                    .station
                    .as_ref()
                    .map_or_else(String::new, ToString::to_string),
                last_seen_ms: d.status.last_seen_ms,
            });
        } else {
            g.more += 1;
        }
    }
    Report {
        at_ms,
        total,
        provinces,
        groups: by.into_values().collect(),
    }
}

#[derive(Deserialize)]
pub struct ReportQuery {
    /// `fa` or `en`; the session's language when absent.
    lang: Option<String>,
}

/// The report in the reader's scope, in the language asked for (the
/// session's when none is).
fn report_of(st: &AppState, v: &mut Viewer, q: &ReportQuery) -> Result<Report, ApiError> {
    if let Some(l) = q.lang.as_deref().and_then(Lang::parse) {
        v.lang = l;
    }
    if !v.may(&endpoint::READINESS) {
        return Err(ApiError::NotPermitted(v.caller.principal.role));
    }
    Ok(build(&st.fleet(), &v.caller.principal, unix_ms()))
}

pub async fn page(
    State(st): State<AppState>,
    mut v: Viewer,
    Query(q): Query<ReportQuery>,
) -> Response {
    let r = match report_of(&st, &mut v, &q) {
        Ok(r) => r,
        Err(e) => return error_page(&v, &e),
    };
    let lang = v.lang;
    let reasons = Reason::ALL;
    let content = html! {
        div.actions.no-print {
            button type="button" data-print { (v.t(Msg::Print)) }
            a.button.secondary href={ "/ui/report.pdf?lang=" (lang.as_str()) } { "PDF" }
            a.button.secondary href={ "/ui/report?lang=" (lang.other().as_str()) } lang=(lang.other().as_str()) { (lang.other().name()) }
            a.button.secondary href={ "/ui/report.pdf?lang=" (lang.other().as_str()) } lang=(lang.other().as_str()) { "PDF · " (lang.other().name()) }
        }
        h1 { (v.t(Msg::Report)) }
        p { strong { (lang.both_dates(r.at_ms)) } " · " (lang.datetime(r.at_ms)) }
        p.headline {
            strong { (lang.count(u64::from(r.total.ready))) } " " (v.t(Msg::Of)) " "
            (lang.count(u64::from(r.total.total))) " " (v.t(Msg::DevicesWord)) " " (v.t(Msg::Ready))
            " (" (lang.percent(u64::from(r.total.ready), u64::from(r.total.total))) ")"
        }
        table {
            caption { (v.t(Msg::ByProvince)) }
            thead { tr {
                th scope="col" { (v.t(Msg::Province)) }
                th.n scope="col" { (v.t(Msg::Total)) }
                th.n scope="col" { (v.t(Msg::ReadyCount)) }
                th.n scope="col" { (v.t(Msg::ReadyPct)) }
                @for reason in &reasons { th.n scope="col" { (lang.reason(*reason)) } }
            } }
            tbody {
                @for (p, c) in &r.provinces {
                    tr {
                        th scope="row" { (lang.province(*p)) }
                        td.n { (lang.count(u64::from(c.total))) }
                        td.n { (lang.count(u64::from(c.ready))) }
                        td.n { (lang.percent(u64::from(c.ready), u64::from(c.total))) }
                        @for reason in &reasons { td.n { (lang.count(u64::from(c.reason(*reason)))) } }
                    }
                }
            }
        }
        h2 { (v.t(Msg::NotReadyDevices)) }
        @if r.groups.is_empty() { p { (v.t(Msg::AllReady)) } }
        @for g in &r.groups {
            section.group {
                h3 { (lang.reason(g.reason)) " · " (lang.province(g.province)) " (" (lang.count((g.lines.len() + g.more) as u64)) ")" }
                table {
                    thead { tr {
                        th scope="col" { (v.t(Msg::Device)) }
                        th scope="col" { (v.t(Msg::County)) }
                        th scope="col" { (v.t(Msg::Station)) }
                        th scope="col" { (v.t(Msg::LastSeen)) }
                    } }
                    tbody {
                        @for l in &g.lines {
                            tr {
                                td { bdi { (l.device) } }
                                td { bdi { (l.county) } }
                                td { bdi { (l.station) } }
                                td { @match l.last_seen_ms { Some(ms) => (lang.datetime(ms)), None => (v.t(Msg::Never)) } }
                            }
                        }
                    }
                }
                @if g.more > 0 { p.muted { "+ " (lang.count(g.more as u64)) " " (v.t(Msg::MoreInList)) } }
            }
        }
    };
    layout::page(&v, v.t(Msg::Report), Nav::Report, None, content).into_response()
}

pub async fn pdf(
    State(st): State<AppState>,
    mut v: Viewer,
    Query(q): Query<ReportQuery>,
) -> Response {
    let r = match report_of(&st, &mut v, &q) {
        Ok(r) => r,
        Err(e) => return error_page(&v, &e),
    };
    let lang = v.lang;
    let bytes = match tokio::task::spawn_blocking(move || super::pdf::render(&r, lang)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot make the readiness report's PDF");
            return super::internal_page(&v);
        }
        Err(e) => {
            tracing::error!(error = %e, "the readiness report's PDF task failed");
            return super::internal_page(&v);
        }
    };
    let name = format!(
        "sandogh-readiness-{}-{}.pdf",
        Lang::En.date(unix_ms()),
        lang.as_str()
    );
    let mut resp = bytes.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/pdf"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
