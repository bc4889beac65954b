//! Hotline's HTTP surface and its wiring. `app` builds the whole router so that tests can drive it
//! exactly as the binary serves it; `startup` turns a `Config` into a running service.
#![forbid(unsafe_code)]

pub mod error;
pub mod health;
pub mod startup;
pub mod state;
pub mod twilio;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use state::AppState;

/// The largest request body accepted. Twilio's webhooks are a few kilobytes; anything near this is
/// not Twilio.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The header carrying each request's id, set when the client did not send one.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole application.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(twilio::router())
        .merge(health::router())
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
