//! Per-job delivery progress: which of a job's recipients already have a final outcome, so that a job
//! received again (its worker was killed, or its lease taken over after a pause) skips them.
//!
//! While a job dispatches, every [`FLUSH_EVERY`] outcomes (and at the end) the ids answered 200 or 410 are
//! added to the job's progress set ([`common::keys::Keyspace::job_progress`]) by one script that also
//! checks the job's lease ([`crate::lease`]) and adds the counts to the broadcast's report: `sent` counts a
//! recipient only the first time it enters the set, a second 200 for it is a `duplicates`, and `gone`,
//! `throttled` and `retries` are added as they happen. So the report is exact across re-takes and
//! re-plans (chunk ids are stable, see [`crate::planner`]), and a re-take repeats at most the outcomes
//! that were not flushed yet: after a kill, at most [`FLUSH_EVERY`] plus the calls in flight per job.

use crate::lease::{Lease, Lost};
use common::keys::Keyspace;
use common::store::Redis;
use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;

/// Outcomes gathered before they are written to the progress set.
pub const FLUSH_EVERY: usize = 50;

/// `KEYS`: lease, progress set, report (the progress set again when the job counts towards none).
/// `ARGV`: token, ttl ms, sent ids count, gone ids count, throttled, retries, has report (1/0), then the
/// sent ids and the gone ids. Returns -1 when the token is stale, else the recipients newly counted.
///
/// Unlike the other fenced writes, a stale holder's outcomes are still recorded: they are facts (those
/// connections did receive the payload), and recording them lets the holder that took over skip them, or
/// count its own second post as a duplicate. Only the answer tells the stale holder to stop.
static FLUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local stale = redis.call('GET', KEYS[1]) ~= ARGV[1]
local n_sent = tonumber(ARGV[3])
local n_gone = tonumber(ARGV[4])
local new_sent, new_gone = 0, 0
for i = 1, n_sent do new_sent = new_sent + redis.call('SADD', KEYS[2], ARGV[7 + i]) end
for i = 1, n_gone do new_gone = new_gone + redis.call('SADD', KEYS[2], ARGV[7 + n_sent + i]) end
if n_sent + n_gone > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
if ARGV[7] == '1' then
  redis.call('HINCRBY', KEYS[3], 'sent', new_sent)
  redis.call('HINCRBY', KEYS[3], 'duplicates', n_sent - new_sent)
  redis.call('HINCRBY', KEYS[3], 'gone', new_gone)
  redis.call('HINCRBY', KEYS[3], 'throttled', ARGV[5])
  redis.call('HINCRBY', KEYS[3], 'retries', ARGV[6])
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
end
if stale then return -1 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return new_sent + new_gone
",
    )
});

/// Outcomes not yet written.
#[derive(Debug, Default)]
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

/// One job's progress, written under its lease.
#[derive(Debug)]
pub struct Progress {
    redis: Redis,
    lease: Lease,
    set: String,
    report: Option<String>,
    ttl: Duration,
    /// Outcomes whose write failed (Redis unreachable): written with the next batch.
    unsent: Batch,
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
    /// The progress of the job `lease` holds; `report` is the broadcast it counts towards.
    pub fn new(
        redis: Redis,
        keys: &Keyspace,
        lease: Lease,
        job_id: &str,
        report: Option<&str>,
        ttl: Duration,
    ) -> Self {
        Progress {
            set: keys.job_progress(&lease.tag, job_id),
            report: report.map(|id| keys.report(id)),
            redis,
            lease,
            ttl,
            unsent: Batch::default(),
        }
    }

    /// The lease the writes are fenced with.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The job is acknowledged: keep its lease and progress only briefly ([`Lease::finished`]).
    pub async fn finished(&self) {
        self.lease.finished(&self.redis, &[&self.set]).await;
    }

    /// The ids of `ids` that have no final outcome yet, in order.
    pub async fn remaining(&self, ids: Vec<String>) -> Result<Vec<String>, redis::RedisError> {
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

    /// Writes `batch` (with any earlier batch whose write failed). A stale lease stops the job
    /// ([`Hold::lose`](crate::lease::Hold::lose)); a Redis failure keeps the outcomes for the next write.
    pub async fn flush(&mut self, batch: Batch) -> Result<(), FlushError> {
        let mut all = std::mem::take(&mut self.unsent);
        all.sent.extend(batch.sent);
        all.gone.extend(batch.gone);
        all.throttled += batch.throttled;
        all.retries += batch.retries;
        if all.is_empty() {
            return Ok(());
        }
        let mut script = FLUSH.key(&self.lease.key);
        script
            .key(&self.set)
            .key(self.report.as_deref().unwrap_or(&self.set))
            .arg(self.lease.token)
            .arg(self.ttl.as_millis() as u64)
            .arg(all.sent.len())
            .arg(all.gone.len())
            .arg(all.throttled)
            .arg(all.retries)
            .arg(u8::from(self.report.is_some()))
            .arg(&all.sent)
            .arg(&all.gone);
        let mut conn = self.redis.clone();
        match script.invoke_async::<i64>(&mut conn).await {
            Ok(answer) => {
                self.lease.fenced(answer)?;
                Ok(())
            }
            Err(e) => {
                self.unsent = all;
                Err(FlushError::Redis(e))
            }
        }
    }
}
