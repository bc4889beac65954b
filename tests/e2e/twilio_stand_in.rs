//! Stand-ins for Twilio's REST API: Prism serving Twilio's own OpenAPI spec (it validates every
//! request against Twilio's contract), and a small scripted server for what Prism cannot answer
//! (recording media, Twilio's error bodies, 429s, redirects).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Prism, mocking Twilio's API v2010 from Twilio's own OpenAPI spec.
pub struct Prism {
    pub base_url: String,
    _child: Child,
}

fn mock_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("twilio-mock")
}

fn prism_bin() -> PathBuf {
    mock_dir().join("node_modules/.bin/prism")
}

/// Twilio's OpenAPI spec of API v2010 (Apache-2.0, from twilio/twilio-oai), as the npm package
/// `@twilio-alpha/mcp` ships it.
fn twilio_spec() -> PathBuf {
    mock_dir().join("node_modules/@twilio-alpha/mcp/twilio-oai/spec/json/twilio_api_v2010.json")
}

fn installed() -> bool {
    prism_bin().exists() && twilio_spec().exists()
}

/// Installs Prism and Twilio's spec from the npm registry the first time, as pinned in
/// `tests/twilio-mock/package-lock.json`.
async fn ensure_prism_installed() -> PathBuf {
    if installed() {
        return prism_bin();
    }
    // One test process installs while the others wait on the lock.
    let lock = std::fs::File::create(mock_dir().join(".install.lock")).expect("lock file");
    tokio::task::spawn_blocking(move || {
        lock.lock().expect("locks");
        if !installed() {
            let status = std::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(mock_dir())
                .status()
                .expect("npm runs (Node.js is needed for the Twilio contract tests)");
            assert!(status.success(), "npm ci in tests/twilio-mock failed");
        }
        lock
    })
    .await
    .expect("installs");
    prism_bin()
}

impl Prism {
    /// Starts Prism on a free port of 127.0.0.1 and waits until it says it is listening.
    pub async fn start() -> Self {
        let bin = ensure_prism_installed().await;
        let spec = twilio_spec();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("binds")
            .local_addr()
            .expect("addr")
            .port();
        let mut child = Command::new(bin)
            .args(["mock", "-h", "127.0.0.1", "-p", &port.to_string()])
            .arg(&spec)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("prism starts");
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("Prism is listening") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(ready, Ok(true), "Prism did not start");
        // Keep draining its output so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            base_url: format!("http://127.0.0.1:{port}"),
            _child: child,
        }
    }
}

/// A request the scripted stand-in received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: String,
    /// The status answered (Prism's, for forwarded requests).
    pub status: u16,
}

/// A canned answer.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub location: Option<String>,
}

impl Canned {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: body.to_string().into_bytes(),
            location: None,
        }
    }

    pub fn twilio_error(status: u16, code: i64, message: &str) -> Self {
        Self::json(
            status,
            serde_json::json!({
                "code": code, "message": message, "status": status,
                "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            }),
        )
    }

    pub fn audio(bytes: &[u8]) -> Self {
        Self {
            status: 200,
            content_type: "audio/x-wav",
            body: bytes.to_vec(),
            location: None,
        }
    }

    pub fn redirect(to: String) -> Self {
        Self {
            status: 302,
            content_type: "text/plain",
            body: Vec::new(),
            location: Some(to),
        }
    }
}

#[derive(Default)]
struct Script {
    answers: Vec<Canned>,
    /// When set, GETs and POSTs always get these answers instead (for concurrent clients).
    by_method: Option<(Canned, Canned)>,
    /// When set, GETs get the first answer and every other request is forwarded to Prism there,
    /// which checks it against Twilio's spec.
    prism: Option<String>,
    received: Vec<Received>,
}

/// A local HTTP server that answers from a script, in order (the last answer repeats), and records
/// what it received.
#[derive(Clone)]
pub struct ScriptedServer {
    pub base_url: String,
    script: Arc<Mutex<Script>>,
}

impl ScriptedServer {
    pub async fn start(answers: Vec<Canned>) -> Self {
        Self::serve(Script {
            answers,
            ..Script::default()
        })
        .await
    }

    /// A server that answers every GET with `get` and every POST with `post`, whatever the order
    /// of requests (several workers at once).
    pub async fn by_method(get: Canned, post: Canned) -> Self {
        Self::serve(Script {
            by_method: Some((get, post)),
            ..Script::default()
        })
        .await
    }

    /// Serves recording media itself (Prism cannot) and forwards everything else to `prism`.
    pub async fn fronting_prism(recording: Canned, prism: &Prism) -> Self {
        Self::serve(Script {
            answers: vec![recording],
            prism: Some(prism.base_url.clone()),
            ..Script::default()
        })
        .await
    }

    async fn serve(script: Script) -> Self {
        let script = Arc::new(Mutex::new(script));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = Router::new().fallback(answer).with_state(script.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base_url, script }
    }

    pub fn received(&self) -> Vec<Received> {
        self.script.lock().expect("not poisoned").received.clone()
    }
}

async fn answer(State(script): State<Arc<Mutex<Script>>>, request: Request) -> Response {
    let method = request.method().to_string();
    let is_get = method == "GET";
    let path = request.uri().path().to_owned();
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let prism = script.lock().expect("not poisoned").prism.clone();
    if let (Some(prism), false) = (prism, is_get) {
        let mut forwarded = reqwest::Client::new()
            .post(format!("{prism}{path}"))
            .body(body.to_vec());
        if let Some(auth) = &authorization {
            forwarded = forwarded.header("authorization", auth);
        }
        if let Some(ct) = &content_type {
            forwarded = forwarded.header("content-type", ct);
        }
        let answer = forwarded.send().await.expect("Prism answers");
        let status = answer.status().as_u16();
        let answer_body = answer.bytes().await.unwrap_or_default();
        script
            .lock()
            .expect("not poisoned")
            .received
            .push(Received {
                method,
                path,
                authorization,
                body: String::from_utf8_lossy(&body).into_owned(),
                status,
            });
        let mut response = (
            StatusCode::from_u16(status).expect("valid status"),
            answer_body.to_vec(),
        )
            .into_response();
        response
            .headers_mut()
            .insert("content-type", "application/json".parse().expect("valid"));
        return response;
    }
    let canned = {
        let mut script = script.lock().expect("not poisoned");
        let status = match &script.by_method {
            Some((get, _)) if is_get => get.status,
            Some((_, post)) => post.status,
            None => script.answers[0].status,
        };
        script.received.push(Received {
            method,
            path,
            authorization,
            body: String::from_utf8_lossy(&body).into_owned(),
            status,
        });
        match &script.by_method {
            Some((get, _)) if is_get => get.clone(),
            Some((_, post)) => post.clone(),
            None if script.answers.len() > 1 => script.answers.remove(0),
            None => script.answers[0].clone(),
        }
    };
    let mut response = (
        StatusCode::from_u16(canned.status).expect("valid status"),
        canned.body,
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", canned.content_type.parse().expect("valid"));
    if let Some(location) = canned.location {
        headers.insert("location", location.parse().expect("valid"));
    }
    response
}
