//! Commands: one per webhook (and one per escalation path). Times and targets come in on the
//! command so that the aggregate stays pure.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::choice::Choice;
use crate::ids::{AccountSid, CallSid, RecordingSid};
use crate::phone::{CallerId, DialNumber};
use crate::status::CallStatus;

use crate::risk::Language;

use super::events::{
    Analysis, DialResult, DialedLine, EscalationReason, LanguageChoice, PlayedVia, Prompt,
    RecordingUrl, SpeechSource, Stage,
};

/// The incoming-call webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartCall {
    pub call_sid: CallSid,
    pub account_sid: AccountSid,
    pub from: CallerId,
    pub to: String,
    pub direction: String,
    pub at: DateTime<Utc>,
}

/// The `<Record action>` webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiveRecording {
    pub call_sid: CallSid,
    pub recording_sid: RecordingSid,
    pub recording_url: RecordingUrl,
    pub duration_secs: Option<u32>,
    /// The key that ended the recording; `0` asks for a counselor.
    pub digits: Option<String>,
    /// Who to connect the caller to if the recording was ended with 0.
    pub counselor_line: DialNumber,
    pub at: DateTime<Utc>,
}

/// Play a turn's response (continue webhook, or the pipeline's REST update).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlayResponse {
    /// The turn to play; `None` for the current one. A turn the caller has moved on from is
    /// never played.
    pub turn: Option<u32>,
    pub via: PlayedVia,
    /// Who the caller is connected to when the turn's answer is a person: the escalation is
    /// recorded by this same command, so no other path can see the answer without it.
    pub counselor_line: DialNumber,
    pub at: DateTime<Utc>,
}

/// The `<Gather>` action: the caller's choice after a reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordChoice {
    pub choice: Choice,
    /// The turn whose prompt the choice answers, when its URL names it (`?turn=N`, signed
    /// with the URL): a choice for an earlier turn is a replay, and changes nothing.
    #[serde(default)]
    pub turn: Option<u32>,
    pub digits: Option<String>,
    pub speech: Option<String>,
    /// Who to connect the caller to if they asked for a human.
    pub counselor_line: DialNumber,
    pub at: DateTime<Utc>,
}

/// Send the caller to a human for a reason other than their own choice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Escalate {
    pub reason: EscalationReason,
    pub target: DialNumber,
    /// Record nothing if the caller was already sent to a person by any path: automation that
    /// acts on its own (a late analysis, a failed turn) dials only when it recorded the escalation.
    pub unless_escalated: bool,
    pub at: DateTime<Utc>,
}

/// The status callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateStatus {
    pub call_sid: CallSid,
    pub status: CallStatus,
    pub sequence_number: Option<u32>,
    pub duration_secs: Option<u32>,
    pub at: DateTime<Utc>,
}

/// Twilio's transcription callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiveTranscription {
    pub recording_sid: RecordingSid,
    pub text: String,
    pub completed: bool,
    pub at: DateTime<Utc>,
}

/// The pipeline's result for a turn.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordAnalysis {
    pub turn: u32,
    pub analysis: Analysis,
    pub at: DateTime<Utc>,
}

/// A stage of a turn failed for good.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordFailure {
    pub turn: u32,
    pub stage: Stage,
    pub error_class: String,
    pub at: DateTime<Utc>,
}

/// The caller's answer to the direct question (the `<Gather>` after the first reply).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnswerQuestion {
    pub digits: Option<String>,
    pub speech: Option<String>,
    /// Who to connect the caller to if the answer is anything but a clear no.
    pub counselor_line: DialNumber,
    pub at: DateTime<Utc>,
}

/// Words said at a prompt that were not one of its choices: screened like a turn.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HearUtterance {
    pub prompt: Prompt,
    pub text: String,
    /// Who to connect the caller to if the words show any sign of risk.
    pub counselor_line: DialNumber,
    pub at: DateTime<Utc>,
}

/// What the webhook (or the live session) has for the caller's words when it records them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SpeechAnswer {
    /// The turn was understood and answered at once: the answer is played by this same command.
    Answered(Analysis),
    /// The answer was not ready within the budget: the caller is held and the pipeline answers.
    Deferred,
    /// The live session streams the answer; `AnswerTurn` records it when it was sent.
    Streaming,
}

/// Words Twilio recognised: a `<Gather input="speech">` action, or a final relay `prompt`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiveSpeech {
    pub call_sid: CallSid,
    /// What Twilio heard; never empty (silence is not a turn). Never logged.
    pub text: String,
    pub confidence: Option<f64>,
    pub source: SpeechSource,
    pub answer: SpeechAnswer,
    /// The language the words were heard in, when it is known apart from an answered analysis
    /// (the live session's screening, or Twilio's own detection). A first turn heard in Spanish
    /// switches the call to Spanish.
    pub heard_in: Option<Language>,
    /// Who the caller is connected to when the answer is a person.
    pub counselor_line: DialNumber,
    pub at: DateTime<Utc>,
}

/// The live session's answer to turn `turn`, once it was streamed to the caller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnswerTurn {
    pub turn: u32,
    pub analysis: Analysis,
    pub via: PlayedVia,
    /// The caller spoke over the reply: what was to follow it (the direct question) was never
    /// heard, so it is not recorded as asked; the next reply asks it.
    pub cut_off: bool,
    pub counselor_line: DialNumber,
    pub at: DateTime<Utc>,
}

/// The caller chose, or was heard speaking, a language.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChooseLanguage {
    pub language: Language,
    pub how: LanguageChoice,
    pub at: DateTime<Utc>,
}

/// ConversationRelay's `setup`: the call's live session opened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartRelaySession {
    pub session_id: String,
    pub at: DateTime<Utc>,
}

/// ConversationRelay's `interrupt`: the caller spoke over the reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InterruptReply {
    /// What the caller heard of the reply. Never logged.
    pub heard: String,
    pub duration_ms: Option<u64>,
    pub at: DateTime<Utc>,
}

/// The `<Connect action>` webhook: the live session is over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndRelaySession {
    pub status: String,
    pub error_code: Option<String>,
    pub handoff: Option<String>,
    /// Who the caller is connected to when the session ended without a way on.
    pub counselor_line: DialNumber,
    pub at: DateTime<Utc>,
}

/// The recording status callback of the call's own recording.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiveCallRecording {
    pub call_sid: CallSid,
    pub recording_sid: RecordingSid,
    pub recording_url: RecordingUrl,
    pub duration_secs: Option<u32>,
    pub status: String,
    pub at: DateTime<Utc>,
}

/// A recording of the call was copied into the audio store under `key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeepCallRecording {
    pub recording_sid: RecordingSid,
    pub key: String,
    pub at: DateTime<Utc>,
}

/// A `<Dial>` Hotline served ended (its action webhook).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndDial {
    pub line: DialedLine,
    /// For a counselor, which in the configured order (from 1); 0 for the crisis line.
    pub attempt: u32,
    pub number: DialNumber,
    pub result: DialResult,
    pub talk_secs: Option<u32>,
    pub at: DateTime<Utc>,
}

/// A counselor picked up: the whisper is about to play to them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnswerWhisper {
    pub attempt: u32,
    pub number: DialNumber,
    pub at: DateTime<Utc>,
}

/// The counselor answered the whisper: 1 takes the call, anything else passes it on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecideWhisper {
    pub attempt: u32,
    pub number: DialNumber,
    pub accepted: bool,
    pub at: DateTime<Utc>,
}

/// Every command a call accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CallCommand {
    StartCall(StartCall),
    ReceiveRecording(ReceiveRecording),
    PlayResponse(PlayResponse),
    RecordChoice(RecordChoice),
    Escalate(Escalate),
    UpdateStatus(UpdateStatus),
    ReceiveTranscription(ReceiveTranscription),
    RecordAnalysis(RecordAnalysis),
    RecordFailure(RecordFailure),
    AnswerQuestion(AnswerQuestion),
    HearUtterance(HearUtterance),
    ReceiveSpeech(ReceiveSpeech),
    AnswerTurn(AnswerTurn),
    ChooseLanguage(ChooseLanguage),
    StartRelaySession(StartRelaySession),
    InterruptReply(InterruptReply),
    EndRelaySession(EndRelaySession),
    ReceiveCallRecording(ReceiveCallRecording),
    KeepCallRecording(KeepCallRecording),
    EndDial(EndDial),
    AnswerWhisper(AnswerWhisper),
    DecideWhisper(DecideWhisper),
    /// Several commands recorded as one: all their events in one append, or none. A webhook
    /// answered while the store was away is replayed from the spool this way, its own command
    /// with the escalation its caller heard, so that nothing (the pipeline above all) can act on
    /// the one without the other.
    Together(Vec<CallCommand>),
}

impl CallCommand {
    /// The command's name, as its events' metadata records it (`command`).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::StartCall(_) => "StartCall",
            Self::ReceiveRecording(_) => "ReceiveRecording",
            Self::PlayResponse(_) => "PlayResponse",
            Self::RecordChoice(_) => "RecordChoice",
            Self::Escalate(_) => "Escalate",
            Self::UpdateStatus(_) => "UpdateStatus",
            Self::ReceiveTranscription(_) => "ReceiveTranscription",
            Self::RecordAnalysis(_) => "RecordAnalysis",
            Self::RecordFailure(_) => "RecordFailure",
            Self::AnswerQuestion(_) => "AnswerQuestion",
            Self::HearUtterance(_) => "HearUtterance",
            Self::ReceiveSpeech(_) => "ReceiveSpeech",
            Self::AnswerTurn(_) => "AnswerTurn",
            Self::ChooseLanguage(_) => "ChooseLanguage",
            Self::StartRelaySession(_) => "StartRelaySession",
            Self::InterruptReply(_) => "InterruptReply",
            Self::EndRelaySession(_) => "EndRelaySession",
            Self::ReceiveCallRecording(_) => "ReceiveCallRecording",
            Self::KeepCallRecording(_) => "KeepCallRecording",
            Self::EndDial(_) => "EndDial",
            Self::AnswerWhisper(_) => "AnswerWhisper",
            Self::DecideWhisper(_) => "DecideWhisper",
            Self::Together(_) => "Together",
        }
    }

    /// Whether this command normally comes first in a call's life (the incoming-call webhook), so
    /// the call it names is most likely not stored yet.
    #[must_use]
    pub fn opens_call(&self) -> bool {
        match self {
            Self::StartCall(_) => true,
            Self::Together(commands) => commands.first().is_some_and(Self::opens_call),
            _ => false,
        }
    }
}
