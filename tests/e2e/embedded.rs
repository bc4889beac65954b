//! The embedded PostgreSQL the service starts when no DATABASE_URL is given: it starts, migrates,
//! stops and starts again; it is shared with the commands run beside the service; and it never
//! outlives the processes that use it, however they end.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use infrastructure::embedded_pg::EmbeddedPostgres;
use infrastructure::event_store;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Child;

use crate::helpers::hotline_command;

/// A data directory of its own, which the unprivileged account PostgreSQL runs as (as root) can
/// reach. Should a test fail with a server still running on it, that server is stopped before
/// the directory is removed (PostgreSQL cannot be stopped once its directory is gone).
struct DataDir {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl DataDir {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        Self {
            path: dir.path().join("data"),
            _dir: dir,
        }
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if postmaster_pid(&self.path).is_none() {
            return;
        }
        // Adopting the server (or waiting for the lifeline stopping it) and stopping it; on a
        // thread of its own, as Drop cannot await.
        let path = self.path.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                if let Ok(pg) = EmbeddedPostgres::start(&path).await {
                    let _ = pg.stop().await;
                }
            });
            Ok::<_, std::io::Error>(())
        })
        .join();
    }
}

/// The process id in the cluster's `postmaster.pid`, if there is one: a server runs (or a
/// stopping one has not finished).
fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    let pid_file = std::fs::read_to_string(data_dir.join("postgres/data/postmaster.pid")).ok()?;
    pid_file.lines().next()?.trim().parse().ok()
}

/// Whether process `pid` runs (a zombie does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X'))
    })
}

/// Sends `signal` to `target` (a pid, or `-PGID` for a process group).
async fn signal(signal: &str, target: &str) {
    let status = tokio::process::Command::new("sh")
        .args(["-c", &format!("kill -{signal} {target}")])
        .status()
        .await
        .expect("sh runs");
    assert!(status.success(), "kill -{signal} {target}");
}

/// `hotline serve` on the embedded database under `data_dir`, with JSON logs, on a port of its
/// choosing; in a process group of its own if `own_group`.
struct Service {
    child: Child,
    base_url: String,
}

impl Service {
    async fn start(data_dir: &Path, own_group: bool) -> Self {
        let mut command = hotline_command();
        command
            .arg("serve")
            .env("HOTLINE_DATA_DIR", data_dir)
            .env("HOTLINE_ADDR", "127.0.0.1:0")
            .env("HOTLINE_LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if own_group {
            command.process_group(0);
        }
        let mut child = command.spawn().expect("hotline starts");
        let stderr = child.stderr.take().expect("piped");
        let mut logs = BufReader::new(stderr).lines();
        // Every line on stderr is a JSON log; the service says where it listens once it does.
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = logs.next_line().await.expect("reads stderr") {
                let log: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
                if log["fields"]["message"] == "Hotline is answering calls" {
                    return log["fields"]["addr"]
                        .as_str()
                        .expect("an address")
                        .to_owned();
                }
            }
            panic!("hotline stopped before it answered")
        })
        .await
        .expect("hotline answers within 60 s");
        tokio::spawn(async move { while let Ok(Some(_)) = logs.next_line().await {} });
        Self {
            child,
            base_url: format!("http://{addr}"),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    async fn health(&self) -> u16 {
        reqwest::get(format!("{}/health", self.base_url))
            .await
            .expect("answers")
            .status()
            .as_u16()
    }
}

/// A connection of the test's own to the cluster's database.
async fn connect(data_dir: &Path) -> sqlx::PgConnection {
    PgConnectOptions::new()
        .socket(data_dir.join("postgres/run"))
        .port(5432)
        .username("hotline")
        .database("hotline")
        .connect()
        .await
        .expect("connects to the embedded PostgreSQL")
}

#[tokio::test]
async fn the_embedded_database_starts_migrates_stops_and_starts_again() {
    let dir = DataDir::new();
    let data_dir = &dir.path;

    let pg = EmbeddedPostgres::start(data_dir)
        .await
        .expect("starts on a fresh directory");
    let pool = event_store::pool(pg.connect_options(), 2);
    event_store::migrate(&pool).await.expect("migrates");
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'events'",
    )
    .fetch_one(&pool)
    .await
    .expect("queries");
    assert_eq!(tables, 1);
    pool.close().await;
    pg.stop().await.expect("stops");
    assert_eq!(postmaster_pid(data_dir), None, "the server is gone");

    let again = EmbeddedPostgres::start(data_dir)
        .await
        .expect("starts again on the same cluster");
    // The data survived the restart.
    let mut conn = again.connect_options().connect().await.expect("connects");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .expect("queries");
    assert!(applied >= 1);
    conn.close().await.expect("closes");
    again.stop().await.expect("stops");
    assert_eq!(postmaster_pid(data_dir), None);
}

#[tokio::test]
async fn a_command_beside_the_service_shares_its_database_prints_only_its_output_and_the_service_stops_it(
) {
    let dir = DataDir::new();
    let data_dir = &dir.path;
    let mut service = Service::start(data_dir, false).await;

    // The README's `TOKEN=$(hotline tokens create …)`: stdout is the token and nothing else,
    // even with every log on.
    for rust_log in [None, Some("debug")] {
        let mut command = hotline_command();
        command
            .args([
                "tokens",
                "create",
                "--role",
                "analyst",
                "--label",
                "ops laptop",
            ])
            .env("HOTLINE_DATA_DIR", data_dir);
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let output = command.output().await.expect("hotline tokens create runs");
        let stdout = String::from_utf8(output.stdout).expect("UTF-8");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        let token = stdout.strip_suffix('\n').expect("one line");
        assert!(
            token.starts_with("hl_") && !token.contains(char::is_whitespace),
            "stdout is not just a token: {stdout:?}"
        );
        assert!(
            !stderr.contains("\x1b["),
            "no colour off a terminal: {stderr}"
        );
        match rust_log {
            // A command run by hand logs only what went wrong.
            None => assert!(!stderr.contains("INFO"), "{stderr}"),
            Some(_) => assert!(stderr.contains("DEBUG"), "{stderr}"),
        }
        let calls = reqwest::Client::new()
            .get(format!("{}/api/calls", service.base_url))
            .bearer_auth(token)
            .send()
            .await
            .expect("answers");
        assert_eq!(calls.status(), 200, "the token works");
    }
    // The command left the server running: the service still uses it.
    assert_eq!(service.health().await, 200);

    let postmaster = postmaster_pid(data_dir).expect("the server runs");
    signal("TERM", &service.pid().to_string()).await;
    let status = service.child.wait().await.expect("hotline stops");
    assert!(status.success(), "{status}");
    let mut stdout = String::new();
    let mut out = service.child.stdout.take().expect("piped");
    out.read_to_string(&mut stdout).await.expect("reads");
    assert_eq!(stdout, "", "the service logs to stderr only");
    assert_eq!(
        postmaster_pid(data_dir),
        None,
        "the service stopped its server"
    );
    assert!(!alive(postmaster), "postmaster {postmaster} still runs");
}

#[tokio::test]
async fn a_killed_service_leaves_no_postgresql_running() {
    let dir = DataDir::new();
    let data_dir = &dir.path;

    // kill -9 of the service: its lifeline stops the server at once.
    let mut service = Service::start(data_dir, false).await;
    let first = postmaster_pid(data_dir).expect("the server runs");
    let mut held = connect(data_dir).await;
    service.child.start_kill().expect("kill -9");
    service.child.wait().await.expect("killed");
    // The server's shutdown ends the test's session: that is the moment it begins.
    let ended = sqlx::query("SELECT pg_sleep(60)")
        .execute(&mut held)
        .await
        .expect_err("the server ends the session");
    // Its shutdown message, or (when the server went before it could say so, on a busy machine)
    // the connection closing under the session.
    assert!(
        ended.to_string().contains("terminating connection") || matches!(ended, sqlx::Error::Io(_)),
        "{ended}"
    );
    // The lifeline holds the start lock until the server is down, so this start finds it gone.
    let pg = EmbeddedPostgres::start(data_dir).await.expect("starts");
    let second = postmaster_pid(data_dir).expect("a server runs");
    assert_ne!(first, second, "the killed service's server was stopped");
    pg.stop().await.expect("stops");
    assert_eq!(postmaster_pid(data_dir), None);

    // kill -9 of the service and its lifeline together (its whole process group): the server
    // is left running, and the next process adopts it and stops it when done.
    let mut service = Service::start(data_dir, true).await;
    let left = postmaster_pid(data_dir).expect("the server runs");
    signal("KILL", &format!("-{}", service.pid())).await;
    service.child.wait().await.expect("killed");
    assert!(alive(left), "the server outlived its process");
    let pg = EmbeddedPostgres::start(data_dir).await.expect("starts");
    assert_eq!(
        postmaster_pid(data_dir),
        Some(left),
        "adopted, not restarted"
    );
    pg.stop().await.expect("stops");
    assert_eq!(
        postmaster_pid(data_dir),
        None,
        "the adopted server was stopped"
    );
}
