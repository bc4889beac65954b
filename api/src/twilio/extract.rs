//! The extractor every Twilio webhook goes through: it reads the form, checks the signature before
//! anything else runs, and builds the command metadata, so that handlers never do either.

use application::CommandMetadata;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Path, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use domain::CallId;

use crate::error::ApiError;
use crate::state::AppState;
use crate::REQUEST_ID;

const SIGNATURE: &str = "x-twilio-signature";
const SIGNATURE_SETTINGS: &str = "x-twilio-webhooks-signature-settings";
const IDEMPOTENCY_TOKEN: &str = "i-twilio-idempotency-token";

/// A webhook whose signature was verified: its parameters, all of them, and its metadata.
#[derive(Debug)]
pub struct TwilioRequest {
    pub params: Params,
    pub metadata: CommandMetadata,
}

/// A webhook's form parameters, as sent: repeated keys, empty values and unknown names kept.
#[derive(Debug, Clone, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Decodes a form body.
    pub fn from_form(body: &[u8]) -> Self {
        Self(form_urlencoded::parse(body).into_owned().collect())
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, treating an empty value as absent.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// Every pair, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// The same parameters without the characters PostgreSQL refuses to store (NUL), and how
    /// many were removed. Done after the signature is checked, which covers what Twilio sent.
    pub fn storable(self) -> (Self, usize) {
        let mut removed = 0;
        let pairs = self
            .0
            .into_iter()
            .map(|(key, value)| {
                let mut clean = |text: String| {
                    let count = text.matches('\0').count();
                    removed += count;
                    if count == 0 {
                        text
                    } else {
                        text.replace('\0', "")
                    }
                };
                let key = clean(key);
                (key, clean(value))
            })
            .collect();
        (Self(pairs), removed)
    }
}

/// Characters removed from webhook parameters because the database would refuse them, since the
/// process started (`/health` shows it).
pub static REFUSED_CHARACTERS_REMOVED: AtomicU64 = AtomicU64::new(0);

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl FromRequest<AppState> for TwilioRequest {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let headers = request.headers().clone();
        // The URL as Twilio requested it, even under a nested router.
        let path_and_query = request
            .extensions()
            .get::<OriginalUri>()
            .map_or_else(|| request.uri().clone(), |o| o.0.clone())
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        let signature = header(&headers, SIGNATURE).ok_or(ApiError::MissingSignature)?;
        // A media type is case-insensitive and may carry parameters (`; charset=utf-8`).
        let is_form = header(&headers, CONTENT_TYPE.as_str()).is_some_and(|ct| {
            ct.split(';').next().is_some_and(|mime| {
                mime.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
        if !is_form {
            return Err(ApiError::NotAForm);
        }
        let body =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection.status() {
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge,
                    _ => ApiError::Body(rejection.body_text()),
                })?;
        let params = Params::from_form(&body);
        state
            .validator
            .validate(
                &path_and_query,
                params.pairs(),
                Some(signature),
                header(&headers, SIGNATURE_SETTINGS),
            )
            .map_err(|error| match error {
                twilio_signature::SignatureError::Missing => ApiError::MissingSignature,
                _ => ApiError::BadSignature,
            })?;
        // Signed is not well-formed: each parameter is what Twilio sends, once.
        super::params::strict(&params)?;
        // A value the database cannot store must not fail the call's record (or, counted as an
        // outage, everyone's): the characters go, and the rest is kept.
        let (params, removed) = params.storable();
        if removed > 0 {
            REFUSED_CHARACTERS_REMOVED.fetch_add(removed as u64, Ordering::Relaxed);
            tracing::warn!(
                removed,
                path = %path_and_query.split('?').next().unwrap_or_default(),
                "removed characters the database refuses (NUL) from a webhook's parameters"
            );
        }
        let metadata = CommandMetadata {
            request_id: header(&headers, REQUEST_ID.as_str())
                .unwrap_or_default()
                .to_owned(),
            idempotency_token: header(&headers, IDEMPOTENCY_TOKEN).map(str::to_owned),
            actor: "twilio".to_owned(),
            received_at: Utc::now(),
            spool_entry: None,
        };
        Ok(Self { params, metadata })
    }
}

/// The call a per-call webhook's URL names; `None` when the segment is not a call id, so that the
/// handler can still answer the caller.
#[derive(Debug, Clone, Copy)]
pub struct CallPath(pub Option<CallId>);

impl<S: Send + Sync> FromRequestParts<S> for CallPath {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = Path::<String>::from_request_parts(parts, state).await.ok();
        Ok(Self(raw.and_then(|Path(raw)| CallId::parse(&raw).ok())))
    }
}
