//! The `hotline` command line as a user meets it: stdout carries only what a command prints, and
//! a service that cannot start says why, naming the port, the variable or the database at fault,
//! with nothing left running behind it.

use twilio_signature::sign_request;

use crate::helpers::{database_url, free_port, hotline_command, spawn_app};

/// Runs `hotline args…` with `env`, and returns (success, stdout, stderr).
async fn hotline(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = hotline_command()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .await
        .expect("hotline runs");
    (
        output.status.success(),
        String::from_utf8(output.stdout).expect("UTF-8"),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn hotline_sign_prints_only_the_signature_even_with_every_log_on() {
    let dir = tempfile::tempdir().expect("a data directory");
    std::fs::write(dir.path().join("dev-auth-token"), "the-dev-token").expect("writes");
    let url = "http://127.0.0.1:8000/twilio/voice/";
    let data_dir = dir.path().to_str().expect("UTF-8");
    let (ok, stdout, stderr) = hotline(
        &["sign", url, "CallSid=CA0123", "From=+15005550006"],
        &[("HOTLINE_DATA_DIR", data_dir), ("RUST_LOG", "trace")],
    )
    .await;
    assert!(ok, "{stderr}");
    let pairs = [
        ("CallSid".to_owned(), "CA0123".to_owned()),
        ("From".to_owned(), "+15005550006".to_owned()),
    ];
    assert_eq!(
        stdout,
        format!("{}\n", sign_request("the-dev-token", url, &pairs))
    );
}

#[tokio::test]
async fn logs_go_to_stderr_and_commands_keep_quiet_unless_rust_log_says_otherwise() {
    let app = spawn_app().await;
    let name = app.database.clone().expect("the app owns its database");
    let url = database_url(&name).await;
    for (rust_log, logged) in [(None, false), (Some("debug"), true)] {
        let mut env = vec![("DATABASE_URL", url.as_str())];
        env.extend(rust_log.map(|filter| ("RUST_LOG", filter)));
        let (ok, stdout, stderr) = hotline(&["migrate"], &env).await;
        assert!(ok, "{stderr}");
        assert_eq!(stdout, "the database is up to date\n");
        assert_eq!(
            stderr.contains("DEBUG"),
            logged,
            "RUST_LOG={rust_log:?}: {stderr}"
        );
        assert!(
            !stderr.contains("\x1b["),
            "no colour off a terminal: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_taken_port_is_named_and_nothing_is_left_running() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let addr = taken.local_addr().expect("an address").to_string();
    let port = addr.rsplit(':').next().expect("a port");
    for command in ["serve", "demo"] {
        let dir = tempfile::tempdir().expect("a data directory");
        let data_dir = dir.path().to_str().expect("UTF-8");
        let (ok, stdout, stderr) = hotline(
            &[command],
            &[("HOTLINE_ADDR", &addr), ("HOTLINE_DATA_DIR", data_dir)],
        )
        .await;
        assert!(!ok, "hotline {command} started on a taken port");
        assert!(
            stderr.contains(&format!("port {port} is already in use")),
            "hotline {command}: {stderr}"
        );
        assert!(stderr.contains("HOTLINE_ADDR"), "{stderr}");
        assert_eq!(stdout, "", "hotline {command}");
        // The address is taken before anything is started: no database was.
        assert!(
            !dir.path().join("postgres").exists(),
            "hotline {command} started its database"
        );
    }
}

#[tokio::test]
async fn a_bad_value_in_the_environment_is_named_as_its_variable() {
    let (ok, _, stderr) = hotline(&["migrate"], &[("HOTLINE_ADDR", "notanaddress")]).await;
    assert!(!ok);
    assert!(
        stderr.contains("HOTLINE_ADDR 'notanaddress' is invalid"),
        "{stderr}"
    );
    assert!(!stderr.contains("--addr"), "{stderr}");
}

#[tokio::test]
async fn an_unreachable_database_is_named_with_the_cause() {
    let port = free_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/hotline");
    let (ok, _, stderr) = hotline(&["migrate"], &[("DATABASE_URL", &url)]).await;
    assert!(!ok);
    assert!(
        stderr.contains(&format!("connection refused at 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(!stderr.contains("timed out"), "{stderr}");
}
