//! Redis Streams backend of [`super::Queue`]: one stream read through a consumer group, a sorted set of
//! delayed jobs and a dead-letter stream, all under one hash tag (see [`crate::keys::Keyspace::queue`]) so
//! that transactions and scripts work on Redis Cluster too.
//!
//! How the queue semantics map onto streams, one concern per file:
//!
//! - [`codec`]: a job is a stream entry with one field, `job`; a receipt is the entry id. Sending is
//!   `XADD` (a batch in one `MULTI`).
//! - [`reading`]: receiving new jobs is `XREADGROUP ... >` in the group [`GROUP`], blocking on a
//!   connection of the queue's own (or polling without one).
//! - [`visibility`]: the PEL idle time is the visibility clock; expired entries are taken over with
//!   `XAUTOCLAIM`, `extend` and `release` move the clock of an entry this consumer still holds.
//! - Acknowledging is `XACK` + `XDEL` in one transaction, so the stream only holds entries that are
//!   waiting or in flight: `XLEN` minus the PEL size is the number waiting.
//! - [`delayed`]: a sorted set scored by due time, moved into the stream by every `receive`.
//! - [`dead_letters`]: the dead stream, with fields `job`, `reason` and `at`.

pub mod codec;
pub mod dead_letters;
pub mod delayed;
pub mod reading;
pub mod visibility;

pub use codec::{AT_FIELD, JOB_FIELD, REASON_FIELD};
pub use reading::{BLOCK_SLICE, POLL_INTERVAL};

use super::{DeadLetter, Job, Queue, QueueError, QueueOptions, Receipt, Received, SelectLetter};
use crate::keys::{Keyspace, QueueKeys};
use crate::store::Redis;
use async_trait::async_trait;
use codec::entry_id;
use redis::RedisError;
use redis::streams::StreamPendingReply;
use std::time::Duration;
use tokio::time::Instant;

/// The consumer group every worker reads through.
pub const GROUP: &str = "workers";

/// A Redis Streams queue.
#[derive(Debug)]
pub struct StreamQueue {
    /// The shared connection, for every command that does not block.
    redis: Redis,
    /// A connection of this queue's own for `XREADGROUP BLOCK`. Locked for the duration of one block, so
    /// that concurrent `receive` calls on this queue wait their turn rather than stack blocking commands
    /// on one connection (which would push the later ones past the response timeout).
    reader: Option<tokio::sync::Mutex<Redis>>,
    keys: QueueKeys,
    consumer: String,
    visibility: Duration,
    /// Where the next `XAUTOCLAIM` scan of the PEL starts. Each scan looks at a bounded number of entries
    /// (COUNT × 10), so on a long PEL starting from the beginning every time could miss expired entries
    /// behind many live ones; the cursor walks the whole PEL and wraps around to `0-0`.
    claim_cursor: std::sync::Mutex<String>,
}

impl StreamQueue {
    /// A queue named `name` on `redis` that polls for new jobs (never blocking the shared connection).
    /// Creates the consumer group (and the stream) if missing; if Redis cannot be reached yet, the group is
    /// created by the first `receive` instead.
    pub async fn new(redis: Redis, name: &str, options: QueueOptions) -> Result<Self, QueueError> {
        if options.consumer.is_empty() {
            return Err(QueueError::Refused("the consumer name is empty".into()));
        }
        let queue = StreamQueue {
            redis,
            reader: None,
            keys: Keyspace::new(options.key_prefix).queue(name),
            consumer: options.consumer,
            visibility: options.visibility_timeout,
            claim_cursor: std::sync::Mutex::new("0-0".to_owned()),
        };
        if let Err(e) = queue.ensure_group().await {
            if !is_transient(&e) {
                return Err(QueueError::Refused(format!(
                    "cannot create the consumer group on {}: {e}",
                    queue.keys.stream
                )));
            }
            tracing::warn!(stream = %queue.keys.stream, error = %e, "Redis is not answering yet; the consumer group will be created on first receive");
        }
        Ok(queue)
    }

    /// Gives the queue a connection of its own for blocking reads, so that `receive` waits on the server
    /// (`XREADGROUP BLOCK`) instead of polling. `reader` must not be used by anything else: a blocked
    /// command holds its connection. Open it with another [`Redis::connect`] of the same URL.
    pub fn with_blocking_reader(mut self, reader: Redis) -> Self {
        self.reader = Some(tokio::sync::Mutex::new(reader));
        self
    }

    /// Connects to the Redis URL twice, a shared connection and a dedicated blocking reader, and opens
    /// queue `name` on them. This is what a worker wants.
    pub async fn connect(
        redis_url: &str,
        name: &str,
        options: QueueOptions,
    ) -> Result<Self, QueueError> {
        let connect = |url| async move {
            Redis::connect(url)
                .await
                .map_err(|e| QueueError::Unavailable(e.to_string()))
        };
        let shared = connect(redis_url).await?;
        let reader = connect(redis_url).await?;
        Ok(Self::new(shared, name, options)
            .await?
            .with_blocking_reader(reader))
    }

    /// `XGROUP CREATE <stream> workers 0 MKSTREAM`, tolerating an existing group.
    ///
    /// The group starts at `0`, not `$`: acknowledged entries are deleted, so every entry in the stream
    /// is work nobody has finished, and a group created after jobs were added (by a sender that started
    /// first, or after Redis lost the group) must deliver them rather than skip them.
    async fn ensure_group(&self) -> Result<(), RedisError> {
        let mut conn = self.redis.clone();
        let created: Result<(), RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") || e.to_string().contains("BUSYGROUP") => {
                Ok(())
            }
            other => other,
        }
    }

    /// Runs `op`, and if Redis says the group does not exist (a restarted Redis without persistence, or a
    /// deleted key), creates it and runs `op` once more.
    async fn with_group<T, F, Fut>(&self, op: F) -> Result<T, QueueError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        match op().await {
            Err(e) if is_nogroup(&e) => {
                tracing::warn!(stream = %self.keys.stream, "the consumer group is missing; creating it");
                self.ensure_group().await?;
                Ok(op().await?)
            }
            other => Ok(other?),
        }
    }
}

#[async_trait]
impl Queue for StreamQueue {
    async fn send_batch(&self, jobs: &[Job]) -> Result<(), QueueError> {
        if jobs.is_empty() {
            return Ok(());
        }
        // One transaction: all of the batch is added or none of it.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for job in jobs {
            pipe.cmd("XADD")
                .arg(&self.keys.stream)
                .arg("*")
                .arg(JOB_FIELD)
                .arg(job.encode())
                .ignore();
        }
        let mut conn = self.redis.clone();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    async fn send_delayed(&self, job: &Job, delay: Duration) -> Result<(), QueueError> {
        self.add_delayed(job, delay).await
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        let max = max.clamp(1, 10);
        let deadline = Instant::now() + wait;
        // When to next move due delayed jobs and look for expired ones: at once, then every BLOCK_SLICE
        // (sooner if a delayed job falls due) while waiting for new jobs.
        let mut next_upkeep = Instant::now();
        loop {
            let mut out = Vec::new();
            if Instant::now() >= next_upkeep {
                let next_due = self.move_due().await?;
                out = self.claim_expired(max).await?;
                let pause = next_due.map_or(BLOCK_SLICE, |d| d.min(BLOCK_SLICE));
                next_upkeep = Instant::now() + pause;
            }
            if out.len() < max {
                // Wait for new jobs only when there is nothing to return yet, and not past the next upkeep.
                let wait = if out.is_empty() {
                    deadline
                        .min(next_upkeep)
                        .saturating_duration_since(Instant::now())
                } else {
                    Duration::ZERO
                };
                out.extend(self.read_new(max - out.len(), wait).await?);
            }
            if !out.is_empty() || Instant::now() >= deadline {
                return Ok(out);
            }
        }
    }

    async fn ack(&self, receipts: &[Receipt]) -> Result<(), QueueError> {
        if receipts.is_empty() {
            return Ok(());
        }
        let ids = receipts
            .iter()
            .map(entry_id)
            .collect::<Result<Vec<_>, _>>()?;
        // Acknowledged and deleted together, so the stream never keeps an entry nobody will deliver.
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XACK")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg(&ids)
            .ignore()
            .cmd("XDEL")
            .arg(&self.keys.stream)
            .arg(&ids)
            .ignore();
        let mut conn = self.redis.clone();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Keeps the job hidden for `visibility` from now, but at most for the queue's visibility timeout:
    /// the stream has one visibility clock (the PEL idle time compared with the visibility timeout), and
    /// the most an extension can do is reset it to zero. Heartbeats should extend by at most that.
    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> Result<(), QueueError> {
        self.reclaim(receipt, self.visibility.saturating_sub(visibility))
            .await
    }

    async fn release(&self, receipt: &Receipt) -> Result<(), QueueError> {
        // Idle for a full visibility timeout: expired, so the next XAUTOCLAIM (by any consumer) takes it
        // (at once unless the PEL is so long that the scan cursor is elsewhere; then when it comes round).
        self.reclaim(receipt, self.visibility).await
    }

    async fn dead_letter(&self, message: &Received, reason: &str) -> Result<(), QueueError> {
        self.move_to_dead_letters(message, reason).await
    }

    async fn peek_dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        self.read_dead_letters(max).await
    }

    async fn redrive(&self, select: &SelectLetter, max: usize) -> Result<usize, QueueError> {
        self.redrive_dead_letters(select, max).await
    }

    async fn ping(&self) -> Result<(), QueueError> {
        Ok(self.redis.ping().await?)
    }

    /// Waiting jobs: stream entries not in the PEL (acknowledged entries are deleted, so the stream holds
    /// exactly the waiting and the in-flight ones) plus delayed jobs. Read in one transaction.
    async fn depth(&self) -> Result<u64, QueueError> {
        let (len, pending, delayed): (u64, StreamPendingReply, u64) = self
            .with_group(|| {
                let mut conn = self.redis.clone();
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .cmd("XLEN")
                    .arg(&self.keys.stream)
                    .cmd("XPENDING")
                    .arg(&self.keys.stream)
                    .arg(GROUP)
                    .cmd("ZCARD")
                    .arg(&self.keys.delayed);
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        Ok(len.saturating_sub(pending.count() as u64) + delayed)
    }

    fn backend(&self) -> &'static str {
        "redis-streams"
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Redis says the consumer group (or the stream) does not exist.
fn is_nogroup(e: &RedisError) -> bool {
    e.code() == Some("NOGROUP") || e.to_string().contains("NOGROUP")
}

/// A failure to reach Redis (as opposed to Redis refusing the command).
fn is_transient(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
}
