//! The lean signer against `aws-sigv4` (the crate the AWS SDK signs with), byte for byte: for a
//! few thousand generated requests (connection ids with `=`, `+`, `/`, `-`, `_`; stages; bodies from
//! 0 bytes to 128 KiB; with and without a session token; GET, POST and DELETE; times just before and
//! after midnight UTC, month and year ends, a leap day) every header either produces is identical.
//! One signer serves all of them, so its key cache rolls over between days as it would in a worker.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_smithy_runtime_api::client::identity::Identity;
use mgmt_client::SigningCredentials;
use mgmt_client::signer::{Signer, SigningRequest};

/// A small deterministic generator (xorshift64*), so a failure names a reproducible case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn string(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len).map(|_| char::from(*self.pick(alphabet))).collect()
    }
}

const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789=+/-_";
const TOKEN_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";

fn unix(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Encodes a connection id as the SDK puts it in a path (`httpLabel`).
fn sdk_label(id: &str) -> String {
    let mut out = String::new();
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct Case {
    method: &'static str,
    scheme: &'static str,
    /// As the URI given to aws-sigv4 has it (perhaps with a default port).
    uri_authority: String,
    /// As the lean signer is given it (the Host hyper sends).
    host: String,
    path: String,
    body: Vec<u8>,
    token: Option<String>,
    region: &'static str,
    time: SystemTime,
}

fn reference(case: &Case, akid: &str, secret: &str) -> Vec<(String, String)> {
    let identity: Identity =
        Credentials::new(akid, secret, case.token.clone(), None, "test").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(case.region)
        .name("execute-api")
        .time(case.time)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let length = case.body.len().to_string();
    let mut headers = Vec::new();
    if case.method == "POST" {
        headers.push(("content-length", length.as_str()));
        headers.push(("content-type", "application/octet-stream"));
    }
    let uri = format!("{}://{}{}", case.scheme, case.uri_authority, case.path);
    let request = SignableRequest::new(
        case.method,
        uri,
        headers.into_iter(),
        SignableBody::Bytes(&case.body),
    )
    .unwrap();
    let (instructions, _signature) = sign(request, &params).unwrap().into_parts();
    let mut out: Vec<(String, String)> = instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    out.sort();
    out
}

fn lean(signer: &Signer, case: &Case, credentials: &SigningCredentials) -> Vec<(String, String)> {
    let signed = signer.sign(
        credentials,
        case.region,
        &SigningRequest {
            method: case.method,
            host: &case.host,
            path: &case.path,
            content_type: (case.method == "POST").then_some("application/octet-stream"),
            body: &case.body,
        },
        case.time,
    );
    let mut out = vec![
        (
            "authorization".to_owned(),
            signed.authorization.to_str().unwrap().to_owned(),
        ),
        (
            "x-amz-date".to_owned(),
            signed.x_amz_date.to_str().unwrap().to_owned(),
        ),
    ];
    if let Some(token) = signed.security_token {
        out.push((
            "x-amz-security-token".to_owned(),
            token.to_str().unwrap().to_owned(),
        ));
    }
    out.sort();
    out
}

/// Moments worth signing at: either side of midnight, month and year ends, a leap day.
fn interesting_times() -> Vec<u64> {
    let days = [
        20_414, // 2025-11-22
        20_423, // 2025-12-01 (so 2025-11-30 23:59:59 is one before)
        20_454, // 2026-01-01
        21_243, // 2028-02-29
        21_244, // 2028-03-01
        0,      // 1970-01-01
    ];
    let mut times = Vec::new();
    for day in days {
        let midnight = day * 86_400;
        for offset in [-2i64, -1, 0, 1, 2, 43_200] {
            times.push((midnight as i64 + offset).max(0) as u64);
        }
    }
    times
}

#[test]
fn lean_signer_matches_aws_sigv4_byte_for_byte() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let signer = Signer::new();
    let times = interesting_times();
    let stages = ["/prod", "/dev", "/v1", "/stage_2", "", "/a-b", "/api/v2"];
    let hosts = [
        (
            "https",
            "abc123defg.execute-api.us-east-1.amazonaws.com",
            "abc123defg.execute-api.us-east-1.amazonaws.com",
        ),
        ("https", "ws.example.com:443", "ws.example.com"),
        ("http", "127.0.0.1:5066", "127.0.0.1:5066"),
        ("http", "localhost:80", "localhost"),
    ];
    let sizes = [0usize, 1, 26, 100, 1000, 4096, 65_536, 131_071, 131_072];
    let regions = ["us-east-1", "eu-west-1", "ap-southeast-2"];
    let secrets = [
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        "another/secret+key==",
    ];
    let mut generated = Vec::new();
    let cases = 3000;
    for n in 0..cases {
        let id_len = 1 + rng.below(48);
        let mut id = rng.string(ID_ALPHABET, id_len);
        if n % 5 == 0 {
            id.push('='); // the usual base64 padding of API Gateway's ids
        }
        let (scheme, uri_authority, host) = *rng.pick(&hosts);
        let method = *rng.pick(&["POST", "POST", "POST", "GET", "DELETE"]);
        let size = if n % 3 == 0 {
            rng.below(2048)
        } else {
            *rng.pick(&sizes)
        };
        let body: Vec<u8> = if method == "POST" {
            (0..size).map(|_| rng.next() as u8).collect()
        } else {
            Vec::new()
        };
        let token = (rng.below(2) == 0).then(|| {
            let len = 16 + rng.below(1200);
            rng.string(TOKEN_ALPHABET, len)
        });
        let time = unix(*rng.pick(&times) + (n as u64 % 3));
        let secret = *rng.pick(&secrets);
        let case = Case {
            method,
            scheme,
            uri_authority: uri_authority.to_owned(),
            host: host.to_owned(),
            path: format!("{}/@connections/{}", rng.pick(&stages), sdk_label(&id)),
            body,
            token,
            region: regions[rng.below(regions.len())],
            time,
        };
        generated.push((id, secret, case));
    }
    // In time order, as a worker signs: the cache then derives each (day, region, secret) key once.
    generated.sort_by_key(|(_, _, case)| case.time);

    let mut seen = (0, 0, 0, 0, 0, 0); // '=', '+', '/', token, 128 KiB body, empty POST body
    let mut keys = std::collections::HashSet::new();
    for (n, (id, secret, case)) in generated.iter().enumerate() {
        seen.0 += usize::from(id.contains('='));
        seen.1 += usize::from(id.contains('+'));
        seen.2 += usize::from(id.contains('/'));
        seen.3 += usize::from(case.token.is_some());
        seen.4 += usize::from(case.body.len() == 131_072);
        seen.5 += usize::from(case.method == "POST" && case.body.is_empty());
        let day = case.time.duration_since(UNIX_EPOCH).unwrap().as_secs() / 86_400;
        keys.insert((day, case.region, *secret));

        let credentials =
            SigningCredentials::new("AKIDEXAMPLE", *secret, case.token.clone()).unwrap();
        let expected = reference(case, "AKIDEXAMPLE", secret);
        let actual = lean(&signer, case, &credentials);
        assert_eq!(
            actual,
            expected,
            "case {n}: {} {}{} token={} body={}B region={} time={:?}",
            case.method,
            case.host,
            case.path,
            case.token.is_some(),
            case.body.len(),
            case.region,
            case.time
        );
    }
    assert!(
        seen.0 > 100 && seen.1 > 100 && seen.2 > 100,
        "ids exercised: {seen:?}"
    );
    assert!(
        seen.3 > 1000 && seen.4 > 10 && seen.5 > 10,
        "tokens and bodies exercised: {seen:?}"
    );
    // Every day rolled the cache over; no key was derived twice.
    assert!(keys.len() > 20, "{} keys", keys.len());
    assert_eq!(signer.key_derivations(), keys.len() as u64);
}

#[test]
fn the_signing_key_is_derived_once_a_day_and_yesterdays_is_kept() {
    let signer = Signer::new();
    let credentials = SigningCredentials::new("AKIDEXAMPLE", "secret", None).unwrap();
    let midnight = 20_454 * 86_400; // 2026-01-01T00:00:00Z
    let check = |secs: u64, derivations: u64| {
        let case = Case {
            method: "POST",
            scheme: "https",
            uri_authority: "x.execute-api.us-east-1.amazonaws.com".into(),
            host: "x.execute-api.us-east-1.amazonaws.com".into(),
            path: "/prod/@connections/L0SM9cOFvHcCIhw%3D".into(),
            body: b"{\"hello\":1}".to_vec(),
            token: None,
            region: "us-east-1",
            time: unix(secs),
        };
        assert_eq!(
            lean(&signer, &case, &credentials),
            reference(&case, "AKIDEXAMPLE", "secret")
        );
        assert_eq!(signer.key_derivations(), derivations, "at {secs}");
    };
    check(midnight - 1, 1);
    check(midnight - 1, 1);
    check(midnight, 2); // a new day, a new key
    check(midnight + 86_399, 2);
    check(midnight - 2, 2); // a request signed late from before midnight: yesterday's key is kept
    check(midnight + 86_400, 3);
}
