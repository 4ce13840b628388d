//! The frame of every console page: language and direction, the
//! navigation the role allows, who is signed in, the language switch and
//! sign-out (both forms with the CSRF token), and the live script when the
//! page has live numbers.

use fleet_api::endpoints as endpoint;
use maud::{html, Markup, DOCTYPE};

use super::assets;
use super::i18n::Msg;
use super::Viewer;

/// Which navigation entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Readiness,
    Devices,
    Rollouts,
    Bench,
    Audit,
    Report,
    None,
}

/// A page: `title`, the navigation, the main content; `live` is the URL
/// the script polls for the page's numbers.
pub fn page(v: &Viewer, title: &str, nav: Nav, live: Option<&str>, content: Markup) -> Markup {
    let lang = v.lang;
    let other = lang.other();
    let p = &v.caller.principal;
    let entries = [
        (Nav::Readiness, "/ui/", Msg::Readiness, true),
        (
            Nav::Devices,
            "/ui/devices",
            Msg::Devices,
            v.may(&endpoint::DEVICES),
        ),
        (
            Nav::Rollouts,
            "/ui/rollouts",
            Msg::Rollouts,
            v.may(&endpoint::ROLLOUTS),
        ),
        (
            Nav::Bench,
            "/ui/bench",
            Msg::Bench,
            v.may(&endpoint::SHIPMENT),
        ),
        (Nav::Audit, "/ui/audit", Msg::Audit, v.may(&endpoint::AUDIT)),
        (
            Nav::Report,
            "/ui/report",
            Msg::Report,
            v.may(&endpoint::READINESS),
        ),
    ];
    html! {
        (DOCTYPE)
        html lang=(lang.as_str()) dir=(lang.dir()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (v.t(Msg::Sandogh)) }
                link rel="stylesheet" href=(assets::url("app.css"));
            }
            body {
                a.skip href="#main" { (v.t(Msg::Skip)) }
                header.top {
                    a.brand href="/ui/" { (v.t(Msg::Sandogh)) }
                    nav aria-label=(v.t(Msg::Console)) {
                        ul {
                            @for (which, href, label, shown) in entries {
                                @if shown {
                                    li { a href=(href) aria-current=[(which == nav).then_some("page")] { (v.t(label)) } }
                                }
                            }
                        }
                    }
                    div.who {
                        span {
                            (v.t(Msg::SignedInAs)) " " strong { (p.name) }
                            " · " (p.role.as_str())
                            @if p.is_scoped() {
                                " · "
                                @for (i, code) in p.provinces.iter().enumerate() {
                                    @if i > 0 { ", " }
                                    (lang.province(*code))
                                }
                            }
                        }
                        form method="post" action="/ui/lang" {
                            input type="hidden" name="_csrf" value=(v.csrf);
                            input type="hidden" name="lang" value=(other.as_str());
                            input type="hidden" name="next" value=(v.path);
                            button type="submit" lang=(other.as_str()) title=(v.t(Msg::Language)) { (other.name()) }
                        }
                        form method="post" action="/ui/logout" {
                            input type="hidden" name="_csrf" value=(v.csrf);
                            button type="submit" { (v.t(Msg::SignOut)) }
                        }
                    }
                }
                main id="main" data-live=[live] data-every=[live.map(|_| v.live_secs)] {
                    (content)
                    @if live.is_some() {
                        p.live aria-live="polite" { (v.t(Msg::Live)) " · " (v.t(Msg::Updated)) " " span id="live-at" { (lang.datetime(crate::clock::unix_ms())) } }
                    }
                }
                script src=(assets::url("app.js")) defer {}
            }
        }
    }
}

/// What an action's confirmation page asks.
pub struct Confirm<'a> {
    pub nav: Nav,
    /// The action's name, and what it acts on.
    pub title: &'a str,
    pub subject: &'a str,
    /// What happens when it is confirmed.
    pub consequence: &'a str,
    /// Where the form posts (with `action` and `confirm=yes`).
    pub post_to: &'a str,
    pub action: &'a str,
    pub danger: bool,
    /// Where Cancel goes.
    pub back: &'a str,
}

/// An action's confirmation: the same form again with `confirm=yes`
/// (it works without script), or Cancel.
pub fn confirm(v: &Viewer, c: &Confirm<'_>) -> Markup {
    let content = html! {
        h1 { (c.title) ": " (c.subject) }
        p { (v.t(Msg::Confirm)) " " (c.consequence) }
        form method="post" action=(c.post_to) {
            input type="hidden" name="_csrf" value=(v.csrf);
            input type="hidden" name="action" value=(c.action);
            input type="hidden" name="confirm" value="yes";
            div.actions {
                button type="submit" class=[c.danger.then_some("danger")] autofocus { (v.t(Msg::Yes)) }
                a.button.secondary href=(c.back) { (v.t(Msg::Cancel)) }
            }
        }
    };
    page(v, c.title, c.nav, None, content)
}
