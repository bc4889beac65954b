//! Hotline's use cases. Each Twilio webhook is one use case here: it turns the webhook's parameters
//! into a command on the `Call` aggregate, dispatches it through any `cqrs_es::EventStore`, and says
//! what the caller should hear next as a `CallAnswer`. How that answer is written (TwiML) and how
//! events are stored (PostgreSQL) are the adapters' business.
#![forbid(unsafe_code)]

pub mod answer;
pub mod auth;
pub mod breaker;
pub mod calls;
pub mod deadline;
pub mod dispatch;
pub mod error;
pub mod guarded;
pub mod metadata;
pub mod operations;
pub mod pipeline;
pub mod ports;
pub mod responder;
pub mod spool;
pub mod views;

pub use answer::{CallAnswer, Spoken};
pub use calls::{
    after_dial, CallRecordingReport, CallService, ChoiceInput, DialOutcome, DialReport, DialStatus,
    DialedLine, IncomingCall, Lines, RecordingDone, SpeechInput, StatusReport, TranscriptionReport,
    WhisperAnswer, COMMAND_DEADLINE, MIN_CONFIDENCE, SPEECH_BUDGET,
};
pub use dispatch::CommandDispatcher;
pub use error::AppError;
pub use metadata::CommandMetadata;
