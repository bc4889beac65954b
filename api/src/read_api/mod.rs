//! The read side's API. Analysts (and supervisors and auditors) see call views and statistics,
//! never a full number, a transcript or audio; supervisors and auditors see turns in detail;
//! auditors replay a call's full history, its state as of any event, and whether it is intact.

mod csv;
pub mod dto;
pub mod params;

use application::auth::Role;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use domain::CallId;
use infrastructure::event_store::audit;
use infrastructure::read_side::call_state::{replay_call, ReplayCallError};
use infrastructure::read_side::queries::{self, CallQuery};
use serde_json::json;

use self::dto::{AuditEventOut, CallHistory, CallOut, CallPage, CallTurns, StatsOut, TurnOut};
use self::params::{encode_cursor, Format, ListParams, Params, StateParams, StatsParams};
use crate::auth::{Authorized, Roles};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// Call views and statistics: no caller data beyond a masked number.
#[derive(Debug)]
pub struct ViewReaders;
impl Roles for ViewReaders {
    const ROLES: &'static [Role] = &[Role::Analyst, Role::Supervisor, Role::Auditor];
}

/// Turns in detail, transcripts included.
#[derive(Debug)]
pub struct TurnReaders;
impl Roles for TurnReaders {
    const ROLES: &'static [Role] = &[Role::Supervisor, Role::Auditor];
}

/// The full event history.
#[derive(Debug)]
pub struct Auditors;
impl Roles for Auditors {
    const ROLES: &'static [Role] = &[Role::Auditor];
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/calls", get(list_calls))
        .route("/api/calls/{id}", get(get_call))
        .route("/api/calls/{id}/turns", get(call_turns))
        .route("/api/calls/{id}/events", get(call_events))
        .route("/api/calls/{id}/state", get(call_state))
        .route("/api/calls/{id}/verify", get(verify_call))
        .route("/api/stats", get(stats))
}

fn call_id(id: &str) -> Result<CallId, ApiError> {
    CallId::from_id_or_sid(id).ok_or(ApiError::UnknownCall)
}

/// `GET /api/calls`: filtered, sorted, paged by cursor; `format=csv` exports every match.
#[utoipa::path(get, path = "/api/calls", tag = "calls",
    summary = "List calls (analyst, supervisor, auditor)",
    params(
        ("status" = Option<String>, Query, description = "Twilio's last call status, e.g. in-progress or completed"),
        ("risk_at_least" = Option<String>, Query, description = "none, low, moderate, high or imminent"),
        ("escalated" = Option<bool>, Query, description = "whether the caller was connected to a person"),
        ("outcome" = Option<String>, Query, description = "escalated, ended_by_caller, hung_up or not_connected"),
        ("from" = Option<String>, Query, description = "started at or after: a date (2026-11-25) or an RFC 3339 time"),
        ("to" = Option<String>, Query, description = "started before: a date or an RFC 3339 time"),
        ("sort" = Option<String>, Query, description = "started_at, duration_secs, max_risk or turns; prefix - for descending (default -started_at)"),
        ("limit" = Option<u32>, Query, description = "1 to 500 (default 50)"),
        ("cursor" = Option<String>, Query, description = "the next_cursor of the previous page, with the same sort"),
        ("format" = Option<String>, Query, description = "json (default), or csv for every match"),
    ),
    responses(
        (status = 200, description = "A page of calls (or text/csv)", body = CallPage),
        (status = 400, description = "A bad filter, sort, limit or cursor", body = ErrorBody),
        (status = 401, description = "No live bearer token", body = ErrorBody), (status = 403, description = "The token's role may not use this endpoint", body = ErrorBody)
    ),
    security(("bearer" = [])))]
pub(crate) async fn list_calls(
    _: Authorized<ViewReaders>,
    State(state): State<AppState>,
    Params(params): Params<ListParams>,
) -> Result<Response, ApiError> {
    let format = params.format.unwrap_or_default();
    let query = CallQuery::try_from(params)?;
    if format == Format::Csv {
        return csv::export(&state.pool, query).await;
    }
    let (calls, next) = queries::list_calls(&state.pool, &query).await?;
    Ok(Json(CallPage {
        calls: calls.into_iter().map(CallOut::from).collect(),
        next_cursor: next.as_ref().map(encode_cursor),
    })
    .into_response())
}

/// `GET /api/calls/{id}`.
#[utoipa::path(get, path = "/api/calls/{id}", tag = "calls",
    summary = "One call's view (analyst, supervisor, auditor)",
    params(("id" = String, Path, description = "the call's id, or its CallSid")),
    responses(
        (status = 200, description = "The call", body = CallOut),
        (status = 404, description = "No such call", body = ErrorBody),
        (status = 401, description = "No live bearer token", body = ErrorBody), (status = 403, description = "The token's role may not use this endpoint", body = ErrorBody)
    ),
    security(("bearer" = [])))]
pub(crate) async fn get_call(
    _: Authorized<ViewReaders>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CallOut>, ApiError> {
    let id = call_id(&id)?;
    queries::get_call(&state.pool, id)
        .await?
        .map(|call| Json(call.into()))
        .ok_or(ApiError::UnknownCall)
}

/// `GET /api/calls/{id}/turns`: transcripts, replies, risk signals and timings.
#[utoipa::path(get, path = "/api/calls/{id}/turns", tag = "calls",
    summary = "A call's turns in detail: transcripts, replies, risk signals (supervisor, auditor)",
    params(("id" = String, Path, description = "the call's id, or its CallSid")),
    responses(
        (status = 200, description = "The turns", body = CallTurns),
        (status = 404, description = "No such call", body = ErrorBody),
        (status = 401, description = "No live bearer token", body = ErrorBody), (status = 403, description = "The token's role may not use this endpoint", body = ErrorBody)
    ),
    security(("bearer" = [])))]
pub(crate) async fn call_turns(
    _: Authorized<TurnReaders>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = call_id(&id)?;
    if queries::get_call(&state.pool, id).await?.is_none() {
        return Err(ApiError::UnknownCall);
    }
    let turns = queries::turns(&state.pool, id).await?;
    let turns = turns.into_iter().map(TurnOut::from).collect();
    Ok(Json(CallTurns { call_id: id, turns }).into_response())
}

/// `GET /api/calls/{id}/events`: every event in order, as stored.
#[utoipa::path(get, path = "/api/calls/{id}/events", tag = "audit",
    summary = "A call's whole event history, in order (auditor)",
    params(("id" = String, Path, description = "the call's id, or its CallSid")),
    responses(
        (status = 200, description = "Every event with its metadata, position, time and hash", body = CallHistory),
        (status = 404, description = "No such call", body = ErrorBody),
        (status = 401, description = "No live bearer token", body = ErrorBody), (status = 403, description = "The token's role may not use this endpoint", body = ErrorBody)
    ),
    security(("bearer" = [])))]
pub(crate) async fn call_events(
    _: Authorized<Auditors>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = call_id(&id)?;
    let events = audit::history(&state.pool, &id.to_string()).await?;
    if events.is_empty() {
        return Err(ApiError::UnknownCall);
    }
    Ok(Json(CallHistory {
        call_id: id,
        events: events.into_iter().map(AuditEventOut::from).collect(),
    })
    .into_response())
}

/// `GET /api/calls/{id}/state?at=N`: the call as it stood after event N (the last by default).
#[utoipa::path(get, path = "/api/calls/{id}/state", tag = "audit",
    summary = "A call's state replayed up to an event (auditor)",
    params(
        ("id" = String, Path, description = "the call's id, or its CallSid"),
        ("at" = Option<i64>, Query, description = "the event's sequence number (default: the last)"),
    ),
    responses(
        (status = 200, description = "{call_id, at, of, state}: the aggregate after event `at` of `of`", body = Object),
        (status = 400, description = "at is not a sequence number", body = ErrorBody),
        (status = 404, description = "No such call", body = ErrorBody),
        (status = 422, description = "at is beyond the call's last event", body = ErrorBody),
        (status = 401, description = "No live bearer token", body = ErrorBody), (status = 403, description = "The token's role may not use this endpoint", body = ErrorBody)
    ),
    security(("bearer" = [])))]
pub(crate) async fn call_state(
    _: Authorized<Auditors>,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(params): Params<StateParams>,
) -> Result<Response, ApiError> {
    let id = call_id(&id)?;
    let replayed = replay_call(&state.pool, id, params.at)
        .await
        .map_err(|error| match error {
            ReplayCallError::UnknownCall => ApiError::UnknownCall,
            ReplayCallError::Beyond { .. } => ApiError::Invalid {
                field: "at",
                reason: error.to_string(),
            },
            ReplayCallError::Database(_) | ReplayCallError::Decode(_) => {
                ApiError::Unavailable(Box::new(error))
            }
        })?;
    Ok(Json(json!({
        "call_id": id,
        "at": replayed.at,
        "of": replayed.of,
        "state": replayed.call,
    }))
    .into_response())
}

/// `GET /api/calls/{id}/verify`: whether the call's hash chain holds.
#[utoipa::path(get, path = "/api/calls/{id}/verify", tag = "audit",
    summary = "Whether a call's history is intact (auditor)",
    params(("id" = String, Path, description = "the call's id, or its CallSid")),
    responses(
        (status = 200, description = "{call_id, intact, events, first_broken: {sequence, reason}}", body = Object),
        (status = 404, description = "No such call", body = ErrorBody),
        (status = 401, description = "No live bearer token", body = ErrorBody), (status = 403, description = "The token's role may not use this endpoint", body = ErrorBody)
    ),
    security(("bearer" = [])))]
pub(crate) async fn verify_call(
    _: Authorized<Auditors>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = call_id(&id)?;
    let found = audit::verify(&state.pool, Some(&id.to_string())).await?;
    if found.events == 0 {
        return Err(ApiError::UnknownCall);
    }
    if !found.intact() && state.alerts {
        let broken: Vec<String> = found
            .broken
            .iter()
            .map(|b| b.aggregate_id.clone())
            .collect();
        if let Err(error) = infrastructure::alerts::histories_broken(&state.pool, &broken).await {
            tracing::error!(%error, "could not raise the broken-history alert");
        }
    }
    let first_broken = found
        .broken
        .first()
        .map(|b| json!({ "sequence": b.sequence, "reason": b.reason.to_string() }));
    Ok(Json(json!({
        "call_id": id,
        "intact": found.intact(),
        "events": found.events,
        "first_broken": first_broken,
    }))
    .into_response())
}

/// `GET /api/stats?from=&to=`.
#[utoipa::path(get, path = "/api/stats", tag = "calls",
    summary = "Statistics over the calls started in a range (analyst, supervisor, auditor)",
    params(
        ("from" = Option<String>, Query, description = "started at or after: a date or an RFC 3339 time"),
        ("to" = Option<String>, Query, description = "started before: a date or an RFC 3339 time"),
    ),
    responses(
        (status = 200, description = "Calls per day, risk distribution, escalation rate, turn latency, outcomes", body = StatsOut),
        (status = 400, description = "A bad bound", body = ErrorBody),
        (status = 401, description = "No live bearer token", body = ErrorBody), (status = 403, description = "The token's role may not use this endpoint", body = ErrorBody)
    ),
    security(("bearer" = [])))]
pub(crate) async fn stats(
    _: Authorized<ViewReaders>,
    State(state): State<AppState>,
    Params(params): Params<StatsParams>,
) -> Result<Json<StatsOut>, ApiError> {
    let stats = queries::stats(&state.pool, params.from, params.to).await?;
    Ok(Json(stats.into()))
}
