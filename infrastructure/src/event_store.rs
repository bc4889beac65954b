//! The event store: postgres-es over a sqlx pool, with the schema in `migrations/`.

use std::time::Duration;

use cqrs_es::persist::PersistedEventStore;
use domain::Call;
use postgres_es::PostgresEventRepository;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// The store the application dispatches call commands through.
pub type CallStore = PersistedEventStore<PostgresEventRepository, Call>;

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

/// Applies any migration not yet applied.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// The call store over `pool`.
pub fn call_store(pool: PgPool) -> CallStore {
    PersistedEventStore::new_event_store(PostgresEventRepository::new(pool))
}

/// Whether the database answers (for health checks).
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}
