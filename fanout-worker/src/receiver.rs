//! Receiving with back-pressure: pollers take jobs off the queue only while the worker has room for them.
//!
//! A semaphore holds `FANOUT_MAX_JOBS_IN_HAND` permits. A poller waits for one, takes as many more as are
//! free (at most ten, the queue's batch limit), asks the queue for exactly that many, and hands each job
//! to its own task with its permit; unused permits go back at once. So the worker never holds more jobs
//! than it can work on, and the rest stay on the queue for other workers. While a job runs, a heartbeat
//! extends its visibility every third of the visibility timeout, so a long broadcast is not delivered
//! twice.

use crate::process::{Ctx, handle};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Runs one poller until `stop` fires. Job tasks are spawned on `tracker`.
pub async fn poll(
    ctx: Arc<Ctx>,
    room: Arc<Semaphore>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let wait = ctx.settings.receive_wait;
    let mut failures = 0u32;
    loop {
        let first = tokio::select! {
            p = room.clone().acquire_owned() => p.expect("the room semaphore is never closed"),
            _ = stop.cancelled() => return,
        };
        let mut permits = vec![first];
        while permits.len() < common::queue::SEND_BATCH_MAX {
            match room.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        // A receive in progress when the stop comes is not abandoned (what it took would stay invisible
        // for a visibility timeout): it is awaited, and what it brings is released at once.
        let receive = ctx.queue.receive(permits.len(), wait);
        tokio::pin!(receive);
        let received = tokio::select! {
            r = &mut receive => r,
            _ = stop.cancelled() => {
                if let Ok(messages) = receive.await {
                    for m in messages {
                        if let Err(e) = ctx.queue.release(&m.receipt).await {
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
                for message in messages {
                    let permit = permits.pop().expect("no more messages than permits");
                    let ctx = ctx.clone();
                    ctx.metrics.jobs_in_hand.inc();
                    tracker.spawn(async move {
                        run_with_heartbeat(&ctx, message).await;
                        ctx.metrics.jobs_in_hand.dec();
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
async fn run_with_heartbeat(ctx: &Ctx, message: common::queue::Received) {
    let visibility = ctx.settings.visibility_timeout;
    let receipt = message.receipt.clone();
    let heartbeat = async {
        let mut every = tokio::time::interval(visibility / 3);
        every.tick().await;
        loop {
            every.tick().await;
            if let Err(e) = ctx.queue.extend(&receipt, visibility).await {
                tracing::warn!(error = %e, "could not extend a job's visibility");
            }
        }
    };
    tokio::select! {
        _ = handle(ctx, message) => {}
        _ = heartbeat => {}
    }
}
