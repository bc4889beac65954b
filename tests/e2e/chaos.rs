//! The chaos suite: many calls through the real `hotline serve` while faults are injected at
//! seeded random moments: the service killed with SIGKILL and restarted on the same data
//! directory, PostgreSQL restarted (every connection cut) and stalled (nothing passes, as with
//! SIGSTOP), speech-to-text and the model hanging. Afterwards the invariants are checked against
//! the store:
//!
//! - every webhook answered 2xx is on record (directly, or through the spool);
//! - every view equals the fold of its call's events, and every history verifies;
//! - every turn was played at most once, and was played or went to a person;
//! - no caller heard silence or an HTTP error: every answer was speakable TwiML (a request that
//!   found the process dead got no answer at all, which Twilio serves from the Voice Fallback URL).
//!
//! Short form by default (CI); the long form is
//! `CHAOS_LONG=1 ./scripts/test -p hotline-tests -- chaos --nocapture`. Loopback only, bounded.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use domain::{CallId, CallSid};
use infrastructure::event_store::audit;
use infrastructure::read_side;
use infrastructure::twilio::routes::Webhook;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sqlx::ConnectOptions;
use tokio::process::{Child, Command};
use twilio_signature::sign_request;

use crate::helpers::*;
use crate::twilio_stand_in::{Canned, ScriptedServer};
use crate::views::project;

/// How much chaos: the long form is the acceptance run, the short one CI's.
struct Plan {
    calls: usize,
    /// Callers at once.
    lines: u64,
    kills: usize,
    stall: Duration,
    hang: Duration,
}

impl Plan {
    fn from_env() -> Self {
        if std::env::var_os("CHAOS_LONG").is_some() {
            Self {
                calls: 200,
                lines: 8,
                kills: 10,
                stall: Duration::from_secs(10),
                hang: Duration::from_secs(10),
            }
        } else {
            Self {
                calls: 30,
                lines: 3,
                kills: 2,
                stall: Duration::from_secs(2),
                hang: Duration::from_secs(2),
            }
        }
    }
}

/// Speech-to-text and a chat model on 127.0.0.1 that can be made to hang.
#[derive(Clone, Default)]
struct Ai {
    stt_hangs: Arc<AtomicBool>,
    model_hangs: Arc<AtomicBool>,
    heard: Arc<AtomicUsize>,
}

impl Ai {
    async fn serve(&self) -> String {
        async fn hang_while(flag: &AtomicBool) {
            while flag.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let stt = self.clone();
        let model = self.clone();
        let router = Router::new()
            .route(
                "/v1/audio/transcriptions",
                post(move || {
                    let ai = stt.clone();
                    async move {
                        hang_while(&ai.stt_hangs).await;
                        // Every third caller says something that must reach a person.
                        let n = ai.heard.fetch_add(1, Ordering::SeqCst);
                        let text = if n.is_multiple_of(3) {
                            "I don't want to be alive anymore."
                        } else {
                            "I had a rough day at work."
                        };
                        axum::Json(json!({ "text": text }))
                    }
                }),
            )
            .route(
                "/v1/chat/completions",
                post(move || {
                    let ai = model.clone();
                    async move {
                        hang_while(&ai.model_hangs).await;
                        let content = json!({ "risk": "low", "reply": "That sounds hard. I'm here with you." });
                        axum::Json(json!({
                            "choices": [{ "message": { "role": "assistant", "content": content.to_string() } }]
                        }))
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        url
    }
}

/// What every instance of the service talks to, and where it keeps its files.
struct World {
    database_url: String,
    port: u16,
    data_dir: tempfile::TempDir,
    twilio: ScriptedServer,
    ai: String,
    app: TestApp,
}

impl World {
    /// Starts `hotline serve` and waits until it answers.
    async fn serve(&self) -> Child {
        let logs = || {
            if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            }
        };
        let child = Command::new(env!("CARGO_BIN_EXE_hotline-under-test"))
            .arg("serve")
            .env_clear()
            .env("DATABASE_URL", &self.database_url)
            .env("HOTLINE_ADDR", format!("127.0.0.1:{}", self.port))
            .env("HOTLINE_DATA_DIR", self.data_dir.path())
            .env("HOTLINE_CONVERSATION", "record")
            .env("HOTLINE_JOB_LEASE_SECS", "3")
            .env("PUBLIC_BASE_URL", &self.app.base_url)
            .env("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
            .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
            .env("TWILIO_API_BASE", &self.twilio.base_url)
            .env("STT_BASE_URL", &self.ai)
            .env("LLM_BASE_URL", &self.ai)
            .env("COUNSELOR_NUMBER", COUNSELOR)
            .env("CRISIS_LINE_NUMBER", CRISIS)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(logs())
            .stderr(logs())
            .kill_on_drop(true)
            .spawn()
            .expect("hotline starts");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let answered = self
                .app
                .client
                .get(format!("{}/health", self.app.base_url))
                .send()
                .await;
            if answered.is_ok() {
                return child;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the service did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What one webhook got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heard {
    /// A 2xx; for a caller-facing webhook, speakable TwiML.
    Answered,
    /// An HTTP error, or TwiML a caller would hear as silence.
    Failed,
    /// No answer: the process was down.
    Unanswered,
}

#[derive(Default)]
struct Tally {
    webhooks: Vec<(CallSid, &'static str, Heard)>,
}

/// Sends one signed webhook; for caller-facing ones, checks the TwiML is speakable.
async fn send(
    app: &TestApp,
    path: &str,
    params: &[(String, String)],
    twiml: bool,
) -> (Heard, String) {
    let url = format!("{}{path}", app.base_url);
    let signature = sign_request(AUTH_TOKEN, &url, params);
    let response = app
        .client
        .post(&url)
        .header("X-Twilio-Signature", signature)
        .form(params)
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    let response = match response {
        Ok(response) => response,
        // Twilio gives up after 15 s and plays its error to the caller: a hang is a failure.
        Err(error) if error.is_timeout() => return (Heard::Failed, String::new()),
        Err(_) => return (Heard::Unanswered, String::new()),
    };
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        return (Heard::Failed, body);
    }
    if twiml {
        let doc = Twiml::parse(&body);
        let speaks = doc.verbs().iter().any(|v| {
            matches!(
                *v,
                "Say" | "Play" | "Dial" | "Record" | "Gather" | "Redirect"
            )
        });
        if !speaks {
            return (Heard::Failed, body);
        }
    }
    (Heard::Answered, body)
}

/// One caller: calls, speaks, waits for the answer, hangs up; a pause between each step, as a
/// person takes.
async fn one_call(app: &TestApp, twilio: &str, seed: u64, tally: &Mutex<Tally>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut pause = || Duration::from_millis(rng.random_range(30..250));
    let sid = new_call_sid();
    let id = CallId::for_call_sid(&sid);
    let note = |kind, heard| {
        tally
            .lock()
            .expect("not poisoned")
            .webhooks
            .push((sid.clone(), kind, heard))
    };

    let (heard, _) = send(app, &Webhook::Voice.path(None), &voice_params(&sid), true).await;
    note("voice", heard);
    if heard == Heard::Unanswered {
        // Twilio served the fallback URL; the caller may call again, as another call.
        return;
    }
    tokio::time::sleep(pause()).await;
    let (recording_sid, url) = recording_at(twilio, 1);
    let params = form(&[
        ("CallSid", sid.as_str()),
        ("AccountSid", ACCOUNT_SID),
        ("RecordingSid", &recording_sid),
        ("RecordingUrl", &url),
        ("RecordingDuration", "4"),
        ("Digits", "#"),
    ]);
    let (heard, _) = send(app, &Webhook::Recording.path(Some(id)), &params, true).await;
    note("recording", heard);
    for waited in 0..3 {
        tokio::time::sleep(pause()).await;
        let path = format!("{}?wait={waited}", Webhook::Continue.path(Some(id)));
        let (heard, body) = send(app, &path, &form(&[("CallSid", sid.as_str())]), true).await;
        note("continue", heard);
        if !body.contains("/twilio/continue/") {
            break;
        }
    }
    tokio::time::sleep(pause()).await;
    let params = form(&[
        ("CallSid", sid.as_str()),
        ("AccountSid", ACCOUNT_SID),
        ("CallStatus", "completed"),
        ("SequenceNumber", "3"),
        ("CallDuration", "42"),
    ]);
    let (heard, _) = send(app, &Webhook::Status.path(None), &params, false).await;
    note("status", heard);
}

#[tokio::test]
async fn under_chaos_nothing_answered_is_lost_and_no_caller_hears_an_error() {
    let plan = Plan::from_env();
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(17);
    let proxy = Arc::new(DbProxy::start().await);
    let (pool, name) = fresh_database().await;
    let owner = TestApp::owning(pool.clone(), name.clone()).await;
    let database_url = proxy.options(&name).await.to_url_lossy().to_string();
    let twilio = ScriptedServer::by_method(
        Canned::audio(b"RIFF\x24\x00\x00\x00WAVEfmt "),
        Canned::json(200, json!({ "sid": "CA0123456789abcdef0123456789abcdef" })),
    )
    .await;
    let ai = Ai::default();
    let port = free_port();
    let world = Arc::new(World {
        database_url,
        port,
        data_dir: tempfile::tempdir().expect("a data directory"),
        ai: ai.serve().await,
        app: TestApp {
            base_url: format!("http://127.0.0.1:{port}"),
            pool: pool.clone(),
            client: reqwest::Client::new(),
            service: None,
            database: None,
            data_dir: None,
        },
        twilio,
    });
    let service = Arc::new(tokio::sync::Mutex::new(world.serve().await));

    // The callers: a few at a time, until every call was made and the faults are over.
    let tally = Arc::new(Mutex::new(Tally::default()));
    let faults_over = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..plan.lines)
        .map(|line| {
            let (world, tally, faults_over, made) = (
                world.clone(),
                tally.clone(),
                faults_over.clone(),
                made.clone(),
            );
            let calls = plan.calls;
            tokio::spawn(async move {
                let mut n = 0;
                while made.fetch_add(1, Ordering::SeqCst) < calls
                    || !faults_over.load(Ordering::SeqCst)
                {
                    let twilio = world.twilio.base_url.clone();
                    one_call(&world.app, &twilio, seed * 1000 + line * 100 + n, &tally).await;
                    n += 1;
                }
            })
        })
        .collect();

    // The faults, in a seeded order, a moment apart.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut faults: Vec<&str> = vec!["kill"; plan.kills];
    faults.extend(["db_restart", "db_stall", "stt_hang", "model_hang"]);
    for i in (1..faults.len()).rev() {
        faults.swap(i, rng.random_range(0..=i));
    }
    let mut injected = std::collections::BTreeMap::<&str, usize>::new();
    for fault in &faults {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..800))).await;
        match *fault {
            "kill" => {
                let mut child = service.lock().await;
                child.start_kill().expect("SIGKILL");
                child.wait().await.expect("the process ended");
                *child = world.serve().await;
            }
            "db_restart" => {
                proxy.cut();
                tokio::time::sleep(Duration::from_millis(1500)).await;
                proxy.restore();
            }
            "db_stall" => {
                proxy.stall();
                tokio::time::sleep(plan.stall).await;
                proxy.restore();
            }
            "stt_hang" => {
                ai.stt_hangs.store(true, Ordering::SeqCst);
                tokio::time::sleep(plan.hang).await;
                ai.stt_hangs.store(false, Ordering::SeqCst);
            }
            _ => {
                ai.model_hangs.store(true, Ordering::SeqCst);
                tokio::time::sleep(plan.hang).await;
                ai.model_hangs.store(false, Ordering::SeqCst);
            }
        }
        *injected.entry(fault).or_default() += 1;
    }
    faults_over.store(true, Ordering::SeqCst);
    for caller in callers {
        caller.await.expect("the callers ran");
    }

    // Settled: the spool replayed, every job done, the views caught up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let health = world
            .app
            .client
            .get(format!("{}/health", world.app.base_url))
            .send()
            .await
            .expect("the service answers");
        let ok = health.status() == 200;
        let body: serde_json::Value = health.json().await.expect("JSON");
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE status IN ('pending', 'running') AND kind <> 'reconcile_call'",
        )
        .fetch_one(&pool)
        .await
        .expect("counts");
        if ok && body["spool"]["pending"] == 0 && open == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "did not settle: {body}, {open} jobs open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    project(&owner).await;

    // Every webhook answered 2xx is on record; none was answered with an error or silence.
    let webhooks = tally.lock().expect("not poisoned").webhooks.clone();
    let count = |heard| webhooks.iter().filter(|(_, _, h)| *h == heard).count();
    let failed: Vec<_> = webhooks
        .iter()
        .filter(|(_, _, h)| *h == Heard::Failed)
        .collect();
    assert!(
        failed.is_empty(),
        "answered with an error or silence: {failed:?}"
    );
    let mut lost = Vec::new();
    let calls: std::collections::BTreeSet<CallSid> =
        webhooks.iter().map(|(sid, _, _)| sid.clone()).collect();
    let mut turns = 0;
    let mut fallback_turns = 0;
    for sid in &calls {
        let events = owner.events(sid).await;
        let has = |t: &str| events.iter().any(|e| e.event_type == t);
        for (_, kind, heard) in webhooks.iter().filter(|(s, _, _)| s == sid) {
            let needs = match *kind {
                "voice" => "CallStarted",
                "recording" => "RecordingReceived",
                "status" => "Completed",
                _ => continue,
            };
            if *heard == Heard::Answered && !has(needs) {
                lost.push((sid.clone(), *kind));
            }
        }
        // Each turn played at most once, and played or taken to a person.
        let recorded = events
            .iter()
            .filter(|e| e.event_type == "RecordingReceived")
            .count();
        turns += recorded;
        let played = events
            .iter()
            .filter(|e| e.event_type == "ResponsePlayed")
            .count();
        assert!(played <= recorded, "{sid}: a turn played twice");
        // A turn whose answer was asked for while the process was down was answered by Twilio's
        // Voice Fallback URL (the crisis line), not by the service: nothing of it can be here.
        let mine: Vec<_> = webhooks.iter().filter(|(s, _, _)| s == sid).collect();
        let fell_back = mine
            .iter()
            .any(|(_, kind, heard)| *kind != "status" && *heard == Heard::Unanswered);
        if fell_back {
            fallback_turns += recorded;
        } else if recorded > 0 {
            assert!(
                played == recorded || has("Escalated"),
                "{sid}: a turn neither answered nor taken to a person: {:?}; webhooks {:?}",
                events.iter().map(|e| &e.event_type).collect::<Vec<_>>(),
                mine.iter().map(|(_, k, h)| (k, h)).collect::<Vec<_>>()
            );
        }
    }
    assert!(lost.is_empty(), "answered but not on record: {lost:?}");

    // The views are the fold of the events, and every history is whole.
    let report = read_side::replay(&pool, false).await.expect("replays");
    assert!(report.differing_calls.is_empty(), "{report:?}");
    let verification = audit::verify(&pool, None).await.expect("verifies");
    assert!(verification.intact(), "{verification:?}");

    eprintln!(
        "chaos (seed {seed}): faults {injected:?}; {} calls, {} turns ({} answered by Twilio's \
         fallback URL while the process was down), {} webhooks: {} answered, {} unanswered \
         (process down), 0 failed; lost: 0",
        calls.len(),
        turns,
        fallback_turns,
        webhooks.len(),
        count(Heard::Answered),
        count(Heard::Unanswered),
    );
    drop(service);
}
