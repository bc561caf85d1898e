//! Benchmark: Redis memory per idle connection (`cargo bench -p ingest --bench memory`, or `./dev bench`).
//! Registers `BENCH_CONNECTIONS` (default 100,000) connections through real `$connect` callbacks over
//! loopback HTTP, spread over `BENCH_CHANNELS` (default 100) channels and `BENCH_USERS` users (default:
//! one per connection, the common case and the costly one), against a fresh redis-server, and reports two measurements of the same state:
//!
//! - `INFO memory`'s `used_memory` after minus before, per connection (allocator overhead included), with
//!   the short-lived rate-limit counters (they expire within a minute of the connect) deleted first, so
//!   the figure is what an idle connection keeps;
//! - `MEMORY USAGE` of every key the connections live in (records, channel, user, `all` and location
//!   sets), summed per kind and divided by the connections: where the bytes go.
//!
//! The baseline in the same run is what the ids alone cost: the same ids `SADD`ed to one set per
//! channel, the least any design that indexes channel members can keep.

mod support;

use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::Duration;
use test_support::bench::env_or;

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO memory")
}

/// Every key matching `pattern`.
async fn keys(conn: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(10_000)
            .query_async(conn)
            .await
            .unwrap();
        out.extend(page);
        if next == 0 {
            return out;
        }
        cursor = next;
    }
}

/// An id shaped like API Gateway's: 16 characters, base64 with a trailing `=`.
fn connection_id(i: usize) -> String {
    format!("{:0>15}=", format!("Bx{i:X}cQ"))
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env_or("BENCH_CONNECTIONS", 100_000);
    let channels = env_or("BENCH_CHANNELS", 100);
    let users = env_or("BENCH_USERS", n).max(1);
    let redis = test_support::RedisServer::start();
    let prefix = "fanout:";
    let (state, base) = support::start_ingest(&redis, &[format!("--key-prefix={prefix}")]).await;
    let http = reqwest::Client::new();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();

    // The empty baseline, then the tokens: each is deleted as its connect uses it, so the memory they
    // held must be in `before` (measured before they exist), or the delta would hide it.
    let before = used_memory(&mut conn).await;
    let mut tokens = Vec::with_capacity(n);
    for i in 0..n {
        let subject = common::names::Subject::parse(&format!("user-{}", i % users)).unwrap();
        tokens.push(
            ingest::tokens::issue(&state, &subject, None, 0, Duration::from_secs(3600))
                .await
                .unwrap(),
        );
    }
    let refused = futures::stream::iter(0..n)
        .map(|i| {
            let (http, base, token) = (&http, &base, &tokens[i]);
            async move {
                let channel = format!("room-{}", i % channels);
                support::connect(http, base, &channel, token, &connection_id(i)).await
            }
        })
        .buffer_unordered(64)
        .filter(|ok| std::future::ready(!*ok))
        .count()
        .await;
    assert_eq!(refused, 0, "every connect must succeed");
    let transient = keys(&mut conn, &format!("{prefix}rl:*")).await;
    for batch in transient.chunks(1000) {
        let _: () = redis::cmd("DEL")
            .arg(batch)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let left: Vec<String> = keys(&mut conn, &format!("{prefix}tok:*")).await;
    assert!(left.is_empty(), "every token consumed");
    let after = used_memory(&mut conn).await;

    let mut by_kind: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for key in keys(&mut conn, &format!("{prefix}*")).await {
        let kind = key[prefix.len()..]
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        let usage: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut conn)
            .await
            .unwrap();
        let entry = by_kind.entry(kind).or_default();
        entry.0 += 1;
        entry.1 += usage.unwrap_or(0);
    }

    // The baseline: the same ids in one set per channel, on the same server.
    let base_before = used_memory(&mut conn).await;
    for i in 0..n {
        let _: () = redis::cmd("SADD")
            .arg(format!("baseline:{{room-{}}}", i % channels))
            .arg(connection_id(i))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let baseline = used_memory(&mut conn).await - base_before;

    let per = |bytes: i64| bytes as f64 / n as f64;
    println!(
        "{n} idle connections, {channels} channels, {users} users (cargo bench -p ingest --bench memory)"
    );
    println!(
        "used_memory delta:       {:>8.1} bytes per connection ({:.1} MB in all)",
        per(after - before),
        (after - before) as f64 / 1e6
    );
    println!(
        "baseline (ids in sets):  {:>8.1} bytes per connection   ratio = {:.2}",
        per(baseline),
        (after - before) as f64 / baseline as f64
    );
    println!("MEMORY USAGE by key kind (keys, bytes per connection):");
    let mut total = 0;
    for (kind, (count, bytes)) in &by_kind {
        total += bytes;
        println!(
            "  {kind:<8} {count:>8} keys  {:>8.1}",
            *bytes as f64 / n as f64
        );
    }
    println!("  total                  {:>8.1}", total as f64 / n as f64);
}
