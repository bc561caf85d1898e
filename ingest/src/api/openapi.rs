//! The OpenAPI 3.1 document of the `/v1` API, served at `GET /v1/openapi.json` (no API key needed: it
//! holds no secrets). It is generated from the handlers' own annotations and the types they read and
//! answer with, so it cannot drift from the code; a test checks it against the OpenAPI schema and that
//! every route of [`super::router`] is in it.

use super::{broadcasts, channels, connections, history, kicks, presence, publish, tokens};
use axum::http::header;
use axum::response::IntoResponse;
use std::sync::LazyLock;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "fanout application API",
        description = "Publish to API Gateway WebSocket connections, mint connect tokens, kick and revoke, and read channels, presence and delivery reports. Every request carries an API key: `Authorization: Bearer KEY` or `X-Api-Key: KEY`. Errors are `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        tokens::issue,
        publish::to_channel,
        publish::to_subject,
        publish::to_connection,
        publish::to_everyone,
        connections::kick,
        kicks::kick,
        kicks::revoke_user,
        channels::stats,
        presence::members,
        history::read,
        broadcasts::report,
        document,
    ),
    modifiers(&ApiKeys),
    security(("bearer" = []), ("x_api_key" = [])),
    tags(
        (name = "tokens", description = "Single-use connect tokens"),
        (name = "publish", description = "Send a payload to a channel, a user, a connection or everyone"),
        (name = "kicks", description = "Disconnect and revoke"),
        (name = "channels", description = "Channel sizes, presence and history"),
        (name = "broadcasts", description = "Delivery reports"),
        (name = "meta", description = "This document"),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

/// The two ways to present the API key.
struct ApiKeys;

impl Modify for ApiKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "x_api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
        );
    }
}

/// The document as JSON, built once.
pub static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
});

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", operation_id = "openapi_document", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub async fn document() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}
