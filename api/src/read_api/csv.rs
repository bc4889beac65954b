//! The call list as CSV: the columns the read side selects, in its table's order, with values a
//! spreadsheet will not run.

use std::borrow::Cow;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use infrastructure::read_side::columns::{Cell, CALLS};
use infrastructure::read_side::queries::{self, CallQuery, CallRow};
use sqlx::PgPool;

use crate::error::ApiError;

/// The most rows one CSV export holds.
const MAX_ROWS: usize = 100_000;

/// Every call `query` matches (up to `MAX_ROWS`), as a CSV attachment.
pub(super) async fn export(pool: &PgPool, mut query: CallQuery) -> Result<Response, ApiError> {
    query.limit = 500;
    // A byte-order mark, so that spreadsheets read the file as UTF-8 (the masked numbers' dots).
    let mut csv = String::from('\u{feff}');
    csv.push_str(&header());
    let mut rows = 0usize;
    loop {
        let (calls, next) = queries::list_calls(pool, &query).await?;
        rows += calls.len();
        calls.iter().for_each(|c| row(&mut csv, c));
        match next {
            Some(cursor) if rows < MAX_ROWS => query.after = Some(cursor),
            _ => break,
        }
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"calls.csv\"",
            ),
        ],
        csv,
    )
        .into_response())
}

fn header() -> String {
    let mut header = CALLS
        .selected()
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(",");
    header.push('\n');
    header
}

fn row(out: &mut String, call: &CallRow) {
    for (i, cell) in CALLS.shown(call).enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(out, &text(cell));
    }
    out.push('\n');
}

/// A value as the export writes it: empty for NULL, times in RFC 3339.
fn text(cell: Cell<'_>) -> Cow<'_, str> {
    let shown = |value: Option<String>| Cow::Owned(value.unwrap_or_default());
    match cell {
        Cell::Uuid(id) => Cow::Owned(id.to_string()),
        Cell::Text(text) => text.unwrap_or_default(),
        Cell::Int(n) => shown(n.map(|n| n.to_string())),
        Cell::SmallInt(n) => shown(n.map(|n| n.to_string())),
        Cell::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
        Cell::Time(t) => shown(t.map(|t| t.to_rfc3339())),
        Cell::Json(v) => shown(v.map(|v| v.to_string())),
    }
}

/// A CSV field, quoted when it must be, and never read as a formula by a spreadsheet: a value
/// that starts with any of OWASP's formula characters (`=`, `+`, `-`, `@`, TAB, CR) is quoted
/// and led by `'`, which spreadsheets take as "this is text". That includes the masked numbers
/// (`+1••••••••23`), which a spreadsheet would otherwise read as a formula.
fn field(out: &mut String, value: &str) {
    let formula = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if formula || value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        if formula {
            out.push('\'');
        }
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The export's bytes, pinned: its columns follow the read side's table, and spreadsheets
    /// and scripts read them by position.
    #[test]
    fn a_row_is_written_as_pinned() {
        assert_eq!(
            header(),
            "call_id,call_sid,caller,direction,status,started_at,ended_at,duration_secs,turns,\
             max_risk,escalated,escalation_reason,outcome,mean_turn_latency_ms,first_risk_at,\
             person_at,time_to_person_ms,risk_to_person_ms,counselor_dials,counselor_answers,\
             crisis_line_fallback,hung_up_waiting\n"
        );
        let started_at = chrono::DateTime::parse_from_rfc3339("2026-11-25T10:00:00.123456Z")
            .expect("a time")
            .to_utc();
        let call = CallRow {
            call_id: uuid::Uuid::nil(),
            call_sid: "CA00".into(),
            caller: "+1••••••••23".into(),
            direction: "inbound".into(),
            status: "completed".into(),
            started_at,
            ended_at: None,
            duration_secs: Some(42),
            turns: 2,
            max_risk: Some("high".into()),
            escalated: true,
            escalation_reason: Some("=risk, \"high\"".into()),
            outcome: None,
            mean_turn_latency_ms: Some(1500),
            first_risk_at: None,
            person_at: None,
            time_to_person_ms: Some(12_000),
            risk_to_person_ms: None,
            counselor_dials: 1,
            counselor_answers: 1,
            crisis_line_fallback: false,
            hung_up_waiting: false,
            sort_key: 0.0,
        };
        let mut out = String::new();
        row(&mut out, &call);
        assert_eq!(
            out,
            "00000000-0000-0000-0000-000000000000,CA00,\"'+1••••••••23\",inbound,completed,\
             2026-11-25T10:00:00.123456+00:00,,42,2,high,true,\"'=risk, \"\"high\"\"\",,1500,,,12000,,1,1,\
             false,false\n"
        );
    }

    #[test]
    fn every_owasp_formula_prefix_is_neutralised() {
        for value in [
            "=1+1",
            "+1",
            "-1",
            "@SUM(A1)",
            "\tcmd",
            "\rcmd",
            "+1••••••••23",
        ] {
            let mut out = String::new();
            field(&mut out, value);
            assert!(out.starts_with("\"'"), "{value:?} became {out:?}");
            assert!(out.ends_with('"'), "{value:?} became {out:?}");
        }
        let mut out = String::new();
        field(&mut out, "completed");
        assert_eq!(out, "completed");
    }
}
