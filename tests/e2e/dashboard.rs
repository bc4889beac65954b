//! The dashboard: signing in, what each role sees, and a real browser (headless Chromium from
//! Debian's packages, driven through chromedriver) watching a live call appear and opening its
//! timeline. Screenshots are saved under `target/test-artifacts/`.

use std::process::Stdio;
use std::time::Duration;

use application::auth::Role;
use domain::CallId;
use fantoccini::{ClientBuilder, Locator};
use infrastructure::event_store::subscription::SubscriptionRunner;
use infrastructure::read_side::CallViewsProjection;

use crate::helpers::*;
use crate::views::{mixed_workload, project};

impl TestApp {
    /// GETs a dashboard page with `session` as the session cookie.
    async fn page(&self, path: &str, session: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(format!("{}{path}", self.base_url));
        if let Some(session) = session {
            request = request.header("cookie", format!("hotline_session={session}"));
        }
        request.send().await.expect("the app answers")
    }

    /// A session of a new token with `role`.
    async fn session(&self, role: Role) -> String {
        self.sign_in(&self.token(role).await).await
    }
}

#[tokio::test]
async fn signing_in_takes_a_live_token_and_sets_a_strict_http_only_cookie() {
    let app = spawn_app().await;
    let client = no_redirects();
    let anonymous = client
        .get(format!("{}/", app.base_url))
        .send()
        .await
        .expect("answers");
    assert_eq!(anonymous.status(), 303);
    assert_eq!(anonymous.headers()["location"], "/sign-in");

    let refused = client
        .post(format!("{}/sign-in", app.base_url))
        .form(&[("token", "hl_forged")])
        .send()
        .await
        .expect("answers");
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().get("set-cookie").is_none());

    let token = app.token(Role::Analyst).await;
    let signed_in = client
        .post(format!("{}/sign-in", app.base_url))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .expect("answers");
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in.headers()["set-cookie"].to_str().expect("ASCII");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = app.sign_in(&token).await;
    let page = app.page("/", Some(&session)).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("HTML");
    assert!(html.contains("signed in as analyst"));
    assert!(!html.contains("https://"), "nothing from elsewhere");
}

#[tokio::test]
async fn each_role_sees_what_its_api_shows_it() {
    let app = spawn_app().await;
    let [ended, ..] = mixed_workload(&app).await;
    project(&app).await;
    let path = format!("/calls/{}", CallId::for_call_sid(&ended));

    let analyst = app.session(Role::Analyst).await;
    let html = app
        .page(&path, Some(&analyst))
        .await
        .text()
        .await
        .expect("HTML");
    assert!(html.contains("CallStarted") && html.contains("+1••••••••23"));
    assert!(!html.contains("rough day"), "no transcript for analysts");
    assert!(!html.contains("4155550123"), "no full number for analysts");
    assert!(!html.contains("id=\"intact\""));

    let supervisor = app.session(Role::Supervisor).await;
    let html = app
        .page(&path, Some(&supervisor))
        .await
        .text()
        .await
        .expect("HTML");
    assert!(html.contains("I had a rough day at work."));
    assert!(!html.contains("<pre>"), "no payloads for supervisors");
    assert!(
        !html.contains("4155550123"),
        "no full number for supervisors"
    );

    let auditor = app.session(Role::Auditor).await;
    let html = app
        .page(&path, Some(&auditor))
        .await
        .text()
        .await
        .expect("HTML");
    assert!(
        html.contains("<pre>") && html.contains("call_sid"),
        "payloads for auditors"
    );
    assert!(html.contains("id=\"intact\">intact"));
    // Auditors see the history as stored, the caller's number included.
    assert!(html.contains("4155550123"));

    let unknown = format!("/calls/{}", CallId::for_call_sid(&new_call_sid()));
    assert_eq!(app.page(&unknown, Some(&auditor)).await.status(), 404);
}

#[tokio::test]
async fn the_session_is_not_the_token_and_ends_at_sign_out_at_expiry_and_with_its_token() {
    let app = spawn_app().await;
    let tokens = infrastructure::tokens::ApiTokens::new(app.pool.clone());
    let (token_id, token) = tokens
        .create(Role::Supervisor, "a shift")
        .await
        .expect("a token");
    use secrecy::ExposeSecret;
    let token = token.expose_secret().to_owned();
    let session = app.sign_in(&token).await;
    assert_ne!(session, token);
    assert!(
        !session.contains(&token[3..]),
        "the cookie holds no part of the token"
    );
    // The token itself is no session, and the database keeps only a hash of the session.
    assert_eq!(no_redirect_page(&app, &token).await, 303);
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM dashboard_sessions WHERE position(convert_to($1, 'UTF8') in id_hash) > 0",
    )
    .bind(&session)
    .fetch_one(&app.pool)
    .await
    .expect("counts");
    assert_eq!(stored, 0);
    assert_eq!(app.page("/", Some(&session)).await.status(), 200);

    // Signing out ends the session on the server: a copy of the cookie is worth nothing after.
    let out = no_redirects()
        .post(format!("{}/sign-out", app.base_url))
        .header("origin", &app.base_url)
        .header("cookie", format!("hotline_session={session}"))
        .send()
        .await
        .expect("answers");
    assert_eq!(out.status(), 303);
    assert_eq!(no_redirect_page(&app, &session).await, 303);

    // A session past its lifetime is over.
    let expiring = app.sign_in(&token).await;
    assert_eq!(no_redirect_page(&app, &expiring).await, 200);
    sqlx::query("UPDATE dashboard_sessions SET expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .expect("updates");
    assert_eq!(no_redirect_page(&app, &expiring).await, 303);

    // Revoking the token ends every session opened with it.
    let live = app.sign_in(&token).await;
    assert_eq!(no_redirect_page(&app, &live).await, 200);
    assert!(tokens.revoke(token_id).await.expect("revokes"));
    assert_eq!(no_redirect_page(&app, &live).await, 303);
}

async fn no_redirect_page(app: &TestApp, session: &str) -> u16 {
    no_redirects()
        .get(format!("{}/", app.base_url))
        .header("cookie", format!("hotline_session={session}"))
        .send()
        .await
        .expect("answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn an_operator_session_gets_403_on_every_page() {
    let app = spawn_app().await;
    let [ended, ..] = mixed_workload(&app).await;
    project(&app).await;
    let operator = app.session(Role::Operator).await;
    for path in [
        "/".to_owned(),
        format!("/calls/{}", CallId::for_call_sid(&ended)),
        format!("/calls/{}", CallId::for_call_sid(&new_call_sid())),
    ] {
        let page = app.page(&path, Some(&operator)).await;
        assert_eq!(page.status(), 403, "{path}");
        let html = page.text().await.expect("HTML");
        assert!(html.contains("does not see call data"), "{path}: {html}");
        assert!(
            !html.contains("CallStarted") && !html.contains("••"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_cross_site_post_is_refused() {
    let app = spawn_app().await;
    let token = app.token(Role::Analyst).await;
    let client = no_redirects();
    for (origin, site) in [
        (Some("https://evil.example"), None),
        (Some("null"), None),
        (Some(&*app.base_url.replace("127.0.0.1", "localhost")), None),
        (None, Some("cross-site")),
    ] {
        let mut request = client
            .post(format!("{}/sign-in", app.base_url))
            .form(&[("token", token.as_str())]);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(site) = site {
            request = request.header("sec-fetch-site", site);
        }
        let refused = request.send().await.expect("answers");
        assert_eq!(refused.status(), 403, "{origin:?} {site:?}");
        assert!(refused.headers().get("set-cookie").is_none());
    }
    // A cross-site sign-out (a forced logout) does nothing either.
    let session = app.sign_in(&token).await;
    let refused = client
        .post(format!("{}/sign-out", app.base_url))
        .header("origin", "https://evil.example")
        .header("cookie", format!("hotline_session={session}"))
        .send()
        .await
        .expect("answers");
    assert_eq!(refused.status(), 403);
    assert_eq!(no_redirect_page(&app, &session).await, 200);
}

#[tokio::test]
async fn every_page_carries_the_security_headers() {
    let app = spawn_app().await;
    let session = app.session(Role::Auditor).await;
    for path in [
        "/",
        "/sign-in",
        "/calls/not-a-call",
        "/api/docs",
        "/static/dashboard.css",
    ] {
        let page = app.page(path, Some(&session)).await;
        let headers = page.headers();
        let csp = headers["content-security-policy"].to_str().expect("ASCII");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "same-origin", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
    }
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    _child: tokio::process::Child,
    url: String,
}

async fn chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("an address")
        .port();
    let child = tokio::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver runs: install Debian's chromium and chromium-driver packages");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !reqwest::get(format!("{url}/status"))
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Driver { _child: child, url }
}

fn artifact(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("the artifacts directory");
    dir.join(name)
}

#[tokio::test]
async fn in_a_browser_a_supervisor_signs_in_sees_a_live_call_appear_and_opens_its_timeline() {
    let app = spawn_app().await;
    let token = app.token(Role::Supervisor).await;
    // The projection runs beside the app, as it does in `hotline serve`.
    let runner = SubscriptionRunner::new(app.pool.clone(), CallViewsProjection);
    let projection = tokio::spawn(async move { runner.run(std::future::pending()).await });

    // fantoccini's TLS (unused here: chromedriver is plain HTTP on 127.0.0.1) needs a provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let driver = chromedriver().await;
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000"],
        }),
    );
    let browser = ClientBuilder::rustls()
        .expect("a TLS setup")
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a browser session");
    let wait = Duration::from_secs(20);

    browser
        .goto(&format!("{}/", app.base_url))
        .await
        .expect("opens");
    let field = browser
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#token"))
        .await
        .expect("the sign-in form");
    field.send_keys(&token).await.expect("types");
    browser
        .find(Locator::Css("#sign-in"))
        .await
        .expect("the button")
        .click()
        .await
        .expect("clicks");
    browser
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#no-live-calls"))
        .await
        .expect("the dashboard, with no live call yet");

    // A caller rings and speaks; the page follows by itself.
    let sid = new_call_sid();
    app.voice(&sid).await;
    app.recording(&sid, 1, "#").await;
    let id = CallId::for_call_sid(&sid);
    let link = browser
        .wait()
        .at_most(wait)
        .for_element(Locator::Css(&format!("tr.live-call a[href='/calls/{id}']")))
        .await
        .expect("the live call appears");
    std::fs::write(
        artifact("dashboard-live-call.png"),
        browser.screenshot().await.expect("a screenshot"),
    )
    .expect("saved");

    link.click().await.expect("opens the timeline");
    browser
        .wait()
        .at_most(wait)
        .for_element(Locator::Css("#timeline"))
        .await
        .expect("the timeline");
    let mut types = Vec::new();
    for cell in browser
        .find_all(Locator::Css("#timeline .event-type"))
        .await
        .expect("events")
    {
        types.push(cell.text().await.expect("text"));
    }
    assert_eq!(types, ["CallStarted", "RecordingReceived"]);
    browser
        .find(Locator::Css("#turns"))
        .await
        .expect("supervisors see the turns");
    let screenshot = browser.screenshot().await.expect("a screenshot");
    assert!(screenshot.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(artifact("dashboard-timeline.png"), screenshot).expect("saved");

    browser.close().await.expect("closes");
    projection.abort();
}
