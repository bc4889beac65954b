//! The job queue: slow work (downloads, speech-to-text, the language model, Twilio's REST API) is
//! enqueued by a subscription in its checkpoint transaction and run by workers on any instance.
//! A worker claims a job with `FOR UPDATE SKIP LOCKED` under a lease; a job whose lease ran out
//! (its worker died) is claimed again. Failures are retried with exponential backoff and full
//! jitter up to the job's attempts; a job that exhausts them is marked failed, and its handler's
//! `exhausted` takes the caller to the human path.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use rand::Rng;
use sqlx::{PgConnection, PgPool};

use crate::event_store::wakeup::Wakeup;

/// The channel the `jobs` trigger notifies when a job is enqueued.
pub const JOBS_CHANNEL: &str = "hotline_jobs";

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub call_id: String,
    pub turn: i32,
    pub kind: String,
    pub payload: serde_json::Value,
    pub max_attempts: i32,
    /// When it is due; now when absent.
    pub run_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A job a worker holds.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedJob {
    pub id: i64,
    pub call_id: String,
    pub turn: i32,
    pub kind: String,
    pub payload: serde_json::Value,
    pub attempts: i32,
    pub max_attempts: i32,
}

/// What became of a failed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It will be tried again after this pause.
    Retry(Duration),
    /// It has used all its attempts.
    Exhausted,
    /// Another worker holds it now (this worker's lease ran out): this outcome was not recorded.
    Lost,
}

/// Enqueues `job` within the caller's transaction. Returns false when the same (call, turn, kind)
/// was enqueued before: replaying an event cannot enqueue its work twice.
pub async fn enqueue(conn: &mut PgConnection, job: &NewJob) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO jobs (call_id, turn, kind, payload, max_attempts, run_at)
         VALUES ($1, $2, $3, $4, $5, coalesce($6, now()))
         ON CONFLICT (call_id, turn, kind) DO NOTHING",
    )
    .bind(&job.call_id)
    .bind(job.turn)
    .bind(&job.kind)
    .bind(&job.payload)
    .bind(job.max_attempts)
    .bind(job.run_at)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The pause before attempt `attempt + 1`: exponential from `base`, capped, with full jitter.
pub fn backoff(attempt: i32, base: Duration, cap: Duration) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    let ceiling = base.saturating_mul(2u32.saturating_pow(exponent)).min(cap);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

/// One worker's view of the queue.
#[derive(Debug, Clone)]
pub struct JobQueue {
    pool: PgPool,
    worker: String,
    lease: Duration,
    backoff_base: Duration,
    backoff_cap: Duration,
}

impl JobQueue {
    /// A worker named `worker` (unique per process) holding jobs for `lease` at a time.
    pub fn new(pool: PgPool, worker: impl Into<String>, lease: Duration) -> Self {
        Self {
            pool,
            worker: worker.into(),
            lease,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
        }
    }

    /// Sets the retry backoff (tests use a zero base to retry at once).
    #[must_use]
    pub fn with_backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_cap = cap;
        self
    }

    /// Claims the next due job, or one whose lease ran out.
    pub async fn claim(&self) -> Result<Option<ClaimedJob>, sqlx::Error> {
        sqlx::query_as(
            "UPDATE jobs
                SET status = 'running', attempts = attempts + 1, locked_by = $1,
                    lease_until = clock_timestamp() + make_interval(secs => $2), updated_at = now()
              WHERE id = (SELECT id FROM jobs
                           WHERE (status = 'pending' AND run_at <= clock_timestamp())
                              OR (status = 'running' AND lease_until <= clock_timestamp())
                           ORDER BY run_at, id
                           LIMIT 1
                           FOR UPDATE SKIP LOCKED)
          RETURNING id, call_id, turn, kind, payload, attempts, max_attempts",
        )
        .bind(&self.worker)
        .bind(self.lease.as_secs_f64())
        .fetch_optional(&self.pool)
        .await
    }

    /// Marks a held job done. False when another worker holds it now (its outcome stands).
    pub async fn complete(&self, job: &ClaimedJob) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'done', lease_until = NULL, updated_at = now()
              WHERE id = $1 AND locked_by = $2 AND attempts = $3 AND status = 'running'",
        )
        .bind(job.id)
        .bind(&self.worker)
        .bind(job.attempts)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a failed attempt: retried later, or failed for good when attempts are used up or
    /// no retry can mend it. Its stage and class are stored, with both in `last_error` as
    /// `stage: class` for whoever reads the table by eye.
    pub async fn fail(
        &self,
        job: &ClaimedJob,
        error: &impl JobFailure,
    ) -> Result<Fate, sqlx::Error> {
        let class = error.class();
        let stage = error.stage();
        let last_error = match stage {
            Some(stage) => format!("{stage}: {class}"),
            None => class.to_string(),
        };
        let exhausted = !error.retryable() || job.attempts >= job.max_attempts;
        let pause = backoff(job.attempts, self.backoff_base, self.backoff_cap);
        let updated = sqlx::query(
            "UPDATE jobs
                SET status = CASE WHEN $4 THEN 'failed' ELSE 'pending' END,
                    run_at = clock_timestamp() + make_interval(secs => $5),
                    lease_until = NULL, last_error = $6, last_error_stage = $7,
                    last_error_class = $8, updated_at = now()
              WHERE id = $1 AND locked_by = $2 AND attempts = $3 AND status = 'running'",
        )
        .bind(job.id)
        .bind(&self.worker)
        .bind(job.attempts)
        .bind(exhausted)
        .bind(pause.as_secs_f64())
        .bind(last_error)
        .bind(stage)
        .bind(class.as_ref())
        .execute(&self.pool)
        .await?;
        Ok(match (updated.rows_affected(), exhausted) {
            (0, _) => Fate::Lost,
            (_, true) => Fate::Exhausted,
            (_, false) => Fate::Retry(pause),
        })
    }
}

/// Why a job's attempt failed, as the queue records it. Its stage and class are stored: no
/// secrets, no caller data.
pub trait JobFailure: Send + Sync {
    /// The step of the job that failed (`transcription`), for jobs made of steps.
    fn stage(&self) -> Option<&'static str>;
    /// The class of failure (`http_503`).
    fn class(&self) -> Cow<'_, str>;
    /// Whether another attempt could succeed; when none can, the job fails for good at once.
    fn retryable(&self) -> bool;
}

/// A job's failure known by its class alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    pub class: String,
    /// Trying again cannot help (a refused URL, a missing turn): give up at once.
    pub permanent: bool,
}

impl JobError {
    /// A failure worth another attempt.
    pub fn transient(class: impl Into<String>) -> Self {
        Self {
            class: class.into(),
            permanent: false,
        }
    }

    /// A failure no retry can mend.
    pub fn permanent(class: impl Into<String>) -> Self {
        Self {
            class: class.into(),
            permanent: true,
        }
    }
}

impl JobFailure for JobError {
    fn stage(&self) -> Option<&'static str> {
        None
    }

    fn class(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.class)
    }

    fn retryable(&self) -> bool {
        !self.permanent
    }
}

/// Runs a job.
pub trait JobHandler: Send + Sync {
    /// Why an attempt failed.
    type Failure: JobFailure;

    /// Does the job's work.
    fn run(&self, job: &ClaimedJob) -> impl Future<Output = Result<(), Self::Failure>> + Send;

    /// The job failed for good with `error` (its last): take whatever safe path is left.
    fn exhausted(&self, job: &ClaimedJob, error: &Self::Failure)
        -> impl Future<Output = ()> + Send;
}

/// Claims and runs one job; returns whether there was one.
pub async fn work_once<H: JobHandler>(queue: &JobQueue, handler: &H) -> Result<bool, sqlx::Error> {
    let Some(job) = queue.claim().await? else {
        return Ok(false);
    };
    match handler.run(&job).await {
        Ok(()) => {
            if !queue.complete(&job).await? {
                tracing::warn!(job = job.id, "job finished after its lease was taken over");
            }
        }
        Err(error) => {
            let (stage, class) = (error.stage().unwrap_or_default(), error.class());
            match queue.fail(&job, &error).await? {
                Fate::Exhausted => {
                    tracing::error!(job = job.id, kind = %job.kind, stage, class = %class, "job failed for good");
                    handler.exhausted(&job, &error).await;
                }
                Fate::Retry(pause) => {
                    tracing::warn!(job = job.id, kind = %job.kind, stage, class = %class, retry_in_ms = pause.as_millis() as u64, "job failed; will retry");
                }
                Fate::Lost => {
                    tracing::warn!(job = job.id, "job failed after its lease was taken over")
                }
            }
        }
    }
    Ok(true)
}

/// Runs jobs until `shutdown` completes, woken by notifications and polling as a fallback (which
/// also picks up retries and expired leases).
pub async fn run_worker<H: JobHandler>(
    queue: JobQueue,
    handler: H,
    poll_interval: Duration,
    shutdown: impl Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    let mut wakeup = Wakeup::new(queue.pool.clone(), JOBS_CHANNEL);
    loop {
        match work_once(&queue, &handler).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(error) => tracing::error!(error = %error, "job queue unavailable"),
        }
        if !wakeup.wait(poll_interval, &mut shutdown).await {
            return;
        }
    }
}
