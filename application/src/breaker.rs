//! A circuit breaker in front of the event store, one per cause of failure. When the store is
//! away, every caller in the next few seconds would otherwise wait out the same deadline before
//! hearing the fallback. While a cause's breaker is open, commands are not attempted: callers
//! hear the fallback at once and their webhooks go to the spool; the first command after the
//! cool-down tries the store again.
//!
//! Causes are told apart because they call for different things. An unreachable or failing
//! store will not be back in a moment; a store too slow for a webhook may be; a pool whose
//! connections are all busy (the service under load, the store itself up) opens nothing: the
//! commands that found it busy are spooled, everyone else goes on. A value the database refuses
//! (bad data) is that request's fault and is no cause here at all.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What made a store operation fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// No connection could be made, or one broke.
    Unreachable,
    /// The store did not answer within the webhook's deadline.
    Slow,
    /// The store answered with an error of its own.
    Failing,
    /// Every pooled connection was busy: this request's bad luck under load.
    Busy,
}

impl Cause {
    pub const ALL: [Self; 4] = [Self::Unreachable, Self::Slow, Self::Failing, Self::Busy];

    /// How long the store is left alone after a failure of this cause.
    pub fn cool_down(self) -> Duration {
        match self {
            Self::Unreachable | Self::Failing => Duration::from_secs(5),
            Self::Slow => Duration::from_secs(2),
            Self::Busy => Duration::ZERO,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Slow => "slow",
            Self::Failing => "failing",
            Self::Busy => "busy",
        }
    }
}

/// The longest cool-down of any cause.
pub const COOL_DOWN: Duration = Duration::from_secs(5);

/// Why the store failed moments ago: the pool had no free connection. The store adapter reports
/// a pool timeout as a connection error holding this, so that it is told from an outage.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("every connection to the event store was busy")]
pub struct StoreBusy;

/// Remembers, per cause, until when the store is left alone.
#[derive(Debug, Default)]
pub struct Breaker {
    open_until: Mutex<Vec<(Cause, Instant)>>,
}

impl Breaker {
    /// The cause whose breaker is open at `now`, if any: commands should skip the store.
    pub fn open_cause(&self, now: Instant) -> Option<Cause> {
        let open = self.open_until.lock().ok()?;
        open.iter()
            .find(|(_, until)| now < *until)
            .map(|(cause, _)| *cause)
    }

    /// Whether commands should skip the store at `now`.
    pub fn is_open(&self, now: Instant) -> bool {
        self.open_cause(now).is_some()
    }

    /// The store failed at `now`, for `cause`.
    pub fn trip(&self, cause: Cause, now: Instant) {
        if cause.cool_down().is_zero() {
            return;
        }
        if let Ok(mut open) = self.open_until.lock() {
            open.retain(|(c, _)| *c != cause);
            open.push((cause, now + cause.cool_down()));
        }
    }

    /// The store answered: every cause is closed.
    pub fn reset(&self) {
        if let Ok(mut open) = self.open_until.lock() {
            open.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_opens_the_breaker_for_its_causes_cool_down_only() {
        let breaker = Breaker::default();
        let t0 = Instant::now();
        assert!(!breaker.is_open(t0));
        breaker.trip(Cause::Unreachable, t0);
        assert_eq!(breaker.open_cause(t0), Some(Cause::Unreachable));
        assert!(breaker.is_open(t0 + Cause::Unreachable.cool_down() - Duration::from_millis(1)));
        assert!(!breaker.is_open(t0 + Cause::Unreachable.cool_down()));

        breaker.reset();
        breaker.trip(Cause::Slow, t0);
        assert_eq!(breaker.open_cause(t0), Some(Cause::Slow));
        assert!(breaker.is_open(t0 + Duration::from_millis(1999)));
        assert!(!breaker.is_open(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn a_busy_pool_opens_nothing() {
        let breaker = Breaker::default();
        let t0 = Instant::now();
        breaker.trip(Cause::Busy, t0);
        assert!(!breaker.is_open(t0));
    }

    #[test]
    fn a_success_closes_every_cause_at_once() {
        let breaker = Breaker::default();
        let t0 = Instant::now();
        breaker.trip(Cause::Slow, t0);
        breaker.trip(Cause::Failing, t0);
        breaker.reset();
        assert!(!breaker.is_open(t0));
    }

    #[test]
    fn no_cause_is_open_longer_than_the_longest_cool_down() {
        assert!(Cause::ALL.iter().all(|c| c.cool_down() <= COOL_DOWN));
    }
}
