//! A smoke run of the benchmark (`cargo run -p bench`), so it cannot rot. Its figures mean nothing here
//! (seconds of load on a shared machine) and nothing about them is asserted but their presence.

use tokio::process::Command;

use crate::helpers::*;

#[tokio::test]
async fn the_bench_runs_every_workload_and_prints_its_table() {
    // The bench creates (and drops) a database of its own on the server this one lives on.
    let (pool, name) = fresh_database().await;
    let _cleanup = TestApp::owning(pool, name.clone()).await;
    let output = Command::new(env!("CARGO_BIN_EXE_bench-under-test"))
        .args(["--quick", "--seconds", "0.3", "--events", "2000"])
        .env_clear()
        .env("DATABASE_URL", database_url(&name).await)
        .env("RUST_LOG", "error")
        .output()
        .await
        .expect("the bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for workload in [
        "webhook commands, 16 connections",
        "webhook commands, 64 connections",
        "memory, 200 concurrent calls",
        "turn overhead",
        "speech turns, zero-latency model",
        "speech turns, 700 ms model",
        "aggregate load against call length",
        "replay of",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {workload}")))
            .unwrap_or_else(|| panic!("no row for {workload}: {stdout}"));
        assert!(
            row.contains('×') || row.contains("µs") || row.contains("MiB"),
            "{row}"
        );
    }
    assert!(stdout.contains("0 errors"), "{stdout}");
    assert!(stdout.contains("(0 of 200 calls failed)"), "{stdout}");
    assert!(stdout.contains(", 0 lost"), "{stdout}");
    // Every speech turn answered in its own response, by the model stand-in, in calls that all
    // ended well.
    for row in stdout.lines().filter(|l| l.starts_with("| speech turns")) {
        assert!(row.contains("(0 of "), "{row}");
        assert!(row.contains(" 0 left to a REST update"), "{row}");
        assert!(row.contains(" at p99"), "{row}");
    }
}
