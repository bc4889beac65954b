//! Alerts, end to end: the real `hotline serve` with alerts pointed at a receiver on 127.0.0.1.
//! Each alert arrives once in effect (one id, taken once), signed as Standard Webhooks sign
//! theirs (checked here with HMAC-SHA256 directly, not with the service's own code), carries no
//! number and no words of a caller's, and reaches a receiver that was down once it is back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use twilio_sim::scenario::Scenario;

use crate::handoff::AT_RISK;
use crate::helpers::*;
use crate::simulated::{serve_with_simulated_twilio_and, Served};

/// The receiver's signing key, as `HOTLINE_ALERT_SECRET` gives it.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request the receiver got, and whether it took it.
#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    taken: bool,
}

/// A webhook receiver on 127.0.0.1 that refuses its first `down_for` requests with 503.
struct Receiver {
    url: String,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    async fn start(down_for: usize) -> Self {
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(AtomicUsize::new(0));
        let log = deliveries.clone();
        let router = Router::new().route(
            "/alerts",
            post(move |headers: HeaderMap, body: String| {
                let (log, seen) = (log.clone(), seen.clone());
                async move {
                    let taken = seen.fetch_add(1, Ordering::SeqCst) >= down_for;
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    log.lock().expect("not poisoned").push(Delivery {
                        id: header("webhook-id"),
                        timestamp: header("webhook-timestamp"),
                        signature: header("webhook-signature"),
                        body,
                        taken,
                    });
                    if taken {
                        StatusCode::NO_CONTENT
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let url = format!(
            "http://{}/alerts",
            listener.local_addr().expect("an address")
        );
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, deliveries }
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().expect("not poisoned").clone()
    }
}

async fn alerting(receiver: &Receiver, wait_secs: &str) -> Served {
    serve_with_simulated_twilio_and(&[
        ("COUNSELOR_NUMBERS", COUNSELOR_2),
        ("HOTLINE_ALERT_URL", receiver.url.as_str()),
        ("HOTLINE_ALERT_SECRET", SECRET),
        ("HOTLINE_ALERT_PERSON_WAIT_SECS", wait_secs),
    ])
    .await
}

/// Standard Webhooks' check, written out: HMAC-SHA256 over `{id}.{timestamp}.{body}` with the
/// secret's key, base64, after `v1,`.
fn signed_as_standard_webhooks(delivery: &Delivery) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .expect("base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("a key");
    mac.update(format!("{}.{}.{}", delivery.id, delivery.timestamp, delivery.body).as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    delivery
        .signature
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

/// Waits until every alert job is done (delivered, or found needless), for at most 30 s.
async fn alerts_settled(served: &Served, expected_jobs: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (all, done): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE status = 'done')
               FROM jobs WHERE kind LIKE 'alert.%'",
        )
        .fetch_one(&served.app.pool)
        .await
        .expect("the jobs table answers");
        if all >= expected_jobs && done == all {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "alert jobs not settled: {done} of {all} done"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A caller at risk whom every counselor declines, the crisis line busy.
async fn nobody_takes_the_call(served: &Served) -> twilio_sim::CallReport {
    let call = served
        .simulator
        .call(&scenario(&format!(
            "{AT_RISK}afterwards: hang_up\ndial: [declines, declines, busy]\n"
        )))
        .await;
    assert_eq!(call.outcome, Ok(()), "{:#?}", call.lines);
    call
}

fn scenario(yaml: &str) -> Scenario {
    Scenario::parse(yaml).expect("a scenario")
}

#[tokio::test]
async fn alerts_arrive_once_signed_and_carry_no_personal_data() {
    let receiver = Receiver::start(0).await;
    let served = alerting(&receiver, "5").await;
    // Every counselor declines and the crisis line is busy: nobody takes this call.
    let failed = nobody_takes_the_call(&served).await;
    // A counselor takes this one within the wait: no alert for it.
    let reached = served.simulator.call(&scenario(AT_RISK)).await;
    assert_eq!(reached.outcome, Ok(()), "{:#?}", reached.lines);

    // Three alert jobs: each call's check on its caller, and the failed lines.
    alerts_settled(&served, 3).await;
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 2, "{deliveries:#?}");
    let mut kinds = Vec::new();
    let failed_id =
        domain::CallId::for_call_sid(&domain::CallSid::parse(&failed.call_sid).expect("a CallSid"));
    for delivery in &deliveries {
        assert!(delivery.taken);
        assert!(signed_as_standard_webhooks(delivery), "{delivery:?}");
        let body: Value = serde_json::from_str(&delivery.body).expect("JSON");
        assert_eq!(body["data"]["id"], delivery.id.as_str());
        assert_eq!(body["data"]["call_id"], failed_id.to_string());
        assert_eq!(body["data"]["level"], "critical");
        kinds.push(body["type"].as_str().unwrap_or_default().to_owned());
        for personal in [
            "4155550123",
            "pills",
            "alive",
            COUNSELOR.trim_start_matches('+'),
            COUNSELOR_2.trim_start_matches('+'),
        ] {
            assert!(
                !delivery.body.contains(personal),
                "{personal} in {}",
                delivery.body
            );
        }
    }
    kinds.sort();
    assert_eq!(
        kinds,
        ["hotline.all_lines_failed", "hotline.caller_waiting"]
    );
}

#[tokio::test]
async fn a_receiver_down_for_a_while_gets_the_alert_once_it_is_back() {
    let receiver = Receiver::start(3).await;
    let served = alerting(&receiver, "0").await;
    nobody_takes_the_call(&served).await;
    alerts_settled(&served, 2).await;
    let deliveries = receiver.deliveries();
    // Three refused tries, then each of the two alerts taken once; every try of an alert has its
    // one id, so a receiver that took it can tell a retry from a new alert.
    let taken: Vec<_> = deliveries.iter().filter(|d| d.taken).collect();
    assert_eq!(taken.len(), 2, "{deliveries:#?}");
    assert_ne!(taken[0].id, taken[1].id);
    for delivery in &deliveries {
        assert!(taken.iter().any(|t| t.id == delivery.id), "{deliveries:#?}");
        assert!(signed_as_standard_webhooks(delivery));
    }
    assert_eq!(deliveries.iter().filter(|d| !d.taken).count(), 3);
}

#[tokio::test]
async fn stalled_work_and_a_broken_history_raise_one_alert_each() {
    let (pool, name) = fresh_database().await;
    // Owns the database, which is dropped with it.
    let _app = TestApp::owning(pool.clone(), name).await;
    let alert_jobs = |kind: &'static str| {
        let pool = pool.clone();
        async move {
            let count: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = $1")
                .bind(kind)
                .fetch_one(&pool)
                .await
                .expect("counts");
            count
        }
    };
    let late = infrastructure::alerts::STALLED_AFTER;
    // Nothing overdue: nothing to say.
    infrastructure::alerts::watch_once(&pool, late)
        .await
        .expect("looks");
    assert_eq!(alert_jobs("alert.pipeline_stalled").await, 0);
    // A turn's job ten minutes past its time: no worker is taking the pipeline's work.
    sqlx::query(
        "INSERT INTO jobs (call_id, turn, kind, payload, max_attempts, run_at)
         VALUES ('c', 1, 'process_turn', '{}', 4, now() - interval '10 minutes')",
    )
    .execute(&pool)
    .await
    .expect("a job");
    infrastructure::alerts::watch_once(&pool, late)
        .await
        .expect("looks");
    infrastructure::alerts::watch_once(&pool, late)
        .await
        .expect("looks again");
    assert_eq!(
        alert_jobs("alert.pipeline_stalled").await,
        1,
        "one per window"
    );

    // An event ten minutes old that one subscription has not read, and another has.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata, recorded_at)
         VALUES ('Call', 'c', 1, 'CallStarted', '1', '{}', '{}', now() - interval '10 minutes')",
    )
    .execute(&pool)
    .await
    .expect("an event");
    sqlx::query(
        "INSERT INTO subscription_checkpoints (name, last_tx_id, last_position)
         VALUES ('behind', '0', 0)",
    )
    .execute(&pool)
    .await
    .expect("a checkpoint behind");
    sqlx::query(
        "INSERT INTO subscription_checkpoints (name, last_tx_id, last_position)
         SELECT 'caught_up', tx_id, global_position FROM events",
    )
    .execute(&pool)
    .await
    .expect("a checkpoint at the end");
    infrastructure::alerts::watch_once(&pool, late)
        .await
        .expect("looks");
    let stalled: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT call_id, payload FROM jobs WHERE kind = 'alert.subscription_stalled'",
    )
    .fetch_all(&pool)
    .await
    .expect("reads");
    assert_eq!(stalled.len(), 1, "{stalled:?}");
    assert_eq!(stalled[0].0, "subscription:behind");
    assert_eq!(stalled[0].1["detail"]["subscription"], "behind");

    let call = domain::CallId::for_call_sid(&new_call_sid()).to_string();
    let broken = vec![call.clone(), call];
    infrastructure::alerts::histories_broken(&pool, &broken)
        .await
        .expect("raised");
    assert_eq!(
        alert_jobs("alert.history_broken").await,
        1,
        "one per call and day"
    );
}

#[tokio::test]
async fn a_job_held_past_its_lease_with_nobody_taking_it_over_raises_an_alert() {
    let (pool, name) = fresh_database().await;
    let _app = TestApp::owning(pool.clone(), name).await;
    let late = infrastructure::alerts::STALLED_AFTER;
    // A worker took the job and died; its lease ran out ten minutes ago and no worker took it.
    sqlx::query(
        "INSERT INTO jobs (call_id, turn, kind, payload, max_attempts, status, locked_by, lease_until)
         VALUES ('c', 1, 'process_turn', '{}', 4, 'running', 'gone', now() - interval '10 minutes')",
    )
    .execute(&pool)
    .await
    .expect("a job");
    infrastructure::alerts::watch_once(&pool, late)
        .await
        .expect("looks");
    let raised: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = 'alert.pipeline_stalled'")
            .fetch_one(&pool)
            .await
            .expect("counts");
    assert_eq!(raised, 1);
}
