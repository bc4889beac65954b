//! `spawn_app()` and the typed helpers the tests speak in.

use std::sync::{Once, OnceLock};
use std::time::Duration;

use std::sync::Arc;

use api::wiring::{Service, Timings, DEVELOPMENT_TOKEN_FILE};
use application::pipeline::MODEL_TIMEOUT;
use domain::{CallId, CallSid, DialNumber};
use infrastructure::config::{Config, LogFormat};
use infrastructure::embedded_pg::EmbeddedPostgres;
use infrastructure::event_store;
use infrastructure::twilio::answers::Conversation;
use infrastructure::twilio::rest::RetryPolicy;
use infrastructure::twilio::routes::Webhook;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use std::str::FromStr;
use twilio_signature::sign_request;
use twilio_sim::twiml::Verb;

pub const AUTH_TOKEN: &str = "test-auth-token";
pub const ACCOUNT_SID: &str = domain::fixtures::ACCOUNT_SID;
pub const COUNSELOR: &str = "+15005550001";
/// The counselor line for callers who speak Spanish.
pub const COUNSELOR_ES: &str = "+15005550002";
/// The second counselor, rung when the first does not take the call.
pub const COUNSELOR_2: &str = "+15005550003";
pub const CRISIS: &str = "988";

/// The server every test database is created on, chosen once per test run.
static ADMIN: tokio::sync::OnceCell<PgConnectOptions> = tokio::sync::OnceCell::const_new();
/// The same, for `Drop`, which cannot await.
static ADMIN_FOR_DROP: OnceLock<PgConnectOptions> = OnceLock::new();
/// The embedded server, if one had to be started; kept for the life of the test process, and
/// stopped by its lifeline when that ends (statics are never dropped).
static EMBEDDED: OnceLock<EmbeddedPostgres> = OnceLock::new();

/// `TEST_DATABASE_URL` if set; else PostgreSQL on 127.0.0.1:5432 if it answers; else the same
/// embedded PostgreSQL the service uses, under `target/`, so the tests need no setup either.
async fn admin_options() -> PgConnectOptions {
    ADMIN
        .get_or_init(|| async {
            let options = match std::env::var("TEST_DATABASE_URL") {
                Ok(url) => {
                    PgConnectOptions::from_str(&url).expect("TEST_DATABASE_URL is a PostgreSQL URL")
                }
                Err(_) => local_or_embedded().await,
            };
            let _ = ADMIN_FOR_DROP.set(options.clone());
            options
        })
        .await
        .clone()
}

async fn local_or_embedded() -> PgConnectOptions {
    let local = PgConnectOptions::from_str("postgres://postgres@127.0.0.1:5432/postgres")
        .expect("valid URL");
    let answers = tokio::time::timeout(Duration::from_secs(3), local.connect()).await;
    if let Ok(Ok(conn)) = answers {
        let _ = conn.close().await;
        return local;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-postgres");
    let pg = EmbeddedPostgres::start(&dir)
        .await
        .expect("no PostgreSQL on 127.0.0.1:5432 and the embedded one failed");
    let options = pg.connect_options();
    let _ = EMBEDDED.set(pg);
    options
}

fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter("info,sqlx=warn")
                .with_test_writer()
                .init();
        }
    });
}

/// A port of 127.0.0.1 that nothing listened on a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("an address")
        .port()
}

/// The `hotline` command line as a separate process, with none of the test's environment but
/// `PATH` (where PostgreSQL's binaries are found), killed if the test drops it.
pub fn hotline_command() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hotline-under-test"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

/// A running Hotline on its own database.
pub struct TestApp {
    pub base_url: String,
    pub pool: PgPool,
    pub client: reqwest::Client,
    /// The service as the composition root built it, for the tests that run its background work
    /// (the projection, the pipeline's subscription and workers) step by step.
    pub service: Option<Arc<Service>>,
    /// The database dropped when the app is, if this app owns one.
    pub database: Option<String>,
    /// The service's data directory (its development token, its recordings).
    pub data_dir: Option<tempfile::TempDir>,
}

/// The URL of test database `name`, for a service started as a separate process.
pub async fn database_url(name: &str) -> String {
    admin_options()
        .await
        .database(name)
        .to_url_lossy()
        .to_string()
}

/// Runs `runner` until its checkpoint (subscription `name`) reaches the last stored event, so
/// that what it did not do is known too (bounded: the horizon is cluster-wide, so another test's
/// open transaction can hold it back for a moment).
pub async fn drain<C: infrastructure::event_store::subscription::Consumer>(
    pool: &PgPool,
    runner: &infrastructure::event_store::subscription::SubscriptionRunner<C>,
    name: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        runner.catch_up().await.expect("the subscription runs");
        let progress = infrastructure::event_store::subscription::progress(pool, name)
            .await
            .expect("reads");
        if progress.read.is_some() && progress.caught_up() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "subscription {name} did not catch up in 15 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Creates an empty, migrated database of its own.
pub async fn fresh_database() -> (PgPool, String) {
    let admin = admin_options().await;
    let name = format!("hotline_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = admin
        .connect()
        .await
        .expect("the test PostgreSQL server answers");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("database created");
    conn.close().await.expect("closed");
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(admin.database(&name))
        .await
        .expect("connects to the test database");
    event_store::migrate(&pool).await.expect("migrations apply");
    (pool, name)
}

/// Serves the real application on 127.0.0.1 over a fresh database, as `hotline serve` builds it
/// with no Twilio account (development mode).
pub async fn spawn_app() -> TestApp {
    TestApp::builder().spawn().await
}

/// How a test app is configured: everything goes through `Config` and the composition root
/// (`api::wiring::Service::build`), as in `hotline serve`; only the retries are made immediate.
/// Its apps hear turns in record mode: the tests built on it are about the pipeline that mode
/// runs on (speech mode is tested through `hotline serve`, in `speech.rs`).
#[derive(Debug)]
pub struct TestAppBuilder {
    pool: Option<PgPool>,
    twilio: Option<String>,
    speech_to_text: Option<String>,
    model: Option<(String, Duration)>,
    test_calls: bool,
    conversation: Conversation,
    speech_budget_ms: u64,
    header_read_timeout_secs: u64,
    max_connections: usize,
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            pool: None,
            twilio: None,
            speech_to_text: None,
            model: None,
            test_calls: false,
            conversation: Conversation::Record,
            speech_budget_ms: 2500,
            header_read_timeout_secs: 10,
            max_connections: 4096,
        }
    }
}

impl TestAppBuilder {
    /// Serves over `pool`, whatever state its database is in, instead of a fresh database.
    pub fn over(mut self, pool: PgPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// With the test account's credentials and Twilio's REST API at `api_base`: the conversation
    /// pipeline is on, and without a speech-to-text service it reads Twilio's transcriptions.
    pub fn twilio(mut self, api_base: &str) -> Self {
        self.twilio = Some(api_base.to_owned());
        self
    }

    /// With the speech-to-text service at `base_url`.
    pub fn speech_to_text(mut self, base_url: &str) -> Self {
        self.speech_to_text = Some(base_url.to_owned());
        self
    }

    /// With the language model at `base_url`, given `timeout` to answer.
    pub fn model(mut self, base_url: &str, timeout: Duration) -> Self {
        self.model = Some((base_url.to_owned(), timeout));
        self
    }

    /// With the server's header-read (and idle) timeout at `secs` and at most `max` connections.
    pub fn server_limits(mut self, secs: u64, max: usize) -> Self {
        self.header_read_timeout_secs = secs;
        self.max_connections = max;
        self
    }

    /// With a phone number of its own and `ALLOWED_TEST_NUMBER` allowed for test calls.
    pub fn test_calls(mut self) -> Self {
        self.test_calls = true;
        self
    }

    pub async fn spawn(self) -> TestApp {
        init_tracing();
        let (pool, database) = match self.pool.clone() {
            Some(pool) => (pool, None),
            None => {
                let (pool, name) = fresh_database().await;
                (pool, Some(name))
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let addr = listener.local_addr().expect("has an address");
        let data_dir = tempfile::tempdir().expect("a data directory");
        // Development mode checks signatures with the token under the data directory.
        std::fs::write(data_dir.path().join(DEVELOPMENT_TOKEN_FILE), AUTH_TOKEN)
            .expect("the development token");
        let config = self.config(addr, data_dir.path());
        let timings = Timings {
            twilio_retry: RetryPolicy {
                attempts: 2,
                base: Duration::from_millis(1),
                cap: Duration::from_millis(2),
            },
            model_timeout: self.model.as_ref().map_or(MODEL_TIMEOUT, |(_, t)| *t),
            job_backoff: Some((Duration::ZERO, Duration::ZERO)),
        };
        let service = Service::build(&config, pool.clone(), &timings).expect("the service builds");
        tokio::spawn(service.serve(listener, axum::Router::new(), std::future::pending()));
        TestApp {
            base_url: format!("http://{addr}"),
            pool,
            client: reqwest::Client::new(),
            service: Some(Arc::new(service)),
            database,
            data_dir: Some(data_dir),
        }
    }

    /// The configuration `hotline serve` would read for this app.
    fn config(&self, addr: std::net::SocketAddr, data_dir: &std::path::Path) -> Config {
        let number = |n: &str| DialNumber::parse(n).expect("valid");
        Config {
            log_format: LogFormat::Text,
            database_url: None,
            addr,
            data_dir: data_dir.to_owned(),
            spool_dir: None,
            spool_max_bytes: infrastructure::spool::DEFAULT_CAPACITY_BYTES,
            reconcile_after_secs: 14_400,
            db_max_connections: 8,
            header_read_timeout_secs: self.header_read_timeout_secs,
            body_timeout_secs: 10,
            request_timeout_secs: 30,
            max_connections: self.max_connections,
            job_lease_secs: 60,
            public_base_url: None,
            twilio_account_sid: self
                .twilio
                .as_ref()
                .map(|_| domain::AccountSid::parse(ACCOUNT_SID).expect("valid")),
            twilio_auth_token: self.twilio.as_ref().map(|_| AUTH_TOKEN.to_owned()),
            twilio_phone_number: self.test_calls.then(|| number(TWILIO_NUMBER)),
            counselor_number: Some(number(COUNSELOR)),
            crisis_line_number: number(CRISIS),
            twilio_api_base: self
                .twilio
                .clone()
                .unwrap_or_else(|| "https://api.twilio.com".into()),
            stt_base_url: self.speech_to_text.clone(),
            stt_api_key: None,
            stt_model: "whisper-1".into(),
            llm_base_url: self.model.as_ref().map(|(url, _)| url.clone()),
            llm_api_key: None,
            llm_model: "gpt-test".into(),
            audio_store_url: None,
            test_call_allowed_numbers: if self.test_calls {
                vec![number(ALLOWED_TEST_NUMBER)]
            } else {
                Vec::new()
            },
            conversation: self.conversation,
            speech_budget_ms: self.speech_budget_ms,
            voice_en: "Polly.Joanna".into(),
            voice_es: "Polly.Lupe".into(),
            greeting_audio_en: None,
            greeting_audio_es: None,
            counselor_number_es: Some(number(COUNSELOR_ES)),
            record_calls: None,
            relay_tts_provider: None,
            relay_voice_en: None,
            relay_voice_es: None,
            counselor_numbers: Vec::new(),
            counselor_numbers_es: Vec::new(),
            // The harness's webhooks stand in for Twilio's dial by hand; whole calls through the
            // simulator (`hotline serve`) have whispers on, as deployed.
            whisper: false,
            alert_url: None,
            alert_secret: None,
            alert_person_wait_secs: 120,
            counselor_ring: infrastructure::twilio::answers::Ring::InOrder,
        }
    }
}

/// The lines test apps send callers to: the counselor, and the crisis line after it.
pub fn test_lines() -> application::Lines {
    application::Lines {
        counselor: DialNumber::parse(COUNSELOR).expect("valid"),
        crisis: DialNumber::parse(CRISIS).expect("valid"),
        counselor_es: None,
        more: Vec::new(),
        more_es: Vec::new(),
    }
}

/// The number test apps call from, when they place test calls.
pub const TWILIO_NUMBER: &str = "+15005550006";
/// The one number test apps may place test calls to.
pub const ALLOWED_TEST_NUMBER: &str = "+15005550010";

impl TestApp {
    /// A new live API token with `role`.
    pub async fn token(&self, role: application::auth::Role) -> String {
        use secrecy::ExposeSecret;
        let (_, token) = infrastructure::tokens::ApiTokens::new(self.pool.clone())
            .create(role, "test")
            .await
            .expect("a token");
        token.expose_secret().to_owned()
    }

    /// POSTs `body` as JSON to `path` with `token` as the bearer token, if any.
    pub async fn post_api(
        &self,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base_url))
            .json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("the app answers")
    }

    /// A handle that only drops `name` when the test ends (for tests that need no server).
    pub async fn owning(pool: PgPool, name: String) -> TestApp {
        TestApp {
            base_url: String::new(),
            pool,
            client: reqwest::Client::new(),
            service: None,
            database: Some(name),
            data_dir: None,
        }
    }

    /// The service as the composition root built it.
    pub fn service(&self) -> &Service {
        self.service.as_deref().expect("an app with a service")
    }

    /// Where the service keeps callers' recordings.
    pub fn audio_dir(&self) -> std::path::PathBuf {
        self.data_dir
            .as_ref()
            .expect("an app with a data directory")
            .path()
            .join("recordings")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let Some(name) = self.database.take() else {
            return;
        };
        // Dropped on a thread of its own: Drop cannot await, and the test's runtime is ending.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    let admin = ADMIN_FOR_DROP.get()?.clone();
                    let mut conn = admin.connect().await.ok()?;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await
                        .ok()
                });
            }
        })
        .join();
    }
}

/// Owned form parameters.
pub fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A fresh CallSid.
pub fn new_call_sid() -> CallSid {
    CallSid::parse(&format!("CA{}", uuid::Uuid::new_v4().simple())).expect("valid")
}

/// A recording SID and URL for turn `n` of a call.
pub fn recording_of(n: u32) -> (String, String) {
    recording_at("https://api.twilio.com", n)
}

/// A recording SID and URL for turn `n`, on the Twilio API at `api_base`.
pub fn recording_at(api_base: &str, n: u32) -> (String, String) {
    let sid = format!("RE{:032x}", u128::from(n) + 0xabc0);
    let url = format!("{api_base}/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{sid}");
    (sid, url)
}

/// A stored event, as an auditor sees it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub event_type: String,
    pub sequence: i64,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
}

/// A client that shows redirects instead of following them.
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client")
}

impl TestApp {
    /// Signs in with `token` as the sign-in form does; the session cookie's value.
    pub async fn sign_in(&self, token: &str) -> String {
        let signed_in = no_redirects()
            .post(format!("{}/sign-in", self.base_url))
            .header("origin", &self.base_url)
            .form(&[("token", token)])
            .send()
            .await
            .expect("answers");
        assert_eq!(signed_in.status(), 303);
        let cookie = signed_in.headers()["set-cookie"].to_str().expect("ASCII");
        cookie
            .split(';')
            .next()
            .and_then(|pair| pair.strip_prefix("hotline_session="))
            .expect("the session cookie")
            .to_owned()
    }

    /// What `/health` says, whatever its status.
    pub async fn health(&self) -> serde_json::Value {
        self.client
            .get(format!("{}/health", self.base_url))
            .send()
            .await
            .expect("answers")
            .json()
            .await
            .expect("JSON")
    }

    /// POSTs a form to `path`, signed as Twilio signs it.
    pub async fn post_signed(&self, path: &str, params: &[(String, String)]) -> reqwest::Response {
        let url = format!("{}{path}", self.base_url);
        let signature = sign_request(AUTH_TOKEN, &url, params);
        self.client
            .post(&url)
            .header("X-Twilio-Signature", signature)
            .header(
                "I-Twilio-Idempotency-Token",
                format!("idem-{}", uuid::Uuid::new_v4()),
            )
            .form(params)
            .send()
            .await
            .expect("the server answers")
    }

    /// POSTs a signed form and returns the TwiML answer, checking it is a 200 XML document.
    pub async fn twiml(&self, path: &str, params: &[(String, String)]) -> Twiml {
        let response = self.post_signed(path, params).await;
        assert_eq!(response.status(), 200, "POST {path}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(content_type.starts_with("text/xml"), "{content_type}");
        Twiml::parse(&response.text().await.expect("a body"))
    }

    /// The incoming-call webhook for `sid`.
    pub async fn voice(&self, sid: &CallSid) -> Twiml {
        self.twiml(&Webhook::Voice.path(None), &voice_params(sid))
            .await
    }

    /// The recording webhook for turn `n`.
    pub async fn recording(&self, sid: &CallSid, n: u32, digits: &str) -> Twiml {
        self.recording_from("https://api.twilio.com", sid, n, digits)
            .await
    }

    /// The recording webhook for turn `n`, its recording kept by the Twilio API at `api_base`.
    pub async fn recording_from(
        &self,
        api_base: &str,
        sid: &CallSid,
        n: u32,
        digits: &str,
    ) -> Twiml {
        let (recording_sid, url) = recording_at(api_base, n);
        let params = form(&[
            ("CallSid", sid.as_str()),
            ("AccountSid", ACCOUNT_SID),
            ("RecordingSid", &recording_sid),
            ("RecordingUrl", &url),
            ("RecordingDuration", "7"),
            ("Digits", digits),
        ]);
        self.twiml(
            &Webhook::Recording.path(Some(CallId::for_call_sid(sid))),
            &params,
        )
        .await
    }

    /// The continue webhook.
    pub async fn continue_call(&self, sid: &CallSid) -> Twiml {
        self.continue_after(sid, 0).await
    }

    /// The continue webhook, after the caller was held `waited` times.
    pub async fn continue_after(&self, sid: &CallSid, waited: u32) -> Twiml {
        let params = form(&[("CallSid", sid.as_str()), ("AccountSid", ACCOUNT_SID)]);
        let path = format!(
            "{}?wait={waited}",
            Webhook::Continue.path(Some(CallId::for_call_sid(sid)))
        );
        self.twiml(&path, &params).await
    }

    /// The choice webhook with `digits`.
    pub async fn choose(&self, sid: &CallSid, digits: &str) -> Twiml {
        let params = form(&[
            ("CallSid", sid.as_str()),
            ("AccountSid", ACCOUNT_SID),
            ("Digits", digits),
        ]);
        self.twiml(
            &Webhook::UserChoice.path(Some(CallId::for_call_sid(sid))),
            &params,
        )
        .await
    }

    /// Words said at the choice prompt (`SpeechResult`).
    pub async fn say_at_choice(&self, sid: &CallSid, speech: &str) -> Twiml {
        let params = form(&[
            ("CallSid", sid.as_str()),
            ("AccountSid", ACCOUNT_SID),
            ("SpeechResult", speech),
            ("Confidence", "0.9"),
        ]);
        self.twiml(
            &Webhook::UserChoice.path(Some(CallId::for_call_sid(sid))),
            &params,
        )
        .await
    }

    /// The answer to the direct question: words, keys, or nothing (silence).
    pub async fn answer_question(
        &self,
        sid: &CallSid,
        speech: Option<&str>,
        digits: Option<&str>,
    ) -> Twiml {
        let mut fields = vec![("CallSid", sid.as_str()), ("AccountSid", ACCOUNT_SID)];
        if let Some(speech) = speech {
            fields.push(("SpeechResult", speech));
        }
        if let Some(digits) = digits {
            fields.push(("Digits", digits));
        }
        self.twiml(
            &Webhook::Question.path(Some(CallId::for_call_sid(sid))),
            &form(&fields),
        )
        .await
    }

    /// The status callback; returns the HTTP status.
    pub async fn status(&self, sid: &CallSid, status: &str, sequence: u32) -> u16 {
        let sequence = sequence.to_string();
        let params = form(&[
            ("CallSid", sid.as_str()),
            ("AccountSid", ACCOUNT_SID),
            ("CallStatus", status),
            ("SequenceNumber", &sequence),
            ("CallDuration", "42"),
            ("CallbackSource", "call-progress-events"),
        ]);
        self.post_signed(&Webhook::Status.path(None), &params)
            .await
            .status()
            .as_u16()
    }

    /// Every stored event of the call, in order.
    pub async fn events(&self, sid: &CallSid) -> Vec<StoredEvent> {
        let rows: Vec<(String, i64, serde_json::Value, serde_json::Value)> = sqlx::query_as(
            "SELECT event_type, sequence, payload::jsonb, metadata::jsonb FROM events \
             WHERE aggregate_type = 'Call' AND aggregate_id = $1 ORDER BY sequence",
        )
        .bind(CallId::for_call_sid(sid).to_string())
        .fetch_all(&self.pool)
        .await
        .expect("events load");
        rows.into_iter()
            .map(|(event_type, sequence, payload, metadata)| StoredEvent {
                event_type,
                sequence,
                payload,
                metadata,
            })
            .collect()
    }

    /// The types of the call's stored events, in order.
    pub async fn event_types(&self, sid: &CallSid) -> Vec<String> {
        self.events(sid)
            .await
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }

    /// How many events the whole store holds.
    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await
            .expect("counts")
    }
}

/// The parameters of an incoming-call webhook, as Twilio sends them.
pub fn voice_params(sid: &CallSid) -> Vec<(String, String)> {
    form(&[
        ("CallSid", sid.as_str()),
        ("AccountSid", ACCOUNT_SID),
        ("From", "+14155550123"),
        ("To", "+15005550006"),
        ("Caller", "+14155550123"),
        ("Called", "+15005550006"),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("ApiVersion", "2010-04-01"),
        ("CallerName", ""),
        ("FromCity", ""),
    ])
}

/// A parsed TwiML answer, read by the simulator's reader: the test fails if the document is not
/// TwiML Twilio would accept.
#[derive(Debug, Clone)]
pub struct Twiml {
    pub xml: String,
    /// The top-level verbs, with what they hold.
    pub elements: Vec<Verb>,
}

impl Twiml {
    pub fn parse(xml: &str) -> Self {
        let elements = twilio_sim::twiml::parse(xml)
            .unwrap_or_else(|e| panic!("not TwiML Twilio would accept ({e}): {xml}"));
        Self {
            xml: xml.to_owned(),
            elements,
        }
    }

    /// Every element below `<Response>`, in document order.
    fn all(&self) -> Vec<&Verb> {
        fn walk<'a>(verbs: &'a [Verb], out: &mut Vec<&'a Verb>) {
            for verb in verbs {
                out.push(verb);
                walk(&verb.children, out);
            }
        }
        let mut out = Vec::new();
        walk(&self.elements, &mut out);
        out
    }

    /// The top-level verbs, in order.
    pub fn verbs(&self) -> Vec<&str> {
        self.elements.iter().map(|e| e.name.as_str()).collect()
    }

    /// The first element named `name`.
    pub fn first(&self, name: &str) -> &Verb {
        self.all()
            .into_iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no <{name}> in {}", self.xml))
    }

    /// Everything said, joined.
    pub fn spoken(&self) -> String {
        self.all()
            .into_iter()
            .filter(|e| e.name == "Say")
            .map(|e| e.text.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The numbers dialled, in order.
    pub fn dialled(&self) -> Vec<&str> {
        self.all()
            .into_iter()
            .filter(|e| e.name == "Number")
            .map(|e| e.text.as_str())
            .collect()
    }
}

/// A TCP proxy on 127.0.0.1 between the service and PostgreSQL that a test can cut (every
/// connection through it closed, new ones closed at once), stall (nothing passes either way, as
/// with a database stopped by SIGSTOP) and restore: the database going away and coming back, as
/// the service sees it. Dropped, it stops.
#[derive(Debug)]
pub struct DbProxy {
    pub port: u16,
    state: tokio::sync::watch::Sender<Link>,
    accepting: tokio::task::JoinHandle<()>,
}

/// What passes through a `DbProxy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    Cut,
    Stalled,
}

impl DbProxy {
    /// A proxy to the test PostgreSQL server, up.
    pub async fn start() -> Self {
        let upstream = admin_options().await;
        // The embedded server listens on a Unix socket only; the local one on TCP.
        let target = if upstream.get_host().starts_with('/') {
            format!("{}/.s.PGSQL.{}", upstream.get_host(), upstream.get_port())
        } else {
            format!("{}:{}", upstream.get_host(), upstream.get_port())
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let port = listener.local_addr().expect("an address").port();
        let (state, _) = tokio::sync::watch::channel(Link::Up);
        let watch = state.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = watch.subscribe();
                if *state.borrow() == Link::Cut {
                    drop(client);
                    continue;
                }
                tokio::spawn(relay(client, target.clone(), state));
            }
        });
        Self {
            port,
            state,
            accepting,
        }
    }

    /// Options for the database `name` through this proxy.
    pub async fn options(&self, name: &str) -> sqlx::postgres::PgConnectOptions {
        admin_options()
            .await
            .host("127.0.0.1")
            .port(self.port)
            .database(name)
    }

    /// The database goes away: open connections are closed, new ones too.
    pub fn cut(&self) {
        self.state.send_replace(Link::Cut);
    }

    /// The database stops answering: connections stay open, and nothing passes.
    pub fn stall(&self) {
        self.state.send_replace(Link::Stalled);
    }

    /// The database is back.
    pub fn restore(&self) {
        self.state.send_replace(Link::Up);
    }
}

/// Carries one connection to `target` while the link is up, holds it while stalled, and closes
/// it when cut.
async fn relay(
    client: tokio::net::TcpStream,
    target: String,
    mut state: tokio::sync::watch::Receiver<Link>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server: Box<dyn Duplex> = if target.starts_with('/') {
        match tokio::net::UnixStream::connect(&target).await {
            Ok(stream) => Box::new(stream),
            Err(_) => return,
        }
    } else {
        match tokio::net::TcpStream::connect(&target).await {
            Ok(stream) => Box::new(stream),
            Err(_) => return,
        }
    };
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut server_read, mut server_write) = tokio::io::split(server);
    let mut up = [0u8; 8192];
    let mut down = [0u8; 8192];
    loop {
        let link = *state.borrow_and_update();
        match link {
            Link::Cut => return,
            Link::Stalled => {
                if state.changed().await.is_err() {
                    return;
                }
            }
            Link::Up => {
                tokio::select! {
                    read = client_read.read(&mut up) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(n) => if server_write.write_all(&up[..n]).await.is_err() { return },
                    },
                    read = server_read.read(&mut down) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(n) => if client_write.write_all(&down[..n]).await.is_err() { return },
                    },
                    changed = state.changed() => if changed.is_err() { return },
                }
            }
        }
    }
}

trait Duplex: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Duplex for T {}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.cut();
        self.accepting.abort();
    }
}

/// The answer a caller gets when we are in trouble (or refuse the request): spoken help, the
/// crisis number, and a person.
pub fn assert_person_on_the_line(twiml: &Twiml) {
    assert!(
        twiml.spoken().contains("9 8 8"),
        "the crisis number is read out: {}",
        twiml.xml
    );
    assert_eq!(
        twiml.dialled().first().copied(),
        Some(COUNSELOR),
        "{}",
        twiml.xml
    );
}
