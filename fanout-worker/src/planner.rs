//! The planner: expands a channel, subject or everyone job into its connection ids with `SSCAN` (never one
//! giant `SMEMBERS`), and decides how they are delivered.
//!
//! - A target of at most `FANOUT_CHUNK_SIZE` ids is delivered by the job itself ([`Plan::Direct`]).
//! - A larger one becomes chunk jobs (`Target::Connections` with `broadcast: Some(BroadcastRef{id, index})`)
//!   sent with `send_batch` as each batch of ten is formed, the first one at once, so deliveries start
//!   while planning goes on and every worker of the fleet shares the broadcast.
//!
//! Planning is resumable: after each batch it records the scan position (the `all:{n}` bucket and the
//! `SSCAN` cursor) in the broadcast's report, and a batch takes every id scanned so far (the remainder
//! becomes one smaller chunk), so a planner that
//! dies (or is stopped) is picked up by the job's redelivery where it left off. `SSCAN` returns every
//! member present for the whole scan at least once; a member may rarely come twice, and is then delivered
//! twice (delivery is at-least-once anyway).
//!
//! Chunk ids are stable: chunk `n` of broadcast `B` is job `B.n`. A planner that dies after sending chunks
//! but before recording them sends the same chunks again under the same ids when it resumes, so the
//! copies share one progress set ([`crate::progress`]) and one entry in the report: recipients delivered
//! by one copy are skipped by the other, and counted once. Every send and checkpoint is made under the
//! planning job's lease ([`crate::lease`]); a planner whose lease was taken over stops.

use crate::lease::{Lease, Lost};
use crate::report::{Reports, WriteError};
use common::job::{BroadcastRef, Job, Target};
use common::keys::{ALL_BUCKETS, Keyspace};
use common::metrics::WorkerMetrics;
use common::queue::{Queue, QueueError, SEND_BATCH_MAX};
use common::store::Redis;
use std::collections::HashSet;
use tokio_util::sync::CancellationToken;

/// What planning decided.
#[derive(Debug)]
pub enum Plan {
    /// A small target: deliver these ids now, from this job.
    Direct(Vec<String>),
    /// Split into this many chunk jobs (all on the queue).
    Chunked { chunks: u32 },
    /// Stopped by shutdown; the progress so far is recorded.
    Interrupted,
}

/// Why planning failed; the job stays on the queue and is tried again.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    #[error("{0}")]
    Lost(#[from] Lost),
}

impl From<WriteError> for PlanError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Lost(l) => PlanError::Lost(l),
            WriteError::Redis(e) => PlanError::Redis(e),
        }
    }
}

/// The sets a target reads, in order. An everyone target reads every bucket.
pub fn sources(keys: &Keyspace, target: &Target) -> Vec<String> {
    match target {
        Target::Channel { channel } => vec![keys.channel(channel)],
        Target::Subject { subject } => vec![keys.subject(subject)],
        Target::All => (0..ALL_BUCKETS).map(|b| keys.all_bucket(b)).collect(),
        Target::Connections { .. } => Vec::new(),
    }
}

/// A planner's tools.
#[derive(Debug)]
pub struct Planner<'a> {
    pub redis: &'a Redis,
    pub keys: &'a Keyspace,
    pub queue: &'a dyn Queue,
    pub reports: &'a Reports,
    pub metrics: &'a WorkerMetrics,
    pub chunk_size: usize,
}

impl Planner<'_> {
    /// Plans `job` (a channel, subject or everyone job).
    pub async fn plan(
        &self,
        job: &Job,
        lease: &Lease,
        stop: &CancellationToken,
    ) -> Result<Plan, PlanError> {
        let sets = sources(self.keys, &job.target);
        let source = match job.target {
            Target::All => None,
            _ => sets.first().map(String::as_str),
        };
        let progress = self
            .reports
            .start(&job.id, job.target_kind(), job.enqueued_at_ms, source)
            .await?;
        if progress.planned {
            return Ok(Plan::Chunked {
                chunks: progress.chunks,
            });
        }
        // Resuming after chunks were sent: never deliver directly any more.
        let mut chunked = progress.chunks > 0;
        let mut index = progress.chunks;
        let mut bucket = progress.bucket as usize;
        let mut cursor = progress.cursor;
        let mut current: Vec<String> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut pending: Vec<Job> = Vec::new();
        let mut conn = self.redis.clone();
        while bucket < sets.len() {
            if stop.is_cancelled() {
                return Ok(Plan::Interrupted);
            }
            let (next, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
                .arg(&sets[bucket])
                .arg(cursor)
                .arg("COUNT")
                .arg(self.chunk_size)
                .query_async(&mut conn)
                .await?;
            for id in ids {
                if seen.insert(id.clone()) {
                    current.push(id);
                }
            }
            if next == 0 {
                bucket += 1;
                cursor = 0;
            } else {
                cursor = next;
            }
            if current.len() > self.chunk_size || (chunked && current.len() == self.chunk_size) {
                chunked = true;
            }
            if chunked && current.len() >= self.chunk_size {
                while current.len() >= self.chunk_size {
                    let rest = current.split_off(self.chunk_size);
                    let ids = std::mem::replace(&mut current, rest);
                    pending.push(self.chunk(job, ids, index));
                    index += 1;
                }
                // The first batch goes at once, so the first deliveries start early; then by tens. A
                // checkpoint must leave nothing scanned behind, so the remainder goes with the batch.
                if pending.len() >= SEND_BATCH_MAX || index as usize == pending.len() {
                    if !current.is_empty() {
                        pending.push(self.chunk(job, std::mem::take(&mut current), index));
                        index += 1;
                    }
                    seen.clear();
                    self.flush(job, lease, &mut pending, bucket, cursor, false)
                        .await?;
                }
            }
        }
        if !chunked {
            return Ok(Plan::Direct(current));
        }
        if !current.is_empty() {
            pending.push(self.chunk(job, std::mem::take(&mut current), index));
            index += 1;
        }
        self.flush(job, lease, &mut pending, bucket, 0, true)
            .await?;
        Ok(Plan::Chunked { chunks: index })
    }

    fn chunk(&self, job: &Job, ids: Vec<String>, index: u32) -> Job {
        let mut chunk = Job::new(Target::Connections { ids }, job.action.clone());
        chunk.id = format!("{}.{index}", job.id);
        chunk.enqueued_at_ms = job.enqueued_at_ms;
        chunk.broadcast = Some(BroadcastRef {
            id: job.id.clone(),
            index,
        });
        chunk
    }

    /// Sends the pending chunks, then records the position after them, if this planner still holds the
    /// job.
    async fn flush(
        &self,
        job: &Job,
        lease: &Lease,
        pending: &mut Vec<Job>,
        bucket: usize,
        cursor: u64,
        planned: bool,
    ) -> Result<(), PlanError> {
        lease.check(self.redis).await??;
        self.queue.send_batch(pending).await?;
        let added = pending.len() as u32;
        self.metrics.chunks_planned.inc_by(u64::from(added));
        pending.clear();
        self.reports
            .checkpoint(lease, &job.id, added, bucket as u32, cursor, planned)
            .await?;
        Ok(())
    }
}
