//! The read side's API. Analysts (and supervisors and auditors) see call views and statistics,
//! never a full number, a transcript or audio; supervisors and auditors see turns in detail;
//! auditors replay a call's full history, its state as of any event, and whether it is intact.

use std::collections::HashMap;

use application::auth::Role;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::Aggregate;
use domain::risk::RiskLevel;
use domain::{Call, CallEvent, CallId};
use infrastructure::event_store::audit;
use infrastructure::queries::{self, CallQuery, CallRow, Cursor, SortKey};
use serde_json::json;

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

fn unavailable(error: sqlx::Error) -> ApiError {
    ApiError::Unavailable(error.to_string())
}

/// The query string as named parameters; a parameter the endpoint does not take is an error
/// rather than a filter silently ignored.
fn params(query: Option<String>, known: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let mut params = HashMap::new();
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if !known.contains(&name.as_ref()) {
            return Err(ApiError::Malformed(format!(
                "unknown parameter '{name}': this endpoint takes {}",
                known.join(", ")
            )));
        }
        params.insert(name.into_owned(), value.into_owned());
    }
    Ok(params)
}

fn bad(name: &str, expected: &str) -> ApiError {
    ApiError::Malformed(format!("parameter {name} must be {expected}"))
}

/// A time bound: an RFC 3339 time, or a date (its midnight, UTC).
fn time(params: &HashMap<String, String>, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    params
        .get(name)
        .map(|value| {
            DateTime::parse_from_rfc3339(value)
                .map(|t| t.with_timezone(&Utc))
                .or_else(|_| {
                    NaiveDate::parse_from_str(value, "%Y-%m-%d")
                        .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
                })
                .map_err(|_| bad(name, "a date (2026-11-25) or an RFC 3339 time"))
        })
        .transpose()
}

fn call_id(id: &str) -> Result<CallId, ApiError> {
    CallId::from_id_or_sid(id).ok_or(ApiError::UnknownCall)
}

const LIST_PARAMS: &[&str] = &[
    "status",
    "risk_at_least",
    "escalated",
    "outcome",
    "from",
    "to",
    "sort",
    "limit",
    "cursor",
    "format",
];

fn call_query(params: &HashMap<String, String>) -> Result<CallQuery, ApiError> {
    let mut query = CallQuery {
        status: params.get("status").cloned(),
        outcome: params.get("outcome").cloned(),
        from: time(params, "from")?,
        to: time(params, "to")?,
        ..CallQuery::default()
    };
    if let Some(level) = params.get("risk_at_least") {
        query.risk_at_least = Some(
            RiskLevel::parse(level)
                .ok_or_else(|| bad("risk_at_least", "none, low, moderate, high or imminent"))?,
        );
    }
    if let Some(escalated) = params.get("escalated") {
        query.escalated = Some(
            escalated
                .parse()
                .map_err(|_| bad("escalated", "true or false"))?,
        );
    }
    if let Some(sort) = params.get("sort") {
        (query.sort, query.descending) = SortKey::parse(sort).ok_or_else(|| {
            bad(
                "sort",
                "started_at, duration_secs, max_risk or turns, with - for descending",
            )
        })?;
    }
    if let Some(limit) = params.get("limit") {
        query.limit = limit
            .parse()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| bad("limit", "a number from 1 to 500"))?;
    }
    if let Some(cursor) = params.get("cursor") {
        let cursor: Cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| bad("cursor", "a next_cursor this endpoint returned"))?;
        if (cursor.sort, cursor.descending) != (query.sort, query.descending) {
            return Err(ApiError::Malformed(
                "the cursor was made for another sort: ask again with the same sort".into(),
            ));
        }
        query.after = Some(cursor);
    }
    Ok(query)
}

fn encode_cursor(cursor: &Cursor) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(cursor).unwrap_or_default())
}

/// A page of the call list.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CallPage {
    pub calls: Vec<CallRow>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
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
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = params(raw, LIST_PARAMS)?;
    let mut query = call_query(&params)?;
    match params.get("format").map(String::as_str) {
        None | Some("json") => {
            let (calls, next) = queries::list_calls(&state.pool, &query)
                .await
                .map_err(unavailable)?;
            let next_cursor = next.as_ref().map(encode_cursor);
            Ok(Json(CallPage { calls, next_cursor }).into_response())
        }
        Some("csv") => {
            query.limit = 500;
            let mut csv = String::from(CSV_HEADER);
            let mut rows = 0usize;
            loop {
                let (calls, next) = queries::list_calls(&state.pool, &query)
                    .await
                    .map_err(unavailable)?;
                rows += calls.len();
                calls.iter().for_each(|c| csv_row(&mut csv, c));
                match next {
                    Some(cursor) if rows < CSV_MAX_ROWS => query.after = Some(cursor),
                    _ => break,
                }
            }
            Ok((
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"calls.csv\"",
                    ),
                ],
                csv,
            )
                .into_response())
        }
        Some(_) => Err(bad("format", "json or csv")),
    }
}

/// The most rows one CSV export holds.
const CSV_MAX_ROWS: usize = 100_000;

const CSV_HEADER: &str = "call_id,call_sid,caller,direction,status,started_at,ended_at,\
duration_secs,turns,max_risk,escalated,escalation_reason,outcome,mean_turn_latency_ms\n";

/// A CSV field, quoted when it must be, and never read as a formula by a spreadsheet.
fn csv_field(out: &mut String, value: &str) {
    // A masked number (`+1••••••••23`) is the one value that may start with a sign.
    let masked_number = value.strip_prefix('+').is_some_and(|rest| {
        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit() || c == '•')
    });
    let formula = value.starts_with(['=', '+', '-', '@']) && !masked_number;
    if formula || value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        if formula {
            out.push('\'');
        }
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

fn csv_row(out: &mut String, c: &CallRow) {
    let opt = |v: Option<String>| v.unwrap_or_default();
    let fields = [
        c.call_id.to_string(),
        c.call_sid.clone(),
        c.caller.clone(),
        c.direction.clone(),
        c.status.clone(),
        c.started_at.to_rfc3339(),
        opt(c.ended_at.map(|t| t.to_rfc3339())),
        opt(c.duration_secs.map(|d| d.to_string())),
        c.turns.to_string(),
        opt(c.max_risk.clone()),
        c.escalated.to_string(),
        opt(c.escalation_reason.clone()),
        opt(c.outcome.clone()),
        opt(c.mean_turn_latency_ms.map(|d| d.to_string())),
    ];
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, field);
    }
    out.push('\n');
}

/// `GET /api/calls/{id}`.
#[utoipa::path(get, path = "/api/calls/{id}", tag = "calls",
    summary = "One call's view (analyst, supervisor, auditor)",
    params(("id" = String, Path, description = "the call's id, or its CallSid")),
    responses(
        (status = 200, description = "The call", body = CallRow),
        (status = 404, description = "No such call", body = ErrorBody),
        (status = 401, description = "No live bearer token", body = ErrorBody), (status = 403, description = "The token's role may not use this endpoint", body = ErrorBody)
    ),
    security(("bearer" = [])))]
pub(crate) async fn get_call(
    _: Authorized<ViewReaders>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CallRow>, ApiError> {
    let id = call_id(&id)?;
    queries::get_call(&state.pool, id)
        .await
        .map_err(unavailable)?
        .map(Json)
        .ok_or(ApiError::UnknownCall)
}

/// A call's turns.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CallTurns {
    #[schema(value_type = String)]
    pub call_id: CallId,
    pub turns: Vec<queries::TurnRow>,
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
    if queries::get_call(&state.pool, id)
        .await
        .map_err(unavailable)?
        .is_none()
    {
        return Err(ApiError::UnknownCall);
    }
    let turns = queries::turns(&state.pool, id).await.map_err(unavailable)?;
    Ok(Json(CallTurns { call_id: id, turns }).into_response())
}

/// A call's history.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CallHistory {
    #[schema(value_type = String)]
    pub call_id: CallId,
    pub events: Vec<audit::AuditEvent>,
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
    let events = audit::history(&state.pool, &id.to_string())
        .await
        .map_err(unavailable)?;
    if events.is_empty() {
        return Err(ApiError::UnknownCall);
    }
    Ok(Json(CallHistory {
        call_id: id,
        events,
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
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = params(raw, &["at"])?;
    let id = call_id(&id)?;
    let at: Option<i64> = params
        .get("at")
        .map(|v| v.parse().ok().filter(|n| *n >= 1))
        .map(|v| v.ok_or_else(|| bad("at", "an event sequence number, from 1")))
        .transpose()?;
    let events = audit::history(&state.pool, &id.to_string())
        .await
        .map_err(unavailable)?;
    let last = events
        .last()
        .map(|e| e.sequence)
        .ok_or(ApiError::UnknownCall)?;
    let at = at.unwrap_or(last);
    if at > last {
        return Err(ApiError::Invalid {
            field: "at",
            reason: format!("the call has {last} events"),
        });
    }
    let mut call = Call::default();
    for event in events.iter().take_while(|e| e.sequence <= at) {
        let event: CallEvent = serde_json::from_value(event.payload.clone())
            .map_err(|e| ApiError::Unavailable(format!("an event could not be read: {e}")))?;
        call.apply(event);
    }
    Ok(Json(json!({ "call_id": id, "at": at, "of": last, "state": call })).into_response())
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
    let found = audit::verify(&state.pool, Some(&id.to_string()))
        .await
        .map_err(unavailable)?;
    if found.events == 0 {
        return Err(ApiError::UnknownCall);
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
        (status = 200, description = "Calls per day, risk distribution, escalation rate, turn latency, outcomes", body = queries::Stats),
        (status = 400, description = "A bad bound", body = ErrorBody),
        (status = 401, description = "No live bearer token", body = ErrorBody), (status = 403, description = "The token's role may not use this endpoint", body = ErrorBody)
    ),
    security(("bearer" = [])))]
pub(crate) async fn stats(
    _: Authorized<ViewReaders>,
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let params = params(raw, &["from", "to"])?;
    let stats = queries::stats(&state.pool, time(&params, "from")?, time(&params, "to")?)
        .await
        .map_err(unavailable)?;
    Ok(Json(stats).into_response())
}
