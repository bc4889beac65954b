//! Caller safety, end to end: the real `hotline serve` (default configuration: Twilio's
//! transcription, no model) with the simulator as its Twilio. Every kind of at-risk caller
//! reaches a person with no automated reply first; an ordinary caller is asked the direct
//! question once; a late analysis still reaches the caller; words at the choice prompt are
//! screened; and a caller with a person is never touched by automation again.

use domain::{script, CallSid};
use futures::future::join_all;
use twilio_sim::scenario::Scenario;
use twilio_sim::{CallReport, Line};

use crate::helpers::*;
use crate::simulated::{serve_with_simulated_twilio, types};

/// Whether the caller heard an automated reply (the vetted script, the direct question or the
/// choice) before their first `<Dial>`.
fn automated_before_dial(report: &CallReport) -> Option<String> {
    let automated = [
        script::scripted_reply(domain::Language::English),
        script::direct_question(domain::Language::English),
        script::choice_prompt(domain::Language::English),
    ];
    for line in &report.lines {
        match line {
            Line::Dial { .. } => return None,
            Line::Hotline(text) if automated.iter().any(|a| text.contains(a)) => {
                return Some(text.clone())
            }
            _ => {}
        }
    }
    None
}

/// The call went well and its first `<Dial>` was the counselor's.
fn assert_put_through(name: &str, report: &CallReport) {
    assert_eq!(report.outcome, Ok(()), "{name}: {:#?}", report.lines);
    assert_eq!(
        report.dialled().first(),
        Some(&COUNSELOR),
        "{name}: {:#?}",
        report.lines
    );
}

fn scenario(name: &str, yaml_steps: &str, extra: &str) -> Scenario {
    Scenario::parse(&format!(
        "name: {name}\nsteps:\n{yaml_steps}\nafterwards: stay_silent\n{extra}"
    ))
    .expect("a scenario")
}

fn say(text: &str) -> String {
    format!("  - say: {}\n", serde_json::Value::String(text.to_owned()))
}

/// One caller per kind of risk the screener once missed: each reaches the counselor with no
/// automated reply first, and the call's history records why.
#[tokio::test]
async fn every_kind_of_caller_at_risk_reaches_a_person_with_no_automated_reply_first() {
    let served = serve_with_simulated_twilio().await;
    let (app, simulator) = (&served.app, &served.simulator);
    let callers = [
        (
            "active thoughts, once sent to the bot",
            "I've been thinking about killing myself lately.",
        ),
        (
            "passive ideation",
            "honestly i would rather just not wake up tomorrow",
        ),
        (
            "preparation",
            "I gave my guitar away and wrote letters to my kids.",
        ),
        ("self-injury", "i have been cutting my arms again"),
        (
            "a question about lethality",
            "how many sleeping pills would it take",
        ),
        (
            "an overdose by count",
            "i took thirty advil about an hour ago",
        ),
        ("means said plainly", "I have my dad's gun in my lap."),
        ("a lethal situation", "im standing on the bridge right now"),
        ("slang", "lowkey wanna kms"),
        ("Spanish", "ya no quiero vivir, estoy cansada de todo"),
        (
            "a language the screener does not read",
            "Je veux mourir, je n'en peux plus.",
        ),
        (
            "someone else in danger now",
            "my friend just took a whole bottle of pills",
        ),
        (
            "harm to others",
            "i think im going to hurt my roommate tonight",
        ),
        (
            "danger from someone else",
            "my husband is hitting me right now",
        ),
        (
            "command hallucinations",
            "the voices are telling me to hurt myself",
        ),
        (
            "unpunctuated speech-to-text",
            "im not ok i dont want to be here anymore",
        ),
        ("too little to read", "uh"),
    ];
    let reports = join_all(callers.iter().map(|(name, words)| async move {
        (
            *name,
            simulator.call(&scenario(name, &say(words), "")).await,
        )
    }))
    .await;
    for (name, report) in &reports {
        assert_put_through(name, report);
        assert_eq!(
            automated_before_dial(report),
            None,
            "{name} heard an automated reply first: {:#?}",
            report.lines
        );
        let events = types(app, &report.call_sid).await;
        assert!(
            events.contains(&"Escalated".to_owned()),
            "{name}: {events:?}"
        );
        assert!(
            !events.contains(&"DirectQuestionAsked".to_owned()),
            "{name}: {events:?}"
        );
    }
}

/// An ordinary first turn is answered, then the direct question is asked, once: a clear no keeps
/// the automated line; yes, maybe and silence reach a person.
#[tokio::test]
async fn the_direct_question_is_asked_once_and_anything_but_a_clear_no_reaches_a_person() {
    let served = serve_with_simulated_twilio().await;
    let (app, simulator) = (&served.app, &served.simulator);
    let ordinary = say("My girlfriend left me last week and the apartment feels empty.");

    let no = simulator
        .call(&scenario(
            "answers no",
            &format!("{ordinary}{}  - press: \"2\"\n", say("No, I'm not.")),
            "",
        ))
        .await;
    assert_eq!(no.outcome, Ok(()), "{:#?}", no.lines);
    assert!(no.dialled().is_empty(), "{:#?}", no.lines);
    let questions = no
        .heard()
        .iter()
        .filter(|l| l.contains(script::direct_question(domain::Language::English)))
        .count();
    assert_eq!(questions, 1, "{:#?}", no.lines);
    assert!(
        no.heard().last().is_some_and(|l| l.contains("Goodbye")),
        "{:#?}",
        no.lines
    );
    let events = types(app, &no.call_sid).await;
    assert!(
        events.contains(&"DirectQuestionAnswered".to_owned()),
        "{events:?}"
    );
    assert!(!events.contains(&"Escalated".to_owned()), "{events:?}");

    let answers = [
        ("answers yes", say("yes")),
        ("answers maybe", say("maybe, sometimes")),
        ("presses 1", "  - press: \"1\"\n".to_owned()),
        ("stays silent", "  - silence\n".to_owned()),
    ];
    let reports = join_all(answers.iter().map(|(name, answer)| {
        let steps = format!("{ordinary}{answer}");
        async move { (*name, simulator.call(&scenario(name, &steps, "")).await) }
    }))
    .await;
    for (name, report) in &reports {
        assert_put_through(name, report);
        let sid = CallSid::parse(&report.call_sid).expect("a CallSid");
        let events = app.events(&sid).await;
        let escalated = events
            .iter()
            .find_map(|e| e.payload.get("Escalated"))
            .unwrap_or_else(|| panic!("{name}: no escalation"));
        assert_eq!(escalated["reason"], "direct_question", "{name}");
    }
}

/// With Twilio's transcription arriving after the fallback was played, the late analysis still
/// reaches the caller: a REST update with the counselor's `<Dial>`, and `Escalated` recorded.
#[tokio::test]
async fn a_late_analysis_that_warrants_a_person_reaches_the_caller_by_rest_update() {
    let served = serve_with_simulated_twilio().await;
    let (app, simulator) = (&served.app, &served.simulator);
    let report = simulator
        .call(&scenario(
            "late words",
            &format!(
                "{}  - wait: 30\n",
                say("I swallowed all of my mom's pills before I called.")
            ),
            "transcription: late\n",
        ))
        .await;
    assert_eq!(report.outcome, Ok(()), "{:#?}", report.lines);
    // The fallback was played first: the words were not there yet.
    assert!(
        report
            .heard()
            .iter()
            .any(|l| l.contains(script::scripted_reply(domain::Language::English))),
        "{:#?}",
        report.lines
    );
    let updated = report
        .lines
        .iter()
        .position(|l| matches!(l, Line::Note(n) if n.contains("updated the live call")))
        .unwrap_or_else(|| panic!("no REST update: {:#?}", report.lines));
    let dialled = report
        .lines
        .iter()
        .position(|l| matches!(l, Line::Dial { .. }))
        .unwrap_or_else(|| panic!("no dial: {:#?}", report.lines));
    assert!(updated < dialled, "{:#?}", report.lines);
    assert_eq!(report.dialled().first(), Some(&COUNSELOR));
    let events = types(app, &report.call_sid).await;
    let analyzed = events
        .iter()
        .position(|e| e == "Analyzed")
        .expect("analysed");
    let escalated = events
        .iter()
        .rposition(|e| e == "Escalated")
        .expect("escalated");
    assert!(analyzed < escalated, "{events:?}");
    let automated_replies = events.iter().filter(|e| *e == "ResponsePlayed").count();
    assert_eq!(
        automated_replies, 1,
        "never a second automated reply: {events:?}"
    );
}

/// Words at the "press 1, 2 or 0" prompt are screened like any turn: risky words reach a
/// person and never hang up, ordinary words carry on the conversation.
#[tokio::test]
async fn risk_words_at_the_choice_prompt_reach_a_person_and_never_hang_up() {
    let served = serve_with_simulated_twilio().await;
    let (app, simulator) = (&served.app, &served.simulator);
    let before = format!(
        "{}{}",
        say("Work has been a lot lately and I wanted to vent."),
        say("no")
    );
    let risky = [
        "I'm going to kill myself tonight, goodbye",
        "I want to end my life",
        "No. Nobody would miss me",
    ];
    let reports = join_all(risky.iter().map(|words| {
        let steps = format!("{before}{}", say(words));
        async move {
            (
                *words,
                simulator.call(&scenario("at the choice", &steps, "")).await,
            )
        }
    }))
    .await;
    for (words, report) in &reports {
        assert_put_through(words, report);
        assert!(
            !report
                .lines
                .iter()
                .any(|l| matches!(l, Line::Note(n) if n.contains("hung up"))),
            "{words}: {:#?}",
            report.lines
        );
        let events = types(app, &report.call_sid).await;
        assert!(
            events.contains(&"UtteranceScreened".to_owned()),
            "{words}: {events:?}"
        );
    }
}
