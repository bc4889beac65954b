//! What the job queue's workers run: each job by its kind, the pipeline's (a turn, a call's
//! recording) and the alerts'. One queue and one set of workers serve both, so an instance with
//! alerts but no pipeline still delivers them.

use std::borrow::Cow;

use cqrs_es::EventStore;
use domain::Call;

use crate::alerts::{AlertError, AlertJobs, KIND_PREFIX};
use crate::pipeline::jobs::{ClaimedJob, JobFailure, JobHandler};
use crate::pipeline::{PipelineJobs, TurnJobError};

/// The handlers this instance has.
pub struct ServiceJobs<ES: EventStore<Call>> {
    pub pipeline: Option<PipelineJobs<ES>>,
    pub alerts: Option<AlertJobs<ES>>,
}

impl<ES: EventStore<Call>> std::fmt::Debug for ServiceJobs<ES> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceJobs")
            .field("pipeline", &self.pipeline.is_some())
            .field("alerts", &self.alerts.is_some())
            .finish()
    }
}

/// Why a job failed, whichever kind it was.
#[derive(Debug, thiserror::Error)]
pub enum ServiceJobError {
    #[error(transparent)]
    Turn(#[from] TurnJobError),
    #[error(transparent)]
    Alert(#[from] AlertError),
    /// This instance has no handler for the job (its part is not configured here).
    #[error("no handler for this kind of job here")]
    Unhandled,
}

impl JobFailure for ServiceJobError {
    fn stage(&self) -> Option<&'static str> {
        match self {
            Self::Turn(error) => JobFailure::stage(error),
            Self::Alert(error) => error.stage(),
            Self::Unhandled => None,
        }
    }

    fn class(&self) -> Cow<'_, str> {
        match self {
            Self::Turn(error) => JobFailure::class(error),
            Self::Alert(error) => error.class(),
            Self::Unhandled => Cow::Borrowed("no_handler"),
        }
    }

    fn retryable(&self) -> bool {
        match self {
            Self::Turn(error) => JobFailure::retryable(error),
            Self::Alert(error) => error.retryable(),
            // Another instance configured for it may take it on a later try.
            Self::Unhandled => true,
        }
    }
}

impl<ES> JobHandler for ServiceJobs<ES>
where
    ES: EventStore<Call>,
    ES::AC: Send,
{
    type Failure = ServiceJobError;

    async fn run(&self, job: &ClaimedJob) -> Result<(), ServiceJobError> {
        if job.kind.starts_with(KIND_PREFIX) {
            let alerts = self.alerts.as_ref().ok_or(ServiceJobError::Unhandled)?;
            return Ok(alerts.run(job).await?);
        }
        let pipeline = self.pipeline.as_ref().ok_or(ServiceJobError::Unhandled)?;
        Ok(pipeline.run(job).await?)
    }

    async fn exhausted(&self, job: &ClaimedJob, error: &ServiceJobError) {
        match (error, &self.pipeline) {
            (ServiceJobError::Alert(error), _) => AlertJobs::<ES>::exhausted(job, error),
            (ServiceJobError::Turn(error), Some(pipeline)) => pipeline.exhausted(job, error).await,
            _ => {
                tracing::error!(kind = %job.kind, "a job no instance here could run failed for good")
            }
        }
    }
}
