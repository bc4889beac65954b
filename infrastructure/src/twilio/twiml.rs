//! A typed TwiML builder for the verbs Hotline answers with. Every string is treated as hostile:
//! characters XML 1.0 forbids (C0 controls other than tab, CR and LF; U+FFFE, U+FFFF) are removed,
//! and the rest is escaped by quick-xml, so nothing a caller says, or that any service returns, can
//! break the document or inject a verb.

use std::borrow::Cow;

use quick_xml::escape::partial_escape;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

/// A `<Response>` document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VoiceResponse {
    verbs: Vec<Verb>,
}

/// One TwiML verb.
#[derive(Debug, Clone, PartialEq)]
pub enum Verb {
    Say(Say),
    Play {
        url: String,
    },
    Pause {
        length: u32,
    },
    Record(Record),
    Gather(Gather),
    Dial(Dial),
    Redirect {
        url: String,
    },
    Hangup,
    Connect(Connect),
    /// `<Start><Recording>`: Twilio records the whole call from here on, while the document runs.
    StartRecording(StartRecording),
}

/// `<Recording>` inside `<Start>`: a recording of the call (both parties) that runs alongside
/// the rest of the document and ends with the call; its status callback says when it is ready.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StartRecording {
    pub recording_status_callback: String,
    /// Space-separated: `in-progress`, `completed`, `absent`.
    pub recording_status_callback_event: Option<String>,
    /// `mono` or `dual` (the caller and Hotline on a channel each).
    pub channels: Option<String>,
    /// `trim-silence` or `do-not-trim`.
    pub trim: Option<String>,
}

/// `<Connect action><ConversationRelay …>`: the call's live session over a WebSocket.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Connect {
    /// Where Twilio asks what next once the session ends.
    pub action: String,
    pub relay: ConversationRelay,
}

/// `<ConversationRelay>`, with its `<Language>` children.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConversationRelay {
    pub url: String,
    pub welcome_greeting: Option<String>,
    pub language: Option<String>,
    pub voice: Option<String>,
    /// `Google`, `Amazon` or `ElevenLabs`; Twilio's default when absent.
    pub tts_provider: Option<String>,
    pub dtmf_detection: Option<bool>,
    pub interruptible: Option<String>,
    pub hints: Option<String>,
    /// Other languages the session may switch to.
    pub languages: Vec<RelayLanguage>,
}

/// A `<Language>` of `<ConversationRelay>`: a language the session may switch to, with its
/// voice (the provider's default for the language when absent).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RelayLanguage {
    pub code: String,
    pub tts_provider: Option<String>,
    pub voice: Option<String>,
}

/// `<Say>`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Say {
    pub text: String,
    pub voice: Option<String>,
    pub language: Option<String>,
}

/// `<Record>`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    pub action: String,
    pub finish_on_key: Option<String>,
    pub max_length: Option<u32>,
    pub play_beep: Option<bool>,
    pub recording_status_callback: Option<String>,
    pub recording_status_callback_event: Option<String>,
    pub timeout: Option<u32>,
    pub transcribe: Option<bool>,
    pub transcribe_callback: Option<String>,
    pub trim: Option<String>,
}

/// `<Gather>`, with the verbs it plays while it listens.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Gather {
    pub action: String,
    pub action_on_empty_result: Option<bool>,
    pub hints: Option<String>,
    pub input: Option<String>,
    pub language: Option<String>,
    pub num_digits: Option<u32>,
    pub speech_timeout: Option<String>,
    pub timeout: Option<u32>,
    pub children: Vec<Verb>,
}

/// `<Dial>` of one number.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dial {
    pub number: String,
    /// `<Number url>`: TwiML run on the called party's leg when they pick up, before the two
    /// are bridged (a whisper).
    pub number_url: Option<String>,
    /// More numbers rung at the same time (Twilio bridges the first to pick up), each with its
    /// `url`.
    pub also: Vec<(String, Option<String>)>,
    pub action: Option<String>,
    pub caller_id: Option<String>,
    pub timeout: Option<u32>,
}

impl VoiceResponse {
    /// An empty document (Twilio ends the call when it runs out of verbs).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends any verb.
    #[must_use]
    pub fn verb(mut self, verb: Verb) -> Self {
        self.verbs.push(verb);
        self
    }

    /// Appends `<Say>` with `voice` and `language`.
    #[must_use]
    pub fn say(self, text: impl Into<String>, voice: &str, language: &str) -> Self {
        self.verb(Verb::Say(Say {
            text: text.into(),
            voice: Some(voice.to_owned()),
            language: Some(language.to_owned()),
        }))
    }

    /// Appends `<Pause>`.
    #[must_use]
    pub fn pause(self, length: u32) -> Self {
        self.verb(Verb::Pause { length })
    }

    /// Appends `<Redirect method="POST">`.
    #[must_use]
    pub fn redirect(self, url: impl Into<String>) -> Self {
        self.verb(Verb::Redirect { url: url.into() })
    }

    /// Appends `<Hangup/>`.
    #[must_use]
    pub fn hangup(self) -> Self {
        self.verb(Verb::Hangup)
    }

    /// The verbs, in order.
    pub fn verbs(&self) -> &[Verb] {
        &self.verbs
    }

    /// The document as TwiML.
    pub fn to_xml(&self) -> String {
        let mut writer = Writer::new(Vec::new());
        // Writing into a Vec cannot fail; the results are checked all the same.
        let written = writer
            .write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
            .and_then(|()| write_container(&mut writer, "Response", Vec::new(), &self.verbs));
        debug_assert!(written.is_ok());
        String::from_utf8(writer.into_inner()).unwrap_or_default()
    }
}

/// Removes what XML 1.0 does not allow in a document, even escaped.
pub fn xml_safe(text: &str) -> Cow<'_, str> {
    let allowed = |c: char| {
        matches!(c, '\t' | '\n' | '\r')
            || ('\u{20}'..='\u{D7FF}').contains(&c)
            || ('\u{E000}'..='\u{FFFD}').contains(&c)
            || c >= '\u{10000}'
    };
    if text.chars().all(allowed) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.chars().filter(|&c| allowed(c)).collect())
    }
}

type Attrs = Vec<(&'static str, String)>;

fn attr<T: ToString>(attrs: &mut Attrs, name: &'static str, value: Option<T>) {
    if let Some(value) = value {
        attrs.push((name, value.to_string()));
    }
}

fn start(name: &'static str, attrs: &Attrs) -> BytesStart<'static> {
    let mut element = BytesStart::new(name);
    for (key, value) in attrs {
        // quick-xml escapes attribute values (&, <, >, ", ').
        element.push_attribute((*key, xml_safe(value).as_ref()));
    }
    element
}

fn write_text<W: std::io::Write>(
    writer: &mut Writer<W>,
    name: &'static str,
    attrs: Attrs,
    text: &str,
) -> std::io::Result<()> {
    writer.write_event(Event::Start(start(name, &attrs)))?;
    let safe = xml_safe(text);
    // &, < and > are escaped (so "]]>" cannot end anything); quotes are harmless in text.
    writer.write_event(Event::Text(BytesText::from_escaped(partial_escape(
        safe.as_ref(),
    ))))?;
    writer.write_event(Event::End(BytesEnd::new(name)))
}

fn write_empty<W: std::io::Write>(
    writer: &mut Writer<W>,
    name: &'static str,
    attrs: Attrs,
) -> std::io::Result<()> {
    writer.write_event(Event::Empty(start(name, &attrs)))
}

fn write_container<W: std::io::Write>(
    writer: &mut Writer<W>,
    name: &'static str,
    attrs: Attrs,
    children: &[Verb],
) -> std::io::Result<()> {
    if children.is_empty() {
        return write_empty(writer, name, attrs);
    }
    writer.write_event(Event::Start(start(name, &attrs)))?;
    for child in children {
        write_verb(writer, child)?;
    }
    writer.write_event(Event::End(BytesEnd::new(name)))
}

// Attributes are written in alphabetical order, as the official SDKs write them.
fn write_verb<W: std::io::Write>(writer: &mut Writer<W>, verb: &Verb) -> std::io::Result<()> {
    match verb {
        Verb::Say(say) => {
            let mut a = Attrs::new();
            attr(&mut a, "language", say.language.as_ref());
            attr(&mut a, "voice", say.voice.as_ref());
            write_text(writer, "Say", a, &say.text)
        }
        Verb::Play { url } => write_text(writer, "Play", Attrs::new(), url),
        Verb::Pause { length } => {
            write_empty(writer, "Pause", vec![("length", length.to_string())])
        }
        Verb::Record(r) => {
            let mut a = Attrs::new();
            attr(&mut a, "action", Some(&r.action));
            attr(&mut a, "finishOnKey", r.finish_on_key.as_ref());
            attr(&mut a, "maxLength", r.max_length);
            attr(&mut a, "method", Some("POST"));
            attr(&mut a, "playBeep", r.play_beep);
            attr(
                &mut a,
                "recordingStatusCallback",
                r.recording_status_callback.as_ref(),
            );
            attr(
                &mut a,
                "recordingStatusCallbackEvent",
                r.recording_status_callback_event.as_ref(),
            );
            attr(&mut a, "timeout", r.timeout);
            attr(&mut a, "transcribe", r.transcribe);
            attr(&mut a, "transcribeCallback", r.transcribe_callback.as_ref());
            attr(&mut a, "trim", r.trim.as_ref());
            write_empty(writer, "Record", a)
        }
        Verb::Gather(g) => {
            let mut a = Attrs::new();
            attr(&mut a, "action", Some(&g.action));
            attr(&mut a, "actionOnEmptyResult", g.action_on_empty_result);
            attr(&mut a, "hints", g.hints.as_ref());
            attr(&mut a, "input", g.input.as_ref());
            attr(&mut a, "language", g.language.as_ref());
            attr(&mut a, "method", Some("POST"));
            attr(&mut a, "numDigits", g.num_digits);
            attr(&mut a, "speechTimeout", g.speech_timeout.as_ref());
            attr(&mut a, "timeout", g.timeout);
            write_container(writer, "Gather", a, &g.children)
        }
        Verb::Dial(d) => {
            let mut a = Attrs::new();
            attr(&mut a, "action", d.action.as_ref());
            attr(&mut a, "callerId", d.caller_id.as_ref());
            attr(&mut a, "timeout", d.timeout);
            writer.write_event(Event::Start(start("Dial", &a)))?;
            for (number, url) in std::iter::once((&d.number, &d.number_url))
                .chain(d.also.iter().map(|(number, url)| (number, url)))
            {
                let mut n = Attrs::new();
                if url.is_some() {
                    attr(&mut n, "method", Some("POST"));
                }
                attr(&mut n, "url", url.as_ref());
                write_text(writer, "Number", n, number)?;
            }
            writer.write_event(Event::End(BytesEnd::new("Dial")))
        }
        Verb::Redirect { url } => {
            write_text(writer, "Redirect", vec![("method", "POST".to_owned())], url)
        }
        Verb::Hangup => write_empty(writer, "Hangup", Attrs::new()),
        Verb::Connect(c) => {
            let mut a = Attrs::new();
            attr(&mut a, "action", Some(&c.action));
            attr(&mut a, "method", Some("POST"));
            writer.write_event(Event::Start(start("Connect", &a)))?;
            let r = &c.relay;
            let mut a = Attrs::new();
            attr(&mut a, "dtmfDetection", r.dtmf_detection);
            attr(&mut a, "hints", r.hints.as_ref());
            attr(&mut a, "interruptible", r.interruptible.as_ref());
            attr(&mut a, "language", r.language.as_ref());
            attr(&mut a, "ttsProvider", r.tts_provider.as_ref());
            attr(&mut a, "url", Some(&r.url));
            attr(&mut a, "voice", r.voice.as_ref());
            attr(&mut a, "welcomeGreeting", r.welcome_greeting.as_ref());
            if r.languages.is_empty() {
                write_empty(writer, "ConversationRelay", a)?;
            } else {
                writer.write_event(Event::Start(start("ConversationRelay", &a)))?;
                for language in &r.languages {
                    let mut a = Attrs::new();
                    attr(&mut a, "code", Some(&language.code));
                    attr(&mut a, "ttsProvider", language.tts_provider.as_ref());
                    attr(&mut a, "voice", language.voice.as_ref());
                    write_empty(writer, "Language", a)?;
                }
                writer.write_event(Event::End(BytesEnd::new("ConversationRelay")))?;
            }
            writer.write_event(Event::End(BytesEnd::new("Connect")))
        }
        Verb::StartRecording(r) => {
            let mut a = Attrs::new();
            attr(&mut a, "channels", r.channels.as_ref());
            attr(
                &mut a,
                "recordingStatusCallback",
                Some(&r.recording_status_callback),
            );
            attr(
                &mut a,
                "recordingStatusCallbackEvent",
                r.recording_status_callback_event.as_ref(),
            );
            attr(&mut a, "recordingStatusCallbackMethod", Some("POST"));
            attr(&mut a, "trim", r.trim.as_ref());
            writer.write_event(Event::Start(BytesStart::new("Start")))?;
            write_empty(writer, "Recording", a)?;
            writer.write_event(Event::End(BytesEnd::new("Start")))
        }
    }
}

#[cfg(test)]
mod tests {
    use twilio_sim::twiml::{parse, Verb as Read};

    use super::*;

    /// A document as Twilio reads it (the simulator's reader): verbs, attributes and text, all
    /// unescaped, so that two documents can be compared for meaning rather than spelling.
    fn structure(xml: &str) -> Vec<Read> {
        parse(xml).unwrap_or_else(|e| panic!("not TwiML ({e}): {xml}"))
    }

    /// What twilio-python's `VoiceResponse` writes for the same document.
    const SDK_REFERENCE: &str = r##"<?xml version="1.0" encoding="UTF-8"?><Response><Say language="en-US" voice="Polly.Joanna">You are not alone &amp; help is here. &lt;Press&gt; "1" 'now'</Say><Gather action="/twilio/gather?x=1&amp;y=2" actionOnEmptyResult="true" hints="help, crisis" input="dtmf speech" language="en-US" method="POST" numDigits="1" speechTimeout="auto" timeout="5"><Say>Press 1 or say help.</Say></Gather><Record action="/twilio/recorded" finishOnKey="#" maxLength="120" method="POST" playBeep="true" recordingStatusCallback="/twilio/rec-status" recordingStatusCallbackEvent="completed absent" timeout="5" transcribe="true" transcribeCallback="/twilio/transcribed" trim="trim-silence" /><Dial action="/twilio/dial-done" callerId="+15005550006" timeout="20"><Number>+15005550001</Number></Dial><Redirect method="POST">/twilio/voice?step=2</Redirect><Hangup /></Response>"##;

    fn sdk_equivalent() -> VoiceResponse {
        VoiceResponse::new()
            .say(
                "You are not alone & help is here. <Press> \"1\" 'now'",
                "Polly.Joanna",
                "en-US",
            )
            .verb(Verb::Gather(Gather {
                action: "/twilio/gather?x=1&y=2".into(),
                action_on_empty_result: Some(true),
                hints: Some("help, crisis".into()),
                input: Some("dtmf speech".into()),
                language: Some("en-US".into()),
                num_digits: Some(1),
                speech_timeout: Some("auto".into()),
                timeout: Some(5),
                children: vec![Verb::Say(Say {
                    text: "Press 1 or say help.".into(),
                    ..Say::default()
                })],
            }))
            .verb(Verb::Record(Record {
                action: "/twilio/recorded".into(),
                finish_on_key: Some("#".into()),
                max_length: Some(120),
                play_beep: Some(true),
                recording_status_callback: Some("/twilio/rec-status".into()),
                recording_status_callback_event: Some("completed absent".into()),
                timeout: Some(5),
                transcribe: Some(true),
                transcribe_callback: Some("/twilio/transcribed".into()),
                trim: Some("trim-silence".into()),
            }))
            .verb(Verb::Dial(Dial {
                number: "+15005550001".into(),
                number_url: None,
                also: Vec::new(),
                action: Some("/twilio/dial-done".into()),
                caller_id: Some("+15005550006".into()),
                timeout: Some(20),
            }))
            .redirect("/twilio/voice?step=2")
            .hangup()
    }

    #[test]
    fn documents_mean_what_the_official_sdk_writes() {
        assert_eq!(
            structure(&sdk_equivalent().to_xml()),
            structure(SDK_REFERENCE)
        );
    }

    #[test]
    fn documents_start_with_the_xml_declaration() {
        let xml = VoiceResponse::new().hangup().to_xml();
        assert_eq!(
            xml,
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>"#
        );
        assert_eq!(
            VoiceResponse::new().to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#
        );
    }

    const HOSTILE: &str = "</Say><Hangup/> & \"quoted\" 'single' ]]> <![CDATA[x]]> \u{0}\u{1}\u{8}\u{B}\u{C}\u{1F}\u{FFFE}\u{FFFF} tab\tnew\nline é 🙂";

    #[test]
    fn hostile_text_comes_out_as_well_formed_xml_with_nothing_injected() {
        let doc = VoiceResponse::new()
            .say(HOSTILE, "Polly.Joanna\"><Hangup/>", "en-US")
            .redirect(format!("/twilio/continue/?x={HOSTILE}"))
            .verb(Verb::Dial(Dial {
                number: HOSTILE.into(),
                ..Dial::default()
            }));
        let xml = doc.to_xml();
        assert!(!xml.contains("]]>"), "{xml}");
        let verbs = structure(&xml);
        let names: Vec<&str> = verbs.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["Say", "Redirect", "Dial"]);
        let expected_text = xml_safe(HOSTILE).into_owned();
        assert!(!expected_text.contains('\u{1}') && expected_text.contains("tab\tnew\nline é 🙂"));
        assert_eq!(verbs[0].text, expected_text);
        assert_eq!(verbs[0].attr("voice"), Some("Polly.Joanna\"><Hangup/>"));
        assert_eq!(
            verbs[1].text,
            format!("/twilio/continue/?x={expected_text}")
        );
        let numbers: Vec<&str> = verbs[2].children.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(numbers, ["Number"]);
        assert_eq!(verbs[2].children[0].text, expected_text);
    }

    #[test]
    fn only_characters_xml_forbids_are_removed() {
        assert_eq!(xml_safe("a\u{0}b\u{1B}c\u{FFFE}d"), "abcd");
        assert!(matches!(xml_safe("plain\ttext\r\n"), Cow::Borrowed(_)));
    }
}
