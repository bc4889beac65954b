//! Durable work: subscriptions over the event store and the job queue, against real PostgreSQL.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use infrastructure::event_store::subscription::{
    Batch, Consumer, ConsumerError, StoredEvent, SubscriptionRunner,
};
use infrastructure::pipeline::jobs::{
    self, ClaimedJob, Fate, JobError, JobHandler, JobQueue, NewJob,
};
use sqlx::{PgConnection, PgPool};

use crate::helpers::*;

/// Records every event it sees in `seen`, whose primary key would refuse a second delivery.
struct Recorder {
    /// Fails on this global position while it is set (a bug, a poison event).
    fail_at: AtomicI64,
}

impl Recorder {
    fn new() -> Self {
        Self {
            fail_at: AtomicI64::new(-1),
        }
    }
}

impl Consumer for Recorder {
    fn name(&self) -> &str {
        "test-recorder"
    }

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ConsumerError> {
        sqlx::query("INSERT INTO seen (global_position, event_type) VALUES ($1, $2)")
            .bind(event.global_position)
            .bind(&event.event_type)
            .execute(&mut *conn)
            .await?;
        if self.fail_at.load(Ordering::SeqCst) == event.global_position {
            return Err(ConsumerError::Decode("refused on purpose".into()));
        }
        Ok(())
    }
}

async fn with_seen_table(pool: &PgPool) {
    sqlx::query("CREATE TABLE seen (global_position bigint PRIMARY KEY, event_type text NOT NULL)")
        .execute(pool)
        .await
        .expect("table created");
}

async fn seen(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT global_position FROM seen ORDER BY global_position")
        .fetch_all(pool)
        .await
        .expect("reads")
}

async fn all_positions(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT global_position FROM events ORDER BY global_position")
        .fetch_all(pool)
        .await
        .expect("reads")
}

/// Runs `runner` until `seen` holds `expected` events. The horizon a subscription reads below is
/// cluster-wide, so transactions of tests running beside this one may hold it back for a moment:
/// that delays events, never skips them. Bounded, so a bug fails rather than hangs.
async fn drain(runner: &SubscriptionRunner<Recorder>, pool: &PgPool, expected: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut total = 0;
    loop {
        total += runner.catch_up().await.expect("catches up");
        if seen(pool).await.len() >= expected {
            return total;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {total} events after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Places a short call: four events.
async fn place_call(app: &TestApp) {
    let sid = new_call_sid();
    app.voice(&sid).await;
    app.recording(&sid, 1, "#").await;
    app.status(&sid, "in-progress", 2).await;
    app.status(&sid, "completed", 3).await;
}

#[tokio::test]
async fn a_consumer_sees_every_event_exactly_once_and_resumes_where_it_stopped() {
    let app = spawn_app().await;
    with_seen_table(&app.pool).await;
    let runner = SubscriptionRunner::new(app.pool.clone(), Recorder::new());
    place_call(&app).await;
    assert_eq!(drain(&runner, &app.pool, 4).await, 4);
    assert_eq!(
        runner.catch_up().await.expect("catches up"),
        0,
        "nothing twice"
    );
    place_call(&app).await;
    // A new runner (a restarted process) starts from the stored checkpoint.
    let restarted = SubscriptionRunner::new(app.pool.clone(), Recorder::new());
    assert_eq!(drain(&restarted, &app.pool, 8).await, 4);
    assert_eq!(seen(&app.pool).await, all_positions(&app.pool).await);
}

#[tokio::test]
async fn an_event_whose_transaction_commits_late_is_not_skipped() {
    let app = spawn_app().await;
    with_seen_table(&app.pool).await;
    let runner = SubscriptionRunner::new(app.pool.clone(), Recorder::new());

    // A writer appends an event but has not committed yet…
    let mut slow = app.pool.begin().await.expect("begins");
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('Test', 'slow', 1, 'SlowEvent', '1', '{}', '{}')",
    )
    .execute(&mut *slow)
    .await
    .expect("inserts");
    // …while later writers commit theirs.
    place_call(&app).await;
    // The committed events sit above the in-flight transaction's horizon: none is taken yet,
    // so the checkpoint cannot move past the slow one, and the runner knows to look again soon.
    assert_eq!(runner.process_batch().await.expect("runs"), Batch::Waiting);
    slow.commit().await.expect("commits");
    assert_eq!(drain(&runner, &app.pool, 5).await, 5);
    assert_eq!(seen(&app.pool).await, all_positions(&app.pool).await);
}

#[tokio::test]
async fn events_are_taken_in_transaction_order_even_where_its_digits_change() {
    // Transaction ids are numbers; ordered as text, 100 came before 99, so a batch cut after
    // the event of transaction 100 moved the checkpoint past the one of 99, which was never
    // seen. The ids are written out here to meet that boundary without waiting for it.
    let app = spawn_app().await;
    with_seen_table(&app.pool).await;
    for (aggregate, tx) in [("a", "100"), ("b", "99")] {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                                 payload, metadata, tx_id)
             VALUES ('Test', $1, 1, 'Happened', '1', '{}', '{}', $2::xid8)",
        )
        .bind(aggregate)
        .bind(tx)
        .execute(&app.pool)
        .await
        .expect("stored");
    }
    let runner = SubscriptionRunner::new(app.pool.clone(), Recorder::new()).with_batch_size(1);
    assert_eq!(drain(&runner, &app.pool, 2).await, 2);
    let order: Vec<String> = sqlx::query_scalar(
        "SELECT e.aggregate_id FROM seen s JOIN events e USING (global_position) ORDER BY s.ctid",
    )
    .fetch_all(&app.pool)
    .await
    .expect("reads");
    assert_eq!(order, ["b", "a"], "transaction 99 before 100");
}

#[tokio::test]
async fn a_failing_consumer_takes_no_effect_and_retries_the_same_event() {
    let app = spawn_app().await;
    with_seen_table(&app.pool).await;
    place_call(&app).await;
    let positions = all_positions(&app.pool).await;
    let runner = SubscriptionRunner::new(app.pool.clone(), Recorder::new());
    // Fail on the first event: every batch holds it until the consumer is mended.
    runner
        .consumer()
        .fail_at
        .store(positions[0], Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while runner.process_batch().await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the failing event was never reached"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The batch's writes were rolled back with it, and the same event is tried again.
    assert!(seen(&app.pool).await.is_empty());
    assert!(runner.process_batch().await.is_err());
    runner.consumer().fail_at.store(-1, Ordering::SeqCst);
    assert_eq!(drain(&runner, &app.pool, 4).await, 4);
    assert_eq!(seen(&app.pool).await, positions);
}

#[tokio::test]
async fn two_instances_of_a_consumer_never_both_take_an_event() {
    let app = spawn_app().await;
    with_seen_table(&app.pool).await;
    for _ in 0..5 {
        place_call(&app).await;
    }
    let first = SubscriptionRunner::new(app.pool.clone(), Recorder::new());
    let second = SubscriptionRunner::new(app.pool.clone(), Recorder::new());
    // Both race; the primary key of `seen` would fail a double delivery.
    let (a, b) = tokio::join!(drain(&first, &app.pool, 20), drain(&second, &app.pool, 20));
    assert_eq!(a + b, 20);
    assert_eq!(seen(&app.pool).await, all_positions(&app.pool).await);
}

#[tokio::test]
async fn the_runner_follows_new_events_as_they_are_appended() {
    let app = spawn_app().await;
    with_seen_table(&app.pool).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = SubscriptionRunner::new(app.pool.clone(), Recorder::new());
    let mut progress = runner.progress();
    let task = tokio::spawn(runner.run(async {
        let _ = stopped.await;
    }));
    place_call(&app).await;
    let last = *all_positions(&app.pool).await.last().expect("events");
    // Woken by LISTEN/NOTIFY; bounded so that a bug cannot hang the suite.
    let caught_up =
        tokio::time::timeout(Duration::from_secs(20), progress.wait_for(|p| *p >= last)).await;
    let _ = stop.send(());
    task.await.expect("stops cleanly");
    assert!(
        caught_up.is_ok(),
        "the running subscription never saw the call"
    );
    assert_eq!(seen(&app.pool).await, all_positions(&app.pool).await);
}

#[tokio::test]
async fn a_consumer_skipped_to_the_end_takes_only_later_events() {
    let app = spawn_app().await;
    with_seen_table(&app.pool).await;
    place_call(&app).await;
    let before = all_positions(&app.pool).await;
    infrastructure::event_store::subscription::skip_to_end(&app.pool, Recorder::new().name())
        .await
        .expect("skips");
    place_call(&app).await;
    let runner = SubscriptionRunner::new(app.pool.clone(), Recorder::new());
    drain(&runner, &app.pool, 4).await;
    let after: Vec<i64> = all_positions(&app.pool)
        .await
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(seen(&app.pool).await, after);
}

#[tokio::test]
async fn appends_are_announced_to_other_processes_after_they_commit() {
    // Appends carry no NOTIFY of their own (it would serialise their commits); the appending
    // process sends one after the commit, which is what wakes runners in other processes.
    let app = spawn_app().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool)
        .await
        .expect("listens");
    listener
        .listen(infrastructure::event_store::appended::EVENTS_CHANNEL)
        .await
        .expect("listens");
    let sid = new_call_sid();
    app.voice(&sid).await;
    let notified = tokio::time::timeout(Duration::from_secs(20), listener.recv()).await;
    assert!(
        matches!(notified, Ok(Ok(_))),
        "no notification after an append: {notified:?}"
    );
    assert_eq!(app.event_count().await, 1);
}

fn job(turn: i32, max_attempts: i32) -> NewJob {
    NewJob {
        call_id: "call-1".into(),
        turn,
        kind: "process_turn".into(),
        payload: serde_json::json!({ "recording": turn }),
        max_attempts,
        run_at: None,
    }
}

async fn enqueue(pool: &PgPool, job: &NewJob) -> bool {
    let mut conn = pool.acquire().await.expect("connects");
    jobs::enqueue(&mut conn, job).await.expect("enqueues")
}

async fn status_of(pool: &PgPool, turn: i32) -> (String, i32) {
    sqlx::query_as("SELECT status, attempts FROM jobs WHERE turn = $1")
        .bind(turn)
        .fetch_one(pool)
        .await
        .expect("reads")
}

#[tokio::test]
async fn a_job_is_enqueued_once_and_claimed_by_one_worker_at_a_time() {
    let (pool, name) = fresh_database().await;
    let _cleanup = TestApp::owning(pool.clone(), name).await;
    assert!(enqueue(&pool, &job(1, 3)).await);
    assert!(
        !enqueue(&pool, &job(1, 3)).await,
        "the same call, turn and kind is enqueued once"
    );
    let a = JobQueue::new(pool.clone(), "worker-a", Duration::from_secs(60));
    let b = JobQueue::new(pool.clone(), "worker-b", Duration::from_secs(60));
    let claimed = a.claim().await.expect("claims").expect("a job");
    assert_eq!(claimed.attempts, 1);
    assert!(b.claim().await.expect("claims").is_none(), "held by a");
    assert!(a.complete(&claimed).await.expect("completes"));
    assert_eq!(status_of(&pool, 1).await, ("done".into(), 1));
    assert!(b.claim().await.expect("claims").is_none());
}

#[tokio::test]
async fn a_failed_job_is_retried_then_fails_for_good() {
    let (pool, name) = fresh_database().await;
    let _cleanup = TestApp::owning(pool.clone(), name).await;
    enqueue(&pool, &job(1, 2)).await;
    let queue = JobQueue::new(pool.clone(), "worker", Duration::from_secs(60))
        .with_backoff(Duration::ZERO, Duration::ZERO);
    let first = queue.claim().await.expect("claims").expect("a job");
    assert!(matches!(
        queue
            .fail(&first, &JobError::transient("speech-to-text: 503"))
            .await
            .expect("records"),
        Fate::Retry(_)
    ));
    assert_eq!(status_of(&pool, 1).await, ("pending".into(), 1));
    let second = queue.claim().await.expect("claims").expect("retried");
    assert_eq!(second.attempts, 2);
    assert_eq!(
        queue
            .fail(&second, &JobError::transient("speech-to-text: 503"))
            .await
            .expect("records"),
        Fate::Exhausted
    );
    assert_eq!(status_of(&pool, 1).await, ("failed".into(), 2));
    assert!(queue.claim().await.expect("claims").is_none());
}

#[tokio::test]
async fn a_job_whose_worker_died_is_taken_over_and_the_dead_worker_is_fenced_off() {
    let (pool, name) = fresh_database().await;
    let _cleanup = TestApp::owning(pool.clone(), name).await;
    enqueue(&pool, &job(1, 5)).await;
    // A worker claims the job with a lease that has run out by the time anyone looks again.
    let dead = JobQueue::new(pool.clone(), "dead-worker", Duration::ZERO);
    let lost = dead.claim().await.expect("claims").expect("a job");
    let alive = JobQueue::new(pool.clone(), "alive-worker", Duration::from_secs(60));
    let taken = alive.claim().await.expect("claims").expect("taken over");
    assert_eq!(taken.id, lost.id);
    assert_eq!(taken.attempts, 2);
    // The first worker wakes up late: its outcome no longer counts.
    assert!(!dead.complete(&lost).await.expect("answers"));
    assert_eq!(
        dead.fail(&lost, &JobError::transient("late"))
            .await
            .expect("answers"),
        Fate::Lost
    );
    assert!(alive.complete(&taken).await.expect("completes"));
    assert_eq!(status_of(&pool, 1).await, ("done".into(), 2));
}

/// Fails each job's first `failures` attempts, then succeeds; counts what it did.
struct Flaky {
    failures: i32,
    runs: AtomicUsize,
    exhausted: Arc<AtomicUsize>,
}

impl JobHandler for Flaky {
    type Failure = JobError;

    async fn run(&self, job: &ClaimedJob) -> Result<(), JobError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if job.turn == 7 {
            return Err(JobError::permanent("refused"));
        }
        if job.attempts <= self.failures {
            Err(JobError::transient("upstream unavailable"))
        } else {
            Ok(())
        }
    }

    async fn exhausted(&self, _job: &ClaimedJob, _error: &JobError) {
        self.exhausted.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn workers_finish_every_job_once_and_report_the_ones_that_fail_for_good() {
    let (pool, name) = fresh_database().await;
    let _cleanup = TestApp::owning(pool.clone(), name).await;
    for turn in 1..=7 {
        enqueue(&pool, &job(turn, if turn == 6 { 1 } else { 3 })).await;
    }
    let exhausted = Arc::new(AtomicUsize::new(0));
    let handler = Flaky {
        failures: 1,
        runs: AtomicUsize::new(0),
        exhausted: exhausted.clone(),
    };
    let queue = JobQueue::new(pool.clone(), "worker", Duration::from_secs(60))
        .with_backoff(Duration::ZERO, Duration::ZERO);
    while jobs::work_once(&queue, &handler).await.expect("works") {}
    let statuses: Vec<(String, i32)> =
        sqlx::query_as("SELECT status, attempts FROM jobs ORDER BY turn")
            .fetch_all(&pool)
            .await
            .expect("reads");
    // Five succeed on their second attempt; one had a single attempt; one failed permanently at once.
    let expected: Vec<(String, i32)> = (1..=5)
        .map(|_| ("done".to_owned(), 2))
        .chain([("failed".to_owned(), 1), ("failed".to_owned(), 1)])
        .collect();
    assert_eq!(statuses, expected);
    assert_eq!(handler.runs.load(Ordering::SeqCst), 12);
    assert_eq!(exhausted.load(Ordering::SeqCst), 2);
}
