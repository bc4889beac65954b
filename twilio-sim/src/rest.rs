//! The part of Twilio's REST API Hotline calls, served by the simulator on 127.0.0.1: updating a
//! live call with new TwiML (which interrupts what the simulated call is doing, as on Twilio),
//! creating a call, and fetching a recording's media.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::json;
use tokio::sync::mpsc;

/// What the REST side shares with the calls being simulated.
#[derive(Debug, Default)]
pub struct Registry {
    /// Live calls, by CallSid: where a REST update's TwiML goes.
    pub calls: HashMap<String, mpsc::Sender<String>>,
    /// What was said in each recording, by RecordingSid.
    pub recordings: HashMap<String, String>,
    /// Calls Hotline asked to place (`POST Calls.json`), as (CallSid, To).
    pub created: Vec<(String, String)>,
    /// Recordings of whole calls reported to Hotline, as (CallSid, RecordingSid).
    pub call_recordings: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
struct RestState {
    account_sid: String,
    auth_token: String,
    registry: Arc<Mutex<Registry>>,
}

fn twilio_error(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        Json(json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status.as_u16(),
        })),
    )
        .into_response()
}

/// Twilio's check: HTTP Basic with the account SID and its auth token, on this account's URLs.
/// The refusal, if the request fails it.
fn refusal(state: &RestState, headers: &HeaderMap, account: &str) -> Option<Response> {
    let expected = format!("{}:{}", state.account_sid, state.auth_token);
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok());
    if given.as_deref() != Some(expected.as_bytes()) {
        return Some(twilio_error(
            StatusCode::UNAUTHORIZED,
            20003,
            "Authenticate",
        ));
    }
    (account != state.account_sid).then(|| {
        twilio_error(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource was not found",
        )
    })
}

/// The router of the REST stand-in for `account_sid`, checking `auth_token`.
pub fn router(account_sid: &str, auth_token: &str, registry: Arc<Mutex<Registry>>) -> Router {
    let state = RestState {
        account_sid: account_sid.to_owned(),
        auth_token: auth_token.to_owned(),
        registry,
    };
    Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Calls/{call}",
            post(update_call),
        )
        .route(
            "/2010-04-01/Accounts/{account}/Calls.json",
            post(create_call),
        )
        .route(
            "/2010-04-01/Accounts/{account}/Recordings/{recording}",
            get(recording),
        )
        .with_state(state)
}

fn form(body: &Bytes) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// `POST Calls/{CallSid}.json` with `Twiml`: the live call runs it at once.
async fn update_call(
    State(state): State<RestState>,
    Path((account, call)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = refusal(&state, &headers, &account) {
        return refused;
    }
    let sid = call.trim_end_matches(".json").to_owned();
    let params = form(&body);
    let Some(twiml) = params.get("Twiml") else {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21220,
            "This simulator updates calls with Twiml only",
        );
    };
    let sender = state
        .registry
        .lock()
        .ok()
        .and_then(|r| r.calls.get(&sid).cloned());
    match sender {
        Some(sender) if sender.send(twiml.clone()).await.is_ok() => Json(json!({
            "sid": sid,
            "account_sid": state.account_sid,
            "status": "in-progress",
        }))
        .into_response(),
        // Twilio answers 21220 for a call that is no longer in progress.
        _ => twilio_error(
            StatusCode::BAD_REQUEST,
            21220,
            "Call is not in-progress. Cannot redirect.",
        ),
    }
}

/// `POST Calls.json`: noted; the simulator's owner decides whether to run it.
async fn create_call(
    State(state): State<RestState>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = refusal(&state, &headers, &account) {
        return refused;
    }
    let params = form(&body);
    let (Some(to), Some(_from), Some(_url)) =
        (params.get("To"), params.get("From"), params.get("Url"))
    else {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21201,
            "To, From and Url are required",
        );
    };
    let sid = super::new_sid("CA");
    if let Ok(mut registry) = state.registry.lock() {
        registry.created.push((sid.clone(), to.clone()));
    }
    (
        StatusCode::CREATED,
        Json(json!({ "sid": sid, "account_sid": state.account_sid, "status": "queued" })),
    )
        .into_response()
}

/// `GET Recordings/{RecordingSid}[.wav]`: a short WAV of silence standing in for the caller's
/// words (the simulator sends the words themselves as Twilio's transcription).
async fn recording(
    State(state): State<RestState>,
    Path((account, recording)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refusal(&state, &headers, &account) {
        return refused;
    }
    let sid = recording
        .trim_end_matches(".wav")
        .trim_end_matches(".mp3")
        .to_owned();
    let known = state
        .registry
        .lock()
        .is_ok_and(|r| r.recordings.contains_key(&sid));
    if !known {
        return twilio_error(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource was not found",
        );
    }
    (
        [(axum::http::header::CONTENT_TYPE, "audio/x-wav")],
        silent_wav(),
    )
        .into_response()
}

/// Half a second of 8 kHz, 16-bit mono silence.
fn silent_wav() -> Vec<u8> {
    const RATE: u32 = 8000;
    let samples = RATE / 2;
    let data_len = samples * 2;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&RATE.to_le_bytes());
    wav.extend_from_slice(&(RATE * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    wav.resize(44 + data_len as usize, 0);
    wav
}
