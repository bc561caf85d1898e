//! Where signing credentials come from. [`CredentialsSource`] wraps any `aws-config` credentials
//! provider (by default the default chain: environment, profile, web identity for EKS, ECS task role,
//! instance metadata) behind a cache that hands out an immutable [`SigningCredentials`] snapshot and
//! refreshes it before it expires: one refresh at a time, the old snapshot kept while it is still
//! valid if a refresh fails, and a failure that leaves no valid credentials returned as
//! [`CredentialsError`] (logged at ERROR, counted in [`CredentialsSource::failures`]), never swallowed.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use http::HeaderValue;

/// Refresh this long before the credentials' expiry (the SDK's identity cache uses 5 minutes too).
pub const DEFAULT_REFRESH_BUFFER: Duration = Duration::from_secs(300);
/// How long one call to the provider may take.
pub const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed load, calls within this long get the failure without asking the provider again.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why no credentials could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialsError {
    #[error("credentials provider failed: {0}")]
    Provider(String),
    #[error("credentials provider did not answer within {0:?}")]
    Timeout(Duration),
    #[error("credentials unusable: {0}")]
    Invalid(&'static str),
}

/// One set of credentials as the signer needs them: validated once, so signing never re-checks.
pub struct SigningCredentials {
    access_key_id: Box<str>,
    secret_access_key: Box<str>,
    /// `x-amz-security-token`, marked sensitive so it never shows in a header dump.
    session_token: Option<HeaderValue>,
    expiry: Option<SystemTime>,
}

impl SigningCredentials {
    /// Static credentials (tests, the emulator). The session token, if any, is signed and sent.
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Result<Self, CredentialsError> {
        Self::build(
            access_key_id.into(),
            secret_access_key.into(),
            session_token,
            None,
        )
    }

    /// From the SDK's credentials type, keeping its expiry.
    pub fn from_sdk(credentials: &Credentials) -> Result<Self, CredentialsError> {
        Self::build(
            credentials.access_key_id().to_owned(),
            credentials.secret_access_key().to_owned(),
            credentials.session_token().map(str::to_owned),
            credentials.expiry(),
        )
    }

    fn build(
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
        expiry: Option<SystemTime>,
    ) -> Result<Self, CredentialsError> {
        // The access key id goes verbatim into the Authorization header.
        if access_key_id.is_empty()
            || !access_key_id
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b',')
        {
            return Err(CredentialsError::Invalid(
                "access key id is empty or has characters a header cannot carry",
            ));
        }
        if secret_access_key.is_empty() {
            return Err(CredentialsError::Invalid("secret access key is empty"));
        }
        let session_token = match session_token {
            None => None,
            Some(token) => {
                // Canonical header values are space-trimmed; a token with spaces would sign differently.
                if token.is_empty() || token.bytes().any(|b| !b.is_ascii_graphic()) {
                    return Err(CredentialsError::Invalid(
                        "session token is empty or not printable ASCII",
                    ));
                }
                let mut value = HeaderValue::try_from(token).map_err(|_| {
                    CredentialsError::Invalid("session token is not a header value")
                })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(SigningCredentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token,
            expiry,
        })
    }

    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    pub(crate) fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    pub fn session_token(&self) -> Option<&HeaderValue> {
        self.session_token.as_ref()
    }

    pub fn expiry(&self) -> Option<SystemTime> {
        self.expiry
    }

    fn fresh_at(&self, now: SystemTime, buffer: Duration) -> bool {
        self.expiry.is_none_or(|expiry| now + buffer < expiry)
    }

    fn valid_at(&self, now: SystemTime) -> bool {
        self.expiry.is_none_or(|expiry| now < expiry)
    }
}

impl fmt::Debug for SigningCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "** redacted **"),
            )
            .field("expiry", &self.expiry)
            .finish()
    }
}

struct Cached {
    current: Option<Arc<SigningCredentials>>,
    last_failure: Option<(Instant, CredentialsError)>,
}

/// A cached credentials provider; cheap to clone, one cache shared by the clones.
#[derive(Clone)]
pub struct CredentialsSource {
    inner: Arc<SourceInner>,
}

struct SourceInner {
    provider: Option<SharedCredentialsProvider>,
    cached: RwLock<Cached>,
    refresh: tokio::sync::Mutex<()>,
    refresh_buffer: Duration,
    load_timeout: Duration,
    retry_after: Duration,
    loads: AtomicU64,
    failures: AtomicU64,
}

impl fmt::Debug for CredentialsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialsSource")
            .field("static", &self.inner.provider.is_none())
            .field("loads", &self.loads())
            .field("failures", &self.failures())
            .finish()
    }
}

impl CredentialsSource {
    /// `aws-config`'s default provider chain for `region` (environment, profile, web identity,
    /// ECS container credentials, instance metadata).
    pub async fn default_chain(region: &str) -> Self {
        let chain = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
            .region(aws_config::Region::new(region.to_owned()))
            .build()
            .await;
        Self::from_provider(SharedCredentialsProvider::new(chain))
    }

    /// Any provider, cached with the default refresh buffer and timeouts.
    pub fn from_provider(provider: SharedCredentialsProvider) -> Self {
        Self::with_settings(
            Some(provider),
            None,
            DEFAULT_REFRESH_BUFFER,
            DEFAULT_LOAD_TIMEOUT,
            DEFAULT_RETRY_AFTER,
        )
    }

    /// A provider with explicit refresh buffer, load timeout and retry pause.
    pub fn from_provider_with(
        provider: SharedCredentialsProvider,
        refresh_buffer: Duration,
        load_timeout: Duration,
        retry_after: Duration,
    ) -> Self {
        Self::with_settings(
            Some(provider),
            None,
            refresh_buffer,
            load_timeout,
            retry_after,
        )
    }

    /// Fixed credentials that never expire and are never refreshed.
    pub fn fixed(credentials: SigningCredentials) -> Self {
        Self::with_settings(
            None,
            Some(Arc::new(credentials)),
            DEFAULT_REFRESH_BUFFER,
            DEFAULT_LOAD_TIMEOUT,
            DEFAULT_RETRY_AFTER,
        )
    }

    fn with_settings(
        provider: Option<SharedCredentialsProvider>,
        current: Option<Arc<SigningCredentials>>,
        refresh_buffer: Duration,
        load_timeout: Duration,
        retry_after: Duration,
    ) -> Self {
        CredentialsSource {
            inner: Arc::new(SourceInner {
                provider,
                cached: RwLock::new(Cached {
                    current,
                    last_failure: None,
                }),
                refresh: tokio::sync::Mutex::new(()),
                refresh_buffer,
                load_timeout,
                retry_after,
                loads: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
        }
    }

    /// Calls made to the underlying provider.
    pub fn loads(&self) -> u64 {
        self.inner.loads.load(Ordering::Relaxed)
    }

    /// Loads that failed.
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    fn read_cached(
        &self,
    ) -> (
        Option<Arc<SigningCredentials>>,
        Option<(Instant, CredentialsError)>,
    ) {
        let cached = match self.inner.cached.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        (cached.current.clone(), cached.last_failure.clone())
    }

    /// Credentials to sign with now: the cached snapshot while it is fresh; otherwise a refresh.
    pub async fn get(&self) -> Result<Arc<SigningCredentials>, CredentialsError> {
        let now = SystemTime::now();
        let (current, _) = self.read_cached();
        if let Some(current) = &current
            && current.fresh_at(now, self.inner.refresh_buffer)
        {
            return Ok(current.clone());
        }
        let Some(provider) = &self.inner.provider else {
            return current.ok_or(CredentialsError::Invalid("no credentials configured"));
        };

        let _refreshing = self.inner.refresh.lock().await;
        // Another caller may have refreshed (or failed) while this one waited.
        let now = SystemTime::now();
        let (current, last_failure) = self.read_cached();
        if let Some(current) = &current
            && current.fresh_at(now, self.inner.refresh_buffer)
        {
            return Ok(current.clone());
        }
        if let Some((at, error)) = last_failure
            && at.elapsed() < self.inner.retry_after
        {
            return match current {
                Some(current) if current.valid_at(now) => Ok(current),
                _ => Err(error),
            };
        }

        self.inner.loads.fetch_add(1, Ordering::Relaxed);
        let loaded =
            match tokio::time::timeout(self.inner.load_timeout, provider.provide_credentials())
                .await
            {
                Err(_) => Err(CredentialsError::Timeout(self.inner.load_timeout)),
                Ok(Err(error)) => Err(CredentialsError::Provider(error_chain(&error))),
                Ok(Ok(credentials)) => SigningCredentials::from_sdk(&credentials),
            };
        let mut cached = match self.inner.cached.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match loaded {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                tracing::debug!(expiry = ?fresh.expiry(), "credentials loaded");
                cached.current = Some(fresh.clone());
                cached.last_failure = None;
                Ok(fresh)
            }
            Err(error) => {
                self.inner.failures.fetch_add(1, Ordering::Relaxed);
                cached.last_failure = Some((Instant::now(), error.clone()));
                match &cached.current {
                    Some(current) if current.valid_at(now) => {
                        tracing::warn!(%error, "credentials refresh failed; signing with the current ones until they expire");
                        Ok(current.clone())
                    }
                    _ => {
                        tracing::error!(%error, "no valid AWS credentials: Management API calls fail until the provider recovers");
                        Err(error)
                    }
                }
            }
        }
    }
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
