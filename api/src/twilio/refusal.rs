//! What a webhook request the service refuses is answered. Most refusals are a misconfiguration,
//! not an attack: a `PUBLIC_BASE_URL` that is not the console's URL, a proxy that rewrites the
//! path or adds a query, a rotated auth token, a webhook set to `GET`. Twilio does not play the
//! body of an error answer: it fetches the number's fallback URL, and without one the caller
//! hears "an application error has occurred" and is hung up on.
//!
//! So a refused request to a webhook a caller hears is answered `200` with the static safe
//! TwiML, the same for everyone (the crisis line's number and a `<Dial>` to the first counselor
//! line, built from configuration alone): only Twilio can execute it, and it grants the sender
//! nothing but that line's number (so `COUNSELOR_NUMBER` should be a line, not a person's own
//! phone), and no effect, since nothing is stored. A counselor's leg gets the plain bridge. A
//! callback no caller hears keeps its error status. Every refusal is counted (`/health`) and
//! logged once, naming the probable misconfiguration.

use std::sync::atomic::{AtomicU64, Ordering};

use application::CallAnswer;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use infrastructure::twilio::answers::whisper_unknown;
use infrastructure::twilio::routes::{Listener, Webhook, PREFIX};

use crate::error::ErrorCode;
use crate::state::AppState;

/// Why a webhook request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MissingSignature,
    BadSignature,
    WrongMethod,
    NotAForm,
    TooLarge,
    Unreadable,
    TimedOut,
    Invalid,
    Other,
}

impl Refusal {
    pub const ALL: [Self; 9] = [
        Self::MissingSignature,
        Self::BadSignature,
        Self::WrongMethod,
        Self::NotAForm,
        Self::TooLarge,
        Self::Unreadable,
        Self::TimedOut,
        Self::Invalid,
        Self::Other,
    ];

    /// Why `response` (to a `method` request) is a refusal: the error code the API put on it,
    /// or else its status (a wrong method never reaches a handler).
    fn of(response: &Response, method: &Method) -> Self {
        if let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() {
            return match *code {
                "missing_signature" => Self::MissingSignature,
                "bad_signature" => Self::BadSignature,
                "unsupported_media_type" => Self::NotAForm,
                "body_too_large" => Self::TooLarge,
                "unreadable_body" => Self::Unreadable,
                "timed_out" => Self::TimedOut,
                "invalid_parameter" | "unknown_call" => Self::Invalid,
                _ => Self::Other,
            };
        }
        match response.status() {
            StatusCode::METHOD_NOT_ALLOWED => Self::WrongMethod,
            StatusCode::PAYLOAD_TOO_LARGE => Self::TooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::NotAForm,
            StatusCode::REQUEST_TIMEOUT => Self::TimedOut,
            _ if method != Method::POST => Self::WrongMethod,
            _ => Self::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingSignature => "missing_signature",
            Self::BadSignature => "bad_signature",
            Self::WrongMethod => "wrong_method",
            Self::NotAForm => "not_a_form",
            Self::TooLarge => "too_large",
            Self::Unreadable => "unreadable_body",
            Self::TimedOut => "timed_out",
            Self::Invalid => "invalid_parameters",
            Self::Other => "other",
        }
    }

    /// The one log line: what probably is wrong, for whoever runs the service.
    fn hint(self, public_base_url: &str, path: &str) -> String {
        match self {
            Self::MissingSignature => format!(
                "a request to {path} has no X-Twilio-Signature: it is not from Twilio, or a \
                 proxy in front of the service drops the header"
            ),
            Self::BadSignature => format!(
                "the signature over {public_base_url}{path} did not match: is PUBLIC_BASE_URL \
                 the URL in the Twilio console (scheme, host, port)? does a proxy rewrite the \
                 path or add a query? was the auth token rotated (TWILIO_AUTH_TOKEN takes the \
                 old and the new, comma-separated)?"
            ),
            Self::WrongMethod => format!(
                "a request to {path} used a method the webhook does not take: set the \
                 webhook's method to HTTP POST in the Twilio console"
            ),
            Self::NotAForm => format!(
                "a request to {path} is not application/x-www-form-urlencoded: Twilio's \
                 webhooks are forms; is something other than Twilio calling?"
            ),
            Self::TooLarge => format!(
                "a request to {path} is larger than any Twilio webhook ({} bytes at most)",
                crate::MAX_BODY_BYTES
            ),
            Self::Unreadable => {
                format!("the body of a request to {path} could not be read (cut off, or too slow)")
            }
            Self::TimedOut => format!("a request to {path} was not answered in time"),
            Self::Invalid => format!(
                "a request to {path} was signed but its parameters are not usable for this URL"
            ),
            Self::Other => format!("a request to {path} was refused"),
        }
    }
}

/// Refused webhook requests since the start, by reason (`/health` shows them), and when each
/// reason was last logged.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: [AtomicU64; Refusal::ALL.len()],
    logged_at_ms: [AtomicU64; Refusal::ALL.len()],
}

/// Each reason is logged at most once a second (at warn; the rest at debug): a scanner sending
/// thousands of unsigned requests must not bury the log.
const LOG_EVERY_MS: u64 = 1000;

impl Refusals {
    /// Counts `refusal`; whether this one should be logged at warn.
    fn count(&self, refusal: Refusal) -> bool {
        let index = Refusal::ALL
            .iter()
            .position(|r| *r == refusal)
            .unwrap_or(Refusal::ALL.len() - 1);
        self.counts[index].fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last = self.logged_at_ms[index].load(Ordering::Relaxed);
        now.saturating_sub(last) >= LOG_EVERY_MS
            && self.logged_at_ms[index]
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Each reason with its count.
    pub fn counts(&self) -> serde_json::Map<String, serde_json::Value> {
        Refusal::ALL
            .iter()
            .zip(&self.counts)
            .map(|(reason, count)| {
                (
                    reason.as_str().to_owned(),
                    count.load(Ordering::Relaxed).into(),
                )
            })
            .collect()
    }
}

/// The layer: every request under `/twilio/` whose answer is a refusal.
pub async fn answer_refusals(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    if !path.starts_with(PREFIX) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let webhook = Webhook::of_path(&path);
    let response = next.run(request).await;
    let status = response.status();
    if status.is_success() || status.is_informational() || status.is_redirection() {
        return response;
    }
    let refusal = Refusal::of(&response, &method);
    let hint = refusal.hint(&state.voice.public_base_url, &path);
    let webhook_name = webhook.map_or("unknown", Webhook::name);
    if state.refusals.count(refusal) {
        tracing::warn!(
            webhook = webhook_name,
            status = status.as_u16(),
            reason = refusal.as_str(),
            "webhook refused: {hint}"
        );
    } else {
        tracing::debug!(
            webhook = webhook_name,
            status = status.as_u16(),
            reason = refusal.as_str(),
            "webhook refused: {hint}"
        );
    }
    // A URL under `/twilio/` this service does not serve may be the console's voice URL with a
    // typo: a caller may be waiting.
    match webhook.map_or(Listener::Caller, Webhook::listener) {
        // The first counselor line only, even when counselors are rung together: whoever sent
        // the request learns no more numbers than that one.
        Listener::Caller => {
            let voice = infrastructure::twilio::answers::Voice {
                ring: infrastructure::twilio::answers::Ring::InOrder,
                ..(*state.voice).clone()
            };
            let spoken = application::Spoken::new(CallAnswer::Trouble, domain::Language::default());
            super::render::respond(&super::render::twiml(&spoken, None, &voice))
        }
        Listener::Counselor => super::render::respond(&whisper_unknown(&state.voice)),
        Listener::Nobody => response,
    }
}
