//! The call's ConversationRelay WebSocket, `GET /twilio/relay/{call_id}/`. The upgrade is
//! accepted only when its `X-Twilio-Signature` matches the `wss://` URL Twilio dialled (checked
//! before anything else runs: a refused upgrade stores nothing). Then each message Twilio sends is
//! one use case (`application::calls::relay`); this module only reads and writes frames, and
//! streams the guarded sentences of a reply while it keeps listening, so that the caller can
//! interrupt it.

use application::calls::relay::{Heard, Relay, ReplyInProgress};
use application::guarded::GuardedSentence;
use application::CommandMetadata;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use domain::call::ReplySource;
use domain::{CallId, CallSid};
use futures_util::{SinkExt, StreamExt};
use infrastructure::twilio::relay::{FromRelay, ToRelay};

use super::extract::CallPath;
use crate::state::AppState;

/// The largest frame read from Twilio: prompts are short, and nothing else is worth more.
const MAX_FRAME_BYTES: usize = 64 * 1024;

/// How long the caller may be quiet before the line speaks up (the first time) or hands them to
/// a person (the second): long enough not to cut off someone still speaking (Twilio sends their
/// words only once they stop), short enough that nobody is left in silence.
const QUIET: std::time::Duration = std::time::Duration::from_secs(10);

/// `GET /twilio/relay/{call_id}/`: the upgrade, once Twilio's signature is checked.
pub async fn upgrade(
    State(state): State<AppState>,
    CallPath(id): CallPath,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok());
    if let Err(error) = state
        .validator
        .validate_websocket(&path_and_query, signature)
    {
        tracing::warn!(reason = %error, "ConversationRelay upgrade refused");
        return (
            StatusCode::FORBIDDEN,
            "the X-Twilio-Signature does not match",
        )
            .into_response();
    }
    let Some(id) = id else {
        return (StatusCode::NOT_FOUND, "no such call").into_response();
    };
    upgrade
        .max_frame_size(MAX_FRAME_BYTES)
        .max_message_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| session(socket, state, id))
}

fn metadata() -> CommandMetadata {
    CommandMetadata {
        request_id: uuid::Uuid::new_v4().to_string(),
        idempotency_token: None,
        actor: "twilio-relay".to_owned(),
        received_at: Utc::now(),
        spool_entry: None,
    }
}

/// A reply on its way to the caller: what has been sent of it so far, and where it came from.
struct Streaming {
    reply: Box<ReplyInProgress>,
    sent: String,
    source: ReplySource,
}

async fn session(socket: WebSocket, state: AppState, id: CallId) {
    let (mut out, mut frames) = socket.split();
    let mut call_sid: Option<CallSid> = None;
    let mut streaming: Option<Streaming> = None;
    let mut quiet_until = tokio::time::Instant::now() + QUIET;
    let mut silences = 0;
    loop {
        let waiting_for_words = streaming.is_none() && call_sid.is_some();
        let next_sentence = async {
            match streaming.as_mut() {
                Some(s) => s.reply.sentences.next().await,
                None => std::future::pending().await,
            }
        };
        let to_send: Vec<ToRelay> = tokio::select! {
            // What Twilio says comes first: an interrupt must stop a reply at once.
            biased;
            frame = frames.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let message = match serde_json::from_str::<FromRelay>(&text) {
                    Ok(message) => message,
                    Err(_) => {
                        tracing::warn!("an unreadable ConversationRelay message was ignored");
                        continue;
                    }
                };
                match message {
                    FromRelay::Setup { session_id, call_sid: sid } => {
                        match CallSid::parse(&sid) {
                            Ok(sid) => match state.calls.relay_started(id, &sid, session_id, &metadata()).await {
                                Ok(_) => {
                                    call_sid = Some(sid);
                                    vec![]
                                }
                                Err(error) => {
                                    tracing::warn!(error = %error, "ConversationRelay setup refused");
                                    written(vec![Relay::End(application::calls::relay::Handoff::Trouble)])
                                }
                            },
                            Err(_) => written(vec![Relay::End(application::calls::relay::Handoff::Trouble)]),
                        }
                    }
                    FromRelay::Prompt { voice_prompt, lang, last } => {
                        if last == Some(false) {
                            continue;
                        }
                        silences = 0;
                        quiet_until = tokio::time::Instant::now() + QUIET;
                        let mut messages = Vec::new();
                        // New words while a reply is still being sent: it was spoken over.
                        if let Some(current) = streaming.take() {
                            let heard = current.sent.clone();
                            messages.extend(finish(&state, id, current, true).await);
                            state.calls.relay_interrupted(id, heard, None, &metadata()).await;
                        }
                        let Some(sid) = call_sid.clone() else {
                            tracing::warn!("a ConversationRelay prompt before its setup");
                            continue;
                        };
                        match state.calls.relay_prompt(id, sid, voice_prompt, lang.as_deref(), &metadata()).await {
                            Heard::Send(relay) => messages.extend(written(relay)),
                            Heard::Stream { before, reply } => {
                                messages.extend(written(before));
                                streaming = Some(Streaming {
                                    reply,
                                    sent: String::new(),
                                    source: ReplySource::Model,
                                });
                            }
                        }
                        messages
                    }
                    FromRelay::Dtmf { digit } => {
                        silences = 0;
                        quiet_until = tokio::time::Instant::now() + QUIET;
                        written(state.calls.relay_dtmf(id, digit, &metadata()).await)
                    }
                    FromRelay::Interrupt { utterance_until_interrupt, duration_until_interrupt_ms } => {
                        let mut messages = Vec::new();
                        if let Some(current) = streaming.take() {
                            messages.extend(finish(&state, id, current, true).await);
                        }
                        let heard = utterance_until_interrupt.unwrap_or_default();
                        state
                            .calls
                            .relay_interrupted(id, heard, duration_until_interrupt_ms, &metadata())
                            .await;
                        messages
                    }
                    FromRelay::Error { .. } => {
                        tracing::warn!("Twilio could not use a ConversationRelay message");
                        continue;
                    }
                    FromRelay::Unknown => continue,
                }
            }
            sentence = next_sentence => {
                match sentence {
                    Some(sentence) => {
                        let Some(current) = streaming.as_mut() else { continue };
                        if matches!(sentence, GuardedSentence::Fallback { .. }) {
                            current.source = sentence.source();
                        }
                        let token = format!("{} ", sentence.text());
                        current.sent.push_str(&token);
                        vec![ToRelay::Text { token, last: false }]
                    }
                    None => match streaming.take() {
                        Some(current) => {
                            // What follows the reply (the direct question) is part of it: the
                            // reply ends with it, or with an empty last token.
                            let then = finish(&state, id, current, false).await;
                            let mut messages = Vec::new();
                            if !matches!(then.first(), Some(ToRelay::Text { .. })) {
                                messages.push(ToRelay::Text { token: String::new(), last: true });
                            }
                            messages.extend(then);
                            quiet_until = tokio::time::Instant::now() + QUIET;
                            messages
                        }
                        None => continue,
                    },
                }
            }
            () = tokio::time::sleep_until(quiet_until), if waiting_for_words => {
                silences += 1;
                quiet_until = tokio::time::Instant::now() + QUIET;
                written(state.calls.relay_silence(id, silences, &metadata()).await)
            }
        };
        let mut ended = false;
        for message in to_send {
            ended |= matches!(message, ToRelay::End { .. });
            let Ok(json) = serde_json::to_string(&message) else {
                continue;
            };
            if out.send(Message::Text(json.into())).await.is_err() {
                // The socket is gone: Twilio requests the `<Connect action>`, which puts the
                // caller through to a person.
                return;
            }
        }
        if ended {
            break;
        }
    }
    // A reply cut off by a closed socket is still recorded, as far as it was sent.
    if let Some(current) = streaming.take() {
        let _ = finish(&state, id, current, true).await;
    }
}

/// Records a streamed reply as it was sent; what follows it (the direct question, or a person).
async fn finish(state: &AppState, id: CallId, current: Streaming, cut_off: bool) -> Vec<ToRelay> {
    let sent = current.sent.trim().to_owned();
    let then = state
        .calls
        .relay_answered(
            id,
            current.reply,
            sent,
            current.source,
            cut_off,
            &metadata(),
        )
        .await;
    if cut_off {
        // The caller is speaking: the question waits for the next reply, and only an end is sent.
        written(
            then.into_iter()
                .filter(|m| matches!(m, Relay::End(_)))
                .collect(),
        )
    } else {
        written(then)
    }
}

/// The use cases' messages as frames.
fn written(relay: Vec<Relay>) -> Vec<ToRelay> {
    relay
        .into_iter()
        .map(|message| match message {
            Relay::Say(text) => ToRelay::Text {
                token: text,
                last: true,
            },
            Relay::Language(language) => ToRelay::Language {
                tts_language: language.tag().to_owned(),
                transcription_language: language.tag().to_owned(),
            },
            Relay::End(handoff) => ToRelay::End {
                handoff_data: handoff.data().to_owned(),
            },
        })
        .collect()
}
