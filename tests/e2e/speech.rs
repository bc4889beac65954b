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
