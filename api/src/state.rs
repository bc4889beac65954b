//! What every handler shares.

use std::sync::Arc;

use application::{CallService, Lines};
use infrastructure::event_store::{self, CallStore};
use infrastructure::twilio::signature::SignatureValidator;
use sqlx::PgPool;

/// Shared state of the HTTP handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub calls: Arc<CallService<CallStore>>,
    pub validator: Arc<SignatureValidator>,
    pub voice: Arc<Voice>,
    pub pool: PgPool,
}

/// How TwiML is written for this deployment.
#[derive(Debug, Clone)]
pub struct Voice {
    /// The URL Twilio calls; every URL in TwiML starts with it.
    pub public_base_url: String,
    /// Where callers are sent.
    pub lines: Lines,
    /// The text-to-speech voice.
    pub voice: String,
    /// The language of what is said.
    pub language: String,
}

impl AppState {
    /// State over `pool`, answering as `voice` and accepting webhooks `validator` accepts.
    pub fn new(pool: PgPool, validator: SignatureValidator, voice: Voice) -> Self {
        let calls = CallService::new(event_store::call_store(pool.clone()), voice.lines.clone());
        Self {
            calls: Arc::new(calls),
            validator: Arc::new(validator),
            voice: Arc::new(voice),
            pool,
        }
    }
}
