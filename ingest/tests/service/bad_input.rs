//! The bad-input matrix: every route against missing, wrong and rotated-out secrets or keys, missing and
//! oversized headers, malformed ids, bad, deep and oversized JSON, wrong content types and methods,
//! replayed, expired and foreign-channel tokens and a revoked connection. Each case has its expected
//! status and error code, every error body has the JSON error shape and echoes no secret, and the Redis
//! keyspace is compared before and after: a refused request changes nothing (rate-limit counters, which
//! count attempts by design, aside).

use crate::support::{API_ID, API_KEY, Ingest, SECRET};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const OLD_SECRET: &str = "old-gateway-secret-0123456789-abcdefgh";
const OLD_KEY: &str = "old-api-key-0123456789-abcdefghijklmn";

/// Every key (but rate-limit counters) with its serialised value.
async fn keyspace(ingest: &Ingest) -> BTreeMap<String, Vec<u8>> {
    let mut redis = ingest.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut map = BTreeMap::new();
    for key in keys
        .into_iter()
        .filter(|k| !k.contains(":rl:") && !k.starts_with("fo:rl:"))
    {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        map.insert(key, dump);
    }
    map
}

/// One request of the matrix.
struct Case {
    name: String,
    request: reqwest::RequestBuilder,
    status: StatusCode,
    /// The `error.code` expected; `None` for answers that are not ours (hyper's 431).
    code: Option<&'static str>,
}

async fn run(ingest: &Ingest, cases: Vec<Case>) {
    let mut failures = Vec::new();
    for case in cases {
        let before = keyspace(ingest).await;
        let response = case.request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let after = keyspace(ingest).await;
        if status != case.status {
            failures.push(format!(
                "{}: status {status}, expected {}: {text}",
                case.name, case.status
            ));
            continue;
        }
        if let Some(code) = case.code {
            match serde_json::from_str::<Value>(&text) {
                Ok(body)
                    if body["error"]["code"] == code && body["error"]["message"].is_string() => {}
                _ => failures.push(format!("{}: body {text}, expected code {code}", case.name)),
            }
        }
        for secret in [SECRET, OLD_SECRET, API_KEY, OLD_KEY] {
            if text.contains(secret) {
                failures.push(format!("{}: the body echoes a secret", case.name));
            }
        }
        if before != after {
            let changed: Vec<&String> = before
                .keys()
                .chain(after.keys())
                .filter(|k| before.get(*k) != after.get(*k))
                .collect();
            failures.push(format!("{}: Redis changed: {changed:?}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn every_callback_route_refuses_bad_input_and_changes_nothing() {
    let ingest = Ingest::start(&["--public-channel=lobby"]).await;
    ingest.join("live1", "alice", "general").await;
    ingest.join("kicked1", "bob", "general").await;
    let r = ingest
        .api(Method::DELETE, "/v1/connections/kicked1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // A replayed token (already used by live1's twin), an expired one, one for another channel.
    let used = ingest.token("carol", None).await;
    assert_eq!(
        ingest
            .connect("used1", &format!("channel=general&ws_token={used}"))
            .await,
        StatusCode::OK
    );
    let expired = ingest.token("carol", None).await;
    let _: () = redis::cmd("DEL")
        .arg(common::keys::Keyspace::default().token(&expired))
        .query_async(&mut ingest.redis().await)
        .await
        .unwrap();
    let foreign = ingest.token("carol", Some(&["room-1"])).await;

    let url = |route: &str| format!("{}/ws/{route}", ingest.url);
    let post = |route: &str| ingest.http.post(url(route));
    let good = |route: &str, id: &str| {
        post(route)
            .header("connectionId", id)
            .header("X-Amzn-Apigateway-Api-Id", API_ID)
            .header("X-Ws-Gateway-Secret", SECRET)
            .header("X-Ws-Source-Ip", "203.0.113.50")
    };
    let frame = json!({"action": "fetch_history"}).to_string();
    let mut cases = Vec::new();
    for route in ["connect?channel=general", "disconnect", "default"] {
        let case = |name: &str, request, status, code| Case {
            name: format!("{route}: {name}"),
            request,
            status,
            code,
        };
        cases.push(case(
            "no secret",
            post(route)
                .header("connectionId", "live1")
                .header("X-Amzn-Apigateway-Api-Id", API_ID)
                .body(frame.clone()),
            StatusCode::FORBIDDEN,
            Some("invalid_request"),
        ));
        for (name, secret) in [
            ("wrong secret", "x".repeat(40)),
            ("old rotated-out secret", OLD_SECRET.to_owned()),
            ("secret with a suffix", format!("{SECRET}x")),
        ] {
            cases.push(case(
                name,
                post(route)
                    .header("connectionId", "live1")
                    .header("X-Amzn-Apigateway-Api-Id", API_ID)
                    .header("X-Ws-Gateway-Secret", secret)
                    .body(frame.clone()),
                StatusCode::FORBIDDEN,
                Some("invalid_request"),
            ));
        }
        cases.push(case(
            "missing connectionId",
            post(route)
                .header("X-Amzn-Apigateway-Api-Id", API_ID)
                .header("X-Ws-Gateway-Secret", SECRET)
                .body(frame.clone()),
            StatusCode::BAD_REQUEST,
            Some("invalid_request_headers"),
        ));
        cases.push(case(
            "unknown API id",
            post(route)
                .header("connectionId", "live1")
                .header("X-Amzn-Apigateway-Api-Id", "otherapi")
                .header("X-Ws-Gateway-Secret", SECRET)
                .body(frame.clone()),
            StatusCode::BAD_REQUEST,
            Some("invalid_request_headers"),
        ));
        cases.push(case(
            "oversized header",
            good(route, "live1")
                .header("X-Padding", "p".repeat(70 * 1024))
                .body(frame.clone()),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            None,
        ));
        for bad_id in ["a/b", "has space", "a+b", &"x".repeat(129)] {
            cases.push(case(
                &format!("malformed id {bad_id:.10}"),
                good(route, bad_id).body(frame.clone()),
                StatusCode::BAD_REQUEST,
                Some("invalid_connection_id"),
            ));
        }
    }
    // Message frames.
    for (name, body, status, code) in [
        (
            "bad JSON",
            "{nope".to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_request_format",
        ),
        (
            "not an object",
            "[1,2]".to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_request_format",
        ),
        (
            "no handler",
            r#"{"x":1}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_request_format",
        ),
        (
            "deep JSON",
            format!(
                r#"{{"action":"x","d":{}{}}}"#,
                "[".repeat(5000),
                "]".repeat(5000)
            ),
            StatusCode::BAD_REQUEST,
            "invalid_request_format",
        ),
        (
            "oversize",
            format!(r#"{{"action":"x","p":"{}"}}"#, "a".repeat(140_000)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ] {
        cases.push(Case {
            name: format!("default: {name}"),
            request: good("default", "live1").body(body),
            status,
            code: Some(code),
        });
    }
    cases.push(Case {
        name: "default: unregistered connection".into(),
        request: good("default", "nobody1").body(frame.clone()),
        status: StatusCode::BAD_REQUEST,
        code: Some("invalid_connection_id"),
    });
    cases.push(Case {
        name: "default: revoked connection".into(),
        request: good("default", "kicked1").body(frame.clone()),
        status: StatusCode::FORBIDDEN,
        code: Some("connection_revoked"),
    });
    // $connect specifics.
    for (name, query, status, code) in [
        (
            "replayed token",
            format!("channel=general&ws_token={used}"),
            StatusCode::BAD_REQUEST,
            "invalid_or_expired_token",
        ),
        (
            "expired token",
            format!("channel=general&ws_token={expired}"),
            StatusCode::BAD_REQUEST,
            "invalid_or_expired_token",
        ),
        (
            "unknown token",
            "channel=general&ws_token=00ff".into(),
            StatusCode::BAD_REQUEST,
            "invalid_or_expired_token",
        ),
        (
            "oversized token",
            format!("channel=general&ws_token={}", "a".repeat(4000)),
            StatusCode::BAD_REQUEST,
            "invalid_or_expired_token",
        ),
        (
            "no token",
            "channel=general".into(),
            StatusCode::BAD_REQUEST,
            "invalid_or_expired_token",
        ),
        (
            "channel pattern",
            format!("channel=gen*&ws_token={foreign}"),
            StatusCode::BAD_REQUEST,
            "invalid_channel",
        ),
        (
            "channel with a brace",
            format!("channel=%7Bx%7D&ws_token={foreign}"),
            StatusCode::BAD_REQUEST,
            "invalid_channel",
        ),
    ] {
        cases.push(Case {
            name: format!("connect: {name}"),
            request: good(&format!("connect?{query}"), "new1"),
            status,
            code: Some(code),
        });
    }
    cases.push(Case {
        name: "connect: foreign origin".into(),
        request: good("connect?channel=lobby", "new2").header("Origin", "https://evil.example"),
        status: StatusCode::BAD_REQUEST,
        code: Some("origin_not_allowed"),
    });
    run(&ingest, cases).await;

    // A token for another channel is refused; being spent is its only trace (it passed every check
    // before the permission check, like a good token).
    let before = keyspace(&ingest).await;
    let r = good(
        &format!("connect?channel=general&ws_token={foreign}"),
        "new3",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "permission_denied"
    );
    let mut after = keyspace(&ingest).await;
    let token_key = common::keys::Keyspace::default().token(&foreign);
    assert!(before.contains_key(&token_key) && !after.contains_key(&token_key));
    after.insert(token_key.clone(), before[&token_key].clone());
    assert_eq!(before, after);
}

#[tokio::test]
async fn a_rotated_secret_is_accepted_while_listed() {
    let ingest = Ingest::start(&[&format!("--gateway-secret={OLD_SECRET}")]).await;
    let r = ingest
        .http
        .post(format!("{}/ws/disconnect", ingest.url))
        .header("connectionId", "x1")
        .header("X-Amzn-Apigateway-Api-Id", API_ID)
        .header("X-Ws-Gateway-Secret", OLD_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_api_route_refuses_bad_input_and_changes_nothing() {
    let ingest = Ingest::start(&[]).await;
    ingest.join("live1", "alice", "general").await;
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let oversize = format!(r#"{{"p":"{}"}}"#, "a".repeat(140_000));
    let routes = [
        (Method::POST, "/v1/tokens", true),
        (Method::POST, "/v1/channels/general/publish", true),
        (Method::POST, "/v1/users/alice/publish", true),
        (Method::POST, "/v1/connections/live1/publish", true),
        (Method::POST, "/v1/broadcast", true),
        (Method::POST, "/v1/kick", true),
        (Method::POST, "/v1/users/alice/revoke", false),
        (Method::DELETE, "/v1/connections/live1", false),
        (Method::GET, "/v1/channels/general", false),
        (Method::GET, "/v1/broadcasts/0000", false),
    ];
    let raw = |method: &Method, path: &str| {
        ingest
            .http
            .request(method.clone(), format!("{}{path}", ingest.url))
    };
    let mut cases = Vec::new();
    for (method, path, has_body) in &routes {
        let case = |name: &str, request, status, code| Case {
            name: format!("{method} {path}: {name}"),
            request,
            status,
            code,
        };
        cases.push(case(
            "no key",
            raw(method, path).body("{}"),
            StatusCode::UNAUTHORIZED,
            Some("unauthorized"),
        ));
        for (name, key) in [
            ("wrong key", "k".repeat(40)),
            ("old key", OLD_KEY.to_owned()),
        ] {
            cases.push(case(
                name,
                raw(method, path).bearer_auth(key.clone()).body("{}"),
                StatusCode::UNAUTHORIZED,
                Some("unauthorized"),
            ));
            cases.push(case(
                &format!("{name} in X-Api-Key"),
                raw(method, path).header("X-Api-Key", key).body("{}"),
                StatusCode::UNAUTHORIZED,
                Some("unauthorized"),
            ));
        }
        cases.push(case(
            "oversized header",
            ingest
                .api(method.clone(), path)
                .header("X-Padding", "p".repeat(70 * 1024)),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            None,
        ));
        if *has_body {
            for (name, body, status, code) in [
                (
                    "bad JSON",
                    "{nope".to_owned(),
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                ),
                (
                    "deep JSON",
                    deep.clone(),
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                ),
                (
                    "oversize",
                    oversize.clone(),
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                ),
                (
                    "not UTF-8",
                    "\u{fffd}".to_owned(),
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                ),
            ] {
                let request = if name == "not UTF-8" {
                    ingest
                        .api(method.clone(), path)
                        .body(vec![b'"', 0xff, b'"'])
                } else {
                    ingest
                        .api(method.clone(), path)
                        .header("Content-Type", "text/plain")
                        .body(body)
                };
                cases.push(case(name, request, status, Some(code)));
            }
        }
    }
    // Malformed ids in paths.
    for (method, path, code) in [
        (Method::POST, "/v1/channels/gen*/publish", "invalid_channel"),
        (
            Method::POST,
            "/v1/channels/%7Bx%7D/publish",
            "invalid_channel",
        ),
        (Method::POST, "/v1/users/a%20b/publish", "bad_request"),
        (
            Method::POST,
            "/v1/connections/a%2Fb/publish",
            "invalid_connection_id",
        ),
        (
            Method::DELETE,
            "/v1/connections/a%20b",
            "invalid_connection_id",
        ),
        (Method::GET, "/v1/channels/a.b", "invalid_channel"),
        (Method::GET, "/v1/broadcasts/a%20b", "bad_request"),
        (Method::POST, "/v1/users/%7Bx%7D/revoke", "bad_request"),
        (
            Method::POST,
            "/v1/channels/general/publish?history=maybe",
            "bad_request",
        ),
    ] {
        cases.push(Case {
            name: format!("{method} {path}"),
            request: ingest.api(method.clone(), path).body("{}"),
            status: StatusCode::BAD_REQUEST,
            code: Some(code),
        });
    }
    // Unknown routes and wrong methods answer in the same shape.
    for (method, path, status, code) in [
        (Method::GET, "/v1/nope", StatusCode::NOT_FOUND, "not_found"),
        (Method::GET, "/nope", StatusCode::NOT_FOUND, "not_found"),
        (
            Method::GET,
            "/v1/tokens",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::PUT,
            "/v1/broadcast",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/ws/connect",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ] {
        cases.push(Case {
            name: format!("{method} {path}"),
            request: ingest.api(method.clone(), path),
            status,
            code: Some(code),
        });
    }
    cases.push(Case {
        name: "unknown connection".into(),
        request: ingest
            .api(Method::POST, "/v1/connections/nobody1/publish")
            .body("{}"),
        status: StatusCode::NOT_FOUND,
        code: Some("unknown_connection"),
    });
    cases.push(Case {
        name: "token with a channel pattern".into(),
        request: ingest
            .api(Method::POST, "/v1/tokens")
            .json(&json!({"subject": "a", "channels": ["a*"]})),
        status: StatusCode::BAD_REQUEST,
        code: Some("bad_request"),
    });
    run(&ingest, cases).await;

    // The body is JSON whatever its content type: a good request with text/plain is accepted.
    let r = ingest
        .api(Method::POST, "/v1/broadcast")
        .header("Content-Type", "text/plain")
        .body(r#"{"type":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}
