//! Virtual connections for scale tests: connections without a socket that go through `$connect` like real
//! ones and then only count what the Management API posts to them, so a load test can have 100,000
//! connections on one machine and measure the fan-out alone.
//!
//! - `POST /_emulator/virtual` creates them, calling `$connect` with bounded concurrency. The JSON body is
//!   either `{"queries": ["channel=a&ws_token=...", ...]}` (one connection per query string, since each
//!   connect usually spends its own token) or `{"count": N, "query": "channel=a"}`; optional fields:
//!   `concurrency` (`$connect` calls in flight, default 64, at most 1024), `headers` (added to each
//!   `$connect`, e.g. an `Origin`), `source_ip`, `user_agent` and `track_payloads` (keep a digest of each
//!   distinct payload a connection receives, so that a second post of the same bytes is counted as a
//!   duplicate; for fault tests, it costs memory per message). Without a body, `?count=N&query=...`
//!   works too. By default each connection gets its own source IP in 10.0.0.0/8, so per-IP connect
//!   limits in the backend see many clients. The answer lists the new ids in the order of the queries
//!   (`null` where `$connect` refused) with counts of what was created, refused (by status) and failed.
//! - `GET /_emulator/virtual/stats`: posts received in all, `duplicate_posts` (posts of a payload the
//!   tracking connection had already received), first and last receive time, and a summary of the
//!   per-connection counts (with `distinct_*`: distinct payloads per tracking connection); `DELETE /_emulator/virtual/stats` zeroes the counters.
//! - `DELETE /_emulator/virtual`: removes every virtual connection, each with its `$disconnect`.
//!
//! A post to a virtual connection costs a few atomic operations ([`crate::virtual_stats::VirtualStats::record`]); after a
//! `DELETE @connections/{id}` it gets 410 like any other.

use crate::registry::{Connection, new_connection_id};
use crate::state::{Admission, AppState};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// The most connections one request may create.
const MAX_PER_REQUEST: usize = 1_000_000;
const DEFAULT_CONCURRENCY: usize = 64;
const MAX_CONCURRENCY: usize = 1024;
const USER_AGENT: &str = "local-gateway-virtual";
/// Room for a million query strings with 64-character tokens.
const MAX_CREATE_BODY_BYTES: usize = 256 * 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/_emulator/virtual",
            post(create)
                .layer(DefaultBodyLimit::max(MAX_CREATE_BODY_BYTES))
                .delete(delete_all),
        )
        .route("/_emulator/virtual/stats", get(stats).delete(reset_stats))
}

/// `POST /_emulator/virtual`'s body (or query string).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    queries: Option<Vec<String>>,
    count: Option<usize>,
    query: Option<String>,
    concurrency: Option<usize>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    source_ip: Option<IpAddr>,
    user_agent: Option<String>,
    #[serde(default)]
    track_payloads: bool,
}

#[derive(Debug, Serialize)]
struct CreateResponse {
    created: usize,
    refused: usize,
    failed: usize,
    refused_by_status: BTreeMap<u16, usize>,
    elapsed_ms: u64,
    /// One entry per query, in order: the new id, or `null` when the connect did not succeed.
    connection_ids: Vec<Option<String>>,
}

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({ "message": message.into() })),
    )
        .into_response()
}

enum Outcome {
    Created(String),
    Refused(StatusCode),
    Failed,
}

async fn create(
    State(state): State<AppState>,
    Query(from_query): Query<CreateRequest>,
    body: Bytes,
) -> Response {
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        from_query
    } else {
        match serde_json::from_slice::<CreateRequest>(&body) {
            Ok(request) => request,
            Err(e) => return bad_request(format!("invalid JSON body: {e}")),
        }
    };
    let queries: Vec<String> = match (request.queries, request.count) {
        (Some(queries), None) => queries,
        (None, Some(count)) => vec![request.query.unwrap_or_default(); count],
        _ => {
            return bad_request(
                "give either `queries` (a list of query strings) or `count` (with an optional `query`)",
            );
        }
    };
    if queries.len() > MAX_PER_REQUEST {
        return bad_request(format!("at most {MAX_PER_REQUEST} connections per request"));
    }
    let concurrency = request.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
    if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
        return bad_request(format!("`concurrency` must be 1 to {MAX_CONCURRENCY}"));
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &request.headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => return bad_request(format!("invalid header {name:?}")),
        }
    }
    let user_agent = request.user_agent.unwrap_or_else(|| USER_AGENT.to_owned());
    let (source_ip, track) = (request.source_ip, request.track_payloads);
    let started = Instant::now();
    let outcomes: Vec<Outcome> = futures::stream::iter(queries)
        .map(|query| {
            let (state, headers, user_agent) = (&state, &headers, &user_agent);
            async move {
                let ip = source_ip.unwrap_or_else(|| state.virtual_stats.next_source_ip());
                let conn = Connection::new_virtual(
                    new_connection_id(),
                    ip,
                    Some(user_agent.clone()),
                    track,
                );
                match state.admit(conn, Some(&query), headers).await {
                    Admission::Admitted(admitted) => {
                        state.virtual_stats.created.fetch_add(1, Ordering::Relaxed);
                        Outcome::Created(admitted.into_registered().id().to_owned())
                    }
                    Admission::Refused { status, .. } => Outcome::Refused(status),
                    Admission::Failed(_) => Outcome::Failed,
                }
            }
        })
        .buffered(concurrency)
        .collect()
        .await;
    let mut response = CreateResponse {
        created: 0,
        refused: 0,
        failed: 0,
        refused_by_status: BTreeMap::new(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        connection_ids: Vec::with_capacity(outcomes.len()),
    };
    for outcome in outcomes {
        let id = match outcome {
            Outcome::Created(id) => {
                response.created += 1;
                Some(id)
            }
            Outcome::Refused(status) => {
                response.refused += 1;
                *response
                    .refused_by_status
                    .entry(status.as_u16())
                    .or_default() += 1;
                None
            }
            Outcome::Failed => {
                response.failed += 1;
                None
            }
        };
        response.connection_ids.push(id);
    }
    tracing::info!(
        created = response.created,
        refused = response.refused,
        failed = response.failed,
        elapsed_ms = response.elapsed_ms,
        "virtual connections created"
    );
    axum::Json(response).into_response()
}

/// Removes every virtual connection, each with its `$disconnect`.
async fn delete_all(State(state): State<AppState>) -> Response {
    let deleted = release_all(&state, DEFAULT_CONCURRENCY).await;
    axum::Json(serde_json::json!({ "deleted": deleted })).into_response()
}

/// Removes every virtual connection and sends their `$disconnect`s, `concurrency` at a time. Returns how
/// many were removed.
pub async fn release_all(state: &AppState, concurrency: usize) -> usize {
    let removed: Vec<_> = state
        .registry
        .virtual_connections()
        .into_iter()
        .filter_map(|conn| state.registry.remove(conn.id()))
        .collect();
    let count = removed.len();
    futures::stream::iter(removed)
        .for_each_concurrent(concurrency, |conn| async move {
            state.release_virtual(&conn).await;
        })
        .await;
    count
}

#[derive(Debug, Serialize)]
struct Stats {
    /// Virtual connections open now.
    open: usize,
    /// Virtual connections created since start.
    created_total: u64,
    /// Posts counted since start (or the last reset), deleted connections included.
    received: u64,
    /// Of those, posts of a payload the (tracking) connection had already received.
    duplicate_posts: u64,
    first_received_at: Option<String>,
    last_received_at: Option<String>,
    /// Seconds from the first to the last post counted.
    receive_span_secs: f64,
    per_connection: PerConnection,
}

/// The per-connection counts of the connections open now.
#[derive(Debug, Serialize)]
struct PerConnection {
    min: u64,
    max: u64,
    mean: f64,
    /// Connections that received nothing.
    none_received: usize,
    /// Distinct payloads per connection (tracking connections only; 0 for the others).
    distinct_min: u64,
    distinct_max: u64,
    distinct_total: u64,
}

async fn stats(State(state): State<AppState>) -> Response {
    let stats = &state.virtual_stats;
    let connections = state.registry.virtual_connections();
    let (mut min, mut max, mut sum, mut none_received) = (u64::MAX, 0u64, 0u64, 0usize);
    let (mut distinct_min, mut distinct_max, mut distinct_total) = (u64::MAX, 0u64, 0u64);
    for conn in &connections {
        let count = conn.received();
        min = min.min(count);
        max = max.max(count);
        sum += count;
        none_received += usize::from(count == 0);
        let distinct = conn.distinct_received();
        distinct_min = distinct_min.min(distinct);
        distinct_max = distinct_max.max(distinct);
        distinct_total += distinct;
    }
    let open = connections.len();
    let (first, last) = (
        stats.first_ns.load(Ordering::Relaxed),
        stats.last_ns.load(Ordering::Relaxed),
    );
    axum::Json(Stats {
        open,
        created_total: stats.created.load(Ordering::Relaxed),
        received: stats.received.load(Ordering::Relaxed),
        duplicate_posts: stats.repeats.load(Ordering::Relaxed),
        first_received_at: stats.wall(first),
        last_received_at: stats.wall(last),
        receive_span_secs: last.saturating_sub(first) as f64 / 1e9,
        per_connection: PerConnection {
            min: if open == 0 { 0 } else { min },
            max,
            mean: if open == 0 {
                0.0
            } else {
                sum as f64 / open as f64
            },
            none_received,
            distinct_min: if open == 0 { 0 } else { distinct_min },
            distinct_max,
            distinct_total,
        },
    })
    .into_response()
}

async fn reset_stats(State(state): State<AppState>) -> StatusCode {
    state.virtual_stats.reset();
    for conn in state.registry.virtual_connections() {
        conn.reset_received();
    }
    StatusCode::NO_CONTENT
}
