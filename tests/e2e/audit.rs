//! Tamper evidence: the event store refuses updates and deletes, every event is chained to the one
//! before it by the database, and `hotline verify` names the first event of a history altered
//! behind the service's back.

use domain::{CallId, CallSid};
use infrastructure::event_store::audit::{self, BrokenReason};
use sqlx::PgPool;

use crate::helpers::*;

/// A call of four events: started, a turn, a choice to end, completed.
async fn a_whole_call(app: &TestApp) -> CallSid {
    let sid = new_call_sid();
    app.voice(&sid).await;
    app.recording(&sid, 1, "#").await;
    app.choose(&sid, "2").await;
    app.status(&sid, "completed", 9).await;
    sid
}

/// Runs `sql` as a superuser with triggers off: what someone with the database's keys could do.
async fn behind_the_service_s_back(pool: &PgPool, sql: &str, sid: &CallSid) {
    let mut tx = pool.begin().await.expect("a transaction");
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .expect("triggers off");
    sqlx::query(sql)
        .bind(CallId::for_call_sid(sid).to_string())
        .execute(&mut *tx)
        .await
        .expect("the tampering runs");
    tx.commit().await.expect("committed");
}

/// Runs the `hotline` command line with `args` on `app`'s database.
async fn hotline(app: &TestApp, args: &[&str]) -> std::process::Output {
    let name = app.database.clone().expect("the app owns its database");
    tokio::process::Command::new(env!("CARGO_BIN_EXE_hotline-under-test"))
        .args(args)
        .env_clear()
        .env("DATABASE_URL", database_url(&name).await)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("hotline runs")
}

#[tokio::test]
async fn an_untouched_store_verifies_and_refuses_updates_deletes_and_truncation() {
    let app = spawn_app().await;
    let first = a_whole_call(&app).await;
    a_whole_call(&app).await;
    let found = audit::verify(&app.pool, None).await.expect("verifies");
    assert!(found.intact(), "{found:?}");
    assert_eq!((found.aggregates, found.events), (2, 2 * 4));

    let id = CallId::for_call_sid(&first).to_string();
    for sql in [
        "UPDATE events SET payload = '{}' WHERE aggregate_id = $1",
        "DELETE FROM events WHERE aggregate_id = $1",
    ] {
        let refused = sqlx::query(sql)
            .bind(&id)
            .execute(&app.pool)
            .await
            .expect_err("refused");
        assert!(
            refused.to_string().contains("append-only"),
            "{sql}: {refused}"
        );
    }
    let truncate = sqlx::query("TRUNCATE events")
        .execute(&app.pool)
        .await
        .expect_err("refused");
    assert!(truncate.to_string().contains("append-only"), "{truncate}");
    assert_eq!(app.event_count().await, 8);
}

#[tokio::test]
async fn the_database_chains_every_event_exactly_as_the_reference_content_function_says() {
    // The insert trigger writes the canonical content out inline (for speed); `event_content()`
    // is the reference. Multi-byte text checks that lengths are counted in bytes by both.
    let app = spawn_app().await;
    let sid = a_whole_call(&app).await;
    crate::views::analyse(&app, &sid, 1, "Ça ne va pas — je suis épuisé 😔").await;
    let (events, differing): (i64, i64) = sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE e.hash <> sha256(coalesce(p.hash, ''::bytea) ||
                    event_content(e.aggregate_type, e.aggregate_id, e.sequence, e.event_type,
                                  e.event_version, e.payload, e.metadata)))
           FROM events e
           LEFT JOIN events p ON p.aggregate_type = e.aggregate_type
                             AND p.aggregate_id = e.aggregate_id AND p.sequence = e.sequence - 1",
    )
    .fetch_one(&app.pool)
    .await
    .expect("compares");
    assert_eq!((events, differing), (5, 0));
    let found = audit::verify(&app.pool, None).await.expect("verifies");
    assert!(found.intact(), "{found:?}");
}

#[tokio::test]
async fn an_event_that_does_not_follow_its_call_s_last_event_is_refused() {
    let app = spawn_app().await;
    let insert = |aggregate: &'static str, sequence: i64| {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                                 payload, metadata)
             VALUES ('Test', $1, $2, 'Happened', '1', '{}', '{}')",
        )
        .bind(aggregate)
        .bind(sequence)
        .execute(&app.pool)
    };
    // A history that starts past its first event, and one with a gap, are both refused.
    let skipped_start = insert("a", 2).await.expect_err("refused");
    assert!(
        skipped_start.to_string().contains("does not follow"),
        "{skipped_start}"
    );
    insert("b", 1).await.expect("the first event");
    let gap = insert("b", 3).await.expect_err("refused");
    assert!(gap.to_string().contains("does not follow"), "{gap}");
    insert("b", 2).await.expect("the next event");
    assert_eq!(app.event_count().await, 2);
}

#[tokio::test]
async fn an_altered_payload_is_named_down_to_the_event() {
    let app = spawn_app().await;
    let untouched = a_whole_call(&app).await;
    let altered = a_whole_call(&app).await;
    // The recording's URL is changed in place.
    behind_the_service_s_back(
        &app.pool,
        "UPDATE events SET payload = replace(payload::text, 'Recordings', 'Elsewhere')::json
          WHERE aggregate_id = $1 AND sequence = 2",
        &altered,
    )
    .await;

    let found = audit::verify(&app.pool, None).await.expect("verifies");
    assert_eq!(found.broken.len(), 1, "{found:?}");
    let broken = &found.broken[0];
    assert_eq!(
        broken.aggregate_id,
        CallId::for_call_sid(&altered).to_string()
    );
    assert_eq!(
        (broken.sequence, broken.reason),
        (2, BrokenReason::ContentAltered)
    );
    let alone = audit::verify(
        &app.pool,
        Some(&CallId::for_call_sid(&untouched).to_string()),
    )
    .await
    .expect("verifies");
    assert!(alone.intact());
}

#[tokio::test]
async fn rewriting_the_altered_event_s_hash_too_breaks_the_chain_at_the_next_event() {
    let app = spawn_app().await;
    let sid = a_whole_call(&app).await;
    // The payload is changed and its hash recomputed, as a careful forger would.
    behind_the_service_s_back(
        &app.pool,
        "UPDATE events e SET payload = '{\"forged\": true}',
                hash = sha256(p.hash || event_content(e.aggregate_type, e.aggregate_id, e.sequence,
                                e.event_type, e.event_version, '{\"forged\": true}', e.metadata))
           FROM events p
          WHERE e.aggregate_id = $1 AND e.sequence = 3
            AND p.aggregate_id = e.aggregate_id AND p.sequence = 2",
        &sid,
    )
    .await;
    let found = audit::verify(&app.pool, None).await.expect("verifies");
    assert_eq!(found.broken.len(), 1, "{found:?}");
    assert_eq!(
        (found.broken[0].sequence, found.broken[0].reason),
        (4, BrokenReason::ContentAltered)
    );
}

#[tokio::test]
async fn a_removed_event_is_named_and_hotline_verify_fails_on_it() {
    let app = spawn_app().await;
    let sid = a_whole_call(&app).await;
    behind_the_service_s_back(
        &app.pool,
        "DELETE FROM events WHERE aggregate_id = $1 AND sequence = 3",
        &sid,
    )
    .await;
    let found = audit::verify(&app.pool, None).await.expect("verifies");
    assert_eq!(
        (found.broken[0].sequence, found.broken[0].reason),
        (4, BrokenReason::Gap)
    );

    // The command line says the same, and fails.
    let output = hotline(&app, &["verify", sid.as_str()]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    let id = CallId::for_call_sid(&sid);
    assert!(
        stdout.contains(&format!("BROKEN call {id} at event 4")),
        "{stdout}"
    );
}

#[tokio::test]
async fn hotline_events_prints_a_call_s_history_in_order() {
    let app = spawn_app().await;
    let sid = a_whole_call(&app).await;
    let output = hotline(&app, &["events", sid.as_str()]).await;
    assert!(output.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let types: Vec<&str> = lines
        .iter()
        .map(|e| e["event_type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        types,
        [
            "CallStarted",
            "RecordingReceived",
            "CallerChose",
            "Completed"
        ]
    );
    assert!(lines
        .iter()
        .all(|e| e["hash"].as_str().is_some_and(|h| h.len() == 64)));
    assert_eq!(lines[0]["sequence"], 1);
}
