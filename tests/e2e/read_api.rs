//! The read side's API per role: analysts' call list, filters, cursors, CSV and statistics;
//! supervisors' and auditors' turn detail; auditors' history, state as of any event, and
//! verification.

use application::auth::Role;
use domain::{CallId, CallSid};
use serde_json::Value;

use crate::helpers::*;
use crate::views::{mixed_workload, project};

impl TestApp {
    /// GETs `path` with `token`.
    async fn get_api(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(format!("{}{path}", self.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("the app answers")
    }

    async fn get_json(&self, path: &str, token: &str) -> Value {
        let response = self.get_api(path, Some(token)).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("JSON")
    }

    async fn get_error(&self, path: &str, token: &str) -> (u16, String) {
        let response = self.get_api(path, Some(token)).await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("a JSON error");
        (
            status,
            body["message"].as_str().unwrap_or_default().to_owned(),
        )
    }
}

struct World {
    app: TestApp,
    calls: [CallSid; 4],
    analyst: String,
    supervisor: String,
    auditor: String,
    operator: String,
}

async fn world() -> World {
    let app = spawn_app().await;
    let calls = mixed_workload(&app).await;
    project(&app).await;
    World {
        analyst: app.token(Role::Analyst).await,
        supervisor: app.token(Role::Supervisor).await,
        auditor: app.token(Role::Auditor).await,
        operator: app.token(Role::Operator).await,
        app,
        calls,
    }
}

#[tokio::test]
async fn each_endpoint_answers_its_roles_and_refuses_the_others() {
    let w = world().await;
    let id = CallId::for_call_sid(&w.calls[0]);
    let endpoints: [(String, &[Role]); 7] = [
        (
            "/api/calls".into(),
            &[Role::Analyst, Role::Supervisor, Role::Auditor],
        ),
        (
            format!("/api/calls/{id}"),
            &[Role::Analyst, Role::Supervisor, Role::Auditor],
        ),
        (
            "/api/stats".into(),
            &[Role::Analyst, Role::Supervisor, Role::Auditor],
        ),
        (
            format!("/api/calls/{id}/turns"),
            &[Role::Supervisor, Role::Auditor],
        ),
        (format!("/api/calls/{id}/events"), &[Role::Auditor]),
        (format!("/api/calls/{id}/state"), &[Role::Auditor]),
        (format!("/api/calls/{id}/verify"), &[Role::Auditor]),
    ];
    let tokens = [
        (Role::Analyst, &w.analyst),
        (Role::Supervisor, &w.supervisor),
        (Role::Auditor, &w.auditor),
        (Role::Operator, &w.operator),
    ];
    for (path, allowed) in &endpoints {
        assert_eq!(w.app.get_api(path, None).await.status(), 401, "{path}");
        for (role, token) in &tokens {
            let status = w.app.get_api(path, Some(token)).await.status();
            let expected = if allowed.contains(role) { 200 } else { 403 };
            assert_eq!(status, expected, "{role} GET {path}");
        }
    }
}

#[tokio::test]
async fn analysts_see_masked_views_and_never_transcripts() {
    let w = world().await;
    let id = CallId::for_call_sid(&w.calls[0]);
    let call = w
        .app
        .get_json(&format!("/api/calls/{id}"), &w.analyst)
        .await;
    assert_eq!(call["caller"], "+1••••••••23");
    assert_eq!(call["outcome"], "ended_by_caller");
    let by_sid = w
        .app
        .get_json(&format!("/api/calls/{}", w.calls[0]), &w.analyst)
        .await;
    assert_eq!(by_sid, call);
    let everything = w
        .app
        .get_json("/api/calls?limit=500", &w.analyst)
        .await
        .to_string();
    assert!(!everything.contains("rough day"), "{everything}");
    assert!(!everything.contains("4155550123"), "{everything}");

    // Supervisors see the turn in detail.
    let turns = w
        .app
        .get_json(&format!("/api/calls/{id}/turns"), &w.supervisor)
        .await;
    assert_eq!(
        turns["turns"][0]["transcript"],
        "I had a rough day at work."
    );
    assert_eq!(turns["turns"][0]["risk_level"], "none");

    let unknown = CallId::for_call_sid(&new_call_sid());
    for path in [
        format!("/api/calls/{unknown}"),
        format!("/api/calls/{unknown}/turns"),
        "/api/calls/not-a-call".into(),
    ] {
        assert_eq!(w.app.get_error(&path, &w.auditor).await.0, 404, "{path}");
    }
}

#[tokio::test]
async fn the_list_filters_sorts_and_pages_by_cursor() {
    let w = world().await;
    let ids = |page: &Value| -> Vec<String> {
        page["calls"]
            .as_array()
            .expect("calls")
            .iter()
            .map(|c| c["call_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let all = ids(&w.app.get_json("/api/calls", &w.analyst).await);
    assert_eq!(all.len(), 4);

    // Two at a time, in the same order, each call once.
    let mut paged = Vec::new();
    let mut path = "/api/calls?limit=2".to_owned();
    loop {
        let page = w.app.get_json(&path, &w.analyst).await;
        paged.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/calls?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(paged, all);

    let high = w
        .app
        .get_json("/api/calls?risk_at_least=high", &w.analyst)
        .await;
    assert_eq!(ids(&high), [CallId::for_call_sid(&w.calls[2]).to_string()]);
    let escalated = w
        .app
        .get_json("/api/calls?escalated=true", &w.analyst)
        .await;
    assert_eq!(
        ids(&escalated),
        [CallId::for_call_sid(&w.calls[1]).to_string()]
    );
    let live = w
        .app
        .get_json("/api/calls?status=in-progress", &w.analyst)
        .await;
    assert_eq!(ids(&live), [CallId::for_call_sid(&w.calls[3]).to_string()]);
    let by_risk = w
        .app
        .get_json("/api/calls?sort=-max_risk&limit=1", &w.analyst)
        .await;
    assert_eq!(
        ids(&by_risk),
        [CallId::for_call_sid(&w.calls[2]).to_string()]
    );
    let future = w
        .app
        .get_json("/api/calls?from=2999-01-01", &w.analyst)
        .await;
    assert!(ids(&future).is_empty());

    let cursor = w.app.get_json("/api/calls?limit=1", &w.analyst).await["next_cursor"]
        .as_str()
        .expect("a cursor")
        .to_owned();
    for (query, says) in [
        ("risk_at_least=severe", "risk_at_least"),
        ("escalated=maybe", "escalated"),
        ("from=yesterday", "from"),
        ("sort=caller", "sort"),
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("cursor=garbage", "cursor"),
        (&format!("sort=turns&cursor={cursor}"), "another sort"),
        ("colour=red", "unknown parameter 'colour'"),
        ("format=xml", "format"),
    ] {
        let (status, message) = w
            .app
            .get_error(&format!("/api/calls?{query}"), &w.analyst)
            .await;
        assert_eq!(status, 400, "{query}: {message}");
        assert!(message.contains(says), "{query}: {message}");
    }
}

#[tokio::test]
async fn the_list_exports_as_csv() {
    let w = world().await;
    let response = w
        .app
        .get_api("/api/calls?format=csv&sort=started_at", Some(&w.analyst))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let bytes = response.bytes().await.expect("a body");
    // A byte-order mark first, so that spreadsheets read UTF-8.
    let csv = std::str::from_utf8(&bytes)
        .expect("UTF-8")
        .strip_prefix('\u{feff}')
        .expect("a byte-order mark");
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("call_id,call_sid,caller,"), "{csv}");
    assert_eq!(lines.len(), 5, "{csv}");
    let first = CallId::for_call_sid(&w.calls[0]).to_string();
    assert!(lines[1].starts_with(&first), "{csv}");
    // The masked number is text to a spreadsheet, not a formula.
    assert!(lines[1].contains(",\"'+1••••••••23\","), "{csv}");
}

#[tokio::test]
async fn stats_count_calls_risk_escalations_latency_and_outcomes() {
    let w = world().await;
    let stats = w.app.get_json("/api/stats", &w.analyst).await;
    assert_eq!(stats["calls"], 4);
    assert_eq!(stats["calls_per_day"][0]["calls"], 4);
    assert_eq!(stats["escalated"], 1);
    assert_eq!(stats["escalation_rate"], 0.25);
    let risk: Vec<(String, i64)> = stats["risk_distribution"]
        .as_array()
        .expect("a distribution")
        .iter()
        .map(|c| {
            (
                c["value"].as_str().unwrap_or_default().to_owned(),
                c["calls"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        risk,
        [
            ("unassessed".into(), 2),
            ("none".into(), 1),
            ("high".into(), 1)
        ]
    );
    // The ended call's turn, and the busy call's if its concurrent continue webhook came after
    // its recording.
    let played: i64 =
        sqlx::query_scalar("SELECT count(*) FROM call_turns WHERE latency_ms IS NOT NULL")
            .fetch_one(&w.app.pool)
            .await
            .expect("counts");
    assert!(played >= 1);
    assert_eq!(stats["turn_latency"]["turns"], played);
    assert!(stats["turn_latency"]["median_ms"].is_number());
    let outcomes = stats["outcomes"].to_string();
    for outcome in ["ended_by_caller", "escalated", "hung_up", "live"] {
        assert!(outcomes.contains(outcome), "{outcomes}");
    }
    let empty = w
        .app
        .get_json("/api/stats?from=2999-01-01", &w.analyst)
        .await;
    assert_eq!(empty["calls"], 0);
    assert!(empty["escalation_rate"].is_null());
    assert_eq!(
        w.app.get_error("/api/stats?to=soon", &w.analyst).await.0,
        400
    );
}

#[tokio::test]
async fn auditors_replay_a_history_its_state_at_any_event_and_its_integrity() {
    let w = world().await;
    let sid = &w.calls[0];
    let id = CallId::for_call_sid(sid);
    let history = w
        .app
        .get_json(&format!("/api/calls/{id}/events"), &w.auditor)
        .await;
    let events = history["events"].as_array().expect("events");
    let stored = w.app.events(sid).await;
    assert_eq!(events.len(), stored.len());
    for (got, stored) in events.iter().zip(&stored) {
        assert_eq!(got["event_type"], stored.event_type.as_str());
        assert_eq!(got["sequence"], stored.sequence);
        assert_eq!(got["payload"], stored.payload);
        assert_eq!(got["metadata"], stored.metadata);
        assert!(got["global_position"].is_i64() && got["recorded_at"].is_string());
        assert_eq!(got["event_version"], "1");
    }

    let started = w
        .app
        .get_json(&format!("/api/calls/{id}/state?at=1"), &w.auditor)
        .await;
    assert_eq!(started["at"], 1);
    assert_eq!(started["state"]["turns"].as_array().map(Vec::len), Some(0));
    let now = w
        .app
        .get_json(&format!("/api/calls/{id}/state"), &w.auditor)
        .await;
    assert_eq!(now["at"], now["of"]);
    assert_eq!(now["state"]["turns"].as_array().map(Vec::len), Some(1));
    assert!(now["state"]["ended"].is_string(), "{now}");
    assert_eq!(
        w.app
            .get_error(&format!("/api/calls/{id}/state?at=0"), &w.auditor)
            .await
            .0,
        400
    );
    assert_eq!(
        w.app
            .get_error(&format!("/api/calls/{id}/state?at=999"), &w.auditor)
            .await
            .0,
        422
    );

    let verified = w
        .app
        .get_json(&format!("/api/calls/{id}/verify"), &w.auditor)
        .await;
    assert_eq!(verified["intact"], true);
    let mut tx = w.app.pool.begin().await.expect("a transaction");
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .expect("triggers off");
    sqlx::query("UPDATE events SET metadata = '{}' WHERE aggregate_id = $1 AND sequence = 2")
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .expect("tampered");
    tx.commit().await.expect("committed");
    let verified = w
        .app
        .get_json(&format!("/api/calls/{id}/verify"), &w.auditor)
        .await;
    assert_eq!(verified["intact"], false);
    assert_eq!(verified["first_broken"]["sequence"], 2);
}
