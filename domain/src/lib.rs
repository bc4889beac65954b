//! Hotline's core: the `Call` aggregate, its commands and events, the value types that cross the
//! edge (`CallSid`, `RecordingSid`, `CallerId`, `DialNumber`, …) and the vetted words the caller hears.
//!
//! Pure by design: no I/O, no clock, no async runtime. Time and identifiers come in on commands, so
//! every rule here can be tested with given/when/then and nothing else.
#![forbid(unsafe_code)]

pub mod call;
pub mod choice;
#[cfg(any(test, feature = "test-fixtures"))]
pub mod fixtures;
pub mod ids;
mod language;
pub mod phone;
pub mod risk;
pub mod script;
pub mod status;

pub use call::{Call, CallCommand, CallError, CallEvent};
pub use choice::Choice;
pub use ids::{AccountSid, CallId, CallSid, RecordingSid};
pub use phone::{CallerId, DialNumber};
pub use risk::Language;
pub use status::CallStatus;
