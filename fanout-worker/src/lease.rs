//! Job leases with fencing tokens: one holder per job at a time, and a stale holder's writes refused.
//!
//! Every receipt of a job takes a new token with `INCR` on the job's lease key
//! ([`common::keys::Keyspace::job_lease`]); the holder of the highest token owns the job. Every write
//! that steers the job (planning checkpoints, the job's end in the report) goes through a script that
//! first compares the caller's token with the key's and refuses a stale one ([`FENCE`], shared by those
//! scripts); requeueing is preceded by [`Lease::check`]. Progress writes ([`crate::progress`]) check the
//! token too, and tell a stale holder to stop, but keep what it delivered as delivered. A worker whose
//! lease is taken over (its visibility lapsed while Redis or the process was paused, and the job was
//! received again, possibly by the same worker) stops at its next write: it neither reports, requeues nor
//! acknowledges, so one job never runs twice at once for longer than one progress write.
//!
//! The lease is also lost locally when the queue heartbeat cannot extend the job's visibility before the
//! job could be received again ([`Hold::deadline_passed`]): the work stops then, before another holder
//! can start, and the worker says so (WARN and `fanout_worker_leases_lost_total`).
//!
//! The lease key shares its hash tag with the broadcast the job belongs to (the job's own id otherwise),
//! so the fenced scripts touch one slot on Redis Cluster.

use common::job::Job;
use common::keys::Keyspace;
use common::store::Redis;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Lua prelude of every fenced script: `KEYS[1]` is the lease, `ARGV[1]` the caller's token, `ARGV[2]`
/// a TTL in ms. Returns -1 from the script when the token is no longer the job's latest; otherwise keeps
/// the lease for the TTL from now, so a long job's lease does not expire under it.
pub const FENCE: &str = r"
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then return -1 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
";

/// How long a running job's lease and progress are kept (refreshed at every write): past every
/// redelivery of a job that is still running.
pub const RUNNING_TTL: Duration = Duration::from_secs(15 * 60);

/// How long they are kept once the job is acknowledged: long enough for a copy of the job that was on the
/// queue at the same time (a re-planned chunk, a publish retried after an unknown answer) to skip what
/// was delivered, short enough that a busy fleet's one-recipient jobs do not pile up in Redis.
pub const FINISHED_TTL: Duration = Duration::from_secs(2 * 60);

/// Why a job stopped without finishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Lost {
    /// Another receipt of the job took a newer token.
    #[error("the job was received again and its lease taken over")]
    TakenOver,
    /// The heartbeat could not extend the job's visibility in time.
    #[error("the job's visibility could not be extended in time")]
    Expired,
}

impl Lost {
    /// A bounded metric label.
    pub fn label(self) -> &'static str {
        match self {
            Lost::TakenOver => "taken_over",
            Lost::Expired => "expired",
        }
    }
}

/// One receipt's hold on its job, shared by the job's work and its heartbeat: `stop` fires when the
/// lease is lost or the worker's grace period ends, and [`Hold::lost`] says which.
#[derive(Debug, Clone)]
pub struct Hold {
    /// Fires when the work must stop.
    pub stop: CancellationToken,
    lost: Arc<Mutex<Option<Lost>>>,
}

impl Hold {
    /// A hold that also stops when `hard_stop` (the worker's end of grace) fires.
    pub fn new(hard_stop: &CancellationToken) -> Self {
        Hold {
            stop: hard_stop.child_token(),
            lost: Arc::default(),
        }
    }

    /// Records that the lease is lost (the first reason wins) and stops the work.
    pub fn lose(&self, why: Lost) {
        self.lost
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(why);
        self.stop.cancel();
    }

    /// Why the lease was lost, if it was.
    pub fn lost(&self) -> Option<Lost> {
        *self.lost.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a heartbeat whose last successful extension was sent `since_ok` ago has run out of time:
    /// four fifths of the visibility timeout, so the work stops before the job can be received again.
    pub fn deadline_passed(since_ok: Duration, visibility: Duration) -> bool {
        since_ok >= visibility.mul_f64(0.8)
    }
}

/// A receipt's fencing token for its job.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The fencing token of this receipt.
    pub token: u64,
    /// The lease key.
    pub key: String,
    /// The hash tag of the job's keys: its broadcast's id, or its own.
    pub tag: String,
    /// The receipt's hold, stopped when a write finds the token stale.
    pub hold: Hold,
}

/// The hash tag of a job's lease and progress keys.
pub fn tag_of(job: &Job) -> &str {
    job.broadcast
        .as_ref()
        .map_or(job.id.as_str(), |b| b.id.as_str())
}

impl Lease {
    /// Takes a new token for `job`, kept for `ttl`.
    pub async fn acquire(
        redis: &Redis,
        keys: &Keyspace,
        job: &Job,
        ttl: Duration,
        hold: Hold,
    ) -> Result<Self, redis::RedisError> {
        let tag = tag_of(job).to_owned();
        let key = keys.job_lease(&tag, &job.id);
        let mut pipe = redis::pipe();
        pipe.cmd("INCR")
            .arg(&key)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl.as_millis() as u64)
            .ignore();
        let mut conn = redis.clone();
        let (token,): (u64,) = pipe.query_async(&mut conn).await?;
        Ok(Lease {
            token,
            key,
            tag,
            hold,
        })
    }

    /// Checks that this receipt still holds the job (and stops the work if not). A Redis error is returned
    /// as such: the caller holds the job and tries again.
    pub async fn check(&self, redis: &Redis) -> Result<Result<(), Lost>, redis::RedisError> {
        if let Some(lost) = self.hold.lost() {
            return Ok(Err(lost));
        }
        let mut conn = redis.clone();
        let current: Option<u64> = redis::cmd("GET")
            .arg(&self.key)
            .query_async(&mut conn)
            .await?;
        if current == Some(self.token) {
            Ok(Ok(()))
        } else {
            self.hold.lose(Lost::TakenOver);
            Ok(Err(Lost::TakenOver))
        }
    }

    /// Shortens the lease (and `others`, the job's progress) to [`FINISHED_TTL`] once the job is
    /// acknowledged. Best effort: they expire after [`RUNNING_TTL`] anyway.
    pub async fn finished(&self, redis: &Redis, others: &[&str]) {
        let keys: Vec<&str> = std::iter::once(self.key.as_str())
            .chain(others.iter().copied())
            .collect();
        keep_briefly(redis, &keys).await;
    }

    /// Reads a fenced script's answer: -1 means the token was stale, and stops the work.
    pub fn fenced(&self, answer: i64) -> Result<i64, Lost> {
        if answer == -1 {
            self.hold.lose(Lost::TakenOver);
            Err(Lost::TakenOver)
        } else {
            Ok(answer)
        }
    }
}

/// Shortens `keys` to [`FINISHED_TTL`]: what a finished job (or a finished part of one) leaves behind.
/// Best effort: they expire after [`RUNNING_TTL`] anyway.
pub async fn keep_briefly(redis: &Redis, keys: &[&str]) {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("PEXPIRE")
            .arg(*key)
            .arg(FINISHED_TTL.as_millis() as u64)
            .ignore();
    }
    let mut conn = redis.clone();
    if let Err(e) = pipe.query_async::<()>(&mut conn).await {
        tracing::debug!(error = %e, "could not shorten a finished job's keys");
    }
}

#[cfg(test)]
mod tests {
    //! The hold's bookkeeping, and the lease's writes against a real redis-server: every receipt takes a
    //! newer token, a stale token is refused by both the check and the fenced scripts' answer, and the
    //! lease lives fifteen minutes while its job runs, two once it is acknowledged.

    use super::*;
    use common::job::{Action, BroadcastRef, Target};
    use test_support::RedisServer;

    struct Env {
        _server: RedisServer,
        redis: Redis,
        keys: Keyspace,
    }

    impl Env {
        async fn start() -> Self {
            let server = RedisServer::start();
            let redis = Redis::connect(&server.url()).await.unwrap();
            Env {
                _server: server,
                redis,
                keys: Keyspace::new("fo:"),
            }
        }

        async fn acquire(&self, job: &Job) -> Lease {
            let hold = Hold::new(&CancellationToken::new());
            Lease::acquire(&self.redis, &self.keys, job, RUNNING_TTL, hold)
                .await
                .unwrap()
        }

        /// The remaining TTL of `key` in ms (-2 when it does not exist, -1 without a TTL).
        async fn pttl(&self, key: &str) -> i64 {
            redis::cmd("PTTL")
                .arg(key)
                .query_async(&mut self.redis.clone())
                .await
                .unwrap()
        }
    }

    fn chunk_of(broadcast: &str) -> Job {
        let mut job = Job::new(Target::Connections { ids: vec![] }, Action::Disconnect);
        job.broadcast = Some(BroadcastRef {
            id: broadcast.to_owned(),
            index: 3,
        });
        job
    }

    #[test]
    fn the_reasons_have_their_metric_labels() {
        assert_eq!(Lost::TakenOver.label(), "taken_over");
        assert_eq!(Lost::Expired.label(), "expired");
    }

    #[test]
    fn a_chunk_is_tagged_with_its_broadcast_and_any_other_job_with_itself() {
        let chunk = chunk_of("b-1");
        assert_eq!(tag_of(&chunk), "b-1");
        let job = Job::new(Target::All, Action::Disconnect);
        assert_eq!(tag_of(&job), job.id);
    }

    /// Each receipt takes the next token; the older receipt's check then fails and stops its work,
    /// the newer one's passes.
    #[tokio::test]
    async fn a_new_receipt_takes_the_job_over() {
        let env = Env::start().await;
        let job = chunk_of("b-1");
        let first = env.acquire(&job).await;
        assert_eq!(first.key, env.keys.job_lease("b-1", &job.id));
        assert_eq!(first.tag, "b-1");
        assert_eq!(first.check(&env.redis).await.unwrap(), Ok(()));
        assert!(!first.hold.stop.is_cancelled());

        let second = env.acquire(&job).await;
        assert_eq!(second.token, first.token + 1);
        assert_eq!(first.check(&env.redis).await.unwrap(), Err(Lost::TakenOver));
        assert!(first.hold.stop.is_cancelled());
        assert_eq!(first.hold.lost(), Some(Lost::TakenOver));
        assert_eq!(second.check(&env.redis).await.unwrap(), Ok(()));
        assert!(!second.hold.stop.is_cancelled());

        // A hold already lost answers without asking Redis, with its own reason.
        second.hold.lose(Lost::Expired);
        assert_eq!(second.check(&env.redis).await.unwrap(), Err(Lost::Expired));
    }

    /// A fenced script's -1 stops the work; any other answer is passed through.
    #[test]
    fn a_fenced_answer_of_minus_one_means_taken_over() {
        let lease = Lease {
            token: 1,
            key: "k".into(),
            tag: "t".into(),
            hold: Hold::new(&CancellationToken::new()),
        };
        assert_eq!(lease.fenced(0), Ok(0));
        assert_eq!(lease.fenced(7), Ok(7));
        assert!(!lease.hold.stop.is_cancelled());
        assert_eq!(lease.fenced(-1), Err(Lost::TakenOver));
        assert!(lease.hold.stop.is_cancelled());
        assert_eq!(lease.hold.lost(), Some(Lost::TakenOver));
    }

    /// The lease (with the progress it is given) lives fifteen minutes while its job runs, two once the
    /// job is acknowledged.
    #[tokio::test]
    async fn a_running_lease_lives_fifteen_minutes_and_a_finished_one_two() {
        let env = Env::start().await;
        let job = Job::new(Target::All, Action::Disconnect);
        let lease = env.acquire(&job).await;
        let ttl = env.pttl(&lease.key).await;
        assert!((899_000..=900_000).contains(&ttl), "{ttl}");

        let progress = env.keys.job_progress(&lease.tag, &job.id);
        let _: () = redis::cmd("SADD")
            .arg(&progress)
            .arg("c1")
            .query_async(&mut env.redis.clone())
            .await
            .unwrap();
        lease.finished(&env.redis, &[&progress]).await;
        for key in [&lease.key, &progress] {
            let ttl = env.pttl(key).await;
            assert!((119_000..=120_000).contains(&ttl), "{key}: {ttl}");
        }
    }

    #[test]
    fn the_deadline_comes_before_the_visibility_lapses() {
        let v = Duration::from_secs(10);
        assert!(!Hold::deadline_passed(Duration::from_secs(7), v));
        assert!(Hold::deadline_passed(Duration::from_secs(8), v));
    }

    #[test]
    fn the_first_reason_wins_and_stops_the_work() {
        let hard_stop = CancellationToken::new();
        let hold = Hold::new(&hard_stop);
        assert_eq!(hold.lost(), None);
        hold.lose(Lost::Expired);
        hold.lose(Lost::TakenOver);
        assert_eq!(hold.lost(), Some(Lost::Expired));
        assert!(hold.stop.is_cancelled() && !hard_stop.is_cancelled());
    }
}
