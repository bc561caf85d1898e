//! Receiving with back-pressure: pollers take jobs off the queue only while the worker has room for them.
//!
//! Each lane (interactive, bulk) has its own queue and its own pollers. The room is
//! `FANOUT_MAX_JOBS_IN_HAND` places, of which the bulk lane may hold all but the interactive lane's
//! reserved share ([`crate::lanes::Shares`]), so a direct message always finds room while a broadcast's
//! chunks fill the rest. A poller waits for one place, takes as many more as are free up to its batch,
//! asks its queue for exactly that many, and hands each job to its own task with its place; unused
//! places go back at once. The batch starts at one and doubles (to ten, the queue's batch limit) while
//! the queue fills it, so an idle queue's pollers hold one place each while they wait and leave the rest
//! to the other lane. So the worker never holds more jobs than it can work on, and the rest stay on the
//! queue for other workers. While a job runs, a heartbeat extends its visibility every third of the
//! visibility timeout, so a long broadcast is not delivered twice; a job whose lease is lost stops, and a
//! job that meets an outage is held and run again.

use crate::lanes::Shares;
use crate::lease::{Hold, Lost};
use crate::process::{self, Ctx, JobError};
use common::job::Lane;
use common::queue::QueueError;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// The next batch a poller asks for: doubled (to the queue's limit) when the last receive filled the
/// batch, else what it brought (at least one).
fn next_batch(asked: usize, got: usize) -> usize {
    if got >= asked {
        (asked * 2).min(common::queue::SEND_BATCH_MAX)
    } else {
        got.max(1)
    }
}

/// Runs one poller of `lane`'s queue until `stop` fires. Job tasks are spawned on `tracker`.
pub async fn poll(
    ctx: Arc<Ctx>,
    lane: Lane,
    room: Shares,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let wait = ctx.settings.receive_wait;
    let queue = ctx.lanes.get(lane).clone();
    let mut failures = 0u32;
    let mut batch = 1usize;
    loop {
        let first = tokio::select! {
            p = room.acquire(lane) => p,
            _ = stop.cancelled() => return,
        };
        let mut permits = vec![first];
        while permits.len() < batch {
            match room.try_acquire(lane) {
                Some(p) => permits.push(p),
                None => break,
            }
        }
        // A receive in progress when the stop comes is not abandoned (what it took would stay invisible
        // for a visibility timeout): it is awaited, and what it brings is released at once.
        let receive = queue.receive(permits.len(), wait);
        tokio::pin!(receive);
        let received = tokio::select! {
            r = &mut receive => r,
            _ = stop.cancelled() => {
                if let Ok(messages) = receive.await {
                    for m in messages {
                        if let Err(e) = queue.release(&m.receipt).await {
                            tracing::warn!(error = %e, "could not release a job received while stopping; it returns after its visibility timeout");
                        } else {
                            ctx.metrics.jobs_completed.with_label_values(&["released"]).inc();
                        }
                    }
                }
                return;
            }
        };
        match received {
            Ok(messages) => {
                failures = 0;
                batch = next_batch(permits.len(), messages.len());
                for message in messages {
                    let permit = permits.pop().expect("no more messages than permits");
                    let ctx = ctx.clone();
                    ctx.metrics.jobs_in_hand.inc();
                    let in_hand = ctx
                        .metrics
                        .lane_jobs_in_hand
                        .with_label_values(&[lane.label()]);
                    in_hand.inc();
                    tracker.spawn(async move {
                        run_with_heartbeat(&ctx, lane, message).await;
                        ctx.metrics.jobs_in_hand.dec();
                        in_hand.dec();
                        drop(permit);
                    });
                }
            }
            Err(e) => {
                failures += 1;
                let pause = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                tracing::warn!(error = %e, ?pause, "receiving from the queue failed");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

/// Handles a job while a heartbeat keeps it invisible to other workers.
///
/// The heartbeat extends the job's visibility every third of the visibility timeout. If it cannot do so
/// before the job could be received again ([`Hold::deadline_passed`]), or the queue says the receipt is
/// no longer this consumer's, the job's lease is lost and its work stops (it is not dropped mid-call:
/// it winds down through its stop token). A job that fails because Redis or the queue cannot be reached
/// (an outage, not a refusal, which leaves the job to lapse and count towards the dead-letter queue) is
/// held, not left to lapse: it runs again after a backoff while the heartbeat keeps it, so an outage
/// does not raise its receive count towards the dead-letter queue.
async fn run_with_heartbeat(ctx: &Ctx, lane: Lane, message: common::queue::Received) {
    let span = process::span(ctx, lane, &message);
    let queue = ctx.lanes.get(lane);
    let hold = Hold::new(&ctx.hard_stop);
    let visibility = ctx.settings.visibility_timeout;
    let heartbeat = async {
        let mut last_ok = Instant::now();
        let mut every = tokio::time::interval(visibility / 3);
        every.tick().await;
        loop {
            every.tick().await;
            let sent = Instant::now();
            let extended =
                tokio::time::timeout(visibility / 3, queue.extend(&message.receipt, visibility))
                    .await;
            match extended {
                Ok(Ok(())) => last_ok = sent,
                Ok(Err(QueueError::Refused(e))) => {
                    tracing::warn!(error = %e, "the queue says this receipt no longer holds the job");
                    hold.lose(Lost::TakenOver);
                    break;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "could not extend a job's visibility"),
                Err(_) => tracing::warn!("extending a job's visibility timed out"),
            }
            if Hold::deadline_passed(last_ok.elapsed(), visibility) {
                hold.lose(Lost::Expired);
                break;
            }
        }
        // The work winds down through the hold's stop; the heartbeat has nothing more to do.
        std::future::pending::<()>().await
    };
    let work = async {
        let mut attempt = 0u32;
        loop {
            match process::handle(ctx, lane, &message, &hold).await {
                Ok(()) => return,
                Err(JobError::Lost(_)) => return,
                Err(e) if hold.stop.is_cancelled() || !e.is_transient() => {
                    ctx.metrics.redis_errors.inc();
                    tracing::warn!(error = %e, "job left on the queue; it comes back after its visibility timeout");
                    return;
                }
                Err(e) => {
                    ctx.metrics.redis_errors.inc();
                    attempt += 1;
                    let pause = hold_pause(attempt);
                    tracing::warn!(error = %e, ?pause, "job held: Redis or the queue failed; it runs again when they answer");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = hold.stop.cancelled() => return,
                    }
                }
            }
        }
    };
    async {
        tokio::select! {
            _ = work => {}
            _ = heartbeat => {}
        }
        if let Some(lost) = hold.lost() {
            ctx.metrics
                .leases_lost
                .with_label_values(&[lost.label()])
                .inc();
            tracing::warn!(reason = %lost, "job stopped: this worker no longer holds it; the receipt that took it over skips what was delivered");
        }
    }
    .instrument(span)
    .await
}

/// How long a held job waits before running again: 0.5 s doubling to 5 s.
fn hold_pause(attempt: u32) -> Duration {
    Duration::from_millis(500 * 2u64.pow(attempt.min(4))).min(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_batch_grows_while_filled_and_falls_to_what_came() {
        use super::next_batch;
        assert_eq!(next_batch(1, 1), 2);
        assert_eq!(next_batch(8, 8), 10);
        assert_eq!(next_batch(10, 10), 10);
        assert_eq!(next_batch(10, 3), 3);
        assert_eq!(next_batch(4, 0), 1);
    }
}
