//! Checking a SigV4 signature the way API Gateway does, for an emulator or a test server: parse the
//! `Authorization` header, require `host` and `x-amz-date` to be signed, check the credential
//! scope (access key, date, region, `execute-api`) and the clock (15 minutes either way), rebuild
//! the canonical request from the headers the client says it signed, recompute the signature with
//! the known secret, and compare in constant time. Works for any header set, so requests from the
//! AWS SDK (which also signs `x-amz-user-agent`) verify as well as this crate's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::{digest, hmac};
use http::{HeaderMap, Method, Uri};
use subtle::ConstantTimeEq;

use super::canonical::{AmzDate, canonical_uri, hex32, push_trimmed};
use super::key::KeyCache;
use super::{SERVICE, write_string_to_sign};
use crate::credentials::SigningCredentials;

/// How far a request's `x-amz-date` may be from the verifier's clock (AWS allows 15 minutes).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Why a request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(String),
    #[error("malformed signature: {0}")]
    Malformed(&'static str),
    #[error("header {0} must be signed")]
    UnsignedHeader(&'static str),
    #[error("unknown access key id")]
    UnknownAccessKey,
    #[error("security token missing or wrong")]
    SessionToken,
    #[error("credential scope does not match: {0}")]
    WrongScope(&'static str),
    #[error("request time is {skew_secs} s away from the server's clock (more than 15 minutes)")]
    Stale { skew_secs: i64 },
    #[error("signature does not match")]
    BadSignature,
}

impl VerifyError {
    /// The `x-amzn-ErrorType` AWS answers with for this failure (all with status 403).
    pub fn aws_error_type(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_)
            | VerifyError::Malformed(_)
            | VerifyError::UnsignedHeader(_) => "IncompleteSignatureException",
            VerifyError::UnknownAccessKey | VerifyError::SessionToken => {
                "UnrecognizedClientException"
            }
            VerifyError::WrongScope(_) | VerifyError::Stale { .. } | VerifyError::BadSignature => {
                "InvalidSignatureException"
            }
        }
    }
}

/// Verifies requests signed with one set of credentials.
pub struct Verifier {
    credentials: SigningCredentials,
    region: Option<String>,
    keys: KeyCache,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("credentials", &self.credentials)
            .field("region", &self.region)
            .finish()
    }
}

struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, VerifyError> {
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or(VerifyError::Malformed("algorithm is not AWS4-HMAC-SHA256"))?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        } else {
            return Err(VerifyError::Malformed("unknown Authorization component"));
        }
    }
    let credential = credential.ok_or(VerifyError::Malformed("no Credential"))?;
    let signed_headers = signed_headers.ok_or(VerifyError::Malformed("no SignedHeaders"))?;
    let signature = signature.ok_or(VerifyError::Malformed("no Signature"))?;
    let mut scope = credential.rsplitn(5, '/');
    let terminator = scope.next();
    let service = scope.next();
    let region = scope.next();
    let date = scope.next();
    let access_key_id = scope.next();
    match (access_key_id, date, region, service, terminator) {
        (Some(access_key_id), Some(date), Some(region), Some(service), Some("aws4_request")) => {
            Ok(Authorization {
                access_key_id,
                date,
                region,
                service,
                signed_headers,
                signature,
            })
        }
        _ => Err(VerifyError::Malformed(
            "Credential is not key/date/region/service/aws4_request",
        )),
    }
}

impl Verifier {
    /// Accepts requests signed with `credentials`, for `region` or, with `None`, any region.
    pub fn new(credentials: SigningCredentials, region: Option<String>) -> Self {
        Verifier {
            credentials,
            region,
            keys: KeyCache::new(SERVICE),
        }
    }

    /// Verifies a request as received: `uri` as the server saw it (path percent-encoded as sent),
    /// `headers` as received, the whole body, against the server's clock `now`.
    pub fn verify(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        let authorization = headers
            .get(http::header::AUTHORIZATION)
            .ok_or_else(|| VerifyError::MissingHeader("authorization".into()))?
            .to_str()
            .map_err(|_| VerifyError::Malformed("Authorization is not ASCII"))?;
        let auth = parse_authorization(authorization)?;
        let amz_date = headers
            .get("x-amz-date")
            .ok_or_else(|| VerifyError::MissingHeader("x-amz-date".into()))?
            .as_bytes();
        let request_secs = AmzDate::parse_unix_secs(amz_date)
            .ok_or(VerifyError::Malformed("x-amz-date is not YYYYMMDDTHHMMSSZ"))?;

        let signed: Vec<&str> = auth.signed_headers.split(';').collect();
        if signed
            .iter()
            .any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase()))
            || !signed.windows(2).all(|w| w[0] < w[1])
        {
            return Err(VerifyError::Malformed(
                "SignedHeaders is not sorted lowercase names",
            ));
        }
        for required in ["host", "x-amz-date"] {
            if !signed.contains(&required) {
                return Err(VerifyError::UnsignedHeader(required));
            }
        }

        if !bool::from(
            auth.access_key_id
                .as_bytes()
                .ct_eq(self.credentials.access_key_id().as_bytes()),
        ) {
            return Err(VerifyError::UnknownAccessKey);
        }
        if let Some(expected) = self.credentials.session_token() {
            let sent = headers.get("x-amz-security-token").map(|v| v.as_bytes());
            let matches = sent.is_some_and(|sent| bool::from(sent.ct_eq(expected.as_bytes())));
            if !matches || !signed.contains(&"x-amz-security-token") {
                return Err(VerifyError::SessionToken);
            }
        }
        if auth.service != SERVICE {
            return Err(VerifyError::WrongScope("service is not execute-api"));
        }
        if auth.date.as_bytes() != &amz_date[..8] {
            return Err(VerifyError::WrongScope("date differs from x-amz-date"));
        }
        if let Some(region) = &self.region
            && auth.region != region
        {
            return Err(VerifyError::WrongScope("region"));
        }

        let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let skew_secs = request_secs as i64 - now_secs as i64;
        if skew_secs.unsigned_abs() > MAX_CLOCK_SKEW.as_secs() {
            return Err(VerifyError::Stale { skew_secs });
        }
        if uri.query().is_some_and(|q| !q.is_empty()) {
            // The Management API has no query parameters; nothing this verifier is for sends one.
            return Err(VerifyError::Malformed("query strings are not supported"));
        }

        // The canonical request from what was received.
        let mut creq = Vec::with_capacity(512);
        creq.extend_from_slice(method.as_str().as_bytes());
        creq.push(b'\n');
        canonical_uri(&mut creq, uri.path());
        creq.extend_from_slice(b"\n\n");
        for name in &signed {
            creq.extend_from_slice(name.as_bytes());
            creq.push(b':');
            let mut values = headers.get_all(*name).iter().peekable();
            if values.peek().is_none() {
                // HTTP/2 carries the host as `:authority`, which hyper puts in the URI.
                match (*name, uri.authority()) {
                    ("host", Some(authority)) => {
                        push_trimmed(&mut creq, authority.as_str().as_bytes())
                    }
                    _ => return Err(VerifyError::MissingHeader((*name).to_owned())),
                }
            }
            let mut first = true;
            for value in values {
                if !first {
                    creq.push(b',');
                }
                first = false;
                push_trimmed(&mut creq, value.as_bytes());
            }
            creq.push(b'\n');
        }
        creq.push(b'\n');
        creq.extend_from_slice(auth.signed_headers.as_bytes());
        creq.push(b'\n');
        creq.extend_from_slice(&hex32(digest::digest(&digest::SHA256, body).as_ref()));
        let creq_hash = hex32(digest::digest(&digest::SHA256, &creq).as_ref());

        let date = AmzDate::from_unix_secs(request_secs);
        let mut sts = Vec::with_capacity(160);
        write_string_to_sign(&mut sts, &date, auth.region, &creq_hash);
        let key = self.keys.get(
            date.day,
            date.date(),
            auth.region,
            self.credentials.secret_access_key(),
        );
        let expected = hex32(hmac::sign(&key, &sts).as_ref());
        if bool::from(expected.as_slice().ct_eq(auth.signature.as_bytes())) {
            Ok(())
        } else {
            Err(VerifyError::BadSignature)
        }
    }
}
