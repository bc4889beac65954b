//! The events of a call: what happened, in Twilio's terms, with the data an auditor needs.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::choice::Choice;
use crate::ids::{AccountSid, CallSid, RecordingSid};
use crate::phone::{CallerId, DialNumber};
use crate::risk::{DirectAnswer, Language, RiskAssessment, Route, Screening};
use crate::status::CallStatus;

/// Why a `RecordingUrl` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RecordingUrl must be an absolute http(s) URL without spaces, at most 2048 characters")]
pub struct RecordingUrlError;

/// Where Twilio says the caller's recording can be fetched. Which hosts may be fetched from is the
/// downloader's decision; here it is only known to be a well-formed absolute URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RecordingUrl(String);

impl RecordingUrl {
    /// Parses the `RecordingUrl` parameter.
    pub fn parse(value: &str) -> Result<Self, RecordingUrlError> {
        let scheme_ok = value.starts_with("https://") || value.starts_with("http://");
        let clean = !value.chars().any(|c| c.is_whitespace() || c.is_control());
        if scheme_ok
            && clean
            && value.len() <= 2048
            && value.split("://").nth(1).is_some_and(|r| !r.is_empty())
        {
            Ok(Self(value.to_owned()))
        } else {
            Err(RecordingUrlError)
        }
    }

    /// The URL as Twilio sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RecordingUrl {
    type Error = RecordingUrlError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<RecordingUrl> for String {
    fn from(value: RecordingUrl) -> String {
        value.0
    }
}

/// How a turn's response reached the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlayedVia {
    /// A REST update of the live call (`POST Calls/{sid}.json Twiml=…`).
    RestUpdate,
    /// The TwiML answer to a webhook (the continue webhook, or a speech turn's own action).
    Twiml,
    /// Streamed over the call's live ConversationRelay session.
    Relay,
}

/// How the caller's words reached Hotline when Twilio recognised them itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpeechSource {
    /// A `<Gather input="speech">`'s action webhook (`SpeechResult`, `Confidence`).
    Gather,
    /// A final `prompt` on the call's ConversationRelay session.
    Relay,
}

/// How a call's language was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LanguageChoice {
    /// The caller pressed the key the greeting offers (9 for Spanish).
    Keys,
    /// The caller's first words were in that language.
    Detected,
}

/// Why the caller was sent to a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationReason {
    /// The caller pressed 0 or asked for a person.
    CallerRequested,
    /// The counselor line did not answer; the crisis line is dialled instead.
    CounselorUnavailable,
    /// The caller stayed silent and was offered no other way on.
    Silence,
    /// The turn's risk was high, imminent, or could not be assessed.
    RiskAssessed,
    /// Processing the turn failed for good.
    ProcessingFailed,
    /// The caller's answer to the direct question about suicide was anything but a clear no.
    DirectQuestion,
    /// Risk was found earlier in the call: once a person is warranted, every later turn goes to one.
    EarlierRisk,
    /// The live session ended without handing the caller anywhere (a dropped socket, an error, a
    /// restart): the safe way on is a person.
    SessionLost,
    /// The call's record could not be written when the caller was answered (the store away): the
    /// safe answer put a person on the line, recorded when the spool replayed the webhook.
    StoreUnavailable,
}

/// Who a `<Dial>` rang: a counselor for the caller's language, or the crisis line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DialedLine {
    Counselor,
    CrisisLine,
}

/// How a `<Dial>` ended: Twilio's `DialCallStatus`, read with what the counselor did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DialResult {
    /// A person took the call, and the conversation has ended.
    Talked,
    NoAnswer,
    Busy,
    Failed,
    /// The counselor picked up but did not take the call (no 1 after the whisper, a voicemail).
    Declined,
    /// The caller hung up while it rang.
    CallerHungUp,
}

impl DialResult {
    /// Whether the caller was with a person.
    pub fn talked(self) -> bool {
        self == Self::Talked
    }
}

/// Where an utterance outside a recorded turn was said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    /// The "press 1, 2 or 0" choice after a reply.
    Choice,
}

/// A stage of processing a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Download,
    Transcription,
    Assessment,
    Reply,
    Delivery,
}

impl Stage {
    /// The stage's name, as it is stored (`transcription`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Download => "download",
            Self::Transcription => "transcription",
            Self::Assessment => "assessment",
            Self::Reply => "reply",
            Self::Delivery => "delivery",
        }
    }
}

/// Where the reply a caller heard came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplySource {
    /// The vetted script (the default responder, or a failed model).
    Script,
    /// The language model, passed by the safe-messaging guard.
    Model,
    /// The language model's reply was blocked by the guard; the script was used.
    ScriptAfterGuard,
}

/// How long each stage of a turn took, in milliseconds, so that turn latency can be measured
/// from the event history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageTimings {
    pub download_ms: u64,
    pub transcription_ms: u64,
    pub assessment_ms: u64,
    pub reply_ms: u64,
}

/// What was understood of a turn and what will be answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Analysis {
    /// What the caller said. Sensitive: never logged.
    pub transcript: String,
    /// The built-in screener's reading, with the signals that set it.
    pub screening: Screening,
    /// The final assessment: the screener's floor raised by the model, and the route.
    pub assessment: RiskAssessment,
    /// The language model consulted, if any.
    pub model: Option<String>,
    /// The reply to speak; none when the caller goes to a person.
    pub reply: Option<String>,
    pub reply_source: Option<ReplySource>,
    pub timings: StageTimings,
    /// Where the turn's recording is kept in the audio store, if it was kept. Absent from
    /// analyses recorded before recordings were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_key: Option<String>,
}

/// A callback that arrived after the state it describes was already passed. Kept for the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LateCallback {
    /// A status callback older than the newest one seen, or after the call ended.
    Status {
        status: CallStatus,
        sequence_number: Option<u32>,
    },
    /// A recording that arrived after the call ended.
    Recording { recording_sid: RecordingSid },
}

/// Everything that can happen to a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CallEvent {
    /// Twilio asked how to answer a new call.
    CallStarted {
        call_sid: CallSid,
        account_sid: AccountSid,
        from: CallerId,
        to: String,
        direction: String,
        started_at: DateTime<Utc>,
    },
    /// The caller spoke, and Twilio finished a recording of it.
    RecordingReceived {
        turn: u32,
        recording_sid: RecordingSid,
        recording_url: RecordingUrl,
        duration_secs: Option<u32>,
        digits: Option<String>,
        received_at: DateTime<Utc>,
    },
    /// The response to a turn was played to the caller.
    ResponsePlayed {
        turn: u32,
        via: PlayedVia,
        at: DateTime<Utc>,
    },
    /// The caller chose what happens next.
    CallerChose {
        turn: u32,
        choice: Choice,
        digits: Option<String>,
        speech: Option<String>,
        at: DateTime<Utc>,
    },
    /// The caller was sent to a human.
    Escalated {
        reason: EscalationReason,
        target: DialNumber,
        at: DateTime<Utc>,
    },
    /// Twilio reported a newer, non-final status.
    StatusChanged {
        call_sid: CallSid,
        status: CallStatus,
        sequence_number: Option<u32>,
        duration_secs: Option<u32>,
        at: DateTime<Utc>,
    },
    /// Twilio reported the call's final status.
    Completed {
        call_sid: CallSid,
        status: CallStatus,
        sequence_number: Option<u32>,
        duration_secs: Option<u32>,
        ended_at: DateTime<Utc>,
    },
    /// Twilio transcribed a turn's recording (used when no speech-to-text service is configured).
    TranscriptionReceived {
        turn: u32,
        recording_sid: RecordingSid,
        /// What the caller said; empty when Twilio could not transcribe it. Never logged.
        text: String,
        /// Twilio's `TranscriptionStatus`: `completed` or `failed`.
        completed: bool,
        at: DateTime<Utc>,
    },
    /// Twilio transcribed a recording whose own webhook has not come yet (the two can cross): the
    /// words are kept, and recorded as that turn's `TranscriptionReceived` when it comes.
    EarlyTranscriptionReceived {
        recording_sid: RecordingSid,
        /// Never logged.
        text: String,
        completed: bool,
        at: DateTime<Utc>,
    },
    /// A turn was understood and assessed, and its answer chosen.
    Analyzed {
        turn: u32,
        analysis: Analysis,
        at: DateTime<Utc>,
    },
    /// A stage of a turn failed for good (or a delivery failed, and the webhook path must play
    /// the answer instead). Carries an error class, never a secret or the caller's words.
    ProcessingFailed {
        turn: u32,
        stage: Stage,
        error_class: String,
        at: DateTime<Utc>,
    },
    /// The caller was asked, once, whether they are having thoughts of suicide.
    DirectQuestionAsked { turn: u32, at: DateTime<Utc> },
    /// The caller answered the direct question. Anything but a clear no goes to a person.
    DirectQuestionAnswered {
        turn: u32,
        answer: DirectAnswer,
        digits: Option<String>,
        /// What the caller said. Never logged.
        speech: Option<String>,
        /// The screening of what they said, if they said anything.
        screening: Option<Screening>,
        at: DateTime<Utc>,
    },
    /// The caller said something at a prompt that was not one of its choices: it was screened
    /// like any turn.
    UtteranceScreened {
        turn: u32,
        prompt: Prompt,
        /// What the caller said. Never logged.
        text: String,
        screening: Screening,
        route: Route,
        at: DateTime<Utc>,
    },
    /// Twilio recognised what the caller said (speech mode, or the live session): the start of a
    /// turn, as a recording is in record mode.
    SpeechReceived {
        turn: u32,
        /// What Twilio heard. Never logged.
        text: String,
        /// Twilio's confidence in the words, 0 to 1, when it gave one.
        confidence: Option<f64>,
        source: SpeechSource,
        received_at: DateTime<Utc>,
    },
    /// The turn's answer was not ready within the webhook's budget (a slow model): the caller
    /// hears a holding line, and the pipeline answers the turn by updating the live call.
    AnswerDeferred { turn: u32, at: DateTime<Utc> },
    /// The call's language was chosen; what the caller hears from now on is in it.
    LanguageChosen {
        language: Language,
        how: LanguageChoice,
        at: DateTime<Utc>,
    },
    /// Twilio opened the call's ConversationRelay session (its `setup` message).
    RelaySessionStarted {
        session_id: String,
        at: DateTime<Utc>,
    },
    /// The caller spoke over a streamed reply: what they heard of it before they did.
    ReplyInterrupted {
        turn: u32,
        /// The part of the reply the caller heard. Never logged.
        heard: String,
        duration_ms: Option<u64>,
        at: DateTime<Utc>,
    },
    /// The call's ConversationRelay session ended (Twilio's `<Connect action>` webhook).
    RelaySessionEnded {
        /// Twilio's `SessionStatus` (`ended`, `failed`, …).
        status: String,
        /// Twilio's `ErrorCode`, when the session failed (64105: the socket closed).
        error_code: Option<String>,
        /// The `handoffData` Hotline ended the session with, if it did.
        handoff: Option<String>,
        at: DateTime<Utc>,
    },
    /// Twilio finished a recording of the whole call (its recording status callback).
    CallRecordingReceived {
        recording_sid: RecordingSid,
        recording_url: RecordingUrl,
        duration_secs: Option<u32>,
        /// Twilio's `RecordingStatus`: `completed`, `absent` or `failed`.
        status: String,
        at: DateTime<Utc>,
    },
    /// A recording of the call was copied into the audio store.
    CallRecordingKept {
        recording_sid: RecordingSid,
        key: String,
        at: DateTime<Utc>,
    },
    /// A counselor picked up and is hearing the whisper (the caller's risk, language, time on
    /// the line) before they take the call.
    CounselorAnswered {
        /// Which counselor in the configured order (from 1).
        attempt: u32,
        number: DialNumber,
        at: DateTime<Utc>,
    },
    /// The counselor pressed 1: from now on the caller is with a person.
    CounselorAccepted {
        attempt: u32,
        number: DialNumber,
        at: DateTime<Utc>,
    },
    /// The counselor did not take the call; the caller is offered the next one.
    CounselorDeclined {
        attempt: u32,
        number: DialNumber,
        at: DateTime<Utc>,
    },
    /// A `<Dial>` ended (its action webhook): who it rang and how it went.
    DialEnded {
        line: DialedLine,
        /// For a counselor, which in the configured order (from 1); 0 for the crisis line.
        attempt: u32,
        number: DialNumber,
        result: DialResult,
        /// How long the caller talked with the person (`DialCallDuration`), when they did.
        talk_secs: Option<u32>,
        at: DateTime<Utc>,
    },
    /// A callback arrived too late to change anything.
    LateCallbackReceived {
        callback: LateCallback,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for CallEvent {
    fn event_type(&self) -> String {
        match self {
            Self::CallStarted { .. } => "CallStarted",
            Self::RecordingReceived { .. } => "RecordingReceived",
            Self::ResponsePlayed { .. } => "ResponsePlayed",
            Self::CallerChose { .. } => "CallerChose",
            Self::Escalated { .. } => "Escalated",
            Self::StatusChanged { .. } => "StatusChanged",
            Self::Completed { .. } => "Completed",
            Self::TranscriptionReceived { .. } => "TranscriptionReceived",
            Self::EarlyTranscriptionReceived { .. } => "EarlyTranscriptionReceived",
            Self::Analyzed { .. } => "Analyzed",
            Self::ProcessingFailed { .. } => "ProcessingFailed",
            Self::DirectQuestionAsked { .. } => "DirectQuestionAsked",
            Self::DirectQuestionAnswered { .. } => "DirectQuestionAnswered",
            Self::UtteranceScreened { .. } => "UtteranceScreened",
            Self::LateCallbackReceived { .. } => "LateCallbackReceived",
            Self::SpeechReceived { .. } => "SpeechReceived",
            Self::AnswerDeferred { .. } => "AnswerDeferred",
            Self::LanguageChosen { .. } => "LanguageChosen",
            Self::RelaySessionStarted { .. } => "RelaySessionStarted",
            Self::ReplyInterrupted { .. } => "ReplyInterrupted",
            Self::RelaySessionEnded { .. } => "RelaySessionEnded",
            Self::CallRecordingReceived { .. } => "CallRecordingReceived",
            Self::CallRecordingKept { .. } => "CallRecordingKept",
            Self::CounselorAnswered { .. } => "CounselorAnswered",
            Self::CounselorAccepted { .. } => "CounselorAccepted",
            Self::CounselorDeclined { .. } => "CounselorDeclined",
            Self::DialEnded { .. } => "DialEnded",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}
