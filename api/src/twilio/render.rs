//! TwiML answers as HTTP responses. What each answer says lives in
//! `infrastructure::twilio::answers`, shared with the REST updates of live calls.

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
pub use infrastructure::twilio::answers::twiml;
use infrastructure::twilio::twiml::VoiceResponse;

/// A TwiML document as an HTTP response.
pub fn respond(doc: &VoiceResponse) -> Response {
    ([(CONTENT_TYPE, "text/xml; charset=utf-8")], doc.to_xml()).into_response()
}
