//! The ports the conversation pipeline drives: where recordings come from, speech-to-text, the
//! language model, and control of the live call. Adapters implement them in `infrastructure`.

use std::borrow::Cow;
use std::pin::Pin;

use async_trait::async_trait;
use domain::call::RecordingUrl;
use domain::risk::RiskLevel;
use domain::{CallId, CallSid, CallStatus, DialNumber, Language, RecordingSid};

/// Which kind of service a port talks to. It names the failure's class, so an operator can tell
/// Twilio's failures from the others'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// An OpenAI-compatible service: speech-to-text or the language model.
    Ai,
    /// Twilio's REST API: recordings, and the live call.
    Twilio,
    /// Where callers' recordings are kept.
    AudioStore,
}

/// What went wrong, as a class: never the service's message, which may hold a URL, a key, or the
/// caller's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The service did not answer in time.
    Timeout,
    /// The service could not be reached.
    Unreachable,
    /// The exchange failed on the way (a reset connection, a bad request).
    Transport,
    /// The service answered with this HTTP status.
    Status(u16),
    /// The service answered with this error code of its own (Twilio's `20429`).
    Code(i64),
    /// The answer could not be read.
    UnreadableAnswer,
    /// The answer held nothing to use.
    EmptyAnswer,
    /// The audio has a content type the service cannot be sent.
    BadContentType,
    /// The recording URL is not one of the account's own, so it was never fetched.
    ForeignRecordingUrl,
    /// Nothing is kept under the key asked for.
    NotFound,
    /// The service refused the credentials.
    Denied,
    /// Any other failure of the service.
    Failed,
}

/// Why a port failed: the service, the class of failure, and the underlying error for logs and
/// debugging. Its `Display` is the class alone (`timeout`, `http_503`, `twilio_20429`…), which is
/// stored with a failed turn and shown to operators: never a secret, a URL, or the caller's words.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.class())]
pub struct PortError {
    service: Service,
    failure: Failure,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Two port errors are the same when they are the same failure of the same service, whatever
/// caused them.
impl PartialEq for PortError {
    fn eq(&self, other: &Self) -> bool {
        (self.service, self.failure) == (other.service, other.failure)
    }
}

impl Eq for PortError {}

impl PortError {
    /// A `failure` of `service`, with no underlying error.
    pub fn new(service: Service, failure: Failure) -> Self {
        Self {
            service,
            failure,
            source: None,
        }
    }

    /// This failure, caused by `source`.
    #[must_use]
    pub fn caused_by(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub fn service(&self) -> Service {
        self.service
    }

    pub fn failure(&self) -> Failure {
        self.failure
    }

    /// Whether trying again could mend it: a refused URL or an audio format the service does not
    /// take stays refused; anything else may be a passing fault.
    pub fn retryable(&self) -> bool {
        !matches!(
            self.failure,
            Failure::ForeignRecordingUrl | Failure::BadContentType
        )
    }

    /// The class of failure as it is stored (in `ProcessingFailed` events and the jobs table):
    /// these names are data, so none may change.
    pub fn class(&self) -> Cow<'static, str> {
        use Failure::*;
        use Service::*;
        let class = match (self.service, self.failure) {
            // Refused before any request: the URL's fault, not Twilio's.
            (_, ForeignRecordingUrl) => "foreign_recording_url",
            (Twilio, Code(code)) => return format!("twilio_{code}").into(),
            (Twilio, Status(status)) => return format!("twilio_http_{status}").into(),
            (Twilio, UnreadableAnswer | EmptyAnswer) => "twilio_unreadable_answer",
            (Twilio, _) => "twilio_unreachable",
            (AudioStore, NotFound) => "audio_not_found",
            (AudioStore, Denied) => "audio_store_denied",
            (AudioStore, _) => "audio_store_failed",
            (Ai, Status(status)) => return format!("http_{status}").into(),
            (Ai, Code(code)) => return format!("code_{code}").into(),
            (Ai, Timeout) => "timeout",
            (Ai, Unreachable) => "unreachable",
            (Ai, UnreadableAnswer) => "unreadable_answer",
            (Ai, EmptyAnswer) => "empty_answer",
            (Ai, BadContentType) => "bad_content_type",
            (Ai, Transport | NotFound | Denied | Failed) => "transport",
        };
        class.into()
    }
}

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

/// A reply as the model writes it: pieces of text (a few characters each, or the whole reply), in
/// order. An error ends it: what came before is all there is. Nothing in it has passed the
/// safe-messaging guard yet (`crate::guarded` does that, sentence by sentence).
pub type ReplyStream = Pin<Box<dyn futures_core::Stream<Item = Result<String, PortError>> + Send>>;

/// A language model: a second opinion on risk, and a composer of replies.
#[async_trait]
pub trait LanguageModel: Send + Sync {
    /// The model's name, recorded with every analysis it took part in.
    fn name(&self) -> &str;
    /// The model's reading of the risk in `transcript`.
    async fn assess_risk(&self, transcript: &str) -> Result<RiskLevel, PortError>;
    /// A short, supportive reply in `language` to `transcript`, which was assessed at `level`.
    async fn compose_reply(
        &self,
        transcript: &str,
        level: RiskLevel,
        language: Language,
    ) -> Result<String, PortError>;
    /// The same reply, streamed as the model writes it, so that the caller can start hearing it
    /// sooner. A model that cannot stream composes the whole reply and yields it as one piece.
    async fn stream_reply(
        &self,
        transcript: &str,
        level: RiskLevel,
        language: Language,
    ) -> Result<ReplyStream, PortError> {
        let reply = self.compose_reply(transcript, level, language).await?;
        Ok(Box::pin(futures_util::stream::iter([Ok(reply)])))
    }
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
        language: Language,
    ) -> Result<(), PortError>;
    /// Tells the caller a counselor is being connected, and dials the counselor line for the
    /// caller's language.
    async fn connect_counselor(
        &self,
        call_sid: &CallSid,
        call_id: CallId,
        language: Language,
    ) -> Result<(), PortError>;
    /// What Twilio says of the call now: its status, and its duration once it ended.
    async fn call_status(&self, call_sid: &CallSid)
        -> Result<(CallStatus, Option<u32>), PortError>;
}

/// Keeps callers' recordings, per call and turn, for re-processing and for the record.
#[async_trait]
pub trait AudioStore: Send + Sync {
    /// Keeps `audio` as turn `turn` of call `call_id`, replacing any earlier copy, and returns
    /// the key it is kept under.
    async fn keep(&self, call_id: CallId, turn: u32, audio: &Audio) -> Result<String, PortError>;

    /// Keeps `audio` as the recording `recording` of the whole call `call_id`, replacing any
    /// earlier copy, and returns the key it is kept under.
    async fn keep_call(
        &self,
        call_id: CallId,
        recording: &RecordingSid,
        audio: &Audio,
    ) -> Result<String, PortError>;
}

/// Places outbound calls, which Hotline then answers like any other.
#[async_trait]
pub trait CallPlacer: Send + Sync {
    async fn place_call(&self, to: &DialNumber, from: &DialNumber) -> Result<CallSid, PortError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_classes_keep_their_names() {
        use Failure::*;
        use Service::*;
        for (service, failure, class) in [
            (Ai, Timeout, "timeout"),
            (Ai, Unreachable, "unreachable"),
            (Ai, Transport, "transport"),
            (Ai, Status(503), "http_503"),
            (Ai, UnreadableAnswer, "unreadable_answer"),
            (Ai, EmptyAnswer, "empty_answer"),
            (Ai, BadContentType, "bad_content_type"),
            (Twilio, Code(20429), "twilio_20429"),
            (Twilio, Status(500), "twilio_http_500"),
            (Twilio, Unreachable, "twilio_unreachable"),
            (Twilio, UnreadableAnswer, "twilio_unreadable_answer"),
            (Twilio, ForeignRecordingUrl, "foreign_recording_url"),
            (AudioStore, NotFound, "audio_not_found"),
            (AudioStore, Denied, "audio_store_denied"),
            (AudioStore, Failed, "audio_store_failed"),
        ] {
            assert_eq!(PortError::new(service, failure).to_string(), class);
        }
    }

    /// A model that can only compose whole replies.
    struct Composer;
    #[async_trait]
    impl LanguageModel for Composer {
        fn name(&self) -> &str {
            "composer"
        }
        async fn assess_risk(&self, _transcript: &str) -> Result<RiskLevel, PortError> {
            Ok(RiskLevel::None)
        }
        async fn compose_reply(
            &self,
            _transcript: &str,
            _level: RiskLevel,
            language: Language,
        ) -> Result<String, PortError> {
            match language {
                Language::English => Ok("I hear you. Tell me more.".to_owned()),
                Language::Spanish => Err(PortError::new(Service::Ai, Failure::Status(503))),
            }
        }
    }

    #[tokio::test]
    async fn a_model_that_cannot_stream_streams_its_whole_reply_as_one_piece() {
        use futures_util::StreamExt;
        let stream = Composer
            .stream_reply("…", RiskLevel::None, Language::English)
            .await
            .expect("composed");
        let pieces: Vec<_> = stream.collect().await;
        assert_eq!(pieces, [Ok("I hear you. Tell me more.".to_owned())]);
        let failed = Composer
            .stream_reply("…", RiskLevel::None, Language::Spanish)
            .await
            .err();
        assert_eq!(
            failed,
            Some(PortError::new(Service::Ai, Failure::Status(503)))
        );
    }

    #[test]
    fn only_a_refused_url_or_format_is_beyond_a_retry_and_the_cause_is_kept_but_not_shown() {
        assert!(!PortError::new(Service::Twilio, Failure::ForeignRecordingUrl).retryable());
        assert!(!PortError::new(Service::Ai, Failure::BadContentType).retryable());
        assert!(PortError::new(Service::Ai, Failure::Status(503)).retryable());
        let cause = std::io::Error::other("https://user:secret@example.org said no");
        let error = PortError::new(Service::AudioStore, Failure::Failed).caused_by(cause);
        assert_eq!(error.to_string(), "audio_store_failed");
        let source = std::error::Error::source(&error).expect("kept");
        assert!(source.to_string().contains("said no"));
    }
}
