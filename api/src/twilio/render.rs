//! `CallAnswer` written as TwiML. Every document ends in a way forward for the caller: a recording
//! whose silence falls through to an offer of a person, a `<Dial>`, or a goodbye they chose.

use application::CallAnswer;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use domain::{script, CallId};
use infrastructure::twilio::twiml::{Dial, Gather, Record, Say, Verb, VoiceResponse};

use crate::state::Voice;

/// The longest a caller may speak in one turn, in seconds.
const MAX_TURN_SECS: u32 = 30;
/// How long `<Dial>` rings the counselor line before falling back to the crisis line.
const COUNSELOR_RING_SECS: u32 = 30;
/// How long `<Dial>` rings the crisis line.
const CRISIS_RING_SECS: u32 = 60;

/// A TwiML document as an HTTP response.
pub fn respond(doc: &VoiceResponse) -> Response {
    ([(CONTENT_TYPE, "text/xml; charset=utf-8")], doc.to_xml()).into_response()
}

/// The TwiML for `answer` on the call `id` (absent when the request did not name a usable call).
pub fn twiml(answer: &CallAnswer, id: Option<CallId>, voice: &Voice) -> VoiceResponse {
    let w = Writer { id, voice };
    match answer {
        CallAnswer::Greeting => w.greeting(),
        CallAnswer::Hold => w
            .say(VoiceResponse::new(), script::holding())
            .pause(2)
            .redirect(w.url("continue")),
        CallAnswer::Reply { text } => w.offer_choice(w.say(VoiceResponse::new(), text)),
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
        CallAnswer::ConnectCrisisLine => {
            w.dial_crisis_line(w.say(VoiceResponse::new(), script::connecting_crisis_line()))
        }
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
    /// The absolute URL of a per-call webhook (`/twilio/{kind}/{call_id}/`).
    fn url(&self, kind: &str) -> String {
        match self.id {
            Some(id) => format!("{}/twilio/{kind}/{id}/", self.voice.public_base_url),
            None => format!("{}/twilio/{kind}/", self.voice.public_base_url),
        }
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
            action: self.url("user-choice"),
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
                action: self.url("recording"),
                // 0 ends the recording and asks for a counselor; # just ends it.
                finish_on_key: Some("0#".into()),
                max_length: Some(MAX_TURN_SECS),
                play_beep: Some(true),
                timeout: Some(5),
                trim: Some("trim-silence".into()),
                ..Record::default()
            }))
            .verb(Verb::Gather(Gather {
                action: self.url("user-choice"),
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
            action: self.url("user-choice"),
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

    /// Dials the counselor line; its `action` falls back to the crisis line when nobody answers.
    fn dial_counselor(&self, doc: VoiceResponse) -> VoiceResponse {
        let lines = &self.voice.lines;
        if lines.counselor == lines.crisis {
            return self.dial_crisis_line(doc);
        }
        doc.verb(Verb::Dial(Dial {
            number: lines.counselor.as_str().to_owned(),
            action: Some(self.url("dial-status")),
            timeout: Some(COUNSELOR_RING_SECS),
            ..Dial::default()
        }))
    }

    fn dial_crisis_line(&self, doc: VoiceResponse) -> VoiceResponse {
        let crisis = &self.voice.lines.crisis;
        let doc = doc.verb(Verb::Dial(Dial {
            number: crisis.as_str().to_owned(),
            timeout: Some(CRISIS_RING_SECS),
            ..Dial::default()
        }));
        self.say(doc, &script::last_resort(crisis))
    }
}
