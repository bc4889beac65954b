//! `CallAnswer` written as TwiML, for the webhooks' answers and for REST updates of a live call
//! alike, in the call's language and for the deployment's way of hearing the caller (record,
//! speech, or the live relay). Every document ends in a way forward for the caller: a prompt whose
//! silence falls through to an offer of a person, a `<Dial>`, or a goodbye they chose.

use application::{CallAnswer, Lines, Spoken, WhisperAnswer};
use domain::script::{self, Listening};
use domain::{CallId, Language};

use super::routes::Webhook;

use super::twiml::{
    Connect, ConversationRelay, Dial, Gather, Record, RelayLanguage, Say, StartRecording, Verb,
    VoiceResponse,
};

/// How the caller's turns are heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Conversation {
    /// `<Gather input="speech">`: Twilio recognises the words and the answer comes back in the
    /// same response. The default.
    #[default]
    Speech,
    /// `<Record>`: the recording is transcribed and answered by the pipeline (REST update).
    Record,
    /// `<Connect><ConversationRelay>`: a live session over a WebSocket, replies streamed.
    Relay,
}

impl Conversation {
    /// Reads `speech`, `record` or `relay`.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "speech" => Some(Self::Speech),
            "record" => Some(Self::Record),
            "relay" => Some(Self::Relay),
            _ => None,
        }
    }

    /// What the prompts tell the caller about how to speak.
    pub fn listening(self) -> Listening {
        match self {
            Self::Record => Listening::AfterTone,
            Self::Speech | Self::Relay => Listening::AsTheySpeak,
        }
    }
}

/// The text-to-speech voice for each language: `<Say>`'s, and the live session's.
#[derive(Debug, Clone)]
pub struct Voices {
    pub english: String,
    pub spanish: String,
    pub relay: RelayVoices,
}

impl Voices {
    pub fn for_language(&self, language: Language) -> &str {
        match language {
            Language::English => &self.english,
            Language::Spanish => &self.spanish,
        }
    }
}

impl Default for Voices {
    fn default() -> Self {
        Self {
            english: "Polly.Joanna".into(),
            spanish: "Polly.Lupe".into(),
            relay: RelayVoices::default(),
        }
    }
}

/// ConversationRelay names its voices per provider (a Google voice name, an ElevenLabs voice
/// id), not as `<Say>` does (`Polly.Joanna`), and a voice the provider does not have for the
/// language fails the session (error 64106). So none is named unless configured: Twilio then
/// speaks each language in its provider's default voice for it.
#[derive(Debug, Clone, Default)]
pub struct RelayVoices {
    pub provider: Option<String>,
    pub english: Option<String>,
    pub spanish: Option<String>,
}

impl RelayVoices {
    fn for_language(&self, language: Language) -> Option<String> {
        match language {
            Language::English => self.english.clone(),
            Language::Spanish => self.spanish.clone(),
        }
    }
}

/// How several counselors are rung.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ring {
    /// One after another, each when the one before did not take the call. The default.
    #[default]
    InOrder,
    /// All at once, in one `<Dial>`: the first to pick up (and, with whispers, press 1) takes
    /// the call; if none does, the crisis line.
    Together,
}

impl Ring {
    /// Reads `order` or `together`.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "order" => Some(Self::InOrder),
            "together" => Some(Self::Together),
            _ => None,
        }
    }
}

/// Pre-recorded prompts, played with `<Play>` instead of text-to-speech where configured.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// A human-voiced greeting per language (an absolute URL Twilio can fetch).
    pub greeting_en: Option<String>,
    pub greeting_es: Option<String>,
}

impl Recorded {
    fn greeting(&self, language: Language) -> Option<&str> {
        match language {
            Language::English => self.greeting_en.as_deref(),
            Language::Spanish => self.greeting_es.as_deref(),
        }
    }
}

/// How TwiML is written for this deployment.
#[derive(Debug, Clone)]
pub struct Voice {
    /// The URL Twilio calls; every URL in TwiML starts with it.
    pub public_base_url: String,
    /// Where callers are sent.
    pub lines: Lines,
    /// The text-to-speech voices.
    pub voices: Voices,
    /// How turns are heard.
    pub conversation: Conversation,
    /// Ask Twilio to transcribe each turn (record mode, when no speech-to-text service is
    /// configured).
    pub transcribe: bool,
    /// Pre-recorded prompts.
    pub recorded: Recorded,
    /// Counselors hear a whisper (`<Number url>`) and press 1 to take the call.
    pub whisper: bool,
    /// How several counselors are rung.
    pub ring: Ring,
    /// Record the whole call (`<Start><Recording>` in its first answer), for the record: in
    /// speech and live modes no turn has a recording of its own.
    pub record_calls: bool,
}

/// The longest a caller may speak in one turn, in seconds.
const MAX_TURN_SECS: u32 = 30;
/// How long `<Dial>` rings the counselor line before falling back to the crisis line.
const COUNSELOR_RING_SECS: u32 = 30;
/// How long `<Dial>` rings the crisis line.
const CRISIS_RING_SECS: u32 = 60;
/// Words a speech `<Gather>` should expect, so that a plea for a person is recognised.
const SPEECH_HINTS: &str = "counselor, person, human, goodbye, help, consejero, persona, adiós";

/// The TwiML for `spoken` on the call `id` (absent when the request did not name a usable call).
pub fn twiml(spoken: &Spoken, id: Option<CallId>, voice: &Voice) -> VoiceResponse {
    let language = spoken.language;
    let w = Writer {
        id,
        voice,
        language,
        turn: spoken.turn,
    };
    let crisis = &voice.lines.crisis;
    let listening = voice.conversation.listening();
    match &spoken.answer {
        CallAnswer::Welcome => w.welcome(),
        CallAnswer::Greeting => w.greeting(),
        CallAnswer::Hold { waited } => {
            let line = if *waited <= 1 {
                script::holding(language)
            } else {
                script::still_holding(language)
            };
            w.say(VoiceResponse::new(), line)
                .pause(2)
                .redirect(format!("{}?wait={waited}", w.url(Webhook::Continue)))
        }
        CallAnswer::Reply { text } => w.offer_choice(VoiceResponse::new(), text),
        CallAnswer::Question { reply } => w.ask_question(w.say(VoiceResponse::new(), reply)),
        CallAnswer::AfterQuestion => {
            w.offer_choice(VoiceResponse::new(), script::after_no(language))
        }
        CallAnswer::Listen => w.listen(
            VoiceResponse::new(),
            script::listen_again(language, listening),
        ),
        CallAnswer::ChoiceAgain => w.offer_choice(
            VoiceResponse::new(),
            script::choice_not_understood(language),
        ),
        CallAnswer::Goodbye => w
            .say(VoiceResponse::new(), &script::goodbye(crisis, language))
            .hangup(),
        CallAnswer::NextCounselor { attempt } => w.dial_counselor_at(
            w.say(
                VoiceResponse::new(),
                &script::trying_another(crisis, language),
            ),
            *attempt,
        ),
        CallAnswer::ConnectCounselor => {
            w.dial_counselor(w.say(VoiceResponse::new(), script::connecting_counselor(language)))
        }
        CallAnswer::Escalating => {
            w.dial_counselor(w.say(VoiceResponse::new(), script::escalating(language)))
        }
        CallAnswer::ConnectCrisisLine => w.dial_crisis_line(w.say(
            VoiceResponse::new(),
            script::connecting_crisis_line(language),
        )),
        CallAnswer::LastResort => w.listen(
            VoiceResponse::new(),
            &script::last_resort(crisis, language, listening),
        ),
        CallAnswer::Farewell => w
            .say(VoiceResponse::new(), script::farewell(language))
            .hangup(),
        CallAnswer::Trouble => {
            w.dial_counselor(w.say(VoiceResponse::new(), &script::trouble(crisis, language)))
        }
        CallAnswer::NothingHeard => w.dial_counselor(w.say(
            VoiceResponse::new(),
            &script::nothing_heard(crisis, language),
        )),
        CallAnswer::PutThrough => w.dial_counselor(VoiceResponse::new()),
        // Never an empty document: a caller Twilio still asks about must not be left in silence.
        CallAnswer::Nothing => {
            w.dial_counselor(w.say(VoiceResponse::new(), &script::trouble(crisis, language)))
        }
    }
}

/// How long a counselor has to press 1 after the whisper.
const WHISPER_WAIT_SECS: u32 = 8;

/// The TwiML of the counselor's leg: the whisper and its choice, or what their key led to. An
/// empty document ends the whisper, and Twilio bridges the two; a hang-up passes the call on.
pub fn whisper_twiml(
    answer: &WhisperAnswer,
    id: CallId,
    attempt: u32,
    voice: &Voice,
) -> VoiceResponse {
    let say = |text: &str| {
        Verb::Say(Say {
            text: text.to_owned(),
            voice: Some(voice.voices.english.clone()),
            language: Some(Language::English.tag().to_owned()),
        })
    };
    match answer {
        WhisperAnswer::Summary(summary) => VoiceResponse::new()
            .verb(Verb::Gather(Gather {
                action: format!(
                    "{}{}?attempt={attempt}",
                    voice.public_base_url,
                    Webhook::WhisperAnswer.path(Some(id))
                ),
                input: Some("dtmf".into()),
                num_digits: Some(1),
                timeout: Some(WHISPER_WAIT_SECS),
                children: vec![say(summary)],
                ..Gather::default()
            }))
            // No key: the call goes on to the next counselor.
            .verb(say("The call is being passed on."))
            .hangup(),
        WhisperAnswer::Bridge => VoiceResponse::new(),
        WhisperAnswer::PassOn => VoiceResponse::new()
            .verb(say("The call is being passed on."))
            .hangup(),
    }
}

/// The whisper when its request names no usable call: a caller is waiting all the same, so the
/// counselor is told and the two are bridged.
pub fn whisper_unknown(voice: &Voice) -> VoiceResponse {
    VoiceResponse::new().verb(Verb::Say(Say {
        text: "A caller from the hotline is being put through to you.".into(),
        voice: Some(voice.voices.english.clone()),
        language: Some(Language::English.tag().to_owned()),
    }))
}

struct Writer<'a> {
    id: Option<CallId>,
    voice: &'a Voice,
    language: Language,
    /// The call's turn, when known: the choice prompt's URL names it.
    turn: Option<u32>,
}

impl Writer<'_> {
    /// The absolute URL of `webhook`, for this call if it is known.
    fn url(&self, webhook: Webhook) -> String {
        format!("{}{}", self.voice.public_base_url, webhook.path(self.id))
    }

    /// The choice prompt's action, naming the turn it is offered at (signed with the URL): an
    /// answer to it replayed at a later turn changes nothing.
    fn choice_url(&self) -> String {
        let url = self.url(Webhook::UserChoice);
        match (self.turn, self.id) {
            (Some(turn), Some(_)) => format!("{url}?turn={turn}"),
            _ => url,
        }
    }

    fn say(&self, doc: VoiceResponse, text: &str) -> VoiceResponse {
        doc.verb(self.say_verb(text))
    }

    fn say_verb(&self, text: &str) -> Verb {
        self.say_in(self.language, text)
    }

    fn say_in(&self, language: Language, text: &str) -> Verb {
        Verb::Say(Say {
            text: text.to_owned(),
            voice: Some(self.voice.voices.for_language(language).to_owned()),
            language: Some(language.tag().to_owned()),
        })
    }

    /// Disclosure, the way to a counselor and (in English) the offer of Spanish, then the first
    /// turn; a pre-recorded greeting is played instead of the spoken one where configured.
    fn greeting_verbs(&self) -> Vec<Verb> {
        let mut verbs = vec![match self.voice.recorded.greeting(self.language) {
            Some(url) => Verb::Play {
                url: url.to_owned(),
            },
            None => self.say_verb(script::greeting(self.language)),
        }];
        if self.language == Language::English {
            verbs.push(self.say_in(Language::Spanish, script::spanish_offer()));
        }
        verbs
    }

    /// The call's first answer: the greeting, after the recording of the whole call is started
    /// (Twilio starts it before running the next verb, so it holds the greeting too).
    fn welcome(&self) -> VoiceResponse {
        let greeting = self.greeting();
        match self.id {
            Some(_) if self.voice.record_calls => {
                let mut verbs = vec![Verb::StartRecording(StartRecording {
                    recording_status_callback: self.url(Webhook::CallRecording),
                    recording_status_callback_event: Some("completed absent".into()),
                    channels: Some("dual".into()),
                    trim: Some("do-not-trim".into()),
                })];
                verbs.extend(greeting.verbs().iter().cloned());
                verbs
                    .into_iter()
                    .fold(VoiceResponse::new(), VoiceResponse::verb)
            }
            _ => greeting,
        }
    }

    fn greeting(&self) -> VoiceResponse {
        let listening = self.voice.conversation.listening();
        let invitation = script::first_invitation(self.language, listening);
        match self.voice.conversation {
            // The greeting can be interrupted with a key (0 for a counselor, 9 for Spanish),
            // then the first turn is recorded.
            Conversation::Record => {
                let mut verbs = self.greeting_verbs();
                verbs.push(self.say_verb(invitation));
                self.record(VoiceResponse::new().verb(Verb::Gather(Gather {
                    action: self.choice_url(),
                    input: Some("dtmf".into()),
                    num_digits: Some(1),
                    timeout: Some(1),
                    children: verbs,
                    ..Gather::default()
                })))
            }
            Conversation::Speech => {
                let mut verbs = self.greeting_verbs();
                verbs.push(self.say_verb(invitation));
                self.gather_speech(VoiceResponse::new(), verbs)
            }
            Conversation::Relay => self.relay(invitation),
        }
    }

    /// The live session. Its greeting is spoken by Twilio's text-to-speech when the session
    /// opens; should the session fail to open, the `<Connect action>` answers with a person.
    fn relay(&self, invitation: &str) -> VoiceResponse {
        let Some(id) = self.id else {
            return self.dial_counselor(VoiceResponse::new());
        };
        let mut greeting = script::greeting(self.language).to_owned();
        if self.language == Language::English {
            greeting = format!("{greeting} {}", script::spanish_offer());
        }
        let greeting = format!("{greeting} {invitation}");
        let socket = twilio_signature::websocket_url(
            &self.voice.public_base_url,
            &Webhook::Relay.path(Some(id)),
        );
        let other = match self.language {
            Language::English => Language::Spanish,
            Language::Spanish => Language::English,
        };
        VoiceResponse::new().verb(Verb::Connect(Connect {
            action: self.url(Webhook::RelayEnded),
            relay: ConversationRelay {
                url: socket,
                welcome_greeting: Some(greeting),
                language: Some(self.language.tag().to_owned()),
                voice: self.voice.voices.relay.for_language(self.language),
                tts_provider: self.voice.voices.relay.provider.clone(),
                dtmf_detection: Some(true),
                interruptible: Some("any".into()),
                hints: Some(SPEECH_HINTS.into()),
                languages: vec![RelayLanguage {
                    code: other.tag().to_owned(),
                    tts_provider: self.voice.voices.relay.provider.clone(),
                    voice: self.voice.voices.relay.for_language(other),
                }],
            },
        }))
    }

    /// A speech turn: the caller's words (or a key) go to the speech webhook, which answers in
    /// the same response. `prompts` play while Twilio already listens, so the caller can speak
    /// over them. Silence is an answer too (`actionOnEmptyResult`): it reaches a person.
    fn gather_speech(&self, doc: VoiceResponse, prompts: Vec<Verb>) -> VoiceResponse {
        if self.id.is_none() {
            let mut doc = doc;
            for prompt in prompts {
                doc = doc.verb(prompt);
            }
            return self.dial_counselor(doc);
        }
        let doc = doc.verb(Verb::Gather(Gather {
            action: self.url(Webhook::Speech),
            action_on_empty_result: Some(true),
            hints: Some(SPEECH_HINTS.into()),
            input: Some("dtmf speech".into()),
            language: Some(self.language.tag().to_owned()),
            num_digits: Some(1),
            speech_timeout: Some("auto".into()),
            timeout: Some(8),
            children: prompts,
        }));
        // Should Twilio run on past the `<Gather>` anyway, the caller is put through to a person.
        self.dial_counselor(self.say(doc, script::connecting_counselor(self.language)))
    }

    /// Listens for the next turn after `prompt`.
    fn listen(&self, doc: VoiceResponse, prompt: &str) -> VoiceResponse {
        match self.voice.conversation {
            Conversation::Speech | Conversation::Relay => {
                self.gather_speech(doc, vec![self.say_verb(prompt)])
            }
            Conversation::Record => self.record(self.say(doc, prompt)),
        }
    }

    /// Records a turn. Twilio skips `action` when the recording is empty and runs the next verbs
    /// instead: an offer to try again or reach a person, then a person.
    fn record(&self, doc: VoiceResponse) -> VoiceResponse {
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
                action: self.choice_url(),
                input: Some("dtmf".into()),
                num_digits: Some(1),
                timeout: Some(8),
                children: vec![
                    self.say_verb(&script::silence(&self.voice.lines.crisis, self.language))
                ],
                ..Gather::default()
            }));
        self.dial_counselor(self.say(doc, script::connecting_counselor(self.language)))
    }

    /// `text`, then what comes next: in record mode the choice (with no answer, the
    /// conversation simply goes on); when Twilio recognises speech, the caller just speaks on,
    /// and may speak over the reply.
    fn offer_choice(&self, doc: VoiceResponse, text: &str) -> VoiceResponse {
        match self.voice.conversation {
            Conversation::Speech | Conversation::Relay => {
                self.gather_speech(doc, vec![self.say_verb(text)])
            }
            Conversation::Record => {
                let doc = self.say(doc, text).verb(Verb::Gather(Gather {
                    action: self.choice_url(),
                    hints: Some("continue, goodbye, counselor".into()),
                    input: Some("dtmf speech".into()),
                    language: Some(self.language.tag().to_owned()),
                    num_digits: Some(1),
                    speech_timeout: Some("auto".into()),
                    timeout: Some(6),
                    children: vec![self.say_verb(script::choice_prompt(self.language))],
                    ..Gather::default()
                }));
                self.listen(
                    doc,
                    script::listen_again(self.language, Listening::AfterTone),
                )
            }
        }
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
            language: Some(self.language.tag().to_owned()),
            num_digits: Some(1),
            speech_timeout: Some("auto".into()),
            timeout: Some(6),
            children: vec![self.say_verb(script::direct_question(self.language))],
        }));
        self.dial_counselor(self.say(doc, script::connecting_counselor(self.language)))
    }

    /// Dials the first counselor for the caller's language; its `action` goes on to the next
    /// when they do not take the call, and to the crisis line after the last.
    fn dial_counselor(&self, doc: VoiceResponse) -> VoiceResponse {
        self.dial_counselor_at(doc, 1)
    }

    /// Dials counselor `attempt` (from 1) for the caller's language. With whispers on, they hear
    /// why the caller is coming and press 1 to take the call.
    fn dial_counselor_at(&self, doc: VoiceResponse, attempt: u32) -> VoiceResponse {
        let lines = &self.voice.lines;
        let Some(counselor) = lines.counselor_at(self.language, attempt) else {
            return self.dial_crisis_line(doc);
        };
        if *counselor == lines.crisis {
            return self.dial_crisis_line(doc);
        }
        let whisper = |attempt: u32| {
            (self.voice.whisper && self.id.is_some())
                .then(|| format!("{}?attempt={attempt}", self.url(Webhook::Whisper)))
        };
        // Rung together, every counselor after the first is on the same `<Dial>`, each with the
        // whisper that names their place in the order.
        let also = match self.voice.ring {
            Ring::InOrder => Vec::new(),
            Ring::Together => (attempt + 1..)
                .map_while(|n| {
                    lines
                        .counselor_at(self.language, n)
                        .map(|number| (n, number))
                })
                .filter(|(_, number)| **number != lines.crisis)
                .map(|(n, number)| (number.as_str().to_owned(), whisper(n)))
                .collect(),
        };
        doc.verb(Verb::Dial(Dial {
            number: counselor.as_str().to_owned(),
            number_url: whisper(attempt),
            also,
            action: Some(format!(
                "{}?line=counselor&attempt={attempt}",
                self.url(Webhook::DialStatus)
            )),
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
    use domain::{CallSid, DialNumber};
    use quick_xml::events::Event;
    use quick_xml::{Reader, Writer};

    use super::*;

    fn voice(counselor: &str) -> Voice {
        Voice {
            public_base_url: "https://hotline.example.org".into(),
            lines: Lines {
                counselor: DialNumber::parse(counselor).expect("valid"),
                crisis: DialNumber::parse("988").expect("valid"),
                counselor_es: Some(DialNumber::parse("+15005550002").expect("valid")),
                more: Vec::new(),
                more_es: Vec::new(),
            },
            voices: Voices::default(),
            conversation: Conversation::Record,
            transcribe: false,
            recorded: Recorded::default(),
            record_calls: false,
            whisper: false,
            ring: Ring::InOrder,
        }
    }

    fn english(answer: &CallAnswer) -> Spoken {
        Spoken::new(answer.clone(), Language::English)
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
        check_spoken(name, &english(answer), id, voice);
    }

    fn check_spoken(name: &str, spoken: &Spoken, id: Option<CallId>, voice: &Voice) {
        golden(name, &pretty(&twiml(spoken, id, voice).to_xml()));
    }

    fn golden(name: &str, actual: &str) {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("src/twilio/golden/{name}.xml"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, actual).expect("golden file written");
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
        // Speech mode (the default): every turn a speech `<Gather>`, in the call's language.
        let speech = Voice {
            conversation: Conversation::Speech,
            ..voice("+15005550001")
        };
        for (name, answer) in [
            ("speech_greeting", &CallAnswer::Greeting),
            ("speech_reply", &reply),
            ("speech_after_question", &CallAnswer::AfterQuestion),
            ("speech_nothing_heard", &CallAnswer::NothingHeard),
        ] {
            check(name, answer, call(), &speech);
        }
        for (name, answer) in [
            ("speech_greeting_es", CallAnswer::Greeting),
            ("speech_escalating_es", CallAnswer::Escalating),
            ("speech_goodbye_es", CallAnswer::Goodbye),
        ] {
            check_spoken(
                name,
                &Spoken::new(answer, Language::Spanish),
                call(),
                &speech,
            );
        }
        // A human-voiced greeting is played where configured.
        let recorded = Voice {
            recorded: Recorded {
                greeting_en: Some("https://cdn.example.org/greeting-en.mp3".into()),
                greeting_es: None,
            },
            ..speech.clone()
        };
        check(
            "speech_greeting_recorded",
            &CallAnswer::Greeting,
            call(),
            &recorded,
        );
        // The live mode: the greeting opens the call's ConversationRelay session.
        let relay = Voice {
            conversation: Conversation::Relay,
            ..voice("+15005550001")
        };
        check("relay_greeting", &CallAnswer::Greeting, call(), &relay);
        // Whispers on: each counselor hears why the caller comes and presses 1 to take the call;
        // one who does not is followed by the next, after a holding line.
        let whispered = Voice {
            whisper: true,
            lines: Lines {
                more: vec![DialNumber::parse("+15005550003").expect("valid")],
                ..voice("+15005550001").lines
            },
            ..speech.clone()
        };
        check(
            "escalating_whispered",
            &CallAnswer::Escalating,
            call(),
            &whispered,
        );
        check(
            "escalating_rung_together",
            &CallAnswer::Escalating,
            call(),
            &Voice {
                ring: Ring::Together,
                ..whispered.clone()
            },
        );
        check(
            "next_counselor",
            &CallAnswer::NextCounselor { attempt: 2 },
            call(),
            &whispered,
        );
        check(
            "next_counselor_past_the_last",
            &CallAnswer::NextCounselor { attempt: 3 },
            call(),
            &whispered,
        );
        let id = call().expect("a call");
        for (name, answer) in [
            (
                "whisper_summary",
                WhisperAnswer::Summary("A caller from the hotline. Risk: high.".into()),
            ),
            ("whisper_bridge", WhisperAnswer::Bridge),
            ("whisper_pass_on", WhisperAnswer::PassOn),
        ] {
            let actual = pretty(&whisper_twiml(&answer, id, 2, &whispered).to_xml());
            golden(name, &actual);
        }
        // With the live session's own voices configured.
        let relay_voiced = Voice {
            voices: Voices {
                relay: RelayVoices {
                    provider: Some("Google".into()),
                    english: Some("en-US-Journey-O".into()),
                    spanish: Some("es-US-Neural2-A".into()),
                },
                ..Voices::default()
            },
            ..relay.clone()
        };
        check(
            "relay_greeting_voiced",
            &CallAnswer::Greeting,
            call(),
            &relay_voiced,
        );
        // The call's first answer starts the recording of the whole call where calls are
        // recorded, and only there: the greeting again (a language chosen) starts nothing.
        let recording = Voice {
            record_calls: true,
            ..speech.clone()
        };
        check("speech_welcome", &CallAnswer::Welcome, call(), &recording);
        check(
            "speech_welcome_unrecorded",
            &CallAnswer::Welcome,
            call(),
            &speech,
        );
        check(
            "relay_welcome",
            &CallAnswer::Welcome,
            call(),
            &Voice {
                record_calls: true,
                ..relay.clone()
            },
        );
        assert_eq!(
            twiml(&english(&CallAnswer::Greeting), call(), &recording).to_xml(),
            twiml(&english(&CallAnswer::Greeting), call(), &speech).to_xml(),
        );
    }

    #[test]
    fn no_answer_ends_in_silence() {
        // Every caller-facing answer either hangs up after a goodbye the caller chose, or ends with
        // a person being dialled or the crisis number being read out.
        let v = voice("+15005550001");
        for answer in [
            CallAnswer::Welcome,
            CallAnswer::Greeting,
            CallAnswer::Hold { waited: 1 },
            CallAnswer::Reply { text: "x".into() },
            CallAnswer::Question { reply: "x".into() },
            CallAnswer::AfterQuestion,
            CallAnswer::Listen,
            CallAnswer::ChoiceAgain,
            CallAnswer::Goodbye,
            CallAnswer::ConnectCounselor,
            CallAnswer::NextCounselor { attempt: 2 },
            CallAnswer::Escalating,
            CallAnswer::ConnectCrisisLine,
            CallAnswer::Farewell,
            CallAnswer::LastResort,
            CallAnswer::Trouble,
            CallAnswer::NothingHeard,
            CallAnswer::PutThrough,
            CallAnswer::Nothing,
        ] {
            let doc = twiml(&english(&answer), call(), &v);
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
