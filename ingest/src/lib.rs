//! Ingest: the HTTP service API Gateway calls for every WebSocket event, and the API the application's
//! backend calls to mint tokens and publish. It keeps state in Redis and turns every message to a browser
//! into a job on the queue; it never calls the Management API itself.
//!
//! Read in this order:
//! - [`config`]: flags and environment, validated into [`config::Settings`].
//! - [`state`]: [`state::AppState`], shared by every handler.
//! - [`error`]: [`error::AppError`], every failure with its status and code.
//! - [`callbacks`]: `POST /ws/{route}`: `$connect`, `$disconnect` and client messages.
//! - [`actions`]: what a client message can ask for (`change_channel`, `fetch_history`, `chat_message`,
//!   `recover`, or the application's webhook).
//! - [`api`]: the `/v1` application API.
//! - [`tokens`], [`membership`], [`history`], [`limits`], [`origin`], [`client_ip`]: the state each
//!   concept keeps in Redis, and the checks.
//! - [`presence`]: who is in a presence channel; [`lifecycle`]: what follows a connection's comings and
//!   goings (presence events, lifecycle webhook events).
//! - [`sweep`]: the stale-connection sweep, which removes connections whose record expired without a
//!   `$disconnect`.
//! - [`revocation`]: kicks (connections, users, channels) and revoking a user's tokens.
//! - [`json`]: the nesting limit every JSON input is held to.
//! - [`outbox`]: puts jobs on the queue.
//! - [`recovery`]: offsets and epochs stamped on kept messages, and replay after an offset.
//! - [`health`] and [`observe`]: health, readiness and metrics.
//! - [`webhooks`]: calls to the application: the shared HTTP client, and the lifecycle webhook
//!   (batched, signed, retried).
//! - [`listener`]: the HTTP listener with its header-read, idle and request timeouts.
//! - [`demo`]: the chat page and open token minting, for the local demo only.

pub mod actions;
pub mod api;
pub mod callbacks;
pub mod client_ip;
pub mod config;
pub mod demo;
pub mod error;
pub mod health;
pub mod history;
pub mod json;
pub mod lifecycle;
pub mod limits;
pub mod listener;
pub mod membership;
pub mod observe;
pub mod origin;
pub mod outbox;
pub mod presence;
pub mod recovery;
pub mod revocation;
pub mod state;
pub mod sweep;
pub mod tokens;
pub mod webhooks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use common::names::MAX_PAYLOAD_BYTES;
use common::queue::QueueOptions;
use common::store::Redis;
use config::Settings;
use state::AppState;
use std::future::Future;
use std::time::Duration;

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new();
    if state.settings.demo_ws_url.is_some() {
        router = router
            .route("/demo/", get(demo::page))
            .route("/demo/fanout.js", get(demo::client_module))
            .route("/demo/token", post(demo::token));
    }
    router
        .route("/ws/{route}", post(callbacks::gateway_callback))
        .nest("/v1", api::router())
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(|| async { error::AppError::Rejected(axum::http::StatusCode::NOT_FOUND) })
        // Bodies up to the limit plus a margin are read, so an oversized one gets our 413, not a dropped connection.
        .layer(DefaultBodyLimit::max(MAX_PAYLOAD_BYTES + 1024))
        .layer(axum::middleware::from_fn_with_state(
            state.settings.request_timeout,
            request_timeout,
        ))
        .layer(axum::middleware::from_fn(error::json_rejections))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::record,
        ))
        .with_state(state)
}

/// Middleware: a request not read and answered within the request timeout gets 408.
async fn request_timeout(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error::AppError::Timeout.into_response(),
    }
}

/// Why ingest could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("Redis: {0}")]
    Redis(#[from] common::store::StoreError),
    #[error("queue: {0}")]
    Queue(#[from] common::queue::QueueError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Connects to Redis and the queue, waiting (with backoff, logging each wait) while they are not up yet,
/// for at most `patience`.
pub async fn build_state(settings: Settings, patience: Duration) -> Result<AppState, StartError> {
    use backon::{ExponentialBuilder, Retryable};
    let retry = ExponentialBuilder::default()
        .with_max_delay(Duration::from_secs(5))
        .with_total_delay(Some(patience))
        .without_max_times();
    let redis = (|| Redis::connect(&settings.redis_url))
        .retry(retry)
        .notify(|e, wait| tracing::warn!(error = %e, ?wait, "Redis is not reachable yet"))
        .await?;
    let options = QueueOptions {
        key_prefix: settings.key_prefix.clone(),
        ..QueueOptions::default()
    };
    let (queue_url, bulk_queue_url) = (settings.queue_url.clone(), settings.bulk_queue_url.clone());
    let queue = (|| common::queue::Lanes::open(&queue_url, &bulk_queue_url, options.clone()))
        .retry(retry)
        .when(|e| !matches!(e, common::queue::QueueError::Url(_)))
        .notify(|e, wait| tracing::warn!(error = %e, ?wait, "the queue is not reachable yet"))
        .await?;
    Ok(AppState::new(settings, redis, queue))
}

/// Serves until `shutdown` resolves, then finishes the requests in flight and sends the buffered
/// lifecycle events. The stale-connection sweep ([`sweep::run`]) runs beside the listener until then.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let header_read_timeout = state.settings.header_read_timeout;
    let lifecycle_hooks = state.lifecycle_hooks.clone();
    let drain_limit = state.settings.webhook_timeout + LIFECYCLE_DRAIN_MARGIN;
    let (stop_sweep, swept) = tokio::sync::oneshot::channel::<()>();
    let sweeper = tokio::spawn(sweep::run(state.clone(), async {
        let _ = swept.await;
    }));
    let served = listener::serve(listener, app(state), header_read_timeout, shutdown).await;
    let _ = stop_sweep.send(());
    let _ = sweeper.await;
    lifecycle_hooks.drain(drain_limit).await;
    served
}

/// How long, beyond one webhook call's timeout, buffered lifecycle events may take to go out at shutdown.
const LIFECYCLE_DRAIN_MARGIN: Duration = Duration::from_secs(5);

/// Builds the state, binds the configured address and serves until `shutdown`.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    if settings.insecure_dev {
        tokio::spawn(async {
            let mut every_minute = tokio::time::interval(Duration::from_secs(60));
            loop {
                every_minute.tick().await;
                tracing::warn!(
                    "INSECURE DEV MODE (--insecure-dev): callbacks are not authenticated, anyone who can reach this port can forge them; never run this in production"
                );
            }
        });
    }
    if settings.demo_ws_url.is_some() {
        tracing::warn!(
            "DEMO MODE: /demo/token lets anyone mint connect tokens; never enable FANOUT_DEMO_WS_URL in production"
        );
    }
    let addr = settings.listen;
    let state = build_state(settings, Duration::from_secs(60)).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    tracing::info!(%addr, queue = state.queue.backend(), "ingest listening");
    serve(listener, state, shutdown)
        .await
        .map_err(|source| StartError::Listen { addr, source })
}
