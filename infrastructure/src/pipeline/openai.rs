//! OpenAI-compatible speech-to-text (`/v1/audio/transcriptions`: OpenAI, or a self-hosted Whisper
//! server) and chat model (`/v1/chat/completions`, whole or streamed as Server-Sent Events),
//! behind the pipeline's ports. Errors carry a class (`timeout`, `http_503`,
//! `unreadable_answer`), never a key, a body, or the caller's words.

mod sse;

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use application::ports::{
    Audio, Failure, LanguageModel, PortError, ReplyStream, Service, SpeechToText,
};
use async_trait::async_trait;
use bytes::Bytes;
use domain::risk::{Language, RiskLevel};
use futures_util::{Stream, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use self::sse::EventDecoder;

/// How long a chat completion may take, from connecting to its last byte: a streamed reply too
/// (the bound of the whole stream).
pub const CHAT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a streamed reply may take to yield its first words, from the request: a caller
/// waiting in silence should hear the vetted script instead, long before `CHAT_TIMEOUT`.
pub const FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(3);

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

/// A chat model over `/v1/chat/completions`: asked for JSON, or for a reply streamed as it is
/// written.
#[derive(Debug, Clone)]
pub struct OpenAiChat {
    endpoint: Endpoint,
    http: reqwest::Client,
    first_token_timeout: Duration,
}

impl OpenAiChat {
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            http: http(CHAT_TIMEOUT),
            first_token_timeout: FIRST_TOKEN_TIMEOUT,
        }
    }

    /// Sets how long a streamed reply may take to yield its first words.
    #[must_use]
    pub fn with_first_token_timeout(mut self, timeout: Duration) -> Self {
        self.first_token_timeout = timeout;
        self
    }

    fn completions(&self, body: &serde_json::Value) -> reqwest::RequestBuilder {
        let url = format!(
            "{}/v1/chat/completions",
            self.endpoint.base_url.trim_end_matches('/')
        );
        authorised(self.http.post(url), &self.endpoint).json(body)
    }

    async fn ask(&self, system: &str, user: &str) -> Result<serde_json::Value, PortError> {
        let body = json!({
            "model": self.endpoint.model,
            "temperature": 0,
            "response_format": { "type": "json_object" },
            "messages": messages(system, user),
        });
        let response = self
            .completions(&body)
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

fn messages(system: &str, user: &str) -> serde_json::Value {
    json!([
        { "role": "system", "content": system },
        { "role": "user", "content": user },
    ])
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

/// A streamed reply is spoken as it arrives, so it is the words alone.
const SPOKEN_REPLY: &str = "Answer only with the words to be spoken: plain sentences, \
with no JSON, lists, headings or markup.";

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

    /// Streams the reply as plain text. Until its first words arrive the stream is bounded by the
    /// first-token timeout; as a whole, by `CHAT_TIMEOUT`. A failed status comes back here; what
    /// fails later (a cut connection, a body that is not an event stream) ends the stream with an
    /// error.
    async fn stream_reply(
        &self,
        transcript: &str,
        level: RiskLevel,
        language: Language,
    ) -> Result<ReplyStream, PortError> {
        let first_token_by = Instant::now() + self.first_token_timeout;
        let body = json!({
            "model": self.endpoint.model,
            "temperature": 0,
            "stream": true,
            "messages": messages(
                &reply_prompt(language, SPOKEN_REPLY),
                &reply_request(transcript, level),
            ),
        });
        let request = self
            .completions(&body)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send();
        let response = tokio::time::timeout_at(first_token_by, request)
            .await
            .map_err(|_| failed(Failure::Timeout))?
            .and_then(reqwest::Response::error_for_status)
            .map_err(class)?;
        let deltas = Deltas {
            body: Box::pin(response.bytes_stream()),
            events: EventDecoder::default(),
            ready: VecDeque::new(),
            first_token_by: Some(first_token_by),
            spoke: false,
            over: false,
        };
        Ok(Box::pin(futures_util::stream::unfold(
            deltas,
            |mut deltas| async move { deltas.next_piece().await.map(|piece| (piece, deltas)) },
        )))
    }
}

/// One event of a streamed completion.
#[derive(Deserialize)]
struct CompletionChunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    /// Some servers report a failure in the stream itself, after a `200`.
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Delta,
}

#[derive(Deserialize, Default)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

/// The pieces of a streamed completion, read from its body as they arrive.
struct Deltas {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    events: EventDecoder,
    /// Pieces read and not yet yielded (one chunk of the body may hold several).
    ready: VecDeque<String>,
    /// Until the first piece arrives, when waiting for it ends.
    first_token_by: Option<Instant>,
    /// Whether any piece of text arrived.
    spoke: bool,
    /// The stream is over: `[DONE]` arrived, or it failed.
    over: bool,
}

impl Deltas {
    async fn next_piece(&mut self) -> Option<Result<String, PortError>> {
        loop {
            if let Some(piece) = self.ready.pop_front() {
                return Some(Ok(piece));
            }
            if self.over {
                return None;
            }
            if let Err(error) = self.read_body().await {
                self.over = true;
                self.ready.clear();
                return Some(Err(error));
            }
        }
    }

    /// Reads the next chunk of the body, and the events it completes.
    async fn read_body(&mut self) -> Result<(), PortError> {
        let chunk = match self.first_token_by {
            Some(deadline) => tokio::time::timeout_at(deadline, self.body.next())
                .await
                .map_err(|_| failed(Failure::Timeout))?,
            None => self.body.next().await,
        };
        match chunk {
            Some(chunk) => {
                let events = self
                    .events
                    .feed(&chunk.map_err(class)?)
                    .map_err(unreadable)?;
                events.iter().try_for_each(|data| self.read_event(data))
            }
            None => {
                let last = std::mem::take(&mut self.events)
                    .finish()
                    .map_err(unreadable)?;
                if let Some(data) = last {
                    self.read_event(&data)?;
                }
                if self.over {
                    return Ok(());
                }
                // A stream ends with `[DONE]`: without it, the reply may be cut short.
                Err(failed(Failure::UnreadableAnswer))
            }
        }
    }

    fn read_event(&mut self, data: &str) -> Result<(), PortError> {
        if self.over {
            return Ok(());
        }
        if data.trim() == "[DONE]" {
            self.over = true;
            return if self.spoke {
                Ok(())
            } else {
                Err(failed(Failure::EmptyAnswer))
            };
        }
        let chunk: CompletionChunk = serde_json::from_str(data).map_err(unreadable)?;
        if chunk.error.is_some() {
            return Err(failed(Failure::Failed));
        }
        let content = chunk
            .choices
            .into_iter()
            .next()
            .and_then(|choice| choice.delta.content)
            .filter(|content| !content.is_empty());
        if let Some(content) = content {
            self.spoke = true;
            self.first_token_by = None;
            self.ready.push_back(content);
        }
        Ok(())
    }
}
