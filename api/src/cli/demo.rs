//! `hotline simulate` (calls placed against a running Hotline, as Twilio would place them) and
//! `hotline demo` (the service on its embedded database with the simulator as its Twilio, the
//! example calls, and the dashboard left running).

use std::ffi::OsString;

use anyhow::Context;
use application::auth::Role;
use infrastructure::config::Config;
use infrastructure::event_store::audit;
use infrastructure::tokens::ApiTokens;
use infrastructure::twilio::answers::Conversation;
use secrecy::{ExposeSecret, SecretString};

use twilio_sim::load::{print_figures, run_calls};
use twilio_sim::scenario::{self, Scenario, Step};
use twilio_sim::{CallReport, Simulator, Target};

/// `hotline simulate`'s options.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Hotline's base URL as Twilio calls it (its PUBLIC_BASE_URL). Default: the configured one.
    #[arg(long)]
    pub target: Option<String>,
    /// A scenario file (YAML or JSON). Without one, the --say/--press/--silence flags, in order.
    #[arg(long, conflicts_with_all = ["say", "press", "silence"])]
    pub scenario: Option<std::path::PathBuf>,
    /// The caller says this at the next prompt (repeatable, in order with --press and --silence).
    #[arg(long)]
    pub say: Vec<String>,
    /// The caller presses these keys at the next prompt.
    #[arg(long)]
    pub press: Vec<String>,
    /// The caller says nothing at the next prompt.
    #[arg(long, action = clap::ArgAction::Count)]
    pub silence: u8,
    /// How many calls to place.
    #[arg(long, default_value_t = 1)]
    pub calls: usize,
    /// How many at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// How long pauses last, as a share of their length (1: real time; 0: no waiting).
    #[arg(long)]
    pub pace: Option<f64>,
    /// The port of the simulator's REST stand-in (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub rest_port: u16,
}

/// The account the simulator speaks for when Hotline has none configured (development mode).
const DEVELOPMENT_ACCOUNT: &str = "AC00000000000000000000000000000000";

/// The steps of --say/--press/--silence, in the order they were given.
fn steps_from(args: impl IntoIterator<Item = OsString>) -> Vec<Step> {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let (flag, inline) = match args[i].split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (args[i].clone(), None),
        };
        let value = |i: &mut usize| {
            inline.clone().or_else(|| {
                *i += 1;
                args.get(*i).cloned()
            })
        };
        match flag.as_str() {
            "--say" => steps.extend(value(&mut i).map(Step::Say)),
            "--press" => steps.extend(value(&mut i).map(Step::Press)),
            "--silence" => steps.push(Step::Silence),
            _ => {}
        }
        i += 1;
    }
    steps
}

/// The auth token webhooks are signed with: the configured one, or the development token.
fn signing_token(config: &Config) -> anyhow::Result<String> {
    Ok(match config.secret_auth_tokens().first() {
        Some(token) => token.expose_secret().to_owned(),
        None => crate::wiring::development_token(&config.data_dir)?,
    })
}

/// `hotline simulate`.
pub async fn simulate(config: Config, args: SimulateArgs) -> anyhow::Result<()> {
    let scenario = match &args.scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("could not read {}", path.display()))?;
            Scenario::parse(&text).map_err(anyhow::Error::msg)?
        }
        None => {
            let steps = steps_from(std::env::args_os());
            if steps.is_empty() {
                scenario::examples().remove(0)
            } else {
                Scenario {
                    name: "call from the command line".into(),
                    description: String::new(),
                    from: "+14155550123".into(),
                    steps,
                    afterwards: scenario::Afterwards::HangUp,
                    transcription: scenario::Transcription::default(),
                    dial: Vec::new(),
                }
            }
        }
    };
    let target = Target {
        base_url: args
            .target
            .clone()
            .unwrap_or_else(|| config.public_base_url())
            .trim_end_matches('/')
            .to_owned(),
        account_sid: config
            .twilio_account_sid
            .as_ref()
            .map_or_else(|| DEVELOPMENT_ACCOUNT.to_owned(), ToString::to_string),
        auth_token: signing_token(&config)?,
        to: config
            .twilio_phone_number
            .as_ref()
            .map_or_else(|| "+15005550006".to_owned(), |n| n.as_str().to_owned()),
    };
    let mut simulator = Simulator::start(target, args.rest_port)
        .await
        .context("could not start the simulator's REST stand-in")?;
    let load = args.calls > 1;
    simulator.echo = !load;
    simulator.pace = args.pace.unwrap_or(if load { 0.0 } else { 1.0 });
    eprintln!(
        "simulator: Twilio's REST API stand-in on {} (set TWILIO_API_BASE to it for the pipeline)",
        simulator.rest_base_url
    );
    let reports = run_calls(&simulator, &scenario, args.calls, args.concurrency.max(1)).await;
    if load {
        print_figures(&reports.calls, reports.elapsed);
    }
    let failed: Vec<&CallReport> = reports
        .calls
        .iter()
        .filter(|r| r.outcome.is_err())
        .collect();
    for report in failed.iter().take(5) {
        if let Err(error) = &report.outcome {
            eprintln!("call {} failed: {error}", report.call_sid);
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "{} of {} calls went wrong",
            failed.len(),
            reports.calls.len()
        );
    }
    Ok(())
}

/// The demo's Twilio account: a fixed SID, so the demo's calls read alike run after run.
const DEMO_ACCOUNT: &str = "AC0de0000000000000000000000000de00";

/// `hotline demo`.
pub async fn demo(mut config: Config, relay: bool) -> anyhow::Result<()> {
    if relay {
        config.conversation = Conversation::Relay;
    }
    let auth_token = {
        use rand::Rng;
        let bytes: [u8; 16] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let base_url = config.public_base_url();
    let target = Target {
        base_url: base_url.clone(),
        account_sid: DEMO_ACCOUNT.to_owned(),
        auth_token: auth_token.clone(),
        to: "+15005550006".to_owned(),
    };
    let mut simulator = Simulator::start(target, 0)
        .await
        .context("could not start the simulated Twilio")?;
    simulator.echo = true;
    // The service, with the simulator as its Twilio: the pipeline runs, Twilio's (simulated)
    // transcription supplies the words, and the vetted script answers.
    config.twilio_account_sid = Some(domain::AccountSid::parse(DEMO_ACCOUNT)?);
    config.twilio_auth_token = Some(auth_token);
    config.twilio_api_base = simulator.rest_base_url.clone();
    config.stt_base_url = None;
    config.llm_base_url = None;
    // A counselor line of its own, so the demo shows who is dialled for what.
    if config.counselor_number.is_none() {
        config.counselor_number = Some(domain::DialNumber::parse("+15005550001")?);
    }
    let config_conversation = config.conversation;
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let service = tokio::spawn(crate::cli::serve::serve_until(
        config,
        crate::cli::serve::shutdown_signal(),
        Some(ready_tx),
    ));
    // A service that fails to start drops `ready` as it returns: its error says why.
    let Ok(pool) = ready.await else {
        return Err(match service.await {
            Ok(Err(error)) => error,
            Ok(Ok(())) => anyhow::anyhow!("the service stopped before it was ready"),
            Err(panicked) => anyhow::Error::new(panicked).context("the service failed"),
        });
    };
    let mode = match config_conversation {
        Conversation::Speech => {
            "speech mode: Twilio's speech recognition (simulated) hears each turn"
        }
        Conversation::Record => {
            "record mode: each turn is recorded and Twilio's transcription (simulated) read"
        }
        Conversation::Relay => {
            "the live mode: a ConversationRelay session (simulated) over a WebSocket"
        }
    };
    println!(
        "\nHotline is answering at {base_url}, with a simulated Twilio at {}, in {mode}.\n\
         No Twilio account, no AI service: the vetted script answers. Here are the example \
         calls, as the caller hears them.",
        simulator.rest_base_url
    );
    let mut failures = 0;
    let mut examples = scenario::examples();
    if config_conversation == Conversation::Relay {
        examples.extend(scenario::relay_examples());
    }
    for example in examples {
        let report = simulator.call(&example).await;
        if let Err(error) = &report.outcome {
            failures += 1;
            println!("  ✗ the call went wrong: {error}");
        }
        print_timeline(&pool, &report.call_sid).await;
    }
    let (_, token) = ApiTokens::new(pool.clone())
        .create(Role::Auditor, "demo")
        .await
        .context("could not create the dashboard's token")?;
    print_dashboard(&base_url, &token, failures);
    // The service runs until Ctrl-C.
    match service.await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}

async fn print_timeline(pool: &sqlx::PgPool, call_sid: &str) {
    let Ok(sid) = domain::CallSid::parse(call_sid) else {
        return;
    };
    let id = domain::CallId::for_call_sid(&sid);
    match audit::history(pool, &id.to_string()).await {
        Ok(events) => {
            println!("  events of call {id}:");
            for event in events {
                println!(
                    "    {:>2}  {:<22} {}",
                    event.sequence,
                    event.event_type,
                    event.recorded_at.format("%H:%M:%S%.3f")
                );
            }
        }
        Err(error) => println!("  (the events could not be read: {error})"),
    }
}

fn print_dashboard(base_url: &str, token: &SecretString, failures: usize) {
    if failures > 0 {
        println!("\n{failures} example calls went wrong (see above).");
    }
    println!(
        "\nThe dashboard is at {base_url}/ — sign in with this auditor token (shown once):\n\n  {}\n\n\
         The API's documentation is at {base_url}/api/docs. Press Ctrl-C to stop.",
        token.expose_secret()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_keep_the_order_they_were_given_in() {
        let args = [
            "hotline",
            "simulate",
            "--say",
            "hello there",
            "--press=1",
            "--silence",
            "--say=bye",
            "--calls",
            "3",
        ]
        .map(OsString::from);
        assert_eq!(
            steps_from(args),
            [
                Step::Say("hello there".into()),
                Step::Press("1".into()),
                Step::Silence,
                Step::Say("bye".into())
            ]
        );
    }
}
