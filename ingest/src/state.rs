//! [`AppState`]: what every handler shares, built once at start-up: the settings, the Redis connection,
//! both lanes' queues, the key names, the metrics, the HTTP client for the application's webhooks (no redirects,
//! a deadline on every call) and the lifecycle webhook's [`Emitter`].

use crate::config::Settings;
use crate::webhooks::dispatch::Emitter;
use common::keys::Keyspace;
use common::metrics::IngestMetrics;
use common::queue::Lanes;
use common::store::Redis;
use std::sync::Arc;

/// Shared state: one pointer, so the clone every request makes (the handler's and each middleware's
/// `State`) is one reference count, not one per metric handle.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] points to; its fields are read through `Deref` (`state.settings`).
#[derive(Debug)]
pub struct Shared {
    pub settings: Arc<Settings>,
    pub redis: Redis,
    /// The interactive and bulk lanes' queues; [`crate::outbox`] picks one per job.
    pub queue: Lanes,
    pub keys: Keyspace,
    pub metrics: IngestMetrics,
    pub http: reqwest::Client,
    /// Lifecycle webhook events go here (disabled unless configured).
    pub lifecycle_hooks: Emitter,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// Builds the state; with a lifecycle webhook configured, starts its delivery task (so this runs on
    /// a Tokio runtime).
    pub fn new(settings: Settings, redis: Redis, queue: Lanes) -> Self {
        let http = crate::webhooks::client(settings.webhook_timeout);
        let metrics = IngestMetrics::new();
        let lifecycle_hooks = match &settings.lifecycle_webhook {
            Some(lifecycle) => Emitter::start(lifecycle, http.clone(), metrics.clone()),
            None => Emitter::disabled(),
        };
        Self(Arc::new(Shared {
            keys: Keyspace::new(settings.key_prefix.clone()),
            settings: Arc::new(settings),
            redis,
            queue,
            metrics,
            http,
            lifecycle_hooks,
        }))
    }

    /// A Redis connection handle for one request.
    pub fn conn(&self) -> Redis {
        self.redis.clone()
    }
}
