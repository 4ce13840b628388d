//! Readiness pages: the nation by province (with each province's link and
//! trend), a province by county, a county by polling station, then the
//! devices. Every page shows, counts and links only what the operator's
//! scope covers; a province outside it is a 403 like the API's.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use fleet_api::types::Reason;
use fleet_protocol::{CountyCode, ProvinceCode};
use maud::{html, Markup};
use serde::Deserialize;

use super::i18n::{Lang, Msg};
use super::layout::{self, Nav};
use super::{error_page, Viewer};
use crate::clock::unix_ms;
use crate::domain::fleet::{DeviceFilter, Fleet};
use crate::domain::readiness::Counts;
use crate::http::{parse, ApiError, AppState};

/// One row of a readiness table: a province, a county or a station.
#[derive(Debug, Clone)]
pub struct Group {
    /// Its key in the live document (a code, `-` for "none").
    pub key: String,
    pub label: String,
    pub href: Option<String>,
    pub counts: Counts,
    /// The link state, rendered (provinces only).
    pub link: Option<(String, bool)>,
    /// Ready share per time bucket, oldest first (provinces only).
    pub trend: Vec<Option<f64>>,
    /// The device list of this group (`province=…` or `county=…`).
    pub devices_query: String,
}

/// How a readiness table is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// The lowest ready share first; empty groups last.
    #[default]
    Worst,
    Name,
    Code,
    Total,
}

impl Sort {
    fn parse(s: Option<&str>) -> Sort {
        match s {
            Some("name") => Sort::Name,
            Some("code") => Sort::Code,
            Some("total") => Sort::Total,
            _ => Sort::Worst,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Sort::Worst => "worst",
            Sort::Name => "name",
            Sort::Code => "code",
            Sort::Total => "total",
        }
    }
}

/// Order the rows (pure).
pub fn sort_groups(groups: &mut [Group], sort: Sort) {
    match sort {
        Sort::Worst => groups.sort_by(|a, b| {
            let share = |g: &Group| {
                (g.counts.total > 0).then(|| f64::from(g.counts.ready) / f64::from(g.counts.total))
            };
            match (share(a), share(b)) {
                (Some(x), Some(y)) => x
                    .total_cmp(&y)
                    .then_with(|| {
                        let not_ready = |g: &Group| g.counts.total - g.counts.ready;
                        not_ready(b).cmp(&not_ready(a))
                    })
                    .then_with(|| a.key.cmp(&b.key)),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => a.key.cmp(&b.key),
            }
        }),
        Sort::Name => groups.sort_by(|a, b| a.label.cmp(&b.label).then_with(|| a.key.cmp(&b.key))),
        Sort::Code => groups.sort_by(|a, b| a.key.cmp(&b.key)),
        Sort::Total => groups.sort_by(|a, b| {
            b.counts
                .total
                .cmp(&a.counts.total)
                .then_with(|| a.key.cmp(&b.key))
        }),
    }
}

/// Ready share per bucket of `[from, to)`: the last sample in each bucket,
/// `None` where there was none (pure).
pub fn buckets(samples: &[(u64, u32, u32)], from: u64, to: u64, n: usize) -> Vec<Option<f64>> {
    let mut out = vec![None; n];
    let width = (to.saturating_sub(from) / n.max(1) as u64).max(1);
    for &(at, total, ready) in samples {
        if at < from || at >= to || total == 0 {
            continue;
        }
        let i = usize::try_from((at - from) / width).unwrap_or(n);
        if let Some(slot) = out.get_mut(i) {
            *slot = Some(f64::from(ready) / f64::from(total));
        }
    }
    out
}

fn sparkline(lang: Lang, points: &[Option<f64>]) -> Markup {
    let known: Vec<(usize, f64)> = points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.map(|v| (i, v)))
        .collect();
    let Some(&(_, first)) = known.first() else {
        return html! { span.muted { "–" } };
    };
    let last = known.last().map_or(first, |k| k.1);
    let step = 100.0 / (points.len().max(2) - 1) as f64;
    let coords: Vec<String> = known
        .iter()
        .map(|(i, v)| format!("{:.1},{:.1}", *i as f64 * step, 19.0 - v * 18.0))
        .collect();
    let pct = |v: f64| lang.percent((v * 1000.0).round() as u64, 1000);
    let label = format!("{} → {}", pct(first), pct(last));
    html! {
        svg.spark viewBox="0 0 100 20" preserveAspectRatio="none" role="img" aria-label=(label) {
            title { (label) }
            polyline points=(coords.join(" ")) {}
        }
    }
}

fn link_text(lang: Lang, fleet: &Fleet, p: ProvinceCode) -> Option<(String, bool)> {
    fleet.link_of(p).map(|(_, l)| {
        if l.up {
            (lang.t(Msg::LinkUp).to_owned(), true)
        } else {
            (
                format!(
                    "{} {}",
                    lang.t(Msg::LinkDownSince),
                    lang.datetime(l.since_ms)
                ),
                false,
            )
        }
    })
}

/// Days of trend on the national page, and its buckets.
const TREND_DAYS: u64 = 7;
const TREND_BUCKETS: usize = 28;

async fn province_groups(st: &AppState, v: &Viewer) -> Result<Vec<Group>, ApiError> {
    let now = unix_ms();
    let from = now.saturating_sub(TREND_DAYS * 86_400_000);
    let mut history: HashMap<ProvinceCode, Vec<(u64, u32, u32)>> = HashMap::new();
    for s in st.store.samples_since(from).await? {
        if v.caller.principal.sees(s.province) {
            history
                .entry(s.province)
                .or_default()
                .push((s.at_ms, s.total, s.ready));
        }
    }
    Ok(province_rows(st, v, |p| {
        buckets(
            history.get(&p).map_or(&[][..], Vec::as_slice),
            from,
            now + 1,
            TREND_BUCKETS,
        )
    }))
}

/// A row per province in the reader's scope, with its trend.
fn province_rows(
    st: &AppState,
    v: &Viewer,
    trend: impl Fn(ProvinceCode) -> Vec<Option<f64>>,
) -> Vec<Group> {
    let fleet = st.fleet();
    ProvinceCode::all()
        .filter(|p| v.caller.principal.sees(*p))
        .map(|p| Group {
            key: p.to_string(),
            label: v.lang.province(p).to_owned(),
            href: Some(format!("/ui/p/{p}")),
            counts: fleet.province_counts(p),
            link: link_text(v.lang, &fleet, p),
            trend: trend(p),
            devices_query: format!("province={p}"),
        })
        .collect()
}

async fn county_groups(st: &AppState, v: &Viewer, p: ProvinceCode) -> Result<Vec<Group>, ApiError> {
    let names: HashMap<CountyCode, (String, String)> = st
        .store
        .counties(Some(p))
        .await?
        .into_iter()
        .map(|c| (c.code, (c.name_en, c.name_fa)))
        .collect();
    let fleet = st.fleet();
    Ok(fleet
        .county_counts(Some(p))
        .map(|((_, county), counts)| match county {
            Some(c) => {
                let label = names.get(c).map_or_else(
                    || c.to_string(),
                    |(en, fa)| {
                        let name = if v.lang == Lang::Fa && !fa.is_empty() {
                            fa
                        } else {
                            en
                        };
                        if name.is_empty() {
                            c.to_string()
                        } else {
                            format!("{name} ({c})")
                        }
                    },
                );
                Group {
                    key: c.to_string(),
                    label,
                    href: Some(format!("/ui/c/{c}")),
                    counts: *counts,
                    link: None,
                    trend: vec![],
                    devices_query: format!("county={c}"),
                }
            }
            None => Group {
                key: "-".into(),
                label: v.t(Msg::NoCounty).to_owned(),
                href: None,
                counts: *counts,
                link: None,
                trend: vec![],
                devices_query: format!("province={p}"),
            },
        })
        .collect())
}

async fn station_groups(st: &AppState, v: &Viewer, c: &CountyCode) -> Result<Vec<Group>, ApiError> {
    let names: HashMap<String, String> = st
        .store
        .stations_of(c)
        .await?
        .into_iter()
        .map(|(id, name)| (id.to_string(), name))
        .collect();
    let mut by: BTreeMap<String, Counts> = BTreeMap::new();
    let fleet = st.fleet();
    let filter = DeviceFilter {
        county: Some(c.clone()),
        ..Default::default()
    };
    for d in fleet.devices(&filter) {
        let key = d
            .reg
            .station
            .as_ref()
            .map_or_else(|| "-".to_owned(), ToString::to_string);
        by.entry(key).or_default().add(d.reason);
    }
    Ok(by
        .into_iter()
        .map(|(key, counts)| {
            let label = if key == "-" {
                v.t(Msg::NoStation).to_owned()
            } else {
                match names.get(&key) {
                    Some(n) if !n.is_empty() => format!("{n} ({key})"),
                    _ => key.clone(),
                }
            };
            let devices_query = if key == "-" {
                format!("county={c}")
            } else {
                format!("county={c}&station={key}")
            };
            Group {
                href: Some(format!("/ui/devices?{devices_query}")),
                devices_query,
                key,
                label,
                counts,
                link: None,
                trend: vec![],
            }
        })
        .collect())
}

fn total(groups: &[Group]) -> Counts {
    let mut all = Counts::default();
    for g in groups {
        all.merge(&g.counts);
    }
    all
}

/// The headline: "25,000 of 33,000 devices ready".
fn headline(v: &Viewer, all: &Counts) -> Markup {
    let lang = v.lang;
    html! {
        p.headline {
            strong data-k="all:r" { (lang.count(u64::from(all.ready))) }
            " " (v.t(Msg::Of)) " "
            span data-k="all:t" { (lang.count(u64::from(all.total))) }
            " " (v.t(Msg::DevicesWord)) " " (v.t(Msg::Ready))
            " (" span data-pct="all" { (lang.percent(u64::from(all.ready), u64::from(all.total))) } ")"
        }
    }
}

/// The readiness table of `groups`, in the order given.
fn table(
    v: &Viewer,
    caption: &str,
    first: &str,
    groups: &[Group],
    sort: Option<Sort>,
    provinces: bool,
) -> Markup {
    let lang = v.lang;
    let sort_link = |s: Sort, label: &str| {
        html! {
            @if let Some(cur) = sort {
                a href={ "?sort=" (s.as_str()) } aria-current=[(cur == s).then_some("true")] { (label) }
            } @else {
                (label)
            }
        }
    };
    let aria_sort = |s: Sort| match sort {
        Some(cur) if cur == s => Some(if s == Sort::Total {
            "descending"
        } else {
            "ascending"
        }),
        _ => None,
    };
    html! {
        table {
            caption { (caption)
                @if sort.is_some() {
                    span.muted { " · " (v.t(Msg::SortBy)) ": " }
                    (sort_link(Sort::Worst, v.t(Msg::Worst))) " · "
                    (sort_link(Sort::Name, v.t(Msg::ByName))) " · "
                    (sort_link(Sort::Code, v.t(Msg::ByCode)))
                }
            }
            thead {
                tr {
                    th scope="col" aria-sort=[aria_sort(Sort::Name)] { (first) }
                    th.n scope="col" aria-sort=[aria_sort(Sort::Total)] { (sort_link(Sort::Total, v.t(Msg::Total))) }
                    th.n scope="col" { (v.t(Msg::ReadyCount)) }
                    th.n scope="col" aria-sort=[aria_sort(Sort::Worst)] { (v.t(Msg::ReadyPct)) }
                    @for r in Reason::ALL {
                        th.n scope="col" { (lang.reason(r)) }
                    }
                    @if provinces {
                        th scope="col" { (v.t(Msg::Link)) }
                        th scope="col" { (v.t(Msg::Trend)) }
                    }
                }
            }
            tbody {
                @for g in groups {
                    tr {
                        th scope="row" {
                            @if let Some(h) = &g.href { a href=(h) { (g.label) } } @else { (g.label) }
                        }
                        td.n data-k={ (g.key) ":t" } { (lang.count(u64::from(g.counts.total))) }
                        td.n data-k={ (g.key) ":r" } { (lang.count(u64::from(g.counts.ready))) }
                        td.n {
                            span.pct data-pct=(g.key) { (lang.percent(u64::from(g.counts.ready), u64::from(g.counts.total))) }
                            " " span.bar aria-hidden="true" {
                                i data-bar=(g.key) style={ "width:" (bar_width(&g.counts)) "%" } {}
                            }
                        }
                        @for r in Reason::ALL {
                            td.n {
                                a href={ "/ui/devices?" (g.devices_query) "&readiness=" (r.as_str()) }
                                    data-k={ (g.key) ":" (r.as_str()) } data-z
                                    aria-label={ (g.label) ": " (lang.reason(r)) } {
                                    (lang.count(u64::from(g.counts.reason(r))))
                                }
                            }
                        }
                        @if provinces {
                            td.nowrap {
                                @match &g.link {
                                    Some((text, up)) => span.(if *up { "ok" } else { "bad" }) data-k={ (g.key) ":l" } { (text) },
                                    None => span.muted data-k={ (g.key) ":l" } { (v.t(Msg::Central)) },
                                }
                            }
                            td { (sparkline(lang, &g.trend)) }
                        }
                    }
                }
            }
        }
    }
}

fn bar_width(c: &Counts) -> u64 {
    if c.total == 0 {
        0
    } else {
        u64::from(c.ready) * 100 / u64::from(c.total)
    }
}

#[derive(Deserialize)]
pub struct SortQuery {
    sort: Option<String>,
}

pub async fn national(
    State(st): State<AppState>,
    v: Viewer,
    Query(q): Query<SortQuery>,
) -> Response {
    let mut groups = match province_groups(&st, &v).await {
        Ok(g) => g,
        Err(e) => return error_page(&v, &e),
    };
    let sort = Sort::parse(q.sort.as_deref());
    sort_groups(&mut groups, sort);
    let all = total(&groups);
    let content = html! {
        h1 { (v.t(Msg::National)) }
        (headline(&v, &all))
        (table(&v, v.t(Msg::National), v.t(Msg::Province), &groups, Some(sort), true))
    };
    layout::page(
        &v,
        v.t(Msg::National),
        Nav::Readiness,
        Some("/ui/live/readiness?scope=national"),
        content,
    )
    .into_response()
}

fn crumbs(v: &Viewer, trail: &[(String, Option<String>)]) -> Markup {
    html! {
        nav aria-label="breadcrumb" {
            ol.crumbs {
                li { a href="/ui/" { (v.t(Msg::National)) } }
                @for (label, href) in trail {
                    li {
                        @if let Some(h) = href { a href=(h) { (label) } }
                        @else { span aria-current="page" { (label) } }
                    }
                }
            }
        }
    }
}

pub async fn province(
    State(st): State<AppState>,
    v: Viewer,
    Path(code): Path<String>,
    Query(q): Query<SortQuery>,
) -> Response {
    let p: ProvinceCode = match parse("province", &code) {
        Ok(p) => p,
        Err(e) => return error_page(&v, &e),
    };
    if let Err(e) = v.caller.require_province(p) {
        return error_page(&v, &e);
    }
    let mut groups = match county_groups(&st, &v, p).await {
        Ok(g) => g,
        Err(e) => return error_page(&v, &e),
    };
    let sort = Sort::parse(q.sort.as_deref());
    sort_groups(&mut groups, sort);
    let name = v.lang.province(p);
    let (counts, link) = {
        let fleet = st.fleet();
        (fleet.province_counts(p), link_text(v.lang, &fleet, p))
    };
    let content = html! {
        (crumbs(&v, &[(name.to_owned(), None)]))
        h1 { (name) " " span.muted { "(" (p) ")" } }
        (headline(&v, &counts))
        @if let Some((text, up)) = link {
            p { (v.t(Msg::Link)) ": " span.(if up { "ok" } else { "bad" }) { (text) } }
        }
        p { a href={ "/ui/devices?province=" (p) } { (v.t(Msg::Devices)) " →" } }
        (table(&v, name, v.t(Msg::County), &groups, Some(sort), false))
    };
    layout::page(
        &v,
        name,
        Nav::Readiness,
        Some(&format!("/ui/live/readiness?scope={p}")),
        content,
    )
    .into_response()
}

pub async fn county(State(st): State<AppState>, v: Viewer, Path(code): Path<String>) -> Response {
    let c: CountyCode = match parse("county", &code) {
        Ok(c) => c,
        Err(e) => return error_page(&v, &e),
    };
    let p = c.province();
    if let Err(e) = v.caller.require_province(p) {
        return error_page(&v, &e);
    }
    let groups = match station_groups(&st, &v, &c).await {
        Ok(g) => g,
        Err(e) => return error_page(&v, &e),
    };
    let name = match st.store.counties(Some(p)).await {
        Ok(rows) => rows
            .into_iter()
            .find(|r| r.code == c)
            .map(|r| {
                if v.lang == Lang::Fa && !r.name_fa.is_empty() {
                    r.name_fa
                } else {
                    r.name_en
                }
            })
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| c.to_string()),
        Err(e) => return error_page(&v, &ApiError::from(e)),
    };
    let pname = v.lang.province(p);
    let all = total(&groups);
    let content = html! {
        (crumbs(&v, &[(pname.to_owned(), Some(format!("/ui/p/{p}"))), (name.clone(), None)]))
        h1 { (name) " " span.muted { "(" (c) ")" } }
        (headline(&v, &all))
        p { a href={ "/ui/devices?county=" (c) } { (v.t(Msg::Devices)) " →" } }
        (table(&v, &name, v.t(Msg::Station), &groups, None, false))
    };
    layout::page(
        &v,
        &name,
        Nav::Readiness,
        Some(&format!("/ui/live/readiness?scope={c}")),
        content,
    )
    .into_response()
}

#[derive(Deserialize)]
pub struct LiveQuery {
    scope: String,
}

/// The numbers of a readiness page (`scope`: `national`, a province or a
/// county code): `{"at": "…", "rows": {KEY: {"t": …, "r": …, REASON: …,
/// "l": "…"}}}`, non-zero reasons only, a few hundred bytes; 304 when the
/// browser's ETag still matches.
pub async fn live(
    State(st): State<AppState>,
    v: Viewer,
    Query(q): Query<LiveQuery>,
    headers: HeaderMap,
) -> Response {
    let groups = if q.scope == "national" {
        // The live document needs no trend: no samples read.
        Ok(province_rows(&st, &v, |_| Vec::new()))
    } else if let Ok(p) = ProvinceCode::parse(&q.scope) {
        match v.caller.require_province(p) {
            Ok(()) => county_groups(&st, &v, p).await,
            Err(e) => Err(e),
        }
    } else {
        match parse::<CountyCode>("scope", &q.scope) {
            Ok(c) => match v.caller.require_province(c.province()) {
                Ok(()) => station_groups(&st, &v, &c).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    };
    let groups = match groups {
        Ok(g) => g,
        Err(e) => return (e.status(), e.to_string()).into_response(),
    };
    let mut rows = serde_json::Map::new();
    let mut row = |key: &str, c: &Counts, link: Option<&(String, bool)>| {
        let mut m = serde_json::Map::new();
        m.insert("t".into(), c.total.into());
        m.insert("r".into(), c.ready.into());
        for (name, n) in c.reasons() {
            m.insert(name.into(), n.into());
        }
        if let Some((text, _)) = link {
            m.insert("l".into(), text.clone().into());
        }
        rows.insert(key.to_owned(), m.into());
    };
    for g in &groups {
        row(&g.key, &g.counts, g.link.as_ref());
    }
    row("all", &total(&groups), None);
    super::live_answer(&v, serde_json::json!({ "rows": rows }), &headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(key: &str, total: u32, ready: u32) -> Group {
        let mut counts = Counts::default();
        for i in 0..total {
            counts.add((i >= ready).then_some(Reason::Offline));
        }
        Group {
            key: key.into(),
            label: format!("name {key}"),
            href: None,
            counts,
            link: None,
            trend: vec![],
            devices_query: String::new(),
        }
    }

    fn keys(g: &[Group]) -> Vec<&str> {
        g.iter().map(|g| g.key.as_str()).collect()
    }

    #[test]
    fn worst_first_is_the_lowest_ready_share_then_the_most_not_ready_and_empty_last() {
        let mut g = vec![
            group("a", 10, 10),
            group("b", 0, 0),
            group("c", 10, 5),
            group("d", 100, 50),
            group("e", 4, 1),
        ];
        sort_groups(&mut g, Sort::Worst);
        assert_eq!(keys(&g), ["e", "d", "c", "a", "b"]);
        sort_groups(&mut g, Sort::Total);
        assert_eq!(keys(&g), ["d", "a", "c", "e", "b"]);
        sort_groups(&mut g, Sort::Code);
        assert_eq!(keys(&g), ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn a_trend_keeps_the_last_sample_of_each_bucket() {
        let samples = [
            (0, 10, 1),
            (5, 10, 2),
            (10, 10, 5),
            (35, 10, 10),
            (40, 10, 9),
        ];
        let b = buckets(&samples, 0, 40, 4);
        assert_eq!(b, vec![Some(0.2), Some(0.5), None, Some(1.0)]);
    }

    #[test]
    fn a_trend_without_samples_draws_nothing() {
        let m = sparkline(Lang::En, &[None, None]).into_string();
        assert!(!m.contains("polyline"), "{m}");
        let m = sparkline(Lang::En, &[Some(0.5), None, Some(1.0)]).into_string();
        assert!(m.contains("50.0% → 100.0%"), "{m}");
    }
}
