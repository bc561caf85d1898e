//! Shutdown in two steps. When the shutdown future resolves (SIGTERM or Ctrl-C): stop receiving, and let
//! the jobs in hand finish within `FANOUT_SHUTDOWN_GRACE_SECS`. When the grace period ends, the hard stop
//! fires: dispatch stops calling and hands its undelivered recipients back to the queue as a job (attempt
//! unchanged, no delay; already delivered recipients are not sent again), and a planner stops and releases
//! its job, which resumes from its last checkpoint. Then the process exits 0.
//!
//! A worker killed with SIGKILL skips all this and still loses nothing: its unacknowledged jobs become
//! visible again after their visibility timeout.

use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Stops receiving, waits for the jobs in hand for `grace`, then fires `hard_stop` and waits for them to
/// hand back what is left.
pub async fn drain(
    stop_receiving: &CancellationToken,
    hard_stop: &CancellationToken,
    tracker: &TaskTracker,
    grace: Duration,
) {
    stop_receiving.cancel();
    tracker.close();
    let in_hand = tracker.len();
    tracing::info!(
        jobs_in_hand = in_hand,
        ?grace,
        "stopped receiving; finishing the jobs in hand"
    );
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            jobs_in_hand = tracker.len(),
            "grace period over; handing the rest back to the queue"
        );
        hard_stop.cancel();
        tracker.wait().await;
    }
    tracing::info!("every job in hand is finished or back on the queue");
}
