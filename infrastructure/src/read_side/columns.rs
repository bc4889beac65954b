//! The read side's tables as the code sees them: one column table per view, each column with its
//! name, how the projection takes its value from the view, and (for the columns the read side
//! selects) how it shows it from a row read back. The upsert, the replay's COPY, the SELECT lists
//! and the CSV export all follow these tables, so a column is added here and in a new migration;
//! a test compares the tables with the migrated ones.

use std::borrow::Cow;

use application::views::{risk_rank, CallView, TurnView};
use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;

use super::queries::{CallRow, TurnRow};

/// A column's value, typed as PostgreSQL stores it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Uuid(uuid::Uuid),
    Text(Option<Cow<'a, str>>),
    Int(Option<i64>),
    SmallInt(Option<i16>),
    Bool(bool),
    Time(Option<DateTime<Utc>>),
    Json(Option<serde_json::Value>),
}

impl<'a> Cell<'a> {
    fn text(value: &'a str) -> Self {
        Self::Text(Some(Cow::Borrowed(value)))
    }

    fn opt_text(value: Option<&'a String>) -> Self {
        Self::Text(value.map(|v| Cow::Borrowed(v.as_str())))
    }

    /// An enum by its serde name (`"rest_update"`).
    fn named<T: Serialize>(value: Option<&T>) -> Self {
        Self::Text(value.and_then(|v| match serde_json::to_value(v) {
            Ok(serde_json::Value::String(s)) => Some(Cow::Owned(s)),
            _ => None,
        }))
    }

    /// A number, or NULL when it does not fit a `bigint`.
    fn int<T: TryInto<i64>>(value: Option<T>) -> Self {
        Self::Int(value.and_then(|v| v.try_into().ok()))
    }

    /// To the microsecond, truncated, as PostgreSQL keeps it.
    fn time(value: Option<DateTime<Utc>>) -> Self {
        Self::Time(value.map(|t| t.trunc_subsecs(6)))
    }

    fn json<T: Serialize>(value: Option<&T>) -> Self {
        Self::Json(value.and_then(|v| serde_json::to_value(v).ok()))
    }
}

/// One column of a view's table.
#[derive(Debug)]
pub struct Column<V, R> {
    pub name: &'static str,
    /// The value the projection writes, taken from the view.
    pub write: for<'v> fn(&'v V) -> Cell<'v>,
    /// The value the read side shows, taken from a row it read back; `None` for a column that
    /// only the projection and the filters use, which the read side does not select.
    pub read: Option<for<'r> fn(&'r R) -> Cell<'r>>,
}

impl<V, R> Column<V, R> {
    /// A column the read side selects.
    const fn shown(
        name: &'static str,
        write: for<'v> fn(&'v V) -> Cell<'v>,
        read: for<'r> fn(&'r R) -> Cell<'r>,
    ) -> Self {
        Self {
            name,
            write,
            read: Some(read),
        }
    }

    /// A column kept for the projection and the filters, which the read side does not select.
    const fn kept(name: &'static str, write: for<'v> fn(&'v V) -> Cell<'v>) -> Self {
        Self {
            name,
            write,
            read: None,
        }
    }
}

/// A view's table: `V` is the view the projection writes, `R` the row the read side reads back.
#[derive(Debug)]
pub struct Table<V: 'static, R: 'static> {
    pub name: &'static str,
    /// The primary key, which the upsert conflicts on; it updates every other column.
    pub key: &'static [&'static str],
    /// In the migrated table's order.
    pub columns: &'static [Column<V, R>],
}

impl<V, R> Table<V, R> {
    /// Every column's name, in order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.columns.iter().map(|c| c.name)
    }

    /// The columns the read side selects, in order.
    pub fn selected(&self) -> impl Iterator<Item = &Column<V, R>> {
        self.columns.iter().filter(|c| c.read.is_some())
    }

    /// The selected columns, as a SELECT list.
    pub fn select_list(&self) -> String {
        self.selected()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `row`'s selected values, in order.
    pub fn shown<'r>(&'static self, row: &'r R) -> impl Iterator<Item = Cell<'r>> + 'r {
        self.columns
            .iter()
            .filter_map(move |c| c.read.map(|read| read(row)))
    }
}

/// `call_views`: one row per call, for analysts.
pub static CALLS: Table<CallView, CallRow> = Table {
    name: "call_views",
    key: &["call_id"],
    columns: &[
        Column::shown(
            "call_id",
            |v| Cell::Uuid(v.call_id.as_uuid()),
            |r| Cell::Uuid(r.call_id),
        ),
        Column::shown(
            "call_sid",
            |v| Cell::text(&v.call_sid),
            |r| Cell::text(&r.call_sid),
        ),
        Column::shown(
            "caller",
            |v| Cell::text(&v.caller),
            |r| Cell::text(&r.caller),
        ),
        Column::shown(
            "direction",
            |v| Cell::text(&v.direction),
            |r| Cell::text(&r.direction),
        ),
        Column::shown(
            "status",
            |v| Cell::text(&v.status),
            |r| Cell::text(&r.status),
        ),
        Column::shown(
            "started_at",
            |v| Cell::time(Some(v.started_at)),
            |r| Cell::time(Some(r.started_at)),
        ),
        Column::shown(
            "ended_at",
            |v| Cell::time(v.ended_at),
            |r| Cell::time(r.ended_at),
        ),
        Column::shown(
            "duration_secs",
            |v| Cell::int(v.duration_secs),
            |r| Cell::int(r.duration_secs),
        ),
        Column::shown(
            "turns",
            |v| Cell::int(Some(v.turns)),
            |r| Cell::int(Some(r.turns)),
        ),
        Column::shown(
            "max_risk",
            |v| Cell::named(v.max_risk.as_ref()),
            |r| Cell::opt_text(r.max_risk.as_ref()),
        ),
        Column::kept("max_risk_rank", |v| {
            Cell::SmallInt(v.max_risk.map(|level| i16::from(risk_rank(level))))
        }),
        Column::shown(
            "escalated",
            |v| Cell::Bool(v.escalated),
            |r| Cell::Bool(r.escalated),
        ),
        Column::shown(
            "escalation_reason",
            |v| Cell::named(v.escalation_reason.as_ref()),
            |r| Cell::opt_text(r.escalation_reason.as_ref()),
        ),
        Column::shown(
            "outcome",
            |v| Cell::named(v.outcome.as_ref()),
            |r| Cell::opt_text(r.outcome.as_ref()),
        ),
        Column::shown(
            "mean_turn_latency_ms",
            |v| Cell::int(v.mean_turn_latency_ms),
            |r| Cell::int(r.mean_turn_latency_ms),
        ),
        Column::kept("last_sequence", |v| Cell::int(Some(v.last_sequence))),
        Column::shown(
            "first_risk_at",
            |v| Cell::time(v.first_risk_at),
            |r| Cell::time(r.first_risk_at),
        ),
        Column::shown(
            "person_at",
            |v| Cell::time(v.person_at),
            |r| Cell::time(r.person_at),
        ),
        Column::shown(
            "time_to_person_ms",
            |v| Cell::int(v.time_to_person_ms),
            |r| Cell::int(r.time_to_person_ms),
        ),
        Column::shown(
            "risk_to_person_ms",
            |v| Cell::int(v.risk_to_person_ms),
            |r| Cell::int(r.risk_to_person_ms),
        ),
        Column::shown(
            "counselor_dials",
            |v| Cell::int(Some(v.counselor_dials)),
            |r| Cell::int(Some(r.counselor_dials)),
        ),
        Column::shown(
            "counselor_answers",
            |v| Cell::int(Some(v.counselor_answers)),
            |r| Cell::int(Some(r.counselor_answers)),
        ),
        Column::shown(
            "crisis_line_fallback",
            |v| Cell::Bool(v.crisis_line_fallback),
            |r| Cell::Bool(r.crisis_line_fallback),
        ),
        Column::shown(
            "hung_up_waiting",
            |v| Cell::Bool(v.hung_up_waiting),
            |r| Cell::Bool(r.hung_up_waiting),
        ),
    ],
};

/// `call_turns`: one row per turn, the detail behind the supervisor and auditor roles.
pub static TURNS: Table<TurnView, TurnRow> = Table {
    name: "call_turns",
    key: &["call_id", "turn"],
    columns: &[
        // The read side asks for one call's turns, so it does not select the call.
        Column::kept("call_id", |t| Cell::Uuid(t.call_id.as_uuid())),
        Column::shown(
            "turn",
            |t| Cell::int(Some(t.turn)),
            |r| Cell::int(Some(r.turn)),
        ),
        Column::shown(
            "recorded_at",
            |t| Cell::time(Some(t.recorded_at)),
            |r| Cell::time(Some(r.recorded_at)),
        ),
        Column::shown(
            "recording_secs",
            |t| Cell::int(t.recording_secs),
            |r| Cell::int(r.recording_secs),
        ),
        Column::shown(
            "digits",
            |t| Cell::opt_text(t.digits.as_ref()),
            |r| Cell::opt_text(r.digits.as_ref()),
        ),
        Column::shown(
            "transcript",
            |t| Cell::opt_text(t.transcript.as_ref()),
            |r| Cell::opt_text(r.transcript.as_ref()),
        ),
        Column::shown(
            "reply",
            |t| Cell::opt_text(t.reply.as_ref()),
            |r| Cell::opt_text(r.reply.as_ref()),
        ),
        Column::shown(
            "reply_source",
            |t| Cell::named(t.reply_source.as_ref()),
            |r| Cell::opt_text(r.reply_source.as_ref()),
        ),
        Column::shown(
            "risk_level",
            |t| Cell::named(t.risk_level.as_ref()),
            |r| Cell::opt_text(r.risk_level.as_ref()),
        ),
        Column::shown(
            "risk_unknown",
            |t| Cell::Bool(t.risk_unknown),
            |r| Cell::Bool(r.risk_unknown),
        ),
        Column::shown(
            "route",
            |t| Cell::named(t.route.as_ref()),
            |r| Cell::opt_text(r.route.as_ref()),
        ),
        Column::shown(
            "signals",
            |t| Cell::json(Some(&t.signals)),
            |r| Cell::json(Some(&r.signals)),
        ),
        Column::shown(
            "screener_version",
            |t| Cell::opt_text(t.screener_version.as_ref()),
            |r| Cell::opt_text(r.screener_version.as_ref()),
        ),
        Column::shown(
            "model",
            |t| Cell::opt_text(t.model.as_ref()),
            |r| Cell::opt_text(r.model.as_ref()),
        ),
        Column::shown(
            "timings",
            |t| Cell::json(t.timings.as_ref()),
            |r| Cell::json(r.timings.as_ref()),
        ),
        Column::shown(
            "played_via",
            |t| Cell::named(t.played_via.as_ref()),
            |r| Cell::opt_text(r.played_via.as_ref()),
        ),
        Column::shown(
            "played_at",
            |t| Cell::time(t.played_at),
            |r| Cell::time(r.played_at),
        ),
        Column::shown(
            "latency_ms",
            |t| Cell::int(t.latency_ms),
            |r| Cell::int(r.latency_ms),
        ),
        Column::shown(
            "failed_stages",
            |t| Cell::json(Some(&t.failed_stages)),
            |r| Cell::json(Some(&r.failed_stages)),
        ),
        Column::shown(
            "choice",
            |t| Cell::named(t.choice.as_ref()),
            |r| Cell::opt_text(r.choice.as_ref()),
        ),
    ],
};
