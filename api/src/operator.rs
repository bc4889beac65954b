//! The operator API: re-process a recording, place a test call. Bearer token with the `operator`
//! role; clear JSON errors (400 malformed, 401/403, 404 unknown call, 422 invalid values).

use application::pipeline::ProcessedAudio;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use domain::call::{Analysis, RecordingUrl};
use domain::risk::RiskLevel;
use domain::{CallId, CallSid};
use serde::{Deserialize, Serialize};

use crate::auth::{Authorized, Operators};
use crate::error::{ApiError, ErrorBody, Result};
use crate::json::ApiJson;
use crate::state::{AppState, Operations};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/process-audio/", post(process_audio))
        .route("/api/test-call/", post(test_call))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessAudio {
    /// One of the account's recordings.
    pub audio_url: String,
    /// The call's id, or its CallSid.
    pub call_id: String,
}

/// `process_caller_audio`'s result.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Processed {
    /// The transcript, the screener's signals, the assessment and the reply chosen.
    #[schema(value_type = Object)]
    analysis: Analysis,
    response_audio_url: Option<String>,
    response_text: Option<String>,
    /// none, low, moderate, high or imminent.
    #[schema(value_type = String)]
    risk_level: RiskLevel,
}

impl From<ProcessedAudio> for Processed {
    fn from(p: ProcessedAudio) -> Self {
        Self {
            analysis: p.analysis,
            response_audio_url: p.response_audio_url,
            response_text: p.response_text,
            risk_level: p.risk_level,
        }
    }
}

fn operations(state: &AppState) -> Result<&Operations> {
    state.operations.as_deref().ok_or_else(|| {
        ApiError::NotConfigured(
            "the conversation pipeline is off: it needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
                .into(),
        )
    })
}

/// A call named by its id or by its CallSid.
fn call_id(value: &str) -> Result<CallId> {
    CallId::from_id_or_sid(value).ok_or(ApiError::Invalid {
        field: "call_id",
        reason: "must be a call id (UUID) or a CallSid (CA…)".into(),
    })
}

/// `POST /api/process-audio/`: transcribes, assesses and answers a recording again, as its turn
/// would be, without recording anything on the call or playing anything to it.
#[utoipa::path(post, path = "/api/process-audio/", tag = "operators",
    summary = "Transcribe, assess and answer a recording again, touching nothing (operator)",
    request_body = ProcessAudio,
    responses(
        (status = 200, description = "The analysis and the answer it would get", body = Processed),
        (status = 400, description = "Not the expected JSON", body = ErrorBody),
        (status = 404, description = "No such call", body = ErrorBody),
        (status = 422, description = "Not a call id, or not one of the account's recordings", body = ErrorBody),
        (status = 502, description = "Twilio or speech-to-text failed", body = ErrorBody),
        (status = 503, description = "The pipeline or speech-to-text is not configured", body = ErrorBody),
        (status = 401, description = "No live bearer token", body = ErrorBody), (status = 403, description = "Not an operator token, or a number not on the allow-list", body = ErrorBody)
    ),
    security(("bearer" = [])))]
pub(crate) async fn process_audio(
    _: Authorized<Operators>,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ProcessAudio>,
) -> Result<Json<Processed>> {
    let operations = operations(&state)?;
    let url = RecordingUrl::parse(&body.audio_url).map_err(|e| ApiError::Invalid {
        field: "audio_url",
        reason: e.to_string(),
    })?;
    let id = call_id(&body.call_id)?;
    let processed = operations.pipeline.reprocess(&url, id).await?;
    Ok(Json(processed.into()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCall {
    /// E.164, on TEST_CALL_ALLOWED_NUMBERS.
    pub to_number: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Placed {
    #[schema(value_type = String)]
    call_sid: CallSid,
    #[schema(value_type = String)]
    call_id: CallId,
}

/// `POST /api/test-call/`: calls a number on the allow-list; Hotline answers it like any call.
#[utoipa::path(post, path = "/api/test-call/", tag = "operators",
    summary = "Place a test call to a number on the allow-list (operator)",
    request_body = TestCall,
    responses(
        (status = 201, description = "Twilio is placing the call; Hotline answers it", body = Placed),
        (status = 400, description = "Not the expected JSON", body = ErrorBody),
        (status = 422, description = "Not an E.164 number", body = ErrorBody),
        (status = 502, description = "Twilio refused or failed", body = ErrorBody),
        (status = 503, description = "No TWILIO_PHONE_NUMBER, or the pipeline is off", body = ErrorBody),
        (status = 401, description = "No live bearer token", body = ErrorBody), (status = 403, description = "Not an operator token, or a number not on the allow-list", body = ErrorBody)
    ),
    security(("bearer" = [])))]
pub(crate) async fn test_call(
    _: Authorized<Operators>,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TestCall>,
) -> Result<(StatusCode, Json<Placed>)> {
    let operations = operations(&state)?;
    let call_sid = operations.test_calls.place(&body.to_number).await?;
    let call_id = CallId::for_call_sid(&call_sid);
    Ok((StatusCode::CREATED, Json(Placed { call_sid, call_id })))
}
