//! The deadline of the webhook a store operation runs for. A webhook gives up on the store at its
//! deadline and answers the caller without it; a write that committed afterwards would be a turn
//! the caller never had answered, started behind their back. The store's adapter reads this
//! deadline and does not start a write it could not finish in time.

use std::future::Future;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `operation` with `deadline` as its store deadline.
pub async fn within<F: Future>(deadline: Instant, operation: F) -> F::Output {
    DEADLINE.scope(deadline, operation).await
}

/// The deadline of the webhook being served, if any (the pipeline and maintenance have none).
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|deadline| *deadline).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_deadline_is_seen_inside_its_scope_only() {
        assert_eq!(current(), None);
        let deadline = Instant::now();
        assert_eq!(within(deadline, async { current() }).await, Some(deadline));
        assert_eq!(current(), None);
    }
}
