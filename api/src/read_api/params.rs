//! The read API's query parameters, deserialised by serde. A parameter an endpoint does not take
//! is refused rather than silently ignored (a misspelt filter would otherwise widen the answer),
//! and a bad value is refused with a message that names the parameter and what it must be.

use std::borrow::Cow;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use domain::risk::RiskLevel;
use infrastructure::read_side::queries::{CallQuery, Cursor, SortKey};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};

use crate::error::ApiError;

/// An endpoint's query parameters.
pub trait Takes: DeserializeOwned {
    /// Every parameter it takes, in the order a refusal lists them.
    const NAMES: &'static [&'static str];
}

/// The query string as `T`, or the API's refusal.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: Takes, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parse(parts.uri.query().unwrap_or_default()).map(Params)
    }
}

/// Parses `query`: unknown names first, then the values.
pub fn parse<T: Takes>(query: &str) -> Result<T, ApiError> {
    let mut pairs: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if !T::NAMES.contains(&name.as_ref()) {
            return Err(ApiError::Malformed(format!(
                "unknown parameter '{name}': this endpoint takes {}",
                T::NAMES.join(", ")
            )));
        }
        // A repeated parameter's last value counts, rather than the repetition being refused.
        pairs.retain(|(known, _)| *known != name);
        pairs.push((name, value));
    }
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    serde_urlencoded::from_str(&query).map_err(|error| ApiError::Malformed(error.to_string()))
}

/// The refusal of a bad value.
pub fn bad(name: &str, expected: &str) -> String {
    format!("parameter {name} must be {expected}")
}

/// A value `parse` reads from the parameter's text, or the refusal naming `name`.
fn parsed<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    name: &str,
    expected: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse(&text)
        .map(Some)
        .ok_or_else(|| D::Error::custom(bad(name, expected)))
}

/// A time bound: an RFC 3339 time, or a date (its midnight, UTC).
fn time(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
        })
        .ok()
}

const TIME: &str = "a date (2026-11-25) or an RFC 3339 time";

fn from<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    parsed(d, "from", TIME, time)
}

fn to<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    parsed(d, "to", TIME, time)
}

fn risk_at_least<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RiskLevel>, D::Error> {
    let expected = "none, low, moderate, high or imminent";
    parsed(d, "risk_at_least", expected, RiskLevel::parse)
}

fn escalated<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    parsed(d, "escalated", "true or false", |v| v.parse().ok())
}

fn sort<'de, D: Deserializer<'de>>(d: D) -> Result<Option<(SortKey, bool)>, D::Error> {
    let expected = "started_at, duration_secs, max_risk or turns, with - for descending";
    parsed(d, "sort", expected, SortKey::parse)
}

fn limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let within = |n: &u32| (1..=500).contains(n);
    parsed(d, "limit", "a number from 1 to 500", |v| {
        v.parse().ok().filter(within)
    })
}

fn cursor<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cursor>, D::Error> {
    parsed(d, "cursor", "a next_cursor this endpoint returned", |v| {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    })
}

/// The cursor of the page after one ending at `cursor`, as `cursor` takes it back.
pub fn encode_cursor(cursor: &Cursor) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(cursor).unwrap_or_default())
}

/// How the call list is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Json,
    /// Every match, as CSV.
    Csv,
}

fn format<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Format>, D::Error> {
    parsed(d, "format", "json or csv", |v| match v {
        "json" => Some(Format::Json),
        "csv" => Some(Format::Csv),
        _ => None,
    })
}

fn at<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let expected = "an event sequence number, from 1";
    parsed(d, "at", expected, |v| v.parse().ok().filter(|n| *n >= 1))
}

/// `GET /api/calls`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    pub status: Option<String>,
    #[serde(default, deserialize_with = "risk_at_least")]
    pub risk_at_least: Option<RiskLevel>,
    #[serde(default, deserialize_with = "escalated")]
    pub escalated: Option<bool>,
    pub outcome: Option<String>,
    #[serde(default, deserialize_with = "from")]
    pub from: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "to")]
    pub to: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "sort")]
    pub sort: Option<(SortKey, bool)>,
    #[serde(default, deserialize_with = "limit")]
    pub limit: Option<u32>,
    #[serde(default, deserialize_with = "cursor")]
    pub cursor: Option<Cursor>,
    #[serde(default, deserialize_with = "format")]
    pub format: Option<Format>,
}

impl Takes for ListParams {
    const NAMES: &'static [&'static str] = &[
        "status",
        "risk_at_least",
        "escalated",
        "outcome",
        "from",
        "to",
        "sort",
        "limit",
        "cursor",
        "format",
    ];
}

impl TryFrom<ListParams> for CallQuery {
    type Error = ApiError;

    fn try_from(params: ListParams) -> Result<Self, ApiError> {
        let defaults = CallQuery::default();
        let (sort, descending) = params.sort.unwrap_or((defaults.sort, defaults.descending));
        if let Some(cursor) = &params.cursor {
            if (cursor.sort, cursor.descending) != (sort, descending) {
                return Err(ApiError::Malformed(
                    "the cursor was made for another sort: ask again with the same sort".into(),
                ));
            }
        }
        Ok(CallQuery {
            status: params.status,
            risk_at_least: params.risk_at_least,
            escalated: params.escalated,
            outcome: params.outcome,
            from: params.from,
            to: params.to,
            sort,
            descending,
            limit: params.limit.unwrap_or(defaults.limit),
            after: params.cursor,
        })
    }
}

/// `GET /api/stats`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsParams {
    #[serde(default, deserialize_with = "from")]
    pub from: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "to")]
    pub to: Option<DateTime<Utc>>,
}

impl Takes for StatsParams {
    const NAMES: &'static [&'static str] = &["from", "to"];
}

/// `GET /api/calls/{id}/state`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateParams {
    /// The event's sequence number; the last by default.
    #[serde(default, deserialize_with = "at")]
    pub at: Option<i64>,
}

impl Takes for StateParams {
    const NAMES: &'static [&'static str] = &["at"];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal<T: Takes + std::fmt::Debug>(query: &str) -> String {
        parse::<T>(query).expect_err("refused").to_string()
    }

    #[test]
    fn every_parameter_the_list_takes_is_read() {
        let cursor = encode_cursor(&Cursor {
            sort: SortKey::Turns,
            descending: true,
            key: 2.0,
            call_id: uuid::Uuid::nil(),
        });
        let params: ListParams = parse(&format!(
            "status=completed&risk_at_least=high&escalated=true&outcome=hung_up&from=2026-11-25\
             &to=2026-11-26T00:00:00Z&sort=-turns&limit=5&cursor={cursor}&format=csv"
        ))
        .expect("parsed");
        let query = CallQuery::try_from(params).expect("a query");
        assert_eq!(query.status.as_deref(), Some("completed"));
        assert_eq!(query.risk_at_least, Some(RiskLevel::High));
        assert_eq!(query.escalated, Some(true));
        assert_eq!(query.outcome.as_deref(), Some("hung_up"));
        assert_eq!(query.from, time("2026-11-25T00:00:00Z"));
        assert_eq!(query.to, time("2026-11-26"));
        assert_eq!(
            (query.sort, query.descending, query.limit),
            (SortKey::Turns, true, 5)
        );
        assert!(query.after.is_some());
        let params: StatsParams = parse("from=2026-11-25&to=2026-11-26").expect("parsed");
        assert!(params.from.is_some() && params.to.is_some());
        let params: StateParams = parse("at=3").expect("parsed");
        assert_eq!(params.at, Some(3));
    }

    #[test]
    fn refusals_name_the_parameter_and_what_it_must_be() {
        assert_eq!(
            refusal::<ListParams>("limit=0&colour=red"),
            "malformed request: unknown parameter 'colour': this endpoint takes status, \
             risk_at_least, escalated, outcome, from, to, sort, limit, cursor, format"
        );
        assert_eq!(
            refusal::<StatsParams>("to=soon"),
            "malformed request: parameter to must be a date (2026-11-25) or an RFC 3339 time"
        );
        assert_eq!(
            refusal::<ListParams>("limit=501"),
            "malformed request: parameter limit must be a number from 1 to 500"
        );
        assert_eq!(
            refusal::<ListParams>("format="),
            "malformed request: parameter format must be json or csv"
        );
        assert_eq!(
            refusal::<StateParams>("at=0"),
            "malformed request: parameter at must be an event sequence number, from 1"
        );
        let cursor = encode_cursor(&Cursor {
            sort: SortKey::StartedAt,
            descending: true,
            key: 0.0,
            call_id: uuid::Uuid::nil(),
        });
        let params: ListParams = parse(&format!("sort=turns&cursor={cursor}")).expect("parsed");
        assert_eq!(
            CallQuery::try_from(params)
                .expect_err("refused")
                .to_string(),
            "malformed request: the cursor was made for another sort: ask again with the same sort"
        );
    }

    #[test]
    fn a_repeated_parameter_counts_its_last_value() {
        let params: ListParams = parse("limit=5&status=a&limit=7").expect("parsed");
        assert_eq!(
            (params.limit, params.status.as_deref()),
            (Some(7), Some("a"))
        );
    }
}
