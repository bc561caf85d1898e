//! Ordered channels, the delivering side: a drain job ([`common::job::Action::Drain`]) delivers its channel's backlog
//! (see [`common::ordered`]) oldest first, and a message (or a coalescing channel's batch) reaches every
//! member with a final outcome (sent, gone, dead-lettered) before the next one is sent to anyone, so each
//! connection receives the channel's messages in publish order. Long because the lock, the backlog's
//! scripts, the batch and the drain are one protocol, best read together.
//!
//! One drain at a time holds a channel: the lock (`ordl:{channel}`) names the drain job and its receipt's
//! fencing token; a later receipt of the same job takes it over (the earlier one stops at its next write),
//! and a second drain job of the same channel, which only a failure can make, leaves the channel to the
//! holder and is acknowledged. The head of the backlog is removed only by its lock holder and only while
//! it is still the head (one script), so a batch is never skipped and never removed twice.
//!
//! A batch's recipients are retried in place (the lock held, waiting [`crate::retry::requeue_delay`]
//! between attempts) until each has an outcome; what is still undelivered after `FANOUT_MAX_ATTEMPTS` is
//! dead-lettered, as for any job. Its progress set is keyed by the batch's first message, and a
//! coalescing channel records the batch's size before sending it, so a drain received again (after a
//! crash, or the worker's shutdown) sends the same batch to those who have not had it, and nothing twice.
//!
//! A drain hands the channel on after [`SESSION`] (a fresh drain job on the queue, then its own
//! acknowledgement), so many busy channels share a worker's jobs in hand; it ends, clearing the
//! channel's mark in the same script that sees the backlog empty, when there is nothing left.

use crate::dispatch::{Op, Why};
use crate::lease::{Lease, Lost, RUNNING_TTL};
use crate::process::{Ctx, JobError, Source, count_dead, dead_letter, deliver_to, release, since};
use crate::progress::Progress;
use crate::requeue::{self, Settlement};
use bytes::Bytes;
use common::job::{Job, Target};
use common::names::MAX_PAYLOAD_BYTES;
use common::store::Redis;
use redis::Script;
use std::collections::HashSet;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// How long a drain's hold on its channel lasts without being renewed (every batch and every attempt
/// renews it).
pub const LOCK_TTL: Duration = Duration::from_secs(30);

/// How long one drain job delivers before handing the channel on to a fresh one.
pub const SESSION: Duration = Duration::from_millis(500);

/// How many messages a coalescing channel's drain reads from the head at once (a batch also stops at
/// 128 KiB).
pub const READ_AHEAD: usize = 64;

/// Takes or renews the lock: free, already ours, or held by an earlier receipt of the same job.
/// ARGV: holder (`JOB/TOKEN`), job id, token, TTL in ms. 1 when held, 0 when another job holds it.
static LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
  local job, token = string.match(cur, '^(.*)/(%d+)$')
  if job ~= ARGV[2] or tonumber(token) > tonumber(ARGV[3]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
return 1
",
    )
});

/// Removes the delivered batch (`ARGV[3]` entries) if the lock is still ours (-1 otherwise) and the
/// head is still the batch's first entry (-2 otherwise); renews the lock; answers 0 and the next head
/// (up to `ARGV[5]` entries), so the next batch costs no read of its own.
static ADVANCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return {-1, {}} end
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[2] then return {-2, {}} end
redis.call('LTRIM', KEYS[1], tonumber(ARGV[3]), -1)
redis.call('DEL', KEYS[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {0, redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[5]) - 1)}
",
    )
});

/// Ends the drain if the backlog is empty: clears the scheduled mark and the lock (1); else 0.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('LLEN', KEYS[1]) > 0 then return 0 end
redis.call('DEL', KEYS[2])
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
return 1
",
    )
});

/// Lets go of the lock if it is still ours.
static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// One ordered channel's keys, seen by one receipt of its drain job.
struct Backlog<'a> {
    redis: &'a Redis,
    lease: &'a Lease,
    job_id: &'a str,
    list: String,
    scheduled: String,
    lock: String,
    batch: String,
    holder: String,
}

impl<'a> Backlog<'a> {
    fn new(ctx: &'a Ctx, channel: &str, job: &'a Job, lease: &'a Lease) -> Self {
        Backlog {
            redis: &ctx.redis,
            lease,
            job_id: &job.id,
            list: ctx.keys.ordered_backlog(channel),
            scheduled: ctx.keys.ordered_scheduled(channel),
            lock: ctx.keys.ordered_lock(channel),
            batch: ctx.keys.ordered_batch(channel),
            holder: format!("{}/{}", job.id, lease.token),
        }
    }

    /// Takes or renews the channel's lock; false when another drain job holds it.
    async fn lock(&self) -> Result<bool, redis::RedisError> {
        let held: i64 = LOCK
            .key(&self.lock)
            .arg(&self.holder)
            .arg(self.job_id)
            .arg(self.lease.token)
            .arg(LOCK_TTL.as_millis() as u64)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(held == 1)
    }

    /// Renews the lock, stopping the work when a later receipt took it.
    async fn renew(&self) -> Result<(), JobError> {
        if self.lock().await? {
            Ok(())
        } else {
            self.lease.hold.lose(Lost::TakenOver);
            Err(Lost::TakenOver.into())
        }
    }

    /// The entries at the head (up to `max`) and the recorded size of the batch being delivered, if any.
    async fn head(&self, max: usize) -> Result<(Vec<String>, Option<String>), redis::RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("LRANGE")
            .arg(&self.list)
            .arg(0)
            .arg(max as i64 - 1)
            .cmd("GET")
            .arg(&self.batch);
        pipe.query_async(&mut self.redis.clone()).await
    }

    /// Records the size of the batch about to be sent.
    async fn record(&self, batch: &Batch) -> Result<(), redis::RedisError> {
        redis::cmd("SET")
            .arg(&self.batch)
            .arg(format!("{} {}", batch.first_id, batch.count))
            .query_async::<()>(&mut self.redis.clone())
            .await
    }

    /// Removes a delivered batch from the head; answers the next head (up to `max` entries; no batch of
    /// it is recorded yet).
    async fn advance(&self, batch: &Batch, max: usize) -> Result<Vec<String>, JobError> {
        let (status, next): (i64, Vec<String>) = ADVANCE
            .key(&self.list)
            .key(&self.lock)
            .key(&self.batch)
            .arg(&self.holder)
            .arg(&batch.head)
            .arg(batch.count)
            .arg(LOCK_TTL.as_millis() as u64)
            .arg(max)
            .invoke_async(&mut self.redis.clone())
            .await?;
        if status < 0 {
            self.lease.hold.lose(Lost::TakenOver);
            return Err(Lost::TakenOver.into());
        }
        Ok(next)
    }

    /// Ends the drain if nothing is left.
    async fn finish(&self) -> Result<bool, redis::RedisError> {
        let done: i64 = FINISH
            .key(&self.list)
            .key(&self.scheduled)
            .key(&self.lock)
            .arg(&self.holder)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(done == 1)
    }

    async fn unlock(&self) -> Result<(), redis::RedisError> {
        UNLOCK
            .key(&self.lock)
            .arg(&self.holder)
            .invoke_async::<i64>(&mut self.redis.clone())
            .await
            .map(drop)
    }
}

/// The messages sent together: one, or on a coalescing channel those waiting that fit in 128 KiB.
#[derive(Debug)]
struct Batch {
    /// The first entry, as stored: what the head must still be when the batch is removed.
    head: String,
    first_id: String,
    count: usize,
    /// The jobs' enqueue times, for the end-to-end latency.
    enqueued_at_ms: Vec<u64>,
    /// One message's payload, or a JSON array of them.
    payload: Bytes,
}

impl Batch {
    /// The batch at the head of `entries`: `recorded` (a batch already being sent, `FIRST_ID N`) if it
    /// starts there, else as many messages as fit (one unless `coalesce`). Entries that are not post jobs
    /// are taken alone and carry nothing.
    fn of(entries: &[String], recorded: Option<&str>, coalesce: bool) -> Batch {
        let jobs: Vec<Option<Job>> = entries.iter().map(|e| Job::decode(e).ok()).collect();
        let first_id = jobs[0]
            .as_ref()
            .map_or_else(|| entries[0].clone(), |j| j.id.clone());
        let resumed = recorded
            .and_then(|r| r.split_once(' '))
            .filter(|(id, _)| *id == first_id)
            .and_then(|(_, n)| n.parse::<usize>().ok())
            .map(|n| n.clamp(1, entries.len()));
        let mut payloads: Vec<&str> = Vec::new();
        let mut enqueued_at_ms = Vec::new();
        let mut size = 2;
        for job in &jobs {
            let Some((job, payload)) = job.as_ref().and_then(|j| j.payload().map(|p| (j, p)))
            else {
                break;
            };
            let more = payload.get().len() + usize::from(!payloads.is_empty());
            let wanted = match resumed {
                Some(n) => payloads.len() < n,
                None => payloads.is_empty() || (coalesce && size + more <= MAX_PAYLOAD_BYTES),
            };
            if !wanted {
                break;
            }
            size += more;
            payloads.push(payload.get());
            enqueued_at_ms.push(job.enqueued_at_ms);
        }
        let payload = match payloads.as_slice() {
            [] => Bytes::new(),
            [one] => Bytes::copy_from_slice(one.as_bytes()),
            many => Bytes::from(format!("[{}]", many.join(","))),
        };
        Batch {
            head: entries[0].clone(),
            first_id,
            count: payloads.len().max(1),
            enqueued_at_ms,
            payload,
        }
    }
}

/// How a batch's delivery ended.
enum Settled {
    /// Every member has an outcome; those still undelivered after the last attempt are in the letter.
    /// The batch's progress is done with once the batch is removed from the head.
    Done(Option<Box<Settlement>>, Box<Progress>),
    /// The worker is shutting down: the rest is for the next receipt.
    Interrupted,
}

/// Delivers the backlog of the drain job `job`'s channel, then acknowledges the job (or hands it on).
pub(crate) async fn drain(
    ctx: &Ctx,
    from: &Source<'_>,
    job: &Job,
    lease: &Lease,
    coalesce: bool,
) -> Result<(), JobError> {
    let Target::Channel { channel } = &job.target else {
        dead_letter(ctx, from, "a drain job must name a channel", "malformed").await;
        return Ok(());
    };
    let backlog = Backlog::new(ctx, channel, job, lease);
    if !backlog.lock().await? {
        // Another drain job holds the channel and delivers everything in its backlog.
        tracing::debug!(channel, "channel drained by another job");
        return acknowledge(ctx, from, None).await;
    }
    let started = Instant::now();
    let read = if coalesce { READ_AHEAD } else { 1 };
    // The head the last advance answered: a batch's round trips to Redis are the drain's pace when
    // messages wait, so none is spent on reading it again.
    let mut next: Option<Vec<String>> = None;
    loop {
        let (entries, recorded) = match next.take() {
            Some(entries) => (entries, None),
            None => backlog.head(read).await?,
        };
        if entries.is_empty() {
            if backlog.finish().await? {
                return acknowledge(ctx, from, None).await;
            }
            continue;
        }
        let batch = Batch::of(&entries, recorded.as_deref(), coalesce);
        let channel_key = ctx.keys.channel(channel);
        // On a coalescing channel the batch's size is recorded before anyone is sent it, a single
        // message's too (resumed, it must not grow into a batch its first members would be skipped
        // for); the members are read meanwhile.
        let members = if coalesce && recorded.is_none() {
            tokio::try_join!(backlog.record(&batch), members(&ctx.redis, &channel_key))?.1
        } else {
            members(&ctx.redis, &channel_key).await?
        };
        let (letter, progress) = if batch.payload.is_empty() {
            tracing::error!(
                channel,
                "an entry of an ordered channel's backlog is not a post job; skipped"
            );
            (None, None)
        } else {
            match settle(ctx, job, lease, &backlog, &batch, members).await? {
                Settled::Done(letter, progress) => (letter, Some(progress)),
                Settled::Interrupted => {
                    backlog.unlock().await?;
                    return release(ctx, from, lease).await;
                }
            }
        };
        let finished = async {
            if let Some(progress) = &progress {
                progress.finished_batch().await;
            }
        };
        next = Some(tokio::join!(finished, backlog.advance(&batch, read)).1?);
        for at in &batch.enqueued_at_ms {
            ctx.metrics
                .end_to_end
                .with_label_values(&["job"])
                .observe(since(*at));
        }
        if letter.is_some() || started.elapsed() >= SESSION {
            if !backlog.finish().await? {
                backlog.unlock().await?;
                let next = common::ordered::drain_job(channel, coalesce, job);
                from.queue.send_batch(std::slice::from_ref(&next)).await?;
            }
            return acknowledge(ctx, from, letter).await;
        }
    }
}

/// Acknowledges the drain job, or moves it to the dead-letter queue with `letter`'s recipients.
async fn acknowledge(
    ctx: &Ctx,
    from: &Source<'_>,
    letter: Option<Box<Settlement>>,
) -> Result<(), JobError> {
    let settlement = letter.map(|l| *l).unwrap_or_default();
    requeue::finish(from.queue, from.message, &settlement).await?;
    count_dead(ctx, &settlement);
    ctx.metrics
        .jobs_completed
        .with_label_values(&["acked"])
        .inc();
    Ok(())
}

/// Delivers `batch` to `members` (the channel's) until each has an outcome, retrying in place.
async fn settle(
    ctx: &Ctx,
    job: &Job,
    lease: &Lease,
    backlog: &Backlog<'_>,
    batch: &Batch,
    members: Vec<String>,
) -> Result<Settled, JobError> {
    let mut progress = Progress::new(
        ctx.redis.clone(),
        &ctx.keys,
        lease.clone(),
        &batch.first_id,
        None,
        RUNNING_TTL,
        ctx.owed.clone(),
    );
    let op = Op::Post(batch.payload.clone());
    let stop = &lease.hold.stop;
    let mut dead: HashSet<String> = HashSet::new();
    let mut letter: Option<(Job, String, &'static str)> = None;
    let mut wanted = members;
    let mut attempt = 0;
    loop {
        let wanted_now = std::mem::take(&mut wanted)
            .into_iter()
            .filter(|id| !dead.contains(id))
            .collect();
        let ids = progress.remaining(wanted_now).await?;
        if ids.is_empty() {
            break;
        }
        let left = deliver_to(ctx, job, lease, &mut progress, &ids, op.clone(), None).await?;
        if left.is_empty() {
            break;
        }
        if stop.is_cancelled() || left.iter().any(|(_, why)| *why == Why::Shutdown) {
            return Ok(Settled::Interrupted);
        }
        let mut message = Job::post(
            Target::Connections { ids: Vec::new() },
            serde_json::value::RawValue::from_string(
                String::from_utf8_lossy(&batch.payload).into_owned(),
            )
            .expect("a batch is JSON"),
        );
        message.attempt = attempt;
        message.lane = job.lane;
        let settlement = requeue::split(&message, left, ctx.settings.max_attempts, None);
        let again = settlement.retry.map(|r| connection_ids(r.target));
        if let Some((given_up, reason, label)) = settlement.dead {
            let ids = connection_ids(given_up.target.clone());
            dead.extend(ids.iter().cloned());
            letter = Some(match letter.take() {
                None => (given_up, reason, label),
                Some((mut earlier, _, _)) => {
                    if let Target::Connections { ids: all } = &mut earlier.target {
                        all.extend(ids);
                    }
                    (earlier, reason, label)
                }
            });
        }
        let Some(again) = again else { break };
        attempt += 1;
        let wait = crate::retry::requeue_delay(ctx.settings.requeue_delay, attempt);
        tokio::select! {
            _ = stop.cancelled() => return Ok(Settled::Interrupted),
            _ = tokio::time::sleep(wait) => {}
        }
        backlog.renew().await?;
        wanted = again;
    }
    Ok(Settled::Done(
        letter.map(|dead| {
            Box::new(Settlement {
                dead: Some(dead),
                ..Settlement::default()
            })
        }),
        Box::new(progress),
    ))
}

fn connection_ids(target: Target) -> Vec<String> {
    match target {
        Target::Connections { ids } => ids,
        _ => Vec::new(),
    }
}

/// Every member of a channel set, read with `SSCAN`.
async fn members(redis: &Redis, key: &str) -> Result<Vec<String>, redis::RedisError> {
    let mut conn = redis.clone();
    let mut cursor = 0u64;
    let mut all = Vec::new();
    loop {
        let (next, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
            .arg(key)
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        all.extend(ids);
        if next == 0 {
            // SSCAN may return an id twice while the set is rehashed.
            all.sort_unstable();
            all.dedup();
            return Ok(all);
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::job::payload_of;
    use serde_json::json;

    fn entry(id: &str, payload: serde_json::Value) -> String {
        let mut job = Job::post(
            Target::Channel {
                channel: "room".into(),
            },
            payload_of(&payload),
        );
        job.id = id.into();
        job.enqueued_at_ms = 7;
        job.encode()
    }

    #[test]
    fn one_message_at_a_time_unless_coalescing() {
        let entries = [entry("a", json!({"n": 1})), entry("b", json!({"n": 2}))];
        let one = Batch::of(&entries, None, false);
        assert_eq!((one.count, one.first_id.as_str()), (1, "a"));
        assert_eq!(one.payload.as_ref(), br#"{"n":1}"#);
        assert_eq!(one.head, entries[0]);
        assert_eq!(one.enqueued_at_ms, [7]);
        let both = Batch::of(&entries, None, true);
        assert_eq!(both.count, 2);
        assert_eq!(both.payload.as_ref(), br#"[{"n":1},{"n":2}]"#);
        // A lone message on a coalescing channel is sent as itself.
        let alone = Batch::of(&entries[..1], None, true);
        assert_eq!(alone.payload.as_ref(), br#"{"n":1}"#);
    }

    #[test]
    fn a_batch_fits_the_payload_limit() {
        // Two messages `{"m":"…"}` of `len + 8` bytes each make `[a,b]` of `2 × len + 19` bytes: at the
        // limit they fit, one byte over they go in two posts.
        let fits = (MAX_PAYLOAD_BYTES - 19) / 2;
        let at = |len: usize| {
            let m = "x".repeat(len);
            [entry("a", json!({ "m": m })), entry("b", json!({ "m": m }))]
        };
        let both = Batch::of(&at(fits), None, true);
        assert_eq!(both.count, 2);
        assert!(
            both.payload.len() <= MAX_PAYLOAD_BYTES,
            "{}",
            both.payload.len()
        );
        assert!(
            both.payload.len() >= MAX_PAYLOAD_BYTES - 1,
            "{}",
            both.payload.len()
        );
        let over = Batch::of(&at(fits + 1), None, true);
        assert_eq!(over.count, 1);
    }

    #[test]
    fn a_recorded_batch_is_sent_again_as_it_was() {
        let entries = [
            entry("a", json!({"n": 1})),
            entry("b", json!({"n": 2})),
            entry("c", json!({"n": 3})),
        ];
        let again = Batch::of(&entries, Some("a 2"), true);
        assert_eq!(again.payload.as_ref(), br#"[{"n":1},{"n":2}]"#);
        // A record of a batch that has left the head is ignored.
        let fresh = Batch::of(&entries, Some("z 2"), true);
        assert_eq!(fresh.count, 3);
        // A record larger than what is there takes what is there.
        assert_eq!(Batch::of(&entries, Some("a 9"), true).count, 3);
    }

    #[test]
    fn an_entry_that_is_not_a_post_carries_nothing() {
        let entries = ["garbage".to_owned(), entry("b", json!({"n": 2}))];
        let batch = Batch::of(&entries, None, true);
        assert_eq!((batch.count, batch.payload.len()), (1, 0));
        assert_eq!(batch.first_id, "garbage");
    }
}
