//! The OpenAI-compatible speech-to-text and chat clients against wiremock stand-ins.

use std::time::Duration;

use application::ports::{
    Audio, Failure, LanguageModel, PortError, ReplyStream, Service, SpeechToText,
};
use domain::risk::{Language, RiskLevel};
use futures::StreamExt;
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

/// A streamed completion's body: one event per piece, then `[DONE]`.
fn event_stream(pieces: &[&str]) -> String {
    let role = json!({ "choices": [{ "index": 0, "delta": { "role": "assistant" } }] });
    let mut body = format!(": keep-alive\n\ndata: {role}\n\n");
    for piece in pieces {
        let chunk = json!({
            "id": "chatcmpl-1", "object": "chat.completion.chunk",
            "choices": [{ "index": 0, "delta": { "content": piece }, "finish_reason": null }]
        });
        body.push_str(&format!("data: {chunk}\n\n"));
    }
    let end = json!({ "choices": [{ "index": 0, "delta": {}, "finish_reason": "stop" }] });
    body.push_str(&format!("data: {end}\n\ndata: [DONE]\n\n"));
    body
}

fn streamed(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
}

/// Every piece of a streamed reply, or the error that ended it (before the stream or in it).
async fn pieces(stream: Result<ReplyStream, PortError>) -> Result<Vec<String>, PortError> {
    let mut stream = stream?;
    let mut pieces = Vec::new();
    while let Some(piece) = stream.next().await {
        pieces.push(piece?);
    }
    Ok(pieces)
}

#[tokio::test]
async fn a_streamed_reply_comes_back_piece_by_piece_in_order() {
    let tokens = ["Eso", " suena", " difícil", ". Estoy", " aquí", "."];
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-test"))
        .and(body_partial_json(
            json!({ "model": "gpt-test", "stream": true }),
        ))
        .and(body_string_contains("safe-messaging"))
        .and(body_string_contains("Reply in Spanish"))
        .respond_with(streamed(event_stream(&tokens)))
        .expect(1)
        .mount(&server)
        .await;
    let model = OpenAiChat::new(endpoint(&server, "gpt-test"));
    let stream = model
        .stream_reply("No puedo dormir.", RiskLevel::None, Language::Spanish)
        .await;
    assert_eq!(pieces(stream).await, Ok(tokens.map(str::to_owned).to_vec()));
}

#[tokio::test]
async fn a_streamed_reply_s_failures_come_back_as_classes() {
    let cases = [
        (
            ResponseTemplate::new(503).set_body_string("overloaded: the caller said something"),
            "http_503",
        ),
        (
            chat_answer(r#"{"reply": "Not a stream."}"#),
            "unreadable_answer",
        ),
        (
            ResponseTemplate::new(200).set_body_string("the caller said something"),
            "unreadable_answer",
        ),
        // Cut off before `[DONE]`: what came may be half a reply.
        (
            streamed(event_stream(&["I hear"]).replace("data: [DONE]\n\n", "")),
            "unreadable_answer",
        ),
        (
            streamed(
                "data: {\"choices\": [{\"delta\": {\"content\": \"I\"}}]}\n\ndata: {oops}\n\n"
                    .into(),
            ),
            "unreadable_answer",
        ),
        (streamed(event_stream(&[])), "empty_answer"),
    ];
    for (answer, class) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(answer)
            .mount(&server)
            .await;
        let model = OpenAiChat::new(endpoint(&server, "gpt-test"));
        let stream = model
            .stream_reply("I can't sleep.", RiskLevel::None, Language::English)
            .await;
        let error = pieces(stream).await.expect_err(class);
        assert_eq!(error.to_string(), class);
    }
}

#[tokio::test]
async fn a_streamed_reply_that_does_not_start_in_time_is_a_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(streamed(event_stream(&["Late."])).set_delay(Duration::from_secs(2)))
        .mount(&server)
        .await;
    let model = OpenAiChat::new(endpoint(&server, "gpt-test"))
        .with_first_token_timeout(Duration::from_millis(200));
    let stream = model
        .stream_reply("I can't sleep.", RiskLevel::None, Language::English)
        .await;
    assert_eq!(
        pieces(stream).await,
        Err(PortError::new(Service::Ai, Failure::Timeout))
    );
}
