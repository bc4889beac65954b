//! The conversation pipeline, durable and end to end: webhooks store a turn, the pipeline's
//! subscription enqueues it, a worker downloads the recording from a Twilio stand-in, transcribes
//! it with a wiremock speech-to-text service, assesses it, and plays the answer through a REST
//! update of the live call.

use std::time::Duration;

use domain::CallId;
use infrastructure::event_store;
use infrastructure::event_store::subscription::SubscriptionRunner;
use infrastructure::pipeline::jobs::{self, JobQueue};
use infrastructure::pipeline::{PipelineConsumer, PipelineJobs};
use serde_json::json;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;
use crate::twilio_stand_in::{Canned, ScriptedServer};

/// The pipeline of a test app, whose background work the test runs step by step: the parts are
/// the ones `hotline serve` runs (`api::wiring`), built from the app's configuration.
struct Stage {
    twilio: ScriptedServer,
    runner: SubscriptionRunner<PipelineConsumer>,
    queue: JobQueue,
    jobs: PipelineJobs<event_store::CallStore>,
    /// Where the service keeps recordings.
    audio_dir: std::path::PathBuf,
    _speech: MockServer,
}

/// A language model stand-in for the pipeline, and how long the pipeline waits for it.
struct Model {
    server: MockServer,
    timeout: Duration,
}

/// What a pipeline test runs against: a Twilio stand-in, a speech-to-text service saying
/// `transcript` (failing with 503 when it is `None`) unless Twilio transcribes the turns, and a
/// language model if one is asked.
struct Setup<'a> {
    twilio: ScriptedServer,
    transcript: Option<&'a str>,
    twilio_transcribes: bool,
    model: Option<&'a Model>,
}

impl<'a> Setup<'a> {
    /// Against a Twilio stand-in answering from `script`, in order.
    async fn answering(script: Vec<Canned>) -> Self {
        Self::on(ScriptedServer::start(script).await)
    }

    /// Against the Twilio stand-in `twilio`.
    fn on(twilio: ScriptedServer) -> Self {
        Self {
            twilio,
            transcript: None,
            twilio_transcribes: false,
            model: None,
        }
    }

    fn hearing(mut self, transcript: Option<&'a str>) -> Self {
        self.transcript = transcript;
        self
    }

    /// No speech-to-text service: the pipeline reads Twilio's transcription callbacks instead.
    fn twilio_transcribing(mut self) -> Self {
        self.twilio_transcribes = true;
        self
    }

    /// Asking `model` for its opinion and replies, if there is one.
    fn asking_if(mut self, model: Option<&'a Model>) -> Self {
        self.model = model;
        self
    }

    /// The app, wired as `hotline serve` wires it for this setup, and its pipeline.
    async fn spawn(self) -> (TestApp, Stage) {
        let speech = MockServer::start().await;
        let answer = match self.transcript {
            Some(text) => ResponseTemplate::new(200).set_body_json(json!({ "text": text })),
            None => ResponseTemplate::new(503),
        };
        Mock::given(method("POST"))
            .and(path("/v1/audio/transcriptions"))
            .respond_with(answer)
            .mount(&speech)
            .await;
        let mut app = TestApp::builder().twilio(&self.twilio.base_url);
        if !self.twilio_transcribes {
            app = app.speech_to_text(&speech.uri());
        }
        if let Some(model) = self.model {
            app = app.model(&model.server.uri(), model.timeout);
        }
        let app = app.spawn().await;
        let service = app.service();
        let runner = service.turn_subscription().expect("the pipeline is on");
        let (queue, jobs) = service
            .turn_worker("test-worker")
            .expect("the pipeline is on");
        let stage = Stage {
            twilio: self.twilio,
            runner,
            queue,
            jobs,
            audio_dir: app.audio_dir(),
            _speech: speech,
        };
        (app, stage)
    }
}

impl Stage {
    /// The analysis names where turn `turn`'s recording is kept, and the store holds the audio
    /// the Twilio stand-in served.
    fn assert_kept(&self, analysis: &serde_json::Value, sid: &domain::CallSid, turn: u32) {
        let key = analysis["recording_key"]
            .as_str()
            .unwrap_or_else(|| panic!("no recording key in {analysis}"));
        assert_eq!(
            key,
            format!(
                "recordings/{}/turn-{turn:03}.wav",
                CallId::for_call_sid(sid)
            )
        );
        let kept = std::fs::read(self.audio_dir.join(key)).expect("the recording is kept");
        assert_eq!(kept, WAV);
    }

    /// Runs the pipeline's subscription until its checkpoint reaches the last stored event, so
    /// that what it did not enqueue is known too (bounded: the horizon is cluster-wide).
    async fn drain_subscription(&self, app: &TestApp) {
        drain(&app.pool, &self.runner, "pipeline").await;
    }

    /// Enqueues what the store holds (bounded: the subscription's horizon is cluster-wide) and
    /// runs every due job.
    async fn settle(&self, app: &TestApp, expected_jobs: i64) {
        self.settle_enqueued(app, expected_jobs).await;
        while jobs::work_once(&self.queue, &self.jobs)
            .await
            .expect("the queue answers")
        {}
    }

    /// Runs the subscription until `expected_jobs` jobs are enqueued.
    async fn settle_enqueued(&self, app: &TestApp, expected_jobs: i64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            self.runner.catch_up().await.expect("the subscription runs");
            let enqueued: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
                .fetch_one(&app.pool)
                .await
                .expect("counts");
            if enqueued >= expected_jobs {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {enqueued} jobs after 15 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The TwiML a REST update of the live call carried.
fn twiml_sent(update: &crate::twilio_stand_in::Received) -> Twiml {
    let form: Vec<(String, String)> = form_urlencoded::parse(update.body.as_bytes())
        .into_owned()
        .collect();
    let twiml = form
        .iter()
        .find(|(name, _)| name == "Twiml")
        .expect("a Twiml field");
    Twiml::parse(&twiml.1)
}

const WAV: &[u8] = b"RIFF\x24\x00\x00\x00WAVEfmt ";

fn wav() -> Canned {
    Canned::audio(WAV)
}

fn updated() -> Canned {
    Canned::json(200, json!({ "sid": "CA0123456789abcdef0123456789abcdef" }))
}

#[tokio::test]
async fn a_low_risk_turn_is_answered_through_the_live_call() {
    let (app, stage, sid) = one_turn(None).await;
    assert_eq!(app.event_types(&sid).await, REPLIED);
    let events = app.events(&sid).await;
    let analysed = &events[2].payload["Analyzed"]["analysis"];
    assert_eq!(analysed["assessment"]["level"], "none");
    assert_eq!(analysed["reply_source"], "script");
    assert!(analysed["timings"]["transcription_ms"].is_u64());
    assert_eq!(events[3].payload["ResponsePlayed"]["via"], "rest_update");
    stage.assert_kept(analysed, &sid, 1);

    let received = stage.twilio.received();
    assert_eq!(received.len(), 2);
    assert!(
        received[0].path.ends_with(".wav"),
        "downloads the WAV: {}",
        received[0].path
    );
    assert_eq!(
        received[1].path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json")
    );
    let played = twiml_sent(&received[1]);
    assert!(
        played.spoken().contains("you don't have to face it alone"),
        "{}",
        played.xml
    );
    // The first automated reply asks the direct question, by speech or keys.
    let question = format!(
        "{}/twilio/question/{}/",
        app.base_url,
        CallId::for_call_sid(&sid)
    );
    assert_eq!(
        played.first("Gather").attr("action"),
        Some(question.as_str())
    );
    assert!(
        played.spoken().contains("thoughts of suicide"),
        "{}",
        played.xml
    );
}

#[tokio::test]
async fn a_high_risk_turn_goes_to_a_counselor_without_an_automated_reply() {
    let (app, stage) = Setup::answering(vec![wav(), updated()])
        .await
        .hearing(Some("I'm going to kill myself tonight."))
        .spawn()
        .await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    app.recording_from(&stage.twilio.base_url, &sid, 1, "#")
        .await;
    stage.settle(&app, 1).await;

    let events = app.events(&sid).await;
    let level = &events[2].payload["Analyzed"]["analysis"]["assessment"]["level"];
    assert!(level == "high" || level == "imminent", "{level}");
    assert_eq!(
        events[2].payload["Analyzed"]["analysis"]["reply"],
        serde_json::Value::Null
    );
    assert_eq!(
        events.last().map(|e| e.event_type.as_str()),
        Some("Escalated")
    );
    let played = twiml_sent(&stage.twilio.received()[1]);
    assert_eq!(played.dialled(), [COUNSELOR]);
    assert!(!played.spoken().contains("you don't have to face it alone"));
}

#[tokio::test]
async fn each_turn_is_enqueued_once_and_a_request_for_a_person_is_left_alone() {
    let (app, stage) = Setup::answering(vec![wav(), updated()])
        .await
        .hearing(Some("Hello."))
        .spawn()
        .await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    app.recording_from(&stage.twilio.base_url, &sid, 1, "#")
        .await;
    app.recording_from(&stage.twilio.base_url, &sid, 1, "#")
        .await; // Twilio's retry
    let other = new_call_sid();
    app.voice(&other).await;
    app.recording_from(&stage.twilio.base_url, &other, 1, "0")
        .await; // pressed 0: being connected to a counselor
    stage.drain_subscription(&app).await;
    let jobs: Vec<(String, i32)> = sqlx::query_as("SELECT call_id, turn FROM jobs")
        .fetch_all(&app.pool)
        .await
        .expect("reads");
    assert_eq!(jobs, [(CallId::for_call_sid(&sid).to_string(), 1)]);
}

#[tokio::test]
async fn when_speech_to_text_stays_down_the_caller_is_taken_to_a_person() {
    // The recording downloads each time; speech-to-text fails every attempt; then the REST
    // update connects the caller to a counselor.
    let script = vec![wav(), wav(), wav(), wav(), updated()];
    let (app, stage) = Setup::answering(script).await.hearing(None).spawn().await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    app.recording_from(&stage.twilio.base_url, &sid, 1, "#")
        .await;
    stage.settle(&app, 1).await;

    let (status, attempts): (String, i32) = sqlx::query_as("SELECT status, attempts FROM jobs")
        .fetch_one(&app.pool)
        .await
        .expect("reads");
    assert_eq!(
        (status.as_str(), attempts),
        ("failed", infrastructure::pipeline::TURN_ATTEMPTS)
    );
    let failure: (String, String, String) =
        sqlx::query_as("SELECT last_error, last_error_stage, last_error_class FROM jobs")
            .fetch_one(&app.pool)
            .await
            .expect("reads");
    assert_eq!(
        failure,
        (
            "transcription: http_503".into(),
            "transcription".into(),
            "http_503".into()
        )
    );
    let events = app.events(&sid).await;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "CallStarted",
            "RecordingReceived",
            "ProcessingFailed",
            "Escalated"
        ]
    );
    assert_eq!(
        events[2].payload["ProcessingFailed"]["stage"],
        "transcription"
    );
    assert_eq!(
        events[2].payload["ProcessingFailed"]["error_class"],
        "http_503"
    );
    let update = stage.twilio.received().last().cloned().expect("an update");
    assert_eq!(twiml_sent(&update).dialled(), [COUNSELOR]);
}

#[tokio::test]
async fn a_recording_outside_the_account_is_refused_and_the_caller_goes_to_a_person_at_once() {
    let (app, stage) = Setup::answering(vec![updated()])
        .await
        .hearing(Some("Hello."))
        .spawn()
        .await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    // Not the configured Twilio API: never fetched, and no retry can mend it.
    app.recording_from("https://elsewhere.example", &sid, 1, "#")
        .await;
    stage.settle(&app, 1).await;
    let (status, attempts): (String, i32) = sqlx::query_as("SELECT status, attempts FROM jobs")
        .fetch_one(&app.pool)
        .await
        .expect("reads");
    assert_eq!((status.as_str(), attempts), ("failed", 1));
    let failed_at: String = sqlx::query_scalar("SELECT last_error_stage FROM jobs")
        .fetch_one(&app.pool)
        .await
        .expect("reads");
    assert_eq!(failed_at, "download");
    let events = app.events(&sid).await;
    assert_eq!(
        events[2].payload["ProcessingFailed"]["error_class"],
        "foreign_recording_url"
    );
    assert_eq!(
        events.last().map(|e| e.event_type.as_str()),
        Some("Escalated")
    );
    let received = stage.twilio.received();
    assert_eq!(
        received.len(),
        1,
        "only the update connecting a counselor: {received:?}"
    );
}

#[tokio::test]
async fn the_caller_is_held_a_bounded_time_then_hears_the_fallback_and_nothing_twice() {
    let (app, stage) = Setup::answering(vec![wav(), updated()])
        .await
        .hearing(Some("I had a rough day."))
        .spawn()
        .await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    app.recording_from(&stage.twilio.base_url, &sid, 1, "#")
        .await;
    // The pipeline has not run: the caller is held, then held again…
    let first = app.continue_after(&sid, 0).await;
    assert_eq!(first.verbs(), ["Say", "Pause", "Redirect"]);
    assert!(
        first.first("Redirect").text.ends_with("?wait=1"),
        "{}",
        first.xml
    );
    let second = app.continue_after(&sid, 1).await;
    assert!(
        second.first("Redirect").text.ends_with("?wait=2"),
        "{}",
        second.xml
    );
    // …and then hears the vetted fallback with the choice, a counselor among it.
    let fallback = app
        .continue_after(&sid, application::calls::MAX_WAITS)
        .await;
    assert!(
        fallback
            .spoken()
            .contains("you don't have to face it alone"),
        "{}",
        fallback.xml
    );
    // The fallback is an automated reply: the direct question follows it, once per call.
    assert!(
        fallback.spoken().contains("thoughts of suicide"),
        "{}",
        fallback.xml
    );
    // The pipeline finishes late: its answer is recorded but not played over the fallback.
    stage.settle(&app, 1).await;
    assert_eq!(
        app.event_types(&sid).await,
        [
            "CallStarted",
            "RecordingReceived",
            "ResponsePlayed",
            "DirectQuestionAsked",
            "Analyzed"
        ]
    );
    assert_eq!(
        stage.twilio.received().len(),
        1,
        "the recording only; no REST update"
    );
}

#[tokio::test]
async fn when_the_rest_update_fails_the_continue_webhook_plays_the_answer() {
    let failing = Canned::twilio_error(500, 20500, "Internal Server Error");
    let (app, stage) = Setup::answering(vec![wav(), failing])
        .await
        .hearing(Some("I had a rough day."))
        .spawn()
        .await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    app.recording_from(&stage.twilio.base_url, &sid, 1, "#")
        .await;
    stage.settle(&app, 1).await;
    let reply = app.continue_after(&sid, 1).await;
    assert_eq!(reply.verbs()[..2], ["Say", "Gather"]);
    assert!(
        reply.spoken().contains("you don't have to face it alone"),
        "{}",
        reply.xml
    );
    let events = app.events(&sid).await;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "CallStarted",
            "RecordingReceived",
            "Analyzed",
            "ResponsePlayed",
            "DirectQuestionAsked",
            "ProcessingFailed",
            "ResponsePlayed"
        ]
    );
    assert_eq!(
        events[5].payload["ProcessingFailed"]["error_class"],
        "twilio_20500"
    );
    assert_eq!(events[6].payload["ResponsePlayed"]["via"], "twiml");
}

#[tokio::test]
async fn a_high_risk_answer_played_by_the_continue_webhook_dials_a_counselor() {
    let failing = Canned::twilio_error(503, 20503, "Service Unavailable");
    let (app, stage) = Setup::answering(vec![wav(), failing])
        .await
        .hearing(Some("I'm going to end my life tonight."))
        .spawn()
        .await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    app.recording_from(&stage.twilio.base_url, &sid, 1, "#")
        .await;
    stage.settle(&app, 1).await;
    let answer = app.continue_after(&sid, 1).await;
    assert_eq!(answer.dialled(), [COUNSELOR]);
    assert!(
        !answer.verbs().contains(&"Gather"),
        "no automated reply: {}",
        answer.xml
    );
    // The escalation is recorded once, when the pipeline decides it, before it tries to put the
    // caller through; the continue webhook's own escalation adds nothing.
    assert_eq!(
        app.event_types(&sid).await,
        [
            "CallStarted",
            "RecordingReceived",
            "Analyzed",
            "ResponsePlayed",
            "Escalated",
            "ProcessingFailed",
            "ResponsePlayed"
        ]
    );
}

impl TestApp {
    /// Twilio's transcription callback for turn `n`.
    async fn transcription(&self, sid: &domain::CallSid, n: u32, text: &str, status: &str) -> u16 {
        let (recording_sid, _) = recording_at("https://api.twilio.com", n);
        let params = form(&[
            ("CallSid", sid.as_str()),
            ("AccountSid", ACCOUNT_SID),
            ("RecordingSid", &recording_sid),
            ("TranscriptionSid", "TR0123456789abcdef0123456789abcdef"),
            ("TranscriptionText", text),
            ("TranscriptionStatus", status),
        ]);
        let path = format!("/twilio/transcription/{}/", CallId::for_call_sid(sid));
        self.post_signed(&path, &params).await.status().as_u16()
    }
}

#[tokio::test]
async fn without_speech_to_text_twilio_s_transcription_drives_the_turn() {
    let (app, stage) = Setup::answering(vec![wav(), updated()])
        .await
        .hearing(None)
        .twilio_transcribing()
        .spawn()
        .await;
    let sid = new_call_sid();
    let greeting = app.voice(&sid).await;
    let record = greeting.first("Record");
    assert_eq!(record.attr("transcribe"), Some("true"));
    let callback = format!(
        "{}/twilio/transcription/{}/",
        app.base_url,
        CallId::for_call_sid(&sid)
    );
    assert_eq!(record.attr("transcribeCallback"), Some(callback.as_str()));

    app.recording_from(&stage.twilio.base_url, &sid, 1, "#")
        .await;
    // Nothing to do until the transcription arrives.
    stage.drain_subscription(&app).await;
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&app.pool)
        .await
        .expect("counts");
    assert_eq!(jobs, 0);

    assert_eq!(
        app.transcription(&sid, 1, "I had a rough day at work.", "completed")
            .await,
        204
    );
    assert_eq!(
        app.transcription(&sid, 1, "I had a rough day at work.", "completed")
            .await,
        204
    );
    stage.settle(&app, 1).await;
    assert_eq!(
        app.event_types(&sid).await,
        [
            "CallStarted",
            "RecordingReceived",
            "TranscriptionReceived",
            "Analyzed",
            "ResponsePlayed",
            "DirectQuestionAsked"
        ]
    );
    let events = app.events(&sid).await;
    assert_eq!(
        events[3].payload["Analyzed"]["analysis"]["transcript"],
        "I had a rough day at work."
    );
    // The recording is downloaded only to be kept, then the reply is played.
    let received = stage.twilio.received();
    assert_eq!(received.len(), 2);
    assert!(received[0].path.ends_with(".wav"), "{}", received[0].path);
    stage.assert_kept(&events[3].payload["Analyzed"]["analysis"], &sid, 1);
}

#[tokio::test]
async fn a_turn_twilio_could_not_transcribe_goes_to_a_person() {
    let (app, stage) = Setup::answering(vec![updated()])
        .await
        .hearing(None)
        .twilio_transcribing()
        .spawn()
        .await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    app.recording(&sid, 1, "#").await;
    assert_eq!(app.transcription(&sid, 1, "", "failed").await, 204);
    stage.settle(&app, 1).await;
    let events = app.events(&sid).await;
    assert!(
        events[3].payload["Analyzed"]["analysis"]["assessment"]["unknown"].as_bool() == Some(true)
    );
    assert_eq!(
        events.last().map(|e| e.event_type.as_str()),
        Some("Escalated")
    );
}

#[tokio::test]
async fn a_transcription_callback_is_checked_like_every_webhook() {
    let (app, _stage) = Setup::answering(Vec::new())
        .await
        .twilio_transcribing()
        .spawn()
        .await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    let unsigned = app
        .client
        .post(format!(
            "{}/twilio/transcription/{}/",
            app.base_url,
            CallId::for_call_sid(&sid)
        ))
        .form(&form(&[
            ("CallSid", sid.as_str()),
            ("TranscriptionText", "x"),
        ]))
        .send()
        .await
        .expect("answers");
    assert_eq!(unsigned.status(), 400);
    // For a recording the call does not have yet: kept until it comes.
    assert_eq!(app.transcription(&sid, 7, "x", "completed").await, 204);
    assert_eq!(
        app.event_types(&sid).await,
        ["CallStarted", "EarlyTranscriptionReceived"]
    );
}

#[tokio::test]
async fn a_transcription_before_its_recording_is_kept_and_screened_when_the_recording_comes() {
    let (app, stage) = Setup::answering(vec![wav(), updated()])
        .await
        .hearing(None)
        .twilio_transcribing()
        .spawn()
        .await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    // Twilio's callbacks crossed: the words come first.
    let words = "I don't want to be alive anymore.";
    assert_eq!(app.transcription(&sid, 1, words, "completed").await, 204);
    assert_eq!(
        app.event_types(&sid).await,
        ["CallStarted", "EarlyTranscriptionReceived"]
    );
    app.recording_from(&stage.twilio.base_url, &sid, 1, "#")
        .await;
    stage.settle(&app, 1).await;
    let events = app.events(&sid).await;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types[..5],
        [
            "CallStarted",
            "EarlyTranscriptionReceived",
            "RecordingReceived",
            "TranscriptionReceived",
            "Analyzed"
        ]
    );
    let analysis = &events[4].payload["Analyzed"]["analysis"];
    assert_eq!(analysis["transcript"], words);
    assert_eq!(analysis["assessment"]["route"], "escalate", "{analysis}");
    assert!(types.contains(&"Escalated"), "{types:?}");
}

#[tokio::test]
async fn a_turn_whose_worker_died_is_finished_by_another_and_played_once() {
    let (app, stage) = Setup::answering(vec![wav(), updated()])
        .await
        .hearing(Some("I had a rough day."))
        .spawn()
        .await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    app.recording_from(&stage.twilio.base_url, &sid, 1, "#")
        .await;
    stage.drain_subscription(&app).await;
    // A worker claims the turn and dies before doing anything: its lease runs out.
    let dead = JobQueue::new(app.pool.clone(), "dead-worker", Duration::ZERO);
    assert!(dead.claim().await.expect("claims").is_some());
    // The surviving worker takes it over and finishes it.
    while jobs::work_once(&stage.queue, &stage.jobs)
        .await
        .expect("works")
    {}
    let (status, attempts): (String, i32) = sqlx::query_as("SELECT status, attempts FROM jobs")
        .fetch_one(&app.pool)
        .await
        .expect("reads");
    assert_eq!((status.as_str(), attempts), ("done", 2));
    assert_eq!(
        app.event_types(&sid).await,
        [
            "CallStarted",
            "RecordingReceived",
            "Analyzed",
            "ResponsePlayed",
            "DirectQuestionAsked"
        ]
    );
    let updates = stage
        .twilio
        .received()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(updates, 1, "played once");
}

#[tokio::test]
async fn two_instances_workers_share_the_queue_and_do_each_turn_once() {
    // Downloads and updates from two workers interleave: the stand-in answers each by its kind.
    let twilio = ScriptedServer::by_method(wav(), updated()).await;
    let (app, first) = Setup::on(twilio)
        .hearing(Some("I had a rough day."))
        .spawn()
        .await;
    let (second_queue, _) = app
        .service()
        .turn_worker("second-instance")
        .expect("the pipeline is on");
    let mut calls = Vec::new();
    for _ in 0..5 {
        let sid = new_call_sid();
        app.voice(&sid).await;
        app.recording_from(&first.twilio.base_url, &sid, 1, "#")
            .await;
        calls.push(sid);
    }
    first.settle_enqueued(&app, 5).await;
    // Two instances' workers drain the queue at the same time.
    let drain = |queue: &JobQueue| {
        let queue = queue.clone();
        let jobs = &first.jobs;
        async move {
            let mut done = 0;
            while jobs::work_once(&queue, jobs).await.expect("works") {
                done += 1;
            }
            done
        }
    };
    let (a, b) = tokio::join!(drain(&first.queue), drain(&second_queue));
    assert_eq!(a + b, 5, "each job claimed once");
    for sid in &calls {
        let played = app
            .event_types(sid)
            .await
            .iter()
            .filter(|t| *t == "ResponsePlayed")
            .count();
        assert_eq!(played, 1);
    }
    let gets = first
        .twilio
        .received()
        .iter()
        .filter(|r| r.method == "GET")
        .count();
    assert_eq!(gets, 5, "each recording downloaded once");
}

#[tokio::test]
async fn a_two_turn_call_plays_each_reply_once_with_requests_twilio_s_spec_accepts() {
    let prism = crate::twilio_stand_in::Prism::start().await;
    let twilio = ScriptedServer::fronting_prism(wav(), &prism).await;
    let (app, stage) = Setup::on(twilio)
        .hearing(Some("I had a rough day at work."))
        .spawn()
        .await;
    let sid = new_call_sid();

    app.voice(&sid).await;
    app.recording_from(&stage.twilio.base_url, &sid, 1, "#")
        .await;
    stage.settle(&app, 1).await;
    // The REST update replaced the call's TwiML; the caller chooses to go on.
    assert!(app.choose(&sid, "1").await.verbs().contains(&"Record"));
    app.recording_from(&stage.twilio.base_url, &sid, 2, "#")
        .await;
    stage.settle(&app, 2).await;
    assert_eq!(app.choose(&sid, "2").await.verbs(), ["Say", "Hangup"]);
    assert_eq!(app.status(&sid, "completed", 3).await, 204);

    assert_eq!(
        app.event_types(&sid).await,
        [
            "CallStarted",
            "RecordingReceived",
            "Analyzed",
            "ResponsePlayed",
            "DirectQuestionAsked",
            "CallerChose",
            "RecordingReceived",
            "Analyzed",
            "ResponsePlayed",
            "CallerChose",
            "Completed"
        ]
    );
    let received = stage.twilio.received();
    let updates: Vec<_> = received.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(updates.len(), 2, "one REST update per turn");
    for update in updates {
        assert_eq!(
            update.status, 200,
            "Prism refused {}: {}",
            update.path, update.body
        );
        assert!(twiml_sent(update).verbs().contains(&"Gather"));
    }
}

#[tokio::test]
async fn a_turn_ended_with_zero_is_never_played_even_when_its_transcription_arrives() {
    let (app, stage) = Setup::answering(vec![updated()])
        .await
        .hearing(None)
        .twilio_transcribing()
        .spawn()
        .await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    // The caller pressed 0: they are being connected to a counselor…
    assert_eq!(app.recording(&sid, 1, "0").await.dialled(), [COUNSELOR]);
    // …and Twilio's transcription of that turn arrives later.
    assert_eq!(
        app.transcription(&sid, 1, "I need to talk to someone.", "completed")
            .await,
        204
    );
    stage.settle(&app, 1).await;
    let types = app.event_types(&sid).await;
    assert!(
        types.contains(&"Analyzed".to_owned()),
        "still analysed, for the record: {types:?}"
    );
    assert!(!types.contains(&"ResponsePlayed".to_owned()), "{types:?}");
    assert!(
        stage.twilio.received().is_empty(),
        "no update interrupts the dial"
    );
}

/// A model stand-in answering every request with `answer`, after `delay`.
async fn model_answering(answer: ResponseTemplate, timeout: Duration) -> Model {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(answer)
        .mount(&server)
        .await;
    Model { server, timeout }
}

fn chat(content: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "choices": [{ "message": { "role": "assistant", "content": content } }]
    }))
}

/// The events of a turn answered with a reply.
/// A first turn answered by the automated line: its reply, then the direct question.
const REPLIED: [&str; 5] = [
    "CallStarted",
    "RecordingReceived",
    "Analyzed",
    "ResponsePlayed",
    "DirectQuestionAsked",
];

/// One low-risk turn, processed with `model` if there is one.
async fn one_turn(model: Option<&Model>) -> (TestApp, Stage, domain::CallSid) {
    let twilio = ScriptedServer::start(vec![wav(), updated()]).await;
    let (app, stage) = Setup::on(twilio)
        .hearing(Some("I had a rough day at work."))
        .asking_if(model)
        .spawn()
        .await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    app.recording_from(&stage.twilio.base_url, &sid, 1, "#")
        .await;
    stage.settle(&app, 1).await;
    (app, stage, sid)
}

/// The model's opinion was unknown, so the caller was told a counselor is coming and dialled.
async fn assert_unknown_risk_went_to_a_person(app: &TestApp, stage: &Stage, sid: &domain::CallSid) {
    assert_eq!(
        app.event_types(sid).await,
        [
            "CallStarted",
            "RecordingReceived",
            "Analyzed",
            "ResponsePlayed",
            "Escalated"
        ]
    );
    let events = app.events(sid).await;
    let analysis = &events[2].payload["Analyzed"]["analysis"];
    assert_eq!(analysis["assessment"]["unknown"], true, "{analysis}");
    assert!(
        analysis["reply"].is_null(),
        "no automated reply: {analysis}"
    );
    let received = stage.twilio.received();
    assert_eq!(received.len(), 2);
    let played = twiml_sent(&received[1]);
    assert!(
        played.spoken().contains("connecting you with a counselor"),
        "{}",
        played.xml
    );
    assert_eq!(played.dialled(), [COUNSELOR]);
}

#[tokio::test]
async fn when_the_model_is_down_the_risk_is_unknown_and_the_caller_goes_to_a_person() {
    let model = model_answering(ResponseTemplate::new(500), Duration::from_secs(5)).await;
    let (app, stage, sid) = one_turn(Some(&model)).await;
    assert_unknown_risk_went_to_a_person(&app, &stage, &sid).await;
}

#[tokio::test]
async fn when_the_model_is_slow_the_risk_is_unknown_and_the_caller_goes_to_a_person() {
    let model = model_answering(
        chat(r#"{"risk": "none"}"#).set_delay(Duration::from_secs(3)),
        Duration::from_millis(200),
    )
    .await;
    let (app, stage, sid) = one_turn(Some(&model)).await;
    assert_unknown_risk_went_to_a_person(&app, &stage, &sid).await;
}

#[tokio::test]
async fn an_unsafe_model_reply_is_never_spoken_and_the_script_answers() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_string_contains("C-SSRS"))
        .respond_with(chat(r#"{"risk": "none"}"#))
        .mount(&server)
        .await;
    let unsafe_reply = "Taking enough sleeping pills would end the pain for good.";
    Mock::given(method("POST"))
        .and(body_string_contains("safe-messaging"))
        .respond_with(chat(&json!({ "reply": unsafe_reply }).to_string()))
        .mount(&server)
        .await;
    let model = Model {
        server,
        timeout: Duration::from_secs(5),
    };
    let (app, stage, sid) = one_turn(Some(&model)).await;
    assert_eq!(app.event_types(&sid).await, REPLIED);
    let events = app.events(&sid).await;
    let analysis = &events[2].payload["Analyzed"]["analysis"];
    assert_eq!(analysis["assessment"]["level"], "none", "{analysis}");
    assert_eq!(analysis["reply_source"], "script_after_guard");
    assert_eq!(analysis["model"], "gpt-test");
    let received = stage.twilio.received();
    let played = twiml_sent(&received[1]);
    assert!(!played.xml.contains("pills"), "{}", played.xml);
    assert!(
        played.spoken().contains("you don't have to face it alone"),
        "the vetted script: {}",
        played.xml
    );
    assert!(played.verbs().contains(&"Gather"), "{}", played.xml);
}

/// No REST update of the live call was sent to Twilio (only recordings were fetched).
fn no_update_sent(stage: &Stage) -> bool {
    !stage.twilio.received().iter().any(|r| r.method == "POST")
}

#[tokio::test]
async fn a_caller_put_through_to_a_person_gets_no_rest_update_whatever_the_pipeline_finds() {
    for words in ["I had a rough day at work.", "i took 30 tylenol"] {
        let (app, stage) = Setup::answering(vec![wav(), updated()])
            .await
            .hearing(Some(words))
            .spawn()
            .await;
        let sid = new_call_sid();
        app.voice(&sid).await;
        app.recording_from(&stage.twilio.base_url, &sid, 1, "#")
            .await;
        // While the turn is prepared, the caller asks for a person (0 at the holding prompt's
        // fallback, or any prompt): the counselor is dialled by the webhook's own TwiML.
        assert_eq!(app.choose(&sid, "0").await.dialled(), [COUNSELOR]);
        stage.settle(&app, 1).await;
        assert!(
            no_update_sent(&stage),
            "{words}: {:?}",
            stage.twilio.received()
        );
        let types = app.event_types(&sid).await;
        assert!(
            types.contains(&"Analyzed".to_owned()),
            "{words}: the result is recorded"
        );
        assert!(
            !types.contains(&"ResponsePlayed".to_owned()),
            "{words}: {types:?}"
        );
    }
}

/// A recording webhook whose write is stalled past its deadline (the events table locked by
/// another transaction) answers with a person; the database abandons the write, so no turn
/// appears later for the pipeline to answer into a call that is with a counselor.
#[tokio::test]
async fn a_write_that_outlives_the_webhook_is_abandoned_and_never_answered_into_the_call() {
    let (app, stage) = Setup::answering(vec![wav(), updated()])
        .await
        .hearing(Some("I had a rough day."))
        .spawn()
        .await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    let mut stall = app.pool.begin().await.expect("a transaction");
    sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
        .execute(&mut *stall)
        .await
        .expect("locks");
    let answer = app
        .recording_from(&stage.twilio.base_url, &sid, 1, "#")
        .await;
    assert_eq!(answer.dialled(), [COUNSELOR], "{}", answer.xml);
    stall.rollback().await.expect("unlocks");
    // The webhook's INSERT was cancelled by its statement timeout, not left to commit.
    assert_eq!(app.event_types(&sid).await, ["CallStarted"]);
    stage.settle(&app, 0).await;
    assert!(no_update_sent(&stage), "{:?}", stage.twilio.received());
}

/// The same when the person was reached on an earlier turn: a later turn's analysis is recorded,
/// and nothing is played into the call (only the rule "no REST update once the caller was sent to
/// a person" stops it: the caller asked for no one during turn 2).
#[tokio::test]
async fn a_turn_after_the_caller_was_sent_to_a_person_is_never_played_by_rest_update() {
    let (app, stage) = Setup::answering(vec![wav(), wav(), updated(), updated()])
        .await
        .hearing(Some("I had a rough day at work."))
        .spawn()
        .await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    app.recording_from(&stage.twilio.base_url, &sid, 1, "#")
        .await;
    assert_eq!(app.choose(&sid, "0").await.dialled(), [COUNSELOR]);
    app.recording_from(&stage.twilio.base_url, &sid, 2, "#")
        .await;
    stage.settle(&app, 2).await;
    assert!(no_update_sent(&stage), "{:?}", stage.twilio.received());
    let types = app.event_types(&sid).await;
    assert_eq!(
        types.iter().filter(|t| *t == "Analyzed").count(),
        2,
        "{types:?}"
    );
    assert!(!types.contains(&"ResponsePlayed".to_owned()), "{types:?}");
}
