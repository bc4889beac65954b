//! The composition root: from a `Config` and a database pool to every part of a running service
//! (the handlers' state, the read side's projection, the conversation pipeline and its workers).
//! `hotline serve` and the tests' `spawn_app()` both build a service here, so a test exercises the
//! wiring `main` runs; the tests only schedule the background work themselves, step by step.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use application::operations::TestCalls;
use application::pipeline::{Pipeline, MODEL_TIMEOUT};
use application::ports::{LanguageModel, SpeechToText};
use application::responder::Responder;
use application::spool::Spool;
use application::Lines;
use axum::Router;
use infrastructure::alerts::{self, AlertConfig, AlertConsumer, AlertJobs};
use infrastructure::config::Config;
use infrastructure::event_store::subscription::SubscriptionRunner;
use infrastructure::event_store::{self, CallStore};
use infrastructure::pipeline::audio_store::ObjectAudioStore;
use infrastructure::pipeline::jobs::{self, JobQueue};
use infrastructure::pipeline::openai::{Endpoint, OpenAiChat, OpenAiSpeechToText};
use infrastructure::pipeline::{self as pipeline_jobs, PipelineConsumer, PipelineJobs};
use infrastructure::read_side::CallViewsProjection;
use infrastructure::spool::FileSpool;
use infrastructure::twilio::adapters::{TwilioCallControl, TwilioRecordings};
use infrastructure::twilio::answers::{Recorded, RelayVoices, Voices};
use infrastructure::twilio::rest::{RetryPolicy, TwilioRest};
use infrastructure::workers::ServiceJobs;
use rand::Rng;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use twilio_signature::SignatureValidator;

use crate::state::{AppState, Operations, Voice};

/// How often the read side's projection may start a batch under load: analysts' views may lag by
/// this much (the dashboard refreshes every 2 s), and in return a batch takes many events at once,
/// often several of one call, whose rows are then written once instead of once an event (see
/// BENCHMARKS.md for what it did to the webhook path).
const VIEWS_PACE: Duration = Duration::from_millis(250);

/// Events per projection batch: a quarter of a second of a heavy load.
const VIEWS_BATCH: u32 = 1000;

/// The same for the pipeline's subscription, which a turn waits on: a few ms at most.
const PIPELINE_PACE: Duration = Duration::from_millis(5);

/// How many turns are processed at once: a slow transcription must not hold up other callers.
pub const PIPELINE_WORKERS: usize = 4;

/// How long an idle worker waits for a job before it looks again (it is woken at once by a
/// notification; this only bounds a missed one).
const WORKER_IDLE: Duration = Duration::from_secs(1);

/// The timings of the service's retries and waits. Production runs on `Timings::default()`; the
/// tests shorten them so that a retry happens at once, and change nothing else.
#[derive(Debug, Clone)]
pub struct Timings {
    /// Retries of Twilio's REST API.
    pub twilio_retry: RetryPolicy,
    /// How long the model may take before the vetted script answers instead.
    pub model_timeout: Duration,
    /// A failed job's first backoff, and the longest; `None`: the queue's own.
    pub job_backoff: Option<(Duration, Duration)>,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            twilio_retry: RetryPolicy::default(),
            model_timeout: MODEL_TIMEOUT,
            job_backoff: None,
        }
    }
}

/// A service, built and not yet running.
#[derive(Debug)]
pub struct Service {
    /// What the handlers share.
    pub state: AppState,
    pool: PgPool,
    /// The conversation pipeline, when Twilio's REST API is configured.
    turns: Option<Turns>,
    /// Where alerts go, when configured.
    alerts: Option<AlertConfig>,
    job_lease: Duration,
    job_backoff: Option<(Duration, Duration)>,
    /// How long a call may go without an end on record before Twilio is asked about it.
    reconcile_after: Duration,
}

/// The conversation pipeline and the subscription that feeds it turns.
#[derive(Debug)]
struct Turns {
    pipeline: Arc<Pipeline<CallStore>>,
    consumer: PipelineConsumer,
}

impl Service {
    /// Wires a service over `pool` as `config` says.
    pub fn build(config: &Config, pool: PgPool, timings: &Timings) -> anyhow::Result<Self> {
        let voice = voice(config);
        let validator = signature_validator(config)?;
        // Speech turns are understood while Twilio waits, by the same screener and model the
        // pipeline uses, within the configured budget.
        let responder = Responder::new(model(config)).with_model_timeout(timings.model_timeout);
        let budget = Duration::from_millis(config.speech_budget_ms);
        let spool: Arc<dyn Spool> = Arc::new(
            FileSpool::open(&config.spool_dir(), config.spool_max_bytes).with_context(|| {
                format!(
                    "HOTLINE_SPOOL_DIR: could not open the spool in {}",
                    config.spool_dir().display()
                )
            })?,
        );
        let state = AppState::new(pool.clone(), validator, voice.clone())
            .with_responder(responder, budget)
            .with_spool(spool.clone());
        let (state, turns) = match pipeline(config, &pool, voice, timings, spool)? {
            Some((pipeline, control)) => {
                let pipeline = Arc::new(pipeline);
                let operations = Operations {
                    pipeline: pipeline.clone(),
                    test_calls: TestCalls::new(
                        Arc::new(control),
                        config.twilio_phone_number.clone(),
                        config.test_call_allowed_numbers.clone(),
                    ),
                };
                let turns = Turns {
                    pipeline,
                    // Without a speech-to-text service, turns wait for Twilio's transcription.
                    consumer: PipelineConsumer {
                        on_transcription: config.stt_base_url.is_none(),
                    },
                };
                (
                    state.with_pipeline().with_operations(operations),
                    Some(turns),
                )
            }
            None => (state, None),
        };
        let alerts = config.alerts()?;
        let state = state
            .with_alerts(alerts.is_some())
            .with_limits(crate::server::Limits::from_config(config));
        Ok(Self {
            state,
            pool,
            turns,
            alerts,
            job_lease: Duration::from_secs(config.job_lease_secs),
            job_backoff: timings.job_backoff,
            reconcile_after: Duration::from_secs(config.reconcile_after_secs),
        })
    }

    /// The router serving this service.
    pub fn router(&self) -> Router {
        crate::app(self.state.clone())
    }

    /// The router, with `extra` routes served through the same layers.
    pub fn router_with(&self, extra: Router<AppState>) -> Router {
        crate::app_with(self.state.clone(), extra)
    }

    /// Serves the router (with `extra` routes) on `listener` under the configured limits, until
    /// `shutdown` completes.
    pub fn serve(
        &self,
        listener: tokio::net::TcpListener,
        extra: Router<AppState>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let router = self.router_with(extra);
        let limits = self.state.limits;
        let stats = self.state.connections.clone();
        crate::server::serve(listener, router, limits, stats, shutdown)
    }

    /// Whether turns are answered by the conversation pipeline.
    pub fn has_pipeline(&self) -> bool {
        self.turns.is_some()
    }

    /// Whether the pipeline waits for Twilio's transcriptions (no speech-to-text service).
    pub fn on_transcription(&self) -> bool {
        self.turns
            .as_ref()
            .is_some_and(|t| t.consumer.on_transcription)
    }

    /// The read side's projection. Every instance runs one; one at a time holds it.
    pub fn projection(&self) -> SubscriptionRunner<CallViewsProjection> {
        SubscriptionRunner::new(self.pool.clone(), CallViewsProjection)
            .with_min_interval(VIEWS_PACE)
            .with_batch_size(VIEWS_BATCH)
    }

    /// The subscription that enqueues a job for every turn, when the pipeline is on.
    pub fn turn_subscription(&self) -> Option<SubscriptionRunner<PipelineConsumer>> {
        let turns = self.turns.as_ref()?;
        Some(
            SubscriptionRunner::new(self.pool.clone(), turns.consumer)
                .with_min_interval(PIPELINE_PACE),
        )
    }

    /// A pipeline worker named `worker` (unique across processes): its queue and what it runs.
    pub fn turn_worker(
        &self,
        worker: impl Into<String>,
    ) -> Option<(JobQueue, PipelineJobs<CallStore>)> {
        let turns = self.turns.as_ref()?;
        let mut queue = JobQueue::new(self.pool.clone(), worker, self.job_lease);
        if let Some((base, cap)) = self.job_backoff {
            queue = queue.with_backoff(base, cap);
        }
        Some((queue, PipelineJobs::new(turns.pipeline.clone())))
    }

    /// A worker for every kind of job this instance runs (the pipeline's, the alerts'), named
    /// `worker` (unique across processes); none when neither is configured.
    pub fn worker(&self, worker: impl Into<String>) -> Option<(JobQueue, ServiceJobs<CallStore>)> {
        if self.turns.is_none() && self.alerts.is_none() {
            return None;
        }
        let mut queue = JobQueue::new(self.pool.clone(), worker, self.job_lease);
        if let Some((base, cap)) = self.job_backoff {
            queue = queue.with_backoff(base, cap);
        }
        let jobs = ServiceJobs {
            pipeline: self
                .turns
                .as_ref()
                .map(|turns| PipelineJobs::new(turns.pipeline.clone())),
            alerts: self
                .alerts
                .clone()
                .map(|config| AlertJobs::new(config, event_store::call_store(self.pool.clone()))),
        };
        Some((queue, jobs))
    }

    /// The subscription that raises alerts from the calls' events, when alerts are configured.
    pub fn alert_subscription(&self) -> Option<SubscriptionRunner<AlertConsumer>> {
        let alerts = self.alerts.as_ref()?;
        Some(
            SubscriptionRunner::new(
                self.pool.clone(),
                AlertConsumer {
                    person_wait: alerts.person_wait,
                },
            )
            .with_min_interval(PIPELINE_PACE),
        )
    }

    /// Starts the background work until `stopped` turns true: the projection; with the pipeline
    /// on, its subscription; with alerts on, theirs and a watch on stalled work; and
    /// `PIPELINE_WORKERS` workers for either.
    pub fn spawn_background(&self, stopped: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let mut tasks = vec![
            tokio::spawn(self.projection().run(until(stopped))),
            tokio::spawn(self.spool_replayer(until(stopped))),
        ];
        if let Some(subscription) = self.turn_subscription() {
            tasks.push(tokio::spawn(subscription.run(until(stopped))));
        }
        if let Some(subscription) = self.alert_subscription() {
            tasks.push(tokio::spawn(subscription.run(until(stopped))));
            let pool = self.pool.clone();
            let stop = until(stopped);
            tasks.push(tokio::spawn(async move {
                tokio::pin!(stop);
                let mut every = tokio::time::interval(alerts::WATCH_EVERY);
                loop {
                    tokio::select! {
                        () = &mut stop => return,
                        _ = every.tick() => {
                            if let Err(error) = alerts::watch_once(&pool, alerts::STALLED_AFTER).await {
                                tracing::warn!(%error, "could not look for stalled work");
                            }
                        }
                    }
                }
            }));
        }
        if self.turns.is_some() {
            let pool = self.pool.clone();
            let after = self.reconcile_after;
            let stop = until(stopped);
            tasks.push(tokio::spawn(async move {
                tokio::pin!(stop);
                let mut every = tokio::time::interval(RECONCILE_EVERY.min(after));
                loop {
                    tokio::select! {
                        () = &mut stop => return,
                        _ = every.tick() => match pipeline_jobs::reconcile_unfinished(&pool, after).await {
                            Ok(0) => {}
                            Ok(calls) => tracing::info!(calls, "asking Twilio about calls with no end on record"),
                            Err(error) => tracing::warn!(%error, "could not look for calls to reconcile"),
                        },
                    }
                }
            }));
        }
        let instance = uuid::Uuid::new_v4();
        for n in 0..PIPELINE_WORKERS {
            if let Some((queue, handler)) = self.worker(format!("{instance}-{n}")) {
                tasks.push(tokio::spawn(jobs::run_worker(
                    queue,
                    handler,
                    WORKER_IDLE,
                    until(stopped),
                )));
            }
        }
        tasks
    }
}

impl Service {
    /// Replays the spool into the store whenever something is kept in it, and every
    /// `SPOOL_RETRY` while anything waits, until `stop` completes.
    pub fn spool_replayer(
        &self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let calls = self.state.calls.clone();
        let spool = self.state.spool.clone();
        async move {
            let Some(spool) = spool else {
                return;
            };
            tokio::pin!(stop);
            loop {
                match calls.replay_spool().await {
                    Ok(replayed) if replayed.recorded + replayed.refused > 0 => {
                        tracing::info!(
                            recorded = replayed.recorded,
                            refused = replayed.refused,
                            "the spool was replayed into the store"
                        );
                    }
                    Ok(_) => {}
                    Err(error) => tracing::debug!(%error, "the spool waits for the store"),
                }
                let waiting = spool.stats().pending > 0;
                tokio::select! {
                    () = &mut stop => return,
                    () = spool.kept() => {}
                    () = tokio::time::sleep(SPOOL_RETRY), if waiting => {}
                }
            }
        }
    }
}

/// How often calls with no end on record are looked for.
const RECONCILE_EVERY: Duration = Duration::from_secs(300);

/// How often the spool tries the store again while webhooks wait in it.
const SPOOL_RETRY: Duration = Duration::from_millis(500);

/// Completes when `stopped` turns true.
fn until(
    stopped: &watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = stopped.clone();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// The conversation pipeline, when Twilio's REST API is configured.
fn pipeline(
    config: &Config,
    pool: &PgPool,
    voice: Voice,
    timings: &Timings,
    spool: Arc<dyn Spool>,
) -> anyhow::Result<Option<(Pipeline<CallStore>, TwilioCallControl)>> {
    let (Some(account), Some(token)) = (
        config.twilio_account_sid.clone(),
        config.secret_auth_tokens().into_iter().next(),
    ) else {
        return Ok(None);
    };
    let audio_store = ObjectAudioStore::open(&config.audio_store_url())
        .context("AUDIO_STORE_URL: could not open the audio store")?;
    let rest =
        TwilioRest::new(&config.twilio_api_base, account, token).with_retry(timings.twilio_retry);
    // Without a speech-to-text service, Twilio transcribes each turn (see `voice`).
    let speech = config.stt_base_url.clone().map(|base_url| {
        Arc::new(OpenAiSpeechToText::new(Endpoint {
            base_url,
            api_key: config.stt_api_key.clone().map(SecretString::from),
            model: config.stt_model.clone(),
        })) as Arc<dyn SpeechToText>
    });
    let model = model(config);
    let voice = Arc::new(voice);
    let control = TwilioCallControl {
        rest: rest.clone(),
        voice: voice.clone(),
    };
    let pipeline = Pipeline::new(
        event_store::call_store(pool.clone()),
        Arc::new(TwilioRecordings(rest)),
        speech,
        model,
        Arc::new(control.clone()),
        voice.lines.clone(),
    )
    .with_model_timeout(timings.model_timeout)
    .with_audio_store(Arc::new(audio_store))
    .with_spool(spool);
    Ok(Some((pipeline, control)))
}

/// How callers are spoken to, from the configuration.
pub fn voice(config: &Config) -> Voice {
    Voice {
        public_base_url: config.public_base_url(),
        lines: Lines {
            counselor: config.counselor_line(),
            crisis: config.crisis_line_number.clone(),
            counselor_es: config.counselor_number_es.clone(),
            more: config.counselor_numbers.clone(),
            more_es: config.counselor_numbers_es.clone(),
        },
        voices: Voices {
            english: config.voice_en.clone(),
            spanish: config.voice_es.clone(),
            relay: RelayVoices {
                provider: config.relay_tts_provider.clone(),
                english: config.relay_voice_en.clone(),
                spanish: config.relay_voice_es.clone(),
            },
        },
        conversation: config.conversation,
        // Without a speech-to-text service, the pipeline reads Twilio's transcriptions.
        transcribe: config.has_twilio_credentials() && config.stt_base_url.is_none(),
        recorded: Recorded {
            greeting_en: config.greeting_audio_en.clone(),
            greeting_es: config.greeting_audio_es.clone(),
        },
        record_calls: config.records_calls(),
        whisper: config.whisper,
        ring: config.counselor_ring,
    }
}

/// The language model, if one is configured.
fn model(config: &Config) -> Option<Arc<dyn LanguageModel>> {
    config.llm_base_url.clone().map(|base_url| {
        Arc::new(OpenAiChat::new(Endpoint {
            base_url,
            api_key: config.llm_api_key.clone().map(SecretString::from),
            model: config.llm_model.clone(),
        })) as Arc<dyn LanguageModel>
    })
}

/// The webhook validator: the configured auth tokens, or in development a token kept under the
/// data directory, so signed requests can be made by hand.
fn signature_validator(config: &Config) -> anyhow::Result<SignatureValidator> {
    let tokens = if config.has_twilio_credentials() {
        config.secret_auth_tokens()
    } else {
        vec![SecretString::from(development_token(&config.data_dir)?)]
    };
    Ok(SignatureValidator::new(&config.public_base_url(), tokens))
}

/// The development auth token under `data_dir`, created on first use.
pub fn development_token(data_dir: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let path = data_dir.join(DEVELOPMENT_TOKEN_FILE);
    if let Ok(token) = std::fs::read_to_string(&path) {
        let token = token.trim().to_owned();
        if !token.is_empty() {
            return Ok(token);
        }
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("could not create {}", data_dir.display()))?;
    let bytes: [u8; 16] = rand::rng().random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // Readable by its owner only: it signs webhooks.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("could not write {}", path.display()))?;
    file.write_all(token.as_bytes())
        .with_context(|| format!("could not write {}", path.display()))?;
    Ok(token)
}

/// The development token's file, under the data directory.
pub const DEVELOPMENT_TOKEN_FILE: &str = "dev-auth-token";
