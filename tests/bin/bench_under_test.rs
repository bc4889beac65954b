//! The benchmark's program, built by the test package so that a test can run it (cargo gives a
//! test the path of its own package's binaries only).
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> std::process::ExitCode {
    bench::main().await
}
