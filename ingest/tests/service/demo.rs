//! The local demo's routes: absent unless `--demo-ws-url` is set; when set, the chat page is served and
//! a demo token opens a connection like any other token.

use crate::support::Ingest;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn demo_routes_exist_only_in_demo_mode() {
    let ingest = Ingest::start(&[]).await;
    for path in ["/demo/", "/demo/token"] {
        let r = ingest
            .http
            .post(format!("{}{path}", ingest.url))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn demo_tokens_connect_and_the_page_is_served() {
    let ingest = Ingest::start(&["--demo-ws-url=ws://127.0.0.1:4001/local"]).await;
    let page = ingest
        .http
        .get(format!("{}/demo/", ingest.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("./fanout.js"));
    let module = ingest
        .http
        .get(format!("{}/demo/fanout.js", ingest.url))
        .send()
        .await
        .unwrap();
    assert_eq!(module.status(), StatusCode::OK);
    assert_eq!(
        module.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(
        module
            .text()
            .await
            .unwrap()
            .contains("export class FanoutClient")
    );
    let r = ingest
        .http
        .post(format!("{}/demo/token", ingest.url))
        .json(&json!({"name": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["ws_url"], "ws://127.0.0.1:4001/local");
    let token = body["token"].as_str().unwrap();
    assert_eq!(
        ingest
            .connect("demo1", &format!("channel=general&ws_token={token}"))
            .await,
        StatusCode::OK
    );
    let r = ingest
        .http
        .post(format!("{}/demo/token", ingest.url))
        .json(&json!({"name": "a b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}
