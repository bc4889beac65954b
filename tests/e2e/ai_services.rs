//! The OpenAI-compatible speech-to-text and chat clients against wiremock stand-ins.

use application::ports::{Audio, Failure, LanguageModel, PortError, Service, SpeechToText};
use domain::risk::{Language, RiskLevel};
use infrastructure::pipeline::openai::{Endpoint, OpenAiChat, OpenAiSpeechToText};
use secrecy::SecretString;
use serde_json::json;
use wiremock::matchers::{body_partial_json, body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn endpoint(server: &MockServer, model: &str) -> Endpoint {
    Endpoint {
        base_url: server.uri(),
        api_key: Some(SecretString::from("sk-test")),
        model: model.into(),
    }
}

fn audio() -> Audio {
    Audio {
        bytes: b"RIFF\x00\x00\x00\x00WAVE".to_vec(),
        content_type: "audio/x-wav".into(),
    }
}

fn chat_answer(content: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "chatcmpl-1", "object": "chat.completion",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": content }, "finish_reason": "stop" }]
    }))
}

#[tokio::test]
async fn speech_is_sent_as_a_multipart_upload_and_its_text_returned() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/audio/transcriptions"))
        .and(header("authorization", "Bearer sk-test"))
        .and(body_string_contains("name=\"model\"\r\n\r\nwhisper-1"))
        .and(body_string_contains("filename=\"turn.wav\""))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "text": "I had a rough day." })),
        )
        .expect(1)
        .mount(&server)
        .await;
    let stt = OpenAiSpeechToText::new(endpoint(&server, "whisper-1"));
    assert_eq!(
        stt.transcribe(&audio()).await,
        Ok("I had a rough day.".to_owned())
    );
}

#[tokio::test]
async fn speech_to_text_failures_come_back_as_classes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(503).set_body_string("overloaded: the caller said something"),
        )
        .mount(&server)
        .await;
    let stt = OpenAiSpeechToText::new(endpoint(&server, "whisper-1"));
    assert_eq!(
        stt.transcribe(&audio()).await,
        Err(PortError::new(Service::Ai, Failure::Status(503)))
    );

    let unreachable = Endpoint {
        base_url: "http://127.0.0.1:1".into(),
        api_key: None,
        model: "whisper-1".into(),
    };
    assert_eq!(
        OpenAiSpeechToText::new(unreachable)
            .transcribe(&audio())
            .await,
        Err(PortError::new(Service::Ai, Failure::Unreachable))
    );
}

#[tokio::test]
async fn the_model_is_asked_for_json_and_its_risk_level_read() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-test"))
        .and(body_partial_json(
            json!({ "model": "gpt-test", "response_format": { "type": "json_object" } }),
        ))
        .respond_with(chat_answer(r#"{"risk": "High"}"#))
        .expect(1)
        .mount(&server)
        .await;
    let model = OpenAiChat::new(endpoint(&server, "gpt-test"));
    assert_eq!(
        model.assess_risk("I have a plan.").await,
        Ok(RiskLevel::High)
    );
    assert_eq!(model.name(), "gpt-test");
}

#[tokio::test]
async fn an_unusable_model_answer_is_an_error_not_a_guess() {
    for content in [
        r#"{"risk": "severe"}"#,
        "not json at all",
        r#"{"level": "low"}"#,
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(chat_answer(content))
            .mount(&server)
            .await;
        let model = OpenAiChat::new(endpoint(&server, "gpt-test"));
        assert_eq!(
            model.assess_risk("…").await,
            Err(PortError::new(Service::Ai, Failure::UnreadableAnswer)),
            "{content}"
        );
    }
}

#[tokio::test]
async fn the_model_s_reply_is_read_from_its_json() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_string_contains("safe-messaging"))
        .respond_with(chat_answer(
            r#"{"reply": "That sounds hard. I'm here to listen."}"#,
        ))
        .mount(&server)
        .await;
    let model = OpenAiChat::new(endpoint(&server, "gpt-test"));
    assert_eq!(
        model
            .compose_reply("I can't sleep.", RiskLevel::Low, Language::English)
            .await,
        Ok("That sounds hard. I'm here to listen.".to_owned())
    );
}

#[tokio::test]
async fn the_reply_is_asked_for_in_the_caller_s_language() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_string_contains("Reply in Spanish"))
        .respond_with(chat_answer(
            r#"{"reply": "Eso suena difícil. Estoy aquí para escucharte."}"#,
        ))
        .expect(1)
        .mount(&server)
        .await;
    let model = OpenAiChat::new(endpoint(&server, "gpt-test"));
    assert_eq!(
        model
            .compose_reply("No puedo dormir.", RiskLevel::None, Language::Spanish)
            .await,
        Ok("Eso suena difícil. Estoy aquí para escucharte.".to_owned())
    );
}
