//! [`MgmtClient`]: `PostToConnection`, `GetConnection` and `DeleteConnection` on one hyper-util
//! pooled client (a pool per scheme and authority, so per endpoint) over rustls with aws-lc-rs, the
//! TLS stack the workspace's AWS crates already use. HTTP/1.1 keep-alive, and HTTP/2 when the
//! server offers it through ALPN; calls in flight per endpoint are bounded by a semaphore (with
//! HTTP/1.1 that is also the bound on connections); one outer timeout covers waiting for a slot,
//! the exchange and reading the response. Each call: cached credentials, the signature
//! ([`crate::signer`]), the request, and [`crate::error::classify`] on anything but a 2xx.

mod endpoint;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderName, USER_AGENT};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use endpoint::{Endpoint, EndpointError};

use crate::credentials::CredentialsSource;
use crate::error::{MgmtError, classify};
use crate::signer::{Signer, SigningRequest, encode_label, payload_hash};

const X_AMZ_DATE: HeaderName = HeaderName::from_static("x-amz-date");
const X_AMZ_SECURITY_TOKEN: HeaderName = HeaderName::from_static("x-amz-security-token");
const OCTET_STREAM: &str = "application/octet-stream";
/// Responses larger than this are not read (error bodies are a few dozen bytes).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Which certificate authorities TLS connections trust.
#[derive(Debug, Clone)]
pub enum TlsRoots {
    /// The operating system's store (what the AWS SDK uses too).
    Native,
    /// Exactly these (tests, private endpoints).
    Custom(rustls::RootCertStore),
}

/// How the client behaves; `Default` gives the values documented on each field.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Outer timeout of one call, from asking for a slot to the last byte of the response. Default 10 s.
    pub call_timeout: Duration,
    /// Calls in flight per endpoint (and so HTTP/1.1 connections per endpoint). Default 64.
    pub max_in_flight_per_endpoint: usize,
    /// The caller already keeps its calls in flight within `max_in_flight_per_endpoint` (in all, so per
    /// endpoint too), as the fanout worker's in-flight slots do: then no permit is taken per call.
    /// Default false.
    pub caller_bounds_in_flight: bool,
    /// How long an idle pooled connection is kept. Default 60 s.
    pub pool_idle_timeout: Duration,
    /// TCP connect timeout. Default 3 s.
    pub connect_timeout: Duration,
    /// Trusted certificate authorities. Default the system's.
    pub tls_roots: TlsRoots,
    /// Sent as `User-Agent` (not signed).
    pub user_agent: &'static str,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            call_timeout: Duration::from_secs(10),
            max_in_flight_per_endpoint: 64,
            caller_bounds_in_flight: false,
            pool_idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(3),
            tls_roots: TlsRoots::Native,
            user_agent: concat!("fanout-mgmt-client/", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no trusted root certificates could be loaded from the system")]
    NoRootCertificates,
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// What `GetConnection` tells about a connection. Times are as API Gateway sends them (ISO 8601).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionInfo {
    #[serde(default, deserialize_with = "timestamp")]
    pub connected_at: Option<String>,
    #[serde(default, deserialize_with = "timestamp")]
    pub last_active_at: Option<String>,
    #[serde(default)]
    pub identity: Identity,
}

/// The connecting client's address and user agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    #[serde(default)]
    pub source_ip: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
}

/// A timestamp as a string whether it came as one or as epoch seconds.
fn timestamp<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    use serde::Deserialize;
    Ok(
        match Option::<serde_json::Value>::deserialize(deserializer)? {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s),
            Some(other) => Some(other.to_string()),
        },
    )
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The lean Management API client; cheap to clone, all clones share pools, endpoints and caches.
#[derive(Clone)]
pub struct MgmtClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: HttpClient,
    signer: Signer,
    credentials: CredentialsSource,
    call_timeout: Duration,
    max_in_flight: usize,
    caller_bounds_in_flight: bool,
    user_agent: HeaderValue,
    endpoints: Mutex<HashMap<(String, String), Endpoint>>,
}

impl fmt::Debug for MgmtClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MgmtClient")
            .field("call_timeout", &self.inner.call_timeout)
            .field("max_in_flight", &self.inner.max_in_flight)
            .field("credentials", &self.inner.credentials)
            .finish()
    }
}

/// The rustls client configuration: aws-lc-rs, TLS 1.2 and 1.3, `h2` and `http/1.1` offered.
pub fn tls_config(roots: &TlsRoots) -> Result<rustls::ClientConfig, ClientError> {
    let store = match roots {
        TlsRoots::Custom(store) => store.clone(),
        TlsRoots::Native => {
            let loaded = rustls_native_certs::load_native_certs();
            for error in &loaded.errors {
                tracing::warn!(%error, "a system root certificate could not be loaded");
            }
            let mut store = rustls::RootCertStore::empty();
            store.add_parsable_certificates(loaded.certs);
            if store.is_empty() {
                return Err(ClientError::NoRootCertificates);
            }
            store
        }
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store)
        .with_no_client_auth())
}

impl MgmtClient {
    pub fn new(
        options: ClientOptions,
        credentials: CredentialsSource,
    ) -> Result<Self, ClientError> {
        let tls = tls_config(&options.tls_roots)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(options.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(options.pool_idle_timeout)
            .pool_max_idle_per_host(options.max_in_flight_per_endpoint)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(MgmtClient {
            inner: Arc::new(Inner {
                http,
                signer: Signer::new(),
                credentials,
                call_timeout: options.call_timeout,
                max_in_flight: options.max_in_flight_per_endpoint,
                caller_bounds_in_flight: options.caller_bounds_in_flight,
                user_agent: HeaderValue::from_static(options.user_agent),
                endpoints: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The endpoint at `url` (`https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`, a custom
    /// domain with its base path, or `http://127.0.0.1:port/stage`), signed for `region`. The same
    /// URL and region always give the same endpoint, so the bound on calls in flight is shared.
    pub fn endpoint(&self, url: &str, region: &str) -> Result<Endpoint, EndpointError> {
        let key = (url.to_owned(), region.to_owned());
        let mut endpoints = match self.inner.endpoints.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(endpoint) = endpoints.get(&key) {
            return Ok(endpoint.clone());
        }
        let bound = (!self.inner.caller_bounds_in_flight).then_some(self.inner.max_in_flight);
        let endpoint = Endpoint::parse(url, region, bound)?;
        endpoints.insert(key, endpoint.clone());
        Ok(endpoint)
    }

    /// Sends `data` to the connection as one WebSocket frame.
    pub async fn post_to_connection(
        &self,
        endpoint: &Endpoint,
        connection_id: &str,
        data: Bytes,
    ) -> Result<(), MgmtError> {
        self.call(endpoint, Method::POST, connection_id, data)
            .await
            .map(|_| ())
    }

    /// Asks API Gateway about a connection.
    pub async fn get_connection(
        &self,
        endpoint: &Endpoint,
        connection_id: &str,
    ) -> Result<ConnectionInfo, MgmtError> {
        let body = self
            .call(endpoint, Method::GET, connection_id, Bytes::new())
            .await?;
        if body.is_empty() {
            return Ok(ConnectionInfo::default());
        }
        serde_json::from_slice(&body).map_err(|error| {
            MgmtError::Transport(format!(
                "GetConnection answered with a body that is not its JSON: {error}"
            ))
        })
    }

    /// Closes a connection.
    pub async fn delete_connection(
        &self,
        endpoint: &Endpoint,
        connection_id: &str,
    ) -> Result<(), MgmtError> {
        self.call(endpoint, Method::DELETE, connection_id, Bytes::new())
            .await
            .map(|_| ())
    }

    async fn call(
        &self,
        endpoint: &Endpoint,
        method: Method,
        connection_id: &str,
        body: Bytes,
    ) -> Result<Bytes, MgmtError> {
        if connection_id.is_empty() {
            return Err(MgmtError::InvalidRequest("connection id is empty"));
        }
        let credentials = self.inner.credentials.get().await?;
        let ep = &endpoint.inner;

        let mut path = String::with_capacity(ep.base_path.len() + 14 + 3 * connection_id.len());
        path.push_str(&ep.base_path);
        path.push_str("/@connections/");
        encode_label(&mut path, connection_id);

        let content_type = (method == Method::POST).then_some(OCTET_STREAM);
        let body_hash = body_hash(&body);
        let signature = self.inner.signer.sign_hashed(
            &credentials,
            &ep.region,
            &SigningRequest {
                method: method.as_str(),
                host: &ep.host,
                path: &path,
                content_type,
                body: &body,
            },
            &body_hash,
            SystemTime::now(),
        );
        let uri = Uri::builder()
            .scheme(ep.scheme.clone())
            .authority(ep.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|_| MgmtError::InvalidRequest("connection id does not make a valid URI"))?;

        let body_len = body.len();
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.reserve(8);
        // The host that was signed; hyper-util would otherwise format it from the URI on every call.
        headers.insert(HOST, ep.host_header.clone());
        if content_type.is_some() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(OCTET_STREAM));
            headers.insert(CONTENT_LENGTH, HeaderValue::from(body_len));
        }
        headers.insert(X_AMZ_DATE, signature.x_amz_date);
        headers.insert(AUTHORIZATION, signature.authorization);
        if let Some(token) = signature.security_token {
            headers.insert(X_AMZ_SECURITY_TOKEN, token);
        }
        headers.insert(USER_AGENT, self.inner.user_agent.clone());

        let exchange = async {
            let _permit = match &ep.permits {
                Some(permits) => Some(
                    permits
                        .acquire()
                        .await
                        .map_err(|_| MgmtError::Transport("endpoint closed".into()))?,
                ),
                None => None,
            };
            let response = self
                .inner
                .http
                .request(request)
                .await
                .map_err(|error| MgmtError::Transport(error_chain(&error)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|error| MgmtError::Transport(format!("reading the response: {error}")))?
                .to_bytes();
            Ok::<_, MgmtError>((parts.status, parts.headers, body))
        };
        let (status, headers, body) = tokio::time::timeout(self.inner.call_timeout, exchange)
            .await
            .map_err(|_| MgmtError::Timeout)??;
        if status.is_success() {
            Ok(body)
        } else {
            Err(classify(status, &headers, &body))
        }
    }
}

thread_local! {
    /// The last body hashed on this thread, and its hash: a job posts the same payload (clones of one
    /// `Bytes`) to each of its recipients, so it is hashed once per job and thread, not once per call.
    static LAST_BODY: std::cell::RefCell<Option<(Bytes, [u8; 64])>> = const { std::cell::RefCell::new(None) };
}

/// The hex SHA-256 of `body`, from [`LAST_BODY`] when `body` is the same bytes. The same pointer and
/// length mean the same contents: the entry holds a clone of the `Bytes`, so the memory it points at can
/// neither change nor be reused while it is there.
fn body_hash(body: &Bytes) -> [u8; 64] {
    if body.is_empty() {
        return payload_hash(body);
    }
    LAST_BODY.with(|last| {
        let Ok(mut last) = last.try_borrow_mut() else {
            return payload_hash(body);
        };
        if let Some((seen, hash)) = last.as_ref()
            && seen.as_ptr() == body.as_ptr()
            && seen.len() == body.len()
        {
            return *hash;
        }
        let hash = payload_hash(body);
        *last = Some((body.clone(), hash));
        hash
    })
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body's cached hash is only used for the same bytes: another body of the same length, a slice
    /// of the first, or an equal copy each get their own (right) hash.
    #[test]
    fn a_cached_body_hash_is_only_used_for_the_same_bytes() {
        let first = Bytes::from(b"{\"n\":1}".to_vec());
        assert_eq!(body_hash(&first), payload_hash(&first));
        assert_eq!(body_hash(&first.clone()), payload_hash(&first));
        let other = Bytes::from(b"{\"n\":2}".to_vec());
        assert_eq!(body_hash(&other), payload_hash(&other));
        assert_ne!(body_hash(&other), body_hash(&first));
        let head = first.slice(0..3);
        assert_eq!(body_hash(&head), payload_hash(b"{\"n"));
        let copy = Bytes::copy_from_slice(&first);
        assert_eq!(body_hash(&copy), payload_hash(&first));
        assert_eq!(body_hash(&Bytes::new()), payload_hash(b""));
    }

    /// An endpoint bounds its calls in flight with permits, unless the caller says it bounds them.
    #[test]
    fn permits_are_taken_unless_the_caller_bounds_the_calls() {
        let client = |caller_bounds_in_flight| {
            MgmtClient::new(
                ClientOptions {
                    max_in_flight_per_endpoint: 3,
                    caller_bounds_in_flight,
                    tls_roots: TlsRoots::Custom(rustls::RootCertStore::empty()),
                    ..ClientOptions::default()
                },
                CredentialsSource::fixed(
                    crate::SigningCredentials::new("AKID", "secret", None).unwrap(),
                ),
            )
            .unwrap()
        };
        let bounded = client(false).endpoint("http://127.0.0.1:9/prod", "us-east-1");
        let permits = bounded
            .unwrap()
            .inner
            .permits
            .as_ref()
            .map(|p| p.available_permits());
        assert_eq!(permits, Some(3));
        let unbounded = client(true).endpoint("http://127.0.0.1:9/prod", "us-east-1");
        assert!(unbounded.unwrap().inner.permits.is_none());
    }
}
