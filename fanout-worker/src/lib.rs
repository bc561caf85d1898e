//! The fan-out worker: takes jobs off the queue and delivers them to API Gateway connections through the
//! Management API (`PostToConnection`, `DeleteConnection`).
//!
//! Read the modules in the order a job meets them:
//! - [`config`]: flags and `FANOUT_*` environment, validated into [`config::Settings`].
//! - [`receiver`]: pollers with back-pressure, the visibility heartbeat, and holding jobs through outages.
//! - [`lease`]: fencing tokens, so that one job never runs twice at once and a stale holder writes nothing.
//! - [`process`]: one job from receipt to acknowledgement.
//! - [`ordered`]: an ordered channel's backlog delivered in publish order by one drain at a time.
//! - [`progress`]: the recipients a job has delivered, so a job received again skips them.
//! - [`planner`]: channel, subject and everyone targets expanded with `SSCAN`, split into chunk jobs.
//! - [`recipients`]: connection ids resolved to Management API endpoints from their records.
//! - [`dispatch`]: every recipient through the governor, the in-flight limit, the client and retries.
//! - [`lanes`]: the interactive lane's reserved share of jobs in hand and calls in flight, and the gate
//!   that gives its calls the governor's next token before bulk ones.
//! - [`delivery`]: the [`delivery::Deliver`] trait, its [`delivery::Outcome`]s, the lean client
//!   ([`delivery::LeanDeliver`], the default) and the AWS SDK client ([`delivery::SdkDeliver`]).
//! - [`governor`]: the fleet-wide token bucket in Redis, budget discovery, slow-client detection, the
//!   Redis-down fallback and gateway stalls.
//! - [`retry`]: backoff schedules.
//! - [`gone`]: forgetting connections API Gateway says are gone, and stale ids.
//! - [`requeue`]: leftovers back on the queue, or to the dead-letter queue with their reason.
//! - [`report`]: the per-broadcast delivery report in Redis.
//! - [`metrics`]: the `/metrics` and `/healthz` listener.
//! - [`supervise`]: pollers restarted after a panic, and the health `/healthz` reports.
//! - [`shutdown`]: stop receiving, drain within a grace period, hand back the rest.
//! - [`dlq`]: `fanout-worker dlq list|show|redrive`, the operator's view of the dead-letter queue.

pub mod config;
pub mod delivery;
pub mod dispatch;
pub mod dlq;
pub mod gone;
pub mod governor;
pub mod lanes;
pub mod lease;
pub mod metrics;
pub mod ordered;
pub mod planner;
pub mod process;
pub mod progress;
pub mod receiver;
pub mod recipients;
pub mod report;
pub mod requeue;
pub mod retry;
pub mod shutdown;
pub mod supervise;

use common::job::Lane;
use common::keys::Keyspace;
use common::metrics::WorkerMetrics;
use common::queue::{Lanes, QueueError, QueueOptions};
use common::store::{Redis, StoreError};
use config::Settings;
use delivery::Deliver;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("Redis: {0}")]
    Redis(#[from] StoreError),
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    #[error("Management API client: {0}")]
    Client(#[from] mgmt_client::client::ClientError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running worker.
#[derive(Debug)]
pub struct Worker {
    metrics: WorkerMetrics,
    metrics_addr: SocketAddr,
    stop_receiving: CancellationToken,
    hard_stop: CancellationToken,
    tracker: TaskTracker,
    pollers: tokio::task::JoinSet<()>,
    server: tokio::task::JoinHandle<()>,
    /// Writes outcomes recorded late ([`progress::Owed`]); stopped after the drain.
    owed_writer: tokio::task::JoinHandle<()>,
    /// The governor's heartbeat (stopped with `stop_writing`).
    keep_alive: tokio::task::JoinHandle<()>,
    stop_writing: CancellationToken,
    grace: Duration,
}

/// Opens both lanes' queues (Redis Streams with a connection of its own for blocking reads, per lane).
pub async fn open_queue(settings: &Settings) -> Result<Lanes, QueueError> {
    let options = QueueOptions {
        visibility_timeout: settings.visibility_timeout,
        dead_letter_url: settings.dead_letter_queue_url.clone(),
        key_prefix: settings.key_prefix.clone(),
        consumer: format!(
            "worker-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ),
    };
    Lanes::open(&settings.queue_url, &settings.bulk_queue_url, options).await
}

impl Worker {
    /// Connects to Redis and the queue (waiting up to 30 s for them), binds the metrics listener and
    /// starts the pollers.
    pub async fn start(settings: Settings, deliver: Arc<dyn Deliver>) -> Result<Self, StartError> {
        use backon::{ExponentialBuilder, Retryable};
        let patience = ExponentialBuilder::default()
            .with_max_delay(Duration::from_secs(5))
            .with_total_delay(Some(Duration::from_secs(30)))
            .without_max_times();
        let redis = (|| Redis::connect(&settings.redis_url))
            .retry(patience)
            .notify(|e, wait| tracing::warn!(error = %e, ?wait, "Redis is not reachable yet"))
            .await?;
        let queue = (|| open_queue(&settings))
            .retry(patience)
            .when(|e| !matches!(e, QueueError::Url(_)))
            .notify(|e, wait| tracing::warn!(error = %e, ?wait, "the queue is not reachable yet"))
            .await?;
        let metrics = WorkerMetrics::new();
        deliver.register_metrics(&metrics.registry);
        let keys = Keyspace::new(settings.key_prefix.clone());
        let governor = governor::Governor::new(
            redis.clone(),
            &keys,
            &settings.rate_bucket,
            settings.rate_per_sec,
            settings.burst,
            metrics.clone(),
        );
        let stop_writing = CancellationToken::new();
        let keep_alive = tokio::spawn(governor.clone().keep_alive(stop_writing.clone()));
        if !redis.is_cluster() {
            tokio::spawn(
                governor
                    .clone()
                    .listen(settings.redis_url.clone(), stop_writing.clone()),
            );
        }
        let hard_stop = CancellationToken::new();
        let owed = progress::Owed::default();
        let ctx = Arc::new(process::Ctx {
            owed,
            routes: recipients::Routes::new(settings.gateways.clone(), &settings.aws_region),
            dispatcher: dispatch::Dispatcher {
                deliver,
                governor: Arc::new(governor),
                in_flight: lanes::Shares::new(
                    settings.max_in_flight,
                    settings.interactive_reserved_in_flight,
                ),
                gate: Arc::new(lanes::TokenGate::new()),
                retry: retry::RetryPolicy {
                    retries: settings.retries,
                    min_delay: settings.retry_min_delay,
                    max_delay: settings.retry_max_delay,
                },
                connect_grace: settings.connect_grace,
                metrics: metrics.clone(),
            },
            reports: report::Reports {
                redis: redis.clone(),
                keys: keys.clone(),
                ttl: settings.report_ttl,
            },
            redis,
            keys,
            lanes: queue.clone(),
            metrics: metrics.clone(),
            hard_stop: hard_stop.clone(),
            settings: Arc::new(settings),
        });
        let listener = tokio::net::TcpListener::bind(ctx.settings.metrics_listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: ctx.settings.metrics_listen,
                source,
            })?;
        let metrics_addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: ctx.settings.metrics_listen,
            source,
        })?;
        let health = supervise::Health::new(ctx.settings.pollers * Lane::ALL.len());
        let app = metrics::app(metrics.clone(), queue.clone(), health.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
        let owed_writer = tokio::spawn(
            ctx.owed
                .clone()
                .keep_writing(ctx.redis.clone(), stop_writing.clone()),
        );
        let stop_receiving = CancellationToken::new();
        let tracker = TaskTracker::new();
        let room = lanes::Shares::new(
            ctx.settings.max_jobs_in_hand,
            ctx.settings.interactive_reserved_jobs,
        );
        let mut pollers = tokio::task::JoinSet::new();
        for lane in Lane::ALL {
            for _ in 0..ctx.settings.pollers {
                let (ctx, room, tracker, stop) = (
                    ctx.clone(),
                    room.clone(),
                    tracker.clone(),
                    stop_receiving.clone(),
                );
                pollers.spawn(supervise::supervise(
                    move || {
                        receiver::poll(
                            ctx.clone(),
                            lane,
                            room.clone(),
                            tracker.clone(),
                            stop.clone(),
                        )
                    },
                    stop_receiving.clone(),
                    health.clone(),
                    metrics.clone(),
                ));
            }
        }
        tracing::info!(
            queue = queue.backend(),
            interactive_reserved_jobs = ctx.settings.interactive_reserved_jobs,
            interactive_reserved_in_flight = ctx.settings.interactive_reserved_in_flight,
            metrics = %metrics_addr,
            rate_per_sec = ctx.settings.rate_per_sec,
            "fanout-worker started"
        );
        Ok(Self {
            metrics,
            metrics_addr,
            stop_receiving,
            hard_stop,
            tracker,
            pollers,
            server,
            owed_writer,
            keep_alive,
            stop_writing,
            grace: ctx.settings.shutdown_grace,
        })
    }

    /// This worker's metrics.
    pub fn metrics(&self) -> &WorkerMetrics {
        &self.metrics
    }

    /// Where `/metrics` and `/healthz` are served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Stops receiving, drains (see [`shutdown`]), writes the outcomes recorded late and stops the listener.
    pub async fn shutdown(mut self) {
        shutdown::drain(
            &self.stop_receiving,
            &self.hard_stop,
            &self.tracker,
            self.grace,
        )
        .await;
        while self.pollers.join_next().await.is_some() {}
        self.stop_writing.cancel();
        if let Err(e) = self.owed_writer.await {
            tracing::error!(error = %e, "the writer of late outcomes failed");
        }
        let _ = self.keep_alive.await;
        self.server.abort();
    }
}

/// The client `settings.delivery_client` names, with the default AWS credential chain.
pub async fn deliver_from_env(settings: &Settings) -> Result<Arc<dyn Deliver>, StartError> {
    Ok(match settings.delivery_client {
        config::DeliveryClient::Lean => Arc::new(
            delivery::LeanDeliver::from_env(
                &settings.aws_region,
                settings.call_timeout,
                settings.max_in_flight,
            )
            .await?,
        ),
        config::DeliveryClient::Sdk => {
            Arc::new(delivery::SdkDeliver::from_env(settings.call_timeout).await)
        }
    })
}

/// Runs an operator command (`fanout-worker dlq [--lane bulk] ...`) with the lane's queue the
/// configuration names.
pub async fn run_command(
    config: &config::Config,
    command: &config::Command,
    out: &mut dyn std::io::Write,
) -> Result<(), dlq::DlqError> {
    let config::Command::Dlq { lane, action } = command;
    let options = QueueOptions {
        dead_letter_url: config
            .dead_letter_queue_url
            .clone()
            .filter(|u| !u.is_empty()),
        key_prefix: config.shared.key_prefix.clone(),
        ..QueueOptions::default()
    };
    let url = match Lane::from(*lane) {
        Lane::Interactive => config.shared.queue_url.clone(),
        Lane::Bulk => common::queue::lanes::resolve_bulk_url(
            &config.shared.queue_url,
            config.shared.bulk_queue_url.as_deref(),
        )?,
    };
    let queue = common::queue::open(&url, options).await?;
    dlq::run(queue.as_ref(), action, out).await
}

/// Runs a worker with the configured client until `shutdown` resolves, then drains.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    tracing::info!(client = ?settings.delivery_client, "Management API client");
    let deliver = deliver_from_env(&settings).await?;
    let worker = Worker::start(settings, deliver).await?;
    shutdown.await;
    worker.shutdown().await;
    Ok(())
}
