//! The warehouse bench: recent shipments, a new shipment from its CSV
//! (whose printable sheet of QR codes is shown right then: the controller
//! keeps only the tokens' hashes, so the sheet cannot be made later), and
//! one shipment's devices, live, as they register, enrol, pass their
//! self-test and become ready to ship.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use fleet_api::endpoints as endpoint;
use fleet_api::sheet::{self, SheetDevice};
use fleet_api::types::{EnrolBatch, EnrolBatchQuery, Lifecycle, SelfTest, ShipmentStatus};
use maud::{html, Markup, PreEscaped};
use serde::Deserialize;

use super::i18n::{Lang, Msg};
use super::layout::{self, Nav};
use super::{error_page, CsrfForm, Posted, Viewer};
use crate::http::api;
use crate::http::{ApiError, AppState};

/// Shipments listed on the bench page.
const RECENT: u32 = 20;

pub async fn list(State(st): State<AppState>, v: Viewer) -> Response {
    if !v.may(&endpoint::SHIPMENT) {
        return error_page(&v, &ApiError::NotPermitted(v.caller.principal.role));
    }
    let lines = match st.store.recent_shipments(RECENT).await {
        Ok(l) => l,
        Err(e) => return error_page(&v, &ApiError::from(e)),
    };
    // (created, devices, enrolled) per shipment, in scope.
    let mut by: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for l in lines.iter().filter(|l| v.caller.principal.sees(l.province)) {
        let e = by.entry(l.shipment.clone()).or_insert((l.created_ms, 0, 0));
        e.0 = e.0.max(l.created_ms);
        e.1 += 1;
        e.2 += u64::from(l.enrolled_ms.is_some());
    }
    let mut rows: Vec<_> = by.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1 .0));
    let lang = v.lang;
    let content = html! {
        h1 { (v.t(Msg::Bench)) }
        @if rows.is_empty() { p.muted { (v.t(Msg::Nothing)) } } @else {
            table {
                caption { (v.t(Msg::Shipments)) }
                thead { tr {
                    th scope="col" { (v.t(Msg::Shipment)) }
                    th scope="col" { (v.t(Msg::Created)) }
                    th.n scope="col" { (v.t(Msg::Total)) }
                    th.n scope="col" { (v.t(Msg::EnrolledCount)) }
                } }
                tbody {
                    @for (id, (created, n, enrolled)) in &rows {
                        tr {
                            th scope="row" { a href={ "/ui/bench/" (id) } { (id) } }
                            td { (lang.datetime(*created)) }
                            td.n { (lang.count(*n)) }
                            td.n { (lang.count(*enrolled)) }
                        }
                    }
                }
            }
        }
        @if v.may(&endpoint::ENROL_BATCH) {
            section aria-labelledby="h-new" {
                h2 id="h-new" { (v.t(Msg::NewShipment)) }
                p.muted { (v.t(Msg::NewShipmentHelp)) }
                form method="post" action="/ui/bench" {
                    input type="hidden" name="_csrf" value=(v.csrf);
                    label for="csv" { (v.t(Msg::ShipmentCsv)) }
                    textarea id="csv" name="csv" rows="8" cols="60" required dir="ltr"
                        placeholder="serial,model,province,county,station\nBB-0001,ballot-box-v2,IR-02,IR-02-SARI,ST-3" {}
                    div { button type="submit" { (v.t(Msg::RegisterAndPrint)) } }
                }
            }
        }
    };
    layout::page(&v, v.t(Msg::Bench), Nav::Bench, None, content).into_response()
}

#[derive(Deserialize)]
pub struct NewShipment {
    #[serde(rename = "_csrf")]
    csrf: String,
    csv: String,
}

impl CsrfForm for NewShipment {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Register a shipment (the API's handler, audited there) and show its
/// sheet, once.
pub async fn create(
    State(st): State<AppState>,
    headers: HeaderMap,
    p: Posted<NewShipment>,
) -> Response {
    let v = &p.viewer;
    let controller = match may_register(v, &headers) {
        Ok(c) => c,
        Err(e) => return error_page(v, &e),
    };
    register(&st, v, p.form.csv.replace("\r\n", "\n"), &controller).await
}

/// Before registering anything: the role may register shipments, and the
/// request's Host is a host name (the QR codes carry it). The controller's
/// URL, or why not.
fn may_register(v: &Viewer, headers: &HeaderMap) -> Result<String, ApiError> {
    if !v.may(&endpoint::ENROL_BATCH) {
        return Err(ApiError::NotPermitted(v.caller.principal.role));
    }
    controller_url(headers).ok_or_else(|| ApiError::BadField {
        field: "Host",
        reason: "the request's Host header is not a host name and port".into(),
    })
}

/// Register the shipment `csv` through the API's handler (audited there)
/// and show its sheet; bad lines: a 422 page naming them, nothing
/// registered.
async fn register(st: &AppState, v: &Viewer, csv: String, controller: &str) -> Response {
    let batch = match api::enrolment::enrol_batch(
        State(st.clone()),
        Extension(v.caller.clone()),
        Query(EnrolBatchQuery::default()),
        csv,
    )
    .await
    {
        Ok(Json(b)) => b,
        Err(ApiError::Invalid { message, errors }) => {
            let content = html! {
                h1 { (v.t(Msg::NewShipment)) }
                p.note.bad role="alert" { (message) }
                ul { @for e in &errors { li { @if let Some(l) = e.line { (v.t(Msg::Line)) " " (l) ": " } (e.message) } } }
                p { a href="/ui/bench" { (v.t(Msg::Bench)) } }
            };
            let page = layout::page(v, v.t(Msg::NewShipment), Nav::Bench, None, content);
            return (axum::http::StatusCode::UNPROCESSABLE_ENTITY, page).into_response();
        }
        Err(e) => return error_page(v, &e),
    };
    sheet_response(v, &batch, controller)
}

/// A new sheet for the devices of a shipment not enrolled yet: new tokens
/// in a new shipment (the controller cannot show the old ones again; they
/// stay valid until they expire, and each works once).
pub async fn reissue(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    p: Posted<super::PlainForm>,
) -> Response {
    let v = &p.viewer;
    let controller = match may_register(v, &headers) {
        Ok(c) => c,
        Err(e) => return error_page(v, &e),
    };
    let s = match fetch(&st, v, &id).await {
        Ok(s) => s,
        Err(e) => return error_page(v, &e),
    };
    let mut csv = String::from("serial,model,province,county,station\n");
    {
        let fleet = st.fleet();
        for d in s
            .devices
            .iter()
            .filter(|d| d.lifecycle == Lifecycle::Registered)
        {
            if let Some(dev) = fleet.get(&d.device) {
                let r = &dev.reg;
                csv.push_str(&format!(
                    "{},{},{},{},{}\n",
                    r.id,
                    r.model,
                    r.province,
                    r.county
                        .as_ref()
                        .map_or_else(String::new, ToString::to_string),
                    r.station
                        .as_ref()
                        .map_or_else(String::new, ToString::to_string),
                ));
            }
        }
    }
    if csv.lines().count() < 2 {
        return error_page(
            v,
            &ApiError::BadField {
                field: "shipment",
                reason: "every device of this shipment is enrolled already".into(),
            },
        );
    }
    register(&st, v, csv, &controller).await
}

/// The controller's address as the bench reached it (the QR codes carry
/// it): `None` when the request's `Host` is not a host name and port.
fn controller_url(headers: &HeaderMap) -> Option<String> {
    super::bench_host(headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .map(|h| format!("https://{h}"))
}

/// The sheet page, never cached (it holds the tokens).
fn sheet_response(v: &Viewer, batch: &EnrolBatch, controller: &str) -> Response {
    let mut r = sheet_page(v, batch, controller).into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

fn sheet_page(v: &Viewer, b: &EnrolBatch, controller: &str) -> Markup {
    let lang = v.lang;
    let content = html! {
        h1 { (v.t(Msg::Sheet)) " · " (b.shipment) }
        p.note.no-print role="status" { (v.t(Msg::SheetOnce)) }
        div.actions.no-print {
            a.button href={ "/ui/bench/" (b.shipment) } { (v.t(Msg::WatchBench)) }
        }
        p { (lang.count(b.devices.len() as u64)) " " (v.t(Msg::DevicesWord)) " · " (v.t(Msg::Expires)) " " (lang.datetime(b.expires_at_ms)) }
        div.sheet {
            @for d in &b.devices {
                @let sd = SheetDevice { device: d.device.to_string(), token: d.token.clone() };
                div.card {
                    div { (PreEscaped(sheet::svg(&sheet::qr_payload(controller, &sd), 150))) }
                    div dir="ltr" {
                        div.serial { (d.device) }
                        div { "token " code { (d.token) } }
                        div { code { "fleet-agent enrol --controller " (controller) " --token " (d.token) } }
                    }
                }
            }
        }
    };
    layout::page(v, v.t(Msg::Sheet), Nav::Bench, None, content)
}

async fn fetch(st: &AppState, v: &Viewer, id: &str) -> Result<ShipmentStatus, ApiError> {
    if !v.may(&endpoint::SHIPMENT) {
        return Err(ApiError::NotPermitted(v.caller.principal.role));
    }
    api::enrolment::shipment_status(
        State(st.clone()),
        Extension(v.caller.clone()),
        Path(id.to_owned()),
    )
    .await
    .map(|Json(s)| s)
}

fn self_test(lang: Lang, s: SelfTest) -> &'static str {
    lang.t(match s {
        SelfTest::Passed => Msg::Passed,
        SelfTest::Failed => Msg::FailedCount,
        SelfTest::NotYet => Msg::NotYet,
    })
}

/// The bench's four stages for one device: registered, enrolled, passed
/// its self-test, ready to ship.
fn stage_counts(s: &ShipmentStatus) -> (u64, u64, u64, u64) {
    let n = s.devices.len() as u64;
    let enrolled = s
        .devices
        .iter()
        .filter(|d| d.lifecycle != Lifecycle::Registered)
        .count() as u64;
    let passed = s
        .devices
        .iter()
        .filter(|d| d.self_test == SelfTest::Passed)
        .count() as u64;
    let ready = s.devices.iter().filter(|d| d.ready_to_ship).count() as u64;
    (n, enrolled, passed, ready)
}

pub async fn show(State(st): State<AppState>, v: Viewer, Path(id): Path<String>) -> Response {
    let s = match fetch(&st, &v, &id).await {
        Ok(s) => s,
        Err(e) => return error_page(&v, &e),
    };
    let lang = v.lang;
    let (n, enrolled, passed, ready) = stage_counts(&s);
    let content = html! {
        nav aria-label="breadcrumb" {
            ol.crumbs { li { a href="/ui/bench" { (v.t(Msg::Bench)) } } li { span aria-current="page" { (s.shipment) } } }
        }
        h1 { (v.t(Msg::Shipment)) " " (s.shipment) }
        dl.kv {
            dt { (v.t(Msg::Registered)) } dd data-k="sh:n" { (lang.count(n)) }
            dt { (v.t(Msg::Enrolled)) } dd data-k="sh:e" { (lang.count(enrolled)) }
            dt { (v.t(Msg::SelfTest)) } dd data-k="sh:p" { (lang.count(passed)) }
            dt { (v.t(Msg::ReadyToShip)) } dd data-k="sh:r" { (lang.count(ready)) }
        }
        @if v.may(&endpoint::ENROL_BATCH) && enrolled < n {
            form.no-print method="post" action={ "/ui/bench/" (s.shipment) "/sheet" } {
                input type="hidden" name="_csrf" value=(v.csrf);
                button type="submit" { (v.t(Msg::NewSheet)) " (" (lang.count(n - enrolled)) ")" }
                " " span.muted { (v.t(Msg::NewSheetHelp)) }
            }
        }
        table {
            thead { tr {
                th scope="col" { (v.t(Msg::Device)) }
                th scope="col" { (v.t(Msg::Lifecycle)) }
                th scope="col" { (v.t(Msg::EnrolledAt)) }
                th scope="col" { (v.t(Msg::SelfTest)) }
                th scope="col" { (v.t(Msg::ReadyToShip)) }
            } }
            tbody {
                @for d in &s.devices {
                    tr data-device=(d.device) {
                        th scope="row" { a href={ "/ui/devices/" (d.device) } { (d.device) } }
                        td data-k={ (d.device) ":l" } { (lang.lifecycle(d.lifecycle)) }
                        td data-k={ (d.device) ":e" } { @match d.enrolled_at_ms { Some(ms) => (lang.datetime(ms)), None => "–" } }
                        td data-k={ (d.device) ":s" } { (self_test(lang, d.self_test)) }
                        td data-k={ (d.device) ":r" } { (if d.ready_to_ship { "✓" } else { "–" }) }
                    }
                }
            }
        }
    };
    let live = format!("/ui/live/shipment/{}", s.shipment);
    layout::page(&v, &s.shipment, Nav::Bench, Some(&live), content).into_response()
}

/// A shipment's devices for the live script.
pub async fn live(
    State(st): State<AppState>,
    v: Viewer,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let s = match fetch(&st, &v, &id).await {
        Ok(s) => s,
        Err(e) => return (e.status(), e.to_string()).into_response(),
    };
    let lang = v.lang;
    let (n, enrolled, passed, ready) = stage_counts(&s);
    let mut rows = serde_json::Map::new();
    rows.insert(
        "sh".into(),
        serde_json::json!({ "n": n, "e": enrolled, "p": passed, "r": ready }),
    );
    for d in &s.devices {
        rows.insert(
            d.device.to_string(),
            serde_json::json!({
                "l": lang.lifecycle(d.lifecycle),
                "e": d.enrolled_at_ms.map_or_else(|| "–".to_owned(), |ms| lang.datetime(ms)),
                "s": self_test(lang, d.self_test),
                "r": if d.ready_to_ship { "✓" } else { "–" },
            }),
        );
    }
    super::live_answer(&v, serde_json::json!({ "rows": rows }), &headers)
}
