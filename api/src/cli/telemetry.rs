//! Logs. They go to stderr, so that stdout carries only what a command prints (a token, a
//! signature, a call's events, the demo's conversations) and can be piped or captured. They are
//! coloured only when stderr is a terminal, and written as JSON lines with `--log-format json`.

use std::io::IsTerminal;

use infrastructure::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// What is logged when `RUST_LOG` does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// The service: what it does, request by request.
    Service,
    /// A command someone runs by hand: only what went wrong.
    Command,
}

impl Verbosity {
    fn default_filter(self) -> &'static str {
        match self {
            Self::Service => "info,sqlx=warn",
            Self::Command => "warn",
        }
    }
}

/// Installs the process's subscriber: `RUST_LOG`, or `verbosity`'s default.
pub fn init(format: LogFormat, verbosity: Verbosity) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(verbosity.default_filter()));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            .with_ansi(colour(std::io::stderr().is_terminal()))
            .init(),
        LogFormat::Json => logs.json().init(),
    }
}

/// Colour on a terminal, unless `NO_COLOR` asks for none (https://no-color.org).
fn colour(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}
