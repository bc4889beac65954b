//! A call's aggregate as it stood after any of its events, replayed from the event store: what
//! auditors ask for when they want to see what the service knew at a given moment.

use cqrs_es::Aggregate;
use domain::{Call, CallEvent, CallId};
use sqlx::PgPool;

use crate::event_store::audit;

/// The call after event `at` of its `of`.
#[derive(Debug, Clone)]
pub struct ReplayedCall {
    pub at: i64,
    pub of: i64,
    pub call: Call,
}

/// Why a call could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayCallError {
    #[error("no such call")]
    UnknownCall,
    #[error("the call has {last} events")]
    Beyond { last: i64 },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("an event could not be read: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Call `id` replayed up to event `at` (its last event when `None`).
pub async fn replay_call(
    pool: &PgPool,
    id: CallId,
    at: Option<i64>,
) -> Result<ReplayedCall, ReplayCallError> {
    let events = audit::history(pool, &id.to_string()).await?;
    let last = events
        .last()
        .map(|e| e.sequence)
        .ok_or(ReplayCallError::UnknownCall)?;
    let at = at.unwrap_or(last);
    if at > last {
        return Err(ReplayCallError::Beyond { last });
    }
    let mut call = Call::default();
    for event in events.into_iter().take_while(|e| e.sequence <= at) {
        let event: CallEvent = serde_json::from_value(event.payload)?;
        call.apply(event);
    }
    Ok(ReplayedCall { at, of: last, call })
}
