//! [`mgmt_client::Verifier`] accepts what the signer signed (and what `aws-sigv4` signed with an
//! extra header, as the SDK does), and refuses each kind of tampering with the right reason: a
//! changed body, path, signed header, secret or access key, a date past 15 minutes either way, a
//! missing header, a session token that is absent, wrong or unsigned, a `SignedHeaders` list that is
//! not sorted distinct lowercase names, and a query string. Each refusal names its AWS error type, and
//! Debug output never shows the secret.

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

/// `good` with its `Authorization` header rewritten by `edit`.
fn with_authorization(good: &Signed, edit: impl Fn(&str) -> String) -> Signed {
    let mut headers = good.headers.clone();
    let auth = edit(headers["authorization"].to_str().unwrap());
    headers.insert("authorization", auth.parse().unwrap());
    Signed {
        method: good.method.clone(),
        uri: good.uri.clone(),
        headers,
        body: good.body.clone(),
    }
}

#[test]
fn the_edges_of_each_refusal() {
    let verifier = Verifier::new(creds("secret", None), Some("eu-west-1".into()));
    let good = signed(&creds("secret", None), at(NOW));
    // Exactly 15 minutes away either way is still on time; a second more is not.
    assert_eq!(verify(&verifier, &good, NOW + 15 * 60), Ok(()));
    assert_eq!(verify(&verifier, &good, NOW - 15 * 60), Ok(()));
    assert_eq!(
        verify(&verifier, &good, NOW + 15 * 60 + 1),
        Err(VerifyError::Stale {
            skew_secs: -15 * 60 - 1
        })
    );

    // SignedHeaders must be distinct lowercase names in order.
    let listed = "SignedHeaders=content-length;content-type;host;x-amz-date";
    for bad in [
        "SignedHeaders=content-type;content-length;host;x-amz-date",
        "SignedHeaders=content-length;content-length;content-type;host;x-amz-date",
        "SignedHeaders=content-length;;content-type;host;x-amz-date",
        "SignedHeaders=Content-length;content-type;host;x-amz-date",
    ] {
        let request = with_authorization(&good, |auth| auth.replace(listed, bad));
        assert_eq!(
            verify(&verifier, &request, NOW),
            Err(VerifyError::Malformed(
                "SignedHeaders is not sorted lowercase names"
            )),
            "{bad}"
        );
    }

    // The Management API has no query parameters.
    let mut query = signed(&creds("secret", None), at(NOW));
    query.uri = format!("{PATH}?x=1").parse().unwrap();
    assert_eq!(
        verify(&verifier, &query, NOW),
        Err(VerifyError::Malformed("query strings are not supported"))
    );

    // A session token sent but left out of the signature is refused as a token problem.
    let token = "FwoGZXIvYXdzEBY+token/=";
    let with_token = Verifier::new(creds("secret", Some(token)), None);
    let unsigned = with_authorization(&signed(&creds("secret", Some(token)), at(NOW)), |auth| {
        auth.replace(";x-amz-security-token", "")
    });
    assert!(unsigned.headers.contains_key("x-amz-security-token"));
    assert_eq!(
        verify(&with_token, &unsigned, NOW),
        Err(VerifyError::SessionToken)
    );
}

/// Each refusal maps to the `x-amzn-ErrorType` API Gateway answers it with.
#[test]
fn refusals_carry_aws_error_types() {
    for (error, expected) in [
        (
            VerifyError::MissingHeader("x-amz-date".into()),
            "IncompleteSignatureException",
        ),
        (
            VerifyError::Malformed("no Signature"),
            "IncompleteSignatureException",
        ),
        (
            VerifyError::UnsignedHeader("host"),
            "IncompleteSignatureException",
        ),
        (VerifyError::UnknownAccessKey, "UnrecognizedClientException"),
        (VerifyError::SessionToken, "UnrecognizedClientException"),
        (
            VerifyError::WrongScope("region"),
            "InvalidSignatureException",
        ),
        (
            VerifyError::Stale { skew_secs: 901 },
            "InvalidSignatureException",
        ),
        (VerifyError::BadSignature, "InvalidSignatureException"),
    ] {
        assert_eq!(error.aws_error_type(), expected, "{error:?}");
    }
}

/// Debug output names the parts without the secret.
#[test]
fn debug_output_never_shows_the_secret() {
    let verifier = Verifier::new(creds("very-secret-key", None), Some("eu-west-1".into()));
    let shown = format!("{verifier:?}");
    assert!(shown.starts_with("Verifier"), "{shown}");
    assert!(shown.contains("eu-west-1"), "{shown}");
    assert!(!shown.contains("very-secret-key"), "{shown}");

    let signer = Signer::new();
    assert_eq!(format!("{signer:?}"), "Signer { key_derivations: 0 }");
    signer.sign(
        &creds("very-secret-key", None),
        "eu-west-1",
        &SigningRequest {
            method: "GET",
            host: HOST,
            path: PATH,
            content_type: None,
            body: b"",
        },
        at(NOW),
    );
    assert_eq!(format!("{signer:?}"), "Signer { key_derivations: 1 }");
}

#[test]
fn region_names_are_lowercase_letters_digits_and_dashes() {
    use mgmt_client::signer::is_valid_region;
    for good in ["eu-west-1", "us-gov-west-1", "local"] {
        assert!(is_valid_region(good), "{good}");
    }
    for bad in ["", "EU-west-1", "eu west 1", "eu_west_1", "eu-west-1\n"] {
        assert!(!is_valid_region(bad), "{bad:?}");
    }
}
