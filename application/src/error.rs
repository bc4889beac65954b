//! The application's one error type.

use cqrs_es::AggregateError;
use domain::CallError;

/// Why a use case could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The command broke a rule of the call.
    #[error(transparent)]
    Rule(#[from] CallError),
    /// The webhook named one call in its URL and another in its body.
    #[error("the webhook's CallSid does not belong to the call in its URL")]
    WrongCall,
    /// Concurrent writers kept winning the race for this call, even after retries.
    #[error("the call was changed concurrently {attempts} times in a row")]
    Contended { attempts: u32 },
    /// The event store could not be reached or failed; the store's error is kept as the source.
    #[error("the event store failed: {0}")]
    Store(#[source] AggregateError<CallError>),
    /// The store failed moments ago, so this command was not attempted (see `breaker`).
    #[error("the event store failed moments ago; not attempted")]
    StoreSkipped,
    /// The command took longer than a webhook may wait.
    #[error("the event store did not answer in time")]
    TimedOut,
    /// The store could not take the command (the error inside says why), so it was kept in the
    /// spool, to be recorded when the store is back.
    #[error("kept in the spool: {0}")]
    Spooled(Box<AppError>),
    /// The spool itself could not be read or written.
    #[error("the spool failed: {0}")]
    SpoolFailed(String),
}
