//! The database away in the middle of calls, and back: every webhook answered while it was away
//! is on record afterwards (through the spool), in order, with the views matching; no webhook
//! was answered with an error, and every caller heard a person was coming.
//!
//! The outage lasts `OUTAGE_TEST_SECS` seconds (2 by default, as CI runs it; the acceptance run
//! is `OUTAGE_TEST_SECS=60 ./scripts/test -p hotline-tests -- outage`).

use std::time::Duration;

use domain::CallSid;
use infrastructure::event_store::{self, audit};
use infrastructure::read_side;
use tokio::sync::watch;

use crate::helpers::*;
use crate::views::project;

fn outage() -> Duration {
    let secs = std::env::var("OUTAGE_TEST_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    Duration::from_secs(secs)
}

async fn health(app: &TestApp) -> (u16, serde_json::Value) {
    let response = app
        .client
        .get(format!("{}/health", app.base_url))
        .send()
        .await
        .expect("answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

/// An app whose database is reached through `proxy` with a pool of `connections`, and the
/// spool's replayer running as in `hotline serve`; stopped when the returned sender is dropped.
async fn app_through(proxy: &DbProxy, connections: u32) -> (TestApp, watch::Sender<bool>) {
    let (_, name) = fresh_database().await;
    let pool = event_store::pool(proxy.options(&name).await, connections);
    let mut app = TestApp::builder().over(pool).spawn().await;
    app.database = Some(name);
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(app.service().spool_replayer(async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    }));
    (app, stop)
}

/// Waits, bounded, until nothing waits in the spool.
async fn spool_drained(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = health(app).await;
        if status == 200 && body["spool"]["pending"] == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the spool did not drain: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_database_outage_during_fifty_calls_loses_no_webhook_and_answers_no_error() {
    let proxy = DbProxy::start().await;
    let (app, _stop) = app_through(&proxy, 8).await;
    let calls: Vec<CallSid> = (0..50).map(|_| new_call_sid()).collect();
    let (before, during) = calls.split_at(25);

    // Half the calls are under way when the database goes.
    for sid in before {
        assert!(app.voice(sid).await.verbs().contains(&"Record"));
    }
    proxy.cut();
    let cut_at = tokio::time::Instant::now();

    // While it is away, the first half speak and hang up; the second half call and speak.
    // Every caller-facing answer is a 200 with a person on the line, every callback a 204.
    for sid in before {
        assert_person_on_the_line(&app.recording(sid, 1, "#").await);
        assert_person_on_the_line(&app.continue_call(sid).await);
        assert_eq!(app.status(sid, "completed", 3).await, 204);
    }
    for sid in during {
        assert_person_on_the_line(&app.voice(sid).await);
        assert_person_on_the_line(&app.recording(sid, 1, "#").await);
        assert_eq!(app.status(sid, "in-progress", 2).await, 204);
    }
    let (status, body) = health(&app).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["spool"]["pending"].as_u64() >= Some(125), "{body}");

    // The outage lasts its time (the fault injected, not a wait for anything to happen).
    tokio::time::sleep_until(cut_at + outage()).await;
    proxy.restore();

    // Back: the second half hang up. Their completion comes after what waits in the spool.
    for sid in during {
        assert_eq!(app.status(sid, "completed", 3).await, 204);
    }
    spool_drained(&app).await;

    for sid in before {
        assert_eq!(
            app.event_types(sid).await,
            ["CallStarted", "RecordingReceived", "Escalated", "Completed"],
        );
    }
    for sid in during {
        assert_eq!(
            app.event_types(sid).await,
            [
                "CallStarted",
                "Escalated",
                "RecordingReceived",
                "StatusChanged",
                "Completed"
            ],
        );
        let events = app.events(sid).await;
        // Recorded as the webhook came (its time, its request), and where it waited.
        assert_eq!(
            events[1].payload["Escalated"]["reason"],
            "store_unavailable"
        );
        assert!(events[0].metadata["spool_entry"].is_string());
        assert!(events[0].metadata["request_id"].is_string());
    }
    let (_, body) = health(&app).await;
    assert_eq!(body["spool"]["refused"], 0, "{body}");

    // The views are the fold of those events, and every history is whole.
    project(&app).await;
    let report = read_side::replay(&app.pool, false).await.expect("replays");
    assert_eq!(report.calls, 50);
    assert!(report.differing_calls.is_empty(), "{report:?}");
    let verification = audit::verify(&app.pool, None).await.expect("verifies");
    assert!(verification.intact(), "{verification:?}");
}

#[tokio::test]
async fn a_webhook_kept_in_the_spool_survives_a_restart_and_is_recorded_once() {
    let proxy = DbProxy::start().await;
    let (app, stop) = app_through(&proxy, 8).await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    proxy.cut();
    assert_person_on_the_line(&app.recording(&sid, 1, "#").await);
    assert_eq!(app.status(&sid, "completed", 3).await, 204);
    drop(stop);

    // The process goes (its spool stays on disk); another starts on the same data directory.
    let spool_dir = app
        .data_dir
        .as_ref()
        .expect("a data directory")
        .path()
        .join("spool");
    // (The first process's spool is still open in this test process, and a spool is one
    // process's: the next one reads a copy of the directory, as it would the disk.)
    let copy = tempfile::tempdir().expect("a directory");
    copy_files(&spool_dir, copy.path());
    let spool_dir = copy.path().to_owned();
    let spool = infrastructure::spool::FileSpool::open(
        &spool_dir,
        infrastructure::spool::DEFAULT_CAPACITY_BYTES,
    )
    .expect("the spool opens again");
    use application::spool::Spool;
    assert_eq!(spool.stats().pending, 2);
    proxy.restore();
    // As the spool stands before its replay: what a crash after the appends, before the spool's
    // mark, would leave.
    let before_mark = tempfile::tempdir().expect("a directory");
    copy_files(&spool_dir, before_mark.path());
    let calls =
        application::CallService::new(event_store::call_store(app.pool.clone()), test_lines())
            .with_spool(std::sync::Arc::new(spool.clone()));
    let replayed = calls.replay_spool().await.expect("replays");
    assert_eq!((replayed.recorded, replayed.refused), (2, 0));
    assert_eq!(spool.stats().pending, 0);
    assert_eq!(
        app.event_types(&sid).await,
        ["CallStarted", "RecordingReceived", "Escalated", "Completed"]
    );
    // Those entries are replayed again: found on record, and nothing is recorded twice.
    let again = infrastructure::spool::FileSpool::open(before_mark.path(), 1 << 20).expect("opens");
    assert_eq!(again.stats().pending, 2);
    let calls =
        application::CallService::new(event_store::call_store(app.pool.clone()), test_lines())
            .with_spool(std::sync::Arc::new(again.clone()));
    let replayed = calls.replay_spool().await.expect("replays");
    assert_eq!((replayed.recorded, replayed.refused), (2, 0));
    assert_eq!(again.stats().pending, 0);
    assert_eq!(app.event_types(&sid).await.len(), 4);
}

#[tokio::test]
async fn with_the_database_stalled_the_first_caller_hears_a_person_within_a_second() {
    let proxy = DbProxy::start().await;
    let (app, _stop) = app_through(&proxy, 8).await;
    app.voice(&new_call_sid()).await;
    // As with a database stopped by SIGSTOP: connections stay open, and nothing comes back.
    proxy.stall();
    let first = new_call_sid();
    let asked = tokio::time::Instant::now();
    let answer = app.voice(&first).await;
    let took = asked.elapsed();
    assert_person_on_the_line(&answer);
    // The store is given `COMMAND_DEADLINE` (0.8 s); the rest is the spool's sync and the
    // answer. The bound leaves room for a machine busy with other tests (a timed test proves
    // the bound holds, not how fast: `hotline chaos` prints the figures).
    assert!(
        took < Duration::from_secs(2),
        "the first answer took {took:?}"
    );
    eprintln!("with the database stalled, the first caller was answered in {took:?}");
    // The breaker knows the cause now: the next caller is not held up at all.
    let second = new_call_sid();
    let asked = tokio::time::Instant::now();
    assert_person_on_the_line(&app.voice(&second).await);
    let took = asked.elapsed();
    assert!(
        took < application::COMMAND_DEADLINE,
        "the next answer took {took:?}"
    );
    let (status, body) = health(&app).await;
    assert_eq!(status, 503, "{body}");
    // A stalled database is either cause, depending on which connection the command met: one
    // already open that never answers (slow), or a new one whose handshake never completes within
    // the acquire timeout (unreachable; seen on a busy CI machine). Both keep callers off it.
    assert!(
        ["slow", "unreachable"].contains(&body["breaker"].as_str().unwrap_or_default()),
        "{body}"
    );

    proxy.restore();
    spool_drained(&app).await;
    for sid in [&first, &second] {
        assert_eq!(app.event_types(sid).await, ["CallStarted", "Escalated"]);
    }
}

/// The bench's lost events (BENCHMARKS.md): under load, one moment of the store failing (a stall,
/// a pool with every connection taken) opened the breaker, and for its cool-down every webhook was
/// answered without its event, fast, so the load piled on more. Now every webhook answered is on
/// record afterwards, directly or through the spool, and a busy pool opens nothing.
#[tokio::test]
async fn under_load_with_few_connections_and_a_stall_every_answered_webhook_is_on_record() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const DRIVERS: usize = 64;
    const CALLS_EACH: usize = 4;
    let proxy = DbProxy::start().await;
    // Two connections for 64 webhooks at a time: the pool is busy all through.
    let (app, _stop) = app_through(&proxy, 2).await;
    let app = Arc::new(app);
    let answered = Arc::new(AtomicUsize::new(0));
    let a_third_done = Arc::new(tokio::sync::Notify::new());
    let total = DRIVERS * CALLS_EACH * 3;

    let drivers: Vec<_> = (0..DRIVERS)
        .map(|_| {
            let (app, answered, a_third_done) =
                (app.clone(), answered.clone(), a_third_done.clone());
            tokio::spawn(async move {
                let mut calls = Vec::new();
                for _ in 0..CALLS_EACH {
                    let sid = new_call_sid();
                    // `twiml` checks each answer is a 200 TwiML document; the status a 204.
                    app.voice(&sid).await;
                    app.recording(&sid, 1, "#").await;
                    assert_eq!(app.status(&sid, "completed", 3).await, 204);
                    if answered.fetch_add(3, Ordering::SeqCst) + 3 >= total / 3 {
                        a_third_done.notify_one();
                    }
                    calls.push(sid);
                }
                calls
            })
        })
        .collect();
    // A third of the way in, the database stalls for a second.
    a_third_done.notified().await;
    proxy.stall();
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.restore();
    let mut calls = Vec::new();
    for driver in drivers {
        calls.extend(driver.await.expect("the driver ran"));
    }
    spool_drained(&app).await;

    let mut spooled = 0;
    for sid in &calls {
        let events = app.events(sid).await;
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        for kind in ["CallStarted", "RecordingReceived", "Completed"] {
            assert!(types.contains(&kind), "{kind} missing: {types:?}");
        }
        spooled += usize::from(events.iter().any(|e| e.metadata["spool_entry"].is_string()));
    }
    let (_, body) = health(&app).await;
    assert_eq!(body["spool"]["refused"], 0, "{body}");
    eprintln!(
        "{} calls, {total} webhooks answered, {spooled} calls partly through the spool, 0 lost",
        calls.len()
    );
}

/// Copies the files of directory `from` into `to`.
fn copy_files(from: &std::path::Path, to: &std::path::Path) {
    for file in std::fs::read_dir(from).expect("lists") {
        let file = file.expect("an entry").path();
        std::fs::copy(&file, to.join(file.file_name().expect("a name"))).expect("copied");
    }
}
