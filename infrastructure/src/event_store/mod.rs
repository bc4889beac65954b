//! The event store: postgres-es over a sqlx pool, with the schema in `migrations/`. Beside the
//! store itself: `appended` (how appends wake readers), `subscription` (durable consumers reading
//! from their checkpoints), `wakeup` (notifications from other processes) and `audit` (a call's
//! history and the verification of its hash chain); `bulk` is the benchmark's and operations'
//! work on the store in bulk.

pub mod appended;
pub mod audit;
pub mod bulk;
pub mod subscription;
pub mod wakeup;

use std::time::Duration;

use cqrs_es::persist::{
    PersistedEventRepository, PersistedEventStore, PersistenceError, ReplayStream, SerializedEvent,
    SerializedSnapshot,
};
use cqrs_es::Aggregate;
use domain::Call;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::event_store::appended::{Appended, Notifier};

/// The store the application dispatches call commands through.
pub type CallStore = PersistedEventStore<AppendingRepository, Call>;

/// postgres-es's repository with a faster append. postgres-es appends a command's events with
/// `BEGIN`, one `INSERT` per event and `COMMIT`: three round trips or more. One multi-row `INSERT`
/// is just as atomic, in one round trip. The primary key still refuses a stale append (a
/// concurrent writer's), which is cqrs-es's optimistic-lock error as before; everything else
/// (loading, streaming, snapshots) is postgres-es's own.
///
/// Appends wake subscription runners (see `appended`): those of this process at once, those of
/// other processes through a notification sent after the commit.
pub struct AppendingRepository {
    inner: PostgresEventRepository,
    pool: PgPool,
    appended: Appended,
    notifier: Notifier,
}

impl std::fmt::Debug for AppendingRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendingRepository")
            .finish_non_exhaustive()
    }
}

impl AppendingRepository {
    pub fn new(pool: PgPool) -> Self {
        Self {
            inner: PostgresEventRepository::new(pool.clone()),
            appended: Appended::of(&pool),
            notifier: Notifier::new(pool.clone()),
            pool,
        }
    }

    /// Wakes the subscription runners after a committed append.
    fn announce(&self) {
        self.appended.announce();
        self.notifier.poke();
    }

    async fn append<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
    ) -> Result<(), PersistenceError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut query = sqlx::QueryBuilder::<sqlx::Postgres>::new(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) ",
        );
        query.push_values(events, |mut row, event| {
            row.push_bind(A::TYPE)
                .push_bind(event.aggregate_id.as_str())
                .push_bind(i64::try_from(event.sequence).unwrap_or(i64::MAX))
                .push_bind(event.event_type.as_str())
                .push_bind(event.event_version.as_str())
                .push_bind(&event.payload)
                .push_bind(&event.metadata);
        });
        let mut connection = self
            .pool
            .acquire()
            .await
            .map_err(|error| connection_error(&self.pool, error))?;
        // A webhook's write starts only if it can finish (or be cancelled by the statement
        // timeout) before the webhook gives up: never a commit after the caller was answered.
        // The margin covers the statement's way to the server and back. Too little time left is
        // this request's bad luck (a slow acquire, a busy pool), not an outage: it opens no
        // breaker, and the command goes to the spool.
        if let Some(deadline) = application::deadline::current() {
            if tokio::time::Instant::now() + WEBHOOK_STATEMENT_TIMEOUT + DEADLINE_MARGIN > deadline
            {
                return Err(PersistenceError::ConnectionError(Box::new(
                    application::breaker::StoreBusy,
                )));
            }
        }
        match query.build().execute(&mut *connection).await {
            Ok(_) => {
                self.announce();
                Ok(())
            }
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("23505") => {
                Err(PersistenceError::OptimisticLockError)
            }
            // A value the database refuses (SQLSTATE class 22, data exception: a NUL, a bad
            // escape) is this request's fault, not the store's: it is told apart from an outage
            // (as cqrs-es's "deserialization" error, its only other kind of bad data), so that it
            // fails this command only.
            Err(sqlx::Error::Database(error))
                if error.code().is_some_and(|code| code.starts_with("22")) =>
            {
                Err(PersistenceError::DeserializationError(Box::new(
                    sqlx::Error::Database(error),
                )))
            }
            Err(error @ (sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut)) => {
                Err(connection_error(&self.pool, error))
            }
            Err(error) => Err(PersistenceError::UnknownError(Box::new(error))),
        }
    }
}

/// A connection that could not be had. sqlx reports a store that refuses connections as a
/// pool timeout too (it retries until the acquire timeout), so the pool tells them apart: a pool
/// with every connection open and busy is busy (`application::breaker::StoreBusy`, no outage);
/// one that could open another and did not cannot reach the store.
fn connection_error(pool: &PgPool, error: sqlx::Error) -> PersistenceError {
    let all_busy = pool.size() >= pool.options().get_max_connections() && pool.num_idle() == 0;
    match error {
        sqlx::Error::PoolTimedOut if all_busy => {
            PersistenceError::ConnectionError(Box::new(application::breaker::StoreBusy))
        }
        error => PersistenceError::ConnectionError(Box::new(error)),
    }
}

impl AppendingRepository {
    /// postgres-es's errors, with a busy pool told apart (see `connection_error`).
    fn told_apart(&self, error: PersistenceError) -> PersistenceError {
        let connection = |source: Box<dyn std::error::Error + Send + Sync>| match source
            .downcast::<sqlx::Error>()
        {
            Ok(error) => connection_error(&self.pool, *error),
            Err(source) => PersistenceError::ConnectionError(source),
        };
        match error {
            PersistenceError::ConnectionError(source) => connection(source),
            PersistenceError::UnknownError(source)
                if source.downcast_ref::<sqlx::Error>().is_some_and(|e| {
                    matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_))
                }) =>
            {
                connection(source)
            }
            other => other,
        }
    }
}

impl PersistedEventRepository for AppendingRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.inner
            .get_events::<A>(aggregate_id)
            .await
            .map_err(|error| self.told_apart(error))
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.inner
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await
            .map_err(|error| self.told_apart(error))
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.inner.get_snapshot::<A>(aggregate_id).await
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        match snapshot_update {
            None => self.append::<A>(events).await,
            // Snapshots are off; were they on, postgres-es writes them with the events.
            Some(update) => {
                self.inner.persist::<A>(events, Some(update)).await?;
                self.announce();
                Ok(())
            }
        }
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_all_events::<A>().await
    }
}

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// How long a request may wait for a pooled connection before it gives up (and the caller hears
/// the fallback instead of waiting on an exhausted pool).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// A pool for the service. Connections are made on first use, so the service starts (and still
/// answers callers) while the database is down.
pub fn pool(options: PgConnectOptions, max_connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // The per-acquire ping costs a round trip on every command; a dead connection fails the
        // command instead, which the caller-facing paths already survive.
        .test_before_acquire(false)
        .connect_lazy_with(options)
}

/// How long a webhook waits for a pooled connection.
pub const WEBHOOK_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(400);

/// The longest one statement of a webhook's command may run before the database cancels it.
/// A webhook's append starts only while at least this long is left before the webhook's
/// deadline (see `append`), so a write the webhook gave up on (the caller already heard the
/// fallback and was sent to a person) is abandoned by the database, never committed afterwards:
/// a late `RecordingReceived` would start a turn whose automated answer could be played into a
/// call that is with a counselor.
pub const WEBHOOK_STATEMENT_TIMEOUT: Duration = Duration::from_millis(300);

/// Kept free before a webhook's deadline beyond the statement timeout (see `append`).
const DEADLINE_MARGIN: Duration = Duration::from_millis(100);

/// The webhooks' own pool, to the same database as `pool`: every statement on it is cut off by
/// the database after `WEBHOOK_STATEMENT_TIMEOUT` (the pipeline, the read side and maintenance
/// keep the unbounded pool they need for long reads).
pub fn webhook_pool(pool: &PgPool) -> PgPool {
    let millis = WEBHOOK_STATEMENT_TIMEOUT.as_millis().to_string();
    let options = (*pool.connect_options())
        .clone()
        .options([("statement_timeout", millis.as_str())]);
    PgPoolOptions::new()
        .max_connections(pool.options().get_max_connections())
        .acquire_timeout(WEBHOOK_ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .connect_lazy_with(options)
}

/// Applies any migration not yet applied.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// The call store over `pool`.
pub fn call_store(pool: PgPool) -> CallStore {
    PersistedEventStore::new_event_store(AppendingRepository::new(pool))
}

/// Why the database cannot be reached. The pool cannot say: it retries a refused connection
/// until its acquire timeout, and then reports only that it timed out.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    #[error("connection refused at {0}")]
    Refused(String),
    #[error("no answer from {0} within {secs} s", secs = CONNECT_TIMEOUT.as_secs())]
    NoAnswer(String),
    #[error("could not connect to {at}: {source}")]
    Failed { at: String, source: sqlx::Error },
}

/// How long `reachable` waits for the database to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects once, outside the pool, and says why that failed if it did.
pub async fn reachable(pool: &PgPool) -> Result<(), Unreachable> {
    let options = pool.connect_options();
    let at = address(&options);
    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(sqlx::Error::Io(error)))
            if error.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            Err(Unreachable::Refused(at))
        }
        Ok(Err(source)) => Err(Unreachable::Failed { at, source }),
        Err(_) => Err(Unreachable::NoAnswer(at)),
    }
}

/// Where `options` connect: host and port, or the Unix socket (never the credentials).
fn address(options: &PgConnectOptions) -> String {
    match options.get_socket() {
        Some(dir) => format!("{}/.s.PGSQL.{}", dir.display(), options.get_port()),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    }
}

/// Whether the database answers (for health checks).
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_write_is_abandoned_by_the_database_before_the_webhook_gives_up() {
        assert!(
            WEBHOOK_ACQUIRE_TIMEOUT + WEBHOOK_STATEMENT_TIMEOUT + DEADLINE_MARGIN
                <= application::COMMAND_DEADLINE
        );
    }
}
