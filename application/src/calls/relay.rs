//! The live session (ConversationRelay): each message Twilio sends over the call's WebSocket is a
//! use case here, and each says what to send back. The words are streamed by the adapter, but
//! only what `guarded_sentences` lets through, sentence by sentence: the caller never hears a
//! word the safe-messaging guard did not pass. Any sign of risk, 0, "counselor", or a failure on
//! our side ends the session with a handoff, and the `<Connect action>` webhook puts the caller
//! through to a person; a session that ended any other way (a dropped socket) does too.

use cqrs_es::EventStore;
use domain::call::{
    Analysis, AnswerTurn, ChooseLanguage, EndRelaySession, InterruptReply, LanguageChoice,
    PlayedVia, ReceiveSpeech, ReplySource, SpeechAnswer, SpeechSource, StageTimings,
    StartRelaySession,
};
use domain::risk::{RiskAssessment, Route, Screening};
use domain::{script, Call, CallCommand, CallId, CallSid, Choice, Language};

use super::{in_call, log_failure, only_a_choice, trouble, CallService, ChoiceInput};
use crate::answer::{CallAnswer, Spoken};
use crate::guarded::{guarded_sentences, GuardedSentences};
use crate::metadata::CommandMetadata;
use crate::responder::Words;

/// Why the session was ended, as `handoffData` tells the `<Connect action>` webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// The caller asked for a person.
    CallerRequested,
    /// What the caller said warrants a person.
    Risk,
    /// The caller said goodbye.
    Goodbye,
    /// Something on our side failed: a person is the safe way on.
    Trouble,
    /// The caller said nothing at all.
    Silence,
}

impl Handoff {
    /// The `handoffData` string.
    pub fn data(self) -> &'static str {
        match self {
            Self::CallerRequested => r#"{"reason":"caller_requested"}"#,
            Self::Risk => r#"{"reason":"risk"}"#,
            Self::Goodbye => r#"{"reason":"goodbye"}"#,
            Self::Trouble => r#"{"reason":"trouble"}"#,
            Self::Silence => r#"{"reason":"silence"}"#,
        }
    }
}

/// What to send the caller over the session.
#[derive(Debug)]
pub enum Relay {
    /// Speak these words (a whole vetted line).
    Say(String),
    /// Switch the session's speech recognition and voice to this language.
    Language(Language),
    /// End the session; the `<Connect action>` webhook says what comes next.
    End(Handoff),
}

/// What a final prompt leads to.
#[derive(Debug)]
pub enum Heard {
    /// Messages to send, and nothing to stream.
    Send(Vec<Relay>),
    /// A reply to stream, sentence by sentence, for turn `turn`, after the messages `before`
    /// (a switch of language); when it has been sent (or the caller interrupted it),
    /// `CallService::relay_answered` records it.
    Stream {
        before: Vec<Relay>,
        reply: Box<ReplyInProgress>,
    },
}

/// A reply being streamed.
#[derive(Debug)]
pub struct ReplyInProgress {
    pub turn: u32,
    pub sentences: GuardedSentences,
    pub language: Language,
    screening: Screening,
    assessment: RiskAssessment,
    transcript: String,
    model: Option<String>,
}

impl ReplyInProgress {
    /// The analysis of the turn, with the reply as it was sent.
    fn analysis(self, sent: String, source: ReplySource) -> Analysis {
        Analysis {
            transcript: self.transcript,
            screening: self.screening,
            assessment: self.assessment,
            model: self.model,
            reply: Some(sent),
            reply_source: Some(source),
            timings: StageTimings::default(),
            recording_key: None,
        }
    }
}

impl<ES: EventStore<Call>> CallService<ES> {
    /// `setup`: the session opened for call `id`. A session whose `callSid` is not the call its
    /// URL names is refused.
    pub async fn relay_started(
        &self,
        id: CallId,
        call_sid: &CallSid,
        session_id: String,
        meta: &CommandMetadata,
    ) -> Result<Call, crate::AppError> {
        if CallId::for_call_sid(call_sid) != id {
            return Err(crate::AppError::WrongCall);
        }
        let command = CallCommand::StartRelaySession(StartRelaySession {
            session_id,
            at: meta.received_at,
        });
        self.run(id, command, meta).await
    }

    /// A final `prompt`: the caller's words. Screened first; a request for a person or a
    /// goodbye is that choice; the answer to the direct question is that; anything else is a
    /// turn, whose reply is streamed only when neither the screener, the model nor anything
    /// earlier in the call warrants a person.
    pub async fn relay_prompt(
        &self,
        id: CallId,
        call_sid: CallSid,
        text: String,
        lang: Option<&str>,
        meta: &CommandMetadata,
    ) -> Heard {
        let text = text.trim().to_owned();
        if text.is_empty() {
            return Heard::Send(vec![]);
        }
        let state = match self.known(id).await {
            Ok(state) => state,
            Err(error) => return failed(&error),
        };
        if matches!(state.question(), domain::call::Question::Asked { .. }) {
            let input = ChoiceInput {
                digits: None,
                speech: Some(text),
                turn: None,
            };
            let spoken = self.answer_question(id, input, meta).await;
            return Heard::Send(said(spoken));
        }
        if only_a_choice(&text) {
            let input = ChoiceInput {
                digits: None,
                speech: Some(text),
                turn: None,
            };
            let spoken = self.record_choice(id, input, meta).await;
            return Heard::Send(said(spoken));
        }
        let language = state.language();
        // The words' language: the screener's reading of them, or else Twilio's `lang` where it
        // names another language than the session's (Twilio detected it, as with `multi`).
        let screening = domain::risk::screen(&text);
        let twilio_heard = lang
            .and_then(Language::from_tag)
            .filter(|heard| *heard != language);
        let command = CallCommand::ReceiveSpeech(ReceiveSpeech {
            call_sid,
            text: text.clone(),
            confidence: None,
            source: SpeechSource::Relay,
            answer: SpeechAnswer::Streaming,
            heard_in: screening.language.or(twilio_heard),
            counselor_line: self.lines.counselor_for(language).clone(),
            at: meta.received_at,
        });
        // The words are put on record while the model is asked for its opinion and its reply:
        // the caller's wait is the longer of the two, not their sum. Nothing is sent before
        // both are done, so no reply ever goes out for words that are not on record.
        let reply_language = screening.language.or(twilio_heard).unwrap_or(language);
        let fallback = script::scripted_reply(reply_language);
        let stream = async {
            match self.responder.model() {
                Some(model) => Some(
                    model
                        .stream_reply(&text, screening.level, reply_language)
                        .await,
                ),
                None => None,
            }
        };
        let (stored, ((screening, assessment), stream)) =
            tokio::join!(self.run(id, command, meta), async {
                tokio::join!(self.responder.assess(&text, Words::Readable), stream)
            });
        let state = match stored {
            Ok(state) => state,
            Err(error) => return failed(&error),
        };
        let Some(turn) = state.current_turn().map(|t| t.number) else {
            return failed(&crate::AppError::Rule(domain::CallError::NothingToPlay));
        };
        // First words in another language switched the call: the session listens and speaks
        // in it from now on.
        let before = if state.language() == language {
            vec![]
        } else {
            vec![Relay::Language(state.language())]
        };
        if assessment.route == Route::Escalate || state.warrants_person() {
            let analysis = Analysis {
                transcript: text,
                screening,
                assessment,
                model: self.responder.model_name(),
                reply: None,
                reply_source: None,
                timings: StageTimings::default(),
                recording_key: None,
            };
            let mut messages = before;
            messages.extend(
                self.answer_relay_turn(id, turn, analysis, false, meta)
                    .await,
            );
            return Heard::Send(messages);
        }
        let sentences = match stream {
            Some(Ok(stream)) => guarded_sentences(stream, fallback),
            Some(Err(error)) => {
                tracing::warn!(error = %error, "the model's reply could not start; using the script");
                guarded_sentences(
                    Box::pin(futures_util::stream::iter([Ok(fallback.to_owned())])),
                    fallback,
                )
            }
            None => guarded_sentences(
                Box::pin(futures_util::stream::iter([Ok(fallback.to_owned())])),
                fallback,
            ),
        };
        Heard::Stream {
            before,
            reply: Box::new(ReplyInProgress {
                turn,
                sentences,
                language: reply_language,
                screening,
                assessment,
                transcript: text,
                model: self.responder.model_name(),
            }),
        }
    }

    /// The streamed reply was sent (all of it, or what the caller heard before speaking over
    /// it): it is recorded with its playing, and the direct question follows the first one.
    pub async fn relay_answered(
        &self,
        id: CallId,
        reply: Box<ReplyInProgress>,
        sent: String,
        source: ReplySource,
        cut_off: bool,
        meta: &CommandMetadata,
    ) -> Vec<Relay> {
        let turn = reply.turn;
        let analysis = reply.analysis(sent, source);
        self.answer_relay_turn(id, turn, analysis, cut_off, meta)
            .await
    }

    async fn answer_relay_turn(
        &self,
        id: CallId,
        turn: u32,
        analysis: Analysis,
        cut_off: bool,
        meta: &CommandMetadata,
    ) -> Vec<Relay> {
        let counselor = self.counselor_for(id).await;
        let command = CallCommand::AnswerTurn(AnswerTurn {
            turn,
            analysis,
            via: PlayedVia::Relay,
            cut_off,
            counselor_line: counselor,
            at: meta.received_at,
        });
        match self.run(id, command, meta).await {
            Ok(state) if state.is_escalated() => {
                vec![
                    Relay::Say(script::escalating(state.language()).to_owned()),
                    Relay::End(Handoff::Risk),
                ]
            }
            Ok(state) if state.asks_question_after(turn) => {
                vec![Relay::Say(
                    script::direct_question(state.language()).to_owned(),
                )]
            }
            Ok(_) => vec![],
            Err(error) => failed_messages(&error),
        }
    }

    /// `interrupt`: the caller spoke over the reply; what they heard of it is recorded.
    pub async fn relay_interrupted(
        &self,
        id: CallId,
        heard: String,
        duration_ms: Option<u64>,
        meta: &CommandMetadata,
    ) {
        let command = CallCommand::InterruptReply(InterruptReply {
            heard,
            duration_ms,
            at: meta.received_at,
        });
        // The caller hears the session go on whatever happens to this record: spooled alone.
        let recorded = self
            .record(
                id,
                command,
                meta,
                super::Heard::ByCaller,
                super::Outage::Keep,
            )
            .await;
        if let Err(error) = recorded {
            log_failure(&error);
        }
    }

    /// `dtmf`: 0 is a person; 9 before the caller first spoke is Spanish; 1 and 2 answer the
    /// direct question when it was asked; any other key is not a choice.
    pub async fn relay_dtmf(
        &self,
        id: CallId,
        digit: String,
        meta: &CommandMetadata,
    ) -> Vec<Relay> {
        let state = match self.known(id).await {
            Ok(state) => state,
            Err(error) => return failed_messages(&error),
        };
        let digit = digit.trim().to_owned();
        if digit.starts_with('9')
            && state.turns().is_empty()
            && state.language() != Language::Spanish
        {
            let command = CallCommand::ChooseLanguage(ChooseLanguage {
                language: Language::Spanish,
                how: LanguageChoice::Keys,
                at: meta.received_at,
            });
            return match self.run(id, command, meta).await {
                Ok(_) => vec![
                    Relay::Language(Language::Spanish),
                    Relay::Say(format!(
                        "{} {}",
                        script::greeting(Language::Spanish),
                        script::first_invitation(Language::Spanish, script::Listening::AsTheySpeak)
                    )),
                ],
                Err(error) => failed_messages(&error),
            };
        }
        let asked = matches!(state.question(), domain::call::Question::Asked { .. });
        let input = ChoiceInput {
            digits: Some(digit.clone()),
            speech: None,
            turn: None,
        };
        if asked && !Choice::keys_ask_for_person(Some(&digit)) {
            return said(self.answer_question(id, input, meta).await);
        }
        // 0 a person, 1 go on, 2 goodbye, as at every prompt of the other modes.
        match Choice::from_input(Some(&digit), None) {
            Some(_) => said(self.record_choice(id, input, meta).await),
            None => vec![],
        }
    }

    /// `POST /twilio/relay-ended/{call_id}/`: the session is over. The caller goes where the
    /// session sent them: a person, or the goodbye they chose; a session that ended any other
    /// way puts them through to a person.
    pub async fn relay_ended(
        &self,
        id: CallId,
        status: String,
        error_code: Option<String>,
        handoff: Option<String>,
        meta: &CommandMetadata,
    ) -> Spoken {
        let handed_off = handoff.is_some();
        let command = CallCommand::EndRelaySession(EndRelaySession {
            status,
            error_code,
            handoff,
            counselor_line: self.counselor_for(id).await,
            at: meta.received_at,
        });
        let state = match self.run(id, command, meta).await {
            Ok(state) => state,
            Err(error) => return trouble(&error),
        };
        let turn = state.current_turn().map_or(0, |t| t.number);
        if state.ended().is_some() {
            in_call(&state, CallAnswer::Nothing)
        } else if state.chose_to_end(turn) && !state.warrants_person() {
            in_call(&state, CallAnswer::Goodbye)
        } else if state.is_escalated() && handed_off {
            // The caller heard why over the session: they are put through at once.
            in_call(&state, CallAnswer::PutThrough)
        } else {
            // The session was lost (a dropped socket, a restart): the caller hears that a
            // person is coming, and is put through.
            in_call(&state, CallAnswer::Trouble)
        }
    }
}

impl<ES: EventStore<Call>> CallService<ES> {
    /// The caller has said nothing for a while: the first time they are told we are still
    /// here; the second time, silence may be the hardest way to ask for help, so the session
    /// hands them to a person, and the escalation is recorded.
    pub async fn relay_silence(
        &self,
        id: CallId,
        times: u32,
        meta: &CommandMetadata,
    ) -> Vec<Relay> {
        let language = match self.known(id).await {
            Ok(state) => state.language(),
            Err(error) => return failed_messages(&error),
        };
        if times < 2 {
            return vec![Relay::Say(script::still_here(language).to_owned())];
        }
        let command = CallCommand::Escalate(domain::call::Escalate {
            reason: domain::call::EscalationReason::Silence,
            target: self.lines.counselor_for(language).clone(),
            unless_escalated: false,
            at: meta.received_at,
        });
        match self.run(id, command, meta).await {
            Ok(_) => vec![
                Relay::Say(script::nothing_heard(&self.lines.crisis, language)),
                Relay::End(Handoff::Silence),
            ],
            Err(error) => failed_messages(&error),
        }
    }
}

/// What the caller hears over the session for a use case's answer: its vetted words, and the end
/// of the session when the answer is a person or a goodbye.
fn said(spoken: Spoken) -> Vec<Relay> {
    let language = spoken.language;
    match spoken.answer {
        CallAnswer::ConnectCounselor => vec![
            Relay::Say(script::connecting_counselor(language).to_owned()),
            Relay::End(Handoff::CallerRequested),
        ],
        CallAnswer::Escalating => vec![
            Relay::Say(script::escalating(language).to_owned()),
            Relay::End(Handoff::Risk),
        ],
        CallAnswer::Goodbye => vec![Relay::End(Handoff::Goodbye)],
        CallAnswer::AfterQuestion => vec![Relay::Say(format!(
            "{} {}",
            script::after_no(language),
            script::listen_again(language, script::Listening::AsTheySpeak)
        ))],
        CallAnswer::Listen => vec![Relay::Say(
            script::listen_again(language, script::Listening::AsTheySpeak).to_owned(),
        )],
        CallAnswer::Nothing => vec![],
        _ => vec![Relay::End(Handoff::Trouble)],
    }
}

fn failed(error: &crate::AppError) -> Heard {
    Heard::Send(failed_messages(error))
}

/// Our side failed: the session ends, and the `<Connect action>` puts the caller through.
fn failed_messages(error: &crate::AppError) -> Vec<Relay> {
    log_failure(error);
    vec![Relay::End(Handoff::Trouble)]
}
