//! Command dispatch over any cqrs-es `EventStore`, with bounded retries on write conflicts.
//!
//! This does what `CqrsFramework::execute_with_metadata` does (load, handle, commit) and returns the
//! call's state after the command, because a webhook's answer depends on it (which turn is being
//! played, whether the call already ended). In-process query dispatch is deliberately absent: read
//! models are durable subscriptions over the event store, never a side effect of the command path.

use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventStore};
use domain::{Call, CallCommand, CallId};
use rand::Rng;

use crate::error::AppError;
use crate::metadata::CommandMetadata;

/// How many times a command is tried when another instance appended to the same call first.
const MAX_ATTEMPTS: u32 = 10;

/// Commands on one call are serialised inside this process by one of these locks (chosen by the
/// call id), so concurrent webhooks of one call never race each other here; only writers in other
/// instances can conflict, and those conflicts are retried. Striping bounds the memory whatever the
/// number of calls; two calls sharing a stripe merely wait for each other's short command.
const LOCK_STRIPES: usize = 256;

/// Executes commands on calls.
pub struct CommandDispatcher<ES> {
    store: ES,
    locks: Vec<tokio::sync::Mutex<()>>,
}

impl<ES> std::fmt::Debug for CommandDispatcher<ES> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandDispatcher").finish_non_exhaustive()
    }
}

impl<ES: EventStore<Call>> CommandDispatcher<ES> {
    /// A dispatcher over `store`.
    pub fn new(store: ES) -> Self {
        let locks = (0..LOCK_STRIPES)
            .map(|_| tokio::sync::Mutex::new(()))
            .collect();
        Self { store, locks }
    }

    fn lock_for(&self, id: CallId) -> &tokio::sync::Mutex<()> {
        // A v5 UUID's low bits are uniformly distributed.
        let index = (id.as_uuid().as_u128() % LOCK_STRIPES as u128) as usize;
        &self.locks[index]
    }

    /// Runs `command` on the call `id` and returns the call as it is afterwards. A conflict with a
    /// writer in another instance reloads the call and tries again, up to `MAX_ATTEMPTS` times with
    /// exponential backoff and full jitter; `handle` has no side effects, so a retry is always safe.
    #[tracing::instrument(skip_all, fields(call_id = %id))]
    pub async fn execute(
        &self,
        id: CallId,
        command: CallCommand,
        metadata: &CommandMetadata,
    ) -> Result<Call, AppError> {
        self.execute_counting(id, command, metadata)
            .await
            .map(|(call, _)| call)
    }

    /// As `execute`, also saying how many events this command appended: zero when it changed
    /// nothing (a replay, a claim someone else holds). A claim is this command's only if it
    /// appended its event.
    pub async fn execute_counting(
        &self,
        id: CallId,
        command: CallCommand,
        metadata: &CommandMetadata,
    ) -> Result<(Call, usize), AppError> {
        let aggregate_id = id.to_string();
        let _serialised = self.lock_for(id).lock().await;
        for attempt in 1..=MAX_ATTEMPTS {
            match self
                .try_once(&aggregate_id, command.clone(), metadata)
                .await
            {
                Err(AggregateError::AggregateConflict) if attempt < MAX_ATTEMPTS => {
                    let ceiling = 2u64.pow(attempt.min(7));
                    let pause = rand::rng().random_range(0..=ceiling);
                    tracing::debug!(attempt, "write conflict, retrying");
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(AggregateError::AggregateConflict) => {
                    return Err(AppError::Contended { attempts: attempt })
                }
                Err(AggregateError::UserError(rule)) => return Err(AppError::Rule(rule)),
                Err(other) => return Err(AppError::Store(other.to_string())),
                Ok(call) => return Ok(call),
            }
        }
        Err(AppError::Contended {
            attempts: MAX_ATTEMPTS,
        })
    }

    async fn try_once(
        &self,
        aggregate_id: &str,
        command: CallCommand,
        metadata: &CommandMetadata,
    ) -> Result<(Call, usize), AggregateError<domain::CallError>> {
        let mut context = self.store.load_aggregate(aggregate_id).await?;
        let sink = EventSink::default();
        context
            .aggregate()
            .handle(command, &(), &sink)
            .await
            .map_err(AggregateError::UserError)?;
        let state = context.aggregate().clone();
        let events = sink.collect().await;
        let appended = events.len();
        if appended > 0 {
            self.store
                .commit(events, context, metadata.to_map())
                .await?;
        }
        Ok((state, appended))
    }

    /// The call's current state, for answers that only read.
    pub async fn load(&self, id: CallId) -> Result<Call, AppError> {
        let mut context = self
            .store
            .load_aggregate(&id.to_string())
            .await
            .map_err(|e| AppError::Store(e.to_string()))?;
        Ok(context.aggregate().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use cqrs_es::mem_store::MemStore;
    use domain::call::StartCall;
    use domain::{AccountSid, CallSid, CallerId};

    fn metadata() -> CommandMetadata {
        CommandMetadata {
            request_id: "req-1".into(),
            idempotency_token: Some("tok".into()),
            actor: "twilio".into(),
            received_at: Utc::now(),
        }
    }

    fn start(sid: &CallSid) -> CallCommand {
        CallCommand::StartCall(StartCall {
            call_sid: sid.clone(),
            account_sid: AccountSid::parse("AC0123456789abcdef0123456789abcdef").expect("valid"),
            from: CallerId::new("+14155550123"),
            to: "+15005550006".into(),
            direction: "inbound".into(),
            at: Utc::now(),
        })
    }

    #[tokio::test]
    async fn executing_returns_the_state_after_the_command_and_stores_metadata() {
        let store = MemStore::<Call>::default();
        let dispatcher = CommandDispatcher::new(store.clone());
        let sid = CallSid::parse("CA0123456789abcdef0123456789abcdef").expect("valid");
        let id = CallId::for_call_sid(&sid);
        let call = dispatcher
            .execute(id, start(&sid), &metadata())
            .await
            .expect("runs");
        assert!(call.is_started());
        // A replay of the same webhook stores nothing more.
        dispatcher
            .execute(id, start(&sid), &metadata())
            .await
            .expect("runs");
        let events = store.load_events(&id.to_string()).await.expect("loads");
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0]
                .metadata
                .get("twilio_idempotency_token")
                .map(String::as_str),
            Some("tok")
        );
        assert_eq!(
            events[0].metadata.get("actor").map(String::as_str),
            Some("twilio")
        );
    }
}
