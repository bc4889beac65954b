//! Twilio's webhooks. Each handler is verified by `TwilioRequest` before it runs, calls one use
//! case, and answers TwiML. Caller-facing webhooks answer TwiML whatever happens (a malformed
//! parameter or an unknown call still gets a person on the line); only the status callback, which
//! no caller hears, answers errors.

pub mod extract;
#[cfg(test)]
mod fuzz;
pub mod params;
pub mod refusal;
pub mod relay;
pub mod render;

use application::{AppError, CallAnswer, Spoken};
use axum::extract::FromRequest;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use domain::CallId;

use crate::error::{ApiError, Result};
use crate::state::AppState;
use extract::{CallPath, TwilioRequest};
use infrastructure::twilio::answers::{whisper_twiml, whisper_unknown};
use infrastructure::twilio::routes::{self, Webhook};

/// The webhook routes. The voice and status URLs are also served without their trailing slash,
/// because a redirect would make Twilio retry with GET and lose the parameters.
pub fn router() -> Router<AppState> {
    let [voice_route, voice_bare] = Webhook::Voice.routes();
    let [status_route, status_bare] = Webhook::Status.routes();
    let [dial_status_route, _] = Webhook::DialStatus.routes();
    Router::new()
        .route(&voice_route, post(voice))
        .route(&voice_bare, post(voice))
        .route(&Webhook::Recording.per_call_route(), post(recording))
        .route(&Webhook::Continue.per_call_route(), post(continue_call))
        .route(&Webhook::Speech.per_call_route(), post(speech))
        .route(&Webhook::Relay.per_call_route(), get(relay::upgrade))
        .route(&Webhook::RelayEnded.per_call_route(), post(relay_ended))
        .route(&Webhook::UserChoice.per_call_route(), post(user_choice))
        .route(&Webhook::Question.per_call_route(), post(question))
        .route(&Webhook::DialStatus.per_call_route(), post(dial_status))
        .route(&Webhook::Whisper.per_call_route(), post(whisper))
        .route(
            &Webhook::WhisperAnswer.per_call_route(),
            post(whisper_answer),
        )
        .route(&dial_status_route, post(dial_status_unknown_call))
        .route(
            &Webhook::Transcription.per_call_route(),
            post(transcription),
        )
        .route(
            &Webhook::CallRecording.per_call_route(),
            post(call_recording),
        )
        .route(&status_route, post(status))
        .route(&status_bare, post(status))
}

pub fn answer(state: &AppState, spoken: &Spoken, id: Option<CallId>) -> Response {
    render::respond(&render::twiml(spoken, id, &state.voice))
}

/// An answer given without the call's state: its language is not known, so the default's.
fn unknown_language(answer: CallAnswer) -> Spoken {
    Spoken::new(answer, domain::Language::default())
}

/// A caller-facing webhook whose parameters could not be used: a person, not an error.
fn unusable(state: &AppState, error: &ApiError, id: Option<CallId>) -> Response {
    tracing::warn!(reason = %error, "webhook parameters unusable; connecting the caller to a person");
    answer(state, &unknown_language(CallAnswer::Trouble), id)
}

/// Whether the request's `CallSid` is the call its URL names. A signed request for one call must
/// not act on another (a request replayed against another call's URL, a proxy's mix-up).
fn of_call(request: &TwilioRequest, id: CallId) -> bool {
    params::call_sid(&request.params).is_ok_and(|sid| CallId::for_call_sid(&sid) == id)
}

/// Whether a counselor leg's request belongs to the call its URL names: the leg is a call of its
/// own, whose `ParentCallSid` is the caller's. A leg of another call acts on neither. Twilio's
/// documentation says the parameter may be absent; a leg without it is taken as the URL's (the
/// parameters are signed: a sender cannot remove it from another call's request).
fn leg_of_call(request: &TwilioRequest, id: CallId) -> bool {
    match request.params.non_empty("ParentCallSid") {
        None => true,
        Some(parent) => {
            domain::CallSid::parse(parent).is_ok_and(|sid| CallId::for_call_sid(&sid) == id)
        }
    }
}

/// Why a request whose `CallSid` is not its URL's call is refused.
fn another_call() -> ApiError {
    ApiError::InvalidParameter {
        name: "CallSid",
        reason: "does not belong to the call in the URL".into(),
    }
}

/// `POST /twilio/voice/`: a call comes in.
async fn voice(State(state): State<AppState>, request: TwilioRequest) -> Response {
    let call = match params::incoming_call(&request.params) {
        Ok(call) => call,
        Err(error) => {
            let id = params::call_sid(&request.params)
                .ok()
                .map(|sid| CallId::for_call_sid(&sid));
            return unusable(&state, &error, id);
        }
    };
    let id = CallId::for_call_sid(&call.call_sid);
    let reply = state.calls.answer_call(call, &request.metadata).await;
    answer(&state, &reply, Some(id))
}

/// `POST /twilio/recording/{call_id}/`: the caller finished a turn.
async fn recording(
    State(state): State<AppState>,
    CallPath(id): CallPath,
    request: TwilioRequest,
) -> Response {
    let done = params::recording_done(&request.params);
    match (id, done) {
        (Some(id), Ok(done)) => {
            let reply = state
                .calls
                .receive_recording(id, done, &request.metadata)
                .await;
            answer(&state, &reply, Some(id))
        }
        (_, Err(error)) => unusable(&state, &error, id),
        (None, Ok(_)) => unusable(&state, &ApiError::UnknownCall, None),
    }
}

/// `POST /twilio/continue/{call_id}/`: the caller waits for the reply.
async fn continue_call(
    State(state): State<AppState>,
    CallPath(id): CallPath,
    RawQuery(query): RawQuery,
    request: TwilioRequest,
) -> Response {
    let Some(id) = id else {
        return unusable(&state, &ApiError::UnknownCall, None);
    };
    if !of_call(&request, id) {
        return unusable(&state, &another_call(), None);
    }
    let waited = params::waited(query.as_deref());
    let reply = state
        .calls
        .continue_call(id, waited, &request.metadata)
        .await;
    answer(&state, &reply, Some(id))
}

/// `POST /twilio/speech/{call_id}/`: a speech `<Gather>` ended, with words, keys, or nothing.
async fn speech(
    State(state): State<AppState>,
    CallPath(id): CallPath,
    request: TwilioRequest,
) -> Response {
    let input = params::speech_input(&request.params);
    match (id, input) {
        (Some(id), Ok(input)) => {
            let reply = state.calls.hear_speech(id, input, &request.metadata).await;
            answer(&state, &reply, Some(id))
        }
        (_, Err(error)) => unusable(&state, &error, id),
        (None, Ok(_)) => unusable(&state, &ApiError::UnknownCall, None),
    }
}

/// `POST /twilio/relay-ended/{call_id}/`: the `<Connect action>`, once the live session ended.
async fn relay_ended(
    State(state): State<AppState>,
    CallPath(id): CallPath,
    request: TwilioRequest,
) -> Response {
    let Some(id) = id else {
        return unusable(&state, &ApiError::UnknownCall, None);
    };
    if !of_call(&request, id) {
        return unusable(&state, &another_call(), None);
    }
    let ended = params::relay_ended(&request.params);
    let reply = state
        .calls
        .relay_ended(
            id,
            ended.status,
            ended.error_code,
            ended.handoff,
            &request.metadata,
        )
        .await;
    answer(&state, &reply, Some(id))
}

/// `POST /twilio/user-choice/{call_id}/`: the caller pressed a key or said a word.
async fn user_choice(
    State(state): State<AppState>,
    CallPath(id): CallPath,
    RawQuery(query): RawQuery,
    request: TwilioRequest,
) -> Response {
    let Some(id) = id else {
        return unusable(&state, &ApiError::UnknownCall, None);
    };
    if !of_call(&request, id) {
        return unusable(&state, &another_call(), None);
    }
    let input = params::choice_input(&request.params, query.as_deref());
    let reply = state
        .calls
        .record_choice(id, input, &request.metadata)
        .await;
    answer(&state, &reply, Some(id))
}

/// `POST /twilio/question/{call_id}/`: the caller answered the direct question.
async fn question(
    State(state): State<AppState>,
    CallPath(id): CallPath,
    request: TwilioRequest,
) -> Response {
    let Some(id) = id else {
        return unusable(&state, &ApiError::UnknownCall, None);
    };
    if !of_call(&request, id) {
        return unusable(&state, &another_call(), None);
    }
    let input = params::choice_input(&request.params, None);
    let reply = state
        .calls
        .answer_question(id, input, &request.metadata)
        .await;
    answer(&state, &reply, Some(id))
}

/// `POST /twilio/dial-status/{call_id}/`: the counselor `<Dial>` ended.
async fn dial_status(
    State(state): State<AppState>,
    CallPath(id): CallPath,
    RawQuery(query): RawQuery,
    request: TwilioRequest,
) -> Response {
    let report = params::dial_report(&request.params, query.as_deref());
    // Unknown, or another call's: the caller still goes on to the next person, and nothing is
    // recorded.
    let id = id.filter(|id| {
        let ours = of_call(&request, *id);
        if !ours {
            tracing::warn!(reason = %another_call(), "dial status refused; the caller goes on to the next line");
        }
        ours
    });
    let Some(id) = id else {
        let next = unknown_language(application::after_dial(report.line, report.status.into()));
        return answer(&state, &next, None);
    };
    let reply = state.calls.dial_ended(id, report, &request.metadata).await;
    answer(&state, &reply, Some(id))
}

/// `POST /twilio/whisper/{call_id}/?attempt=N`: a counselor picked up. This TwiML runs on their
/// leg, not the caller's.
async fn whisper(
    State(state): State<AppState>,
    CallPath(id): CallPath,
    RawQuery(query): RawQuery,
    request: TwilioRequest,
) -> Response {
    let Some(id) = id.filter(|id| leg_of_call(&request, *id)) else {
        return render::respond(&whisper_unknown(&state.voice));
    };
    let attempt = params::attempt(query.as_deref());
    let said = state.calls.whisper(id, attempt, &request.metadata).await;
    render::respond(&whisper_twiml(&said, id, attempt, &state.voice))
}

/// `POST /twilio/whisper-answer/{call_id}/?attempt=N`: the counselor's key after the whisper.
async fn whisper_answer(
    State(state): State<AppState>,
    CallPath(id): CallPath,
    RawQuery(query): RawQuery,
    request: TwilioRequest,
) -> Response {
    let Some(id) = id.filter(|id| leg_of_call(&request, *id)) else {
        return render::respond(&whisper_unknown(&state.voice));
    };
    let attempt = params::attempt(query.as_deref());
    let digits = request.params.non_empty("Digits");
    let decided = state
        .calls
        .whisper_answered(id, attempt, digits, &request.metadata)
        .await;
    render::respond(&whisper_twiml(&decided, id, attempt, &state.voice))
}

/// `POST /twilio/dial-status/`: a `<Dial>` from a fallback that named no call ended.
async fn dial_status_unknown_call(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    request: TwilioRequest,
) -> Response {
    let line = params::dialed_line(query.as_deref());
    let outcome = params::dial_outcome(&request.params);
    let next = unknown_language(application::after_dial(line, outcome));
    answer(&state, &next, None)
}

/// Any other path. A signed request under `/twilio/` is Twilio calling a URL we do not serve (a
/// console typo, an old deployment's URL): a caller may be waiting, so they get a person, and the
/// mistake is logged. Anything else is a 404.
pub async fn unknown_route(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Response {
    if !request.uri().path().starts_with(routes::PREFIX) {
        return ApiError::NotFound.into_response();
    }
    let path = request.uri().path().to_owned();
    match TwilioRequest::from_request(request, &state).await {
        Ok(_) => {
            tracing::error!(path = %path, "Twilio called a URL this service does not serve; check the console");
            answer(&state, &unknown_language(CallAnswer::Trouble), None)
        }
        Err(error) => error.into_response(),
    }
}

/// `POST /twilio/transcription/{call_id}/`: Twilio transcribed a turn. No caller hears this answer.
async fn transcription(
    State(state): State<AppState>,
    CallPath(id): CallPath,
    request: TwilioRequest,
) -> Result<StatusCode> {
    let id = id.ok_or(ApiError::UnknownCall)?;
    let report = params::transcription(&request.params)?;
    match state
        .calls
        .receive_transcription(id, report, &request.metadata)
        .await
    {
        Err(AppError::Rule(rule)) => {
            tracing::warn!(reason = %rule, "transcription refused by the call's rules");
        }
        stored => stored?,
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /twilio/call-recording/{call_id}/`: the recording of the whole call is ready (or was
/// absent). No caller hears this answer.
async fn call_recording(
    State(state): State<AppState>,
    CallPath(id): CallPath,
    request: TwilioRequest,
) -> Result<StatusCode> {
    let id = id.ok_or(ApiError::UnknownCall)?;
    let report = params::call_recording(&request.params)?;
    state
        .calls
        .receive_call_recording(id, report, &request.metadata)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /twilio/status/`: Twilio reports the call's status. No caller hears this answer.
async fn status(State(state): State<AppState>, request: TwilioRequest) -> Result<StatusCode> {
    let report = params::status_report(&request.params)?;
    match state.calls.update_status(report, &request.metadata).await {
        Err(AppError::Rule(rule)) => {
            tracing::warn!(reason = %rule, "status callback refused by the call's rules");
        }
        stored => stored?,
    }
    Ok(StatusCode::NO_CONTENT)
}
