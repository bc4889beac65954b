//! Rate limits on what a person or a script can ask of the service: placing test calls (each one
//! rings a real phone and costs money), signing in to the dashboard (guessing tokens), and the
//! API. Each limit is kept per token and per address (GCRA, `governor`), and a request over one
//! is answered 429 with `Retry-After`. Twilio's webhooks are never limited: a caller is never
//! refused.
//!
//! The address is the peer's. Behind a reverse proxy every request comes from the proxy's
//! address, so the per-address limits then apply to everyone together; the per-token ones still
//! tell people apart.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Who a limit counts: a bearer token (by its hash: the token is not kept) or an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Token([u8; 16]),
    Address(IpAddr),
}

/// A limit: so many requests a minute, all of which may come at once.
fn per_minute(n: u32) -> DefaultKeyedRateLimiter<Key> {
    RateLimiter::keyed(Quota::per_minute(
        NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN),
    ))
}

/// A limit: so many requests a second, with bursts of `burst`.
fn per_second(n: u32, burst: u32) -> DefaultKeyedRateLimiter<Key> {
    let quota = Quota::per_second(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
    RateLimiter::keyed(quota)
}

/// Test calls a token may place in a minute (README, "Rate limits").
pub const TEST_CALLS_PER_TOKEN_PER_MINUTE: u32 = 5;
/// Test calls one address may place in a minute, whatever the tokens.
pub const TEST_CALLS_PER_ADDRESS_PER_MINUTE: u32 = 20;
/// Sign-in attempts one address may make in a minute.
pub const SIGN_INS_PER_ADDRESS_PER_MINUTE: u32 = 10;
/// API requests a second per token, and the burst allowed.
pub const API_PER_TOKEN: (u32, u32) = (20, 100);
/// API requests a second per address, and the burst allowed.
pub const API_PER_ADDRESS: (u32, u32) = (50, 200);

/// How many keys a limit holds before the ones at rest are dropped.
const KEYS_KEPT: usize = 10_000;

/// The service's limits, one set per running service.
#[derive(Debug)]
pub struct RateLimits {
    test_calls_per_token: DefaultKeyedRateLimiter<Key>,
    test_calls_per_address: DefaultKeyedRateLimiter<Key>,
    sign_ins_per_address: DefaultKeyedRateLimiter<Key>,
    api_per_token: DefaultKeyedRateLimiter<Key>,
    api_per_address: DefaultKeyedRateLimiter<Key>,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            test_calls_per_token: per_minute(TEST_CALLS_PER_TOKEN_PER_MINUTE),
            test_calls_per_address: per_minute(TEST_CALLS_PER_ADDRESS_PER_MINUTE),
            sign_ins_per_address: per_minute(SIGN_INS_PER_ADDRESS_PER_MINUTE),
            api_per_token: per_second(API_PER_TOKEN.0, API_PER_TOKEN.1),
            api_per_address: per_second(API_PER_ADDRESS.0, API_PER_ADDRESS.1),
        }
    }
}

impl RateLimits {
    /// The limits `request` counts against, each with the key it counts.
    fn for_request<'a>(
        &'a self,
        request: &Request,
    ) -> Vec<(&'a DefaultKeyedRateLimiter<Key>, Key)> {
        let path = request.uri().path();
        let post = request.method() == Method::POST;
        let address = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| Key::Address(info.0.ip()));
        let token = crate::auth::bearer(request.headers()).map(|token| {
            let digest = Sha256::digest(token.expose_secret().as_bytes());
            let mut key = [0_u8; 16];
            key.copy_from_slice(&digest[..16]);
            Key::Token(key)
        });
        let mut limits = Vec::new();
        let mut add = |limiter, key: &Option<Key>| {
            if let Some(key) = key {
                limits.push((limiter, key.clone()));
            }
        };
        if post && path == "/sign-in" {
            add(&self.sign_ins_per_address, &address);
        }
        if path.starts_with("/api/") {
            add(&self.api_per_token, &token);
            add(&self.api_per_address, &address);
            if post && path == "/api/test-call/" {
                add(&self.test_calls_per_token, &token);
                add(&self.test_calls_per_address, &address);
            }
        }
        limits
    }
}

/// The layer: a request over any of its limits is answered 429, with how long to wait.
pub async fn limit(
    State(limits): State<std::sync::Arc<RateLimits>>,
    request: Request,
    next: Next,
) -> Response {
    let clock = DefaultClock::default();
    let mut wait: Option<Duration> = None;
    for (limiter, key) in limits.for_request(&request) {
        if limiter.len() > KEYS_KEPT {
            limiter.retain_recent();
        }
        if let Err(not_until) = limiter.check_key(&key) {
            let this = not_until.wait_time_from(clock.now());
            wait = Some(wait.map_or(this, |w| w.max(this)));
        }
    }
    match wait {
        None => next.run(request).await,
        Some(wait) => {
            tracing::warn!(path = %request.uri().path(), retry_after_ms = wait.as_millis() as u64, "rate limited");
            ApiError::RateLimited {
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
            .into_response()
        }
    }
}
