//! From a `Config` to a running service: the database (configured, or the embedded one), the
//! migrations, the webhook signature keys, the router, and a clean stop on Ctrl-C or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use application::Lines;
use infrastructure::config::{Config, LogFormat};
use infrastructure::embedded_pg::EmbeddedPostgres;
use infrastructure::event_store;
use infrastructure::pipeline::audio_store::ObjectAudioStore;
use rand::Rng;
use secrecy::SecretString;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use tokio::net::TcpListener;
use twilio_signature::SignatureValidator;

use crate::state::{AppState, Operations, Voice};
use application::operations::TestCalls;
use application::pipeline::Pipeline;
use application::ports::{LanguageModel, SpeechToText};
use infrastructure::event_store::subscription::SubscriptionRunner;
use infrastructure::pipeline::jobs::{self, JobQueue};
use infrastructure::pipeline::openai::{Endpoint, OpenAiChat, OpenAiSpeechToText};
use infrastructure::pipeline::{PipelineConsumer, PipelineJobs};
use infrastructure::twilio::adapters::{TwilioCallControl, TwilioRecordings};
use infrastructure::twilio::rest::TwilioRest;
use infrastructure::views::CallViewsProjection;
use std::sync::Arc;

/// The database the service runs on, and the private server behind it if there is one.
#[derive(Debug)]
pub struct Database {
    pub pool: PgPool,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects to `DATABASE_URL`, or starts the embedded PostgreSQL when there is none. Every
    /// `open` must end in `close`, which stops the embedded server (were it only dropped, its
    /// lifeline would stop it once this process ends).
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let (options, embedded) = match &config.database_url {
            Some(url) => (
                PgConnectOptions::from_str(url)
                    .context("DATABASE_URL is not a valid PostgreSQL URL")?,
                None,
            ),
            None => {
                tracing::info!(data_dir = %config.data_dir.display(), "no DATABASE_URL: starting the embedded PostgreSQL");
                let pg = EmbeddedPostgres::start(&config.data_dir)
                    .await
                    .context("could not start the embedded PostgreSQL")?;
                (pg.connect_options(), Some(pg))
            }
        };
        let pool = event_store::pool(options, config.db_max_connections);
        Ok(Self { pool, embedded })
    }

    /// Fails, naming the cause (for example "connection refused at 127.0.0.1:5432"), when the
    /// database cannot be reached.
    pub async fn reachable(&self) -> anyhow::Result<()> {
        reachable(&self.pool).await
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        migrate_pool(&self.pool).await
    }

    /// Closes the pool and stops the embedded server if no other process uses it.
    pub async fn close(self) -> anyhow::Result<()> {
        self.pool.close().await;
        if let Some(pg) = self.embedded {
            pg.stop()
                .await
                .context("could not stop the embedded PostgreSQL")?;
        }
        Ok(())
    }

    /// Runs `work` on the database, then closes it whatever `work` returned.
    pub async fn run<T>(
        config: &Config,
        work: impl AsyncFnOnce(&Self) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let db = Self::open(config).await?;
        let result = work(&db).await;
        let closed = db.close().await;
        let value = result?;
        closed?;
        Ok(value)
    }
}

async fn reachable(pool: &PgPool) -> anyhow::Result<()> {
    event_store::reachable(pool)
        .await
        .context("the database is unreachable")
}

/// Migrates, first making sure the database answers, so that a database that does not is named
/// rather than reported as a pool timeout.
async fn migrate_pool(pool: &PgPool) -> anyhow::Result<()> {
    reachable(pool).await?;
    event_store::migrate(pool)
        .await
        .context("migrations failed")
}

/// `hotline migrate`: applies pending migrations and exits.
pub async fn migrate(config: Config) -> anyhow::Result<()> {
    Database::run(&config, async |db| db.migrate().await).await?;
    println!("the database is up to date");
    Ok(())
}

/// `hotline serve`: serves until Ctrl-C or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    serve_until(config, shutdown_signal(), None).await
}

/// `hotline bench-server`: the service with the benchmark's baseline routes beside it.
pub async fn serve_bench(config: Config) -> anyhow::Result<()> {
    serve_with(
        config,
        shutdown_signal(),
        None,
        crate::bench::baseline_routes(),
    )
    .await
}

/// Serves until `shutdown` completes; `ready` gets the service's pool once it is listening.
pub async fn serve_until(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ready: Option<tokio::sync::oneshot::Sender<PgPool>>,
) -> anyhow::Result<()> {
    serve_with(config, shutdown, ready, axum::Router::new()).await
}

async fn serve_with(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ready: Option<tokio::sync::oneshot::Sender<PgPool>>,
    extra: axum::Router<AppState>,
) -> anyhow::Result<()> {
    // The address first: if it is taken, nothing has been started that would need stopping.
    let listener = listen(config.addr).await?;
    Database::run(&config, async |db| {
        serve_on(&config, db, listener, shutdown, ready, extra).await
    })
    .await
}

/// Binds the service's address, naming it and the variable that sets it if that fails.
async fn listen(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|error| {
        let cause = if error.kind() == std::io::ErrorKind::AddrInUse {
            format!("port {} is already in use on {}", addr.port(), addr.ip())
        } else {
            error.to_string()
        };
        anyhow::anyhow!(
            "could not listen on {addr}: {cause} (choose another address with HOTLINE_ADDR)"
        )
    })
}

async fn serve_on(
    config: &Config,
    db: &Database,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ready: Option<tokio::sync::oneshot::Sender<PgPool>>,
    extra: axum::Router<AppState>,
) -> anyhow::Result<()> {
    // Callers must be answered even while the database is down, so a failed migration does not
    // stop the service: it is retried in the background while webhooks answer the fallback.
    if let Err(error) = db.migrate().await {
        tracing::error!(error = format!("{error:#}"), "retrying the migrations in the background; until they apply, callers hear the fallback");
        tokio::spawn(retry_migrations(db.pool.clone()));
    }
    let validator = signature_validator(config)?;
    let state = AppState::new(db.pool.clone(), validator, voice(config));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (state, mut background) = match pipeline(config, &db.pool)? {
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
            // Without a speech-to-text service, turns wait for Twilio's transcription.
            let on_transcription = config.stt_base_url.is_none();
            tracing::info!(
                workers = PIPELINE_WORKERS,
                twilio_transcription = on_transcription,
                "the conversation pipeline is on"
            );
            (
                state.with_pipeline().with_operations(operations),
                spawn_pipeline(
                    &db.pool,
                    on_transcription,
                    pipeline,
                    Duration::from_secs(config.job_lease_secs),
                    &stopped,
                ),
            )
        }
        None => {
            tracing::warn!(
                "the conversation pipeline is off (it needs Twilio credentials): \
                 the vetted script answers every turn"
            );
            (state, Vec::new())
        }
    };
    // The read side is projected by every instance's runner; one at a time holds it.
    background.push(tokio::spawn(
        SubscriptionRunner::new(db.pool.clone(), CallViewsProjection)
            .with_min_interval(VIEWS_PACE)
            .with_batch_size(VIEWS_BATCH)
            .run(until_stopped(&stopped)),
    ));
    let addr = listener
        .local_addr()
        .context("the listener has no address")?;
    tracing::info!(%addr, public_base_url = %config.public_base_url(), "Hotline is answering calls");
    if let Some(ready) = ready {
        let _ = ready.send(db.pool.clone());
    }
    axum::serve(listener, crate::app_with(state, extra))
        .with_graceful_shutdown(shutdown)
        .await
        .context("the HTTP server failed")?;
    tracing::info!("stopping");
    let _ = stop.send(true);
    for task in background {
        let _ = task.await;
    }
    Ok(())
}

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
const PIPELINE_WORKERS: usize = 4;

/// The conversation pipeline, when Twilio's REST API is configured.
fn pipeline(
    config: &Config,
    pool: &PgPool,
) -> anyhow::Result<Option<(Pipeline<event_store::CallStore>, TwilioCallControl)>> {
    let (Some(account), Some(token)) = (
        config.twilio_account_sid.clone(),
        config.secret_auth_tokens().into_iter().next(),
    ) else {
        return Ok(None);
    };
    let audio_store = ObjectAudioStore::open(&config.audio_store_url())
        .context("AUDIO_STORE_URL: could not open the audio store")?;
    let rest = TwilioRest::new(&config.twilio_api_base, account, token);
    // Without a speech-to-text service, Twilio transcribes each turn (see `voice`).
    let speech = config.stt_base_url.clone().map(|base_url| {
        Arc::new(OpenAiSpeechToText::new(Endpoint {
            base_url,
            api_key: config.stt_api_key.clone().map(SecretString::from),
            model: config.stt_model.clone(),
        })) as Arc<dyn SpeechToText>
    });
    let model = config.llm_base_url.clone().map(|base_url| {
        Arc::new(OpenAiChat::new(Endpoint {
            base_url,
            api_key: config.llm_api_key.clone().map(SecretString::from),
            model: config.llm_model.clone(),
        })) as Arc<dyn LanguageModel>
    });
    let voice = Arc::new(voice(config));
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
    .with_audio_store(Arc::new(audio_store));
    Ok(Some((pipeline, control)))
}

/// The pipeline's subscription and its workers, until `stopped` turns true.
fn spawn_pipeline(
    pool: &PgPool,
    on_transcription: bool,
    pipeline: Arc<Pipeline<event_store::CallStore>>,
    lease: Duration,
    stopped: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = vec![tokio::spawn(
        SubscriptionRunner::new(pool.clone(), PipelineConsumer { on_transcription })
            .with_min_interval(PIPELINE_PACE)
            .run(until_stopped(stopped)),
    )];
    let instance = uuid::Uuid::new_v4();
    for n in 0..PIPELINE_WORKERS {
        let queue = JobQueue::new(pool.clone(), format!("{instance}-{n}"), lease);
        let handler = PipelineJobs::new(pipeline.clone());
        tasks.push(tokio::spawn(jobs::run_worker(
            queue,
            handler,
            Duration::from_secs(1),
            until_stopped(stopped),
        )));
    }
    tasks
}

/// Completes when `stopped` turns true.
fn until_stopped(
    stopped: &tokio::sync::watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = stopped.clone();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

async fn retry_migrations(pool: PgPool) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        match migrate_pool(&pool).await {
            Ok(()) => {
                tracing::info!("migrations applied");
                return;
            }
            Err(error) => tracing::warn!(error = format!("{error:#}"), "migrations still failing"),
        }
    }
}

/// How callers are spoken to, from the configuration.
pub fn voice(config: &Config) -> Voice {
    Voice {
        public_base_url: config.public_base_url(),
        lines: Lines {
            counselor: config.counselor_line(),
            crisis: config.crisis_line_number.clone(),
        },
        voice: "Polly.Joanna".to_owned(),
        language: "en-US".to_owned(),
        // Without a speech-to-text service, the pipeline reads Twilio's transcriptions.
        transcribe: config.has_twilio_credentials() && config.stt_base_url.is_none(),
    }
}

/// The webhook validator: the configured auth tokens, or in development a token kept under the
/// data directory and printed once at start, so signed requests can be made by hand.
fn signature_validator(config: &Config) -> anyhow::Result<SignatureValidator> {
    let tokens = if config.has_twilio_credentials() {
        config.secret_auth_tokens()
    } else {
        let token = development_token(&config.data_dir)?;
        announce_development_mode(config, &token);
        vec![SecretString::from(token)]
    };
    Ok(SignatureValidator::new(&config.public_base_url(), tokens))
}

/// Says that no real call can reach the service. On a terminal (text logs) the banner shows the
/// development token to sign requests with; JSON logs are for machines, and never carry it.
fn announce_development_mode(config: &Config, token: &str) {
    if config.log_format == LogFormat::Json {
        tracing::warn!(
            token_file = %config.data_dir.join("dev-auth-token").display(),
            public_base_url = %config.public_base_url(),
            "development mode: no Twilio credentials are configured, so no real call can reach \
             this service; webhooks are checked against the development auth token"
        );
        return;
    }
    eprintln!(
        "\n  ┌───────────────────────────────────────────────────────────────────────────┐\n  \
             │ DEVELOPMENT MODE: no TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN configured.   │\n  \
             │ No real call can reach this service. Webhooks are checked against the     │\n  \
             │ development auth token below; sign test requests with it (see README.md). │\n  \
             └───────────────────────────────────────────────────────────────────────────┘\n  \
             development auth token: {token}\n  public base URL: {}\n",
        config.public_base_url()
    );
}

/// The development auth token under `data_dir`, created on first use.
pub fn development_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("dev-auth-token");
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

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
