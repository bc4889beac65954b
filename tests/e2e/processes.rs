//! The real `hotline serve` as separate processes on one database: one killed (SIGKILL) in the
//! middle of a turn and another finishing it, and two serving side by side. Each turn is done and
//! played once.

use std::process::Stdio;
use std::time::Duration;

use domain::{CallId, CallSid};
use serde_json::json;
use tokio::process::{Child, Command};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;
use crate::twilio_stand_in::{Canned, ScriptedServer};

/// A `hotline serve` process, killed when dropped.
struct Instance {
    child: Child,
    /// Signs and sends webhooks to this instance.
    app: TestApp,
    _data_dir: tempfile::TempDir,
}

/// What every instance talks to.
struct World {
    database_url: String,
    pool: sqlx::PgPool,
    twilio: ScriptedServer,
    speech: MockServer,
    /// Drops the database at the end.
    owner: TestApp,
}

impl World {
    /// A fresh database, a Twilio stand-in that serves recordings and accepts call updates, and a
    /// speech-to-text service whose first answer takes `first_delay`.
    async fn new(first_delay: Duration) -> Self {
        let (pool, name) = fresh_database().await;
        let database_url = database_url(&name).await;
        let twilio = ScriptedServer::by_method(
            Canned::audio(b"RIFF\x24\x00\x00\x00WAVEfmt "),
            Canned::json(200, json!({ "sid": "CA0123456789abcdef0123456789abcdef" })),
        )
        .await;
        let speech = MockServer::start().await;
        let said =
            ResponseTemplate::new(200).set_body_json(json!({ "text": "I had a rough day." }));
        Mock::given(method("POST"))
            .and(path("/v1/audio/transcriptions"))
            .respond_with(said.clone().set_delay(first_delay))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&speech)
            .await;
        Mock::given(method("POST"))
            .and(path("/v1/audio/transcriptions"))
            .respond_with(said)
            .mount(&speech)
            .await;
        Self {
            database_url,
            pool: pool.clone(),
            twilio,
            speech,
            owner: TestApp::owning(pool, name).await,
        }
    }

    /// Starts `hotline serve` on this world, its pipeline leasing jobs for `lease_secs`, and
    /// waits until it answers.
    async fn serve(&self, lease_secs: u64) -> Instance {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("an address").port()
        };
        let base_url = format!("http://127.0.0.1:{port}");
        let data_dir = tempfile::tempdir().expect("a data directory");
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
            .env("HOTLINE_ADDR", format!("127.0.0.1:{port}"))
            .env("HOTLINE_DATA_DIR", data_dir.path())
            .env("HOTLINE_JOB_LEASE_SECS", lease_secs.to_string())
            .env("PUBLIC_BASE_URL", &base_url)
            .env("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
            .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
            .env("TWILIO_API_BASE", &self.twilio.base_url)
            .env("STT_BASE_URL", self.speech.uri())
            .env("COUNSELOR_NUMBER", COUNSELOR)
            .env("CRISIS_LINE_NUMBER", CRISIS)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(logs())
            .stderr(logs())
            .kill_on_drop(true)
            .spawn()
            .expect("hotline starts");
        let app = TestApp {
            base_url,
            pool: self.pool.clone(),
            client: reqwest::Client::new(),
            service: None,
            database: None,
            data_dir: None,
        };
        wait_for("the instance to answer /health", || async {
            app.client
                .get(format!("{}/health", app.base_url))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        Instance {
            child,
            app,
            _data_dir: data_dir,
        }
    }

    /// (status, attempts) of every job.
    async fn jobs(&self) -> Vec<(String, i32)> {
        sqlx::query_as("SELECT status, attempts FROM jobs ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .expect("reads jobs")
    }

    fn requests(&self, verb: &str) -> usize {
        self.twilio
            .received()
            .iter()
            .filter(|r| r.method == verb)
            .count()
    }
}

/// Polls `condition` until it holds, failing after 30 s.
async fn wait_for<F, Fut>(what: &str, condition: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A call with one recorded turn, through `instance`.
async fn one_turn(instance: &Instance, world: &World) -> CallSid {
    let sid = new_call_sid();
    instance.app.voice(&sid).await;
    instance
        .app
        .recording_from(&world.twilio.base_url, &sid, 1, "#")
        .await;
    sid
}

#[tokio::test]
async fn a_turn_whose_process_was_killed_mid_job_is_finished_by_another_and_played_once() {
    // The first transcription hangs, so the first instance is in the middle of the turn.
    let world = World::new(Duration::from_secs(120)).await;
    let mut first = world.serve(2).await;
    let sid = one_turn(&first, &world).await;
    wait_for("the first instance to be transcribing", || async {
        world
            .speech
            .received_requests()
            .await
            .is_some_and(|r| !r.is_empty())
    })
    .await;
    assert_eq!(world.jobs().await, [("running".to_owned(), 1)]);

    first.child.start_kill().expect("SIGKILL");
    first.child.wait().await.expect("the process ended");
    let second = world.serve(2).await;
    wait_for("the turn to be done", || async {
        world.jobs().await == [("done".to_owned(), 2)]
    })
    .await;

    assert_eq!(
        second.app.event_types(&sid).await,
        [
            "CallStarted",
            "RecordingReceived",
            "Analyzed",
            "ResponsePlayed",
            "DirectQuestionAsked"
        ]
    );
    assert_eq!(world.requests("POST"), 1, "the reply was played once");
    assert_eq!(world.requests("GET"), 2, "each instance downloaded it");
}

#[tokio::test]
async fn two_processes_on_one_database_do_each_turn_once() {
    let world = World::new(Duration::ZERO).await;
    let instances = [world.serve(60).await, world.serve(60).await];
    let mut calls = Vec::new();
    for n in 0..6 {
        calls.push(one_turn(&instances[n % 2], &world).await);
    }
    wait_for("every turn to be done", || async {
        let jobs = world.jobs().await;
        jobs.len() == 6 && jobs.iter().all(|(status, _)| status == "done")
    })
    .await;

    assert!(
        world
            .jobs()
            .await
            .iter()
            .all(|(_, attempts)| *attempts == 1),
        "no job was taken twice"
    );
    for sid in &calls {
        let played = instances[0]
            .app
            .event_types(sid)
            .await
            .iter()
            .filter(|t| *t == "ResponsePlayed")
            .count();
        assert_eq!(played, 1);
    }
    assert_eq!(world.requests("GET"), 6, "each recording downloaded once");
    assert_eq!(world.requests("POST"), 6, "each reply played once");
}

/// The projection's checkpoint and the last stored event.
async fn projection_progress(pool: &sqlx::PgPool) -> (Option<i64>, Option<i64>) {
    sqlx::query_as(
        "SELECT (SELECT last_position FROM subscription_checkpoints WHERE name = 'call_views'),
                (SELECT max(global_position) FROM events)",
    )
    .fetch_one(pool)
    .await
    .expect("reads")
}

#[tokio::test]
async fn a_process_killed_in_the_middle_of_a_projection_batch_leaves_views_a_restart_completes() {
    let world = World::new(Duration::ZERO).await;
    let mut first = world.serve(60).await;
    let held = new_call_sid();
    first.app.voice(&held).await;
    let held_id = CallId::for_call_sid(&held).as_uuid();
    wait_for("the first call's view", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM call_views WHERE call_id = $1")
            .bind(held_id)
            .fetch_one(&world.pool)
            .await
            .is_ok_and(|n| n == 1)
    })
    .await;

    // Hold `call_turns` (a table lock assigns no transaction id, so it does not hold back the
    // subscriptions' horizon), so that the projection stops half way through the next turn: its
    // view and state are written in the batch's transaction, its turn row waits.
    let mut blocker = world.pool.begin().await.expect("a transaction");
    sqlx::query("LOCK TABLE call_turns IN EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .expect("locked");
    first
        .app
        .recording_from(&world.twilio.base_url, &held, 1, "0")
        .await;
    wait_for("the projection to wait on the held table", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'
                AND query LIKE 'INSERT INTO call_turns%'",
        )
        .fetch_one(&world.pool)
        .await
        .is_ok_and(|n| n == 1)
    })
    .await;
    // More calls arrive meanwhile.
    let mut calls = Vec::new();
    for _ in 0..5 {
        let sid = new_call_sid();
        first.app.voice(&sid).await;
        calls.push(sid);
    }
    first.app.status(&held, "completed", 7).await;
    let (read, last) = projection_progress(&world.pool).await;
    assert!(read < last, "the batch is in flight: {read:?} < {last:?}");

    first.child.start_kill().expect("SIGKILL");
    first.child.wait().await.expect("the process ended");
    blocker.rollback().await.expect("released");

    let _second = world.serve(60).await;
    wait_for("the projection to catch up", || async {
        let (read, last) = projection_progress(&world.pool).await;
        read.is_some() && read >= last
    })
    .await;
    let report = infrastructure::read_side::replay(&world.pool, false)
        .await
        .expect("replays");
    assert_eq!(report.calls, 6);
    assert!(report.differing_calls.is_empty(), "{report:?}");
    let outcome: Option<String> =
        sqlx::query_scalar("SELECT outcome FROM call_views WHERE call_id = $1")
            .bind(held_id)
            .fetch_one(&world.pool)
            .await
            .expect("reads");
    // The caller pressed 0 on their first turn.
    assert_eq!(outcome.as_deref(), Some("escalated"));
    let turns: i64 = sqlx::query_scalar("SELECT count(*) FROM call_turns WHERE call_id = $1")
        .bind(held_id)
        .fetch_one(&world.pool)
        .await
        .expect("reads");
    assert_eq!(turns, 1);

    // `hotline replay` says the same, from the command line.
    let name = world
        .owner
        .database
        .clone()
        .expect("the world owns its database");
    let output = Command::new(env!("CARGO_BIN_EXE_hotline-under-test"))
        .arg("replay")
        .env_clear()
        .env("DATABASE_URL", database_url(&name).await)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("hotline replay runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("rebuilt 6 calls"), "{stdout}");
    assert!(
        stdout.contains("the live views match the events"),
        "{stdout}"
    );
}
