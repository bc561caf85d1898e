//! Keeping the pollers alive: each poller runs as a task of its own under a supervisor that restarts it
//! when it ends unexpectedly (a panic), after a backoff, and logs the panic's message at ERROR. While a
//! poller is down, [`Health`] says so and the worker's `/healthz` answers 503, so an orchestrator that
//! keeps seeing it restarts the process.

use common::metrics::WorkerMetrics;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// First pause before a restart; it doubles up to [`MAX_PAUSE`] while restarts keep coming.
pub const FIRST_PAUSE: Duration = Duration::from_millis(500);
/// Longest pause before a restart.
pub const MAX_PAUSE: Duration = Duration::from_secs(30);
/// A poller that ran this long before failing starts again from [`FIRST_PAUSE`].
const STEADY: Duration = Duration::from_secs(60);

/// How many pollers should be running and how many are.
#[derive(Debug)]
pub struct Health {
    wanted: usize,
    down: AtomicUsize,
}

impl Health {
    pub fn new(wanted: usize) -> Arc<Self> {
        Arc::new(Health {
            wanted,
            down: AtomicUsize::new(0),
        })
    }

    /// Every poller is running.
    pub fn healthy(&self) -> bool {
        self.down.load(Ordering::Relaxed) == 0
    }

    /// Pollers running, and pollers wanted.
    pub fn pollers(&self) -> (usize, usize) {
        let down = self.down.load(Ordering::Relaxed).min(self.wanted);
        (self.wanted - down, self.wanted)
    }
}

/// Runs the future `start` makes until `stop` fires, restarting it after a panic (or an unexpected
/// return before `stop`). Returns when the future ends after `stop`.
pub async fn supervise<F, Fut>(
    start: F,
    stop: CancellationToken,
    health: Arc<Health>,
    metrics: WorkerMetrics,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut pause = FIRST_PAUSE;
    loop {
        let started = Instant::now();
        let ended = tokio::spawn(start()).await;
        if stop.is_cancelled() {
            return;
        }
        let why = match ended {
            Ok(()) => "it returned before the worker stopped".to_owned(),
            Err(e) if e.is_panic() => format!("it panicked: {}", panic_message(e.into_panic())),
            Err(e) => format!("it was cancelled: {e}"),
        };
        if started.elapsed() >= STEADY {
            pause = FIRST_PAUSE;
        }
        health.down.fetch_add(1, Ordering::Relaxed);
        metrics.poller_restarts.inc();
        tracing::error!(cause = %why, ?pause, "a queue poller died; restarting it");
        let stopped = tokio::select! {
            _ = tokio::time::sleep(pause) => false,
            _ = stop.cancelled() => true,
        };
        health.down.fetch_sub(1, Ordering::Relaxed);
        if stopped {
            return;
        }
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// The text a panic was raised with (`panic!("...")` gives a `&str` or a `String`).
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_owned(),
            Err(_) => "(a panic without a message)".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_poller_is_restarted_after_a_backoff_and_reported_unhealthy_meanwhile() {
        let runs = Arc::new(AtomicU32::new(0));
        let stop = CancellationToken::new();
        let health = Health::new(1);
        let metrics = WorkerMetrics::new();
        let (ran, stopper) = (runs.clone(), stop.clone());
        let supervisor = tokio::spawn(supervise(
            move || {
                let run = ran.fetch_add(1, Ordering::SeqCst);
                let stop = stopper.clone();
                async move {
                    if run < 2 {
                        panic!("poller {run} broke");
                    }
                    stop.cancelled().await;
                }
            },
            stop.clone(),
            health.clone(),
            metrics.clone(),
        ));
        // The first panic: unhealthy during the first pause.
        tokio::time::sleep(FIRST_PAUSE / 2).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(!health.healthy());
        assert_eq!(health.pollers(), (0, 1));
        // Second run panics too; the pause doubles.
        tokio::time::sleep(FIRST_PAUSE).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert!(!health.healthy());
        tokio::time::sleep(FIRST_PAUSE * 2).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert!(health.healthy());
        assert_eq!(metrics.poller_restarts.get(), 2);
        stop.cancel();
        supervisor.await.unwrap();
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "not restarted after the stop"
        );
    }

    #[test]
    fn panic_messages_are_read() {
        assert_eq!(panic_message(Box::new("static")), "static");
        assert_eq!(panic_message(Box::new(String::from("owned"))), "owned");
        assert_eq!(panic_message(Box::new(3)), "(a panic without a message)");
    }
}
