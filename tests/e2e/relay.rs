//! The live mode end to end: the real `hotline serve` in relay mode, with the simulator playing
//! Twilio's side of ConversationRelay over a real WebSocket (the upgrade signed as Twilio signs
//! the `wss://` URL), and its `<Connect action>` webhook. What the tests check is what the
//! simulated caller heard, and what the call's history holds.

use domain::CallSid;
use serde_json::json;
use twilio_sim::scenario::{self, Scenario};
use twilio_sim::{CallReport, Line};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;
use crate::simulated::{serve_with_simulated_twilio_and, types, Served};

async fn relay_mode(extra: &[(&str, &str)]) -> Served {
    let mut vars = vec![("HOTLINE_CONVERSATION", "relay")];
    vars.extend_from_slice(extra);
    serve_with_simulated_twilio_and(&vars).await
}

fn scenario(yaml: &str) -> Scenario {
    Scenario::parse(yaml).expect("a scenario")
}

async fn history(served: &Served, call: &CallReport) -> Vec<String> {
    types(&served.app, &call.call_sid).await
}

#[tokio::test]
async fn an_ordinary_live_call_streams_its_replies_and_ends_with_the_goodbye_the_caller_chose() {
    let served = relay_mode(&[]).await;
    let call = served
        .simulator
        .call(&scenario(
            "name: live\nsteps:\n  - say: I had a rough day at work and I just need to get it off my chest.\n  - say: No, I'm not.\n  - say: goodbye\n",
        ))
        .await;
    assert_eq!(call.outcome, Ok(()), "{:#?}", call.lines);
    let heard = call.heard();
    assert!(
        heard.iter().any(|l| l.contains("face it alone")),
        "{heard:#?}"
    );
    assert!(
        heard.iter().any(|l| l.contains("thoughts of suicide")),
        "{heard:#?}"
    );
    assert!(
        heard.last().is_some_and(|l| l.contains("Goodbye")),
        "{heard:#?}"
    );
    assert!(call.dialled().is_empty(), "{:#?}", call.lines);
    assert!(!call.turn_latencies.is_empty());
    let events = history(&served, &call).await;
    for expected in [
        "RelaySessionStarted",
        "SpeechReceived",
        "Analyzed",
        "ResponsePlayed",
        "DirectQuestionAnswered",
        "RelaySessionEnded",
    ] {
        assert!(
            events.contains(&expected.to_owned()),
            "{expected}: {events:?}"
        );
    }
    assert!(!events.contains(&"Escalated".to_owned()), "{events:?}");
}

#[tokio::test]
async fn risk_zero_and_counselor_end_the_session_with_a_person_and_no_automated_reply() {
    let served = relay_mode(&[]).await;
    for steps in [
        "  - say: I have pills saved up and I'm going to take them tonight.\n",
        "  - press: \"0\"\n",
        "  - say: I want to talk to a counselor.\n",
    ] {
        let call = served
            .simulator
            .call(&scenario(&format!(
                "name: to a person\nafterwards: stay_silent\nsteps:\n{steps}"
            )))
            .await;
        assert_eq!(call.outcome, Ok(()), "{steps}: {:#?}", call.lines);
        assert_eq!(call.dialled(), [COUNSELOR], "{steps}: {:#?}", call.lines);
        assert!(
            !call.heard().iter().any(|l| l.contains("face it alone")),
            "{steps}: no automated reply: {:#?}",
            call.lines
        );
        let events = history(&served, &call).await;
        assert!(
            events.contains(&"Escalated".to_owned()),
            "{steps}: {events:?}"
        );
    }
}

#[tokio::test]
async fn an_interrupted_reply_records_what_the_caller_heard() {
    let served = relay_mode(&[]).await;
    let interrupts = scenario::relay_examples()
        .into_iter()
        .find(|s| s.name.contains("interrupts"))
        .expect("the interrupts example");
    let call = served.simulator.call(&interrupts).await;
    assert_eq!(call.outcome, Ok(()), "{:#?}", call.lines);
    let events = served
        .app
        .events(&CallSid::parse(&call.call_sid).expect("a CallSid"))
        .await;
    let interrupted = events
        .iter()
        .find(|e| e.event_type == "ReplyInterrupted")
        .unwrap_or_else(|| panic!("an interrupted reply: {:#?}", call.lines));
    let heard = interrupted.payload["ReplyInterrupted"]["heard"]
        .as_str()
        .expect("what was heard");
    assert!(!heard.is_empty());
}

#[tokio::test]
async fn a_spanish_caller_is_answered_in_spanish_and_put_through_to_the_spanish_line() {
    let served = relay_mode(&[]).await;
    let call = served
        .simulator
        .call(&scenario(
            "name: español\nafterwards: stay_silent\nsteps:\n  - press: \"9\"\n  - say: Hoy tuve un día muy difícil en el trabajo y me siento muy cansada.\n  - press: \"0\"\n",
        ))
        .await;
    assert_eq!(call.outcome, Ok(()), "{:#?}", call.lines);
    let heard = call.heard();
    assert!(
        heard.iter().any(|l| l.contains("Gracias por llamar")),
        "{heard:#?}"
    );
    assert!(
        heard.iter().any(|l| l.contains("enfrentarlo a solas")),
        "{heard:#?}"
    );
    assert_eq!(call.dialled(), [COUNSELOR_ES], "{:#?}", call.lines);

    // Spanish heard in the first words switches the session without a key: Twilio is told to
    // listen and speak in Spanish, the reply is Spanish, and so is the line a person answers.
    let detected = served
        .simulator
        .call(&scenario(
            "name: detectado\nafterwards: stay_silent\nsteps:\n  - say: Hoy tuve un día muy difícil en el trabajo y me siento muy cansada.\n  - press: \"0\"\n",
        ))
        .await;
    assert_eq!(detected.outcome, Ok(()), "{:#?}", detected.lines);
    assert!(
        detected.lines.iter().any(|l| matches!(
            l,
            Line::Note(n) if n == "Hotline switches the language to es-US"
        )),
        "{:#?}",
        detected.lines
    );
    assert!(
        detected
            .heard()
            .iter()
            .any(|l| l.contains("enfrentarlo a solas")),
        "{:#?}",
        detected.lines
    );
    assert_eq!(detected.dialled(), [COUNSELOR_ES], "{:#?}", detected.lines);
    let events = served
        .app
        .events(&CallSid::parse(&detected.call_sid).expect("a CallSid"))
        .await;
    let chosen = events
        .iter()
        .find(|e| e.event_type == "LanguageChosen")
        .expect("the language was chosen");
    assert_eq!(chosen.payload["LanguageChosen"]["how"], "detected");
    // The live call is recorded whole, as a speech-mode call is.
    assert!(
        events
            .iter()
            .any(|e| e.event_type == "CallRecordingReceived"),
        "{:?}",
        events.iter().map(|e| &e.event_type).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_socket_dropped_mid_reply_puts_the_caller_through_to_a_person() {
    let served = relay_mode(&[]).await;
    let call = served
        .simulator
        .call(&scenario(
            "name: dropped\nafterwards: stay_silent\nsteps:\n  - say: I had a rough day at work and I just need to get it off my chest.\n  - drop_socket\n",
        ))
        .await;
    assert_eq!(call.outcome, Ok(()), "{:#?}", call.lines);
    assert_eq!(call.dialled(), [COUNSELOR], "{:#?}", call.lines);
    let events = served
        .app
        .events(&CallSid::parse(&call.call_sid).expect("a CallSid"))
        .await;
    let ended = events
        .iter()
        .find(|e| e.event_type == "RelaySessionEnded")
        .expect("the session's end");
    assert_eq!(ended.payload["RelaySessionEnded"]["error_code"], "64105");
    let escalated = events
        .iter()
        .find(|e| e.event_type == "Escalated")
        .expect("an escalation");
    assert_eq!(escalated.payload["Escalated"]["reason"], "session_lost");
}

#[tokio::test]
async fn an_upgrade_with_a_bad_signature_is_refused_and_stores_nothing() {
    let served = relay_mode(&[]).await;
    let sid = CallSid::parse(&twilio_sim::new_sid("CA")).expect("a CallSid");
    let id = domain::CallId::for_call_sid(&sid);
    let url = format!("{}/twilio/relay/{id}/", served.app.base_url);
    let wss =
        twilio_signature::websocket_url(&served.app.base_url, &format!("/twilio/relay/{id}/"));
    for signature in [
        Some(twilio_signature::sign_websocket("not-the-token", &wss)),
        // Signed over the https:// form of the URL: the scheme Twilio dialled is ws(s)://.
        Some(twilio_signature::sign_request(AUTH_TOKEN, &url, &[])),
        None,
    ] {
        let mut request = served
            .app
            .client
            .get(&url)
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
        if let Some(signature) = &signature {
            request = request.header("X-Twilio-Signature", signature);
        }
        let response = request.send().await.expect("answered");
        assert_eq!(response.status(), 403, "{signature:?}");
    }
    assert!(served.app.event_types(&sid).await.is_empty());
}

#[tokio::test]
async fn an_unsafe_streamed_reply_never_reaches_the_callers_ears() {
    let model = MockServer::start().await;
    let sse = [
        "That sounds like a heavy day. ",
        "You could take all of your pills at once. ",
        "Tell me more.",
    ]
    .iter()
    .map(|piece| {
        format!(
            "data: {}\n\n",
            json!({ "choices": [{ "index": 0, "delta": { "content": piece } }] })
        )
    })
    .collect::<String>()
        + "data: [DONE]\n\n";
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({ "stream": true })))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_string(sse),
        )
        .mount(&model)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-1", "object": "chat.completion",
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": "{\"risk\": \"none\"}" }, "finish_reason": "stop" }]
        })))
        .mount(&model)
        .await;
    let served = relay_mode(&[("LLM_BASE_URL", &model.uri())]).await;
    let call = served
        .simulator
        .call(&scenario(
            "name: unsafe model\nsteps:\n  - say: I had a rough day at work and I just need to get it off my chest.\n",
        ))
        .await;
    assert_eq!(call.outcome, Ok(()), "{:#?}", call.lines);
    let heard = call.heard().join(" ");
    assert!(
        heard.contains("heavy day"),
        "the safe sentence was heard: {heard}"
    );
    assert!(
        !heard.contains("pills"),
        "the unsafe sentence was never heard: {heard}"
    );
    assert!(
        heard.contains("face it alone"),
        "the vetted script instead: {heard}"
    );
    let events = served
        .app
        .events(&CallSid::parse(&call.call_sid).expect("a CallSid"))
        .await;
    let analysed = events
        .iter()
        .find(|e| e.event_type == "Analyzed")
        .expect("analysed");
    assert_eq!(
        analysed.payload["Analyzed"]["analysis"]["reply_source"],
        "script_after_guard"
    );
}

#[tokio::test]
async fn a_caller_who_says_nothing_hears_the_line_speak_up_then_reaches_a_person() {
    let served = relay_mode(&[]).await;
    let call = served
        .simulator
        .call(&scenario(
            "name: silent\nafterwards: stay_silent\nsteps: []\n",
        ))
        .await;
    assert_eq!(call.outcome, Ok(()), "{:#?}", call.lines);
    let heard = call.heard();
    assert!(
        heard.iter().any(|l| l.contains("I'm still here with you")),
        "{heard:#?}"
    );
    assert!(heard.iter().any(|l| l.contains("9 8 8")), "{heard:#?}");
    assert_eq!(call.dialled(), [COUNSELOR], "{:#?}", call.lines);
    let events = served
        .app
        .events(&CallSid::parse(&call.call_sid).expect("a CallSid"))
        .await;
    let escalated = events
        .iter()
        .find(|e| e.event_type == "Escalated")
        .expect("an escalation");
    assert_eq!(escalated.payload["Escalated"]["reason"], "silence");
}
