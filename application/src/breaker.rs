//! A circuit breaker in front of the event store. When the store fails (down, or too slow for a
//! webhook), every caller in the next few seconds would otherwise wait out the same timeout in
//! silence before hearing the fallback. While the breaker is open, commands are not attempted and
//! callers hear the fallback at once; the first command after the cool-down tries the store again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the store is left alone after a failure.
pub const COOL_DOWN: Duration = Duration::from_secs(5);

/// Remembers when the store last failed.
#[derive(Debug, Default)]
pub struct Breaker {
    open_until: Mutex<Option<Instant>>,
}

impl Breaker {
    /// Whether commands should skip the store at `now`.
    pub fn is_open(&self, now: Instant) -> bool {
        self.open_until
            .lock()
            .map(|until| until.is_some_and(|until| now < until))
            .unwrap_or(false)
    }

    /// The store failed at `now`.
    pub fn trip(&self, now: Instant) {
        if let Ok(mut until) = self.open_until.lock() {
            *until = Some(now + COOL_DOWN);
        }
    }

    /// The store answered.
    pub fn reset(&self) {
        if let Ok(mut until) = self.open_until.lock() {
            *until = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_opens_the_breaker_for_the_cool_down_only() {
        let breaker = Breaker::default();
        let t0 = Instant::now();
        assert!(!breaker.is_open(t0));
        breaker.trip(t0);
        assert!(breaker.is_open(t0));
        assert!(breaker.is_open(t0 + COOL_DOWN - Duration::from_millis(1)));
        assert!(!breaker.is_open(t0 + COOL_DOWN));
    }

    #[test]
    fn a_success_closes_it_at_once() {
        let breaker = Breaker::default();
        let t0 = Instant::now();
        breaker.trip(t0);
        breaker.reset();
        assert!(!breaker.is_open(t0));
    }
}
