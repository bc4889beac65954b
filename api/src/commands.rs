//! The operations commands of the `hotline` binary that work on the database: API tokens.

use anyhow::Context;
use application::auth::Role;
use infrastructure::config::Config;
use infrastructure::event_store;
use infrastructure::tokens::ApiTokens;
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::startup::Database;

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
    let db = Database::open(&config).await?;
    let result = run_tokens(&db, command).await;
    db.close().await?;
    result
}

async fn run_tokens(db: &Database, command: TokensCommand) -> anyhow::Result<()> {
    event_store::migrate(&db.pool)
        .await
        .context("migrations failed")?;
    let tokens = ApiTokens::new(db.pool.clone());
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
