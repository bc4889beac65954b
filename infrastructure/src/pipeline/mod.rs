//! The conversation pipeline's wing: its durable wiring here (a subscription that enqueues one job
//! per recorded turn, in its checkpoint transaction, so no turn is lost or enqueued twice, and the
//! job handler that runs the turn and, when its attempts run out, takes the caller to a person),
//! the job queue it runs on, and the clients of the services a turn needs (speech-to-text and the
//! language model, the audio store).

pub mod audio_store;
pub mod jobs;
pub mod openai;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use application::pipeline::{Pipeline, PipelineError};
use cqrs_es::EventStore;
use domain::call::{RecordingUrl, Stage};
use domain::{Call, CallEvent, CallId, Choice, RecordingSid};
use sqlx::PgConnection;

use self::jobs::{ClaimedJob, JobFailure, JobHandler, NewJob};
use crate::event_store::subscription::{Consumer, ConsumerError, StoredEvent};

/// The kind of job that processes a turn.
pub const PROCESS_TURN: &str = "process_turn";

/// How many times a turn is tried before the caller is taken to a person.
pub const TURN_ATTEMPTS: i32 = 4;

/// The kind of job that copies the recording of a whole call into the audio store.
pub const KEEP_CALL_RECORDING: &str = "keep_call_recording";

/// How many times keeping a call's recording is tried (Twilio keeps its own copy meanwhile).
pub const KEEP_CALL_RECORDING_ATTEMPTS: i32 = 6;

/// The kind of job that asks Twilio how a call stands when its end was never recorded.
pub const RECONCILE_CALL: &str = "reconcile_call";

/// How many times Twilio is asked in one round (the next round asks again).
const RECONCILE_ATTEMPTS: i32 = 3;

/// Enqueues a `reconcile_call` job for every call that started more than `after` ago and has no
/// end on record (its status callback lost, or never sent): once per `after`, so a call that is
/// still live is asked again later. Returns how many were enqueued.
pub async fn reconcile_unfinished(pool: &sqlx::PgPool, after: Duration) -> sqlx::Result<u64> {
    let secs = after.as_secs().max(1);
    let round = i32::try_from(chrono::Utc::now().timestamp().unsigned_abs() / secs).unwrap_or(0);
    let enqueued = sqlx::query(
        "INSERT INTO jobs (call_id, turn, kind, payload, max_attempts)
         SELECT call_id::text, $2, $3, '{}'::jsonb, $4 FROM call_views
          WHERE ended_at IS NULL AND started_at < now() - make_interval(secs => $1)
         ON CONFLICT (call_id, turn, kind) DO NOTHING",
    )
    .bind(secs as f64)
    .bind(round)
    .bind(RECONCILE_CALL)
    .bind(RECONCILE_ATTEMPTS)
    .execute(pool)
    .await?;
    Ok(enqueued.rows_affected())
}

/// Enqueues a `process_turn` job for every recorded turn: when its recording arrives, or, when
/// Twilio transcribes the turns (no speech-to-text service), when its transcription arrives.
#[derive(Debug, Default, Clone, Copy)]
pub struct PipelineConsumer {
    pub on_transcription: bool,
}

impl Consumer for PipelineConsumer {
    fn name(&self) -> &str {
        "pipeline"
    }

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ConsumerError> {
        let trigger = if self.on_transcription {
            "TranscriptionReceived"
        } else {
            "RecordingReceived"
        };
        // Only the triggers are decoded: the other events of a call are no business of this one.
        // A speech turn whose answer was not ready in its webhook is answered here too, and the
        // recording of a whole call is kept.
        if event.event_type != trigger
            && event.event_type != "AnswerDeferred"
            && event.event_type != "CallRecordingReceived"
        {
            return Ok(());
        }
        let Some((_, recorded)) = event.call_event()? else {
            return Ok(());
        };
        if let CallEvent::CallRecordingReceived {
            recording_sid,
            recording_url,
            status,
            ..
        } = recorded
        {
            // An absent (silent, too short) or failed recording has no audio to keep.
            if status != "completed" {
                return Ok(());
            }
            let job = NewJob {
                call_id: event.aggregate_id.clone(),
                turn: 0,
                kind: KEEP_CALL_RECORDING.to_owned(),
                payload: serde_json::json!({
                    "recording_sid": recording_sid.as_str(),
                    "recording_url": recording_url.as_str(),
                }),
                max_attempts: KEEP_CALL_RECORDING_ATTEMPTS,
                run_at: None,
            };
            jobs::enqueue(conn, &job).await?;
            return Ok(());
        }
        let turn = match recorded {
            // A recording ended with 0 is the caller asking for a person: they are being
            // connected, and a reply played now would interrupt that.
            CallEvent::RecordingReceived { digits, .. }
                if Choice::keys_ask_for_person(digits.as_deref()) =>
            {
                return Ok(());
            }
            CallEvent::RecordingReceived { turn, .. }
            | CallEvent::TranscriptionReceived { turn, .. }
            | CallEvent::AnswerDeferred { turn, .. } => turn,
            _ => return Ok(()),
        };
        let turn = i32::try_from(turn)
            .map_err(|_| ConsumerError::Decode(format!("{trigger} with turn {turn}")))?;
        let job = NewJob {
            call_id: event.aggregate_id.clone(),
            turn,
            kind: PROCESS_TURN.to_owned(),
            payload: serde_json::json!({}),
            max_attempts: TURN_ATTEMPTS,
            run_at: None,
        };
        jobs::enqueue(conn, &job).await?;
        Ok(())
    }
}

/// Runs `process_turn` and `keep_call_recording` jobs.
pub struct PipelineJobs<ES: EventStore<Call>> {
    pipeline: Arc<Pipeline<ES>>,
}

impl<ES: EventStore<Call>> std::fmt::Debug for PipelineJobs<ES> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineJobs").finish_non_exhaustive()
    }
}

impl<ES: EventStore<Call>> PipelineJobs<ES> {
    pub fn new(pipeline: Arc<Pipeline<ES>>) -> Self {
        Self { pipeline }
    }
}

/// Why a turn's job failed: the job names no turn, or the turn's processing failed.
#[derive(Debug, thiserror::Error)]
pub enum TurnJobError {
    /// The job's call id or turn cannot be read (`job_without_call_id`, `job_without_turn`).
    #[error("{0}")]
    Unreadable(&'static str),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl TurnJobError {
    fn stage(&self) -> Stage {
        match self {
            Self::Unreadable(_) => Stage::Delivery,
            Self::Pipeline(error) => error.stage(),
        }
    }
}

impl JobFailure for TurnJobError {
    fn stage(&self) -> Option<&'static str> {
        Some(self.stage().as_str())
    }

    fn class(&self) -> Cow<'_, str> {
        match self {
            Self::Unreadable(class) => Cow::Borrowed(class),
            Self::Pipeline(error) => error.class(),
        }
    }

    fn retryable(&self) -> bool {
        match self {
            Self::Unreadable(_) => false,
            Self::Pipeline(error) => error.retryable(),
        }
    }
}

fn target(job: &ClaimedJob) -> Result<(CallId, u32), TurnJobError> {
    let id =
        CallId::parse(&job.call_id).map_err(|_| TurnJobError::Unreadable("job_without_call_id"))?;
    let turn = u32::try_from(job.turn).map_err(|_| TurnJobError::Unreadable("job_without_turn"))?;
    Ok((id, turn))
}

fn call_recording(job: &ClaimedJob) -> Result<(CallId, RecordingSid, RecordingUrl), TurnJobError> {
    let id =
        CallId::parse(&job.call_id).map_err(|_| TurnJobError::Unreadable("job_without_call_id"))?;
    let field = |name| job.payload.get(name).and_then(serde_json::Value::as_str);
    let recording = field("recording_sid")
        .and_then(|sid| RecordingSid::parse(sid).ok())
        .ok_or(TurnJobError::Unreadable("job_without_recording"))?;
    let url = field("recording_url")
        .and_then(|url| RecordingUrl::parse(url).ok())
        .ok_or(TurnJobError::Unreadable("job_without_recording"))?;
    Ok((id, recording, url))
}

impl<ES> JobHandler for PipelineJobs<ES>
where
    ES: EventStore<Call>,
    ES::AC: Send,
{
    type Failure = TurnJobError;

    async fn run(&self, job: &ClaimedJob) -> Result<(), TurnJobError> {
        if job.kind == RECONCILE_CALL {
            let id = CallId::parse(&job.call_id)
                .map_err(|_| TurnJobError::Unreadable("job_without_call_id"))?;
            let recorded = self.pipeline.reconcile(id).await?;
            tracing::info!(call_id = %id, ended = ?recorded.as_ref().map(domain::CallStatus::as_str), "call reconciled with Twilio");
            return Ok(());
        }
        if job.kind == KEEP_CALL_RECORDING {
            let (id, recording, url) = call_recording(job)?;
            let key = self
                .pipeline
                .keep_call_recording(id, recording, &url)
                .await?;
            tracing::info!(call_id = %id, kept = key.is_some(), "call recording handled");
            return Ok(());
        }
        let (id, turn) = target(job)?;
        let outcome = self.pipeline.process_turn(id, turn).await?;
        tracing::info!(call_id = %id, turn, outcome = ?outcome, "turn processed");
        Ok(())
    }

    async fn exhausted(&self, job: &ClaimedJob, error: &TurnJobError) {
        if job.kind == RECONCILE_CALL {
            // The next round asks again.
            tracing::warn!(
                call_id = %job.call_id,
                error_class = %JobFailure::class(error),
                "could not ask Twilio how the call stands"
            );
            return;
        }
        if job.kind == KEEP_CALL_RECORDING {
            // Nobody is waiting on it, and Twilio still holds the recording: an operator can
            // see the failed job and run it again.
            tracing::error!(
                call_id = %job.call_id,
                error_class = %JobFailure::class(error),
                "could not keep the call's recording; it stays with Twilio"
            );
            return;
        }
        let Ok((id, turn)) = target(job) else {
            return;
        };
        self.pipeline
            .give_up(id, turn, error.stage(), &JobFailure::class(error))
            .await;
    }
}
