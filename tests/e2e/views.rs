//! The read side: the `call_views` projection after a mixed workload (duplicates, out-of-order
//! callbacks, concurrent webhooks on one call, analysed turns) equals a fresh fold of the event
//! store, and `hotline replay` finds and repairs views that drifted.

use application::{CommandDispatcher, CommandMetadata};
use chrono::Utc;
use domain::call::{Analysis, RecordAnalysis, StageTimings};
use domain::risk;
use domain::{CallCommand, CallId, CallSid};
use infrastructure::event_store;
use infrastructure::event_store::subscription::SubscriptionRunner;
use infrastructure::read_side::columns::{CALLS, TURNS};
use infrastructure::read_side::{self, queries, CallViewsProjection, CALL_VIEWS};

use crate::helpers::*;

/// Records the pipeline's analysis of turn `turn` of `sid`, as the pipeline would.
pub async fn analyse(app: &TestApp, sid: &CallSid, turn: u32, transcript: &str) {
    let screening = risk::screen(transcript);
    let assessment = risk::assess(&screening, None);
    let reply = (assessment.route == risk::Route::Reply).then(|| "I hear you.".to_owned());
    let command = CallCommand::RecordAnalysis(RecordAnalysis {
        turn,
        analysis: Analysis {
            transcript: transcript.into(),
            screening,
            assessment,
            model: None,
            reply_source: reply.as_ref().map(|_| domain::call::ReplySource::Script),
            reply,
            timings: StageTimings::default(),
            recording_key: None,
        },
        at: Utc::now(),
    });
    let metadata = CommandMetadata {
        request_id: uuid::Uuid::new_v4().to_string(),
        idempotency_token: None,
        actor: "pipeline".into(),
        received_at: Utc::now(),
        spool_entry: None,
    };
    CommandDispatcher::new(event_store::call_store(app.pool.clone()))
        .execute(CallId::for_call_sid(sid), command, &metadata)
        .await
        .expect("the analysis is recorded");
}

/// Runs the projection until it has taken every stored event into account.
pub async fn project(app: &TestApp) {
    let runner = SubscriptionRunner::new(app.pool.clone(), CallViewsProjection);
    drain(&app.pool, &runner, CALL_VIEWS).await;
}

/// A workload of every kind of call, with the duplicates and disorder Twilio produces.
pub async fn mixed_workload(app: &TestApp) -> [CallSid; 4] {
    // A low-risk call the caller ends, every webhook sent twice, statuses out of order.
    let ended = new_call_sid();
    app.voice(&ended).await;
    app.voice(&ended).await;
    app.recording(&ended, 1, "#").await;
    app.recording(&ended, 1, "#").await;
    analyse(app, &ended, 1, "I had a rough day at work.").await;
    app.continue_call(&ended).await;
    app.choose(&ended, "2").await;
    app.status(&ended, "completed", 9).await;
    app.status(&ended, "in-progress", 3).await;
    app.status(&ended, "completed", 9).await;

    // A caller who presses 0.
    let counselor = new_call_sid();
    app.voice(&counselor).await;
    app.recording(&counselor, 1, "0").await;
    app.status(&counselor, "completed", 5).await;

    // A high-risk turn, then a hang-up.
    let high = new_call_sid();
    app.voice(&high).await;
    app.recording(&high, 1, "#").await;
    analyse(app, &high, 1, "I'm going to kill myself.").await;
    app.status(&high, "completed", 4).await;

    // Concurrent webhooks on one live call.
    let busy = new_call_sid();
    app.voice(&busy).await;
    tokio::join!(
        app.recording(&busy, 1, "#"),
        app.status(&busy, "in-progress", 2),
        app.status(&busy, "in-progress", 2),
        app.continue_call(&busy),
        app.recording(&busy, 1, "#"),
    );
    [ended, counselor, high, busy]
}

#[derive(Debug, sqlx::FromRow, PartialEq)]
struct Row {
    caller: String,
    status: String,
    turns: i32,
    max_risk: Option<String>,
    escalated: bool,
    outcome: Option<String>,
}

async fn row(app: &TestApp, sid: &CallSid) -> Row {
    sqlx::query_as(
        "SELECT caller, status, turns, max_risk, escalated, outcome FROM call_views WHERE call_id = $1",
    )
    .bind(CallId::for_call_sid(sid).as_uuid())
    .fetch_one(&app.pool)
    .await
    .expect("the call has a view")
}

#[tokio::test]
async fn after_a_mixed_workload_every_view_equals_a_fresh_fold_of_the_events() {
    let app = spawn_app().await;
    let [ended, counselor, high, busy] = mixed_workload(&app).await;
    project(&app).await;

    let report = read_side::replay(&app.pool, false).await.expect("replays");
    assert_eq!(report.calls, 4);
    assert!(report.differing_calls.is_empty(), "{report:?}");

    let ended = row(&app, &ended).await;
    assert_eq!(
        ended,
        Row {
            caller: "+1••••••••23".into(),
            status: "completed".into(),
            turns: 1,
            max_risk: Some("none".into()),
            escalated: false,
            outcome: Some("ended_by_caller".into()),
        }
    );
    let counselor = row(&app, &counselor).await;
    assert!(counselor.escalated);
    assert_eq!(counselor.outcome.as_deref(), Some("escalated"));
    let high = row(&app, &high).await;
    assert_eq!(high.max_risk.as_deref(), Some("high"));
    assert_eq!(high.outcome.as_deref(), Some("hung_up"));
    let busy = row(&app, &busy).await;
    assert_eq!((busy.turns, busy.status.as_str()), (1, "in-progress"));
    assert_eq!(busy.outcome, None);

    // Turn detail, with its latency from the recording to the answer played.
    let (transcript, latency): (Option<String>, Option<i64>) = sqlx::query_as(
        "SELECT transcript, latency_ms FROM call_turns t JOIN call_views v USING (call_id)
          WHERE v.outcome = 'ended_by_caller'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("a turn");
    assert_eq!(transcript.as_deref(), Some("I had a rough day at work."));
    assert!(latency.is_some_and(|ms| ms >= 0));
}

#[tokio::test]
async fn a_replay_copies_text_with_tabs_line_breaks_and_backslashes_exactly() {
    // Replays write with COPY's text format, whose separators and escapes a transcript may hold.
    let app = spawn_app().await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    app.recording(&sid, 1, "#").await;
    let awkward = "one\ttab, a line\nbreak, a \\N, C:\\path\\, \"quoted\", ça 😔\r";
    analyse(&app, &sid, 1, awkward).await;
    project(&app).await;
    let report = read_side::replay(&app.pool, true).await.expect("replays");
    assert!(report.differing_calls.is_empty(), "{report:?}");
    assert!(report.swapped);
    let transcript: Option<String> = sqlx::query_scalar("SELECT transcript FROM call_turns")
        .fetch_one(&app.pool)
        .await
        .expect("a turn");
    assert_eq!(transcript.as_deref(), Some(awkward));
    // The swapped-in state goes on: a new event is projected onto the copied rows.
    app.status(&sid, "completed", 9).await;
    project(&app).await;
    let report = read_side::replay(&app.pool, false).await.expect("replays");
    assert!(report.differing_calls.is_empty(), "{report:?}");
}

#[tokio::test]
async fn views_are_the_same_whichever_way_the_events_fall_into_batches() {
    // A batch folds its calls in memory from their stored state and writes each once; cut into
    // batches of one or three events, a call's events are spread over batches and its state goes
    // through the table between them.
    for batch in [1, 3] {
        let app = spawn_app().await;
        mixed_workload(&app).await;
        let runner =
            SubscriptionRunner::new(app.pool.clone(), CallViewsProjection).with_batch_size(batch);
        drain(&app.pool, &runner, CALL_VIEWS).await;
        let report = read_side::replay(&app.pool, false).await.expect("replays");
        assert_eq!(report.calls, 4);
        assert!(
            report.differing_calls.is_empty(),
            "batches of {batch}: {report:?}"
        );
    }
}

#[tokio::test]
async fn projecting_twice_changes_nothing_and_a_new_event_updates_only_its_call() {
    let app = spawn_app().await;
    let [ended, _, _, busy] = mixed_workload(&app).await;
    project(&app).await;
    let before = row(&app, &ended).await;
    project(&app).await;
    assert_eq!(row(&app, &ended).await, before);

    app.status(&busy, "completed", 7).await;
    project(&app).await;
    assert_eq!(row(&app, &busy).await.outcome.as_deref(), Some("hung_up"));
    assert_eq!(row(&app, &ended).await, before);
    let report = read_side::replay(&app.pool, false).await.expect("replays");
    assert!(report.differing_calls.is_empty(), "{report:?}");
}

#[tokio::test]
async fn replay_names_views_that_drifted_and_swaps_in_rebuilt_ones() {
    let app = spawn_app().await;
    let [_, _, high, _] = mixed_workload(&app).await;
    project(&app).await;
    // A view edited behind the projection's back.
    sqlx::query("UPDATE call_views SET max_risk = 'none', max_risk_rank = 0 WHERE call_id = $1")
        .bind(CallId::for_call_sid(&high).as_uuid())
        .execute(&app.pool)
        .await
        .expect("edited");

    let report = read_side::replay(&app.pool, false).await.expect("replays");
    assert_eq!(report.differing_calls, [CallId::for_call_sid(&high)]);
    assert_eq!(row(&app, &high).await.max_risk.as_deref(), Some("none"));

    let report = read_side::replay(&app.pool, true).await.expect("replays");
    assert!(report.swapped);
    assert_eq!(row(&app, &high).await.max_risk.as_deref(), Some("high"));
    let report = read_side::replay(&app.pool, false).await.expect("replays");
    assert!(report.differing_calls.is_empty(), "{report:?}");

    // The live projection goes on into the swapped-in tables.
    app.status(&high, "completed", 9).await;
    let next = new_call_sid();
    app.voice(&next).await;
    project(&app).await;
    assert_eq!(row(&app, &next).await.status, "in-progress");
}

/// The column tables that the projection, the replay, the queries and the CSV export follow name
/// the migrated tables' columns, in the migrated order.
#[tokio::test]
async fn the_column_tables_are_the_migrated_tables() {
    let (pool, name) = fresh_database().await;
    let _cleanup = TestApp::owning(pool.clone(), name).await;
    let tables = [
        (CALLS.name, CALLS.names().collect::<Vec<_>>()),
        (TURNS.name, TURNS.names().collect()),
    ];
    for (table, names) in tables {
        let migrated: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns
              WHERE table_schema = current_schema() AND table_name = $1
              ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&pool)
        .await
        .expect("reads the catalogue");
        assert_eq!(migrated, names, "{table}");
    }
}

/// What the read side shows of each column is what the projection wrote into it.
#[tokio::test]
async fn each_column_reads_back_as_the_projection_wrote_it() {
    let app = spawn_app().await;
    mixed_workload(&app).await;
    project(&app).await;
    let mut conn = app.pool.acquire().await.expect("a connection");
    let projections = read_side::fold_store(&mut conn, None)
        .await
        .expect("folds the store");
    assert_eq!(projections.len(), 4);
    for projection in &projections {
        let id = projection.view.call_id;
        let call = queries::get_call(&app.pool, id)
            .await
            .expect("reads")
            .expect("the call has a view");
        for column in CALLS.selected() {
            let read = column.read.expect("a selected column is read");
            assert_eq!(
                (column.write)(&projection.view),
                read(&call),
                "{}",
                column.name
            );
        }
        let turns = queries::turns(&app.pool, id).await.expect("reads");
        assert_eq!(turns.len(), projection.turns.len());
        for (turn, row) in projection.turns.iter().zip(&turns) {
            for column in TURNS.selected() {
                let read = column.read.expect("a selected column is read");
                assert_eq!((column.write)(turn), read(row), "{}", column.name);
            }
        }
    }
}
