//! The state every handler shares ([`AppState`]), and the connection lifecycle on top of it: a connection
//! is admitted by `$connect` ([`AppState::admit`]) and owes exactly one `$disconnect` from then on.
//!
//! For a socket that debt is an [`Admitted`] value: its task pays it with [`Admitted::release`] when the
//! socket ends, and if the value is dropped instead (the upgrade failed, or the handshake was abandoned
//! after `$connect` succeeded) its `Drop` pays it in a spawned task. A virtual connection has no task: it
//! lives in the registry, and whoever removes it from there sends its `$disconnect`
//! ([`AppState::release_virtual`]).
//!
//! Shutdown draining also lives here: every clone of the state holds one end of a channel, so the server
//! knows every socket task and every pending `$disconnect` has finished when the last clone is dropped.

use crate::config::Settings;
use crate::faults::Faults;
use crate::integration::{Integration, IntegrationError};
use crate::limits::TokenBucket;
use crate::metrics::Metrics;
use crate::registry::{Connection, Registry};
use crate::virtual_stats::VirtualStats;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use std::ops::Deref;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// Everything the handlers share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// The shared parts.
#[derive(Debug)]
pub struct Shared {
    pub settings: Settings,
    pub registry: Registry,
    pub integration: Integration,
    pub metrics: Metrics,
    /// The Management API's account throttle, when configured.
    pub mgmt_limiter: Option<TokenBucket>,
    /// The new-connection limit, when configured.
    pub connect_limiter: Option<TokenBucket>,
    pub virtual_stats: VirtualStats,
    /// Injected Management API faults (`/_emulator/faults`).
    pub faults: Faults,
    /// Checks Management API signatures, when `--verify-sigv4` is set.
    pub verifier: Option<mgmt_client::Verifier>,
    shutdown: watch::Receiver<bool>,
    /// Dropped with the last clone of the state; the server waits for that to drain.
    _drain: mpsc::Sender<()>,
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The outcome of `$connect`.
#[derive(Debug)]
pub enum Admission {
    /// 2xx: the connection is registered and owes a `$disconnect`.
    Admitted(Admitted),
    /// Non-2xx: the handshake is refused with this status and body.
    Refused { status: StatusCode, body: Bytes },
    /// No answer: the handshake is refused with [`IntegrationError::status`].
    Failed(IntegrationError),
}

impl AppState {
    /// Builds the state. `shutdown` turns true when the server stops; `drain` is held by every clone.
    pub fn new(
        settings: Settings,
        shutdown: watch::Receiver<bool>,
        drain: mpsc::Sender<()>,
    ) -> Result<Self, reqwest::Error> {
        let metrics = Metrics::new();
        let integration = Integration::new(&settings, metrics.clone())?;
        Ok(Self(Arc::new(Shared {
            registry: Registry::new(metrics.sockets_open.clone(), metrics.virtual_open.clone()),
            integration,
            mgmt_limiter: settings.mgmt_limit.map(TokenBucket::new),
            connect_limiter: settings.connect_limit.map(TokenBucket::new),
            virtual_stats: VirtualStats::new(),
            faults: Faults::default(),
            verifier: settings.verify_sigv4.as_ref().map(|c| c.verifier()),
            metrics,
            settings,
            shutdown,
            _drain: drain,
        })))
    }

    /// A receiver that turns true when the server shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// Calls `$connect` for `conn` and, on 2xx, registers it (after `--open-delay-ms`, a fault for tests).
    /// Posts to the id before this returns get 410, as at AWS.
    pub async fn admit(
        &self,
        conn: Arc<Connection>,
        query: Option<&str>,
        handshake: &HeaderMap,
    ) -> Admission {
        match self.integration.connect(&conn, query, handshake).await {
            Ok(answer) if answer.status.is_success() => {
                if !self.settings.open_delay.is_zero() {
                    tokio::time::sleep(self.settings.open_delay).await;
                }
                self.registry.insert(conn.clone());
                Admission::Admitted(Admitted {
                    state: self.clone(),
                    conn,
                    subprotocol: answer.subprotocol,
                    released: false,
                })
            }
            Ok(answer) => Admission::Refused {
                status: answer.status,
                body: answer.body,
            },
            Err(error) => Admission::Failed(error),
        }
    }

    /// Sends `$disconnect` for a virtual connection already removed from the registry.
    pub async fn release_virtual(&self, conn: &Connection) {
        let _ = self.integration.disconnect(conn).await;
    }
}

/// A connection admitted by `$connect` whose `$disconnect` is still owed.
#[derive(Debug)]
pub struct Admitted {
    state: AppState,
    conn: Arc<Connection>,
    /// The `Sec-WebSocket-Protocol` the integration chose, if any.
    pub subprotocol: Option<HeaderValue>,
    released: bool,
}

impl Admitted {
    pub fn connection(&self) -> &Arc<Connection> {
        &self.conn
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Removes the connection (if a DELETE has not already) and sends its `$disconnect`.
    pub async fn release(mut self) {
        self.released = true;
        self.state.registry.remove(self.conn.id());
        let _ = self.state.integration.disconnect(&self.conn).await;
    }

    /// Leaves a virtual connection in the registry, which now owns the `$disconnect` debt.
    pub fn into_registered(mut self) -> Arc<Connection> {
        self.released = true;
        self.conn.clone()
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.state.registry.remove(self.conn.id());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (state, conn) = (self.state.clone(), self.conn.clone());
            runtime.spawn(async move {
                let _ = state.integration.disconnect(&conn).await;
            });
        }
    }
}
