//! [`Endpoint`]: one Management API base URL (`https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`,
//! a custom domain with its base path, or the local emulator over plain http) with everything a call
//! needs precomputed: scheme and authority with any default port dropped (so the `Host` sent,
//! or HTTP/2's `:authority`, is exactly the host that was signed), the base path without a trailing
//! slash, the signing region, and the semaphore that bounds calls in flight to it (unless the caller
//! bounds them itself: [`crate::ClientOptions::caller_bounds_in_flight`]).

use std::fmt;
use std::sync::Arc;

use http::uri::{Authority, Scheme};
use tokio::sync::Semaphore;

use crate::signer::is_valid_region;

/// Why an endpoint could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint URL {0:?} is not an absolute http or https URL")]
    NotAbsolute(String),
    #[error("endpoint URL {0:?} must not have a query or fragment")]
    HasQuery(String),
    #[error("region {0:?} is not an AWS region name")]
    Region(String),
}

/// A Management API endpoint; cheap to clone. Get one from [`crate::MgmtClient::endpoint`] so that
/// clones share the bound on calls in flight.
#[derive(Clone)]
pub struct Endpoint {
    pub(crate) inner: Arc<EndpointInner>,
}

pub(crate) struct EndpointInner {
    pub(crate) url: String,
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    /// The authority as signed (and as hyper sends it): no default port.
    pub(crate) host: String,
    /// `host` as the `Host` header sent with every request (HTTP/1.1; the same as HTTP/2's
    /// `:authority`), made once rather than formatted by hyper-util for each request.
    pub(crate) host_header: http::HeaderValue,
    /// Empty, or `/stage` (no trailing slash).
    pub(crate) base_path: String,
    pub(crate) region: String,
    /// Bounds the calls in flight, unless the caller bounds them itself.
    pub(crate) permits: Option<Semaphore>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.inner.url)
            .field("region", &self.inner.region)
            .finish()
    }
}

impl Endpoint {
    /// The endpoint's URL as normalized (no default port, no trailing slash).
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub fn region(&self) -> &str {
        &self.inner.region
    }

    pub(crate) fn parse(
        url: &str,
        region: &str,
        max_in_flight: Option<usize>,
    ) -> Result<Self, EndpointError> {
        if !is_valid_region(region) {
            return Err(EndpointError::Region(region.to_owned()));
        }
        let uri: http::Uri = url
            .parse()
            .map_err(|_| EndpointError::NotAbsolute(url.to_owned()))?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(EndpointError::NotAbsolute(url.to_owned()));
        };
        if *scheme != Scheme::HTTP && *scheme != Scheme::HTTPS {
            return Err(EndpointError::NotAbsolute(url.to_owned()));
        }
        if uri.query().is_some() || url.contains('#') || authority.as_str().contains('@') {
            return Err(EndpointError::HasQuery(url.to_owned()));
        }
        let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = match authority.port_u16() {
            Some(port) if port == default_port => authority.host().to_owned(),
            _ => authority.as_str().to_owned(),
        };
        let authority: Authority = host
            .parse()
            .map_err(|_| EndpointError::NotAbsolute(url.to_owned()))?;
        let base_path = uri.path().trim_end_matches('/').to_owned();
        let host_header = http::HeaderValue::from_str(&host)
            .map_err(|_| EndpointError::NotAbsolute(url.to_owned()))?;
        Ok(Endpoint {
            inner: Arc::new(EndpointInner {
                url: format!("{scheme}://{host}{base_path}"),
                scheme: scheme.clone(),
                authority,
                host,
                host_header,
                base_path,
                region: region.to_owned(),
                permits: max_in_flight.map(|n| Semaphore::new(n.max(1))),
            }),
        })
    }
}
