//! Requests that are not Twilio's, or not what Twilio sends, are refused before anything runs,
//! and nothing a request carries can break or inject into the TwiML answer.

use domain::CallId;
use twilio_signature::sign_request;

use crate::helpers::*;

async fn refusals(app: &TestApp) -> serde_json::Value {
    app.health().await["webhooks_refused"].clone()
}

/// What a refused request to a webhook a caller hears gets: 200 (Twilio plays no error's body)
/// and the static safe TwiML: the same whatever the request, so nothing in it comes from the
/// request (its only URL is the call-less dial status, which moves the caller on to the next
/// line).
async fn assert_safe_twiml(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), 200, "{what}");
    let content_type = response.headers()["content-type"].to_str().expect("text");
    assert!(
        content_type.starts_with("text/xml"),
        "{what}: {content_type}"
    );
    let twiml = Twiml::parse(&response.text().await.expect("a body"));
    assert_person_on_the_line(&twiml);
    let urls: Vec<&str> = twiml
        .xml
        .match_indices("http://")
        .map(|(at, _)| &twiml.xml[at..])
        .collect();
    assert_eq!(urls.len(), 1, "{what}: {}", twiml.xml);
    assert!(
        urls[0]
            .split_once("/twilio/")
            .is_some_and(|(_, rest)| rest.starts_with("dial-status/?")),
        "{what}: {}",
        twiml.xml
    );
}

#[tokio::test]
async fn a_bad_signature_on_a_caller_facing_webhook_gets_the_safe_twiml_and_stores_nothing() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    let id = CallId::for_call_sid(&sid);
    for path in [
        "/twilio/voice/".to_owned(),
        format!("/twilio/recording/{id}/"),
        format!("/twilio/user-choice/{id}/"),
        format!("/twilio/dial-status/{id}/"),
        "/twilio/no-such-webhook/".to_owned(),
    ] {
        let params = voice_params(&sid);
        let url = format!("{}{path}", app.base_url);
        for signature in [
            sign_request("another-token", &url, &params),
            // A proxy that adds a query, or a PUBLIC_BASE_URL that is not the console's.
            sign_request(AUTH_TOKEN, &format!("{url}?x=1"), &params),
            sign_request(AUTH_TOKEN, &url.replace("http://", "https://"), &params),
            "not base64 at all".to_owned(),
            String::new(),
        ] {
            let response = app
                .client
                .post(&url)
                .header("X-Twilio-Signature", &signature)
                .form(&params)
                .send()
                .await
                .expect("answers");
            assert_safe_twiml(response, &format!("{path} signed {signature:?}")).await;
        }
    }
    assert_eq!(app.event_count().await, 0);
    assert_eq!(refusals(&app).await["bad_signature"], 25);
}

#[tokio::test]
async fn a_signed_request_altered_in_transit_is_refused() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    let params = voice_params(&sid);
    let url = format!("{}/twilio/voice/", app.base_url);
    let signature = sign_request(AUTH_TOKEN, &url, &params);
    let mut altered = params.clone();
    altered.push(("Extra".into(), "added later".into()));
    let response = app
        .client
        .post(&url)
        .header("X-Twilio-Signature", signature)
        .form(&altered)
        .send()
        .await
        .expect("answers");
    assert_safe_twiml(response, "altered").await;
    assert_eq!(app.event_count().await, 0);
    assert_eq!(refusals(&app).await["bad_signature"], 1);
}

#[tokio::test]
async fn a_missing_signature_a_get_a_body_too_large_and_not_a_form_all_get_the_safe_twiml() {
    let app = spawn_app().await;
    let url = format!("{}/twilio/voice/", app.base_url);
    let unsigned = app
        .client
        .post(&url)
        .form(&voice_params(&new_call_sid()))
        .send()
        .await
        .expect("answers");
    assert_safe_twiml(unsigned, "unsigned").await;

    // A webhook set to HTTP GET in the console: its parameters come in the query.
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(voice_params(&new_call_sid()))
        .finish();
    let get_url = format!("{url}?{query}");
    let get = app
        .client
        .get(&get_url)
        .header(
            "X-Twilio-Signature",
            sign_request(AUTH_TOKEN, &get_url, &[]),
        )
        .send()
        .await
        .expect("answers");
    assert_safe_twiml(get, "GET").await;

    let mut params = voice_params(&new_call_sid());
    params.push(("Padding".into(), "x".repeat(api::MAX_BODY_BYTES + 1)));
    let too_large = app.post_signed("/twilio/voice/", &params).await;
    assert_safe_twiml(too_large, "too large").await;

    let json = app
        .client
        .post(&url)
        .header("X-Twilio-Signature", sign_request(AUTH_TOKEN, &url, &[]))
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("answers");
    assert_safe_twiml(json, "JSON").await;

    assert_eq!(app.event_count().await, 0);
    let refused = refusals(&app).await;
    for reason in [
        "missing_signature",
        "wrong_method",
        "too_large",
        "not_a_form",
    ] {
        assert_eq!(refused[reason], 1, "{reason}: {refused}");
    }
}

#[tokio::test]
async fn a_refused_whisper_bridges_the_counselor_and_a_refused_callback_keeps_its_error() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    let id = CallId::for_call_sid(&sid);
    let whisper = app
        .client
        .post(format!("{}/twilio/whisper/{id}/?attempt=1", app.base_url))
        .form(&voice_params(&sid))
        .send()
        .await
        .expect("answers");
    assert_eq!(whisper.status(), 200);
    let twiml = Twiml::parse(&whisper.text().await.expect("a body"));
    assert!(
        twiml.spoken().contains("put through to you"),
        "{}",
        twiml.xml
    );
    assert!(twiml.dialled().is_empty(), "{}", twiml.xml);

    // No caller hears a status callback's answer: Twilio only logs it.
    let status = app
        .client
        .post(format!("{}/twilio/status/", app.base_url))
        .header("X-Twilio-Signature", "forged")
        .form(&voice_params(&sid))
        .send()
        .await
        .expect("answers");
    assert_eq!(status.status(), 403);
    let body: serde_json::Value = status.json().await.expect("a JSON error");
    assert_eq!(body["code"], "bad_signature");
    assert_eq!(app.event_count().await, 0);
    let refused = refusals(&app).await;
    assert_eq!(
        (
            refused["missing_signature"].clone(),
            refused["bad_signature"].clone()
        ),
        (1.into(), 1.into())
    );
}

#[tokio::test]
async fn unknown_and_empty_parameters_are_part_of_what_is_signed() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    let mut params = voice_params(&sid);
    params.push(("SomethingTwilioAddsLater".into(), String::new()));
    params.push(("StirVerstat".into(), "TN-Validation-Passed-A".into()));
    let greeting = app.voice_with(&params).await;
    assert!(greeting.verbs().contains(&"Record"));
    assert_eq!(app.event_types(&sid).await, ["CallStarted"]);
}

/// Text a caller, a spoofed caller ID, or a broken upstream could put in any parameter.
const HOSTILE: &str = "</Say><Hangup/><Play>http://evil.example/a.mp3</Play> & \"q\" 'a' ]]> \u{1}\u{8}\u{1b}\u{FFFE}";

#[tokio::test]
async fn hostile_text_in_any_parameter_comes_out_as_well_formed_twiml() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    let id = CallId::for_call_sid(&sid);

    // Every free-text parameter (a status or keys that are not Twilio's are refused at the edge).
    let mut voice = voice_params(&sid);
    for (name, value) in voice.iter_mut() {
        if !matches!(
            name.as_str(),
            "CallSid" | "AccountSid" | "CallStatus" | "Direction"
        ) {
            *value = HOSTILE.to_owned();
        }
    }
    let greeting = app.voice_with(&voice).await;
    assert_eq!(
        greeting.verbs(),
        ["Gather", "Record", "Gather", "Say", "Dial"]
    );
    let mut answers = vec![greeting];

    // A hostile recording webhook: every parameter but the call's own is poison.
    let recording = form(&[
        ("CallSid", sid.as_str()),
        ("RecordingSid", HOSTILE),
        ("RecordingUrl", HOSTILE),
        ("Digits", HOSTILE),
    ]);
    let answer = app
        .twiml(&format!("/twilio/recording/{id}/"), &recording)
        .await;
    assert!(!answer.verbs().contains(&"Play"), "{}", answer.xml);
    answers.push(answer);

    let choice = form(&[
        ("CallSid", sid.as_str()),
        ("Digits", HOSTILE),
        ("SpeechResult", HOSTILE),
    ]);
    let answer = app
        .twiml(&format!("/twilio/user-choice/{id}/"), &choice)
        .await;
    assert!(
        !answer.verbs().contains(&"Play") && !answer.verbs().contains(&"Hangup"),
        "{}",
        answer.xml
    );
    answers.push(answer);

    // Even the URL's call id.
    let path = format!("/twilio/continue/{}/", urlencode(HOSTILE));
    let answer = app.twiml(&path, &form(&[("CallSid", sid.as_str())])).await;
    assert!(answer.dialled().contains(&COUNSELOR), "{}", answer.xml);
    answers.push(answer);
    for twiml in &answers {
        assert!(!twiml.xml.contains("evil.example"), "{}", twiml.xml);
    }
}

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl TestApp {
    async fn voice_with(&self, params: &[(String, String)]) -> Twiml {
        self.twiml("/twilio/voice/", params).await
    }
}

/// A signed request for one call, sent to another call's URL (replayed, or a proxy's mix-up),
/// acts on neither: the caller still hears a person is coming, and nothing is recorded.
#[tokio::test]
async fn a_webhook_whose_call_sid_is_another_calls_changes_nothing() {
    let app = spawn_app().await;
    let (ours, theirs) = (new_call_sid(), new_call_sid());
    app.voice(&ours).await;
    app.voice(&theirs).await;
    let id = CallId::for_call_sid(&ours);
    let before = app.event_count().await;
    let theirs_asking = |extra: &[(&str, &str)]| {
        let mut params = vec![("CallSid", theirs.as_str()), ("AccountSid", ACCOUNT_SID)];
        params.extend_from_slice(extra);
        form(&params)
    };
    for (path, extra) in [
        (format!("/twilio/user-choice/{id}/"), vec![("Digits", "2")]),
        (format!("/twilio/question/{id}/"), vec![("Digits", "2")]),
        (format!("/twilio/continue/{id}/?wait=0"), vec![]),
        (
            format!("/twilio/dial-status/{id}/?line=counselor&attempt=1"),
            vec![("DialCallStatus", "completed")],
        ),
    ] {
        let answer = app.twiml(&path, &theirs_asking(&extra)).await;
        assert!(
            answer.verbs().iter().any(|v| matches!(*v, "Say" | "Dial")),
            "{path}: {}",
            answer.xml
        );
    }
    assert_eq!(app.event_count().await, before, "nothing was recorded");
}

/// A signed request sent again, verbatim: Twilio's retry, or someone replaying what they caught.
async fn send_again(app: &TestApp, path: &str, params: &[(String, String)], token: &str) -> Twiml {
    let url = format!("{}{path}", app.base_url);
    let response = app
        .client
        .post(&url)
        .header("X-Twilio-Signature", sign_request(AUTH_TOKEN, &url, params))
        .header("I-Twilio-Idempotency-Token", token)
        .form(params)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 200);
    Twiml::parse(&response.text().await.expect("a body"))
}

#[tokio::test]
async fn a_replayed_choice_changes_nothing_and_is_answered_as_the_first_time() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    let path =
        infrastructure::twilio::routes::Webhook::UserChoice.path(Some(CallId::for_call_sid(&sid)));
    app.voice(&sid).await;
    app.recording(&sid, 1, "#").await;
    app.continue_call(&sid).await;
    let choice = form(&[
        ("CallSid", sid.as_str()),
        ("AccountSid", ACCOUNT_SID),
        ("Digits", "1"),
    ]);
    let token = format!("idem-{}", uuid::Uuid::new_v4());
    let first = send_again(&app, &path, &choice, &token).await;
    assert!(first.verbs().contains(&"Record"), "{}", first.xml);
    // The call goes on to its next turn; then the choice of the first comes again.
    app.recording(&sid, 2, "#").await;
    app.continue_call(&sid).await;
    let before = app.event_types(&sid).await;
    let again = send_again(&app, &path, &choice, &token).await;
    assert_eq!(
        app.event_types(&sid).await,
        before,
        "the replay changed nothing"
    );
    // Answered as the first time: the same verbs and words (its prompt names the turn the call
    // is at now).
    assert_eq!(
        (again.verbs(), again.spoken()),
        (first.verbs(), first.spoken()),
        "answered as the first time"
    );

    // The same, on a fresh instance that never saw the first: the store tells.
    let fresh = TestApp::builder().over(app.pool.clone()).spawn().await;
    send_again(&fresh, &path, &choice, &token).await;
    assert_eq!(app.event_types(&sid).await, before);
}

#[tokio::test]
async fn an_earlier_turns_choice_sent_again_under_a_new_token_changes_nothing() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    app.voice(&sid).await;
    app.recording(&sid, 1, "#").await;
    // The first reply asks the direct question; a clear no, then the choice prompt of turn 1.
    app.continue_call(&sid).await;
    let after = app.answer_question(&sid, Some("no"), None).await;
    let action = after
        .first("Gather")
        .attr("action")
        .expect("an action")
        .to_owned();
    assert!(action.ends_with("?turn=1"), "{action}");
    let path = action.trim_start_matches(&app.base_url).to_owned();
    let with = |digits: &str| {
        form(&[
            ("CallSid", sid.as_str()),
            ("AccountSid", ACCOUNT_SID),
            ("Digits", digits),
        ])
    };
    let listen = app.twiml(&path, &with("1")).await;
    assert!(listen.verbs().contains(&"Record"), "{}", listen.xml);
    app.recording(&sid, 2, "#").await;
    app.continue_call(&sid).await;
    let before = app.event_types(&sid).await;
    // Turn 1's prompt, signed as Twilio signed it, answered "2" (end the call) with a token of
    // its own: the idempotency token is not signed, so only the turn in the URL tells.
    app.twiml(&path, &with("2")).await;
    assert_eq!(app.event_types(&sid).await, before, "the call goes on");
}

#[tokio::test]
async fn loose_parameters_are_refused_at_the_edge_even_when_signed() {
    let app = spawn_app().await;
    let sid = new_call_sid();
    let id = CallId::for_call_sid(&sid);
    app.voice(&sid).await;
    app.recording(&sid, 1, "#").await;
    app.continue_call(&sid).await;
    let before = app.event_types(&sid).await;
    let choice_path = infrastructure::twilio::routes::Webhook::UserChoice.path(Some(id));
    let base = [("CallSid", sid.as_str()), ("AccountSid", ACCOUNT_SID)];
    for extra in [
        vec![("Digits", "1 OR 1=1")],
        vec![("Digits", "2"), ("Digits", "1")],
        vec![("Digits", "1"), ("SpeechResult", &*"p".repeat(5000))],
    ] {
        let params = form(&[&base[..], &extra[..]].concat());
        let response = app.post_signed(&choice_path, &params).await;
        assert_safe_twiml(response, &format!("{extra:?}")).await;
    }
    // A status no caller hears: the refusal is a 400, and the call's status is not a novel.
    let long = "x".repeat(10_000);
    for status in ["hacked", long.as_str()] {
        let params = form(&[&base[..], &[("CallStatus", status)]].concat());
        let response = app.post_signed("/twilio/status/", &params).await;
        assert_eq!(response.status(), 400);
    }
    assert_eq!(app.event_types(&sid).await, before);
    assert_eq!(refusals(&app).await["invalid_parameters"], 5);

    // The media type is read as a media type: any case, with parameters, and nothing else.
    let url = format!("{}/twilio/voice/", app.base_url);
    for (content_type, accepted) in [
        ("Application/X-WWW-Form-Urlencoded; charset=UTF-8", true),
        ("application/x-www-form-urlencodedx", false),
    ] {
        let call = new_call_sid();
        let params = voice_params(&call);
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&params)
            .finish();
        let response = app
            .client
            .post(&url)
            .header(
                "X-Twilio-Signature",
                sign_request(AUTH_TOKEN, &url, &params),
            )
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status(), 200);
        let recorded = app.event_types(&call).await;
        assert_eq!(recorded.len(), usize::from(accepted), "{content_type}");
    }
}

#[tokio::test]
async fn a_counselor_leg_of_another_call_acts_on_neither() {
    let app = spawn_app().await;
    let (ours, other) = (new_call_sid(), new_call_sid());
    for sid in [&ours, &other] {
        app.voice(sid).await;
        // 0: the caller asks for a person, and a counselor is rung.
        app.recording(sid, 1, "0").await;
    }
    let before = (app.event_types(&ours).await, app.event_types(&other).await);
    let whisper = format!(
        "{}?attempt=1",
        infrastructure::twilio::routes::Webhook::Whisper.path(Some(CallId::for_call_sid(&ours)))
    );
    let leg = |parent: &domain::CallSid| {
        form(&[
            ("CallSid", new_call_sid().as_str()),
            ("ParentCallSid", parent.as_str()),
            ("AccountSid", ACCOUNT_SID),
            ("Direction", "outbound-dial"),
        ])
    };
    let refused = app.twiml(&whisper, &leg(&other)).await;
    assert!(
        refused.spoken().contains("put through to you"),
        "{}",
        refused.xml
    );
    assert_eq!(
        (app.event_types(&ours).await, app.event_types(&other).await),
        before
    );
    // The call's own leg is heard.
    app.twiml(&whisper, &leg(&ours)).await;
    assert!(app
        .event_types(&ours)
        .await
        .contains(&"CounselorAnswered".to_owned()));
}
