//! The state of a call and the rules applied to each command.

use std::collections::{BTreeMap, BTreeSet};

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::choice::Choice;
use crate::ids::{CallSid, RecordingSid};
use crate::phone::DialNumber;
use crate::status::CallStatus;

use super::commands::{
    AnswerQuestion, AnswerTurn, ChooseLanguage, EndRelaySession, HearUtterance, InterruptReply,
    KeepCallRecording, ReceiveCallRecording, ReceiveSpeech, ReceiveTranscription, RecordAnalysis,
    RecordFailure, SpeechAnswer, StartRelaySession,
};
use super::commands::{AnswerWhisper, DecideWhisper, EndDial};
use super::commands::{
    CallCommand, Escalate, PlayResponse, ReceiveRecording, RecordChoice, StartCall, UpdateStatus,
};
use super::events::{
    Analysis, CallEvent, DialedLine, EscalationReason, LanguageChoice, LateCallback, PlayedVia,
    RecordingUrl, SpeechSource, Stage,
};
use super::CallError;
use crate::risk::{self, DirectAnswer, Language, Route};

/// Where a recorded turn's audio is (record mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnRecording {
    pub sid: RecordingSid,
    pub url: RecordingUrl,
}

/// One exchange: the caller spoke (a recording, or words Twilio recognised), and was answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub number: u32,
    /// The turn's recording, in record mode; `None` when Twilio recognised the words itself.
    pub recording: Option<TurnRecording>,
    /// How Twilio recognised the words, when it did (speech and live modes).
    pub speech: Option<SpeechSource>,
    pub played: Option<PlayedVia>,
    /// Twilio's transcription of the turn, once it arrived: (text, completed).
    pub transcription: Option<(String, bool)>,
    /// What the pipeline made of the turn, once it has.
    pub analysis: Option<Analysis>,
    /// The stages that failed for good.
    pub failed: Vec<Stage>,
    /// When the recording webhook arrived.
    #[serde(default)]
    pub received_at: Option<chrono::DateTime<chrono::Utc>>,
    /// What the caller heard of a streamed reply before speaking over it.
    #[serde(default)]
    pub interrupted: Option<String>,
}

/// How long after the caller finished speaking the REST path may still play an automated reply.
/// By then the webhook path has played the fallback, or could not be recorded at all (the store
/// was away, and the caller was sent to a person): a late reply would interrupt whatever the
/// caller is hearing, perhaps a counselor.
pub const REST_REPLY_WINDOW: chrono::TimeDelta = chrono::TimeDelta::seconds(15);

/// Where the call stands with the direct question about suicide.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Question {
    /// Not asked yet.
    #[default]
    NotAsked,
    /// Asked after turn `turn`'s reply; the answer is awaited.
    Asked { turn: u32 },
    /// Answered.
    Answered(DirectAnswer),
}

/// A phone call as the event store knows it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    call_sid: Option<CallSid>,
    started: bool,
    ended: Option<CallStatus>,
    status: Option<CallStatus>,
    last_sequence: Option<u32>,
    /// Every status callback seen, by (SequenceNumber, status), so duplicates are recognised even
    /// when they arrive late.
    seen_statuses: BTreeSet<(Option<u32>, String)>,
    recordings: BTreeSet<RecordingSid>,
    turns: Vec<Turn>,
    /// The caller's choice per turn; turn 0 is a choice made during the greeting.
    choices: BTreeMap<u32, Choice>,
    escalations: Vec<(EscalationReason, DialNumber)>,
    /// Some sign of risk (or words that could not be read) was found: from now on every turn
    /// goes to a person. Risk over a call only rises.
    #[serde(default)]
    person_warranted: bool,
    #[serde(default)]
    question: Question,
    /// The last words screened at a prompt, by turn, so that Twilio's retry records nothing new.
    #[serde(default)]
    last_utterance: Option<(u32, String)>,
    #[serde(default)]
    language: Language,
    #[serde(default)]
    language_chosen: bool,
    /// The live session's id, once Twilio opened one.
    #[serde(default)]
    relay_session: Option<String>,
    #[serde(default)]
    relay_ended: bool,
    /// The recordings of the whole call, and where each is kept once it was copied.
    #[serde(default)]
    call_recordings: BTreeMap<RecordingSid, Option<String>>,
    /// Transcriptions that came before their recording, until it comes.
    #[serde(default)]
    early_transcriptions: BTreeMap<RecordingSid, (String, bool, chrono::DateTime<chrono::Utc>)>,
    #[serde(default)]
    started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The dials that ended, by (line, attempt), so a retried action records nothing new.
    #[serde(default)]
    dials_ended: BTreeSet<(DialedLine, u32)>,
    /// What each counselor did with the whisper, by attempt.
    #[serde(default)]
    whispers: BTreeMap<u32, Whisper>,
    /// When a person took the call, first.
    #[serde(default)]
    person_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Where a counselor's whisper stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Whisper {
    /// They picked up and hear the summary.
    Playing,
    Accepted,
    Declined,
}

impl Call {
    /// When the call started (its incoming-call webhook).
    pub fn started_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.started_at
    }

    /// Whether counselor `attempt` took the call after its whisper.
    pub fn counselor_accepted(&self, attempt: u32) -> bool {
        self.whispers.get(&attempt) == Some(&Whisper::Accepted)
    }

    /// Whether counselor `attempt` passed the call on after its whisper.
    pub fn counselor_declined(&self, attempt: u32) -> bool {
        self.whispers.get(&attempt) == Some(&Whisper::Declined)
    }

    /// Whether any counselor passed the call on after a whisper.
    pub fn any_counselor_declined(&self) -> bool {
        self.whispers.values().any(|w| *w == Whisper::Declined)
    }

    /// When a person first took the call, if one has.
    pub fn person_reached_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.person_at
    }

    /// Why the call was escalated, each time, in order.
    pub fn escalation_reasons(&self) -> impl Iterator<Item = EscalationReason> + '_ {
        self.escalations.iter().map(|(reason, _)| *reason)
    }

    /// Whether the caller asked for a person (0, "counselor") at any time in the call.
    pub fn asked_for_a_person(&self) -> bool {
        self.escalations
            .iter()
            .any(|(reason, _)| *reason == EscalationReason::CallerRequested)
    }

    /// The highest risk any turn of the call was assessed at.
    pub fn highest_risk(&self) -> Option<crate::risk::RiskLevel> {
        self.turns
            .iter()
            .filter_map(|t| t.analysis.as_ref())
            .map(|a| a.assessment.level)
            .max()
    }

    /// The call's Twilio SID, once any webhook named it.
    pub fn call_sid(&self) -> Option<&CallSid> {
        self.call_sid.as_ref()
    }

    /// Turn `number`, if the caller has reached it.
    pub fn turn_number(&self, number: u32) -> Option<&Turn> {
        self.turns.iter().find(|t| t.number == number)
    }

    /// Whether the incoming-call webhook was recorded.
    pub fn is_started(&self) -> bool {
        self.started
    }

    /// The final status, once the call is over.
    pub fn ended(&self) -> Option<&CallStatus> {
        self.ended.as_ref()
    }

    /// The newest status Twilio reported.
    pub fn status(&self) -> Option<&CallStatus> {
        self.status.as_ref()
    }

    /// The turns so far, oldest first.
    pub fn turns(&self) -> &[Turn] {
        &self.turns
    }

    /// The turn in progress, if the caller has spoken at all.
    pub fn current_turn(&self) -> Option<&Turn> {
        self.turns.last()
    }

    /// Whether the caller asked for a person during turn `turn` (and is being connected).
    pub fn asked_for_person(&self, turn: u32) -> bool {
        self.choices.get(&turn) == Some(&Choice::Counselor)
    }

    /// Whether the caller was sent to a human at any point.
    pub fn is_escalated(&self) -> bool {
        !self.escalations.is_empty()
    }

    /// Whether a person was warranted at any point of the call: any sign of risk, unreadable
    /// words, or an answer to the direct question that was not a clear no.
    pub fn warrants_person(&self) -> bool {
        self.person_warranted
    }

    /// The language the call is held in.
    pub fn language(&self) -> Language {
        self.language
    }

    /// Whether the call's ConversationRelay session is open.
    pub fn in_relay_session(&self) -> bool {
        self.relay_session.is_some() && !self.relay_ended
    }

    /// Whether the caller chose to end the call during turn `turn`.
    pub fn chose_to_end(&self, turn: u32) -> bool {
        self.choices.get(&turn) == Some(&Choice::End)
    }

    /// The recordings of the whole call, with the audio store key of each one kept.
    pub fn call_recordings(&self) -> &BTreeMap<RecordingSid, Option<String>> {
        &self.call_recordings
    }

    /// Where the call stands with the direct question.
    pub fn question(&self) -> Question {
        self.question
    }

    /// Whether the direct question was asked after turn `turn`'s reply.
    pub fn asks_question_after(&self, turn: u32) -> bool {
        matches!(self.question, Question::Asked { turn: asked } if asked == turn)
    }

    /// Where turn `turn`'s answer goes, once it is analysed: a person whenever the turn, or
    /// anything earlier in the call, warranted one.
    pub fn route_for(&self, turn: &Turn) -> Option<Route> {
        let analysis = turn.analysis.as_ref()?;
        Some(
            if self.person_warranted || analysis.assessment.route == Route::Escalate {
                Route::Escalate
            } else {
                Route::Reply
            },
        )
    }

    /// `first`, followed by what `next` makes of the call once `first` happened: one command
    /// that does two things records them together, by the same rules as apart.
    fn then(
        &self,
        first: Vec<CallEvent>,
        next: impl FnOnce(&Call) -> Result<Vec<CallEvent>, CallError>,
    ) -> Result<Vec<CallEvent>, CallError> {
        let mut after = self.clone();
        for event in &first {
            after.apply(event.clone());
        }
        let mut events = first;
        events.extend(next(&after)?);
        Ok(events)
    }

    /// Words Twilio recognised start a turn. Spanish heard in the first words switches the call
    /// to Spanish. An answer that comes with the words is played by the same command, by the
    /// rules of `play_response`: a person whenever the turn or anything before it warranted one.
    fn receive_speech(&self, cmd: ReceiveSpeech) -> Result<Vec<CallEvent>, CallError> {
        self.check_sid(&cmd.call_sid)?;
        if !self.started {
            return Err(CallError::NotStarted);
        }
        if self.ended.is_some() {
            return Ok(vec![]);
        }
        // Twilio's retry of the same action: the same words, just recorded as the current turn.
        let retried = self.current_turn().is_some_and(|t| {
            t.speech == Some(cmd.source)
                && t.transcription
                    .as_ref()
                    .is_some_and(|(text, _)| *text == cmd.text)
        });
        if retried {
            return Ok(vec![]);
        }
        let turn = self.current_turn_number() + 1;
        let mut events = vec![CallEvent::SpeechReceived {
            turn,
            text: cmd.text,
            confidence: cmd.confidence,
            source: cmd.source,
            received_at: cmd.at,
        }];
        let heard_in = match &cmd.answer {
            SpeechAnswer::Answered(analysis) => analysis.screening.language.or(cmd.heard_in),
            _ => cmd.heard_in,
        };
        if turn == 1 && !self.language_chosen && heard_in == Some(Language::Spanish) {
            events.push(CallEvent::LanguageChosen {
                language: Language::Spanish,
                how: LanguageChoice::Detected,
                at: cmd.at,
            });
        }
        match cmd.answer {
            SpeechAnswer::Streaming => Ok(events),
            SpeechAnswer::Deferred => {
                events.push(CallEvent::AnswerDeferred { turn, at: cmd.at });
                Ok(events)
            }
            SpeechAnswer::Answered(analysis) => {
                events.push(CallEvent::Analyzed {
                    turn,
                    analysis,
                    at: cmd.at,
                });
                let via = match cmd.source {
                    SpeechSource::Gather => PlayedVia::Twiml,
                    SpeechSource::Relay => PlayedVia::Relay,
                };
                self.then(events, |next| {
                    next.play_response(PlayResponse {
                        turn: Some(turn),
                        via,
                        counselor_line: cmd.counselor_line,
                        at: cmd.at,
                    })
                })
            }
        }
    }

    /// A streamed answer, once sent: its analysis and its playing, together.
    fn answer_turn(&self, cmd: AnswerTurn) -> Result<Vec<CallEvent>, CallError> {
        let analysed = self.record_analysis(RecordAnalysis {
            turn: cmd.turn,
            analysis: cmd.analysis,
            at: cmd.at,
        })?;
        let events = self.then(analysed, |next| {
            next.play_response(PlayResponse {
                turn: Some(cmd.turn),
                via: cmd.via,
                counselor_line: cmd.counselor_line,
                at: cmd.at,
            })
        })?;
        Ok(events
            .into_iter()
            .filter(|e| !(cmd.cut_off && matches!(e, CallEvent::DirectQuestionAsked { .. })))
            .collect())
    }

    fn choose_language(&self, cmd: ChooseLanguage) -> Result<Vec<CallEvent>, CallError> {
        if !self.started {
            return Err(CallError::NotStarted);
        }
        if self.ended.is_some() || (self.language_chosen && self.language == cmd.language) {
            return Ok(vec![]);
        }
        Ok(vec![CallEvent::LanguageChosen {
            language: cmd.language,
            how: cmd.how,
            at: cmd.at,
        }])
    }

    fn start_relay_session(&self, cmd: StartRelaySession) -> Result<Vec<CallEvent>, CallError> {
        if !self.started {
            return Err(CallError::NotStarted);
        }
        if self.ended.is_some() || self.relay_session.as_deref() == Some(cmd.session_id.as_str()) {
            return Ok(vec![]);
        }
        Ok(vec![CallEvent::RelaySessionStarted {
            session_id: cmd.session_id,
            at: cmd.at,
        }])
    }

    /// What the caller heard of the current turn's reply before speaking over it.
    fn interrupt_reply(&self, cmd: InterruptReply) -> Result<Vec<CallEvent>, CallError> {
        if !self.in_relay_session() {
            return Err(CallError::NoRelaySession);
        }
        let turn = self.current_turn().ok_or(CallError::NothingToPlay)?;
        if self.ended.is_some() || turn.interrupted.is_some() {
            return Ok(vec![]);
        }
        Ok(vec![CallEvent::ReplyInterrupted {
            turn: turn.number,
            heard: cmd.heard,
            duration_ms: cmd.duration_ms,
            at: cmd.at,
        }])
    }

    /// The live session is over. Hotline ends it with the caller on their way (to a person, or
    /// a goodbye they chose); a session that ended any other way, a dropped socket or a restart,
    /// leaves the caller with nobody, so it is recorded with an escalation to a person.
    fn end_relay_session(&self, cmd: EndRelaySession) -> Result<Vec<CallEvent>, CallError> {
        if !self.started {
            return Err(CallError::NotStarted);
        }
        if self.ended.is_some() || self.relay_ended {
            return Ok(vec![]);
        }
        let mut events = vec![CallEvent::RelaySessionEnded {
            status: cmd.status,
            error_code: cmd.error_code,
            handoff: cmd.handoff,
            at: cmd.at,
        }];
        let on_their_way = self.is_escalated() || self.chose_to_end(self.current_turn_number());
        if !on_their_way {
            events.extend(self.escalation(
                EscalationReason::SessionLost,
                cmd.counselor_line,
                cmd.at,
            ));
        }
        Ok(events)
    }

    /// The recording of the whole call usually arrives after it ended; it is kept all the same.
    fn receive_call_recording(
        &self,
        cmd: ReceiveCallRecording,
    ) -> Result<Vec<CallEvent>, CallError> {
        self.check_sid(&cmd.call_sid)?;
        if !self.started {
            return Err(CallError::NotStarted);
        }
        if self.call_recordings.contains_key(&cmd.recording_sid) {
            return Ok(vec![]);
        }
        Ok(vec![CallEvent::CallRecordingReceived {
            recording_sid: cmd.recording_sid,
            recording_url: cmd.recording_url,
            duration_secs: cmd.duration_secs,
            status: cmd.status,
            at: cmd.at,
        }])
    }

    fn keep_call_recording(&self, cmd: KeepCallRecording) -> Result<Vec<CallEvent>, CallError> {
        match self.call_recordings.get(&cmd.recording_sid) {
            None => Err(CallError::UnknownRecording),
            Some(Some(key)) if *key == cmd.key => Ok(vec![]),
            Some(_) => Ok(vec![CallEvent::CallRecordingKept {
                recording_sid: cmd.recording_sid,
                key: cmd.key,
                at: cmd.at,
            }]),
        }
    }

    /// A `<Dial>` ended. A person dialled with no escalation on record (the greeting's own
    /// fallback for a caller who never spoke) is recorded as an escalation too, so that every
    /// call put through to a person says so.
    fn end_dial(&self, cmd: EndDial) -> Result<Vec<CallEvent>, CallError> {
        if !self.started {
            return Err(CallError::NotStarted);
        }
        if self.dials_ended.contains(&(cmd.line, cmd.attempt)) {
            return Ok(vec![]);
        }
        let mut events: Vec<CallEvent> = self.unrecorded_escalation(&cmd.number, cmd.at);
        events.push(CallEvent::DialEnded {
            line: cmd.line,
            attempt: cmd.attempt,
            number: cmd.number,
            result: cmd.result,
            talk_secs: cmd.talk_secs,
            at: cmd.at,
        });
        Ok(events)
    }

    /// A counselor picked up and hears the whisper.
    fn answer_whisper(&self, cmd: AnswerWhisper) -> Result<Vec<CallEvent>, CallError> {
        if !self.started {
            return Err(CallError::NotStarted);
        }
        if self.whispers.contains_key(&cmd.attempt) {
            return Ok(vec![]);
        }
        let mut events = self.unrecorded_escalation(&cmd.number, cmd.at);
        events.push(CallEvent::CounselorAnswered {
            attempt: cmd.attempt,
            number: cmd.number,
            at: cmd.at,
        });
        Ok(events)
    }

    /// The counselor's key after the whisper. Decided once: a retried webhook changes nothing.
    fn decide_whisper(&self, cmd: DecideWhisper) -> Result<Vec<CallEvent>, CallError> {
        if !self.started {
            return Err(CallError::NotStarted);
        }
        match self.whispers.get(&cmd.attempt) {
            Some(Whisper::Accepted | Whisper::Declined) => return Ok(vec![]),
            Some(Whisper::Playing) => {}
            None => return Err(CallError::NoWhisper),
        }
        let (attempt, number, at) = (cmd.attempt, cmd.number, cmd.at);
        Ok(vec![if cmd.accepted {
            CallEvent::CounselorAccepted {
                attempt,
                number,
                at,
            }
        } else {
            CallEvent::CounselorDeclined {
                attempt,
                number,
                at,
            }
        }])
    }

    /// The escalation a dial implies, when none is on record.
    fn unrecorded_escalation(
        &self,
        number: &DialNumber,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Vec<CallEvent> {
        if self.is_escalated() {
            return vec![];
        }
        self.escalation(EscalationReason::Silence, number.clone(), at)
            .into_iter()
            .collect()
    }

    fn current_turn_number(&self) -> u32 {
        self.turns.last().map_or(0, |t| t.number)
    }

    fn check_sid(&self, sid: &CallSid) -> Result<(), CallError> {
        match &self.call_sid {
            Some(known) if known != sid => Err(CallError::CallSidMismatch),
            _ => Ok(()),
        }
    }

    fn start(&self, cmd: StartCall) -> Result<Vec<CallEvent>, CallError> {
        self.check_sid(&cmd.call_sid)?;
        // A retried voice webhook, or one after the call already ended, records nothing.
        if self.started || self.ended.is_some() {
            return Ok(vec![]);
        }
        Ok(vec![CallEvent::CallStarted {
            call_sid: cmd.call_sid,
            account_sid: cmd.account_sid,
            from: cmd.from,
            to: cmd.to,
            direction: cmd.direction,
            started_at: cmd.at,
        }])
    }

    fn receive_recording(&self, cmd: ReceiveRecording) -> Result<Vec<CallEvent>, CallError> {
        self.check_sid(&cmd.call_sid)?;
        if self.recordings.contains(&cmd.recording_sid) {
            return Ok(vec![]);
        }
        if self.ended.is_some() {
            return Ok(vec![CallEvent::LateCallbackReceived {
                callback: LateCallback::Recording {
                    recording_sid: cmd.recording_sid,
                },
                at: cmd.at,
            }]);
        }
        if !self.started {
            return Err(CallError::NotStarted);
        }
        let turn = self.current_turn_number() + 1;
        let asked_for_human = Choice::keys_ask_for_person(cmd.digits.as_deref());
        let early = self.early_transcriptions.get(&cmd.recording_sid).cloned();
        let mut events = vec![CallEvent::RecordingReceived {
            turn,
            recording_sid: cmd.recording_sid.clone(),
            recording_url: cmd.recording_url,
            duration_secs: cmd.duration_secs,
            digits: cmd.digits.clone(),
            received_at: cmd.at,
        }];
        // Its transcription came first: it is this turn's now.
        if let Some((text, completed, at)) = early {
            events.push(CallEvent::TranscriptionReceived {
                turn,
                recording_sid: cmd.recording_sid,
                text,
                completed,
                at,
            });
        }
        // Pressing 0 ends a recording; it is also the caller asking for a human.
        if asked_for_human {
            events.push(CallEvent::CallerChose {
                turn,
                choice: Choice::Counselor,
                digits: cmd.digits,
                speech: None,
                at: cmd.at,
            });
            events.extend(self.escalation(
                EscalationReason::CallerRequested,
                cmd.counselor_line,
                cmd.at,
            ));
        }
        Ok(events)
    }

    fn play_response(&self, cmd: PlayResponse) -> Result<Vec<CallEvent>, CallError> {
        if !self.started {
            return Err(CallError::NotStarted);
        }
        if self.ended.is_some() {
            return Ok(vec![]);
        }
        let turn = self.current_turn().ok_or(CallError::NothingToPlay)?;
        if let Some(wanted) = cmd.turn {
            if wanted != turn.number {
                return Err(if wanted < turn.number {
                    CallError::StaleTurn(wanted)
                } else {
                    CallError::UnknownTurn(wanted)
                });
            }
        }
        // The caller asked for a person during this turn and is being connected: playing
        // anything now would interrupt that, so nothing is.
        if self.asked_for_person(turn.number) {
            return Ok(vec![]);
        }
        // Whichever path claims a turn first plays it; the other finds it played.
        if turn.played.is_some() {
            return Ok(vec![]);
        }
        // The answer is a person when the turn, or anything earlier in the call, warranted one.
        let to_person = match self.route_for(turn) {
            Some(route) => route == Route::Escalate,
            None => self.person_warranted,
        };
        if cmd.via == PlayedVia::RestUpdate {
            // Once the caller was sent to a person, no automation touches the live call: a REST
            // update would end the counselor's leg. Twilio asking (the continue webhook) is
            // answered.
            if self.is_escalated() {
                return Ok(vec![]);
            }
            let late = turn
                .received_at
                .is_some_and(|received| cmd.at - received > REST_REPLY_WINDOW);
            if late && !to_person {
                return Ok(vec![]);
            }
        }
        let mut events = vec![CallEvent::ResponsePlayed {
            turn: turn.number,
            via: cmd.via,
            at: cmd.at,
        }];
        if to_person {
            let reason = if turn.analysis.is_some() {
                EscalationReason::RiskAssessed
            } else {
                EscalationReason::EarlierRisk
            };
            if !self.is_escalated() {
                events.extend(self.escalation(reason, cmd.counselor_line, cmd.at));
            }
        } else if self.question == Question::NotAsked && !self.is_escalated() {
            // The first automated reply is followed, once per call, by the direct question: the
            // reply to a turn that showed no risk, or the vetted fallback played while the words
            // are not known (a late analysis that shows risk still puts the caller through; and
            // without the pipeline, the question is the only screening a turn gets).
            events.push(CallEvent::DirectQuestionAsked {
                turn: turn.number,
                at: cmd.at,
            });
        }
        Ok(events)
    }

    /// The caller's answer to the direct question. Only a clear no, with nothing risky said
    /// alongside it, keeps the automated line; anything else is recorded with an escalation.
    fn answer_question(&self, cmd: AnswerQuestion) -> Result<Vec<CallEvent>, CallError> {
        if !self.started {
            return Err(CallError::NotStarted);
        }
        if self.ended.is_some() || matches!(self.question, Question::Answered(_)) {
            return Ok(vec![]);
        }
        if self.question == Question::NotAsked {
            return Err(CallError::QuestionNotAsked);
        }
        let answer = risk::direct_answer(cmd.speech.as_deref(), cmd.digits.as_deref());
        let screening = cmd
            .speech
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(risk::screen);
        let mut events = vec![CallEvent::DirectQuestionAnswered {
            turn: self.current_turn_number(),
            answer,
            digits: cmd.digits,
            speech: cmd.speech,
            screening,
            at: cmd.at,
        }];
        if answer.warrants_person() {
            events.extend(self.escalation(
                EscalationReason::DirectQuestion,
                cmd.counselor_line,
                cmd.at,
            ));
        }
        Ok(events)
    }

    /// Words said at a prompt that were not one of its choices are screened like any turn: any
    /// sign of risk is recorded with an escalation.
    fn hear_utterance(&self, cmd: HearUtterance) -> Result<Vec<CallEvent>, CallError> {
        if !self.started {
            return Err(CallError::NotStarted);
        }
        let turn = self.current_turn_number();
        let retried = self
            .last_utterance
            .as_ref()
            .is_some_and(|(t, text)| *t == turn && *text == cmd.text);
        if self.ended.is_some() || retried {
            return Ok(vec![]);
        }
        let screening = risk::screen(&cmd.text);
        let route = risk::assess(&screening, None).route;
        let mut events = vec![CallEvent::UtteranceScreened {
            turn,
            prompt: cmd.prompt,
            text: cmd.text,
            screening,
            route,
            at: cmd.at,
        }];
        if route == Route::Escalate || self.person_warranted {
            events.extend(self.escalation(
                EscalationReason::RiskAssessed,
                cmd.counselor_line,
                cmd.at,
            ));
        }
        Ok(events)
    }

    fn turn(&self, number: u32) -> Result<&Turn, CallError> {
        self.turns
            .iter()
            .find(|t| t.number == number)
            .ok_or(CallError::UnknownTurn(number))
    }

    /// Twilio's transcription of a turn's recording; the first one counts, and it is kept even
    /// after the call ended (the turn is still analysed, for the record).
    fn receive_transcription(
        &self,
        cmd: ReceiveTranscription,
    ) -> Result<Vec<CallEvent>, CallError> {
        if !self.started {
            return Err(CallError::NotStarted);
        }
        let turn = self.turns.iter().find(|t| {
            t.recording
                .as_ref()
                .is_some_and(|r| r.sid == cmd.recording_sid)
        });
        let Some(turn) = turn else {
            // Before its recording: kept until the recording comes. A call has few turns, so
            // many recordings never received are not a crossing but a mistake, and refused.
            if self.early_transcriptions.contains_key(&cmd.recording_sid) {
                return Ok(vec![]);
            }
            if self.early_transcriptions.len() >= MAX_EARLY_TRANSCRIPTIONS {
                return Err(CallError::UnknownRecording);
            }
            return Ok(vec![CallEvent::EarlyTranscriptionReceived {
                recording_sid: cmd.recording_sid,
                text: cmd.text,
                completed: cmd.completed,
                at: cmd.at,
            }]);
        };
        if turn.transcription.is_some() {
            return Ok(vec![]);
        }
        Ok(vec![CallEvent::TranscriptionReceived {
            turn: turn.number,
            recording_sid: cmd.recording_sid,
            text: cmd.text,
            completed: cmd.completed,
            at: cmd.at,
        }])
    }

    /// The pipeline's result is kept even after the call ended: analysts and auditors need it.
    fn record_analysis(&self, cmd: RecordAnalysis) -> Result<Vec<CallEvent>, CallError> {
        if !self.started {
            return Err(CallError::NotStarted);
        }
        if self.turn(cmd.turn)?.analysis.is_some() {
            return Ok(vec![]);
        }
        Ok(vec![CallEvent::Analyzed {
            turn: cmd.turn,
            analysis: cmd.analysis,
            at: cmd.at,
        }])
    }

    fn record_failure(&self, cmd: RecordFailure) -> Result<Vec<CallEvent>, CallError> {
        if !self.started {
            return Err(CallError::NotStarted);
        }
        let turn = self.turn(cmd.turn)?;
        let redundant = match cmd.stage {
            // A failed delivery matters only while the REST path holds the claim to play.
            Stage::Delivery => turn.played != Some(PlayedVia::RestUpdate),
            // A stage failing after the turn was understood, or twice, changes nothing.
            stage => turn.analysis.is_some() || turn.failed.contains(&stage),
        };
        if redundant {
            return Ok(vec![]);
        }
        Ok(vec![CallEvent::ProcessingFailed {
            turn: cmd.turn,
            stage: cmd.stage,
            error_class: cmd.error_class,
            at: cmd.at,
        }])
    }

    fn record_choice(&self, cmd: RecordChoice) -> Result<Vec<CallEvent>, CallError> {
        if !self.started {
            return Err(CallError::NotStarted);
        }
        if self.ended.is_some() {
            return Ok(vec![]);
        }
        let turn = self.current_turn_number();
        if self.choices.get(&turn) == Some(&cmd.choice) {
            return Ok(vec![]);
        }
        // A choice made at an earlier turn's prompt, arriving now: a replay (Twilio's requests
        // for a prompt come while it plays). Asking for a person is honoured whenever it comes.
        if cmd.turn.is_some_and(|t| t != turn) && cmd.choice != Choice::Counselor {
            return Ok(vec![]);
        }
        let mut events = vec![CallEvent::CallerChose {
            turn,
            choice: cmd.choice,
            digits: cmd.digits,
            speech: cmd.speech,
            at: cmd.at,
        }];
        if cmd.choice == Choice::Counselor {
            events.extend(self.escalation(
                EscalationReason::CallerRequested,
                cmd.counselor_line,
                cmd.at,
            ));
        } else if self.person_warranted {
            // Risk found earlier (a late analysis, a question answered yes): whatever the caller
            // chose, the next thing they hear is a person, never the automated line.
            events.extend(self.escalation(
                EscalationReason::EarlierRisk,
                cmd.counselor_line,
                cmd.at,
            ));
        }
        Ok(events)
    }

    fn escalate(&self, cmd: Escalate) -> Result<Vec<CallEvent>, CallError> {
        if !self.started {
            return Err(CallError::NotStarted);
        }
        if self.ended.is_some() || (cmd.unless_escalated && self.is_escalated()) {
            return Ok(vec![]);
        }
        Ok(self
            .escalation(cmd.reason, cmd.target, cmd.at)
            .into_iter()
            .collect())
    }

    /// The same escalation twice (a retried webhook) is recorded once.
    fn escalation(
        &self,
        reason: EscalationReason,
        target: DialNumber,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Option<CallEvent> {
        let known = self
            .escalations
            .iter()
            .any(|(r, t)| *r == reason && *t == target);
        (!known).then_some(CallEvent::Escalated { reason, target, at })
    }

    fn update_status(&self, cmd: UpdateStatus) -> Result<Vec<CallEvent>, CallError> {
        self.check_sid(&cmd.call_sid)?;
        let key = (cmd.sequence_number, cmd.status.as_str().to_owned());
        if self.seen_statuses.contains(&key) {
            return Ok(vec![]);
        }
        let older = match (cmd.sequence_number, self.last_sequence) {
            (Some(new), Some(last)) => new < last,
            _ => false,
        };
        if self.ended.is_some() || older {
            return Ok(vec![CallEvent::LateCallbackReceived {
                callback: LateCallback::Status {
                    status: cmd.status,
                    sequence_number: cmd.sequence_number,
                },
                at: cmd.at,
            }]);
        }
        let event = if cmd.status.is_terminal() {
            CallEvent::Completed {
                call_sid: cmd.call_sid,
                status: cmd.status,
                sequence_number: cmd.sequence_number,
                duration_secs: cmd.duration_secs,
                ended_at: cmd.at,
            }
        } else {
            CallEvent::StatusChanged {
                call_sid: cmd.call_sid,
                status: cmd.status,
                sequence_number: cmd.sequence_number,
                duration_secs: cmd.duration_secs,
                at: cmd.at,
            }
        };
        Ok(vec![event])
    }

    fn remember_status(&mut self, call_sid: CallSid, status: CallStatus, sequence: Option<u32>) {
        self.call_sid.get_or_insert(call_sid);
        self.seen_statuses
            .insert((sequence, status.as_str().to_owned()));
        if let Some(seq) = sequence {
            self.last_sequence = Some(self.last_sequence.map_or(seq, |last| last.max(seq)));
        }
        self.status = Some(status);
    }
}

impl Call {
    /// The events `command` records on this call, or the rule it breaks.
    fn decide(&self, command: CallCommand) -> Result<Vec<CallEvent>, CallError> {
        match command {
            CallCommand::StartCall(cmd) => self.start(cmd),
            CallCommand::ReceiveRecording(cmd) => self.receive_recording(cmd),
            CallCommand::PlayResponse(cmd) => self.play_response(cmd),
            CallCommand::RecordChoice(cmd) => self.record_choice(cmd),
            CallCommand::Escalate(cmd) => self.escalate(cmd),
            CallCommand::UpdateStatus(cmd) => self.update_status(cmd),
            CallCommand::ReceiveTranscription(cmd) => self.receive_transcription(cmd),
            CallCommand::RecordAnalysis(cmd) => self.record_analysis(cmd),
            CallCommand::RecordFailure(cmd) => self.record_failure(cmd),
            CallCommand::AnswerQuestion(cmd) => self.answer_question(cmd),
            CallCommand::HearUtterance(cmd) => self.hear_utterance(cmd),
            CallCommand::ReceiveSpeech(cmd) => self.receive_speech(cmd),
            CallCommand::AnswerTurn(cmd) => self.answer_turn(cmd),
            CallCommand::ChooseLanguage(cmd) => self.choose_language(cmd),
            CallCommand::StartRelaySession(cmd) => self.start_relay_session(cmd),
            CallCommand::InterruptReply(cmd) => self.interrupt_reply(cmd),
            CallCommand::EndRelaySession(cmd) => self.end_relay_session(cmd),
            CallCommand::ReceiveCallRecording(cmd) => self.receive_call_recording(cmd),
            CallCommand::KeepCallRecording(cmd) => self.keep_call_recording(cmd),
            CallCommand::EndDial(cmd) => self.end_dial(cmd),
            CallCommand::AnswerWhisper(cmd) => self.answer_whisper(cmd),
            CallCommand::DecideWhisper(cmd) => self.decide_whisper(cmd),
            CallCommand::Together(commands) => self.together(commands),
        }
    }

    /// Each command decided on the state the ones before it leave: a rule any of them breaks
    /// refuses them all.
    fn together(&self, commands: Vec<CallCommand>) -> Result<Vec<CallEvent>, CallError> {
        let mut state = self.clone();
        let mut events = Vec::new();
        for command in commands {
            for event in state.decide(command)? {
                state.apply(event.clone());
                events.push(event);
            }
        }
        Ok(events)
    }
}

/// How many transcriptions a call keeps for recordings it has not received.
const MAX_EARLY_TRANSCRIPTIONS: usize = 8;

impl Aggregate for Call {
    const TYPE: &'static str = "Call";
    type Command = CallCommand;
    type Event = CallEvent;
    type Error = CallError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            CallEvent::CallStarted {
                call_sid,
                started_at,
                ..
            } => {
                self.call_sid = Some(call_sid);
                self.started = true;
                self.started_at = Some(started_at);
            }
            CallEvent::CounselorAnswered { attempt, .. } => {
                self.whispers.entry(attempt).or_insert(Whisper::Playing);
            }
            CallEvent::CounselorAccepted { attempt, at, .. } => {
                self.whispers.insert(attempt, Whisper::Accepted);
                self.person_at.get_or_insert(at);
            }
            CallEvent::CounselorDeclined { attempt, .. } => {
                self.whispers.insert(attempt, Whisper::Declined);
            }
            CallEvent::DialEnded {
                line,
                attempt,
                result,
                at,
                talk_secs,
                ..
            } => {
                self.dials_ended.insert((line, attempt));
                // Without a whisper, a dial that was talked on is the first sign of a person: the
                // conversation began `talk_secs` before it ended.
                if result.talked() && self.person_at.is_none() {
                    let talked = chrono::Duration::seconds(i64::from(talk_secs.unwrap_or(0)));
                    self.person_at = Some(at - talked);
                }
            }
            CallEvent::RecordingReceived {
                turn,
                recording_sid,
                recording_url,
                received_at,
                ..
            } => {
                self.recordings.insert(recording_sid.clone());
                self.turns.push(Turn {
                    number: turn,
                    recording: Some(TurnRecording {
                        sid: recording_sid,
                        url: recording_url,
                    }),
                    speech: None,
                    played: None,
                    transcription: None,
                    analysis: None,
                    failed: Vec::new(),
                    received_at: Some(received_at),
                    interrupted: None,
                });
            }
            CallEvent::SpeechReceived {
                turn,
                text,
                source,
                received_at,
                ..
            } => self.turns.push(Turn {
                number: turn,
                recording: None,
                speech: Some(source),
                played: None,
                transcription: Some((text, true)),
                analysis: None,
                failed: Vec::new(),
                received_at: Some(received_at),
                interrupted: None,
            }),
            CallEvent::AnswerDeferred { .. } => {}
            CallEvent::LanguageChosen { language, .. } => {
                self.language = language;
                self.language_chosen = true;
            }
            CallEvent::RelaySessionStarted { session_id, .. } => {
                self.relay_session = Some(session_id);
                self.relay_ended = false;
            }
            CallEvent::ReplyInterrupted { turn, heard, .. } => {
                if let Some(t) = self.turns.iter_mut().find(|t| t.number == turn) {
                    t.interrupted = Some(heard);
                }
            }
            CallEvent::RelaySessionEnded { .. } => self.relay_ended = true,
            CallEvent::CallRecordingReceived { recording_sid, .. } => {
                self.call_recordings.entry(recording_sid).or_insert(None);
            }
            CallEvent::CallRecordingKept {
                recording_sid, key, ..
            } => {
                self.call_recordings.insert(recording_sid, Some(key));
            }
            CallEvent::EarlyTranscriptionReceived {
                recording_sid,
                text,
                completed,
                at,
            } => {
                self.early_transcriptions
                    .insert(recording_sid, (text, completed, at));
            }
            CallEvent::TranscriptionReceived {
                turn,
                recording_sid,
                text,
                completed,
                ..
            } => {
                self.early_transcriptions.remove(&recording_sid);
                if let Some(t) = self.turns.iter_mut().find(|t| t.number == turn) {
                    t.transcription = Some((text, completed));
                }
            }
            CallEvent::Analyzed { turn, analysis, .. } => {
                self.person_warranted |= analysis.assessment.route == Route::Escalate;
                if let Some(t) = self.turns.iter_mut().find(|t| t.number == turn) {
                    t.analysis = Some(analysis);
                }
            }
            CallEvent::ProcessingFailed { turn, stage, .. } => {
                if let Some(t) = self.turns.iter_mut().find(|t| t.number == turn) {
                    if stage == Stage::Delivery {
                        // The REST path gives up its claim: the continue webhook plays it.
                        t.played = None;
                    }
                    t.failed.push(stage);
                }
            }
            CallEvent::ResponsePlayed { turn, via, .. } => {
                if let Some(t) = self.turns.iter_mut().find(|t| t.number == turn) {
                    t.played = Some(via);
                }
            }
            CallEvent::CallerChose { turn, choice, .. } => {
                self.choices.insert(turn, choice);
            }
            CallEvent::Escalated { reason, target, .. } => {
                self.person_warranted |= matches!(
                    reason,
                    EscalationReason::RiskAssessed
                        | EscalationReason::ProcessingFailed
                        | EscalationReason::DirectQuestion
                        | EscalationReason::EarlierRisk
                );
                self.escalations.push((reason, target));
            }
            CallEvent::DirectQuestionAsked { turn, .. } => {
                self.question = Question::Asked { turn };
            }
            CallEvent::DirectQuestionAnswered { answer, .. } => {
                self.person_warranted |= answer.warrants_person();
                self.question = Question::Answered(answer);
            }
            CallEvent::UtteranceScreened {
                turn, route, text, ..
            } => {
                self.person_warranted |= route == Route::Escalate;
                self.last_utterance = Some((turn, text));
            }
            CallEvent::StatusChanged {
                call_sid,
                status,
                sequence_number,
                ..
            } => self.remember_status(call_sid, status, sequence_number),
            CallEvent::Completed {
                call_sid,
                status,
                sequence_number,
                ..
            } => {
                self.ended = Some(status.clone());
                self.remember_status(call_sid, status, sequence_number);
            }
            CallEvent::LateCallbackReceived { callback, .. } => match callback {
                // Remembered only so that its duplicate is recognised; the state stays as it was.
                LateCallback::Status {
                    status,
                    sequence_number,
                } => {
                    self.seen_statuses
                        .insert((sequence_number, status.as_str().to_owned()));
                }
                LateCallback::Recording { recording_sid } => {
                    self.recordings.insert(recording_sid);
                }
            },
        }
    }
}
