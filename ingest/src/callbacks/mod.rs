//! `POST /ws/{route}`: the callbacks API Gateway sends through its HTTP_PROXY integrations, one per
//! WebSocket event. `connect` and `disconnect` are the `$connect` and `$disconnect` routes; any other
//! slug (`default` or a custom route) carries a client message.
//!
//! Checks run in the Django package's order, cheapest and I/O-free first: the gateway secret (constant
//! time, before anything else), the headers API Gateway always sends and the API id, then the route's own
//! checks. Every route answers `200 {}` on success; what a client should see is sent to it as a job.

mod connect;
mod disconnect;
pub mod message;

use crate::error::AppError;
use crate::state::AppState;
use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::HeaderMap;
use common::gateways::{GatewayApi, headers};
use serde_json::{Value, json};
use std::net::SocketAddr;

/// The route kinds, for dispatch and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Connect,
    Disconnect,
    Message,
}

impl RouteKind {
    pub fn of(route: &str) -> Self {
        match route {
            "connect" => RouteKind::Connect,
            "disconnect" => RouteKind::Disconnect,
            _ => RouteKind::Message,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            RouteKind::Connect => "connect",
            RouteKind::Disconnect => "disconnect",
            RouteKind::Message => "message",
        }
    }
}

/// What every callback carries, after the common checks.
#[derive(Debug)]
pub struct Callback<'a> {
    /// The raw `connectionId` header; each route validates it at its point in the order.
    pub connection_id: &'a str,
    pub api: &'a GatewayApi,
    /// The client's IP (see [`crate::client_ip`]), or `unknown`.
    pub source_ip: String,
}

/// The handler for every gateway callback.
pub async fn gateway_callback(
    State(state): State<AppState>,
    Path(route): Path<String>,
    RawQuery(query): RawQuery,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AppError> {
    let secrets = &state.settings.gateway_secrets;
    // Only --insecure-dev starts without a secret; an empty set accepts nothing otherwise.
    if !(state.settings.insecure_dev && secrets.is_empty()) {
        let presented = headers
            .get(headers::GATEWAY_SECRET)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !secrets.accepts(presented) {
            return Err(AppError::GatewaySecret);
        }
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let connection_id = header(headers::CONNECTION_ID).ok_or(AppError::Headers)?;
    let api = header(headers::API_ID)
        .and_then(|id| state.settings.gateways.get(id))
        .ok_or(AppError::Headers)?;
    let source_ip = crate::client_ip::resolve(
        header(headers::SOURCE_IP),
        header(headers::FORWARDED_FOR),
        peer.map(|Extension(ConnectInfo(addr))| addr.ip()),
        &state.settings.trusted_proxies,
    );
    let body = body.map_err(|r| {
        if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            AppError::PayloadTooLarge
        } else {
            AppError::Format
        }
    })?;
    let callback = Callback {
        connection_id,
        api,
        source_ip,
    };
    match RouteKind::of(&route) {
        RouteKind::Connect => {
            connect::handle(&state, &callback, query.as_deref(), header(headers::ORIGIN)).await?
        }
        RouteKind::Disconnect => disconnect::handle(&state, &callback).await?,
        RouteKind::Message => message::handle(&state, &callback, &route, &body).await?,
    }
    Ok(Json(json!({})))
}
