//! Every Prometheus metric name the product exports, and the metric families each service registers.
//! Long because every family is declared, described and registered here, in one place the dashboard reads.
//!
//! Names start with `fanout_` and vary by bounded labels (`route`, `outcome`, `reason`, `target`,
//! `operation`), never by a connection, channel or user id. A test keeps every name in that shape.

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// The metric names, in one place.
pub mod names {
    pub const CALLBACKS_TOTAL: &str = "fanout_callbacks_total";
    pub const CALLBACK_DURATION_SECONDS: &str = "fanout_callback_duration_seconds";
    pub const CONNECTS_REFUSED_TOTAL: &str = "fanout_connects_refused_total";
    pub const TOKENS_ISSUED_TOTAL: &str = "fanout_tokens_issued_total";
    pub const TOKENS_REFUSED_TOTAL: &str = "fanout_tokens_refused_total";
    pub const JOBS_ENQUEUED_TOTAL: &str = "fanout_jobs_enqueued_total";
    pub const ENQUEUE_FAILURES_TOTAL: &str = "fanout_enqueue_failures_total";
    pub const API_REQUESTS_TOTAL: &str = "fanout_api_requests_total";
    pub const REDIS_ERRORS_TOTAL: &str = "fanout_redis_errors_total";
    pub const WEBHOOK_CALLS_TOTAL: &str = "fanout_webhook_calls_total";
    pub const LIVE_CONNECTIONS: &str = "fanout_live_connections";
    pub const QUEUE_DEPTH: &str = "fanout_queue_depth";
    pub const CONNECTIONS_SWEPT_TOTAL: &str = "fanout_connections_swept_total";
    pub const LIFECYCLE_BATCHES_TOTAL: &str = "fanout_lifecycle_batches_total";
    pub const LIFECYCLE_RETRIES_TOTAL: &str = "fanout_lifecycle_retries_total";
    pub const LIFECYCLE_EVENTS_DROPPED_TOTAL: &str = "fanout_lifecycle_events_dropped_total";

    // The fan-out worker's.
    pub const JOBS_RECEIVED_TOTAL: &str = "fanout_jobs_received_total";
    pub const JOBS_COMPLETED_TOTAL: &str = "fanout_jobs_completed_total";
    pub const JOBS_DEAD_LETTERED_TOTAL: &str = "fanout_jobs_dead_lettered_total";
    pub const CHUNKS_PLANNED_TOTAL: &str = "fanout_chunks_planned_total";
    pub const DELIVERIES_TOTAL: &str = "fanout_deliveries_total";
    pub const DELIVERY_RETRIES_TOTAL: &str = "fanout_delivery_retries_total";
    pub const THROTTLES_TOTAL: &str = "fanout_throttles_total";
    pub const CONNECTIONS_REMOVED_TOTAL: &str = "fanout_connections_removed_total";
    pub const DELIVERY_DURATION_SECONDS: &str = "fanout_delivery_duration_seconds";
    pub const END_TO_END_SECONDS: &str = "fanout_end_to_end_seconds";
    pub const DELIVERIES_IN_FLIGHT: &str = "fanout_deliveries_in_flight";
    pub const JOBS_IN_HAND: &str = "fanout_jobs_in_hand";
    pub const SEND_RATE: &str = "fanout_send_rate";
    pub const LEASES_LOST_TOTAL: &str = "fanout_leases_lost_total";
    pub const POLLER_RESTARTS_TOTAL: &str = "fanout_poller_restarts_total";
    pub const GOVERNOR_BUDGET_ESTIMATE: &str = "fanout_governor_budget_estimate";
    pub const GOVERNOR_FACTOR: &str = "fanout_governor_factor";
    pub const GOVERNOR_FALLBACK: &str = "fanout_governor_fallback";
    pub const GOVERNOR_BUCKET_CALLS_TOTAL: &str = "fanout_governor_bucket_calls_total";
    pub const GATEWAY_STALLED: &str = "fanout_gateway_stalled";
    pub const GATEWAY_STALLS_TOTAL: &str = "fanout_gateway_stalls_total";

    // Per lane (`lane`: interactive, bulk), ingest's and the worker's.
    pub const LANE_JOBS_ENQUEUED_TOTAL: &str = "fanout_lane_jobs_enqueued_total";
    pub const LANE_JOBS_RECEIVED_TOTAL: &str = "fanout_lane_jobs_received_total";
    pub const LANE_JOBS_IN_HAND: &str = "fanout_lane_jobs_in_hand";
    pub const LANE_QUEUE_WAIT_SECONDS: &str = "fanout_lane_queue_wait_seconds";

    /// Every name above, for the shape test and for tools that check dashboards against the code.
    pub const ALL: &[&str] = &[
        CALLBACKS_TOTAL,
        CALLBACK_DURATION_SECONDS,
        CONNECTS_REFUSED_TOTAL,
        TOKENS_ISSUED_TOTAL,
        TOKENS_REFUSED_TOTAL,
        JOBS_ENQUEUED_TOTAL,
        ENQUEUE_FAILURES_TOTAL,
        API_REQUESTS_TOTAL,
        REDIS_ERRORS_TOTAL,
        WEBHOOK_CALLS_TOTAL,
        LIVE_CONNECTIONS,
        QUEUE_DEPTH,
        CONNECTIONS_SWEPT_TOTAL,
        LIFECYCLE_BATCHES_TOTAL,
        LIFECYCLE_RETRIES_TOTAL,
        LIFECYCLE_EVENTS_DROPPED_TOTAL,
        JOBS_RECEIVED_TOTAL,
        JOBS_COMPLETED_TOTAL,
        JOBS_DEAD_LETTERED_TOTAL,
        CHUNKS_PLANNED_TOTAL,
        DELIVERIES_TOTAL,
        DELIVERY_RETRIES_TOTAL,
        THROTTLES_TOTAL,
        CONNECTIONS_REMOVED_TOTAL,
        DELIVERY_DURATION_SECONDS,
        END_TO_END_SECONDS,
        DELIVERIES_IN_FLIGHT,
        JOBS_IN_HAND,
        SEND_RATE,
        LEASES_LOST_TOTAL,
        POLLER_RESTARTS_TOTAL,
        GOVERNOR_BUDGET_ESTIMATE,
        GOVERNOR_FACTOR,
        GOVERNOR_FALLBACK,
        GOVERNOR_BUCKET_CALLS_TOTAL,
        GATEWAY_STALLED,
        GATEWAY_STALLS_TOTAL,
        LANE_JOBS_ENQUEUED_TOTAL,
        LANE_JOBS_RECEIVED_TOTAL,
        LANE_JOBS_IN_HAND,
        LANE_QUEUE_WAIT_SECONDS,
    ];

    /// Gauges: a level, not a count, with no unit suffix.
    pub const GAUGES: &[&str] = &[
        LIVE_CONNECTIONS,
        QUEUE_DEPTH,
        DELIVERIES_IN_FLIGHT,
        JOBS_IN_HAND,
        SEND_RATE,
        GOVERNOR_BUDGET_ESTIMATE,
        GOVERNOR_FACTOR,
        GOVERNOR_FALLBACK,
        GATEWAY_STALLED,
        LANE_JOBS_IN_HAND,
    ];
}

/// Every `reason` label of `fanout_jobs_dead_lettered_total`.
pub const DEAD_LETTER_REASONS: &[&str] = &[
    "throttled",
    "failed",
    "forbidden",
    "unroutable",
    "payload_too_large",
    "shutdown",
    "malformed",
    "unsupported_version",
    "too_many_receives",
];

/// Every `reason` label of `fanout_lifecycle_events_dropped_total`: the buffer was full, the batch
/// failed its last attempt, or ingest stopped before sending it.
pub const LIFECYCLE_DROP_REASONS: &[&str] = &["buffer_full", "failed", "shutdown"];

/// Callback latency buckets: ingest's own time is well under a millisecond; Redis adds a round trip.
const CALLBACK_BUCKETS: &[f64] = &[
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// The metrics ingest exports.
#[derive(Debug, Clone)]
pub struct IngestMetrics {
    pub registry: Registry,
    /// Gateway callbacks by `route` (connect, disconnect, message) and `outcome` (ok or an error code).
    pub callbacks: IntCounterVec,
    /// Gateway callback latency by `route`.
    pub callback_duration: HistogramVec,
    /// `$connect` refusals by `reason`.
    pub connects_refused: IntCounterVec,
    pub tokens_issued: IntCounter,
    /// Token refusals by `reason` (`rate_limited` at issue, `invalid_or_expired` at connect).
    pub tokens_refused: IntCounterVec,
    /// Jobs put on the queue by `target` kind.
    pub jobs_enqueued: IntCounterVec,
    /// Jobs put on the queue by `lane`.
    pub lane_jobs_enqueued: IntCounterVec,
    pub enqueue_failures: IntCounter,
    /// Application API requests by `operation` and `outcome`.
    pub api_requests: IntCounterVec,
    pub redis_errors: IntCounter,
    /// Webhook calls for unknown actions by `outcome`.
    pub webhook_calls: IntCounterVec,
    /// Connections registered in Redis, read at scrape time.
    pub live_connections: IntGauge,
    /// Jobs waiting on the queue, read at scrape time.
    pub queue_depth: IntGauge,
    /// Connections whose record expired without a `$disconnect`, removed by the stale-connection sweep.
    pub connections_swept: IntCounter,
    /// Lifecycle webhook batches by `outcome` (`sent`, `failed` after the last attempt).
    pub lifecycle_batches: IntCounterVec,
    /// Lifecycle webhook attempts that failed and were tried again.
    pub lifecycle_retries: IntCounter,
    /// Lifecycle events not delivered, by `reason` (see [`LIFECYCLE_DROP_REASONS`]).
    pub lifecycle_events_dropped: IntCounterVec,
}

impl IngestMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        let callback_duration = HistogramVec::new(
            HistogramOpts::new(
                names::CALLBACK_DURATION_SECONDS,
                "Gateway callback latency in ingest.",
            )
            .buckets(CALLBACK_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(callback_duration.clone()))
            .expect("metric registered once");
        let metrics = Self {
            callbacks: counter_vec(
                names::CALLBACKS_TOTAL,
                "Gateway callbacks by route and outcome.",
                &["route", "outcome"],
            ),
            callback_duration,
            connects_refused: counter_vec(
                names::CONNECTS_REFUSED_TOTAL,
                "Refused $connect callbacks by reason.",
                &["reason"],
            ),
            tokens_issued: counter(names::TOKENS_ISSUED_TOTAL, "Connect tokens issued."),
            tokens_refused: counter_vec(
                names::TOKENS_REFUSED_TOTAL,
                "Connect tokens refused, by reason.",
                &["reason"],
            ),
            jobs_enqueued: counter_vec(
                names::JOBS_ENQUEUED_TOTAL,
                "Jobs put on the queue, by target kind.",
                &["target"],
            ),
            lane_jobs_enqueued: counter_vec(
                names::LANE_JOBS_ENQUEUED_TOTAL,
                "Jobs put on the queue, by lane (interactive, bulk).",
                &["lane"],
            ),
            enqueue_failures: counter(
                names::ENQUEUE_FAILURES_TOTAL,
                "Jobs that could not be put on the queue.",
            ),
            api_requests: counter_vec(
                names::API_REQUESTS_TOTAL,
                "Application API requests by operation and outcome.",
                &["operation", "outcome"],
            ),
            redis_errors: counter(names::REDIS_ERRORS_TOTAL, "Redis commands that failed."),
            webhook_calls: counter_vec(
                names::WEBHOOK_CALLS_TOTAL,
                "Application webhook calls by outcome.",
                &["outcome"],
            ),
            live_connections: gauge(names::LIVE_CONNECTIONS, "Connections registered in Redis."),
            queue_depth: gauge(names::QUEUE_DEPTH, "Jobs waiting on the queue."),
            connections_swept: counter(
                names::CONNECTIONS_SWEPT_TOTAL,
                "Connections whose record expired without a $disconnect, removed by the stale-connection sweep.",
            ),
            lifecycle_batches: counter_vec(
                names::LIFECYCLE_BATCHES_TOTAL,
                "Lifecycle webhook batches by outcome.",
                &["outcome"],
            ),
            lifecycle_retries: counter(
                names::LIFECYCLE_RETRIES_TOTAL,
                "Lifecycle webhook attempts retried.",
            ),
            lifecycle_events_dropped: counter_vec(
                names::LIFECYCLE_EVENTS_DROPPED_TOTAL,
                "Lifecycle events not delivered, by reason.",
                &["reason"],
            ),
            registry,
        };
        for outcome in ["sent", "failed"] {
            metrics.lifecycle_batches.with_label_values(&[outcome]);
        }
        for outcome in ["ok", "failed", "invalid_reply"] {
            metrics.webhook_calls.with_label_values(&[outcome]);
        }
        for reason in LIFECYCLE_DROP_REASONS {
            metrics
                .lifecycle_events_dropped
                .with_label_values(&[reason]);
        }
        metrics
    }
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Delivery latency buckets: a `PostToConnection` round trip is 10–50 ms at AWS, sub-millisecond locally.
const DELIVERY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// End-to-end buckets: from the enqueue of a job to its last delivery, up to minutes for a big broadcast.
const END_TO_END_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The metrics the fan-out worker exports. Labels are bounded: `target` (channel, subject, connections,
/// all), `outcome`, `reason` and `kind` take a handful of fixed values each.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    pub registry: Registry,
    /// Jobs taken off the queue, by `target` kind (`invalid` when the body is not a job).
    pub jobs_received: IntCounterVec,
    /// Jobs finished by `outcome`: `acked` (every recipient at a final outcome or handed on), `requeued`
    /// (acked after leftovers went back on the queue), `released` (put back untouched, on shutdown).
    pub jobs_completed: IntCounterVec,
    /// Jobs (or their leftovers) moved to the dead-letter queue, by `reason`.
    pub jobs_dead_lettered: IntCounterVec,
    /// Chunk jobs a planner put on the queue.
    pub chunks_planned: IntCounter,
    /// Final delivery outcomes by `outcome`: sent, gone, stale, forbidden, too_large, failed.
    pub deliveries: IntCounterVec,
    /// Calls retried within a job, by `reason`: throttled, http_5xx, timeout, network.
    pub delivery_retries: IntCounterVec,
    /// 429 answers by `kind`: `account` (spread over many connections: the shared budget) or
    /// `connection` (concentrated on one: its buffer is full).
    pub throttles: IntCounterVec,
    /// Connections removed from Redis by `reason`: `gone` (410) or `stale` (set member without a record).
    pub connections_removed: IntCounterVec,
    /// Management API call latency by `operation` (post, delete).
    pub delivery_duration: HistogramVec,
    /// From the enqueue of a job to its last delivery, by `target` kind (`broadcast` for a whole
    /// broadcast, observed when its last chunk finishes).
    pub end_to_end: HistogramVec,
    pub deliveries_in_flight: IntGauge,
    pub jobs_in_hand: IntGauge,
    /// The shared send rate the governor currently allows, in requests per second.
    pub send_rate: IntGauge,
    /// Jobs waiting on the queue, read at scrape time.
    pub queue_depth: IntGauge,
    pub redis_errors: IntCounter,
    /// Jobs a worker stopped because it no longer held them, by `reason`: `taken_over` (received again
    /// with a newer fencing token) or `expired` (the heartbeat could not extend the visibility in time).
    pub leases_lost: IntCounterVec,
    /// Pollers restarted after they ended unexpectedly (a panic).
    pub poller_restarts: IntCounter,
    /// The budget the governor believes the gateway grants the fleet, in requests per second.
    pub governor_estimate: IntGauge,
    /// The fleet's current rate as a share of the configured budget (after headroom), 0 to 1.
    pub governor_factor: Gauge,
    /// 1 while this worker paces itself at its share because the shared bucket is unreachable.
    pub governor_fallback: IntGauge,
    /// Calls of the shared bucket's script (grants, waits, cuts, probes).
    pub governor_calls: IntCounter,
    /// 1 while the Management API does not answer (calls time out or fail, no answer for seconds).
    pub gateway_stalled: IntGauge,
    /// Jobs taken off the queue, by `lane` (interactive, bulk).
    pub lane_jobs_received: IntCounterVec,
    /// Jobs received and not yet finished, by `lane`.
    pub lane_jobs_in_hand: IntGaugeVec,
    /// From a job's first enqueue (its publish; a chunk's broadcast) to its receipt, by `lane`.
    pub lane_queue_wait: HistogramVec,
    /// Stalls of the Management API seen.
    pub gateway_stalls: IntCounter,
}

impl WorkerMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        fn reg<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: T) -> T {
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        }
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let counter = |name: &str, help: &str| {
            reg(
                &registry,
                IntCounter::new(name, help).expect("valid metric"),
            )
        };
        let gauge = |name: &str, help: &str| {
            reg(&registry, IntGauge::new(name, help).expect("valid metric"))
        };
        let histogram = |name: &str, help: &str, label: &str, buckets: &[f64]| {
            reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                    &[label],
                )
                .expect("valid metric"),
            )
        };
        let metrics = Self {
            jobs_received: counter_vec(
                names::JOBS_RECEIVED_TOTAL,
                "Jobs taken off the queue, by target kind.",
                &["target"],
            ),
            jobs_completed: counter_vec(
                names::JOBS_COMPLETED_TOTAL,
                "Jobs finished, by outcome (acked, requeued, released).",
                &["outcome"],
            ),
            jobs_dead_lettered: counter_vec(
                names::JOBS_DEAD_LETTERED_TOTAL,
                "Jobs or their leftovers moved to the dead-letter queue, by reason.",
                &["reason"],
            ),
            chunks_planned: counter(
                names::CHUNKS_PLANNED_TOTAL,
                "Chunk jobs put on the queue by planners.",
            ),
            deliveries: counter_vec(
                names::DELIVERIES_TOTAL,
                "Final delivery outcomes per recipient.",
                &["outcome"],
            ),
            delivery_retries: counter_vec(
                names::DELIVERY_RETRIES_TOTAL,
                "Management API calls retried within a job, by reason.",
                &["reason"],
            ),
            throttles: counter_vec(
                names::THROTTLES_TOTAL,
                "429 answers by kind (account: spread out; connection: one slow client).",
                &["kind"],
            ),
            connections_removed: counter_vec(
                names::CONNECTIONS_REMOVED_TOTAL,
                "Connections removed from Redis by the worker, by reason.",
                &["reason"],
            ),
            delivery_duration: histogram(
                names::DELIVERY_DURATION_SECONDS,
                "Management API call latency.",
                "operation",
                DELIVERY_BUCKETS,
            ),
            end_to_end: histogram(
                names::END_TO_END_SECONDS,
                "From enqueue to the last delivery of a job or broadcast.",
                "target",
                END_TO_END_BUCKETS,
            ),
            deliveries_in_flight: gauge(
                names::DELIVERIES_IN_FLIGHT,
                "Management API calls in flight.",
            ),
            jobs_in_hand: gauge(names::JOBS_IN_HAND, "Jobs received and not yet finished."),
            send_rate: gauge(
                names::SEND_RATE,
                "Requests per second the shared governor currently allows.",
            ),
            queue_depth: gauge(names::QUEUE_DEPTH, "Jobs waiting on the queue."),
            redis_errors: counter(names::REDIS_ERRORS_TOTAL, "Redis commands that failed."),
            leases_lost: counter_vec(
                names::LEASES_LOST_TOTAL,
                "Jobs stopped because the worker no longer held them, by reason (taken_over, expired).",
                &["reason"],
            ),
            poller_restarts: counter(
                names::POLLER_RESTARTS_TOTAL,
                "Queue pollers restarted after they ended unexpectedly.",
            ),
            governor_estimate: gauge(
                names::GOVERNOR_BUDGET_ESTIMATE,
                "The budget the governor believes the gateway grants the fleet, requests per second.",
            ),
            governor_factor: reg(
                &registry,
                Gauge::new(
                    names::GOVERNOR_FACTOR,
                    "The fleet's current rate as a share of the configured budget.",
                )
                .expect("valid metric"),
            ),
            governor_fallback: gauge(
                names::GOVERNOR_FALLBACK,
                "1 while this worker paces at its own share because the shared bucket is unreachable.",
            ),
            governor_calls: counter(
                names::GOVERNOR_BUCKET_CALLS_TOTAL,
                "Calls of the shared rate bucket's script.",
            ),
            gateway_stalled: gauge(
                names::GATEWAY_STALLED,
                "1 while the Management API does not answer.",
            ),
            gateway_stalls: counter(
                names::GATEWAY_STALLS_TOTAL,
                "Stalls of the Management API (calls failing, no answer for seconds).",
            ),
            lane_jobs_received: counter_vec(
                names::LANE_JOBS_RECEIVED_TOTAL,
                "Jobs taken off the queue, by lane (interactive, bulk).",
                &["lane"],
            ),
            lane_jobs_in_hand: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        names::LANE_JOBS_IN_HAND,
                        "Jobs received and not yet finished, by lane.",
                    ),
                    &["lane"],
                )
                .expect("valid metric"),
            ),
            lane_queue_wait: histogram(
                names::LANE_QUEUE_WAIT_SECONDS,
                "From a job's first enqueue to its receipt by a worker, by lane.",
                "lane",
                END_TO_END_BUCKETS,
            ),
            registry,
        };
        for lane in ["interactive", "bulk"] {
            metrics.lane_jobs_received.with_label_values(&[lane]);
            metrics.lane_jobs_in_hand.with_label_values(&[lane]);
        }
        // Every dead-letter reason starts at 0, so the first dead letter is an increase Prometheus can
        // see (a series that appears at 1 has no increase) and alerts fire on it.
        for reason in DEAD_LETTER_REASONS {
            metrics.jobs_dead_lettered.with_label_values(&[reason]);
        }
        for reason in ["taken_over", "expired"] {
            metrics.leases_lost.with_label_values(&[reason]);
        }
        metrics
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Renders a registry in Prometheus's text format.
pub fn render(registry: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("text encoding cannot fail");
    String::from_utf8(out).expect("the text format is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_have_the_agreed_shape() {
        for name in names::ALL {
            assert!(name.starts_with("fanout_"), "{name}");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            let counter = name.ends_with("_total");
            let unit = name.ends_with("_seconds") || name.ends_with("_bytes");
            let gauge = names::GAUGES.contains(name);
            assert!(
                counter || unit || gauge,
                "{name} needs a unit or _total suffix"
            );
        }
    }

    #[test]
    fn every_ingest_metric_is_exported_under_a_known_name() {
        let m = IngestMetrics::new();
        m.callbacks.with_label_values(&["connect", "ok"]).inc();
        m.callback_duration
            .with_label_values(&["connect"])
            .observe(0.001);
        m.connects_refused
            .with_label_values(&["rate_limited"])
            .inc();
        m.tokens_refused.with_label_values(&["rate_limited"]).inc();
        m.jobs_enqueued.with_label_values(&["channel"]).inc();
        m.api_requests.with_label_values(&["publish", "ok"]).inc();
        m.webhook_calls.with_label_values(&["ok"]).inc();
        let text = render(&m.registry);
        for family in m.registry.gather() {
            assert!(
                names::ALL.contains(&family.name()),
                "{} is not in names::ALL",
                family.name()
            );
        }
        assert!(
            text.contains("fanout_callbacks_total{outcome=\"ok\",route=\"connect\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn every_worker_metric_is_exported_under_a_known_name() {
        let m = WorkerMetrics::new();
        m.jobs_received.with_label_values(&["channel"]).inc();
        m.jobs_completed.with_label_values(&["acked"]).inc();
        m.jobs_dead_lettered.with_label_values(&["forbidden"]).inc();
        m.deliveries.with_label_values(&["sent"]).inc();
        m.delivery_retries.with_label_values(&["throttled"]).inc();
        m.throttles.with_label_values(&["account"]).inc();
        m.connections_removed.with_label_values(&["gone"]).inc();
        m.delivery_duration
            .with_label_values(&["post"])
            .observe(0.01);
        m.end_to_end.with_label_values(&["broadcast"]).observe(1.0);
        m.lane_queue_wait
            .with_label_values(&["interactive"])
            .observe(0.01);
        let families = m.registry.gather();
        assert_eq!(families.len(), 26);
        for family in families {
            assert!(
                names::ALL.contains(&family.name()),
                "{} is not in names::ALL",
                family.name()
            );
        }
        assert!(render(&m.registry).contains("fanout_deliveries_total{outcome=\"sent\"} 1"));
    }

    #[test]
    fn dead_letter_reasons_start_at_zero() {
        let text = render(&WorkerMetrics::new().registry);
        for reason in DEAD_LETTER_REASONS {
            let line = format!("fanout_jobs_dead_lettered_total{{reason=\"{reason}\"}} 0");
            assert!(text.contains(&line), "{line} missing");
        }
    }
}
