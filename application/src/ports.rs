//! The ports the conversation pipeline drives: where recordings come from, speech-to-text, the
//! language model, and control of the live call. Adapters implement them in `infrastructure`.

use async_trait::async_trait;
use domain::call::RecordingUrl;
use domain::risk::RiskLevel;
use domain::{CallId, CallSid, DialNumber};

/// Why a port failed: a class of error (`timeout`, `http_503`, `twilio_20429`…) that is safe to
/// store and log. Never a secret, a URL with credentials, or the caller's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PortError(pub String);

/// A caller's recorded audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audio {
    pub bytes: Vec<u8>,
    pub content_type: String,
}

/// Fetches recordings.
#[async_trait]
pub trait RecordingSource: Send + Sync {
    /// Whether `url` is a recording this source may fetch (one of the account's own); anything
    /// else is refused before a request is made.
    fn owns(&self, url: &RecordingUrl) -> bool;
    async fn fetch(&self, url: &RecordingUrl) -> Result<Audio, PortError>;
}

/// Turns speech into text.
#[async_trait]
pub trait SpeechToText: Send + Sync {
    async fn transcribe(&self, audio: &Audio) -> Result<String, PortError>;
}

/// A language model: a second opinion on risk, and a composer of replies.
#[async_trait]
pub trait LanguageModel: Send + Sync {
    /// The model's name, recorded with every analysis it took part in.
    fn name(&self) -> &str;
    /// The model's reading of the risk in `transcript`.
    async fn assess_risk(&self, transcript: &str) -> Result<RiskLevel, PortError>;
    /// A short, supportive reply to `transcript`, which was assessed at `level`.
    async fn compose_reply(&self, transcript: &str, level: RiskLevel) -> Result<String, PortError>;
}

/// Acts on the live call.
#[async_trait]
pub trait CallControl: Send + Sync {
    /// Speaks `text` to the caller, then asks the direct question (`ask_question`, once per
    /// call) or offers the choice (continue, end, counselor).
    async fn play_reply(
        &self,
        call_sid: &CallSid,
        call_id: CallId,
        text: &str,
        ask_question: bool,
    ) -> Result<(), PortError>;
    /// Tells the caller a counselor is being connected, and dials the counselor line.
    async fn connect_counselor(&self, call_sid: &CallSid, call_id: CallId)
        -> Result<(), PortError>;
}

/// Keeps callers' recordings, per call and turn, for re-processing and for the record.
#[async_trait]
pub trait AudioStore: Send + Sync {
    /// Keeps `audio` as turn `turn` of call `call_id`, replacing any earlier copy, and returns
    /// the key it is kept under.
    async fn keep(&self, call_id: CallId, turn: u32, audio: &Audio) -> Result<String, PortError>;
    /// The audio kept under `key`.
    async fn load(&self, key: &str) -> Result<Audio, PortError>;
}

/// Places outbound calls, which Hotline then answers like any other.
#[async_trait]
pub trait CallPlacer: Send + Sync {
    async fn place_call(&self, to: &DialNumber, from: &DialNumber) -> Result<CallSid, PortError>;
}
