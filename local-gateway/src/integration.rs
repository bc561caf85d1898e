//! Calls to the backend, as API Gateway's HTTP_PROXY integrations make them with the deployment's
//! request-parameter mappings: a POST per WebSocket event to the route's URL.
//!
//! Every call carries `connectionId`, `X-Amzn-Apigateway-Api-Id`, the gateway secret (when configured),
//! `X-Forwarded-For` and `X-Ws-Source-Ip` (the client's IP), `X-Forwarded-Proto`/`-Port` (`https`/`443`, as behind API
//! Gateway), an `X-Amzn-Trace-Id` and a `User-Agent`. `$connect` also passes the query string unchanged
//! and the handshake's own end-to-end headers (Origin, Cookie, `Sec-WebSocket-*`, ...), with the headers
//! above taking precedence so a client cannot forge them. A message carries the client frame's bytes as
//! its body. The header names ingest reads come from [`common::gateways::headers`].

use crate::config::{Settings, UserAgentMode};
use crate::metrics::Metrics;
use crate::registry::Connection;
use bytes::Bytes;
use common::gateways::headers;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::time::Instant;
use url::Url;

/// Why an integration call produced no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum IntegrationError {
    #[error("the integration did not answer within the integration timeout")]
    Timeout,
    #[error("the integration could not be reached: {0}")]
    Unreachable(#[source] reqwest::Error),
}

impl IntegrationError {
    /// What API Gateway answers a client whose `$connect` integration failed.
    pub fn status(&self) -> StatusCode {
        match self {
            IntegrationError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            IntegrationError::Unreachable(_) => StatusCode::BAD_GATEWAY,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            IntegrationError::Timeout => "timeout",
            IntegrationError::Unreachable(_) => "error",
        }
    }
}

/// The integration's answer to `$connect`.
#[derive(Debug)]
pub struct ConnectAnswer {
    pub status: StatusCode,
    /// A `Sec-WebSocket-Protocol` the integration selected, to complete the handshake with.
    pub subprotocol: Option<HeaderValue>,
    pub body: Bytes,
}

/// Hop-by-hop and framing headers of the handshake, which a proxy does not forward.
const NOT_FORWARDED: [HeaderName; 9] = [
    header::CONNECTION,
    header::UPGRADE,
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::PROXY_AUTHORIZATION,
    header::EXPECT,
];

/// The client for every integration call.
#[derive(Debug)]
pub struct Integration {
    client: reqwest::Client,
    routes: crate::routes::RouteTable,
    connection_id: HeaderName,
    api_id_name: HeaderName,
    api_id: HeaderValue,
    secret_name: HeaderName,
    secret: Option<HeaderValue>,
    forwarded_for: HeaderName,
    source_ip: HeaderName,
    /// Set when the integration sees API Gateway's own User-Agent rather than the client's.
    gateway_user_agent: Option<HeaderValue>,
    metrics: Metrics,
}

fn name(s: &str) -> HeaderName {
    HeaderName::from_bytes(s.as_bytes()).expect("the header names in common are valid")
}

impl Integration {
    pub fn new(settings: &Settings, metrics: Metrics) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(settings.integration_timeout)
            .no_proxy()
            .tcp_nodelay(true)
            .build()?;
        let mut secret = settings.gateway_secret.as_ref().map(|s| {
            HeaderValue::from_str(s.expose()).expect("validated as a header value in config")
        });
        if let Some(s) = &mut secret {
            s.set_sensitive(true);
        }
        let gateway_user_agent =
            (settings.integration_user_agent == UserAgentMode::Gateway).then(|| {
                HeaderValue::from_str(&format!("AmazonAPIGateway_{}", settings.api_id))
                    .expect("the API id is validated")
            });
        Ok(Self {
            client,
            routes: settings.routes.clone(),
            connection_id: name(headers::CONNECTION_ID),
            api_id_name: name(headers::API_ID),
            api_id: HeaderValue::from_str(&settings.api_id).expect("the API id is validated"),
            secret_name: name(headers::GATEWAY_SECRET),
            secret,
            forwarded_for: name(headers::FORWARDED_FOR),
            source_ip: name(headers::SOURCE_IP),
            gateway_user_agent,
            metrics,
        })
    }

    /// `$connect`: waits for the integration's answer, which decides the handshake.
    pub async fn connect(
        &self,
        conn: &Connection,
        query: Option<&str>,
        handshake: &HeaderMap,
    ) -> Result<ConnectAnswer, IntegrationError> {
        let mut url = self.routes.connect().clone();
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            let joined = match url.query() {
                Some(own) if !own.is_empty() => format!("{own}&{query}"),
                _ => query.to_owned(),
            };
            url.set_query(Some(&joined));
        }
        let mut map = HeaderMap::with_capacity(handshake.len() + 8);
        for (name, value) in handshake {
            if !NOT_FORWARDED.contains(name) {
                map.append(name.clone(), value.clone());
            }
        }
        self.add_headers(&mut map, conn);
        let (status, response_headers, body) = self.call("connect", url, map, None, conn).await?;
        Ok(ConnectAnswer {
            status,
            subprotocol: response_headers
                .get(header::SEC_WEBSOCKET_PROTOCOL)
                .cloned(),
            body,
        })
    }

    /// `$disconnect`.
    pub async fn disconnect(&self, conn: &Connection) -> Result<StatusCode, IntegrationError> {
        let mut map = HeaderMap::with_capacity(8);
        self.add_headers(&mut map, conn);
        let url = self.routes.disconnect().clone();
        Ok(self.call("disconnect", url, map, None, conn).await?.0)
    }

    /// A client frame, to the route selected from its content.
    pub async fn message(
        &self,
        conn: &Connection,
        frame: Bytes,
        text: bool,
    ) -> Result<StatusCode, IntegrationError> {
        let url = self.routes.select(&frame, text).clone();
        let mut map = HeaderMap::with_capacity(8);
        self.add_headers(&mut map, conn);
        Ok(self.call("message", url, map, Some(frame), conn).await?.0)
    }

    fn add_headers(&self, map: &mut HeaderMap, conn: &Connection) {
        map.insert(
            self.connection_id.clone(),
            HeaderValue::from_str(conn.id()).expect("connection ids are header-safe"),
        );
        map.insert(self.api_id_name.clone(), self.api_id.clone());
        match &self.secret {
            Some(secret) => {
                map.insert(self.secret_name.clone(), secret.clone());
            }
            None => {
                map.remove(&self.secret_name);
            }
        }
        let ip =
            HeaderValue::from_str(&conn.source_ip().to_string()).expect("an IP is header-safe");
        map.insert(self.forwarded_for.clone(), ip.clone());
        // As the deployment templates map `context.identity.sourceIp`: the address the client cannot set.
        map.insert(self.source_ip.clone(), ip);
        map.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static("https"),
        );
        map.insert(
            HeaderName::from_static("x-forwarded-port"),
            HeaderValue::from_static("443"),
        );
        map.insert(HeaderName::from_static("x-amzn-trace-id"), trace_id());
        let user_agent = match &self.gateway_user_agent {
            Some(ua) => Some(ua.clone()),
            None => conn
                .user_agent()
                .and_then(|ua| HeaderValue::from_str(ua).ok()),
        };
        match user_agent {
            Some(ua) => map.insert(header::USER_AGENT, ua),
            None => map.remove(header::USER_AGENT),
        };
    }

    async fn call(
        &self,
        route: &'static str,
        url: Url,
        headers: HeaderMap,
        body: Option<Bytes>,
        conn: &Connection,
    ) -> Result<(StatusCode, HeaderMap, Bytes), IntegrationError> {
        let started = Instant::now();
        let mut request = self.client.post(url).headers(headers);
        if let Some(body) = body {
            request = request.body(body);
        }
        let result = async {
            let response = request.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            // Read the body to the end, so the connection goes back to the pool.
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        }
        .await
        .map_err(|e| {
            if e.is_timeout() {
                IntegrationError::Timeout
            } else {
                IntegrationError::Unreachable(e)
            }
        });
        let seconds = started.elapsed().as_secs_f64();
        match &result {
            Ok((status, _, _)) => {
                let class = match status.as_u16() / 100 {
                    2 => "2xx",
                    3 => "3xx",
                    4 => "4xx",
                    _ => "5xx",
                };
                self.metrics.integration_call(route, class, seconds);
                if !status.is_success() {
                    tracing::debug!(route, connection_id = conn.id(), %status, "integration answered non-2xx");
                }
            }
            Err(error) => {
                self.metrics.integration_call(route, error.label(), seconds);
                tracing::warn!(route, connection_id = conn.id(), %error, "integration call failed");
            }
        }
        result
    }
}

/// An `X-Amzn-Trace-Id` in X-Ray's shape: `Root=1-{epoch seconds, hex}-{96 random bits, hex}`.
fn trace_id() -> HeaderValue {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let random: u128 = rand::random::<u128>() >> 32;
    HeaderValue::from_str(&format!("Root=1-{secs:08x}-{random:024x}")).expect("hex is header-safe")
}
