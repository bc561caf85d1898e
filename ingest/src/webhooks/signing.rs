//! Webhook signatures: HMAC-SHA256 over `"{timestamp}.{body}"`, sent as
//! `X-Fanout-Signature: v1=<hex>` (one `v1=` entry per configured key, comma-separated, so a key can be
//! rotated without a gap) beside `X-Fanout-Timestamp: <unix seconds>`. The timestamp is inside the
//! signed bytes, so a receiver that refuses old timestamps refuses replays. [`verify`] is what a
//! receiver does; the README shows the same in Python.

use aws_lc_rs::hmac;
use common::secret::Secret;

/// Seconds since the Unix epoch when the request was signed (re-signed on every attempt).
pub const TIMESTAMP_HEADER: &str = "x-fanout-timestamp";
/// `v1=<hex HMAC-SHA256>` per key, comma-separated.
pub const SIGNATURE_HEADER: &str = "x-fanout-signature";

/// Signs request bodies with every configured key.
pub struct Signer {
    keys: Vec<hmac::Key>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({} keys)", self.keys.len())
    }
}

/// The bytes a signature covers.
fn signed_bytes(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(timestamp.len() + 1 + body.len());
    bytes.extend_from_slice(timestamp.as_bytes());
    bytes.push(b'.');
    bytes.extend_from_slice(body);
    bytes
}

impl Signer {
    pub fn new(secrets: &[Secret]) -> Self {
        Self {
            keys: secrets
                .iter()
                .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s.expose().as_bytes()))
                .collect(),
        }
    }

    /// The `X-Fanout-Signature` value for `body` sent at `timestamp` (Unix seconds).
    pub fn sign(&self, timestamp: u64, body: &[u8]) -> String {
        let bytes = signed_bytes(&timestamp.to_string(), body);
        self.keys
            .iter()
            .map(|key| format!("v1={}", hex::encode(hmac::sign(key, &bytes).as_ref())))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A receiver's check: true when one `v1=` entry of `signature` is `body` and `timestamp` signed with
/// `secret` (compared in constant time). The caller also refuses a timestamp too far from its clock.
pub fn verify(secret: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let bytes = signed_bytes(timestamp, body);
    signature
        .split(',')
        .filter_map(|entry| entry.trim().strip_prefix("v1="))
        .filter_map(|h| hex::decode(h).ok())
        .any(|tag| hmac::verify(&key, &bytes, &tag).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "old-key-0123456789abcdef0123456789";
    const NEW: &str = "new-key-0123456789abcdef0123456789";

    #[test]
    fn every_key_signs_and_each_verifies() {
        let signer = Signer::new(&[Secret::new(NEW), Secret::new(OLD)]);
        let header = signer.sign(1_700_000_000, br#"{"events":[]}"#);
        assert_eq!(header.matches("v1=").count(), 2);
        for key in [OLD, NEW] {
            assert!(verify(
                key.as_bytes(),
                "1700000000",
                br#"{"events":[]}"#,
                &header
            ));
        }
        assert!(!verify(
            b"another-key-0123456789abcdef012345",
            "1700000000",
            br#"{"events":[]}"#,
            &header
        ));
    }

    #[test]
    fn a_changed_body_or_timestamp_does_not_verify() {
        let header = Signer::new(&[Secret::new(NEW)]).sign(1_700_000_000, b"{}");
        assert!(!verify(NEW.as_bytes(), "1700000000", b"{ }", &header));
        assert!(!verify(NEW.as_bytes(), "1700000001", b"{}", &header));
        assert!(!verify(NEW.as_bytes(), "1700000000", b"{}", "v1=zz"));
    }

    #[test]
    fn matches_what_python_hmac_computes() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(KEY, b"1700000000.{\"events\":[]}", hashlib.sha256).hexdigest())'
        let header = Signer::new(&[Secret::new(NEW)]).sign(1_700_000_000, br#"{"events":[]}"#);
        assert_eq!(
            header,
            "v1=db103096d15a8b19bf8d58d0a0f05beca99b4206f488d7d04336ec5c09da8906"
        );
    }
}
