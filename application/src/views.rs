//! The read side's models: what analysts and supervisors see of a call, folded from its events.
//! The fold is pure and deterministic, so the live projection (one event at a time, in the
//! database) and a replay (every event, in memory) give the same rows, and a test can check
//! either against a fresh fold of the event store.

use chrono::{DateTime, Utc};
use domain::call::{
    Analysis, CallEvent, DialResult, DialedLine, EscalationReason, PlayedVia, ReplySource, Stage,
    StageTimings,
};
use domain::risk::{RiskLevel, Route, Signal};
use domain::{CallId, CallStatus, Choice};
use serde::{Deserialize, Serialize};

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The caller was connected to a person (they asked, or the risk sent them).
    Escalated,
    /// The caller chose to end the call.
    EndedByCaller,
    /// The call ended without a choice (the caller hung up).
    HungUp,
    /// Twilio could not connect the call (busy, no answer, failed, canceled).
    NotConnected,
}

/// One row per call: what analysts see. No phone number in full, no transcript, no audio.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallView {
    pub call_id: CallId,
    pub call_sid: String,
    /// The caller's number, masked (`+1•••••••23`).
    pub caller: String,
    pub direction: String,
    /// Twilio's last reported status (`in-progress` until it reports one).
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_secs: Option<u32>,
    /// Recorded turns.
    pub turns: u32,
    /// The highest assessed risk of any turn, once one was assessed.
    pub max_risk: Option<RiskLevel>,
    pub escalated: bool,
    pub escalation_reason: Option<EscalationReason>,
    /// Set when the call ends.
    pub outcome: Option<Outcome>,
    /// Mean time from a turn's recording to its answer being played, over the turns played.
    pub mean_turn_latency_ms: Option<u64>,
    /// The last event folded in.
    pub last_sequence: i64,
    /// The first sign of risk: a turn or an answer assessed above none, or an escalation for
    /// risk.
    pub first_risk_at: Option<DateTime<Utc>>,
    /// When a person took the call: the counselor pressed 1 after the whisper (or, without
    /// whispers, the start of the conversation a dial reported).
    pub person_at: Option<DateTime<Utc>>,
    /// From the call's start to a person.
    pub time_to_person_ms: Option<u64>,
    /// From the first sign of risk to a person.
    pub risk_to_person_ms: Option<u64>,
    /// Counselor dials that ended, and how many of them a counselor took.
    pub counselor_dials: u32,
    pub counselor_answers: u32,
    /// The crisis line was dialled because no counselor took the call.
    pub crisis_line_fallback: bool,
    /// The caller hung up while a person's line rang.
    pub hung_up_waiting: bool,
}

/// One row per turn: the detail behind the auditor and supervisor roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnView {
    pub call_id: CallId,
    pub turn: u32,
    pub recorded_at: DateTime<Utc>,
    pub recording_secs: Option<u32>,
    pub digits: Option<String>,
    /// Sensitive: what the caller said.
    pub transcript: Option<String>,
    pub reply: Option<String>,
    pub reply_source: Option<ReplySource>,
    pub risk_level: Option<RiskLevel>,
    pub risk_unknown: bool,
    pub route: Option<Route>,
    pub signals: Vec<Signal>,
    pub screener_version: Option<String>,
    pub model: Option<String>,
    pub timings: Option<StageTimings>,
    pub played_via: Option<PlayedVia>,
    pub played_at: Option<DateTime<Utc>>,
    /// From the recording to the answer being played.
    pub latency_ms: Option<u64>,
    pub failed_stages: Vec<Stage>,
    pub choice: Option<Choice>,
}

/// A call's views as they stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallProjection {
    pub view: CallView,
    pub turns: Vec<TurnView>,
    /// Whether the caller chose to end the call (kept to name the outcome).
    pub caller_ended: bool,
}

fn rank(level: RiskLevel) -> u8 {
    match level {
        RiskLevel::None => 0,
        RiskLevel::Low => 1,
        RiskLevel::Moderate => 2,
        RiskLevel::High => 3,
        RiskLevel::Imminent => 4,
    }
}

/// The numeric rank of a level, for "risk at least" filters.
pub fn risk_rank(level: RiskLevel) -> u8 {
    rank(level)
}

impl CallProjection {
    /// Folds `event` (number `sequence` of call `id`) into `state`. The first event must be
    /// `CallStarted`; anything before it, or already folded, changes nothing.
    pub fn fold(state: Option<Self>, id: CallId, sequence: i64, event: &CallEvent) -> Option<Self> {
        let Some(mut state) = state else {
            return match event {
                CallEvent::CallStarted {
                    call_sid,
                    from,
                    direction,
                    started_at,
                    ..
                } => Some(Self {
                    view: CallView {
                        call_id: id,
                        call_sid: call_sid.to_string(),
                        caller: from.masked(),
                        direction: direction.clone(),
                        status: CallStatus::InProgress.as_str().to_owned(),
                        started_at: *started_at,
                        ended_at: None,
                        duration_secs: None,
                        turns: 0,
                        max_risk: None,
                        escalated: false,
                        escalation_reason: None,
                        outcome: None,
                        mean_turn_latency_ms: None,
                        last_sequence: sequence,
                        first_risk_at: None,
                        person_at: None,
                        time_to_person_ms: None,
                        risk_to_person_ms: None,
                        counselor_dials: 0,
                        counselor_answers: 0,
                        crisis_line_fallback: false,
                        hung_up_waiting: false,
                    },
                    turns: Vec::new(),
                    caller_ended: false,
                }),
                _ => None,
            };
        };
        if sequence <= state.view.last_sequence {
            return Some(state);
        }
        state.apply(event);
        state.view.last_sequence = sequence;
        Some(state)
    }

    fn start_turn(
        &mut self,
        turn: u32,
        received_at: chrono::DateTime<chrono::Utc>,
        recording_secs: Option<u32>,
        digits: Option<String>,
    ) {
        self.turns.push(TurnView {
            call_id: self.view.call_id,
            turn,
            recorded_at: received_at,
            recording_secs,
            digits,
            transcript: None,
            reply: None,
            reply_source: None,
            risk_level: None,
            risk_unknown: false,
            route: None,
            signals: Vec::new(),
            screener_version: None,
            model: None,
            timings: None,
            played_via: None,
            played_at: None,
            latency_ms: None,
            failed_stages: Vec::new(),
            choice: None,
        });
        self.view.turns = u32::try_from(self.turns.len()).unwrap_or(u32::MAX);
    }

    fn turn_mut(&mut self, turn: u32) -> Option<&mut TurnView> {
        self.turns.iter_mut().find(|t| t.turn == turn)
    }

    /// Notes the first sign of risk, at `at`: words or an assessment at `level` above none, or
    /// (`None`) an escalation for risk.
    fn risk_seen(&mut self, level: Option<RiskLevel>, at: DateTime<Utc>) {
        if level != Some(RiskLevel::None) && self.view.first_risk_at.is_none() {
            self.view.first_risk_at = Some(at);
            self.timed_person();
        }
    }

    /// A person took the call at `at` (the first time counts).
    fn person_reached(&mut self, at: DateTime<Utc>) {
        if self.view.person_at.is_none() {
            self.view.person_at = Some(at);
            self.timed_person();
        }
    }

    fn timed_person(&mut self) {
        let since = |from: DateTime<Utc>, to: DateTime<Utc>| {
            u64::try_from((to - from).num_milliseconds()).ok()
        };
        let Some(person) = self.view.person_at else {
            return;
        };
        self.view.time_to_person_ms = since(self.view.started_at, person);
        self.view.risk_to_person_ms = self.view.first_risk_at.and_then(|risk| since(risk, person));
    }

    fn raise_risk(&mut self, level: RiskLevel) {
        if self.view.max_risk.is_none_or(|max| rank(level) > rank(max)) {
            self.view.max_risk = Some(level);
        }
    }

    fn apply(&mut self, event: &CallEvent) {
        match event {
            CallEvent::CallStarted { .. }
            | CallEvent::LateCallbackReceived { .. }
            | CallEvent::DirectQuestionAsked { .. }
            | CallEvent::AnswerDeferred { .. }
            | CallEvent::LanguageChosen { .. }
            | CallEvent::RelaySessionStarted { .. }
            | CallEvent::ReplyInterrupted { .. }
            | CallEvent::RelaySessionEnded { .. }
            | CallEvent::CallRecordingReceived { .. }
            | CallEvent::CallRecordingKept { .. }
            | CallEvent::CounselorAnswered { .. }
            | CallEvent::CounselorDeclined { .. }
            // Becomes its turn's transcription when the recording comes.
            | CallEvent::EarlyTranscriptionReceived { .. } => {}
            CallEvent::CounselorAccepted { at, .. } => {
                self.view.counselor_answers += 1;
                self.person_reached(*at);
            }
            CallEvent::DialEnded {
                line,
                result,
                talk_secs,
                at,
                ..
            } => {
                if *line == DialedLine::Counselor {
                    self.view.counselor_dials += 1;
                }
                if *result == DialResult::CallerHungUp {
                    self.view.hung_up_waiting = true;
                }
                // Without a whisper, the dial's report is the first word of a conversation.
                if result.talked() {
                    let talked = chrono::Duration::seconds(i64::from(talk_secs.unwrap_or(0)));
                    if *line == DialedLine::Counselor && self.view.person_at.is_none() {
                        self.view.counselor_answers += 1;
                    }
                    self.person_reached(*at - talked);
                }
            }
            // Words screened outside a recorded turn count towards the call's highest risk.
            CallEvent::DirectQuestionAnswered {
                screening: Some(screening),
                at,
                ..
            }
            | CallEvent::UtteranceScreened { screening, at, .. } => {
                self.raise_risk(screening.level);
                self.risk_seen(Some(screening.level), *at);
            }
            CallEvent::DirectQuestionAnswered { .. } => {}
            CallEvent::RecordingReceived {
                turn,
                duration_secs,
                digits,
                received_at,
                ..
            } => self.start_turn(*turn, *received_at, *duration_secs, digits.clone()),
            // A recognised utterance starts a turn as a recording does; it has no audio of its own.
            CallEvent::SpeechReceived {
                turn, received_at, ..
            } => self.start_turn(*turn, *received_at, None, None),
            CallEvent::TranscriptionReceived { turn, text, .. } => {
                if let Some(t) = self.turn_mut(*turn) {
                    t.transcript = Some(text.clone());
                }
            }
            CallEvent::Analyzed { turn, analysis, at } => {
                if let Some(t) = self.turn_mut(*turn) {
                    t.analysed(analysis);
                }
                self.raise_risk(analysis.assessment.level);
                self.risk_seen(Some(analysis.assessment.level), *at);
            }
            CallEvent::ResponsePlayed { turn, via, at } => {
                if let Some(t) = self.turn_mut(*turn) {
                    t.played_via = Some(*via);
                    t.played_at = Some(*at);
                    let latency = (*at - t.recorded_at).num_milliseconds();
                    t.latency_ms = u64::try_from(latency).ok();
                }
                self.view.mean_turn_latency_ms = self.mean_latency();
            }
            CallEvent::CallerChose { turn, choice, .. } => {
                if let Some(t) = self.turn_mut(*turn) {
                    t.choice = Some(*choice);
                }
                if *choice == Choice::End {
                    self.caller_ended = true;
                }
            }
            CallEvent::Escalated { reason, at, .. } => {
                if !self.view.escalated {
                    self.view.escalation_reason = Some(*reason);
                }
                self.view.escalated = true;
                match reason {
                    EscalationReason::RiskAssessed
                    | EscalationReason::DirectQuestion
                    | EscalationReason::EarlierRisk => self.risk_seen(None, *at),
                    EscalationReason::CounselorUnavailable => self.view.crisis_line_fallback = true,
                    _ => {}
                }
            }
            CallEvent::StatusChanged {
                status,
                duration_secs,
                ..
            } => {
                self.view.status = status.as_str().to_owned();
                if duration_secs.is_some() {
                    self.view.duration_secs = *duration_secs;
                }
            }
            CallEvent::Completed {
                status,
                duration_secs,
                ended_at,
                ..
            } => {
                self.view.status = status.as_str().to_owned();
                self.view.ended_at = Some(*ended_at);
                if duration_secs.is_some() {
                    self.view.duration_secs = *duration_secs;
                }
                self.view.outcome = Some(if self.view.escalated {
                    Outcome::Escalated
                } else if *status != CallStatus::Completed {
                    Outcome::NotConnected
                } else if self.caller_ended {
                    Outcome::EndedByCaller
                } else {
                    Outcome::HungUp
                });
            }
            CallEvent::ProcessingFailed { turn, stage, .. } => {
                if let Some(t) = self.turn_mut(*turn) {
                    if !t.failed_stages.contains(stage) {
                        t.failed_stages.push(*stage);
                    }
                }
            }
        }
    }

    fn mean_latency(&self) -> Option<u64> {
        let played: Vec<u64> = self.turns.iter().filter_map(|t| t.latency_ms).collect();
        let count = u64::try_from(played.len()).ok().filter(|n| *n > 0)?;
        Some(played.iter().sum::<u64>() / count)
    }
}

impl TurnView {
    fn analysed(&mut self, analysis: &Analysis) {
        self.transcript = Some(analysis.transcript.clone());
        self.reply = analysis.reply.clone();
        self.reply_source = analysis.reply_source;
        self.risk_level = Some(analysis.assessment.level);
        self.risk_unknown = analysis.assessment.unknown;
        self.route = Some(analysis.assessment.route);
        self.signals = analysis.screening.signals.clone();
        self.screener_version = Some(analysis.screening.version.clone());
        self.model = analysis.model.clone();
        self.timings = Some(analysis.timings);
    }
}

/// Folds a whole history, in order.
pub fn fold_history<'a>(
    id: CallId,
    events: impl IntoIterator<Item = (i64, &'a CallEvent)>,
) -> Option<CallProjection> {
    events.into_iter().fold(None, |state, (sequence, event)| {
        CallProjection::fold(state, id, sequence, event)
    })
}
