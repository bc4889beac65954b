//! The whole application as one router: every route, behind the layers every request goes
//! through (request ids, tracing without caller data, a body limit, and the safety net that puts a
//! person on the line if a handler panics).

use std::sync::Arc;

use application::CallAnswer;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, Request};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::response::Response;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::error::ApiError;
use crate::state::{self, AppState};
use crate::{dashboard, health, openapi, operator, read_api, twilio};

/// The largest request body accepted. Twilio's webhooks are a few kilobytes; anything near this is
/// not Twilio.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The header carrying each request's id, set when the client did not send one.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole application.
pub fn app(state: AppState) -> Router {
    app_with(state, Router::new())
}

/// The whole application, with `extra` routes served through the same stack (the benchmark adds
/// its baselines this way, so they pay for the same layers as the webhooks).
pub fn app_with(state: AppState, extra: Router<AppState>) -> Router {
    let voice = state.voice.clone();
    Router::new()
        .merge(extra)
        .merge(twilio::router())
        .merge(health::router())
        .merge(operator::router())
        .merge(read_api::router())
        .merge(openapi::router())
        .merge(dashboard::router(&state))
        .fallback(twilio::unknown_route)
        .layer(middleware::from_fn_with_state(
            state.rate_limits.clone(),
            crate::rate_limit::limit,
        ))
        .layer(RequestBodyTimeoutLayer::new(state.limits.body))
        .layer(middleware::from_fn_with_state(
            state.limits.request,
            within_request_timeout,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            twilio::refusal::answer_refusals,
        ))
        .layer(safety_net(voice))
        .layer(middleware::from_fn(security_headers))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Logs method, path and request id only: query strings and bodies may carry caller data.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let request_id = request
                .headers()
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
        })
        .on_response(DefaultOnResponse::new().level(Level::INFO)))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// The server's request timeout (`server::Limits::request`). A caller-facing webhook cut off
/// here still answers the safe TwiML (`twilio::refusal`).
async fn within_request_timeout(
    State(limit): State<Duration>,
    request: Request<Body>,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::TimedOut.into_response(),
    }
}

/// The policy every answer carries. The pages load nothing but their own script and style,
/// are never framed (clickjacking), and send no referrer to another site (a call's URL names
/// it). Not `no-referrer`: with it, a browser sends `Origin: null` on the pages' own form posts,
/// which the dashboard's origin check must refuse.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Security headers on every answer (the dashboard's pages, the API's JSON, TwiML alike: harmless
/// where a browser never looks, and no page can be served without them).
async fn security_headers(request: Request<Body>, next: Next) -> Response {
    use axum::http::header::{
        CONTENT_SECURITY_POLICY as CSP, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
    };
    use axum::http::HeaderValue;
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (CSP, CONTENT_SECURITY_POLICY),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (REFERRER_POLICY, "same-origin"),
        (X_FRAME_OPTIONS, "DENY"),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    response
}

/// The last line of defence: a handler that panics would drop the connection, and Twilio would
/// play its application-error message. Instead the caller hears the trouble message and is
/// connected to a person.
pub fn safety_net(
    voice: Arc<state::Voice>,
) -> CatchPanicLayer<impl Fn(Box<dyn std::any::Any + Send>) -> Response + Clone> {
    CatchPanicLayer::custom(move |_panic: Box<dyn std::any::Any + Send>| {
        tracing::error!("a handler panicked; the caller was connected to a person");
        twilio::render::respond(&twilio::render::twiml(
            &application::Spoken::new(CallAnswer::Trouble, domain::Language::default()),
            None,
            &voice,
        ))
    })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::post;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_still_puts_a_person_on_the_line() {
        let voice = Arc::new(state::Voice {
            public_base_url: "https://hotline.example.org".into(),
            lines: application::Lines {
                counselor: domain::DialNumber::parse("+15005550001").expect("valid"),
                crisis: domain::DialNumber::parse("988").expect("valid"),
                counselor_es: None,
                more: Vec::new(),
                more_es: Vec::new(),
            },
            voices: infrastructure::twilio::answers::Voices::default(),
            conversation: infrastructure::twilio::answers::Conversation::Speech,
            transcribe: false,
            recorded: infrastructure::twilio::answers::Recorded::default(),
            record_calls: true,
            whisper: true,
            ring: infrastructure::twilio::answers::Ring::InOrder,
        });
        let router: Router = Router::new()
            .route(
                "/twilio/voice/",
                post(|| async {
                    if std::hint::black_box(true) {
                        panic!("a bug");
                    }
                    "unreachable"
                }),
            )
            .layer(safety_net(voice));
        let request = Request::post("/twilio/voice/")
            .body(Body::empty())
            .expect("a request");
        let response = router.oneshot(request).await.expect("answers");
        assert_eq!(response.status(), 200);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("a body");
        let xml = String::from_utf8(body.to_vec()).expect("UTF-8");
        assert!(xml.contains("<Number>+15005550001</Number>"), "{xml}");
        assert!(xml.contains("9 8 8"), "{xml}");
    }
}
