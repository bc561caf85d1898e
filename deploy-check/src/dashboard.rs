//! Long because the dashboard is one table of panels (title, description, queries) that reads best in one place.
//!
//! The Grafana dashboard, built from `common::metrics::names` so its queries can only name metrics the
//! services export. [`rows`] is the content (titles, descriptions, queries); [`render`] lays it out as
//! Grafana's dashboard JSON with a data source variable. `tests/deploy/monitoring.rs` writes the result to
//! `deploy/grafana/dashboards/fanout.json` when it differs (and fails, so CI catches a stale file).

use common::metrics::names;
use serde_json::{Value, json};

/// Where the generated dashboard lives, relative to the workspace root.
pub const PATH: &str = "deploy/grafana/dashboards/fanout.json";

/// Grafana's dashboard identity; links and provisioning refer to it.
pub const UID: &str = "fanout-overview";

/// The panel that shows each alert's signal, by alert name. `tests/deploy/monitoring.rs` checks that every alert
/// of `deploy/prometheus/rules/alerts.yml` is listed and that its panel reads a metric the alert reads.
pub const ALERT_PANELS: &[(&str, &str)] = &[
    ("FanoutJobsDeadLettered", "Dead letters"),
    ("FanoutThrottleShareHigh", "429s by kind"),
    ("FanoutEndToEndLatencyHigh", "End-to-end latency"),
    ("FanoutQueueBacklogGrowing", "Queue depth"),
    ("FanoutForbidden", "Dead letters"),
    ("FanoutIngestDown", "Services up"),
    ("FanoutWorkerDown", "Services up"),
    ("FanoutInstanceDown", "Services up"),
    ("FanoutRedisErrors", "Redis errors"),
    ("FanoutEnqueueFailures", "Enqueue failures"),
    ("FanoutQueueStuck", "Jobs enqueued and finished"),
    ("FanoutGoneShareHigh", "Gone share"),
    ("FanoutCallbackErrors", "Callback errors on ingest's side"),
    ("FanoutCallbackLatencyHigh", "Callback latency"),
    ("FanoutThrottlesAboveDiscovery", "429s by kind"),
    (
        "FanoutGatewayStalled",
        "Governor factor, fallback and gateway stalls",
    ),
    (
        "FanoutGovernorFallback",
        "Governor factor, fallback and gateway stalls",
    ),
    ("FanoutLifecycleEventsDropped", "Webhooks"),
];

/// How a panel shows its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    TimeSeries,
    Stat,
}

/// One query and its legend.
#[derive(Debug, Clone)]
pub struct Query {
    pub expr: String,
    pub legend: String,
}

/// One panel: what it shows, in words and in queries.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: &'static str,
    pub description: &'static str,
    pub kind: Kind,
    pub unit: &'static str,
    pub queries: Vec<Query>,
}

/// A row of panels.
#[derive(Debug, Clone)]
pub struct Row {
    pub title: &'static str,
    pub panels: Vec<Panel>,
}

fn q(expr: String, legend: &str) -> Query {
    Query {
        expr,
        legend: legend.to_owned(),
    }
}

fn rate(name: &str) -> String {
    format!("rate({name}[$__rate_interval])")
}

fn quantile(p: &str, histogram: &str, by: &str) -> String {
    format!(
        "histogram_quantile({p}, sum by ({by}, le) ({}))",
        rate(&format!("{histogram}_bucket"))
    )
}

/// The dashboard's content: the rows deploy/README.md describes, panel by panel.
pub fn rows() -> Vec<Row> {
    use Kind::{Stat, TimeSeries};
    vec![
        Row {
            title: "Gateway callbacks",
            panels: vec![
                Panel {
                    title: "Callbacks by route and outcome",
                    description: "API Gateway's calls to ingest per second ($connect, $disconnect, messages), split by outcome: ok or the error code ingest answered.",
                    kind: TimeSeries,
                    unit: "reqps",
                    queries: vec![q(
                        format!("sum by (route, outcome) ({})", rate(names::CALLBACKS_TOTAL)),
                        "{{route}} {{outcome}}",
                    )],
                },
                Panel {
                    title: "Callback latency",
                    description: "Time ingest spends on a callback, p50 and p99 by route (Redis round trips included; API Gateway's own time is not).",
                    kind: TimeSeries,
                    unit: "s",
                    queries: vec![
                        q(
                            quantile("0.5", names::CALLBACK_DURATION_SECONDS, "route"),
                            "p50 {{route}}",
                        ),
                        q(
                            quantile("0.99", names::CALLBACK_DURATION_SECONDS, "route"),
                            "p99 {{route}}",
                        ),
                    ],
                },
                Panel {
                    title: "Callback errors on ingest's side",
                    description: "Share of callbacks that failed because of ingest's own dependencies (redis_unavailable, queue_unavailable, webhook_failed): browsers that could not connect or whose message was lost. Client errors (tokens, origins) are not counted. The FanoutCallbackErrors alert fires above 1%.",
                    kind: TimeSeries,
                    unit: "percentunit",
                    queries: vec![q(
                        format!(
                            "(sum(rate({0}{{outcome=~\"redis_unavailable|queue_unavailable|webhook_failed\"}}[$__rate_interval])) or vector(0)) / sum({1})",
                            names::CALLBACKS_TOTAL,
                            rate(names::CALLBACKS_TOTAL)
                        ),
                        "failing share",
                    )],
                },
                Panel {
                    title: "Connect refusals by reason",
                    description: "$connect callbacks refused per second, by reason (rate limits, origin, channel, token, permission).",
                    kind: TimeSeries,
                    unit: "reqps",
                    queries: vec![q(
                        format!("sum by (reason) ({})", rate(names::CONNECTS_REFUSED_TOTAL)),
                        "{{reason}}",
                    )],
                },
                Panel {
                    title: "Tokens issued and refused",
                    description: "Connect tokens issued to applications per second, and tokens refused by reason (rate_limited at issue; invalid_or_expired or missing at connect).",
                    kind: TimeSeries,
                    unit: "reqps",
                    queries: vec![
                        q(
                            format!("sum({})", rate(names::TOKENS_ISSUED_TOTAL)),
                            "issued",
                        ),
                        q(
                            format!("sum by (reason) ({})", rate(names::TOKENS_REFUSED_TOTAL)),
                            "refused {{reason}}",
                        ),
                    ],
                },
                Panel {
                    title: "Live connections",
                    description: "Connections registered in Redis (read by ingest at scrape time; every ingest reports the same number).",
                    kind: Stat,
                    unit: "short",
                    queries: vec![q(
                        format!("max({})", names::LIVE_CONNECTIONS),
                        "connections",
                    )],
                },
                Panel {
                    title: "Application API requests",
                    description: "Requests to ingest's /v1 API per second, by operation (route template) and outcome.",
                    kind: TimeSeries,
                    unit: "reqps",
                    queries: vec![q(
                        format!(
                            "sum by (operation, outcome) ({})",
                            rate(names::API_REQUESTS_TOTAL)
                        ),
                        "{{operation}} {{outcome}}",
                    )],
                },
                Panel {
                    title: "Webhooks",
                    description: "The message webhook's calls per second by outcome; the lifecycle webhook's batches by outcome, its retried attempts, and the events it dropped by reason (buffer_full: the receiver is slower than events arrive; failed: every retry failed; shutdown). Any dropped event fires FanoutLifecycleEventsDropped.",
                    kind: TimeSeries,
                    unit: "ops",
                    queries: vec![
                        q(
                            format!("sum by (outcome) ({})", rate(names::WEBHOOK_CALLS_TOTAL)),
                            "message webhook {{outcome}}",
                        ),
                        q(
                            format!(
                                "sum by (outcome) ({})",
                                rate(names::LIFECYCLE_BATCHES_TOTAL)
                            ),
                            "lifecycle batches {{outcome}}",
                        ),
                        q(
                            format!("sum({})", rate(names::LIFECYCLE_RETRIES_TOTAL)),
                            "lifecycle retries",
                        ),
                        q(
                            format!(
                                "sum by (reason) ({})",
                                rate(names::LIFECYCLE_EVENTS_DROPPED_TOTAL)
                            ),
                            "lifecycle events dropped {{reason}}",
                        ),
                    ],
                },
            ],
        },
        Row {
            title: "Queue",
            panels: vec![
                Panel {
                    title: "Lanes: jobs",
                    description: "Jobs per second by lane: enqueued by ingest (interactive: connections, users, replies and channels below FANOUT_BULK_THRESHOLD; bulk: everyone and big channels), and taken off each lane's queue by the workers; and the jobs the workers hold by lane. Interactive jobs enqueued but not received while bulk ones are means the interactive queue is not being polled.",
                    kind: TimeSeries,
                    unit: "short",
                    queries: vec![
                        q(
                            format!("sum by (lane) ({})", rate(names::LANE_JOBS_ENQUEUED_TOTAL)),
                            "enqueued {{lane}}",
                        ),
                        q(
                            format!("sum by (lane) ({})", rate(names::LANE_JOBS_RECEIVED_TOTAL)),
                            "received {{lane}}",
                        ),
                        q(
                            format!("sum by (lane) ({})", names::LANE_JOBS_IN_HAND),
                            "in hand {{lane}}",
                        ),
                    ],
                },
                Panel {
                    title: "Lanes: queue wait",
                    description: "From a job's first enqueue to its receipt by a worker, by lane (p50 and p99). The interactive lane's wait stays near the poll time while a bulk broadcast runs; a bulk wait that grows is the budget at work, not a fault.",
                    kind: TimeSeries,
                    unit: "s",
                    queries: vec![
                        q(
                            quantile("0.5", names::LANE_QUEUE_WAIT_SECONDS, "lane"),
                            "p50 {{lane}}",
                        ),
                        q(
                            quantile("0.99", names::LANE_QUEUE_WAIT_SECONDS, "lane"),
                            "p99 {{lane}}",
                        ),
                    ],
                },
                Panel {
                    title: "Queue depth",
                    description: "Jobs waiting on the queue (SQS visible plus delayed, or the Redis stream's undelivered and delayed entries). A depth that never returns to zero means the workers are behind.",
                    kind: TimeSeries,
                    unit: "short",
                    queries: vec![q(format!("max({})", names::QUEUE_DEPTH), "waiting")],
                },
                Panel {
                    title: "Jobs enqueued and finished",
                    description: "Jobs ingest put on the queue per second by target kind, next to the jobs workers finished by outcome (acked, requeued, released). Enqueued above finished for long is a growing backlog.",
                    kind: TimeSeries,
                    unit: "ops",
                    queries: vec![
                        q(
                            format!("sum by (target) ({})", rate(names::JOBS_ENQUEUED_TOTAL)),
                            "enqueued {{target}}",
                        ),
                        q(
                            format!("sum by (outcome) ({})", rate(names::JOBS_COMPLETED_TOTAL)),
                            "finished {{outcome}}",
                        ),
                        q(
                            format!("sum({})", rate(names::CHUNKS_PLANNED_TOTAL)),
                            "chunks planned",
                        ),
                    ],
                },
                Panel {
                    title: "Dead letters",
                    description: "Jobs (or their undelivered leftovers) moved to the dead-letter queue in the selected range, by reason. Anything here pages (FanoutJobsDeadLettered).",
                    kind: TimeSeries,
                    unit: "short",
                    queries: vec![q(
                        format!(
                            "sum by (reason) (increase({}[$__rate_interval]))",
                            names::JOBS_DEAD_LETTERED_TOTAL
                        ),
                        "{{reason}}",
                    )],
                },
                Panel {
                    title: "Enqueue failures",
                    description: "Jobs ingest could not put on the queue per second (the caller got 503).",
                    kind: TimeSeries,
                    unit: "ops",
                    queries: vec![q(
                        format!("sum({})", rate(names::ENQUEUE_FAILURES_TOTAL)),
                        "failures",
                    )],
                },
            ],
        },
        Row {
            title: "Worker",
            panels: vec![
                Panel {
                    title: "Deliveries by outcome",
                    description: "Final outcomes per recipient per second: sent, gone (410, connection removed), stale (no record left), failed (dead-lettered: retries used up, 403 forbidden, 413 too large; the Dead letters panel says why).",
                    kind: TimeSeries,
                    unit: "ops",
                    queries: vec![q(
                        format!("sum by (outcome) ({})", rate(names::DELIVERIES_TOTAL)),
                        "{{outcome}}",
                    )],
                },
                Panel {
                    title: "Gone share",
                    description: "Share of deliveries that met a connection API Gateway had already closed (410). A few are normal; the FanoutGoneShareHigh alert fires above 20%: $disconnect callbacks are being lost, or clients reconnect in a loop.",
                    kind: TimeSeries,
                    unit: "percentunit",
                    queries: vec![q(
                        format!(
                            "sum(rate({0}{{outcome=\"gone\"}}[$__rate_interval])) / sum({1})",
                            names::DELIVERIES_TOTAL,
                            rate(names::DELIVERIES_TOTAL)
                        ),
                        "gone share",
                    )],
                },
                Panel {
                    title: "429s by kind",
                    description: "LimitExceededException answers per second: account (spread over many connections: the shared budget) or connection (one slow client's full buffer).",
                    kind: TimeSeries,
                    unit: "ops",
                    queries: vec![q(
                        format!("sum by (kind) ({})", rate(names::THROTTLES_TOTAL)),
                        "{{kind}}",
                    )],
                },
                Panel {
                    title: "Send rate against the budget",
                    description: "The rate the fleet's shared governor allows now, the Management API calls actually made per second, and the configured budget (the account_budget variable: FANOUT_ACCOUNT_RATE_PER_SEC minus the headroom).",
                    kind: TimeSeries,
                    unit: "reqps",
                    queries: vec![
                        q(format!("max({})", names::SEND_RATE), "governor allows"),
                        q(
                            format!(
                                "sum({})",
                                rate(&format!("{}_count", names::DELIVERY_DURATION_SECONDS))
                            ),
                            "calls made",
                        ),
                        q("vector($account_budget)".to_owned(), "budget"),
                    ],
                },
                Panel {
                    title: "Budget discovery",
                    description: "The budget the governor believes API Gateway grants the fleet (measured at each account-wide 429), the rate it allows now, and 429 answers per second. With the budget found, 429s stay under about 2% of calls; an estimate below the configured budget means other APIs of the account spend from it too.",
                    kind: TimeSeries,
                    unit: "reqps",
                    queries: vec![
                        q(
                            format!("max({})", names::GOVERNOR_BUDGET_ESTIMATE),
                            "estimated budget",
                        ),
                        q(format!("max({})", names::SEND_RATE), "governor allows"),
                        q(format!("sum({})", rate(names::THROTTLES_TOTAL)), "429s"),
                    ],
                },
                Panel {
                    title: "Governor factor, fallback and gateway stalls",
                    description: "The fleet's rate as a share of the configured budget (1 = all of it), workers pacing alone because the shared bucket in Redis is unreachable, and workers whose Management API calls get no answer (a stalled gateway).",
                    kind: TimeSeries,
                    unit: "short",
                    queries: vec![
                        q(format!("max({})", names::GOVERNOR_FACTOR), "factor"),
                        q(
                            format!("sum({})", names::GOVERNOR_FALLBACK),
                            "workers pacing alone",
                        ),
                        q(
                            format!("sum({})", names::GATEWAY_STALLED),
                            "workers with a stalled gateway",
                        ),
                    ],
                },
                Panel {
                    title: "End-to-end latency",
                    description: "From ingest's enqueue to the last delivery: p50, p90 and p99 for single jobs (target=job) and whole broadcasts (target=broadcast). The alert's objective is p99 under 2 s for single jobs.",
                    kind: TimeSeries,
                    unit: "s",
                    queries: vec![
                        q(
                            quantile("0.5", names::END_TO_END_SECONDS, "target"),
                            "p50 {{target}}",
                        ),
                        q(
                            quantile("0.9", names::END_TO_END_SECONDS, "target"),
                            "p90 {{target}}",
                        ),
                        q(
                            quantile("0.99", names::END_TO_END_SECONDS, "target"),
                            "p99 {{target}}",
                        ),
                    ],
                },
                Panel {
                    title: "In flight",
                    description: "Management API calls in flight and jobs in hand, summed over every worker.",
                    kind: TimeSeries,
                    unit: "short",
                    queries: vec![
                        q(
                            format!("sum({})", names::DELIVERIES_IN_FLIGHT),
                            "calls in flight",
                        ),
                        q(format!("sum({})", names::JOBS_IN_HAND), "jobs in hand"),
                    ],
                },
                Panel {
                    title: "Management API latency",
                    description: "PostToConnection and DeleteConnection round trips, p50 and p99 by operation.",
                    kind: TimeSeries,
                    unit: "s",
                    queries: vec![
                        q(
                            quantile("0.5", names::DELIVERY_DURATION_SECONDS, "operation"),
                            "p50 {{operation}}",
                        ),
                        q(
                            quantile("0.99", names::DELIVERY_DURATION_SECONDS, "operation"),
                            "p99 {{operation}}",
                        ),
                    ],
                },
                Panel {
                    title: "Retries and removed connections",
                    description: "Calls retried within a job per second by reason, connections the worker removed from Redis by reason (gone, stale), and connections whose record expired without a $disconnect that ingest's stale-connection sweep removed.",
                    kind: TimeSeries,
                    unit: "ops",
                    queries: vec![
                        q(
                            format!("sum by (reason) ({})", rate(names::DELIVERY_RETRIES_TOTAL)),
                            "retry {{reason}}",
                        ),
                        q(
                            format!(
                                "sum by (reason) ({})",
                                rate(names::CONNECTIONS_REMOVED_TOTAL)
                            ),
                            "removed {{reason}}",
                        ),
                        q(
                            format!("sum({})", rate(names::CONNECTIONS_SWEPT_TOTAL)),
                            "swept (expired)",
                        ),
                    ],
                },
                Panel {
                    title: "Jobs received",
                    description: "Jobs workers took off the queue per second, by target kind (invalid: a body that is not a job).",
                    kind: TimeSeries,
                    unit: "ops",
                    queries: vec![q(
                        format!("sum by (target) ({})", rate(names::JOBS_RECEIVED_TOTAL)),
                        "{{target}}",
                    )],
                },
            ],
        },
        Row {
            title: "Redis",
            panels: vec![
                Panel {
                    title: "Redis errors",
                    description: "Failed Redis commands per second, by service (ingest answers 503 redis_unavailable; workers cannot read members or record outcomes).",
                    kind: TimeSeries,
                    unit: "ops",
                    queries: vec![q(
                        format!("sum by (job) ({})", rate(names::REDIS_ERRORS_TOTAL)),
                        "{{job}}",
                    )],
                },
                Panel {
                    title: "Services up",
                    description: "Scrape targets answering, by job (fanout-ingest, fanout-worker, fanout-emulator where it runs).",
                    kind: TimeSeries,
                    unit: "short",
                    queries: vec![q(
                        "sum by (job) (up{job=~\"fanout-.*\"})".to_owned(),
                        "{{job}}",
                    )],
                },
            ],
        },
    ]
}

fn datasource() -> Value {
    json!({ "type": "prometheus", "uid": "${datasource}" })
}

fn panel_json(p: &Panel, id: u32, x: u32, y: u32) -> Value {
    let targets: Vec<Value> = p
        .queries
        .iter()
        .enumerate()
        .map(|(i, query)| {
            json!({
                "refId": ((b'A' + i as u8) as char).to_string(),
                "datasource": datasource(),
                "expr": query.expr,
                "legendFormat": query.legend,
                "range": true,
            })
        })
        .collect();
    let (kind, options) = match p.kind {
        Kind::TimeSeries => (
            "timeseries",
            json!({
                "legend": { "displayMode": "table", "placement": "bottom", "showLegend": true },
                "tooltip": { "mode": "multi", "sort": "desc" }
            }),
        ),
        Kind::Stat => (
            "stat",
            json!({
                "reduceOptions": { "calcs": ["lastNotNull"], "fields": "", "values": false },
                "graphMode": "area",
                "colorMode": "value"
            }),
        ),
    };
    json!({
        "id": id,
        "type": kind,
        "title": p.title,
        "description": p.description,
        "datasource": datasource(),
        "gridPos": { "h": 8, "w": 12, "x": x, "y": y },
        "fieldConfig": { "defaults": { "unit": p.unit }, "overrides": [] },
        "options": options,
        "targets": targets,
    })
}

/// The dashboard as Grafana's JSON model: one row panel per [`Row`], two panels per line.
pub fn render() -> Value {
    let mut panels = Vec::new();
    let mut id = 1;
    let mut y = 0;
    for row in rows() {
        panels.push(json!({
            "id": id,
            "type": "row",
            "title": row.title,
            "collapsed": false,
            "gridPos": { "h": 1, "w": 24, "x": 0, "y": y },
            "panels": [],
        }));
        id += 1;
        y += 1;
        for (i, p) in row.panels.iter().enumerate() {
            let x = if i % 2 == 0 { 0 } else { 12 };
            panels.push(panel_json(p, id, x, y));
            id += 1;
            if i % 2 == 1 || i + 1 == row.panels.len() {
                y += 8;
            }
        }
    }
    json!({
        "uid": UID,
        "title": "fanout",
        "description": "Gateway callbacks, the job queue, the fan-out workers and Redis. Generated by deploy-check (src/dashboard.rs); edit that, not this file.",
        "tags": ["fanout"],
        "timezone": "browser",
        "editable": true,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": { "from": "now-1h", "to": "now" },
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                    "options": []
                },
                {
                    "name": "account_budget",
                    "label": "Send budget (requests/s)",
                    "description": "FANOUT_ACCOUNT_RATE_PER_SEC minus FANOUT_RATE_HEADROOM_PERCENT: 9800 with the defaults.",
                    "type": "textbox",
                    "query": "9800",
                    "current": { "text": "9800", "value": "9800" },
                    "hide": 0,
                    "options": [{ "selected": true, "text": "9800", "value": "9800" }]
                }
            ]
        },
        "annotations": { "list": [] },
        "links": [],
        "panels": panels,
    })
}

/// The file's expected contents: pretty JSON with a final newline.
pub fn file_contents() -> String {
    let mut text = serde_json::to_string_pretty(&render()).expect("a JSON value always serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_panels_do_not_overlap() {
        let dashboard = render();
        let panels = dashboard["panels"].as_array().unwrap();
        let mut ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), panels.len());
        let cells: Vec<(u64, u64, u64, u64)> = panels
            .iter()
            .map(|p| {
                let g = &p["gridPos"];
                (
                    g["x"].as_u64().unwrap(),
                    g["y"].as_u64().unwrap(),
                    g["w"].as_u64().unwrap(),
                    g["h"].as_u64().unwrap(),
                )
            })
            .collect();
        for (i, a) in cells.iter().enumerate() {
            for b in &cells[i + 1..] {
                let apart =
                    a.0 + a.2 <= b.0 || b.0 + b.2 <= a.0 || a.1 + a.3 <= b.1 || b.1 + b.3 <= a.1;
                assert!(apart, "panels overlap: {a:?} {b:?}");
            }
        }
    }

    #[test]
    fn every_query_uses_the_datasource_variable() {
        let dashboard = render();
        for p in dashboard["panels"].as_array().unwrap() {
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            for t in p["targets"].as_array().unwrap() {
                assert_eq!(t["datasource"]["uid"], "${datasource}");
            }
        }
    }
}
