//! Queries over the read side: the call list with filters, sorting and keyset pagination, one
//! call, its turns, and the statistics analysts ask for. The rows are the database's; what the API
//! answers is declared in the API.

use chrono::{DateTime, NaiveDate, Utc};
use domain::risk::RiskLevel;
use domain::CallId;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, QueryBuilder};

use super::columns::{CALLS, TURNS};

/// What the call list can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    StartedAt,
    DurationSecs,
    MaxRisk,
    Turns,
}

impl SortKey {
    /// The sort key as a number, so that every key pages the same way; absent values sort as -1.
    fn expression(self) -> &'static str {
        match self {
            Self::StartedAt => "extract(epoch FROM started_at)::float8",
            Self::DurationSecs => "coalesce(duration_secs, -1)::float8",
            Self::MaxRisk => "coalesce(max_risk_rank, -1)::float8",
            Self::Turns => "turns::float8",
        }
    }

    pub fn parse(value: &str) -> Option<(Self, bool)> {
        let (descending, name) = match value.strip_prefix('-') {
            Some(name) => (true, name),
            None => (false, value),
        };
        let key = match name {
            "started_at" => Self::StartedAt,
            "duration_secs" => Self::DurationSecs,
            "max_risk" => Self::MaxRisk,
            "turns" => Self::Turns,
            _ => return None,
        };
        Some((key, descending))
    }
}

/// Where the previous page ended: the sort it was taken under, its last key and call id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    pub sort: SortKey,
    pub descending: bool,
    pub key: f64,
    pub call_id: uuid::Uuid,
}

/// A page request over the call list.
#[derive(Debug, Clone, PartialEq)]
pub struct CallQuery {
    pub status: Option<String>,
    pub risk_at_least: Option<RiskLevel>,
    pub escalated: Option<bool>,
    pub outcome: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub sort: SortKey,
    pub descending: bool,
    pub limit: u32,
    pub after: Option<Cursor>,
}

impl Default for CallQuery {
    fn default() -> Self {
        Self {
            status: None,
            risk_at_least: None,
            escalated: None,
            outcome: None,
            from: None,
            to: None,
            sort: SortKey::StartedAt,
            descending: true,
            limit: 50,
            after: None,
        }
    }
}

/// A call as analysts see it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct CallRow {
    pub call_id: uuid::Uuid,
    pub call_sid: String,
    /// Masked.
    pub caller: String,
    pub direction: String,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_secs: Option<i32>,
    pub turns: i32,
    pub max_risk: Option<String>,
    pub escalated: bool,
    pub escalation_reason: Option<String>,
    pub outcome: Option<String>,
    pub mean_turn_latency_ms: Option<i64>,
    pub first_risk_at: Option<DateTime<Utc>>,
    pub person_at: Option<DateTime<Utc>>,
    pub time_to_person_ms: Option<i64>,
    pub risk_to_person_ms: Option<i64>,
    pub counselor_dials: i32,
    pub counselor_answers: i32,
    pub crisis_line_fallback: bool,
    pub hung_up_waiting: bool,
    #[serde(skip)]
    pub sort_key: f64,
}

fn rank(level: RiskLevel) -> i16 {
    i16::from(application::views::risk_rank(level))
}

/// One page of the call list, and the cursor of the next page if there is one.
pub async fn list_calls(
    pool: &PgPool,
    query: &CallQuery,
) -> sqlx::Result<(Vec<CallRow>, Option<Cursor>)> {
    let key = query.sort.expression();
    let mut q = QueryBuilder::<Postgres>::new(format!(
        "SELECT {}, {key} AS sort_key FROM {} WHERE true",
        CALLS.select_list(),
        CALLS.name
    ));
    if let Some(status) = &query.status {
        q.push(" AND status = ").push_bind(status.clone());
    }
    if let Some(level) = query.risk_at_least {
        q.push(" AND max_risk_rank >= ").push_bind(rank(level));
    }
    if let Some(escalated) = query.escalated {
        q.push(" AND escalated = ").push_bind(escalated);
    }
    if let Some(outcome) = &query.outcome {
        q.push(" AND outcome = ").push_bind(outcome.clone());
    }
    if let Some(from) = query.from {
        q.push(" AND started_at >= ").push_bind(from);
    }
    if let Some(to) = query.to {
        q.push(" AND started_at < ").push_bind(to);
    }
    let (cmp, order) = if query.descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some(after) = &query.after {
        q.push(format!(" AND ({key}, call_id) {cmp} ("))
            .push_bind(after.key)
            .push(", ")
            .push_bind(after.call_id)
            .push(")");
    }
    q.push(format!(" ORDER BY {key} {order}, call_id {order} LIMIT "))
        .push_bind(i64::from(query.limit) + 1);
    let mut rows: Vec<CallRow> = q.build_query_as().fetch_all(pool).await?;
    let more = rows.len() > query.limit as usize;
    rows.truncate(query.limit as usize);
    let next = more.then(|| rows.last()).flatten().map(|last| Cursor {
        sort: query.sort,
        descending: query.descending,
        key: last.sort_key,
        call_id: last.call_id,
    });
    Ok((rows, next))
}

/// One call's view.
pub async fn get_call(pool: &PgPool, id: CallId) -> sqlx::Result<Option<CallRow>> {
    sqlx::query_as(&format!(
        "SELECT {}, 0::float8 AS sort_key FROM {} WHERE call_id = $1",
        CALLS.select_list(),
        CALLS.name
    ))
    .bind(id.as_uuid())
    .fetch_optional(pool)
    .await
}

/// A turn in detail: transcripts and replies (auditor and supervisor roles).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct TurnRow {
    pub turn: i32,
    pub recorded_at: DateTime<Utc>,
    pub recording_secs: Option<i32>,
    pub digits: Option<String>,
    pub transcript: Option<String>,
    pub reply: Option<String>,
    pub reply_source: Option<String>,
    pub risk_level: Option<String>,
    pub risk_unknown: bool,
    pub route: Option<String>,
    pub signals: serde_json::Value,
    pub screener_version: Option<String>,
    pub model: Option<String>,
    pub timings: Option<serde_json::Value>,
    pub played_via: Option<String>,
    pub played_at: Option<DateTime<Utc>>,
    pub latency_ms: Option<i64>,
    pub failed_stages: serde_json::Value,
    pub choice: Option<String>,
}

/// A call's turns, in order.
pub async fn turns(pool: &PgPool, id: CallId) -> sqlx::Result<Vec<TurnRow>> {
    sqlx::query_as(&format!(
        "SELECT {} FROM {} WHERE call_id = $1 ORDER BY turn",
        TURNS.select_list(),
        TURNS.name
    ))
    .bind(id.as_uuid())
    .fetch_all(pool)
    .await
}

/// Calls started on one day (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct DayCount {
    pub day: NaiveDate,
    pub calls: i64,
}

/// A count per named value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Count {
    pub value: String,
    pub calls: i64,
}

/// Turn latency, from a turn's recording to its answer being played.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Latency {
    pub turns: i64,
    pub median_ms: Option<f64>,
    pub p90_ms: Option<f64>,
}

/// How long callers waited for a person, over the calls one took.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Wait {
    pub calls: i64,
    pub median_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub max_ms: Option<i64>,
}

/// The human handoff, over the calls in range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Handoff {
    /// From the call's start to a person.
    pub time_to_person: Wait,
    /// From the first sign of risk to a person.
    pub risk_to_person: Wait,
    pub counselor_dials: i64,
    pub counselor_answers: i64,
    /// Counselor answers over counselor dials; `None` without dials.
    pub counselor_answer_rate: Option<f64>,
    pub crisis_line_fallbacks: i64,
    pub hung_up_waiting: i64,
    /// Calls where risk was found and no person has taken the call.
    pub risk_without_person: i64,
}

/// What `/api/stats` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub calls: i64,
    pub calls_per_day: Vec<DayCount>,
    /// Calls by their highest assessed risk (`unassessed` when no turn was assessed).
    pub risk_distribution: Vec<Count>,
    pub escalated: i64,
    /// Escalated calls over all calls; `None` without calls.
    pub escalation_rate: Option<f64>,
    pub turn_latency: Latency,
    pub outcomes: Vec<Count>,
    pub handoff: Handoff,
}

/// Statistics over the calls started in `[from, to)`.
pub async fn stats(
    pool: &PgPool,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> sqlx::Result<Stats> {
    const IN_RANGE: &str = "($1::timestamptz IS NULL OR started_at >= $1) \
                            AND ($2::timestamptz IS NULL OR started_at < $2)";
    let calls_per_day: Vec<DayCount> = sqlx::query_as(&format!(
        "SELECT (started_at AT TIME ZONE 'UTC')::date AS day, count(*) AS calls
           FROM call_views WHERE {IN_RANGE} GROUP BY 1 ORDER BY 1"
    ))
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let risk_distribution: Vec<Count> = sqlx::query_as(&format!(
        "SELECT coalesce(max_risk, 'unassessed') AS value, count(*) AS calls
           FROM call_views WHERE {IN_RANGE}
          GROUP BY 1, coalesce(max_risk_rank, -1) ORDER BY coalesce(max_risk_rank, -1)"
    ))
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let outcomes: Vec<Count> = sqlx::query_as(&format!(
        "SELECT coalesce(outcome, 'live') AS value, count(*) AS calls
           FROM call_views WHERE {IN_RANGE} GROUP BY 1 ORDER BY 1"
    ))
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let (calls, escalated): (i64, i64) = sqlx::query_as(&format!(
        "SELECT count(*), count(*) FILTER (WHERE escalated) FROM call_views WHERE {IN_RANGE}"
    ))
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await?;
    let turn_latency: Latency = sqlx::query_as(&format!(
        "SELECT count(t.latency_ms) AS turns,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY t.latency_ms) AS median_ms,
                percentile_cont(0.9) WITHIN GROUP (ORDER BY t.latency_ms) AS p90_ms
           FROM call_turns t JOIN call_views USING (call_id)
          WHERE t.latency_ms IS NOT NULL AND {IN_RANGE}"
    ))
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await?;
    let wait = |column: &'static str| {
        format!(
            "SELECT count({column}) AS calls,
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY {column}) AS median_ms,
                    percentile_cont(0.9) WITHIN GROUP (ORDER BY {column}) AS p90_ms,
                    max({column}) AS max_ms
               FROM call_views WHERE {column} IS NOT NULL AND {IN_RANGE}"
        )
    };
    let time_to_person: Wait = sqlx::query_as(&wait("time_to_person_ms"))
        .bind(from)
        .bind(to)
        .fetch_one(pool)
        .await?;
    let risk_to_person: Wait = sqlx::query_as(&wait("risk_to_person_ms"))
        .bind(from)
        .bind(to)
        .fetch_one(pool)
        .await?;
    let (
        counselor_dials,
        counselor_answers,
        crisis_line_fallbacks,
        hung_up_waiting,
        risk_without_person,
    ): (i64, i64, i64, i64, i64) = sqlx::query_as(&format!(
        "SELECT coalesce(sum(counselor_dials), 0)::bigint,
                    coalesce(sum(counselor_answers), 0)::bigint,
                    count(*) FILTER (WHERE crisis_line_fallback),
                    count(*) FILTER (WHERE hung_up_waiting),
                    count(*) FILTER (WHERE first_risk_at IS NOT NULL AND person_at IS NULL)
               FROM call_views WHERE {IN_RANGE}"
    ))
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await?;
    #[allow(clippy::cast_precision_loss)]
    let counselor_answer_rate =
        (counselor_dials > 0).then(|| counselor_answers as f64 / counselor_dials as f64);
    let handoff = Handoff {
        time_to_person,
        risk_to_person,
        counselor_dials,
        counselor_answers,
        counselor_answer_rate,
        crisis_line_fallbacks,
        hung_up_waiting,
        risk_without_person,
    };
    #[allow(clippy::cast_precision_loss)]
    let escalation_rate = (calls > 0).then(|| escalated as f64 / calls as f64);
    Ok(Stats {
        calls,
        calls_per_day,
        risk_distribution,
        escalated,
        escalation_rate,
        turn_latency,
        outcomes,
        handoff,
    })
}
