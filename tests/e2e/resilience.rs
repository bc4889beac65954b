//! The caller is never left with an error: whatever fails on our side, a caller-facing webhook
//! answers 200 with TwiML that says something human, gives the crisis number and dials a person.

use domain::CallId;
use infrastructure::event_store;
use sqlx::postgres::PgConnectOptions;

use crate::helpers::*;

#[tokio::test]
async fn with_the_database_unreachable_callers_still_get_a_person() {
    // Nothing listens on port 1: every connection attempt fails at once.
    let unreachable = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(1)
        .username("nobody")
        .database("none");
    let app = TestApp::builder()
        .over(event_store::pool(unreachable, 4))
        .spawn()
        .await;
    let sid = new_call_sid();
    let id = CallId::for_call_sid(&sid);

    let voice = app.voice(&sid).await;
    assert_person_on_the_line(&voice);
    assert_eq!(voice.verbs(), ["Say", "Dial"]);
    // The counselor dial reports back to the same call, so a no-answer still reaches the crisis line.
    let dial_action = format!(
        "{}/twilio/dial-status/{id}/?line=counselor&attempt=1",
        app.base_url
    );
    assert_eq!(
        voice.first("Dial").attr("action"),
        Some(dial_action.as_str())
    );

    assert_person_on_the_line(&app.recording(&sid, 1, "#").await);
    assert_person_on_the_line(&app.continue_call(&sid).await);
    assert_person_on_the_line(&app.choose(&sid, "2").await);
    // Asking for a human works even when it cannot be written down.
    assert_eq!(app.choose(&sid, "0").await.dialled(), [COUNSELOR]);
    let params = form(&[("CallSid", sid.as_str()), ("DialCallStatus", "busy")]);
    assert_eq!(
        app.twiml(&format!("/twilio/dial-status/{id}/"), &params)
            .await
            .dialled(),
        [CRISIS]
    );

    // No caller hears the status callback, and Twilio does not retry it: it is kept in the spool
    // for when the store is back, and Twilio is told it was taken.
    assert_eq!(app.status(&sid, "completed", 3).await, 204);
    let health = app
        .client
        .get(format!("{}/health", app.base_url))
        .send()
        .await
        .expect("answers");
    assert_eq!(health.status(), 503);
}

#[tokio::test]
async fn with_the_pool_exhausted_callers_still_get_a_person() {
    let (pool, name) = fresh_database().await;
    let options = (*pool.connect_options()).clone();
    let small = event_store::pool(options, 1);
    let mut app = TestApp::builder().over(small.clone()).spawn().await;
    app.database = Some(name);
    // Hold the only connection: the webhook cannot get one within the acquire timeout.
    let _held = small.acquire().await.expect("the one connection");
    let voice = app.voice(&new_call_sid()).await;
    assert_person_on_the_line(&voice);
}

#[tokio::test]
async fn a_recording_for_an_unknown_call_answers_safe_twiml_and_stores_nothing() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    let answer = app.recording(&sid, 1, "#").await;
    assert_person_on_the_line(&answer);
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn a_webhook_naming_another_call_in_its_url_answers_safe_twiml_and_stores_nothing() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    let other = new_call_sid();
    app.voice(&sid).await;
    app.voice(&other).await;
    let (recording_sid, url) = recording_of(1);
    let params = form(&[
        ("CallSid", sid.as_str()),
        ("RecordingSid", &recording_sid),
        ("RecordingUrl", &url),
    ]);
    let answer = app
        .twiml(
            &format!("/twilio/recording/{}/", CallId::for_call_sid(&other)),
            &params,
        )
        .await;
    assert_person_on_the_line(&answer);
    assert_eq!(app.event_count().await, 2);
}

#[tokio::test]
async fn malformed_webhook_parameters_answer_safe_twiml_and_store_nothing() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    // No AccountSid, and a CallSid of the wrong shape.
    let answer = app
        .twiml("/twilio/voice/", &form(&[("CallSid", sid.as_str())]))
        .await;
    assert_person_on_the_line(&answer);
    let answer = app
        .twiml(
            "/twilio/voice/",
            &form(&[("CallSid", "CA123"), ("AccountSid", ACCOUNT_SID)]),
        )
        .await;
    assert_person_on_the_line(&answer);
    // A recording without a usable RecordingUrl.
    app.voice(&sid).await;
    let (recording_sid, _) = recording_of(1);
    let params = form(&[
        ("CallSid", sid.as_str()),
        ("RecordingSid", &recording_sid),
        ("RecordingUrl", "file:///etc/passwd"),
    ]);
    let answer = app
        .twiml(
            &format!("/twilio/recording/{}/", CallId::for_call_sid(&sid)),
            &params,
        )
        .await;
    assert_person_on_the_line(&answer);
    assert_eq!(app.event_types(&sid).await, ["CallStarted"]);
}

#[tokio::test]
async fn a_malformed_status_callback_gets_a_clear_400() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    let response = app
        .post_signed(
            "/twilio/status/",
            &form(&[
                ("CallSid", sid.as_str()),
                ("CallStatus", "completed"),
                ("SequenceNumber", "-1"),
            ]),
        )
        .await;
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.expect("a JSON error");
    assert_eq!(body["code"], "invalid_parameter");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("SequenceNumber")),
        "{body}"
    );
    let response = app
        .post_signed("/twilio/status/", &form(&[("CallStatus", "completed")]))
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(app.event_count().await, 0);
}

#[tokio::test]
async fn a_status_callback_for_a_call_never_answered_is_kept() {
    // A call whose voice webhook never reached us (or an outbound call nobody picked up).
    let app = spawn_app().await;
    let sid = new_call_sid();
    assert_eq!(app.status(&sid, "no-answer", 1).await, 204);
    assert_eq!(app.event_types(&sid).await, ["Completed"]);
}

#[tokio::test]
async fn twilio_calling_a_url_we_do_not_serve_still_puts_a_person_on_the_line() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    // A console typo: the caller must not hear Twilio's application error.
    let answer = app.twiml("/twilio/voic/", &voice_params(&sid)).await;
    assert_person_on_the_line(&answer);
    // Unsigned requests to such URLs are refused, still with a person on the line (a caller may
    // be waiting behind a misconfigured console), and other paths are plain 404s.
    let unsigned = app
        .client
        .post(format!("{}/twilio/voic/", app.base_url))
        .form(&voice_params(&sid))
        .send()
        .await
        .expect("answers");
    assert_eq!(unsigned.status(), 200);
    assert_person_on_the_line(&Twiml::parse(&unsigned.text().await.expect("a body")));
    let elsewhere = app
        .client
        .get(format!("{}/nothing-here", app.base_url))
        .send()
        .await
        .expect("answers");
    assert_eq!(elsewhere.status(), 404);
    assert_eq!(app.event_count().await, 0);
}

/// A webhook's write is not started when too little of its deadline is left for the database to
/// finish or cancel it in time: nothing can commit after the caller was answered without it.
#[tokio::test]
async fn a_webhook_write_with_too_little_time_left_is_never_started() {
    use application::CommandDispatcher;

    let app = spawn_app().await;
    let sid = new_call_sid();
    let id = CallId::for_call_sid(&sid);
    let start = || domain::fixtures::start_call(&sid, chrono::Utc::now());
    let dispatcher = CommandDispatcher::new(event_store::call_store(app.pool.clone()));
    let meta = application::CommandMetadata {
        request_id: "r".into(),
        idempotency_token: None,
        actor: "test".into(),
        received_at: chrono::Utc::now(),
        spool_entry: None,
    };
    let soon = tokio::time::Instant::now() + event_store::WEBHOOK_STATEMENT_TIMEOUT / 2;
    let refused = application::deadline::within(soon, dispatcher.execute(id, start(), &meta)).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(app.event_count().await, 0);
    let later = tokio::time::Instant::now() + application::COMMAND_DEADLINE;
    application::deadline::within(later, dispatcher.execute(id, start(), &meta))
        .await
        .expect("a write with time to finish is made");
    assert_eq!(app.event_types(&sid).await, ["CallStarted"]);
}

#[tokio::test]
async fn a_nul_in_a_signed_parameter_is_removed_at_the_edge_and_the_call_is_on_record() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    let mut params = voice_params(&sid);
    for (name, value) in &mut params {
        if name == "From" || name == "CallerName" {
            *value = format!("{value}\u{0}x");
        }
    }
    let greeting = app.twiml("/twilio/voice/", &params).await;
    assert!(greeting.verbs().contains(&"Gather"), "{}", greeting.xml);
    assert_eq!(app.event_types(&sid).await, ["CallStarted"]);
    // Counted where an operator looks.
    let health = app.health().await;
    assert!(
        health["refused_characters_removed"].as_u64() >= Some(2),
        "{health}"
    );
    // The next call is recorded at once: nothing was counted as an outage.
    let next = new_call_sid();
    app.voice(&next).await;
    assert_eq!(app.event_types(&next).await, ["CallStarted"]);
}

#[tokio::test]
async fn a_value_the_database_refuses_fails_that_command_only_never_everyones() {
    // Past the edge (which removes NUL), through the real store: the write is refused as bad
    // data, that caller hears the fallback, and the next call is recorded at once.
    let app = spawn_app().await;
    let service =
        application::CallService::new(event_store::call_store(app.pool.clone()), test_lines());
    let meta = application::CommandMetadata {
        request_id: "r".into(),
        idempotency_token: None,
        actor: "twilio".into(),
        received_at: chrono::Utc::now(),
        spool_entry: None,
    };
    let incoming = |sid: &domain::CallSid, from: &str| application::IncomingCall {
        call_sid: sid.clone(),
        account_sid: domain::AccountSid::parse(ACCOUNT_SID).expect("valid"),
        from: domain::CallerId::new(from),
        to: "+15005550006".into(),
        direction: "inbound".into(),
    };
    let refused = new_call_sid();
    let spoken = service
        .answer_call(incoming(&refused, "+1415555\u{0}0123"), &meta)
        .await;
    assert_eq!(spoken.answer, application::CallAnswer::Trouble);
    assert!(app.event_types(&refused).await.is_empty());
    let next = new_call_sid();
    let spoken = service
        .answer_call(incoming(&next, "+14155550123"), &meta)
        .await;
    assert_eq!(spoken.answer, application::CallAnswer::Welcome);
    assert_eq!(app.event_types(&next).await, ["CallStarted"]);
}

#[tokio::test]
async fn a_terminal_status_out_of_order_never_silences_the_caller() {
    let app = spawn_app().await;
    // Twilio's "completed" arrives before the call's own webhook (or a wrong one mid-call):
    // the record says the call is over, yet Twilio asks what the caller hears.
    let sid = new_call_sid();
    assert_eq!(app.status(&sid, "completed", 5).await, 204);
    let voice = app.voice(&sid).await;
    assert_person_on_the_line(&voice);
    let mid_call = new_call_sid();
    app.voice(&mid_call).await;
    assert_eq!(app.status(&mid_call, "completed", 5).await, 204);
    let next_turn = app.recording(&mid_call, 1, "#").await;
    assert_person_on_the_line(&next_turn);
    // The late webhook is kept for the record, and changes nothing else.
    assert_eq!(
        app.event_types(&mid_call).await,
        ["CallStarted", "Completed", "LateCallbackReceived"]
    );
}
