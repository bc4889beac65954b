//! The Twilio REST client against Twilio's contract (Prism) and Twilio's behaviours (a scripted
//! stand-in): what it sends, what it retries, and what it never does.

use std::time::Duration;

use base64::Engine;
use domain::call::RecordingUrl;
use domain::{AccountSid, CallSid, DialNumber};
use infrastructure::twilio::rest::{ResponseData, RetryPolicy, TwilioError, TwilioRest};
use infrastructure::twilio::twiml::{Gather, Say, Verb, VoiceResponse};
use secrecy::SecretString;

use crate::helpers::ACCOUNT_SID;
use crate::twilio_stand_in::{Canned, Prism, ScriptedServer};

const TOKEN: &str = "rest-test-token";

fn client(base: &str) -> TwilioRest {
    TwilioRest::new(
        base,
        AccountSid::parse(ACCOUNT_SID).expect("valid"),
        SecretString::from(TOKEN),
    )
    .with_retry(RetryPolicy {
        attempts: 4,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(5),
    })
}

fn call_sid() -> CallSid {
    CallSid::parse("CA0123456789abcdef0123456789abcdef").expect("valid")
}

fn choice() -> VoiceResponse {
    VoiceResponse::new().verb(Verb::Gather(Gather {
        action: "https://hotline.example.org/twilio/user-choice/x/".into(),
        input: Some("dtmf speech".into()),
        num_digits: Some(1),
        children: vec![Verb::Say(Say {
            text: "Press 1 to keep talking.".into(),
            ..Say::default()
        })],
        ..Gather::default()
    }))
}

fn recording_url(base: &str, sid: &str) -> RecordingUrl {
    RecordingUrl::parse(&format!(
        "{base}/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{sid}"
    ))
    .expect("valid")
}

const RECORDING_SID: &str = "RE0123456789abcdef0123456789abcdef";

fn basic_auth() -> String {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{TOKEN}"));
    format!("Basic {encoded}")
}

#[tokio::test]
async fn playing_a_reply_and_creating_a_call_meet_twilio_s_contract() {
    let prism = Prism::start().await;
    let twilio = client(&prism.base_url);
    // Prism answers 2xx only when path, auth, content type and every field fit Twilio's spec.
    let spoken = ResponseData::TextToSpeech {
        text: "You are not alone & I'm here.".into(),
        voice: "Polly.Joanna".into(),
    };
    twilio
        .play_audio_response_to_caller(&call_sid(), &spoken, choice())
        .await
        .expect("spec-valid update");
    let audio = ResponseData::Audio {
        url: "https://hotline.example.org/audio/reply.mp3".into(),
    };
    twilio
        .play_audio_response_to_caller(&call_sid(), &audio, choice())
        .await
        .expect("spec-valid update");
    let placed = twilio
        .create_call(
            &DialNumber::parse("+15005550006").expect("valid"),
            &DialNumber::parse("+15005550001").expect("valid"),
            "https://hotline.example.org/twilio/voice/",
            "https://hotline.example.org/twilio/status/",
        )
        .await
        .expect("spec-valid create");
    assert!(placed.as_str().starts_with("CA"));

    // The same mock refuses what breaks the contract, so the successes above mean something.
    let http = reqwest::Client::new();
    let url = format!(
        "{}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{}.json",
        prism.base_url,
        call_sid()
    );
    let bad_status = http
        .post(&url)
        .basic_auth(ACCOUNT_SID, Some(TOKEN))
        .form(&[("Status", "hangup")])
        .send()
        .await
        .expect("answers");
    assert_eq!(bad_status.status(), 422);
    let no_auth = http
        .post(&url)
        .form(&[("Twiml", "<Response/>")])
        .send()
        .await
        .expect("answers");
    assert_eq!(no_auth.status(), 401);
}

#[tokio::test]
async fn the_update_carries_the_reply_then_the_choice_as_well_formed_twiml() {
    let stand_in = ScriptedServer::start(vec![Canned::json(
        200,
        serde_json::json!({ "sid": call_sid().as_str() }),
    )])
    .await;
    let twilio = client(&stand_in.base_url);
    let hostile = ResponseData::TextToSpeech {
        text: "</Say><Hangup/> \u{1} & more".into(),
        voice: "Polly.Joanna".into(),
    };
    twilio
        .play_audio_response_to_caller(&call_sid(), &hostile, choice())
        .await
        .expect("accepted");
    let received = stand_in.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].method, "POST");
    assert_eq!(
        received[0].path,
        format!(
            "/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{}.json",
            call_sid()
        )
    );
    assert_eq!(
        received[0].authorization.as_deref(),
        Some(basic_auth().as_str())
    );
    let form: Vec<(String, String)> = form_urlencoded::parse(received[0].body.as_bytes())
        .into_owned()
        .collect();
    let twiml = crate::helpers::Twiml::parse(&form[0].1);
    assert_eq!(twiml.verbs(), ["Say", "Gather"]);
    assert_eq!(twiml.first("Say").text, "</Say><Hangup/>  & more");
}

#[tokio::test]
async fn a_rate_limited_or_failing_update_is_retried_and_twilio_s_error_is_surfaced() {
    let stand_in = ScriptedServer::start(vec![
        Canned::twilio_error(429, 20429, "Too Many Requests"),
        Canned::twilio_error(503, 20500, "Service unavailable"),
        Canned::json(200, serde_json::json!({ "sid": call_sid().as_str() })),
    ])
    .await;
    client(&stand_in.base_url)
        .update_call(&call_sid(), &choice())
        .await
        .expect("third time lucky");
    assert_eq!(stand_in.received().len(), 3);

    let down = ScriptedServer::start(vec![Canned::twilio_error(
        500,
        20500,
        "Internal Server Error",
    )])
    .await;
    let error = client(&down.base_url)
        .update_call(&call_sid(), &choice())
        .await
        .expect_err("fails");
    assert_eq!(down.received().len(), 4, "bounded attempts");
    assert!(
        matches!(
            error,
            TwilioError::Api {
                status: 500,
                code: Some(20500),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("https://www.twilio.com/docs/errors/20500"),
        "{error}"
    );

    // A call that has ended is not retried.
    let ended = ScriptedServer::start(vec![Canned::twilio_error(
        404,
        20404,
        "The requested resource was not found",
    )])
    .await;
    client(&ended.base_url)
        .update_call(&call_sid(), &choice())
        .await
        .expect_err("fails");
    assert_eq!(ended.received().len(), 1);
}

#[tokio::test]
async fn creating_a_call_is_never_retried_blindly() {
    let failing = ScriptedServer::start(vec![Canned::twilio_error(
        500,
        20500,
        "Internal Server Error",
    )])
    .await;
    let to = DialNumber::parse("+15005550006").expect("valid");
    let from = DialNumber::parse("+15005550001").expect("valid");
    let error = client(&failing.base_url)
        .create_call(&to, &from, "https://h.example/v", "https://h.example/s")
        .await;
    assert!(error.is_err());
    assert_eq!(
        failing.received().len(),
        1,
        "a 5xx may have placed the call: no second try"
    );

    let limited = ScriptedServer::start(vec![
        Canned::twilio_error(429, 20429, "Too Many Requests"),
        Canned::json(
            201,
            serde_json::json!({ "sid": "CAffffffffffffffffffffffffffffffff" }),
        ),
    ])
    .await;
    let placed = client(&limited.base_url)
        .create_call(&to, &from, "https://h.example/v", "https://h.example/s")
        .await;
    assert_eq!(
        placed.map(|s| s.to_string()).ok().as_deref(),
        Some("CAffffffffffffffffffffffffffffffff")
    );
    assert_eq!(
        limited.received().len(),
        2,
        "a 429 was not processed, so it is retried"
    );
}

#[tokio::test]
async fn a_recording_not_ready_yet_is_fetched_once_it_is() {
    let wav = b"RIFF\x24\x00\x00\x00WAVEfmt ";
    let twilio = ScriptedServer::start(vec![
        Canned::twilio_error(404, 20404, "The requested resource was not found"),
        Canned::twilio_error(404, 20404, "The requested resource was not found"),
        Canned::audio(wav),
    ])
    .await;
    let audio = client(&twilio.base_url)
        .get_audio_for_processing(&recording_url(&twilio.base_url, RECORDING_SID))
        .await
        .expect("fetched");
    assert_eq!(audio.audio_data, wav);
    assert_eq!(audio.size, wav.len());
    assert_eq!(audio.content_type, "audio/x-wav");
    assert!(
        audio
            .audio_url
            .ends_with(&format!("/Recordings/{RECORDING_SID}.wav")),
        "{}",
        audio.audio_url
    );
    let received = twilio.received();
    assert_eq!(received.len(), 3);
    assert!(received
        .iter()
        .all(|r| r.authorization.as_deref() == Some(basic_auth().as_str())));
}

#[tokio::test]
async fn a_redirect_to_storage_is_followed_without_the_credentials() {
    let storage = ScriptedServer::start(vec![Canned::audio(b"RIFFdata")]).await;
    // "localhost" and "127.0.0.1" are different hosts to the HTTP client, as Twilio's and S3's are.
    let storage_url = storage.base_url.replace("127.0.0.1", "localhost") + "/signed/recording.wav";
    let twilio = ScriptedServer::start(vec![Canned::redirect(storage_url)]).await;
    let audio = client(&twilio.base_url)
        .get_audio_for_processing(&recording_url(&twilio.base_url, RECORDING_SID))
        .await
        .expect("fetched");
    assert_eq!(audio.audio_data, b"RIFFdata");
    assert_eq!(
        twilio.received()[0].authorization.as_deref(),
        Some(basic_auth().as_str())
    );
    assert_eq!(storage.received().len(), 1);
    assert_eq!(
        storage.received()[0].authorization,
        None,
        "credentials must not leave Twilio's host"
    );
}

#[tokio::test]
async fn urls_outside_the_account_s_recordings_are_never_fetched() {
    let twilio = ScriptedServer::start(vec![Canned::audio(b"RIFF")]).await;
    let other_account = format!(
        "{}/2010-04-01/Accounts/ACffffffffffffffffffffffffffffffff/Recordings/{RECORDING_SID}",
        twilio.base_url
    );
    for url in [
        other_account,
        format!("http://evil.example/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{RECORDING_SID}"),
        format!(
            "{}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{}",
            twilio.base_url,
            call_sid()
        ),
        format!(
            "{}/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/../../secret",
            twilio.base_url
        ),
    ] {
        let url = RecordingUrl::parse(&url).expect("well-formed");
        let result = client(&twilio.base_url)
            .get_audio_for_processing(&url)
            .await;
        assert_eq!(result, Err(TwilioError::ForeignUrl), "{url:?}");
    }
    assert!(twilio.received().is_empty());
}

#[tokio::test]
async fn response_data_reads_the_documented_shapes() {
    let spoken: ResponseData =
        serde_json::from_value(serde_json::json!({ "type": "text_to_speech", "text": "Hello" }))
            .expect("parses");
    assert_eq!(
        spoken,
        ResponseData::TextToSpeech {
            text: "Hello".into(),
            voice: "Polly.Joanna".into()
        }
    );
    let audio: ResponseData = serde_json::from_value(
        serde_json::json!({ "type": "audio", "url": "https://x.example/a.mp3" }),
    )
    .expect("parses");
    assert_eq!(
        audio,
        ResponseData::Audio {
            url: "https://x.example/a.mp3".into()
        }
    );
}
