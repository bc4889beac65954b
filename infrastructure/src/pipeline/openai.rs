//! OpenAI-compatible speech-to-text (`/v1/audio/transcriptions`: OpenAI, or a self-hosted Whisper
//! server) and chat model (`/v1/chat/completions`), behind the pipeline's ports. Errors carry a
//! class (`timeout`, `http_503`, `unreadable_answer`), never a key, a body, or the caller's words.

use std::time::Duration;

use application::ports::{Audio, Failure, LanguageModel, PortError, Service, SpeechToText};
use async_trait::async_trait;
use domain::risk::{Language, RiskLevel};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

/// Where an OpenAI-compatible service is, and how to call it.
#[derive(Clone)]
pub struct Endpoint {
    pub base_url: String,
    pub api_key: Option<SecretString>,
    pub model: String,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

fn http(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(3))
        .build()
        .unwrap_or_default()
}

fn failed(failure: Failure) -> PortError {
    PortError::new(Service::Ai, failure)
}

fn class(error: reqwest::Error) -> PortError {
    let failure = if error.is_timeout() {
        Failure::Timeout
    } else if let Some(status) = error.status() {
        Failure::Status(status.as_u16())
    } else if error.is_connect() {
        Failure::Unreachable
    } else {
        Failure::Transport
    };
    failed(failure).caused_by(error)
}

/// An answer that could not be read, and why.
fn unreadable(error: impl std::error::Error + Send + Sync + 'static) -> PortError {
    failed(Failure::UnreadableAnswer).caused_by(error)
}

fn authorised(request: reqwest::RequestBuilder, endpoint: &Endpoint) -> reqwest::RequestBuilder {
    match &endpoint.api_key {
        Some(key) => request.bearer_auth(key.expose_secret()),
        None => request,
    }
}

/// Speech-to-text over `/v1/audio/transcriptions`.
#[derive(Debug, Clone)]
pub struct OpenAiSpeechToText {
    endpoint: Endpoint,
    http: reqwest::Client,
}

impl OpenAiSpeechToText {
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            http: http(Duration::from_secs(30)),
        }
    }
}

#[derive(Deserialize)]
struct Transcription {
    text: String,
}

#[async_trait]
impl SpeechToText for OpenAiSpeechToText {
    async fn transcribe(&self, audio: &Audio) -> Result<String, PortError> {
        let file = reqwest::multipart::Part::bytes(audio.bytes.clone())
            .file_name("turn.wav")
            .mime_str(&audio.content_type)
            .map_err(|e| failed(Failure::BadContentType).caused_by(e))?;
        let form = reqwest::multipart::Form::new()
            .part("file", file)
            .text("model", self.endpoint.model.clone())
            .text("response_format", "json");
        let url = format!(
            "{}/v1/audio/transcriptions",
            self.endpoint.base_url.trim_end_matches('/')
        );
        let response = authorised(self.http.post(url), &self.endpoint)
            .multipart(form)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(class)?;
        let body: Transcription = response.json().await.map_err(unreadable)?;
        Ok(body.text)
    }
}

/// A chat model over `/v1/chat/completions`, asked for JSON.
#[derive(Debug, Clone)]
pub struct OpenAiChat {
    endpoint: Endpoint,
    http: reqwest::Client,
}

impl OpenAiChat {
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            http: http(Duration::from_secs(20)),
        }
    }

    async fn ask(&self, system: &str, user: &str) -> Result<serde_json::Value, PortError> {
        let url = format!(
            "{}/v1/chat/completions",
            self.endpoint.base_url.trim_end_matches('/')
        );
        let body = json!({
            "model": self.endpoint.model,
            "temperature": 0,
            "response_format": { "type": "json_object" },
            "messages": [
                { "role": "system", "content": system },
                { "role": "user", "content": user },
            ],
        });
        let response = authorised(self.http.post(url), &self.endpoint)
            .json(&body)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(class)?;
        let completion: Completion = response.json().await.map_err(unreadable)?;
        let content = completion
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .ok_or_else(|| failed(Failure::EmptyAnswer))?;
        serde_json::from_str(&content).map_err(unreadable)
    }
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
}

const RISK_PROMPT: &str =
    "You assess suicide risk in what a caller to a crisis line said, following \
the C-SSRS screener (wish to be dead, active thoughts, method, intent, plan, recent behaviour). \
Answer only with JSON: {\"risk\": \"none\" | \"low\" | \"moderate\" | \"high\" | \"imminent\"}. \
When unsure, choose the higher level.";

/// The instructions of every reply, whole or streamed, but its form.
const REPLY_PROMPT: &str = "You are the automated voice of a crisis line, speaking to a caller. \
Reply in two or three short, warm sentences that reflect what they said and invite them to say more. \
Follow safe-messaging guidelines: never mention methods, means, doses or places; never present \
suicide as a solution or relief; never claim to be a person; do not give medical advice.";

/// A whole reply is read from JSON.
const JSON_REPLY: &str = "Answer only with JSON: {\"reply\": \"...\"}.";

/// The reply prompt asking for a reply in `language`, in the `form` given.
fn reply_prompt(language: Language, form: &str) -> String {
    let language = match language {
        Language::English => "English",
        Language::Spanish => "Spanish",
    };
    format!("{REPLY_PROMPT} Reply in {language}, the language the caller spoke. {form}")
}

fn reply_request(transcript: &str, level: RiskLevel) -> String {
    format!("Assessed risk: {level:?}. The caller said: {transcript}")
}

#[async_trait]
impl LanguageModel for OpenAiChat {
    fn name(&self) -> &str {
        &self.endpoint.model
    }

    async fn assess_risk(&self, transcript: &str) -> Result<RiskLevel, PortError> {
        let answer = self.ask(RISK_PROMPT, transcript).await?;
        answer
            .get("risk")
            .and_then(serde_json::Value::as_str)
            .and_then(RiskLevel::parse)
            .ok_or_else(|| failed(Failure::UnreadableAnswer))
    }

    async fn compose_reply(
        &self,
        transcript: &str,
        level: RiskLevel,
        language: Language,
    ) -> Result<String, PortError> {
        let system = reply_prompt(language, JSON_REPLY);
        let answer = self.ask(&system, &reply_request(transcript, level)).await?;
        answer
            .get("reply")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| failed(Failure::UnreadableAnswer))
    }
}
