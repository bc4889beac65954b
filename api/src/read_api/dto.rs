//! What the read API answers, with its OpenAPI schemas: converted from the read side's rows, so
//! that the published shapes are declared here, apart from the database's. The schema names are
//! the ones the API has always published.

use chrono::{DateTime, NaiveDate, Utc};
use domain::CallId;
use infrastructure::event_store::audit::AuditEvent;
use infrastructure::read_side::queries::{
    CallRow, Count, DayCount, Handoff, Latency, Stats, TurnRow, Wait,
};
use serde::Serialize;
use utoipa::ToSchema;

/// A call as analysts see it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = CallRow)]
pub struct CallOut {
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
    /// The first sign of risk in the call.
    pub first_risk_at: Option<DateTime<Utc>>,
    /// When a counselor took the call.
    pub person_at: Option<DateTime<Utc>>,
    pub time_to_person_ms: Option<i64>,
    pub risk_to_person_ms: Option<i64>,
    pub counselor_dials: i32,
    pub counselor_answers: i32,
    pub crisis_line_fallback: bool,
    pub hung_up_waiting: bool,
}

impl From<CallRow> for CallOut {
    fn from(row: CallRow) -> Self {
        Self {
            call_id: row.call_id,
            call_sid: row.call_sid,
            caller: row.caller,
            direction: row.direction,
            status: row.status,
            started_at: row.started_at,
            ended_at: row.ended_at,
            duration_secs: row.duration_secs,
            turns: row.turns,
            max_risk: row.max_risk,
            escalated: row.escalated,
            escalation_reason: row.escalation_reason,
            outcome: row.outcome,
            mean_turn_latency_ms: row.mean_turn_latency_ms,
            first_risk_at: row.first_risk_at,
            person_at: row.person_at,
            time_to_person_ms: row.time_to_person_ms,
            risk_to_person_ms: row.risk_to_person_ms,
            counselor_dials: row.counselor_dials,
            counselor_answers: row.counselor_answers,
            crisis_line_fallback: row.crisis_line_fallback,
            hung_up_waiting: row.hung_up_waiting,
        }
    }
}

/// A page of the call list.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallPage {
    pub calls: Vec<CallOut>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// A turn in detail: transcripts and replies (auditor and supervisor roles).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = TurnRow)]
pub struct TurnOut {
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
    #[schema(value_type = Vec<String>)]
    pub signals: serde_json::Value,
    pub screener_version: Option<String>,
    pub model: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub timings: Option<serde_json::Value>,
    pub played_via: Option<String>,
    pub played_at: Option<DateTime<Utc>>,
    pub latency_ms: Option<i64>,
    #[schema(value_type = Vec<String>)]
    pub failed_stages: serde_json::Value,
    pub choice: Option<String>,
}

impl From<TurnRow> for TurnOut {
    fn from(row: TurnRow) -> Self {
        Self {
            turn: row.turn,
            recorded_at: row.recorded_at,
            recording_secs: row.recording_secs,
            digits: row.digits,
            transcript: row.transcript,
            reply: row.reply,
            reply_source: row.reply_source,
            risk_level: row.risk_level,
            risk_unknown: row.risk_unknown,
            route: row.route,
            signals: row.signals,
            screener_version: row.screener_version,
            model: row.model,
            timings: row.timings,
            played_via: row.played_via,
            played_at: row.played_at,
            latency_ms: row.latency_ms,
            failed_stages: row.failed_stages,
            choice: row.choice,
        }
    }
}

/// A call's turns.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallTurns {
    #[schema(value_type = String)]
    pub call_id: CallId,
    pub turns: Vec<TurnOut>,
}

/// One stored event, as an auditor sees it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = AuditEvent)]
pub struct AuditEventOut {
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub global_position: i64,
    pub recorded_at: DateTime<Utc>,
    /// The event's link in its call's hash chain, hex.
    pub hash: String,
}

impl From<AuditEvent> for AuditEventOut {
    fn from(event: AuditEvent) -> Self {
        Self {
            sequence: event.sequence,
            event_type: event.event_type,
            event_version: event.event_version,
            payload: event.payload,
            metadata: event.metadata,
            global_position: event.global_position,
            recorded_at: event.recorded_at,
            hash: event.hash,
        }
    }
}

/// A call's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallHistory {
    #[schema(value_type = String)]
    pub call_id: CallId,
    pub events: Vec<AuditEventOut>,
}

/// Calls started on one day (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = DayCount)]
pub struct DayCountOut {
    pub day: NaiveDate,
    pub calls: i64,
}

/// A count per named value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Count)]
pub struct CountOut {
    pub value: String,
    pub calls: i64,
}

/// Turn latency, from a turn's recording to its answer being played.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = Latency)]
pub struct LatencyOut {
    pub turns: i64,
    pub median_ms: Option<f64>,
    pub p90_ms: Option<f64>,
}

/// What `/api/stats` answers.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = Stats)]
pub struct StatsOut {
    pub calls: i64,
    pub calls_per_day: Vec<DayCountOut>,
    /// Calls by their highest assessed risk (`unassessed` when no turn was assessed).
    pub risk_distribution: Vec<CountOut>,
    pub escalated: i64,
    /// Escalated calls over all calls; `None` without calls.
    pub escalation_rate: Option<f64>,
    pub turn_latency: LatencyOut,
    pub outcomes: Vec<CountOut>,
    pub handoff: HandoffOut,
}

/// How long callers waited for a person, over the calls one took.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = Wait)]
pub struct WaitOut {
    pub calls: i64,
    pub median_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub max_ms: Option<i64>,
}

/// The human handoff: time to a person, and how the dials went.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = Handoff)]
pub struct HandoffOut {
    /// From the call's start to a counselor taking it.
    pub time_to_person: WaitOut,
    /// From the first sign of risk to a counselor taking the call.
    pub risk_to_person: WaitOut,
    pub counselor_dials: i64,
    pub counselor_answers: i64,
    /// Counselor answers over counselor dials; `None` without dials.
    pub counselor_answer_rate: Option<f64>,
    /// Calls put through to the crisis line because no counselor took them.
    pub crisis_line_fallbacks: i64,
    /// Calls whose caller hung up while a person's line rang.
    pub hung_up_waiting: i64,
    /// Calls where risk was found and no person has taken the call.
    pub risk_without_person: i64,
}

impl From<Wait> for WaitOut {
    fn from(wait: Wait) -> Self {
        Self {
            calls: wait.calls,
            median_ms: wait.median_ms,
            p90_ms: wait.p90_ms,
            max_ms: wait.max_ms,
        }
    }
}

impl From<Handoff> for HandoffOut {
    fn from(handoff: Handoff) -> Self {
        Self {
            time_to_person: handoff.time_to_person.into(),
            risk_to_person: handoff.risk_to_person.into(),
            counselor_dials: handoff.counselor_dials,
            counselor_answers: handoff.counselor_answers,
            counselor_answer_rate: handoff.counselor_answer_rate,
            crisis_line_fallbacks: handoff.crisis_line_fallbacks,
            hung_up_waiting: handoff.hung_up_waiting,
            risk_without_person: handoff.risk_without_person,
        }
    }
}

impl From<Stats> for StatsOut {
    fn from(stats: Stats) -> Self {
        let counts = |counts: Vec<Count>| counts.into_iter().map(CountOut::from).collect();
        Self {
            calls: stats.calls,
            calls_per_day: stats
                .calls_per_day
                .into_iter()
                .map(DayCountOut::from)
                .collect(),
            risk_distribution: counts(stats.risk_distribution),
            escalated: stats.escalated,
            escalation_rate: stats.escalation_rate,
            turn_latency: stats.turn_latency.into(),
            outcomes: counts(stats.outcomes),
            handoff: stats.handoff.into(),
        }
    }
}

impl From<DayCount> for DayCountOut {
    fn from(count: DayCount) -> Self {
        Self {
            day: count.day,
            calls: count.calls,
        }
    }
}

impl From<Count> for CountOut {
    fn from(count: Count) -> Self {
        Self {
            value: count.value,
            calls: count.calls,
        }
    }
}

impl From<Latency> for LatencyOut {
    fn from(latency: Latency) -> Self {
        Self {
            turns: latency.turns,
            median_ms: latency.median_ms,
            p90_ms: latency.p90_ms,
        }
    }
}
