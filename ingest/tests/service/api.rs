//! The application API over real HTTP against a real Redis: authentication, tokens, publishing to each
//! kind of target, kicks, channel stats, and the health and metrics endpoints.

use crate::support::{Ingest, payload};
use common::job::{Action, Target};
use common::keys::Keyspace;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn every_api_route_needs_a_valid_key() {
    let ingest = Ingest::start(&[]).await;
    for (method, path) in [
        (Method::POST, "/v1/tokens"),
        (Method::POST, "/v1/channels/general/publish"),
        (Method::POST, "/v1/users/alice/publish"),
        (Method::POST, "/v1/connections/abc/publish"),
        (Method::POST, "/v1/broadcast"),
        (Method::DELETE, "/v1/connections/abc"),
        (Method::GET, "/v1/channels/general"),
    ] {
        let r = ingest
            .http
            .request(method.clone(), format!("{}{path}", ingest.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        let r = ingest
            .http
            .request(method.clone(), format!("{}{path}", ingest.url))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "unauthorized"
        );
    }
    // The body is JSON whatever the content type says (curl -d sends a form type).
    let r = ingest
        .api(Method::POST, "/v1/tokens")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"subject":"alice"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // X-Api-Key works too.
    let r = ingest
        .http
        .post(format!("{}/v1/tokens", ingest.url))
        .header("X-Api-Key", crate::support::API_KEY)
        .json(&json!({"subject": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn tokens_have_the_package_shape_and_are_stored_only_as_hashes() {
    let ingest = Ingest::start(&["--token-ttl-secs=90"]).await;
    let r = ingest
        .api(Method::POST, "/v1/tokens")
        .json(&json!({"subject": "alice", "channels": ["room-1"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(body["expires_in"], 90);
    let mut redis = ingest.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut redis)
        .await
        .unwrap();
    for key in &keys {
        assert!(!key.contains(token), "{key}");
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut redis)
            .await
            .unwrap();
        if kind == "string" {
            let value: String = redis::cmd("GET")
                .arg(key)
                .query_async(&mut redis)
                .await
                .unwrap();
            assert!(!value.contains(token));
        }
    }
    let ttl: i64 = redis::cmd("TTL")
        .arg(Keyspace::default().token(token))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((85..=90).contains(&ttl), "{ttl}");

    let r = ingest
        .api(Method::POST, "/v1/tokens")
        .json(&json!({"subject": "alice", "ttl": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["expires_in"], 5);
    for bad in [
        json!({}),
        json!({"subject": ""}),
        json!({"subject": "a b"}),
        json!({"subject": "alice", "ttl": 0}),
        json!({"subject": "alice", "ttl": 3601}),
        json!({"subject": "alice", "channels": ["bad name"]}),
        // Channel names in a token follow the channel-name rules: no patterns.
        json!({"subject": "alice", "channels": ["a*"]}),
        json!({"subject": "alice", "channels": ["*"]}),
        json!({"subject": "alice", "extra": 1}),
    ] {
        let r = ingest
            .api(Method::POST, "/v1/tokens")
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            "bad_request"
        );
    }
}

#[tokio::test]
async fn token_issue_is_rate_limited_per_subject() {
    let ingest = Ingest::start(&["--token-issue-limit-per-minute=3"]).await;
    for _ in 0..3 {
        ingest.token("alice", None).await;
    }
    let r = ingest
        .api(Method::POST, "/v1/tokens")
        .json(&json!({"subject": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "rate_limited"
    );
    ingest.token("bob", None).await;
}

#[tokio::test]
async fn publishing_queues_one_job_per_request_with_the_payload_verbatim() {
    let ingest = Ingest::start(&[]).await;
    ingest.join("p1", "alice", "general").await;
    let system = json!({"type": "system", "message": "maintenance at 5"});
    for (path, target) in [
        (
            "/v1/channels/general/publish",
            Target::Channel {
                channel: "general".into(),
            },
        ),
        (
            "/v1/users/alice/publish",
            Target::Subject {
                subject: "alice".into(),
            },
        ),
        (
            "/v1/connections/p1/publish",
            Target::Connections {
                ids: vec!["p1".into()],
            },
        ),
        ("/v1/broadcast", Target::All),
    ] {
        let r = ingest
            .api(Method::POST, path)
            .json(&system)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{path}");
        let job_id = r.json::<Value>().await.unwrap()["job_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let jobs = ingest.jobs().await;
        assert_eq!(jobs.len(), 1);
        assert_eq!((&jobs[0].id, &jobs[0].target), (&job_id, &target));
        assert_eq!(payload(&jobs[0]), system);
    }
    // With history.
    let r = ingest
        .api(Method::POST, "/v1/channels/general/publish?history=true")
        .json(&system)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // Kept messages reach recipients with the channel's offset and epoch added, and nothing else changed.
    let mut sent = payload(&ingest.jobs().await[0]);
    assert_eq!(sent["offset"], 1);
    assert_eq!(sent["epoch"].as_str().map(str::len), Some(32));
    let stamped = sent.clone();
    let fields = sent.as_object_mut().unwrap();
    fields.remove("offset");
    fields.remove("epoch");
    assert_eq!(sent, system);
    ingest
        .message("p1", json!({"action": "fetch_history"}))
        .await;
    assert_eq!(
        payload(&ingest.jobs().await[0])["messages"],
        json!([stamped])
    );
}

#[tokio::test]
async fn publish_validation() {
    let ingest = Ingest::start(&[]).await;
    let exactly_max = format!("\"{}\"", "a".repeat(131_070));
    let r = ingest
        .api(Method::POST, "/v1/broadcast")
        .body(exactly_max)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::ACCEPTED,
        "128 KiB exactly is allowed"
    );
    for (path, body, status, code) in [
        (
            "/v1/broadcast",
            format!("\"{}\"", "a".repeat(131_071)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "/v1/broadcast",
            "a".repeat(5_000_000),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "/v1/broadcast",
            "{not json".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/v1/broadcast",
            "".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/v1/channels/bad.name/publish",
            "{}".into(),
            StatusCode::BAD_REQUEST,
            "invalid_channel",
        ),
        (
            "/v1/users/%7Bx%7D/publish",
            "{}".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/v1/connections/ghost/publish",
            "{}".into(),
            StatusCode::NOT_FOUND,
            "unknown_connection",
        ),
    ] {
        let r = ingest
            .api(Method::POST, path)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["code"],
            code,
            "{path}"
        );
    }
    assert_eq!(
        ingest.jobs().await.len(),
        1,
        "only the valid publish was queued"
    );
}

#[tokio::test]
async fn kick_forgets_the_connection_and_queues_a_disconnect() {
    let ingest = Ingest::start(&[]).await;
    ingest.join("k1", "alice", "general").await;
    let r = ingest
        .api(Method::DELETE, "/v1/connections/k1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(
        ingest
            .smembers(&Keyspace::default().channel("general"))
            .await
            .is_empty()
    );
    let jobs = ingest.jobs().await;
    assert_eq!(
        jobs[0].target,
        Target::Connections {
            ids: vec!["k1".into()]
        }
    );
    assert!(matches!(jobs[0].action, Action::Disconnect));
    // The record lives a few minutes more, for the worker; the gateway's $disconnect then deletes it.
    let mut redis = ingest.redis().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(Keyspace::default().connection("k1"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 300_000, "{ttl}");
    assert_eq!(
        ingest
            .callback("disconnect", "k1")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let r = ingest
        .api(Method::DELETE, "/v1/connections/k1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn channel_stats_count_connections_and_subjects() {
    let ingest = Ingest::start(&["--public-channel=general"]).await;
    ingest.join("s1", "alice", "general").await;
    ingest.join("s2", "alice", "general").await;
    ingest.join("s3", "bob", "general").await;
    assert_eq!(
        ingest.connect("s4", "channel=general").await,
        StatusCode::OK
    );
    ingest.join("s5", "carol", "random").await;
    let r = ingest
        .api(Method::GET, "/v1/channels/general")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"channel": "general", "connections": 4, "subjects": 2})
    );
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let ingest = Ingest::start(&[]).await;
    ingest.join("x1", "alice", "general").await;
    ingest.join("x3", "bob", "random").await;
    let r = ingest
        .http
        .get(format!("{}/healthz", ingest.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = ingest
        .http
        .get(format!("{}/readyz", ingest.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"redis": "ok", "queue": "ok"})
    );
    ingest.connect("x2", "channel=general").await;
    let text = ingest.metrics_text().await;
    assert!(
        text.contains(r#"fanout_callbacks_total{outcome="ok",route="connect"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"fanout_callbacks_total{outcome="invalid_or_expired_token",route="connect"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("fanout_live_connections 2"), "{text}");
    assert!(
        text.contains(r#"fanout_api_requests_total{operation="/v1/tokens",outcome="ok"} 2"#),
        "{text}"
    );
    assert!(text.contains("fanout_tokens_issued_total 2"), "{text}");
}

#[tokio::test]
async fn the_router_answers_without_a_socket() {
    use tower::ServiceExt;
    let ingest = Ingest::start(&[]).await;
    let app = ingest::app(ingest.state.clone());
    let request = axum::http::Request::get("/healthz")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let request = axum::http::Request::get("/nope")
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(
        app.oneshot(request).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}
