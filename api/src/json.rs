//! JSON bodies of `/api/*`, with axum's rejections turned into the API's one error type.

use axum::extract::rejection::JsonRejection;
use axum::extract::FromRequest;

use crate::error::ApiError;

/// A JSON body; anything that is not the expected JSON is a 400 that says why.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => {
                Self::Malformed("the body must be JSON (Content-Type: application/json)".into())
            }
            JsonRejection::JsonSyntaxError(_) => {
                Self::Malformed("the body is not valid JSON".into())
            }
            JsonRejection::JsonDataError(error) => Self::Malformed(data_error(&error.body_text())),
            JsonRejection::BytesRejection(error)
                if error.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Self::TooLarge
            }
            other => Self::Body(other.body_text()),
        }
    }
}

/// Serde's account of a body of the wrong shape, without the values it quotes: a mistyped field
/// may hold a phone number, and this message is logged.
fn data_error(text: &str) -> String {
    let detail = text
        .split_once("target type: ")
        .map_or(text, |(_, detail)| detail);
    let detail = detail.split(" at line ").next().unwrap_or(detail);
    let (path, problem) = detail.split_once(": ").unwrap_or(("the body", detail));
    if problem.starts_with("missing field") || problem.starts_with("unknown field") {
        problem.to_owned()
    } else if path == "." {
        "the body must be a JSON object".to_owned()
    } else {
        format!("{path} has the wrong type")
    }
}

#[cfg(test)]
mod tests {
    use super::data_error;

    #[test]
    fn shape_errors_name_fields_but_never_quote_values() {
        assert_eq!(
            data_error("Failed to deserialize the JSON body into the target type: missing field `call_id` at line 1 column 2"),
            "missing field `call_id`"
        );
        let typed = data_error("Failed to deserialize the JSON body into the target type: to_number: invalid type: integer `15005550006`, expected a string at line 1 column 28");
        assert_eq!(typed, "to_number has the wrong type");
        assert!(!typed.contains("1500"));
    }
}
