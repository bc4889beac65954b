//! Whole calls, webhook by webhook: what is stored and what the caller hears.

use domain::CallId;

use crate::helpers::*;

#[tokio::test]
async fn a_whole_call_stores_its_events_in_order_and_answers_each_step() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    let id = CallId::for_call_sid(&sid);
    let url = |kind: &str| format!("{}/twilio/{kind}/{id}/", app.base_url);

    // 1. The call comes in: disclosure, the way to a counselor, then a recording with a fallback.
    let greeting = app.voice(&sid).await;
    assert_eq!(
        greeting.verbs(),
        ["Gather", "Record", "Gather", "Say", "Dial"]
    );
    let spoken = greeting.spoken();
    assert!(
        spoken.contains("automated") && spoken.contains("recorded"),
        "{spoken}"
    );
    assert!(spoken.contains("press 0"), "{spoken}");
    let record = greeting.first("Record");
    assert_eq!(record.attr("action"), Some(url("recording").as_str()));
    assert_eq!(record.attr("maxLength"), Some("30"));
    // The greeting's prompt (0 for a person, 9 for Spanish) names the turn it is offered at.
    assert_eq!(
        greeting.first("Gather").attr("action"),
        Some(format!("{}?turn=0", url("user-choice")).as_str())
    );
    assert_eq!(greeting.dialled(), [COUNSELOR]);

    // 2. The caller spoke: a holding line, then on to continue.
    let hold = app.recording(&sid, 1, "#").await;
    assert_eq!(hold.verbs(), ["Say", "Pause", "Redirect"]);
    assert_eq!(
        hold.first("Redirect").text,
        format!("{}?wait=0", url("continue"))
    );

    // 3. Continue: the scripted reply, then the direct question, by speech or keys; silence
    // is an answer too.
    let reply = app.continue_call(&sid).await;
    assert_eq!(reply.verbs()[..2], ["Say", "Gather"]);
    assert!(
        reply.spoken().contains("you don't have to face it alone"),
        "{}",
        reply.spoken()
    );
    let question = reply.first("Gather");
    assert_eq!(question.attr("action"), Some(url("question").as_str()));
    assert_eq!(question.attr("input"), Some("dtmf speech"));
    assert_eq!(question.attr("actionOnEmptyResult"), Some("true"));
    assert!(
        reply.spoken().contains("thoughts of suicide"),
        "{}",
        reply.xml
    );

    // 4. A clear no: thanks, then the choice.
    let after = app.answer_question(&sid, Some("no"), None).await;
    let gather = after.first("Gather");
    assert_eq!(
        gather.attr("action"),
        Some(format!("{}?turn=1", url("user-choice")).as_str())
    );
    assert_eq!(gather.attr("input"), Some("dtmf speech"));

    // 5. Choice 2: resources, goodbye, hang up.
    let goodbye = app.choose(&sid, "2").await;
    assert_eq!(goodbye.verbs(), ["Say", "Hangup"]);
    assert!(goodbye.spoken().contains("9 8 8"), "{}", goodbye.spoken());

    // 6. Twilio reports the end.
    assert_eq!(app.status(&sid, "completed", 3).await, 204);

    assert_eq!(
        app.event_types(&sid).await,
        [
            "CallStarted",
            "RecordingReceived",
            "ResponsePlayed",
            "DirectQuestionAsked",
            "DirectQuestionAnswered",
            "CallerChose",
            "Completed"
        ]
    );
    let events = app.events(&sid).await;
    assert_eq!(
        events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6, 7]
    );
    assert_eq!(events[4].payload["DirectQuestionAnswered"]["answer"], "no");
    assert_eq!(events[1].payload["RecordingReceived"]["turn"], 1);
    assert_eq!(events[2].payload["ResponsePlayed"]["via"], "twiml");
    assert_eq!(events[5].payload["CallerChose"]["choice"], "end");
    assert_eq!(events[6].payload["Completed"]["status"], "completed");
    assert_eq!(events[6].payload["Completed"]["duration_secs"], 42);
}

#[tokio::test]
async fn every_event_carries_the_request_id_idempotency_token_and_time() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    let events = app.events(&sid).await;
    let metadata = &events[0].metadata;
    assert_eq!(metadata["actor"], "twilio");
    assert!(
        metadata["request_id"]
            .as_str()
            .is_some_and(|r| r.len() == 36),
        "{metadata}"
    );
    assert!(
        metadata["twilio_idempotency_token"]
            .as_str()
            .is_some_and(|t| t.starts_with("idem-")),
        "{metadata}"
    );
    let received = metadata["received_at"].as_str().expect("a time");
    assert!(
        chrono::DateTime::parse_from_rfc3339(received).is_ok(),
        "{received}"
    );
}

#[tokio::test]
async fn a_second_voice_webhook_for_the_same_call_creates_no_second_call() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    let first = app.voice(&sid).await;
    let second = app.voice(&sid).await;
    assert_eq!(
        first.elements, second.elements,
        "a retry gets the same answer"
    );
    assert_eq!(app.event_types(&sid).await, ["CallStarted"]);
    assert_eq!(app.event_count().await, 1);
}

#[tokio::test]
async fn duplicate_webhooks_of_every_kind_store_nothing_new() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    app.recording(&sid, 1, "#").await;
    let hold_again = app.recording(&sid, 1, "#").await;
    assert_eq!(hold_again.verbs(), ["Say", "Pause", "Redirect"]);
    let reply = app.continue_call(&sid).await;
    let reply_again = app.continue_call(&sid).await;
    assert_eq!(
        reply.elements, reply_again.elements,
        "a retried continue is answered the same"
    );
    app.answer_question(&sid, None, Some("2")).await;
    app.answer_question(&sid, None, Some("2")).await;
    app.choose(&sid, "1").await;
    app.choose(&sid, "1").await;
    assert_eq!(
        app.event_types(&sid).await,
        [
            "CallStarted",
            "RecordingReceived",
            "ResponsePlayed",
            "DirectQuestionAsked",
            "DirectQuestionAnswered",
            "CallerChose"
        ]
    );
}

#[tokio::test]
async fn duplicate_and_out_of_order_status_callbacks_change_nothing() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    assert_eq!(app.status(&sid, "in-progress", 2).await, 204);
    assert_eq!(app.status(&sid, "in-progress", 2).await, 204);
    assert_eq!(
        app.event_types(&sid).await,
        ["CallStarted", "StatusChanged"]
    );

    // An older status arrives late: kept for the record, the status stays where it was.
    assert_eq!(app.status(&sid, "ringing", 1).await, 204);
    assert_eq!(app.status(&sid, "ringing", 1).await, 204);
    let call = application_state(&app, &sid).await;
    assert_eq!(
        call.status().map(|s| s.as_str().to_owned()).as_deref(),
        Some("in-progress")
    );

    // The end, its duplicate, and a straggler after it.
    assert_eq!(app.status(&sid, "completed", 3).await, 204);
    assert_eq!(app.status(&sid, "completed", 3).await, 204);
    assert_eq!(app.status(&sid, "in-progress", 4).await, 204);
    let call = application_state(&app, &sid).await;
    assert_eq!(
        call.ended().map(|s| s.as_str().to_owned()).as_deref(),
        Some("completed")
    );
    assert_eq!(
        app.event_types(&sid).await,
        [
            "CallStarted",
            "StatusChanged",
            "LateCallbackReceived",
            "Completed",
            "LateCallbackReceived"
        ]
    );
}

async fn application_state(app: &TestApp, sid: &domain::CallSid) -> domain::Call {
    let service = application::CallService::new(
        infrastructure::event_store::call_store(app.pool.clone()),
        test_lines(),
    );
    service
        .call(CallId::for_call_sid(sid))
        .await
        .expect("loads")
}

#[tokio::test]
async fn pressing_zero_at_the_choice_dials_the_counselor_then_the_crisis_line() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    let id = CallId::for_call_sid(&sid);
    app.voice(&sid).await;
    app.recording(&sid, 1, "#").await;
    app.continue_call(&sid).await;
    let connect = app.choose(&sid, "0").await;
    assert_eq!(connect.verbs(), ["Say", "Dial"]);
    assert_eq!(connect.dialled(), [COUNSELOR]);
    let dial_action = format!(
        "{}/twilio/dial-status/{id}/?line=counselor&attempt=1",
        app.base_url
    );
    assert_eq!(
        connect.first("Dial").attr("action"),
        Some(dial_action.as_str())
    );

    // Nobody answers at the counselor line: the crisis line is dialled.
    let params = form(&[("CallSid", sid.as_str()), ("DialCallStatus", "no-answer")]);
    let fallback = app
        .twiml(&format!("/twilio/dial-status/{id}/"), &params)
        .await;
    assert_eq!(fallback.dialled(), [CRISIS]);
    let crisis_action = format!("{}/twilio/dial-status/{id}/?line=crisis", app.base_url);
    assert_eq!(
        fallback.first("Dial").attr("action"),
        Some(crisis_action.as_str())
    );
    // Nobody answers at the crisis line either: its number, and the automated line listens again.
    let params = form(&[("CallSid", sid.as_str()), ("DialCallStatus", "busy")]);
    let last = app
        .twiml(&format!("/twilio/dial-status/{id}/?line=crisis"), &params)
        .await;
    assert!(last.spoken().contains("9 8 8"), "{}", last.xml);
    assert!(
        last.verbs().contains(&"Record") && !last.verbs().contains(&"Hangup"),
        "{}",
        last.xml
    );
    // After a conversation with a counselor, the call ends kindly.
    let params = form(&[("CallSid", sid.as_str()), ("DialCallStatus", "completed")]);
    let farewell = app
        .twiml(&format!("/twilio/dial-status/{id}/"), &params)
        .await;
    assert_eq!(farewell.verbs(), ["Say", "Hangup"]);

    let events = app.events(&sid).await;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "CallStarted",
            "RecordingReceived",
            "ResponsePlayed",
            "DirectQuestionAsked",
            "CallerChose",
            "Escalated",
            "DialEnded",
            "Escalated",
            "DialEnded"
        ]
    );
    assert_eq!(events[5].payload["Escalated"]["reason"], "caller_requested");
    assert_eq!(events[5].payload["Escalated"]["target"], COUNSELOR);
    assert_eq!(events[6].payload["DialEnded"]["result"], "no_answer");
    assert_eq!(
        events[7].payload["Escalated"]["reason"],
        "counselor_unavailable"
    );
    // The crisis line's dial ended busy; the conversation reported after it changes nothing
    // already on record for the counselor's dial.
    assert_eq!(events[8].payload["DialEnded"]["line"], "crisis_line");
    assert_eq!(events[8].payload["DialEnded"]["result"], "busy");
    assert_eq!(events[7].payload["Escalated"]["target"], CRISIS);
}

#[tokio::test]
async fn ending_a_recording_with_zero_asks_for_a_counselor() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    let connect = app.recording(&sid, 1, "0").await;
    assert_eq!(connect.dialled(), [COUNSELOR]);
    assert_eq!(
        app.event_types(&sid).await,
        [
            "CallStarted",
            "RecordingReceived",
            "CallerChose",
            "Escalated"
        ]
    );
}

#[tokio::test]
async fn choosing_to_continue_records_the_next_turn() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    let id = CallId::for_call_sid(&sid);
    app.voice(&sid).await;
    app.recording(&sid, 1, "#").await;
    app.continue_call(&sid).await;
    let listen = app.choose(&sid, "1").await;
    assert_eq!(
        listen.first("Record").attr("action"),
        Some(format!("{}/twilio/recording/{id}/", app.base_url).as_str())
    );
    app.recording(&sid, 2, "#").await;
    app.continue_call(&sid).await;
    let events = app.events(&sid).await;
    let turns: Vec<_> = events
        .iter()
        .filter_map(|e| {
            e.payload
                .get("RecordingReceived")
                .or(e.payload.get("ResponsePlayed"))
        })
        .map(|p| p["turn"].as_u64())
        .collect();
    assert_eq!(turns, [Some(1), Some(1), Some(2), Some(2)]);
}

#[tokio::test]
async fn an_unrecognised_choice_is_offered_again_and_stores_nothing() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    app.recording(&sid, 1, "#").await;
    app.continue_call(&sid).await;
    let again = app.choose(&sid, "7").await;
    assert!(
        again.spoken().contains("didn't catch that"),
        "{}",
        again.spoken()
    );
    assert_eq!(again.verbs()[..2], ["Say", "Gather"]);
    assert_eq!(
        app.event_types(&sid).await,
        [
            "CallStarted",
            "RecordingReceived",
            "ResponsePlayed",
            "DirectQuestionAsked"
        ]
    );
}

#[tokio::test]
async fn continue_before_anything_was_recorded_listens_again() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    let listen = app.continue_call(&sid).await;
    assert!(listen.verbs().contains(&"Record"), "{}", listen.xml);
    assert_eq!(app.event_types(&sid).await, ["CallStarted"]);
}

#[tokio::test]
async fn concurrent_webhooks_on_one_call_are_all_stored_once() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    // Sixteen distinct status callbacks race for the same call's next sequence number.
    let statuses = (1..=16u32).map(|n| {
        let app = &app;
        let sid = sid.clone();
        async move { app.status(&sid, "in-progress", n).await }
    });
    let answers = futures::future::join_all(statuses).await;
    assert!(answers.iter().all(|s| *s == 204), "{answers:?}");
    let events = app.events(&sid).await;
    assert_eq!(
        events.len(),
        17,
        "one CallStarted and one event per distinct callback"
    );
    let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=17).collect::<Vec<i64>>());
}

#[tokio::test]
async fn two_instances_racing_on_one_call_lose_nothing() {
    // Two services on one database: their writes to the same call conflict on the event store's
    // primary key and are retried, so every callback is stored exactly once.
    let first = spawn_app().await;
    let second = TestApp::builder().over(first.pool.clone()).spawn().await;
    let sid = new_call_sid();
    first.voice(&sid).await;
    let statuses = (1..=24u32).map(|n| {
        let app = if n % 2 == 0 { &first } else { &second };
        let sid = sid.clone();
        async move { app.status(&sid, "in-progress", n).await }
    });
    let answers = futures::future::join_all(statuses).await;
    assert!(answers.iter().all(|s| *s == 204), "{answers:?}");
    let events = first.events(&sid).await;
    assert_eq!(events.len(), 25);
    let mut sequences: Vec<u64> = events
        .iter()
        .filter_map(|e| {
            let p = e.payload.get("StatusChanged").or(e
                .payload
                .get("LateCallbackReceived")
                .and_then(|l| l["callback"].get("status")));
            p.and_then(|p| p["sequence_number"].as_u64())
        })
        .collect();
    sequences.sort_unstable();
    assert_eq!(
        sequences,
        (1..=24).collect::<Vec<u64>>(),
        "each callback stored once"
    );
}

#[tokio::test]
async fn a_call_changed_by_another_instance_is_never_answered_from_this_one_s_cached_state() {
    // Each instance keeps the state its last command left a call in and appends the next event
    // without loading the call. Here the first instance's copy is one event behind: the second
    // instance took the recording webhook, and Twilio's retry of it reaches the first.
    let first = spawn_app().await;
    let second = TestApp::builder().over(first.pool.clone()).spawn().await;
    let sid = new_call_sid();
    first.voice(&sid).await;
    let taken = second.recording(&sid, 1, "").await;
    let retried = first.recording(&sid, 1, "").await;
    // (Each instance names its own base URL in the TwiML; the answers are otherwise the same.)
    assert_eq!(
        retried.xml.replace(&first.base_url, ""),
        taken.xml.replace(&second.base_url, ""),
        "the retry is answered from the stored call"
    );
    assert_eq!(
        first.event_types(&sid).await,
        ["CallStarted", "RecordingReceived"],
        "the stale copy would have recorded the turn twice"
    );
    // The first instance goes on from the stored call, not from its old copy.
    assert_eq!(first.status(&sid, "completed", 5).await, 204);
    let events = first.events(&sid).await;
    let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [1, 2, 3]);
    assert_eq!(events[2].event_type, "Completed");
}

#[tokio::test]
async fn a_duplicate_on_a_cached_call_is_answered_from_the_stored_call_even_when_it_stores_nothing()
{
    // The first instance's copy says the turn is already recorded, so the retried webhook would
    // change nothing there; but the call ended meanwhile through the second instance, and the
    // answer must say so (not hold a caller who hung up).
    let first = spawn_app().await;
    let second = TestApp::builder().over(first.pool.clone()).spawn().await;
    let sid = new_call_sid();
    first.voice(&sid).await;
    let held = first.recording(&sid, 1, "").await;
    assert!(held.verbs().contains(&"Redirect"), "{}", held.xml);
    assert_eq!(second.status(&sid, "completed", 5).await, 204);
    let retried = first.recording(&sid, 1, "").await;
    let after_the_end = second.recording(&sid, 1, "").await;
    assert_eq!(
        retried.verbs(),
        after_the_end.verbs(),
        "answered as for the ended call: {}",
        retried.xml
    );
    assert!(!retried.verbs().contains(&"Redirect"), "{}", retried.xml);
    assert_eq!(
        first.event_types(&sid).await,
        ["CallStarted", "RecordingReceived", "Completed"]
    );
}

#[tokio::test]
async fn an_incoming_call_retried_to_an_instance_that_never_saw_it_starts_nothing_new() {
    // A call's first webhook is appended without a load (the call cannot exist yet, usually);
    // when it does exist, the append is refused and the command runs on the stored call.
    let first = spawn_app().await;
    let fresh = TestApp::builder().over(first.pool.clone()).spawn().await;
    let sid = new_call_sid();
    let answer = first.voice(&sid).await;
    first.recording(&sid, 1, "").await;
    let retried = fresh.voice(&sid).await;
    assert_eq!(
        first.event_types(&sid).await,
        ["CallStarted", "RecordingReceived"]
    );
    assert!(
        !retried.verbs().is_empty() && retried.verbs() != ["Hangup"],
        "a retried incoming call is still answered: {}",
        retried.xml
    );
    assert_eq!(
        retried.verbs(),
        answer.verbs(),
        "answered as the call's first webhook was"
    );
}

#[tokio::test]
async fn a_two_turn_call_placed_by_the_simulator_stores_each_turn_and_ends_cleanly() {
    use twilio_sim::scenario::Scenario;
    use twilio_sim::{Simulator, Target};

    let app = spawn_app().await;
    let mut simulator = Simulator::start(
        Target {
            base_url: app.base_url.clone(),
            account_sid: ACCOUNT_SID.into(),
            auth_token: AUTH_TOKEN.into(),
            to: "+15005550006".into(),
        },
        0,
    )
    .await
    .expect("the simulator starts");
    // Without the pipeline, the continue webhook answers at once: no need to wait out pauses.
    simulator.pace = 0.0;
    let scenario = Scenario::parse(
        "name: two turns\nsteps:\n  - say: I lost my job today.\n  - say: no\n  - press: 1\n  - say: I don't know what to do next.\n  - press: 2\n",
    )
    .expect("a scenario");
    let report = simulator.call(&scenario).await;
    assert_eq!(report.outcome, Ok(()), "{:#?}", report.lines);
    let replies = report
        .heard()
        .iter()
        .filter(|l| l.contains("you don't have to face it alone"))
        .count();
    assert_eq!(replies, 2, "{:#?}", report.lines);

    let sid = domain::CallSid::parse(&report.call_sid).expect("a CallSid");
    assert_eq!(
        app.event_types(&sid).await,
        [
            "CallStarted",
            "RecordingReceived",
            "ResponsePlayed",
            "DirectQuestionAsked",
            "DirectQuestionAnswered",
            "CallerChose",
            "RecordingReceived",
            "ResponsePlayed",
            "CallerChose",
            "Completed"
        ]
    );
}

#[tokio::test]
async fn words_at_the_choice_prompt_are_screened_and_a_choice_word_inside_a_sentence_is_not_a_choice(
) {
    let app = spawn_app().await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    app.recording(&sid, 1, "#").await;
    app.continue_call(&sid).await;
    app.answer_question(&sid, Some("no"), None).await;
    // Ordinary words are heard as the start of the next turn.
    let listening = app
        .say_at_choice(&sid, "my boss yelled at me again today")
        .await;
    assert!(listening.verbs().contains(&"Record"), "{}", listening.xml);
    assert!(
        listening.dialled() == [COUNSELOR],
        "silence still leads to a person"
    );
    // "goodbye" inside a sentence of risk is not the choice to end: a person, never a hang-up.
    let person = app
        .say_at_choice(&sid, "i want to end my life, goodbye")
        .await;
    assert!(!person.verbs().contains(&"Hangup"), "{}", person.xml);
    assert_eq!(person.verbs().last(), Some(&"Dial"), "{}", person.xml);
    let events = app.events(&sid).await;
    let screened: Vec<&serde_json::Value> = events
        .iter()
        .filter_map(|e| e.payload.get("UtteranceScreened"))
        .collect();
    assert_eq!(screened.len(), 2);
    assert_eq!(screened[0]["route"], "reply");
    assert_eq!(screened[1]["route"], "escalate");
    assert_eq!(
        events.last().map(|e| e.event_type.as_str()),
        Some("Escalated")
    );
}
