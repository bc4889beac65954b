//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use application::responder::Responder;

use application::operations::TestCalls;
use application::pipeline::Pipeline;
use application::spool::Spool;
use application::CallService;
use infrastructure::event_store::{self, CallStore};
use infrastructure::tokens::ApiTokens;
use infrastructure::twilio::answers::Ring;
pub use infrastructure::twilio::answers::Voice;
use sqlx::PgPool;

use crate::server::{ConnectionStats, Limits};
use crate::twilio::refusal::Refusals;
use twilio_signature::SignatureValidator;

/// Shared state of the HTTP handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub calls: Arc<CallService<CallStore>>,
    pub validator: Arc<SignatureValidator>,
    pub voice: Arc<Voice>,
    pub pool: PgPool,
    /// The pool webhooks write through, whose statements the database cuts off before the
    /// webhook's deadline (see `event_store::webhook_pool`).
    webhooks: PgPool,
    pub tokens: ApiTokens,
    /// What operators can do; `None` when the pipeline is off (no Twilio credentials).
    pub operations: Option<Arc<Operations>>,
    /// Who understands speech turns while Twilio waits, and for how long.
    responder: (Responder, Duration),
    /// Whether turns are answered by the conversation pipeline.
    pipeline: bool,
    /// Where webhooks wait while the store is away.
    pub spool: Option<Arc<dyn Spool>>,
    /// Whether alerts are configured (a broken history raises one).
    pub alerts: bool,
    /// The HTTP server's limits (`server`), and what its connections did.
    pub limits: Limits,
    pub connections: Arc<ConnectionStats>,
    /// Webhook requests refused, by reason.
    pub refusals: Arc<Refusals>,
    /// What people and scripts may ask how often (never Twilio's webhooks).
    pub rate_limits: Arc<crate::rate_limit::RateLimits>,
}

/// The operator API's use cases.
#[derive(Debug)]
pub struct Operations {
    pub pipeline: Arc<Pipeline<CallStore>>,
    pub test_calls: TestCalls,
}

impl AppState {
    /// Turns are answered by the conversation pipeline (running beside this service): the
    /// continue webhook waits for its answer instead of playing the script at once.
    #[must_use]
    pub fn with_pipeline(mut self) -> Self {
        self.pipeline = true;
        self.calls = Arc::new(self.call_service());
        self
    }

    /// Speech turns are understood by `responder` while Twilio waits, for at most `budget`.
    #[must_use]
    pub fn with_responder(mut self, responder: Responder, budget: Duration) -> Self {
        self.responder = (responder, budget);
        self.calls = Arc::new(self.call_service());
        self
    }

    /// Webhooks the store cannot take are kept in `spool`, and replayed when it is back.
    #[must_use]
    pub fn with_spool(mut self, spool: Arc<dyn Spool>) -> Self {
        self.spool = Some(spool);
        self.calls = Arc::new(self.call_service());
        self
    }

    /// The webhooks' use cases, as this state is configured.
    fn call_service(&self) -> CallService<CallStore> {
        let (responder, budget) = self.responder.clone();
        let mut calls = CallService::new(
            event_store::call_store(self.webhooks.clone()),
            self.voice.lines.clone(),
        )
        .caching()
        .with_responder(responder, budget)
        .with_whisper(self.voice.whisper)
        .with_counselors_rung_together(self.voice.ring == Ring::Together);
        if self.pipeline {
            calls = calls.with_pipeline();
        }
        if let Some(spool) = &self.spool {
            calls = calls.with_spool(spool.clone());
        }
        calls
    }

    /// Alerts are configured: a history found broken raises one.
    #[must_use]
    pub fn with_alerts(mut self, alerts: bool) -> Self {
        self.alerts = alerts;
        self
    }

    /// Served under `limits` (the defaults otherwise).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Operators can re-process recordings and place test calls.
    #[must_use]
    pub fn with_operations(mut self, operations: Operations) -> Self {
        self.operations = Some(Arc::new(operations));
        self
    }

    /// State over `pool`, answering as `voice` and accepting webhooks `validator` accepts.
    pub fn new(pool: PgPool, validator: SignatureValidator, voice: Voice) -> Self {
        // Webhooks write through their own pool, whose statements the database cuts off before
        // the webhook's deadline (see `event_store::webhook_pool`).
        let webhooks = event_store::webhook_pool(&pool);
        let mut state = Self {
            calls: Arc::new(CallService::new(
                event_store::call_store(webhooks.clone()),
                voice.lines.clone(),
            )),
            validator: Arc::new(validator),
            voice: Arc::new(voice),
            tokens: ApiTokens::new(pool.clone()),
            pool,
            webhooks,
            operations: None,
            responder: (Responder::new(None), application::SPEECH_BUDGET),
            pipeline: false,
            spool: None,
            alerts: false,
            limits: Limits::default(),
            connections: Arc::default(),
            refusals: Arc::default(),
            rate_limits: Arc::default(),
        };
        state.calls = Arc::new(state.call_service());
        state
    }
}
