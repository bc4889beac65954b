//! Given/when/then tests: one per command path and per invariant of the call.

use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;

use super::*;
use crate::call::{Analysis, RecordAnalysis, RecordFailure, ReplySource, Stage, StageTimings};
use crate::choice::Choice;
use crate::fixtures;
use crate::ids::{AccountSid, CallSid, RecordingSid};
use crate::phone::DialNumber;
use crate::status::CallStatus;

type CallTest = TestFramework<Call>;

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0)
        .single()
        .expect("valid time")
}
fn call_sid() -> CallSid {
    CallSid::parse("CA0123456789abcdef0123456789abcdef").expect("valid")
}
fn other_call_sid() -> CallSid {
    CallSid::parse("CAffffffffffffffffffffffffffffffff").expect("valid")
}
fn account_sid() -> AccountSid {
    fixtures::account_sid()
}
fn recording_sid(n: u8) -> RecordingSid {
    RecordingSid::parse(&format!("RE0123456789abcdef0123456789abcd{n:02x}")).expect("valid")
}
fn recording_url(n: u8) -> RecordingUrl {
    RecordingUrl::parse(&format!(
        "https://api.twilio.com/2010-04-01/Accounts/{}/Recordings/{}",
        account_sid(),
        recording_sid(n)
    ))
    .expect("valid")
}
fn counselor() -> DialNumber {
    DialNumber::parse("+15005550001").expect("valid")
}
fn crisis() -> DialNumber {
    DialNumber::parse("988").expect("valid")
}

fn start() -> CallCommand {
    fixtures::start_call(&call_sid(), at(0))
}
fn started() -> CallEvent {
    fixtures::call_started(&call_sid(), at(0))
}
fn recording(n: u8, digits: Option<&str>) -> CallCommand {
    CallCommand::ReceiveRecording(ReceiveRecording {
        call_sid: call_sid(),
        recording_sid: recording_sid(n),
        recording_url: recording_url(n),
        duration_secs: Some(7),
        digits: digits.map(str::to_owned),
        counselor_line: counselor(),
        at: at(10),
    })
}
fn recorded(turn: u32, n: u8, digits: Option<&str>) -> CallEvent {
    CallEvent::RecordingReceived {
        turn,
        recording_sid: recording_sid(n),
        recording_url: recording_url(n),
        duration_secs: Some(7),
        digits: digits.map(str::to_owned),
        received_at: at(10),
    }
}
fn play(via: PlayedVia) -> CallCommand {
    CallCommand::PlayResponse(PlayResponse {
        turn: None,
        via,
        counselor_line: counselor(),
        at: at(20),
    })
}
fn played(turn: u32, via: PlayedVia) -> CallEvent {
    CallEvent::ResponsePlayed {
        turn,
        via,
        at: at(20),
    }
}
fn choose(choice: Choice, digits: &str) -> CallCommand {
    choose_at(None, choice, digits)
}
fn choose_at(turn: Option<u32>, choice: Choice, digits: &str) -> CallCommand {
    CallCommand::RecordChoice(RecordChoice {
        choice,
        turn,
        digits: Some(digits.into()),
        speech: None,
        counselor_line: counselor(),
        at: at(30),
    })
}
fn chose(turn: u32, choice: Choice, digits: &str) -> CallEvent {
    CallEvent::CallerChose {
        turn,
        choice,
        digits: Some(digits.into()),
        speech: None,
        at: at(30),
    }
}
fn escalated(reason: EscalationReason, target: DialNumber, secs: i64) -> CallEvent {
    CallEvent::Escalated {
        reason,
        target,
        at: at(secs),
    }
}
fn status(sid: CallSid, value: &str, seq: Option<u32>) -> CallCommand {
    CallCommand::UpdateStatus(UpdateStatus {
        call_sid: sid,
        status: CallStatus::parse(value),
        sequence_number: seq,
        duration_secs: Some(42),
        at: at(40),
    })
}
fn status_changed(value: &str, seq: u32) -> CallEvent {
    CallEvent::StatusChanged {
        call_sid: call_sid(),
        status: CallStatus::parse(value),
        sequence_number: Some(seq),
        duration_secs: Some(42),
        at: at(40),
    }
}
fn completed(seq: u32) -> CallEvent {
    CallEvent::Completed {
        call_sid: call_sid(),
        status: CallStatus::Completed,
        sequence_number: Some(seq),
        duration_secs: Some(42),
        ended_at: at(40),
    }
}
fn late_status(value: &str, seq: u32) -> CallEvent {
    CallEvent::LateCallbackReceived {
        callback: LateCallback::Status {
            status: CallStatus::parse(value),
            sequence_number: Some(seq),
        },
        at: at(40),
    }
}

// --- StartCall -----------------------------------------------------------------------------

#[test]
fn a_new_call_starts() {
    CallTest::with(())
        .given_no_previous_events()
        .when(start())
        .then_expect_events(vec![started()]);
}

#[test]
fn a_second_voice_webhook_for_the_same_call_records_nothing() {
    CallTest::with(())
        .given(vec![started()])
        .when(start())
        .then_expect_events(vec![]);
}

#[test]
fn a_voice_webhook_after_the_call_ended_records_nothing() {
    CallTest::with(())
        .given(vec![completed(3)])
        .when(start())
        .then_expect_events(vec![]);
}

#[test]
fn a_webhook_with_another_call_sid_is_refused() {
    CallTest::with(())
        .given(vec![started()])
        .when(status(other_call_sid(), "ringing", Some(1)))
        .then_expect_error(CallError::CallSidMismatch);
}

// --- ReceiveRecording ----------------------------------------------------------------------

#[test]
fn a_recording_opens_the_next_turn() {
    CallTest::with(())
        .given(vec![started()])
        .when(recording(1, Some("#")))
        .then_expect_events(vec![recorded(1, 1, Some("#"))]);
    CallTest::with(())
        .given(vec![
            started(),
            recorded(1, 1, None),
            played(1, PlayedVia::Twiml),
        ])
        .when(recording(2, None))
        .then_expect_events(vec![recorded(2, 2, None)]);
}

#[test]
fn the_same_recording_twice_records_nothing() {
    CallTest::with(())
        .given(vec![started(), recorded(1, 1, None)])
        .when(recording(1, None))
        .then_expect_events(vec![]);
}

#[test]
fn a_recording_for_a_call_never_started_is_refused() {
    CallTest::with(())
        .given_no_previous_events()
        .when(recording(1, None))
        .then_expect_error(CallError::NotStarted);
}

#[test]
fn a_recording_ended_with_zero_is_a_request_for_a_counselor() {
    CallTest::with(())
        .given(vec![started()])
        .when(recording(1, Some("0")))
        .then_expect_events(vec![
            recorded(1, 1, Some("0")),
            CallEvent::CallerChose {
                turn: 1,
                choice: Choice::Counselor,
                digits: Some("0".into()),
                speech: None,
                at: at(10),
            },
            escalated(EscalationReason::CallerRequested, counselor(), 10),
        ]);
}

#[test]
fn a_recording_after_the_call_ended_is_kept_but_changes_nothing() {
    let late = CallEvent::LateCallbackReceived {
        callback: LateCallback::Recording {
            recording_sid: recording_sid(1),
        },
        at: at(10),
    };
    CallTest::with(())
        .given(vec![started(), completed(3)])
        .when(recording(1, None))
        .then_expect_events(vec![late.clone()]);
    // …and its duplicate is recognised.
    CallTest::with(())
        .given(vec![started(), completed(3), late])
        .when(recording(1, None))
        .then_expect_events(vec![]);
}

// --- PlayResponse --------------------------------------------------------------------------

#[test]
fn a_turn_s_response_is_played_once_whichever_path_comes_first() {
    CallTest::with(())
        .given(vec![started(), recorded(1, 1, None)])
        .when(play(PlayedVia::RestUpdate))
        .then_expect_events(vec![played(1, PlayedVia::RestUpdate), asked(1)]);
    CallTest::with(())
        .given(vec![
            started(),
            recorded(1, 1, None),
            played(1, PlayedVia::RestUpdate),
        ])
        .when(play(PlayedVia::Twiml))
        .then_expect_events(vec![]);
    CallTest::with(())
        .given(vec![
            started(),
            recorded(1, 1, None),
            played(1, PlayedVia::Twiml),
        ])
        .when(play(PlayedVia::Twiml))
        .then_expect_events(vec![]);
}

#[test]
fn there_is_nothing_to_play_before_the_caller_spoke() {
    CallTest::with(())
        .given(vec![started()])
        .when(play(PlayedVia::Twiml))
        .then_expect_error(CallError::NothingToPlay);
    CallTest::with(())
        .given_no_previous_events()
        .when(play(PlayedVia::Twiml))
        .then_expect_error(CallError::NotStarted);
}

#[test]
fn nothing_is_played_after_the_call_ended() {
    CallTest::with(())
        .given(vec![started(), recorded(1, 1, None), completed(2)])
        .when(play(PlayedVia::RestUpdate))
        .then_expect_events(vec![]);
}

// --- RecordChoice and Escalate ---------------------------------------------------------------

#[test]
fn the_caller_s_choice_is_recorded_for_the_current_turn() {
    CallTest::with(())
        .given(vec![
            started(),
            recorded(1, 1, None),
            played(1, PlayedVia::Twiml),
        ])
        .when(choose(Choice::End, "2"))
        .then_expect_events(vec![chose(1, Choice::End, "2")]);
}

#[test]
fn the_same_choice_twice_records_nothing() {
    CallTest::with(())
        .given(vec![
            started(),
            recorded(1, 1, None),
            chose(1, Choice::Continue, "1"),
        ])
        .when(choose(Choice::Continue, "1"))
        .then_expect_events(vec![]);
}

#[test]
fn a_choice_made_at_an_earlier_turn_s_prompt_changes_nothing() {
    // The caller chose to go on at turn 1 and is at turn 2: turn 1's "end", sent again, is a
    // replay, not the caller's wish now.
    CallTest::with(())
        .given(vec![
            started(),
            recorded(1, 1, None),
            played(1, PlayedVia::Twiml),
            chose(1, Choice::Continue, "1"),
            recorded(2, 2, None),
            played(2, PlayedVia::Twiml),
        ])
        .when(choose_at(Some(1), Choice::End, "2"))
        .then_expect_events(vec![]);
    // At the prompt it answers, it counts.
    CallTest::with(())
        .given(vec![
            started(),
            recorded(1, 1, None),
            played(1, PlayedVia::Twiml),
        ])
        .when(choose_at(Some(1), Choice::End, "2"))
        .then_expect_events(vec![chose(1, Choice::End, "2")]);
}

#[test]
fn asking_for_a_person_is_honoured_whichever_turn_s_prompt_it_answers() {
    CallTest::with(())
        .given(vec![
            started(),
            recorded(1, 1, None),
            played(1, PlayedVia::Twiml),
            chose(1, Choice::Continue, "1"),
            recorded(2, 2, None),
        ])
        .when(choose_at(Some(1), Choice::Counselor, "0"))
        .then_expect_events(vec![
            chose(2, Choice::Counselor, "0"),
            escalated(EscalationReason::CallerRequested, counselor(), 30),
        ]);
}

#[test]
fn asking_for_a_counselor_escalates_at_any_prompt() {
    // During the greeting (turn 0)…
    CallTest::with(())
        .given(vec![started()])
        .when(choose(Choice::Counselor, "0"))
        .then_expect_events(vec![
            chose(0, Choice::Counselor, "0"),
            escalated(EscalationReason::CallerRequested, counselor(), 30),
        ]);
    // …and after a reply, even having chosen something else first.
    CallTest::with(())
        .given(vec![
            started(),
            recorded(1, 1, None),
            chose(1, Choice::Continue, "1"),
        ])
        .when(choose(Choice::Counselor, "0"))
        .then_expect_events(vec![
            chose(1, Choice::Counselor, "0"),
            escalated(EscalationReason::CallerRequested, counselor(), 30),
        ]);
}

#[test]
fn a_choice_before_the_call_started_is_refused() {
    CallTest::with(())
        .given_no_previous_events()
        .when(choose(Choice::End, "2"))
        .then_expect_error(CallError::NotStarted);
}

#[test]
fn a_choice_after_the_call_ended_records_nothing() {
    CallTest::with(())
        .given(vec![started(), completed(3)])
        .when(choose(Choice::Counselor, "0"))
        .then_expect_events(vec![]);
}

#[test]
fn falling_back_to_the_crisis_line_is_recorded_once() {
    let escalate = || {
        CallCommand::Escalate(Escalate {
            reason: EscalationReason::CounselorUnavailable,
            target: crisis(),
            unless_escalated: false,
            at: at(50),
        })
    };
    let fell_back = escalated(EscalationReason::CounselorUnavailable, crisis(), 50);
    CallTest::with(())
        .given(vec![
            started(),
            escalated(EscalationReason::CallerRequested, counselor(), 30),
        ])
        .when(escalate())
        .then_expect_events(vec![fell_back.clone()]);
    CallTest::with(())
        .given(vec![started(), fell_back])
        .when(escalate())
        .then_expect_events(vec![]);
    CallTest::with(())
        .given_no_previous_events()
        .when(escalate())
        .then_expect_error(CallError::NotStarted);
}

// --- UpdateStatus ----------------------------------------------------------------------------

#[test]
fn a_newer_status_is_recorded() {
    CallTest::with(())
        .given(vec![started(), status_changed("ringing", 1)])
        .when(status(call_sid(), "in-progress", Some(2)))
        .then_expect_events(vec![status_changed("in-progress", 2)]);
}

#[test]
fn a_final_status_completes_the_call() {
    CallTest::with(())
        .given(vec![started(), status_changed("in-progress", 2)])
        .when(status(call_sid(), "completed", Some(3)))
        .then_expect_events(vec![completed(3)]);
}

#[test]
fn a_duplicate_status_callback_records_nothing() {
    CallTest::with(())
        .given(vec![started(), status_changed("ringing", 1)])
        .when(status(call_sid(), "ringing", Some(1)))
        .then_expect_events(vec![]);
    CallTest::with(())
        .given(vec![started(), completed(3)])
        .when(status(call_sid(), "completed", Some(3)))
        .then_expect_events(vec![]);
}

#[test]
fn status_never_moves_backwards() {
    CallTest::with(())
        .given(vec![started(), status_changed("in-progress", 2)])
        .when(status(call_sid(), "ringing", Some(1)))
        .then_expect_events(vec![late_status("ringing", 1)]);
    // The late event leaves the state as it was.
    let mut call = Call::default();
    for e in [
        started(),
        status_changed("in-progress", 2),
        late_status("ringing", 1),
    ] {
        cqrs_es::Aggregate::apply(&mut call, e);
    }
    assert_eq!(call.status(), Some(&CallStatus::InProgress));
}

#[test]
fn nothing_changes_after_the_call_completed() {
    CallTest::with(())
        .given(vec![started(), completed(3)])
        .when(status(call_sid(), "in-progress", Some(4)))
        .then_expect_events(vec![late_status("in-progress", 4)]);
    let mut call = Call::default();
    for e in [started(), completed(3), late_status("in-progress", 4)] {
        cqrs_es::Aggregate::apply(&mut call, e);
    }
    assert_eq!(call.ended(), Some(&CallStatus::Completed));
    assert_eq!(call.status(), Some(&CallStatus::Completed));
}

#[test]
fn a_status_callback_can_come_first_and_names_the_call() {
    CallTest::with(())
        .given_no_previous_events()
        .when(status(call_sid(), "ringing", Some(1)))
        .then_expect_events(vec![status_changed("ringing", 1)]);
}

#[test]
fn statuses_without_sequence_numbers_are_deduplicated_by_value() {
    let no_seq = CallEvent::StatusChanged {
        call_sid: call_sid(),
        status: CallStatus::Ringing,
        sequence_number: None,
        duration_secs: Some(42),
        at: at(40),
    };
    CallTest::with(())
        .given(vec![started(), no_seq])
        .when(status(call_sid(), "ringing", None))
        .then_expect_events(vec![]);
}

// --- Events on the wire -------------------------------------------------------------------------

#[test]
fn events_round_trip_through_json_with_their_type_name() {
    use cqrs_es::DomainEvent;
    for event in [
        started(),
        recorded(1, 1, Some("#")),
        played(1, PlayedVia::RestUpdate),
        chose(1, Choice::End, "2"),
        escalated(EscalationReason::Silence, crisis(), 1),
        status_changed("ringing", 1),
        completed(3),
        late_status("ringing", 1),
        analyzed(1),
        failed(1, Stage::Delivery),
    ] {
        let json = serde_json::to_value(&event).expect("serializes");
        assert!(json.get(event.event_type()).is_some(), "{json}");
        let back: CallEvent = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, event);
    }
}

// --- RecordAnalysis, RecordFailure and the delivery claim ----------------------------------------

fn analysis(reply: Option<&str>) -> Analysis {
    let screening = crate::risk::screen("I had a hard day");
    Analysis {
        transcript: "I had a hard day".into(),
        assessment: crate::risk::assess(&screening, None),
        screening,
        model: None,
        reply: reply.map(str::to_owned),
        reply_source: reply.map(|_| ReplySource::Script),
        timings: StageTimings {
            download_ms: 5,
            transcription_ms: 800,
            assessment_ms: 2,
            reply_ms: 1,
        },
        recording_key: None,
    }
}
fn analyze(turn: u32) -> CallCommand {
    CallCommand::RecordAnalysis(RecordAnalysis {
        turn,
        analysis: analysis(Some("I hear you.")),
        at: at(15),
    })
}
fn analyzed(turn: u32) -> CallEvent {
    CallEvent::Analyzed {
        turn,
        analysis: analysis(Some("I hear you.")),
        at: at(15),
    }
}
fn fail(turn: u32, stage: Stage) -> CallCommand {
    CallCommand::RecordFailure(RecordFailure {
        turn,
        stage,
        error_class: "upstream_503".into(),
        at: at(16),
    })
}
fn failed(turn: u32, stage: Stage) -> CallEvent {
    CallEvent::ProcessingFailed {
        turn,
        stage,
        error_class: "upstream_503".into(),
        at: at(16),
    }
}

#[test]
fn a_turn_s_analysis_is_recorded_once() {
    CallTest::with(())
        .given(vec![started(), recorded(1, 1, None)])
        .when(analyze(1))
        .then_expect_events(vec![analyzed(1)]);
    CallTest::with(())
        .given(vec![started(), recorded(1, 1, None), analyzed(1)])
        .when(analyze(1))
        .then_expect_events(vec![]);
}

#[test]
fn an_analysis_needs_a_turn_that_exists() {
    CallTest::with(())
        .given(vec![started(), recorded(1, 1, None)])
        .when(analyze(2))
        .then_expect_error(CallError::UnknownTurn(2));
    CallTest::with(())
        .given_no_previous_events()
        .when(analyze(1))
        .then_expect_error(CallError::NotStarted);
}

#[test]
fn an_analysis_that_finishes_after_the_call_ended_is_still_kept() {
    CallTest::with(())
        .given(vec![started(), recorded(1, 1, None), completed(3)])
        .when(analyze(1))
        .then_expect_events(vec![analyzed(1)]);
}

#[test]
fn a_failed_stage_is_recorded_once_and_not_after_the_turn_was_understood() {
    CallTest::with(())
        .given(vec![started(), recorded(1, 1, None)])
        .when(fail(1, Stage::Transcription))
        .then_expect_events(vec![failed(1, Stage::Transcription)]);
    CallTest::with(())
        .given(vec![
            started(),
            recorded(1, 1, None),
            failed(1, Stage::Transcription),
        ])
        .when(fail(1, Stage::Transcription))
        .then_expect_events(vec![]);
    CallTest::with(())
        .given(vec![started(), recorded(1, 1, None), analyzed(1)])
        .when(fail(1, Stage::Reply))
        .then_expect_events(vec![]);
}

#[test]
fn a_failed_delivery_hands_the_turn_back_to_the_webhook_path() {
    let rest_claimed = vec![
        started(),
        recorded(1, 1, None),
        analyzed(1),
        played(1, PlayedVia::RestUpdate),
    ];
    CallTest::with(())
        .given(rest_claimed.clone())
        .when(fail(1, Stage::Delivery))
        .then_expect_events(vec![failed(1, Stage::Delivery)]);
    let mut handed_back = rest_claimed;
    handed_back.push(failed(1, Stage::Delivery));
    CallTest::with(())
        .given(handed_back)
        .when(play(PlayedVia::Twiml))
        .then_expect_events(vec![played(1, PlayedVia::Twiml), asked(1)]);
    // Nothing to hand back when the webhook path played it.
    CallTest::with(())
        .given(vec![
            started(),
            recorded(1, 1, None),
            analyzed(1),
            played(1, PlayedVia::Twiml),
        ])
        .when(fail(1, Stage::Delivery))
        .then_expect_events(vec![]);
}

#[test]
fn an_earlier_turn_s_answer_is_never_played_after_the_caller_moved_on() {
    let stale = CallCommand::PlayResponse(PlayResponse {
        turn: Some(1),
        via: PlayedVia::RestUpdate,
        counselor_line: counselor(),
        at: at(20),
    });
    CallTest::with(())
        .given(vec![
            started(),
            recorded(1, 1, None),
            played(1, PlayedVia::Twiml),
            recorded(2, 2, None),
        ])
        .when(stale)
        .then_expect_error(CallError::StaleTurn(1));
}

// --- ReceiveTranscription ---------------------------------------------------------------------

fn transcribe(n: u8, text: &str) -> CallCommand {
    CallCommand::ReceiveTranscription(crate::call::ReceiveTranscription {
        recording_sid: recording_sid(n),
        text: text.into(),
        completed: true,
        at: at(12),
    })
}
fn transcribed(turn: u32, n: u8, text: &str) -> CallEvent {
    CallEvent::TranscriptionReceived {
        turn,
        recording_sid: recording_sid(n),
        text: text.into(),
        completed: true,
        at: at(12),
    }
}

#[test]
fn a_transcription_lands_on_the_turn_of_its_recording_once() {
    let given = vec![
        started(),
        recorded(1, 1, None),
        played(1, PlayedVia::Twiml),
        recorded(2, 2, None),
    ];
    CallTest::with(())
        .given(given.clone())
        .when(transcribe(1, "I had a rough day"))
        .then_expect_events(vec![transcribed(1, 1, "I had a rough day")]);
    let mut again = given;
    again.push(transcribed(1, 1, "I had a rough day"));
    CallTest::with(())
        .given(again)
        .when(transcribe(1, "I had a rough day"))
        .then_expect_events(vec![]);
}

fn early(n: u8, text: &str) -> CallEvent {
    CallEvent::EarlyTranscriptionReceived {
        recording_sid: recording_sid(n),
        text: text.into(),
        completed: true,
        at: at(12),
    }
}

#[test]
fn a_transcription_before_its_recording_is_kept_and_becomes_its_turns_when_it_comes() {
    CallTest::with(())
        .given(vec![started()])
        .when(transcribe(1, "I can't go on"))
        .then_expect_events(vec![early(1, "I can't go on")]);
    // Twilio sends it again: kept once.
    CallTest::with(())
        .given(vec![started(), early(1, "I can't go on")])
        .when(transcribe(1, "I can't go on"))
        .then_expect_events(vec![]);
    // The recording comes: its turn opens with the words already heard.
    CallTest::with(())
        .given(vec![started(), early(1, "I can't go on")])
        .when(recording(1, None))
        .then_expect_events(vec![
            recorded(1, 1, None),
            transcribed(1, 1, "I can't go on"),
        ]);
    // Once it is the turn's, a late copy of it changes nothing.
    CallTest::with(())
        .given(vec![
            started(),
            early(1, "I can't go on"),
            recorded(1, 1, None),
            transcribed(1, 1, "I can't go on"),
        ])
        .when(transcribe(1, "I can't go on"))
        .then_expect_events(vec![]);
}

#[test]
fn transcriptions_of_many_recordings_never_received_are_refused() {
    let mut given = vec![started()];
    given.extend((1..=8).map(|n| early(n, "?")));
    CallTest::with(())
        .given(given)
        .when(transcribe(9, "?"))
        .then_expect_error(CallError::UnknownRecording);
}

#[test]
fn a_turn_during_which_the_caller_asked_for_a_person_is_never_played() {
    let asked = vec![
        started(),
        recorded(1, 1, Some("0")),
        CallEvent::CallerChose {
            turn: 1,
            choice: Choice::Counselor,
            digits: Some("0".into()),
            speech: None,
            at: at(10),
        },
        escalated(EscalationReason::CallerRequested, counselor(), 10),
        analyzed(1),
    ];
    CallTest::with(())
        .given(asked.clone())
        .when(play(PlayedVia::RestUpdate))
        .then_expect_events(vec![]);
    CallTest::with(())
        .given(asked)
        .when(play(PlayedVia::Twiml))
        .then_expect_events(vec![]);
}

// --- The direct question, risk that only rises, and a person left alone ---------------------------

fn asked(turn: u32) -> CallEvent {
    CallEvent::DirectQuestionAsked { turn, at: at(20) }
}
fn answer(speech: Option<&str>, digits: Option<&str>) -> CallCommand {
    CallCommand::AnswerQuestion(AnswerQuestion {
        digits: digits.map(str::to_owned),
        speech: speech.map(str::to_owned),
        counselor_line: counselor(),
        at: at(25),
    })
}
fn answered(
    answer: crate::risk::DirectAnswer,
    speech: Option<&str>,
    digits: Option<&str>,
) -> CallEvent {
    CallEvent::DirectQuestionAnswered {
        turn: 1,
        answer,
        digits: digits.map(str::to_owned),
        speech: speech.map(str::to_owned),
        screening: speech.map(crate::risk::screen),
        at: at(25),
    }
}
fn risky_analysis(turn: u32) -> CallEvent {
    let screening = crate::risk::screen("i want to die");
    CallEvent::Analyzed {
        turn,
        analysis: Analysis {
            transcript: "i want to die".into(),
            assessment: crate::risk::assess(&screening, None),
            screening,
            model: None,
            reply: None,
            reply_source: None,
            timings: StageTimings::default(),
            recording_key: None,
        },
        at: at(15),
    }
}
fn asked_after_one_reply() -> Vec<CallEvent> {
    vec![
        started(),
        recorded(1, 1, None),
        analyzed(1),
        played(1, PlayedVia::RestUpdate),
        asked(1),
    ]
}

#[test]
fn the_direct_question_follows_the_first_automated_reply_once_per_call() {
    CallTest::with(())
        .given(vec![started(), recorded(1, 1, None), analyzed(1)])
        .when(play(PlayedVia::Twiml))
        .then_expect_events(vec![played(1, PlayedVia::Twiml), asked(1)]);
    // The vetted fallback, while the turn is not analysed yet, is an automated reply too.
    CallTest::with(())
        .given(vec![started(), recorded(1, 1, None)])
        .when(play(PlayedVia::Twiml))
        .then_expect_events(vec![played(1, PlayedVia::Twiml), asked(1)]);
    // Asked once: a later reply is not followed by it again.
    let mut later = asked_after_one_reply();
    later.extend([
        answered(crate::risk::DirectAnswer::No, Some("no"), None),
        recorded(2, 2, None),
        analyzed(2),
    ]);
    CallTest::with(())
        .given(later)
        .when(play(PlayedVia::Twiml))
        .then_expect_events(vec![played(2, PlayedVia::Twiml)]);
}

#[test]
fn a_caller_who_said_something_risky_is_connected_and_never_questioned_first() {
    // Whichever path answers the turn records the escalation in the same command, so no other
    // path can see the answer without it.
    for via in [PlayedVia::Twiml, PlayedVia::RestUpdate] {
        CallTest::with(())
            .given(vec![started(), recorded(1, 1, None), risky_analysis(1)])
            .when(play(via))
            .then_expect_events(vec![
                played(1, via),
                escalated(EscalationReason::RiskAssessed, counselor(), 20),
            ]);
    }
}

#[test]
fn automation_escalates_only_when_nobody_sent_the_caller_to_a_person_yet() {
    let late = CallCommand::Escalate(Escalate {
        reason: EscalationReason::RiskAssessed,
        target: counselor(),
        unless_escalated: true,
        at: at(40),
    });
    CallTest::with(())
        .given(vec![
            started(),
            recorded(1, 1, None),
            escalated(EscalationReason::DirectQuestion, counselor(), 30),
        ])
        .when(late.clone())
        .then_expect_events(vec![]);
    CallTest::with(())
        .given(vec![started(), recorded(1, 1, None)])
        .when(late)
        .then_expect_events(vec![escalated(
            EscalationReason::RiskAssessed,
            counselor(),
            40,
        )]);
}

#[test]
fn an_automated_reply_is_never_played_by_rest_update_long_after_the_caller_spoke() {
    let late_play = CallCommand::PlayResponse(PlayResponse {
        turn: Some(1),
        via: PlayedVia::RestUpdate,
        counselor_line: counselor(),
        at: at(10) + REST_REPLY_WINDOW + chrono::TimeDelta::seconds(1),
    });
    CallTest::with(())
        .given(vec![started(), recorded(1, 1, None), analyzed(1)])
        .when(late_play.clone())
        .then_expect_events(vec![]);
    // A person is still put through, however late.
    let at_late = at(10) + REST_REPLY_WINDOW + chrono::TimeDelta::seconds(1);
    CallTest::with(())
        .given(vec![started(), recorded(1, 1, None), risky_analysis(1)])
        .when(late_play)
        .then_expect_events(vec![
            CallEvent::ResponsePlayed {
                turn: 1,
                via: PlayedVia::RestUpdate,
                at: at_late,
            },
            CallEvent::Escalated {
                reason: EscalationReason::RiskAssessed,
                target: counselor(),
                at: at_late,
            },
        ]);
}

#[test]
fn only_a_clear_no_to_the_direct_question_keeps_the_automated_line() {
    use crate::risk::DirectAnswer::{No, Unsure, Yes};
    CallTest::with(())
        .given(asked_after_one_reply())
        .when(answer(Some("No, I'm not."), None))
        .then_expect_events(vec![answered(No, Some("No, I'm not."), None)]);
    CallTest::with(())
        .given(asked_after_one_reply())
        .when(answer(None, Some("2")))
        .then_expect_events(vec![answered(No, None, Some("2"))]);
    for (speech, digits, what) in [
        (Some("yes"), None, Yes),
        (Some("maybe"), None, Yes),
        (None, Some("1"), Yes),
        (None, None, Unsure),
        (Some("No. Nobody would miss me."), None, Yes),
    ] {
        CallTest::with(())
            .given(asked_after_one_reply())
            .when(answer(speech, digits))
            .then_expect_events(vec![
                answered(what, speech, digits),
                escalated(EscalationReason::DirectQuestion, counselor(), 25),
            ]);
    }
    // An answer to a question never asked is refused (the webhook answers with a person).
    CallTest::with(())
        .given(vec![started(), recorded(1, 1, None)])
        .when(answer(Some("no"), None))
        .then_expect_error(CallError::QuestionNotAsked);
    // The same answer twice (Twilio's retry) records nothing new.
    let mut once = asked_after_one_reply();
    once.push(answered(No, Some("no"), None));
    CallTest::with(())
        .given(once)
        .when(answer(Some("no"), None))
        .then_expect_events(vec![]);
}

#[test]
fn risk_over_a_call_only_rises() {
    // Turn 1 warranted a person; turn 2 shows no risk at all, yet its answer is a person.
    let events = vec![
        started(),
        recorded(1, 1, None),
        risky_analysis(1),
        played(1, PlayedVia::Twiml),
        recorded(2, 2, None),
        analyzed(2),
    ];
    let mut call = Call::default();
    for event in events.clone() {
        call.apply(event);
    }
    assert!(call.warrants_person());
    let turn = call.turn_number(2).expect("turn 2");
    assert_eq!(call.route_for(turn), Some(crate::risk::Route::Escalate));
    // Its answer is a person, recorded with the claim; and any choice at a prompt now goes to a
    // person.
    CallTest::with(())
        .given(events.clone())
        .when(play(PlayedVia::Twiml))
        .then_expect_events(vec![
            played(2, PlayedVia::Twiml),
            escalated(EscalationReason::RiskAssessed, counselor(), 20),
        ]);
    CallTest::with(())
        .given(events)
        .when(choose(Choice::End, "2"))
        .then_expect_events(vec![
            chose(2, Choice::End, "2"),
            escalated(EscalationReason::EarlierRisk, counselor(), 30),
        ]);
    // A yes to the direct question counts the same way.
    let mut yes = asked_after_one_reply();
    yes.push(answered(crate::risk::DirectAnswer::Yes, Some("yes"), None));
    let mut call = Call::default();
    for event in yes {
        call.apply(event);
    }
    assert!(call.warrants_person());
}

#[test]
fn once_the_caller_was_sent_to_a_person_no_rest_update_touches_the_call() {
    let with_person = vec![
        started(),
        recorded(1, 1, None),
        analyzed(1),
        escalated(EscalationReason::CallerRequested, counselor(), 12),
    ];
    CallTest::with(())
        .given(with_person.clone())
        .when(play(PlayedVia::RestUpdate))
        .then_expect_events(vec![]);
    // Twilio asking (the continue webhook) is still answered, with no question after it.
    CallTest::with(())
        .given(with_person)
        .when(play(PlayedVia::Twiml))
        .then_expect_events(vec![played(1, PlayedVia::Twiml)]);
}

#[test]
fn words_at_the_choice_prompt_are_screened_like_a_turn() {
    let heard = |text: &str| {
        CallCommand::HearUtterance(HearUtterance {
            prompt: Prompt::Choice,
            text: text.into(),
            counselor_line: counselor(),
            at: at(30),
        })
    };
    let screened = |text: &str| {
        let screening = crate::risk::screen(text);
        CallEvent::UtteranceScreened {
            turn: 1,
            prompt: Prompt::Choice,
            text: text.into(),
            route: crate::risk::assess(&screening, None).route,
            screening,
            at: at(30),
        }
    };
    let risky = "I'm going to kill myself tonight, goodbye";
    CallTest::with(())
        .given(asked_after_one_reply())
        .when(heard(risky))
        .then_expect_events(vec![
            screened(risky),
            escalated(EscalationReason::RiskAssessed, counselor(), 30),
        ]);
    let ordinary = "my boss was really rude to me today";
    CallTest::with(())
        .given(asked_after_one_reply())
        .when(heard(ordinary))
        .then_expect_events(vec![screened(ordinary)]);
    // Twilio's retry of the same words records nothing new.
    let mut heard_once = asked_after_one_reply();
    heard_once.push(screened(ordinary));
    CallTest::with(())
        .given(heard_once)
        .when(heard(ordinary))
        .then_expect_events(vec![]);
}

// Speech and live modes: words Twilio recognised, languages, the live session, the call's own
// recording.

fn words_analysis(text: &str) -> Analysis {
    let screening = crate::risk::screen(text);
    let assessment = crate::risk::assess(&screening, None);
    let reply = (assessment.route == crate::risk::Route::Reply).then(|| "I hear you.".to_owned());
    Analysis {
        transcript: text.into(),
        reply_source: reply.as_ref().map(|_| ReplySource::Script),
        reply,
        assessment,
        screening,
        model: None,
        timings: StageTimings::default(),
        recording_key: None,
    }
}
fn speech(text: &str, source: SpeechSource, answer: SpeechAnswer) -> CallCommand {
    CallCommand::ReceiveSpeech(ReceiveSpeech {
        call_sid: call_sid(),
        text: text.into(),
        confidence: Some(0.9),
        source,
        answer,
        heard_in: None,
        counselor_line: counselor(),
        at: at(10),
    })
}
fn speech_received(turn: u32, text: &str, source: SpeechSource) -> CallEvent {
    CallEvent::SpeechReceived {
        turn,
        text: text.into(),
        confidence: Some(0.9),
        source,
        received_at: at(10),
    }
}
fn analysed_at(turn: u32, analysis: Analysis, secs: i64) -> CallEvent {
    CallEvent::Analyzed {
        turn,
        analysis,
        at: at(secs),
    }
}
fn relay_started() -> CallEvent {
    CallEvent::RelaySessionStarted {
        session_id: "VX0123".into(),
        at: at(1),
    }
}
fn end_session(status: &str, error: Option<&str>, handoff: Option<&str>) -> CallCommand {
    CallCommand::EndRelaySession(EndRelaySession {
        status: status.into(),
        error_code: error.map(str::to_owned),
        handoff: handoff.map(str::to_owned),
        counselor_line: counselor(),
        at: at(40),
    })
}
fn session_ended(status: &str, error: Option<&str>, handoff: Option<&str>) -> CallEvent {
    CallEvent::RelaySessionEnded {
        status: status.into(),
        error_code: error.map(str::to_owned),
        handoff: handoff.map(str::to_owned),
        at: at(40),
    }
}

const CALM: &str = "I had a rough day at work and I just need to talk to someone.";
const RISKY: &str = "I have pills saved up and I'm going to take them tonight.";

#[test]
fn words_answered_at_once_are_heard_analysed_played_and_followed_by_the_question() {
    let analysis = words_analysis(CALM);
    CallTest::with(())
        .given(vec![started()])
        .when(speech(
            CALM,
            SpeechSource::Gather,
            SpeechAnswer::Answered(analysis.clone()),
        ))
        .then_expect_events(vec![
            speech_received(1, CALM, SpeechSource::Gather),
            analysed_at(1, analysis, 10),
            CallEvent::ResponsePlayed {
                turn: 1,
                via: PlayedVia::Twiml,
                at: at(10),
            },
            CallEvent::DirectQuestionAsked {
                turn: 1,
                at: at(10),
            },
        ]);
}

#[test]
fn risky_words_answered_at_once_are_recorded_with_the_escalation_and_no_reply() {
    let analysis = words_analysis(RISKY);
    assert_eq!(analysis.reply, None);
    CallTest::with(())
        .given(vec![started()])
        .when(speech(
            RISKY,
            SpeechSource::Gather,
            SpeechAnswer::Answered(analysis.clone()),
        ))
        .then_expect_events(vec![
            speech_received(1, RISKY, SpeechSource::Gather),
            analysed_at(1, analysis, 10),
            CallEvent::ResponsePlayed {
                turn: 1,
                via: PlayedVia::Twiml,
                at: at(10),
            },
            escalated(EscalationReason::RiskAssessed, counselor(), 10),
        ]);
}

#[test]
fn once_a_person_was_warranted_calm_words_still_reach_a_person() {
    let risky = words_analysis(RISKY);
    let calm = words_analysis(CALM);
    let events = CallTest::with(())
        .given(vec![
            started(),
            speech_received(1, RISKY, SpeechSource::Gather),
            analysed_at(1, risky, 10),
        ])
        .when(speech(
            CALM,
            SpeechSource::Gather,
            SpeechAnswer::Answered(calm),
        ))
        .inspect_result()
        .expect("accepted");
    assert!(events.contains(&escalated(EscalationReason::RiskAssessed, counselor(), 10)));
    assert!(!events
        .iter()
        .any(|e| matches!(e, CallEvent::DirectQuestionAsked { .. })));
}

#[test]
fn twilios_retry_of_the_same_words_records_nothing() {
    CallTest::with(())
        .given(vec![
            started(),
            speech_received(1, CALM, SpeechSource::Gather),
            CallEvent::AnswerDeferred {
                turn: 1,
                at: at(10),
            },
        ])
        .when(speech(CALM, SpeechSource::Gather, SpeechAnswer::Deferred))
        .then_expect_events(vec![]);
}

#[test]
fn words_whose_answer_is_late_are_deferred_to_the_pipeline() {
    CallTest::with(())
        .given(vec![started()])
        .when(speech(CALM, SpeechSource::Gather, SpeechAnswer::Deferred))
        .then_expect_events(vec![
            speech_received(1, CALM, SpeechSource::Gather),
            CallEvent::AnswerDeferred {
                turn: 1,
                at: at(10),
            },
        ]);
}

#[test]
fn spanish_in_the_first_words_switches_the_call_to_spanish() {
    let text = "Hoy tuve un día muy difícil en el trabajo y necesito hablar con alguien.";
    let analysis = words_analysis(text);
    assert_eq!(
        analysis.screening.language,
        Some(crate::risk::Language::Spanish)
    );
    let events = CallTest::with(())
        .given(vec![started()])
        .when(speech(
            text,
            SpeechSource::Gather,
            SpeechAnswer::Answered(analysis),
        ))
        .inspect_result()
        .expect("accepted");
    let mut call = Call::default();
    call.apply(started());
    assert_eq!(
        events[1],
        CallEvent::LanguageChosen {
            language: crate::risk::Language::Spanish,
            how: LanguageChoice::Detected,
            at: at(10),
        }
    );
    for event in events {
        call.apply(event);
    }
    assert_eq!(call.language(), crate::risk::Language::Spanish);
}

#[test]
fn a_live_first_turn_heard_in_spanish_switches_the_call_and_a_later_one_does_not() {
    let heard = |text: &str| {
        CallCommand::ReceiveSpeech(ReceiveSpeech {
            call_sid: call_sid(),
            text: text.into(),
            confidence: Some(0.9),
            source: SpeechSource::Relay,
            answer: SpeechAnswer::Streaming,
            heard_in: Some(crate::risk::Language::Spanish),
            counselor_line: counselor(),
            at: at(10),
        })
    };
    CallTest::with(())
        .given(vec![started()])
        .when(heard("Hoy fue un día difícil."))
        .then_expect_events(vec![
            speech_received(1, "Hoy fue un día difícil.", SpeechSource::Relay),
            CallEvent::LanguageChosen {
                language: crate::risk::Language::Spanish,
                how: LanguageChoice::Detected,
                at: at(10),
            },
        ]);
    // Only the first words choose: later, the caller presses 9 to switch.
    CallTest::with(())
        .given(vec![
            started(),
            speech_received(1, "I had a rough day.", SpeechSource::Relay),
        ])
        .when(heard("Hoy fue un día difícil."))
        .then_expect_events(vec![speech_received(
            2,
            "Hoy fue un día difícil.",
            SpeechSource::Relay,
        )]);
}

#[test]
fn a_language_chosen_twice_is_recorded_once() {
    let choose = || {
        CallCommand::ChooseLanguage(ChooseLanguage {
            language: crate::risk::Language::Spanish,
            how: LanguageChoice::Keys,
            at: at(5),
        })
    };
    let chosen = CallEvent::LanguageChosen {
        language: crate::risk::Language::Spanish,
        how: LanguageChoice::Keys,
        at: at(5),
    };
    CallTest::with(())
        .given(vec![started()])
        .when(choose())
        .then_expect_events(vec![chosen.clone()]);
    CallTest::with(())
        .given(vec![started(), chosen])
        .when(choose())
        .then_expect_events(vec![]);
}

#[test]
fn a_streamed_answer_is_recorded_with_its_playing_once_sent() {
    let analysis = words_analysis(CALM);
    CallTest::with(())
        .given(vec![
            started(),
            relay_started(),
            speech_received(1, CALM, SpeechSource::Relay),
        ])
        .when(CallCommand::AnswerTurn(AnswerTurn {
            turn: 1,
            analysis: analysis.clone(),
            via: PlayedVia::Relay,
            cut_off: false,
            counselor_line: counselor(),
            at: at(12),
        }))
        .then_expect_events(vec![
            analysed_at(1, analysis, 12),
            CallEvent::ResponsePlayed {
                turn: 1,
                via: PlayedVia::Relay,
                at: at(12),
            },
            CallEvent::DirectQuestionAsked {
                turn: 1,
                at: at(12),
            },
        ]);
}

#[test]
fn an_interrupted_reply_records_what_the_caller_heard_once() {
    let interrupt = || {
        CallCommand::InterruptReply(InterruptReply {
            heard: "That sounds".into(),
            duration_ms: Some(460),
            at: at(11),
        })
    };
    let interrupted = CallEvent::ReplyInterrupted {
        turn: 1,
        heard: "That sounds".into(),
        duration_ms: Some(460),
        at: at(11),
    };
    let given = vec![
        started(),
        relay_started(),
        speech_received(1, CALM, SpeechSource::Relay),
    ];
    CallTest::with(())
        .given(given.clone())
        .when(interrupt())
        .then_expect_events(vec![interrupted.clone()]);
    let mut again = given;
    again.push(interrupted);
    CallTest::with(())
        .given(again)
        .when(interrupt())
        .then_expect_events(vec![]);
    CallTest::with(())
        .given(vec![
            started(),
            speech_received(1, CALM, SpeechSource::Gather),
        ])
        .when(interrupt())
        .then_expect_error(CallError::NoRelaySession);
}

#[test]
fn a_session_lost_without_a_way_on_puts_the_caller_through_to_a_person() {
    CallTest::with(())
        .given(vec![
            started(),
            relay_started(),
            speech_received(1, CALM, SpeechSource::Relay),
        ])
        .when(end_session("failed", Some("64105"), None))
        .then_expect_events(vec![
            session_ended("failed", Some("64105"), None),
            escalated(EscalationReason::SessionLost, counselor(), 40),
        ]);
}

#[test]
fn a_session_ended_with_the_caller_on_their_way_adds_no_escalation() {
    // Handed to a person (the escalation was recorded before the session was ended).
    CallTest::with(())
        .given(vec![
            started(),
            relay_started(),
            escalated(EscalationReason::CallerRequested, counselor(), 30),
        ])
        .when(end_session(
            "ended",
            None,
            Some("{\"reason\":\"caller_requested\"}"),
        ))
        .then_expect_events(vec![session_ended(
            "ended",
            None,
            Some("{\"reason\":\"caller_requested\"}"),
        )]);
    // A goodbye the caller chose.
    CallTest::with(())
        .given(vec![started(), relay_started(), chose(0, Choice::End, "2")])
        .when(end_session("ended", None, Some("{\"reason\":\"goodbye\"}")))
        .then_expect_events(vec![session_ended(
            "ended",
            None,
            Some("{\"reason\":\"goodbye\"}"),
        )]);
    // Twilio's retry of the action webhook records nothing more.
    CallTest::with(())
        .given(vec![
            started(),
            relay_started(),
            session_ended("failed", Some("64105"), None),
        ])
        .when(end_session("failed", Some("64105"), None))
        .then_expect_events(vec![]);
}

fn call_recording(status: &str) -> CallCommand {
    CallCommand::ReceiveCallRecording(ReceiveCallRecording {
        call_sid: call_sid(),
        recording_sid: recording_sid(9),
        recording_url: recording_url(9),
        duration_secs: Some(95),
        status: status.into(),
        at: at(100),
    })
}
fn call_recorded(status: &str) -> CallEvent {
    CallEvent::CallRecordingReceived {
        recording_sid: recording_sid(9),
        recording_url: recording_url(9),
        duration_secs: Some(95),
        status: status.into(),
        at: at(100),
    }
}

#[test]
fn the_calls_recording_is_kept_even_after_the_call_ended_and_only_once() {
    CallTest::with(())
        .given(vec![started(), completed(3)])
        .when(call_recording("completed"))
        .then_expect_events(vec![call_recorded("completed")]);
    CallTest::with(())
        .given(vec![started(), completed(3), call_recorded("completed")])
        .when(call_recording("completed"))
        .then_expect_events(vec![]);
    let keep = |key: &str| {
        CallCommand::KeepCallRecording(KeepCallRecording {
            recording_sid: recording_sid(9),
            key: key.into(),
            at: at(101),
        })
    };
    let kept = CallEvent::CallRecordingKept {
        recording_sid: recording_sid(9),
        key: "calls/x/call-RE09.wav".into(),
        at: at(101),
    };
    CallTest::with(())
        .given(vec![started(), call_recorded("completed")])
        .when(keep("calls/x/call-RE09.wav"))
        .then_expect_events(vec![kept.clone()]);
    CallTest::with(())
        .given(vec![started(), call_recorded("completed"), kept])
        .when(keep("calls/x/call-RE09.wav"))
        .then_expect_events(vec![]);
    CallTest::with(())
        .given(vec![started()])
        .when(keep("calls/x/call-RE09.wav"))
        .then_expect_error(CallError::UnknownRecording);
}

#[test]
fn a_reply_the_caller_spoke_over_leaves_the_question_for_the_next_one() {
    let analysis = words_analysis(CALM);
    CallTest::with(())
        .given(vec![
            started(),
            relay_started(),
            speech_received(1, CALM, SpeechSource::Relay),
        ])
        .when(CallCommand::AnswerTurn(AnswerTurn {
            turn: 1,
            analysis: analysis.clone(),
            via: PlayedVia::Relay,
            cut_off: true,
            counselor_line: counselor(),
            at: at(12),
        }))
        .then_expect_events(vec![
            analysed_at(1, analysis, 12),
            CallEvent::ResponsePlayed {
                turn: 1,
                via: PlayedVia::Relay,
                at: at(12),
            },
        ]);
}

// The human handoff: every dial on record, the whisper decided once, a person's time kept.

fn dial_ended(result: DialResult, talk_secs: Option<u32>) -> CommandOrEvent {
    CommandOrEvent {
        command: CallCommand::EndDial(EndDial {
            line: DialedLine::Counselor,
            attempt: 1,
            number: counselor(),
            result,
            talk_secs,
            at: at(60),
        }),
        event: CallEvent::DialEnded {
            line: DialedLine::Counselor,
            attempt: 1,
            number: counselor(),
            result,
            talk_secs,
            at: at(60),
        },
    }
}

struct CommandOrEvent {
    command: CallCommand,
    event: CallEvent,
}

fn escalated_for_caller() -> CallEvent {
    CallEvent::Escalated {
        reason: EscalationReason::CallerRequested,
        target: counselor(),
        at: at(5),
    }
}

#[test]
fn a_dial_with_no_escalation_on_record_records_one_and_a_retry_records_nothing() {
    let ended = dial_ended(DialResult::NoAnswer, None);
    CallTest::with(())
        .given(vec![started()])
        .when(ended.command.clone())
        .then_expect_events(vec![
            CallEvent::Escalated {
                reason: EscalationReason::Silence,
                target: counselor(),
                at: at(60),
            },
            ended.event.clone(),
        ]);
    CallTest::with(())
        .given(vec![started(), escalated_for_caller()])
        .when(ended.command.clone())
        .then_expect_events(vec![ended.event.clone()]);
    CallTest::with(())
        .given(vec![started(), escalated_for_caller(), ended.event])
        .when(ended.command)
        .then_expect_events(vec![]);
}

#[test]
fn a_whisper_is_decided_once_and_only_after_it_played() {
    let decide = |accepted| {
        CallCommand::DecideWhisper(DecideWhisper {
            attempt: 1,
            number: counselor(),
            accepted,
            at: at(40),
        })
    };
    let answered = CallEvent::CounselorAnswered {
        attempt: 1,
        number: counselor(),
        at: at(30),
    };
    let accepted = CallEvent::CounselorAccepted {
        attempt: 1,
        number: counselor(),
        at: at(40),
    };
    CallTest::with(())
        .given(vec![started(), escalated_for_caller()])
        .when(decide(true))
        .then_expect_error(CallError::NoWhisper);
    CallTest::with(())
        .given(vec![started(), escalated_for_caller(), answered.clone()])
        .when(decide(true))
        .then_expect_events(vec![accepted.clone()]);
    CallTest::with(())
        .given(vec![started(), escalated_for_caller(), answered.clone()])
        .when(decide(false))
        .then_expect_events(vec![CallEvent::CounselorDeclined {
            attempt: 1,
            number: counselor(),
            at: at(40),
        }]);
    // A retried key changes nothing, whichever key it carries.
    CallTest::with(())
        .given(vec![
            started(),
            escalated_for_caller(),
            answered.clone(),
            accepted.clone(),
        ])
        .when(decide(false))
        .then_expect_events(vec![]);

    let mut call = Call::default();
    for event in [started(), escalated_for_caller(), answered, accepted] {
        call.apply(event);
    }
    assert!(call.counselor_accepted(1));
    assert!(!call.counselor_accepted(2));
    assert_eq!(call.person_reached_at(), Some(at(40)));
}

#[test]
fn without_a_whisper_a_talked_dial_dates_the_person_from_its_length() {
    let mut call = Call::default();
    for event in [
        started(),
        escalated_for_caller(),
        dial_ended(DialResult::Talked, Some(50)).event,
    ] {
        call.apply(event);
    }
    assert_eq!(call.person_reached_at(), Some(at(10)));
    let mut unanswered = Call::default();
    for event in [started(), dial_ended(DialResult::Busy, None).event] {
        unanswered.apply(event);
    }
    assert_eq!(unanswered.person_reached_at(), None);
}

// --- Together --------------------------------------------------------------------------------

fn store_unavailable() -> CallCommand {
    CallCommand::Escalate(Escalate {
        reason: EscalationReason::StoreUnavailable,
        target: counselor(),
        unless_escalated: true,
        at: at(10),
    })
}

#[test]
fn commands_together_record_every_event_in_order_each_on_the_state_before_it() {
    // The escalation is decided on the call the start opened: alone it would be refused.
    CallTest::with(())
        .given_no_previous_events()
        .when(CallCommand::Together(vec![start(), store_unavailable()]))
        .then_expect_events(vec![
            started(),
            escalated(EscalationReason::StoreUnavailable, counselor(), 10),
        ]);
    CallTest::with(())
        .given(vec![started()])
        .when(CallCommand::Together(vec![
            recording(1, None),
            store_unavailable(),
        ]))
        .then_expect_events(vec![
            recorded(1, 1, None),
            escalated(EscalationReason::StoreUnavailable, counselor(), 10),
        ]);
}

#[test]
fn a_rule_broken_by_one_command_together_refuses_them_all() {
    CallTest::with(())
        .given_no_previous_events()
        .when(CallCommand::Together(vec![
            recording(1, None),
            store_unavailable(),
        ]))
        .then_expect_error(CallError::NotStarted);
    CallTest::with(())
        .given(vec![started()])
        .when(CallCommand::Together(vec![
            store_unavailable(),
            status(other_call_sid(), "completed", Some(3)),
        ]))
        .then_expect_error(CallError::CallSidMismatch);
}

#[test]
fn commands_together_replayed_record_nothing_more() {
    // A spooled webhook replayed twice (a crash between its append and the spool's mark).
    CallTest::with(())
        .given(vec![
            started(),
            recorded(1, 1, None),
            escalated(EscalationReason::StoreUnavailable, counselor(), 10),
        ])
        .when(CallCommand::Together(vec![
            recording(1, None),
            store_unavailable(),
        ]))
        .then_expect_events(vec![]);
}

#[test]
fn a_command_survives_the_spool_unchanged() {
    let command =
        CallCommand::Together(vec![start(), recording(1, Some("0")), store_unavailable()]);
    let json = serde_json::to_string(&command).expect("serialises");
    let back: CallCommand = serde_json::from_str(&json).expect("reads back");
    assert_eq!(format!("{back:?}"), format!("{command:?}"));
}
