//! The client against a stand-in Management API on a real socket (`support`), next to
//! `aws-sdk-apigatewaymanagement` (retries off) on the same server: every answer (200, 410
//! `GoneException`, 429 `LimitExceededException`, 403 `ForbiddenException`, a bare 413 and 500, a
//! body-only namespaced `__type`, a hang past the timeout) is classified the same by both, and the
//! server verifies every signature, so a signing bug fails here, not in production.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::{ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
use aws_sdk_apigatewaymanagement::config::retry::RetryConfig;
use aws_sdk_apigatewaymanagement::config::timeout::TimeoutConfig;
use aws_sdk_apigatewaymanagement::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_apigatewaymanagement::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_apigatewaymanagement::primitives::Blob;
use bytes::Bytes;
use mgmt_client::{ClientOptions, CredentialsSource, MgmtClient, MgmtError};

const TIMEOUT: Duration = Duration::from_millis(700);

fn lean_client(token: Option<&str>) -> MgmtClient {
    let options = ClientOptions {
        call_timeout: TIMEOUT,
        ..ClientOptions::default()
    };
    MgmtClient::new(
        options,
        CredentialsSource::fixed(crate::support::credentials(token)),
    )
    .unwrap()
}

fn sdk_client(endpoint: &str, token: Option<&str>) -> aws_sdk_apigatewaymanagement::Client {
    let config = aws_sdk_apigatewaymanagement::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            token.map(str::to_owned),
            None,
            "test",
        ))
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::disabled())
        .timeout_config(TimeoutConfig::builder().operation_timeout(TIMEOUT).build())
        .build();
    aws_sdk_apigatewaymanagement::Client::from_conf(config)
}

/// The SDK's outcome in this crate's terms: the modelled variants by the SDK's own predicates,
/// otherwise the SDK's error code (its reading of the response) and the status.
fn from_sdk<E>(
    result: Result<(), SdkError<E, aws_smithy_runtime_api::http::Response>>,
    modelled: impl Fn(&E) -> Option<MgmtError>,
) -> Result<(), MgmtError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let error = match result {
        Ok(()) => return Ok(()),
        Err(error) => error,
    };
    Err(match &error {
        SdkError::TimeoutError(_) => MgmtError::Timeout,
        SdkError::DispatchFailure(_) => MgmtError::Transport(format!("{error:?}")),
        SdkError::ServiceError(context) => {
            if let Some(kind) = modelled(context.err()) {
                kind
            } else {
                let status = context.raw().status().as_u16();
                match context.err().code() {
                    Some(code) if status >= 500 => {
                        let _ = code;
                        MgmtError::Server(status)
                    }
                    Some(code) => MgmtError::Other {
                        status,
                        code: Some(code.to_owned()),
                    },
                    None => match status {
                        410 => MgmtError::Gone,
                        429 => MgmtError::LimitExceeded,
                        403 => MgmtError::Forbidden,
                        413 => MgmtError::PayloadTooLarge,
                        s if s >= 500 => MgmtError::Server(s),
                        s => MgmtError::Other {
                            status: s,
                            code: None,
                        },
                    },
                }
            }
        }
        other => MgmtError::Other {
            status: 0,
            code: Some(format!("{other:?}")),
        },
    })
}

async fn sdk_post(
    client: &aws_sdk_apigatewaymanagement::Client,
    id: &str,
    body: &[u8],
) -> Result<(), MgmtError> {
    use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError as E;
    let result = client
        .post_to_connection()
        .connection_id(id)
        .data(Blob::new(body))
        .send()
        .await
        .map(|_| ());
    from_sdk(result, |e| match e {
        E::GoneException(_) => Some(MgmtError::Gone),
        E::LimitExceededException(_) => Some(MgmtError::LimitExceeded),
        E::ForbiddenException(_) => Some(MgmtError::Forbidden),
        E::PayloadTooLargeException(_) => Some(MgmtError::PayloadTooLarge),
        _ => None,
    })
}

#[tokio::test]
async fn post_to_connection_is_classified_like_the_sdk_and_every_signature_verifies() {
    let server = crate::support::serve(None, None).await;
    let base = format!("http://{}/prod", server.addr);
    let lean = lean_client(None);
    let endpoint = lean.endpoint(&base, REGION).unwrap();
    let sdk = sdk_client(&base, None);

    let cases: &[(&str, Result<(), MgmtError>)] = &[
        ("ok", Ok(())),
        ("L0SM9cOFvHcCIhw=", Ok(())),
        ("a+b/c=d-e_f", Ok(())),
        ("gone", Err(MgmtError::Gone)),
        ("limit", Err(MgmtError::LimitExceeded)),
        ("forbidden", Err(MgmtError::Forbidden)),
        ("too-large", Err(MgmtError::PayloadTooLarge)),
        ("boom", Err(MgmtError::Server(500))),
        ("typed", Err(MgmtError::LimitExceeded)),
        ("hang", Err(MgmtError::Timeout)),
    ];
    for (id, expected) in cases {
        let body = Bytes::from(format!("{{\"to\":\"{id}\"}}"));
        let lean_result = lean.post_to_connection(&endpoint, id, body.clone()).await;
        let sdk_result = sdk_post(&sdk, id, &body).await;
        assert_eq!(&lean_result, expected, "lean client, connection {id}");
        assert_eq!(&sdk_result, expected, "SDK, connection {id}");
    }
    // Both sent ten requests; the server checked every signature and refused none.
    assert_eq!(server.state.refused.load(Ordering::SeqCst), 0);
    assert_eq!(
        server.state.verified.load(Ordering::SeqCst),
        2 * cases.len()
    );

    // A 128 KiB body is signed and delivered whole.
    let big = Bytes::from(vec![b'x'; 128 * 1024]);
    assert_eq!(lean.post_to_connection(&endpoint, "ok", big).await, Ok(()));
    assert_eq!(
        server.state.last_body_len.load(Ordering::SeqCst),
        128 * 1024
    );
    // The connection id reaches the server encoded as the SDK encodes it.
    lean.post_to_connection(&endpoint, "a+b/c=", Bytes::new())
        .await
        .unwrap();
    assert_eq!(
        server.state.last_path.lock().unwrap().as_deref(),
        Some("/prod/@connections/a%2Bb%2Fc%3D")
    );
}

#[tokio::test]
async fn get_and_delete_connection_agree_with_the_sdk() {
    let server = crate::support::serve(Some("session/token+="), None).await;
    let base = format!("http://{}/prod/", server.addr);
    let lean = lean_client(Some("session/token+="));
    let endpoint = lean.endpoint(&base, REGION).unwrap();
    let sdk = sdk_client(&base, Some("session/token+="));

    let info = lean.get_connection(&endpoint, "abc=").await.unwrap();
    let sdk_info = sdk
        .get_connection()
        .connection_id("abc=")
        .send()
        .await
        .unwrap();
    assert_eq!(info.identity.source_ip.as_deref(), Some("192.0.2.7"));
    assert_eq!(
        info.identity.source_ip.as_deref(),
        sdk_info.identity().and_then(|i| i.source_ip())
    );
    assert_eq!(info.connected_at.as_deref(), Some("2026-11-22T23:22:42Z"));

    assert_eq!(
        lean.get_connection(&endpoint, "gone").await,
        Err(MgmtError::Gone)
    );
    let sdk_gone = sdk
        .get_connection()
        .connection_id("gone")
        .send()
        .await
        .unwrap_err();
    assert!(
        sdk_gone
            .as_service_error()
            .is_some_and(|e| e.is_gone_exception())
    );

    assert_eq!(lean.delete_connection(&endpoint, "abc=").await, Ok(()));
    sdk.delete_connection()
        .connection_id("abc=")
        .send()
        .await
        .unwrap();
    assert_eq!(
        lean.delete_connection(&endpoint, "forbidden").await,
        Err(MgmtError::Forbidden)
    );

    assert_eq!(server.state.refused.load(Ordering::SeqCst), 0);
    assert_eq!(server.state.verified.load(Ordering::SeqCst), 7);
}

#[tokio::test]
async fn a_signing_mistake_is_refused_by_the_server() {
    // The server knows a session token the client does not send: every call is refused, which
    // shows the verification in the other tests is not a formality.
    let server = crate::support::serve(Some("expected-token"), None).await;
    let lean = lean_client(None);
    let endpoint = lean
        .endpoint(&format!("http://{}/prod", server.addr), REGION)
        .unwrap();
    assert_eq!(
        lean.post_to_connection(&endpoint, "ok", Bytes::from_static(b"hi"))
            .await,
        Err(MgmtError::Forbidden)
    );
    assert_eq!(server.state.refused.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn transport_and_credential_failures_are_typed() {
    // A port with nothing listening.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let lean = lean_client(None);
    let endpoint = lean
        .endpoint(&format!("http://{addr}/prod"), REGION)
        .unwrap();
    let result = lean.post_to_connection(&endpoint, "x", Bytes::new()).await;
    assert!(matches!(result, Err(MgmtError::Transport(_))), "{result:?}");
    assert_eq!(
        lean.post_to_connection(&endpoint, "", Bytes::new()).await,
        Err(MgmtError::InvalidRequest("connection id is empty"))
    );

    // A provider that fails: a typed, counted error, and the provider is not hammered.
    #[derive(Debug)]
    struct Failing;
    impl aws_credential_types::provider::ProvideCredentials for Failing {
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
    let source = CredentialsSource::from_provider(
        aws_credential_types::provider::SharedCredentialsProvider::new(Failing),
    );
    let client = MgmtClient::new(ClientOptions::default(), source.clone()).unwrap();
    let endpoint = client
        .endpoint(&format!("http://{addr}/prod"), REGION)
        .unwrap();
    for _ in 0..3 {
        let result = client
            .post_to_connection(&endpoint, "x", Bytes::new())
            .await;
        assert!(
            matches!(&result, Err(MgmtError::Credentials(m)) if m.contains("no role")),
            "{result:?}"
        );
    }
    assert_eq!(
        source.failures(),
        1,
        "one load, then the failure is remembered for a second"
    );
}

#[tokio::test]
async fn credentials_are_cached_and_refreshed_before_they_expire() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;
    use std::time::SystemTime;

    #[derive(Debug)]
    struct Counting(Arc<AtomicU64>, Duration);
    impl aws_credential_types::provider::ProvideCredentials for Counting {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            aws_credential_types::provider::future::ProvideCredentials::ready(Ok(Credentials::new(
                "AKID",
                format!("secret-{n}"),
                Some(format!("token-{n}")),
                Some(SystemTime::now() + self.1),
                "counting",
            )))
        }
    }
    let loads = Arc::new(AtomicU64::new(0));
    // Valid for an hour: loaded once, then served from the cache.
    let source = CredentialsSource::from_provider(
        aws_credential_types::provider::SharedCredentialsProvider::new(Counting(
            loads.clone(),
            Duration::from_secs(3600),
        )),
    );
    for _ in 0..5 {
        let credentials = source.get().await.unwrap();
        assert_eq!(credentials.session_token().unwrap(), "token-0");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);

    // Expiring within the refresh buffer (5 minutes): every get refreshes.
    let loads = Arc::new(AtomicU64::new(0));
    let source = CredentialsSource::from_provider(
        aws_credential_types::provider::SharedCredentialsProvider::new(Counting(
            loads.clone(),
            Duration::from_secs(120),
        )),
    );
    assert_eq!(
        source.get().await.unwrap().session_token().unwrap(),
        "token-0"
    );
    assert_eq!(
        source.get().await.unwrap().session_token().unwrap(),
        "token-1"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}
