//! The operator API: bearer tokens with roles, re-processing a recording, and test calls placed
//! through Twilio's REST API (checked by Prism against Twilio's spec).

use std::sync::Arc;

use api::state::Operations;
use application::auth::Role;
use application::operations::TestCalls;
use application::pipeline::Pipeline;
use domain::{CallId, DialNumber};
use infrastructure::event_store;
use infrastructure::pipeline::openai::{Endpoint, OpenAiSpeechToText};
use infrastructure::twilio::adapters::{TwilioCallControl, TwilioRecordings};
use serde_json::{json, Value};
use sqlx::PgPool;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;
use crate::twilio_stand_in::{Canned, Prism, ScriptedServer};

const ALLOWED: &str = "+15005550010";

/// Operations against the Twilio at `twilio_base` and the speech-to-text service at `stt`.
fn operations(twilio_base: String, stt: String) -> impl FnOnce(&str, &PgPool) -> Operations {
    move |base_url, pool| {
        let rest = test_rest(&twilio_base);
        let voice = Arc::new(test_voice(base_url, false));
        let control = TwilioCallControl {
            rest: rest.clone(),
            voice: voice.clone(),
        };
        let pipeline = Pipeline::new(
            event_store::call_store(pool.clone()),
            Arc::new(TwilioRecordings(rest)),
            Some(Arc::new(OpenAiSpeechToText::new(Endpoint {
                base_url: stt,
                api_key: None,
                model: "whisper-1".into(),
            }))),
            None,
            Arc::new(control.clone()),
            voice.lines.clone(),
        );
        Operations {
            pipeline: Arc::new(pipeline),
            test_calls: TestCalls::new(
                Arc::new(control),
                Some(DialNumber::parse("+15005550006").expect("valid")),
                vec![DialNumber::parse(ALLOWED).expect("valid")],
            ),
        }
    }
}

async fn speech_saying(answer: ResponseTemplate) -> MockServer {
    let speech = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .respond_with(answer)
        .mount(&speech)
        .await;
    speech
}

/// An app whose Twilio serves `recording` and whose speech-to-text says `transcript`.
async fn operator_app(recording: Canned, transcript: ResponseTemplate) -> Stand {
    let twilio = ScriptedServer::by_method(
        recording,
        Canned::json(200, json!({ "sid": "CA0123456789abcdef0123456789abcdef" })),
    )
    .await;
    let speech = speech_saying(transcript).await;
    let app = spawn_app_with_operations(operations(twilio.base_url.clone(), speech.uri())).await;
    Stand {
        app,
        twilio,
        _speech: speech,
    }
}

struct Stand {
    app: TestApp,
    twilio: ScriptedServer,
    _speech: MockServer,
}

async fn error_of(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("a JSON error");
    (
        status,
        body["code"].as_str().unwrap_or_default().to_owned(),
        body["message"].as_str().unwrap_or_default().to_owned(),
    )
}

fn said(text: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({ "text": text }))
}

#[tokio::test]
async fn operator_endpoints_admit_live_operator_tokens_only() {
    let stand = operator_app(Canned::audio(b"RIFF"), said("hello")).await;
    let app = &stand.app;
    let analyst = app.token(Role::Analyst).await;
    let operator = app.token(Role::Operator).await;
    let body = json!({ "to_number": ALLOWED });
    for endpoint in ["/api/test-call/", "/api/process-audio/"] {
        let none = app.post_api(endpoint, None, &body).await;
        assert_eq!(
            none.headers().get("www-authenticate").map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
        assert_eq!(error_of(none).await.0, 401, "{endpoint}");
        let forged = app.post_api(endpoint, Some("hl_not-a-token"), &body).await;
        assert_eq!(error_of(forged).await.0, 401, "{endpoint}");
        let (status, code, message) =
            error_of(app.post_api(endpoint, Some(&analyst), &body).await).await;
        assert_eq!((status, code.as_str()), (403, "forbidden"), "{endpoint}");
        assert!(message.contains("operator"), "{message}");
    }

    // Revoked, a token opens nothing.
    let tokens = infrastructure::tokens::ApiTokens::new(app.pool.clone());
    let listed = tokens.list().await.expect("lists");
    let id = listed
        .iter()
        .find(|t| t.role == Role::Operator)
        .expect("the operator token")
        .id;
    assert!(tokens.revoke(id).await.expect("revokes"));
    let revoked = app
        .post_api("/api/test-call/", Some(&operator), &body)
        .await;
    assert_eq!(error_of(revoked).await.0, 401);
    assert!(stand.twilio.received().is_empty(), "nothing reached Twilio");
    // Only hashes are stored.
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM api_tokens")
        .fetch_all(&app.pool)
        .await
        .expect("reads");
    assert!(stored
        .iter()
        .all(|h| h.len() == 32 && !h.windows(3).any(|w| w == b"hl_")));
}

#[tokio::test]
async fn a_recording_is_reprocessed_without_touching_the_call() {
    let stand = operator_app(Canned::audio(b"RIFF"), said("I had a rough day at work.")).await;
    let app = &stand.app;
    let token = app.token(Role::Operator).await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    app.recording_from(&stand.twilio.base_url, &sid, 1, "#")
        .await;
    let (_, url) = recording_at(&stand.twilio.base_url, 1);
    let before = app.event_types(&sid).await;

    for call_id in [CallId::for_call_sid(&sid).to_string(), sid.to_string()] {
        let response = app
            .post_api(
                "/api/process-audio/",
                Some(&token),
                &json!({ "audio_url": url, "call_id": call_id }),
            )
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["risk_level"], "none");
        assert_eq!(body["analysis"]["transcript"], "I had a rough day at work.");
        assert!(body["response_text"]
            .as_str()
            .is_some_and(|t| t.contains("you don't have to face it alone")));
        assert!(body["response_audio_url"].is_null());
    }
    assert_eq!(app.event_types(&sid).await, before, "nothing recorded");
    let received = stand.twilio.received();
    assert_eq!(received.len(), 2, "two downloads, nothing played");
    assert!(received.iter().all(|r| r.method == "GET"));
}

#[tokio::test]
async fn bad_process_audio_requests_get_clear_errors_and_fetch_nothing() {
    let stand = operator_app(Canned::audio(b"RIFF"), said("hello")).await;
    let app = &stand.app;
    let token = app.token(Role::Operator).await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    let (_, own) = recording_at(&stand.twilio.base_url, 1);
    let id = CallId::for_call_sid(&sid).to_string();
    let unknown = CallId::for_call_sid(&new_call_sid()).to_string();

    let not_json = app
        .client
        .post(format!("{}/api/process-audio/", app.base_url))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("answers");
    assert_eq!(error_of(not_json).await.1, "malformed_request");
    let cases = [
        (json!({ "audio_url": own }), 400, "missing field `call_id`"),
        (
            json!({ "audio_url": 7, "call_id": id }),
            400,
            "audio_url has the wrong type",
        ),
        (
            json!({ "audio_url": own, "call_id": "nope" }),
            422,
            "call_id",
        ),
        (
            json!({ "audio_url": "ftp://x", "call_id": id }),
            422,
            "audio_url",
        ),
        (
            json!({ "audio_url": "https://evil.example.org/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Recordings/RE0123456789abcdef0123456789abcdef", "call_id": id }),
            422,
            "this account's recordings",
        ),
        (json!({ "audio_url": own, "call_id": unknown }), 404, "call"),
    ];
    for (body, status, says) in cases {
        let (got, code, message) = error_of(
            app.post_api("/api/process-audio/", Some(&token), &body)
                .await,
        )
        .await;
        assert_eq!(got, status, "{body}: {code} {message}");
        assert!(message.contains(says), "{body}: {message}");
    }
    assert!(stand.twilio.received().is_empty(), "nothing was fetched");
}

#[tokio::test]
async fn failures_of_the_services_behind_process_audio_are_named() {
    let stand = operator_app(
        Canned::twilio_error(404, 20404, "The requested resource was not found"),
        said("hello"),
    )
    .await;
    let app = &stand.app;
    let token = app.token(Role::Operator).await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    let (_, own) = recording_at(&stand.twilio.base_url, 1);
    let body = json!({ "audio_url": own, "call_id": sid.to_string() });
    let (status, code, message) = error_of(
        app.post_api("/api/process-audio/", Some(&token), &body)
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (502, "upstream_failed"));
    assert_eq!(message, "Twilio failed: twilio_20404");

    let stand = operator_app(Canned::audio(b"RIFF"), ResponseTemplate::new(503)).await;
    let app = &stand.app;
    let token = app.token(Role::Operator).await;
    app.voice(&sid).await;
    let (_, own) = recording_at(&stand.twilio.base_url, 1);
    let body = json!({ "audio_url": own, "call_id": sid.to_string() });
    let (status, _, message) = error_of(
        app.post_api("/api/process-audio/", Some(&token), &body)
            .await,
    )
    .await;
    assert_eq!(status, 502);
    assert!(message.starts_with("speech-to-text failed"), "{message}");

    // Without Twilio credentials there is no pipeline to run.
    let plain = spawn_app().await;
    let token = plain.token(Role::Operator).await;
    let (status, code, _) = error_of(
        plain
            .post_api("/api/process-audio/", Some(&token), &body)
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (503, "not_configured"));
}

#[tokio::test]
async fn a_test_call_is_placed_to_an_allowed_number_with_a_request_twilio_s_spec_accepts() {
    let prism = Prism::start().await;
    let speech = speech_saying(said("hello")).await;
    let app = spawn_app_with_operations(operations(prism.base_url.clone(), speech.uri())).await;
    let token = app.token(Role::Operator).await;

    let response = app
        .post_api(
            "/api/test-call/",
            Some(&token),
            &json!({ "to_number": ALLOWED }),
        )
        .await;
    assert_eq!(response.status(), 201);
    let placed: Value = response.json().await.expect("JSON");
    let call_sid = placed["call_sid"].as_str().expect("a CallSid");
    assert!(
        call_sid.starts_with("CA") && call_sid.len() == 34,
        "{placed}"
    );
    let expected_id =
        CallId::for_call_sid(&domain::CallSid::parse(call_sid).expect("valid")).to_string();
    assert_eq!(placed["call_id"], expected_id.as_str());

    for (to, status, code) in [
        ("988", 422, "invalid_value"),
        ("+1 (500) 555", 422, "invalid_value"),
        ("+15005550011", 403, "not_allowed"),
    ] {
        let (got, got_code, message) = error_of(
            app.post_api("/api/test-call/", Some(&token), &json!({ "to_number": to }))
                .await,
        )
        .await;
        assert_eq!((got, got_code.as_str()), (status, code), "{to}: {message}");
        assert!(!message.contains(to), "the number is not echoed: {message}");
    }
    let (status, _, _) = error_of(
        app.post_api("/api/test-call/", Some(&token), &json!({ "to": ALLOWED }))
            .await,
    )
    .await;
    assert_eq!(status, 400);
}
