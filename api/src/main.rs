//! `hotline`: the service and its operations tool in one binary.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use infrastructure::config::Config;
use tracing_subscriber::EnvFilter;

/// Hotline answers a crisis line's phone calls through Twilio.
#[derive(Debug, Parser)]
#[command(name = "hotline", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the webhooks (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> ExitCode {
    // A .env file is optional; the environment and flags win over it.
    let _ = dotenvy::dotenv();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")),
        )
        .init();
    let cli = Cli::parse();
    if let Err(error) = cli.config.check(std::env::vars().map(|(name, _)| name)) {
        eprintln!("hotline: configuration error: {error}");
        return ExitCode::from(2);
    }
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => api::startup::serve(cli.config).await,
        Command::Migrate => api::startup::migrate(cli.config).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hotline: {error:#}");
            ExitCode::FAILURE
        }
    }
}
