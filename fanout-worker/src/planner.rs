//! The planner: expands a channel, subject or everyone job into its connection ids with `SSCAN` (never one
//! giant `SMEMBERS`), and decides how they are delivered. Long because its tests (two thirds of the file, against a
//! real redis-server) pin every target kind, the exact chunk boundaries, checkpoints and resuming.
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
use common::job::{BroadcastRef, Job, Target, now_ms};
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
            if current.len() > self.chunk_size {
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
        if self
            .flush(job, lease, &mut pending, bucket, 0, true)
            .await?
        {
            // Every chunk reached its outcome before planning recorded its end (a planner resumed after
            // its last chunks were sent): this checkpoint finished the broadcast.
            self.metrics
                .end_to_end
                .with_label_values(&["broadcast"])
                .observe(now_ms().saturating_sub(job.enqueued_at_ms) as f64 / 1000.0);
            tracing::info!(broadcast_id = %job.id, "broadcast finished");
        }
        Ok(Plan::Chunked { chunks: index })
    }

    fn chunk(&self, job: &Job, ids: Vec<String>, index: u32) -> Job {
        let mut chunk = Job::new(Target::Connections { ids }, job.action.clone());
        chunk.id = format!("{}.{index}", job.id);
        chunk.enqueued_at_ms = job.enqueued_at_ms;
        // A broadcast's chunks travel on its lane (the caller gives the planner that lane's queue).
        chunk.lane = job.lane;
        chunk.broadcast = Some(BroadcastRef {
            id: job.id.clone(),
            index,
        });
        chunk
    }

    /// Sends the pending chunks, then records the position after them, if this planner still holds the
    /// job. Returns true if this checkpoint finished the broadcast.
    async fn flush(
        &self,
        job: &Job,
        lease: &Lease,
        pending: &mut Vec<Job>,
        bucket: usize,
        cursor: u64,
        planned: bool,
    ) -> Result<bool, PlanError> {
        lease.check(self.redis).await??;
        self.queue.send_batch(pending).await?;
        let added = pending.len() as u32;
        self.metrics.chunks_planned.inc_by(u64::from(added));
        pending.clear();
        let finished = self
            .reports
            .checkpoint(lease, &job.id, added, bucket as u32, cursor, planned)
            .await?;
        Ok(finished)
    }
}

#[cfg(test)]
mod tests {
    //! The planner against a real redis-server and the Redis Streams queue: every target kind is read
    //! from its sets, a target of exactly the chunk size is delivered directly and one more id makes
    //! chunks, chunks are full except where a checkpoint cuts them and numbered without gaps, planning
    //! resumes at the recorded bucket and chunk index, and a planner that was stopped or whose lease
    //! was taken over sends nothing.

    use super::*;
    use crate::lease::{Hold, Lost};
    use common::job::{Action, payload_of};
    use common::keys::{bucket_of, report_field as rf};
    use common::queue::QueueOptions;
    use common::queue::streams::StreamQueue;
    use serde_json::json;
    use std::collections::{BTreeSet, HashMap};
    use std::time::Duration;
    use test_support::RedisServer;

    const TTL: Duration = Duration::from_secs(60);

    /// A private redis-server, the keyspace and the Redis Streams queue on it.
    struct Env {
        _server: RedisServer,
        redis: Redis,
        keys: Keyspace,
        queue: StreamQueue,
    }

    impl Env {
        async fn start() -> Self {
            let server = RedisServer::start();
            let redis = Redis::connect(&server.url()).await.unwrap();
            let queue = StreamQueue::new(redis.clone(), "jobs", QueueOptions::default())
                .await
                .unwrap();
            Env {
                _server: server,
                redis,
                keys: Keyspace::new("fo:"),
                queue,
            }
        }

        /// Adds `n` connection ids (`first`, `first + 1`, ...) to `channel`, to `subject` and to their
        /// `all:{n}` buckets. Digits-only ids keep a set of up to 512 an intset, which one `SSCAN` call
        /// returns whole, so small targets are read in one page whatever the `COUNT`.
        async fn register(
            &self,
            first: usize,
            n: usize,
            channel: &str,
            subject: &str,
        ) -> Vec<String> {
            let ids: Vec<String> = (first..first + n).map(|i| i.to_string()).collect();
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("SADD")
                    .arg(self.keys.channel(channel))
                    .arg(id)
                    .ignore();
                pipe.cmd("SADD")
                    .arg(self.keys.subject(subject))
                    .arg(id)
                    .ignore();
                pipe.cmd("SADD")
                    .arg(self.keys.all_bucket_of(id))
                    .arg(id)
                    .ignore();
            }
            pipe.query_async::<()>(&mut self.redis.clone())
                .await
                .unwrap();
            ids
        }

        async fn report(&self, id: &str) -> HashMap<String, String> {
            redis::cmd("HGETALL")
                .arg(self.keys.report(id))
                .query_async(&mut self.redis.clone())
                .await
                .unwrap()
        }
    }

    struct Planned {
        result: Result<Plan, PlanError>,
        /// The chunk jobs found on the queue afterwards, by index.
        chunks: Vec<Job>,
        chunks_planned_metric: u64,
        /// Broadcasts this planner saw finish (`fanout_end_to_end_seconds{kind="broadcast"}` samples).
        finished_metric: u64,
        /// The sum of those samples.
        finished_seconds: f64,
    }

    async fn lease(env: &Env, job: &Job) -> Lease {
        Lease::acquire(
            &env.redis,
            &env.keys,
            job,
            TTL,
            Hold::new(&CancellationToken::new()),
        )
        .await
        .unwrap()
    }

    fn reports(env: &Env) -> Reports {
        Reports {
            redis: env.redis.clone(),
            keys: env.keys.clone(),
            ttl: TTL,
        }
    }

    /// Plans `job` with chunks of `chunk_size` under `lease`, then takes every job off the queue.
    async fn plan_with(
        env: &Env,
        job: &Job,
        chunk_size: usize,
        lease: &Lease,
        stop: &CancellationToken,
    ) -> Planned {
        let metrics = WorkerMetrics::new();
        let reports = reports(env);
        let planner = Planner {
            redis: &env.redis,
            keys: &env.keys,
            queue: &env.queue,
            reports: &reports,
            metrics: &metrics,
            chunk_size,
        };
        let result = planner.plan(job, lease, stop).await;
        let mut chunks = Vec::new();
        loop {
            let received = env.queue.receive(10, Duration::ZERO).await.unwrap();
            if received.is_empty() {
                break;
            }
            chunks.extend(received.iter().map(|r| r.job().unwrap()));
        }
        chunks.sort_by_key(|c| c.broadcast.as_ref().map(|b| b.index));
        Planned {
            result,
            chunks,
            chunks_planned_metric: metrics.chunks_planned.get(),
            finished_metric: metrics
                .end_to_end
                .with_label_values(&["broadcast"])
                .get_sample_count(),
            finished_seconds: metrics
                .end_to_end
                .with_label_values(&["broadcast"])
                .get_sample_sum(),
        }
    }

    async fn plan(env: &Env, job: &Job, chunk_size: usize) -> Planned {
        let lease = lease(env, job).await;
        plan_with(env, job, chunk_size, &lease, &CancellationToken::new()).await
    }

    fn post(target: Target) -> Job {
        Job::post(
            target,
            payload_of(&json!({"type": "system", "message": "hi"})),
        )
    }

    fn channel(name: &str) -> Target {
        Target::Channel {
            channel: name.into(),
        }
    }

    fn ids_of(chunk: &Job) -> &[String] {
        match &chunk.target {
            Target::Connections { ids } => ids,
            other => panic!("a chunk targets connections, not {other:?}"),
        }
    }

    fn direct(planned: &Planned) -> BTreeSet<String> {
        match &planned.result {
            Ok(Plan::Direct(ids)) => {
                let set: BTreeSet<String> = ids.iter().cloned().collect();
                assert_eq!(set.len(), ids.len(), "an id planned twice: {ids:?}");
                assert!(planned.chunks.is_empty(), "a direct plan sends no chunk");
                set
            }
            other => panic!("expected a direct plan, got {other:?}"),
        }
    }

    /// Checks the chunks of broadcast `job` (numbered from `first`) and returns their ids and sizes.
    fn chunked(planned: &Planned, job: &Job, first: u32) -> (BTreeSet<String>, Vec<usize>) {
        let Ok(Plan::Chunked { chunks }) = &planned.result else {
            panic!("expected chunks, got {:?}", planned.result);
        };
        assert_eq!(*chunks as usize, first as usize + planned.chunks.len());
        assert_eq!(planned.chunks_planned_metric, planned.chunks.len() as u64);
        assert_eq!(planned.finished_metric, 0, "chunks are still outstanding");
        let mut ids = BTreeSet::new();
        let mut sizes = Vec::new();
        for (n, chunk) in planned.chunks.iter().enumerate() {
            let index = first + n as u32;
            assert_eq!(chunk.id, format!("{}.{index}", job.id));
            let reference = chunk.broadcast.as_ref().unwrap();
            assert_eq!(
                (reference.id.as_str(), reference.index),
                (job.id.as_str(), index)
            );
            assert_eq!(chunk.enqueued_at_ms, job.enqueued_at_ms);
            assert_eq!(
                chunk.payload().map(|p| p.get()),
                job.payload().map(|p| p.get())
            );
            for id in ids_of(chunk) {
                assert!(ids.insert(id.clone()), "{id} is in two chunks");
            }
            sizes.push(ids_of(chunk).len());
        }
        (ids, sizes)
    }

    fn set(ids: &[String]) -> BTreeSet<String> {
        ids.iter().cloned().collect()
    }

    #[test]
    fn each_target_reads_its_own_sets() {
        let keys = Keyspace::new("p:");
        assert_eq!(
            sources(&keys, &channel("general")),
            [keys.channel("general")]
        );
        assert_eq!(
            sources(
                &keys,
                &Target::Subject {
                    subject: "u1".into()
                }
            ),
            [keys.subject("u1")]
        );
        let all: Vec<String> = (0..ALL_BUCKETS).map(|b| keys.all_bucket(b)).collect();
        assert_eq!(sources(&keys, &Target::All), all);
        assert!(
            sources(
                &keys,
                &Target::Connections {
                    ids: vec!["a".into()]
                }
            )
            .is_empty()
        );
    }

    #[tokio::test]
    async fn every_target_kind_is_planned() {
        let env = Env::start().await;
        let general = env.register(1000, 5, "general", "u1").await;
        let other = env.register(2000, 3, "other", "u2").await;
        let everyone: BTreeSet<String> = general.iter().chain(&other).cloned().collect();

        let job = post(channel("general"));
        assert_eq!(direct(&plan(&env, &job, 100).await), set(&general));
        let report = env.report(&job.id).await;
        assert_eq!(report[rf::TARGET], "channel");
        assert_eq!(report[rf::SOURCE], env.keys.channel("general"));
        assert_eq!(report[rf::ENQUEUED_MS], job.enqueued_at_ms.to_string());

        let job = post(Target::Subject {
            subject: "u2".into(),
        });
        assert_eq!(direct(&plan(&env, &job, 100).await), set(&other));
        let report = env.report(&job.id).await;
        assert_eq!(report[rf::TARGET], "subject");
        assert_eq!(report[rf::SOURCE], env.keys.subject("u2"));

        // Everyone reads all the buckets, and names no one set as its source.
        let job = Job::new(Target::All, Action::Disconnect);
        assert_eq!(direct(&plan(&env, &job, 100).await), everyone);
        let report = env.report(&job.id).await;
        assert_eq!(report[rf::TARGET], "all");
        assert!(!report.contains_key(rf::SOURCE), "{report:?}");
    }

    /// Up to the chunk size a job delivers its target itself; one id more and it is split into full chunks
    /// and a remainder, all on the queue, and the report counts them as planned and outstanding.
    #[tokio::test]
    async fn chunk_boundaries_are_exact() {
        let env = Env::start().await;
        let five = env.register(3000, 5, "five", "u5").await;
        assert_eq!(
            direct(&plan(&env, &post(channel("five")), 5).await),
            set(&five)
        );

        for (n, expected_sizes) in [(6, vec![5, 1]), (10, vec![5, 5]), (11, vec![5, 5, 1])] {
            let name = format!("c{n}");
            let members = env
                .register(4000 + 100 * n, n, &name, &format!("s{n}"))
                .await;
            let job = post(channel(&name));
            let planned = plan(&env, &job, 5).await;
            let (ids, sizes) = chunked(&planned, &job, 0);
            assert_eq!(ids, set(&members), "{n} members");
            assert_eq!(sizes, expected_sizes, "{n} members");
            let report = env.report(&job.id).await;
            let count = expected_sizes.len().to_string();
            assert_eq!(report[rf::CHUNKS], count, "{report:?}");
            assert_eq!(report[rf::OUTSTANDING], count, "{report:?}");
            assert_eq!(report[rf::PLANNED], "1", "{report:?}");
            assert!(!report.contains_key(rf::FINISHED_MS), "{report:?}");
        }
    }

    /// A target larger than one `SSCAN` page (a hash table set) is read page by page: the first batch of
    /// chunks goes at once and later ones by tens, each checkpoint taking the ids scanned so far as one
    /// smaller chunk; every other chunk is full, and everyone is in exactly one chunk.
    #[tokio::test]
    async fn a_large_target_goes_out_in_full_chunks_checkpointed_by_tens() {
        let env = Env::start().await;
        let members = env.register(100_000, 1500, "big", "ubig").await;
        let job = post(channel("big"));
        let planned = plan(&env, &job, 10).await;
        let (ids, sizes) = chunked(&planned, &job, 0);
        assert_eq!(ids, set(&members));
        assert!(sizes.iter().all(|&s| (1..=10).contains(&s)), "{sizes:?}");
        let full = sizes.iter().filter(|&&s| s == 10).count();
        let partial = sizes.len() - full;
        // One cut after the first batch, one per ten chunks after it, one at the end.
        assert!(
            partial <= full / 10 + 2,
            "{partial} partial chunks of {sizes:?}"
        );
        let report = env.report(&job.id).await;
        assert_eq!(report[rf::CHUNKS], sizes.len().to_string());
        assert_eq!(report[rf::PLANNED], "1");
        assert_eq!(report[rf::PLAN_BUCKET], "1");
        assert_eq!(report[rf::PLAN_CURSOR], "0");
    }

    /// A planner that stopped after a checkpoint is resumed by the job's redelivery: it reads from the
    /// recorded bucket on, numbers its chunks after those already sent, and never delivers directly.
    #[tokio::test]
    async fn planning_resumes_at_the_checkpoint() {
        let env = Env::start().await;
        let members = env.register(5000, 60, "room", "ur").await;
        let job = post(Target::All);
        redis::cmd("HSET")
            .arg(env.keys.report(&job.id))
            .arg(rf::CHUNKS)
            .arg(2)
            .arg(rf::OUTSTANDING)
            .arg(2)
            .arg(rf::PLAN_BUCKET)
            .arg(8)
            .arg(rf::PLAN_CURSOR)
            .arg(0)
            .query_async::<()>(&mut env.redis.clone())
            .await
            .unwrap();
        let planned = plan(&env, &job, 100).await;
        let (ids, _) = chunked(&planned, &job, 2);
        let unread: BTreeSet<String> = members
            .iter()
            .filter(|id| bucket_of(id) >= 8)
            .cloned()
            .collect();
        assert!(!unread.is_empty() && unread.len() < members.len());
        assert_eq!(ids, unread);
        let report = env.report(&job.id).await;
        assert_eq!(report[rf::CHUNKS], "3");
        assert_eq!(report[rf::OUTSTANDING], "3");
        assert_eq!(report[rf::PLANNED], "1");

        // Once planning is recorded as complete, a redelivery plans nothing more.
        let again = plan(&env, &job, 100).await;
        assert!(
            matches!(again.result, Ok(Plan::Chunked { chunks: 3 })),
            "{:?}",
            again.result
        );
        assert!(again.chunks.is_empty());
    }

    /// A planner that died after its last chunks went out is resumed after they were all delivered: its
    /// final checkpoint finishes the broadcast, and it says so.
    #[tokio::test]
    async fn a_resumed_planner_finishes_a_delivered_broadcast() {
        let env = Env::start().await;
        env.register(6000, 10, "done", "ud").await;
        let mut job = post(channel("done"));
        // Published five seconds ago: the end-to-end time observed is about five seconds.
        job.enqueued_at_ms -= 5_000;
        redis::cmd("HSET")
            .arg(env.keys.report(&job.id))
            .arg(rf::CHUNKS)
            .arg(2)
            .arg(rf::OUTSTANDING)
            .arg(0)
            .arg(rf::PLAN_BUCKET)
            .arg(1)
            .arg(rf::PLAN_CURSOR)
            .arg(0)
            .query_async::<()>(&mut env.redis.clone())
            .await
            .unwrap();
        let planned = plan(&env, &job, 5).await;
        assert!(
            matches!(planned.result, Ok(Plan::Chunked { chunks: 2 })),
            "{:?}",
            planned.result
        );
        assert!(planned.chunks.is_empty());
        assert_eq!(planned.finished_metric, 1);
        assert!(
            (5.0..60.0).contains(&planned.finished_seconds),
            "{}",
            planned.finished_seconds
        );
        let report = env.report(&job.id).await;
        assert_eq!(report[rf::PLANNED], "1");
        assert!(report.contains_key(rf::FINISHED_MS), "{report:?}");
    }

    /// A planner stopped mid-way has already sent its first batches (the first at once, then by tens),
    /// each with a checkpoint that leaves nothing scanned behind; the job's redelivery plans the rest, and
    /// everyone is in exactly one chunk.
    #[tokio::test]
    async fn a_planner_stopped_mid_way_is_resumed_and_misses_nobody() {
        let env = Env::start().await;
        let members = env.register(200_000, 20_000, "huge", "uhuge").await;
        let job = post(channel("huge"));
        let stop = CancellationToken::new();
        // Stop the planner once 30 chunks are on the queue: after its third or fourth batch, long before
        // its end (2000 chunks).
        let watcher = {
            let (redis, stream, stop) = (
                env.redis.clone(),
                Keyspace::new("fo:").queue("jobs").stream,
                stop.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let sent: u64 = redis::cmd("XLEN")
                        .arg(&stream)
                        .query_async(&mut redis.clone())
                        .await
                        .unwrap();
                    if sent >= 30 {
                        stop.cancel();
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        let first_lease = lease(&env, &job).await;
        let first = plan_with(&env, &job, 10, &first_lease, &stop).await;
        watcher.abort();
        assert!(
            matches!(first.result, Ok(Plan::Interrupted)),
            "{:?}",
            first.result
        );
        let report = env.report(&job.id).await;
        let sent: u32 = report[rf::CHUNKS].parse().unwrap();
        assert_eq!(sent as usize, first.chunks.len());
        assert!(sent > 0 && !report.contains_key(rf::PLANNED), "{report:?}");

        let second = plan(&env, &job, 10).await;
        let (rest, _) = chunked(&second, &job, sent);
        let mut everyone = BTreeSet::new();
        for id in first.chunks.iter().flat_map(ids_of).chain(&rest) {
            assert!(everyone.insert(id.clone()), "{id} is in two chunks");
        }
        assert_eq!(everyone, set(&members));
    }

    #[tokio::test]
    async fn a_stopped_or_superseded_planner_sends_nothing() {
        let env = Env::start().await;
        env.register(7000, 30, "stopped", "us").await;
        let job = post(channel("stopped"));

        let stale = lease(&env, &job).await;
        let _current = lease(&env, &job).await;
        let planned = plan_with(&env, &job, 5, &stale, &CancellationToken::new()).await;
        assert!(
            matches!(planned.result, Err(PlanError::Lost(Lost::TakenOver))),
            "{:?}",
            planned.result
        );
        assert!(planned.chunks.is_empty());
        assert!(!env.report(&job.id).await.contains_key(rf::CHUNKS));

        let stop = CancellationToken::new();
        stop.cancel();
        let current = lease(&env, &job).await;
        let planned = plan_with(&env, &job, 5, &current, &stop).await;
        assert!(
            matches!(planned.result, Ok(Plan::Interrupted)),
            "{:?}",
            planned.result
        );
        assert!(planned.chunks.is_empty());
    }
}
