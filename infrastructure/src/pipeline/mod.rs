//! The conversation pipeline's wing: its durable wiring here (a subscription that enqueues one job
//! per recorded turn, in its checkpoint transaction, so no turn is lost or enqueued twice, and the
//! job handler that runs the turn and, when its attempts run out, takes the caller to a person),
//! the job queue it runs on, and the clients of the services a turn needs (speech-to-text and the
//! language model, the audio store).

pub mod audio_store;
pub mod jobs;
pub mod openai;
use std::sync::Arc;

use application::pipeline::{Pipeline, PipelineError};
use cqrs_es::EventStore;
use domain::call::Stage;
use domain::{Call, CallId};
use sqlx::PgConnection;

use self::jobs::{ClaimedJob, JobError, JobHandler, NewJob};
use crate::event_store::subscription::{Consumer, ConsumerError, StoredEvent};

/// The kind of job that processes a turn.
pub const PROCESS_TURN: &str = "process_turn";

/// How many times a turn is tried before the caller is taken to a person.
pub const TURN_ATTEMPTS: i32 = 4;

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
        if event.aggregate_type != "Call" || event.event_type != trigger {
            return Ok(());
        }
        let recorded = &event.payload[trigger];
        let turn = recorded["turn"]
            .as_i64()
            .and_then(|t| i32::try_from(t).ok())
            .ok_or_else(|| ConsumerError::Decode(format!("{trigger} without a turn")))?;
        // A recording ended with 0 is the caller asking for a person: they are being connected,
        // and a reply played now would interrupt that.
        if recorded["digits"]
            .as_str()
            .is_some_and(|d| d.starts_with('0'))
        {
            return Ok(());
        }
        let job = NewJob {
            call_id: event.aggregate_id.clone(),
            turn,
            kind: PROCESS_TURN.to_owned(),
            payload: serde_json::json!({}),
            max_attempts: TURN_ATTEMPTS,
        };
        jobs::enqueue(conn, &job).await?;
        Ok(())
    }
}

/// Runs `process_turn` jobs.
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

fn target(job: &ClaimedJob) -> Result<(CallId, u32), JobError> {
    let id = CallId::parse(&job.call_id)
        .map_err(|_| JobError::permanent("delivery: job_without_call_id"))?;
    let turn =
        u32::try_from(job.turn).map_err(|_| JobError::permanent("delivery: job_without_turn"))?;
    Ok((id, turn))
}

/// Failures that no retry can mend: the caller goes to a person at once.
const PERMANENT: &[&str] = &[
    "foreign_recording_url",
    "no_such_turn",
    "no_such_call",
    "bad_content_type",
];

/// The stage named at the start of a stored error (`transcription: http_503`).
fn stage_of(error: &str) -> Stage {
    match error.split(':').next().unwrap_or_default() {
        "download" => Stage::Download,
        "transcription" => Stage::Transcription,
        "assessment" => Stage::Assessment,
        "reply" => Stage::Reply,
        _ => Stage::Delivery,
    }
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Download => "download",
        Stage::Transcription => "transcription",
        Stage::Assessment => "assessment",
        Stage::Reply => "reply",
        Stage::Delivery => "delivery",
    }
}

impl<ES> JobHandler for PipelineJobs<ES>
where
    ES: EventStore<Call>,
    ES::AC: Send,
{
    async fn run(&self, job: &ClaimedJob) -> Result<(), JobError> {
        let (id, turn) = target(job)?;
        match self.pipeline.process_turn(id, turn).await {
            Ok(outcome) => {
                tracing::info!(call_id = %id, turn, outcome = ?outcome, "turn processed");
                Ok(())
            }
            Err(PipelineError::Stage { stage, error }) => {
                let message = format!("{}: {error}", stage_name(stage));
                Err(JobError {
                    permanent: PERMANENT.contains(&error.0.as_str()),
                    message,
                })
            }
            Err(other) => {
                let class = other_class(&other);
                let message = format!("delivery: {class}");
                Err(JobError {
                    permanent: PERMANENT.contains(&class),
                    message,
                })
            }
        }
    }

    async fn exhausted(&self, job: &ClaimedJob, error: &str) {
        let Ok((id, turn)) = target(job) else {
            return;
        };
        let class = error.split_once(": ").map_or(error, |(_, class)| class);
        self.pipeline
            .give_up(id, turn, stage_of(error), class)
            .await;
    }
}

fn other_class(error: &PipelineError) -> &'static str {
    match error {
        PipelineError::Stage { .. } => "stage",
        PipelineError::App(_) => "event_store",
        PipelineError::NoSuchTurn(_) => "no_such_turn",
        PipelineError::NoSuchCall => "no_such_call",
        PipelineError::ForeignRecording => "foreign_recording_url",
    }
}
