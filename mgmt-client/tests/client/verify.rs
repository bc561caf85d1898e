//! [`mgmt_client::Verifier`] accepts what the signer signed (and what `aws-sigv4` signed with an
//! extra header, as the SDK does), and refuses each kind of tampering with the right reason: a
//! changed body, path, signed header, secret or access key, a date past 15 minutes either way, a
//! missing header, and a session token that is absent or wrong.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_smithy_runtime_api::client::identity::Identity;
use http::{HeaderMap, HeaderValue, Method, Uri};
use mgmt_client::signer::{Signer, SigningRequest};
use mgmt_client::{SigningCredentials, Verifier, VerifyError};

const HOST: &str = "abc.execute-api.eu-west-1.amazonaws.com";
const PATH: &str = "/prod/@connections/a%2Bb%2Fc%3D";

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

const NOW: u64 = 1_795_389_762;

struct Signed {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Vec<u8>,
}

fn signed(credentials: &SigningCredentials, time: SystemTime) -> Signed {
    let body = b"{\"type\":\"chat_message\"}".to_vec();
    let sig = Signer::new().sign(
        credentials,
        "eu-west-1",
        &SigningRequest {
            method: "POST",
            host: HOST,
            path: PATH,
            content_type: Some("application/octet-stream"),
            body: &body,
        },
        time,
    );
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static(HOST));
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert("content-length", HeaderValue::from(body.len()));
    headers.insert("x-amz-date", sig.x_amz_date);
    headers.insert("authorization", sig.authorization);
    headers.insert(
        "user-agent",
        HeaderValue::from_static("anything: not signed"),
    );
    if let Some(token) = sig.security_token {
        headers.insert("x-amz-security-token", token);
    }
    Signed {
        method: Method::POST,
        uri: PATH.parse().unwrap(),
        headers,
        body,
    }
}

fn creds(secret: &str, token: Option<&str>) -> SigningCredentials {
    SigningCredentials::new("AKIDEXAMPLE", secret, token.map(str::to_owned)).unwrap()
}

fn verify(verifier: &Verifier, request: &Signed, now: u64) -> Result<(), VerifyError> {
    verifier.verify(
        &request.method,
        &request.uri,
        &request.headers,
        &request.body,
        at(now),
    )
}

#[test]
fn accepts_good_requests_and_names_each_refusal() {
    let verifier = Verifier::new(creds("secret", None), Some("eu-west-1".into()));
    let good = signed(&creds("secret", None), at(NOW));
    assert_eq!(verify(&verifier, &good, NOW), Ok(()));
    assert_eq!(verify(&verifier, &good, NOW + 14 * 60), Ok(()));
    assert_eq!(verify(&verifier, &good, NOW - 14 * 60), Ok(()));

    let mut tampered = signed(&creds("secret", None), at(NOW));
    tampered.body.push(b' ');
    assert_eq!(
        verify(&verifier, &tampered, NOW),
        Err(VerifyError::BadSignature)
    );

    let mut tampered = signed(&creds("secret", None), at(NOW));
    tampered.uri = "/prod/@connections/a%2Bb%2Fc%3E".parse().unwrap();
    assert_eq!(
        verify(&verifier, &tampered, NOW),
        Err(VerifyError::BadSignature)
    );

    let mut tampered = signed(&creds("secret", None), at(NOW));
    tampered
        .headers
        .insert("content-type", HeaderValue::from_static("text/plain"));
    assert_eq!(
        verify(&verifier, &tampered, NOW),
        Err(VerifyError::BadSignature)
    );

    let mut tampered = signed(&creds("secret", None), at(NOW));
    tampered.method = Method::DELETE;
    assert_eq!(
        verify(&verifier, &tampered, NOW),
        Err(VerifyError::BadSignature)
    );

    let wrong_secret = signed(&creds("not the secret", None), at(NOW));
    assert_eq!(
        verify(&verifier, &wrong_secret, NOW),
        Err(VerifyError::BadSignature)
    );

    let other_key = {
        let mut r = signed(&creds("secret", None), at(NOW));
        let auth = r.headers["authorization"]
            .to_str()
            .unwrap()
            .replace("AKIDEXAMPLE", "AKIDOTHER");
        r.headers.insert("authorization", auth.parse().unwrap());
        r
    };
    assert_eq!(
        verify(&verifier, &other_key, NOW),
        Err(VerifyError::UnknownAccessKey)
    );

    assert_eq!(
        verify(&verifier, &good, NOW + 16 * 60),
        Err(VerifyError::Stale {
            skew_secs: -16 * 60
        })
    );
    assert_eq!(
        verify(&verifier, &good, NOW - 16 * 60),
        Err(VerifyError::Stale { skew_secs: 16 * 60 })
    );

    // A date changed after signing (to dodge staleness) no longer matches the signature.
    let mut redated = signed(&creds("secret", None), at(NOW - 3600));
    redated
        .headers
        .insert("x-amz-date", HeaderValue::from_static("20261122T232242Z"));
    assert_eq!(
        verify(&verifier, &redated, NOW),
        Err(VerifyError::BadSignature)
    );

    for header in ["authorization", "x-amz-date", "content-length"] {
        let mut missing = signed(&creds("secret", None), at(NOW));
        missing.headers.remove(header);
        assert_eq!(
            verify(&verifier, &missing, NOW),
            Err(VerifyError::MissingHeader(header.into())),
            "{header}"
        );
    }

    let other_region = Verifier::new(creds("secret", None), Some("us-east-1".into()));
    assert_eq!(
        verify(&other_region, &good, NOW),
        Err(VerifyError::WrongScope("region"))
    );
}

#[test]
fn session_tokens_are_required_when_the_credentials_have_one() {
    let verifier = Verifier::new(creds("secret", Some("FwoGZXIvYXdzEBY+token/=")), None);
    let with_token = signed(&creds("secret", Some("FwoGZXIvYXdzEBY+token/=")), at(NOW));
    assert_eq!(verify(&verifier, &with_token, NOW), Ok(()));

    let without = signed(&creds("secret", None), at(NOW));
    assert_eq!(
        verify(&verifier, &without, NOW),
        Err(VerifyError::SessionToken)
    );

    let other = signed(&creds("secret", Some("another-token")), at(NOW));
    assert_eq!(
        verify(&verifier, &other, NOW),
        Err(VerifyError::SessionToken)
    );
}

#[test]
fn accepts_what_aws_sigv4_signs_with_extra_headers() {
    // The SDK also signs x-amz-user-agent; the verifier rebuilds whatever SignedHeaders lists.
    let identity: Identity = Credentials::new("AKIDEXAMPLE", "secret", None, None, "t").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("eu-west-1")
        .name("execute-api")
        .time(at(NOW))
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let body = b"hello";
    let request = SignableRequest::new(
        "POST",
        format!("https://{HOST}{PATH}"),
        [
            ("content-length", "5"),
            ("content-type", "application/octet-stream"),
            ("x-amz-user-agent", "aws-sdk-rust/1.7.0  ua/2.1"),
        ]
        .into_iter(),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(request, &params).unwrap().into_parts();
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static(HOST));
    headers.insert("content-length", HeaderValue::from_static("5"));
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        "x-amz-user-agent",
        HeaderValue::from_static("aws-sdk-rust/1.7.0  ua/2.1"),
    );
    for (name, value) in instructions.headers() {
        headers.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let verifier = Verifier::new(creds("secret", None), Some("eu-west-1".into()));
    let uri: Uri = PATH.parse().unwrap();
    assert_eq!(
        verifier.verify(&Method::POST, &uri, &headers, body, at(NOW)),
        Ok(())
    );
    headers.insert("x-amz-user-agent", HeaderValue::from_static("changed"));
    assert_eq!(
        verifier.verify(&Method::POST, &uri, &headers, body, at(NOW)),
        Err(VerifyError::BadSignature)
    );
}
