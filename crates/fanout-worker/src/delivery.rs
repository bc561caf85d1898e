//! Delivery: one Management API call to one connection, behind the [`Deliver`] trait so that planning,
//! retries and accounting never depend on which HTTP client makes the call.
//!
//! Every call ends in an [`Outcome`]; errors are values, classified once here. [`SdkDeliver`] is the
//! reference implementation on `aws-sdk-apigatewaymanagement`: one client per Management API endpoint,
//! all sharing one HTTP connection pool, the SDK's own retries off (`RetryConfig::disabled()`, so the
//! worker sees and owns every 429), and an outer `tokio::time::timeout` per call, because SDK calls to
//! `execute-api` have been seen to hang past their configured timeouts.

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::error::SdkError;
use aws_sdk_apigatewaymanagement::operation::delete_connection::DeleteConnectionError;
use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::retry::RetryConfig;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

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
