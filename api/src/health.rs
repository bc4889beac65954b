//! `GET /health`: whether the service and its database answer.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::state::AppState;

/// The health route.
pub fn router() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

/// 200 when the database answers, 503 when it does not (the service still answers callers).
async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database_up = infrastructure::event_store::ping(&state.pool).await;
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
        })),
    )
}
