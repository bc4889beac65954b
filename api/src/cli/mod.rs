//! The `hotline` command line: the service and its operations tool in one binary. Kept in the
//! library so that the end-to-end tests can build and run the very same program. `serve` runs the
//! service, `ops` the commands that work on its database, `demo` the simulated calls, and
//! `telemetry` sets up the logs.

pub mod demo;
pub mod ops;
pub mod serve;
pub mod telemetry;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use infrastructure::config::Config;

use self::telemetry::Verbosity;

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
    /// Print the X-Twilio-Signature Twilio would send for a form POST, for requests made by hand.
    /// Signs with the first TWILIO_AUTH_TOKEN, or the development token under HOTLINE_DATA_DIR.
    Sign {
        /// The full URL, exactly as requested (e.g. http://127.0.0.1:8000/twilio/voice/).
        url: String,
        /// The form parameters, as NAME=VALUE.
        params: Vec<String>,
    },
    /// Place calls against a running Hotline exactly as Twilio would, and print what the caller
    /// hears; with --calls N, print calls/s and webhook latency. Exits non-zero if a call goes
    /// wrong.
    Simulate(demo::SimulateArgs),
    /// Start Hotline on its embedded database with a simulated Twilio, run the example calls,
    /// print each conversation and its events, and leave the dashboard running. Speech mode
    /// unless HOTLINE_CONVERSATION says otherwise; --relay shows the live mode.
    Demo {
        /// Run the calls over ConversationRelay (the live mode), streamed over a WebSocket.
        #[arg(long)]
        relay: bool,
    },
    /// Print a call's whole event history, one JSON object per line.
    Events {
        /// The call's id, or its CallSid.
        call: String,
    },
    /// Recompute the event store's hash chains (every call's, or one) and name the first broken
    /// event of each call whose history was altered. Exits non-zero if any was.
    Verify {
        /// The call's id, or its CallSid.
        call: Option<String>,
    },
    /// Rebuild every view from the events into fresh tables, compare them with the live ones, and
    /// report the calls that differ. Exits non-zero if any does, unless --swap.
    Replay {
        /// Put the rebuilt views in place of the live ones.
        #[arg(long)]
        swap: bool,
    },
    /// Evaluate what callers would get, offline: `hotline eval safety` prints the risk
    /// screener's recall and specificity per category on the safety corpus (its tuning and
    /// held-out parts) and exits non-zero if the gate fails.
    Eval {
        #[command(subcommand)]
        command: ops::EvalCommand,
    },
    /// Manage the bearer tokens of /api/* and the dashboard.
    Tokens {
        #[command(subcommand)]
        command: ops::TokensCommand,
    },
}

/// Runs the command line of `hotline`.
pub async fn main() -> ExitCode {
    // A .env file is optional; the environment and flags win over it.
    let _ = dotenvy::dotenv();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return refused(&error),
    };
    if let Err(error) = cli.config.check(std::env::vars().map(|(name, _)| name)) {
        eprintln!("hotline: configuration error: {error}");
        return ExitCode::from(2);
    }
    let command = cli.command.unwrap_or(Command::Serve);
    telemetry::init(cli.config.log_format, command.verbosity());
    let result = match command {
        Command::Serve => serve::serve(cli.config).await,
        Command::Migrate => serve::migrate(cli.config).await,
        Command::Sign { url, params } => sign(&cli.config, &url, &params),
        Command::Simulate(args) => demo::simulate(cli.config, args).await,
        Command::Demo { relay } => demo::demo(cli.config, relay).await,
        Command::Events { call } => ops::events(cli.config, call).await,
        Command::Verify { call } => ops::verify(cli.config, call).await,
        Command::Replay { swap } => ops::replay(cli.config, swap).await,
        Command::Tokens { command } => ops::tokens(cli.config, command).await,
        Command::Eval { command } => ops::eval(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hotline: {error:#}");
            ExitCode::FAILURE
        }
    }
}

impl Command {
    /// The service logs what it does; the commands run by hand only what went wrong, so that
    /// their own output (and the demo's story) reads on its own.
    fn verbosity(&self) -> Verbosity {
        match self {
            Self::Serve => Verbosity::Service,
            _ => Verbosity::Command,
        }
    }
}

/// Reports a command line clap refused, and the exit code to leave with (0 for --help).
fn refused(error: &clap::Error) -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(message) = from_environment(error, &args, |name| std::env::var(name).ok()) {
        eprintln!("hotline: configuration error: {message}");
        return ExitCode::from(2);
    }
    let _ = error.print();
    ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2))
}

/// When clap refuses a value that came from the environment, it names the flag (`--addr`), which
/// was never given. This names the variable instead, with clap's reason.
fn from_environment(
    error: &clap::Error,
    args: &[String],
    environment: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};

    if !matches!(
        error.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let Some(ContextValue::String(flag)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = flag.split_whitespace().next()?.strip_prefix("--")?;
    let given = |arg: &String| {
        arg.strip_prefix("--")
            .is_some_and(|a| a == long || a.starts_with(&format!("{long}=")))
    };
    if args.iter().any(given) {
        return None;
    }
    let command = Cli::command();
    let arg = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))?;
    let variable = arg.get_env()?.to_str()?;
    environment(variable)?;
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) if !arg.is_hide_env_values_set() => {
            format!(" '{value}'")
        }
        _ => String::new(),
    };
    let reason = match (
        std::error::Error::source(error),
        error.get(ContextKind::ValidValue),
    ) {
        (Some(source), _) => source.to_string(),
        (None, Some(ContextValue::Strings(valid))) => format!("expected {}", valid.join(", ")),
        _ => "not a valid value".to_owned(),
    };
    Some(format!("{variable}{value} is invalid: {reason}"))
}

fn sign(config: &Config, url: &str, params: &[String]) -> anyhow::Result<()> {
    use anyhow::Context;
    use secrecy::ExposeSecret;

    let pairs = params
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("'{p}' is not NAME=VALUE"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let token = match config.secret_auth_tokens().first() {
        Some(token) => token.expose_secret().to_owned(),
        None => crate::wiring::development_token(&config.data_dir)?,
    };
    println!("{}", twilio_signature::sign_request(&token, url, &pairs));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| (*a).to_owned()).collect()
    }

    fn refusal(given: &[&str]) -> clap::Error {
        Cli::try_parse_from(given).expect_err("refused")
    }

    #[test]
    fn a_bad_value_from_the_environment_is_named_as_its_variable() {
        // clap reads HOTLINE_ADDR itself; the refusal is built here from the flag, as clap
        // builds it for a variable, and the variable is then said to be set.
        let error = refusal(&["hotline", "--addr", "notanaddress"]);
        let message = from_environment(&error, &args(&["hotline"]), |name| {
            (name == "HOTLINE_ADDR").then(|| "notanaddress".to_owned())
        });
        assert_eq!(
            message.as_deref(),
            Some("HOTLINE_ADDR 'notanaddress' is invalid: invalid socket address syntax")
        );
    }

    #[test]
    fn a_bad_flag_is_left_to_clap_which_names_it() {
        let given = ["hotline", "--addr", "notanaddress"];
        let error = refusal(&given);
        assert_eq!(
            from_environment(&error, &args(&given), |_| Some("x".to_owned())),
            None
        );
        let given = ["hotline", "--addr=notanaddress"];
        let error = refusal(&given);
        assert_eq!(
            from_environment(&error, &args(&given), |_| Some("x".to_owned())),
            None
        );
    }

    #[test]
    fn a_bad_choice_from_the_environment_lists_the_valid_ones() {
        let error = refusal(&["hotline", "--log-format", "xml"]);
        let message = from_environment(&error, &args(&["hotline"]), |_| Some("xml".to_owned()));
        assert_eq!(
            message.as_deref(),
            Some("HOTLINE_LOG_FORMAT 'xml' is invalid: expected text, json")
        );
    }

    #[test]
    fn the_service_logs_and_the_commands_keep_quiet() {
        assert_eq!(Command::Serve.verbosity(), Verbosity::Service);
        assert_eq!(Command::Migrate.verbosity(), Verbosity::Command);
        assert_eq!(
            Command::Demo { relay: false }.verbosity(),
            Verbosity::Command
        );
    }
}
