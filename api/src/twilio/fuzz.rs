//! The edge under arbitrary input (proptest): whatever a request's body, path and signature, the
//! form parser, the signature check, the parameter checks and every parser after them refuse it
//! or read it, never panic; and whatever text an answer carries, in whatever language and for
//! whatever call, the TwiML rendered is a well-formed `<Response>` with no character XML forbids.
//!
//! CI runs `PROPTEST_CASES` cases (256 by default, a few seconds); for a longer run locally:
//! `PROPTEST_CASES=300000 cargo test -p api fuzz` (README, "Limits at the edge").

use application::{CallAnswer, Spoken};
use domain::{CallId, DialNumber, Language};
use infrastructure::twilio::answers::{twiml, Conversation, Ring, Voice};
use proptest::prelude::*;
use secrecy::SecretString;
use twilio_signature::{sign_request, SignatureValidator};

use super::extract::Params;
use super::params;

const BASE: &str = "https://hotline.example.org";
const TOKEN: &str = "fuzz-auth-token";

/// The names Twilio sends, so that generated forms reach the parsers behind the checks.
const NAMES: &[&str] = &[
    "CallSid",
    "AccountSid",
    "From",
    "To",
    "Direction",
    "CallStatus",
    "DialCallStatus",
    "Digits",
    "SpeechResult",
    "Confidence",
    "RecordingSid",
    "RecordingUrl",
    "RecordingDuration",
    "RecordingStatus",
    "TranscriptionText",
    "TranscriptionStatus",
    "SequenceNumber",
    "CallDuration",
    "SessionStatus",
    "HandoffData",
    "ErrorCode",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        Just("CA0123456789abcdef0123456789abcdef".to_owned()),
        Just("AC0123456789abcdef0123456789abcdef".to_owned()),
        Just("RE0123456789abcdef0123456789abcdef".to_owned()),
        Just("https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Recordings/RE0123456789abcdef0123456789abcdef".to_owned()),
        "[0-9*#]{0,4}",
        Just("completed".to_owned()),
        Just("in-progress".to_owned()),
        "\\PC{0,40}",
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(NAMES).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// A body: bytes of any kind, or a form of Twilio's names (and others) with any values.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        proptest::collection::vec((name(), value()), 0..12).prop_map(|pairs| {
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish()
                .into_bytes()
        }),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/twilio/voice/".to_owned()),
        Just("/twilio/status/?x=1".to_owned()),
        "/twilio/[a-z-]{0,12}/[0-9a-f-]{0,36}/(\\?[a-z]{1,6}=[0-9a-z%]{0,8})?",
        any::<String>().prop_map(|s| format!("/{s}")),
    ]
}

fn answer() -> impl Strategy<Value = CallAnswer> {
    prop_oneof![
        any::<String>().prop_map(|text| CallAnswer::Reply { text }),
        any::<String>().prop_map(|reply| CallAnswer::Question { reply }),
        any::<u32>().prop_map(|waited| CallAnswer::Hold { waited }),
        any::<u32>().prop_map(|attempt| CallAnswer::NextCounselor { attempt }),
        proptest::sample::select(vec![
            CallAnswer::Welcome,
            CallAnswer::Greeting,
            CallAnswer::AfterQuestion,
            CallAnswer::Listen,
            CallAnswer::ChoiceAgain,
            CallAnswer::Goodbye,
            CallAnswer::ConnectCounselor,
            CallAnswer::Escalating,
            CallAnswer::ConnectCrisisLine,
            CallAnswer::LastResort,
            CallAnswer::Farewell,
            CallAnswer::Trouble,
            CallAnswer::NothingHeard,
            CallAnswer::PutThrough,
            CallAnswer::Nothing,
        ]),
    ]
}

fn voice(conversation: Conversation, ring: Ring, whisper: bool) -> Voice {
    let number = |n: &str| DialNumber::parse(n).expect("valid");
    Voice {
        public_base_url: BASE.into(),
        lines: application::Lines {
            counselor: number("+15005550001"),
            crisis: number("988"),
            counselor_es: Some(number("+15005550002")),
            more: vec![number("+15005550003")],
            more_es: Vec::new(),
        },
        voices: Default::default(),
        conversation,
        transcribe: true,
        recorded: Default::default(),
        record_calls: true,
        whisper,
        ring,
    }
}

/// Every parser a webhook's parameters may meet, on `params`: each reads or refuses.
fn parse_everything(params: &Params, query: Option<&str>) {
    let _ = params::call_sid(params);
    let _ = params::incoming_call(params);
    let _ = params::recording_done(params);
    let _ = params::choice_input(params, query);
    let _ = params::speech_input(params);
    let _ = params::relay_ended(params);
    let _ = params::dial_outcome(params);
    let _ = params::dial_report(params, query);
    let _ = params::attempt(query);
    let _ = params::dialed_line(query);
    let _ = params::waited(query);
    let _ = params::transcription(params);
    let _ = params::call_recording(params);
    let _ = params::status_report(params);
}

/// Whether `xml` is one well-formed `<Response>` document with only characters XML 1.0 allows.
fn well_formed(xml: &str) -> Result<(), String> {
    if let Some(c) = xml.chars().find(|c| {
        matches!(*c, '\u{0}'..='\u{8}' | '\u{B}' | '\u{C}' | '\u{E}'..='\u{1F}' | '\u{FFFE}' | '\u{FFFF}')
    }) {
        return Err(format!("a character XML forbids: {:?}", c));
    }
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut depth = 0_i32;
    let mut root = None;
    loop {
        match reader.read_event().map_err(|e| format!("{e}"))? {
            quick_xml::events::Event::Start(start) => {
                if depth == 0 {
                    root = Some(String::from_utf8_lossy(start.name().as_ref()).into_owned());
                }
                depth += 1;
            }
            quick_xml::events::Event::Empty(empty) if depth == 0 => {
                root = Some(String::from_utf8_lossy(empty.name().as_ref()).into_owned());
            }
            quick_xml::events::Event::End(_) => depth -= 1,
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    match (depth, root.as_deref()) {
        (0, Some("Response")) => Ok(()),
        other => Err(format!("not one <Response>: {other:?}")),
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_request_is_refused_or_read_never_a_panic(
        raw in body(),
        path in path(),
        signed in any::<bool>(),
        forged in any::<String>(),
    ) {
        let validator = SignatureValidator::new(BASE, vec![SecretString::from(TOKEN.to_owned())]);
        let params = Params::from_form(&raw);
        let signature = if signed {
            sign_request(TOKEN, &validator.url_for(&path), params.pairs())
        } else {
            forged
        };
        let valid = validator.validate(&path, params.pairs(), Some(&signature), None);
        // What is signed right is accepted, whatever it holds.
        prop_assert!(!signed || valid.is_ok(), "{path:?}: {valid:?}");
        if valid.is_ok() {
            let (params, _) = params.storable();
            if params::strict(&params).is_ok() {
                parse_everything(&params, path.split_once('?').map(|(_, q)| q));
            }
        }
    }

    #[test]
    fn any_answer_renders_as_well_formed_twiml(
        answer in answer(),
        spanish in any::<bool>(),
        call in proptest::option::of(any::<u128>()),
        mode in 0_u8..3,
        together in any::<bool>(),
        whisper in any::<bool>(),
    ) {
        let conversation = [Conversation::Speech, Conversation::Record, Conversation::Relay][usize::from(mode)];
        let ring = if together { Ring::Together } else { Ring::InOrder };
        let language = if spanish { Language::Spanish } else { Language::English };
        let id = call.map(|n| CallId::parse(&uuid::Uuid::from_u128(n).to_string()).expect("a UUID"));
        let xml = twiml(&Spoken::new(answer.clone(), language), id, &voice(conversation, ring, whisper)).to_xml();
        prop_assert!(well_formed(&xml).is_ok(), "{answer:?}: {:?}\n{xml}", well_formed(&xml));
    }
}

#[test]
fn the_check_of_well_formed_twiml_can_fail() {
    assert!(well_formed("<Response><Say>hello</Say></Response>").is_ok());
    assert!(well_formed("<Response><Say>hello</Response>").is_err());
    assert!(well_formed("<Response><Say>\u{1}</Say></Response>").is_err());
    assert!(well_formed("<Say>hello</Say>").is_err());
}
