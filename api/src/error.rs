//! The API's one error type, mapped to HTTP in one place. Callers never see these: caller-facing
//! webhooks answer TwiML whatever happens, and only requests that are not Twilio's (or that no
//! caller hears, like status callbacks) get an error status.

use application::operations::TestCallError;
use application::pipeline::PipelineError;
use application::AppError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::call::Stage;
use serde_json::json;

/// What the API's handlers return.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The body of every error `/api/*` answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable code (`unauthenticated`, `invalid_value`…).
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}

/// The code of the error a response answers, kept on the response for the layers above the
/// handler (`twilio::refusal`).
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request has no `X-Twilio-Signature`.
    #[error("the request is not signed: X-Twilio-Signature is missing")]
    MissingSignature,
    /// The signature does not match.
    #[error("the request's X-Twilio-Signature is not valid for this service")]
    BadSignature,
    /// The body is not a form.
    #[error("webhooks must be application/x-www-form-urlencoded")]
    NotAForm,
    /// The body is larger than any webhook.
    #[error("the request body is larger than {limit} bytes", limit = crate::MAX_BODY_BYTES)]
    TooLarge,
    /// The body could not be read.
    #[error("the request body could not be read: {0}")]
    Body(String),
    /// A parameter is missing or malformed.
    #[error("parameter {name}: {reason}")]
    InvalidParameter { name: &'static str, reason: String },
    /// No such route.
    #[error("no such route")]
    NotFound,
    /// A per-call URL names no call.
    #[error("the URL does not name a call")]
    UnknownCall,
    /// The store (or another part the request needs) failed; the client may retry. The cause is
    /// kept as the source and logged, never sent.
    #[error("the service is temporarily unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// No bearer token, or not a live one.
    #[error("a valid bearer token is required (Authorization: Bearer hl_…)")]
    Unauthenticated,
    /// The token's role may not use this endpoint.
    #[error("the {role} role may not use this endpoint; it needs {needs}")]
    Forbidden { role: String, needs: String },
    /// The body is not the JSON this endpoint takes.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// A field has a value this endpoint cannot use.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The policy refuses the request (e.g. a number not on the allow-list).
    #[error("{0}")]
    NotAllowed(String),
    /// A part of the service this endpoint needs is not configured.
    #[error("{0}")]
    NotConfigured(String),
    /// Over a rate limit (`rate_limit`): try again after this many seconds.
    #[error("too many requests; try again in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// The request was not answered within the server's request timeout.
    #[error("the request was not answered in time")]
    TimedOut,
    /// A service Hotline depends on failed; the class of failure is safe to show.
    #[error("{service} failed: {class}")]
    Upstream {
        service: &'static str,
        class: String,
    },
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::MissingSignature | Self::InvalidParameter { .. } => StatusCode::BAD_REQUEST,
            Self::UnknownCall | Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadSignature => StatusCode::FORBIDDEN,
            Self::NotAForm => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Body(_) => StatusCode::BAD_REQUEST,
            Self::Unavailable(_) | Self::NotConfigured(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } | Self::NotAllowed(_) => StatusCode::FORBIDDEN,
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::TimedOut => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::MissingSignature => "missing_signature",
            Self::BadSignature => "bad_signature",
            Self::NotAForm => "unsupported_media_type",
            Self::TooLarge => "body_too_large",
            Self::Body(_) => "unreadable_body",
            Self::InvalidParameter { .. } => "invalid_parameter",
            Self::UnknownCall => "unknown_call",
            Self::NotFound => "not_found",
            Self::Unavailable(_) => "unavailable",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden { .. } => "forbidden",
            Self::Malformed(_) => "malformed_request",
            Self::Invalid { .. } => "invalid_value",
            Self::NotAllowed(_) => "not_allowed",
            Self::NotConfigured(_) => "not_configured",
            Self::Upstream { .. } => "upstream_failed",
            Self::TimedOut => "timed_out",
            Self::RateLimited { .. } => "rate_limited",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Logged once here, without the request's body or any token. A webhook's refusal is
        // logged by `twilio::refusal`, which knows the URL and names the likely misconfiguration.
        match &self {
            Self::Unavailable(cause) => {
                tracing::error!(code = self.code(), cause = %cause, "request failed");
            }
            Self::MissingSignature
            | Self::BadSignature
            | Self::NotAForm
            | Self::TooLarge
            | Self::Body(_) => {
                tracing::debug!(code = self.code(), reason = %self, "request refused")
            }
            _ => tracing::warn!(code = self.code(), reason = %self, "request refused"),
        }
        let body = json!({ "code": self.code(), "message": self.to_string() });
        let mut response = (status, Json(body)).into_response();
        response.extensions_mut().insert(ErrorCode(self.code()));
        if let Self::RateLimited { retry_after_secs } = self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after_secs),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// The database failed.
impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::Unavailable(Box::new(error))
    }
}

/// A use case's failure: a webhook naming another call is the client's mistake; anything else
/// (the store failed, timed out, or refused the command) is ours, and the client may retry.
impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        match error {
            AppError::WrongCall => Self::InvalidParameter {
                name: "CallSid",
                reason: "does not belong to the call in the URL".into(),
            },
            other => Self::Unavailable(Box::new(other)),
        }
    }
}

/// Re-processing a recording: the class of a service's failure is shown, never its message.
impl From<PipelineError> for ApiError {
    fn from(error: PipelineError) -> Self {
        match error {
            PipelineError::ForeignRecording => Self::Invalid {
                field: "audio_url",
                reason: "must be one of this account's recordings \
                         (TWILIO_API_BASE/2010-04-01/Accounts/{AccountSid}/Recordings/RE…)"
                    .into(),
            },
            PipelineError::NoSuchCall | PipelineError::NoSuchTurn(_) => Self::UnknownCall,
            PipelineError::SpeechToTextNotConfigured => Self::NotConfigured(
                "re-processing needs a speech-to-text service (STT_BASE_URL)".into(),
            ),
            PipelineError::App(error) => error.into(),
            error @ PipelineError::Keep(_) => Self::Upstream {
                service: "the audio store",
                class: error.class().into_owned(),
            },
            error @ PipelineError::Reconcile(_) => Self::Upstream {
                service: "Twilio",
                class: error.class().into_owned(),
            },
            // Only a turn's job waits for Twilio's transcription; re-processing never does.
            error @ (PipelineError::Stage { .. } | PipelineError::TranscriptionPending) => {
                Self::Upstream {
                    service: match error.stage() {
                        Stage::Download | Stage::Delivery => "Twilio",
                        _ => "speech-to-text",
                    },
                    class: error.class().into_owned(),
                }
            }
        }
    }
}

impl From<TestCallError> for ApiError {
    fn from(error: TestCallError) -> Self {
        match error {
            TestCallError::NotE164 => Self::Invalid {
                field: "to_number",
                reason: error.to_string(),
            },
            TestCallError::NotAllowed => Self::NotAllowed(error.to_string()),
            TestCallError::NoCallerNumber => Self::NotConfigured(error.to_string()),
            TestCallError::Twilio(error) => Self::Upstream {
                service: "Twilio",
                class: error.to_string(),
            },
        }
    }
}
