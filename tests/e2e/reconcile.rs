//! Calls whose end was never recorded (their status callback lost) are looked up with Twilio
//! (`GET Calls/{CallSid}.json`, answered by Prism on Twilio's spec and by a stand-in saying how
//! each call stands) and their end recorded as Twilio reports it.

use std::time::Duration;

use infrastructure::pipeline::{jobs, reconcile_unfinished};
use serde_json::json;

use crate::helpers::*;
use crate::twilio_stand_in::{Canned, Prism, ScriptedServer};
use crate::views::project;

/// Makes every call's view look as if it started five hours ago.
async fn five_hours_ago(app: &TestApp) {
    sqlx::query("UPDATE call_views SET started_at = now() - interval '5 hours'")
        .execute(&app.pool)
        .await
        .expect("updates");
}

async fn run_jobs(app: &TestApp) {
    let (queue, handler) = app.service().worker("reconciler").expect("a worker");
    while jobs::work_once(&queue, &handler).await.expect("works") {}
}

#[tokio::test]
async fn a_call_whose_end_was_never_recorded_is_ended_as_twilio_reports_it() {
    let twilio = ScriptedServer::by_method(
        Canned::json(200, json!({ "status": "completed", "duration": "61" })),
        Canned::json(200, json!({})),
    )
    .await;
    let app = TestApp::builder().twilio(&twilio.base_url).spawn().await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    project(&app).await;

    // Not yet due: a call is asked about only after the configured time.
    let after = Duration::from_secs(4 * 3600);
    assert_eq!(
        reconcile_unfinished(&app.pool, after).await.expect("runs"),
        0
    );
    five_hours_ago(&app).await;
    assert_eq!(
        reconcile_unfinished(&app.pool, after).await.expect("runs"),
        1
    );
    // Asked once a round, however often the watch looks.
    assert_eq!(
        reconcile_unfinished(&app.pool, after).await.expect("runs"),
        0
    );
    run_jobs(&app).await;

    assert_eq!(app.event_types(&sid).await, ["CallStarted", "Completed"]);
    let events = app.events(&sid).await;
    assert_eq!(events[1].payload["Completed"]["duration_secs"], 61);
    assert_eq!(events[1].metadata["actor"], "reconciliation");
    let asked = twilio.received();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].method, "GET");
    assert_eq!(
        asked[0].path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json")
    );
    // Ended now: not asked about again.
    project(&app).await;
    sqlx::query("DELETE FROM jobs")
        .execute(&app.pool)
        .await
        .expect("clears");
    assert_eq!(
        reconcile_unfinished(&app.pool, after).await.expect("runs"),
        0
    );
}

#[tokio::test]
async fn a_call_twilio_says_is_still_live_records_nothing() {
    let twilio = ScriptedServer::by_method(
        Canned::json(200, json!({ "status": "in-progress", "duration": null })),
        Canned::json(200, json!({})),
    )
    .await;
    let app = TestApp::builder().twilio(&twilio.base_url).spawn().await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    project(&app).await;
    five_hours_ago(&app).await;
    assert_eq!(
        reconcile_unfinished(&app.pool, Duration::from_secs(3600))
            .await
            .expect("runs"),
        1
    );
    run_jobs(&app).await;
    assert_eq!(app.event_types(&sid).await, ["CallStarted"]);
    assert_eq!(twilio.received().len(), 1);
}

#[tokio::test]
async fn the_call_lookup_is_what_twilio_s_spec_describes() {
    let prism = Prism::start().await;
    let app = TestApp::builder().twilio(&prism.base_url).spawn().await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    project(&app).await;
    five_hours_ago(&app).await;
    reconcile_unfinished(&app.pool, Duration::from_secs(3600))
        .await
        .expect("runs");
    run_jobs(&app).await;
    // Prism validated the request against Twilio's OpenAPI spec and answered with its example;
    // the job read it (a failed job would still be pending or failed).
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, last_error FROM jobs WHERE kind = 'reconcile_call'")
            .fetch_one(&app.pool)
            .await
            .expect("the job");
    assert_eq!(status, "done", "{error:?}");
}
