//! The operations commands of the `hotline` binary: API tokens, a call's history, the
//! verification of the event store's hash chains, the views' replay, and the offline evaluation of
//! the risk screener.

use anyhow::Context;
use application::auth::Role;
use domain::CallId;
use infrastructure::config::Config;
use infrastructure::event_store::audit;
use infrastructure::read_side;
use infrastructure::tokens::ApiTokens;
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::cli::serve::Database;

/// `hotline tokens …`.
#[derive(Debug, clap::Subcommand)]
pub enum TokensCommand {
    /// Create a token and print it. It is shown this once: only its hash is stored.
    Create {
        /// operator, analyst, auditor or supervisor.
        #[arg(long)]
        role: Role,
        /// Who or what the token is for.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List the tokens (never the tokens themselves).
    List,
    /// Revoke a token by its id.
    Revoke { id: Uuid },
}

/// Runs `command` on the configured (or embedded) database, migrated first.
pub async fn tokens(config: Config, command: TokensCommand) -> anyhow::Result<()> {
    with_database(&config, |pool| run_tokens(pool, command)).await
}

/// Runs `work` on the configured (or embedded) database, migrated first, and closes it.
async fn with_database<T, F, Fut>(config: &Config, work: F) -> anyhow::Result<T>
where
    F: FnOnce(sqlx::PgPool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    Database::run(config, async |db| {
        db.migrate().await?;
        work(db.pool.clone()).await
    })
    .await
}

/// A call named by its id or its CallSid.
pub fn call_id(value: &str) -> anyhow::Result<CallId> {
    CallId::from_id_or_sid(value)
        .with_context(|| format!("'{value}' is neither a call id (UUID) nor a CallSid (CA…)"))
}

/// `hotline events CALL_ID`: the call's history, one JSON object per line.
pub async fn events(config: Config, call: String) -> anyhow::Result<()> {
    let id = call_id(&call)?;
    with_database(&config, |pool| async move {
        let history = audit::history(&pool, &id.to_string())
            .await
            .context("could not read the event store")?;
        if history.is_empty() {
            anyhow::bail!("no call {id}");
        }
        for event in history {
            println!("{}", serde_json::to_string(&event)?);
        }
        Ok(())
    })
    .await
}

/// `hotline verify [CALL_ID]`: recomputes the hash chains and names the first broken event of
/// each call whose history does not hold. Fails when any does.
pub async fn verify(config: Config, call: Option<String>) -> anyhow::Result<()> {
    let id = call.as_deref().map(call_id).transpose()?;
    let alerts = config.alerts()?.is_some();
    let found = with_database(&config, |pool| async move {
        let found = audit::verify(&pool, id.map(|id| id.to_string()).as_deref())
            .await
            .context("could not read the event store")?;
        if alerts && !found.intact() {
            let broken: Vec<String> = found
                .broken
                .iter()
                .map(|b| b.aggregate_id.clone())
                .collect();
            infrastructure::alerts::histories_broken(&pool, &broken)
                .await
                .context("could not raise the broken-history alert")?;
        }
        Ok(found)
    })
    .await?;
    for broken in &found.broken {
        println!(
            "BROKEN call {} at event {}: {}",
            broken.aggregate_id, broken.sequence, broken.reason
        );
    }
    if let (Some(id), 0) = (id, found.events) {
        anyhow::bail!("no call {id}");
    }
    if !found.intact() {
        anyhow::bail!(
            "{} of {} calls have a broken history",
            found.broken.len(),
            found.aggregates
        );
    }
    println!(
        "intact: {} calls, {} events",
        found.aggregates, found.events
    );
    Ok(())
}

/// `hotline replay [--swap]`: rebuilds every view from the events, compares, and swaps the
/// rebuilt views in on request. Fails when the views differ and were not swapped.
pub async fn replay(config: Config, swap: bool) -> anyhow::Result<()> {
    let report = with_database(&config, |pool| async move {
        read_side::replay(&pool, swap)
            .await
            .context("the replay failed")
    })
    .await?;
    println!(
        "rebuilt {} calls and {} turns from the event store",
        report.calls, report.turns
    );
    for id in &report.differing_calls {
        println!("DIFFERS call {id}");
    }
    match (report.differing_calls.len(), report.swapped) {
        (0, false) => println!("the live views match the events"),
        (0, true) => println!("no difference; the rebuilt views were swapped in"),
        (n, true) => println!("{n} calls differed; the rebuilt views were swapped in"),
        (n, false) => {
            anyhow::bail!("{n} calls differ from the events; run with --swap to replace them")
        }
    }
    Ok(())
}

async fn run_tokens(pool: sqlx::PgPool, command: TokensCommand) -> anyhow::Result<()> {
    let tokens = ApiTokens::new(pool);
    match command {
        TokensCommand::Create { role, label } => {
            let (id, token) = tokens
                .create(role, &label)
                .await
                .context("could not create the token")?;
            eprintln!("created {role} token {id}; it is shown this once:");
            println!("{}", token.expose_secret());
        }
        TokensCommand::List => {
            for t in tokens.list().await.context("could not list tokens")? {
                let state = t
                    .revoked_at
                    .map_or_else(|| "live".to_owned(), |at| format!("revoked {at}"));
                println!(
                    "{}  {:<10}  {}  {}  {}",
                    t.id, t.role, t.created_at, state, t.label
                );
            }
        }
        TokensCommand::Revoke { id } => {
            if !tokens.revoke(id).await.context("could not revoke")? {
                anyhow::bail!("no live token {id}");
            }
            eprintln!("revoked {id}");
        }
    }
    Ok(())
}

/// `hotline eval …`.
#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// Recall (utterances that must reach a person and do) and specificity (ordinary ones that get
    /// a reply) per category, for the corpus's tuning and held-out parts.
    Safety {
        /// Also list the tuning part's utterances routed the wrong way (never the held-out
        /// part's: it is not tuned on).
        #[arg(long)]
        misses: bool,
    },
}

/// Runs an evaluation; needs no database or service.
pub fn eval(command: EvalCommand) -> anyhow::Result<()> {
    use domain::risk::corpus;

    let EvalCommand::Safety { misses } = command;
    let part = |text: &str| corpus::parse(text).map_err(anyhow::Error::msg);
    let tuning = corpus::evaluate(&part(corpus::TUNING)?);
    let held_out = corpus::evaluate(&part(corpus::HELD_OUT)?);
    println!("screener {}\n", domain::risk::SCREENER_VERSION);
    println!(
        "{}",
        corpus::table("tuning part (the lexicons are tuned on it)", &tuning)
    );
    println!(
        "{}",
        corpus::table("held-out part (never tuned on)", &held_out)
    );
    if misses {
        for case in tuning.missed.iter().chain(&tuning.over_escalated) {
            println!("{:?}\t{}\t{}", case.expect, case.category, case.text);
        }
    }
    let failures = corpus::gate(&tuning, &held_out);
    if failures.is_empty() {
        println!("gate: passed");
        Ok(())
    } else {
        anyhow::bail!("gate failed: {}", failures.join("; "))
    }
}
