//! The read side in PostgreSQL: the `call_views` subscription folds each event into the call's
//! views (in the subscription's transaction, so each event takes effect once), and `replay`
//! rebuilds every view from the events into fresh tables, compares them with the live ones, and
//! swaps them in on request.

use std::collections::{BTreeMap, BTreeSet};

use application::views::{risk_rank, CallProjection, CallView, TurnView};
use domain::{CallEvent, CallId};
use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};

use crate::event_store::subscription::{Consumer, ConsumerError, StoredEvent};

/// The projection's subscription name. Never rename it: it would start over.
pub const CALL_VIEWS: &str = "call_views";

/// The live tables, and the suffix of a replay's.
const TABLES: [&str; 3] = ["call_views", "call_turns", "call_projection_state"];
const REPLAY: &str = "_replay";

/// Folds events into `call_views`, `call_turns` and `call_projection_state`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallViewsProjection;

impl Consumer for CallViewsProjection {
    fn name(&self) -> &str {
        CALL_VIEWS
    }

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ConsumerError> {
        // One event is a batch of one: the same fold, the same rows.
        self.handle_batch(conn, std::slice::from_ref(event))
            .await
            .map_err(|(_, error)| error)
    }

    /// The batch's calls are read in one statement, folded in memory, and written in one
    /// statement a table, whatever the batch's size: the same rows as folding its events one at a
    /// time would leave, at a fraction of the round trips (and of the time the batch holds the horizon).
    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), (i64, ConsumerError)> {
        let mut decoded = Vec::with_capacity(events.len());
        for event in events.iter().filter(|e| e.aggregate_type == "Call") {
            let (id, call_event) = decode(event).map_err(|e| (event.global_position, e))?;
            decoded.push((event, id, call_event));
        }
        let Some((first, _, _)) = decoded.first() else {
            return Ok(());
        };
        let at_first = |error: sqlx::Error| (first.global_position, ConsumerError::from(error));
        let ids: Vec<uuid::Uuid> = decoded
            .iter()
            .map(|(_, id, _)| id.as_uuid())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let stored: Vec<(uuid::Uuid, sqlx::types::Json<CallProjection>)> = sqlx::query_as(
            "SELECT call_id, state FROM call_projection_state WHERE call_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(at_first)?;
        // Each call's state before the batch, and as the batch leaves it.
        let mut calls: BTreeMap<uuid::Uuid, (Option<CallProjection>, Option<CallProjection>)> =
            BTreeMap::new();
        for (id, state) in stored {
            calls.insert(id, (Some(state.0.clone()), Some(state.0)));
        }
        for (event, id, call_event) in &decoded {
            let (_, current) = calls.entry(id.as_uuid()).or_insert((None, None));
            if let Some(after) =
                CallProjection::fold(current.clone(), *id, event.sequence, call_event)
            {
                *current = Some(after);
            }
        }
        let mut projections = Vec::new();
        let mut befores = Vec::new();
        for (before, after) in calls.into_values() {
            if let Some(after) = after.filter(|a| Some(a) != before.as_ref()) {
                befores.push(before);
                projections.push(after);
            }
        }
        if projections.is_empty() {
            return Ok(());
        }
        // The turns the batch added or changed; an upsert of the others would change nothing.
        let turns: Vec<&TurnView> = projections
            .iter()
            .zip(&befores)
            .flat_map(|(after, before)| {
                after
                    .turns
                    .iter()
                    .filter(move |t| before.as_ref().is_none_or(|b| !b.turns.contains(t)))
            })
            .collect();
        write(conn, &projections, &turns).await.map_err(at_first)
    }
}

/// The call an event belongs to, and the event.
fn decode(event: &StoredEvent) -> Result<(CallId, CallEvent), ConsumerError> {
    let id = CallId::parse(&event.aggregate_id)
        .map_err(|_| ConsumerError::Decode("a call id that is not a UUID".into()))?;
    let call_event: CallEvent = serde_json::from_value(event.payload.clone())
        .map_err(|e| ConsumerError::Decode(format!("{}: {e}", event.event_type)))?;
    Ok((id, call_event))
}

/// An enum's serde name (`"rest_update"`), for a text column.
fn name<T: Serialize>(value: &T) -> Option<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Some(s),
        _ => None,
    }
}

fn int<T: TryInto<i64>>(value: T) -> Option<i64> {
    value.try_into().ok()
}

/// Rows per statement: fewer round trips, within PostgreSQL's 65,535 parameters (20 per turn).
const WRITE_CHUNK: usize = 2000;

/// Upserts `projections` (and the `turns` given) into the live tables, with the fold's state that
/// lets the projection go on from them.
async fn write(
    conn: &mut PgConnection,
    projections: &[CallProjection],
    turns: &[&TurnView],
) -> Result<(), sqlx::Error> {
    for chunk in projections.chunks(WRITE_CHUNK) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO call_views (call_id, call_sid, caller, direction, status, \
             started_at, ended_at, duration_secs, turns, max_risk, max_risk_rank, escalated, \
             escalation_reason, outcome, mean_turn_latency_ms, last_sequence) ",
        );
        q.push_values(chunk.iter().map(|p| &p.view), |mut row, v: &CallView| {
            row.push_bind(v.call_id.as_uuid())
                .push_bind(&v.call_sid)
                .push_bind(&v.caller)
                .push_bind(&v.direction)
                .push_bind(&v.status)
                .push_bind(v.started_at)
                .push_bind(v.ended_at)
                .push_bind(v.duration_secs.and_then(int))
                .push_bind(int(v.turns))
                .push_bind(v.max_risk.as_ref().and_then(name))
                .push_bind(v.max_risk.map(|r| i16::from(risk_rank(r))))
                .push_bind(v.escalated)
                .push_bind(v.escalation_reason.as_ref().and_then(name))
                .push_bind(v.outcome.as_ref().and_then(name))
                .push_bind(v.mean_turn_latency_ms.and_then(int))
                .push_bind(v.last_sequence);
        });
        q.push(
            " ON CONFLICT (call_id) DO UPDATE SET status = EXCLUDED.status, \
             ended_at = EXCLUDED.ended_at, duration_secs = EXCLUDED.duration_secs, \
             turns = EXCLUDED.turns, max_risk = EXCLUDED.max_risk, \
             max_risk_rank = EXCLUDED.max_risk_rank, escalated = EXCLUDED.escalated, \
             escalation_reason = EXCLUDED.escalation_reason, outcome = EXCLUDED.outcome, \
             mean_turn_latency_ms = EXCLUDED.mean_turn_latency_ms, \
             last_sequence = EXCLUDED.last_sequence",
        );
        q.build().execute(&mut *conn).await?;

        let mut q =
            QueryBuilder::<Postgres>::new("INSERT INTO call_projection_state (call_id, state) ");
        q.push_values(chunk, |mut row, p| {
            row.push_bind(p.view.call_id.as_uuid())
                .push_bind(sqlx::types::Json(p));
        });
        q.push(" ON CONFLICT (call_id) DO UPDATE SET state = EXCLUDED.state");
        q.build().execute(&mut *conn).await?;
    }
    for chunk in turns.chunks(WRITE_CHUNK) {
        let mut q = QueryBuilder::<Postgres>::new(
            "INSERT INTO call_turns (call_id, turn, recorded_at, recording_secs, digits, \
             transcript, reply, reply_source, risk_level, risk_unknown, route, signals, \
             screener_version, model, timings, played_via, played_at, latency_ms, \
             failed_stages, choice) ",
        );
        q.push_values(chunk, |mut row, t| {
            row.push_bind(t.call_id.as_uuid())
                .push_bind(int(t.turn))
                .push_bind(t.recorded_at)
                .push_bind(t.recording_secs.and_then(int))
                .push_bind(&t.digits)
                .push_bind(&t.transcript)
                .push_bind(&t.reply)
                .push_bind(t.reply_source.as_ref().and_then(name))
                .push_bind(t.risk_level.as_ref().and_then(name))
                .push_bind(t.risk_unknown)
                .push_bind(t.route.as_ref().and_then(name))
                .push_bind(sqlx::types::Json(&t.signals))
                .push_bind(&t.screener_version)
                .push_bind(&t.model)
                .push_bind(t.timings.map(sqlx::types::Json))
                .push_bind(t.played_via.as_ref().and_then(name))
                .push_bind(t.played_at)
                .push_bind(t.latency_ms.and_then(int))
                .push_bind(sqlx::types::Json(&t.failed_stages))
                .push_bind(t.choice.as_ref().and_then(name));
        });
        q.push(
            " ON CONFLICT (call_id, turn) DO UPDATE SET transcript = EXCLUDED.transcript, \
             reply = EXCLUDED.reply, reply_source = EXCLUDED.reply_source, \
             risk_level = EXCLUDED.risk_level, risk_unknown = EXCLUDED.risk_unknown, \
             route = EXCLUDED.route, signals = EXCLUDED.signals, \
             screener_version = EXCLUDED.screener_version, model = EXCLUDED.model, \
             timings = EXCLUDED.timings, played_via = EXCLUDED.played_via, \
             played_at = EXCLUDED.played_at, latency_ms = EXCLUDED.latency_ms, \
             failed_stages = EXCLUDED.failed_stages, choice = EXCLUDED.choice",
        );
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// COPY's text format, a row at a time: fields separated by tabs, `\N` for NULL, and the
/// format's escapes for backslashes and line breaks. Timestamps are written to the microsecond,
/// truncated, as sqlx binds them, so a replay's rows equal the live projection's to the bit.
#[derive(Default)]
struct CopyText {
    buf: String,
    /// Whether a row was started (so the next one starts on a new line).
    started: bool,
    /// Whether the row's next field is its first (so no tab before it).
    first: bool,
}

impl CopyText {
    fn row(&mut self) -> &mut Self {
        if std::mem::replace(&mut self.started, true) {
            self.buf.push('\n');
        }
        self.first = true;
        self
    }

    fn field(&mut self, value: Option<&str>) -> &mut Self {
        if !std::mem::take(&mut self.first) {
            self.buf.push('\t');
        }
        match value {
            None => self.buf.push_str("\\N"),
            Some(value) => {
                for c in value.chars() {
                    match c {
                        '\\' => self.buf.push_str("\\\\"),
                        '\t' => self.buf.push_str("\\t"),
                        '\n' => self.buf.push_str("\\n"),
                        '\r' => self.buf.push_str("\\r"),
                        c => self.buf.push(c),
                    }
                }
            }
        }
        self
    }

    fn text(&mut self, value: Option<impl AsRef<str>>) -> &mut Self {
        self.field(value.as_ref().map(AsRef::as_ref))
    }

    fn number(&mut self, value: Option<impl std::fmt::Display>) -> &mut Self {
        self.text(value.map(|v| v.to_string()))
    }

    fn boolean(&mut self, value: bool) -> &mut Self {
        self.field(Some(if value { "t" } else { "f" }))
    }

    fn time(&mut self, value: Option<chrono::DateTime<chrono::Utc>>) -> &mut Self {
        self.text(value.map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()))
    }

    fn json<T: Serialize>(&mut self, value: &T) -> &mut Self {
        self.text(serde_json::to_string(value).ok())
    }
}

/// How much COPY text is sent at a time.
const COPY_CHUNK: usize = 1 << 20;

/// Sends `rows` (COPY text, a row a line) into `table`'s `columns`.
async fn copy_rows(
    conn: &mut PgConnection,
    table: &str,
    columns: &str,
    rows: &str,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut copy = conn
        .copy_in_raw(&format!("COPY {table} ({columns}) FROM STDIN"))
        .await?;
    // COPY's data may be cut anywhere: the server joins the pieces.
    for chunk in rows.as_bytes().chunks(COPY_CHUNK) {
        copy.send(chunk).await?;
    }
    copy.send(b"\n".as_slice()).await?;
    copy.finish().await?;
    Ok(())
}

/// Writes `projections` and `turns` into a replay's fresh, empty tables with COPY; with `state`,
/// also the fold's state. `write`'s upserts need a unique index to conflict on, and a replay that
/// only compares builds its tables without indexes, which is where most of the time went.
async fn copy_into(
    conn: &mut PgConnection,
    projections: &[CallProjection],
    turns: &[&TurnView],
    state: bool,
) -> Result<(), sqlx::Error> {
    let mut views = CopyText::default();
    for v in projections.iter().map(|p| &p.view) {
        views
            .row()
            .text(Some(v.call_id.as_uuid().to_string()))
            .text(Some(&v.call_sid))
            .text(Some(&v.caller))
            .text(Some(&v.direction))
            .text(Some(&v.status))
            .time(Some(v.started_at))
            .time(v.ended_at)
            .number(v.duration_secs)
            .number(Some(v.turns))
            .text(v.max_risk.as_ref().and_then(name))
            .number(v.max_risk.map(risk_rank))
            .boolean(v.escalated)
            .text(v.escalation_reason.as_ref().and_then(name))
            .text(v.outcome.as_ref().and_then(name))
            .number(v.mean_turn_latency_ms.and_then(int))
            .number(Some(v.last_sequence));
    }
    copy_rows(
        conn,
        &format!("call_views{REPLAY}"),
        "call_id, call_sid, caller, direction, status, started_at, ended_at, duration_secs, \
         turns, max_risk, max_risk_rank, escalated, escalation_reason, outcome, \
         mean_turn_latency_ms, last_sequence",
        &views.buf,
    )
    .await?;
    drop(views);
    if state {
        let mut states = CopyText::default();
        for p in projections {
            states
                .row()
                .text(Some(p.view.call_id.as_uuid().to_string()))
                .json(p);
        }
        copy_rows(
            conn,
            &format!("call_projection_state{REPLAY}"),
            "call_id, state",
            &states.buf,
        )
        .await?;
    }
    let mut rows = CopyText::default();
    for t in turns {
        rows.row()
            .text(Some(t.call_id.as_uuid().to_string()))
            .number(Some(t.turn))
            .time(Some(t.recorded_at))
            .number(t.recording_secs)
            .text(t.digits.as_ref())
            .text(t.transcript.as_ref())
            .text(t.reply.as_ref())
            .text(t.reply_source.as_ref().and_then(name))
            .text(t.risk_level.as_ref().and_then(name))
            .boolean(t.risk_unknown)
            .text(t.route.as_ref().and_then(name))
            .json(&t.signals)
            .text(t.screener_version.as_ref())
            .text(t.model.as_ref())
            .text(
                t.timings
                    .map(|timings| serde_json::to_string(&timings).unwrap_or_default()),
            )
            .text(t.played_via.as_ref().and_then(name))
            .time(t.played_at)
            .number(t.latency_ms.and_then(int))
            .json(&t.failed_stages)
            .text(t.choice.as_ref().and_then(name));
    }
    copy_rows(
        conn,
        &format!("call_turns{REPLAY}"),
        "call_id, turn, recorded_at, recording_secs, digits, transcript, reply, reply_source, \
         risk_level, risk_unknown, route, signals, screener_version, model, timings, played_via, \
         played_at, latency_ms, failed_stages, choice",
        &rows.buf,
    )
    .await
}

/// Every call's projection, folded in memory from the events `call_views` has taken into
/// account (those up to its checkpoint), or from all events when `upto` is `None`.
pub async fn fold_store(
    conn: &mut PgConnection,
    upto: Option<(String, i64)>,
) -> Result<Vec<CallProjection>, ReplayError> {
    let (tx, position) = upto.unwrap_or_else(|| (i64::MAX.to_string(), i64::MAX));
    let mut rows = sqlx::query_as::<_, (String, i64, sqlx::types::Json<CallEvent>)>(
        "SELECT aggregate_id, sequence, payload::jsonb
           FROM events
          WHERE aggregate_type = 'Call' AND (tx_id, global_position) <= ($1::xid8, $2)
          ORDER BY aggregate_id, sequence",
    )
    .bind(tx)
    .bind(position)
    .fetch(&mut *conn);
    let mut done = Vec::new();
    let mut current: Option<(String, Option<CallProjection>)> = None;
    while let Some((aggregate_id, sequence, event)) = rows.try_next().await? {
        if current.as_ref().map(|(a, _)| a.as_str()) != Some(aggregate_id.as_str()) {
            if let Some((_, Some(projection))) = current.take() {
                done.push(projection);
            }
            current = Some((aggregate_id.clone(), None));
        }
        let id = CallId::parse(&aggregate_id)
            .map_err(|_| ReplayError::Decode(format!("call id {aggregate_id}")))?;
        if let Some((_, state)) = current.as_mut() {
            *state = CallProjection::fold(state.take(), id, sequence, &event.0);
        }
    }
    if let Some((_, Some(projection))) = current {
        done.push(projection);
    }
    Ok(done)
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("an event could not be read: {0}")]
    Decode(String),
}

/// What a replay found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub calls: usize,
    pub turns: usize,
    /// Calls whose live rows differ from the rebuilt ones (missing, extra, or different).
    pub differing_calls: Vec<CallId>,
    pub swapped: bool,
}

/// Rebuilds every view from every stored event into scratch tables, and drops them: the
/// benchmark's measure of a replay, independent of how far the live projection has read.
pub async fn rebuild_all(pool: &PgPool) -> Result<ReplayReport, ReplayError> {
    let mut tx = pool.begin().await?;
    let (calls, turns) = rebuild(&mut tx, None, false).await?;
    // Nothing is kept: rolling back drops the scratch tables with their rows.
    tx.rollback().await?;
    Ok(ReplayReport {
        calls,
        turns,
        differing_calls: Vec::new(),
        swapped: false,
    })
}

/// Folds the events up to `upto` (all of them when `None`) into fresh `_replay` tables; returns
/// how many calls and turns they hold. The tables are unlogged (no WAL): most replays only
/// compare and drop them, and a swap makes them logged first. The fold's state is written only
/// when it will be used (`state`: the tables are to be swapped in and projected onto).
async fn rebuild(
    conn: &mut PgConnection,
    upto: Option<(String, i64)>,
    state: bool,
) -> Result<(usize, usize), ReplayError> {
    let started = std::time::Instant::now();
    let projections = fold_store(&mut *conn, upto).await?;
    let folded = started.elapsed();
    // Tables only compared and dropped need no index (the comparison sorts or hashes), and
    // filling tables without them is faster; tables to be swapped in are built like the live ones.
    let indexes = if state { "" } else { " EXCLUDING INDEXES" };
    for table in TABLES {
        sqlx::raw_sql(&format!(
            "DROP TABLE IF EXISTS {table}{REPLAY}; \
             CREATE UNLOGGED TABLE {table}{REPLAY} (LIKE {table} INCLUDING ALL{indexes})"
        ))
        .execute(&mut *conn)
        .await?;
    }
    let turns: Vec<&TurnView> = projections.iter().flat_map(|p| &p.turns).collect();
    copy_into(&mut *conn, &projections, &turns, state).await?;
    tracing::info!(
        fold_ms = folded.as_millis() as u64,
        write_ms = (started.elapsed() - folded).as_millis() as u64,
        calls = projections.len(),
        "views rebuilt"
    );
    Ok((projections.len(), turns.len()))
}

/// Rebuilds every view from the events into fresh tables, compares them with the live ones, and
/// with `swap` puts the rebuilt tables in their place. Holds the projection's lock throughout,
/// so the live projection waits and both sides have seen exactly the same events.
pub async fn replay(pool: &PgPool, swap: bool) -> Result<ReplayReport, ReplayError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('hotline.subscription.' || $1, 0))")
        .bind(CALL_VIEWS)
        .execute(&mut *tx)
        .await?;
    let checkpoint: Option<(String, i64)> = sqlx::query_as(
        "SELECT last_tx_id::text, last_position FROM subscription_checkpoints WHERE name = $1",
    )
    .bind(CALL_VIEWS)
    .fetch_optional(&mut *tx)
    .await?;
    let (calls, turns) =
        rebuild(&mut tx, Some(checkpoint.unwrap_or(("0".into(), 0))), swap).await?;

    let differing: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT call_id FROM (
             (SELECT * FROM call_views EXCEPT SELECT * FROM call_views_replay)
             UNION ALL (SELECT * FROM call_views_replay EXCEPT SELECT * FROM call_views)) v
         UNION
         SELECT call_id FROM (
             (SELECT * FROM call_turns EXCEPT SELECT * FROM call_turns_replay)
             UNION ALL (SELECT * FROM call_turns_replay EXCEPT SELECT * FROM call_turns)) t
         ORDER BY 1",
    )
    .fetch_all(&mut *tx)
    .await?;
    let differing_calls: BTreeSet<CallId> = differing
        .into_iter()
        .map(|u| CallId::parse(&u.to_string()))
        .collect::<Result<_, _>>()
        .map_err(|_| ReplayError::Decode("a call id".into()))?;
    if swap {
        for table in TABLES {
            sqlx::raw_sql(&format!(
                "ALTER TABLE {table}{REPLAY} SET LOGGED; DROP TABLE {table}; \
                 ALTER TABLE {table}{REPLAY} RENAME TO {table}"
            ))
            .execute(&mut *tx)
            .await?;
        }
    } else {
        for table in TABLES {
            sqlx::query(&format!("DROP TABLE {table}{REPLAY}"))
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(ReplayReport {
        calls,
        turns,
        differing_calls: differing_calls.into_iter().collect(),
        swapped: swap,
    })
}
