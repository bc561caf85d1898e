//! The delivery report of a broadcast (a channel, subject or everyone job and all its chunks): one hash
//! (`bcast:{id}`, fields in `common::keys::report_field`) with sent, gone, throttled and failed counts,
//! started and finished times and the planner's progress, kept for `FANOUT_REPORT_TTL_SECS` and read by
//! ingest's `GET /v1/broadcasts/{id}`. The id is the job id ingest's publish answered with.
//!
//! Counting survives redelivery. Delivery counts (`sent` once per recipient, `duplicates`, `gone`,
//! `throttled`, `retries`) are added as a job's progress is written ([`crate::progress`]). A job's end
//! (its `failed` count and whether it is settled) is recorded once per job id, in a set beside the hash
//! (`bcast:{id}:done`); chunk ids are stable across re-plans, so a chunk redelivered or re-planned is not
//! counted twice. The report knows it is finished when planning has read the whole target (`planned`) and
//! no chunk is outstanding (`outstanding`: chunks planned minus chunks at a final outcome; a requeued chunk
//! stays outstanding). Every write is a Lua script fenced by the writer's lease ([`crate::lease::FENCE`]):
//! a worker that no longer holds its job writes nothing. The lease, the hash and the set share a hash tag.

use crate::lease::{FENCE, Lease, Lost};
use common::keys::{Keyspace, report_field as f};
use common::lua::NOW_MS;
use common::store::Redis;
use redis::Script;
use std::sync::LazyLock;
use std::time::Duration;

/// Shared by the scripts: sets `finished_ms` when planning is done and nothing is outstanding; returns 1
/// if this call finished the broadcast.
const FINISH: &str = r"
local function finish(key, now)
  local h = redis.call('HMGET', key, 'planned', 'outstanding', 'finished_ms')
  if h[1] == '1' and (tonumber(h[2]) or 0) <= 0 and not h[3] then
    redis.call('HSET', key, 'finished_ms', now)
    return 1
  end
  return 0
end
";

/// `KEYS`: lease, report, done set. `ARGV`: token, ttl ms, job id, failed, settled (1 when the job is at a
/// final outcome; 0 when its leftovers were requeued and stay outstanding). Returns -1 for a stale token,
/// else 1 if this call finished the broadcast.
static RECORD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{FENCE}{FINISH}{NOW_MS}
local counted = redis.call('SADD', KEYS[3], ARGV[3])
local finished = 0
if counted == 1 then
  redis.call('HINCRBY', KEYS[2], 'failed', ARGV[4])
  if ARGV[5] == '1' then redis.call('HINCRBY', KEYS[2], 'outstanding', -1) end
  finished = finish(KEYS[2], now)
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return finished
"
    ))
});

/// `KEYS`: lease, report. `ARGV`: token, ttl ms, chunks added, bucket, cursor, planned (1 when planning
/// read everything). Returns -1 for a stale token, else 1 if this call finished the broadcast.
static CHECKPOINT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{FENCE}{FINISH}{NOW_MS}
redis.call('HINCRBY', KEYS[2], 'outstanding', ARGV[3])
redis.call('HINCRBY', KEYS[2], 'chunks', ARGV[3])
redis.call('HSET', KEYS[2], 'plan_bucket', ARGV[4], 'plan_cursor', ARGV[5])
if ARGV[6] == '1' then redis.call('HSET', KEYS[2], 'planned', '1') end
local finished = finish(KEYS[2], now)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return finished
"
    ))
});

/// The planning fields of a report as read: planned, chunks, bucket, cursor.
type PlanFields = (Option<String>, Option<u32>, Option<u32>, Option<u64>);

/// Where planning of a broadcast stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Planning already read the whole target (this job is a redelivery after planning finished).
    pub planned: bool,
    /// Chunks already sent; the next chunk's index.
    pub chunks: u32,
    /// The `all:{n}` bucket and `SSCAN` cursor to resume from.
    pub bucket: u32,
    pub cursor: u64,
}

/// Why a fenced report write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0}")]
    Lost(#[from] Lost),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The reports, under one key prefix and TTL.
#[derive(Debug, Clone)]
pub struct Reports {
    pub redis: Redis,
    pub keys: Keyspace,
    pub ttl: Duration,
}

impl Reports {
    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
    }

    /// Opens a broadcast's report (first writer wins for the start fields) and reads planning's progress.
    pub async fn start(
        &self,
        id: &str,
        target: &str,
        enqueued_ms: u64,
        source: Option<&str>,
    ) -> Result<Progress, redis::RedisError> {
        let key = self.keys.report(id);
        let now = common::job::now_ms();
        let mut pipe = redis::pipe();
        pipe.cmd("HSETNX")
            .arg(&key)
            .arg(f::STARTED_MS)
            .arg(now)
            .ignore();
        pipe.cmd("HSETNX")
            .arg(&key)
            .arg(f::ENQUEUED_MS)
            .arg(enqueued_ms)
            .ignore();
        pipe.cmd("HSETNX")
            .arg(&key)
            .arg(f::TARGET)
            .arg(target)
            .ignore();
        if let Some(source) = source {
            pipe.cmd("HSETNX")
                .arg(&key)
                .arg(f::SOURCE)
                .arg(source)
                .ignore();
        }
        pipe.cmd("PEXPIRE").arg(&key).arg(self.ttl_ms()).ignore();
        pipe.cmd("HMGET")
            .arg(&key)
            .arg(f::PLANNED)
            .arg(f::CHUNKS)
            .arg(f::PLAN_BUCKET)
            .arg(f::PLAN_CURSOR);
        let mut conn = self.redis.clone();
        let ((planned, chunks, bucket, cursor),): (PlanFields,) =
            pipe.query_async(&mut conn).await?;
        Ok(Progress {
            planned: planned.as_deref() == Some("1"),
            chunks: chunks.unwrap_or(0),
            bucket: bucket.unwrap_or(0),
            cursor: cursor.unwrap_or(0),
        })
    }

    /// Records that `added` chunks are on the queue and planning may resume at (`bucket`, `cursor`);
    /// `planned` when the target has been read to the end. Returns true if this finished the broadcast.
    pub async fn checkpoint(
        &self,
        lease: &Lease,
        id: &str,
        added: u32,
        bucket: u32,
        cursor: u64,
        planned: bool,
    ) -> Result<bool, WriteError> {
        let mut conn = self.redis.clone();
        let finished: i64 = CHECKPOINT
            .key(&lease.key)
            .key(self.keys.report(id))
            .arg(lease.token)
            .arg(self.ttl_ms())
            .arg(added)
            .arg(bucket)
            .arg(cursor)
            .arg(u8::from(planned))
            .invoke_async(&mut conn)
            .await?;
        Ok(lease.fenced(finished)? == 1)
    }

    /// Records one job's end, once per job id: its `failed` recipients, and `settled` when none of them
    /// was requeued. Returns true if this finished the broadcast.
    pub async fn record(
        &self,
        lease: &Lease,
        id: &str,
        job_id: &str,
        failed: u64,
        settled: bool,
    ) -> Result<bool, WriteError> {
        let mut conn = self.redis.clone();
        let finished: i64 = RECORD
            .key(&lease.key)
            .key(self.keys.report(id))
            .key(self.keys.report_done(id))
            .arg(lease.token)
            .arg(self.ttl_ms())
            .arg(job_id)
            .arg(failed)
            .arg(u8::from(settled))
            .invoke_async(&mut conn)
            .await?;
        Ok(lease.fenced(finished)? == 1)
    }

    /// The set a broadcast reads, for cleaning stale ids out of it.
    pub async fn source(&self, id: &str) -> Result<Option<String>, redis::RedisError> {
        let mut conn = self.redis.clone();
        redis::cmd("HGET")
            .arg(self.keys.report(id))
            .arg(f::SOURCE)
            .query_async(&mut conn)
            .await
    }
}

#[cfg(test)]
mod tests {
    //! The report's writes against a real redis-server: the start fields are written once, checkpoints add
    //! chunks and move planning's position, each job's end is counted once, the broadcast finishes exactly
    //! when planning is done and nothing is outstanding, and everything expires with the report's TTL.

    use super::*;
    use crate::lease::Hold;
    use common::job::{Job, Target};
    use std::collections::HashMap;
    use test_support::RedisServer;
    use tokio_util::sync::CancellationToken;

    const TTL: Duration = Duration::from_secs(600);

    struct Env {
        _server: RedisServer,
        reports: Reports,
    }

    impl Env {
        async fn start() -> Self {
            let server = RedisServer::start();
            let redis = Redis::connect(&server.url()).await.unwrap();
            Env {
                _server: server,
                reports: Reports {
                    redis,
                    keys: Keyspace::new("fo:"),
                    ttl: TTL,
                },
            }
        }

        async fn lease(&self, broadcast: &str) -> Lease {
            let mut job = Job::new(Target::All, common::job::Action::Disconnect);
            job.id = broadcast.to_owned();
            Lease::acquire(
                &self.reports.redis,
                &self.reports.keys,
                &job,
                TTL,
                Hold::new(&CancellationToken::new()),
            )
            .await
            .unwrap()
        }

        async fn fields(&self, key: String) -> HashMap<String, String> {
            redis::cmd("HGETALL")
                .arg(key)
                .query_async(&mut self.reports.redis.clone())
                .await
                .unwrap()
        }

        /// The remaining TTL of `key` in ms (-2 when it does not exist, -1 without a TTL).
        async fn pttl(&self, key: String) -> i64 {
            redis::cmd("PTTL")
                .arg(key)
                .query_async(&mut self.reports.redis.clone())
                .await
                .unwrap()
        }
    }

    #[tokio::test]
    async fn the_first_start_wins_and_the_report_expires() {
        let env = Env::start().await;
        let key = env.reports.keys.report("b1");
        let progress = env
            .reports
            .start("b1", "channel", 5, Some("fo:chan:{x}"))
            .await;
        assert_eq!(progress.unwrap(), Progress::default());
        let first = env.fields(key.clone()).await;
        let started: u64 = first[f::STARTED_MS].parse().unwrap();
        assert!(started > 1_735_689_600_000, "{started}");
        assert_eq!(first[f::ENQUEUED_MS], "5");
        assert_eq!(first[f::TARGET], "channel");
        assert_eq!(first[f::SOURCE], "fo:chan:{x}");
        let ttl = env.pttl(key.clone()).await;
        assert!(ttl > 590_000 && ttl <= 600_000, "{ttl}");

        env.reports
            .start("b1", "all", 9, Some("other"))
            .await
            .unwrap();
        assert_eq!(env.fields(key).await, first);
        assert_eq!(
            env.reports.source("b1").await.unwrap().as_deref(),
            Some("fo:chan:{x}")
        );

        env.reports.start("b2", "all", 9, None).await.unwrap();
        assert_eq!(env.reports.source("b2").await.unwrap(), None);
    }

    /// Planning's checkpoints are read back by the next start, and the broadcast finishes exactly once:
    /// when planning has read everything and the last outstanding chunk is recorded.
    #[tokio::test]
    async fn checkpoints_resume_planning_and_the_last_settled_chunk_finishes_the_broadcast() {
        let env = Env::start().await;
        let r = &env.reports;
        let key = r.keys.report("b");
        r.start("b", "all", 1, None).await.unwrap();
        let lease = env.lease("b").await;

        assert!(!r.checkpoint(&lease, "b", 3, 4, 55, false).await.unwrap());
        assert_eq!(
            r.start("b", "all", 1, None).await.unwrap(),
            Progress {
                planned: false,
                chunks: 3,
                bucket: 4,
                cursor: 55,
            }
        );

        // A chunk counted twice (redelivered) counts once; a requeued chunk stays outstanding.
        assert!(!r.record(&lease, "b", "b.0", 2, true).await.unwrap());
        assert!(!r.record(&lease, "b", "b.0", 2, true).await.unwrap());
        assert!(!r.record(&lease, "b", "b.1", 0, false).await.unwrap());
        let report = env.fields(key.clone()).await;
        assert_eq!(
            (report[f::FAILED].as_str(), report[f::OUTSTANDING].as_str()),
            ("2", "2")
        );

        // Planning ends with one more chunk; nothing finishes while chunks are outstanding.
        assert!(!r.checkpoint(&lease, "b", 1, 16, 0, true).await.unwrap());
        assert!(r.start("b", "all", 1, None).await.unwrap().planned);
        assert!(!r.record(&lease, "b", "b.2", 0, true).await.unwrap());
        assert!(!r.record(&lease, "b", "b.3", 0, true).await.unwrap());
        assert!(!env.fields(key.clone()).await.contains_key(f::FINISHED_MS));
        assert!(r.record(&lease, "b", "b.1.r1", 1, true).await.unwrap());
        let report = env.fields(key.clone()).await;
        assert!(report.contains_key(f::FINISHED_MS), "{report:?}");
        assert_eq!(
            (report[f::CHUNKS].as_str(), report[f::FAILED].as_str()),
            ("4", "3")
        );
        // Finished once.
        assert!(!r.record(&lease, "b", "b.4", 0, true).await.unwrap());
        assert!(!r.checkpoint(&lease, "b", 0, 16, 0, true).await.unwrap());

        // The done set lives and dies with the report.
        let done = env.pttl(r.keys.report_done("b")).await;
        assert!(done > 590_000 && done <= 600_000, "{done}");
    }

    /// A checkpoint finishes the broadcast when every chunk was settled before planning recorded its end.
    #[tokio::test]
    async fn a_final_checkpoint_can_finish_the_broadcast() {
        let env = Env::start().await;
        let r = &env.reports;
        r.start("c", "channel", 1, None).await.unwrap();
        let lease = env.lease("c").await;
        assert!(!r.checkpoint(&lease, "c", 2, 1, 0, false).await.unwrap());
        assert!(!r.record(&lease, "c", "c.0", 0, true).await.unwrap());
        assert!(!r.record(&lease, "c", "c.1", 0, true).await.unwrap());
        assert!(r.checkpoint(&lease, "c", 0, 1, 0, true).await.unwrap());
    }
}
