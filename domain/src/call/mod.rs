//! The `Call` aggregate: one phone call, from the first webhook to the last status callback.
//!
//! Every Twilio webhook becomes one command here. The rules a crisis line needs from its record of a
//! call are enforced in `handle`, and each has a given/when/then test in `tests`:
//! - the same webhook twice records nothing new (Twilio retries and duplicates callbacks);
//! - status never moves backwards (`SequenceNumber`), and nothing changes after the call ended: late
//!   callbacks are kept for the record but change no state;
//! - each turn's response is played at most once, whichever path claims it first;
//! - asking for a human is always recorded together with the escalation it causes;
//! - the direct question about suicide is asked once, after a first turn with no sign of risk,
//!   and anything but a clear no is recorded with an escalation;
//! - risk only rises: once a person was warranted, no later turn gets an automated reply;
//! - once the caller was sent to a person, no automation (a REST update) touches the call;
//! - a live session that ends without a way on (a dropped socket) puts the caller through to a
//!   person;
//! - Spanish heard in the first words, or key 9 at the greeting, switches the call to Spanish;
//! - the recording of the whole call is kept even when it arrives after the call ended.

mod aggregate;
mod commands;
mod events;
#[cfg(test)]
mod tests;

pub use aggregate::{Call, Question, Turn, TurnRecording, Whisper, REST_REPLY_WINDOW};
pub use commands::{
    AnswerQuestion, AnswerTurn, AnswerWhisper, CallCommand, ChooseLanguage, DecideWhisper, EndDial,
    EndRelaySession, Escalate, HearUtterance, InterruptReply, KeepCallRecording, PlayResponse,
    ReceiveCallRecording, ReceiveRecording, ReceiveSpeech, ReceiveTranscription, RecordAnalysis,
    RecordChoice, RecordFailure, SpeechAnswer, StartCall, StartRelaySession, UpdateStatus,
};
pub use events::{
    Analysis, CallEvent, DialResult, DialedLine, EscalationReason, LanguageChoice, LateCallback,
    PlayedVia, Prompt, RecordingUrl, RecordingUrlError, ReplySource, SpeechSource, Stage,
    StageTimings,
};

/// A rule of the call was broken by a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// A webhook other than the first (or a status callback) arrived for a call we never answered.
    #[error("the call has not started: no incoming-call webhook was recorded for it")]
    NotStarted,
    /// A webhook's CallSid is not the call its URL names.
    #[error("the webhook's CallSid does not belong to this call")]
    CallSidMismatch,
    /// The continue webhook came before anything was recorded.
    #[error("there is no response to play: the caller has not been recorded yet")]
    NothingToPlay,
    /// A transcription named a recording the call does not have.
    #[error("the call has no recording with that RecordingSid")]
    UnknownRecording,
    /// A command named a turn the call does not have.
    #[error("the call has no turn {0}")]
    UnknownTurn(u32),
    /// An answer to the direct question came before it was asked.
    #[error("the direct question was not asked on this call")]
    QuestionNotAsked,
    /// A turn's answer would be played after the caller moved on to a later turn.
    #[error("turn {0} is over: the caller has moved on")]
    StaleTurn(u32),
    /// A live-session message came for a call that has no live session.
    #[error("the call has no ConversationRelay session")]
    NoRelaySession,
    /// A counselor's answer to a whisper that was never played to them.
    #[error("no whisper was played to that counselor")]
    NoWhisper,
}
