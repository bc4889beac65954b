//! `hotline`: the service and its operations tool in one binary.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> std::process::ExitCode {
    api::cli::main().await
}
