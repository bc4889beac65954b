//! Hotline's benchmark (`cargo run -p bench --release`): starts its own database and servers, runs
//! each workload for a bounded time, and prints one table in which every figure stands next to a
//! baseline measured in the same run on the same machine, as a ratio (these machines are shared;
//! absolute numbers move).
//!
//! The servers are separate processes (this program's `server` command: the service as `hotline
//! serve` builds it, plus two baseline routes), so the load generator's own work and memory are
//! not counted as the service's.

use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use api::cli::serve::Database;
use api::cli::telemetry::{self, Verbosity};
use api::state::AppState;
use api::twilio::extract::TwilioRequest;
use api::wiring::DEVELOPMENT_TOKEN_FILE;
use application::{CallAnswer, CommandDispatcher, CommandMetadata};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use domain::call::UpdateStatus;
use domain::{CallCommand, CallEvent, CallId, CallSid, CallStatus};
use infrastructure::config::Config;
use infrastructure::event_store::subscription::{self, Consumer};
use infrastructure::event_store::{self, bulk};
use infrastructure::pipeline::PipelineConsumer;
use infrastructure::read_side::CALL_VIEWS;
use infrastructure::twilio::routes::Webhook;
use serde_json::json;
use sqlx::{ConnectOptions, PgPool};
use twilio_signature::sign_request;
use twilio_sim::scenario::{self, Afterwards, Scenario, Step, Transcription};
use twilio_sim::{new_sid, Line, Simulator, Target};

/// The baselines, served by the bench's server through the same stack as the webhooks:
/// the same signature check and form parsing, and the same TwiML rendering.
pub fn baseline_routes() -> Router<AppState> {
    Router::new()
        .route("/bench/fixed/", post(fixed))
        .route("/bench/insert/", post(insert))
}

/// Baseline (1): no database at all.
async fn fixed(State(state): State<AppState>, _request: TwilioRequest) -> Response {
    api::twilio::answer(&state, &english(CallAnswer::Greeting), None)
}

/// Baseline (2): one plain `INSERT` of a row like an event, through the same pool.
async fn insert(State(state): State<AppState>, request: TwilioRequest) -> Response {
    let params: serde_json::Map<String, serde_json::Value> = request
        .params
        .pairs()
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let inserted = bulk::insert_baseline_row(
        &state.pool,
        request.params.get("CallSid").unwrap_or_default(),
        &serde_json::Value::Object(params),
        &json!(request.metadata.to_map()),
    )
    .await;
    match inserted {
        Ok(()) => api::twilio::answer(&state, &english(CallAnswer::Greeting), None),
        Err(_) => api::twilio::answer(&state, &english(CallAnswer::Trouble), None),
    }
}

/// The benchmark's command line.
#[derive(Debug, clap::Parser)]
#[command(name = "bench")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: BenchArgs,
    #[command(flatten)]
    config: Config,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// The service with the baseline routes beside it (what the bench starts; not run by hand).
    #[command(hide = true)]
    Server,
}

/// Runs the benchmark, or with `server`, one of its servers.
pub async fn main() -> ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    if let Err(error) = cli.config.check(std::env::vars().map(|(name, _)| name)) {
        eprintln!("bench: configuration error: {error}");
        return ExitCode::from(2);
    }
    // The servers log as the service does (the bench starts them with RUST_LOG=error); the bench
    // itself prints only its progress and its table.
    let verbosity = match cli.command {
        Some(Command::Server) => Verbosity::Service,
        None => Verbosity::Command,
    };
    telemetry::init(cli.config.log_format, verbosity);
    let result = match cli.command {
        Some(Command::Server) => {
            api::cli::serve::serve_with(
                cli.config,
                api::cli::serve::shutdown_signal(),
                None,
                baseline_routes(),
            )
            .await
        }
        None => bench(cli.config, cli.args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The benchmark's options.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// A smoke run of seconds (the test suite runs this; its figures mean little).
    #[arg(long)]
    pub quick: bool,
    /// Seconds per webhook run (default 8; 1 with --quick).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Events to replay (default 1,000,000; 20,000 with --quick).
    #[arg(long)]
    pub events: Option<u64>,
    /// Run only these workloads (all by default), to rerun the one being worked on.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Workload>,
}

/// The workloads, as `--only` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    Webhooks,
    Memory,
    Turns,
    Aggregate,
    Replay,
    /// A caller's wait for each reply, in speech mode, with a model that answers at once and one
    /// that takes 700 ms.
    Latency,
}

/// A row of the table.
#[derive(Debug)]
struct Row {
    workload: String,
    figure: String,
    baseline: String,
    ratio: String,
    target: String,
}

/// The development token the bench servers check signatures with.
const TOKEN: &str = "bench-auth-token";
const ACCOUNT: &str = "AC0be0c0000000000000000000000000be";

/// A database of the run's own, on the configured server or the embedded one.
struct BenchDatabase {
    admin: Database,
    name: String,
    pool: PgPool,
    url: String,
}

impl BenchDatabase {
    async fn create(config: &Config) -> anyhow::Result<Self> {
        let admin = Database::open(config).await?;
        let name = format!("hotline_bench_{}", std::process::id());
        let created = async {
            admin.reachable().await?;
            bulk::create_database(&admin.pool, &name, 8)
                .await
                .context("could not create the benchmark's database")
        };
        match created.await {
            Ok((pool, options)) => Ok(Self {
                admin,
                url: options.to_url_lossy().to_string(),
                name,
                pool,
            }),
            Err(error) => {
                admin.close().await?;
                Err(error)
            }
        }
    }

    async fn drop(self) -> anyhow::Result<()> {
        self.pool.close().await;
        bulk::drop_database(&self.admin.pool, &self.name).await?;
        self.admin.close().await
    }
}

/// How a bench server converses with callers (`HOTLINE_CONVERSATION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conversation {
    /// Recorded turns, answered by the pipeline's REST update: the webhook, memory and turn
    /// workloads.
    Record,
    /// Each turn a speech `<Gather>`, answered in its action's own response.
    Speech,
    /// The live mode: a ConversationRelay session, replies streamed.
    Relay,
}

impl Conversation {
    fn name(self) -> &'static str {
        match self {
            Self::Record => "record",
            Self::Speech => "speech",
            Self::Relay => "relay",
        }
    }
}

/// A port free on 127.0.0.1 now.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A server process: the service and the baselines.
struct Server {
    child: tokio::process::Child,
    base_url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts one on `db`, conversing as `conversation` says; `twilio` (REST base, base of the
    /// speech-to-text and model stand-ins) turns the pipeline and the model on.
    async fn start(
        db: &BenchDatabase,
        conversation: Conversation,
        twilio: Option<(&str, &str)>,
    ) -> anyhow::Result<Self> {
        Self::start_on(free_port()?, db, conversation, twilio).await
    }

    /// As [`Server::start`], on `port` (chosen beforehand, for a simulator calling it).
    async fn start_on(
        port: u16,
        db: &BenchDatabase,
        conversation: Conversation,
        twilio: Option<(&str, &str)>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join(DEVELOPMENT_TOKEN_FILE), TOKEN)?;
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command
            .arg("server")
            .env_clear()
            .env("DATABASE_URL", &db.url)
            .env("HOTLINE_ADDR", format!("127.0.0.1:{port}"))
            .env("HOTLINE_DATA_DIR", dir.path())
            .env("HOTLINE_CONVERSATION", conversation.name())
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some((rest, ai)) = twilio {
            command
                .env("TWILIO_ACCOUNT_SID", ACCOUNT)
                .env("TWILIO_AUTH_TOKEN", TOKEN)
                .env("TWILIO_API_BASE", rest)
                .env("STT_BASE_URL", ai)
                .env("LLM_BASE_URL", ai);
        }
        let child = command
            .spawn()
            .context("could not start the bench's server")?;
        let base_url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reqwest::get(format!("{base_url}/health"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the bench's server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            child,
            base_url,
            _dir: dir,
        })
    }

    /// The process's peak resident memory, in MiB (Linux).
    fn peak_rss_mib(&self) -> Option<f64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The three webhook paths a benchmark call posts to.
#[derive(Debug, Clone, Copy)]
enum Paths {
    Webhooks,
    Fixed,
    Insert,
}

/// What a load run measured.
#[derive(Debug, Default)]
struct Load {
    latencies: Vec<Duration>,
    failures: usize,
    elapsed: Duration,
}

/// Each webhook run is cut into this many slices, alternating with its baselines'.
const WEBHOOK_SLICES: u32 = 4;

impl Load {
    /// Adds `other`'s requests, and its time plus `extra`.
    fn add(&mut self, other: Load, extra: Duration) {
        self.latencies.extend(other.latencies);
        self.failures += other.failures;
        self.elapsed += other.elapsed + extra;
    }

    fn per_sec(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let n = self.latencies.len() as f64;
        n / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
    fn quantile_ms(&mut self, q: f64) -> f64 {
        self.latencies.sort();
        twilio_sim::load::quantile(&self.latencies, q).as_secs_f64() * 1000.0
    }
}

/// `connections` clients posting a call's three webhooks over and over for `seconds`.
async fn hammer(base_url: &str, paths: Paths, connections: usize, seconds: f64) -> Load {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let client = client.clone();
        let base = base_url.to_owned();
        tasks.spawn(async move {
            let mut load = Load::default();
            while Instant::now() < deadline {
                let sid = new_sid("CA");
                let id = CallSid::parse(&sid).map(|s| CallId::for_call_sid(&s));
                let Ok(id) = id else { continue };
                let recording = new_sid("RE");
                let steps: [(String, Vec<(&str, String)>); 3] = [
                    (Webhook::Voice.path(None), vec![("CallStatus", "ringing".into()), ("From", "+14155550123".into()), ("To", "+15005550006".into()), ("Direction", "inbound".into())]),
                    (Webhook::Recording.path(Some(id)), vec![("RecordingSid", recording.clone()), ("RecordingUrl", format!("https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{recording}")), ("RecordingDuration", "4".into()), ("Digits", "#".into())]),
                    (Webhook::Status.path(None), vec![("CallStatus", "completed".into()), ("CallDuration", "30".into()), ("SequenceNumber", "3".into())]),
                ];
                for (path, extra) in steps {
                    let path = match paths {
                        Paths::Webhooks => path,
                        Paths::Fixed => "/bench/fixed/".into(),
                        Paths::Insert => "/bench/insert/".into(),
                    };
                    let url = format!("{base}{path}");
                    let mut params = vec![
                        ("CallSid".to_owned(), sid.clone()),
                        ("AccountSid".to_owned(), ACCOUNT.to_owned()),
                    ];
                    params.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
                    let signature = sign_request(TOKEN, &url, &params);
                    let sent = Instant::now();
                    let answer = client
                        .post(&url)
                        .header("X-Twilio-Signature", signature)
                        .form(&params)
                        .send()
                        .await;
                    let ok = match answer {
                        Ok(response) => {
                            let ok = response.status().is_success();
                            let _ = response.bytes().await;
                            ok
                        }
                        Err(_) => false,
                    };
                    load.latencies.push(sent.elapsed());
                    if !ok {
                        load.failures += 1;
                    }
                }
            }
            load
        });
    }
    let mut total = Load::default();
    while let Some(Ok(load)) = tasks.join_next().await {
        total.latencies.extend(load.latencies);
        total.failures += load.failures;
    }
    total.elapsed = started.elapsed();
    total
}

/// Vacuums and analyses the bench's database, as pgbench does before each run, and writes out
/// the dirty pages: the workloads before this one left dead rows, stale statistics and a
/// checkpoint's worth of writes behind, and the autovacuum and the checkpoint they would set off
/// in the middle of this workload belong to theirs.
async fn vacuum(pool: &PgPool) -> anyhow::Result<()> {
    let skipped = bulk::vacuum(pool)
        .await
        .context("could not vacuum the bench's database")?;
    if let Some(error) = skipped {
        eprintln!("bench: no CHECKPOINT before the workload ({error})");
    }
    Ok(())
}

/// Waits (up to a minute) until the server's projection has read every stored event.
async fn settle(pool: &PgPool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let read = subscription::progress(pool, CALL_VIEWS).await;
        if read.is_err() || read.is_ok_and(|p| p.caught_up()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fixed answer in English, as the baseline route speaks it.
fn english(answer: CallAnswer) -> application::Spoken {
    application::Spoken::new(answer, domain::Language::English)
}

fn ratio(value: f64, baseline: f64) -> String {
    if baseline > 0.0 {
        format!("{:.2}×", value / baseline)
    } else {
        "—".into()
    }
}

async fn stored_events(pool: &PgPool) -> i64 {
    bulk::count_call_events(pool).await.unwrap_or(-1)
}

/// The benchmark.
async fn bench(config: Config, args: BenchArgs) -> anyhow::Result<()> {
    let seconds = args.seconds.unwrap_or(if args.quick { 1.0 } else { 8.0 });
    let events = args
        .events
        .unwrap_or(if args.quick { 20_000 } else { 1_000_000 });
    let db = BenchDatabase::create(&config).await?;
    let mut rows = Vec::new();
    let runs = |workload| args.only.is_empty() || args.only.contains(&workload);
    let result = run(&db, seconds, events, args.quick, &runs, &mut rows).await;
    print_table(&rows);
    db.drop().await?;
    result
}

async fn run(
    db: &BenchDatabase,
    seconds: f64,
    events: u64,
    quick: bool,
    runs: &dyn Fn(Workload) -> bool,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    if runs(Workload::Webhooks) {
        webhooks(db, seconds, rows).await?;
    }
    if runs(Workload::Memory) {
        memory(db, rows).await?;
    }
    if runs(Workload::Turns) {
        eprintln!("bench: turn overhead…");
        rows.push(turn_overhead(db, if quick { 10 } else { 100 }).await?);
    }
    if runs(Workload::Latency) {
        for case in latency_cases(quick) {
            eprintln!("bench: {}…", case.name());
            rows.push(turn_latency(db, &case).await?);
        }
    }
    if runs(Workload::Aggregate) {
        eprintln!("bench: aggregate load against call length…");
        rows.push(aggregate_load(&db.pool, if quick { 5 } else { 50 }).await?);
    }
    if runs(Workload::Replay) {
        eprintln!("bench: replay of {events} events…");
        rows.push(replay(&db.pool, events).await?);
    }
    Ok(())
}

async fn webhooks(db: &BenchDatabase, seconds: f64, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    eprintln!("bench: webhook commands ({seconds} s per run)…");
    let server = Server::start(db, Conversation::Record, None).await?;
    for connections in [16, 64] {
        // The service and its baselines take turns, a slice each, so that the machine's speed
        // drifting during the run (it does, on shared machines) weighs on all three alike.
        let (mut real, mut fixed, mut insert) = (Load::default(), Load::default(), Load::default());
        let mut stored = 0;
        let slice = seconds / WEBHOOK_SLICES as f64;
        for _ in 0..WEBHOOK_SLICES {
            let stored_before = stored_events(&db.pool).await;
            let load = hammer(&server.base_url, Paths::Webhooks, connections, slice).await;
            // The server's projection catches up before the baselines run, so that its work is
            // not charged to them; the time it takes is charged to the service's run.
            let catching_up = Instant::now();
            settle(&db.pool).await;
            real.add(load, catching_up.elapsed());
            stored += stored_events(&db.pool).await - stored_before;
            fixed.add(
                hammer(&server.base_url, Paths::Fixed, connections, slice).await,
                Duration::ZERO,
            );
            insert.add(
                hammer(&server.base_url, Paths::Insert, connections, slice).await,
                Duration::ZERO,
            );
        }
        // A webhook that could not store its event still answers 200 (the caller comes first),
        // so errors are counted as requests without their event.
        #[allow(clippy::cast_possible_wrap)]
        let lost = (real.latencies.len() as i64 - stored).max(0) + real.failures as i64;
        rows.push(Row {
            workload: format!("webhook commands, {connections} connections"),
            figure: format!(
                "{:.0}/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, {lost} errors",
                real.per_sec(),
                real.quantile_ms(0.5),
                real.quantile_ms(0.99),
                real.quantile_ms(0.999)
            ),
            baseline: format!(
                "(1) fixed TwiML {:.0}/s, p99 {:.2} ms; (2) one INSERT {:.0}/s, p99 {:.2} ms",
                fixed.per_sec(),
                fixed.quantile_ms(0.99),
                insert.per_sec(),
                insert.quantile_ms(0.99)
            ),
            ratio: format!(
                "{} of (1), {} of (2)",
                ratio(real.per_sec(), fixed.per_sec()),
                ratio(real.per_sec(), insert.per_sec())
            ),
            target: if connections == 16 {
                "≥ 0.6× of (2), p99 ≤ 10 ms, 0 errors".into()
            } else {
                "—".into()
            },
        });
    }
    // The next workload's server starts with the projection caught up, not with its backlog.
    settle(&db.pool).await;
    server.stop().await;
    Ok(())
}

async fn memory(db: &BenchDatabase, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    eprintln!("bench: peak memory at 200 concurrent calls…");
    let server = Server::start(db, Conversation::Record, None).await?;
    let mut simulator = Simulator::start(
        Target {
            base_url: server.base_url.clone(),
            account_sid: ACCOUNT.into(),
            auth_token: TOKEN.into(),
            to: "+15005550006".into(),
        },
        0,
    )
    .await?;
    simulator.pace = 0.0;
    let example = scenario::examples().remove(0);
    let calls = twilio_sim::load::run_calls(&simulator, &example, 200, 200).await;
    let failures: Vec<_> = calls
        .calls
        .iter()
        .filter_map(|c| c.outcome.as_ref().err())
        .collect();
    let failed = failures.len();
    if let Some(first) = failures.first() {
        eprintln!("bench: {failed} calls failed, the first with: {first}");
    }
    rows.push(Row {
        workload: "memory, 200 concurrent calls".into(),
        figure: format!(
            "peak RSS {:.1} MiB ({failed} of 200 calls failed)",
            server.peak_rss_mib().unwrap_or(f64::NAN)
        ),
        baseline: "—".into(),
        ratio: "—".into(),
        target: "≤ 100 MB".into(),
    });
    settle(&db.pool).await;
    server.stop().await;
    Ok(())
}

/// What the model stand-in replies to every turn.
const MODEL_REPLY: &str = "That sounds hard. I'm here to listen.";

/// Speech-to-text that answers at once, and a language model that answers each request after
/// `model_delay` (a real wait on this server, so the service's connection waits it too). The
/// service asks the model for `{"risk": …}` and for `{"reply": …}`, at the same time; one answer
/// holding both keys serves either question.
async fn ai_stand_in(model_delay: Duration) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let router = Router::new()
        .route(
            "/v1/audio/transcriptions",
            post(|| async { Json(json!({ "text": "I had a rough day at work." })) }),
        )
        .route(
            "/v1/chat/completions",
            post(move |Json(request): Json<serde_json::Value>| async move {
                if !model_delay.is_zero() {
                    tokio::time::sleep(model_delay).await;
                }
                // The live mode streams its reply: the tokens, as server-sent events, after
                // `model_delay` to the first.
                if request["stream"] == true {
                    let mut events = String::new();
                    for token in MODEL_REPLY.split_inclusive(' ') {
                        let chunk = json!({ "choices": [{ "delta": { "content": token } }] });
                        events.push_str(&format!("data: {chunk}\n\n"));
                    }
                    events.push_str("data: [DONE]\n\n");
                    return ([("content-type", "text/event-stream")], events).into_response();
                }
                let content = json!({ "risk": "none", "reply": MODEL_REPLY });
                Json(json!({ "choices": [{ "message": { "content": content.to_string() } }] }))
                    .into_response()
            }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(url)
}

/// From the recording webhook to the reply arriving at the Twilio stand-in.
async fn turn_overhead(db: &BenchDatabase, turns: usize) -> anyhow::Result<Row> {
    let ai = ai_stand_in(Duration::ZERO).await?;
    // The stand-in is started before the server it will be Twilio for.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let simulator = Simulator::start(
        Target {
            base_url: format!("http://127.0.0.1:{port}"),
            account_sid: ACCOUNT.into(),
            auth_token: TOKEN.into(),
            to: "+15005550006".into(),
        },
        0,
    )
    .await?;
    // The webhook workloads left thousands of recorded turns whose recordings exist nowhere, and
    // a pipeline seeing the store for the first time would take them all before this workload's
    // own. It starts at the store's end instead (no writer runs now), so these turns are measured
    // on an otherwise idle pipeline.
    vacuum(&db.pool).await?;
    subscription::skip_to_end(&db.pool, PipelineConsumer::default().name()).await?;
    let server = Server::start(
        db,
        Conversation::Record,
        Some((&simulator.rest_base_url, &ai)),
    )
    .await?;
    let client = reqwest::Client::new();
    let post = |path: String, params: Vec<(String, String)>| {
        let client = client.clone();
        let url = format!("{}{path}", server.base_url);
        async move {
            let signature = sign_request(TOKEN, &url, &params);
            client
                .post(&url)
                .header("X-Twilio-Signature", signature)
                .form(&params)
                .send()
                .await
        }
    };
    let mut load = Load::default();
    let started = Instant::now();
    for _ in 0..turns {
        let sid = new_sid("CA");
        let id = CallId::for_call_sid(&CallSid::parse(&sid)?);
        let mut updates = simulator.watch_call(&sid);
        let base = |extra: &[(&str, &str)]| {
            let mut p = vec![
                ("CallSid".to_owned(), sid.clone()),
                ("AccountSid".to_owned(), ACCOUNT.to_owned()),
                ("From".to_owned(), "+14155550123".to_owned()),
                ("To".to_owned(), "+15005550006".to_owned()),
            ];
            p.extend(
                extra
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            );
            p
        };
        post(
            Webhook::Voice.path(None),
            base(&[("CallStatus", "ringing")]),
        )
        .await?;
        let recording = new_sid("RE");
        let url = simulator.add_recording(&recording, "I had a rough day at work.");
        let sent = Instant::now();
        post(
            Webhook::Recording.path(Some(id)),
            base(&[
                ("RecordingSid", &recording),
                ("RecordingUrl", &url),
                ("RecordingDuration", "4"),
                ("Digits", "#"),
            ]),
        )
        .await?;
        match tokio::time::timeout(Duration::from_secs(10), updates.recv()).await {
            Ok(Some(_)) => load.latencies.push(sent.elapsed()),
            _ => load.failures += 1,
        }
    }
    load.elapsed = started.elapsed();
    server.stop().await;

    let mut round_trips = Load::default();
    for _ in 0..200 {
        let sent = Instant::now();
        anyhow::ensure!(
            event_store::ping(&db.pool).await,
            "the database stopped answering"
        );
        round_trips.latencies.push(sent.elapsed());
    }
    let (p50, p99) = (load.quantile_ms(0.5), load.quantile_ms(0.99));
    let (rt50, rt99) = (round_trips.quantile_ms(0.5), round_trips.quantile_ms(0.99));
    Ok(Row {
        workload: format!("turn overhead, {turns} turns (zero-latency STT and model)"),
        figure: format!("p50 {p50:.2} ms, p99 {p99:.2} ms, {} lost", load.failures),
        baseline: format!("database round trip p50 {rt50:.3} ms, p99 {rt99:.3} ms"),
        ratio: format!("{} round trips at p50", ratio(p50, rt50)),
        target: "p99 ≤ 50 ms".into(),
    })
}

/// The modes whose turns the simulator times for a caller (`CallReport::turn_latencies`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LatencyMode {
    /// From a speech `<Gather>`'s action request to its TwiML response.
    Speech,
    /// From a ConversationRelay session's final `prompt` to Hotline's first `text` token (the
    /// first sentence the guard passed, screening and the model's opinion included).
    Relay,
}

impl LatencyMode {
    fn conversation(self) -> Conversation {
        match self {
            Self::Speech => Conversation::Speech,
            Self::Relay => Conversation::Relay,
        }
    }

    /// The turns' name in the table.
    fn turns(self) -> &'static str {
        match self {
            Self::Speech => "speech turns",
            Self::Relay => "live turns (prompt to first text token)",
        }
    }

    /// A calm caller, so that the model answers every turn: ordinary lines, and a clear no to
    /// the direct question.
    fn scenario(self) -> Scenario {
        let say = |line: &str| Step::Say(line.into());
        Scenario {
            name: format!("calm caller, {}", self.turns()),
            description: String::new(),
            from: "+14155550123".into(),
            steps: vec![
                say("I had a rough day at work and I just need to get it off my chest."),
                say("No, I'm not."),
                say("Work has been really stressful lately."),
                say("My manager keeps adding to my list and I never catch up."),
                say("Talking about it helps a little."),
            ],
            afterwards: Afterwards::HangUp,
            dial: Vec::new(),
            transcription: Transcription::default(),
        }
    }
}

/// One latency row: calls in `mode` against a model stand-in that takes `model_delay`.
#[derive(Debug)]
struct LatencyCase {
    mode: LatencyMode,
    model_delay: Duration,
    calls: usize,
    /// Calls at a time; each caller speaks again as soon as they have heard the reply.
    concurrency: usize,
    target_p99: Duration,
}

impl LatencyCase {
    fn name(&self) -> String {
        let model = if self.model_delay.is_zero() {
            "zero-latency model".to_owned()
        } else {
            format!("{} ms model", self.model_delay.as_millis())
        };
        format!("{}, {model}", self.mode.turns())
    }
}

/// The latency rows: speech mode with the model answering at once, and after 700 ms (within the
/// default speech budget of 2.5 s, so these turns too are answered in their own response); the
/// live mode with a model streaming at once, and after 700 ms to its first token.
fn latency_cases(quick: bool) -> [LatencyCase; 4] {
    [
        LatencyCase {
            mode: LatencyMode::Speech,
            model_delay: Duration::ZERO,
            calls: if quick { 4 } else { 100 },
            concurrency: 4,
            target_p99: Duration::from_millis(25),
        },
        LatencyCase {
            mode: LatencyMode::Speech,
            model_delay: Duration::from_millis(700),
            calls: if quick { 4 } else { 40 },
            concurrency: 4,
            target_p99: Duration::from_secs(1),
        },
        LatencyCase {
            mode: LatencyMode::Relay,
            model_delay: Duration::ZERO,
            calls: if quick { 4 } else { 100 },
            concurrency: 4,
            target_p99: Duration::from_millis(15),
        },
        LatencyCase {
            mode: LatencyMode::Relay,
            model_delay: Duration::from_millis(700),
            calls: if quick { 4 } else { 40 },
            concurrency: 4,
            target_p99: Duration::from_secs(1),
        },
    ]
}

/// The latency runs alternate with their baseline in this many slices.
const LATENCY_SLICES: usize = 4;

/// A caller's wait for each reply, against the fixed-TwiML route served by the same process and
/// posted to in the same way: `concurrency` clients, each sending its next request when its last
/// is answered.
async fn turn_latency(db: &BenchDatabase, case: &LatencyCase) -> anyhow::Result<Row> {
    let ai = ai_stand_in(case.model_delay).await?;
    // The stand-in is started before the server it will be Twilio for (a turn over the budget is
    // answered by the pipeline's REST update, as in production).
    let port = free_port()?;
    let mut simulator = Simulator::start(
        Target {
            base_url: format!("http://127.0.0.1:{port}"),
            account_sid: ACCOUNT.into(),
            auth_token: TOKEN.into(),
            to: "+15005550006".into(),
        },
        0,
    )
    .await?;
    simulator.pace = 0.0;
    // As for the turn workload: the pipeline starts at the store's end, on a vacuumed database.
    vacuum(&db.pool).await?;
    subscription::skip_to_end(&db.pool, PipelineConsumer::default().name()).await?;
    // HOTLINE_SPEECH_BUDGET_MS is left at its default.
    let server = Server::start_on(
        port,
        db,
        case.mode.conversation(),
        Some((&simulator.rest_base_url, &ai)),
    )
    .await?;
    let scenario = case.mode.scenario();
    let (mut turns, mut fixed) = (Load::default(), Load::default());
    let mut reports = Vec::with_capacity(case.calls);
    let slices = LATENCY_SLICES.min(case.calls).max(1);
    for slice in 0..slices {
        let calls = case.calls / slices + usize::from(slice < case.calls % slices);
        let run = twilio_sim::load::run_calls(&simulator, &scenario, calls, case.concurrency).await;
        let answered: usize = run.calls.iter().map(|c| c.turn_latencies.len()).sum();
        turns.add(
            Load {
                latencies: run
                    .calls
                    .iter()
                    .flat_map(|c| c.turn_latencies.iter().copied())
                    .collect(),
                failures: 0,
                elapsed: run.elapsed,
            },
            Duration::ZERO,
        );
        reports.extend(run.calls);
        // The projection catches up before the baseline runs, as in the webhook workload.
        settle(&db.pool).await;
        fixed.add(
            fixed_twiml(&server.base_url, answered, case.concurrency).await,
            Duration::ZERO,
        );
    }
    server.stop().await;

    let failures: Vec<_> = reports
        .iter()
        .filter_map(|c| c.outcome.as_ref().err())
        .collect();
    let failed = failures.len();
    if let Some(first) = failures.first() {
        eprintln!("bench: {failed} calls failed, the first with: {first}");
    }
    // A turn the budget did not cover is answered by a REST update; one the model did not answer
    // gets a scripted reply. Either would make these figures something else.
    let by_rest = reports
        .iter()
        .flat_map(|c| &c.lines)
        .filter(|l| matches!(l, Line::Note(n) if n.contains("updated the live call")))
        .count();
    let model_replies = reports
        .iter()
        .flat_map(|c| c.heard())
        .filter(|l| l.contains(MODEL_REPLY))
        .count();
    anyhow::ensure!(
        fixed.failures == 0,
        "{} fixed-TwiML requests failed",
        fixed.failures
    );
    let (p50, p99) = (turns.quantile_ms(0.5), turns.quantile_ms(0.99));
    let (f50, f99) = (fixed.quantile_ms(0.5), fixed.quantile_ms(0.99));
    let target_ms = case.target_p99.as_secs_f64() * 1000.0;
    Ok(Row {
        workload: format!(
            "{}, {} calls ({} at a time)",
            case.name(),
            case.calls,
            case.concurrency
        ),
        figure: format!(
            "p50 {p50:.2} ms, p99 {p99:.2} ms over {} turns; {model_replies} model replies, \
             {by_rest} left to a REST update ({failed} of {} calls failed)",
            turns.latencies.len(),
            case.calls
        ),
        baseline: format!("fixed TwiML p50 {f50:.2} ms, p99 {f99:.2} ms"),
        ratio: format!("{} at p50, {} at p99", ratio(p50, f50), ratio(p99, f99)),
        target: if target_ms < 1000.0 {
            format!("p99 ≤ {target_ms:.0} ms")
        } else {
            format!("p99 ≤ {:.1} s", target_ms / 1000.0)
        },
    })
}

/// `requests` posts to the fixed-TwiML route, `concurrency` clients at a time, each sending its
/// next request when its last is answered.
async fn fixed_twiml(base_url: &str, requests: usize, concurrency: usize) -> Load {
    let client = reqwest::Client::new();
    let url = format!("{base_url}/bench/fixed/");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client_index in 0..concurrency {
        let (client, url) = (client.clone(), url.clone());
        let share = requests / concurrency + usize::from(client_index < requests % concurrency);
        tasks.spawn(async move {
            let mut load = Load::default();
            for _ in 0..share {
                let params = vec![
                    ("CallSid".to_owned(), new_sid("CA")),
                    ("AccountSid".to_owned(), ACCOUNT.to_owned()),
                    (
                        "SpeechResult".to_owned(),
                        "Work has been really stressful lately.".to_owned(),
                    ),
                    ("Confidence".to_owned(), "0.92".to_owned()),
                ];
                let signature = sign_request(TOKEN, &url, &params);
                let sent = Instant::now();
                let answer = client
                    .post(&url)
                    .header("X-Twilio-Signature", signature)
                    .form(&params)
                    .send()
                    .await;
                let ok = match answer {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        ok && response.bytes().await.is_ok()
                    }
                    Err(_) => false,
                };
                load.latencies.push(sent.elapsed());
                if !ok {
                    load.failures += 1;
                }
            }
            load
        });
    }
    let mut total = Load::default();
    while let Some(Ok(load)) = tasks.join_next().await {
        total.latencies.extend(load.latencies);
        total.failures += load.failures;
    }
    total.elapsed = started.elapsed();
    total
}

/// µs per command on calls of 10, 100 and 1,000 events.
async fn aggregate_load(pool: &PgPool, commands: u32) -> anyhow::Result<Row> {
    let dispatcher = CommandDispatcher::new(event_store::call_store(pool.clone()));
    let metadata = CommandMetadata {
        request_id: "bench".into(),
        idempotency_token: None,
        actor: "bench".into(),
        received_at: Utc::now(),
        spool_entry: None,
    };
    let mut figures = Vec::new();
    for length in [10u32, 100, 1000] {
        let sid = CallSid::parse(&new_sid("CA"))?;
        let id = CallId::for_call_sid(&sid);
        let status = |n: u32| {
            CallCommand::UpdateStatus(UpdateStatus {
                call_sid: sid.clone(),
                status: CallStatus::InProgress,
                sequence_number: Some(n),
                duration_secs: None,
                at: Utc::now(),
            })
        };
        // The call's history, stored directly (as the webhooks would have stored it): a start and
        // `length - 1` status changes. Only the commands after it are timed.
        let mut history = vec![domain::CallEvent::CallStarted {
            call_sid: sid.clone(),
            account_sid: domain::AccountSid::parse(ACCOUNT)?,
            from: domain::CallerId::new("+14155550123"),
            to: "+15005550006".into(),
            direction: "inbound".into(),
            started_at: Utc::now(),
        }];
        history.extend((1..length).map(|n| domain::CallEvent::StatusChanged {
            call_sid: sid.clone(),
            status: CallStatus::InProgress,
            sequence_number: Some(n),
            duration_secs: None,
            at: Utc::now(),
        }));
        bulk::store_history(pool, id, &history).await?;
        let started = Instant::now();
        for n in length..length + commands {
            dispatcher.execute(id, status(n), &metadata).await?;
        }
        let per = started.elapsed().as_secs_f64() * 1e6 / f64::from(commands);
        figures.push(format!("{length} events: {per:.0} µs"));
    }
    Ok(Row {
        workload: "aggregate load against call length".into(),
        figure: figures.join(", "),
        baseline: "—".into(),
        ratio: "—".into(),
        target: "—".into(),
    })
}

/// Rebuilding every view from `events` events, against a plain ordered scan of them, decoded.
/// How many times the replay and its baseline each run, in turns.
const REPLAY_ROUNDS: u32 = 2;

async fn replay(pool: &PgPool, events: u64) -> anyhow::Result<Row> {
    // Calls of ten events each, as webhooks and the pipeline would store them.
    let template = template_call();
    let calls = events.div_ceil(template.len() as u64);
    bulk::store_copies(pool, &template, calls).await?;
    let stored = bulk::count_call_events(pool).await?;

    // Freshly inserted rows get their hint bits set, and the table its statistics, by whichever
    // reads them first; vacuumed, neither side pays for that, and autovacuum does not start on
    // them in the middle of a measurement.
    vacuum(pool).await?;
    // The scan and the rebuild take turns, twice, so that the machine's drift weighs on both.
    let (mut scan, mut rebuild) = (Duration::ZERO, Duration::ZERO);
    let (mut scanned, mut report) = (0u64, None);
    for _ in 0..REPLAY_ROUNDS {
        let started = Instant::now();
        scanned += bulk::scan_call_events(pool).await?;
        scan += started.elapsed();
        let started = Instant::now();
        report = Some(infrastructure::read_side::rebuild_all(pool).await?);
        rebuild += started.elapsed();
    }
    let report = report.context("no replay ran")?;
    #[allow(clippy::cast_precision_loss)]
    let (scan_rate, replay_rate) = (
        scanned as f64 / scan.as_secs_f64(),
        (stored as f64 * f64::from(REPLAY_ROUNDS)) / rebuild.as_secs_f64(),
    );
    Ok(Row {
        workload: format!("replay of {stored} events ({} calls)", report.calls),
        figure: format!(
            "{replay_rate:.0} events/s ({:.1} s a replay)",
            rebuild.as_secs_f64() / f64::from(REPLAY_ROUNDS)
        ),
        baseline: format!(
            "ordered scan, decoded: {scan_rate:.0} events/s ({:.1} s a scan)",
            scan.as_secs_f64() / f64::from(REPLAY_ROUNDS)
        ),
        ratio: ratio(replay_rate, scan_rate),
        target: "≥ 0.5×".into(),
    })
}

/// A ten-event call.
fn template_call() -> Vec<CallEvent> {
    use domain::call::{Analysis, PlayedVia, RecordingUrl, StageTimings};
    use domain::{AccountSid, CallEvent, CallerId, Choice, RecordingSid};
    let at = Utc::now();
    let sid = CallSid::parse("CA0be0c0000000000000000000000000be").expect("a valid value");
    let turn = |n: u32, text: &str| {
        let screening = domain::risk::screen(text);
        let assessment = domain::risk::assess(&screening, None);
        [
            CallEvent::RecordingReceived {
                turn: n,
                recording_sid: RecordingSid::parse(&format!("RE{n:032x}")).expect("a valid value"),
                recording_url: RecordingUrl::parse("https://api.twilio.com/2010-04-01/Accounts/AC0be0c0000000000000000000000000be/Recordings/RE1").expect("a valid value"),
                duration_secs: Some(6),
                digits: Some("#".into()),
                received_at: at,
            },
            CallEvent::Analyzed {
                turn: n,
                analysis: Analysis {
                    transcript: text.into(),
                    screening,
                    assessment,
                    model: None,
                    reply: Some(domain::script::reply_for(domain::risk::RiskLevel::None, domain::Language::English).into()),
                    reply_source: Some(domain::call::ReplySource::Script),
                    timings: StageTimings::default(),
                    recording_key: None,
                },
                at,
            },
            CallEvent::ResponsePlayed { turn: n, via: PlayedVia::RestUpdate, at },
        ]
    };
    let mut events = vec![CallEvent::CallStarted {
        call_sid: sid.clone(),
        account_sid: AccountSid::parse("AC0be0c0000000000000000000000000be")
            .expect("a valid value"),
        from: CallerId::new("+14155550123"),
        to: "+15005550006".into(),
        direction: "inbound".into(),
        started_at: at,
    }];
    events.extend(turn(1, "I had a rough day at work."));
    events.push(CallEvent::CallerChose {
        turn: 1,
        choice: Choice::Continue,
        digits: Some("1".into()),
        speech: None,
        at,
    });
    events.extend(turn(2, "I just feel tired of everything."));
    events.push(CallEvent::CallerChose {
        turn: 2,
        choice: Choice::End,
        digits: Some("2".into()),
        speech: None,
        at,
    });
    events.push(CallEvent::Completed {
        call_sid: sid,
        status: CallStatus::Completed,
        sequence_number: Some(3),
        duration_secs: Some(180),
        ended_at: at,
    });
    events
}

fn print_table(rows: &[Row]) {
    println!("| workload | figure | baseline in the same run | ratio | target |");
    println!("|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            row.workload, row.figure, row.baseline, row.ratio, row.target
        );
    }
}
