//! Per-job delivery progress: which of a job's recipients already have a final outcome, so that a job
//! received again (its worker was killed, or its lease taken over after a pause) skips them. Long because
//! its tests (half the file, against a real redis-server) pin every outage and takeover path.
//!
//! While a job dispatches, every [`FLUSH_EVERY`] outcomes (and at the end) the ids answered 200 or 410 are
//! added to the job's progress set ([`common::keys::Keyspace::job_progress`]) by one script that also
//! checks the job's lease ([`crate::lease`]) and adds the counts to the broadcast's report: `sent` counts a
//! recipient only the first time it enters the set, a second 200 for it is a `duplicates`, and `gone`,
//! `throttled` and `retries` are added as they happen. So the report is exact across re-takes and
//! re-plans (chunk ids are stable, see [`crate::planner`]), and a re-take repeats at most the outcomes
//! that were not flushed yet: after a kill, at most [`FLUSH_EVERY`] plus the calls in flight per job.
//!
//! Outcomes whose write fails (Redis paused or unreachable) are not dropped with the receipt that made
//! them: they wait in the worker's [`Owed`] ledger. A receipt of the same job (held and run again after the
//! outage, or received again after its lease lapsed) writes them before it reads what is left to do, and
//! [`Owed::write_all`] (run in the background by the worker) writes those of jobs that another worker took
//! over. So a pause of Redis, however long, makes no duplicates on a worker that survives it.

use crate::lease::{Lease, Lost};
use common::keys::Keyspace;
use common::store::Redis;
use redis::Script;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Outcomes gathered before they are written to the progress set.
pub const FLUSH_EVERY: usize = 50;

/// `KEYS`: lease, progress set, report (the progress set again when the job counts towards none).
/// `ARGV`: token, ttl ms, sent ids count, gone ids count, throttled, retries, has report (1/0), the write's
/// id, then the sent ids and the gone ids. Returns -1 when the token is stale, else the recipients newly
/// counted.
///
/// Unlike the other fenced writes, a stale holder's outcomes are still recorded: they are facts (those
/// connections did receive the payload), and recording them lets the holder that took over skip them, or
/// count its own second post as a duplicate. Only the answer tells the stale holder to stop.
///
/// A write whose answer was lost (Redis paused past the client's timeout, then ran it) is sent again
/// with the same id: the id is kept in the progress set (it cannot be a connection id: it starts with
/// a NUL byte) and a write seen before changes nothing, so the counts are not added twice.
static FLUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local stale = redis.call('GET', KEYS[1]) ~= ARGV[1]
local first = redis.call('SADD', KEYS[2], ARGV[8]) == 1
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local new_sent, new_gone = 0, 0
if first then
  local n_sent = tonumber(ARGV[3])
  local n_gone = tonumber(ARGV[4])
  for i = 1, n_sent do new_sent = new_sent + redis.call('SADD', KEYS[2], ARGV[8 + i]) end
  for i = 1, n_gone do new_gone = new_gone + redis.call('SADD', KEYS[2], ARGV[8 + n_sent + i]) end
  if ARGV[7] == '1' then
    redis.call('HINCRBY', KEYS[3], 'sent', new_sent)
    redis.call('HINCRBY', KEYS[3], 'duplicates', n_sent - new_sent)
    redis.call('HINCRBY', KEYS[3], 'gone', new_gone)
    redis.call('HINCRBY', KEYS[3], 'throttled', ARGV[5])
    redis.call('HINCRBY', KEYS[3], 'retries', ARGV[6])
    redis.call('PEXPIRE', KEYS[3], ARGV[2])
  end
end
if stale then return -1 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return new_sent + new_gone
",
    )
});

/// Outcomes not yet written.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub sent: Vec<String>,
    pub gone: Vec<String>,
    pub throttled: u64,
    pub retries: u64,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.sent.len() + self.gone.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.throttled == 0 && self.retries == 0
    }
}

/// Where one job's outcomes are written: its lease (and the token that delivered them), its progress set
/// and the report it counts towards.
#[derive(Debug, Clone)]
struct Target {
    lease: String,
    token: u64,
    set: String,
    report: Option<String>,
    ttl: Duration,
}

/// A batch on its way to Redis, with the id that makes sending it again harmless.
#[derive(Debug, Clone)]
struct Write {
    id: String,
    batch: Batch,
}

impl Write {
    fn new(batch: Batch) -> Self {
        Write {
            id: format!("\0write:{:032x}", rand::random::<u128>()),
            batch,
        }
    }

    /// Sends it to `target`: the script's answer (-1 when the token is stale), or the Redis error.
    async fn send(&self, redis: &Redis, target: &Target) -> Result<i64, redis::RedisError> {
        let batch = &self.batch;
        let mut script = FLUSH.key(&target.lease);
        script
            .key(&target.set)
            .key(target.report.as_deref().unwrap_or(&target.set))
            .arg(target.token)
            .arg(target.ttl.as_millis() as u64)
            .arg(batch.sent.len())
            .arg(batch.gone.len())
            .arg(batch.throttled)
            .arg(batch.retries)
            .arg(u8::from(target.report.is_some()))
            .arg(&self.id)
            .arg(&batch.sent)
            .arg(&batch.gone);
        let mut conn = redis.clone();
        script.invoke_async::<i64>(&mut conn).await
    }
}

/// The worker's outcomes that were delivered but could not be written yet, by progress set. Cheap to
/// clone; every clone is the same ledger.
#[derive(Debug, Clone, Default)]
pub struct Owed(Arc<Mutex<Ledger>>);

/// By progress set: where its writes go, and the writes not made yet, oldest first.
type Ledger = HashMap<String, (Target, Vec<Write>)>;

impl Owed {
    fn entries(&self) -> MutexGuard<'_, Ledger> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes what is owed to `set`, oldest first.
    fn take(&self, set: &str) -> Vec<Write> {
        self.entries()
            .remove(set)
            .map(|(_, writes)| writes)
            .unwrap_or_default()
    }

    /// Puts `writes` back as owed to `target`'s set, before what was added there meanwhile.
    fn keep(&self, target: &Target, writes: impl IntoIterator<Item = Write>) {
        let mut entries = self.entries();
        let entry = entries
            .entry(target.set.clone())
            .or_insert_with(|| (target.clone(), Vec::new()));
        let later = std::mem::take(&mut entry.1);
        entry.1.extend(writes);
        entry.1.extend(later);
    }

    /// How many outcomes are owed.
    pub fn len(&self) -> usize {
        self.entries()
            .values()
            .flat_map(|(_, writes)| writes)
            .map(|w| w.batch.len())
            .sum()
    }

    /// Nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    /// Forgets the writes of `set` whose ids are in `written`.
    fn forget(&self, set: &str, written: &[String]) {
        let mut entries = self.entries();
        if let Some((_, writes)) = entries.get_mut(set) {
            writes.retain(|w| !written.contains(&w.id));
            if writes.is_empty() {
                entries.remove(set);
            }
        }
    }

    /// Writes everything owed, each job's with the token that delivered it (recorded even when that token
    /// is stale: they are facts). What fails stays owed. Returns how many outcomes were written.
    ///
    /// The writes stay owed while they are sent, and are forgotten once Redis has them: a receipt of the
    /// job that reads its progress meanwhile (a held job run again as Redis comes back) writes them itself
    /// first (a write's id makes the second copy harmless), rather than reading a progress without them
    /// and posting to those recipients again.
    pub async fn write_all(&self, redis: &Redis) -> usize {
        let sets: Vec<String> = self.entries().keys().cloned().collect();
        let mut written = 0;
        for set in sets {
            let Some((target, writes)) = self.entries().get(&set).cloned() else {
                continue; // a receipt of the job took it meanwhile
            };
            let ids: Vec<String> = writes.iter().map(|w| w.id.clone()).collect();
            match send_in_order(redis, &target, writes).await {
                Ok(sent) => {
                    written += sent.outcomes;
                    self.forget(&set, &ids);
                }
                Err(stuck) => {
                    written += stuck.outcomes;
                    tracing::debug!(error = %stuck.error, "could not write owed outcomes yet");
                    let done = ids.len() - stuck.rest.len();
                    self.forget(&set, &ids[..done]);
                }
            }
        }
        written
    }

    /// Writes what is owed every quarter second until `stop` fires, then once more. What is still owed
    /// at the end is logged: a receipt of those jobs may post to those recipients again.
    pub async fn keep_writing(self, redis: Redis, stop: CancellationToken) {
        let mut every = tokio::time::interval(Duration::from_millis(250));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.cancelled() => break,
            }
            if !self.is_empty() {
                let written = self.write_all(&redis).await;
                if written > 0 {
                    tracing::info!(
                        outcomes = written,
                        "wrote deliveries recorded late (Redis was unreachable)"
                    );
                }
            }
        }
        // Bounded: a Redis still unreachable must not hold the worker's exit.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.write_all(&redis)).await;
        let left = self.len();
        if left > 0 {
            tracing::warn!(
                outcomes = left,
                "deliveries could not be recorded before the worker stopped; a receipt of their jobs may post to those recipients again"
            );
        }
    }
}

/// Writes that all reached Redis.
struct Sent {
    /// Outcomes written.
    outcomes: usize,
    /// Some answer said the token is stale.
    stale: bool,
}

/// Writes that stopped at a failure.
struct Stuck {
    /// Outcomes written before it.
    outcomes: usize,
    error: redis::RedisError,
    /// The write that failed and those after it.
    rest: Vec<Write>,
}

/// Sends `writes` to `target` one after the other, stopping at the first failure.
async fn send_in_order(redis: &Redis, target: &Target, writes: Vec<Write>) -> Result<Sent, Stuck> {
    let mut sent = Sent {
        outcomes: 0,
        stale: false,
    };
    let mut writes = writes.into_iter();
    while let Some(write) = writes.next() {
        match write.send(redis, target).await {
            Ok(answer) => {
                sent.outcomes += write.batch.len();
                sent.stale |= answer == -1;
            }
            Err(error) => {
                return Err(Stuck {
                    outcomes: sent.outcomes,
                    error,
                    rest: std::iter::once(write).chain(writes).collect(),
                });
            }
        }
    }
    Ok(sent)
}

/// One job's progress, written under its lease.
#[derive(Debug)]
pub struct Progress {
    redis: Redis,
    lease: Lease,
    set: String,
    report: Option<String>,
    ttl: Duration,
    /// Where outcomes whose write failed (Redis unreachable) wait: written with the next batch, by the
    /// next receipt of the job, or in the background.
    owed: Owed,
}

/// Why a write of progress did not happen.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error("{0}")]
    Lost(#[from] Lost),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

impl Progress {
    /// The progress of the job `lease` holds; `report` is the broadcast it counts towards. Outcomes that
    /// cannot be written wait in `owed`.
    pub fn new(
        redis: Redis,
        keys: &Keyspace,
        lease: Lease,
        job_id: &str,
        report: Option<&str>,
        ttl: Duration,
        owed: Owed,
    ) -> Self {
        Progress {
            set: keys.job_progress(&lease.tag, job_id),
            report: report.map(|id| keys.report(id)),
            redis,
            lease,
            ttl,
            owed,
        }
    }

    fn target(&self) -> Target {
        Target {
            lease: self.lease.key.clone(),
            token: self.lease.token,
            set: self.set.clone(),
            report: self.report.clone(),
            ttl: self.ttl,
        }
    }

    /// The job is acknowledged: keep its lease and progress only briefly ([`Lease::finished`]).
    pub async fn finished(&self) {
        self.lease.finished(&self.redis, &[&self.set]).await;
    }

    /// One part of a job that goes on (an ordered channel's batch) is done: keep its progress only
    /// briefly, and the job's lease as it is (it still runs under it). Best effort, as
    /// [`Lease::finished`].
    pub async fn finished_batch(&self) {
        crate::lease::keep_briefly(&self.redis, &[&self.set]).await;
    }

    /// The ids of `ids` that have no final outcome yet, in order. What an earlier receipt of the job
    /// delivered but could not write is written first.
    pub async fn remaining(&mut self, ids: Vec<String>) -> Result<Vec<String>, FlushError> {
        self.flush(Batch::default()).await?;
        let mut left = Vec::with_capacity(ids.len());
        let mut conn = self.redis.clone();
        for part in ids.chunks(1000) {
            let done: Vec<bool> = redis::cmd("SMISMEMBER")
                .arg(&self.set)
                .arg(part)
                .query_async(&mut conn)
                .await?;
            left.extend(
                part.iter()
                    .zip(done)
                    .filter(|(_, done)| !done)
                    .map(|(id, _)| id.clone()),
            );
        }
        Ok(left)
    }

    /// Writes `batch` (after whatever is owed to this job). A stale lease stops the job
    /// ([`Hold::lose`](crate::lease::Hold::lose)); a Redis failure leaves the outcomes owed.
    pub async fn flush(&mut self, batch: Batch) -> Result<(), FlushError> {
        let mut writes = self.owed.take(&self.set);
        if !batch.is_empty() {
            writes.push(Write::new(batch));
        }
        if writes.is_empty() {
            return Ok(());
        }
        let target = self.target();
        match send_in_order(&self.redis, &target, writes).await {
            Ok(sent) => {
                self.lease.fenced(if sent.stale { -1 } else { 0 })?;
                Ok(())
            }
            Err(stuck) => {
                self.owed.keep(&target, stuck.rest);
                Err(FlushError::Redis(stuck.error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Progress against a real redis-server: what a receipt flushes is skipped by the next one and counted
    //! once in the report, a stale holder's outcomes are kept but it is told to stop, and outcomes whose
    //! write fails (Redis unreachable) stay owed until a later write, [`Owed::write_all`] or
    //! [`Owed::keep_writing`] records them.

    use super::*;
    use crate::lease::{Hold, RUNNING_TTL};
    use common::job::{Action, Job, Target};
    use std::collections::{BTreeSet, HashMap};
    use test_support::RedisServer;

    struct Env {
        _server: RedisServer,
        redis: Redis,
        /// A Redis that never answers: nothing listens on its port.
        down: Redis,
        keys: Keyspace,
        owed: Owed,
        job: Job,
    }

    impl Env {
        async fn start() -> Self {
            let server = RedisServer::start();
            let redis = Redis::connect(&server.url()).await.unwrap();
            let down = Redis::connect(&format!("redis://127.0.0.1:{}", test_support::free_port()))
                .await
                .unwrap();
            Env {
                _server: server,
                redis,
                down,
                keys: Keyspace::new("fo:"),
                owed: Owed::default(),
                job: Job::new(Target::Connections { ids: vec![] }, Action::Disconnect),
            }
        }

        /// A new receipt of the job: the next token.
        async fn receipt(&self) -> Lease {
            let hold = Hold::new(&CancellationToken::new());
            Lease::acquire(&self.redis, &self.keys, &self.job, RUNNING_TTL, hold)
                .await
                .unwrap()
        }

        /// The progress of `lease`, counting towards broadcast `b`, written through `redis`.
        fn progress(&self, redis: &Redis, lease: &Lease) -> Progress {
            Progress::new(
                redis.clone(),
                &self.keys,
                lease.clone(),
                &self.job.id,
                Some("b"),
                RUNNING_TTL,
                self.owed.clone(),
            )
        }

        fn set(&self) -> String {
            self.keys.job_progress(&self.job.id, &self.job.id)
        }

        /// The connection ids in the progress set (the writes' ids left out).
        async fn recorded(&self) -> BTreeSet<String> {
            let all: BTreeSet<String> = redis::cmd("SMEMBERS")
                .arg(self.set())
                .query_async(&mut self.redis.clone())
                .await
                .unwrap();
            all.into_iter().filter(|m| !m.starts_with('\0')).collect()
        }

        async fn report(&self) -> HashMap<String, u64> {
            redis::cmd("HGETALL")
                .arg(self.keys.report("b"))
                .query_async(&mut self.redis.clone())
                .await
                .unwrap()
        }

        async fn exists(&self, key: &str) -> bool {
            redis::cmd("EXISTS")
                .arg(key)
                .query_async(&mut self.redis.clone())
                .await
                .unwrap()
        }
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn set_of(list: &[&str]) -> BTreeSet<String> {
        ids(list).into_iter().collect()
    }

    fn batch(sent: &[&str], gone: &[&str], throttled: u64, retries: u64) -> Batch {
        Batch {
            sent: ids(sent),
            gone: ids(gone),
            throttled,
            retries,
        }
    }

    fn counts(report: &HashMap<String, u64>) -> [u64; 5] {
        ["sent", "duplicates", "gone", "throttled", "retries"].map(|f| report[f])
    }

    #[test]
    fn a_batch_counts_its_outcomes_and_is_empty_only_with_nothing_to_add() {
        assert_eq!(batch(&["a", "b"], &["c"], 4, 5).len(), 3);
        assert!(Batch::default().is_empty());
        assert!(!batch(&["a"], &[], 0, 0).is_empty());
        assert!(!batch(&[], &["a"], 0, 0).is_empty());
        assert!(!batch(&[], &[], 1, 0).is_empty());
        assert!(!batch(&[], &[], 0, 1).is_empty());
    }

    /// What one receipt flushed is skipped by the next, whose second 200 to a recipient is counted as a
    /// duplicate; 429s and retries are added as they come; an empty flush writes nothing.
    #[tokio::test]
    async fn what_was_flushed_is_skipped_by_the_next_receipt_and_counted_once() {
        let env = Env::start().await;
        let first = env.receipt().await;
        let mut progress = env.progress(&env.redis, &first);
        let all = ids(&["a", "b", "c", "d"]);
        assert_eq!(progress.remaining(all.clone()).await.unwrap(), all);
        progress.flush(Batch::default()).await.unwrap();
        assert!(!env.exists(&env.set()).await, "an empty flush wrote");

        progress
            .flush(batch(&["a", "b"], &["c"], 2, 3))
            .await
            .unwrap();
        assert_eq!(env.recorded().await, set_of(&["a", "b", "c"]));
        assert_eq!(counts(&env.report().await), [2, 0, 1, 2, 3]);
        progress.flush(batch(&[], &[], 1, 0)).await.unwrap();
        assert_eq!(counts(&env.report().await), [2, 0, 1, 3, 3]);
        assert!(!first.hold.stop.is_cancelled());

        let second = env.receipt().await;
        let mut again = env.progress(&env.redis, &second);
        assert_eq!(again.remaining(all).await.unwrap(), ids(&["d"]));
        again.flush(batch(&["a", "d"], &[], 0, 0)).await.unwrap();
        assert_eq!(counts(&env.report().await), [3, 1, 1, 3, 3]);

        // Acknowledged: kept two minutes.
        again.finished().await;
        let ttl: i64 = redis::cmd("PTTL")
            .arg(env.set())
            .query_async(&mut env.redis.clone())
            .await
            .unwrap();
        assert!((119_000..=120_000).contains(&ttl), "{ttl}");
    }

    /// A finished batch of a job that goes on (an ordered channel's drain) keeps its progress two
    /// minutes and leaves the job's lease running: a drain may hold its job long after one batch.
    #[tokio::test]
    async fn a_finished_batch_keeps_its_progress_briefly_and_the_job_s_lease_running() {
        let env = Env::start().await;
        let lease = env.receipt().await;
        let mut progress = env.progress(&env.redis, &lease);
        progress.flush(batch(&["a"], &[], 0, 0)).await.unwrap();
        progress.finished_batch().await;
        let ttl = |key: String| {
            let mut conn = env.redis.clone();
            async move {
                redis::cmd("PTTL")
                    .arg(key)
                    .query_async::<i64>(&mut conn)
                    .await
                    .unwrap()
            }
        };
        let set = ttl(env.set()).await;
        assert!((119_000..=120_000).contains(&set), "progress {set}");
        let running = ttl(lease.key.clone()).await;
        assert!(running > 14 * 60 * 1000, "lease {running}");
    }

    /// A holder whose lease was taken over still records what it delivered (the new holder skips it),
    /// and is told to stop.
    #[tokio::test]
    async fn a_stale_holder_s_outcomes_are_kept_and_it_is_told_to_stop() {
        let env = Env::start().await;
        let first = env.receipt().await;
        let mut stale = env.progress(&env.redis, &first);
        let second = env.receipt().await;
        let result = stale.flush(batch(&["a"], &[], 0, 0)).await;
        assert!(
            matches!(result, Err(FlushError::Lost(Lost::TakenOver))),
            "{result:?}"
        );
        assert_eq!(first.hold.lost(), Some(Lost::TakenOver));
        assert_eq!(env.recorded().await, BTreeSet::from(["a".to_owned()]));
        assert_eq!(counts(&env.report().await), [1, 0, 0, 0, 0]);
        let mut current = env.progress(&env.redis, &second);
        assert_eq!(
            current.remaining(ids(&["a", "b"])).await.unwrap(),
            ids(&["b"])
        );
        assert_eq!(second.hold.lost(), None);
    }

    /// Outcomes whose write fails stay owed, and the next receipt of the job writes them before it reads
    /// what is left to do.
    #[tokio::test]
    async fn outcomes_owed_during_an_outage_are_written_by_the_next_receipt() {
        let env = Env::start().await;
        let lease = env.receipt().await;
        let mut cut_off = env.progress(&env.down, &lease);
        let result = cut_off.flush(batch(&["a", "b"], &["c"], 1, 1)).await;
        assert!(matches!(result, Err(FlushError::Redis(_))), "{result:?}");
        assert_eq!(env.owed.len(), 3);
        assert!(!env.owed.is_empty());
        let result = cut_off.flush(batch(&["d"], &[], 0, 0)).await;
        assert!(matches!(result, Err(FlushError::Redis(_))), "{result:?}");
        assert_eq!(env.owed.len(), 4);
        assert!(!env.exists(&env.set()).await);

        let mut back = env.progress(&env.redis, &lease);
        let left = back.remaining(ids(&["a", "b", "c", "d", "e"])).await;
        assert_eq!(left.unwrap(), ids(&["e"]));
        assert!(env.owed.is_empty());
        assert_eq!(env.owed.len(), 0);
        assert_eq!(counts(&env.report().await), [3, 0, 1, 1, 1]);
    }

    /// [`Owed::write_all`] writes what is owed (with the token that delivered it) and says how much; what
    /// still fails stays owed.
    #[tokio::test]
    async fn write_all_writes_what_is_owed_once_redis_answers() {
        let env = Env::start().await;
        let lease = env.receipt().await;
        let mut cut_off = env.progress(&env.down, &lease);
        assert!(cut_off.flush(batch(&["a"], &["b"], 0, 0)).await.is_err());
        assert!(cut_off.flush(batch(&["c"], &[], 0, 0)).await.is_err());
        assert_eq!(env.owed.write_all(&env.down).await, 0);
        assert_eq!(env.owed.len(), 3);

        assert_eq!(env.owed.write_all(&env.redis).await, 3);
        assert!(env.owed.is_empty());
        assert_eq!(env.recorded().await, set_of(&["a", "b", "c"]));
        assert_eq!(counts(&env.report().await), [2, 0, 1, 0, 0]);
        assert_eq!(env.owed.write_all(&env.redis).await, 0);
    }

    /// While the background writer's write of owed outcomes waits on a Redis that does not answer, the
    /// outcomes are still owed: a receipt of the job that flushes meanwhile takes them and writes them
    /// itself before it reads its progress.
    #[tokio::test]
    async fn outcomes_being_written_in_the_background_stay_owed_until_written() {
        let env = Env::start().await;
        let lease = env.receipt().await;
        let mut cut_off = env.progress(&env.down, &lease);
        assert!(cut_off.flush(batch(&["a", "b"], &[], 0, 0)).await.is_err());
        let stalled = RedisServer::start();
        let stalled_redis = Redis::connect(&stalled.url()).await.unwrap();
        stalled_redis.ping().await.unwrap();
        stalled.pause();
        let mut background = Box::pin(env.owed.write_all(&stalled_redis));
        assert!(futures::poll!(background.as_mut()).is_pending());
        assert_eq!(env.owed.len(), 2);
        // The next receipt reads its progress (writing what is owed first): nothing is left to post.
        let next = env.receipt().await;
        let mut progress = env.progress(&env.redis, &next);
        let left = progress
            .remaining(vec!["a".into(), "b".into(), "c".into()])
            .await
            .unwrap();
        assert_eq!(left, ["c"]);
        assert!(env.owed.is_empty());
        // The background write ends (Redis answers again) without putting anything back.
        stalled.resume();
        background.await;
        assert!(env.owed.is_empty());
        assert_eq!(env.recorded().await, set_of(&["a", "b"]));
        assert_eq!(counts(&env.report().await)[0], 2);
    }

    /// A set's writes are sent oldest first and stop at the first that fails: what went before it is
    /// written and counted, it and what follows stay owed. (The report's `throttled` count at its
    /// maximum makes the second write fail, and only it.)
    #[tokio::test]
    async fn a_failed_write_and_the_later_ones_stay_owed_and_the_earlier_ones_count() {
        let env = Env::start().await;
        let lease = env.receipt().await;
        let mut cut_off = env.progress(&env.down, &lease);
        assert!(cut_off.flush(batch(&["a", "b"], &[], 0, 0)).await.is_err());
        assert!(cut_off.flush(batch(&["c"], &[], 1, 0)).await.is_err());
        assert!(cut_off.flush(batch(&["d"], &[], 0, 0)).await.is_err());
        let _: () = redis::cmd("HSET")
            .arg(env.keys.report("b"))
            .arg("throttled")
            .arg(i64::MAX)
            .query_async(&mut env.redis.clone())
            .await
            .unwrap();

        assert_eq!(env.owed.write_all(&env.redis).await, 2);
        assert_eq!(env.owed.len(), 2, "the failed write and the one after it");
        assert!(!env.recorded().await.contains("d"));
    }

    /// The worker's background writer records owed outcomes while it runs.
    #[tokio::test]
    async fn keep_writing_records_what_is_owed_in_the_background() {
        let env = Env::start().await;
        let lease = env.receipt().await;
        let mut cut_off = env.progress(&env.down, &lease);
        assert!(cut_off.flush(batch(&["a", "b"], &[], 0, 0)).await.is_err());
        let stop = CancellationToken::new();
        let writer = tokio::spawn(
            env.owed
                .clone()
                .keep_writing(env.redis.clone(), stop.clone()),
        );
        // Written within a few of its quarter-second rounds (bounded for a loaded machine).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !env.owed.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "still owed: {}",
                env.owed.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(env.recorded().await, set_of(&["a", "b"]));
        stop.cancel();
        writer.await.unwrap();
    }
}
