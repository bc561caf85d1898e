//! What every test needs: a recording integration target (the boundary ingest plays in production), a
//! gateway started on free ports in front of it, and a WebSocket client that knows its connection id.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use clap::Parser;
use common::gateways::headers;
use futures::StreamExt;
use local_gateway::{Config, LocalGateway, RunningGateway};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for an event before it fails (a guard, never a synchronisation).
pub const PATIENCE: Duration = Duration::from_secs(10);
pub const SECRET: &str = "test-secret-0123456789-abcdefghijklmnop";
pub const API_ID: &str = "testapi";
pub const STAGE: &str = "test";

/// One request the integration target received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The last path segment: `connect`, `disconnect`, `default` or a custom route's name.
    pub route: String,
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn connection_id(&self) -> &str {
        self.header(headers::CONNECTION_ID)
            .expect("every integration call carries connectionId")
    }
}

#[derive(Debug)]
struct BackendState {
    recorded: watch::Sender<Vec<Recorded>>,
    connect_status: AtomicU16,
}

/// The integration target: records every request; answers `$connect` with the configured status (403 for
/// queries containing `deny`), echoing the first offered subprotocol, and everything else with 200 `{}`.
#[derive(Debug)]
pub struct Backend {
    /// `http://ADDR/ws`: the gateway's integration base.
    pub base: String,
    /// `http://ADDR`.
    pub origin: String,
    state: Arc<BackendState>,
}

impl Backend {
    pub async fn start() -> Self {
        let state = Arc::new(BackendState {
            recorded: watch::channel(Vec::new()).0,
            connect_status: AtomicU16::new(200),
        });
        let app = Router::new().fallback(record).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base: format!("http://{addr}/ws"),
            origin: format!("http://{addr}"),
            state,
        }
    }

    pub fn set_connect_status(&self, status: u16) {
        self.state.connect_status.store(status, Ordering::Relaxed);
    }

    /// Every request received so far for `route`.
    pub fn requests(&self, route: &str) -> Vec<Recorded> {
        self.state
            .recorded
            .borrow()
            .iter()
            .filter(|r| r.route == route)
            .cloned()
            .collect()
    }

    /// Waits for a request matching `predicate` (including ones already received).
    pub async fn wait_for(&self, predicate: impl Fn(&Recorded) -> bool) -> Recorded {
        let mut rx = self.state.recorded.subscribe();
        let found = tokio::time::timeout(PATIENCE, async {
            rx.wait_for(|all| all.iter().any(&predicate))
                .await
                .unwrap()
                .iter()
                .find(|r| predicate(r))
                .cloned()
                .unwrap()
        })
        .await;
        found.expect("the integration never received the expected request")
    }

    pub async fn wait_for_route(&self, route: &str, connection_id: &str) -> Recorded {
        self.wait_for(|r| r.route == route && r.connection_id() == connection_id)
            .await
    }
}

async fn record(
    State(state): State<Arc<BackendState>>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let route = path.rsplit('/').next().unwrap_or_default().to_owned();
    let offered_protocol = headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|p| p.trim().to_owned());
    let denied = query.as_deref().is_some_and(|q| q.contains("deny"));
    state.recorded.send_modify(|all| {
        all.push(Recorded {
            route: route.clone(),
            method,
            path,
            query,
            headers,
            body,
        })
    });
    if route == "connect" {
        let status = if denied {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::from_u16(state.connect_status.load(Ordering::Relaxed)).unwrap()
        };
        let mut response = (status, "connect answer").into_response();
        if let Some(protocol) = offered_protocol {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", protocol.parse().unwrap());
        }
        return response;
    }
    (StatusCode::OK, "{}").into_response()
}

/// A gateway on free ports in front of `backend` (unless `args` names another integration base), with the
/// test API id, stage and secret, plus `args`.
pub async fn gateway(backend: &Backend, args: &[&str]) -> RunningGateway {
    let mut argv = vec![
        "local-gateway",
        "--ws-listen",
        "127.0.0.1:0",
        "--management-listen",
        "127.0.0.1:0",
        "--api-id",
        API_ID,
        "--stage",
        STAGE,
        "--gateway-secret",
        SECRET,
    ];
    if !args.contains(&"--integration-base") {
        argv.extend(["--integration-base", &backend.base]);
    }
    argv.extend_from_slice(args);
    let settings = Config::try_parse_from(argv)
        .expect("valid flags")
        .validate()
        .expect("valid settings");
    LocalGateway::bind(settings)
        .await
        .expect("the gateway binds")
        .spawn()
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A connected WebSocket client and the connection id the gateway gave it.
#[derive(Debug)]
pub struct Client {
    pub ws: Ws,
    pub id: String,
}

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// A unique `ws_token` for a query, so a test can find its own `$connect`.
pub fn unique_token() -> String {
    format!("tok{}", NEXT_TOKEN.fetch_add(1, Ordering::Relaxed))
}

/// Connects with `?channel=room&ws_token=<unique>` and learns the connection id from the `$connect` the
/// backend recorded (which completed before the handshake did).
pub async fn connect(gw: &RunningGateway, backend: &Backend) -> Client {
    let token = unique_token();
    let url = format!("{}?channel=room&ws_token={token}", gw.ws_url);
    let (ws, _) = tokio_tungstenite::connect_async(url.into_client_request().unwrap())
        .await
        .expect("the handshake succeeds");
    let id = backend
        .wait_for(|r| {
            r.route == "connect"
                && r.query
                    .as_deref()
                    .is_some_and(|q| q.ends_with(&format!("ws_token={token}")))
        })
        .await
        .connection_id()
        .to_owned();
    Client { ws, id }
}

/// The next data or close frame from the server (pings and pongs skipped).
pub async fn next_frame(ws: &mut Ws) -> Message {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(message)) => return message,
                Some(Err(e)) => panic!("the socket failed: {e}"),
                None => panic!("the socket ended without a close frame"),
            }
        }
    })
    .await
    .expect("no frame arrived")
}

/// Reads until the server's close frame, completes the closing handshake (reading on is what sends the
/// client's answer) and returns the frame.
pub async fn expect_close(ws: &mut Ws) -> CloseFrame {
    let frame = match next_frame(ws).await {
        Message::Close(Some(frame)) => frame,
        other => panic!("expected a close frame, got {other:?}"),
    };
    finish_close(ws).await;
    frame
}

/// Reads to the end of the stream once a close frame was received.
pub async fn finish_close(ws: &mut Ws) {
    tokio::time::timeout(PATIENCE, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await
    .expect("the server ends the stream after the closing handshake");
}

/// `http://ADDR/STAGE/@connections/{id}` (the id as given: encode it yourself to test decoding).
pub fn connection_url(gw: &RunningGateway, id: &str) -> String {
    format!("{}/@connections/{id}", gw.management_endpoint)
}

/// The HTTP client for management and admin calls.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

pub fn error_type(response: &reqwest::Response) -> Option<&str> {
    response
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
}

/// Re-exported so test files need not name tungstenite's path.
pub use tungstenite::protocol::frame::coding::CloseCode;
