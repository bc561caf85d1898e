//! Redis Streams backend of [`super::Queue`]: one stream read through a consumer group, a sorted set of
//! delayed jobs and a dead-letter stream, all under one hash tag (see [`crate::keys::Keyspace::queue`]) so
//! that transactions and scripts work on Redis Cluster too.
//!
//! How the queue semantics map onto streams:
//!
//! - A job is a stream entry with one field, `job`. Sending is `XADD` (a batch in one `MULTI`).
//! - Receiving new jobs is `XREADGROUP ... >` in the group [`GROUP`]: the entry goes into the group's
//!   pending entries list (PEL) under this consumer's name, with a delivery count of 1.
//! - **Visibility.** An entry is "in flight" while it is in the PEL. Its PEL idle time (time since it was
//!   last delivered or claimed) plays the part of SQS's visibility clock: once it exceeds
//!   [`QueueOptions::visibility_timeout`], any consumer's next `receive` takes it over with `XAUTOCLAIM`,
//!   which raises its delivery count: that count is [`Received::receive_count`]. `extend` resets the idle
//!   time (`XCLAIM ... JUSTID`, which does not count as a delivery); `release` sets it to the visibility
//!   timeout, so that the next `XAUTOCLAIM` takes the entry at once.
//! - Acknowledging is `XACK` + `XDEL` in one transaction, so the stream only holds entries that are
//!   waiting or in flight: `XLEN` minus the PEL size is the number waiting.
//! - A delayed job is a member of the delayed set scored by its due time in the Redis server's clock
//!   (milliseconds); every `receive` first moves the due ones into the stream with a script.
//! - Dead letters are entries of the dead stream with fields `job`, `reason` and `at` (ms since the epoch).
//!
//! Blocking: `XREADGROUP BLOCK` holds the connection it runs on until it returns, and a
//! [`Redis`] handle is one multiplexed connection shared by every task of the process. So a blocking read
//! needs a connection of its own: [`StreamQueue::connect`] (or [`StreamQueue::with_blocking_reader`])
//! gives the queue a dedicated reader used for nothing else, and each `BLOCK` lasts at most
//! [`BLOCK_SLICE`], well under the reader's response timeout ([`crate::store::COMMAND_TIMEOUT`]). A
//! queue made with [`StreamQueue::new`] alone never blocks: it polls with a non-blocking `XREADGROUP`
//! every [`POLL_INTERVAL`] instead.

use super::{DeadLetter, Job, Queue, QueueError, QueueOptions, Receipt, Received};
use crate::keys::{Keyspace, QueueKeys};
use crate::store::{COMMAND_TIMEOUT, Redis};
use async_trait::async_trait;
use redis::streams::{
    StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamPendingReply, StreamRangeReply,
    StreamReadReply,
};
use redis::{RedisError, Script, Value};
use std::sync::LazyLock;
use std::time::Duration;
use tokio::time::Instant;

/// The consumer group every worker reads through.
pub const GROUP: &str = "workers";

/// Field names of stream entries.
pub const JOB_FIELD: &str = "job";
pub const REASON_FIELD: &str = "reason";
pub const AT_FIELD: &str = "at";

/// Longest single `XREADGROUP BLOCK`. Between slices `receive` moves due delayed jobs and takes over
/// expired ones, so these are late by at most this much while a consumer waits; and a slice must end
/// well within the reader's response timeout.
pub const BLOCK_SLICE: Duration = Duration::from_secs(1);
const _: () = assert!(BLOCK_SLICE.as_millis() + 500 < COMMAND_TIMEOUT.as_millis());

/// How often a queue without a dedicated reader looks for new jobs while it waits.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Most delayed jobs moved into the stream by one `receive`.
const MOVE_BATCH: u32 = 100;

/// Moves due delayed jobs into the stream. Members are `<uuid>:<body>` (the uuid keeps equal bodies
/// apart in the set); the body is what follows the first `:`. Uses the server's clock, like
/// [`SEND_DELAYED`], so clients' clocks do not matter. Returns milliseconds until the next delayed job
/// is due, or -1 if there is none left.
static MOVE_DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local sep = string.find(member, ':', 1, true)
  local body = member
  if sep then body = string.sub(member, sep + 1) end
  redis.call('XADD', KEYS[2], '*', ARGV[2], body)
  redis.call('ZREM', KEYS[1], member)
end
local next = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #next == 0 then return -1 end
return math.max(0, math.ceil(tonumber(next[2]) - now))
",
    )
});

/// Adds a member to the delayed set, due `ARGV[1]` milliseconds from now by the server's clock.
static SEND_DELAYED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
",
    )
});

/// Sets the PEL idle time of an entry to `ARGV[4]` ms, if this consumer (`ARGV[2]`) still holds it.
/// Returns 0 when it does not: the entry was acknowledged, or its visibility timeout passed and another
/// consumer took it over (a plain `XCLAIM` would then steal it back). `JUSTID` keeps the delivery count.
static RECLAIM_IF_HELD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], 'JUSTID')
return 1
",
    )
});

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
    pub async fn new(
        redis: crate::store::Redis,
        name: &str,
        options: QueueOptions,
    ) -> Result<Self, QueueError> {
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

    /// The keys this queue uses.
    pub fn keys(&self) -> &QueueKeys {
        &self.keys
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

    /// Moves due delayed jobs into the stream; returns the time until the next one is due.
    async fn move_due(&self) -> Result<Option<Duration>, QueueError> {
        let mut conn = self.redis.clone();
        let next_ms: i64 = MOVE_DUE
            .key(&self.keys.delayed)
            .key(&self.keys.stream)
            .arg(MOVE_BATCH)
            .arg(JOB_FIELD)
            .invoke_async(&mut conn)
            .await?;
        Ok(u64::try_from(next_ms).ok().map(Duration::from_millis))
    }

    /// Takes over up to `max` entries whose visibility timeout has passed (PEL idle time at least the
    /// visibility timeout), whoever held them: these are redeliveries.
    async fn claim_expired(&self, max: usize) -> Result<Vec<Received>, QueueError> {
        let start = self.cursor().clone();
        let reply: StreamAutoClaimReply = self
            .with_group(|| {
                let mut conn = self.redis.clone();
                let start = start.clone();
                async move {
                    redis::cmd("XAUTOCLAIM")
                        .arg(&self.keys.stream)
                        .arg(GROUP)
                        .arg(&self.consumer)
                        .arg(millis(self.visibility))
                        .arg(start)
                        .arg("COUNT")
                        .arg(max)
                        .query_async(&mut conn)
                        .await
                }
            })
            .await?;
        *self.cursor() = reply.next_stream_id;
        if reply.claimed.is_empty() {
            return Ok(Vec::new());
        }
        // XAUTOCLAIM has raised each entry's delivery count; read it back for receive_count. (Nobody else
        // can take these entries before this runs: their idle time was just reset.)
        let mut pipe = redis::pipe();
        for entry in &reply.claimed {
            pipe.cmd("XPENDING")
                .arg(&self.keys.stream)
                .arg(GROUP)
                .arg(&entry.id)
                .arg(&entry.id)
                .arg(1);
        }
        let mut conn = self.redis.clone();
        let pending: Vec<StreamPendingCountReply> = pipe.query_async(&mut conn).await?;
        Ok(reply
            .claimed
            .iter()
            .zip(pending)
            .map(|(entry, p)| {
                let count = p
                    .ids
                    .first()
                    .map(|p| u32::try_from(p.times_delivered).unwrap_or(u32::MAX))
                    .unwrap_or(2);
                received(entry, count)
            })
            .collect())
    }

    /// Reads up to `max` new entries, waiting up to `wait` for some (0: do not wait).
    async fn read_new(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        let block_ms = millis(wait);
        if block_ms == 0 {
            return self.xreadgroup(&self.redis, max, None).await;
        }
        let Some(reader) = &self.reader else {
            // No connection to block on: poll.
            let found = self.xreadgroup(&self.redis, max, None).await?;
            if found.is_empty() {
                tokio::time::sleep(wait.min(POLL_INTERVAL)).await;
            }
            return Ok(found);
        };
        // Another receive on this queue is blocking on the reader: wait for it, but no longer than asked.
        let Ok(reader) = tokio::time::timeout(wait, reader.lock()).await else {
            return Ok(Vec::new());
        };
        self.xreadgroup(&reader, max, Some(block_ms)).await
    }

    /// `XREADGROUP GROUP workers <consumer> COUNT <max> [BLOCK <ms>] STREAMS <stream> >`.
    async fn xreadgroup(
        &self,
        conn: &Redis,
        max: usize,
        block_ms: Option<u64>,
    ) -> Result<Vec<Received>, QueueError> {
        let reply: Option<StreamReadReply> = self
            .with_group(|| {
                let mut conn = conn.clone();
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP")
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg("COUNT")
                    .arg(max);
                if let Some(ms) = block_ms {
                    cmd.arg("BLOCK").arg(ms);
                }
                cmd.arg("STREAMS").arg(&self.keys.stream).arg(">");
                async move { cmd.query_async(&mut conn).await }
            })
            .await?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            // A first delivery: XREADGROUP with `>` only returns entries never delivered to the group.
            .map(|entry| received(&entry, 1))
            .collect())
    }

    /// Sets a held entry's PEL idle time, or refuses if this consumer no longer holds it.
    async fn reclaim(&self, receipt: &Receipt, idle: Duration) -> Result<(), QueueError> {
        let id = entry_id(receipt)?;
        let mut conn = self.redis.clone();
        let held: i64 = RECLAIM_IF_HELD
            .key(&self.keys.stream)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(id)
            .arg(millis(idle))
            .invoke_async(&mut conn)
            .await?;
        if held == 0 {
            return Err(QueueError::Refused(format!(
                "job {id} is no longer held by consumer {}: it was acknowledged, or its visibility timeout passed and it was delivered again",
                self.consumer
            )));
        }
        Ok(())
    }

    fn cursor(&self) -> std::sync::MutexGuard<'_, String> {
        // A poisoned cursor is still a valid start id.
        self.claim_cursor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let member = format!("{}:{}", uuid::Uuid::new_v4().simple(), job.encode());
        let delay = delay.min(Duration::from_secs(15 * 60));
        let mut conn = self.redis.clone();
        SEND_DELAYED
            .key(&self.keys.delayed)
            // Rounded up: a job must never become visible before its delay.
            .arg(millis(delay) + u64::from(!delay.subsec_nanos().is_multiple_of(1_000_000)))
            .arg(member)
            .invoke_async::<()>(&mut conn)
            .await?;
        Ok(())
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
        let id = entry_id(&message.receipt)?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XADD")
            .arg(&self.keys.dead)
            .arg("*")
            .arg(JOB_FIELD)
            .arg(&message.body)
            .arg(REASON_FIELD)
            .arg(reason)
            .arg(AT_FIELD)
            .arg(crate::job::now_ms())
            .ignore()
            .cmd("XACK")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg(id)
            .ignore()
            .cmd("XDEL")
            .arg(&self.keys.stream)
            .arg(id)
            .ignore();
        let mut conn = self.redis.clone();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    async fn peek_dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.redis.clone();
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&self.keys.dead)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut conn)
            .await?;
        Ok(reply
            .ids
            .iter()
            .map(|entry| DeadLetter {
                body: text_field(entry, JOB_FIELD),
                reason: text_field(entry, REASON_FIELD),
            })
            .collect())
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

/// A delivered entry as a [`Received`]. An entry without a `job` field (not written by this queue) is
/// delivered with an empty body, so that the worker dead-letters it instead of it circulating unseen.
fn received(entry: &StreamId, receive_count: u32) -> Received {
    Received {
        body: text_field(entry, JOB_FIELD),
        receipt: Receipt(entry.id.clone()),
        receive_count,
    }
}

/// A field of an entry as text (lossy if it is not UTF-8; empty if absent).
fn text_field(entry: &StreamId, field: &str) -> String {
    match entry.map.get(field) {
        Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        Some(other) => redis::from_redis_value_ref::<String>(other).unwrap_or_default(),
        None => String::new(),
    }
}

/// The stream entry id in a receipt (`<ms>-<seq>`), refusing anything else before it reaches Redis.
fn entry_id(receipt: &Receipt) -> Result<&str, QueueError> {
    let id = receipt.0.as_str();
    let valid = id.split_once('-').is_some_and(|(ms, seq)| {
        !ms.is_empty()
            && !seq.is_empty()
            && ms.bytes().all(|b| b.is_ascii_digit())
            && seq.bytes().all(|b| b.is_ascii_digit())
    });
    if valid {
        Ok(id)
    } else {
        Err(QueueError::Refused(format!(
            "not a Redis Streams receipt: {id:?}"
        )))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_must_be_entry_ids() {
        assert_eq!(
            entry_id(&Receipt("1700000000000-0".into())).unwrap(),
            "1700000000000-0"
        );
        for bad in ["", "-", "1-", "-1", "1-2-3", "abc", "1-x", "$", ">"] {
            assert!(entry_id(&Receipt(bad.into())).is_err(), "{bad}");
        }
    }
}
