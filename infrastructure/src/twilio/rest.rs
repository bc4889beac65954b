//! Twilio's REST API: the three calls Hotline makes. Form bodies, HTTP Basic with the account's
//! credentials, JSON answers; Twilio's error JSON (`code`, `message`, `more_info`) is surfaced.
//!
//! Retries follow what is safe: updating a live call and downloading a recording are retried on
//! 429 and 5xx with exponential backoff and full jitter (as twilio-node's `autoRetry` does);
//! creating a call is retried only on 429, which Twilio guarantees was not processed, because a
//! blind retry after a timeout or a 5xx could place a second call.

use std::time::Duration;

use domain::call::RecordingUrl;
use domain::{AccountSid, CallSid, DialNumber};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::twiml::VoiceResponse;

/// Twilio's production API.
pub const DEFAULT_API_BASE: &str = "https://api.twilio.com";

/// Why a Twilio request did not succeed. Carries no credentials and no caller data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwilioError {
    /// Twilio answered with an error.
    #[error("Twilio answered {status}: code {code:?}: {message} ({more_info})")]
    Api {
        status: u16,
        code: Option<i64>,
        message: String,
        more_info: String,
    },
    /// The request did not get an answer.
    #[error("Twilio could not be reached: {0}")]
    Transport(String),
    /// The URL is not one of this account's recordings.
    #[error("refused to fetch a URL outside this Twilio account's recordings")]
    ForeignUrl,
    /// Twilio's answer could not be read.
    #[error("Twilio's answer could not be read: {0}")]
    Unreadable(String),
}

impl TwilioError {
    /// Rate limited: Twilio did not process the request, so any request may be sent again.
    fn is_rate_limited(&self) -> bool {
        matches!(self, Self::Api { status: 429, .. })
    }

    /// Worth another try for an idempotent request: rate limited, a Twilio-side failure, no answer.
    fn is_transient(&self) -> bool {
        match self {
            Self::Api { status, .. } => *status == 429 || *status >= 500,
            Self::Transport(_) => true,
            Self::ForeignUrl | Self::Unreadable(_) => false,
        }
    }

    /// For a recording download, a 404 also means "not finished yet".
    fn is_transient_download(&self) -> bool {
        self.is_transient() || matches!(self, Self::Api { status: 404, .. })
    }
}

/// What `play_audio_response_to_caller` plays.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseData {
    /// Spoken with text-to-speech.
    TextToSpeech {
        text: String,
        #[serde(default = "default_voice")]
        voice: String,
    },
    /// An audio file Twilio fetches and plays.
    Audio { url: String },
}

fn default_voice() -> String {
    "Polly.Joanna".to_owned()
}

/// A downloaded recording (`get_audio_for_processing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioData {
    pub audio_data: Vec<u8>,
    pub audio_url: String,
    pub content_type: String,
    pub size: usize,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: Option<i64>,
    message: Option<String>,
    more_info: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CallBody {
    sid: String,
}

/// What Twilio says of a call (`GET Calls/{CallSid}.json`): the fields reconciliation reads.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct CallResource {
    pub status: String,
    /// Seconds, as a string; absent (or null) while the call is live.
    #[serde(default)]
    pub duration: Option<String>,
}

/// How often and how long to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(3),
        }
    }
}

/// A client of one Twilio account.
#[derive(Clone)]
pub struct TwilioRest {
    http: reqwest::Client,
    api_base: String,
    account_sid: AccountSid,
    auth_token: SecretString,
    retry: RetryPolicy,
}

impl std::fmt::Debug for TwilioRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioRest")
            .field("api_base", &self.api_base)
            .field("account_sid", &self.account_sid)
            .finish_non_exhaustive()
    }
}

impl TwilioRest {
    /// A client for `account_sid` at `api_base` (Twilio's, or a stand-in's).
    pub fn new(api_base: &str, account_sid: AccountSid, auth_token: SecretString) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        Self {
            http,
            api_base: api_base.trim_end_matches('/').to_owned(),
            account_sid,
            auth_token,
            retry: RetryPolicy::default(),
        }
    }

    /// Sets the retry policy (tests use short pauses).
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    fn account_url(&self) -> String {
        format!("{}/2010-04-01/Accounts/{}", self.api_base, self.account_sid)
    }

    /// Downloads a recording as WAV. Only this account's recordings under the configured API base
    /// are fetched; a redirect to storage is followed without sending the credentials on (reqwest
    /// drops `Authorization` when the host changes). A 404 is retried: Twilio may not have finished
    /// the file when it reports the recording.
    #[tracing::instrument(skip_all)]
    pub async fn get_audio_for_processing(
        &self,
        recording_url: &RecordingUrl,
    ) -> Result<AudioData, TwilioError> {
        let url = self.media_url(recording_url)?;
        self.with_retries(TwilioError::is_transient_download, || async {
            let response = self.send(self.http.get(&url)).await?;
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("audio/x-wav")
                .to_owned();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| TwilioError::Transport(e.without_url().to_string()))?;
            Ok(AudioData {
                size: bytes.len(),
                audio_data: bytes.to_vec(),
                audio_url: url.clone(),
                content_type,
            })
        })
        .await
    }

    /// The URL to download `recording_url` from, if it is one of this account's recordings.
    pub fn media_url(&self, recording_url: &RecordingUrl) -> Result<String, TwilioError> {
        let prefix = format!("{}/Recordings/", self.account_url());
        let rest = recording_url
            .as_str()
            .strip_prefix(&prefix)
            .ok_or(TwilioError::ForeignUrl)?;
        let sid = rest.trim_end_matches(".wav").trim_end_matches(".mp3");
        let valid_sid = domain::RecordingSid::parse(sid).is_ok();
        if !valid_sid {
            return Err(TwilioError::ForeignUrl);
        }
        Ok(format!("{prefix}{sid}.wav"))
    }

    /// Plays `response` to the live call, followed by `then` (the caller's choice), by replacing
    /// the TwiML the call is executing.
    #[tracing::instrument(skip_all, fields(call_sid = %call_sid))]
    pub async fn play_audio_response_to_caller(
        &self,
        call_sid: &CallSid,
        response: &ResponseData,
        then: VoiceResponse,
    ) -> Result<(), TwilioError> {
        let first = match response {
            ResponseData::TextToSpeech { text, voice } => {
                VoiceResponse::new().say(text.clone(), voice, "en-US")
            }
            ResponseData::Audio { url } => {
                VoiceResponse::new().verb(super::twiml::Verb::Play { url: url.clone() })
            }
        };
        let doc = then
            .verbs()
            .iter()
            .cloned()
            .fold(first, VoiceResponse::verb);
        self.update_call(call_sid, &doc).await
    }

    /// Replaces the TwiML a live call is executing (`POST Calls/{CallSid}.json Twiml=…`).
    #[tracing::instrument(skip_all, fields(call_sid = %call_sid))]
    pub async fn update_call(
        &self,
        call_sid: &CallSid,
        twiml: &VoiceResponse,
    ) -> Result<(), TwilioError> {
        let url = format!("{}/Calls/{call_sid}.json", self.account_url());
        let form = [("Twiml", twiml.to_xml())];
        self.with_retries(TwilioError::is_transient, || async {
            self.send(self.http.post(&url).form(&form))
                .await
                .map(|_| ())
        })
        .await
    }

    /// How Twilio says the call stands (`GET Calls/{CallSid}.json`).
    #[tracing::instrument(skip_all, fields(call_sid = %call_sid))]
    pub async fn fetch_call(&self, call_sid: &CallSid) -> Result<CallResource, TwilioError> {
        let url = format!("{}/Calls/{call_sid}.json", self.account_url());
        self.with_retries(TwilioError::is_transient, || async {
            self.send(self.http.get(&url))
                .await?
                .json()
                .await
                .map_err(|e| TwilioError::Unreadable(e.without_url().to_string()))
        })
        .await
    }

    /// Places an outbound call to `to` from `from`; Twilio fetches `url` when it is answered.
    /// Retried on 429 only: any other failure may have placed the call already.
    #[tracing::instrument(skip_all)]
    pub async fn create_call(
        &self,
        to: &DialNumber,
        from: &DialNumber,
        url: &str,
        status_callback: &str,
    ) -> Result<CallSid, TwilioError> {
        let endpoint = format!("{}/Calls.json", self.account_url());
        let form = [
            ("To", to.as_str()),
            ("From", from.as_str()),
            ("Url", url),
            ("Method", "POST"),
            ("StatusCallback", status_callback),
            ("StatusCallbackMethod", "POST"),
        ];
        self.with_retries(TwilioError::is_rate_limited, || async {
            let body: CallBody = self
                .send(self.http.post(&endpoint).form(&form))
                .await?
                .json()
                .await
                .map_err(|e| TwilioError::Unreadable(e.without_url().to_string()))?;
            CallSid::parse(&body.sid).map_err(|e| TwilioError::Unreadable(e.to_string()))
        })
        .await
    }

    /// Sends a request with the account's credentials; a non-2xx answer is Twilio's error.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, TwilioError> {
        let response = request
            .basic_auth(
                self.account_sid.as_str(),
                Some(self.auth_token.expose_secret()),
            )
            .send()
            .await
            .map_err(|e| TwilioError::Transport(e.without_url().to_string()))?;
        check(response).await
    }

    /// Runs `attempt` until it succeeds, fails with an error `retryable` refuses, or runs out of
    /// attempts.
    async fn with_retries<T, F, Fut>(
        &self,
        retryable: fn(&TwilioError) -> bool,
        attempt: F,
    ) -> Result<T, TwilioError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, TwilioError>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(error) => {
                    if !retryable(&error) || tries >= self.retry.attempts {
                        return Err(error);
                    }
                    let ceiling = self
                        .retry
                        .base
                        .saturating_mul(2u32.saturating_pow(tries - 1))
                        .min(self.retry.cap);
                    let pause = rand::rng().random_range(Duration::ZERO..=ceiling);
                    tracing::warn!(error = %error, retry_in_ms = pause.as_millis() as u64, "Twilio request failed; retrying");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

/// Turns a non-2xx answer into Twilio's error.
async fn check(response: reqwest::Response) -> Result<reqwest::Response, TwilioError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body: Option<ErrorBody> = response.json().await.ok();
    let body = body.unwrap_or(ErrorBody {
        code: None,
        message: None,
        more_info: None,
    });
    Err(TwilioError::Api {
        status: status.as_u16(),
        code: body.code,
        message: body
            .message
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned()),
        more_info: body.more_info.unwrap_or_default(),
    })
}
