//! The `hotline` program, built inside the test package so that the end-to-end tests can run it as
//! a separate process (`CARGO_BIN_EXE_hotline-under-test`): killed mid-job, or two at once on one
//! database. It is the same command line as the shipped binary, on tokio's default worker stack
//! (2 MiB), a quarter of the shipped binary's: a webhook's future that outgrows it overflows here
//! first.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> std::process::ExitCode {
    api::cli::main().await
}
