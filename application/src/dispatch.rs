//! Command dispatch over any cqrs-es `EventStore`, with bounded retries on write conflicts.
//!
//! This does what `CqrsFramework::execute_with_metadata` does (load, handle, commit) and returns the
//! call's state after the command, because a webhook's answer depends on it (which turn is being
//! played, whether the call already ended). In-process query dispatch is deliberately absent: read
//! models are durable subscriptions over the event store, never a side effect of the command path.

use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::EventStoreAggregateContext;
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

/// How many calls each stripe keeps the state of, when the dispatcher caches: 256 × 16 = 4,096
/// calls in progress, far more than a line has at once.
const CACHED_PER_STRIPE: usize = 16;

/// A context an event store can resume from a call's state and sequence, so that a command can
/// skip loading a call whose state this process already holds.
pub trait Resume: AggregateContext<Call> + Sized {
    /// The context of `aggregate_id` holding `aggregate` after its event `sequence`.
    fn resume(aggregate_id: &str, aggregate: Call, sequence: usize) -> Self;
    /// The last event the context's state includes.
    fn sequence(&self) -> usize;
}

impl Resume for EventStoreAggregateContext<Call> {
    fn resume(aggregate_id: &str, aggregate: Call, sequence: usize) -> Self {
        Self {
            aggregate_id: aggregate_id.to_owned(),
            aggregate,
            current_sequence: sequence,
            current_snapshot: None,
        }
    }

    fn sequence(&self) -> usize {
        self.current_sequence
    }
}

/// What a caching dispatcher needs of its store's contexts (`Resume`, as plain functions so that
/// the uncached dispatcher asks nothing of its store).
struct Resuming<AC> {
    resume: fn(&str, Call, usize) -> AC,
    sequence: fn(&AC) -> usize,
}

/// A call's state after its event `sequence`, as this process last stored or loaded it.
#[derive(Clone)]
struct Known {
    id: CallId,
    call: Call,
    sequence: usize,
    used: u64,
    /// The requests the call's events came from, when this process knows them all (`None`
    /// when the state was loaded only to be read).
    done: Option<Done>,
}

/// The metadata key naming the command an event came from.
pub const COMMAND: &str = "command";

/// The requests a call's events came from (Twilio's idempotency token, and the command), the
/// latest `REMEMBERED` of them. A request seen before is Twilio retrying it, or someone
/// replaying it: either way it must not act twice. Keyed by command too, because one webhook may
/// run two commands under one token (a dial's end, then the escalation after the last
/// counselor).
#[derive(Clone, Default)]
struct Done(Vec<(String, String)>);

/// How many requests a call's cached state remembers (a call has a few dozen). Past it, the
/// state no longer claims to know them all, and a command with a token asks the store.
const REMEMBERED: usize = 64;

impl Done {
    /// The requests stored `events` came from.
    fn of(events: &[cqrs_es::EventEnvelope<Call>]) -> Self {
        let mut done = Self::default();
        for event in events {
            if let (Some(token), Some(command)) = (
                event.metadata.get(crate::metadata::IDEMPOTENCY_TOKEN),
                event.metadata.get(COMMAND),
            ) {
                if !done.contains(token, command) {
                    done.add(token, command);
                }
            }
        }
        done
    }

    fn contains(&self, token: &str, command: &str) -> bool {
        self.0.iter().any(|(t, c)| t == token && c == command)
    }

    fn add(&mut self, token: &str, command: &str) {
        self.0.push((token.to_owned(), command.to_owned()));
    }

    /// What a cached state may keep of these: all of them, or (past `REMEMBERED`) nothing,
    /// never a part that would pass for the whole.
    fn kept(self) -> Option<Self> {
        (self.0.len() <= REMEMBERED).then_some(self)
    }
}

/// The request a command runs for, if Twilio named it: its idempotency token and the command.
fn request_of<'a>(
    command: &CallCommand,
    metadata: &'a CommandMetadata,
) -> Option<(&'a str, &'static str)> {
    metadata
        .idempotency_token
        .as_deref()
        .map(|token| (token, command.name()))
}

/// One lock stripe: the lock, and the states it caches.
#[derive(Default)]
struct Stripe {
    known: Vec<Known>,
    clock: u64,
}

impl Stripe {
    fn take(&mut self, id: CallId) -> Option<Known> {
        let index = self.known.iter().position(|k| k.id == id)?;
        Some(self.known.swap_remove(index))
    }

    fn keep(&mut self, id: CallId, call: Call, sequence: usize, done: Option<Done>) {
        self.forget(id);
        // An ended call takes no more commands worth caching for.
        if call.ended().is_some() {
            return;
        }
        if self.known.len() >= CACHED_PER_STRIPE {
            if let Some(oldest) = (0..self.known.len()).min_by_key(|&i| self.known[i].used) {
                self.known.swap_remove(oldest);
            }
        }
        self.clock += 1;
        self.known.push(Known {
            id,
            call,
            sequence,
            used: self.clock,
            done,
        });
    }

    fn forget(&mut self, id: CallId) {
        self.known.retain(|k| k.id != id);
    }
}

/// Executes commands on calls.
///
/// A caching dispatcher (`cached`) keeps the state each command leaves a call in, and runs the
/// call's next command on it without loading the call: one round trip (the append) instead of
/// two. The cache cannot serve stale state, because it is fenced by the store's optimistic lock.
/// Events are appended at consecutive sequences and never change, so an append at `n + 1`
/// succeeds only if the call's stored events are exactly the `n` the cached state was folded
/// from. Every other outcome on cached state (a conflict, a command that appends nothing, a rule
/// refused, an error) may be an answer from stale state, so it is discarded and the command runs
/// on a fresh load. Another instance or the pipeline writing to the call costs one failed append.
pub struct CommandDispatcher<ES: EventStore<Call>> {
    store: ES,
    stripes: Vec<tokio::sync::Mutex<Stripe>>,
    resuming: Option<Resuming<ES::AC>>,
}

impl<ES: EventStore<Call>> std::fmt::Debug for CommandDispatcher<ES> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandDispatcher")
            .field("cached", &self.resuming.is_some())
            .finish_non_exhaustive()
    }
}

/// How a command went on one attempt.
// A return value moved once per command: boxing the call would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Attempt {
    /// It ran on the stored state: the call after it, and how many events it appended.
    Done(Call, usize),
    /// It ran on cached state and must run again on a fresh load.
    Stale,
}

impl<ES: EventStore<Call>> CommandDispatcher<ES>
where
    ES::AC: Resume,
{
    /// This dispatcher, caching from now on: it keeps the state of calls in progress (see the
    /// type's documentation). Only for stores whose appends fail on a taken sequence, as
    /// postgres-es's do (cqrs-es's `MemStore` does not check).
    #[must_use]
    pub fn caching(mut self) -> Self {
        self.resuming = Some(Resuming {
            resume: <ES::AC as Resume>::resume,
            sequence: <ES::AC as Resume>::sequence,
        });
        self
    }
}

impl<ES: EventStore<Call>> CommandDispatcher<ES> {
    /// A dispatcher over `store` that loads the call for every command.
    pub fn new(store: ES) -> Self {
        let stripes = (0..LOCK_STRIPES)
            .map(|_| tokio::sync::Mutex::new(Stripe::default()))
            .collect();
        Self {
            store,
            stripes,
            resuming: None,
        }
    }

    fn stripe_for(&self, id: CallId) -> &tokio::sync::Mutex<Stripe> {
        // A v5 UUID's low bits are uniformly distributed.
        let index = (id.as_uuid().as_u128() % LOCK_STRIPES as u128) as usize;
        &self.stripes[index]
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
        // On the heap: the command's future holds several copies of a call's state, and the
        // webhooks that await it (a live session's above all) are deep already; on a worker
        // thread's stack they overflowed it.
        Box::pin(self.run_counting(id, command, metadata)).await
    }

    async fn run_counting(
        &self,
        id: CallId,
        command: CallCommand,
        metadata: &CommandMetadata,
    ) -> Result<(Call, usize), AppError> {
        let aggregate_id = id.to_string();
        let request = request_of(&command, metadata);
        let mut stripe = self.stripe_for(id).lock().await;
        if let Some(resuming) = &self.resuming {
            let known = stripe.take(id).or_else(|| {
                // A call's first command need not load a call that does not exist yet; if it
                // does exist (Twilio retried, or another instance took the webhook), the append
                // conflicts and the command runs again on the stored call.
                command.opens_call().then(|| Known {
                    id,
                    call: Call::default(),
                    sequence: 0,
                    used: 0,
                    done: Some(Done::default()),
                })
            });
            // Cached state whose requests are not known (it was loaded to be read) cannot tell a
            // request seen before: such a command runs on a fresh load, which asks the store.
            let known = known.filter(|k| request.is_none() || k.done.is_some());
            if let Some(known) = known {
                // Unknown stays unknown: a command without a token must not leave the cache
                // claiming to know every request the call has seen.
                let mut done = known.done;
                if request.is_some_and(|(token, name)| {
                    done.as_ref().is_some_and(|done| done.contains(token, name))
                }) {
                    tracing::info!(
                        command = command.name(),
                        "a request already on record came again; it changes nothing"
                    );
                    let call = known.call.clone();
                    stripe.keep(id, known.call, known.sequence, done.and_then(Done::kept));
                    return Ok((call, 0));
                }
                let context = (resuming.resume)(&aggregate_id, known.call, known.sequence);
                if let Ok(Attempt::Done(call, appended)) = self
                    .try_once(context, command.clone(), metadata, true)
                    .await
                {
                    if let (Some(done), Some((token, name)), true) =
                        (done.as_mut(), request, appended > 0)
                    {
                        done.add(token, name);
                    }
                    stripe.keep(
                        id,
                        call.clone(),
                        known.sequence + appended,
                        done.and_then(Done::kept),
                    );
                    return Ok((call, appended));
                }
            }
        }
        for attempt in 1..=MAX_ATTEMPTS {
            // Whether the stored events hold this request already (Twilio's retry, or a replay,
            // maybe taken by another instance): then it changes nothing, and is answered from
            // the call as it stands.
            let mut done = None;
            // A caching store's context is resumed from the very events the check read, so that
            // nothing can land between the check and the command; otherwise it is loaded again.
            let mut checked = None;
            if let Some((token, name)) = request {
                let events = self
                    .store
                    .load_events(&aggregate_id)
                    .await
                    .map_err(AppError::Store)?;
                let on_record = Done::of(&events);
                let sequence = events.last().map_or(0, |event| event.sequence);
                let mut call = Call::default();
                for event in events {
                    call.apply(event.payload);
                }
                if on_record.contains(token, name) {
                    tracing::info!(
                        command = name,
                        "a request already on record came again; it changes nothing"
                    );
                    return Ok((call, 0));
                }
                done = Some(on_record);
                checked = self
                    .resuming
                    .as_ref()
                    .map(|resuming| (resuming.resume)(&aggregate_id, call, sequence));
            }
            let context = match checked {
                Some(context) => Ok(context),
                None => self.store.load_aggregate(&aggregate_id).await,
            };
            let outcome = match context {
                Ok(context) => {
                    let sequence = self.resuming.as_ref().map(|r| (r.sequence)(&context));
                    self.try_once(context, command.clone(), metadata, false)
                        .await
                        .map(|attempt| (attempt, sequence))
                }
                Err(error) => Err(error),
            };
            match outcome {
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
                Err(other) => return Err(AppError::Store(other)),
                Ok((Attempt::Done(call, appended), sequence)) => {
                    if let Some(sequence) = sequence {
                        if let (Some(done), Some((token, name)), true) =
                            (done.as_mut(), request, appended > 0)
                        {
                            done.add(token, name);
                        }
                        stripe.keep(
                            id,
                            call.clone(),
                            sequence + appended,
                            done.and_then(Done::kept),
                        );
                    }
                    return Ok((call, appended));
                }
                // Only a cached attempt is ever stale; were a loaded one, loading again is right.
                Ok((Attempt::Stale, _)) => {}
            }
        }
        Err(AppError::Contended {
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Runs `command` on `context` and appends its events. On `cached` state, any outcome but
    /// a successful append is `Stale` (see the type's documentation).
    async fn try_once(
        &self,
        mut context: ES::AC,
        command: CallCommand,
        metadata: &CommandMetadata,
        cached: bool,
    ) -> Result<Attempt, AggregateError<domain::CallError>> {
        let sink = EventSink::default();
        let name = command.name();
        let handled = context.aggregate().handle(command, &(), &sink).await;
        if cached && handled.is_err() {
            return Ok(Attempt::Stale);
        }
        handled.map_err(AggregateError::UserError)?;
        // The sink applied the events to the context's call as they were written.
        let state = context.aggregate().clone();
        let events = sink.collect().await;
        let appended = events.len();
        if appended == 0 {
            return Ok(if cached {
                Attempt::Stale
            } else {
                Attempt::Done(state, 0)
            });
        }
        let mut metadata = metadata.to_map();
        metadata.insert(COMMAND.to_owned(), name.to_owned());
        match self.store.commit(events, context, metadata).await {
            Ok(_) => Ok(Attempt::Done(state, appended)),
            Err(_) if cached => Ok(Attempt::Stale),
            Err(error) => Err(error),
        }
    }

    /// The call's current state, for answers that only read. It is loaded from the store, never
    /// taken from the cache, which holds only what this process wrote or read last (and is
    /// refreshed by this load).
    /// The state this dispatcher last left call `id` in, if it keeps it, without asking the
    /// store: for what changes rarely and is safe to read a moment late (the call's language).
    pub async fn cached(&self, id: CallId) -> Option<Call> {
        self.resuming.as_ref()?;
        let stripe = self.stripe_for(id).lock().await;
        stripe
            .known
            .iter()
            .find(|k| k.id == id)
            .map(|k| k.call.clone())
    }

    pub async fn load(&self, id: CallId) -> Result<Call, AppError> {
        let Some(resuming) = &self.resuming else {
            return Ok(self.load_context(id).await?.aggregate().clone());
        };
        // What was just read is what the call's next command (a claim, usually) will run on.
        let mut stripe = self.stripe_for(id).lock().await;
        let mut context = self.load_context(id).await?;
        let call = context.aggregate().clone();
        stripe.keep(id, call.clone(), (resuming.sequence)(&context), None);
        Ok(call)
    }

    /// Whether an event of call `id` carries `value` under the metadata `key`.
    pub async fn has_event_with(
        &self,
        id: CallId,
        key: &str,
        value: &str,
    ) -> Result<bool, AppError> {
        let events = self
            .store
            .load_events(&id.to_string())
            .await
            .map_err(AppError::Store)?;
        Ok(events
            .iter()
            .any(|event| event.metadata.get(key).is_some_and(|v| v == value)))
    }

    async fn load_context(&self, id: CallId) -> Result<ES::AC, AppError> {
        self.store
            .load_aggregate(&id.to_string())
            .await
            .map_err(AppError::Store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use cqrs_es::mem_store::MemStore;
    use domain::CallSid;

    fn metadata() -> CommandMetadata {
        CommandMetadata {
            request_id: "req-1".into(),
            idempotency_token: Some("tok".into()),
            actor: "twilio".into(),
            received_at: Utc::now(),
            spool_entry: None,
        }
    }

    fn start(sid: &CallSid) -> CallCommand {
        domain::fixtures::start_call(sid, Utc::now())
    }

    fn call_id(n: u32) -> CallId {
        CallId::parse(&uuid::Uuid::from_u128(u128::from(n)).to_string()).expect("an id")
    }

    #[test]
    fn a_stripe_keeps_its_most_recently_used_calls_and_forgets_ended_ones() {
        let mut stripe = Stripe::default();
        for n in 0..=CACHED_PER_STRIPE as u32 {
            stripe.keep(call_id(n), Call::default(), 1, None);
        }
        // The first call kept was the least recently used: it made room for the last.
        assert_eq!(stripe.known.len(), CACHED_PER_STRIPE);
        assert!(stripe.take(call_id(0)).is_none());
        let last = stripe
            .take(call_id(CACHED_PER_STRIPE as u32))
            .expect("kept");
        assert_eq!(last.sequence, 1);
        // Taking a call removes it: a command runs on a copy no other command can see.
        assert!(stripe.take(call_id(CACHED_PER_STRIPE as u32)).is_none());

        // A newer state replaces the older one.
        stripe.keep(call_id(1), Call::default(), 2, None);
        stripe.keep(call_id(1), Call::default(), 3, None);
        assert_eq!(stripe.take(call_id(1)).map(|k| k.sequence), Some(3));

        // An ended call is not kept, and its older state is dropped.
        let sid = CallSid::parse("CA0123456789abcdef0123456789abcdef").expect("valid");
        let mut call = Call::default();
        call.apply(domain::fixtures::call_started(&sid, Utc::now()));
        stripe.keep(call_id(2), call.clone(), 1, None);
        assert!(
            stripe.take(call_id(2)).is_some(),
            "a call in progress is kept"
        );
        stripe.keep(call_id(2), call.clone(), 1, None);
        call.apply(domain::CallEvent::Completed {
            call_sid: sid,
            status: domain::CallStatus::parse("completed"),
            sequence_number: Some(3),
            duration_secs: Some(30),
            ended_at: Utc::now(),
        });
        stripe.keep(call_id(2), call, 2, None);
        assert!(stripe.take(call_id(2)).is_none(), "an ended call is not");
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
        assert_eq!(
            events[0].metadata.get(COMMAND).map(String::as_str),
            Some("StartCall")
        );
    }

    fn hear(text: &str) -> CallCommand {
        CallCommand::HearUtterance(domain::call::HearUtterance {
            prompt: domain::call::Prompt::Choice,
            text: text.into(),
            counselor_line: domain::DialNumber::parse("+15005550001").expect("valid"),
            at: Utc::now(),
        })
    }

    fn with_token(token: &str) -> CommandMetadata {
        CommandMetadata {
            idempotency_token: Some(token.into()),
            ..metadata()
        }
    }

    #[test]
    fn a_cached_state_keeps_all_the_requests_it_knows_or_none() {
        let mut done = Done::default();
        for n in 0..REMEMBERED {
            done.add(&format!("t{n}"), "RecordChoice");
        }
        let all = done.clone().kept().expect("all kept");
        assert!(all.contains("t0", "RecordChoice"));
        done.add("one more", "RecordChoice");
        assert!(done.kept().is_none(), "never a part passing for the whole");
    }

    #[tokio::test]
    async fn a_request_on_record_changes_nothing_when_it_comes_again_whichever_instance_takes_it() {
        let store = MemStore::<Call>::default();
        let sid = CallSid::parse("CA0123456789abcdef0123456789abcdef").expect("valid");
        let id = CallId::for_call_sid(&sid);
        let first = CommandDispatcher::new(store.clone());
        first
            .execute(id, start(&sid), &metadata())
            .await
            .expect("runs");
        let words = "I had a long day";
        for (text, token) in [(words, "t1"), ("and then some", "t2")] {
            let (_, appended) = first
                .execute_counting(id, hear(text), &with_token(token))
                .await
                .expect("runs");
            assert!(appended > 0);
        }
        let stored = store
            .load_events(&id.to_string())
            .await
            .expect("loads")
            .len();
        // The first words' request again, on this dispatcher or on one that never saw it: on
        // its own the command would be recorded again (the call heard other words since).
        for dispatcher in [&first, &CommandDispatcher::new(store.clone())] {
            let (call, appended) = dispatcher
                .execute_counting(id, hear(words), &with_token("t1"))
                .await
                .expect("runs");
            assert_eq!(appended, 0);
            assert!(call.is_started(), "answered from the call as it stands");
        }
        assert_eq!(
            store
                .load_events(&id.to_string())
                .await
                .expect("loads")
                .len(),
            stored
        );
        // The same words in another request are heard.
        let (_, appended) = first
            .execute_counting(id, hear(words), &with_token("t3"))
            .await
            .expect("runs");
        assert!(appended > 0);
    }
}
