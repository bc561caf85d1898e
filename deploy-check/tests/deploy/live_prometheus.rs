//! The Grafana dashboard and the Prometheus rules proven against real data. Grafana cannot be installed
//! here, so this test does what Grafana and Prometheus would do with them: it starts the whole system
//! (`e2e::System`: Redis, ingest, the local gateway as the emulator, a worker), a second worker deliberately
//! misconfigured with a wrong stage (so it meets 403 ForbiddenException and dead-letters), and a real
//! Prometheus (Debian's `/usr/bin/prometheus`) scraping all of them every second with the repository's rule
//! files (`deploy/prometheus/rules/*.yml`). It drives traffic through them: WebSocket clients joining,
//! refused connects (unknown and missing tokens), a browser message answered by a job, application API
//! calls, and a channel broadcast that meets gone connections (registered with ingest, unknown to the
//! gateway: 410) and throttling (the gateway's Management API throttle is 20 requests a second with a burst
//! of 2: 429). Then every panel query of the generated dashboard, every recording rule (its expression and
//! its recorded series) and every alert is evaluated through Prometheus's HTTP API, polling until each
//! returns a series or the deadline passes. It fails listing each query that returns no series, and each
//! metric name a query reads that the services' `/metrics` do not export.
//!
//! Alerts: an alert's expression rightly returns nothing while its condition is false, so the test
//! evaluates it with its comparisons against a literal removed (`x > 0 and on () y > 1` becomes
//! `x and on () y`): the same selectors, functions and joins, so a misspelt metric, label or job still
//! returns nothing. It also asks `/api/v1/rules` that every rule of the files was loaded and evaluated
//! without error. No query is exempt.
//!
//! Grafana variables are substituted as Grafana would: `$__rate_interval` by `1m` (at least four scrape
//! intervals, as Grafana computes it), `$account_budget` by the variable's current value in the dashboard.

use clap::Parser;
use deploy_check::dashboard;
use deploy_check::promql::{family, metric_names};
use deploy_check::repo::{self, get, get_str};
use e2e::{Backend, System};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the test waits for Prometheus to see every series (a guard, never a synchronisation).
const DEADLINE: Duration = Duration::from_secs(90);
const PROMETHEUS: &str = "/usr/bin/prometheus";
/// Grafana's `$__rate_interval` here: four scrape intervals at least; one minute holds the whole test.
const RATE_INTERVAL: &str = "1m";

/// A Prometheus server on a free port with its own configuration and TSDB directory; killed, waited for and
/// removed when dropped.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    base: String,
}

impl Prometheus {
    fn start(ingest: &str, workers: &[&str], emulator: &str) -> Self {
        assert!(
            std::path::Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: install Debian's prometheus package (./dev deploy-check does)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!(
            "fanout-live-prometheus-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let rules = repo::root().join("deploy/prometheus/rules/*.yml");
        let config = json!({
            "global": { "scrape_interval": "1s", "evaluation_interval": "1s" },
            "rule_files": [rules.to_str().unwrap()],
            "scrape_configs": [
                { "job_name": "fanout-ingest", "static_configs": [{ "targets": [ingest] }] },
                { "job_name": "fanout-worker", "static_configs": [{ "targets": workers }] },
                { "job_name": "fanout-emulator", "static_configs": [{ "targets": [emulator] }] },
            ],
        });
        // JSON is YAML.
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config.to_string()).unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        Self {
            child,
            dir,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    async fn get(&self, http: &reqwest::Client, path: &str, query: &[(&str, &str)]) -> Value {
        let url = url::Url::parse_with_params(&format!("{}{path}", self.base), query).unwrap();
        let r = http
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("Prometheus {path}: {e}"));
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert!(
            status.is_success() && body["status"] == "success",
            "Prometheus {path} {query:?}: {status} {body}"
        );
        body["data"].clone()
    }

    /// The number of series an instant query returns now.
    async fn series(&self, http: &reqwest::Client, expr: &str) -> usize {
        let data = self.get(http, "/api/v1/query", &[("query", expr)]).await;
        match data["resultType"].as_str() {
            Some("vector" | "matrix") => data["result"].as_array().unwrap().len(),
            Some("scalar") => 1,
            other => panic!("{expr}: unexpected result type {other:?}"),
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `check` every 100 ms until it holds, or fails with `what` after [`DEADLINE`].
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `expr` without its comparisons against a number literal (`> 0`, `== 0`, `>= bool 2`, ...).
fn without_comparisons(expr: &str) -> String {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut depth_braces = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' => depth_braces += 1,
            '}' => depth_braces -= 1,
            _ => {}
        }
        let op_len = match (c, chars.get(i + 1)) {
            ('=' | '!' | '>' | '<', Some('=')) => 2,
            ('>' | '<', _) => 1,
            _ => 0,
        };
        if depth_braces == 0 && op_len > 0 {
            let mut j = i + op_len;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let rest: String = chars[j..].iter().collect();
            if let Some(after) = rest.strip_prefix("bool") {
                j += 4 + after.len() - after.trim_start().len();
            }
            let start = j;
            while j < chars.len()
                && (chars[j].is_ascii_digit() || matches!(chars[j], '.' | 'e' | '-' | '+'))
            {
                j += 1;
            }
            if j > start {
                while out.ends_with(' ') {
                    out.pop();
                }
                i = j;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

#[test]
fn comparisons_are_removed_and_nothing_else() {
    assert_eq!(
        without_comparisons("a:b:c > 0.05 and on () sum(x{k=\"v\"}) > 1"),
        "a:b:c and on () sum(x{k=\"v\"})"
    );
    assert_eq!(
        without_comparisons("sum(up{job=\"i\"}) == 0 or absent(up{job=\"i\"})"),
        "sum(up{job=\"i\"}) or absent(up{job=\"i\"})"
    );
    assert_eq!(without_comparisons("x >= bool 2e3"), "x");
    assert_eq!(without_comparisons("x{a!=\"1\"} > y"), "x{a!=\"1\"} > y");
}

/// Every rule of the rule files, as (name, expression, is a recording rule).
fn rules() -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for file in [
        "deploy/prometheus/rules/recording.yml",
        "deploy/prometheus/rules/alerts.yml",
    ] {
        let doc = repo::yaml(file);
        for group in get(&doc, "groups").unwrap().as_sequence().unwrap() {
            for rule in get(group, "rules").unwrap().as_sequence().unwrap() {
                let expr = get_str(rule, "expr").to_owned();
                match get(rule, "record") {
                    Some(name) => out.push((name.as_str().unwrap().to_owned(), expr, true)),
                    None => out.push((get_str(rule, "alert").to_owned(), expr, false)),
                }
            }
        }
    }
    out
}

/// Every panel query of the generated dashboard, as (panel title, expression with variables substituted).
fn panel_queries() -> Vec<(String, String)> {
    let d = dashboard::render();
    let mut variables: BTreeMap<String, String> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] != "datasource")
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_owned(),
                v["current"]["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    variables.insert("__rate_interval".to_owned(), RATE_INTERVAL.to_owned());
    let mut out = Vec::new();
    for panel in d["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        for target in panel["targets"].as_array().unwrap() {
            let mut expr = target["expr"].as_str().unwrap().to_owned();
            // Longest names first, so `$__rate_interval` is not cut by a shorter variable name.
            let mut names: Vec<&String> = variables.keys().collect();
            names.sort_by_key(|n| std::cmp::Reverse(n.len()));
            for name in names {
                expr = expr
                    .replace(&format!("${{{name}}}"), &variables[name])
                    .replace(&format!("${name}"), &variables[name]);
            }
            assert!(
                !expr.contains('$'),
                "{}: a Grafana variable this test does not know: {expr}",
                panel["title"]
            );
            out.push((panel["title"].as_str().unwrap().to_owned(), expr));
        }
    }
    out
}

/// The series names a `/metrics` text exports.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

async fn text(http: &reqwest::Client, url: &str) -> String {
    let r = http.get(url).send().await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.text().await.unwrap()
}

/// A worker on its own Redis Streams queue whose Management API endpoint names a stage the gateway does not
/// serve: every call answers 403 ForbiddenException, and with one attempt its jobs are dead-lettered. This is
/// the configuration error the FanoutForbidden alert and the dead-letter panel exist for.
async fn misconfigured_worker(system: &System, queue_url: &str) -> fanout_worker::Worker {
    let base = system.management.rsplit_once('/').unwrap().0;
    let settings = fanout_worker::config::Config::try_parse_from([
        "fanout-worker".to_owned(),
        format!("--redis-url={}", system.redis.url()),
        format!("--queue-url={queue_url}"),
        format!("--api-gateway=local={base}/wrong-stage"),
        "--metrics-listen=127.0.0.1:0".to_owned(),
        "--receive-wait-secs=1".to_owned(),
        "--max-attempts=1".to_owned(),
        format!("--aws-region={}", e2e::SIGV4_REGION),
        "--delivery-client=lean".to_owned(),
    ])
    .expect("worker flags")
    .validate()
    .expect("worker settings");
    let credentials = mgmt_client::CredentialsSource::fixed(
        mgmt_client::SigningCredentials::new(e2e::SIGV4_ACCESS_KEY, e2e::SIGV4_SECRET_KEY, None)
            .unwrap(),
    );
    let deliver = Arc::new(
        fanout_worker::delivery::LeanDeliver::new(
            credentials,
            settings.call_timeout,
            settings.max_in_flight,
        )
        .unwrap(),
    );
    fanout_worker::Worker::start(settings, deliver)
        .await
        .expect("the misconfigured worker starts")
}

fn host(url: &str) -> &str {
    let rest = url.split_once("://").unwrap().1;
    rest.split('/').next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_and_rule_has_data_from_the_running_services() {
    let started = Instant::now();
    // The gateway's Management API allows 20 calls a second with a burst of 2: a broadcast to a handful of
    // connections meets 429 LimitExceededException, which the worker retries.
    let system = System::start(
        Backend::RedisStreams,
        &[],
        &["--mgmt-rate=20", "--mgmt-burst=2"],
    )
    .await;
    let http = system.http.clone();
    let misconfigured_queue = format!("{}?queue=misconfigured", system.redis.url());
    let misconfigured = misconfigured_worker(&system, &misconfigured_queue).await;
    let worker_url = system.worker_metrics_url();
    let misconfigured_url = format!("http://{}/metrics", misconfigured.metrics_addr());
    let emulator_url = format!("{}/metrics", system.management.rsplit_once('/').unwrap().0);
    let ingest_url = format!("{}/metrics", system.ingest);

    let prometheus = Prometheus::start(
        host(&system.ingest),
        &[host(&worker_url), host(&misconfigured_url)],
        host(&emulator_url),
    );
    until("Prometheus to scrape all five targets", || async {
        let Ok(r) = http
            .get(format!("{}/api/v1/targets", prometheus.base))
            .send()
            .await
        else {
            return false;
        };
        let Ok(body) = r.json::<Value>().await else {
            return false;
        };
        let active = body["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        active.len() == 4 && active.iter().all(|t| t["health"] == "up")
    })
    .await;

    // Traffic. Browsers join the general channel.
    let mut clients = Vec::new();
    for subject in ["alice", "bob", "carol", "dave"] {
        clients.push(system.join(subject, "general").await);
    }
    // Refused connects: an unknown token, and no token on a channel that needs one.
    assert_eq!(
        system.connect("channel=general&ws_token=0123").await.err(),
        Some(400)
    );
    assert_eq!(system.connect("channel=general").await.err(), Some(400));
    // Connections ingest knows but the gateway does not (their clients vanished, $disconnect was lost):
    // the broadcast meets 410 GoneException for each.
    for i in 0..3 {
        let token = system.token(&format!("ghost{i}")).await;
        let r = http
            .post(format!(
                "{}/ws/connect?channel=general&ws_token={token}",
                system.ingest
            ))
            .header("connectionId", format!("ghostConnection{i}="))
            .header("X-Amzn-Apigateway-Api-Id", "local")
            .header("X-Ws-Gateway-Secret", e2e::SECRET)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // A browser message: ingest answers it with a job to that connection (end-to-end target="job").
    clients[0].send(json!({"action": "dance"})).await;
    clients[0].next_of("error").await;
    // Application API calls.
    let r = system
        .api(reqwest::Method::GET, "/v1/channels/general")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("{}/v1/channels/general", system.ingest))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no API key");
    // The broadcast: 4 live connections (some throttled, then retried) and 3 gone.
    let r = system
        .api(reqwest::Method::POST, "/v1/channels/general/publish")
        .json(&json!({"type": "notice", "text": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let job_id = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for client in &mut clients {
        assert_eq!(client.next_of("notice").await["text"], "hello");
    }
    // Polled with a deadline: the report is written when the last chunk's deliveries are done.
    let deadline = Instant::now() + DEADLINE;
    let report = loop {
        let report: Value = system
            .api(reqwest::Method::GET, &format!("/v1/broadcasts/{job_id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if report["state"] == "finished" {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "the broadcast did not finish: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(report["sent"], 4, "{report}");
    assert_eq!(report["gone"], 3, "{report}");
    assert!(
        report["throttled"].as_u64().unwrap() > 0,
        "no 429: {report}"
    );
    let worker_text = text(&http, &worker_url).await;
    assert!(
        worker_text.contains("fanout_throttles_total{"),
        "the gateway's throttle answered no 429:\n{worker_text}"
    );
    // A job for the misconfigured worker: 403 for every recipient, then the dead-letter queue.
    let queue = common::queue::open(&misconfigured_queue, Default::default())
        .await
        .unwrap();
    queue
        .send_batch(&[common::job::Job::post(
            common::job::Target::Channel {
                channel: "general".to_owned(),
            },
            common::job::payload_of(&json!({"type": "notice", "text": "never arrives"})),
        )])
        .await
        .unwrap();
    until(
        "the misconfigured worker to dead-letter its job",
        || async {
            text(&http, &misconfigured_url)
                .await
                .contains("fanout_jobs_dead_lettered_total{")
        },
    )
    .await;

    // What the services export: the series names in their /metrics texts.
    let mut texts = BTreeMap::new();
    for (service, url) in [
        ("ingest", &ingest_url),
        ("worker", &worker_url),
        ("misconfigured worker", &misconfigured_url),
        ("emulator", &emulator_url),
    ] {
        texts.insert(service, text(&http, url).await);
    }
    let exported: BTreeSet<String> = texts.values().flat_map(|t| exported(t)).collect();
    let known_families: BTreeSet<&str> = common::metrics::names::ALL
        .iter()
        .copied()
        .chain(
            exported
                .iter()
                .map(|n| family(n))
                .filter(|f| f.starts_with("fanout_emulator_")),
        )
        .collect();

    // Every query: panels, recording rules (expression and recorded series), alerts without comparisons.
    let rules = rules();
    let recorded: BTreeSet<String> = rules
        .iter()
        .filter(|(_, _, record)| *record)
        .map(|(name, _, _)| name.clone())
        .collect();
    let mut queries: Vec<(String, String)> = panel_queries()
        .into_iter()
        .map(|(panel, expr)| (format!("panel {panel:?}"), expr))
        .collect();
    assert!(queries.len() >= 25, "{} panel queries", queries.len());
    for (name, expr, record) in &rules {
        if *record {
            queries.push((format!("recording rule {name} (expr)"), expr.clone()));
            queries.push((format!("recording rule {name} (recorded)"), name.clone()));
        } else {
            queries.push((format!("alert {name}"), without_comparisons(expr)));
        }
    }

    let mut unknown = Vec::new();
    for (owner, expr) in &queries {
        for name in metric_names(expr) {
            let ok = recorded.contains(&name)
                || name == "up"
                || (exported.contains(&name) && known_families.contains(family(&name)));
            if !ok {
                unknown.push(format!(
                    "{owner} reads {name}, which no service exports: {expr}"
                ));
            }
        }
    }
    assert!(unknown.is_empty(), "{}", unknown.join("\n"));

    let mut empty: Vec<String> = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    loop {
        empty.clear();
        for (owner, expr) in &queries {
            if prometheus.series(&http, expr).await == 0 {
                empty.push(format!("{owner}: {expr}"));
            }
        }
        if empty.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        empty.is_empty(),
        "queries with no series after {DEADLINE:?}:\n{}\n\nPrometheus log:\n{}",
        empty.join("\n"),
        prometheus.log()
    );

    // Prometheus loaded every rule of the files and evaluates each without error.
    let data = prometheus.get(&http, "/api/v1/rules", &[]).await;
    let loaded: Vec<&Value> = data["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(loaded.len(), rules.len(), "rules loaded: {data}");
    for rule in loaded {
        assert_eq!(rule["health"], "ok", "{rule}");
    }

    drop(prometheus);
    misconfigured.shutdown().await;
    system.stop().await;
    eprintln!("proven against real data in {:?}", started.elapsed());
}
