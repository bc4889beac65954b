//! Work on the store in bulk, for the benchmark and operations: databases of a run's own, whole
//! histories stored at once, the baselines' plain inserts and scans, and the upkeep PostgreSQL
//! does between workloads. Nothing here runs while the service answers calls.

use cqrs_es::DomainEvent;
use domain::{CallEvent, CallId};
use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::event_store::subscription::CALL_AGGREGATE;

/// A database of its own on `admin`'s server, migrated, and a pool of `connections` to it.
/// A database left by an earlier run of the same name is dropped first.
pub async fn create_database(
    admin: &PgPool,
    name: &str,
    connections: u32,
) -> Result<(PgPool, PgConnectOptions), sqlx::Error> {
    drop_database(admin, name).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(admin)
        .await?;
    let options = admin
        .connect_options()
        .as_ref()
        .clone()
        .database(name)
        // Bulk statements (generating and scanning a million events) are slow by design; sqlx's
        // warnings about them would bury what the run prints.
        .disable_statement_logging();
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect_with(options.clone())
        .await?;
    crate::event_store::migrate(&pool)
        .await
        .map_err(|e| sqlx::Error::Migrate(Box::new(e)))?;
    sqlx::query(
        "CREATE TABLE baseline_rows (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             call_sid text NOT NULL, payload json NOT NULL, metadata json NOT NULL,
             recorded_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&pool)
    .await?;
    Ok((pool, options))
}

/// Drops database `name`, disconnecting whoever is still connected.
pub async fn drop_database(admin: &PgPool, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(admin)
        .await?;
    Ok(())
}

/// The write a baseline makes in place of an append: one plain `INSERT` of a row like an event.
pub async fn insert_baseline_row(
    pool: &PgPool,
    call_sid: &str,
    payload: &serde_json::Value,
    metadata: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO baseline_rows (call_sid, payload, metadata) VALUES ($1, $2, $3)")
        .bind(call_sid)
        .bind(sqlx::types::Json(payload))
        .bind(sqlx::types::Json(metadata))
        .execute(pool)
        .await?;
    Ok(())
}

/// How many call events the store holds.
pub async fn count_call_events(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = $1")
        .bind(CALL_AGGREGATE)
        .fetch_one(pool)
        .await
}

/// The type and JSON of each event, as the store keeps them.
fn serialized(events: &[CallEvent]) -> Result<(Vec<String>, Vec<String>), serde_json::Error> {
    events
        .iter()
        .map(|e| Ok((e.event_type(), serde_json::to_string(e)?)))
        .collect::<Result<Vec<_>, serde_json::Error>>()
        .map(|pairs| pairs.into_iter().unzip())
}

/// Stores `history` as call `id`'s, from sequence 1, in one statement (as the webhooks would
/// have stored it, without the commands).
pub async fn store_history(
    pool: &PgPool,
    id: CallId,
    history: &[CallEvent],
) -> Result<(), sqlx::Error> {
    let (types, payloads) = serialized(history).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT $1, $2, t.ord, t.event_type, '1', t.payload::json, '{}'::json
           FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS t(event_type, payload, ord)
          ORDER BY t.ord",
    )
    .bind(CALL_AGGREGATE)
    .bind(id.to_string())
    .bind(&types)
    .bind(&payloads)
    .execute(pool)
    .await?;
    Ok(())
}

/// Stores `calls` calls whose history is `template`, each under an id of its own, in statements
/// of 10,000 calls.
pub async fn store_copies(
    pool: &PgPool,
    template: &[CallEvent],
    calls: u64,
) -> Result<(), sqlx::Error> {
    let (types, payloads) = serialized(template).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let sequences: Vec<i64> = (1..).take(template.len()).collect();
    let chunk = 10_000u64;
    let mut done = 0u64;
    let position = |n: u64| i64::try_from(n).map_err(|e| sqlx::Error::Encode(Box::new(e)));
    while done < calls {
        let n = chunk.min(calls - done);
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT $1, md5('copy' || g::text)::uuid::text, t.seq, t.event_type, '1', t.payload::json, '{}'::json
               FROM generate_series($2::bigint, $3::bigint) g
              CROSS JOIN unnest($4::bigint[], $5::text[], $6::text[]) AS t(seq, event_type, payload)
              ORDER BY g, t.seq",
        )
        .bind(CALL_AGGREGATE)
        .bind(position(done)?)
        .bind(position(done + n - 1)?)
        .bind(&sequences)
        .bind(&types)
        .bind(&payloads)
        .execute(pool)
        .await?;
        done += n;
    }
    Ok(())
}

/// Reads every call event in order and decodes it, as a replay must at the least; returns how
/// many there were.
pub async fn scan_call_events(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut rows = sqlx::query_as::<_, (String, i64, sqlx::types::Json<CallEvent>)>(
        "SELECT aggregate_id, sequence, payload::jsonb FROM events
          WHERE aggregate_type = $1 ORDER BY aggregate_id, sequence",
    )
    .bind(CALL_AGGREGATE)
    .fetch(&mut *conn);
    let mut scanned = 0u64;
    while rows.try_next().await?.is_some() {
        scanned += 1;
    }
    Ok(scanned)
}

/// Vacuums and analyses the database, as pgbench does before each run, then writes out the dirty
/// pages (`CHECKPOINT` needs a superuser, as the embedded server's is; elsewhere it is skipped
/// and the reason returned).
pub async fn vacuum(pool: &PgPool) -> Result<Option<sqlx::Error>, sqlx::Error> {
    sqlx::query("VACUUM (ANALYZE)").execute(pool).await?;
    Ok(sqlx::query("CHECKPOINT").execute(pool).await.err())
}
