//! Whole calls through the simulator, as Twilio would place them: the real `hotline serve` with
//! the simulator as its Twilio (its REST updates interrupt the simulated call), the example
//! scenarios, a server answering broken TwiML, a server that is down, and a load run.

use std::process::Stdio;
use std::time::Duration;

use domain::CallSid;
use tokio::process::Command;
use twilio_sim::scenario::{self, Scenario};
use twilio_sim::{SimError, Simulator, Target};

use crate::helpers::*;

fn target(base_url: &str) -> Target {
    Target {
        base_url: base_url.to_owned(),
        account_sid: ACCOUNT_SID.to_owned(),
        auth_token: AUTH_TOKEN.to_owned(),
        to: "+15005550006".to_owned(),
    }
}

/// `hotline serve` with the pipeline on and the simulator as its Twilio.
pub(crate) struct Served {
    _child: tokio::process::Child,
    pub(crate) app: TestApp,
    pub(crate) simulator: Simulator,
    pub(crate) data_dir: tempfile::TempDir,
}

/// Record mode: these calls are about the pipeline and its REST updates.
pub(crate) async fn serve_with_simulated_twilio() -> Served {
    serve_with_simulated_twilio_and(&[("HOTLINE_CONVERSATION", "record")]).await
}

/// `hotline serve` as above, with `extra` variables set (a mode, a model).
pub(crate) async fn serve_with_simulated_twilio_and(extra: &[(&str, &str)]) -> Served {
    let (pool, name) = fresh_database().await;
    let port = free_port();
    let base_url = format!("http://127.0.0.1:{port}");
    let simulator = Simulator::start(target(&base_url), 0)
        .await
        .expect("the simulator starts");
    let data_dir = tempfile::tempdir().expect("a data directory");
    let child = Command::new(env!("CARGO_BIN_EXE_hotline-under-test"))
        .arg("serve")
        .env_clear()
        .env("DATABASE_URL", database_url(&name).await)
        .env("HOTLINE_ADDR", format!("127.0.0.1:{port}"))
        .env("HOTLINE_DATA_DIR", data_dir.path())
        .env("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
        .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        .env("TWILIO_API_BASE", &simulator.rest_base_url)
        .env("COUNSELOR_NUMBER", COUNSELOR)
        .env("CRISIS_LINE_NUMBER", CRISIS)
        .env("COUNSELOR_NUMBER_ES", COUNSELOR_ES)
        .envs(extra.iter().copied())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("hotline starts");
    let mut app = TestApp::owning(pool, name).await;
    app.base_url = base_url;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !app
        .client
        .get(format!("{}/health", app.base_url))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "hotline did not start"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Served {
        _child: child,
        app,
        simulator,
        data_dir,
    }
}

fn example(name: &str) -> Scenario {
    scenario::examples()
        .into_iter()
        .find(|s| s.name.contains(name))
        .expect("an example")
}

pub(crate) async fn types(app: &TestApp, call_sid: &str) -> Vec<String> {
    app.event_types(&CallSid::parse(call_sid).expect("a CallSid"))
        .await
}

#[tokio::test]
async fn the_example_calls_go_as_a_caller_should_hear_them() {
    let served = serve_with_simulated_twilio().await;
    let (app, simulator) = (&served.app, &served.simulator);

    let low = simulator.call(&example("low-risk")).await;
    assert_eq!(low.outcome, Ok(()), "{:#?}", low.lines);
    assert!(
        low.heard()
            .iter()
            .any(|l| l.contains("you don't have to face it alone")),
        "the scripted reply, played by a REST update: {:#?}",
        low.lines
    );
    assert!(low.heard().last().is_some_and(|l| l.contains("Goodbye")));
    let events = types(app, &low.call_sid).await;
    assert!(events.contains(&"Analyzed".to_owned()), "{events:?}");
    assert_eq!(events.last().map(String::as_str), Some("Completed"));

    let counselor = simulator.call(&example("counselor")).await;
    assert_eq!(counselor.outcome, Ok(()));
    assert_eq!(counselor.dialled(), [COUNSELOR]);

    let high = simulator.call(&example("high-risk")).await;
    assert_eq!(high.outcome, Ok(()), "{:#?}", high.lines);
    assert_eq!(high.dialled(), [COUNSELOR]);
    assert!(
        !high.heard().iter().any(|l| l.contains("face it alone")),
        "no automated reply: {:#?}",
        high.lines
    );
    let events = app
        .events(&CallSid::parse(&high.call_sid).expect("a CallSid"))
        .await;
    let analysed = events
        .iter()
        .find(|e| e.event_type == "Analyzed")
        .expect("analysed");
    assert_eq!(
        analysed.payload["Analyzed"]["analysis"]["assessment"]["route"],
        "escalate"
    );
    assert!(analysed.payload["Analyzed"]["analysis"]["reply"].is_null());
    assert!(events.iter().any(|e| e.event_type == "Escalated"));

    let silent = simulator.call(&example("silent")).await;
    assert_eq!(silent.outcome, Ok(()), "{:#?}", silent.lines);
    assert!(silent.heard().iter().any(|l| l.contains("9 8 8")));
    assert_eq!(silent.dialled(), [COUNSELOR]);
}

/// A server on 127.0.0.1 that answers every webhook with `body`.
async fn answering(body: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    let router =
        axum::Router::new().fallback(move || async move { ([("content-type", "text/xml")], body) });
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

#[tokio::test]
async fn broken_twiml_and_a_server_that_is_down_are_reported() {
    let broken = answering("<Response><Say>Hello</Say><Shout>now</Shout></Response>").await;
    let simulator = Simulator::start(target(&broken), 0).await.expect("starts");
    let report = simulator.call(&example("low-risk")).await;
    match report.outcome {
        Err(SimError::InvalidTwiml { reason, .. }) => {
            assert!(reason.contains("<Shout>"), "{reason}");
        }
        other => panic!("broken TwiML went unnoticed: {other:?}"),
    }

    let down = format!("http://127.0.0.1:{}", free_port());
    let simulator = Simulator::start(target(&down), 0).await.expect("starts");
    let report = simulator.call(&example("low-risk")).await;
    assert!(
        matches!(report.outcome, Err(SimError::Unreachable { .. })),
        "{:?}",
        report.outcome
    );

    // A webhook answered with an error is Twilio's application error.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let failing = format!("http://{}", listener.local_addr().expect("an address"));
    let router = axum::Router::new()
        .fallback(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "oops") });
    tokio::spawn(async move { axum::serve(listener, router).await });
    let simulator = Simulator::start(target(&failing), 0).await.expect("starts");
    let report = simulator.call(&example("low-risk")).await;
    assert!(
        matches!(report.outcome, Err(SimError::Http { status: 500, .. })),
        "{:?}",
        report.outcome
    );
}

#[tokio::test]
async fn hotline_simulate_places_many_calls_and_prints_its_figures() {
    let app = spawn_app().await;
    let output = Command::new(env!("CARGO_BIN_EXE_hotline-under-test"))
        .args([
            "simulate",
            "--target",
            &app.base_url,
            "--calls",
            "20",
            "--concurrency",
            "5",
            "--say",
            "I had a rough day.",
            "--press",
            "2",
        ])
        .env_clear()
        .env("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
        .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("hotline simulate runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("calls: 20 (0 failed)"), "{stdout}");
    assert!(stdout.contains("latency p50"), "{stdout}");
    let completed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'Completed'")
            .fetch_one(&app.pool)
            .await
            .expect("counts");
    assert_eq!(completed, 20);
}
