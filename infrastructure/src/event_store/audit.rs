//! Verifies the event store's hash chains without trusting the database's own functions: each
//! event's hash is recomputed here from its stored fields, so an altered payload, a removed or
//! reordered event, or a rewritten hash is found and named.
//!
//! The canonical content is the one `migrations/20261125030000_tamper_evidence.sql` defines:
//! every field as `octet_length:value;`, the hash SHA-256(previous hash || content).

use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// The first event of an aggregate whose history does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub aggregate_id: String,
    pub sequence: i64,
    pub reason: BrokenReason,
}

/// What is wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokenReason {
    /// Its stored content no longer gives its stored hash: it was altered after it was written.
    ContentAltered,
    /// Its sequence does not follow the previous event's: an event was removed.
    Gap,
}

impl std::fmt::Display for BrokenReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ContentAltered => "its content or hash was altered after it was stored",
            Self::Gap => "the event before it is missing",
        })
    }
}

/// What a verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    pub aggregates: u64,
    pub events: u64,
    /// The first broken event of each aggregate whose history does not hold.
    pub broken: Vec<Broken>,
}

impl Verification {
    pub fn intact(&self) -> bool {
        self.broken.is_empty()
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
    hash: Vec<u8>,
}

fn field(content: &mut Vec<u8>, value: &str) {
    content.extend_from_slice(value.len().to_string().as_bytes());
    content.push(b':');
    content.extend_from_slice(value.as_bytes());
    content.push(b';');
}

/// The hash `row` should have after `previous`.
fn chained(previous: &[u8], row: &Row) -> Vec<u8> {
    let mut content = Vec::with_capacity(row.payload.len() + row.metadata.len() + 128);
    field(&mut content, &row.aggregate_type);
    field(&mut content, &row.aggregate_id);
    field(&mut content, &row.sequence.to_string());
    field(&mut content, &row.event_type);
    field(&mut content, &row.event_version);
    field(&mut content, &row.payload);
    field(&mut content, &row.metadata);
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(&content);
    hasher.finalize().to_vec()
}

/// Verifies every call's history, or only `aggregate_id`'s.
pub async fn verify(pool: &PgPool, aggregate_id: Option<&str>) -> sqlx::Result<Verification> {
    let mut rows = sqlx::query_as::<_, Row>(
        "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version,
                payload::text AS payload, metadata::text AS metadata, hash
           FROM events
          WHERE aggregate_type = 'Call' AND ($1::text IS NULL OR aggregate_id = $1)
          ORDER BY aggregate_id, sequence",
    )
    .bind(aggregate_id)
    .fetch(pool);
    let mut found = Verification::default();
    // The aggregate being read, the hash its chain expects next, the sequence it expects next,
    // and whether it already broke.
    let mut current: Option<String> = None;
    let mut previous: Vec<u8> = Vec::new();
    let mut next_sequence = 1;
    let mut broke = false;
    while let Some(row) = rows.try_next().await? {
        if current.as_deref() != Some(row.aggregate_id.as_str()) {
            current = Some(row.aggregate_id.clone());
            previous.clear();
            next_sequence = 1;
            broke = false;
            found.aggregates += 1;
        }
        found.events += 1;
        if broke {
            continue;
        }
        let reason = if row.sequence != next_sequence {
            Some(BrokenReason::Gap)
        } else if chained(&previous, &row) != row.hash {
            Some(BrokenReason::ContentAltered)
        } else {
            None
        };
        if let Some(reason) = reason {
            found.broken.push(Broken {
                aggregate_id: row.aggregate_id.clone(),
                sequence: row.sequence,
                reason,
            });
            broke = true;
        }
        previous = row.hash;
        next_sequence = row.sequence + 1;
    }
    Ok(found)
}

/// One stored event, as an auditor sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct AuditEvent {
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub global_position: i64,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
    /// The event's link in its call's hash chain, hex.
    pub hash: String,
}

/// A call's whole history, in order; empty for an unknown call.
pub async fn history(pool: &PgPool, aggregate_id: &str) -> sqlx::Result<Vec<AuditEvent>> {
    sqlx::query_as(
        "SELECT sequence, event_type, event_version, payload::jsonb AS payload,
                metadata::jsonb AS metadata, global_position, recorded_at,
                encode(hash, 'hex') AS hash
           FROM events
          WHERE aggregate_type = 'Call' AND aggregate_id = $1
          ORDER BY sequence",
    )
    .bind(aggregate_id)
    .fetch_all(pool)
    .await
}
