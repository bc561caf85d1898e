//! The WebSocket front: the handshake, and one task per socket until it closes.
//!
//! The handshake (`GET /{stage}` or `GET /`) waits for the `$connect` integration, as API Gateway does: a
//! non-2xx answer refuses it with that status and body, no answer refuses it with 502 or 504, and 2xx
//! registers the connection and completes the upgrade (with the subprotocol the integration chose, if
//! any). The connection is registered before the `101` goes out, so a PostToConnection right after the
//! client sees the handshake complete finds it; frames posted in between wait in its queue.
//!
//! Each socket then has a reader (this task: client frames go to the selected route one after another,
//! in order; it also watches the idle and maximum-duration timers) and a writer (frames from the
//! Management API, batched into one flush). Whatever decides the socket must close (the client, a
//! DELETE, a timer, an oversized frame, shutdown) sets the connection's close reason once; the writer
//! then sends the matching close frame (1000, 1001, 1009, ...), the reader waits for the client's answer,
//! and `$disconnect` follows.
//!
//! Only frames from the client (data, ping or pong) count as activity, for the idle timer and for
//! GetConnection's `lastActiveAt`. Whether AWS also counts frames it sends is not documented; counting
//! only the client's is the stricter choice, so a backend that relies on server pushes to keep sockets
//! open finds out here rather than in production.

use crate::registry::{CloseReason, Connection, SocketEnds, new_connection_id};
use crate::state::{Admission, Admitted, AppState};
use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, StatusCode, header};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How long a closing handshake (our close frame out, the client's back) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// After closing because of a bad frame (whose rest is unread), how long to keep the TCP connection open
/// so the client reads the close frame before the kernel resets the connection.
const ERROR_CLOSE_LINGER: Duration = Duration::from_millis(100);
/// Frames written to a socket per flush, at most.
const WRITE_BATCH: usize = 64;

/// The WebSocket listener's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(handshake_at_root))
        .route("/{stage}", get(handshake_at_stage))
        .fallback(wrong_path)
        .with_state(state)
}

async fn wrong_path() -> StatusCode {
    StatusCode::FORBIDDEN
}

async fn handshake_at_root(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    handshake(state, peer, query, headers, upgrade).await
}

async fn handshake_at_stage(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(stage): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if stage != state.settings.stage {
        state.metrics.handshake("wrong_stage");
        return StatusCode::FORBIDDEN.into_response();
    }
    handshake(state, peer, query, headers, upgrade).await
}

async fn handshake(
    state: AppState,
    peer: SocketAddr,
    query: Option<String>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            state.metrics.handshake("not_websocket");
            return rejection.into_response();
        }
    };
    if let Some(limiter) = &state.connect_limiter
        && !limiter.try_acquire()
    {
        state.metrics.handshake("throttled");
        return StatusCode::TOO_MANY_REQUESTS.into_response();
    }
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (conn, ends) = Connection::new_socket(
        new_connection_id(),
        peer.ip().to_canonical(),
        user_agent,
        state.settings.client_buffer_frames,
    );
    // In its own task, so that a client hanging up mid-handshake cannot cancel a `$connect` that ingest has
    // already accepted: the task finishes, and dropping its `Admitted` sends the `$disconnect`.
    let admission = tokio::spawn({
        let state = state.clone();
        async move { state.admit(conn, query.as_deref(), &headers).await }
    })
    .await;
    match admission {
        Ok(Admission::Admitted(admitted)) => {
            state.metrics.handshake("accepted");
            let mut upgrade = upgrade
                .max_frame_size(state.settings.max_frame_bytes)
                .max_message_size(state.settings.max_payload_bytes);
            if let Some(protocol) = admitted.subprotocol.as_ref().and_then(|p| p.to_str().ok()) {
                upgrade = upgrade.protocols([protocol.to_owned()]);
            }
            // If the upgrade fails, the closure (and the `Admitted` in it) is dropped: `$disconnect` follows.
            upgrade.on_upgrade(move |socket| serve_socket(socket, admitted, ends))
        }
        Ok(Admission::Refused { status, body }) => {
            state.metrics.handshake("refused");
            (status, body).into_response()
        }
        Ok(Admission::Failed(error)) => {
            state.metrics.handshake("integration_error");
            error.status().into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Runs one socket from the upgrade to `$disconnect`.
async fn serve_socket(socket: WebSocket, admitted: Admitted, ends: SocketEnds) {
    let state = admitted.state().clone();
    let conn = admitted.connection().clone();
    let (sink, stream) = socket.split();
    let mut writer = tokio::spawn(write_frames(
        sink,
        ends.outbound,
        ends.close.clone(),
        conn.clone(),
        state.metrics.frames_out.clone(),
    ));
    let errored = read_frames(stream, &conn, &state, ends.close.clone()).await;
    if tokio::time::timeout(CLOSE_TIMEOUT, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    let reason = ends.close.borrow().unwrap_or(CloseReason::TransportClosed);
    if errored && reason.close_frame().is_some() {
        tokio::time::sleep(ERROR_CLOSE_LINGER).await;
    }
    state.metrics.close(reason.label());
    tracing::debug!(
        connection_id = conn.id(),
        reason = reason.label(),
        "socket closed"
    );
    admitted.release().await;
}

/// Reads client frames until the socket must close, then waits for the closing handshake. Returns true
/// when it stopped on a read error (a bad frame, or a broken connection): the stream cannot be read
/// further, so there is no closing handshake to wait for.
async fn read_frames(
    mut stream: SplitStream<WebSocket>,
    conn: &Connection,
    state: &AppState,
    mut close: watch::Receiver<Option<CloseReason>>,
) -> bool {
    let idle = tokio::time::sleep(state.settings.idle_timeout);
    let max_duration = tokio::time::sleep(state.settings.max_duration);
    tokio::pin!(idle, max_duration);
    let mut shutdown = state.shutdown_signal();
    loop {
        tokio::select! {
            biased;
            () = closing(&mut close) => break,
            () = stopping(&mut shutdown) => {
                conn.request_close(CloseReason::Shutdown);
            }
            () = &mut max_duration => {
                conn.request_close(CloseReason::MaxDuration);
            }
            () = &mut idle => {
                conn.request_close(CloseReason::IdleTimeout);
            }
            frame = stream.next() => {
                let (data, text) = match frame {
                    Some(Ok(Message::Text(text))) => (Bytes::from(text), true),
                    Some(Ok(Message::Binary(data))) => (data, false),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                        conn.touch();
                        idle.as_mut().reset(tokio::time::Instant::now() + state.settings.idle_timeout);
                        continue;
                    }
                    Some(Ok(Message::Close(_))) => {
                        conn.request_close(CloseReason::ClientClosed);
                        continue;
                    }
                    Some(Err(error)) => {
                        conn.request_close(classify(error));
                        return true;
                    }
                    None => {
                        conn.request_close(CloseReason::TransportClosed);
                        return false;
                    }
                };
                conn.touch();
                idle.as_mut().reset(tokio::time::Instant::now() + state.settings.idle_timeout);
                state.metrics.frames_in.inc();
                let _ = state.integration.message(conn, data, text).await;
            }
        }
    }
    // Closing: keep reading (and dropping) until the client's close frame or the end of the stream. Reading
    // is also what sends the codec's answer to a client-initiated close.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    false
}

/// Resolves once a close reason is set. (The borrow `wait_for` returns is not `Send`; it ends here.)
async fn closing(close: &mut watch::Receiver<Option<CloseReason>>) {
    let _ = close.wait_for(Option::is_some).await;
}

/// Resolves once the server shuts down.
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Maps a read error to the close it calls for.
fn classify(error: axum::Error) -> CloseReason {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match error.into_inner().downcast::<WsError>().map(|e| *e) {
        Ok(WsError::Capacity(_)) => CloseReason::TooLarge,
        Ok(WsError::Protocol(_) | WsError::Utf8(_) | WsError::AttackAttempt) => {
            CloseReason::ProtocolError
        }
        _ => CloseReason::TransportClosed,
    }
}

/// Writes posted frames to the client, batching what is queued into one flush, until a close reason is
/// set; then writes what is still queued and the close frame.
async fn write_frames(
    mut sink: SplitSink<WebSocket, Message>,
    mut outbound: mpsc::Receiver<Message>,
    mut close: watch::Receiver<Option<CloseReason>>,
    conn: std::sync::Arc<Connection>,
    frames_out: prometheus::IntCounter,
) {
    loop {
        tokio::select! {
            biased;
            () = closing(&mut close) => break,
            frame = outbound.recv() => {
                let Some(frame) = frame else { break };
                let mut written = 1;
                let mut result = sink.feed(frame).await;
                while result.is_ok() && written < WRITE_BATCH {
                    let Ok(frame) = outbound.try_recv() else { break };
                    result = sink.feed(frame).await;
                    written += 1;
                }
                if result.is_ok() {
                    result = sink.flush().await;
                }
                frames_out.inc_by(written as u64);
                if result.is_err() {
                    conn.request_close(CloseReason::TransportClosed);
                    return;
                }
            }
        }
    }
    let reason = *close.borrow();
    let Some((code, text)) = reason.and_then(CloseReason::close_frame) else {
        return;
    };
    // Frames the Management API accepted before the close are still delivered, as at AWS.
    let mut written = 0;
    while let Ok(frame) = outbound.try_recv() {
        if sink.feed(frame).await.is_err() {
            return;
        }
        written += 1;
    }
    frames_out.inc_by(written);
    let frame = CloseFrame {
        code,
        reason: text.into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
}
