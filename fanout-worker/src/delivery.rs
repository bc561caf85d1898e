//! Delivery: one Management API call to one connection, behind the [`Deliver`] trait so that planning,
//! retries and accounting never depend on which HTTP client makes the call.
//!
//! Every call ends in an [`Outcome`]; errors are values, classified once here. [`SdkDeliver`] is the
//! reference implementation on `aws-sdk-apigatewaymanagement`: one client per Management API endpoint,
//! all sharing one HTTP connection pool, the SDK's own retries off (`RetryConfig::disabled()`, so the
//! worker sees and owns every 429), and an outer `tokio::time::timeout` per call, because SDK calls to
//! `execute-api` have been seen to hang past their configured timeouts.
//!
//! [`LeanDeliver`] is the default (`--delivery-client lean`): the same calls through
//! [`mgmt_client::MgmtClient`] (SigV4 with a cached signing key on a pooled hyper/rustls client), at
//! about the CPU cost of a plain HTTP POST. It maps [`MgmtError`] onto [`Outcome`] as [`SdkDeliver`]
//! maps the SDK's errors (typed codes first, then the status); a credentials failure is retryable
//! and loud: logged at ERROR (at most once a second) and counted in
//! `fanout_delivery_credentials_failures_total`, never a silent drop.

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::error::SdkError;
use aws_sdk_apigatewaymanagement::operation::delete_connection::DeleteConnectionError;
use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::retry::RetryConfig;
use bytes::Bytes;
use mgmt_client::MgmtError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Failed calls for want of usable AWS credentials (lean client).
pub const CREDENTIALS_FAILURES_TOTAL: &str = "fanout_delivery_credentials_failures_total";

/// A Management API endpoint: `https://{api-id}.execute-api.{region}.amazonaws.com/{stage}` or an explicit
/// URL, and the region to sign for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub url: Arc<str>,
    pub region: Arc<str>,
}

/// How one call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 200 (post) or 204 (delete).
    Sent,
    /// 410 `GoneException`: the connection no longer exists. Never retried.
    Gone,
    /// 429 `LimitExceededException`: the account's budget, or this client's buffer, is full.
    Throttled,
    /// 403 `ForbiddenException`: a configuration error (endpoint, stage, region or IAM), not connection state.
    Forbidden,
    /// 413 `PayloadTooLargeException`: permanent for this payload.
    PayloadTooLarge,
    /// Worth trying again: a 5xx, a timeout, a network failure, or an answer nobody expected.
    Retryable(RetryReason),
}

/// Why a call may be retried; a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RetryReason {
    Http5xx,
    Timeout,
    Network,
    /// Any other failure (an unexpected status, missing credentials, a request that could not be built).
    Other,
}

impl RetryReason {
    pub fn label(self) -> &'static str {
        match self {
            RetryReason::Http5xx => "http_5xx",
            RetryReason::Timeout => "timeout",
            RetryReason::Network => "network",
            RetryReason::Other => "other",
        }
    }
}

/// Makes Management API calls.
#[async_trait]
pub trait Deliver: Send + Sync + std::fmt::Debug {
    /// `PostToConnection`: sends `payload` to the connection as one message.
    async fn post(&self, endpoint: &Endpoint, connection_id: &str, payload: Bytes) -> Outcome;
    /// `DeleteConnection`: closes the connection.
    async fn delete(&self, endpoint: &Endpoint, connection_id: &str) -> Outcome;
    /// Adds the client's own metrics, if any, to the worker's registry.
    fn register_metrics(&self, _registry: &prometheus::Registry) {}
}

/// The outcome an HTTP status means, for answers the SDK could not type (no `x-amzn-ErrorType`).
pub fn outcome_of_status(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Sent,
        410 => Outcome::Gone,
        429 => Outcome::Throttled,
        403 => Outcome::Forbidden,
        413 => Outcome::PayloadTooLarge,
        500..=599 => Outcome::Retryable(RetryReason::Http5xx),
        _ => Outcome::Retryable(RetryReason::Other),
    }
}

/// The reference client: the AWS SDK.
#[derive(Debug)]
pub struct SdkDeliver {
    base: aws_config::SdkConfig,
    timeout: Duration,
    clients: RwLock<HashMap<Endpoint, aws_sdk_apigatewaymanagement::Client>>,
}

impl SdkDeliver {
    /// Clients built from `base` (credentials, HTTP client), each call limited to `timeout`.
    pub fn new(base: aws_config::SdkConfig, timeout: Duration) -> Self {
        Self {
            base,
            timeout,
            clients: RwLock::new(HashMap::new()),
        }
    }

    /// Clients with the default AWS credential chain (environment, profile, container or instance role).
    pub async fn from_env(timeout: Duration) -> Self {
        let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        Self::new(base, timeout)
    }

    /// The endpoint's client, made on first use. Every client shares `base`'s HTTP client, so they share
    /// one connection pool.
    fn client(&self, endpoint: &Endpoint) -> aws_sdk_apigatewaymanagement::Client {
        if let Some(c) = self
            .clients
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(endpoint)
        {
            return c.clone();
        }
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(&self.base)
            .endpoint_url(endpoint.url.as_ref())
            .region(aws_sdk_apigatewaymanagement::config::Region::new(
                endpoint.region.to_string(),
            ))
            .retry_config(RetryConfig::disabled())
            .build();
        let client = aws_sdk_apigatewaymanagement::Client::from_conf(config);
        self.clients
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(endpoint.clone())
            .or_insert(client)
            .clone()
    }
}

#[async_trait]
impl Deliver for SdkDeliver {
    async fn post(&self, endpoint: &Endpoint, connection_id: &str, payload: Bytes) -> Outcome {
        let call = self
            .client(endpoint)
            .post_to_connection()
            .connection_id(connection_id)
            .data(aws_smithy_types::Blob::new(payload))
            .send();
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Outcome::Retryable(RetryReason::Timeout),
            Ok(Ok(_)) => Outcome::Sent,
            Ok(Err(e)) => classify_post(&e),
        }
    }

    async fn delete(&self, endpoint: &Endpoint, connection_id: &str) -> Outcome {
        let call = self
            .client(endpoint)
            .delete_connection()
            .connection_id(connection_id)
            .send();
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Outcome::Retryable(RetryReason::Timeout),
            Ok(Ok(_)) => Outcome::Sent,
            Ok(Err(e)) => classify_delete(&e),
        }
    }
}

fn classify_post(e: &SdkError<PostToConnectionError, HttpResponse>) -> Outcome {
    match e {
        SdkError::ServiceError(se) => match se.err() {
            PostToConnectionError::GoneException(_) => Outcome::Gone,
            PostToConnectionError::LimitExceededException(_) => Outcome::Throttled,
            PostToConnectionError::ForbiddenException(_) => Outcome::Forbidden,
            PostToConnectionError::PayloadTooLargeException(_) => Outcome::PayloadTooLarge,
            _ => outcome_of_status(se.raw().status().as_u16()),
        },
        other => classify_transport(other),
    }
}

fn classify_delete(e: &SdkError<DeleteConnectionError, HttpResponse>) -> Outcome {
    match e {
        SdkError::ServiceError(se) => match se.err() {
            DeleteConnectionError::GoneException(_) => Outcome::Gone,
            DeleteConnectionError::LimitExceededException(_) => Outcome::Throttled,
            DeleteConnectionError::ForbiddenException(_) => Outcome::Forbidden,
            _ => outcome_of_status(se.raw().status().as_u16()),
        },
        other => classify_transport(other),
    }
}

/// Failures that are not a typed service answer.
fn classify_transport<E>(e: &SdkError<E, HttpResponse>) -> Outcome {
    match e {
        SdkError::TimeoutError(_) => Outcome::Retryable(RetryReason::Timeout),
        SdkError::DispatchFailure(d) if d.is_timeout() => Outcome::Retryable(RetryReason::Timeout),
        SdkError::DispatchFailure(_) => Outcome::Retryable(RetryReason::Network),
        SdkError::ResponseError(r) => outcome_of_status(r.raw().status().as_u16()),
        SdkError::ServiceError(se) => outcome_of_status(se.raw().status().as_u16()),
        _ => Outcome::Retryable(RetryReason::Other),
    }
}

/// The lean client: [`mgmt_client::MgmtClient`].
#[derive(Debug)]
pub struct LeanDeliver {
    client: mgmt_client::MgmtClient,
    /// The client's endpoint for each endpoint seen: a handful (one per API and stage), so a list
    /// searched by comparing `Arc`s (the recipients of a job share theirs, so the pointers match first)
    /// costs less than hashing the URL on every call.
    endpoints: RwLock<Vec<(Endpoint, mgmt_client::Endpoint)>>,
    credentials_failures: prometheus::IntCounter,
    /// Unix second of the last credentials ERROR log, so a broken provider logs once a second.
    last_credentials_log: AtomicU64,
}

impl LeanDeliver {
    /// A client signing with `credentials`; calls limited to `timeout` (slot, exchange and response),
    /// at most `max_in_flight` in all: the dispatcher's in-flight slots bound them, so the client takes
    /// no permit of its own per call.
    pub fn new(
        credentials: mgmt_client::CredentialsSource,
        timeout: Duration,
        max_in_flight: usize,
    ) -> Result<Self, mgmt_client::client::ClientError> {
        Self::with_options(
            mgmt_client::ClientOptions {
                call_timeout: timeout,
                max_in_flight_per_endpoint: max_in_flight,
                // Every call goes through the dispatcher's in-flight slots (as many as `max_in_flight`).
                caller_bounds_in_flight: true,
                ..mgmt_client::ClientOptions::default()
            },
            credentials,
        )
    }

    /// A client with explicit options (custom TLS roots in tests and benchmarks).
    pub fn with_options(
        options: mgmt_client::ClientOptions,
        credentials: mgmt_client::CredentialsSource,
    ) -> Result<Self, mgmt_client::client::ClientError> {
        Ok(Self {
            client: mgmt_client::MgmtClient::new(options, credentials)?,
            endpoints: RwLock::new(Vec::new()),
            credentials_failures: prometheus::IntCounter::new(
                CREDENTIALS_FAILURES_TOTAL,
                "Management API calls that failed for want of usable AWS credentials (retried).",
            )
            .expect("valid metric"),
            last_credentials_log: AtomicU64::new(0),
        })
    }

    /// The default AWS credential chain (environment, profile, web identity, container or instance role).
    pub async fn from_env(
        region: &str,
        timeout: Duration,
        max_in_flight: usize,
    ) -> Result<Self, mgmt_client::client::ClientError> {
        let credentials = mgmt_client::CredentialsSource::default_chain(region).await;
        Self::new(credentials, timeout, max_in_flight)
    }

    /// Calls that failed for want of credentials, since start.
    pub fn credentials_failures(&self) -> u64 {
        self.credentials_failures.get()
    }

    fn endpoint(&self, endpoint: &Endpoint) -> Result<mgmt_client::Endpoint, Outcome> {
        let known = |list: &[(Endpoint, mgmt_client::Endpoint)]| {
            list.iter()
                .find(|(k, _)| k == endpoint)
                .map(|(_, e)| e.clone())
        };
        if let Some(e) = known(
            &self
                .endpoints
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ) {
            return Ok(e);
        }
        match self.client.endpoint(&endpoint.url, &endpoint.region) {
            Ok(e) => {
                let mut list = self
                    .endpoints
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if known(&list).is_none() {
                    list.push((endpoint.clone(), e.clone()));
                }
                Ok(e)
            }
            Err(error) => {
                tracing::error!(%error, endpoint = %endpoint.url, "unusable Management API endpoint");
                Err(Outcome::Retryable(RetryReason::Other))
            }
        }
    }

    fn outcome(&self, result: Result<(), MgmtError>) -> Outcome {
        match result {
            Ok(()) => Outcome::Sent,
            Err(MgmtError::Credentials(error)) => {
                self.credentials_failures.inc();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                if self.last_credentials_log.swap(now, Ordering::Relaxed) != now {
                    tracing::error!(
                        %error,
                        failures = self.credentials_failures.get(),
                        "no usable AWS credentials: Management API calls fail and are retried"
                    );
                }
                Outcome::Retryable(RetryReason::Other)
            }
            Err(e) => outcome_of_error(&e),
        }
    }
}

/// The outcome a lean client error means, as [`SdkDeliver`] classifies the SDK's.
pub fn outcome_of_error(error: &MgmtError) -> Outcome {
    match error {
        MgmtError::Gone => Outcome::Gone,
        MgmtError::LimitExceeded => Outcome::Throttled,
        MgmtError::Forbidden => Outcome::Forbidden,
        MgmtError::PayloadTooLarge => Outcome::PayloadTooLarge,
        MgmtError::Server(_) => Outcome::Retryable(RetryReason::Http5xx),
        MgmtError::Timeout => Outcome::Retryable(RetryReason::Timeout),
        MgmtError::Transport(_) => Outcome::Retryable(RetryReason::Network),
        MgmtError::Credentials(_) | MgmtError::InvalidRequest(_) => {
            Outcome::Retryable(RetryReason::Other)
        }
        MgmtError::Other { status, .. } => outcome_of_status(*status),
    }
}

#[async_trait]
impl Deliver for LeanDeliver {
    async fn post(&self, endpoint: &Endpoint, connection_id: &str, payload: Bytes) -> Outcome {
        let endpoint = match self.endpoint(endpoint) {
            Ok(e) => e,
            Err(outcome) => return outcome,
        };
        let result = self
            .client
            .post_to_connection(&endpoint, connection_id, payload)
            .await;
        self.outcome(result)
    }

    async fn delete(&self, endpoint: &Endpoint, connection_id: &str) -> Outcome {
        let endpoint = match self.endpoint(endpoint) {
            Ok(e) => e,
            Err(outcome) => return outcome,
        };
        let result = self
            .client
            .delete_connection(&endpoint, connection_id)
            .await;
        self.outcome(result)
    }

    fn register_metrics(&self, registry: &prometheus::Registry) {
        if let Err(error) = registry.register(Box::new(self.credentials_failures.clone())) {
            tracing::debug!(%error, "credentials failure counter not registered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lean_errors_map_like_the_sdk() {
        for (error, outcome) in [
            (MgmtError::Gone, Outcome::Gone),
            (MgmtError::LimitExceeded, Outcome::Throttled),
            (MgmtError::Forbidden, Outcome::Forbidden),
            (MgmtError::PayloadTooLarge, Outcome::PayloadTooLarge),
            (
                MgmtError::Server(502),
                Outcome::Retryable(RetryReason::Http5xx),
            ),
            (MgmtError::Timeout, Outcome::Retryable(RetryReason::Timeout)),
            (
                MgmtError::Transport("reset".into()),
                Outcome::Retryable(RetryReason::Network),
            ),
            (
                MgmtError::Credentials("none".into()),
                Outcome::Retryable(RetryReason::Other),
            ),
            (
                MgmtError::InvalidRequest("empty"),
                Outcome::Retryable(RetryReason::Other),
            ),
            (
                MgmtError::Other {
                    status: 400,
                    code: Some("BadRequestException".into()),
                },
                Outcome::Retryable(RetryReason::Other),
            ),
            (
                MgmtError::Other {
                    status: 410,
                    code: Some("SomethingNew".into()),
                },
                Outcome::Gone,
            ),
        ] {
            assert_eq!(outcome_of_error(&error), outcome, "{error:?}");
        }
    }

    #[derive(Debug)]
    struct NoCredentials;
    impl aws_credential_types::provider::ProvideCredentials for NoCredentials {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            aws_credential_types::provider::future::ProvideCredentials::ready(Err(
                aws_credential_types::provider::error::CredentialsError::not_loaded("no role"),
            ))
        }
    }

    #[tokio::test]
    async fn a_credentials_failure_is_counted_and_retryable() {
        let source = mgmt_client::CredentialsSource::from_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(NoCredentials),
        );
        let deliver = LeanDeliver::new(source, Duration::from_secs(1), 8).unwrap();
        let registry = prometheus::Registry::new();
        deliver.register_metrics(&registry);
        // Credentials come first, so nothing listens at this address and nothing needs to.
        let endpoint = Endpoint {
            url: Arc::from("http://127.0.0.1:9/prod"),
            region: Arc::from("eu-west-1"),
        };
        for _ in 0..3 {
            assert_eq!(
                deliver
                    .post(&endpoint, "abc=", Bytes::from_static(b"{}"))
                    .await,
                Outcome::Retryable(RetryReason::Other)
            );
        }
        assert_eq!(
            deliver.delete(&endpoint, "abc=").await,
            Outcome::Retryable(RetryReason::Other)
        );
        assert_eq!(deliver.credentials_failures(), 4);
        let exported = registry
            .gather()
            .iter()
            .find(|f| f.name() == CREDENTIALS_FAILURES_TOTAL)
            .map(|f| f.get_metric()[0].get_counter().get_value());
        assert_eq!(exported, Some(4.0));
    }

    #[test]
    fn a_bad_region_is_not_a_drop() {
        let deliver = LeanDeliver::new(
            mgmt_client::CredentialsSource::fixed(
                mgmt_client::SigningCredentials::new("AKID", "secret", None).unwrap(),
            ),
            Duration::from_secs(1),
            8,
        )
        .unwrap();
        let endpoint = Endpoint {
            url: Arc::from("http://127.0.0.1:9/prod"),
            region: Arc::from("Not A Region"),
        };
        assert_eq!(
            deliver.endpoint(&endpoint).unwrap_err(),
            Outcome::Retryable(RetryReason::Other)
        );
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(outcome_of_status(200), Outcome::Sent);
        assert_eq!(outcome_of_status(204), Outcome::Sent);
        assert_eq!(outcome_of_status(410), Outcome::Gone);
        assert_eq!(outcome_of_status(429), Outcome::Throttled);
        assert_eq!(outcome_of_status(403), Outcome::Forbidden);
        assert_eq!(outcome_of_status(413), Outcome::PayloadTooLarge);
        assert_eq!(
            outcome_of_status(503),
            Outcome::Retryable(RetryReason::Http5xx)
        );
        assert_eq!(
            outcome_of_status(400),
            Outcome::Retryable(RetryReason::Other)
        );
    }
}
