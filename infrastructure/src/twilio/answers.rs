//! `CallAnswer` written as TwiML, for the webhooks' answers and for REST updates of a live call
//! alike. Every document ends in a way forward for the caller: a recording whose silence falls
//! through to an offer of a person, a `<Dial>`, or a goodbye they chose.

use application::{CallAnswer, Lines};
use domain::{script, CallId};

use super::routes::Webhook;

use super::twiml::{Dial, Gather, Record, Say, Verb, VoiceResponse};

/// How TwiML is written for this deployment.
#[derive(Debug, Clone)]
pub struct Voice {
    /// The URL Twilio calls; every URL in TwiML starts with it.
    pub public_base_url: String,
    /// Where callers are sent.
    pub lines: Lines,
    /// The text-to-speech voice.
    pub voice: String,
    /// The language of what is said.
    pub language: String,
    /// Ask Twilio to transcribe each turn (when no speech-to-text service is configured).
    pub transcribe: bool,
}

/// The longest a caller may speak in one turn, in seconds.
const MAX_TURN_SECS: u32 = 30;
/// How long `<Dial>` rings the counselor line before falling back to the crisis line.
const COUNSELOR_RING_SECS: u32 = 30;
/// How long `<Dial>` rings the crisis line.
const CRISIS_RING_SECS: u32 = 60;

/// The TwiML for `answer` on the call `id` (absent when the request did not name a usable call).
pub fn twiml(answer: &CallAnswer, id: Option<CallId>, voice: &Voice) -> VoiceResponse {
    let w = Writer { id, voice };
    match answer {
        CallAnswer::Greeting => w.greeting(),
        CallAnswer::Hold { waited } => {
            let line = if *waited <= 1 {
                script::holding()
            } else {
                script::still_holding()
            };
            w.say(VoiceResponse::new(), line)
                .pause(2)
                .redirect(format!("{}?wait={waited}", w.url(Webhook::Continue)))
        }
        CallAnswer::Reply { text } => w.offer_choice(w.say(VoiceResponse::new(), text)),
        CallAnswer::Question { reply } => w.ask_question(w.say(VoiceResponse::new(), reply)),
        CallAnswer::AfterQuestion => {
            w.offer_choice(w.say(VoiceResponse::new(), script::after_no()))
        }
        CallAnswer::Listen => w.listen(w.say(VoiceResponse::new(), script::listen_again())),
        CallAnswer::ChoiceAgain => {
            w.offer_choice(w.say(VoiceResponse::new(), script::choice_not_understood()))
        }
        CallAnswer::Goodbye => w
            .say(VoiceResponse::new(), &script::goodbye(&voice.lines.crisis))
            .hangup(),
        CallAnswer::ConnectCounselor => {
            w.dial_counselor(w.say(VoiceResponse::new(), script::connecting_counselor()))
        }
        CallAnswer::Escalating => {
            w.dial_counselor(w.say(VoiceResponse::new(), script::escalating()))
        }
        CallAnswer::ConnectCrisisLine => {
            w.dial_crisis_line(w.say(VoiceResponse::new(), script::connecting_crisis_line()))
        }
        CallAnswer::LastResort => w.listen(w.say(
            VoiceResponse::new(),
            &script::last_resort(&voice.lines.crisis),
        )),
        CallAnswer::Farewell => w.say(VoiceResponse::new(), script::farewell()).hangup(),
        CallAnswer::Trouble => {
            w.dial_counselor(w.say(VoiceResponse::new(), &script::trouble(&voice.lines.crisis)))
        }
        CallAnswer::Nothing => VoiceResponse::new(),
    }
}

struct Writer<'a> {
    id: Option<CallId>,
    voice: &'a Voice,
}

impl Writer<'_> {
    /// The absolute URL of `webhook`, for this call if it is known.
    fn url(&self, webhook: Webhook) -> String {
        format!("{}{}", self.voice.public_base_url, webhook.path(self.id))
    }

    fn say(&self, doc: VoiceResponse, text: &str) -> VoiceResponse {
        doc.verb(self.say_verb(text))
    }

    fn say_verb(&self, text: &str) -> Verb {
        Verb::Say(Say {
            text: text.to_owned(),
            voice: Some(self.voice.voice.clone()),
            language: Some(self.voice.language.clone()),
        })
    }

    /// The greeting can be interrupted with a key (0 for a counselor), then the first turn.
    fn greeting(&self) -> VoiceResponse {
        let doc = VoiceResponse::new().verb(Verb::Gather(Gather {
            action: self.url(Webhook::UserChoice),
            input: Some("dtmf".into()),
            num_digits: Some(1),
            timeout: Some(1),
            children: vec![self.say_verb(script::greeting())],
            ..Gather::default()
        }));
        self.listen(doc)
    }

    /// Records a turn. Twilio skips `action` when the recording is empty and runs the next verbs
    /// instead: an offer to try again or reach a person, then a person.
    fn listen(&self, doc: VoiceResponse) -> VoiceResponse {
        if self.id.is_none() {
            return self.dial_counselor(doc);
        }
        let doc = doc
            .verb(Verb::Record(Record {
                action: self.url(Webhook::Recording),
                // 0 ends the recording and asks for a counselor; # just ends it.
                finish_on_key: Some("0#".into()),
                max_length: Some(MAX_TURN_SECS),
                play_beep: Some(true),
                timeout: Some(5),
                trim: Some("trim-silence".into()),
                transcribe: self.voice.transcribe.then_some(true),
                transcribe_callback: self
                    .voice
                    .transcribe
                    .then(|| self.url(Webhook::Transcription)),
                ..Record::default()
            }))
            .verb(Verb::Gather(Gather {
                action: self.url(Webhook::UserChoice),
                input: Some("dtmf".into()),
                num_digits: Some(1),
                timeout: Some(8),
                children: vec![self.say_verb(&script::silence(&self.voice.lines.crisis))],
                ..Gather::default()
            }));
        self.dial_counselor(self.say(doc, script::connecting_counselor()))
    }

    /// The choice after a reply; with no answer, the conversation simply goes on.
    fn offer_choice(&self, doc: VoiceResponse) -> VoiceResponse {
        let doc = doc.verb(Verb::Gather(Gather {
            action: self.url(Webhook::UserChoice),
            hints: Some("continue, goodbye, counselor".into()),
            input: Some("dtmf speech".into()),
            language: Some(self.voice.language.clone()),
            num_digits: Some(1),
            speech_timeout: Some("auto".into()),
            timeout: Some(6),
            children: vec![self.say_verb(script::choice_prompt())],
            ..Gather::default()
        }));
        self.listen(self.say(doc, script::listen_again()))
    }

    /// The direct question, by speech or keys. Silence is an answer too (`actionOnEmptyResult`):
    /// it is not a clear no, so it reaches a person. Should Twilio run on past the `<Gather>`
    /// anyway, the caller is put through to a person.
    fn ask_question(&self, doc: VoiceResponse) -> VoiceResponse {
        if self.id.is_none() {
            return self.dial_counselor(doc);
        }
        let doc = doc.verb(Verb::Gather(Gather {
            action: self.url(Webhook::Question),
            action_on_empty_result: Some(true),
            hints: Some("yes, no, not sure, maybe, sí, no sé".into()),
            input: Some("dtmf speech".into()),
            language: Some(self.voice.language.clone()),
            num_digits: Some(1),
            speech_timeout: Some("auto".into()),
            timeout: Some(6),
            children: vec![self.say_verb(script::direct_question())],
        }));
        self.dial_counselor(self.say(doc, script::connecting_counselor()))
    }

    /// Dials the counselor line; its `action` falls back to the crisis line when nobody answers.
    fn dial_counselor(&self, doc: VoiceResponse) -> VoiceResponse {
        let lines = &self.voice.lines;
        if lines.counselor == lines.crisis {
            return self.dial_crisis_line(doc);
        }
        doc.verb(Verb::Dial(Dial {
            number: lines.counselor.as_str().to_owned(),
            action: Some(self.url(Webhook::DialStatus)),
            timeout: Some(COUNSELOR_RING_SECS),
            ..Dial::default()
        }))
    }

    /// Dials the crisis line; its `action` says which line it was, so that a caller nobody
    /// answered for hears the number and can go on talking, rather than being hung up on.
    fn dial_crisis_line(&self, doc: VoiceResponse) -> VoiceResponse {
        doc.verb(Verb::Dial(Dial {
            number: self.voice.lines.crisis.as_str().to_owned(),
            action: Some(format!("{}?line=crisis", self.url(Webhook::DialStatus))),
            timeout: Some(CRISIS_RING_SECS),
            ..Dial::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    //! Golden tests: every answer's whole document, pretty-printed under `golden/` so that what a
    //! caller hears can be reviewed word by word. `UPDATE_GOLDEN=1 cargo test -p infrastructure` rewrites them
    //! after a deliberate change; review the diff before committing it.

    use std::path::PathBuf;

    use application::Lines;
    use domain::{CallId, CallSid, DialNumber};
    use quick_xml::events::Event;
    use quick_xml::{Reader, Writer};

    use super::*;

    fn voice(counselor: &str) -> Voice {
        Voice {
            public_base_url: "https://hotline.example.org".into(),
            lines: Lines {
                counselor: DialNumber::parse(counselor).expect("valid"),
                crisis: DialNumber::parse("988").expect("valid"),
            },
            voice: "Polly.Joanna".into(),
            language: "en-US".into(),
            transcribe: false,
        }
    }

    fn call() -> Option<CallId> {
        let sid = CallSid::parse("CA0123456789abcdef0123456789abcdef").expect("valid");
        Some(CallId::for_call_sid(&sid))
    }

    /// The document re-indented, one element per line.
    fn pretty(xml: &str) -> String {
        let mut reader = Reader::from_str(xml);
        let mut writer = Writer::new_with_indent(Vec::new(), b' ', 2);
        loop {
            match reader.read_event().expect("well-formed") {
                Event::Eof => break,
                event => writer.write_event(event).expect("writes"),
            }
        }
        String::from_utf8(writer.into_inner()).expect("UTF-8") + "\n"
    }

    fn check(name: &str, answer: &CallAnswer, id: Option<CallId>, voice: &Voice) {
        let actual = pretty(&twiml(answer, id, voice).to_xml());
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("src/twilio/golden/{name}.xml"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &actual).expect("golden file written");
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("missing {}: run with UPDATE_GOLDEN=1", path.display()));
        assert_eq!(actual, expected, "{name} differs from {}", path.display());
    }

    #[test]
    fn every_answer_matches_its_golden_document() {
        let v = voice("+15005550001");
        let reply = CallAnswer::Reply {
            text: "A reply & <its> \"text\"".into(),
        };
        for (name, answer) in [
            ("greeting", &CallAnswer::Greeting),
            ("hold", &CallAnswer::Hold { waited: 0 }),
            ("hold_again", &CallAnswer::Hold { waited: 2 }),
            ("reply", &reply),
            (
                "question",
                &CallAnswer::Question {
                    reply: "A reply.".into(),
                },
            ),
            ("after_question", &CallAnswer::AfterQuestion),
            ("listen", &CallAnswer::Listen),
            ("choice_again", &CallAnswer::ChoiceAgain),
            ("goodbye", &CallAnswer::Goodbye),
            ("connect_counselor", &CallAnswer::ConnectCounselor),
            ("escalating", &CallAnswer::Escalating),
            ("connect_crisis_line", &CallAnswer::ConnectCrisisLine),
            ("farewell", &CallAnswer::Farewell),
            ("last_resort", &CallAnswer::LastResort),
            ("trouble", &CallAnswer::Trouble),
            ("nothing", &CallAnswer::Nothing),
        ] {
            check(name, answer, call(), &v);
        }
        // Without a call to name (a malformed URL), and without a separate counselor line.
        check("trouble_unknown_call", &CallAnswer::Trouble, None, &v);
        check(
            "trouble_crisis_line_only",
            &CallAnswer::Trouble,
            call(),
            &voice("988"),
        );
        // Without a speech-to-text service, Twilio is asked to transcribe each turn.
        let transcribing = Voice {
            transcribe: true,
            ..voice("+15005550001")
        };
        check(
            "listen_transcribed",
            &CallAnswer::Listen,
            call(),
            &transcribing,
        );
    }

    #[test]
    fn no_answer_ends_in_silence() {
        // Every caller-facing answer either hangs up after a goodbye the caller chose, or ends with
        // a person being dialled or the crisis number being read out.
        let v = voice("+15005550001");
        for answer in [
            CallAnswer::Greeting,
            CallAnswer::Hold { waited: 1 },
            CallAnswer::Reply { text: "x".into() },
            CallAnswer::Question { reply: "x".into() },
            CallAnswer::AfterQuestion,
            CallAnswer::Listen,
            CallAnswer::ChoiceAgain,
            CallAnswer::Goodbye,
            CallAnswer::ConnectCounselor,
            CallAnswer::Escalating,
            CallAnswer::ConnectCrisisLine,
            CallAnswer::Farewell,
            CallAnswer::LastResort,
            CallAnswer::Trouble,
        ] {
            let doc = twiml(&answer, call(), &v);
            let last = doc.verbs().last().cloned();
            let ends_well = match &last {
                Some(Verb::Hangup | Verb::Redirect { .. } | Verb::Dial(_)) => true,
                Some(Verb::Say(say)) => say.text.contains("9 8 8"),
                _ => false,
            };
            assert!(ends_well, "{answer:?} ends with {last:?}");
        }
    }
}
