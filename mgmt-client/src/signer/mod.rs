//! SigV4 (`AWS4-HMAC-SHA256`) for the `execute-api` service, the way `aws-sigv4` does it for the
//! Management API SDK (double-encoded canonical URI, normalized path, no `x-amz-content-sha256`,
//! the session token signed), at a fraction of the cost: the derived key is cached per day, region
//! and secret ([`key`]), the canonical request is written into a reused per-thread buffer and hashed
//! once, and the only allocations per request are the three header values handed to hyper.
//! [`verify`] is the other side, for an emulator that checks what clients send.
//!
//! Headers signed: `content-length;content-type` when the request has a body type (POST), then
//! `host;x-amz-date`, then `x-amz-security-token` when the credentials carry one.

mod canonical;
mod key;
pub mod verify;

use std::cell::RefCell;
use std::time::SystemTime;

use aws_lc_rs::{digest, hmac};
use bytes::{BufMut, BytesMut};
use http::HeaderValue;

use crate::credentials::SigningCredentials;
pub(crate) use canonical::encode_label;
use canonical::{AmzDate, canonical_uri, hex32};
pub use verify::{Verifier, VerifyError};

/// The signing name of the API Gateway Management API.
pub const SERVICE: &str = "execute-api";
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// What is signed about one request.
#[derive(Debug, Clone, Copy)]
pub struct SigningRequest<'a> {
    /// `GET`, `POST`, `DELETE`.
    pub method: &'a str,
    /// The `Host` header as sent: the authority without a default port.
    pub host: &'a str,
    /// The path as sent on the wire (percent-encoded once), without a query.
    pub path: &'a str,
    /// When set, `content-length` (the body's length) and `content-type` are signed; the caller must
    /// send exactly these values.
    pub content_type: Option<&'a str>,
    /// The body, hashed into the canonical request.
    pub body: &'a [u8],
}

/// The headers to add to the request.
#[derive(Debug, Clone)]
pub struct SignatureHeaders {
    pub x_amz_date: HeaderValue,
    pub authorization: HeaderValue,
    /// `x-amz-security-token`, when the credentials carry a session token.
    pub security_token: Option<HeaderValue>,
}

/// A SigV4 signer for `execute-api`; one per process is enough (shared by reference).
pub struct Signer {
    keys: key::KeyCache,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_derivations", &self.key_derivations())
            .finish()
    }
}

impl Default for Signer {
    fn default() -> Self {
        Self::new()
    }
}

thread_local! {
    /// The canonical request and string to sign are written here; it grows to the largest request
    /// seen on the thread (a session token is the biggest part) and is never freed.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(2048));
}

fn signed_header_list(has_body: bool, has_token: bool) -> &'static str {
    match (has_body, has_token) {
        (true, true) => "content-length;content-type;host;x-amz-date;x-amz-security-token",
        (true, false) => "content-length;content-type;host;x-amz-date",
        (false, true) => "host;x-amz-date;x-amz-security-token",
        (false, false) => "host;x-amz-date",
    }
}

impl Signer {
    pub fn new() -> Self {
        Signer {
            keys: key::KeyCache::new(SERVICE),
        }
    }

    /// Signing keys derived so far (one per day, region and secret while the process runs).
    pub fn key_derivations(&self) -> u64 {
        self.keys.derivations()
    }

    /// Signs `request` for `region` at `time`.
    pub fn sign(
        &self,
        credentials: &SigningCredentials,
        region: &str,
        request: &SigningRequest<'_>,
        time: SystemTime,
    ) -> SignatureHeaders {
        let payload_hash = payload_hash(request.body);
        self.sign_hashed(credentials, region, request, &payload_hash, time)
    }

    /// [`Signer::sign`] with the body's hash already known ([`payload_hash`] of `request.body`).
    pub(crate) fn sign_hashed(
        &self,
        credentials: &SigningCredentials,
        region: &str,
        request: &SigningRequest<'_>,
        payload_hash: &[u8; 64],
        time: SystemTime,
    ) -> SignatureHeaders {
        let date = AmzDate::from_system_time(time);
        let token = credentials.session_token();
        let signed_headers = signed_header_list(request.content_type.is_some(), token.is_some());

        let signature = SCRATCH.with(|scratch| {
            let mut guard = scratch.try_borrow_mut();
            let mut fallback = Vec::new();
            // Re-entrancy cannot happen (nothing here calls back out), but never panic over it.
            let buf: &mut Vec<u8> = match guard.as_deref_mut() {
                Ok(buf) => buf,
                Err(_) => &mut fallback,
            };
            buf.clear();

            // The canonical request.
            buf.extend_from_slice(request.method.as_bytes());
            buf.push(b'\n');
            canonical_uri(buf, request.path);
            buf.extend_from_slice(b"\n\n");
            if let Some(content_type) = request.content_type {
                buf.extend_from_slice(b"content-length:");
                let mut itoa = [0u8; 20];
                buf.extend_from_slice(format_usize(&mut itoa, request.body.len()));
                buf.extend_from_slice(b"\ncontent-type:");
                canonical::push_trimmed(buf, content_type.as_bytes());
                buf.push(b'\n');
            }
            buf.extend_from_slice(b"host:");
            canonical::push_trimmed(buf, request.host.as_bytes());
            buf.extend_from_slice(b"\nx-amz-date:");
            buf.extend_from_slice(&date.text);
            buf.push(b'\n');
            if let Some(token) = token {
                buf.extend_from_slice(b"x-amz-security-token:");
                buf.extend_from_slice(token.as_bytes());
                buf.push(b'\n');
            }
            buf.push(b'\n');
            buf.extend_from_slice(signed_headers.as_bytes());
            buf.push(b'\n');
            buf.extend_from_slice(payload_hash);
            let creq_hash = hex32(digest::digest(&digest::SHA256, buf).as_ref());

            // The string to sign.
            buf.clear();
            write_string_to_sign(buf, &date, region, &creq_hash);
            let key = self.keys.get(
                date.day,
                date.date(),
                region,
                credentials.secret_access_key(),
            );
            hex32(hmac::sign(&key, buf).as_ref())
        });

        let akid = credentials.access_key_id();
        let mut auth = BytesMut::with_capacity(
            ALGORITHM.len() + 60 + akid.len() + region.len() + signed_headers.len() + 64,
        );
        auth.put_slice(ALGORITHM.as_bytes());
        auth.put_slice(b" Credential=");
        auth.put_slice(akid.as_bytes());
        auth.put_u8(b'/');
        auth.put_slice(date.date());
        auth.put_u8(b'/');
        auth.put_slice(region.as_bytes());
        auth.put_slice(b"/execute-api/aws4_request, SignedHeaders=");
        auth.put_slice(signed_headers.as_bytes());
        auth.put_slice(b", Signature=");
        auth.put_slice(&signature);

        SignatureHeaders {
            x_amz_date: HeaderValue::from_str(date.as_str())
                .unwrap_or_else(|_| HeaderValue::from_static("19700101T000000Z")),
            // Credentials and regions are checked to be header-safe where they are built.
            authorization: HeaderValue::from_maybe_shared(auth.freeze())
                .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
            security_token: token.cloned(),
        }
    }
}

/// The hex SHA-256 of a body, as the canonical request ends.
pub(crate) fn payload_hash(body: &[u8]) -> [u8; 64] {
    hex32(digest::digest(&digest::SHA256, body).as_ref())
}

/// `AWS4-HMAC-SHA256\n{datetime}\n{date}/{region}/execute-api/aws4_request\n{hex(sha256(creq))}`.
fn write_string_to_sign(buf: &mut Vec<u8>, date: &AmzDate, region: &str, creq_hash: &[u8]) {
    buf.extend_from_slice(ALGORITHM.as_bytes());
    buf.push(b'\n');
    buf.extend_from_slice(&date.text);
    buf.push(b'\n');
    buf.extend_from_slice(date.date());
    buf.push(b'/');
    buf.extend_from_slice(region.as_bytes());
    buf.extend_from_slice(b"/execute-api/aws4_request\n");
    buf.extend_from_slice(creq_hash);
}

fn format_usize(buf: &mut [u8; 20], mut value: usize) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Whether a region name can go into a credential scope and a header (`[a-z0-9-]`, as AWS names them).
pub fn is_valid_region(region: &str) -> bool {
    !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
