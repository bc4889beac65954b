//! The simulator against a stand-in for Hotline written here: an HTTP server answering webhooks
//! with fixed TwiML, and a WebSocket server running a script of Hotline's side of the session.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use twilio_signature::{SignatureError, SignatureValidator};

use crate::scenario::Scenario;
use crate::{CallReport, Line, Simulator, Target};

const TOKEN: &str = "relay-test-token";
const ACCOUNT: &str = "AC00000000000000000000000000000000";
const COUNSELOR: &str = "+15555550111";
/// The longest any one step of a test waits.
const WAIT: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<TcpStream>;

/// A webhook the stand-in answered: its path and form.
struct Seen {
    path: String,
    params: HashMap<String, String>,
}

/// TwiML by path, and where each request is noted.
type Routes = (Arc<HashMap<String, String>>, mpsc::UnboundedSender<Seen>);

/// Hotline's HTTP side: fixed TwiML by path, every request noted.
struct Webhooks {
    base_url: String,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl Webhooks {
    async fn start(routes: &[(&str, String)]) -> Self {
        let routes: Arc<HashMap<String, String>> = Arc::new(
            routes
                .iter()
                .map(|(path, twiml)| ((*path).to_owned(), twiml.clone()))
                .collect(),
        );
        let (tx, seen) = mpsc::unbounded_channel();
        let router = Router::new()
            .fallback(
                |State((routes, tx)): State<Routes>, uri: Uri, body: Bytes| async move {
                    let path = uri.path().to_owned();
                    let params = form_urlencoded::parse(&body).into_owned().collect();
                    let twiml = routes
                        .get(&path)
                        .cloned()
                        .unwrap_or_else(|| "<Response/>".to_owned());
                    let _ = tx.send(Seen { path, params });
                    twiml
                },
            )
            .with_state((routes, tx));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let base_url = format!("http://{}", listener.local_addr().expect("an address"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { base_url, seen }
    }

    /// The forms of the requests to `path` so far (the call is over: all were answered).
    fn to(&mut self, path: &str) -> Vec<HashMap<String, String>> {
        let mut all = Vec::new();
        while let Ok(seen) = self.seen.try_recv() {
            all.push(seen);
        }
        all.into_iter()
            .filter(|s| s.path == path)
            .map(|s| s.params)
            .collect()
    }
}

/// Hotline's WebSocket side, before it accepts.
struct Relay {
    listener: TcpListener,
    /// `http://127.0.0.1:PORT`: Hotline's public base URL, as its validator would be configured.
    base_url: String,
}

/// The upgrade as Hotline received it.
struct Handshake {
    path_and_query: String,
    signature: Option<String>,
}

impl Relay {
    async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let base_url = format!("http://{}", listener.local_addr().expect("an address"));
        Self { listener, base_url }
    }

    /// The socket's URL, as the TwiML writes it.
    fn url(&self, path_and_query: &str) -> String {
        twilio_signature::websocket_url(&self.base_url, path_and_query)
    }

    /// Accepts one upgrade and runs `script` on it, or refuses it with 403.
    fn serve<F, Fut, T>(self, refuse: bool, script: F) -> JoinHandle<(Handshake, Option<T>)>
    where
        F: FnOnce(Ws) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send,
        T: Send + 'static,
    {
        tokio::spawn(async move {
            let (tcp, _) = tokio::time::timeout(WAIT, self.listener.accept())
                .await
                .expect("an upgrade in time")
                .expect("a connection");
            let (tx, rx) = oneshot::channel();
            // The refusal's type is tungstenite's, large or not.
            #[allow(clippy::result_large_err)]
            let callback = move |request: &Request, response: Response| {
                let _ = tx.send(Handshake {
                    path_and_query: request
                        .uri()
                        .path_and_query()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    signature: request
                        .headers()
                        .get("X-Twilio-Signature")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                });
                if refuse {
                    let mut refusal = ErrorResponse::new(None);
                    *refusal.status_mut() = StatusCode::FORBIDDEN;
                    Err(refusal)
                } else {
                    Ok(response)
                }
            };
            let accepted = tokio_tungstenite::accept_hdr_async(tcp, callback).await;
            let handshake = rx.await.expect("the handshake was seen");
            let result = match accepted {
                Ok(ws) => Some(script(ws).await),
                Err(_) => None,
            };
            (handshake, result)
        })
    }
}

/// The next JSON message from the simulator.
async fn recv(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("the socket open")
            .expect("a frame");
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}

async fn send(ws: &mut Ws, message: Value) {
    ws.send(Message::text(message.to_string()))
        .await
        .expect("sent");
}

async fn text(ws: &mut Ws, token: &str, last: bool) {
    send(ws, json!({"type": "text", "token": token, "last": last})).await;
}

/// How the socket ended, seen from Hotline's side: `true` for a close frame.
async fn closed_with_a_frame(ws: &mut Ws) -> bool {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the socket ends in time")
        {
            Some(Ok(Message::Close(_))) => return true,
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return false,
        }
    }
}

async fn simulator(base_url: &str) -> Simulator {
    let target = Target {
        base_url: base_url.to_owned(),
        account_sid: ACCOUNT.to_owned(),
        auth_token: TOKEN.to_owned(),
        to: "+15555550100".to_owned(),
    };
    let mut simulator = Simulator::start(target, 0).await.expect("starts");
    simulator.pace = 0.0;
    simulator
}

async fn call(simulator: &Simulator, scenario: &str) -> CallReport {
    let scenario = Scenario::parse(scenario).expect("a scenario");
    tokio::time::timeout(Duration::from_secs(30), simulator.call(&scenario))
        .await
        .expect("the call ends in time")
}

async fn finished<T>(script: JoinHandle<(Handshake, Option<T>)>) -> (Handshake, Option<T>) {
    tokio::time::timeout(WAIT, script)
        .await
        .expect("the script ends in time")
        .expect("the script ran to its end")
}

fn connect(url: &str, action: Option<&str>, attributes: &str, nouns: &str) -> String {
    let action = action
        .map(|a| format!(r#" action="{a}""#))
        .unwrap_or_default();
    format!(
        r#"<Response><Connect{action}><ConversationRelay url="{url}" {attributes}>{nouns}</ConversationRelay></Connect></Response>"#
    )
}

#[tokio::test]
async fn the_upgrade_is_signed_and_setup_comes_first() {
    let relay = Relay::bind().await;
    let url = relay.url("/twilio/relay/c1?tenant=42");
    let base = relay.base_url.clone();
    let voice = format!(
        r#"<Response><Connect><ConversationRelay url="{url}" language="en-US" welcomeGreeting="Hello, you're through to the line."><Language code="es-MX"/><Parameter name="callId" value="c1"/></ConversationRelay></Connect><Say>After the session.</Say></Response>"#
    );
    let hotline = Webhooks::start(&[("/twilio/voice/", voice)]).await;
    let simulator = simulator(&hotline.base_url).await;
    let script = relay.serve(false, |mut ws| async move {
        let setup = recv(&mut ws).await;
        send(&mut ws, json!({"type": "end"})).await;
        setup
    });

    let report = call(&simulator, "name: silent\nafterwards: stay_silent").await;
    let (handshake, setup) = finished(script).await;
    let setup = setup.expect("accepted");

    assert_eq!(report.outcome, Ok(()), "{:#?}", report.lines);
    assert_eq!(handshake.path_and_query, "/twilio/relay/c1?tenant=42");
    let validator = |token: &str| SignatureValidator::new(&base, vec![SecretString::from(token)]);
    assert_eq!(
        validator(TOKEN)
            .validate_websocket(&handshake.path_and_query, handshake.signature.as_deref()),
        Ok(())
    );
    assert_eq!(
        validator("another token")
            .validate_websocket(&handshake.path_and_query, handshake.signature.as_deref()),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(setup["type"], "setup");
    assert!(setup["sessionId"]
        .as_str()
        .is_some_and(|s| s.starts_with("VX")));
    assert_eq!(setup["callSid"], report.call_sid.as_str());
    assert_eq!(setup["accountSid"], ACCOUNT);
    assert_eq!(setup["from"], "+14155550123");
    assert_eq!(setup["to"], "+15555550100");
    assert_eq!(setup["direction"], "inbound");
    assert_eq!(setup["callType"], "PSTN");
    assert_eq!(setup["callStatus"], "IN-PROGRESS");
    assert_eq!(setup["customParameters"], json!({"callId": "c1"}));
    // Without an action, the call goes on to the next verb.
    assert_eq!(
        report.heard(),
        ["Hello, you're through to the line.", "After the session."]
    );
}

#[tokio::test]
async fn streamed_tokens_are_heard_as_one_line() {
    let relay = Relay::bind().await;
    let url = relay.url("/twilio/relay/c1");
    let voice = connect(
        &url,
        None,
        r#"language="en-US""#,
        r#"<Language code="es-MX"/>"#,
    );
    let hotline = Webhooks::start(&[("/twilio/voice/", voice)]).await;
    let simulator = simulator(&hotline.base_url).await;
    let script = relay.serve(false, |mut ws| async move {
        let _setup = recv(&mut ws).await;
        let first = recv(&mut ws).await;
        send(
            &mut ws,
            json!({"type": "language", "ttsLanguage": "es-MX", "transcriptionLanguage": "es-MX"}),
        )
        .await;
        send(&mut ws, json!({"type": "mystery", "detail": 1})).await;
        text(&mut ws, "Lo siento, ", false).await;
        text(&mut ws, "fue un día ", false).await;
        text(&mut ws, "largo.", true).await;
        let second = recv(&mut ws).await;
        send(
            &mut ws,
            json!({"type": "play", "source": "https://cdn.example/chime.mp3"}),
        )
        .await;
        send(&mut ws, json!({"type": "end"})).await;
        (first, second)
    });

    let report = call(
        &simulator,
        "name: two turns\nsteps: [{say: I had a long day.}, {say: Gracias.}]\nafterwards: stay_silent",
    )
    .await;
    let (_, prompts) = finished(script).await;
    let (first, second) = prompts.expect("accepted");

    assert_eq!(report.outcome, Ok(()), "{:#?}", report.lines);
    assert_eq!(
        first,
        json!({"type": "prompt", "voicePrompt": "I had a long day.", "lang": "en-US", "last": true})
    );
    assert_eq!(second["voicePrompt"], "Gracias.");
    assert_eq!(
        second["lang"], "es-MX",
        "a language switch changes later prompts"
    );
    assert_eq!(report.heard(), ["Lo siento, fue un día largo."]);
    assert!(report
        .lines
        .contains(&Line::Play("https://cdn.example/chime.mp3".into())));
    let notes: Vec<&str> = report
        .lines
        .iter()
        .filter_map(|l| match l {
            Line::Note(note) => Some(note.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("es-MX") && !n.contains("not declare")),
        "{notes:?}"
    );
    assert!(notes.iter().any(|n| n.contains("'mystery'")), "{notes:?}");
    assert_eq!(report.turn_latencies.len(), 2, "one a prompt");
}

#[tokio::test]
async fn an_interrupt_tells_hotline_what_the_caller_heard() {
    let relay = Relay::bind().await;
    let url = relay.url("/twilio/relay/c1");
    let voice = connect(&url, None, r#"language="en-US""#, "");
    let hotline = Webhooks::start(&[("/twilio/voice/", voice)]).await;
    let simulator = simulator(&hotline.base_url).await;
    let script = relay.serve(false, |mut ws| async move {
        let _setup = recv(&mut ws).await;
        let _prompt = recv(&mut ws).await;
        text(&mut ws, "That sounds like ", false).await;
        let interrupt = recv(&mut ws).await;
        let words = recv(&mut ws).await;
        text(&mut ws, "Thank you for ", false).await;
        text(&mut ws, "telling me.", true).await;
        let close_frame = closed_with_a_frame(&mut ws).await;
        (interrupt, words, close_frame)
    });

    let report = call(
        &simulator,
        "name: interrupts\nsteps: [{say: Work has been a lot.}, {interrupt: And I can't sleep.}]",
    )
    .await;
    let (_, seen) = finished(script).await;
    let (interrupt, words, close_frame) = seen.expect("accepted");

    assert_eq!(report.outcome, Ok(()), "{:#?}", report.lines);
    assert_eq!(interrupt["type"], "interrupt");
    assert_eq!(interrupt["utteranceUntilInterrupt"], "That sounds like");
    assert!(
        interrupt["durationUntilInterruptMs"].is_u64(),
        "{interrupt}"
    );
    assert_eq!(
        words,
        json!({"type": "prompt", "voicePrompt": "And I can't sleep.", "lang": "en-US", "last": true})
    );
    // What was heard before the interruption is what the report keeps of that reply.
    assert_eq!(
        report.heard(),
        ["That sounds like", "Thank you for telling me."]
    );
    let caller: Vec<&Line> = report
        .lines
        .iter()
        .filter(|l| matches!(l, Line::Caller(_) | Line::Hotline(_)))
        .collect();
    assert_eq!(
        caller,
        [
            &Line::Caller("Work has been a lot.".into()),
            &Line::Hotline("That sounds like".into()),
            &Line::Caller("And I can't sleep.".into()),
            &Line::Hotline("Thank you for telling me.".into()),
        ]
    );
    assert_eq!(
        report.turn_latencies.len(),
        2,
        "the interrupting words are a turn"
    );
    assert!(
        close_frame,
        "a caller who hangs up leaves the session cleanly"
    );
}

#[tokio::test]
async fn a_lost_socket_leads_to_the_action_with_64105() {
    let relay = Relay::bind().await;
    let url = relay.url("/twilio/relay/c1");
    let voice = connect(&url, Some("/twilio/relay-ended/c1"), "", "");
    let mut hotline = Webhooks::start(&[
        ("/twilio/voice/", voice),
        (
            "/twilio/relay-ended/c1",
            "<Response><Say>Sorry, the line dropped.</Say><Hangup/></Response>".into(),
        ),
    ])
    .await;
    let simulator = simulator(&hotline.base_url).await;
    let script = relay.serve(false, |mut ws| async move {
        let _setup = recv(&mut ws).await;
        let _prompt = recv(&mut ws).await;
        text(&mut ws, "Let me ", false).await;
        closed_with_a_frame(&mut ws).await
    });

    let report = call(
        &simulator,
        "name: dropped\nsteps: [{say: Are you there?}, drop_socket]",
    )
    .await;
    let (_, close_frame) = finished(script).await;

    assert_eq!(report.outcome, Ok(()), "{:#?}", report.lines);
    assert_eq!(close_frame, Some(false), "the socket is lost, not closed");
    let actions = hotline.to("/twilio/relay-ended/c1");
    assert_eq!(actions.len(), 1);
    let action = &actions[0];
    assert_eq!(action["SessionStatus"], "failed");
    assert_eq!(action["ErrorCode"], "64105");
    assert!(action["SessionId"].starts_with("VX"));
    assert!(action["SessionDuration"].parse::<u64>().is_ok());
    assert_eq!(action["CallSid"], report.call_sid);
    assert!(!action.contains_key("HandoffData"));
    assert_eq!(report.heard(), ["Let me", "Sorry, the line dropped."]);
}

#[tokio::test]
async fn an_end_with_handoff_data_reaches_the_action_whose_dial_is_dialled() {
    let relay = Relay::bind().await;
    let url = relay.url("/twilio/relay/c1");
    let voice = connect(&url, Some("/twilio/relay-ended/c1"), "", "");
    let mut hotline = Webhooks::start(&[
        ("/twilio/voice/", voice),
        (
            "/twilio/relay-ended/c1",
            format!(
                "<Response><Say>Connecting you with a counselor.</Say><Dial><Number>{COUNSELOR}</Number></Dial></Response>"
            ),
        ),
    ])
    .await;
    let simulator = simulator(&hotline.base_url).await;
    let handoff = r#"{"reason":"counselor"}"#;
    let script = relay.serve(false, move |mut ws| async move {
        let _setup = recv(&mut ws).await;
        let _prompt = recv(&mut ws).await;
        text(&mut ws, "I'll put you through now.", true).await;
        send(&mut ws, json!({"type": "end", "handoffData": handoff})).await;
    });

    let report = call(
        &simulator,
        "name: handoff\nsteps: [{say: I'd like to talk to a person.}]\nafterwards: stay_silent",
    )
    .await;
    finished(script).await.1.expect("accepted");

    assert_eq!(report.outcome, Ok(()), "{:#?}", report.lines);
    let actions = hotline.to("/twilio/relay-ended/c1");
    assert_eq!(actions.len(), 1);
    let action = &actions[0];
    assert_eq!(action["SessionStatus"], "ended");
    assert_eq!(action["HandoffData"], handoff);
    assert!(!action.contains_key("ErrorCode"));
    assert_eq!(action["CallStatus"], "in-progress");
    assert_eq!(report.dialled(), [COUNSELOR]);
    assert_eq!(
        report.heard(),
        [
            "I'll put you through now.",
            "Connecting you with a counselor."
        ]
    );
}

#[tokio::test]
async fn a_refused_upgrade_leads_to_the_action_with_64102() {
    let relay = Relay::bind().await;
    let url = relay.url("/twilio/relay/c1");
    let voice = connect(
        &url,
        Some("/twilio/relay-ended/c1"),
        r#"welcomeGreeting="Hello.""#,
        "",
    );
    let mut hotline = Webhooks::start(&[
        ("/twilio/voice/", voice),
        (
            "/twilio/relay-ended/c1",
            "<Response><Say>Sorry, something went wrong.</Say></Response>".into(),
        ),
    ])
    .await;
    let simulator = simulator(&hotline.base_url).await;
    let script = relay.serve(true, |_ws| async {});

    let report = call(&simulator, "name: refused\nsteps: [{say: Hello?}]").await;
    let (handshake, accepted) = finished(script).await;

    assert_eq!(report.outcome, Ok(()), "{:#?}", report.lines);
    assert!(accepted.is_none(), "refused");
    assert!(handshake.signature.is_some());
    let actions = hotline.to("/twilio/relay-ended/c1");
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0]["SessionStatus"], "failed");
    assert_eq!(actions[0]["ErrorCode"], "64102");
    assert_eq!(
        report.heard(),
        ["Sorry, something went wrong."],
        "no greeting"
    );
    assert!(report.turn_latencies.is_empty());
}

#[tokio::test]
async fn each_turn_is_timed_once_at_a_gather_and_on_a_socket() {
    let relay = Relay::bind().await;
    let url = relay.url("/twilio/relay/c1");
    let mut hotline = Webhooks::start(&[
        (
            "/twilio/voice/",
            r#"<Response><Gather input="speech" action="/twilio/gather/1"><Say>How are you?</Say></Gather></Response>"#.into(),
        ),
        (
            "/twilio/gather/1",
            r#"<Response><Gather input="dtmf" numDigits="1" action="/twilio/gather/2"><Say>Press 1 to talk.</Say></Gather></Response>"#.into(),
        ),
        (
            "/twilio/gather/2",
            connect(&url, None, r#"dtmfDetection="true""#, ""),
        ),
    ])
    .await;
    let simulator = simulator(&hotline.base_url).await;
    let script = relay.serve(false, |mut ws| async move {
        let _setup = recv(&mut ws).await;
        let prompt = recv(&mut ws).await;
        text(&mut ws, "You're welcome.", true).await;
        let digit = recv(&mut ws).await;
        text(&mut ws, "Goodbye.", true).await;
        send(&mut ws, json!({"type": "end"})).await;
        (prompt, digit)
    });

    // An interrupt at a <Gather> is plain words.
    let report = call(
        &simulator,
        "name: turns\nsteps: [{interrupt: Not great.}, {press: 1}, {say: Thanks.}, {press: 2}]\nafterwards: stay_silent",
    )
    .await;
    let (_, seen) = finished(script).await;
    let (prompt, digit) = seen.expect("accepted");

    assert_eq!(report.outcome, Ok(()), "{:#?}", report.lines);
    assert_eq!(
        hotline.to("/twilio/gather/1")[0]["SpeechResult"],
        "Not great."
    );
    assert_eq!(prompt["voicePrompt"], "Thanks.");
    assert_eq!(digit, json!({"type": "dtmf", "digit": "2"}));
    assert_eq!(
        report.turn_latencies.len(),
        4,
        "two at <Gather>s, two on the socket"
    );
    assert_eq!(
        report.latencies.len(),
        4,
        "the voice webhook, two actions and the status callback"
    );
}

#[tokio::test]
async fn keys_are_not_heard_without_dtmf_detection() {
    let relay = Relay::bind().await;
    let url = relay.url("/twilio/relay/c1");
    let voice = connect(&url, None, "", "");
    let hotline = Webhooks::start(&[("/twilio/voice/", voice)]).await;
    let simulator = simulator(&hotline.base_url).await;
    let script = relay.serve(false, |mut ws| async move {
        let _setup = recv(&mut ws).await;
        let first = recv(&mut ws).await;
        send(&mut ws, json!({"type": "end"})).await;
        first
    });

    let report = call(
        &simulator,
        "name: keys\nsteps: [{press: 1}, {say: Hello?}]\nafterwards: stay_silent",
    )
    .await;
    let (_, first) = finished(script).await;

    assert_eq!(report.outcome, Ok(()), "{:#?}", report.lines);
    assert_eq!(
        first.expect("accepted")["type"],
        "prompt",
        "no dtmf was sent"
    );
    assert!(report
        .lines
        .iter()
        .any(|l| matches!(l, Line::Note(n) if n.contains("dtmfDetection"))));
}

#[tokio::test]
async fn a_rest_update_ends_the_session_and_runs_its_twiml() {
    let relay = Relay::bind().await;
    let url = relay.url("/twilio/relay/c1");
    let voice = connect(&url, Some("/twilio/relay-ended/c1"), "", "");
    let mut hotline = Webhooks::start(&[("/twilio/voice/", voice)]).await;
    let simulator = simulator(&hotline.base_url).await;
    let rest = simulator.rest_base_url.clone();
    let script = relay.serve(false, move |mut ws| async move {
        let setup = recv(&mut ws).await;
        let _prompt = recv(&mut ws).await;
        let call_sid = setup["callSid"].as_str().expect("a CallSid").to_owned();
        let updated = reqwest::Client::new()
            .post(format!(
                "{rest}/2010-04-01/Accounts/{ACCOUNT}/Calls/{call_sid}.json"
            ))
            .basic_auth(ACCOUNT, Some(TOKEN))
            .form(&[(
                "Twiml",
                format!("<Response><Dial>{COUNSELOR}</Dial></Response>"),
            )])
            .send()
            .await
            .expect("the REST stand-in answers");
        (
            updated.status().as_u16(),
            closed_with_a_frame(&mut ws).await,
        )
    });

    let report = call(
        &simulator,
        "name: updated\nsteps: [{say: I need to talk to someone.}]\nafterwards: stay_silent",
    )
    .await;
    let (_, seen) = finished(script).await;

    assert_eq!(report.outcome, Ok(()), "{:#?}", report.lines);
    assert_eq!(seen, Some((200, true)));
    assert_eq!(report.dialled(), [COUNSELOR]);
    assert!(
        hotline.to("/twilio/relay-ended/c1").is_empty(),
        "a redirected call leaves <Connect> without its action"
    );
}

#[tokio::test]
async fn the_interrupts_example_runs_on_a_socket() {
    let relay = Relay::bind().await;
    let url = relay.url("/twilio/relay/c1");
    let voice = connect(&url, None, r#"welcomeGreeting="Hello, I'm listening.""#, "");
    let hotline = Webhooks::start(&[("/twilio/voice/", voice)]).await;
    let simulator = simulator(&hotline.base_url).await;
    let script = relay.serve(false, |mut ws| async move {
        let _setup = recv(&mut ws).await;
        let _first = recv(&mut ws).await;
        text(&mut ws, "Exam weeks can be ", false).await;
        let interrupt = recv(&mut ws).await;
        let _more = recv(&mut ws).await;
        text(&mut ws, "That sounds exhausting. ", false).await;
        text(&mut ws, "A quiet routine before bed can help.", true).await;
        let _goodbye = recv(&mut ws).await;
        text(&mut ws, "Take care.", true).await;
        interrupt
    });

    let example = crate::scenario::relay_examples().remove(0);
    let report = tokio::time::timeout(Duration::from_secs(30), simulator.call(&example))
        .await
        .expect("the call ends in time");
    let (_, interrupt) = finished(script).await;

    assert_eq!(report.outcome, Ok(()), "{:#?}", report.lines);
    assert_eq!(
        interrupt.expect("accepted")["utteranceUntilInterrupt"],
        "Exam weeks can be"
    );
    assert_eq!(
        report.heard(),
        [
            "Hello, I'm listening.",
            "Exam weeks can be",
            "That sounds exhausting. A quiet routine before bed can help.",
            "Take care.",
        ]
    );
    assert_eq!(report.turn_latencies.len(), 3);
}
