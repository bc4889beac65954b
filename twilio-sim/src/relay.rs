//! Twilio's side of `<Connect><ConversationRelay>`: the signed WebSocket upgrade to the URL the
//! TwiML names, `setup`, the caller's words as `prompt`s and keys as `dtmf`, Hotline's streamed
//! `text` assembled into what the caller hears, a caller who speaks over a reply, a socket lost
//! mid-reply, and the `<Connect action>` request when the session ends, whose TwiML the call then
//! runs like any other document.
//!
//! The session goes turn by turn, as a caller talks: a prompt, then Hotline's reply up to its
//! `last` token. An `interrupt` or `drop_socket` step acts on the reply that comes next, once its
//! first token arrives: after a `say`, the reply to that `say`. Tokens Hotline sends after an
//! interruption count towards its reply to the interrupting words.
//!
//! Only `ws://` URLs can be dialled (the simulator runs next to Hotline, with no TLS); a
//! `wss://` URL fails to connect, as an unreachable one does on Twilio (64102).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use twilio_signature::sign_websocket;

use crate::scenario::{Afterwards, Step};
use crate::twiml::Verb;
use crate::{new_sid, Call, Document, Flow, Line, SimError, TWILIO_TIMEOUT};

/// Twilio's error when it cannot open the socket: a refused upgrade, nothing listening.
const COULD_NOT_CONNECT: &str = "64102";
/// Twilio's error when the socket closes under a live session.
const SOCKET_CLOSED: &str = "64105";
/// How long a `silence` step lasts on a session: ConversationRelay has no timeout of the
/// TwiML's to go by, so `<Gather>`'s default.
const SILENCE_SECS: f64 = 5.0;
/// How long a word takes to say, at about 150 words a minute: for how much of a reply the caller
/// heard before speaking over it, and how long a caller who hangs up listens first.
const SECS_PER_WORD: f64 = 0.4;
/// The longest the simulator waits for its closing handshake when it leaves a session.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What `<ConversationRelay>` asks for.
struct Relay {
    url: String,
    language: String,
    /// Languages the TwiML declares (`language` and each `<Language code>`).
    languages: Vec<String>,
    greeting: Option<String>,
    dtmf: bool,
    parameters: Map<String, Value>,
}

/// A session under way.
struct Session {
    socket: Socket,
    /// The language of the caller's prompts; Hotline's `language` messages change it.
    lang: String,
    /// Words of the last thing Hotline said: a caller who hangs up listens to it first.
    last_words: usize,
}

/// A message from Hotline, as ConversationRelay reads it.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum FromHotline {
    Text {
        token: String,
        #[serde(default)]
        last: bool,
    },
    Play {
        source: String,
    },
    #[serde(rename_all = "camelCase")]
    Language {
        tts_language: Option<String>,
        transcription_language: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    End {
        handoff_data: Option<String>,
    },
    SendDigits {},
}

/// How a session ended.
enum Ending {
    /// Hotline sent `end`.
    Ended { handoff: Option<String> },
    /// The socket was refused, lost or closed under the session: Twilio's error code.
    Failed { code: &'static str },
    /// The caller hung up: the call is over.
    HungUp,
    /// A REST update replaced the call's TwiML.
    Updated(Document),
}

/// What listening to Hotline came to.
enum Heard {
    /// Hotline finished a reply (its `last` token, or a `play`).
    Reply,
    /// Nothing for the whole of a silent wait.
    Quiet,
    /// The session is over.
    Over(Ending),
}

/// How the caller listens.
enum Listen {
    /// For Hotline's reply to the caller's turn that ended at this instant (`None`: a reply
    /// nobody asked for, as a caller with nothing to say waits for one).
    Reply(Option<Instant>),
    /// Silent, for this long; a reply that starts in that time is heard to its end.
    For(Duration),
}

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

impl Call<'_> {
    /// `<Connect>`: a ConversationRelay session, then the `<Connect action>` (or the next verb).
    pub(crate) async fn connect(
        &mut self,
        document: &Document,
        verb: &Verb,
    ) -> Result<Flow, SimError> {
        let relay = relay_of(document, verb)?;
        let session_id = new_sid("VX");
        let started = Instant::now();
        let ending = match self.open(&relay).await {
            Ok(socket) => {
                let mut session = Session {
                    socket,
                    lang: relay.language.clone(),
                    last_words: 0,
                };
                // The session is dropped at the end of this block, before the action request:
                // without a close frame when the socket was lost.
                self.converse(&mut session, &relay, &session_id).await?
            }
            Err(reason) => {
                self.line(Line::Note(format!(
                    "Twilio could not open the ConversationRelay socket ({reason})"
                )));
                Ending::Failed {
                    code: COULD_NOT_CONNECT,
                }
            }
        };
        let (status, code, handoff) = match ending {
            Ending::HungUp => return Ok(Flow::End),
            Ending::Updated(next) => return Ok(Flow::Goto(next)),
            Ending::Ended { handoff } => ("ended", None, handoff),
            Ending::Failed { code } => ("failed", Some(code), None),
        };
        let Some(action) = verb.attr("action").map(|a| self.resolve(document, a)) else {
            return Ok(Flow::Next);
        };
        let duration = started.elapsed().as_secs().to_string();
        let mut extra = vec![
            ("SessionId", session_id.as_str()),
            ("SessionStatus", status),
            ("SessionDuration", duration.as_str()),
        ];
        if let Some(handoff) = &handoff {
            extra.push(("HandoffData", handoff.as_str()));
        }
        if let Some(code) = code {
            extra.push(("ErrorCode", code));
        }
        Ok(Flow::Goto(self.fetch(&action, &extra).await?))
    }

    /// The upgrade, signed as Twilio signs it, to the URL exactly as the TwiML wrote it.
    async fn open(&self, relay: &Relay) -> Result<Socket, String> {
        let mut request = relay
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| e.to_string())?;
        let signature = sign_websocket(&self.sim.target.auth_token, &relay.url);
        let signature = HeaderValue::from_str(&signature).map_err(|e| e.to_string())?;
        request
            .headers_mut()
            .insert("X-Twilio-Signature", signature);
        // Small frames go at once, as a media server's would (no Nagle).
        let connecting = tokio_tungstenite::connect_async_with_config(request, None, true);
        match tokio::time::timeout(TWILIO_TIMEOUT, connecting).await {
            Ok(Ok((socket, _))) => Ok(socket),
            Ok(Err(tungstenite::Error::Http(response))) => Err(format!(
                "the upgrade was answered HTTP {}",
                response.status().as_u16()
            )),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("no answer in 15 s".into()),
        }
    }

    /// The session, from `setup` until it ends: the caller's steps, Hotline's replies.
    async fn converse(
        &mut self,
        session: &mut Session,
        relay: &Relay,
        session_id: &str,
    ) -> Result<Ending, SimError> {
        if let Some(greeting) = &relay.greeting {
            session.last_words = words(greeting);
            self.heard(Line::Hotline(greeting.clone()));
        }
        let setup = json!({
            "type": "setup",
            "sessionId": session_id,
            "accountSid": self.sim.target.account_sid,
            "callSid": self.sid,
            "from": self.scenario.from,
            "to": self.sim.target.to,
            "direction": "inbound",
            "callType": "PSTN",
            "callStatus": "IN-PROGRESS",
            "customParameters": relay.parameters,
        });
        if session.send(&setup).await.is_err() {
            return Ok(self.closed_by_hotline());
        }
        loop {
            let heard = match self.steps.front().cloned() {
                None if self.scenario.afterwards == Afterwards::HangUp => {
                    return self.hang_up(session, relay).await;
                }
                None => self.listen(session, relay, Listen::Reply(None)).await?,
                Some(Step::Say(text)) => {
                    self.steps.pop_front();
                    self.line(Line::Caller(text.clone()));
                    match session.prompt(&text).await {
                        Ok(sent) => {
                            self.listen(session, relay, Listen::Reply(Some(sent)))
                                .await?
                        }
                        Err(_) => Heard::Over(self.closed_by_hotline()),
                    }
                }
                // They act on the next reply, which here nobody asked for: wait for it.
                Some(Step::Interrupt(_) | Step::DropSocket) => {
                    self.listen(session, relay, Listen::Reply(None)).await?
                }
                Some(Step::Press(keys)) => {
                    self.steps.pop_front();
                    self.line(Line::Keys(keys.clone()));
                    if relay.dtmf {
                        match session.keys(&keys).await {
                            Ok(sent) => {
                                self.listen(session, relay, Listen::Reply(Some(sent)))
                                    .await?
                            }
                            Err(_) => Heard::Over(self.closed_by_hotline()),
                        }
                    } else {
                        self.line(Line::Note(
                            "without dtmfDetection Twilio does not pass keys on: Hotline hears nothing"
                                .into(),
                        ));
                        Heard::Quiet
                    }
                }
                Some(Step::Silence) => {
                    self.steps.pop_front();
                    self.silent(session, relay, SILENCE_SECS).await?
                }
                Some(Step::Wait(secs)) => {
                    self.steps.pop_front();
                    self.silent(session, relay, f64::from(secs)).await?
                }
            };
            if let Heard::Over(ending) = heard {
                return Ok(ending);
            }
        }
    }

    /// The caller says nothing for `secs` (at the simulator's pace), listening.
    async fn silent(
        &mut self,
        session: &mut Session,
        relay: &Relay,
        secs: f64,
    ) -> Result<Heard, SimError> {
        self.line(Line::Pause(secs));
        let wait = Duration::from_secs_f64((secs * self.sim.pace).max(0.0));
        let heard = self.listen(session, relay, Listen::For(wait)).await?;
        if matches!(heard, Heard::Quiet) {
            self.quiet_for(secs)?;
        }
        Ok(heard)
    }

    /// Out of steps, the caller listens to the end of what Hotline was saying (an `end` that
    /// follows it is still honoured), then hangs up.
    async fn hang_up(&mut self, session: &mut Session, relay: &Relay) -> Result<Ending, SimError> {
        #[allow(clippy::cast_precision_loss)]
        let listening = session.last_words as f64 * SECS_PER_WORD * self.sim.pace;
        let listen = Listen::For(Duration::from_secs_f64(listening.max(0.0)));
        if let Heard::Over(ending) = self.listen(session, relay, listen).await? {
            return Ok(ending);
        }
        self.line(Line::Note("the caller hangs up".into()));
        let _ = tokio::time::timeout(CLOSE_WAIT, session.socket.close(None)).await;
        Ok(Ending::HungUp)
    }

    fn closed_by_hotline(&mut self) -> Ending {
        self.line(Line::Note("Hotline closed the socket".into()));
        Ending::Failed {
            code: SOCKET_CLOSED,
        }
    }

    /// Hears Hotline's messages: a reply's tokens into one line, plays, language switches, the
    /// session's end; and acts on the reply as the caller's next step says.
    async fn listen(
        &mut self,
        session: &mut Session,
        relay: &Relay,
        listen: Listen,
    ) -> Result<Heard, SimError> {
        let (mut turn, mut window_end) = match listen {
            Listen::Reply(turn) => (turn, None),
            Listen::For(wait) => (None, Some(Instant::now() + wait)),
        };
        // The reply under way: its tokens so far, and whether its first has arrived.
        let mut reply = String::new();
        let mut replying = false;
        let mut last_sound = Instant::now();
        loop {
            let deadline = match window_end {
                Some(end) if !replying => end,
                _ => last_sound + TWILIO_TIMEOUT,
            };
            let frame = tokio::select! {
                biased;
                frame = session.socket.next() => frame,
                Some(xml) = self.updates.recv() => {
                    self.finish_reply(session, &mut reply);
                    let next = self.updated(xml)?;
                    let _ = tokio::time::timeout(CLOSE_WAIT, session.socket.close(None)).await;
                    return Ok(Heard::Over(Ending::Updated(next)));
                }
                () = tokio::time::sleep_until(deadline.into()) => {
                    if window_end.is_some() && !replying {
                        return Ok(Heard::Quiet);
                    }
                    return Err(SimError::Silence {
                        secs: last_sound.elapsed().as_secs_f64(),
                    });
                }
            };
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Binary(_))) => {
                    self.line(Line::Note(
                        "a binary frame, which ConversationRelay does not read: ignored".into(),
                    ));
                    continue;
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    self.finish_reply(session, &mut reply);
                    return Ok(Heard::Over(self.closed_by_hotline()));
                }
                // Pings are answered by the socket itself.
                Some(Ok(_)) => continue,
            };
            match serde_json::from_str::<FromHotline>(&text) {
                Ok(FromHotline::Text { token, last }) => {
                    last_sound = Instant::now();
                    reply.push_str(&token);
                    if !replying {
                        replying = true;
                        if let Some(sent) = turn.take() {
                            self.report.turn_latencies.push(sent.elapsed());
                        }
                        match self.steps.front().cloned() {
                            Some(Step::Interrupt(spoken)) => {
                                self.steps.pop_front();
                                match self.interrupt(session, &mut reply, &spoken).await {
                                    Ok(sent) => {
                                        // The caller now waits for the reply to their words.
                                        turn = Some(sent);
                                        replying = false;
                                        window_end = None;
                                        last_sound = Instant::now();
                                        continue;
                                    }
                                    Err(_) => return Ok(Heard::Over(self.closed_by_hotline())),
                                }
                            }
                            Some(Step::DropSocket) => {
                                self.steps.pop_front();
                                self.finish_reply(session, &mut reply);
                                self.line(Line::Note(
                                    "Twilio loses the socket in the middle of the reply".into(),
                                ));
                                return Ok(Heard::Over(Ending::Failed {
                                    code: SOCKET_CLOSED,
                                }));
                            }
                            _ => {}
                        }
                    }
                    if last {
                        self.finish_reply(session, &mut reply);
                        replying = false;
                        if window_end.is_none() {
                            return Ok(Heard::Reply);
                        }
                    }
                }
                Ok(FromHotline::Play { source }) => {
                    last_sound = Instant::now();
                    if let Some(sent) = turn.take() {
                        self.report.turn_latencies.push(sent.elapsed());
                    }
                    self.heard(Line::Play(source));
                    // A play on its own is a whole reply; one among tokens is part of theirs.
                    if !replying && window_end.is_none() {
                        return Ok(Heard::Reply);
                    }
                }
                Ok(FromHotline::Language {
                    tts_language,
                    transcription_language,
                }) => {
                    // Prompts carry the language of the transcript.
                    if let Some(lang) = transcription_language.or(tts_language) {
                        let declared = if relay.languages.contains(&lang) {
                            ""
                        } else {
                            ", which the TwiML did not declare"
                        };
                        self.line(Line::Note(format!(
                            "Hotline switches the language to {lang}{declared}"
                        )));
                        session.lang = lang;
                    }
                }
                Ok(FromHotline::End { handoff_data }) => {
                    self.finish_reply(session, &mut reply);
                    self.line(Line::Note("Hotline ended the session".into()));
                    return Ok(Heard::Over(Ending::Ended {
                        handoff: handoff_data,
                    }));
                }
                Ok(FromHotline::SendDigits {}) => {
                    self.line(Line::Note("Hotline sends keys down the line".into()));
                }
                Err(_) => {
                    let kind = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned));
                    let note = match kind {
                        Some(kind) => format!(
                            "a '{}' message, which ConversationRelay does not read: ignored",
                            kind.chars().take(40).collect::<String>()
                        ),
                        None => "a malformed message: Twilio drops it (64107)".to_owned(),
                    };
                    self.line(Line::Note(note));
                }
            }
        }
    }

    /// The caller speaks `words` over the reply, having heard what of it has arrived: Twilio
    /// tells Hotline so, then sends the words. When the prompt went.
    async fn interrupt(
        &mut self,
        session: &mut Session,
        reply: &mut String,
        words_spoken: &str,
    ) -> Result<Instant, tungstenite::Error> {
        let heard = reply.trim().to_owned();
        self.finish_reply(session, reply);
        self.line(Line::Note("the caller speaks over the reply".into()));
        self.line(Line::Caller(words_spoken.to_owned()));
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let played_ms = (words(&heard) as f64 * SECS_PER_WORD * 1000.0).round() as u64;
        session
            .send(&json!({
                "type": "interrupt",
                "utteranceUntilInterrupt": heard,
                "durationUntilInterruptMs": played_ms,
            }))
            .await?;
        session.prompt(words_spoken).await
    }

    /// What the caller heard of a reply, as one line.
    fn finish_reply(&mut self, session: &mut Session, reply: &mut String) {
        let text = reply.trim();
        if !text.is_empty() {
            session.last_words = words(text);
            let line = Line::Hotline(text.to_owned());
            self.heard(line);
        }
        reply.clear();
    }
}

impl Session {
    async fn send(&mut self, message: &Value) -> Result<(), tungstenite::Error> {
        self.socket.send(Message::text(message.to_string())).await
    }

    /// The caller's words, as a final transcript. When it went.
    async fn prompt(&mut self, words_spoken: &str) -> Result<Instant, tungstenite::Error> {
        let prompt = json!({
            "type": "prompt",
            "voicePrompt": words_spoken,
            "lang": self.lang,
            "last": true,
        });
        self.send(&prompt).await?;
        Ok(Instant::now())
    }

    /// One `dtmf` message a key. When the last went.
    async fn keys(&mut self, keys: &str) -> Result<Instant, tungstenite::Error> {
        for digit in keys.chars() {
            self.send(&json!({"type": "dtmf", "digit": digit.to_string()}))
                .await?;
        }
        Ok(Instant::now())
    }
}

/// The `<ConversationRelay>` inside `<Connect>`.
fn relay_of(document: &Document, connect: &Verb) -> Result<Relay, SimError> {
    let invalid = |reason: &str| SimError::InvalidTwiml {
        url: document.url.clone(),
        reason: reason.to_owned(),
    };
    let relay = connect
        .children
        .iter()
        .find(|c| c.name == "ConversationRelay")
        .ok_or_else(|| invalid("<Connect> holds no <ConversationRelay>"))?;
    let url = relay
        .attr("url")
        .ok_or_else(|| invalid("<ConversationRelay> has no url"))?;
    let language = relay.attr("language").unwrap_or("en-US").to_owned();
    let mut languages = vec![language.clone()];
    let mut parameters = Map::new();
    for noun in &relay.children {
        match noun.name.as_str() {
            "Language" => languages.extend(noun.attr("code").map(str::to_owned)),
            "Parameter" => {
                if let Some(name) = noun.attr("name") {
                    let value = noun.attr("value").unwrap_or_default();
                    parameters.insert(name.to_owned(), Value::String(value.to_owned()));
                }
            }
            _ => {}
        }
    }
    Ok(Relay {
        url: url.to_owned(),
        language,
        languages,
        greeting: relay
            .attr("welcomeGreeting")
            .map(str::to_owned)
            .filter(|g| !g.trim().is_empty()),
        dtmf: relay.attr("dtmfDetection") == Some("true"),
        parameters,
    })
}

#[cfg(test)]
mod tests;
