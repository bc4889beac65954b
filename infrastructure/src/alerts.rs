//! Alerts: an outbound webhook (`HOTLINE_ALERT_URL`) told when something needs a person's
//! attention: a caller at risk who has not reached a person in time, a call where every
//! counselor and the crisis line failed, a pipeline whose work is not being done, a history
//! that no longer verifies. Each alert is a job on the durable queue, so it survives restarts and
//! is retried (with backoff) until the receiver takes it; it is signed as Standard Webhooks
//! (svix) sign theirs, and carries ids and levels, never a number or a word of a caller's.

use std::borrow::Cow;
use std::time::Duration;

use application::dispatch::CommandDispatcher;
use base64::Engine;
use chrono::{DateTime, Utc};
use cqrs_es::EventStore;
use domain::call::{DialResult, DialedLine, EscalationReason};
use domain::{Call, CallEvent, CallId};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use sqlx::{PgConnection, PgPool};

use crate::event_store::subscription::{Consumer, ConsumerError, StoredEvent};
use crate::pipeline::jobs::{self, ClaimedJob, JobFailure, NewJob};

/// Alert jobs' kinds start with this (`alert.caller_waiting`).
pub const KIND_PREFIX: &str = "alert.";

/// How many times an alert is offered to the receiver (with backoff capped at 30 s between
/// tries, about ten minutes in all) before it is given up and logged.
pub const ATTEMPTS: i32 = 24;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A caller at risk has not reached a person within the configured time.
    CallerWaiting,
    /// Every counselor and the crisis line failed on a call.
    AllLinesFailed,
    /// The pipeline's jobs are waiting past their time: nothing is doing them.
    PipelineStalled,
    /// A subscription (a projection, the pipeline's, the alerts') has events waiting behind its
    /// checkpoint for longer than it should.
    SubscriptionStalled,
    /// A call's hash chain does not verify.
    HistoryBroken,
}

impl AlertKind {
    fn name(self) -> &'static str {
        match self {
            Self::CallerWaiting => "caller_waiting",
            Self::AllLinesFailed => "all_lines_failed",
            Self::PipelineStalled => "pipeline_stalled",
            Self::SubscriptionStalled => "subscription_stalled",
            Self::HistoryBroken => "history_broken",
        }
    }

    fn level(self) -> &'static str {
        match self {
            Self::CallerWaiting | Self::AllLinesFailed | Self::HistoryBroken => "critical",
            Self::PipelineStalled | Self::SubscriptionStalled => "warning",
        }
    }

    /// The job kind that delivers it.
    pub fn job_kind(self) -> String {
        format!("{KIND_PREFIX}{}", self.name())
    }
}

/// Why alerts cannot be configured.
#[derive(Debug, thiserror::Error)]
pub enum AlertConfigError {
    #[error("HOTLINE_ALERT_URL must be an absolute http(s) URL")]
    Url,
    #[error("HOTLINE_ALERT_SECRET must be given with HOTLINE_ALERT_URL, as whsec_ and base64")]
    Secret,
}

/// Where alerts go and how they are signed.
#[derive(Clone)]
pub struct AlertConfig {
    url: reqwest::Url,
    key: Vec<u8>,
    /// How long a caller at risk may wait for a person before an alert.
    pub person_wait: Duration,
}

impl std::fmt::Debug for AlertConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertConfig")
            .field("url", &self.url.as_str())
            .field("person_wait", &self.person_wait)
            .finish_non_exhaustive()
    }
}

impl AlertConfig {
    /// `url` and a Standard Webhooks secret (`whsec_` followed by the base64 key).
    pub fn new(url: &str, secret: &str, person_wait: Duration) -> Result<Self, AlertConfigError> {
        let url = reqwest::Url::parse(url).map_err(|_| AlertConfigError::Url)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(AlertConfigError::Url);
        }
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
            .ok()
            .filter(|key| !key.is_empty())
            .ok_or(AlertConfigError::Secret)?;
        Ok(Self {
            url,
            key,
            person_wait,
        })
    }

    /// The `webhook-signature` header for `body` sent as `id` at `timestamp`.
    pub fn signature(&self, id: &str, timestamp: i64, body: &str) -> String {
        sign(&self.key, id, timestamp, body)
    }
}

/// Standard Webhooks' signature: `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{signature}")
}

/// An alert as it is queued and sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The same on every try: the receiver's key for taking it once.
    pub id: uuid::Uuid,
    pub kind: AlertKind,
    pub level: String,
    pub call_id: Option<CallId>,
    pub raised_at: DateTime<Utc>,
    /// Counts and ids only.
    pub detail: serde_json::Value,
}

/// Queues `kind` for `call_id` (or for the service), due at `due`. `window` tells apart
/// alerts of the same kind and call: one is queued per (call, kind, window).
pub async fn raise(
    conn: &mut PgConnection,
    kind: AlertKind,
    call_id: Option<CallId>,
    window: i32,
    due: DateTime<Utc>,
    detail: serde_json::Value,
) -> sqlx::Result<bool> {
    let subject = call_id.map_or_else(|| "service".to_owned(), |id| id.to_string());
    raise_about(conn, kind, call_id, &subject, window, due, detail).await
}

/// As `raise`, about `subject` (a call's id, or a part of the service) as the queue tells
/// alerts apart.
async fn raise_about(
    conn: &mut PgConnection,
    kind: AlertKind,
    call_id: Option<CallId>,
    subject: &str,
    window: i32,
    due: DateTime<Utc>,
    detail: serde_json::Value,
) -> sqlx::Result<bool> {
    let alert = Alert {
        id: uuid::Uuid::new_v4(),
        kind,
        level: kind.level().to_owned(),
        call_id,
        raised_at: Utc::now(),
        detail,
    };
    let job = NewJob {
        call_id: subject.to_owned(),
        turn: window,
        kind: kind.job_kind(),
        payload: serde_json::to_value(&alert).unwrap_or_default(),
        max_attempts: ATTEMPTS,
        run_at: Some(due),
    };
    jobs::enqueue(conn, &job).await
}

/// Raises `history_broken` for each call `verify` found broken (once per call and day).
pub async fn histories_broken(pool: &PgPool, calls: &[String]) -> sqlx::Result<()> {
    let day = i32::try_from(Utc::now().timestamp() / 86_400).unwrap_or(i32::MAX);
    let mut conn = pool.acquire().await?;
    for call in calls {
        let Ok(id) = CallId::parse(call) else {
            continue;
        };
        raise(
            &mut conn,
            AlertKind::HistoryBroken,
            Some(id),
            day,
            Utc::now(),
            json!({}),
        )
        .await?;
    }
    Ok(())
}

/// Reads the calls' events for what calls for an alert: a caller escalated for risk (checked
/// again once the configured wait is over) and a crisis line that failed after every counselor.
#[derive(Debug, Clone, Copy)]
pub struct AlertConsumer {
    pub person_wait: Duration,
}

impl Consumer for AlertConsumer {
    fn name(&self) -> &str {
        "alerts"
    }

    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ConsumerError> {
        if event.event_type != "Escalated" && event.event_type != "DialEnded" {
            return Ok(());
        }
        let Some((id, recorded)) = event.call_event()? else {
            return Ok(());
        };
        match recorded {
            CallEvent::Escalated {
                reason:
                    EscalationReason::RiskAssessed
                    | EscalationReason::DirectQuestion
                    | EscalationReason::EarlierRisk,
                at,
                ..
            } => {
                let wait =
                    chrono::Duration::from_std(self.person_wait).unwrap_or(chrono::Duration::MAX);
                let detail = json!({ "wait_secs": self.person_wait.as_secs() });
                raise(
                    conn,
                    AlertKind::CallerWaiting,
                    Some(id),
                    0,
                    at + wait,
                    detail,
                )
                .await?;
            }
            CallEvent::DialEnded {
                line: DialedLine::CrisisLine,
                result: DialResult::NoAnswer | DialResult::Busy | DialResult::Failed,
                at,
                ..
            } => {
                raise(conn, AlertKind::AllLinesFailed, Some(id), 0, at, json!({})).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Why an alert was not delivered this time.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("the alert job cannot be read")]
    Unreadable,
    #[error("the call's history could not be read: {0}")]
    History(String),
    #[error("the receiver answered HTTP {0}")]
    Refused(u16),
    #[error("the receiver could not be reached")]
    Unreachable,
}

impl JobFailure for AlertError {
    fn stage(&self) -> Option<&'static str> {
        None
    }

    fn class(&self) -> Cow<'_, str> {
        Cow::Borrowed(match self {
            Self::Unreadable => "alert_unreadable",
            Self::History(_) => "event_store",
            Self::Refused(_) => "alert_refused",
            Self::Unreachable => "alert_unreachable",
        })
    }

    fn retryable(&self) -> bool {
        !matches!(self, Self::Unreadable)
    }
}

/// Delivers alert jobs.
pub struct AlertJobs<ES: EventStore<Call>> {
    config: AlertConfig,
    http: reqwest::Client,
    calls: CommandDispatcher<ES>,
}

impl<ES: EventStore<Call>> std::fmt::Debug for AlertJobs<ES> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertJobs")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How long the receiver has to answer.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

impl<ES: EventStore<Call>> AlertJobs<ES> {
    pub fn new(config: AlertConfig, calls: ES) -> Self {
        let http = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            config,
            http,
            calls: CommandDispatcher::new(calls),
        }
    }

    /// Runs one alert job: a caller who reached a person in the meantime needs no alert;
    /// anything else is sent.
    pub async fn run(&self, job: &ClaimedJob) -> Result<(), AlertError> {
        let alert: Alert =
            serde_json::from_value(job.payload.clone()).map_err(|_| AlertError::Unreadable)?;
        if let (AlertKind::CallerWaiting, Some(id)) = (alert.kind, alert.call_id) {
            let call = self
                .calls
                .load(id)
                .await
                .map_err(|e| AlertError::History(e.to_string()))?;
            if call.person_reached_at().is_some() {
                tracing::info!(call_id = %id, "the caller reached a person in time: no alert");
                return Ok(());
            }
        }
        self.send(&alert).await
    }

    async fn send(&self, alert: &Alert) -> Result<(), AlertError> {
        let body = json!({
            "type": format!("hotline.{}", alert.kind.name()),
            "timestamp": alert.raised_at,
            "data": alert,
        })
        .to_string();
        let id = alert.id.to_string();
        let timestamp = Utc::now().timestamp();
        let response = self
            .http
            .post(self.config.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                self.config.signature(&id, timestamp, &body),
            )
            .body(body)
            .send()
            .await
            .map_err(|_| AlertError::Unreachable)?;
        let status = response.status();
        if status.is_success() {
            tracing::info!(alert = %id, kind = alert.kind.name(), "alert delivered");
            Ok(())
        } else {
            Err(AlertError::Refused(status.as_u16()))
        }
    }

    /// An alert that could not be delivered after all its tries.
    pub fn exhausted(job: &ClaimedJob, error: &AlertError) {
        tracing::error!(
            kind = %job.kind,
            error = %error,
            "an alert could not be delivered; it is kept as a failed job"
        );
    }
}

/// How often the service looks for work that is not being done.
pub const WATCH_EVERY: Duration = Duration::from_secs(30);

/// Work this late means nothing is doing it.
pub const STALLED_AFTER: Duration = Duration::from_secs(120);

/// Looks once for work that is not being done, late by more than `stalled_after`: pipeline jobs
/// past their time, and subscriptions with events waiting behind their checkpoint. Raises at most
/// one alert of each (per subscription) in ten minutes.
pub async fn watch_once(pool: &PgPool, stalled_after: Duration) -> sqlx::Result<()> {
    let late = stalled_after.as_secs_f64();
    let window = i32::try_from(Utc::now().timestamp() / 600).unwrap_or(i32::MAX);
    let overdue: i64 = sqlx::query_scalar(
        // Due and not taken, or taken by a worker whose lease ran out long ago and nobody took
        // over: either way, no worker is doing it.
        "SELECT count(*) FROM jobs
          WHERE kind NOT LIKE 'alert.%'
            AND ((status = 'pending' AND run_at < clock_timestamp() - make_interval(secs => $1))
              OR (status = 'running' AND lease_until < clock_timestamp() - make_interval(secs => $1)))",
    )
    .bind(late)
    .fetch_one(pool)
    .await?;
    let mut conn = pool.acquire().await?;
    if overdue > 0 {
        let detail = json!({ "overdue_jobs": overdue });
        raise(
            &mut conn,
            AlertKind::PipelineStalled,
            None,
            window,
            Utc::now(),
            detail,
        )
        .await?;
    }
    // The first event after a checkpoint is found through the index subscriptions read by, so
    // a subscription that keeps up costs a look at the few events it has not read yet.
    let stalled: Vec<String> = sqlx::query_scalar(
        "SELECT c.name FROM subscription_checkpoints c
          WHERE EXISTS (SELECT 1 FROM events e
                         WHERE (e.tx_id, e.global_position) > (c.last_tx_id, c.last_position)
                           AND e.recorded_at < clock_timestamp() - make_interval(secs => $1))
          ORDER BY c.name",
    )
    .bind(late)
    .fetch_all(&mut *conn)
    .await?;
    for name in stalled {
        let subject = format!("subscription:{name}");
        let detail = json!({ "subscription": name });
        raise_about(
            &mut conn,
            AlertKind::SubscriptionStalled,
            None,
            &subject,
            window,
            Utc::now(),
            detail,
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_standard_webhooks() {
        // Standard Webhooks' reference example (standard-webhooks spec, "Signature scheme").
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("base64");
        let signature = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_secret_must_be_base64_and_a_url_http() {
        let wait = Duration::from_secs(60);
        assert!(AlertConfig::new("https://alerts.example.org/in", "whsec_c2VjcmV0", wait).is_ok());
        assert!(AlertConfig::new("ftp://x/", "whsec_c2VjcmV0", wait).is_err());
        assert!(AlertConfig::new("https://x/", "whsec_***", wait).is_err());
    }
}
