//! The HTTP listener: HTTP/1.1 served by hyper with the limits `axum::serve` does not offer.
//!
//! - A header-read timeout (`FANOUT_HEADER_READ_TIMEOUT_MS`): a connection that has not sent a complete
//!   request head within it is closed. The same timer runs while a keep-alive connection waits for its
//!   next request, so it is also the idle timeout: a slow-loris client cannot hold sockets open.
//! - A request timeout (`FANOUT_REQUEST_TIMEOUT_MS`, a middleware in [`crate::app`]) bounds reading the
//!   body and answering: a client that trickles its body gets 408.
//! - At most 64 headers and 64 KiB of buffered head per request (431 past that, from hyper).
//!
//! Each request carries the TCP peer's address ([`ConnectInfo`]) for [`crate::client_ip`]. On shutdown
//! the listener stops accepting, open connections finish the request in flight and close.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tower::ServiceExt;

/// Most headers a request may carry.
pub const MAX_HEADERS: usize = 64;
/// Largest buffered request head, in bytes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serves `app` on `listener` until `shutdown` resolves, then lets open connections finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                connections.spawn(connection(stream, peer, app.clone(), header_read_timeout, stopped.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    header_read_timeout: Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_headers(MAX_HEADERS)
        .max_header_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "connection closed with an error");
            }
        }
        _ = stopped.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
