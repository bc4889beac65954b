//! Many calls at once: placing them with bounded concurrency, and the figures of a run (calls/s
//! and webhook latency percentiles) that `hotline simulate --calls N` and the benchmark print.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::scenario::Scenario;
use crate::{CallReport, Simulator};

/// Calls and how long they took together.
#[derive(Debug)]
pub struct Run {
    pub calls: Vec<CallReport>,
    pub elapsed: Duration,
}

/// Places `calls` calls of `scenario`, `concurrency` at a time.
pub async fn run_calls(
    simulator: &Simulator,
    scenario: &Scenario,
    calls: usize,
    concurrency: usize,
) -> Run {
    let started = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..calls {
        let simulator = simulator.clone();
        let scenario = scenario.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            simulator.call(&scenario).await
        });
    }
    let mut reports = Vec::with_capacity(calls);
    while let Some(done) = tasks.join_next().await {
        if let Ok(report) = done {
            reports.push(report);
        }
    }
    Run {
        calls: reports,
        elapsed: started.elapsed(),
    }
}

/// The `q` quantile of sorted `values`.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// Calls/s and webhook latency percentiles.
pub fn print_figures(reports: &[CallReport], elapsed: Duration) {
    let mut latencies: Vec<Duration> = reports
        .iter()
        .flat_map(|r| r.latencies.iter().copied())
        .collect();
    latencies.sort();
    let failed = reports.iter().filter(|r| r.outcome.is_err()).count();
    let secs = elapsed.as_secs_f64().max(f64::EPSILON);
    #[allow(clippy::cast_precision_loss)]
    let (calls_per_sec, webhooks_per_sec) =
        (reports.len() as f64 / secs, latencies.len() as f64 / secs);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "calls: {} ({} failed) in {:.2} s: {:.1} calls/s\n\
         webhooks: {} at {:.1}/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        reports.len(),
        failed,
        secs,
        calls_per_sec,
        latencies.len(),
        webhooks_per_sec,
        ms(quantile(&latencies, 0.5)),
        ms(quantile(&latencies, 0.9)),
        ms(quantile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_value_at_or_above_the_share() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&values, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&values, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&values, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }
}
