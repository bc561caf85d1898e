//! The OpenAPI document at `GET /v1/openapi.json`: served without a key, valid OpenAPI 3.1 (checked by
//! `openapi-spec-validator`, which `./dev test` installs into `.venv`), naming every route of the router
//! with its method, and describing the bodies the service really answers with.

use crate::support::Ingest;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;

async fn document(ingest: &Ingest) -> Value {
    let r = ingest
        .http
        .get(format!("{}/v1/openapi.json", ingest.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.unwrap()
}

/// Every `(METHOD, /v1/path)` the document describes.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

/// Every `(METHOD, /v1/path)` routed by `api::router`, read from its source (axum cannot list a
/// router's routes).
fn routed() -> BTreeSet<(String, String)> {
    let source =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/api/mod.rs"))
            .unwrap();
    let body = &source[source.find("pub fn router()").expect("api::router")..];
    let body = &body[..body.find("\n}").unwrap()];
    let routes: BTreeSet<_> = body
        .lines()
        .filter_map(|line| line.trim().strip_prefix(".route(\""))
        .map(|rest| {
            let (path, rest) = rest.split_once("\", ").unwrap();
            let method = rest.split_once('(').unwrap().0;
            (method.to_uppercase(), format!("/v1{path}"))
        })
        .collect();
    assert!(
        routes.len() >= 10,
        "the router's routes were read: {routes:?}"
    );
    routes
}

/// The property names of a schema in the document's components.
fn properties(doc: &Value, schema: &str) -> BTreeSet<String> {
    doc["components"]["schemas"][schema]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("schema {schema} has properties"))
        .keys()
        .cloned()
        .collect()
}

fn keys(body: &Value) -> BTreeSet<String> {
    body.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn the_document_is_served_without_a_key_and_is_valid_openapi_3_1() {
    let ingest = Ingest::start(&[]).await;
    let doc = document(&ingest).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    let validator =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/openapi-spec-validator");
    assert!(
        validator.exists(),
        "openapi-spec-validator is not in .venv: run the suite with ./dev test, which installs it"
    );
    let file = std::env::temp_dir().join(format!("fanout-openapi-{}.json", std::process::id()));
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = std::process::Command::new(&validator)
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A document the validator refuses is refused: the check can fail.
    let mut broken = doc.clone();
    broken["paths"]["/v1/tokens"]["post"]["responses"] = json!("none");
    let file = std::env::temp_dir().join(format!("fanout-openapi-bad-{}.json", std::process::id()));
    std::fs::write(&file, broken.to_string()).unwrap();
    let status = std::process::Command::new(&validator)
        .arg(&file)
        .output()
        .unwrap()
        .status;
    let _ = std::fs::remove_file(&file);
    assert!(!status.success());
    ingest.stop().await;
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_operation_needs_a_key() {
    let ingest = Ingest::start(&[]).await;
    let doc = document(&ingest).await;
    assert_eq!(operations(&doc), routed());
    for (method, path) in operations(&doc) {
        let operation = &doc["paths"][&path][method.to_lowercase()];
        let open = operation["security"] == json!([{}]);
        // Path parameters filled with valid values, so only the key decides.
        let url = format!(
            "{}{}",
            ingest.url,
            path.replace("{channel}", "general")
                .replace("{subject}", "alice")
                .replace("{id}", "abc")
        );
        let status = ingest
            .http
            .request(Method::from_bytes(method.as_bytes()).unwrap(), &url)
            .send()
            .await
            .unwrap()
            .status();
        if open {
            assert_eq!(status, StatusCode::OK, "{method} {path} is public");
        } else {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
            assert!(
                operation["responses"]["401"].is_object(),
                "{method} {path} documents its 401"
            );
        }
    }
    ingest.stop().await;
}

#[tokio::test]
async fn the_documented_bodies_are_the_bodies_answered() {
    let ingest = Ingest::start(&[]).await;
    let doc = document(&ingest).await;
    let call = |method: Method, path: &str, body: Option<Value>| {
        let mut request = ingest.api(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let r = request.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, token) = call(
        Method::POST,
        "/v1/tokens",
        Some(json!({"subject": "alice"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys(&token), properties(&doc, "TokenIssued"));
    let (status, job) = call(
        Method::POST,
        "/v1/channels/general/publish",
        Some(json!({"m": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(keys(&job), properties(&doc, "JobAccepted"));
    let (status, stats) = call(Method::GET, "/v1/channels/general", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys(&stats), properties(&doc, "ChannelStats"));
    let (status, kicked) = call(
        Method::POST,
        "/v1/kick",
        Some(json!({"channel": "general"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(keys(&kicked), properties(&doc, "KickAccepted"));
    let (status, error) = call(Method::POST, "/v1/channels/a*/publish", Some(json!({}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(keys(&error), BTreeSet::from(["error".to_owned()]));
    assert_eq!(keys(&error["error"]), properties(&doc, "ErrorDetail"));
    // The request schemas refuse what the service refuses.
    assert_eq!(
        doc["components"]["schemas"]["TokenRequest"]["required"],
        json!(["subject"])
    );
    ingest.stop().await;
}
