//! Every Prometheus metric name the product exports, and the metric families each service registers.
//!
//! Names start with `fanout_` and vary by bounded labels (`route`, `outcome`, `reason`, `target`,
//! `operation`), never by a connection, channel or user id. A test keeps every name in that shape.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
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
    ];
}

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
        Self {
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
            registry,
        }
    }
}

impl Default for IngestMetrics {
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
            let gauge = matches!(*name, names::LIVE_CONNECTIONS | names::QUEUE_DEPTH);
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
}
