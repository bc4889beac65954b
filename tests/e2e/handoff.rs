//! The human handoff, end to end: the real `hotline serve` with the simulator playing both the
//! caller and the counselors (who pick up, hear the whisper, and press 1 or not). Every `<Dial>`
//! reports back and is on the call's history, a counselor who does not take the call is followed
//! by the next, the last by the crisis line, and a caller who hangs up while it rings is on
//! record too.

use domain::CallSid;
use serde_json::Value;
use twilio_sim::scenario::Scenario;
use twilio_sim::{CallReport, Line};

use crate::helpers::*;
use crate::simulated::{serve_with_simulated_twilio_and, Served};

/// Two counselors in order, whispers on (the default).
async fn two_counselors(mode: &str) -> Served {
    serve_with_simulated_twilio_and(&[
        ("HOTLINE_CONVERSATION", mode),
        ("COUNSELOR_NUMBERS", COUNSELOR_2),
    ])
    .await
}

fn scenario(yaml: &str) -> Scenario {
    Scenario::parse(yaml).expect("a scenario")
}

const AT_RISK: &str =
    "name: at risk\nsteps:\n  - say: I don't want to be alive anymore and I have pills saved up.\n";

async fn history(served: &Served, call: &CallReport) -> Vec<(String, Value)> {
    served
        .app
        .events(&CallSid::parse(&call.call_sid).expect("a CallSid"))
        .await
        .into_iter()
        .map(|e| {
            let payload = e.payload[&e.event_type].clone();
            (e.event_type, payload)
        })
        .collect()
}

fn of_type<'a>(events: &'a [(String, Value)], event_type: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|(t, _)| t == event_type)
        .map(|(_, p)| p)
        .collect()
}

fn whispered(call: &CallReport) -> Vec<&str> {
    call.lines
        .iter()
        .filter_map(|l| match l {
            Line::Whisper(text) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_caller_at_risk_is_whispered_to_a_counselor_who_takes_the_call() {
    let served = two_counselors("speech").await;
    let call = served.simulator.call(&scenario(AT_RISK)).await;
    assert_eq!(call.outcome, Ok(()), "{:#?}", call.lines);
    assert_eq!(call.dialled(), [COUNSELOR], "{:#?}", call.lines);
    // The counselor heard why, and how to take the call; the caller heard none of it.
    let whisper = whispered(&call).join(" ");
    assert!(whisper.contains("Risk:"), "{whisper}");
    assert!(whisper.contains("signs of risk"), "{whisper}");
    assert!(whisper.contains("Press 1"), "{whisper}");
    assert!(
        !whisper.contains("pills"),
        "no words of the caller's: {whisper}"
    );
    assert!(!whisper.contains("4155550123"), "no number: {whisper}");
    assert!(!call.heard().iter().any(|l| l.contains("Press 1 to take")));

    let events = history(&served, &call).await;
    let answered = of_type(&events, "CounselorAnswered");
    let accepted = of_type(&events, "CounselorAccepted");
    assert_eq!(answered.len(), 1, "{events:?}");
    assert_eq!(accepted.len(), 1, "{events:?}");
    assert_eq!(accepted[0]["attempt"], 1);
    assert_eq!(accepted[0]["number"], COUNSELOR);
    let ended = of_type(&events, "DialEnded");
    assert_eq!(ended.len(), 1, "{events:?}");
    assert_eq!(ended[0]["line"], "counselor");
    assert_eq!(ended[0]["result"], "talked");
    assert_eq!(ended[0]["talk_secs"], 300);
}

#[tokio::test]
async fn a_counselor_who_does_not_take_the_call_is_followed_by_the_next_then_the_crisis_line() {
    let served = two_counselors("speech").await;

    // The first declines; the second takes the call.
    let second = served
        .simulator
        .call(&scenario(&format!(
            "{AT_RISK}dial: [declines, completed]\n"
        )))
        .await;
    assert_eq!(second.outcome, Ok(()), "{:#?}", second.lines);
    assert_eq!(
        second.dialled(),
        [COUNSELOR, COUNSELOR_2],
        "{:#?}",
        second.lines
    );
    assert!(
        second
            .heard()
            .iter()
            .any(|l| l.contains("another counselor") && l.contains("9 8 8")),
        "a holding line that repeats the crisis number: {:#?}",
        second.lines
    );
    let events = history(&served, &second).await;
    let declined = of_type(&events, "CounselorDeclined");
    assert_eq!(declined.len(), 1, "{events:?}");
    assert_eq!(declined[0]["attempt"], 1);
    let accepted = of_type(&events, "CounselorAccepted");
    assert_eq!(accepted.len(), 1, "{events:?}");
    assert_eq!(accepted[0]["attempt"], 2);
    assert_eq!(accepted[0]["number"], COUNSELOR_2);
    let results: Vec<_> = of_type(&events, "DialEnded")
        .iter()
        .map(|d| (d["attempt"].clone(), d["result"].clone()))
        .collect();
    assert_eq!(
        results,
        [(1.into(), "declined".into()), (2.into(), "talked".into())]
    );

    // Both decline: the crisis line, recorded as an escalation.
    let crisis = served
        .simulator
        .call(&scenario(&format!(
            "{AT_RISK}dial: [declines, declines, completed]\n"
        )))
        .await;
    assert_eq!(crisis.outcome, Ok(()), "{:#?}", crisis.lines);
    assert_eq!(
        crisis.dialled(),
        [COUNSELOR, COUNSELOR_2, CRISIS],
        "{:#?}",
        crisis.lines
    );
    let events = history(&served, &crisis).await;
    assert!(
        of_type(&events, "Escalated")
            .iter()
            .any(|e| e["reason"] == "counselor_unavailable" && e["target"] == CRISIS),
        "{events:?}"
    );
    let last = of_type(&events, "DialEnded");
    let last = last.last().expect("the crisis line's dial ended");
    assert_eq!(last["line"], "crisis_line");
    assert_eq!(last["result"], "talked");
    assert!(of_type(&events, "CounselorAccepted").is_empty());
}

#[tokio::test]
async fn a_caller_who_hangs_up_while_it_rings_is_on_record() {
    let served = two_counselors("speech").await;
    let call = served
        .simulator
        .call(&scenario(&format!("{AT_RISK}dial: [caller-hangs-up]\n")))
        .await;
    assert_eq!(call.outcome, Ok(()), "{:#?}", call.lines);
    let events = history(&served, &call).await;
    let ended = of_type(&events, "DialEnded");
    assert_eq!(ended.len(), 1, "{events:?}");
    assert_eq!(ended[0]["result"], "caller_hung_up");
    assert!(of_type(&events, "CounselorAnswered").is_empty());
}

#[tokio::test]
async fn the_silent_callers_fallback_dial_is_recorded_with_its_escalation() {
    // Record mode: a caller who never speaks falls through the greeting's own verbs to a
    // `<Dial>` that no webhook asked for; its report is the first the service hears of it.
    let served = two_counselors("record").await;
    let call = served
        .simulator
        .call(&scenario(
            "name: silent\nafterwards: stay_silent\nsteps:\n  - silence\n  - silence\n",
        ))
        .await;
    assert_eq!(call.outcome, Ok(()), "{:#?}", call.lines);
    assert_eq!(call.dialled(), [COUNSELOR], "{:#?}", call.lines);
    let events = history(&served, &call).await;
    let escalated = of_type(&events, "Escalated");
    assert_eq!(escalated.len(), 1, "{events:?}");
    assert_eq!(escalated[0]["reason"], "silence");
    assert_eq!(of_type(&events, "CounselorAccepted").len(), 1, "{events:?}");
    let ended = of_type(&events, "DialEnded");
    assert_eq!(ended.len(), 1, "{events:?}");
    assert_eq!(ended[0]["result"], "talked");
}
