//! The fuzz checks: one function per target, each feeding arbitrary bytes to a parser on the public path
//! and asserting what must hold whatever the input (a panic is a finding). The `cargo fuzz` targets in
//! `fuzz_targets/` call them; `tests/corpora.rs` replays the committed corpora through the same
//! functions on stable, so CI checks them without nightly.
//!
//! - [`callback`]: what a gateway callback carries: the client frame (`parse_frame`), the `$connect`
//!   query and Origin, the client address headers, and the identifiers.
//! - [`api_request`]: the application API's bodies: token and kick requests, and publish payloads.
//! - [`job_decode`]: a job read back from the queue.
//! - [`management_api`]: the local gateway's Management API, a whole HTTP request through its router
//!   with SigV4 verification on.

use common::names::{ChannelName, ChannelPattern, ConnectionId, MAX_PAYLOAD_BYTES, Subject};
use ingest::json::{MAX_DEPTH, depth_within};
use std::sync::OnceLock;

/// Splits an input into up to `N` parts at `0xff` bytes (never valid UTF-8, so any text can appear in
/// a part).
fn parts<const N: usize>(data: &[u8]) -> [&[u8]; N] {
    let mut out = [&data[..0]; N];
    let mut rest = data;
    for slot in out.iter_mut().take(N - 1) {
        match rest.iter().position(|&b| b == 0xff) {
            Some(i) => {
                *slot = &rest[..i];
                rest = &rest[i + 1..];
            }
            None => {
                *slot = rest;
                rest = &rest[rest.len()..];
            }
        }
    }
    out[N - 1] = rest;
    out
}

fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// A gateway callback's inputs.
pub fn callback(data: &[u8]) {
    // The whole input as a client frame.
    match ingest::callbacks::message::parse_frame(data) {
        Ok((name, body)) => {
            assert!(data.len() <= MAX_PAYLOAD_BYTES);
            assert!(depth_within(data, MAX_DEPTH));
            let from_body = ["handler", "action"]
                .iter()
                .find_map(|k| body.get(*k).and_then(|v| v.as_str()));
            assert_eq!(from_body, Some(name.as_str()));
            let _ = ingest::actions::Action::parse(&name, &body);
        }
        Err(e) => assert!(e.status().is_client_error(), "{e:?}"),
    }
    let [query, origin, source_ip, forwarded, id] = parts::<5>(data);
    if let Some(query) = text(query) {
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if key == "channel"
                && let Ok(channel) = ChannelName::parse(&value)
            {
                assert!(!channel.as_str().contains(['*', '{', '}', ':']));
            }
        }
    }
    if let Some(origin) = text(origin) {
        let allowed = ingest::origin::AllowedOrigin::parse(origin);
        let list: Vec<_> = allowed.into_iter().collect();
        let _ = ingest::origin::origin_allowed(&list, Some(origin));
        // With nothing configured, no browser origin passes.
        assert!(!ingest::origin::origin_allowed(&[], Some(origin)));
    }
    if let (Some(source_ip), Some(forwarded)) = (text(source_ip), text(forwarded)) {
        let trusted: Vec<_> = ingest::client_ip::ProxyNet::parse("10.0.0.0/8")
            .into_iter()
            .collect();
        let ip = ingest::client_ip::resolve(
            Some(source_ip),
            Some(forwarded),
            Some("10.1.2.3".parse().unwrap()),
            &trusted,
        );
        // Always an address (or `unknown`): safe inside a Redis key.
        assert!(
            ip == "unknown" || ip.parse::<std::net::IpAddr>().is_ok(),
            "{ip}"
        );
        let _ = ingest::client_ip::ProxyNet::parse(forwarded);
    }
    if let Some(id) = text(id) {
        if let Ok(id) = ConnectionId::parse(id) {
            let key = common::keys::Keyspace::default().connection(id.as_str());
            assert_eq!(key.matches('{').count(), 1);
        }
        if let Ok(pattern) = ChannelPattern::parse(id) {
            assert!(
                pattern.as_str() == "*"
                    || ChannelName::parse(pattern.as_str().trim_end_matches('*')).is_ok()
            );
        }
        if let Ok(subject) = Subject::parse(id) {
            assert!(!subject.as_str().contains(['{', '}', ' ']));
        }
    }
}

/// The application API's request bodies.
pub fn api_request(data: &[u8]) {
    if let Ok(request) = ingest::api::tokens::TokenRequest::decode(data) {
        assert!(depth_within(data, MAX_DEPTH));
        for channel in request.channels.iter().flatten() {
            assert!(ChannelName::parse(channel.as_str()).is_ok());
            assert!(
                !channel.as_str().contains('*'),
                "a token never carries a pattern"
            );
        }
        if let Some(ttl) = request.ttl {
            assert!((1..=3600).contains(&ttl.as_secs()));
        }
    }
    let _ = ingest::api::kicks::KickRequest::decode(data);
    match ingest::api::publish::payload(Ok(bytes::Bytes::copy_from_slice(data))) {
        Ok(payload) => {
            assert!(payload.get().len() <= MAX_PAYLOAD_BYTES);
            assert!(depth_within(payload.get().as_bytes(), MAX_DEPTH));
            serde_json::from_str::<&serde_json::value::RawValue>(payload.get())
                .expect("an accepted payload is JSON");
        }
        Err(e) => assert!(e.status().is_client_error(), "{e:?}"),
    }
}

/// A job read from the queue: whatever decodes re-encodes to something that decodes to the same job.
pub fn job_decode(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Ok(job) = common::job::Job::decode(text) {
        let encoded = job.encode();
        let again = common::job::Job::decode(&encoded).expect("an encoded job decodes");
        assert_eq!(again.encode(), encoded);
        let _ = job.target_kind();
    }
}

struct Management {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
}

fn management() -> &'static Management {
    static GATEWAY: OnceLock<Management> = OnceLock::new();
    GATEWAY.get_or_init(|| {
        use clap::Parser;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let settings = local_gateway::Config::try_parse_from([
            "local-gateway",
            "--integration-base=http://127.0.0.1:9/ws",
            "--api-id=local",
            "--stage=local",
            "--verify-sigv4=AKIDFUZZ:fuzz-secret-key",
            "--mgmt-rate=1000000000",
            "--mgmt-burst=1000000000",
        ])
        .expect("flags")
        .validate()
        .expect("settings");
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let (drain, _drained) = tokio::sync::mpsc::channel(1);
        let router = runtime.block_on(async {
            let state = local_gateway::state::AppState::new(settings, stopped, drain)
                .expect("the state builds");
            local_gateway::management::router(state)
        });
        Management { runtime, router }
    })
}

/// One Management API request: method, path, header lines (`name: value`) and body, split at `0xff`.
pub fn management_api(data: &[u8]) {
    use tower::ServiceExt;
    let [method, path, headers, body] = parts::<4>(data);
    let Ok(method) = http::Method::from_bytes(method) else {
        return;
    };
    let Some(path) = text(path) else { return };
    // The emulator's own admin routes are not the Management API.
    if path.starts_with("/_emulator") {
        return;
    }
    let Ok(uri) = http::Uri::try_from(path) else {
        return;
    };
    let mut request = http::Request::builder().method(method).uri(uri);
    for line in headers.split(|&b| b == b'\n') {
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name),
                http::HeaderValue::from_bytes(value.trim_ascii()),
            ) {
                request = request.header(name, value);
            }
        }
    }
    let Ok(request) = request.body(axum::body::Body::from(body.to_vec())) else {
        return;
    };
    let gateway = management();
    let response = gateway
        .runtime
        .block_on(gateway.router.clone().oneshot(request))
        .expect("the router is infallible");
    let status = response.status().as_u16();
    assert!(
        matches!(status, 200 | 204 | 400 | 403 | 405 | 410 | 413 | 415 | 429),
        "status {status}"
    );
}
