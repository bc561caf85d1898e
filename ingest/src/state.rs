//! [`AppState`]: what every handler shares, built once at start-up: the settings, the Redis connection,
//! the queue, the key names, the metrics and the HTTP client for the application webhook (no redirects,
//! a deadline on every call).

use crate::config::Settings;
use common::keys::Keyspace;
use common::metrics::IngestMetrics;
use common::queue::SharedQueue;
use common::store::Redis;
use std::sync::Arc;

/// Shared state, cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub redis: Redis,
    pub queue: SharedQueue,
    pub keys: Keyspace,
    pub metrics: IngestMetrics,
    pub http: reqwest::Client,
}

impl AppState {
    pub fn new(settings: Settings, redis: Redis, queue: SharedQueue) -> Self {
        // The webhook client: redirects are not followed (a redirect is a failed call, so a webhook cannot
        // bounce ingest's requests, with its secret, somewhere else), and every call has a deadline.
        let http = reqwest::Client::builder()
            .timeout(settings.webhook_timeout)
            .connect_timeout(settings.webhook_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the HTTP client's TLS set-up cannot fail with static settings");
        Self {
            keys: Keyspace::new(settings.key_prefix.clone()),
            settings: Arc::new(settings),
            redis,
            queue,
            metrics: IngestMetrics::new(),
            http,
        }
    }

    /// A Redis connection handle for one request.
    pub fn conn(&self) -> Redis {
        self.redis.clone()
    }
}
