//! The rate governor: every worker of a fleet takes its `PostToConnection` budget from one token bucket
//! in Redis, which learns the budget the gateway really grants; so adding workers, or sharing the
//! account's budget with other APIs, never turns into a storm of 429s. Long because one handle holds the
//! whole protocol (tokens, answers, cuts, the breaker, the live set): its parts are in the modules below.
//!
//! - [`bucket`]: the shared bucket and budget discovery (one Lua script): a cut measures the rate the
//!   gateway accepts and sets the fleet's rate just under it; while no 429 comes back the rate grows
//!   multiplicatively, faster the longer it grows, so a lowered budget costs few 429s and a raised one is
//!   found within seconds.
//! - [`pacing`]: grants sized in time (40 ms of the current rate), so the script runs a few dozen times a
//!   second per worker whatever the rate; a paced worker sleeps until its next grant.
//! - [`classify`]: a 429 spread over several connections is the account's; concentrated on a few, it is
//!   their full buffers, which back off alone (the caller's per-connection retries) without a cut.
//! - [`stall`]: a gateway that stops answering is one WARN with counts, a gauge and an alert.
//! - [`flight`]: calls in flight at once are capped at two bandwidth-delay products of this worker's share,
//!   so a start into a budget far below the configured one has few calls to lose to 429s.
//! - **Live workers.** [`Governor::keep_alive`] keeps a worker counted in the bucket's worker set from
//!   its start (so a broadcast's first grants are already shared by the whole fleet) and takes it out
//!   when it stops.
//! - **Cuts heard at once.** [`Governor::listen`] subscribes to the bucket's cuts: a worker drops the
//!   tokens it holds (or sleeps on) from before a cut elsewhere in the fleet as soon as it is made, so a
//!   lowered rate is not overshot by grants handed out before it.
//! - **Redis down.** A circuit breaker opens at the first failed or slow (over [`CALL_TIMEOUT`]) call:
//!   the worker then paces itself at its honest share, the fleet's last known rate divided by the live
//!   workers last seen (so the fleet never exceeds its budget, however many workers it has), while one
//!   background probe every [`PROBE_EVERY`] waits for Redis to answer again. No call pays Redis's
//!   command timeout while the breaker is open. A worker that never reached the bucket has no share to
//!   go by and waits for the probe.

pub mod bucket;
pub mod classify;
pub mod flight;
pub mod pacing;
pub mod stall;

pub use classify::{SPREAD, ThrottleKind, WINDOW};

use crate::delivery::{Outcome, RetryReason};
use classify::Throttles;
use common::keys::Keyspace;
use common::metrics::WorkerMetrics;
use common::store::Redis;
use pacing::LocalPace;
use stall::{StallEvent, StallWatch};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Longest wait for one bucket call before the breaker opens.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// How often the background probe tries Redis while the breaker is open.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Answers a worker needs in an epoch before its share of admitted answers is a measurement.
pub const MIN_SAMPLE: u64 = 20;
/// How often a worker tells the bucket it is live.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How often an idle worker tells the bucket it is live (well within [`bucket::LIVE_MS`]).
pub const KEEP_ALIVE_EVERY: Duration = Duration::from_millis(bucket::LIVE_MS / 4);

/// The share of answers that were not 429, `admitted` of `admitted + throttled`, once they are a sample
/// ([`MIN_SAMPLE`]).
fn admitted_share(admitted: u64, throttled: u64) -> Option<f64> {
    let answers = admitted + throttled;
    (answers >= MIN_SAMPLE).then(|| admitted as f64 / answers as f64)
}

/// Proof of a token and of a seat in flight: the epoch the token was granted in, so its call's answer
/// is counted in the right one, and when the call went out, for its round trip. Dropping it (the answer
/// taken in by [`Governor::observe`], or the call abandoned) gives the seat back.
#[derive(Debug)]
pub struct Ticket {
    epoch: u64,
    sent: Instant,
    _seat: flight::Seat,
}

/// What this worker last learned from the bucket.
#[derive(Debug, Clone, Copy)]
struct View {
    /// The fleet's rate per second.
    rate: u32,
    /// Workers live in the fleet; 0 until the bucket was reached once.
    live: u32,
    heartbeat_at: Option<Instant>,
}

/// Tokens in hand, and this worker's own pace while the breaker is open.
#[derive(Debug)]
struct Local {
    tokens: u32,
    epoch: u64,
    /// The account-429 count when these tokens were granted.
    flush: u64,
    pace: Option<LocalPace>,
    /// When the local share was last cut (an account 429 while Redis is down).
    pace_cut_at: Option<Instant>,
}

#[derive(Debug)]
struct Inner {
    redis: Redis,
    bucket_key: String,
    workers_key: String,
    worker_id: String,
    rate: u32,
    burst: u32,
    /// A tokio mutex: callers queue for tokens in order, and one of them at a time asks the bucket.
    local: tokio::sync::Mutex<Local>,
    view: Mutex<View>,
    epoch: AtomicU64,
    admitted: AtomicU64,
    throttled: AtomicU64,
    throttles: Mutex<Throttles>,
    stall: Mutex<StallWatch>,
    open: AtomicBool,
    closed: Notify,
    /// Woken when a cut elsewhere in the fleet is heard.
    cuts: Notify,
    flight: Arc<flight::Flight>,
    /// Account-wide 429s seen: tokens in hand from before the last one are dropped.
    flushes: AtomicU64,
    /// When this worker may ask for a cut again, in milliseconds since `born` (one ask per cut gap, not
    /// one per 429 of a burst).
    next_cut_ms: AtomicU64,
    born: Instant,
    metrics: WorkerMetrics,
}

/// One worker's handle on the shared bucket.
#[derive(Debug, Clone)]
pub struct Governor {
    inner: Arc<Inner>,
}

impl Governor {
    /// A handle on bucket `name`, for a fleet budget of `rate` per second and `burst`.
    pub fn new(
        redis: Redis,
        keys: &Keyspace,
        name: &str,
        rate: u32,
        burst: u32,
        metrics: WorkerMetrics,
    ) -> Self {
        let rate = rate.max(1);
        metrics.send_rate.set(i64::from(rate));
        metrics.governor_estimate.set(i64::from(rate));
        metrics.governor_factor.set(1.0);
        let bucket_key = keys.governor(name);
        Self {
            inner: Arc::new(Inner {
                redis,
                workers_key: format!("{bucket_key}:workers"),
                bucket_key,
                worker_id: uuid::Uuid::new_v4().simple().to_string(),
                rate,
                burst: burst.max(1),
                local: tokio::sync::Mutex::new(Local {
                    tokens: 0,
                    epoch: 0,
                    flush: 0,
                    pace: None,
                    pace_cut_at: None,
                }),
                view: Mutex::new(View {
                    rate,
                    live: 0,
                    heartbeat_at: None,
                }),
                epoch: AtomicU64::new(0),
                admitted: AtomicU64::new(0),
                throttled: AtomicU64::new(0),
                throttles: Mutex::new(Throttles::default()),
                stall: Mutex::new(StallWatch::new(Instant::now())),
                open: AtomicBool::new(false),
                closed: Notify::new(),
                cuts: Notify::new(),
                flight: Arc::default(),
                flushes: AtomicU64::new(0),
                next_cut_ms: AtomicU64::new(0),
                born: Instant::now(),
                metrics,
            }),
        }
    }

    /// Waits for room in flight, then for one token.
    pub async fn acquire(&self) -> Ticket {
        let view = self.view();
        let share = pacing::honest_share(f64::from(view.rate), view.live);
        let seat = self.inner.flight.enter(share).await;
        let epoch = self.token().await;
        Ticket {
            epoch,
            sent: Instant::now(),
            _seat: seat,
        }
    }

    /// Waits for one token; returns the epoch it was granted in.
    async fn token(&self) -> u64 {
        let inner = &self.inner;
        let mut local = inner.local.lock().await;
        let epoch = inner.epoch.load(Ordering::Relaxed);
        let flushes = inner.flushes.load(Ordering::Relaxed);
        if local.tokens > 0 && local.epoch == epoch && local.flush == flushes {
            local.tokens -= 1;
            return epoch;
        }
        // Boxed: the wait for a grant (a bucket call, a sleep) is a large future, needed once per grant,
        // and every caller's future would otherwise be as large.
        Box::pin(self.refill(&mut local, flushes)).await
    }

    /// Asks for a grant (or paces locally while the breaker is open) when the tokens in hand are spent;
    /// returns the epoch of the token taken from it.
    async fn refill(&self, local: &mut Local, flushes: u64) -> u64 {
        let inner = &self.inner;
        // Tokens granted before an account-wide 429, or in an epoch that ended in a cut, are not spent:
        // the gateway just said it is full (and the next grant tells this worker about any cut).
        local.tokens = 0;
        local.flush = flushes;
        loop {
            if !inner.open.load(Ordering::Acquire) {
                local.pace = None;
                let view = self.view();
                let want = pacing::batch(view.rate, self.burst_at(view.rate));
                match self.call(want, false, None).await {
                    Ok(a) if a.granted > 0 => {
                        if a.wait_ms > 0 {
                            let cut = inner.cuts.notified();
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_millis(a.wait_ms)) => {}
                                _ = cut => {}
                            }
                        }
                        if inner.epoch.load(Ordering::Relaxed) != a.epoch {
                            // A cut elsewhere while these tokens were not yet due: they are not spent.
                            continue;
                        }
                        local.tokens = a.granted - 1;
                        local.epoch = a.epoch;
                        return a.epoch;
                    }
                    Ok(a) => {
                        // The bucket is already a second ahead: ask again when it no longer is.
                        tokio::time::sleep(Duration::from_millis(a.wait_ms.max(1))).await;
                    }
                    Err(()) => {}
                }
                continue;
            }
            // The breaker is open: this worker's honest share, or nothing until Redis answers if the
            // share was never known.
            let closed = inner.closed.notified();
            let view = self.view();
            if view.live == 0 {
                tokio::select! {
                    _ = closed => {}
                    _ = tokio::time::sleep(PROBE_EVERY) => {}
                }
                continue;
            }
            let now = Instant::now();
            let pace = local.pace.get_or_insert_with(|| {
                LocalPace::new(pacing::honest_share(f64::from(view.rate), view.live), now)
            });
            let share = pace.share();
            let batch = pacing::batch(share as u32, self.burst_at(share as u32));
            let at = pace.next_grant(batch, now);
            tokio::select! {
                _ = closed => continue,
                _ = tokio::time::sleep_until(at.into()) => {}
            }
            local.tokens = batch - 1;
            local.epoch = inner.epoch.load(Ordering::Relaxed);
            return local.epoch;
        }
    }

    /// Takes note of a call's outcome: counts it toward the budget measurement, classifies a 429 (and
    /// cuts the fleet's rate for an account-wide one), and watches for a stalled gateway. Returns the
    /// kind of a 429.
    pub async fn observe(
        &self,
        ticket: Ticket,
        outcome: Outcome,
        connection_id: &str,
    ) -> Option<ThrottleKind> {
        let inner = &self.inner;
        let current = ticket.epoch == inner.epoch.load(Ordering::Relaxed);
        let epoch = ticket.epoch;
        let answered = match outcome {
            Outcome::Retryable(RetryReason::Timeout | RetryReason::Network) => false,
            // Not a call the gateway saw (missing credentials, an unusable endpoint).
            Outcome::Retryable(RetryReason::Other) => return None,
            _ => true,
        };
        // One clock read for the stall watch and the round trip.
        let now = Instant::now();
        self.watch_stall(answered, now);
        if !answered {
            return None;
        }
        inner
            .flight
            .record_at(now.saturating_duration_since(ticket.sent), now);
        drop(ticket);
        if outcome != Outcome::Throttled {
            if current {
                inner.admitted.fetch_add(1, Ordering::Relaxed);
            }
            return None;
        }
        if current {
            inner.throttled.fetch_add(1, Ordering::Relaxed);
        }
        let kind = self.classify(connection_id);
        if kind == ThrottleKind::Account {
            inner.flushes.fetch_add(1, Ordering::Relaxed);
        }
        inner
            .metrics
            .throttles
            .with_label_values(&[kind.label()])
            .inc();
        if kind == ThrottleKind::Account && current {
            // Boxed: a rare, large future that every call's future would otherwise carry.
            Box::pin(self.cut(epoch)).await;
        }
        Some(kind)
    }

    /// Records a 429 for `connection_id` and says which kind it is.
    pub fn classify(&self, connection_id: &str) -> ThrottleKind {
        self.inner
            .throttles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .classify(connection_id, Instant::now())
    }

    /// Cuts the fleet's rate after an account-wide 429 in `epoch` (at most once per
    /// [`bucket::CUT_GAP_MS`] fleet-wide, and only by a worker that has seen the current epoch).
    pub async fn cut(&self, epoch: u64) {
        let inner = &self.inner;
        if inner.open.load(Ordering::Acquire) {
            // Without Redis, each worker halves its own share, at most once a second.
            let mut local = inner.local.lock().await;
            let now = Instant::now();
            if local
                .pace_cut_at
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
                && let Some(pace) = local.pace.as_mut()
            {
                pace.set_share((pace.share() * bucket::CUT_FACTOR).max(1.0));
                local.pace_cut_at = Some(now);
            }
            return;
        }
        let admitted = inner.admitted.load(Ordering::Relaxed);
        let throttled = inner.throttled.load(Ordering::Relaxed);
        let Some(share) = admitted_share(admitted, throttled) else {
            return; // too few answers in this epoch to measure; more will come
        };
        let now_ms = inner.born.elapsed().as_millis() as u64;
        if now_ms < inner.next_cut_ms.load(Ordering::Relaxed) {
            return; // this worker asked less than a cut gap ago
        }
        inner
            .next_cut_ms
            .store(now_ms + bucket::CUT_GAP_MS, Ordering::Relaxed);
        let _ = self.call_in(0, true, Some(share), epoch).await;
    }

    /// Keeps this worker counted live in the bucket's worker set until `stop`, from now on (so the
    /// fleet's grants are shared by every worker before the first broadcast), then takes it out of the
    /// set so the others' grants grow at once. A busy worker's grants carry its heartbeat already.
    pub async fn keep_alive(self, stop: tokio_util::sync::CancellationToken) {
        loop {
            let stale = self
                .view()
                .heartbeat_at
                .is_none_or(|t| t.elapsed() >= HEARTBEAT_EVERY);
            if stale && !self.inner.open.load(Ordering::Acquire) {
                let _ = self.call(0, false, None).await;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(KEEP_ALIVE_EVERY) => {}
            }
        }
        let mut conn = self.inner.redis.clone();
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(&self.inner.workers_key).arg(&self.inner.worker_id);
        let leave = zrem.query_async::<()>(&mut conn);
        // Best effort: a worker that could not say it left is forgotten after `LIVE_MS` anyway.
        let _ = tokio::time::timeout(CALL_TIMEOUT, leave).await;
    }

    /// Hears the fleet's cuts as they are made (Redis pub/sub; a single node, not Redis Cluster) until
    /// `stop`, reconnecting after a failure. Without it a worker learns of a cut elsewhere at its next
    /// grant.
    pub async fn listen(self, url: String, stop: tokio_util::sync::CancellationToken) {
        use futures::StreamExt;
        let channel = format!("{}:cuts", self.inner.bucket_key);
        loop {
            let session = async {
                let client = redis::Client::open(url.as_str())?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    if let Ok(payload) = msg.get_payload::<String>() {
                        self.hear(&payload);
                    }
                }
                Ok::<(), redis::RedisError>(())
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                ended = session => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "not hearing the fleet's cuts: retrying");
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(PROBE_EVERY) => {}
            }
        }
    }

    /// Takes in a cut heard from the fleet, `"EPOCH RATE"`; says whether it was news. An epoch this
    /// worker already knows (or an older one) changes nothing.
    pub fn hear(&self, cut: &str) -> bool {
        let inner = &self.inner;
        let mut parts = cut.split(' ');
        let (Some(Ok(epoch)), Some(Ok(rate))) = (
            parts.next().map(str::parse::<u64>),
            parts.next().map(str::parse::<u32>),
        ) else {
            return false;
        };
        if inner.epoch.fetch_max(epoch, Ordering::Relaxed) >= epoch {
            return false;
        }
        inner.admitted.store(0, Ordering::Relaxed);
        inner.throttled.store(0, Ordering::Relaxed);
        inner
            .view
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .rate = rate.max(1);
        inner.metrics.send_rate.set(i64::from(rate));
        inner.cuts.notify_waiters();
        true
    }

    /// The fleet's rate as this worker last saw it, per second.
    pub fn rate(&self) -> u32 {
        self.view().rate
    }

    /// Whether the breaker is open (pacing locally, Redis unreachable).
    pub fn is_fallback(&self) -> bool {
        self.inner.open.load(Ordering::Acquire)
    }

    /// The burst that goes with `rate` (scaled like it).
    fn burst_at(&self, rate: u32) -> u32 {
        let scaled = u64::from(self.inner.burst) * u64::from(rate) / u64::from(self.inner.rate);
        scaled.max(1) as u32
    }

    fn view(&self) -> View {
        *self
            .inner
            .view
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn call(
        &self,
        want: u32,
        cut: bool,
        admitted: Option<f64>,
    ) -> Result<bucket::Answer, ()> {
        let epoch = self.inner.epoch.load(Ordering::Relaxed);
        self.call_in(want, cut, admitted, epoch).await
    }

    /// One bucket call within [`CALL_TIMEOUT`]; a failure opens the breaker.
    async fn call_in(
        &self,
        want: u32,
        cut: bool,
        admitted: Option<f64>,
        epoch: u64,
    ) -> Result<bucket::Answer, ()> {
        let inner = &self.inner;
        let now = Instant::now();
        let heartbeat = self
            .view()
            .heartbeat_at
            .is_none_or(|t| now.duration_since(t) >= HEARTBEAT_EVERY);
        let call = bucket::call(
            &inner.redis,
            (&inner.bucket_key, &inner.workers_key),
            bucket::Call {
                rate: inner.rate,
                burst: inner.burst,
                want,
                cut,
                admitted,
                epoch,
                worker: &inner.worker_id,
                heartbeat,
            },
        );
        inner.metrics.governor_calls.inc();
        let error = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(answer)) => {
                self.adopt(&answer, heartbeat.then_some(now));
                return Ok(answer);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {CALL_TIMEOUT:?}"),
        };
        inner.metrics.redis_errors.inc();
        self.open(&error);
        Err(())
    }

    /// Takes in what the bucket answered.
    fn adopt(&self, a: &bucket::Answer, heartbeat_at: Option<Instant>) {
        let inner = &self.inner;
        {
            let mut view = inner.view.lock().unwrap_or_else(PoisonError::into_inner);
            view.rate = a.rate.max(1);
            view.live = a.live.max(1);
            if heartbeat_at.is_some() {
                view.heartbeat_at = heartbeat_at;
            }
        }
        if inner.epoch.swap(a.epoch, Ordering::Relaxed) != a.epoch {
            inner.admitted.store(0, Ordering::Relaxed);
            inner.throttled.store(0, Ordering::Relaxed);
        }
        let m = &inner.metrics;
        m.send_rate.set(i64::from(a.rate));
        m.governor_estimate.set(i64::from(a.estimate));
        m.governor_factor
            .set(f64::from(a.rate) / f64::from(inner.rate));
    }

    /// Opens the breaker (once) and starts the probe.
    fn open(&self, error: &str) {
        let inner = &self.inner;
        if inner.open.swap(true, Ordering::AcqRel) {
            return;
        }
        let view = self.view();
        inner.metrics.governor_fallback.set(1);
        tracing::warn!(
            %error,
            fleet_rate = view.rate,
            live_workers = view.live,
            share = pacing::honest_share(f64::from(view.rate), view.live),
            "the shared rate bucket is unreachable: pacing at this worker's share until Redis answers"
        );
        let governor = self.clone();
        tokio::spawn(async move { governor.probe().await });
    }

    /// Tries the bucket every [`PROBE_EVERY`] until it answers, then closes the breaker.
    async fn probe(self) {
        let inner = &self.inner;
        let since = Instant::now();
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            let epoch = inner.epoch.load(Ordering::Relaxed);
            let call = bucket::call(
                &inner.redis,
                (&inner.bucket_key, &inner.workers_key),
                bucket::Call {
                    rate: inner.rate,
                    burst: inner.burst,
                    want: 0,
                    cut: false,
                    admitted: None,
                    epoch,
                    worker: &inner.worker_id,
                    heartbeat: true,
                },
            );
            inner.metrics.governor_calls.inc();
            if let Ok(Ok(answer)) = tokio::time::timeout(CALL_TIMEOUT, call).await {
                self.adopt(&answer, Some(Instant::now()));
                inner.open.store(false, Ordering::Release);
                inner.metrics.governor_fallback.set(0);
                inner.closed.notify_waiters();
                tracing::info!(
                    after = ?since.elapsed(),
                    fleet_rate = answer.rate,
                    "the shared rate bucket answers again"
                );
                return;
            }
        }
    }

    fn watch_stall(&self, answered: bool, now: Instant) {
        let inner = &self.inner;
        let event = {
            let mut watch = inner.stall.lock().unwrap_or_else(PoisonError::into_inner);
            if answered {
                watch.answer(now)
            } else {
                watch.failure(now)
            }
        };
        match event {
            StallEvent::None => {}
            StallEvent::Started { failures, silent } => {
                inner.metrics.gateway_stalled.set(1);
                inner.metrics.gateway_stalls.inc();
                tracing::warn!(
                    failures,
                    silent = ?silent,
                    "the Management API stopped answering: calls time out and are retried"
                );
            }
            StallEvent::Ended { failures, lasted } => {
                inner.metrics.gateway_stalled.set(0);
                tracing::info!(failures, lasted = ?lasted, "the Management API answers again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The handle's own bookkeeping against a real redis-server: which answers count toward the budget
    //! measurement, the share a cut is measured with, the local share cut while Redis is down, and the
    //! heartbeat's pace. The fleet's behaviour over seconds is in `tests/worker/governor.rs`.

    use super::*;
    use test_support::RedisServer;

    async fn governor(server: &RedisServer, name: &str, rate: u32) -> (Governor, WorkerMetrics) {
        let redis = Redis::connect(&server.url()).await.unwrap();
        let metrics = WorkerMetrics::new();
        let g = Governor::new(
            redis,
            &Keyspace::new("t:"),
            name,
            rate,
            rate,
            metrics.clone(),
        );
        (g, metrics)
    }

    #[test]
    fn an_idle_worker_tells_the_bucket_it_is_live_well_within_the_live_window() {
        assert!(KEEP_ALIVE_EVERY > Duration::ZERO);
        assert!(KEEP_ALIVE_EVERY * 4 <= Duration::from_millis(bucket::LIVE_MS));
    }

    #[test]
    fn a_cut_is_measured_with_the_share_of_admitted_answers_once_they_are_a_sample() {
        assert_eq!(admitted_share(10, 9), None);
        assert_eq!(admitted_share(0, MIN_SAMPLE - 1), None);
        assert_eq!(admitted_share(15, 5), Some(0.75));
        assert_eq!(admitted_share(0, MIN_SAMPLE), Some(0.0));
        assert_eq!(admitted_share(MIN_SAMPLE, 0), Some(1.0));
        assert_eq!(admitted_share(30, 10), Some(0.75));
    }

    #[tokio::test]
    async fn only_answers_to_calls_of_the_current_epoch_count_toward_the_measurement() {
        let server = RedisServer::start();
        let (g, _) = governor(&server, "answers", 1_000).await;
        let counts = |g: &Governor| {
            (
                g.inner.admitted.load(Ordering::Relaxed),
                g.inner.throttled.load(Ordering::Relaxed),
            )
        };
        // A call the gateway never saw (no credentials, an unusable endpoint): no answer, no round trip,
        // and its seat is given back.
        let ticket = g.acquire().await;
        let other = Outcome::Retryable(RetryReason::Other);
        assert_eq!(g.observe(ticket, other, "c").await, None);
        // A call that timed out: no answer either.
        let ticket = g.acquire().await;
        let timeout = Outcome::Retryable(RetryReason::Timeout);
        assert_eq!(g.observe(ticket, timeout, "c").await, None);
        assert_eq!(counts(&g), (0, 0));
        assert_eq!(g.inner.flight.min_rtt(), None);
        assert_eq!(g.inner.flight.outstanding(), 0);
        // Answers: an admitted call and a slow client's 429.
        let ticket = g.acquire().await;
        assert_eq!(g.observe(ticket, Outcome::Sent, "c").await, None);
        assert!(g.inner.flight.min_rtt().is_some());
        let ticket = g.acquire().await;
        assert_eq!(
            g.observe(ticket, Outcome::Throttled, "c").await,
            Some(ThrottleKind::Connection)
        );
        assert_eq!(counts(&g), (1, 1));
        // A call granted before a cut is answered after it: not counted against the new epoch.
        let early = g.acquire().await;
        assert!(g.hear("1 900"));
        assert_eq!(counts(&g), (0, 0));
        assert_eq!(g.observe(early, Outcome::Sent, "c").await, None);
        let early = g.acquire().await;
        assert!(g.hear("2 800"));
        g.observe(early, Outcome::Throttled, "c").await;
        assert_eq!(counts(&g), (0, 0));
    }

    #[tokio::test]
    async fn an_account_throttle_drops_the_tokens_in_hand_and_a_slow_clients_does_not() {
        let server = RedisServer::start();
        let (g, metrics) = governor(&server, "flush", 10_000).await;
        let ticket = g.acquire().await;
        g.observe(ticket, Outcome::Sent, "ok").await;
        assert_eq!(metrics.governor_calls.get(), 1);
        // Three slow clients: the tokens in hand (a grant of 400) are still spent.
        for id in ["a", "b", "c"] {
            let ticket = g.acquire().await;
            let kind = g.observe(ticket, Outcome::Throttled, id).await;
            assert_eq!(kind, Some(ThrottleKind::Connection));
        }
        assert_eq!(metrics.governor_calls.get(), 1);
        // A fourth connection: the account's budget is spent (too few answers yet to ask for a cut), and
        // the tokens in hand are dropped: the next token is a new grant.
        let ticket = g.acquire().await;
        let kind = g.observe(ticket, Outcome::Throttled, "d").await;
        assert_eq!(kind, Some(ThrottleKind::Account));
        assert_eq!(metrics.governor_calls.get(), 1);
        drop(g.acquire().await);
        assert_eq!(metrics.governor_calls.get(), 2);
    }

    #[tokio::test]
    async fn a_worker_refused_by_a_bucket_a_second_ahead_asks_again_for_a_whole_grant() {
        let server = RedisServer::start();
        // 10 a second: this worker's grant is 2 tokens, and the bucket refills one in 100 ms.
        let (g, metrics) = governor(&server, "ahead", 10).await;
        let keys = (g.inner.bucket_key.clone(), g.inner.workers_key.clone());
        // Another worker takes a token at a time until the bucket is a second of the rate ahead and
        // refuses: less than one token short of refusing 2 to anyone for the next 100 ms.
        loop {
            let other = bucket::Call {
                rate: 10,
                burst: 10,
                want: 1,
                cut: false,
                admitted: None,
                epoch: 0,
                worker: "other",
                heartbeat: true,
            };
            let a = bucket::call(&g.inner.redis, (&keys.0, &keys.1), other)
                .await
                .unwrap();
            if a.granted == 0 {
                assert!(a.wait_ms > 0, "{a:?}");
                break;
            }
        }
        // This worker is refused too, waits as told, and asks again: it holds a whole grant, less the
        // token it spends.
        drop(g.acquire().await);
        assert!(metrics.governor_calls.get() >= 2);
        assert_eq!(g.inner.local.lock().await.tokens, 1);
    }

    #[tokio::test]
    async fn a_worker_asks_for_a_cut_at_most_once_per_cut_gap() {
        let server = RedisServer::start();
        let (g, metrics) = governor(&server, "ask", 10_000).await;
        let keys = (g.inner.bucket_key.clone(), g.inner.workers_key.clone());
        // Another worker has cut the fleet's rate: the bucket is in epoch 1.
        let other = bucket::Call {
            rate: 10_000,
            burst: 10_000,
            want: 0,
            cut: true,
            admitted: Some(1.0),
            epoch: 0,
            worker: "other",
            heartbeat: true,
        };
        let a = bucket::call(&g.inner.redis, (&keys.0, &keys.1), other)
            .await
            .unwrap();
        assert_eq!(a.epoch, 1);
        // This worker's answers in epoch 1 are a sample.
        for i in 0..MIN_SAMPLE {
            let ticket = g.acquire().await;
            g.observe(ticket, Outcome::Sent, &format!("c{i}")).await;
        }
        // A 429 to a call of epoch 0 asks (the bucket refuses: that epoch is over); the next 429s within
        // the cut gap do not ask again.
        let asked = metrics.governor_calls.get();
        g.cut(0).await;
        assert_eq!(metrics.governor_calls.get(), asked + 1);
        g.cut(0).await;
        g.cut(0).await;
        assert_eq!(metrics.governor_calls.get(), asked + 1);
        // One gap later (real time passing, not a synchronisation) it asks again.
        tokio::time::sleep(Duration::from_millis(2 * bucket::CUT_GAP_MS)).await;
        g.cut(0).await;
        assert_eq!(metrics.governor_calls.get(), asked + 2);
        assert_eq!(g.inner.epoch.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn an_idle_worker_tells_the_bucket_it_is_live_once_its_heartbeat_is_stale_and_leaves_when_it_stops()
     {
        let server = RedisServer::start();
        let (g, metrics) = governor(&server, "idle", 1_000).await;
        let stop = tokio_util::sync::CancellationToken::new();
        let alive = tokio::spawn(g.clone().keep_alive(stop.clone()));
        // At once, then every KEEP_ALIVE_EVERY (its heartbeat is then older than HEARTBEAT_EVERY).
        let calls = |n: u64| {
            let metrics = metrics.clone();
            tokio::time::timeout(KEEP_ALIVE_EVERY * 2, async move {
                while metrics.governor_calls.get() < n {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        calls(1).await.expect("a first heartbeat");
        calls(2).await.expect("a heartbeat one interval later");
        let live = || {
            let mut redis = g.inner.redis.clone();
            let mut zcard = redis::cmd("ZCARD");
            zcard.arg(&g.inner.workers_key);
            async move { zcard.query_async::<u32>(&mut redis).await.unwrap() }
        };
        assert_eq!(live().await, 1);
        stop.cancel();
        alive.await.unwrap();
        assert_eq!(live().await, 0);
    }

    #[tokio::test]
    async fn the_burst_scales_with_the_rate() {
        let server = RedisServer::start();
        let (g, _) = governor(&server, "scaled", 1_000).await;
        assert_eq!(g.burst_at(1_000), 1_000);
        assert_eq!(g.burst_at(100), 100);
        assert_eq!(g.burst_at(0), 1);
        let redis = g.inner.redis.clone();
        let g = Governor::new(
            redis,
            &Keyspace::new("t:"),
            "half",
            1_000,
            500,
            WorkerMetrics::new(),
        );
        assert_eq!(g.burst_at(1_000), 500);
        assert_eq!(g.burst_at(100), 50);
    }

    #[tokio::test]
    async fn without_redis_an_account_throttle_quarters_the_local_share_at_most_once_a_second() {
        let mut server = RedisServer::start();
        let (g, _) = governor(&server, "local", 1_000).await;
        // The bucket reached once: the fleet's rate and its one live worker are known.
        drop(g.acquire().await);
        server.stop();
        // Once the tokens in hand are spent (a grant of 40), the next grant finds Redis gone: the worker
        // paces itself, in grants of the same size.
        for _ in 0..40 {
            drop(g.acquire().await);
        }
        assert!(g.is_fallback());
        let batch = pacing::batch(1_000, 1_000);
        assert_eq!(g.inner.local.lock().await.tokens, batch - 1);
        let share = || async { g.inner.local.lock().await.pace.map(|p| p.share()) };
        assert_eq!(share().await, Some(1_000.0));
        g.cut(0).await;
        assert_eq!(share().await, Some(1_000.0 * bucket::CUT_FACTOR));
        // The next 429s within the second do not cut it again.
        g.cut(0).await;
        assert_eq!(share().await, Some(1_000.0 * bucket::CUT_FACTOR));
    }

    #[tokio::test]
    async fn a_busy_worker_heartbeats_once_a_second_not_with_every_grant() {
        let server = RedisServer::start();
        let (g, _) = governor(&server, "beat", 1_000).await;
        let seen = || {
            let mut redis = g.inner.redis.clone();
            let mut zscore = redis::cmd("ZSCORE");
            zscore.arg(&g.inner.workers_key).arg(&g.inner.worker_id);
            async move { zscore.query_async::<f64>(&mut redis).await.unwrap() }
        };
        g.call(0, false, None).await.unwrap();
        let first = seen().await;
        g.call(0, false, None).await.unwrap();
        assert_eq!(seen().await, first);
        // A second on (real time passing, not a synchronisation), the next grant carries a heartbeat.
        tokio::time::sleep(HEARTBEAT_EVERY).await;
        g.call(0, false, None).await.unwrap();
        assert!(seen().await > first);
    }
}
