//! The webhook use cases: what each Twilio request does to a call, and what the caller hears next.
//!
//! The caller comes first: a use case never returns an error the caller would hear. Anything that
//! goes wrong on our side becomes `CallAnswer::Trouble` (a person, the crisis number), logged here
//! once, without the caller's number or words.

use std::time::{Duration, Instant};

use cqrs_es::EventStore;
use domain::call::{
    AnswerQuestion, AnswerWhisper, ChooseLanguage, DecideWhisper, DialResult, EndDial, Escalate,
    EscalationReason, HearUtterance, LanguageChoice, PlayResponse, PlayedVia, Prompt,
    ReceiveRecording, ReceiveSpeech, RecordChoice, RecordingUrl, SpeechAnswer, SpeechSource,
    StageTimings, StartCall, Turn, UpdateStatus,
};
use domain::risk::Route;
use domain::{
    script, AccountSid, Call, CallCommand, CallError, CallId, CallSid, CallStatus, CallerId,
    Choice, DialNumber, Language, RecordingSid,
};

pub mod relay;
pub mod spooled;
pub mod whisper;

use crate::answer::{CallAnswer, Spoken};
use crate::breaker::{Breaker, Cause, StoreBusy};
use crate::dispatch::CommandDispatcher;
use crate::error::AppError;
use crate::metadata::CommandMetadata;
use crate::responder::{Responder, Words};
use crate::spool::{Spool, Spooled};

/// The numbers a caller can be sent to.
#[derive(Debug, Clone)]
pub struct Lines {
    /// The counselor line: a human at this service.
    pub counselor: DialNumber,
    /// The crisis line: the fallback when no counselor answers, and the number read to callers.
    pub crisis: DialNumber,
    /// The counselor line for callers who speak Spanish, when it is another line.
    pub counselor_es: Option<DialNumber>,
    /// More counselors, rung in this order after the first when it does not take the call
    /// (`COUNSELOR_NUMBERS`, and `COUNSELOR_NUMBERS_ES` for Spanish callers).
    pub more: Vec<DialNumber>,
    pub more_es: Vec<DialNumber>,
}

impl Lines {
    /// The counselor line for a caller who speaks `language`.
    pub fn counselor_for(&self, language: Language) -> &DialNumber {
        match (language, &self.counselor_es) {
            (Language::Spanish, Some(spanish)) => spanish,
            _ => &self.counselor,
        }
    }

    /// Counselor `attempt` (from 1, in the order they are rung) for a caller who speaks
    /// `language`; none past the last.
    pub fn counselor_at(&self, language: Language, attempt: u32) -> Option<&DialNumber> {
        let more = match (language, &self.counselor_es) {
            (Language::Spanish, Some(_)) => &self.more_es,
            _ => &self.more,
        };
        match attempt {
            0 => None,
            1 => Some(self.counselor_for(language)),
            n => more.get(usize::try_from(n - 2).ok()?),
        }
    }
}

/// What Twilio heard at a speech `<Gather>`: words, keys, or nothing at all.
#[derive(Debug, Clone)]
pub struct SpeechInput {
    pub call_sid: CallSid,
    /// `SpeechResult`. Never logged.
    pub speech: Option<String>,
    /// `Confidence`, 0 to 1.
    pub confidence: Option<f64>,
    pub digits: Option<String>,
}

/// Below this `Confidence`, Twilio's words are not trusted: they count as unreadable, and
/// unreadable words go to a person.
pub const MIN_CONFIDENCE: f64 = 0.4;

/// How long a speech turn's answer may take while Twilio waits, unless configured otherwise:
/// well inside Twilio's 15 s, and short enough that the caller is not left wondering. A slower
/// answer is left to the pipeline, and the caller hears a holding line meanwhile.
pub const SPEECH_BUDGET: Duration = Duration::from_millis(2500);

/// The incoming-call webhook's parameters.
#[derive(Debug, Clone)]
pub struct IncomingCall {
    pub call_sid: CallSid,
    pub account_sid: AccountSid,
    pub from: CallerId,
    pub to: String,
    pub direction: String,
}

/// The recording webhook's parameters.
#[derive(Debug, Clone)]
pub struct RecordingDone {
    pub call_sid: CallSid,
    pub recording_sid: RecordingSid,
    pub recording_url: RecordingUrl,
    pub duration_secs: Option<u32>,
    pub digits: Option<String>,
}

/// What the caller pressed or said at a choice.
#[derive(Debug, Clone, Default)]
pub struct ChoiceInput {
    pub digits: Option<String>,
    pub speech: Option<String>,
    /// The turn whose prompt this answers, when the prompt's URL named it.
    pub turn: Option<u32>,
}

/// The status callback's parameters.
#[derive(Debug, Clone)]
pub struct StatusReport {
    pub call_sid: CallSid,
    pub status: CallStatus,
    pub sequence_number: Option<u32>,
    pub duration_secs: Option<u32>,
}

pub use domain::call::DialedLine;

/// What follows a `<Dial>` when nothing about the call is known (a fallback that named no call):
/// after a conversation, a kind goodbye; when the counselor line did not answer, the crisis line;
/// when the crisis line did not either, its number and the automated line again, never a hang-up.
pub fn after_dial(line: DialedLine, outcome: DialOutcome) -> CallAnswer {
    match (line, outcome) {
        (_, DialOutcome::Connected) => CallAnswer::Farewell,
        (_, DialOutcome::CallerGone) => CallAnswer::Nothing,
        (DialedLine::Counselor, DialOutcome::NotConnected) => CallAnswer::ConnectCrisisLine,
        (DialedLine::CrisisLine, DialOutcome::NotConnected) => CallAnswer::LastResort,
    }
}

/// A `<Dial action>` request: which dial it was, and how it ended.
#[derive(Debug, Clone)]
pub struct DialReport {
    pub line: DialedLine,
    /// For a counselor, which in the order they are rung (from 1); 0 for the crisis line.
    pub attempt: u32,
    pub status: DialStatus,
    /// `DialCallDuration`.
    pub talk_secs: Option<u32>,
}

impl DialReport {
    /// The command recording this dial's end: it rang `number`, and ended in `result`.
    fn end(&self, number: DialNumber, result: DialResult, meta: &CommandMetadata) -> CallCommand {
        CallCommand::EndDial(EndDial {
            line: self.line,
            attempt: self.attempt,
            number,
            result,
            talk_secs: self.talk_secs,
            at: meta.received_at,
        })
    }
}

/// Twilio's `DialCallStatus`, and whether the caller was still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialStatus {
    Completed,
    NoAnswer,
    Busy,
    Failed,
    /// The caller hung up while it rang (the action request's `CallStatus` is `completed`).
    CallerHungUp,
}

/// Twilio's transcription callback.
#[derive(Debug, Clone)]
pub struct TranscriptionReport {
    pub call_sid: CallSid,
    pub recording_sid: RecordingSid,
    /// What the caller said. Never logged.
    pub text: String,
    pub completed: bool,
}

/// Twilio's recording status callback for the call's own recording (`<Start><Recording>`).
#[derive(Debug, Clone)]
pub struct CallRecordingReport {
    pub call_sid: CallSid,
    pub recording_sid: RecordingSid,
    pub recording_url: RecordingUrl,
    pub duration_secs: Option<u32>,
    /// `completed`, `absent` or `failed`.
    pub status: String,
}

/// How a `<Dial>` ended, for a call nothing is known of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialOutcome {
    /// Someone answered and the conversation ended.
    Connected,
    /// Busy, no answer, failed or canceled.
    NotConnected,
    /// The caller hung up.
    CallerGone,
}

impl DialStatus {
    /// How the dial ended, read as Twilio reports it (a completed dial was a conversation).
    fn as_result(self) -> DialResult {
        match self {
            Self::Completed => DialResult::Talked,
            Self::NoAnswer => DialResult::NoAnswer,
            Self::Busy => DialResult::Busy,
            Self::Failed => DialResult::Failed,
            Self::CallerHungUp => DialResult::CallerHungUp,
        }
    }
}

impl From<DialStatus> for DialOutcome {
    fn from(status: DialStatus) -> Self {
        match status {
            DialStatus::Completed => Self::Connected,
            DialStatus::CallerHungUp => Self::CallerGone,
            DialStatus::NoAnswer | DialStatus::Busy | DialStatus::Failed => Self::NotConnected,
        }
    }
}

/// What a counselor hears when they pick up, and what their key does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhisperAnswer {
    /// The summary, then "press 1 to take the call".
    Summary(String),
    /// Take the call: the whisper ends and the two are bridged.
    Bridge,
    /// Pass the call on: the counselor's leg is hung up, and the caller offered the next.
    PassOn,
}

/// Longer than a whisper can take (its summary, and the counselor's wait for a key): a counselor's
/// leg that lasted this long was a conversation.
pub const LONGEST_WHISPER_SECS: u32 = 60;

/// How many times a caller is held on the continue webhook (each hold is a holding line and a
/// pause, a few seconds) before the vetted fallback plays: the caller never waits much more than
/// 15 s for an answer.
pub const MAX_WAITS: u32 = 2;

/// The longest a caller-facing webhook waits for the event store before the caller hears the
/// fallback (and the webhook goes to the spool): the caller hears something within a second,
/// however the store fails. Twilio gives a webhook 15 s; a store that answers at all answers in
/// milliseconds.
pub const COMMAND_DEADLINE: Duration = Duration::from_millis(800);

/// The longest a callback no caller hears (a status, a transcription) waits for the store before
/// it goes to the spool.
pub const CALLBACK_DEADLINE: Duration = Duration::from_secs(4);

/// How long a webhook of a call whose earlier webhooks wait in the spool waits for them to be
/// replayed before it joins them there: its command must come after theirs.
const REPLAY_WAIT: Duration = Duration::from_millis(300);

/// Why a failed store operation failed, as the breaker tells causes apart; `None` when it was
/// not the store that failed. Data the database refused (reported by the store as bad data)
/// fails that command only: one caller's odd parameter must not silence everyone's record.
fn cause_of(error: &AppError) -> Option<Cause> {
    use cqrs_es::AggregateError;
    match error {
        AppError::Store(AggregateError::DeserializationError(_)) => None,
        AppError::Store(AggregateError::DatabaseConnectionError(source))
            if source.downcast_ref::<StoreBusy>().is_some() =>
        {
            Some(Cause::Busy)
        }
        AppError::Store(AggregateError::DatabaseConnectionError(_)) => Some(Cause::Unreachable),
        AppError::Store(_) => Some(Cause::Failing),
        AppError::TimedOut => Some(Cause::Slow),
        _ => None,
    }
}

/// Whether the store could not take a command (rather than refusing it): the command goes to
/// the spool.
fn store_away(error: &AppError) -> bool {
    matches!(error, AppError::StoreSkipped) || cause_of(error).is_some()
}

/// Whether a caller waits on a webhook's answer.
#[derive(Debug, Clone, Copy)]
enum Heard {
    ByCaller,
    ByNobody,
}

/// What goes to the spool when the store cannot take a webhook's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// The command, with the escalation the caller's fallback answer (a person) stands for.
    KeepWithPerson,
    /// The command as it came: nobody heard the fallback for it.
    Keep,
    /// The escalation alone: the command was the caller's answer (the claim of their turn),
    /// and they heard the fallback instead.
    PersonOnly,
}

/// Runs the webhook use cases against a call store.
pub struct CallService<ES: EventStore<Call>> {
    dispatcher: CommandDispatcher<ES>,
    lines: Lines,
    breaker: Breaker,
    pipeline_enabled: bool,
    responder: Responder,
    speech_budget: Duration,
    /// Counselors hear a whisper and press 1 to take the call.
    whisper: bool,
    /// All counselors are rung at once, in one `<Dial>`, rather than one after another.
    ring_together: bool,
    /// Where webhooks go while the store is away; `None`: they are answered, and lost.
    spool: Option<std::sync::Arc<dyn Spool>>,
    /// One replay of the spool at a time (see `spooled`).
    replaying: tokio::sync::Mutex<()>,
}

impl<ES: EventStore<Call>> std::fmt::Debug for CallService<ES> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallService")
            .field("lines", &self.lines)
            .finish_non_exhaustive()
    }
}

impl<ES: EventStore<Call>> CallService<ES> {
    /// A service over `store`, sending callers to `lines`.
    pub fn new(store: ES, lines: Lines) -> Self {
        Self {
            dispatcher: CommandDispatcher::new(store),
            lines,
            breaker: Breaker::default(),
            pipeline_enabled: false,
            responder: Responder::new(None),
            speech_budget: SPEECH_BUDGET,
            whisper: false,
            ring_together: false,
            spool: None,
            replaying: tokio::sync::Mutex::new(()),
        }
    }

    /// Webhooks the store cannot take are kept in `spool` and replayed when it is back.
    #[must_use]
    pub fn with_spool(mut self, spool: std::sync::Arc<dyn Spool>) -> Self {
        self.spool = Some(spool);
        self
    }

    /// All counselors are rung at once: when none takes the call, the crisis line is next.
    #[must_use]
    pub fn with_counselors_rung_together(mut self, together: bool) -> Self {
        self.ring_together = together;
        self
    }

    /// Counselors hear a whisper when they pick up, and take the call by pressing 1; until one
    /// does, the caller is not with a person.
    #[must_use]
    pub fn with_whisper(mut self, whisper: bool) -> Self {
        self.whisper = whisper;
        self
    }

    /// Speech turns are understood by `responder` (the screener, and the model if it has one)
    /// while Twilio waits, for at most `budget`.
    #[must_use]
    pub fn with_responder(mut self, responder: Responder, budget: Duration) -> Self {
        self.responder = responder;
        self.speech_budget = budget;
        self
    }

    /// Keeps the state of calls in progress between their webhooks, so that most webhooks cost
    /// one round trip to the store (the append) instead of two. Safe with several instances and
    /// the pipeline writing to the same calls: see `CommandDispatcher`.
    #[must_use]
    pub fn caching(self) -> Self
    where
        ES::AC: crate::dispatch::Resume,
    {
        Self {
            dispatcher: self.dispatcher.caching(),
            ..self
        }
    }

    /// Turns are answered by the conversation pipeline: the continue webhook waits for its answer
    /// (bounded) instead of playing the script at once.
    #[must_use]
    pub fn with_pipeline(mut self) -> Self {
        self.pipeline_enabled = true;
        self
    }

    /// Runs a caller-facing webhook's command. When the store cannot take it, it is spooled with
    /// the escalation the caller's fallback answer stands for.
    async fn run(
        &self,
        id: CallId,
        command: CallCommand,
        meta: &CommandMetadata,
    ) -> Result<Call, AppError> {
        self.record(id, command, meta, Heard::ByCaller, Outage::KeepWithPerson)
            .await
    }

    /// Runs a callback's command (status, transcription): no caller waits on its answer, so a
    /// write that lands after the deadline does no harm, and it is not held to one. When the
    /// store cannot take it, it is spooled as it came.
    async fn run_unheard(
        &self,
        id: CallId,
        command: CallCommand,
        meta: &CommandMetadata,
    ) -> Result<Call, AppError> {
        self.record(id, command, meta, Heard::ByNobody, Outage::Keep)
            .await
    }

    /// Runs `command` on call `id` after the call's spooled webhooks, within its deadline and
    /// behind the breaker; what the store cannot take goes to the spool as `outage` says, and
    /// is `AppError::Spooled`.
    async fn record(
        &self,
        id: CallId,
        command: CallCommand,
        meta: &CommandMetadata,
        heard: Heard,
        outage: Outage,
    ) -> Result<Call, AppError> {
        if !self.in_order(id).await {
            return Err(self
                .spool_instead(id, command, meta, outage, AppError::StoreSkipped)
                .await);
        }
        let stored = self
            .guarded(self.dispatcher.execute(id, command.clone(), meta), heard)
            .await;
        match stored {
            Err(error) if store_away(&error) => {
                Err(self.spool_instead(id, command, meta, outage, error).await)
            }
            other => other,
        }
    }

    /// Whether call `id` has nothing waiting in the spool, once what waits was given a moment
    /// to be replayed: its next command must not overtake its earlier ones.
    async fn in_order(&self, id: CallId) -> bool {
        let Some(spool) = &self.spool else {
            return true;
        };
        if !spool.holds(id) {
            return true;
        }
        if !self.breaker.is_open(Instant::now()) {
            let _ = tokio::time::timeout(REPLAY_WAIT, self.replay_spool()).await;
        }
        !spool.holds(id)
    }

    /// Keeps what `outage` says of `command` in the spool; the error to answer with:
    /// `Spooled` when it was kept, `error` when there is no spool or it could not keep it.
    async fn spool_instead(
        &self,
        id: CallId,
        command: CallCommand,
        meta: &CommandMetadata,
        outage: Outage,
        error: AppError,
    ) -> AppError {
        let Some(spool) = &self.spool else {
            return error;
        };
        let person = || {
            CallCommand::Escalate(Escalate {
                reason: EscalationReason::StoreUnavailable,
                target: self.lines.counselor.clone(),
                unless_escalated: true,
                at: meta.received_at,
            })
        };
        let command = match outage {
            Outage::KeepWithPerson => CallCommand::Together(vec![command, person()]),
            Outage::Keep => command,
            Outage::PersonOnly => person(),
        };
        let entry = Spooled {
            call_id: id,
            command,
            metadata: meta.clone(),
        };
        match spool.keep(entry).await {
            Ok(_) => AppError::Spooled(Box::new(error)),
            Err(spool_error) => {
                tracing::error!(error = %spool_error, store = %error, "the store is away and the spool could not keep the webhook: it is lost");
                error
            }
        }
    }

    /// The caller is answered without the store (it could not be read): the person their
    /// fallback answer puts them through to is spooled, to be recorded when the store is back.
    async fn unread(&self, id: CallId, meta: &CommandMetadata, error: AppError) -> Spoken {
        if !store_away(&error) {
            return trouble(&error);
        }
        let person = CallCommand::Escalate(Escalate {
            reason: EscalationReason::StoreUnavailable,
            target: self.lines.counselor.clone(),
            unless_escalated: true,
            at: meta.received_at,
        });
        let error = self
            .spool_instead(id, person, meta, Outage::Keep, error)
            .await;
        trouble(&error)
    }

    /// Runs a store operation within the webhook deadline, behind the breaker. For a webhook a
    /// caller hears, the store starts no write it could not finish by the deadline: the caller
    /// is answered without it, and it must never land afterwards.
    async fn guarded(
        &self,
        operation: impl std::future::Future<Output = Result<Call, AppError>>,
        heard: Heard,
    ) -> Result<Call, AppError> {
        if self.breaker.is_open(Instant::now()) {
            return Err(AppError::StoreSkipped);
        }
        let bounded = async {
            match heard {
                Heard::ByCaller => {
                    let deadline = tokio::time::Instant::now() + COMMAND_DEADLINE;
                    tokio::time::timeout_at(deadline, crate::deadline::within(deadline, operation))
                        .await
                }
                Heard::ByNobody => tokio::time::timeout(CALLBACK_DEADLINE, operation).await,
            }
        };
        let result = bounded.await.unwrap_or(Err(AppError::TimedOut));
        match result.as_ref().err().and_then(cause_of) {
            Some(cause) => self.breaker.trip(cause, Instant::now()),
            None => self.breaker.reset(),
        }
        result
    }

    /// Which cause keeps the store's breaker open now, if any.
    pub fn open_breaker(&self) -> Option<Cause> {
        self.breaker.open_cause(Instant::now())
    }

    /// `POST /twilio/voice/`: a new call (or Twilio's retry of one).
    #[tracing::instrument(skip_all, fields(call_sid = %call.call_sid))]
    pub async fn answer_call(&self, call: IncomingCall, meta: &CommandMetadata) -> Spoken {
        let id = CallId::for_call_sid(&call.call_sid);
        let command = CallCommand::StartCall(StartCall {
            call_sid: call.call_sid,
            account_sid: call.account_sid,
            from: call.from,
            to: call.to,
            direction: call.direction,
            at: meta.received_at,
        });
        match self.run(id, command, meta).await {
            Ok(state) if state.ended().is_some() => in_call(&state, CallAnswer::Nothing),
            Ok(state) => in_call(&state, CallAnswer::Welcome),
            Err(error) => trouble(&error),
        }
    }

    /// `POST /twilio/recording/{call_id}/`: the caller finished speaking.
    #[tracing::instrument(skip_all, fields(call_id = %id, call_sid = %done.call_sid))]
    pub async fn receive_recording(
        &self,
        id: CallId,
        done: RecordingDone,
        meta: &CommandMetadata,
    ) -> Spoken {
        if CallId::for_call_sid(&done.call_sid) != id {
            return trouble(&AppError::WrongCall);
        }
        let asked_for_human = Choice::keys_ask_for_person(done.digits.as_deref());
        let command = CallCommand::ReceiveRecording(ReceiveRecording {
            call_sid: done.call_sid,
            recording_sid: done.recording_sid,
            recording_url: done.recording_url,
            duration_secs: done.duration_secs,
            digits: done.digits,
            counselor_line: self.counselor_for(id).await,
            at: meta.received_at,
        });
        match self.run(id, command, meta).await {
            Ok(state) if state.ended().is_some() => in_call(&state, CallAnswer::Nothing),
            Ok(state) if asked_for_human => in_call(&state, CallAnswer::ConnectCounselor),
            Ok(state) => in_call(&state, CallAnswer::Hold { waited: 0 }),
            Err(error) => trouble(&error),
        }
    }

    /// `POST /twilio/continue/{call_id}/?wait=N`: the caller waits for the answer to their turn.
    ///
    /// With the pipeline, the answer is played here when it is ready and the REST path has not
    /// played it (or failed to); while it is being prepared the caller is held, at most
    /// `MAX_WAITS` times (about 15 s), and then hears the vetted fallback, whose choice offers a
    /// counselor. Without the pipeline, the vetted script answers at once.
    #[tracing::instrument(skip_all, fields(call_id = %id, waited))]
    pub async fn continue_call(&self, id: CallId, waited: u32, meta: &CommandMetadata) -> Spoken {
        let state = match self.load(id).await {
            Ok(state) => state,
            Err(error) => return self.unread(id, meta, error).await,
        };
        if state.ended().is_some() {
            return in_call(&state, CallAnswer::Nothing);
        }
        if !state.is_started() {
            return trouble(&AppError::Rule(CallError::NotStarted));
        }
        let Some(turn) = state.current_turn() else {
            return in_call(&state, CallAnswer::Listen);
        };
        let hold = |waited| in_call(&state, CallAnswer::Hold { waited });
        match (&turn.analysis, turn.played) {
            // A retry of an answer this path already gave gets the same answer.
            (_, Some(PlayedVia::Twiml)) => answer_for(&state, turn),
            (None, _) if self.pipeline_enabled && waited < MAX_WAITS => hold(waited + 1),
            // No pipeline, or it took too long: the vetted fallback, and the turn is this path's.
            (None, _) => self.claim_and(id, turn.number, meta).await,
            // Twilio is still asking, so the REST update has not reached the call yet.
            (Some(_), Some(PlayedVia::RestUpdate)) if waited < MAX_WAITS => hold(waited + 1),
            (Some(_), Some(PlayedVia::RestUpdate)) => answer_for(&state, turn),
            (Some(_), None) => self.claim_and(id, turn.number, meta).await,
            // Streamed by the live session: nothing is left for this path to play.
            (_, Some(PlayedVia::Relay)) => answer_for(&state, turn),
        }
    }

    /// Claims turn `turn` for the webhook path and answers it; if the REST path claimed it in
    /// between, the caller is held once more while its update arrives. An answer that puts the
    /// caller through to a person is recorded with its escalation, by the claim itself.
    async fn claim_and(&self, id: CallId, turn: u32, meta: &CommandMetadata) -> Spoken {
        let claim = CallCommand::PlayResponse(PlayResponse {
            turn: Some(turn),
            via: PlayedVia::Twiml,
            counselor_line: self.counselor_for(id).await,
            at: meta.received_at,
        });
        let claimed = self
            .record(id, claim, meta, Heard::ByCaller, Outage::PersonOnly)
            .await;
        let state = match claimed {
            Ok(state) => state,
            Err(error) => return trouble(&error),
        };
        if state.ended().is_some() {
            return in_call(&state, CallAnswer::Nothing);
        }
        let Some(current) = state.turn_number(turn) else {
            return in_call(&state, CallAnswer::Trouble);
        };
        if current.played == Some(PlayedVia::RestUpdate) {
            return in_call(&state, CallAnswer::Hold { waited: MAX_WAITS });
        }
        answer_for(&state, current)
    }

    /// The call as stored, once its spooled webhooks are on record (`StoreSkipped` if they
    /// could not be replayed: the state would be missing them).
    async fn load(&self, id: CallId) -> Result<Call, AppError> {
        if !self.in_order(id).await {
            return Err(AppError::StoreSkipped);
        }
        self.guarded(self.dispatcher.load(id), Heard::ByCaller)
            .await
    }

    /// The counselor line for call `id`'s language. The cached state is enough (a language is
    /// chosen once, at the start); only a call this instance does not hold is read.
    async fn counselor_for(&self, id: CallId) -> DialNumber {
        if self.lines.counselor_es.is_none() {
            return self.lines.counselor.clone();
        }
        let state = match self.dispatcher.cached(id).await {
            Some(state) => Ok(state),
            None => self.load(id).await,
        };
        match state {
            Ok(state) => self.lines.counselor_for(state.language()).clone(),
            Err(_) => self.lines.counselor.clone(),
        }
    }

    /// `POST /twilio/speech/{call_id}/`: a speech `<Gather>` ended. Words are a turn, understood
    /// and answered in this same response when the answer is ready within the budget, and held
    /// for the pipeline otherwise; keys are a choice (0 a person, 9 Spanish at the greeting);
    /// nothing at all, or words Twilio was not confident of, reach a person.
    #[tracing::instrument(skip_all, fields(call_id = %id))]
    pub async fn hear_speech(
        &self,
        id: CallId,
        input: SpeechInput,
        meta: &CommandMetadata,
    ) -> Spoken {
        if CallId::for_call_sid(&input.call_sid) != id {
            return trouble(&AppError::WrongCall);
        }
        let speech = input.speech.filter(|s| !s.trim().is_empty());
        let digits = input.digits.filter(|d| !d.trim().is_empty());
        let text = match (speech, digits) {
            (Some(text), _) => text,
            (None, Some(keys)) if keys.trim().starts_with('9') => {
                return self.choose_language(id, Language::Spanish, meta).await;
            }
            (None, Some(keys)) => {
                let input = ChoiceInput {
                    digits: Some(keys),
                    speech: None,
                    turn: None,
                };
                return self.record_choice(id, input, meta).await;
            }
            (None, None) => return self.nothing_heard(id, meta).await,
        };
        if only_a_choice(&text) {
            let input = ChoiceInput {
                digits: None,
                speech: Some(text),
                turn: None,
            };
            return self.record_choice(id, input, meta).await;
        }
        let state = match self.known(id).await {
            Ok(state) => state,
            // The caller's words are kept for when the store is back, with the person their
            // fallback answer puts them through to; the pipeline reads them then.
            Err(error) if store_away(&error) => {
                let command = CallCommand::ReceiveSpeech(ReceiveSpeech {
                    call_sid: input.call_sid,
                    text,
                    confidence: input.confidence,
                    source: SpeechSource::Gather,
                    answer: SpeechAnswer::Deferred,
                    heard_in: None,
                    counselor_line: self.lines.counselor.clone(),
                    at: meta.received_at,
                });
                let error = self
                    .spool_instead(id, command, meta, Outage::KeepWithPerson, error)
                    .await;
                return trouble(&error);
            }
            Err(error) => return trouble(&error),
        };
        let words = match input.confidence {
            Some(confidence) if confidence < MIN_CONFIDENCE => {
                Words::Unreadable(domain::risk::Unreadable::LowConfidence)
            }
            _ => Words::Readable,
        };
        let understanding = self.responder.understand(
            text.clone(),
            words,
            state.language(),
            StageTimings::default(),
        );
        let answer = match tokio::time::timeout(self.speech_budget, understanding).await {
            Ok(analysis) => SpeechAnswer::Answered(analysis),
            Err(_) => {
                tracing::info!(
                    "the turn's answer is not ready within the budget; the pipeline answers it"
                );
                SpeechAnswer::Deferred
            }
        };
        let command = CallCommand::ReceiveSpeech(ReceiveSpeech {
            call_sid: input.call_sid,
            text,
            confidence: input.confidence,
            source: SpeechSource::Gather,
            answer,
            heard_in: None,
            counselor_line: self.lines.counselor_for(state.language()).clone(),
            at: meta.received_at,
        });
        let state = match self.run(id, command, meta).await {
            Ok(state) => state,
            Err(error) => return trouble(&error),
        };
        if state.ended().is_some() {
            return in_call(&state, CallAnswer::Nothing);
        }
        match state.current_turn() {
            Some(turn) if turn.analysis.is_some() => answer_for(&state, turn),
            // Deferred: the caller is held while the pipeline answers by updating the call.
            Some(_) => in_call(&state, CallAnswer::Hold { waited: 0 }),
            None => in_call(&state, CallAnswer::Trouble),
        }
    }

    /// The caller chose a language at the greeting: it is greeted again in that language.
    async fn choose_language(
        &self,
        id: CallId,
        language: Language,
        meta: &CommandMetadata,
    ) -> Spoken {
        let command = CallCommand::ChooseLanguage(ChooseLanguage {
            language,
            how: LanguageChoice::Keys,
            at: meta.received_at,
        });
        match self.run(id, command, meta).await {
            Ok(state) if state.ended().is_some() => in_call(&state, CallAnswer::Nothing),
            Ok(state) => in_call(&state, CallAnswer::Greeting),
            Err(error) => trouble(&error),
        }
    }

    /// Nothing was heard where speech was expected: silence may be the hardest way to ask for
    /// help, so a person is dialled, and the escalation recorded.
    async fn nothing_heard(&self, id: CallId, meta: &CommandMetadata) -> Spoken {
        let command = CallCommand::Escalate(Escalate {
            reason: EscalationReason::Silence,
            target: self.counselor_for(id).await,
            unless_escalated: false,
            at: meta.received_at,
        });
        match self.run(id, command, meta).await {
            Ok(state) if state.ended().is_some() => in_call(&state, CallAnswer::Nothing),
            Ok(state) => in_call(&state, CallAnswer::NothingHeard),
            Err(error) => {
                log_failure(&error);
                Spoken::new(CallAnswer::NothingHeard, Language::default())
            }
        }
    }

    /// `POST /twilio/user-choice/{call_id}/`: the caller chose after a reply (or during a prompt).
    /// Words that are not a choice are screened like a turn: any sign of risk puts the caller
    /// through to a person, and anything else is heard as the start of their next turn.
    #[tracing::instrument(skip_all, fields(call_id = %id))]
    pub async fn record_choice(
        &self,
        id: CallId,
        input: ChoiceInput,
        meta: &CommandMetadata,
    ) -> Spoken {
        let speech = input.speech.clone().filter(|s| !s.trim().is_empty());
        // Whatever was said is screened first: risky words reach a person, whichever choice
        // words they also hold ("I want to hurt someone", "end it").
        let risky = speech.as_deref().is_some_and(shows_risk);
        let spanish = speech.is_none()
            && input
                .digits
                .as_deref()
                .is_some_and(|d| d.trim().starts_with('9'));
        if spanish {
            return self.choose_language(id, Language::Spanish, meta).await;
        }
        let choice = Choice::from_input(input.digits.as_deref(), input.speech.as_deref());
        let (Some(choice), false) = (choice, risky) else {
            return match speech {
                Some(text) => self.hear(id, Prompt::Choice, text, meta).await,
                None => self.in_language_of(id, CallAnswer::ChoiceAgain).await,
            };
        };
        let command = CallCommand::RecordChoice(RecordChoice {
            choice,
            turn: input.turn,
            digits: input.digits,
            speech: input.speech,
            counselor_line: self.counselor_for(id).await,
            at: meta.received_at,
        });
        let stored = self.run(id, command, meta).await;
        match (choice, stored) {
            (_, Ok(state)) if state.ended().is_some() => in_call(&state, CallAnswer::Nothing),
            (Choice::Counselor, Ok(state)) => in_call(&state, CallAnswer::ConnectCounselor),
            // Asking for a human is honoured even when it could not be stored.
            (Choice::Counselor, Err(error)) => {
                log_failure(&error);
                Spoken::new(CallAnswer::ConnectCounselor, Language::default())
            }
            // Risk only rises: a caller who warranted a person is put through, whatever they chose.
            (_, Ok(state)) if state.warrants_person() => in_call(&state, CallAnswer::Escalating),
            (Choice::Continue, Ok(state)) => in_call(&state, CallAnswer::Listen),
            (Choice::End, Ok(state)) => in_call(&state, CallAnswer::Goodbye),
            (_, Err(error)) => trouble(&error),
        }
    }

    /// Screens words said at a prompt.
    async fn hear(
        &self,
        id: CallId,
        prompt: Prompt,
        text: String,
        meta: &CommandMetadata,
    ) -> Spoken {
        let command = CallCommand::HearUtterance(HearUtterance {
            prompt,
            text,
            counselor_line: self.counselor_for(id).await,
            at: meta.received_at,
        });
        match self.run(id, command, meta).await {
            Ok(state) if state.ended().is_some() => in_call(&state, CallAnswer::Nothing),
            Ok(state) if state.warrants_person() => in_call(&state, CallAnswer::Escalating),
            Ok(state) => in_call(&state, CallAnswer::Listen),
            Err(error) => trouble(&error),
        }
    }

    /// `POST /twilio/question/{call_id}/`: the caller answered the direct question. Only a clear
    /// no keeps the automated line; yes, unsure, silence or anything risky goes to a person.
    #[tracing::instrument(skip_all, fields(call_id = %id))]
    pub async fn answer_question(
        &self,
        id: CallId,
        input: ChoiceInput,
        meta: &CommandMetadata,
    ) -> Spoken {
        let command = CallCommand::AnswerQuestion(AnswerQuestion {
            digits: input.digits,
            speech: input.speech,
            counselor_line: self.counselor_for(id).await,
            at: meta.received_at,
        });
        match self.run(id, command, meta).await {
            Ok(state) if state.ended().is_some() => in_call(&state, CallAnswer::Nothing),
            Ok(state) if state.warrants_person() => in_call(&state, CallAnswer::Escalating),
            Ok(state) => in_call(&state, CallAnswer::AfterQuestion),
            Err(error) => trouble(&error),
        }
    }

    /// `POST /twilio/dial-status/{call_id}/`: a `<Dial>` ended, and is recorded (who it rang,
    /// how it went). A counselor who did not take the call is followed by the next, the last by
    /// the crisis line (recorded as an escalation), the crisis line by its number and the
    /// automated line again. With whispers on, only a counselor who pressed 1 talked with the
    /// caller, whatever `DialCallStatus` says.
    #[tracing::instrument(skip_all, fields(call_id = %id, attempt = report.attempt))]
    pub async fn dial_ended(
        &self,
        id: CallId,
        report: DialReport,
        meta: &CommandMetadata,
    ) -> Spoken {
        let state = match self.known(id).await {
            Ok(state) => state,
            Err(error) => {
                let next = after_dial(report.line, report.status.into());
                let error = if store_away(&error) {
                    self.spool_dial_ended(id, &report, meta, error).await
                } else {
                    error
                };
                log_failure(&error);
                return Spoken::new(next, Language::default());
            }
        };
        let language = state.language();
        let number = match report.line {
            DialedLine::Counselor => self.counselor_number(language, report.attempt),
            DialedLine::CrisisLine => self.lines.crisis.clone(),
        };
        let screened = report.line == DialedLine::Counselor && self.whisper;
        // Rung together, whichever counselor pressed 1 took the call.
        let (accepted, declined) = if self.ring_together {
            (
                state.person_reached_at().is_some(),
                state.any_counselor_declined(),
            )
        } else {
            (
                state.counselor_accepted(report.attempt),
                state.counselor_declined(report.attempt),
            )
        };
        // A counselor's key whose record was lost (the store away at that moment) leaves the
        // decision unknown: a dial that lasted longer than any whisper was a conversation, and
        // the caller must not be rung on to someone else after it.
        let talked_without_record = !declined
            && report
                .talk_secs
                .is_some_and(|secs| secs >= LONGEST_WHISPER_SECS);
        let result = match report.status {
            DialStatus::Completed if screened && !accepted && !talked_without_record => {
                DialResult::Declined
            }
            status => status.as_result(),
        };
        let command = report.end(number, result, meta);
        let next = match (result, report.line) {
            (DialResult::Talked, _) => CallAnswer::Farewell,
            (DialResult::CallerHungUp, _) => CallAnswer::Nothing,
            (_, DialedLine::CrisisLine) => CallAnswer::LastResort,
            (_, DialedLine::Counselor) => {
                let attempt = report.attempt + 1;
                if !self.ring_together && self.lines.counselor_at(language, attempt).is_some() {
                    CallAnswer::NextCounselor { attempt }
                } else {
                    CallAnswer::ConnectCrisisLine
                }
            }
        };
        // The caller goes on to the next person whether or not this could be stored; what they
        // heard is that next dial, not the fallback, so the dial's end is spooled alone.
        let recorded = self
            .record(id, command, meta, Heard::ByCaller, Outage::Keep)
            .await;
        let mut state = match recorded {
            Ok(state) => state,
            Err(error) => {
                log_failure(&error);
                return Spoken::new(next, language);
            }
        };
        if next == CallAnswer::ConnectCrisisLine {
            let command = CallCommand::Escalate(Escalate {
                reason: EscalationReason::CounselorUnavailable,
                target: self.lines.crisis.clone(),
                unless_escalated: false,
                at: meta.received_at,
            });
            match self.run(id, command, meta).await {
                Ok(escalated) => state = escalated,
                Err(error) => log_failure(&error),
            }
        }
        in_call(&state, next)
    }

    /// Keeps a dial's end in the spool when the call could not be read: without the call, a
    /// completed dial is taken for a conversation (as the caller's answer takes it), and the
    /// number is the default language's.
    async fn spool_dial_ended(
        &self,
        id: CallId,
        report: &DialReport,
        meta: &CommandMetadata,
        error: AppError,
    ) -> AppError {
        let number = match report.line {
            DialedLine::Counselor => self.counselor_number(Language::default(), report.attempt),
            DialedLine::CrisisLine => self.lines.crisis.clone(),
        };
        let command = report.end(number, report.status.as_result(), meta);
        self.spool_instead(id, command, meta, Outage::Keep, error)
            .await
    }

    /// The number of counselor `attempt` for `language`; the first, for an attempt past the
    /// last (a URL from an older configuration).
    fn counselor_number(&self, language: Language, attempt: u32) -> DialNumber {
        self.lines
            .counselor_at(language, attempt)
            .unwrap_or_else(|| self.lines.counselor_for(language))
            .clone()
    }

    /// `POST /twilio/whisper/{call_id}/?attempt=N`, on the counselor's leg when they pick up:
    /// what they hear before taking the call. The caller hears nothing of it (they hear the
    /// ringing, after the holding line).
    #[tracing::instrument(skip_all, fields(call_id = %id, attempt))]
    pub async fn whisper(&self, id: CallId, attempt: u32, meta: &CommandMetadata) -> WhisperAnswer {
        let state = match self.known(id).await {
            Ok(state) => state,
            // Whatever failed, the caller is waiting for this person: the call is theirs.
            Err(error) => {
                log_failure(&error);
                return WhisperAnswer::Summary(whisper::unknown());
            }
        };
        let number = self.counselor_number(state.language(), attempt);
        let command = CallCommand::AnswerWhisper(AnswerWhisper {
            attempt,
            number,
            at: meta.received_at,
        });
        match self.run_unheard(id, command, meta).await {
            Ok(state) => WhisperAnswer::Summary(whisper::summary(&state, meta.received_at)),
            Err(error) => {
                log_failure(&error);
                WhisperAnswer::Summary(whisper::summary(&state, meta.received_at))
            }
        }
    }

    /// `POST /twilio/whisper-answer/{call_id}/?attempt=N`: the counselor's key after the
    /// whisper. 1 takes the call; anything else, or nothing, passes it on.
    #[tracing::instrument(skip_all, fields(call_id = %id, attempt))]
    pub async fn whisper_answered(
        &self,
        id: CallId,
        attempt: u32,
        digits: Option<&str>,
        meta: &CommandMetadata,
    ) -> WhisperAnswer {
        let accepted = digits.is_some_and(|d| d.trim() == "1");
        let number = match self.known(id).await {
            Ok(state) => self.counselor_number(state.language(), attempt),
            Err(_) => self.lines.counselor.clone(),
        };
        let command = CallCommand::DecideWhisper(DecideWhisper {
            attempt,
            number,
            accepted,
            at: meta.received_at,
        });
        if let Err(error) = self.run_unheard(id, command, meta).await {
            // A counselor who pressed 1 is bridged even if it could not be stored.
            log_failure(&error);
        }
        if accepted {
            WhisperAnswer::Bridge
        } else {
            WhisperAnswer::PassOn
        }
    }

    /// `POST /twilio/transcription/{call_id}/`: Twilio transcribed a turn. No caller hears this.
    #[tracing::instrument(skip_all, fields(call_id = %id))]
    pub async fn receive_transcription(
        &self,
        id: CallId,
        report: TranscriptionReport,
        meta: &CommandMetadata,
    ) -> Result<(), AppError> {
        if CallId::for_call_sid(&report.call_sid) != id {
            return Err(AppError::WrongCall);
        }
        let command = CallCommand::ReceiveTranscription(domain::call::ReceiveTranscription {
            recording_sid: report.recording_sid,
            text: report.text,
            completed: report.completed,
            at: meta.received_at,
        });
        self.callback(id, command, meta).await
    }

    /// `POST /twilio/call-recording/{call_id}/`: Twilio finished the recording of the whole call
    /// (usually after it ended). Kept on the call's history; the pipeline copies the audio into
    /// the audio store.
    #[tracing::instrument(skip_all, fields(call_id = %id, status = %report.status))]
    pub async fn receive_call_recording(
        &self,
        id: CallId,
        report: CallRecordingReport,
        meta: &CommandMetadata,
    ) -> Result<(), AppError> {
        if CallId::for_call_sid(&report.call_sid) != id {
            return Err(AppError::WrongCall);
        }
        let command = CallCommand::ReceiveCallRecording(domain::call::ReceiveCallRecording {
            call_sid: report.call_sid,
            recording_sid: report.recording_sid,
            recording_url: report.recording_url,
            duration_secs: report.duration_secs,
            status: report.status,
            at: meta.received_at,
        });
        self.callback(id, command, meta).await
    }

    /// `POST /twilio/status/`: Twilio reports the call's status.
    #[tracing::instrument(skip_all, fields(call_sid = %report.call_sid, status = %report.status))]
    pub async fn update_status(
        &self,
        report: StatusReport,
        meta: &CommandMetadata,
    ) -> Result<(), AppError> {
        let id = CallId::for_call_sid(&report.call_sid);
        let command = CallCommand::UpdateStatus(UpdateStatus {
            call_sid: report.call_sid,
            status: report.status,
            sequence_number: report.sequence_number,
            duration_secs: report.duration_secs,
            at: meta.received_at,
        });
        self.callback(id, command, meta).await
    }

    /// Records a callback's command: kept in the spool is as good as recorded, for Twilio.
    async fn callback(
        &self,
        id: CallId,
        command: CallCommand,
        meta: &CommandMetadata,
    ) -> Result<(), AppError> {
        match self.run_unheard(id, command, meta).await {
            Ok(_) | Err(AppError::Spooled(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// The call's state as this instance last left it, or as stored when it holds none: for
    /// reading before a command, which the store then checks (a stale read is caught by the
    /// append, never acted on).
    async fn known(&self, id: CallId) -> Result<Call, AppError> {
        let spooled = self.spool.as_ref().is_some_and(|spool| spool.holds(id));
        match self.dispatcher.cached(id).await {
            Some(state) if !spooled => Ok(state),
            _ => self.load(id).await,
        }
    }

    /// `answer` in the language of call `id`, for answers that need no command: the call's state
    /// is read (from the cache, usually); when it cannot be, the default language is used.
    async fn in_language_of(&self, id: CallId, answer: CallAnswer) -> Spoken {
        if let Some(state) = self.dispatcher.cached(id).await {
            return Spoken::new(answer, state.language());
        }
        let language = match self.load(id).await {
            Ok(state) => state.language(),
            Err(_) => Language::default(),
        };
        Spoken::new(answer, language)
    }

    /// The call's current state.
    pub async fn call(&self, id: CallId) -> Result<Call, AppError> {
        self.dispatcher.load(id).await
    }
}

fn log_failure(error: &AppError) {
    match error {
        AppError::Spooled(cause) => {
            tracing::warn!(store = %cause, "the store is away: the webhook is kept in the spool, to be recorded when it is back");
        }
        AppError::Rule(_) | AppError::WrongCall => {
            tracing::warn!(error = %error, "webhook refused by the call's rules");
        }
        _ => tracing::error!(error = %error, "webhook could not be stored"),
    }
}

/// What the caller hears for `turn`: a person whenever the turn or anything earlier in the call
/// warranted one; otherwise its reply (the vetted fallback while it is not analysed), followed
/// by the direct question if it is asked after this turn.
fn answer_for(state: &Call, turn: &Turn) -> Spoken {
    let scripted = || script::scripted_reply(state.language()).to_owned();
    let reply = match (state.route_for(turn), &turn.analysis) {
        (Some(Route::Escalate), _) => return in_call(state, CallAnswer::Escalating),
        (None, _) if state.warrants_person() => return in_call(state, CallAnswer::Escalating),
        (Some(Route::Reply), Some(analysis)) => analysis.reply.clone().unwrap_or_else(scripted),
        _ => scripted(),
    };
    let answer = if state.asks_question_after(turn.number) {
        CallAnswer::Question { reply }
    } else {
        CallAnswer::Reply { text: reply }
    };
    in_call(state, answer)
}

/// Whether the screener finds any sign of risk in `text`.
fn shows_risk(text: &str) -> bool {
    let screening = domain::risk::screen(text);
    screening.level > domain::risk::RiskLevel::None || screening.signals.iter().any(|s| s.is_risk())
}

/// Whether words said where a turn was expected are only a choice ("counselor", "goodbye"), to
/// be taken as that choice. Anything that shows risk is a turn, whatever choice words it also
/// holds ("I want to end it, goodbye").
fn only_a_choice(text: &str) -> bool {
    matches!(
        Choice::from_input(None, Some(text)),
        Some(Choice::Counselor | Choice::End)
    ) && !shows_risk(text)
}

/// `answer`, in the call's language.
fn in_call(state: &Call, answer: CallAnswer) -> Spoken {
    let turn = state.current_turn().map_or(0, |turn| turn.number);
    Spoken::new(answer, state.language()).at_turn(turn)
}

/// The caller hears a person is coming, never the failure itself. Without the call's state its
/// language is not known, and the default is used.
fn trouble(error: &AppError) -> Spoken {
    log_failure(error);
    Spoken::new(CallAnswer::Trouble, Language::default())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn with_whispers_only_a_pressed_1_or_a_long_conversation_counts_as_a_person() {
        let report = |attempt, talk_secs| DialReport {
            line: DialedLine::Counselor,
            attempt,
            status: DialStatus::Completed,
            talk_secs: Some(talk_secs),
        };
        let lines = Lines {
            more: vec![DialNumber::parse("+15005550003").expect("valid")],
            ..lines()
        };
        let service = CallService::new(MemStore::default(), lines).with_whisper(true);
        started(&service).await;
        // No key on record and a short leg: a whisper nobody took, so the next counselor.
        assert_eq!(
            service
                .dial_ended(id(), report(1, 12), &meta())
                .await
                .answer,
            CallAnswer::NextCounselor { attempt: 2 }
        );
        // No key on record (it could not be stored) but ten minutes on the line: a conversation,
        // and the caller is not rung on after it.
        assert_eq!(
            service
                .dial_ended(id(), report(2, 600), &meta())
                .await
                .answer,
            CallAnswer::Farewell
        );
    }

    #[test]
    fn faults_are_classified_and_a_value_the_database_refused_is_no_outage() {
        use cqrs_es::AggregateError;
        let refused = AppError::Store(AggregateError::DeserializationError(
            "invalid byte sequence".into(),
        ));
        assert_eq!(super::cause_of(&refused), None);
        assert!(!super::store_away(&refused));
        let down = AppError::Store(AggregateError::DatabaseConnectionError("refused".into()));
        assert_eq!(super::cause_of(&down), Some(Cause::Unreachable));
        let busy = AppError::Store(AggregateError::DatabaseConnectionError(Box::new(StoreBusy)));
        assert_eq!(super::cause_of(&busy), Some(Cause::Busy));
        let failing = AppError::Store(AggregateError::UnexpectedError("boom".into()));
        assert_eq!(super::cause_of(&failing), Some(Cause::Failing));
        assert_eq!(super::cause_of(&AppError::TimedOut), Some(Cause::Slow));
        assert_eq!(super::cause_of(&AppError::WrongCall), None);
        assert!(super::store_away(&AppError::StoreSkipped));
        assert!(!super::store_away(&AppError::Rule(CallError::NotStarted)));
    }

    use super::*;
    use chrono::Utc;
    use cqrs_es::mem_store::MemStore;
    use domain::call::{Analysis, RecordAnalysis, ReplySource, StageTimings};
    use domain::{fixtures, risk};

    const SID: &str = "CA0123456789abcdef0123456789abcdef";
    const MODEL_REPLY: &str = "That sounds like a hard day. I'm here; tell me more.";

    fn meta() -> CommandMetadata {
        CommandMetadata {
            request_id: "req-1".into(),
            idempotency_token: None,
            actor: "twilio".into(),
            received_at: Utc::now(),
            spool_entry: None,
        }
    }

    fn sid() -> CallSid {
        CallSid::parse(SID).expect("valid")
    }

    fn id() -> CallId {
        CallId::for_call_sid(&sid())
    }

    fn lines() -> Lines {
        Lines {
            counselor: DialNumber::parse("+15005550001").expect("valid"),
            crisis: DialNumber::parse("988").expect("valid"),
            counselor_es: Some(DialNumber::parse("+15005550002").expect("valid")),
            more: Vec::new(),
            more_es: Vec::new(),
        }
    }

    fn service(pipeline: bool) -> CallService<MemStore<Call>> {
        let service = CallService::new(MemStore::default(), lines());
        if pipeline {
            service.with_pipeline()
        } else {
            service
        }
    }

    async fn started(service: &CallService<MemStore<Call>>) {
        let call = IncomingCall {
            call_sid: sid(),
            account_sid: fixtures::account_sid(),
            from: CallerId::new(fixtures::CALLER),
            to: fixtures::HOTLINE_NUMBER.into(),
            direction: "inbound".into(),
        };
        assert_eq!(
            service.answer_call(call, &meta()).await.answer,
            CallAnswer::Welcome
        );
    }

    /// A started call whose caller has just finished turn 1.
    async fn after_one_turn(service: &CallService<MemStore<Call>>) {
        started(service).await;
        let done = RecordingDone {
            call_sid: sid(),
            recording_sid: RecordingSid::parse("RE0123456789abcdef0123456789abcdef")
                .expect("valid"),
            recording_url: RecordingUrl::parse("https://api.twilio.com/x").expect("valid"),
            duration_secs: Some(5),
            digits: Some("#".into()),
        };
        assert_eq!(
            service.receive_recording(id(), done, &meta()).await.answer,
            CallAnswer::Hold { waited: 0 }
        );
    }

    async fn execute(service: &CallService<MemStore<Call>>, command: CallCommand) {
        service
            .dispatcher
            .execute(id(), command, &meta())
            .await
            .expect("runs");
    }

    /// The pipeline analysed turn 1 of what the caller said.
    async fn analysed(service: &CallService<MemStore<Call>>, transcript: &str) {
        let screening = risk::screen(transcript);
        let assessment = risk::assess(&screening, None);
        let reply = (assessment.route == Route::Reply).then(|| MODEL_REPLY.to_owned());
        let analysis = Analysis {
            transcript: transcript.into(),
            screening,
            assessment,
            model: None,
            reply_source: reply.as_ref().map(|_| ReplySource::Model),
            reply,
            timings: StageTimings::default(),
            recording_key: None,
        };
        let command = CallCommand::RecordAnalysis(RecordAnalysis {
            turn: 1,
            analysis,
            at: Utc::now(),
        });
        execute(service, command).await;
    }

    /// The pipeline claimed turn 1 to play it by a REST update.
    async fn claimed_by_rest(service: &CallService<MemStore<Call>>) {
        let command = CallCommand::PlayResponse(PlayResponse {
            turn: Some(1),
            via: PlayedVia::RestUpdate,
            counselor_line: lines().counselor,
            at: Utc::now(),
        });
        execute(service, command).await;
    }

    fn fallback() -> CallAnswer {
        CallAnswer::Question {
            reply: script::scripted_reply(Language::English).to_owned(),
        }
    }

    #[tokio::test]
    async fn a_call_that_ended_hears_nothing() {
        let service = service(true);
        after_one_turn(&service).await;
        let report = StatusReport {
            call_sid: sid(),
            status: CallStatus::parse("completed"),
            sequence_number: Some(5),
            duration_secs: Some(30),
        };
        service.update_status(report, &meta()).await.expect("runs");

        assert_eq!(
            service.continue_call(id(), 0, &meta()).await.answer,
            CallAnswer::Nothing
        );
    }

    #[tokio::test]
    async fn a_call_never_started_gets_a_person() {
        let service = service(true);

        assert_eq!(
            service.continue_call(id(), 0, &meta()).await.answer,
            CallAnswer::Trouble
        );
    }

    #[tokio::test]
    async fn a_call_without_a_turn_yet_listens() {
        let service = service(true);
        started(&service).await;

        assert_eq!(
            service.continue_call(id(), 0, &meta()).await.answer,
            CallAnswer::Listen
        );
    }

    #[tokio::test]
    async fn without_the_pipeline_the_vetted_script_answers_at_once() {
        let service = service(false);
        after_one_turn(&service).await;

        assert_eq!(
            service.continue_call(id(), 0, &meta()).await.answer,
            fallback()
        );
    }

    #[tokio::test]
    async fn while_the_pipeline_works_the_caller_is_held_a_bounded_number_of_times() {
        let service = service(true);
        after_one_turn(&service).await;

        for waited in 0..MAX_WAITS {
            assert_eq!(
                service.continue_call(id(), waited, &meta()).await.answer,
                CallAnswer::Hold { waited: waited + 1 }
            );
        }
    }

    #[tokio::test]
    async fn when_the_pipeline_takes_too_long_the_caller_hears_the_fallback() {
        let service = service(true);
        after_one_turn(&service).await;

        assert_eq!(
            service.continue_call(id(), MAX_WAITS, &meta()).await.answer,
            fallback()
        );
    }

    #[tokio::test]
    async fn a_retried_webhook_gets_the_answer_it_already_gave() {
        let service = service(true);
        after_one_turn(&service).await;
        let first = service.continue_call(id(), MAX_WAITS, &meta()).await;

        // Twilio retries: the caller is not held again, and hears the same answer.
        assert_eq!(service.continue_call(id(), 0, &meta()).await, first);
    }

    #[tokio::test]
    async fn an_analysed_turn_is_answered_with_its_reply() {
        let service = service(true);
        after_one_turn(&service).await;
        analysed(&service, "I had a rough day at work.").await;

        assert_eq!(
            service.continue_call(id(), 0, &meta()).await.answer,
            CallAnswer::Question {
                reply: MODEL_REPLY.into()
            }
        );
    }

    #[tokio::test]
    async fn an_analysed_turn_that_warrants_a_person_escalates() {
        let service = service(true);
        after_one_turn(&service).await;
        analysed(&service, "I'm going to kill myself tonight.").await;

        assert_eq!(
            service.continue_call(id(), 0, &meta()).await.answer,
            CallAnswer::Escalating
        );
        assert!(service.call(id()).await.expect("loads").is_escalated());
    }

    #[tokio::test]
    async fn while_the_rest_update_is_on_its_way_the_caller_is_held() {
        let service = service(true);
        after_one_turn(&service).await;
        analysed(&service, "I had a rough day at work.").await;
        claimed_by_rest(&service).await;

        assert_eq!(
            service.continue_call(id(), 0, &meta()).await.answer,
            CallAnswer::Hold { waited: 1 }
        );
    }

    #[tokio::test]
    async fn when_the_rest_update_never_arrives_the_webhook_plays_the_answer() {
        let service = service(true);
        after_one_turn(&service).await;
        analysed(&service, "I had a rough day at work.").await;
        claimed_by_rest(&service).await;

        assert_eq!(
            service.continue_call(id(), MAX_WAITS, &meta()).await.answer,
            CallAnswer::Question {
                reply: MODEL_REPLY.into()
            }
        );
    }

    fn words(speech: Option<&str>, confidence: Option<f64>, digits: Option<&str>) -> SpeechInput {
        SpeechInput {
            call_sid: sid(),
            speech: speech.map(str::to_owned),
            confidence,
            digits: digits.map(str::to_owned),
        }
    }

    #[tokio::test]
    async fn calm_words_are_answered_in_the_same_response_then_asked_the_question() {
        let service = service(true);
        started(&service).await;
        let said = words(Some("I had a rough day at work."), Some(0.93), None);

        let spoken = service.hear_speech(id(), said.clone(), &meta()).await;
        assert_eq!(
            spoken,
            Spoken::new(
                CallAnswer::Question {
                    reply: script::scripted_reply(Language::English).into()
                },
                Language::English
            )
            .at_turn(1)
        );
        // Twilio's retry of the same action gets the same answer and records nothing new.
        assert_eq!(service.hear_speech(id(), said, &meta()).await, spoken);
        assert_eq!(service.call(id()).await.expect("loads").turns().len(), 1);
    }

    #[tokio::test]
    async fn risky_low_confidence_or_no_words_reach_a_person() {
        for (said, expected) in [
            (
                words(Some("I'm going to kill myself tonight."), Some(0.9), None),
                CallAnswer::Escalating,
            ),
            (
                words(Some("I had a rough day at work."), Some(0.2), None),
                CallAnswer::Escalating,
            ),
            (words(None, None, None), CallAnswer::NothingHeard),
            (words(None, None, Some("0")), CallAnswer::ConnectCounselor),
            (
                words(Some("counselor please"), Some(0.9), None),
                CallAnswer::ConnectCounselor,
            ),
        ] {
            let service = service(true);
            started(&service).await;
            assert_eq!(
                service.hear_speech(id(), said, &meta()).await.answer,
                expected
            );
            assert!(service.call(id()).await.expect("loads").is_escalated());
        }
    }

    #[tokio::test]
    async fn nine_at_the_greeting_or_spanish_words_switch_the_call_to_spanish() {
        let service = service(true);
        started(&service).await;
        assert_eq!(
            service
                .hear_speech(id(), words(None, None, Some("9")), &meta())
                .await,
            Spoken::new(CallAnswer::Greeting, Language::Spanish).at_turn(0)
        );

        let service = self::service(true);
        started(&service).await;
        let said = words(
            Some("Hoy tuve un día muy difícil en el trabajo y me siento muy cansada."),
            Some(0.9),
            None,
        );
        let spoken = service.hear_speech(id(), said, &meta()).await;
        assert_eq!(spoken.language, Language::Spanish);
        // Spanish callers are put through to the Spanish counselor line.
        let zero = service
            .hear_speech(id(), words(None, None, Some("0")), &meta())
            .await;
        assert_eq!(
            (zero.answer, zero.language),
            (CallAnswer::ConnectCounselor, Language::Spanish)
        );
        let call = service.call(id()).await.expect("loads");
        assert_eq!(call.language(), Language::Spanish);
        assert!(call.is_escalated());
    }

    #[test]
    fn after_a_dial_the_caller_is_never_hung_up_on() {
        use DialOutcome::*;
        use DialedLine::*;
        assert_eq!(after_dial(Counselor, Connected), CallAnswer::Farewell);
        assert_eq!(after_dial(CrisisLine, Connected), CallAnswer::Farewell);
        assert_eq!(
            after_dial(Counselor, NotConnected),
            CallAnswer::ConnectCrisisLine
        );
        assert_eq!(after_dial(CrisisLine, NotConnected), CallAnswer::LastResort);
    }
}
