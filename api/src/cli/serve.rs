//! `hotline serve` and `hotline migrate`: the database (configured, or the embedded one), the
//! migrations, the service built by the composition root (`wiring`), and a clean stop on Ctrl-C
//! or SIGTERM.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use infrastructure::config::{Config, LogFormat};
use infrastructure::embedded_pg::EmbeddedPostgres;
use infrastructure::event_store;
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::state::AppState;
use crate::wiring::{
    development_token, Service, Timings, DEVELOPMENT_TOKEN_FILE, PIPELINE_WORKERS,
};

/// The database the service runs on, and the private server behind it if there is one.
#[derive(Debug)]
pub struct Database {
    pub pool: PgPool,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects to `DATABASE_URL`, or starts the embedded PostgreSQL when there is none. Every
    /// `open` must end in `close`, which stops the embedded server (were it only dropped, its
    /// lifeline would stop it once this process ends).
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let (options, embedded) = match &config.database_url {
            Some(url) => (
                PgConnectOptions::from_str(url)
                    .context("DATABASE_URL is not a valid PostgreSQL URL")?,
                None,
            ),
            None => {
                tracing::info!(data_dir = %config.data_dir.display(), "no DATABASE_URL: starting the embedded PostgreSQL");
                let pg = EmbeddedPostgres::start(&config.data_dir)
                    .await
                    .context("could not start the embedded PostgreSQL")?;
                (pg.connect_options(), Some(pg))
            }
        };
        let pool = event_store::pool(options, config.db_max_connections);
        Ok(Self { pool, embedded })
    }

    /// Fails, naming the cause (for example "connection refused at 127.0.0.1:5432"), when the
    /// database cannot be reached.
    pub async fn reachable(&self) -> anyhow::Result<()> {
        reachable(&self.pool).await
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        migrate_pool(&self.pool).await
    }

    /// Closes the pool and stops the embedded server if no other process uses it.
    pub async fn close(self) -> anyhow::Result<()> {
        self.pool.close().await;
        if let Some(pg) = self.embedded {
            pg.stop()
                .await
                .context("could not stop the embedded PostgreSQL")?;
        }
        Ok(())
    }

    /// Runs `work` on the database, then closes it whatever `work` returned.
    pub async fn run<T>(
        config: &Config,
        work: impl AsyncFnOnce(&Self) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let db = Self::open(config).await?;
        let result = work(&db).await;
        let closed = db.close().await;
        let value = result?;
        closed?;
        Ok(value)
    }
}

async fn reachable(pool: &PgPool) -> anyhow::Result<()> {
    event_store::reachable(pool)
        .await
        .context("the database is unreachable")
}

/// Migrates, first making sure the database answers, so that a database that does not is named
/// rather than reported as a pool timeout.
async fn migrate_pool(pool: &PgPool) -> anyhow::Result<()> {
    reachable(pool).await?;
    event_store::migrate(pool)
        .await
        .context("migrations failed")
}

/// `hotline migrate`: applies pending migrations and exits.
pub async fn migrate(config: Config) -> anyhow::Result<()> {
    Database::run(&config, async |db| db.migrate().await).await?;
    println!("the database is up to date");
    Ok(())
}

/// `hotline serve`: serves until Ctrl-C or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    serve_until(config, shutdown_signal(), None).await
}

/// Serves until `shutdown` completes; `ready` gets the service's pool once it is listening.
pub async fn serve_until(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ready: Option<tokio::sync::oneshot::Sender<PgPool>>,
) -> anyhow::Result<()> {
    serve_with(config, shutdown, ready, axum::Router::new()).await
}

/// As `serve_until`, with `extra` routes served through the same layers (the benchmark's
/// baselines).
pub async fn serve_with(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ready: Option<tokio::sync::oneshot::Sender<PgPool>>,
    extra: axum::Router<AppState>,
) -> anyhow::Result<()> {
    // The address first: if it is taken, nothing has been started that would need stopping.
    let listener = listen(config.addr).await?;
    Database::run(&config, async |db| {
        serve_on(&config, db, listener, shutdown, ready, extra).await
    })
    .await
}

/// Binds the service's address, naming it and the variable that sets it if that fails.
async fn listen(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|error| {
        let cause = if error.kind() == std::io::ErrorKind::AddrInUse {
            format!("port {} is already in use on {}", addr.port(), addr.ip())
        } else {
            error.to_string()
        };
        anyhow::anyhow!(
            "could not listen on {addr}: {cause} (choose another address with HOTLINE_ADDR)"
        )
    })
}

async fn serve_on(
    config: &Config,
    db: &Database,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ready: Option<tokio::sync::oneshot::Sender<PgPool>>,
    extra: axum::Router<AppState>,
) -> anyhow::Result<()> {
    // Callers must be answered even while the database is down, so a failed migration does not
    // stop the service: it is retried in the background while webhooks answer the fallback.
    if let Err(error) = db.migrate().await {
        tracing::error!(error = format!("{error:#}"), "retrying the migrations in the background; until they apply, callers hear the fallback");
        tokio::spawn(retry_migrations(db.pool.clone()));
    }
    if !config.has_twilio_credentials() {
        announce_development_mode(config, &development_token(&config.data_dir)?);
    }
    let service = Service::build(config, db.pool.clone(), &Timings::default())?;
    if service.has_pipeline() {
        tracing::info!(
            workers = PIPELINE_WORKERS,
            twilio_transcription = service.on_transcription(),
            "the conversation pipeline is on"
        );
    } else {
        tracing::warn!(
            "the conversation pipeline is off (it needs Twilio credentials): \
             the vetted script answers every turn"
        );
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let background = service.spawn_background(&stopped);
    let addr = listener
        .local_addr()
        .context("the listener has no address")?;
    tracing::info!(%addr, public_base_url = %config.public_base_url(), "Hotline is answering calls");
    if let Some(ready) = ready {
        let _ = ready.send(db.pool.clone());
    }
    service.serve(listener, extra, shutdown).await;
    tracing::info!("stopping");
    let _ = stop.send(true);
    for task in background {
        let _ = task.await;
    }
    Ok(())
}

async fn retry_migrations(pool: PgPool) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        match migrate_pool(&pool).await {
            Ok(()) => {
                tracing::info!("migrations applied");
                return;
            }
            Err(error) => tracing::warn!(error = format!("{error:#}"), "migrations still failing"),
        }
    }
}

/// Says that no real call can reach the service. On a terminal (text logs) the banner shows the
/// development token to sign requests with; JSON logs are for machines, and never carry it.
fn announce_development_mode(config: &Config, token: &str) {
    if config.log_format == LogFormat::Json {
        tracing::warn!(
            token_file = %config.data_dir.join(DEVELOPMENT_TOKEN_FILE).display(),
            public_base_url = %config.public_base_url(),
            "development mode: no Twilio credentials are configured, so no real call can reach \
             this service; webhooks are checked against the development auth token"
        );
        return;
    }
    eprintln!(
        "\n  ┌───────────────────────────────────────────────────────────────────────────┐\n  \
             │ DEVELOPMENT MODE: no TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN configured.   │\n  \
             │ No real call can reach this service. Webhooks are checked against the     │\n  \
             │ development auth token below; sign test requests with it (see README.md). │\n  \
             └───────────────────────────────────────────────────────────────────────────┘\n  \
             development auth token: {token}\n  public base URL: {}\n",
        config.public_base_url()
    );
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
