//! Benchmark: `$connect` callbacks per second with token consumption, against a real local redis-server,
//! over real loopback HTTP. Run with `cargo bench -p ingest --bench connect` (or `./dev bench`).
//!
//! Absolute numbers move with the machine's load, so it also measures two baselines in the same run and
//! prints ratios: the same HTTP client against `/healthz` (HTTP cost with no Redis work), and the same
//! Redis commands a connect issues, sent through the same library calls the handler makes (Redis cost
//! with no HTTP), so the baseline follows any change to what a connect asks of Redis.
//! Each figure is requests per second with the latency of one request at the median and the 99th
//! percentile. Settings: `BENCH_CONNECTS` (default 20000) and `BENCH_CONCURRENCY` (default 64).

mod support;

/// The allocator the `ingest` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use futures::StreamExt;
use std::time::{Duration, Instant};
use test_support::bench::{cpu_time, cpu_time_of, env_or};

/// One round: requests per second, the latency of each request at the median and the 99th percentile,
/// and the CPU time per request of this process (the HTTP client and ingest, or the Redis client) and of
/// redis-server, from their process CPU clocks.
#[derive(Debug, Clone, Copy)]
struct Round {
    rate: f64,
    p50: Duration,
    p99: Duration,
    cpu: Duration,
    redis_cpu: Duration,
}

/// The redis-server the bench runs against, for its CPU clock.
static REDIS_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

async fn timed<F, Fut>(n: usize, concurrency: usize, f: F) -> Round
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let redis_pid = *REDIS_PID.get().expect("the redis-server's pid");
    let (cpu0, redis0) = (cpu_time(), cpu_time_of(redis_pid));
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(0..n)
        .map(|i| {
            let call = f(i);
            async move {
                let t = Instant::now();
                let ok = call.await;
                (ok, t.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .filter_map(|(ok, took)| std::future::ready(ok.then_some(took)))
        .collect()
        .await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let (cpu, redis_cpu) = (cpu_time() - cpu0, cpu_time_of(redis_pid) - redis0);
    assert_eq!(latencies.len(), n, "every request must succeed");
    latencies.sort();
    Round {
        rate,
        p50: latencies[n / 2],
        p99: latencies[n * 99 / 100],
        cpu: cpu / n as u32,
        redis_cpu: redis_cpu / n as u32,
    }
}

/// `n` tokens for the bench's subject, minted through the library as the API would.
async fn mint(state: &ingest::state::AppState, n: usize) -> Vec<String> {
    let subject = common::names::Subject::parse(SUBJECT).unwrap();
    let mut tokens = Vec::with_capacity(n);
    for _ in 0..n {
        tokens.push(
            ingest::tokens::issue(state, &subject, None, 0, Duration::from_secs(600))
                .await
                .unwrap(),
        );
    }
    tokens
}

const SUBJECT: &str = "bench-user";

/// A `$connect`'s Redis work for connection `id` with `token`, without HTTP: the calls the handler makes,
/// with the arguments it would pass.
async fn redis_work(state: &ingest::state::AppState, token: &str, id: &str) -> bool {
    let limit = state.settings.connect_limit_per_minute;
    let Ok((true, Some(claims))) =
        ingest::tokens::consume_within_limit(state, Some(support::SOURCE_IP), limit, Some(token))
            .await
    else {
        return false;
    };
    let api = state.settings.gateways.get(support::API_ID).unwrap();
    let conn = ingest::membership::Connection {
        id: common::names::ConnectionId::parse(id).unwrap(),
        channel: common::names::ChannelName::parse("general").unwrap(),
        subject: Some(common::names::Subject::parse(&claims.sub).unwrap()),
        allowed: claims
            .channel_patterns()
            .as_deref()
            .map(ingest::membership::Allowed::new),
        api_id: api.api_id.clone(),
        stage: api.stage.clone(),
        connected_at_ms: common::job::now_ms(),
        source_ip: support::SOURCE_IP.to_owned(),
        token_hash: Some(common::keys::record_token_hash(token)),
        info: None,
    };
    let check = ingest::membership::SubjectCheck {
        limit,
        generation: claims.generation,
    };
    matches!(
        ingest::membership::admit(state, &conn, Some(check), true).await,
        Ok(ingest::membership::Admitted::Joined(_))
    )
}

#[tokio::main]
async fn main() {
    let n = env_or("BENCH_CONNECTS", 20_000);
    let concurrency = env_or("BENCH_CONCURRENCY", 64);
    let redis = test_support::RedisServer::start();
    REDIS_PID
        .set(redis.pid().expect("redis-server runs"))
        .unwrap();
    let (state, base) = support::start_ingest(&redis, &[]).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();

    // Tokens are minted up front (through the library, as the API would), so only connects are timed.
    let tokens = mint(&state, n).await;

    // Warm-up, then interleave rounds so drift in machine load hits every measurement alike.
    timed(2_000, concurrency, |_| async {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let direct_tokens = mint(&state, n).await;
    let direct_slice = |round: usize| &direct_tokens[round * (n / 2)..(round + 1) * (n / 2)];
    let mut rates = (Vec::new(), Vec::new(), Vec::new());
    let per_round = n / 2;
    for round in 0..2 {
        let slice = &tokens[round * per_round..(round + 1) * per_round];
        rates.0.push(
            timed(per_round, concurrency, |i| {
                let (http, base, token) = (&http, &base, &slice[i]);
                async move {
                    let id = format!("conn{round}x{i}=");
                    support::connect(http, base, "general", token, &id).await
                }
            })
            .await,
        );
        rates.1.push(
            timed(per_round, concurrency, |_| async {
                http.get(format!("{base}/healthz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            })
            .await,
        );
        rates.2.push(
            timed(per_round, concurrency, |i| {
                // What one connect asks of Redis, through the same library calls `$connect` makes: the
                // IP's limit with the token's `GETDEL` (one script), then the subject's limit, the token's
                // generation and the registration (one script).
                let (state, token) = (&state, &direct_slice(round)[i]);
                async move { redis_work(state, token, &format!("direct{round}x{i}=")).await }
            })
            .await,
        );
    }
    // The round with the best rate, with its own latencies.
    let best = |v: &Vec<Round>| *v.iter().max_by(|a, b| a.rate.total_cmp(&b.rate)).unwrap();
    let (connect, healthz, redis_only) = (best(&rates.0), best(&rates.1), best(&rates.2));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "$connect with token consumption: {:>9.0} /s   p50 {:.2} ms, p99 {:.2} ms   (best of 2 rounds of {per_round}, {concurrency} in flight)",
        connect.rate,
        ms(connect.p50),
        ms(connect.p99)
    );
    println!(
        "baseline GET /healthz:           {:>9.0} /s   p50 {:.2} ms, p99 {:.2} ms   ratio connect/healthz = {:.2}",
        healthz.rate,
        ms(healthz.p50),
        ms(healthz.p99),
        connect.rate / healthz.rate
    );
    println!(
        "baseline same Redis work direct: {:>9.0} /s   p50 {:.2} ms, p99 {:.2} ms   ratio connect/redis-only = {:.2}",
        redis_only.rate,
        ms(redis_only.p50),
        ms(redis_only.p99),
        connect.rate / redis_only.rate
    );
    // CPU per request is steadier than rates on a shared machine: the least of the rounds.
    let least = |v: &Vec<Round>| {
        (
            v.iter().map(|r| r.cpu).min().unwrap(),
            v.iter().map(|r| r.redis_cpu).min().unwrap(),
        )
    };
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (c, cr) = least(&rates.0);
    let (h, hr) = least(&rates.1);
    let (d, dr) = least(&rates.2);
    println!(
        "CPU per request (least of the rounds), this process + redis-server: $connect {:.1} + {:.1} us, /healthz {:.1} + {:.1} us, redis-only {:.1} + {:.1} us; $connect minus /healthz = {:.1} us",
        us(c),
        us(cr),
        us(h),
        us(hr),
        us(d),
        us(dr),
        us(c + cr) - us(h + hr)
    );
}
