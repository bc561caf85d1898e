//! The emulator's Prometheus metrics, all named `fanout_emulator_*`, served at `GET /metrics` on the
//! management listener. Labels are bounded (`kind`, `outcome`, `route`, `operation`, `status`,
//! `direction`, `reason`); no connection id ever becomes a label.
//!
//! Counters on the hot paths (Management API calls, frames) are resolved once at start-up, so counting a
//! call is one atomic add rather than a label lookup.

use http::StatusCode;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The metric names, in one place.
pub mod names {
    pub const CONNECTIONS_OPEN: &str = "fanout_emulator_connections_open";
    pub const HANDSHAKES_TOTAL: &str = "fanout_emulator_handshakes_total";
    pub const CLOSES_TOTAL: &str = "fanout_emulator_closes_total";
    pub const INTEGRATION_CALLS_TOTAL: &str = "fanout_emulator_integration_calls_total";
    pub const INTEGRATION_DURATION_SECONDS: &str = "fanout_emulator_integration_duration_seconds";
    pub const MANAGEMENT_CALLS_TOTAL: &str = "fanout_emulator_management_calls_total";
    pub const FRAMES_TOTAL: &str = "fanout_emulator_frames_total";
    pub const SIGNATURES_REFUSED_TOTAL: &str = "fanout_emulator_signatures_refused_total";

    /// Every name above.
    pub const ALL: &[&str] = &[
        CONNECTIONS_OPEN,
        HANDSHAKES_TOTAL,
        CLOSES_TOTAL,
        INTEGRATION_CALLS_TOTAL,
        INTEGRATION_DURATION_SECONDS,
        MANAGEMENT_CALLS_TOTAL,
        FRAMES_TOTAL,
        SIGNATURES_REFUSED_TOTAL,
    ];
}

/// A Management API operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Post,
    Get,
    Delete,
}

impl Operation {
    const ALL: [Operation; 3] = [Operation::Post, Operation::Get, Operation::Delete];

    pub fn label(self) -> &'static str {
        match self {
            Operation::Post => "post_to_connection",
            Operation::Get => "get_connection",
            Operation::Delete => "delete_connection",
        }
    }
}

/// The statuses the Management API answers with, pre-resolved per operation.
const STATUSES: [u16; 8] = [200, 204, 403, 404, 410, 413, 429, 500];

/// Integration latency buckets: loopback calls to ingest take well under a millisecond.
const INTEGRATION_BUCKETS: &[f64] = &[
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 29.0,
];

/// Every metric the emulator exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Open connections by `kind` (`socket`, `virtual`).
    pub sockets_open: IntGauge,
    pub virtual_open: IntGauge,
    /// Handshakes by `outcome`.
    handshakes: IntCounterVec,
    /// Socket closes by `reason`.
    closes: IntCounterVec,
    integration_calls: IntCounterVec,
    integration_duration: HistogramVec,
    management_calls: IntCounterVec,
    management_resolved: [[IntCounter; STATUSES.len()]; 3],
    /// Client frames received (`direction="in"`) and frames written to clients (`direction="out"`).
    pub frames_in: IntCounter,
    pub frames_out: IntCounter,
    /// Management API calls refused by SigV4 verification, by `reason`.
    signatures_refused: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let register = |c: Box<dyn prometheus::core::Collector>| {
            registry.register(c).expect("metric registered once");
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            register(Box::new(c.clone()));
            c
        };
        let open = IntGaugeVec::new(
            Opts::new(names::CONNECTIONS_OPEN, "Open connections by kind."),
            &["kind"],
        )
        .expect("valid metric");
        register(Box::new(open.clone()));
        let integration_duration = HistogramVec::new(
            HistogramOpts::new(
                names::INTEGRATION_DURATION_SECONDS,
                "Integration call latency by route.",
            )
            .buckets(INTEGRATION_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        register(Box::new(integration_duration.clone()));
        let management_calls = counter_vec(
            names::MANAGEMENT_CALLS_TOTAL,
            "Management API calls by operation and status.",
            &["operation", "status"],
        );
        let management_resolved = Operation::ALL.map(|op| {
            STATUSES.map(|s| management_calls.with_label_values(&[op.label(), &s.to_string()]))
        });
        let frames = counter_vec(
            names::FRAMES_TOTAL,
            "WebSocket data frames by direction (in: from clients, out: to clients).",
            &["direction"],
        );
        let signatures_refused = counter_vec(
            names::SIGNATURES_REFUSED_TOTAL,
            "Management API calls refused with 403 by SigV4 verification, by reason.",
            &["reason"],
        );
        Self {
            signatures_refused,
            sockets_open: open.with_label_values(&["socket"]),
            virtual_open: open.with_label_values(&["virtual"]),
            handshakes: counter_vec(
                names::HANDSHAKES_TOTAL,
                "WebSocket handshakes by outcome.",
                &["outcome"],
            ),
            closes: counter_vec(names::CLOSES_TOTAL, "Socket closes by reason.", &["reason"]),
            integration_calls: counter_vec(
                names::INTEGRATION_CALLS_TOTAL,
                "Integration calls by route and outcome (status class, or error).",
                &["route", "outcome"],
            ),
            integration_duration,
            management_calls,
            management_resolved,
            frames_in: frames.with_label_values(&["in"]),
            frames_out: frames.with_label_values(&["out"]),
            registry,
        }
    }

    pub fn handshake(&self, outcome: &str) {
        self.handshakes.with_label_values(&[outcome]).inc();
    }

    pub fn close(&self, reason: &str) {
        self.closes.with_label_values(&[reason]).inc();
    }

    pub fn integration_call(&self, route: &str, outcome: &str, seconds: f64) {
        self.integration_calls
            .with_label_values(&[route, outcome])
            .inc();
        self.integration_duration
            .with_label_values(&[route])
            .observe(seconds);
    }

    pub fn management_call(&self, op: Operation, status: StatusCode) {
        let op_index = op as usize;
        match STATUSES.iter().position(|s| *s == status.as_u16()) {
            Some(i) => self.management_resolved[op_index][i].inc(),
            None => self
                .management_calls
                .with_label_values(&[op.label(), status.as_str()])
                .inc(),
        }
    }

    /// A call refused by signature verification; `reason` is one of a handful of fixed labels.
    pub fn signature_refused(&self, reason: &'static str) {
        self.signatures_refused.with_label_values(&[reason]).inc();
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        common::metrics::render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_have_the_agreed_shape() {
        for name in names::ALL {
            assert!(name.starts_with("fanout_emulator_"), "{name}");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            let counter = name.ends_with("_total");
            let unit = name.ends_with("_seconds");
            assert!(
                counter || unit || *name == names::CONNECTIONS_OPEN,
                "{name} needs a unit or _total suffix"
            );
        }
    }

    #[test]
    fn every_family_is_named_in_one_place() {
        let m = Metrics::new();
        m.handshake("accepted");
        m.close("client");
        m.integration_call("connect", "2xx", 0.001);
        m.management_call(Operation::Post, StatusCode::OK);
        m.management_call(Operation::Get, StatusCode::IM_A_TEAPOT);
        m.frames_in.inc();
        for family in m.registry.gather() {
            assert!(names::ALL.contains(&family.name()), "{}", family.name());
        }
        let text = m.render();
        assert!(text.contains(
            "fanout_emulator_management_calls_total{operation=\"post_to_connection\",status=\"200\"} 1"
        ));
        assert!(text.contains(
            "fanout_emulator_management_calls_total{operation=\"get_connection\",status=\"418\"} 1"
        ));
    }
}
