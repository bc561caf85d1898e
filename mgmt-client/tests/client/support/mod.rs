//! A stand-in Management API for the integration tests: an axum router that first verifies every
//! request's SigV4 signature with [`mgmt_client::Verifier`] (a refused signature answers 403
//! `ForbiddenException` and is counted, so a signing bug cannot pass) and then answers according to
//! the connection id (`ok`, `gone`, `limit`, `forbidden`, `too-large`, `boom`, `hang`, `typed`), served
//! on a real socket, plain or TLS, counting accepted connections and the ALPN protocol each chose.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use mgmt_client::{SigningCredentials, Verifier};
use tokio::net::TcpListener;

pub const ACCESS_KEY_ID: &str = "AKIDEXAMPLE";
pub const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
pub const REGION: &str = "us-east-1";

pub fn credentials(token: Option<&str>) -> SigningCredentials {
    SigningCredentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, token.map(str::to_owned)).unwrap()
}

pub struct ApiState {
    verifier: Verifier,
    pub verified: AtomicUsize,
    pub refused: AtomicUsize,
    pub last_path: Mutex<Option<String>>,
    pub last_body_len: AtomicUsize,
}

pub fn app(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/{stage}/@connections/{id}", any(handle))
        .with_state(state)
}

fn error(status: u16, error_type: Option<&str>, body: &'static str) -> Response {
    let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
    if let Some(error_type) = error_type {
        response
            .headers_mut()
            .insert("x-amzn-ErrorType", error_type.parse().unwrap());
    }
    response
}

async fn handle(
    State(state): State<Arc<ApiState>>,
    Path((_stage, id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refusal) = state
        .verifier
        .verify(&method, &uri, &headers, &body, SystemTime::now())
    {
        state.refused.fetch_add(1, Ordering::SeqCst);
        eprintln!("signature refused: {refusal}");
        return error(
            403,
            Some("ForbiddenException"),
            r#"{"message":"Forbidden"}"#,
        );
    }
    state.verified.fetch_add(1, Ordering::SeqCst);
    *state.last_path.lock().unwrap() = Some(uri.path().to_owned());
    state.last_body_len.store(body.len(), Ordering::SeqCst);
    match id.as_str() {
        "gone" => error(410, Some("GoneException"), r#"{"message":"Gone"}"#),
        "limit" => error(429, Some("LimitExceededException"), r#"{"message":"Limit Exceeded"}"#),
        "forbidden" => error(403, Some("ForbiddenException"), r#"{"message":"Forbidden"}"#),
        "too-large" => error(413, None, ""),
        "boom" => error(500, None, ""),
        "typed" => error(
            400,
            None,
            r#"{"__type":"com.amazonaws.apigateway#LimitExceededException:http://internal","message":"Slow down"}"#,
        ),
        "hang" => std::future::pending().await,
        _ if method == Method::GET => (
            [("content-type", "application/json")],
            r#"{"connectedAt":"2026-11-22T23:22:42Z","identity":{"sourceIp":"192.0.2.7","userAgent":"k6"},"lastActiveAt":"2026-11-22T23:23:00Z"}"#,
        )
            .into_response(),
        _ if method == Method::DELETE => StatusCode::NO_CONTENT.into_response(),
        _ => StatusCode::OK.into_response(),
    }
}

/// A running server: its address, the state its handler sees, and what its listener observed.
pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<ApiState>,
    pub accepted: Arc<AtomicUsize>,
    pub alpn: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
}

/// Serves the stand-in API on a free loopback port; with `tls`, over TLS.
pub async fn serve(session_token: Option<&str>, tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
    let state = Arc::new(ApiState {
        verifier: Verifier::new(credentials(session_token), Some(REGION.to_owned())),
        verified: AtomicUsize::new(0),
        refused: AtomicUsize::new(0),
        last_path: Mutex::new(None),
        last_body_len: AtomicUsize::new(0),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let alpn = Arc::new(Mutex::new(Vec::new()));
    let router = app(state.clone());
    let (accepted2, alpn2) = (accepted.clone(), alpn.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            accepted2.fetch_add(1, Ordering::SeqCst);
            let service = TowerToHyperService::new(router.clone());
            let tls = tls.clone();
            let alpn = alpn2.clone();
            tokio::spawn(async move {
                let builder = auto::Builder::new(TokioExecutor::new());
                match tls {
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(stream).await else {
                            return;
                        };
                        alpn.lock()
                            .unwrap()
                            .push(stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec));
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            });
        }
    });
    Server {
        addr,
        state,
        accepted,
        alpn,
    }
}
