//! Replays of the read side: every view rebuilt from the events into fresh tables with COPY,
//! compared with the live ones, and swapped in on request; and the benchmark's rebuild.

use std::collections::BTreeSet;

use application::views::{CallProjection, CallView, TurnView};
use domain::{CallEvent, CallId};
use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use super::columns::{Cell, Table, CALLS, TURNS};
use super::projection::CALL_VIEWS;

/// The live tables, and the suffix of a replay's.
const TABLES: [&str; 3] = ["call_views", "call_turns", "call_projection_state"];
const REPLAY: &str = "_replay";

/// COPY's text format, a row at a time: fields separated by tabs, `\N` for NULL, and the
/// format's escapes for backslashes and line breaks.
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

    /// A column's value, as PostgreSQL writes it. Timestamps are written to the microsecond,
    /// as sqlx binds them, so a replay's rows equal the live projection's to the bit.
    fn cell(&mut self, cell: Cell<'_>) -> &mut Self {
        match cell {
            Cell::Uuid(id) => self.text(Some(id.to_string())),
            Cell::Text(text) => self.text(text),
            Cell::Int(n) => self.text(n.map(|n| n.to_string())),
            Cell::SmallInt(n) => self.text(n.map(|n| n.to_string())),
            Cell::Bool(b) => self.field(Some(if b { "t" } else { "f" })),
            Cell::Time(t) => self.text(t.map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())),
            Cell::Json(v) => self.text(v.map(|v| v.to_string())),
        }
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
/// also the fold's state. The projection's upserts need a unique index to conflict on, and a
/// replay that only compares builds its tables without indexes, which is where most of the time
/// went.
async fn copy_into(
    conn: &mut PgConnection,
    projections: &[CallProjection],
    turns: &[&TurnView],
    state: bool,
) -> Result<(), sqlx::Error> {
    let views: Vec<&CallView> = projections.iter().map(|p| &p.view).collect();
    copy_table(&mut *conn, &CALLS, &views).await?;
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
    copy_table(conn, &TURNS, turns).await
}

/// Writes `rows` into `table`'s replay with COPY, a column at a time as the table says.
async fn copy_table<V, R>(
    conn: &mut PgConnection,
    table: &Table<V, R>,
    rows: &[&V],
) -> Result<(), sqlx::Error> {
    let mut text = CopyText::default();
    for view in rows {
        text.row();
        for column in table.columns {
            text.cell((column.write)(view));
        }
    }
    let columns = table.names().collect::<Vec<_>>().join(", ");
    copy_rows(
        conn,
        &format!("{}{REPLAY}", table.name),
        &columns,
        &text.buf,
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
