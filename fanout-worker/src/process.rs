//! One job, from receipt to acknowledgement: decode it (dead-letter what is not a job of this version),
//! take its lease ([`crate::lease`]), plan it (a channel, subject or everyone target) or resolve the
//! connection ids it has not delivered yet ([`crate::progress`]), dispatch, forget the gone connections,
//! hand on the leftovers, record the outcome in the broadcast's report, and only then acknowledge.
//!
//! The job came off its lane's queue and is acknowledged, released or dead-lettered there; what it hands
//! on (chunks, leftovers) goes on the queue of the job's lane, which chunks and retries keep.
//!
//! A failure to reach Redis or the queue is returned as a [`JobError`]; the receiver holds the job and
//! runs it again (see [`crate::receiver`]), skipping what was delivered. A job whose lease was lost stops
//! without reporting, requeueing or acknowledging anything: the receipt that took it over finishes it.

use crate::config::Settings;
use crate::dispatch::{Dispatcher, Op, Why};
use crate::lease::{Hold, Lease, Lost, RUNNING_TTL};
use crate::planner::{Plan, PlanError, Planner};
use crate::progress::{FlushError, Owed, Progress};
use crate::recipients::{Routes, resolve};
use crate::report::{Reports, WriteError};
use crate::{gone, requeue};
use bytes::Bytes;
use common::job::{Action, Job, JobDecodeError, Lane, Target, now_ms};
use common::keys::Keyspace;
use common::metrics::WorkerMetrics;
use common::queue::{Lanes, QueueError, Received};
use common::store::Redis;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Everything a job needs, shared by the worker's tasks.
#[derive(Debug)]
pub struct Ctx {
    pub settings: Arc<Settings>,
    pub redis: Redis,
    pub keys: Keyspace,
    /// Both lanes' queues.
    pub lanes: Lanes,
    pub routes: Routes,
    pub dispatcher: Dispatcher,
    pub reports: Reports,
    pub metrics: WorkerMetrics,
    /// Outcomes delivered but not written yet (Redis unreachable), see [`crate::progress::Owed`].
    pub owed: Owed,
    /// Fires when the shutdown grace period ends: dispatch and planning stop and hand back what is left.
    pub hard_stop: CancellationToken,
}

/// Why a job was left on the queue.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    #[error("{0}")]
    Lost(#[from] Lost),
}

impl JobError {
    /// An outage (Redis or the queue not answering) rather than a refusal: worth holding the job for.
    pub fn is_transient(&self) -> bool {
        match self {
            // Timeouts, refused and dropped connections are I/O errors too.
            JobError::Redis(e) => e.is_io_error() || e.is_cluster_error(),
            JobError::Queue(e) => matches!(e, QueueError::Unavailable(_)),
            JobError::Lost(_) => false,
        }
    }
}

impl From<PlanError> for JobError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Redis(e) => JobError::Redis(e),
            PlanError::Queue(e) => JobError::Queue(e),
            PlanError::Lost(l) => JobError::Lost(l),
        }
    }
}

impl From<WriteError> for JobError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Lost(l) => JobError::Lost(l),
            WriteError::Redis(e) => JobError::Redis(e),
        }
    }
}

impl From<FlushError> for JobError {
    fn from(e: FlushError) -> Self {
        match e {
            FlushError::Lost(l) => JobError::Lost(l),
            FlushError::Redis(e) => JobError::Redis(e),
        }
    }
}

/// Handles one message received from `lane`'s queue to its end, under `hold` (the receipt's stop and
/// lease state). Call it inside the job's span (see [`span`]).
pub async fn handle(
    ctx: &Ctx,
    lane: Lane,
    message: &Received,
    hold: &Hold,
) -> Result<(), JobError> {
    let from = Source {
        queue: ctx.lanes.get(lane).as_ref(),
        message,
    };
    let job = match message.job() {
        Ok(job) => job,
        Err(e) => {
            ctx.metrics
                .jobs_received
                .with_label_values(&["invalid"])
                .inc();
            let label = match e {
                JobDecodeError::Malformed(_) => "malformed",
                JobDecodeError::Version(_) => "unsupported_version",
            };
            dead_letter(ctx, &from, &e.to_string(), label).await;
            return Ok(());
        }
    };
    if message.receive_count > ctx.settings.max_receives {
        let reason = format!(
            "received {} times without finishing (a worker died on it, or Redis or the queue failed each time)",
            message.receive_count
        );
        dead_letter(ctx, &from, &reason, "too_many_receives").await;
        return Ok(());
    }
    let lease = Lease::acquire(&ctx.redis, &ctx.keys, &job, RUNNING_TTL, hold.clone()).await?;
    if let Action::Drain { coalesce } = job.action {
        return crate::ordered::drain(ctx, &from, &job, &lease, coalesce).await;
    }
    match &job.target {
        Target::Connections { ids } => {
            let report = job.broadcast.as_ref().map(|b| b.id.clone());
            deliver(
                ctx,
                &from,
                &job,
                &lease,
                ids.clone(),
                report.as_deref(),
                false,
            )
            .await
        }
        _ => broadcast(ctx, &from, &job, &lease).await,
    }
}

/// Where a message came from: its lane's queue, which acknowledges, releases or dead-letters it.
pub(crate) struct Source<'a> {
    pub(crate) queue: &'a dyn common::queue::Queue,
    pub(crate) message: &'a Received,
}

/// The tracing span of a message's job (its id, target kind, lane and attempt), counting the receipt
/// and, for a first receipt, how long the job waited since its first enqueue.
pub fn span(ctx: &Ctx, lane: Lane, message: &Received) -> tracing::Span {
    ctx.metrics
        .lane_jobs_received
        .with_label_values(&[lane.label()])
        .inc();
    match Job::decode(&message.body) {
        Ok(job) => {
            ctx.metrics
                .jobs_received
                .with_label_values(&[job.target_kind()])
                .inc();
            if message.receive_count == 1 && job.attempt == 0 {
                ctx.metrics
                    .lane_queue_wait
                    .with_label_values(&[lane.label()])
                    .observe(since(job.enqueued_at_ms));
            }
            tracing::info_span!("job", job_id = %job.id, target = job.target_kind(), lane = lane.label(), attempt = job.attempt, receive = message.receive_count)
        }
        Err(_) => tracing::info_span!("job", lane = lane.label(), receive = message.receive_count),
    }
}

/// Dead-letters a whole message.
pub(crate) async fn dead_letter(ctx: &Ctx, from: &Source<'_>, reason: &str, label: &'static str) {
    match from.queue.dead_letter(from.message, reason).await {
        Ok(()) => {
            ctx.metrics
                .jobs_dead_lettered
                .with_label_values(&[label])
                .inc();
            tracing::error!(reason, "job moved to the dead-letter queue");
        }
        Err(e) => {
            tracing::warn!(error = %e, reason, "could not dead-letter the job; it stays on the queue")
        }
    }
}

/// A channel, subject or everyone job.
async fn broadcast(ctx: &Ctx, from: &Source<'_>, job: &Job, lease: &Lease) -> Result<(), JobError> {
    let planner = Planner {
        redis: &ctx.redis,
        keys: &ctx.keys,
        queue: ctx.lanes.get(job.lane).as_ref(),
        reports: &ctx.reports,
        metrics: &ctx.metrics,
        chunk_size: ctx.settings.chunk_size,
    };
    match planner.plan(job, lease, &lease.hold.stop).await? {
        Plan::Direct(ids) => deliver(ctx, from, job, lease, ids, Some(&job.id), true).await,
        Plan::Chunked { chunks } => {
            tracing::info!(chunks, "broadcast planned");
            from.queue
                .ack(std::slice::from_ref(&from.message.receipt))
                .await?;
            lease.finished(&ctx.redis, &[]).await;
            ctx.metrics
                .jobs_completed
                .with_label_values(&["acked"])
                .inc();
            Ok(())
        }
        Plan::Interrupted => release(ctx, from, lease).await,
    }
}

/// Delivers to `ids`. `report` names the broadcast the job counts towards; `direct` when `job` is the
/// broadcast itself, delivered without chunks.
async fn deliver(
    ctx: &Ctx,
    from: &Source<'_>,
    job: &Job,
    lease: &Lease,
    ids: Vec<String>,
    report: Option<&str>,
    direct: bool,
) -> Result<(), JobError> {
    let mut progress = Progress::new(
        ctx.redis.clone(),
        &ctx.keys,
        lease.clone(),
        &job.id,
        report,
        RUNNING_TTL,
        ctx.owed.clone(),
    );
    let ids = progress.remaining(ids).await?;
    let op = match &job.action {
        Action::Post { payload } => Op::Post(Bytes::copy_from_slice(payload.get().as_bytes())),
        Action::Disconnect => Op::Delete,
        Action::Drain { .. } => unreachable!("drain jobs are handled by `ordered::drain`"),
    };
    let leftovers = deliver_to(ctx, job, lease, &mut progress, &ids, op, report).await?;
    let forbidden = leftovers
        .iter()
        .filter(|(_, w)| matches!(w, Why::Forbidden | Why::Unroutable))
        .count();
    if forbidden > 0 {
        tracing::error!(
            connections = forbidden,
            "the Management API refused calls (403 ForbiddenException) or the API id is not configured: check FANOUT_API_GATEWAYS, the region and execute-api:ManageConnections; connections are kept and the job retried, then dead-lettered"
        );
    }
    let settlement = requeue::split(job, leftovers, ctx.settings.max_attempts, report);
    // Nothing is handed on by a worker that no longer holds the job.
    lease.check(&ctx.redis).await??;
    requeue::send(
        ctx.lanes.get(job.lane).as_ref(),
        &settlement,
        ctx.settings.requeue_delay,
    )
    .await?;
    let handed_on = settlement.handed_on();
    if let Some(id) = report {
        if direct {
            ctx.reports.checkpoint(lease, id, 1, 0, 0, true).await?;
        }
        match ctx
            .reports
            .record(
                lease,
                id,
                &job.id,
                settlement.dead_count() as u64,
                handed_on == 0,
            )
            .await
        {
            Ok(true) => {
                ctx.metrics
                    .end_to_end
                    .with_label_values(&["broadcast"])
                    .observe(since(job.enqueued_at_ms));
                tracing::info!(broadcast_id = id, "broadcast finished");
            }
            Ok(false) => {}
            Err(WriteError::Lost(lost)) => return Err(lost.into()),
            // Deliveries are done and their counts written: acknowledge rather than hold the job for
            // its end of report.
            Err(WriteError::Redis(e)) => {
                tracing::warn!(error = %e, "could not record the delivery report")
            }
        }
    } else if handed_on == 0 {
        ctx.metrics
            .end_to_end
            .with_label_values(&["job"])
            .observe(since(job.enqueued_at_ms));
    }
    requeue::finish(from.queue, from.message, &settlement).await?;
    progress.finished().await;
    count_dead(ctx, &settlement);
    let outcome = if handed_on > 0 { "requeued" } else { "acked" };
    ctx.metrics
        .jobs_completed
        .with_label_values(&[outcome])
        .inc();
    Ok(())
}

/// Gives an interrupted job back to the queue at once for the next receipt, unless its lease was lost (the
/// receipt that took it over finishes it).
pub(crate) async fn release(ctx: &Ctx, from: &Source<'_>, lease: &Lease) -> Result<(), JobError> {
    if let Some(lost) = lease.hold.lost() {
        return Err(lost.into());
    }
    from.queue.release(&from.message.receipt).await?;
    ctx.metrics
        .jobs_completed
        .with_label_values(&["released"])
        .inc();
    Ok(())
}

/// Counts and logs the recipients `settlement` moved to the dead-letter queue, if any.
pub(crate) fn count_dead(ctx: &Ctx, settlement: &requeue::Settlement) {
    if let Some((_, reason, label)) = &settlement.dead {
        ctx.metrics
            .jobs_dead_lettered
            .with_label_values(&[label])
            .inc();
        ctx.metrics
            .deliveries
            .with_label_values(&["failed"])
            .inc_by(settlement.dead_count() as u64);
        tracing::error!(reason = %reason, "undelivered recipients moved to the dead-letter queue");
    }
}

/// Drops ids without a record from the sets that still hold them (counted as `stale` deliveries);
/// `report` names the broadcast whose target says where they were.
/// Delivers `op` to `ids` (those the job's `progress` has no outcome for) under `lease`: resolves their
/// records (an id without one is forgotten and counted gone), runs them through the dispatcher, writes
/// their outcomes and forgets the connections found gone. Answers what is left undelivered, with why
/// (an id whose API is not configured is unroutable); a lost lease is an error.
pub(crate) async fn deliver_to(
    ctx: &Ctx,
    job: &Job,
    lease: &Lease,
    progress: &mut Progress,
    ids: &[String],
    op: Op,
    report: Option<&str>,
) -> Result<Vec<(String, Why)>, JobError> {
    let resolved = resolve(&ctx.redis, &ctx.keys, &ctx.routes, ids).await?;
    forget_stale(ctx, &resolved.stale, report).await;
    let mut tally = ctx
        .dispatcher
        .run_with(
            resolved.recipients,
            op,
            job.lane,
            &lease.hold.stop,
            Some(&mut *progress),
        )
        .await;
    // Stale ids count as gone, once.
    tally.unflushed.gone.extend(resolved.stale);
    progress.flush(std::mem::take(&mut tally.unflushed)).await?;
    if let Some(lost) = lease.hold.lost() {
        return Err(lost.into());
    }
    forget_gone(ctx, &tally.gone).await;
    let mut left = tally.leftovers;
    left.extend(
        resolved
            .unroutable
            .into_iter()
            .map(|id| (id, Why::Unroutable)),
    );
    Ok(left)
}

async fn forget_stale(ctx: &Ctx, stale: &[String], report: Option<&str>) {
    if stale.is_empty() {
        return;
    }
    let count = stale.len() as u64;
    let source = match report {
        Some(id) => ctx.reports.source(id).await.ok().flatten(),
        None => None,
    };
    match gone::drop_stale(&ctx.redis, &ctx.keys, stale, source.as_deref()).await {
        Ok(()) => ctx
            .metrics
            .connections_removed
            .with_label_values(&["stale"])
            .inc_by(count),
        Err(e) => tracing::warn!(error = %e, "could not drop stale connection ids"),
    }
    ctx.metrics
        .deliveries
        .with_label_values(&["stale"])
        .inc_by(count);
}

/// Removes connections that answered 410 from every set (best effort: they answer 410 again next
/// time, and are removed then).
async fn forget_gone(ctx: &Ctx, gone: &[crate::recipients::Recipient]) {
    if gone.is_empty() {
        return;
    }
    match gone::remove(
        &ctx.redis,
        &ctx.keys,
        &ctx.lanes,
        ctx.settings.bulk_threshold,
        gone,
    )
    .await
    {
        Ok(()) => ctx
            .metrics
            .connections_removed
            .with_label_values(&["gone"])
            .inc_by(gone.len() as u64),
        Err(e) => tracing::warn!(error = %e, "could not remove gone connections"),
    }
}

pub(crate) fn since(ms: u64) -> f64 {
    now_ms().saturating_sub(ms) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    //! Which failures hold a job for another try: outages of Redis (any I/O failure, a cluster that is
    //! down or moving slots) or of the queue; not a refusal, nor a lost lease.

    use super::*;
    use redis::{ErrorKind, RedisError, ServerErrorKind};
    use std::io;

    fn redis_error(kind: ErrorKind) -> JobError {
        JobError::Redis(RedisError::from((kind, "test")))
    }

    #[test]
    fn outages_hold_the_job_and_refusals_do_not() {
        for kind in [
            io::ErrorKind::TimedOut,
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::Other,
        ] {
            let e = JobError::Redis(io::Error::from(kind).into());
            assert!(e.is_transient(), "{kind:?}");
        }
        for kind in [
            ServerErrorKind::ClusterDown,
            ServerErrorKind::TryAgain,
            ServerErrorKind::Moved,
        ] {
            assert!(
                redis_error(ErrorKind::Server(kind)).is_transient(),
                "{kind:?}"
            );
        }
        for kind in [
            ErrorKind::Server(ServerErrorKind::ResponseError),
            ErrorKind::UnexpectedReturnType,
        ] {
            assert!(!redis_error(kind).is_transient(), "{kind:?}");
        }
        assert!(JobError::Queue(QueueError::Unavailable("down".into())).is_transient());
        assert!(!JobError::Queue(QueueError::Refused("too large".into())).is_transient());
        assert!(!JobError::Lost(Lost::TakenOver).is_transient());
        assert!(!JobError::Lost(Lost::Expired).is_transient());
    }
}
