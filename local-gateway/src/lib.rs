//! The local gateway: AWS API Gateway WebSockets on one machine, so the demo, the end-to-end tests and
//! the load tests run without AWS. Browsers hold WebSockets here; every WebSocket event becomes an
//! HTTP_PROXY-style POST to the integration (ingest); the fan-out workers deliver through the
//! `@connections` Management API exactly as they would at AWS, AWS SDK included.
//!
//! Read the modules in this order:
//! - [`config`]: flags and environment (`EMULATOR_*`), validated into [`Settings`].
//! - [`routes`]: the integration URL of each route, and route selection on `$request.body.action`.
//! - [`limits`]: the token buckets behind the Management API throttle and the new-connection limit.
//! - [`metrics`]: the `fanout_emulator_*` Prometheus metrics.
//! - [`registry`]: live connections (sockets and virtual ones) by id, and why a socket closes.
//! - [`integration`]: the POSTs to the backend, with the headers the real wiring sends.
//! - [`virtual_stats`]: the counters over virtual connections, owned by the state.
//! - [`state`]: the shared [`state::AppState`] and the connection lifecycle (`$connect` admits, exactly one
//!   `$disconnect` follows).
//! - [`front`]: the WebSocket listener: handshake, per-socket reader and writer, limits and timeouts.
//! - [`management`]: `POST|GET|DELETE /{stage}/@connections/{id}` and `/metrics`.
//! - [`virtual_conns`]: socket-less connections for scale tests, under `/_emulator/virtual`.
//! - [`faults`]: a Management API stall or 500s on demand, for fault tests, under `/_emulator/faults`.
//!
//! This file binds the two listeners ([`LocalGateway::bind`]), serves them until shutdown
//! ([`LocalGateway::serve`], or [`run`] for both), and starts a gateway in the background for tests
//! ([`LocalGateway::spawn`]).

pub mod config;
pub mod faults;
pub mod front;
pub mod integration;
pub mod limits;
pub mod management;
pub mod metrics;
pub mod registry;
pub mod routes;
pub mod state;
pub mod virtual_conns;
pub mod virtual_stats;

pub use config::{Config, Settings};

use state::AppState;
use std::future::{Future, IntoFuture};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Why the gateway could not start, or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} for the {listener}: {source}")]
    Bind {
        listener: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the integration HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("the {listener} failed: {source}")]
    Serve {
        listener: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the listeners and serves until `shutdown` resolves, then closes every socket with 1001 and sends
/// the `$disconnect`s.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    let gateway = LocalGateway::bind(settings).await?;
    tracing::info!(
        websocket = %gateway.ws_url(),
        management_endpoint = %gateway.management_endpoint(),
        api_id = %gateway.state.settings.api_id,
        "local gateway listening"
    );
    gateway.serve(shutdown).await
}

/// A gateway whose listeners are bound (port 0 gives free ports), ready to serve.
#[derive(Debug)]
pub struct LocalGateway {
    state: AppState,
    ws: TcpListener,
    management: TcpListener,
    ws_addr: SocketAddr,
    management_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    drained: mpsc::Receiver<()>,
}

impl LocalGateway {
    pub async fn bind(settings: Settings) -> Result<Self, StartError> {
        let bind = |listener: &'static str, addr: SocketAddr| async move {
            let socket = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind {
                    listener,
                    addr,
                    source,
                })?;
            let local = socket.local_addr().map_err(|source| StartError::Bind {
                listener,
                addr,
                source,
            })?;
            Ok::<_, StartError>((socket, local))
        };
        let (ws, ws_addr) = bind("WebSocket front", settings.ws_listen).await?;
        let (management, management_addr) =
            bind("Management API", settings.management_listen).await?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (drain, drained) = mpsc::channel(1);
        let state = AppState::new(settings, shutdown_rx, drain).map_err(StartError::Client)?;
        Ok(Self {
            state,
            ws,
            management,
            ws_addr,
            management_addr,
            shutdown,
            drained,
        })
    }

    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    pub fn management_addr(&self) -> SocketAddr {
        self.management_addr
    }

    /// Where clients connect: `ws://ADDR/STAGE`.
    pub fn ws_url(&self) -> String {
        format!(
            "ws://{}/{}",
            reachable(self.ws_addr),
            self.state.settings.stage
        )
    }

    /// The Management API endpoint URL for the AWS SDK and for ingest: `http://ADDR/STAGE`.
    pub fn management_endpoint(&self) -> String {
        format!(
            "http://{}/{}",
            reachable(self.management_addr),
            self.state.settings.stage
        )
    }

    /// Serves until `shutdown` resolves (or a listener fails), then drains: sockets close with 1001, every
    /// connection gets its `$disconnect`, within the integration timeout and a few seconds.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), StartError> {
        let LocalGateway {
            state,
            ws,
            management,
            shutdown: stop,
            mut drained,
            ..
        } = self;
        let stopped = |mut signal: watch::Receiver<bool>| async move {
            let _ = signal.wait_for(|stop| *stop).await;
        };
        let ws_server = axum::serve(
            ws,
            front::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stopped(state.shutdown_signal()));
        let management_server = axum::serve(management, management::router(state.clone()))
            .with_graceful_shutdown(stopped(state.shutdown_signal()));
        let mut ws_task = tokio::spawn(ws_server.into_future());
        let mut management_task = tokio::spawn(management_server.into_future());

        let failure = tokio::select! {
            () = shutdown => None,
            result = &mut ws_task => Some(("WebSocket front", result)),
            result = &mut management_task => Some(("Management API", result)),
        };
        tracing::info!("shutting down: closing sockets with 1001, sending $disconnect");
        let _ = stop.send(true);
        let deadline = state.settings.integration_timeout + Duration::from_secs(5);
        let released = tokio::time::timeout(deadline, virtual_conns::release_all(&state, 64)).await;
        if released.is_err() {
            tracing::warn!("shutdown: some virtual connections got no $disconnect in time");
        }
        drop(state);
        if failure.is_none() {
            let _ = tokio::time::timeout(deadline, async {
                let _ = (&mut ws_task).await;
                let _ = (&mut management_task).await;
            })
            .await;
        } else {
            ws_task.abort();
            management_task.abort();
        }
        // Every socket task and pending `$disconnect` holds a clone of the state; the channel closes when
        // the last one is gone.
        if tokio::time::timeout(deadline, drained.recv())
            .await
            .is_err()
        {
            tracing::warn!("shutdown: some sockets were still closing after {deadline:?}");
        }
        match failure {
            None => Ok(()),
            Some((listener, Ok(Err(source)))) => Err(StartError::Serve { listener, source }),
            Some((listener, _)) => Err(StartError::Serve {
                listener,
                source: std::io::Error::other("the server stopped unexpectedly"),
            }),
        }
    }

    /// Serves in a background task on the current runtime; the returned handle knows the addresses and
    /// stops the gateway when told to (or when dropped).
    pub fn spawn(self) -> RunningGateway {
        let (stop, stopped) = oneshot::channel::<()>();
        let (ws_url, management_endpoint) = (self.ws_url(), self.management_endpoint());
        let (ws_addr, management_addr) = (self.ws_addr, self.management_addr);
        let task = tokio::spawn(self.serve(async move {
            let _ = stopped.await;
        }));
        RunningGateway {
            ws_url,
            management_endpoint,
            ws_addr,
            management_addr,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

/// The address to give clients: a wildcard listen address is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        ip if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()),
        _ => addr,
    }
}

/// A gateway serving in the background (see [`LocalGateway::spawn`]).
#[derive(Debug)]
pub struct RunningGateway {
    /// `ws://ADDR/STAGE`.
    pub ws_url: String,
    /// `http://ADDR/STAGE`: the Management API endpoint URL.
    pub management_endpoint: String,
    pub ws_addr: SocketAddr,
    pub management_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), StartError>>>,
}

impl RunningGateway {
    /// Shuts down gracefully and waits until it is done.
    pub async fn stop(mut self) -> Result<(), StartError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
