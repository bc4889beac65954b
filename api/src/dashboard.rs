//! The dashboard at `/`: sign in with an API token, then see live calls with their status and
//! risk, recent escalations, calls per day and the risk distribution, and any call's timeline.
//! Server-rendered (askama); the one script is ours, served from the binary, and only refreshes
//! the page while calls are live. Nothing is loaded from elsewhere.
//!
//! What each role sees follows the API: analysts, supervisors and auditors see call views (masked
//! numbers); supervisors and auditors also see turns (transcripts, replies); auditors also see
//! event payloads and whether the history is intact. Operators, whom the API refuses call data,
//! get 403 on every page.
//!
//! Signing in opens a server-side session (`ApiTokens::open_session`): the cookie holds a random
//! session id, never the token; the session expires after `SESSION_LIFETIME`, ends at sign-out,
//! and ends with its token's revocation. Every POST must come from the dashboard's own origin
//! (`same_origin`), on top of the cookie's SameSite=Strict.

use application::auth::Role;
use askama::Template;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use chrono::{Duration, Utc};
use domain::CallId;
use infrastructure::event_store::audit;
use infrastructure::read_side::queries::{self, CallQuery, CallRow, TurnRow};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::state::AppState;

/// The session cookie: the session's id, HttpOnly and SameSite=Strict.
const SESSION: &str = "hotline_session";

/// How long a dashboard session lasts: a shift, then the token is asked for again.
pub const SESSION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(dashboard))
        .route("/sign-in", get(sign_in_page).post(sign_in))
        .route("/sign-out", axum::routing::post(sign_out))
        .route("/calls/{id}", get(timeline))
        .route("/static/dashboard.js", get(script))
        .route("/static/dashboard.css", get(style))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            only_from_here,
        ))
}

/// Whether a request comes from the dashboard's own pages. A browser sends `Origin` with every
/// POST (and `Sec-Fetch-Site`); a cross-site form or script can set neither. It must name the
/// host the request was sent to (or `PUBLIC_BASE_URL`'s). A request with neither header is not
/// from a browser, and a forged request needs one.
fn same_origin(headers: &HeaderMap, public_base_url: &str) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = header("origin") {
        let public = public_base_url
            .splitn(4, '/')
            .take(3)
            .collect::<Vec<_>>()
            .join("/");
        let host = header("host");
        return origin != "null"
            && (origin.eq_ignore_ascii_case(&public)
                || host.is_some_and(|host| {
                    ["http://", "https://"]
                        .iter()
                        .any(|scheme| origin.eq_ignore_ascii_case(&format!("{scheme}{host}")))
                }));
    }
    header("sec-fetch-site").is_none_or(|site| matches!(site, "same-origin" | "none"))
}

/// Refuses every POST that does not come from the dashboard's own origin.
async fn only_from_here(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    if request.method() == Method::POST
        && !same_origin(request.headers(), &state.voice.public_base_url)
    {
        tracing::warn!(path = %request.uri().path(), "a cross-site POST to the dashboard was refused");
        return PageError::CrossSite.into_response();
    }
    next.run(request).await
}

/// A signed-in person.
#[derive(Debug)]
pub struct Viewer {
    role: Role,
}

impl Viewer {
    fn sees_turns(&self) -> bool {
        matches!(self.role, Role::Supervisor | Role::Auditor)
    }
    fn sees_events(&self) -> bool {
        self.role == Role::Auditor
    }
}

fn session_id(parts: &Parts) -> Option<SecretString> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == SESSION)
        .map(|(_, value)| SecretString::from(value.to_owned()))
}

/// Why a page is not shown: not signed in (to the sign-in page), no such call, or the database is
/// down (a plain page that says so; the cause is logged, never shown).
#[derive(Debug)]
pub enum PageError {
    SignIn,
    /// The role may not see this page (operators see no call data).
    Forbidden(Role),
    /// A POST from another site.
    CrossSite,
    NoSuchCall,
    Unavailable(sqlx::Error),
}

impl From<sqlx::Error> for PageError {
    fn from(error: sqlx::Error) -> Self {
        Self::Unavailable(error)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            Self::SignIn => Redirect::to("/sign-in").into_response(),
            Self::Forbidden(role) => page_error(
                StatusCode::FORBIDDEN,
                &format!(
                    "The {role} role does not see call data. Sign in with an analyst's, a \
                     supervisor's or an auditor's token."
                ),
            ),
            Self::CrossSite => page_error(
                StatusCode::FORBIDDEN,
                "This request did not come from the dashboard's own pages, and was refused.",
            ),
            Self::NoSuchCall => page_error(StatusCode::NOT_FOUND, "There is no such call."),
            Self::Unavailable(error) => {
                tracing::error!(error = %error, "a dashboard page could not read the database");
                page_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The database is unavailable; try again shortly.",
                )
            }
        }
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let session = session_id(parts).ok_or(PageError::SignIn)?;
        let role = state
            .tokens
            .session_role(&session)
            .await?
            .ok_or(PageError::SignIn)?;
        // As the API: operators run the service and see no call data.
        if role == Role::Operator {
            return Err(PageError::Forbidden(role));
        }
        Ok(Self { role })
    }
}

fn page_error(status: StatusCode, message: &str) -> Response {
    let page = MessagePage {
        message: message.to_owned(),
    };
    (status, render(&page)).into_response()
}

fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => ([(CACHE_CONTROL, "no-store")], Html(html)).into_response(),
        Err(error) => {
            tracing::error!(error = %error, "a dashboard page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page failed to render",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    message: String,
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    error: Option<String>,
}

async fn sign_in_page() -> Response {
    render(&SignInPage { error: None })
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
}

async fn sign_in(State(state): State<AppState>, Form(form): Form<SignInForm>) -> Response {
    let token = SecretString::from(form.token.trim().to_owned());
    match state.tokens.open_session(&token, SESSION_LIFETIME).await {
        Ok(Some((session, _))) => {
            let secure = if state.voice.public_base_url.starts_with("https://") {
                "; Secure"
            } else {
                ""
            };
            let cookie = format!(
                "{SESSION}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
                session.expose_secret(),
                SESSION_LIFETIME.as_secs()
            );
            ([(SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        Ok(None) => (
            StatusCode::UNAUTHORIZED,
            render(&SignInPage {
                error: Some("That is not a live token.".into()),
            }),
        )
            .into_response(),
        Err(error) => PageError::from(error).into_response(),
    }
}

/// Ends the session on the server (a copy of the cookie is worth nothing after), and clears it.
async fn sign_out(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    let (parts, _) = request.into_parts();
    if let Some(session) = session_id(&parts) {
        if let Err(error) = state.tokens.end_session(&session).await {
            return PageError::from(error).into_response();
        }
    }
    let cookie = format!("{SESSION}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    ([(SET_COOKIE, cookie)], Redirect::to("/sign-in")).into_response()
}

/// A bar of a chart, its height already scaled.
#[derive(Debug)]
struct Bar {
    label: String,
    value: i64,
    x: usize,
    height: i64,
    y: i64,
}

const CHART_HEIGHT: i64 = 120;
const BAR_STEP: usize = 40;

fn bars(values: Vec<(String, i64)>) -> Vec<Bar> {
    let max = values.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
    values
        .into_iter()
        .enumerate()
        .map(|(i, (label, value))| {
            let height = value * CHART_HEIGHT / max;
            Bar {
                label,
                value,
                x: i * BAR_STEP,
                height,
                y: CHART_HEIGHT - height,
            }
        })
        .collect()
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    role: String,
    live: Vec<CallRow>,
    escalations: Vec<CallRow>,
    recent: Vec<CallRow>,
    per_day: Vec<Bar>,
    risk: Vec<Bar>,
    calls: i64,
    escalation_rate: String,
    median_latency: String,
    /// Calls of the last day where risk was found and no person has taken the call, live ones
    /// first, then by their first sign of risk.
    waiting: Vec<CallRow>,
    to_person_calls: i64,
    to_person_median: String,
    to_person_p90: String,
    to_person_max: String,
    risk_to_person_median: String,
    answer_rate: String,
    crisis_fallbacks: i64,
    hung_up_waiting: i64,
    risk_without_person: i64,
}

/// A duration in milliseconds as the dashboard shows it.
fn seconds(ms: Option<f64>) -> String {
    ms.map_or_else(|| "—".into(), |ms| format!("{:.0} s", ms / 1000.0))
}

async fn dashboard(viewer: Viewer, State(state): State<AppState>) -> Result<Response, PageError> {
    let pool = &state.pool;
    let since = Utc::now() - Duration::days(14);
    let live = CallQuery {
        from: Some(Utc::now() - Duration::days(1)),
        limit: 100,
        ..CallQuery::default()
    };
    let escalated = CallQuery {
        escalated: Some(true),
        limit: 10,
        ..CallQuery::default()
    };
    let recent = CallQuery {
        limit: 20,
        ..CallQuery::default()
    };
    let (live, _) = queries::list_calls(pool, &live).await?;
    let (escalations, _) = queries::list_calls(pool, &escalated).await?;
    let (recent, _) = queries::list_calls(pool, &recent).await?;
    let stats = queries::stats(pool, Some(since), None).await?;
    let mut waiting: Vec<CallRow> = live
        .iter()
        .filter(|c| c.first_risk_at.is_some() && c.person_at.is_none())
        .cloned()
        .collect();
    waiting.sort_by_key(|c| (c.outcome.is_some(), c.first_risk_at));
    let live = live.into_iter().filter(|c| c.outcome.is_none()).collect();
    let handoff = &stats.handoff;
    #[allow(clippy::cast_precision_loss)]
    let page = DashboardPage {
        waiting,
        to_person_calls: handoff.time_to_person.calls,
        to_person_median: seconds(handoff.time_to_person.median_ms),
        to_person_p90: seconds(handoff.time_to_person.p90_ms),
        to_person_max: seconds(handoff.time_to_person.max_ms.map(|ms| ms as f64)),
        risk_to_person_median: seconds(handoff.risk_to_person.median_ms),
        answer_rate: handoff
            .counselor_answer_rate
            .map_or_else(|| "—".into(), |r| format!("{:.0} %", r * 100.0)),
        crisis_fallbacks: handoff.crisis_line_fallbacks,
        hung_up_waiting: handoff.hung_up_waiting,
        risk_without_person: handoff.risk_without_person,
        role: viewer.role.to_string(),
        live,
        escalations,
        recent,
        per_day: bars(
            stats
                .calls_per_day
                .iter()
                .map(|d| (d.day.format("%m-%d").to_string(), d.calls))
                .collect(),
        ),
        risk: bars(
            stats
                .risk_distribution
                .iter()
                .map(|c| (c.value.clone(), c.calls))
                .collect(),
        ),
        calls: stats.calls,
        escalation_rate: stats
            .escalation_rate
            .map_or_else(|| "—".into(), |r| format!("{:.0} %", r * 100.0)),
        median_latency: stats
            .turn_latency
            .median_ms
            .map_or_else(|| "—".into(), |ms| format!("{ms:.0} ms")),
    };
    Ok(render(&page))
}

/// An event as the timeline shows it.
#[derive(Debug)]
struct TimelineEvent {
    sequence: i64,
    event_type: String,
    recorded_at: String,
    /// Only for auditors.
    payload: Option<String>,
}

#[derive(Template)]
#[template(path = "timeline.html")]
struct TimelinePage {
    role: String,
    call: CallRow,
    live: bool,
    events: Vec<TimelineEvent>,
    turns: Option<Vec<TurnRow>>,
    intact: Option<bool>,
}

async fn timeline(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = CallId::from_id_or_sid(&id).ok_or(PageError::NoSuchCall)?;
    let pool = &state.pool;
    let call = queries::get_call(pool, id)
        .await?
        .ok_or(PageError::NoSuchCall)?;
    let history = audit::history(pool, &id.to_string()).await?;
    let events = history
        .into_iter()
        .map(|e| TimelineEvent {
            sequence: e.sequence,
            event_type: e.event_type,
            recorded_at: e.recorded_at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
            payload: viewer
                .sees_events()
                .then(|| serde_json::to_string_pretty(&e.payload).unwrap_or_default()),
        })
        .collect();
    let turns = if viewer.sees_turns() {
        Some(queries::turns(pool, id).await?)
    } else {
        None
    };
    let intact = if viewer.sees_events() {
        Some(audit::verify(pool, Some(&id.to_string())).await?.intact())
    } else {
        None
    };
    Ok(render(&TimelinePage {
        role: viewer.role.to_string(),
        live: call.outcome.is_none(),
        call,
        events,
        turns,
        intact,
    }))
}

/// Refreshes the part of the page marked `data-refresh` while it says calls are live.
const SCRIPT: &str = include_str!("../static/dashboard.js");

async fn script() -> Response {
    ([(CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

/// The dashboard's style (the pages' CSP admits no inline style).
async fn style() -> Response {
    (
        [(CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../static/dashboard.css"),
    )
        .into_response()
}
