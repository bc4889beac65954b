//! Durable subscriptions over the event store. cqrs-es dispatches queries in-process after a
//! commit, with no retry, so a crash in between loses the update; nothing that must happen hangs on
//! that. Instead each consumer (a projection, the pipeline) reads the `events` table from its own
//! checkpoint and writes its effects and its new checkpoint in one transaction: each event takes
//! effect exactly once, and a consumer that was down catches up from where it stopped.
//!
//! Events are read in `(tx_id, global_position)` order and only from transactions older than the
//! oldest one still in flight (`pg_snapshot_xmin`), so an event whose transaction commits late is
//! never skipped. One instance at a time runs a given consumer (a transaction-scoped advisory lock,
//! which, unlike a row lock, takes no transaction id and so holds nobody's horizon back).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::{CallEvent, CallId};
use serde::Deserialize;
use sqlx::{PgConnection, PgPool, Row};

use crate::event_store::appended::{Appended, EVENTS_CHANNEL};
use crate::event_store::wakeup::Wakeup;

/// An event as stored, with its position in the store.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub global_position: i64,
    pub recorded_at: DateTime<Utc>,
}

impl StoredEvent {
    /// The call this event belongs to and the event itself, decoded as the aggregate wrote it;
    /// `None` for an event of another aggregate.
    pub fn call_event(&self) -> Result<Option<(CallId, CallEvent)>, ConsumerError> {
        if self.aggregate_type != CALL_AGGREGATE {
            return Ok(None);
        }
        let id = CallId::parse(&self.aggregate_id)
            .map_err(|_| ConsumerError::Decode("a call id that is not a UUID".into()))?;
        let event = CallEvent::deserialize(&self.payload)
            .map_err(|e| ConsumerError::Decode(format!("{}: {e}", self.event_type)))?;
        Ok(Some((id, event)))
    }
}

/// The `aggregate_type` the `Call` aggregate's events are stored under.
pub const CALL_AGGREGATE: &str = "Call";

/// How far a subscription has read the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The last position it took into account; `None` before its first batch.
    pub read: Option<i64>,
    /// The store's last position; `None` while it is empty.
    pub last: Option<i64>,
}

impl Progress {
    /// Whether it has read every stored event.
    pub fn caught_up(&self) -> bool {
        self.read.unwrap_or(0) >= self.last.unwrap_or(0)
    }
}

/// How far subscription `name` has read.
pub async fn progress(pool: &PgPool, name: &str) -> Result<Progress, sqlx::Error> {
    let (read, last) = sqlx::query_as(
        "SELECT (SELECT last_position FROM subscription_checkpoints WHERE name = $1),
                (SELECT max(global_position) FROM events)",
    )
    .bind(name)
    .fetch_one(pool)
    .await?;
    Ok(Progress { read, last })
}

/// Why a consumer could not take an event into account.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the event could not be read: {0}")]
    Decode(String),
}

/// Why a batch failed; nothing of it took effect.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("consumer {consumer} failed at event {position}: {source}")]
    Consumer {
        consumer: String,
        position: i64,
        source: ConsumerError,
    },
}

/// Something that takes events into account: a projection, the pipeline.
pub trait Consumer: Send + Sync {
    /// The consumer's name, which keys its checkpoint. Never rename a consumer: it would start over.
    fn name(&self) -> &str;

    /// Takes one event into account, writing only through `conn`: the runner commits it together
    /// with the checkpoint.
    fn handle(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> impl Future<Output = Result<(), ConsumerError>> + Send;

    /// Takes a batch of events into account, in order; on failure, says at which event. A
    /// consumer whose writes can be gathered overrides it, to write a batch in a few statements
    /// instead of a few per event.
    fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> impl Future<Output = Result<(), (i64, ConsumerError)>> + Send {
        async move {
            for event in events {
                self.handle(conn, event)
                    .await
                    .map_err(|error| (event.global_position, error))?;
            }
            Ok(())
        }
    }
}

/// Moves `consumer`'s checkpoint to the last stored event, so that it takes only the events stored
/// after it: for tools measuring a consumer on its own events (the bench). Only while nothing
/// appends, or events stored meanwhile may be skipped.
pub async fn skip_to_end(pool: &PgPool, consumer: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO subscription_checkpoints (name, last_tx_id, last_position)
         SELECT $1, tx_id, global_position FROM events
          ORDER BY tx_id DESC, global_position DESC LIMIT 1
         ON CONFLICT (name) DO UPDATE
            SET last_tx_id = EXCLUDED.last_tx_id, last_position = EXCLUDED.last_position",
    )
    .bind(consumer)
    .execute(pool)
    .await?;
    Ok(())
}

/// Why a batch ended early, inside `process_batch`.
enum BatchError {
    HeldElsewhere,
    Failed(SubscriptionError),
}

impl<E: Into<SubscriptionError>> From<E> for BatchError {
    fn from(error: E) -> Self {
        Self::Failed(error.into())
    }
}

/// What one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// This many events were taken into account.
    Processed(usize),
    /// Nothing new below the horizon.
    Idle,
    /// Newer events are stored, but a transaction still in flight somewhere in the cluster holds
    /// the horizon below them: worth another look in a moment, not at the next poll.
    Waiting,
    /// Another instance is running this consumer.
    HeldElsewhere,
}

/// How soon a runner looks again when stored events wait behind the horizon.
const WAITING_PAUSE: Duration = Duration::from_millis(5);

/// Runs one consumer over the event store.
#[derive(Debug)]
pub struct SubscriptionRunner<C> {
    pool: PgPool,
    consumer: C,
    batch_size: i64,
    poll_interval: Duration,
    min_interval: Duration,
    checkpoint_exists: AtomicBool,
    progress: tokio::sync::watch::Sender<i64>,
}

impl<C: Consumer> SubscriptionRunner<C> {
    /// A runner of `consumer` over `pool`.
    pub fn new(pool: PgPool, consumer: C) -> Self {
        Self {
            pool,
            consumer,
            batch_size: 200,
            poll_interval: Duration::from_secs(1),
            min_interval: Duration::ZERO,
            checkpoint_exists: AtomicBool::new(false),
            progress: tokio::sync::watch::channel(0).0,
        }
    }

    /// Takes at most `events` events per batch (200 by default).
    #[must_use]
    pub fn with_batch_size(mut self, events: u32) -> Self {
        self.batch_size = i64::from(events.max(1));
        self
    }

    /// Starts a batch at most once per `interval` while it keeps up (a full batch is followed at
    /// once). Under load, every append wakes the runner: without a pace it would run a batch,
    /// with its round trips and its commit, for every few events.
    #[must_use]
    pub fn with_min_interval(mut self, interval: Duration) -> Self {
        self.min_interval = interval;
        self
    }

    /// The global position of the last event this runner committed, as it moves: for monitoring,
    /// and for tests that wait on the effect rather than on time.
    pub fn progress(&self) -> tokio::sync::watch::Receiver<i64> {
        self.progress.subscribe()
    }

    /// The consumer.
    pub fn consumer(&self) -> &C {
        &self.consumer
    }

    async fn ensure_checkpoint(&self) -> Result<(), sqlx::Error> {
        if !self.checkpoint_exists.load(Ordering::Relaxed) {
            sqlx::query(
                "INSERT INTO subscription_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING",
            )
            .bind(self.consumer.name())
            .execute(&self.pool)
            .await?;
            self.checkpoint_exists.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Takes the next batch into account, atomically with the checkpoint.
    pub async fn process_batch(&self) -> Result<Batch, SubscriptionError> {
        self.ensure_checkpoint().await?;
        let mut tx = self.pool.begin().await?;
        let result = self.batch_in(&mut tx).await;
        // Always end the transaction here: a dropped one is rolled back only when its connection
        // is next used, and until then it keeps the advisory lock, so the next batch (on another
        // connection) would find the consumer "held elsewhere".
        match result {
            Ok(Some((Batch::Waiting, _))) => {
                tx.rollback().await?;
                Ok(Batch::Waiting)
            }
            Ok(Some((batch, last_position))) => {
                tx.commit().await?;
                self.progress.send_replace(last_position);
                Ok(batch)
            }
            Ok(None) => {
                tx.rollback().await?;
                Ok(Batch::Idle)
            }
            Err(BatchError::HeldElsewhere) => {
                tx.rollback().await?;
                Ok(Batch::HeldElsewhere)
            }
            Err(BatchError::Failed(error)) => {
                // The batch's effects are undone with it; if even that fails, dropping the
                // transaction still rolls it back.
                let _ = tx.rollback().await;
                Err(error)
            }
        }
    }

    /// One batch inside `tx`: `None` when there is nothing to take, or the batch and its last
    /// position when the checkpoint was advanced (not yet committed).
    async fn batch_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    ) -> Result<Option<(Batch, i64)>, BatchError> {
        let name = self.consumer.name();
        // The batch commits without waiting for its WAL flush: a crash can lose only whole
        // batches, effects and checkpoint together, and they are taken again; anyone acting on a
        // batch's effect (a worker claiming its job) commits that durably, which flushes the
        // batch first. The appends of webhooks then do not queue behind the batches' flushes.
        let mine: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_xact_lock(hashtextextended('hotline.subscription.' || $1, 0))
                    AND set_config('synchronous_commit', 'off', true) = 'off'",
        )
        .bind(name)
        .fetch_one(&mut **tx)
        .await?;
        if !mine {
            return Err(BatchError::HeldElsewhere);
        }
        let (last_tx, last_position): (String, i64) = sqlx::query_as(
            "SELECT last_tx_id::text, last_position FROM subscription_checkpoints WHERE name = $1",
        )
        .bind(name)
        .fetch_one(&mut **tx)
        .await?;
        let rows = sqlx::query(
            "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version,
                    payload::jsonb AS payload, metadata::jsonb AS metadata, global_position,
                    tx_id::text AS tx_id_text, recorded_at
               FROM events
              WHERE (tx_id, global_position) > ($1::xid8, $2)
                AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
              ORDER BY events.tx_id, events.global_position
              LIMIT $3",
        )
        .bind(&last_tx)
        .bind(last_position)
        .bind(self.batch_size)
        .fetch_all(&mut **tx)
        .await?;
        if rows.is_empty() {
            // Not `EXISTS`: the planner guesses a third of the table matches a row comparison
            // and scans it from the start; ordered by the index, the look is one index probe.
            let behind: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM events WHERE (tx_id, global_position) > ($1::xid8, $2)
                  ORDER BY tx_id, global_position LIMIT 1",
            )
            .bind(&last_tx)
            .bind(last_position)
            .fetch_optional(&mut **tx)
            .await?;
            return Ok(behind.map(|_| (Batch::Waiting, last_position)));
        }
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            events.push(StoredEvent {
                aggregate_type: row.try_get("aggregate_type")?,
                aggregate_id: row.try_get("aggregate_id")?,
                sequence: row.try_get("sequence")?,
                event_type: row.try_get("event_type")?,
                event_version: row.try_get("event_version")?,
                payload: row.try_get("payload")?,
                metadata: row.try_get("metadata")?,
                global_position: row.try_get("global_position")?,
                recorded_at: row.try_get("recorded_at")?,
            });
        }
        self.consumer
            .handle_batch(tx, &events)
            .await
            .map_err(|(position, source)| SubscriptionError::Consumer {
                consumer: name.to_owned(),
                position,
                source,
            })?;
        // The rows are in order, so the last is the new checkpoint.
        let checkpoint: (String, i64) = match rows.last() {
            Some(last) => (
                last.try_get("tx_id_text")?,
                last.try_get("global_position")?,
            ),
            None => (last_tx, last_position),
        };
        sqlx::query(
            "UPDATE subscription_checkpoints
                SET last_tx_id = $2::xid8, last_position = $3, updated_at = now()
              WHERE name = $1",
        )
        .bind(name)
        .bind(&checkpoint.0)
        .bind(checkpoint.1)
        .execute(&mut **tx)
        .await?;
        Ok(Some((Batch::Processed(rows.len()), checkpoint.1)))
    }

    /// Processes batches until nothing is left below the horizon; returns how many events this
    /// call took into account. Tests use it to "drain" a consumer without waiting on time.
    pub async fn catch_up(&self) -> Result<usize, SubscriptionError> {
        let mut total = 0;
        loop {
            match self.process_batch().await? {
                Batch::Processed(n) => total += n,
                Batch::Idle | Batch::Waiting | Batch::HeldElsewhere => return Ok(total),
            }
        }
    }

    /// Runs until `shutdown` completes: woken by notifications, polling as a fallback, backing
    /// off after errors (the failed batch is retried; nothing is skipped).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let name = self.consumer.name().to_owned();
        tokio::pin!(shutdown);
        let mut wakeup = Wakeup::new(self.pool.clone(), EVENTS_CHANNEL)
            .with_local(Appended::of(&self.pool).watch());
        let mut failures: u32 = 0;
        let mut last_batch: Option<tokio::time::Instant> = None;
        loop {
            if let Some(ready) = last_batch.map(|at| at + self.min_interval) {
                // A pace, not a synchronisation: the batch takes whatever arrived meanwhile.
                tokio::select! {
                    () = shutdown.as_mut() => return,
                    () = tokio::time::sleep_until(ready) => {}
                }
            }
            last_batch = Some(tokio::time::Instant::now());
            let pause = match self.process_batch().await {
                Ok(Batch::Processed(n)) if n as i64 >= self.batch_size => {
                    failures = 0;
                    last_batch = None;
                    continue;
                }
                // The horizon is held by a transaction about to end (another consumer's batch,
                // usually): look again soon rather than at the next poll.
                Ok(Batch::Waiting) => {
                    failures = 0;
                    WAITING_PAUSE
                }
                Ok(_) => {
                    failures = 0;
                    self.poll_interval
                }
                Err(error) => {
                    failures += 1;
                    tracing::error!(consumer = %name, error = %error, "subscription batch failed; retrying");
                    Duration::from_millis(200 * 2u64.pow(failures.min(6)))
                }
            };
            if !wakeup.wait(pause, &mut shutdown).await {
                return;
            }
        }
    }
}
