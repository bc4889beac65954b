//! A stand-in for Twilio's side of a phone call, to see a whole call on a fresh machine and to
//! drive tests and load: it sends Hotline the webhooks Twilio sends, signed as Twilio signs them,
//! runs the TwiML it gets back verb by verb as Twilio would, answers for the caller from a
//! scenario, and serves the REST API Hotline calls, so a REST update really interrupts the call.
//!
//! `<Connect><ConversationRelay>` is played over a real WebSocket to the URL the TwiML names
//! (the `relay` module): the signed upgrade, the caller's words as prompts, Hotline's streamed
//! reply as what the caller hears, and the `<Connect action>` when the session ends.
//!
//! A call fails (as it would on Twilio, with an application error or a caller left alone) on an
//! HTTP error, invalid TwiML, a webhook slower than Twilio's 15 s, or a caller left in silence
//! for longer than that.

pub mod load;
mod relay;
pub mod rest;
pub mod scenario;
pub mod twiml;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::mpsc;
use twilio_signature::sign_request;

use self::rest::Registry;
use self::scenario::{Afterwards, DialAnswer, Scenario, Step, Transcription};
use self::twiml::Verb;

/// Twilio's read timeout for a webhook, and the longest a caller may hear nothing.
pub const TWILIO_TIMEOUT: Duration = Duration::from_secs(15);
/// More webhooks than this in one call is a loop.
const MAX_WEBHOOKS: usize = 100;

/// A Twilio-shaped SID: a prefix and 32 hex digits.
pub fn new_sid(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

/// Why a simulated call went wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    #[error("{url} could not be reached: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered HTTP {status}: Twilio would play its application error")]
    Http { url: String, status: u16 },
    #[error("{url} took {secs:.1} s, longer than Twilio waits (15 s)")]
    Slow { url: String, secs: f64 },
    #[error("invalid TwiML from {url}: {reason}")]
    InvalidTwiml { url: String, reason: String },
    #[error("the caller heard nothing for {secs:.0} s")]
    Silence { secs: f64 },
    #[error("more than {MAX_WEBHOOKS} webhooks in one call: a loop")]
    Loop,
}

/// What the caller heard and did, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Hotline(String),
    Play(String),
    Caller(String),
    Keys(String),
    Pause(f64),
    Dial {
        number: String,
        answer: DialAnswer,
    },
    /// What the counselor heard before taking the call (`<Number url>`), which the caller does
    /// not hear.
    Whisper(String),
    Note(String),
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hotline(text) => write!(f, "  Hotline: {text}"),
            Self::Play(url) => write!(f, "  Hotline plays {url}"),
            Self::Caller(text) => write!(f, "  Caller:  \"{text}\""),
            Self::Keys(keys) => write!(f, "  Caller presses {keys}"),
            Self::Pause(secs) => write!(f, "  (silence, {secs:.0} s)"),
            Self::Dial { number, answer } => {
                let how = match answer {
                    DialAnswer::Completed => "answered: the caller talks with a person",
                    DialAnswer::NoAnswer => "no answer",
                    DialAnswer::Busy => "busy",
                    DialAnswer::Declines => "answered, but the call was not taken",
                    DialAnswer::CallerHangsUp => "the caller hangs up while it rings",
                };
                write!(f, "  ☎ Hotline dials {number}: {how}")
            }
            Self::Whisper(text) => write!(f, "    (to the counselor) Hotline: {text}"),
            Self::Note(note) => write!(f, "  [{note}]"),
        }
    }
}

/// One simulated call's record.
#[derive(Debug, Clone)]
pub struct CallReport {
    pub call_sid: String,
    pub scenario: String,
    pub lines: Vec<Line>,
    pub outcome: Result<(), SimError>,
    /// How long each webhook took Hotline to answer.
    pub latencies: Vec<Duration>,
    /// For each of the caller's turns, from the end of their words to the first reply they can
    /// hear: at a `<Gather>` (speech or keys) from sending its action request until the TwiML
    /// arrives; on a ConversationRelay session from sending the final `prompt` (or the last
    /// `dtmf`) until Hotline's first `text` token or `play`. A turn Hotline never answered has
    /// no entry; `<Record>` turns, answered by a later REST update, have none either.
    pub turn_latencies: Vec<Duration>,
}

impl CallReport {
    /// What Hotline said, in order: its `<Say>`s, ConversationRelay greetings and replies.
    pub fn heard(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|l| match l {
                Line::Hotline(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The numbers Hotline dialled.
    pub fn dialled(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|l| match l {
                Line::Dial { number, .. } => Some(number.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// Where the simulator sends calls, and as whom.
#[derive(Debug, Clone)]
pub struct Target {
    /// Hotline's base URL as Twilio calls it (its PUBLIC_BASE_URL): webhooks are signed over it.
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: String,
    /// The number callers dial.
    pub to: String,
}

/// The simulator: a REST stand-in on 127.0.0.1 and the calls it runs.
#[derive(Debug, Clone)]
pub struct Simulator {
    target: Target,
    http: reqwest::Client,
    registry: Arc<Mutex<Registry>>,
    /// The REST stand-in's base URL (Hotline's TWILIO_API_BASE).
    pub rest_base_url: String,
    /// Pauses last this share of their length (1.0: real time).
    pub pace: f64,
    /// Print each line as it happens.
    pub echo: bool,
}

impl Simulator {
    /// Starts the REST stand-in on 127.0.0.1 (port 0: any free port).
    pub async fn start(target: Target, port: u16) -> std::io::Result<Self> {
        let registry = Arc::new(Mutex::new(Registry::default()));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let rest_base_url = format!("http://{}", listener.local_addr()?);
        let router = rest::router(&target.account_sid, &target.auth_token, registry.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let http = reqwest::Client::builder()
            .timeout(TWILIO_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self {
            target,
            http,
            registry,
            rest_base_url,
            pace: 1.0,
            echo: false,
        })
    }

    /// Calls Hotline placed through the REST API (`POST Calls.json`), as (CallSid, To).
    pub fn created_calls(&self) -> Vec<(String, String)> {
        self.registry
            .lock()
            .map(|r| r.created.clone())
            .unwrap_or_default()
    }

    /// Recordings of whole calls (`<Start><Recording>`) the simulator reported, as
    /// (CallSid, RecordingSid).
    pub fn call_recordings(&self) -> Vec<(String, String)> {
        self.registry
            .lock()
            .map(|r| r.call_recordings.clone())
            .unwrap_or_default()
    }

    /// Registers a live call `call_sid` (placed by someone else) and returns where REST updates
    /// of it arrive.
    pub fn watch_call(&self, call_sid: &str) -> mpsc::Receiver<String> {
        let (tx, rx) = mpsc::channel(8);
        if let Ok(mut registry) = self.registry.lock() {
            registry.calls.insert(call_sid.to_owned(), tx);
        }
        rx
    }

    /// Serves a recording `recording_sid` of `text`, and returns its URL.
    pub fn add_recording(&self, recording_sid: &str, text: &str) -> String {
        if let Ok(mut registry) = self.registry.lock() {
            registry
                .recordings
                .insert(recording_sid.to_owned(), text.to_owned());
        }
        format!(
            "{}/2010-04-01/Accounts/{}/Recordings/{recording_sid}",
            self.rest_base_url, self.target.account_sid
        )
    }

    /// Runs one call through `scenario`.
    pub async fn call(&self, scenario: &Scenario) -> CallReport {
        let call_sid = new_sid("CA");
        let (updates_tx, updates) = mpsc::channel(8);
        if let Ok(mut registry) = self.registry.lock() {
            registry.calls.insert(call_sid.clone(), updates_tx);
        }
        let mut call = Call {
            sim: self,
            sid: call_sid.clone(),
            scenario,
            steps: scenario.steps.iter().cloned().collect(),
            updates,
            report: CallReport {
                call_sid: call_sid.clone(),
                scenario: scenario.name.clone(),
                lines: Vec::new(),
                outcome: Ok(()),
                latencies: Vec::new(),
                turn_latencies: Vec::new(),
            },
            webhooks: 0,
            dials: 0,
            quiet: 0.0,
            started: Instant::now(),
            late_transcription: None,
            recording_callback: None,
        };
        let outcome = call.run().await;
        let ended = call.status_callback().await;
        let recorded = call.recording_status_callback().await;
        if let Ok(mut registry) = self.registry.lock() {
            registry.calls.remove(&call_sid);
        }
        let mut report = call.report;
        report.outcome = outcome.and(ended).and(recorded);
        report
    }
}

/// Where the document being run came from, and its verbs.
struct Document {
    url: String,
    verbs: Vec<Verb>,
    next: usize,
}

/// What a verb led to.
enum Flow {
    Next,
    Goto(Document),
    End,
}

struct Call<'a> {
    sim: &'a Simulator,
    sid: String,
    scenario: &'a Scenario,
    steps: std::collections::VecDeque<Step>,
    updates: mpsc::Receiver<String>,
    report: CallReport,
    webhooks: usize,
    dials: usize,
    /// Seconds since the caller last heard anything.
    quiet: f64,
    started: Instant,
    /// A transcription held back until the caller next reaches a prompt (`Transcription::Late`):
    /// its callback URL and parameters.
    late_transcription: Option<(String, Vec<(String, String)>)>,
    /// Where the call's own recording (`<Start><Recording>`) is reported when it is ready.
    recording_callback: Option<String>,
}

impl Call<'_> {
    fn line(&mut self, line: Line) {
        if self.sim.echo {
            println!("{line}");
        }
        self.report.lines.push(line);
    }

    fn params(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut params: Vec<(String, String)> = [
            ("CallSid", self.sid.as_str()),
            ("AccountSid", self.sim.target.account_sid.as_str()),
            ("From", self.scenario.from.as_str()),
            ("To", self.sim.target.to.as_str()),
            ("Caller", self.scenario.from.as_str()),
            ("Called", self.sim.target.to.as_str()),
            ("CallStatus", "in-progress"),
            ("Direction", "inbound"),
            ("ApiVersion", "2010-04-01"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (name, value) in extra {
            params.retain(|(k, _)| k != name);
            params.push(((*name).to_owned(), (*value).to_owned()));
        }
        params
    }

    /// POSTs a signed webhook and returns the answer's status and body.
    async fn post(
        &mut self,
        url: &str,
        params: &[(String, String)],
    ) -> Result<(u16, String), SimError> {
        self.webhooks += 1;
        if self.webhooks > MAX_WEBHOOKS {
            return Err(SimError::Loop);
        }
        let signature = sign_request(&self.sim.target.auth_token, url, params);
        let sent = Instant::now();
        let response = self
            .sim
            .http
            .post(url)
            .header("X-Twilio-Signature", signature)
            .header("I-Twilio-Idempotency-Token", new_sid("idem-"))
            .form(params)
            .send()
            .await;
        let took = sent.elapsed();
        self.report.latencies.push(took);
        let response = response.map_err(|e| {
            if e.is_timeout() {
                SimError::Slow {
                    url: url.to_owned(),
                    secs: took.as_secs_f64(),
                }
            } else {
                SimError::Unreachable {
                    url: url.to_owned(),
                    reason: e.without_url().to_string(),
                }
            }
        })?;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        if took > TWILIO_TIMEOUT {
            return Err(SimError::Slow {
                url: url.to_owned(),
                secs: took.as_secs_f64(),
            });
        }
        Ok((status, body))
    }

    /// A webhook whose answer is TwiML to run.
    async fn fetch(&mut self, url: &str, extra: &[(&str, &str)]) -> Result<Document, SimError> {
        let params = self.params(extra);
        let (status, body) = self.post(url, &params).await?;
        if status != 200 {
            return Err(SimError::Http {
                url: url.to_owned(),
                status,
            });
        }
        let verbs = twiml::parse(&body).map_err(|reason| SimError::InvalidTwiml {
            url: url.to_owned(),
            reason,
        })?;
        Ok(Document {
            url: url.to_owned(),
            verbs,
            next: 0,
        })
    }

    /// A callback whose answer is ignored, but must be a success.
    async fn notify(&mut self, url: &str, extra: &[(&str, &str)]) -> Result<(), SimError> {
        let params = self.params(extra);
        let (status, _) = self.post(url, &params).await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(SimError::Http {
                url: url.to_owned(),
                status,
            })
        }
    }

    fn resolve(&self, document: &Document, url: &str) -> String {
        reqwest::Url::parse(&document.url)
            .and_then(|base| base.join(url))
            .map_or_else(|_| url.to_owned(), |u| u.to_string())
    }

    fn action(&self, document: &Document, verb: &Verb) -> String {
        verb.attr("action")
            .map_or_else(|| document.url.clone(), |a| self.resolve(document, a))
    }

    fn quiet_for(&mut self, secs: f64) -> Result<(), SimError> {
        self.quiet += secs;
        if self.quiet > TWILIO_TIMEOUT.as_secs_f64() {
            return Err(SimError::Silence { secs: self.quiet });
        }
        Ok(())
    }

    fn heard(&mut self, line: Line) {
        self.quiet = 0.0;
        self.line(line);
    }

    async fn run(&mut self) -> Result<(), SimError> {
        if self.sim.echo {
            println!("\n📞 {} ({})", self.scenario.name, self.sid);
            if !self.scenario.description.is_empty() {
                println!("   {}", self.scenario.description);
            }
        }
        let voice = format!("{}/twilio/voice/", self.sim.target.base_url);
        let mut document = self.fetch(&voice, &[("CallStatus", "ringing")]).await?;
        loop {
            // A REST update replaces whatever the call is doing.
            if let Ok(xml) = self.updates.try_recv() {
                document = self.updated(xml)?;
            }
            let Some(verb) = document.verbs.get(document.next).cloned() else {
                self.line(Line::Note("the document ended: Twilio hangs up".into()));
                return Ok(());
            };
            document.next += 1;
            match self.execute(&document, &verb).await? {
                Flow::Next => {}
                Flow::Goto(next) => document = next,
                Flow::End => return Ok(()),
            }
        }
    }

    fn updated(&mut self, xml: String) -> Result<Document, SimError> {
        self.line(Line::Note("Hotline updated the live call".into()));
        let verbs = twiml::parse(&xml).map_err(|reason| SimError::InvalidTwiml {
            url: "a REST update".into(),
            reason,
        })?;
        Ok(Document {
            url: format!("{}/twilio/voice/", self.sim.target.base_url),
            verbs,
            next: 0,
        })
    }

    async fn execute(&mut self, document: &Document, verb: &Verb) -> Result<Flow, SimError> {
        match verb.name.as_str() {
            "Say" => {
                self.heard(Line::Hotline(verb.text.trim().to_owned()));
                Ok(Flow::Next)
            }
            "Play" => {
                self.heard(Line::Play(verb.text.trim().to_owned()));
                Ok(Flow::Next)
            }
            "Pause" => self.pause(verb).await,
            "Hangup" | "Reject" => {
                self.line(Line::Note("Hotline hung up".into()));
                Ok(Flow::End)
            }
            "Redirect" => {
                let url = self.resolve(document, verb.text.trim());
                Ok(Flow::Goto(self.fetch(&url, &[]).await?))
            }
            "Gather" => self.gather(document, verb).await,
            "Record" => self.record(document, verb).await,
            "Dial" => self.dial(document, verb).await,
            "Connect" => self.connect(document, verb).await,
            "Start" => self.start(document, verb),
            other => Err(SimError::InvalidTwiml {
                url: document.url.clone(),
                reason: format!("<{other}> cannot run here"),
            }),
        }
    }

    /// `<Start><Recording>`: the call is recorded from here on; its status callback is sent once
    /// the call has ended, as Twilio sends it when the recording is ready.
    fn start(&mut self, document: &Document, verb: &Verb) -> Result<Flow, SimError> {
        for noun in &verb.children {
            let Some(callback) = noun.attr("recordingStatusCallback") else {
                continue;
            };
            let events = noun
                .attr("recordingStatusCallbackEvent")
                .unwrap_or("completed");
            if noun.attr("recordingStatusCallbackMethod").unwrap_or("POST") != "POST" {
                return Err(SimError::InvalidTwiml {
                    url: document.url.clone(),
                    reason: "the simulator sends recording callbacks by POST only".into(),
                });
            }
            if events.split_whitespace().any(|e| e == "completed") {
                self.recording_callback = Some(self.resolve(document, callback));
            }
        }
        self.line(Line::Note("Twilio records the call".into()));
        Ok(Flow::Next)
    }

    /// The call's recording is ready: its media is served, and the callback sent.
    async fn recording_status_callback(&mut self) -> Result<(), SimError> {
        let Some(callback) = self.recording_callback.take() else {
            return Ok(());
        };
        let words: Vec<String> = self
            .report
            .lines
            .iter()
            .filter_map(|line| match line {
                Line::Caller(text) => Some(text.clone()),
                _ => None,
            })
            .collect();
        let recording_sid = new_sid("RE");
        let url = self.sim.add_recording(&recording_sid, &words.join(" "));
        let duration = self.started.elapsed().as_secs().max(1).to_string();
        let params: Vec<(String, String)> = [
            ("RecordingSid", recording_sid.as_str()),
            ("RecordingUrl", url.as_str()),
            ("RecordingStatus", "completed"),
            ("RecordingDuration", duration.as_str()),
            ("RecordingChannels", "2"),
            // [unverified] the source Twilio names for `<Start><Recording>`.
            ("RecordingSource", "StartCallRecordingTwiML"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        self.notify_owned(&callback, &params).await?;
        if let Ok(mut registry) = self.sim.registry.lock() {
            registry
                .call_recordings
                .push((self.sid.clone(), recording_sid));
        }
        Ok(())
    }

    /// A pause takes time (at the simulator's pace), and a REST update interrupts it.
    async fn pause(&mut self, verb: &Verb) -> Result<Flow, SimError> {
        let secs: f64 = verb
            .attr("length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(1.0);
        self.line(Line::Pause(secs));
        self.quiet_for(secs)?;
        let wait = Duration::from_secs_f64((secs * self.sim.pace).max(0.0));
        tokio::select! {
            update = self.updates.recv() => match update {
                Some(xml) => Ok(Flow::Goto(self.updated(xml)?)),
                None => Ok(Flow::Next),
            },
            () = tokio::time::sleep(wait) => Ok(Flow::Next),
        }
    }

    /// The caller's next step, if any; `None` when they have run out.
    fn next_step(&self) -> Option<&Step> {
        self.steps.front()
    }

    /// The caller ran out of steps: they hang up, or stay on the line silent.
    fn out_of_steps(&mut self) -> Option<Flow> {
        match self.scenario.afterwards {
            Afterwards::HangUp => {
                self.line(Line::Note("the caller hangs up".into()));
                Some(Flow::End)
            }
            Afterwards::StaySilent => None,
        }
    }

    async fn notify_owned(
        &mut self,
        url: &str,
        params: &[(String, String)],
    ) -> Result<(), SimError> {
        let borrowed: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.notify(url, &borrowed).await
    }

    /// A `drop_socket` step reached where there is no socket is skipped.
    fn skip_socket_drops(&mut self) {
        while self.next_step() == Some(&Step::DropSocket) {
            self.steps.pop_front();
            self.line(Line::Note(
                "no ConversationRelay socket to lose here: the step is skipped".into(),
            ));
        }
    }

    /// The caller's turn at a `<Gather>`: its action request, timed until the TwiML arrives.
    async fn gather_turn(
        &mut self,
        action: &str,
        extra: &[(&str, &str)],
    ) -> Result<Document, SimError> {
        let sent = Instant::now();
        let next = self.fetch(action, extra).await?;
        self.report.turn_latencies.push(sent.elapsed());
        Ok(next)
    }

    async fn gather(&mut self, document: &Document, verb: &Verb) -> Result<Flow, SimError> {
        // A late transcription arrives now: the turn it belongs to was answered without it.
        if let Some((callback, params)) = self.late_transcription.take() {
            self.line(Line::Note("Twilio's transcription arrives, late".into()));
            self.notify_owned(&callback, &params).await?;
        }
        self.skip_socket_drops();
        let input = verb.attr("input").unwrap_or("dtmf");
        let takes_keys = input.contains("dtmf");
        let takes_speech = input.contains("speech");
        let timeout: f64 = verb
            .attr("timeout")
            .and_then(|t| t.parse().ok())
            .unwrap_or(5.0);
        let action = self.action(document, verb);
        // The prompts play unless the caller presses a key over them.
        for prompt in &verb.children {
            if takes_keys && matches!(self.next_step(), Some(Step::Press(_))) {
                break;
            }
            match prompt.name.as_str() {
                "Say" => self.heard(Line::Hotline(prompt.text.trim().to_owned())),
                "Play" => self.heard(Line::Play(prompt.text.trim().to_owned())),
                _ => {
                    if let Flow::Goto(next) = self.pause(prompt).await? {
                        return Ok(Flow::Goto(next));
                    }
                }
            }
        }
        match self.next_step().cloned() {
            Some(Step::Press(keys)) if takes_keys => {
                self.steps.pop_front();
                let digits: String = match verb.attr("numDigits").and_then(|n| n.parse().ok()) {
                    Some(n) => keys.chars().take(n).collect(),
                    None => keys.clone(),
                };
                self.line(Line::Keys(digits.clone()));
                Ok(Flow::Goto(
                    self.gather_turn(&action, &[("Digits", &digits)]).await?,
                ))
            }
            // Words spoken over a prompt are, at a <Gather>, just words.
            Some(Step::Say(text) | Step::Interrupt(text)) if takes_speech => {
                self.steps.pop_front();
                self.line(Line::Caller(text.clone()));
                let fetched = self
                    .gather_turn(&action, &[("SpeechResult", &text), ("Confidence", "0.92")])
                    .await?;
                Ok(Flow::Goto(fetched))
            }
            None => match self.out_of_steps() {
                Some(flow) => Ok(flow),
                None => self.no_input(&action, verb, timeout).await,
            },
            Some(Step::Wait(secs)) => {
                self.steps.pop_front();
                self.line(Line::Pause(f64::from(secs)));
                let wait = Duration::from_secs_f64((f64::from(secs) * self.sim.pace).max(0.0));
                tokio::select! {
                    Some(xml) = self.updates.recv() => Ok(Flow::Goto(self.updated(xml)?)),
                    () = tokio::time::sleep(wait) => self.no_input(&action, verb, timeout).await,
                }
            }
            Some(step) => {
                // Silence is the caller's answer to this prompt; words at a keys-only prompt
                // wait for the next one.
                if step == Step::Silence {
                    self.steps.pop_front();
                }
                self.no_input(&action, verb, timeout).await
            }
        }
    }

    async fn no_input(
        &mut self,
        action: &str,
        verb: &Verb,
        timeout: f64,
    ) -> Result<Flow, SimError> {
        self.quiet_for(timeout)?;
        if verb.attr("actionOnEmptyResult") == Some("true") {
            return Ok(Flow::Goto(self.fetch(action, &[]).await?));
        }
        Ok(Flow::Next)
    }

    async fn record(&mut self, document: &Document, verb: &Verb) -> Result<Flow, SimError> {
        let timeout: f64 = verb
            .attr("timeout")
            .and_then(|t| t.parse().ok())
            .unwrap_or(5.0);
        let finish = verb
            .attr("finishOnKey")
            .unwrap_or("1234567890*#")
            .to_owned();
        let action = self.action(document, verb);
        self.skip_socket_drops();
        match self.next_step().cloned() {
            Some(Step::Say(text) | Step::Interrupt(text)) => {
                self.steps.pop_front();
                self.line(Line::Caller(text.clone()));
                let recording_sid = new_sid("RE");
                if let Ok(mut registry) = self.sim.registry.lock() {
                    registry
                        .recordings
                        .insert(recording_sid.clone(), text.clone());
                }
                let url = format!(
                    "{}/2010-04-01/Accounts/{}/Recordings/{recording_sid}",
                    self.sim.rest_base_url, self.sim.target.account_sid
                );
                let words = text.split_whitespace().count();
                let duration = (words * 2 / 5).max(1).to_string();
                let next = self
                    .fetch(
                        &action,
                        &[
                            ("RecordingUrl", &url),
                            ("RecordingSid", &recording_sid),
                            ("RecordingDuration", &duration),
                            ("Digits", "#"),
                        ],
                    )
                    .await?;
                // Twilio transcribes after the recording is done, when asked to.
                if verb.attr("transcribe") == Some("true") {
                    if let Some(callback) = verb.attr("transcribeCallback") {
                        let callback = self.resolve(document, callback);
                        let transcription_sid = new_sid("TR");
                        let params: Vec<(String, String)> = [
                            ("RecordingSid", recording_sid.as_str()),
                            ("RecordingUrl", url.as_str()),
                            ("TranscriptionSid", transcription_sid.as_str()),
                            ("TranscriptionText", text.as_str()),
                            ("TranscriptionStatus", "completed"),
                        ]
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect();
                        match self.scenario.transcription {
                            Transcription::Prompt => self.notify_owned(&callback, &params).await?,
                            Transcription::Late => {
                                self.late_transcription = Some((callback, params));
                            }
                        }
                    }
                }
                Ok(Flow::Goto(next))
            }
            Some(Step::Press(keys)) => {
                // A key pressed before any words ends an empty recording: Twilio requests no
                // action and goes on to the next verb.
                self.steps.pop_front();
                self.line(Line::Keys(keys.clone()));
                if !keys.chars().any(|k| finish.contains(k)) {
                    self.quiet_for(timeout)?;
                }
                Ok(Flow::Next)
            }
            // Skipped above: there is no socket at a recording.
            Some(Step::DropSocket) => Ok(Flow::Next),
            // A silent wait at a recording is silence there.
            Some(Step::Silence | Step::Wait(_)) => {
                self.steps.pop_front();
                self.quiet_for(timeout)?;
                Ok(Flow::Next)
            }
            None => match self.out_of_steps() {
                Some(flow) => Ok(flow),
                None => {
                    self.quiet_for(timeout)?;
                    Ok(Flow::Next)
                }
            },
        }
    }

    async fn dial(&mut self, document: &Document, verb: &Verb) -> Result<Flow, SimError> {
        let mut answer = self.scenario.dial_answer(self.dials);
        self.dials += 1;
        let numbers: Vec<&Verb> = verb
            .children
            .iter()
            .filter(|n| !n.text.trim().is_empty())
            .collect();
        let number = numbers
            .first()
            .map_or_else(|| verb.text.trim(), |n| n.text.trim())
            .to_owned();
        let whisper = numbers
            .first()
            .and_then(|n| n.attr("url"))
            .map(|url| self.resolve(document, url));
        self.heard(Line::Dial {
            number: number.clone(),
            answer,
        });
        // Several numbers ring at once; the simulator's first is the one that picks up.
        if numbers.len() > 1 {
            let others: Vec<&str> = numbers[1..].iter().map(|n| n.text.trim()).collect();
            self.line(Line::Note(format!(
                "also rung at once: {}",
                others.join(", ")
            )));
        }
        let dial_sid = new_sid("CA");
        // A counselor who picks up hears the whisper on their own leg, and takes the call or not.
        if let (Some(url), DialAnswer::Completed | DialAnswer::Declines) = (whisper, answer) {
            if !self
                .counselor_takes_call(&url, &dial_sid, &number, answer)
                .await?
            {
                answer = DialAnswer::Declines;
            }
        }
        // [unverified] what Twilio reports for a leg hung up during its whisper: `completed`
        // (it was answered) is assumed, the case Hotline must not read as a conversation.
        let status = match answer {
            DialAnswer::Completed | DialAnswer::Declines => "completed",
            DialAnswer::NoAnswer | DialAnswer::CallerHangsUp => "no-answer",
            DialAnswer::Busy => "busy",
        };
        let Some(action) = verb.attr("action").map(|a| self.resolve(document, a)) else {
            return Ok(if answer == DialAnswer::Completed {
                Flow::End
            } else {
                Flow::Next
            });
        };
        let duration = if answer == DialAnswer::Completed {
            "300"
        } else {
            "0"
        };
        let mut extra = vec![
            ("DialCallStatus", status),
            ("DialCallSid", dial_sid.as_str()),
            ("DialCallDuration", duration),
        ];
        // The caller is gone: Twilio still requests the action, for the record.
        if answer == DialAnswer::CallerHangsUp {
            extra.push(("CallStatus", "completed"));
            let params = self.params(&extra);
            self.post(&action, &params).await?;
            return Ok(Flow::End);
        }
        let next = self.fetch(&action, &extra).await?;
        if answer == DialAnswer::Completed {
            self.line(Line::Note(
                "the caller hangs up after talking with the person".into(),
            ));
            return Ok(Flow::End);
        }
        Ok(Flow::Goto(next))
    }

    /// The counselor's leg: its whisper document (`<Number url>`), run as the counselor hears
    /// it. They press 1 at its `<Gather>` when `answer` is `Completed`, and 2 otherwise. Whether
    /// the document then let the two be bridged (it ended without hanging up).
    async fn counselor_takes_call(
        &mut self,
        url: &str,
        dial_sid: &str,
        number: &str,
        answer: DialAnswer,
    ) -> Result<bool, SimError> {
        let parent = self.sid.clone();
        let leg = [
            ("CallSid", dial_sid),
            ("ParentCallSid", parent.as_str()),
            ("Direction", "outbound-dial"),
            ("To", number),
            ("Called", number),
        ];
        let mut document = self.fetch(url, &leg).await?;
        loop {
            let Some(verb) = document.verbs.get(document.next).cloned() else {
                return Ok(true);
            };
            document.next += 1;
            match verb.name.as_str() {
                "Say" => self.line(Line::Whisper(verb.text.trim().to_owned())),
                "Pause" | "Play" => {}
                "Hangup" | "Reject" => return Ok(false),
                "Gather" => {
                    for prompt in verb.children.iter().filter(|c| c.name == "Say") {
                        self.line(Line::Whisper(prompt.text.trim().to_owned()));
                    }
                    let key = if answer == DialAnswer::Completed {
                        "1"
                    } else {
                        "2"
                    };
                    let action = self.action(&document, &verb);
                    let mut params = leg.to_vec();
                    params.push(("Digits", key));
                    document = self.fetch(&action, &params).await?;
                }
                other => {
                    return Err(SimError::InvalidTwiml {
                        url: document.url.clone(),
                        reason: format!("<{other}> cannot run on a counselor's leg here"),
                    })
                }
            }
        }
    }

    /// Twilio's status callback when the call ends.
    async fn status_callback(&mut self) -> Result<(), SimError> {
        let url = format!("{}/twilio/status/", self.sim.target.base_url);
        let duration = self.started.elapsed().as_secs().max(1).to_string();
        self.notify(
            &url,
            &[
                ("CallStatus", "completed"),
                ("CallDuration", &duration),
                ("SequenceNumber", "3"),
                ("CallbackSource", "call-progress-events"),
            ],
        )
        .await
    }
}
