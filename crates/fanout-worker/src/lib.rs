//! The fan-out worker: takes jobs off the queue and delivers them to API Gateway connections through the
//! Management API. This build only waits for shutdown; delivery arrives with the worker's own issue.

/// Runs until `shutdown` resolves.
pub async fn run(shutdown: impl std::future::Future<Output = ()>) {
    tracing::warn!("this fanout-worker build does not deliver yet; jobs stay on the queue");
    shutdown.await;
}
