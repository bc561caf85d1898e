//! Dispatch: runs one job's recipients through the governor, the worker's in-flight limit, the
//! [`Deliver`] client and the retry schedule, and gives back a final outcome per recipient.
//!
//! Each recipient is a small state machine, polled by the job's task: take an in-flight slot for the
//! job's lane, then a token from the governor through the lanes' gate (interactive calls first; see
//! [`crate::lanes`]) (so a token is spent the moment it is taken), call, give the slot back, then either
//! finish or rest for its own backoff. A connection resting before a retry holds neither a token nor a
//! slot, so a slow client that keeps answering 429 delays nobody else. When retries run out, or the
//! worker must stop, the recipient becomes a leftover with its reason, for [`crate::requeue`]. Only as
//! many recipients as the worker has call slots are in play at once (plus those resting); the others wait
//! in the job's list, so a job of 100,000 costs no more per recipient than one of 100.
//!
//! A 410 means gone, except from a connection that connected less than the connect grace ago: API Gateway
//! answers 410 to a connection whose `$connect` integration has not returned yet (ingest has recorded
//! it, the gateway has not opened it), and a message published meanwhile (its own presence join, a busy
//! channel's traffic) must neither be lost nor get the new connection forgotten. Such a recipient is
//! retried on the same schedule, past its end if need be, until it answers or the grace is over; only then
//! is a 410 final.
//!
//! With a [`Progress`], outcomes are written to the job's progress set as they come, every
//! [`crate::progress::FLUSH_EVERY`] of them; what is left unwritten at the end is handed back in
//! [`Tally::unflushed`] for the caller's last write. The `fanout_deliveries_total` counters are added to at
//! the same pace, and per-call metrics are resolved once per job.

use crate::delivery::{Deliver, Outcome, RetryReason};
use crate::governor::Governor;
use crate::lanes::{Shares, TokenGate};
use crate::progress::{Batch, FLUSH_EVERY, FlushError, Progress};
use crate::recipients::Recipient;
use crate::retry::RetryPolicy;
use bytes::Bytes;
use common::job::Lane;
use common::metrics::WorkerMetrics;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What to do to each recipient.
#[derive(Debug, Clone)]
pub enum Op {
    Post(Bytes),
    Delete,
}

/// Why a recipient was not delivered by this job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Why {
    /// Still answering 429 after its retries.
    Throttled,
    /// Still failing (5xx, timeouts, network) after its retries.
    Failed(RetryReason),
    /// 403: the worker's configuration (endpoint, region, IAM) is wrong for this connection's API.
    Forbidden,
    /// The connection's API id is not configured.
    Unroutable,
    /// 413: this payload can never be delivered.
    PayloadTooLarge,
    /// The worker is shutting down and its grace period ended.
    Shutdown,
}

impl Why {
    /// A bounded label for metrics and the dead-letter reason.
    pub fn label(self) -> &'static str {
        match self {
            Why::Throttled => "throttled",
            Why::Failed(_) => "failed",
            Why::Forbidden => "forbidden",
            Why::Unroutable => "unroutable",
            Why::PayloadTooLarge => "payload_too_large",
            Why::Shutdown => "shutdown",
        }
    }

    /// Trying again later cannot help.
    pub fn is_permanent(self) -> bool {
        matches!(self, Why::PayloadTooLarge)
    }
}

/// The outcomes of one job's recipients.
#[derive(Debug, Default)]
pub struct Tally {
    pub sent: u64,
    pub gone: Vec<Recipient>,
    /// 429 answers seen (every one was retried or left over).
    pub throttled: u64,
    /// Calls made again after a 429, a 5xx, a timeout or a network failure.
    pub retries: u64,
    pub leftovers: Vec<(String, Why)>,
    /// Outcomes not yet written to the job's progress (all of them when there was no [`Progress`]).
    pub unflushed: Batch,
}

enum Final {
    Sent,
    Gone,
    Left(Why),
}

/// The delivery engine shared by every job of a worker.
#[derive(Debug)]
pub struct Dispatcher {
    pub deliver: Arc<dyn Deliver>,
    pub governor: Arc<Governor>,
    /// Calls in flight, with the interactive lane's reserved part.
    pub in_flight: Shares,
    /// Who takes the next governor token: interactive calls before bulk ones.
    pub gate: Arc<TokenGate>,
    pub retry: RetryPolicy,
    /// How long after its `$connect` a connection's 410 is retried rather than taken as gone.
    pub connect_grace: Duration,
    pub metrics: WorkerMetrics,
}

impl Dispatcher {
    /// Delivers `op` to every recipient on the interactive lane; stops early (leftovers with
    /// [`Why::Shutdown`]) once `stop` fires.
    pub async fn run(&self, recipients: Vec<Recipient>, op: Op, stop: &CancellationToken) -> Tally {
        self.run_with(recipients, op, Lane::Interactive, stop, None)
            .await
    }

    /// [`Dispatcher::run`], writing outcomes to `progress` as they come. A write refused because the
    /// job's lease was taken over fires the lease's stop (which `stop` should be).
    pub async fn run_with(
        &self,
        recipients: Vec<Recipient>,
        op: Op,
        lane: Lane,
        stop: &CancellationToken,
        mut progress: Option<&mut Progress>,
    ) -> Tally {
        let mut tally = Tally::default();
        let mut batch = Batch::default();
        // Resolved once per job, not once per call.
        let hot = Hot {
            duration: self
                .metrics
                .delivery_duration
                .with_label_values(&[match op {
                    Op::Post(_) => "post",
                    Op::Delete => "delete",
                }]),
        };
        let sent_total = self.metrics.deliveries.with_label_values(&["sent"]);
        let gone_total = self.metrics.deliveries.with_label_values(&["gone"]);
        // Outcomes (sent, gone) not yet added to the counters: they are added every `FLUSH_EVERY`.
        let mut uncounted = (0u64, 0u64);
        // Only as many recipients as there are calls in flight at once wait for a slot; the rest wait
        // in the list, so a big job costs no more per recipient than a small one.
        let window = self.in_flight.total().max(1);
        let mut waiting = recipients.into_iter();
        let mut active = FuturesUnordered::new();
        let mut resting = FuturesUnordered::new();
        loop {
            while active.len() < window
                && let Some(r) = waiting.next()
            {
                active.push(self.attempt(r, Tries::default(), &op, lane, stop, &hot));
            }
            let step = tokio::select! {
                biased;
                Some((r, tries, rested)) = resting.next(), if !resting.is_empty() => {
                    if rested {
                        active.push(self.attempt(r, tries, &op, lane, stop, &hot));
                        continue;
                    }
                    Step::Done(r, Final::Left(Why::Shutdown), tries)
                }
                Some(step) = active.next(), if !active.is_empty() => step,
                else => break,
            };
            let (r, fin, tries) = match step {
                Step::Rest(r, tries, delay) => {
                    resting.push(rest(r, tries, delay, stop));
                    continue;
                }
                Step::Done(r, fin, tries) => (r, fin, tries),
            };
            tally.throttled += tries.throttled;
            tally.retries += tries.retries;
            batch.throttled += tries.throttled;
            batch.retries += tries.retries;
            match fin {
                Final::Sent => {
                    tally.sent += 1;
                    uncounted.0 += 1;
                    batch.sent.push(r.id);
                }
                Final::Gone => {
                    uncounted.1 += 1;
                    batch.gone.push(r.id.clone());
                    tally.gone.push(r);
                }
                Final::Left(why) => tally.leftovers.push((r.id, why)),
            }
            if uncounted.0 + uncounted.1 >= FLUSH_EVERY as u64 {
                count(&sent_total, &gone_total, std::mem::take(&mut uncounted));
            }
            if let Some(progress) = progress.as_deref_mut()
                && batch.len() >= FLUSH_EVERY
            {
                match progress.flush(std::mem::take(&mut batch)).await {
                    Ok(()) | Err(FlushError::Lost(_)) => {}
                    // Kept by `progress` and written with the next batch.
                    Err(FlushError::Redis(e)) => {
                        tracing::debug!(error = %e, "could not write the job's progress yet")
                    }
                }
            }
        }
        count(&sent_total, &gone_total, uncounted);
        tally.unflushed = batch;
        tally
    }

    /// One call to `r` (after taking a slot and a token): its final outcome, or how long to rest before
    /// the next call. `tries` carries the 429s and retries seen so far, and the retry schedule.
    async fn attempt(
        &self,
        r: Recipient,
        mut tries: Tries,
        op: &Op,
        lane: Lane,
        stop: &CancellationToken,
        hot: &Hot,
    ) -> Step {
        if stop.is_cancelled() {
            return Step::Done(r, Final::Left(Why::Shutdown), tries);
        }
        let (ticket, outcome) = {
            // Waiting for a slot can take long when many recipients are queued: a stop while waiting
            // (shutdown, or a lost lease) must not let the call go out. (`biased`: the slot, usually
            // free, is tried first, and a stop that came meanwhile is checked below.)
            let _slot = tokio::select! {
                biased;
                slot = self.in_flight.acquire(lane) => slot,
                _ = stop.cancelled() => return Step::Done(r, Final::Left(Why::Shutdown), tries),
            };
            // The token is taken once the call can go out at once: a token taken earlier, while a
            // slot was awaited, would be spent even after an account-wide 429 (or a cut elsewhere in
            // the fleet) said the gateway is full.
            // One caller at a time asks the governor, interactive ones first (or from the gate's
            // reserve).
            let ticket = tokio::select! {
                biased;
                ticket = self.gate.ticket(lane, &self.governor) => ticket,
                _ = stop.cancelled() => return Step::Done(r, Final::Left(Why::Shutdown), tries),
            };
            if stop.is_cancelled() {
                return Step::Done(r, Final::Left(Why::Shutdown), tries);
            }
            self.metrics.deliveries_in_flight.inc();
            let started = std::time::Instant::now();
            let outcome = match op {
                Op::Post(payload) => self.deliver.post(&r.endpoint, &r.id, payload.clone()).await,
                Op::Delete => self.deliver.delete(&r.endpoint, &r.id).await,
            };
            hot.duration.observe(started.elapsed().as_secs_f64());
            self.metrics.deliveries_in_flight.dec();
            (ticket, outcome)
        };
        // Counts the answer toward the budget measurement; classifies a 429 and cuts the fleet's
        // rate for an account-wide one.
        self.governor.observe(ticket, outcome, &r.id).await;
        let why = match outcome {
            Outcome::Sent => return Step::Done(r, Final::Sent, tries),
            Outcome::Gone => match r.connecting_for(self.connect_grace, common::job::now_ms()) {
                Some(left) => {
                    let delay = tries
                        .next_delay(&self.retry)
                        .unwrap_or(self.retry.max_delay)
                        .min(left);
                    tries.retries += 1;
                    self.metrics
                        .delivery_retries
                        .with_label_values(&["connecting"])
                        .inc();
                    tracing::debug!(connection_id = %r.id, ?delay, "410 while connecting: retrying");
                    return Step::Rest(r, tries, delay);
                }
                None => return Step::Done(r, Final::Gone, tries),
            },
            Outcome::Forbidden => {
                // Logged once per job, loudly, by `process`.
                tracing::debug!(connection_id = %r.id, endpoint = %r.endpoint.url, "403 ForbiddenException");
                return Step::Done(r, Final::Left(Why::Forbidden), tries);
            }
            Outcome::PayloadTooLarge => {
                return Step::Done(r, Final::Left(Why::PayloadTooLarge), tries);
            }
            Outcome::Throttled => {
                tries.throttled += 1;
                Why::Throttled
            }
            Outcome::Retryable(reason) => Why::Failed(reason),
        };
        let Some(delay) = tries.next_delay(&self.retry) else {
            return Step::Done(r, Final::Left(why), tries);
        };
        tries.retries += 1;
        let label = match why {
            Why::Failed(reason) => reason.label(),
            other => other.label(),
        };
        self.metrics
            .delivery_retries
            .with_label_values(&[label])
            .inc();
        tracing::debug!(connection_id = %r.id, reason = label, ?delay, "retrying");
        Step::Rest(r, tries, delay)
    }
}

/// Waits out a recipient's backoff, holding neither a slot nor a token; `false` when `stop` fired first.
async fn rest(
    r: Recipient,
    tries: Tries,
    delay: Duration,
    stop: &CancellationToken,
) -> (Recipient, Tries, bool) {
    let rested = tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stop.cancelled() => false,
    };
    (r, tries, rested)
}

/// Adds `(sent, gone)` outcomes to the delivery counters.
fn count(sent: &prometheus::IntCounter, gone: &prometheus::IntCounter, (s, g): (u64, u64)) {
    if s > 0 {
        sent.inc_by(s);
    }
    if g > 0 {
        gone.inc_by(g);
    }
}

/// The metrics every call touches, resolved once per job.
struct Hot {
    duration: prometheus::Histogram,
}

/// Where one call left a recipient.
enum Step {
    Done(Recipient, Final, Tries),
    /// Call again after this rest.
    Rest(Recipient, Tries, Duration),
}

/// What one recipient's calls met on the way to its outcome, and its retry schedule (made at its first
/// retry: most recipients never need one).
#[derive(Default)]
struct Tries {
    throttled: u64,
    retries: u64,
    schedule: Option<Box<dyn Iterator<Item = Duration> + Send>>,
}

impl Tries {
    /// The next backoff of the schedule, `None` once the retries are spent.
    fn next_delay(&mut self, policy: &RetryPolicy) -> Option<Duration> {
        self.schedule
            .get_or_insert_with(|| Box::new(policy.schedule()))
            .next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::RetryReason;
    use std::collections::HashSet;

    /// Each reason has its own label among the dead-letter reasons the metrics declare; only a payload
    /// too large can never be delivered.
    #[test]
    fn every_reason_has_its_own_label_and_only_a_payload_too_large_is_permanent() {
        let all = [
            Why::Throttled,
            Why::Failed(RetryReason::Timeout),
            Why::Forbidden,
            Why::Unroutable,
            Why::PayloadTooLarge,
            Why::Shutdown,
        ];
        let labels: HashSet<&str> = all.iter().map(|w| w.label()).collect();
        assert_eq!(labels.len(), all.len(), "{labels:?}");
        for why in all {
            assert!(
                common::metrics::DEAD_LETTER_REASONS.contains(&why.label()),
                "{why:?}: {}",
                why.label()
            );
            assert_eq!(why.is_permanent(), why == Why::PayloadTooLarge, "{why:?}");
        }
    }
}
