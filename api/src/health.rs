//! `GET /health`: whether the service and its database answer.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::state::AppState;

/// How long the health check waits for the database.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The health route.
pub fn router() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

/// 200 when the database answers, 503 when it does not (the service still answers callers, and
/// keeps their webhooks in the spool). Says which cause holds the store's breaker open, and how
/// the spool stands: anything `pending` is not in the store yet.
async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    // As things stand when asked, before the ping's wait.
    let breaker = state.calls.open_breaker().map(|cause| cause.as_str());
    // A database that stopped answering must not stop the health check answering.
    let ping = infrastructure::event_store::ping(&state.pool);
    let database_up = tokio::time::timeout(PING_TIMEOUT, ping)
        .await
        .unwrap_or(false);
    let status = if database_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "database": if database_up { "up" } else { "down" },
            "refused_characters_removed": crate::twilio::extract::REFUSED_CHARACTERS_REMOVED
                .load(std::sync::atomic::Ordering::Relaxed),
            "breaker": breaker,
            "webhooks_refused": state.refusals.counts(),
            "connections": state.connections.counts(),
            "spool": state.spool.as_ref().map(|spool| spool.stats()),
        })),
    )
}
