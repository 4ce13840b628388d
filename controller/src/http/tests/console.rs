//! The web console's handlers (`/ui`), driven like a browser would: the
//! sign-in form with its cookie, then pages and forms with the session
//! cookie. Scope on every page and action, CSRF refusals, session expiry,
//! the language remembered per operator, and the bytes a page costs.

use axum::http::HeaderMap;

use super::*;
use crate::ui::{ConsoleConfig, LOGIN_COOKIE, SESSION_COOKIE};

/// One answer: status, headers, body as text.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
    /// The body's bytes as sent.
    len: usize,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The value a `Set-Cookie` gives `name` (`None`: not set).
    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| {
                c.split(';')
                    .next()?
                    .strip_prefix(&format!("{name}="))
                    .map(str::to_owned)
            })
    }

    fn set_cookie_line(&self, name: &str) -> String {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with(&format!("{name}=")))
            .unwrap_or("")
            .to_owned()
    }

    /// The value of the first `name="_csrf" value="…"` in the page.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"_csrf\" value=\"")
            .expect("a form with a CSRF token");
        let rest = &self.body[at + "name=\"_csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

async fn send(app: &TestApp, req: Request<Body>) -> Answer {
    let what = format!("{} {}", req.method(), req.uri());
    let resp = within(STEP, &what, app.router.clone().oneshot(req))
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = within(STEP, &what, resp.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        len: bytes.len(),
    }
}

async fn get(app: &TestApp, session: Option<&str>, uri: &str) -> Answer {
    let mut req = Request::builder()
        .method("GET")
        .uri(uri)
        .header("host", "console.test");
    if let Some(s) = session {
        req = req.header("cookie", format!("{SESSION_COOKIE}={s}"));
    }
    send(app, req.body(Body::empty()).unwrap()).await
}

fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", crate::ui::encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

async fn post(
    app: &TestApp,
    cookies: &str,
    uri: &str,
    fields: &[(&str, &str)],
    origin: Option<&str>,
) -> Answer {
    let mut req = Request::builder()
        .method("POST")
        .uri(uri)
        .header("host", "console.test")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", cookies);
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    send(app, req.body(Body::from(form_body(fields))).unwrap()).await
}

/// Sign in with `token` as a browser does; the session id.
async fn sign_in(app: &TestApp, token: &str) -> String {
    let page = get(app, None, "/ui/login").await;
    assert_eq!(page.status, StatusCode::OK);
    let login = page
        .cookie(LOGIN_COOKIE)
        .expect("the sign-in page sets its cookie");
    let csrf = page.csrf();
    let r = post(
        app,
        &format!("{LOGIN_COOKIE}={login}"),
        "/ui/login",
        &[("token", token), ("_csrf", &csrf), ("next", "/ui/")],
        Some("https://console.test"),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), "/ui/");
    r.cookie(SESSION_COOKIE).expect("a session cookie")
}

fn session_cookie(sid: &str) -> String {
    format!("{SESSION_COOKIE}={sid}")
}

async fn fleet_of_two_provinces(app: &TestApp) {
    ok(app.csv(REGISTRY).await);
    ok(app
        .json(
            "POST",
            "/api/v1/devices",
            json!({ "devices": [
                dev("BB-TEH-1", "IR-23", Some("IR-23-TEH")),
                dev("BB-TEH-2", "IR-23", Some("IR-23-RAY")),
                dev("BB-SARI-1", "IR-02", Some("IR-02-SARI")),
                { "id": "BB-SARI-2", "model": "ballot-box-v2", "province": "IR-02", "county": "IR-02-SARI", "station": "ST-3", "lifecycle": "enrolled" },
            ]}),
        )
        .await);
}

#[tokio::test]
async fn sign_in_opens_a_strict_session_and_pages_need_one() {
    let app = test_app().await;
    // No session: the page sends to sign-in, and comes back after.
    let r = get(&app, None, "/ui/p/IR-23").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/ui/login?next=/ui/p/IR-23");
    // A live update without a session is a bare 401 (the script reloads).
    let r = get(&app, None, "/ui/live/readiness?scope=national").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A made-up session id is no session.
    let r = get(&app, Some("00ff"), "/ui/").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);

    let page = get(&app, None, "/ui/login").await;
    let line = page.set_cookie_line(LOGIN_COOKIE);
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(line.contains(attr), "{line}");
    }
    let sid = sign_in(&app, &app.token).await;
    let r = get(&app, Some(&sid), "/ui/").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("<h1>National readiness</h1>"), "{}", r.body);
    assert_eq!(
        r.headers.get("content-type").unwrap(),
        "text/html; charset=utf-8"
    );
    let csp = r
        .headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(r.headers.get("x-frame-options").unwrap(), "DENY");

    // The session cookie is HttpOnly, Secure, SameSite=Strict, and expires.
    let page = get(&app, None, "/ui/login").await;
    let csrf = page.csrf();
    let login = page.cookie(LOGIN_COOKIE).unwrap();
    let r = post(
        &app,
        &format!("{LOGIN_COOKIE}={login}"),
        "/ui/login",
        &[("token", &app.token), ("_csrf", &csrf)],
        None,
    )
    .await;
    let line = r.set_cookie_line(SESSION_COOKIE);
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=43200",
    ] {
        assert!(line.contains(attr), "{line}");
    }
    // The sign-in is in the audit log.
    let entries = ok(app.get("/api/v1/audit?limit=1000").await).to_string();
    assert!(entries.contains("console.sign-in"), "{entries}");
}

#[tokio::test]
async fn a_wrong_token_or_a_forged_sign_in_form_opens_no_session() {
    let app = test_app().await;
    let page = get(&app, None, "/ui/login").await;
    let login = page.cookie(LOGIN_COOKIE).unwrap();
    let csrf = page.csrf();
    let cookie = format!("{LOGIN_COOKIE}={login}");
    // A wrong token: 401, the page says why, no session.
    let r = post(
        &app,
        &cookie,
        "/ui/login",
        &[("token", "sdg_wrong"), ("_csrf", &csrf)],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("This token was refused"), "{}", r.body);
    assert_eq!(r.cookie(SESSION_COOKIE), None);
    // The right token without the sign-in cookie (a form posted from
    // another site): 403.
    let r = post(
        &app,
        "",
        "/ui/login",
        &[("token", &app.token), ("_csrf", &csrf)],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.cookie(SESSION_COOKIE), None);
    // With the cookie but another site's Origin: 403.
    let r = post(
        &app,
        &cookie,
        "/ui/login",
        &[("token", &app.token), ("_csrf", &csrf)],
        Some("https://evil.example"),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.cookie(SESSION_COOKIE), None);
    // A next= that leaves the console goes to the console's home instead.
    let r = post(
        &app,
        &cookie,
        "/ui/login",
        &[
            ("token", &app.token),
            ("_csrf", &csrf),
            ("next", "//evil.example/ui/"),
        ],
        None,
    )
    .await;
    assert_eq!(r.location(), "/ui/");
}

#[tokio::test]
async fn a_province_technician_sees_counts_and_links_of_their_province_only() {
    let app = test_app().await;
    fleet_of_two_provinces(&app).await;
    let tech = app.token_for(Role::ProvinceTech, &["IR-02"]).await;
    let sid = sign_in(&app, &tech).await;

    let mut pages = Vec::new();
    for uri in [
        "/ui/",
        "/ui/?sort=name",
        "/ui/p/IR-02",
        "/ui/c/IR-02-SARI",
        "/ui/devices",
        "/ui/devices/BB-SARI-1",
        "/ui/live/readiness?scope=national",
        "/ui/live/readiness?scope=IR-02",
        "/ui/live/readiness?scope=IR-02-SARI",
    ] {
        let r = get(&app, Some(&sid), uri).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.body);
        pages.push((uri, r.body));
    }
    for (uri, body) in &pages {
        for other in ["IR-23", "Tehran", "BB-TEH", "Rey"] {
            assert!(!body.contains(other), "{uri} shows {other}:\n{body}");
        }
    }
    // Counted: the headline and the live total are this province's 2.
    let (_, live) = &pages[6];
    let live: Value = serde_json::from_str(live).unwrap();
    assert_eq!(live["rows"]["all"]["t"], 2, "{live}");
    assert_eq!(
        live["rows"].as_object().unwrap().len(),
        2,
        "IR-02 and all: {live}"
    );
    assert!(pages[0].1.contains("data-k=\"all:t\">2<"), "{}", pages[0].1);
    let (_, list) = &pages[4];
    assert!(
        list.contains("BB-SARI-1") && list.contains("BB-SARI-2"),
        "{list}"
    );

    // Another province, by any door: refused like the API refuses it.
    for (uri, status) in [
        ("/ui/p/IR-23", StatusCode::FORBIDDEN),
        ("/ui/c/IR-23-TEH", StatusCode::FORBIDDEN),
        ("/ui/devices?province=IR-23", StatusCode::FORBIDDEN),
        ("/ui/devices?county=IR-23-TEH", StatusCode::FORBIDDEN),
        ("/ui/devices/BB-TEH-1", StatusCode::NOT_FOUND),
        ("/ui/live/readiness?scope=IR-23", StatusCode::FORBIDDEN),
        ("/ui/live/readiness?scope=IR-23-TEH", StatusCode::FORBIDDEN),
    ] {
        let r = get(&app, Some(&sid), uri).await;
        assert_eq!(r.status, status, "{uri}: {}", r.body);
        if uri.contains("BB-TEH") {
            // Exactly what a device that does not exist shows.
            assert!(
                r.body.contains("device BB-TEH-1 is not registered"),
                "{}",
                r.body
            );
        } else {
            assert!(!r.body.contains("BB-TEH"), "{uri}: {}", r.body);
        }
    }
    // And the actions: a command to another province's device is refused
    // and nothing is sent.
    let page = get(&app, Some(&sid), "/ui/devices/BB-SARI-1").await;
    let csrf = page.csrf();
    queued(&app);
    let r = post(
        &app,
        &session_cookie(&sid),
        "/ui/devices/BB-TEH-1/act",
        &[("_csrf", &csrf), ("action", "reboot"), ("confirm", "yes")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert!(queued(&app).is_empty());
}

#[tokio::test]
async fn run_checks_asks_for_confirmation_then_sends_the_command_with_an_audit_entry() {
    let app = test_app().await;
    fleet_of_two_provinces(&app).await;
    let tech = app.token_for(Role::ProvinceTech, &["IR-02"]).await;
    let sid = sign_in(&app, &tech).await;
    let page = get(&app, Some(&sid), "/ui/devices/BB-SARI-1").await;
    assert!(page.body.contains("value=\"run-checks\""), "{}", page.body);
    // A technician may not ship, deploy or retire: not offered.
    assert!(!page.body.contains("value=\"retire\""), "{}", page.body);
    let csrf = page.csrf();
    let cookie = session_cookie(&sid);
    queued(&app);
    let r = post(
        &app,
        &cookie,
        "/ui/devices/BB-SARI-1/act",
        &[("_csrf", &csrf), ("action", "run-checks")],
        Some("https://console.test"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.contains("name=\"confirm\" value=\"yes\""),
        "{}",
        r.body
    );
    assert!(
        queued(&app).is_empty(),
        "nothing is sent before the confirmation"
    );

    let r = post(
        &app,
        &cookie,
        "/ui/devices/BB-SARI-1/act",
        &[
            ("_csrf", &csrf),
            ("action", "run-checks"),
            ("confirm", "yes"),
        ],
        Some("https://console.test"),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), "/ui/devices/BB-SARI-1?done=run-checks");
    let sent = queued(&app);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].0.ends_with("/BB-SARI-1/cmd"), "{}", sent[0].0);
    let after = get(&app, Some(&sid), r.location()).await;
    assert!(after.body.contains("run-checks"), "{}", after.body);
    let audit = ok(app.get("/api/v1/audit?target=BB-SARI-1").await).to_string();
    assert!(
        audit.contains("device.command") && audit.contains("run-checks"),
        "{audit}"
    );

    // A viewer gets no action, and a forged post is refused.
    let viewer = app.token_for(Role::Viewer, &[]).await;
    let vsid = sign_in(&app, &viewer).await;
    let page = get(&app, Some(&vsid), "/ui/devices/BB-SARI-1").await;
    assert!(!page.body.contains("/act\""), "{}", page.body);
    let r = post(
        &app,
        &session_cookie(&vsid),
        "/ui/devices/BB-SARI-1/act",
        &[
            ("_csrf", &page.csrf()),
            ("action", "reboot"),
            ("confirm", "yes"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(queued(&app).is_empty());
}

#[tokio::test]
async fn forms_without_the_session_csrf_token_or_from_another_site_are_refused() {
    let app = test_app().await;
    fleet_of_two_provinces(&app).await;
    let sid = sign_in(&app, &app.token).await;
    let cookie = session_cookie(&sid);
    let csrf = get(&app, Some(&sid), "/ui/").await.csrf();
    queued(&app);
    let act = |csrf: &'static str| [("_csrf", csrf), ("action", "reboot"), ("confirm", "yes")];
    // Missing, wrong, another session's: 403 and nothing sent.
    let other = sign_in(&app, &app.token).await;
    let other_csrf = get(&app, Some(&other), "/ui/").await.csrf();
    for fields in [
        vec![("action", "reboot"), ("confirm", "yes")],
        act("0000").to_vec(),
        vec![
            ("_csrf", other_csrf.as_str()),
            ("action", "reboot"),
            ("confirm", "yes"),
        ],
    ] {
        let r = post(&app, &cookie, "/ui/devices/BB-SARI-1/act", &fields, None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{fields:?}: {}", r.body);
    }
    // The right token from another site's page: 403.
    let fields = [
        ("_csrf", csrf.as_str()),
        ("action", "reboot"),
        ("confirm", "yes"),
    ];
    let r = post(
        &app,
        &cookie,
        "/ui/devices/BB-SARI-1/act",
        &fields,
        Some("https://evil.example"),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(queued(&app).is_empty(), "nothing went out");
    // Sign-out and the language switch are forms too.
    let r = post(&app, &cookie, "/ui/logout", &[("_csrf", "0000")], None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        get(&app, Some(&sid), "/ui/").await.status,
        StatusCode::OK,
        "still signed in"
    );
    let r = post(
        &app,
        &cookie,
        "/ui/lang",
        &[("_csrf", "0000"), ("lang", "fa")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // With the token, both work.
    let r = post(
        &app,
        &cookie,
        "/ui/devices/BB-SARI-1/act",
        &fields,
        Some("https://console.test"),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(queued(&app).len(), 1);
    let r = post(&app, &cookie, "/ui/logout", &[("_csrf", &csrf)], None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.set_cookie_line(SESSION_COOKIE).contains("Max-Age=0"));
    let r = get(&app, Some(&sid), "/ui/").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "signed out");
}

#[tokio::test]
async fn a_session_ends_when_idle_and_when_its_token_is_revoked() {
    let app = test_app_with(ConsoleConfig {
        sessions: crate::ui::session::Limits {
            idle_ms: 400,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let sid = sign_in(&app, &app.token).await;
    assert_eq!(get(&app, Some(&sid), "/ui/").await.status, StatusCode::OK);
    // A page left open polls for its numbers: that does not keep the
    // session alive.
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    let live = get(&app, Some(&sid), "/ui/live/readiness?scope=national").await;
    assert_eq!(live.status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    let r = get(&app, Some(&sid), "/ui/devices").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/ui/login?next=/ui/devices&m=expired");
    let page = get(&app, None, r.location()).await;
    assert!(page.body.contains("Your session ended"), "{}", page.body);

    // Revoking the token ends the sessions opened with it at once.
    let central = app.token_for(Role::CentralOps, &[]).await;
    let sid = sign_in(&app, &central).await;
    assert_eq!(get(&app, Some(&sid), "/ui/").await.status, StatusCode::OK);
    let tokens = ok(app.get("/api/v1/tokens").await);
    let id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "central-ops")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = app
        .call(
            "DELETE",
            &format!("/api/v1/tokens/{id}"),
            None,
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let r = get(&app, Some(&sid), "/ui/").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.location().ends_with("&m=expired"), "{}", r.location());
}

#[tokio::test]
async fn persian_is_right_to_left_with_jalali_dates_and_is_remembered_per_operator() {
    let app = test_app().await;
    fleet_of_two_provinces(&app).await;
    let sid = sign_in(&app, &app.token).await;
    let page = get(&app, Some(&sid), "/ui/p/IR-02").await;
    assert!(
        page.body.contains("<html lang=\"en\" dir=\"ltr\">"),
        "{}",
        page.body
    );
    let r = post(
        &app,
        &session_cookie(&sid),
        "/ui/lang",
        &[
            ("_csrf", &page.csrf()),
            ("lang", "fa"),
            ("next", "/ui/p/IR-02"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/ui/p/IR-02");
    let page = get(&app, Some(&sid), "/ui/p/IR-02").await;
    assert!(
        page.body.contains("<html lang=\"fa\" dir=\"rtl\">"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("مازندران"),
        "the province's Persian name"
    );
    // Persian digits: two devices.
    assert!(page.body.contains("data-k=\"all:t\">۲<"), "{}", page.body);
    // A new sign-in of the same operator opens in Persian.
    let again = sign_in(&app, &app.token).await;
    let page = get(&app, Some(&again), "/ui/").await;
    assert!(page.body.contains("<html lang=\"fa\""), "remembered");
    // Another operator is not affected.
    let central = app.token_for(Role::CentralOps, &[]).await;
    let other = sign_in(&app, &central).await;
    let page = get(&app, Some(&other), "/ui/").await;
    assert!(page.body.contains("<html lang=\"en\""));
    // The sign-in page follows the browser until someone signs in.
    let mut req = Request::builder().uri("/ui/login");
    req = req.header("accept-language", "fa-IR,fa;q=0.9");
    let r = send(&app, req.body(Body::empty()).unwrap()).await;
    assert!(
        r.body.contains("<html lang=\"fa\" dir=\"rtl\">"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn assets_are_embedded_cached_for_good_and_a_first_visit_stays_light() {
    let app = test_app().await;
    // All 31 provinces with devices, the heaviest national page.
    let devices: Vec<Value> = ProvinceCode::all()
        .flat_map(|p| {
            (0..3).map(move |i| dev(&format!("BB-{}-{i}", p.number()), &p.to_string(), None))
        })
        .collect();
    ok(app
        .json("POST", "/api/v1/devices", json!({ "devices": devices }))
        .await);
    let sid = sign_in(&app, &app.token).await;
    let page = get(&app, Some(&sid), "/ui/").await;
    assert_eq!(page.status, StatusCode::OK);
    // Every linked asset is ours and served with its hash for a year.
    let mut linked = Vec::new();
    for marker in ["href=\"/ui/assets/", "src=\"/ui/assets/"] {
        for (at, _) in page.body.match_indices(marker) {
            let rest = &page.body[at + marker.len() - "/ui/assets/".len()..];
            linked.push(rest[..rest.find('"').unwrap()].to_owned());
        }
    }
    assert_eq!(linked.len(), 2, "the sheet and the script: {linked:?}");
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "no external URL"
    );
    let mut bytes = page.len;
    let mut fonts = Vec::new();
    for url in &linked {
        let r = get(&app, None, &url.replace("&amp;", "&")).await;
        assert_eq!(r.status, StatusCode::OK, "{url}");
        assert_eq!(
            r.headers.get("cache-control").unwrap(),
            "public, max-age=31536000, immutable",
            "{url}"
        );
        let etag = r.headers.get("etag").unwrap().to_str().unwrap().to_owned();
        let mut req = Request::builder()
            .uri(url.as_str())
            .header("if-none-match", &etag);
        req = req.header("host", "console.test");
        assert_eq!(
            send(&app, req.body(Body::empty()).unwrap()).await.status,
            StatusCode::NOT_MODIFIED
        );
        bytes += r.len;
        for (at, _) in r.body.match_indices("url(") {
            let rest = &r.body[at + 4..];
            fonts.push(format!("/ui/assets/{}", &rest[..rest.find(')').unwrap()]));
        }
    }
    // A Persian first visit loads both weights of the font.
    assert_eq!(fonts.len(), 2, "{fonts:?}");
    for url in &fonts {
        let r = get(&app, None, url).await;
        assert_eq!(r.status, StatusCode::OK, "{url}");
        assert_eq!(r.headers.get("content-type").unwrap(), "font/woff2");
        bytes += r.len;
    }
    assert!(bytes <= 150 * 1024, "a first visit is {bytes} bytes");
    // One live update of the national page, and the same again: 304.
    let live = get(&app, Some(&sid), "/ui/live/readiness?scope=national").await;
    assert_eq!(live.status, StatusCode::OK);
    assert!(
        live.body.len() <= 5 * 1024,
        "an update is {} bytes",
        live.body.len()
    );
    let etag = live
        .headers
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let req = Request::builder()
        .uri("/ui/live/readiness?scope=national")
        .header("cookie", session_cookie(&sid))
        .header("if-none-match", etag)
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, req).await.status, StatusCode::NOT_MODIFIED);
    println!(
        "first visit {bytes} bytes (the page {}), live update {} bytes",
        page.body.len(),
        live.body.len()
    );
}

#[tokio::test]
async fn rollouts_bench_audit_and_report_keep_a_technician_in_their_province() {
    let app = super::rollouts::with_fleet_and_target().await;
    ok(app
        .json(
            "POST",
            "/api/v1/rollouts",
            json!({ "model": "ballot-box-v2", "version": "2.5.0", "draft": true }),
        )
        .await);
    let shipment = ok(app
        .call(
            "POST",
            "/api/v1/enrol/batch",
            Some(Body::from(
                "serial,model,province\nBB-NEW-1,ballot-box-v2,IR-23\n",
            )),
            "text/csv",
        )
        .await)["shipment"]
        .as_str()
        .unwrap()
        .to_owned();
    let tech = app.token_for(Role::ProvinceTech, &["IR-02"]).await;
    let sid = sign_in(&app, &tech).await;
    for uri in [
        "/ui/rollouts",
        "/ui/rollouts/1",
        "/ui/live/rollout/1",
        "/ui/report",
        "/ui/bench",
    ] {
        let r = get(&app, Some(&sid), uri).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.body);
        for other in ["Tehran", "IR-23", "BB-TEH", "BB-RAY", &shipment] {
            assert!(!r.body.contains(other), "{uri} shows {other}:\n{}", r.body);
        }
    }
    let report = get(&app, Some(&sid), "/ui/report").await;
    assert!(report.body.contains("Mazandaran"), "{}", report.body);
    let pdf = get(&app, Some(&sid), "/ui/report.pdf?lang=fa").await;
    assert_eq!(pdf.status, StatusCode::OK);
    assert_eq!(pdf.headers.get("content-type").unwrap(), "application/pdf");
    // Pages the role may not see, and another province's shipment.
    for (uri, status) in [
        ("/ui/audit", StatusCode::FORBIDDEN),
        (&*format!("/ui/bench/{shipment}"), StatusCode::NOT_FOUND),
        (
            &*format!("/ui/live/shipment/{shipment}"),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let r = get(&app, Some(&sid), uri).await;
        assert_eq!(r.status, status, "{uri}: {}", r.body);
    }
    // Actions the role may not take: refused, nothing changed.
    let csrf = get(&app, Some(&sid), "/ui/rollouts/1").await.csrf();
    let cookie = session_cookie(&sid);
    for (uri, fields) in [
        (
            "/ui/rollouts/1/act",
            vec![
                ("_csrf", csrf.as_str()),
                ("action", "start"),
                ("confirm", "yes"),
            ],
        ),
        (
            "/ui/freeze",
            vec![
                ("_csrf", csrf.as_str()),
                ("from", "1404-01-01"),
                ("to", "1404-01-02"),
                ("reason", "x"),
            ],
        ),
        ("/ui/freeze/clear", vec![("_csrf", csrf.as_str())]),
        (
            "/ui/bench",
            vec![
                ("_csrf", csrf.as_str()),
                ("csv", "serial,model,province\nBB-X,ballot-box-v2,IR-02\n"),
            ],
        ),
    ] {
        let r = post(&app, &cookie, uri, &fields, None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{uri}: {}", r.body);
    }
    let (_, shown) = app.get("/api/v1/rollouts/1").await;
    assert_eq!(shown["phase"], "draft");
    let (_, freeze) = app.get("/api/v1/freeze").await;
    assert_eq!(freeze["windows"], json!([]));

    // Central operations start it (after a confirmation), then pause it
    // at once; a freeze window goes in with Jalali dates.
    let central = app.token_for(Role::CentralOps, &[]).await;
    let sid = sign_in(&app, &central).await;
    let cookie = session_cookie(&sid);
    let page = get(&app, Some(&sid), "/ui/rollouts/1").await;
    assert!(page.body.contains("Tehran") && page.body.contains("Mazandaran"));
    let csrf = page.csrf();
    let r = post(
        &app,
        &cookie,
        "/ui/rollouts/1/act",
        &[("_csrf", &csrf), ("action", "start")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("name=\"confirm\" value=\"yes\""));
    let (_, shown) = app.get("/api/v1/rollouts/1").await;
    assert_eq!(shown["phase"], "draft", "not before the confirmation");
    let r = post(
        &app,
        &cookie,
        "/ui/rollouts/1/act",
        &[("_csrf", &csrf), ("action", "start"), ("confirm", "yes")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let r = post(
        &app,
        &cookie,
        "/ui/rollouts/1/act",
        &[("_csrf", &csrf), ("action", "pause"), ("confirm", "yes")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let (_, shown) = app.get("/api/v1/rollouts/1").await;
    assert_eq!(shown["phase"], "paused");
    let r = post(
        &app,
        &cookie,
        "/ui/freeze",
        &[
            ("_csrf", &csrf),
            ("from", "1404-01-01"),
            ("to", "1404-01-03"),
            ("reason", "Nowruz"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let (_, freeze) = app.get("/api/v1/freeze").await;
    // Tehran midnight of 1404-01-01 (2025-03-21) is 20:30 UTC the day before.
    assert_eq!(
        freeze["windows"][0]["from_ms"], 1_742_502_600_000u64,
        "{freeze}"
    );
    let audit = ok(app.get("/api/v1/audit?action=rollout.").await).to_string();
    assert!(
        audit.contains("rollout.pause") && audit.contains("rollout.start"),
        "{audit}"
    );
    // A bad date is refused with the reason, nothing added.
    let r = post(
        &app,
        &cookie,
        "/ui/freeze",
        &[
            ("_csrf", &csrf),
            ("from", "1404-12-30"),
            ("to", "1405-01-02"),
            ("reason", "x"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("no day 30 in Jalali 1404-12"), "{}", r.body);
    // The audit page for those who may read it, filtered by action.
    let page = get(&app, Some(&sid), "/ui/audit?action=rollout.pause").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("The audit chain is intact"),
        "{}",
        page.body
    );
    assert!(page.body.contains("rollout.pause") && !page.body.contains("rollout.start"));
}

#[tokio::test]
async fn the_national_page_draws_each_province_trend_from_the_samples() {
    let app = test_app().await;
    fleet_of_two_provinces(&app).await;
    let now = crate::clock::unix_ms();
    let p = ProvinceCode::parse("IR-02").unwrap();
    for (i, ready) in [0u32, 1, 2].iter().enumerate() {
        let at_ms = now - (3 - i as u64) * 6 * 3_600_000;
        ok_store(
            app.store
                .add_samples(
                    &[crate::store::Sample {
                        at_ms,
                        province: p,
                        total: 2,
                        ready: *ready,
                        reasons: Default::default(),
                    }],
                    0,
                )
                .await,
        );
    }
    let sid = sign_in(&app, &app.token).await;
    let page = get(&app, Some(&sid), "/ui/").await;
    assert!(
        page.body.contains("aria-label=\"0.0% → 100.0%\""),
        "{}",
        page.body
    );
    assert_eq!(
        page.body.matches("<polyline").count(),
        1,
        "only Mazandaran has samples"
    );
}

fn ok_store(r: Result<(), crate::store::StoreError>) {
    r.unwrap();
}

#[tokio::test]
async fn a_shipment_made_on_the_bench_shows_its_qr_sheet_once_and_bad_lines_register_nothing() {
    let app = test_app().await;
    ok(app.csv(REGISTRY).await);
    let warehouse = app.token_for(Role::Warehouse, &[]).await;
    let sid = sign_in(&app, &warehouse).await;
    let cookie = session_cookie(&sid);
    let page = get(&app, Some(&sid), "/ui/bench").await;
    assert!(page.body.contains("name=\"csv\""), "{}", page.body);
    let csrf = page.csrf();
    // A bad line: 422, the line named, nothing registered.
    let r = post(
        &app,
        &cookie,
        "/ui/bench",
        &[
            ("_csrf", &csrf),
            ("csv", "serial,model,province\nBB-Q-1,ballot-box-v2,IR-99\n"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert!(r.body.contains("line 2"), "{}", r.body);
    assert!(app
        .fleet
        .read()
        .unwrap()
        .get(&DeviceId::parse("BB-Q-1").unwrap())
        .is_none());
    // A Host that is no host name (the QR codes would carry it): refused
    // before anything is registered.
    let req = Request::builder()
        .method("POST")
        .uri("/ui/bench")
        .header("host", "a".repeat(3000))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", &cookie)
        .body(Body::from(form_body(&[
            ("_csrf", &csrf),
            ("csv", "serial,model,province\nBB-Q-1,ballot-box-v2,IR-02\n"),
        ])))
        .unwrap();
    let r = send(&app, req).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(app
        .fleet
        .read()
        .unwrap()
        .get(&DeviceId::parse("BB-Q-1").unwrap())
        .is_none());
    // A good one: the sheet, with a QR code and the token of each device.
    let r = post(
        &app,
        &cookie,
        "/ui/bench",
        &[
            ("_csrf", &csrf),
            ("csv", "serial,model,province,county\r\nBB-Q-1,ballot-box-v2,IR-02,IR-02-SARI\r\nBB-Q-2,ballot-box-v2,IR-02,IR-02-SARI\r\n"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.headers.get("cache-control").unwrap(), "no-store");
    assert_eq!(r.body.matches("<svg").count(), 2, "{}", r.body);
    assert_eq!(
        r.body
            .matches("fleet-agent enrol --controller https://console.test --token ")
            .count(),
        2
    );
    let at = r.body.find("/ui/bench/shipment-").unwrap();
    let shipment = &r.body[at + "/ui/bench/".len()..];
    let shipment = &shipment[..shipment.find('"').unwrap()];
    let status = get(&app, Some(&sid), &format!("/ui/bench/{shipment}")).await;
    assert_eq!(status.status, StatusCode::OK);
    assert!(status.body.contains("BB-Q-1") && status.body.contains("BB-Q-2"));
    let live = get(&app, Some(&sid), &format!("/ui/live/shipment/{shipment}")).await;
    let live: Value = serde_json::from_str(&live.body).unwrap();
    assert_eq!(
        live["rows"]["sh"],
        json!({ "n": 2, "e": 0, "p": 0, "r": 0 })
    );
    assert_eq!(live["rows"]["BB-Q-1"]["l"], "registered");
    // Registered and audited under the operator's name.
    let audit = ok(app.get("/api/v1/audit?action=enrol.batch").await).to_string();
    assert!(
        audit.contains("BB-Q-1") && audit.contains("warehouse"),
        "{audit}"
    );
    // The sheet again, one click from the shipment: new tokens for the
    // devices not enrolled yet, in a new shipment.
    assert!(
        status.body.contains(&format!("/ui/bench/{shipment}/sheet")),
        "{}",
        status.body
    );
    let again = post(
        &app,
        &cookie,
        &format!("/ui/bench/{shipment}/sheet"),
        &[("_csrf", &csrf)],
        None,
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body.matches("<svg").count(), 2);
    assert!(!again.body.contains(shipment), "a new shipment");
    let token = |body: &str| {
        let at = body.find("--token ").unwrap() + "--token ".len();
        body[at..at + body[at..].find('<').unwrap()].to_owned()
    };
    assert_ne!(token(&again.body), token(&r.body));
}
