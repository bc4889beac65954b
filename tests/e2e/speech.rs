//! Speech mode, the default, end to end: the real `hotline serve` with the simulator as its
//! Twilio, answering `<Gather input="speech">` with the caller's words. Each turn's answer comes
//! back in the action's own response; a model slower than the budget leaves it to the pipeline,
//! whose REST update reaches the caller; Spanish callers are answered in Spanish and put through
//! to the Spanish line.

use std::time::Duration;

use domain::CallSid;
use serde_json::json;
use twilio_sim::scenario::Scenario;
use twilio_sim::{CallReport, Line};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;
use crate::simulated::{serve_with_simulated_twilio_and, types};

fn scenario(yaml: &str) -> Scenario {
    Scenario::parse(yaml).expect("a scenario")
}

fn updated_by_rest(report: &CallReport) -> bool {
    report
        .lines
        .iter()
        .any(|l| matches!(l, Line::Note(n) if n.contains("updated the live call")))
}

async fn stored(app: &TestApp, report: &CallReport) -> Vec<StoredEvent> {
    app.events(&CallSid::parse(&report.call_sid).expect("a CallSid"))
        .await
}

#[tokio::test]
async fn an_ordinary_call_is_answered_in_each_turns_own_response() {
    let served = serve_with_simulated_twilio_and(&[]).await;
    let call = served
        .simulator
        .call(&scenario(
            "name: ordinary\nsteps:\n  - say: I had a rough day at work and I just need to get it off my chest.\n  - say: No, I'm not.\n  - say: Work has been really stressful lately.\n  - say: goodbye\n",
        ))
        .await;
    assert_eq!(call.outcome, Ok(()), "{:#?}", call.lines);
    let heard = call.heard();
    assert!(
        heard
            .iter()
            .any(|l| l.contains("you don't have to face it alone")),
        "{heard:#?}"
    );
    assert!(heard.iter().any(|l| l.contains("thoughts of suicide")));
    assert!(
        heard.last().is_some_and(|l| l.contains("Goodbye")),
        "{heard:#?}"
    );
    assert!(!updated_by_rest(&call), "no REST update was needed");
    assert!(call.dialled().is_empty());
    // One latency per answered turn, each the action's own response.
    assert!(call.turn_latencies.len() >= 3, "{:?}", call.turn_latencies);
    let events = types(&served.app, &call.call_sid).await;
    for expected in [
        "SpeechReceived",
        "Analyzed",
        "ResponsePlayed",
        "DirectQuestionAnswered",
    ] {
        assert!(
            events.contains(&expected.to_owned()),
            "{expected}: {events:?}"
        );
    }
    let played = stored(&served.app, &call)
        .await
        .into_iter()
        .filter(|e| e.event_type == "ResponsePlayed")
        .map(|e| e.payload["ResponsePlayed"]["via"].clone())
        .collect::<Vec<_>>();
    assert!(played.iter().all(|via| via == "twiml"), "{played:?}");
}

#[tokio::test]
async fn risky_words_zero_counselor_or_silence_reach_a_person_with_no_automated_reply() {
    let served = serve_with_simulated_twilio_and(&[]).await;
    for steps in [
        "  - say: I have pills saved up and I'm going to take them tonight.\n",
        "  - press: \"0\"\n",
        "  - say: I had a rough day.\n  - say: can I talk to a counselor\n",
        "  - silence\n",
    ] {
        let call = served
            .simulator
            .call(&scenario(&format!(
                "name: to a person\nafterwards: stay_silent\nsteps:\n{steps}"
            )))
            .await;
        assert_eq!(call.outcome, Ok(()), "{steps}: {:#?}", call.lines);
        assert_eq!(call.dialled(), [COUNSELOR], "{steps}: {:#?}", call.lines);
        if steps.contains("pills") {
            assert!(
                !call.heard().iter().any(|l| l.contains("face it alone")),
                "no automated reply to risk: {:#?}",
                call.lines
            );
        }
        let events = types(&served.app, &call.call_sid).await;
        assert!(
            events.contains(&"Escalated".to_owned()),
            "{steps}: {events:?}"
        );
    }
}

#[tokio::test]
async fn a_spanish_caller_is_answered_in_spanish_and_put_through_to_the_spanish_line() {
    let served = serve_with_simulated_twilio_and(&[]).await;
    // Key 9 at the greeting.
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
        heard
            .iter()
            .any(|l| l.contains("no tiene que enfrentarlo a solas")),
        "the reply in Spanish: {heard:#?}"
    );
    assert_eq!(call.dialled(), [COUNSELOR_ES], "{:#?}", call.lines);

    // Spanish heard in the first words, without the key.
    let call = served
        .simulator
        .call(&scenario(
            "name: detectado\nafterwards: stay_silent\nsteps:\n  - say: Hoy tuve un día muy difícil en el trabajo y me siento muy cansada.\n  - say: Quiero hablar con un consejero.\n",
        ))
        .await;
    assert_eq!(call.outcome, Ok(()), "{:#?}", call.lines);
    assert!(
        call.heard()
            .iter()
            .any(|l| l.contains("enfrentarlo a solas")),
        "{:#?}",
        call.lines
    );
    assert_eq!(call.dialled(), [COUNSELOR_ES], "{:#?}", call.lines);
    let events = stored(&served.app, &call).await;
    let chosen = events
        .iter()
        .find(|e| e.event_type == "LanguageChosen")
        .expect("the language was chosen");
    assert_eq!(chosen.payload["LanguageChosen"]["how"], "detected");
}

#[tokio::test]
async fn a_model_slower_than_the_budget_leaves_the_answer_to_a_rest_update() {
    let model = MockServer::start().await;
    let content = json!({ "risk": "none", "reply": "That sounds like a heavy day. I'm here; tell me more about it." });
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_millis(700))
                .set_body_json(json!({
                    "id": "chatcmpl-1", "object": "chat.completion",
                    "choices": [{ "index": 0, "message": { "role": "assistant", "content": content.to_string() }, "finish_reason": "stop" }]
                })),
        )
        .mount(&model)
        .await;
    let served = serve_with_simulated_twilio_and(&[
        ("LLM_BASE_URL", &model.uri()),
        ("HOTLINE_SPEECH_BUDGET_MS", "150"),
    ])
    .await;
    let call = served
        .simulator
        .call(&scenario(
            "name: slow model\nsteps:\n  - say: I had a rough day at work and I just need to get it off my chest.\n  - wait: 10\n",
        ))
        .await;
    assert_eq!(call.outcome, Ok(()), "{:#?}", call.lines);
    assert!(
        call.heard()
            .iter()
            .any(|l| l.contains("I'm listening to what you said")),
        "held while the pipeline answers: {:#?}",
        call.lines
    );
    assert!(updated_by_rest(&call), "{:#?}", call.lines);
    assert!(
        call.heard().iter().any(|l| l.contains("heavy day")),
        "the model's reply reached the caller: {:#?}",
        call.lines
    );
    let events = types(&served.app, &call.call_sid).await;
    assert!(events.contains(&"AnswerDeferred".to_owned()), "{events:?}");
}

/// Polls the call's history until `event_type` is in it (the worker runs on its own time),
/// for at most 20 s.
async fn until_recorded(app: &TestApp, report: &CallReport, event_type: &str) -> Vec<StoredEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let events = stored(app, report).await;
        if events.iter().any(|e| e.event_type == event_type) {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {event_type} after 20 s: {:?}",
            events.iter().map(|e| &e.event_type).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_speech_mode_call_is_recorded_whole_and_kept_in_the_audio_store() {
    let served = serve_with_simulated_twilio_and(&[]).await;
    let call = served
        .simulator
        .call(&scenario(
            "name: recorded\nsteps:\n  - say: I had a rough day at work.\n  - say: No.\n  - say: goodbye\n",
        ))
        .await;
    assert_eq!(call.outcome, Ok(()), "{:#?}", call.lines);
    let (reported_call, recording_sid) = served
        .simulator
        .call_recordings()
        .pop()
        .expect("Twilio was asked to record the call and reported its recording");
    assert_eq!(reported_call, call.call_sid);

    let events = until_recorded(&served.app, &call, "CallRecordingKept").await;
    let received = events
        .iter()
        .find(|e| e.event_type == "CallRecordingReceived")
        .expect("the recording's callback is on the call's history");
    let received = &received.payload["CallRecordingReceived"];
    assert_eq!(received["recording_sid"], recording_sid.as_str());
    assert_eq!(received["status"], "completed");
    let kept = events
        .iter()
        .find(|e| e.event_type == "CallRecordingKept")
        .expect("kept");
    let key = kept.payload["CallRecordingKept"]["key"]
        .as_str()
        .expect("a key");
    let id = domain::CallId::for_call_sid(&CallSid::parse(&call.call_sid).expect("a CallSid"));
    assert_eq!(key, format!("recordings/{id}/call-{recording_sid}.wav"));

    // The audio store holds what Twilio served for that recording, byte for byte.
    let kept_audio = std::fs::read(served.data_dir.path().join("recordings").join(key))
        .expect("the recording is in the audio store");
    let url = received["recording_url"].as_str().expect("a URL");
    let served_audio = reqwest::Client::new()
        .get(format!("{url}.wav"))
        .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
        .send()
        .await
        .expect("the simulator answers")
        .bytes()
        .await
        .expect("a body");
    assert!(kept_audio.starts_with(b"RIFF"), "a WAV file");
    assert_eq!(kept_audio, served_audio.to_vec());

    // A recording callback that names another call is refused, and nothing is stored.
    let before = served.app.event_count().await;
    let other = new_call_sid();
    let refused = served
        .app
        .post_signed(
            &format!("/twilio/call-recording/{id}/"),
            &form(&[
                ("CallSid", other.as_str()),
                ("AccountSid", ACCOUNT_SID),
                ("RecordingSid", "RE00000000000000000000000000000001"),
                ("RecordingUrl", url),
                ("RecordingStatus", "completed"),
            ]),
        )
        .await;
    assert!(refused.status().is_client_error(), "{}", refused.status());
    assert_eq!(served.app.event_count().await, before);
}
