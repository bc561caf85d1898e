//! Benchmark of the governor (not a test; `cargo bench -p fanout-worker --bench governor`, or `./dev bench`):
//! broadcasts through the full path (Redis membership, planner, chunk jobs on Redis Streams, real
//! `fanout-worker` processes with the lean client) to a Management API sink throttled by the local
//! gateway's own token bucket (`local_gateway::limits::TokenBucket`), whose budget can change mid-run.
//!
//! Scenarios (`BENCH_RECIPIENTS`, default 20,000):
//! 1. **unpaced**: no throttle, the worker's budget 1,000,000/s: the baseline of CPU per delivery.
//! 2. **budget right**: the sink grants 1,000/s with a 500 burst, the worker is configured with the same.
//! 3. **budget wrong**: the sink grants 1,000/s + 500, the worker is configured with 10,000/s + 5,000.
//! 4. **budget changing**: 10,000/s + 5,000, after 1.5 s 2,000/s + 1,000, after 4.5 s 10,000/s + 5,000
//!    again (each new budget starting empty), 2.5 × the recipients; how long the fleet takes to follow.
//! 5. **four workers**, budget wrong as in 3: the 429 share and each worker's share of the deliveries.
//!
//! CPU is read from process CPU clocks (`clock_getcpuclockid` + `clock_gettime`, nanoseconds) of the
//! worker processes over the whole broadcast, from just before the publish to the last delivery; Redis's
//! from `INFO cpu` (its own `getrusage`) and `INFO commandstats` (`EVALSHA`: every Lua script, the
//! governor's and the queue's, so an upper bound of the governor's share). Timing is from the publish to
//! the sink's first 2xx for the last new recipient. `BENCH_ONLY=unpaced,right,...` runs some;
//! `BENCH_ONLY=cpu` runs `BENCH_REPEAT` (default 5) unpaced/paced pairs and reports the spread of the CPU
//! ratio (the machine's load moves single figures by ±15 %).

mod support;

use common::job::{Job, Target, payload_of};
use common::keys::Keyspace;
use common::queue::{Queue, QueueOptions};
use common::store::Redis;
use local_gateway::config::RateLimit;
use local_gateway::limits::TokenBucket;
use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use test_support::RedisServer;
use test_support::bench::cpu_time_of;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches`: nothing to list
    }
    let n: usize = std::env::var("BENCH_RECIPIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "\n== governor: {n} recipients, lean client, sink throttled by the local gateway's token bucket =="
        );
        println!(
            "  {:<34} {:>8} {:>8} {:>7} {:>9} {:>9} {:>7} {:>10} {:>10} {:>11} {:>10}",
            "scenario",
            "posts",
            "429s",
            "429 %",
            "took s",
            "min s",
            "×min",
            "worker µs",
            "Redis µs",
            "EVALSHA µs",
            "gov calls"
        );
        let mut unpaced: Option<Result> = None;
        // A paced scenario against the unpaced baseline of the same run.
        let versus = |unpaced: &Option<Result>, r: &Result| {
            if let Some(base) = unpaced {
                println!(
                    "    worker CPU per delivery ÷ unpaced: {:.2}×; the governor's EVALSHA (over the unpaced run's): {:.1} µs per delivery",
                    r.worker_cpu_us / base.worker_cpu_us,
                    r.evalsha_us - base.evalsha_us
                );
            }
        };
        let plain = Plan {
            sink: vec![(Duration::ZERO, None)],
            budget: (1_000_000, 1_000_000),
            workers: 1,
            recipients: n,
        };
        if wanted("unpaced") {
            unpaced = Some(run("unpaced (no throttle)", &plain).await);
        }
        let right = Plan {
            sink: vec![(Duration::ZERO, Some((1_000, 500)))],
            budget: (1_000, 500),
            workers: 1,
            recipients: n,
        };
        if wanted("right") {
            let r = run("budget right (1,000/s + 500)", &right).await;
            versus(&unpaced, &r);
        }
        let wrong = Plan {
            budget: (10_000, 5_000),
            ..right.clone()
        };
        if wanted("wrong") {
            let r = run("budget wrong (10,000/s configured)", &wrong).await;
            versus(&unpaced, &r);
        }
        if wanted("changing") {
            let changing = Plan {
                sink: vec![
                    (Duration::ZERO, Some((10_000, 5_000))),
                    (Duration::from_millis(1_500), Some((2_000, 1_000))),
                    (Duration::from_millis(4_500), Some((10_000, 5_000))),
                ],
                budget: (10_000, 5_000),
                workers: 1,
                recipients: n * 5 / 2,
            };
            let r = run("budget 10,000 → 2,000 → 10,000/s", &changing).await;
            versus(&unpaced, &r);
        }
        if wanted("four") {
            let four = Plan {
                workers: 4,
                ..wrong.clone()
            };
            let r = run("4 workers, budget wrong", &four).await;
            versus(&unpaced, &r);
        }
        // The CPU of pacing on a shared machine: `BENCH_REPEAT` pairs (default 5) of an unpaced run and
        // a run paced at 1,000/s back to back, each ratio from its own pair, then their spread.
        if only.split(',').any(|o| o == "cpu") {
            let repeat: usize = std::env::var("BENCH_REPEAT")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(5);
            let mut ratios = Vec::new();
            for i in 0..repeat {
                let base = run(&format!("pair {}: unpaced", i + 1), &plain).await;
                let paced = run(&format!("pair {}: paced at 1,000/s", i + 1), &right).await;
                ratios.push(paced.worker_cpu_us / base.worker_cpu_us);
            }
            ratios.sort_by(f64::total_cmp);
            println!(
                "    worker CPU per delivery paced ÷ unpaced over {repeat} pairs: median {:.2}×, least {:.2}×, most {:.2}× (each: {})",
                ratios[ratios.len() / 2],
                ratios[0],
                ratios[ratios.len() - 1],
                ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", ")
            );
        }
    });
}

/// One scenario.
#[derive(Clone)]
struct Plan {
    /// From when on the sink grants (rate, burst); `None`: no throttle.
    sink: Vec<(Duration, Option<(u32, u32)>)>,
    /// The workers' configured budget.
    budget: (u32, u32),
    workers: usize,
    recipients: usize,
}

/// What a scenario measured.
struct Result {
    worker_cpu_us: f64,
    /// `EVALSHA` µs per delivery (every script: the governor's and the queue's).
    evalsha_us: f64,
}

/// The sink's state: the token bucket (replaced when the budget changes), what it answered, per 100 ms.
#[derive(Default)]
struct Sink {
    bucket: Mutex<Option<Arc<TokenBucket>>>,
    t0: Mutex<Option<Instant>>,
    delivered: Mutex<HashSet<String>>,
    /// (2xx, 429) per 100 ms slot since `t0`.
    slots: Mutex<Vec<(u64, u64)>>,
    last_new: Mutex<Option<Instant>>,
}

impl Sink {
    fn set_budget(&self, budget: Option<(u32, u32)>, empty: bool) {
        let bucket = budget.map(|(rate, burst)| {
            let b = TokenBucket::new(RateLimit {
                per_sec: f64::from(rate),
                burst,
            });
            if empty {
                while b.try_acquire() {}
            }
            Arc::new(b)
        });
        *self.bucket.lock().unwrap() = bucket;
    }

    fn answer(&self, id: &str) -> bool {
        let bucket = self.bucket.lock().unwrap().clone();
        let ok = bucket.is_none_or(|b| b.try_acquire());
        let now = Instant::now();
        if let Some(t0) = *self.t0.lock().unwrap() {
            let slot = (now.duration_since(t0).as_millis() / 100) as usize;
            let mut slots = self.slots.lock().unwrap();
            if slots.len() <= slot {
                slots.resize(slot + 1, (0, 0));
            }
            if ok {
                slots[slot].0 += 1;
            } else {
                slots[slot].1 += 1;
            }
        }
        if ok && self.delivered.lock().unwrap().insert(id.to_owned()) {
            *self.last_new.lock().unwrap() = Some(now);
        }
        ok
    }
}

async fn post(
    axum::extract::State(sink): axum::extract::State<Arc<Sink>>,
    axum::extract::Path((_stage, _coll, id)): axum::extract::Path<(String, String, String)>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if sink.answer(&id) {
        axum::http::StatusCode::OK.into_response()
    } else {
        (
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            [("x-amzn-ErrorType", "LimitExceededException")],
            r#"{"message":"Limit Exceeded"}"#,
        )
            .into_response()
    }
}

/// Redis's own CPU (`INFO cpu`, from its getrusage) and its `EVALSHA` time (`INFO commandstats`), µs.
async fn redis_cpu(redis: &Redis) -> (f64, f64) {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .arg("commandstats")
        .query_async(&mut redis.clone())
        .await
        .unwrap();
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (field("used_cpu_user:") + field("used_cpu_sys:")) * 1e6;
    let evalsha = info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:"))
        .and_then(|v| v.split(',').find_map(|kv| kv.strip_prefix("usec=")))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, evalsha)
}

/// A worker metric's value (summed over its series matching `labels`).
async fn metric(http: &reqwest::Client, port: u16, name: &str, labels: &str) -> f64 {
    let text = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn run(name: &str, plan: &Plan) -> Result {
    let n = plan.recipients;
    let sink = Arc::new(Sink::default());
    sink.set_budget(plan.sink[0].1, false);
    let app = axum::Router::new()
        .route("/{stage}/{coll}/{id}", axum::routing::post(post))
        .with_state(sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let redis_server = RedisServer::start();
    let redis = Redis::connect(&redis_server.url()).await.unwrap();
    support::register_channel(&redis, "g", n, false).await;
    let queue_url = format!("{}?queue=jobs", redis_server.url());
    let (mut children, ports) = support::start_workers(
        &redis_server.url(),
        &queue_url,
        &base,
        plan.workers,
        &[
            format!("--account-rate-per-sec={}", plan.budget.0),
            format!("--account-burst={}", plan.budget.1),
            "--max-jobs-in-hand=2".to_owned(),
        ],
    )
    .await;
    let queue =
        common::queue::streams::StreamQueue::new(redis.clone(), "jobs", QueueOptions::default())
            .await
            .unwrap();
    let http = reqwest::Client::new();
    let job = Job::post(
        Target::Channel {
            channel: "big".into(),
        },
        payload_of(&serde_json::json!({"type": "system", "message": "x".repeat(70)})),
    );
    // What an idle worker costs (pollers waiting on the queue), as a reference for the CPU per delivery.
    let idle0: Duration = children.iter().map(|c| cpu_time_of(c.id())).sum();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = (children
        .iter()
        .map(|c| cpu_time_of(c.id()))
        .sum::<Duration>()
        - idle0)
        / 2;
    let cpu0: Vec<Duration> = children.iter().map(|c| cpu_time_of(c.id())).collect();
    let (redis_cpu0, evalsha0) = redis_cpu(&redis).await;
    let t0 = Instant::now();
    *sink.t0.lock().unwrap() = Some(t0);
    queue.send_batch(std::slice::from_ref(&job)).await.unwrap();
    let mut changes = plan.sink[1..].iter().peekable();
    let trace = std::env::var_os("BENCH_TRACE").is_some();
    let mut trace_at = Instant::now();
    let mut traced: Vec<String> = Vec::new();
    loop {
        if trace && trace_at.elapsed() >= Duration::from_millis(100) {
            trace_at = Instant::now();
            let h: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(Keyspace::default().governor("default"))
                .arg("rate")
                .arg("epoch")
                .arg("tokens")
                .query_async(&mut redis.clone())
                .await
                .unwrap();
            let slots = sink.slots.lock().unwrap();
            let last = slots.len().saturating_sub(2);
            traced.push(format!(
                "{:.1}s rate={} epoch={} tokens={} ok/429 in the last 100 ms={:?}",
                t0.elapsed().as_secs_f64(),
                h[0].as_deref()
                    .unwrap_or("-")
                    .split('.')
                    .next()
                    .unwrap_or("-"),
                h[1].as_deref().unwrap_or("-"),
                h[2].as_deref()
                    .unwrap_or("-")
                    .split('.')
                    .next()
                    .unwrap_or("-"),
                slots.get(last),
            ));
        }
        if let Some((at, budget)) = changes.peek()
            && t0.elapsed() >= *at
        {
            sink.set_budget(*budget, true);
            changes.next();
        }
        let done = sink.delivered.lock().unwrap().len();
        if done >= n {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "stuck at {done} of {n}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = sink.last_new.lock().unwrap().unwrap().duration_since(t0);
    for line in &traced {
        println!("    trace {line}");
    }
    let worker_cpu: Duration = children
        .iter()
        .zip(&cpu0)
        .map(|(c, before)| cpu_time_of(c.id()) - *before)
        .sum();
    let (redis_cpu1, evalsha1) = redis_cpu(&redis).await;
    let mut sent = Vec::new();
    let mut gov_calls = 0.0;
    for port in &ports {
        sent.push(metric(&http, *port, "fanout_deliveries_total", "outcome=\"sent\"").await);
        gov_calls += metric(&http, *port, "fanout_governor_bucket_calls_total", "").await;
    }
    let slots = sink.slots.lock().unwrap().clone();
    let (ok, throttled) = slots
        .iter()
        .fold((0u64, 0u64), |a, s| (a.0 + s.0, a.1 + s.1));
    let posts = ok + throttled;
    // The real minimum: (N − burst) ÷ rate of the sink's first budget (for a changing budget, the time the
    // phases allow, worked out slot by slot).
    let min = minimum(plan, n);
    let result = Result {
        worker_cpu_us: worker_cpu.as_secs_f64() * 1e6 / n as f64,
        evalsha_us: (evalsha1 - evalsha0) / n as f64,
    };
    println!(
        "  {:<34} {:>8} {:>8} {:>6.2}% {:>9.2} {:>9.2} {:>6.3}× {:>10.1} {:>10.1} {:>11.1} {:>10.0}",
        name,
        posts,
        throttled,
        throttled as f64 * 100.0 / posts as f64,
        took.as_secs_f64(),
        min,
        if min > 0.0 {
            took.as_secs_f64() / min
        } else {
            f64::NAN
        },
        result.worker_cpu_us,
        (redis_cpu1 - redis_cpu0) / n as f64,
        result.evalsha_us,
        gov_calls,
    );
    println!(
        "    idle worker CPU: {:.0} µs a second per worker",
        idle.as_secs_f64() * 1e6 / plan.workers as f64
    );
    if plan.workers > 1 {
        let lo = sent.iter().copied().fold(f64::MAX, f64::min);
        let hi = sent.iter().copied().fold(0.0, f64::max);
        println!(
            "    deliveries per worker: {sent:?}; largest ÷ smallest = {:.2}",
            hi / lo.max(1.0)
        );
    }
    for (i, (at, budget)) in plan.sink.iter().enumerate().skip(1) {
        let from = (at.as_millis() / 100) as usize;
        let (rate, _) = budget.expect("a budget");
        let next = plan
            .sink
            .get(i + 1)
            .map_or(slots.len(), |(t, _)| (t.as_millis() / 100) as usize);
        // Followed: over the next 500 ms, fewer than 5 % 429s and at least 85 % of the new budget used
        // (or, when the recipients ran out first, nothing left to send).
        let followed = (from..next.min(slots.len())).find(|&s| {
            let w: Vec<&(u64, u64)> = slots.iter().skip(s).take(5).collect();
            let (a, t) = w.iter().fold((0, 0), |acc, x| (acc.0 + x.0, acc.1 + x.1));
            let enough = a as f64 >= f64::from(rate) * 0.5 * 0.85 || s + 5 >= slots.len();
            t * 20 <= a + t && enough
        });
        match followed {
            Some(s) => println!(
                "    budget → {rate}/s at {:.1} s: followed after {:.1} s",
                at.as_secs_f64(),
                (s - from) as f64 / 10.0
            ),
            None => println!(
                "    budget → {rate}/s at {:.1} s: not followed before the next change",
                at.as_secs_f64()
            ),
        }
    }
    for child in &mut children {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
    }
    for child in &mut children {
        let _ = child.wait();
    }
    server.abort();
    result
}

/// The least time `n` deliveries take under the sink's budgets (the first phase's burst, then each
/// phase's rate; a new phase starts with an empty bucket).
fn minimum(plan: &Plan, n: usize) -> f64 {
    let Some((rate, burst)) = plan.sink[0].1 else {
        return 0.0;
    };
    let mut left = n as f64 - f64::from(burst);
    let mut t = 0.0;
    let mut rate = f64::from(rate);
    for (at, budget) in plan.sink.iter().skip(1) {
        let span = at.as_secs_f64() - t;
        if left <= rate * span {
            break;
        }
        left -= rate * span;
        t = at.as_secs_f64();
        rate = budget.map_or(1e9, |b| f64::from(b.0));
    }
    t + left.max(0.0) / rate
}
