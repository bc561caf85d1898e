//! The byte-level pieces of a SigV4 canonical request, written into caller-owned buffers: the
//! `x-amz-date` timestamp, lowercase hex, the canonical URI (RFC 3986 dot-segment removal, then the
//! second percent-encoding `execute-api` expects: `%3D` becomes `%253D`, `@` becomes `%40`), header
//! value trimming, and the label encoding of a connection id in a request path. Each rule mirrors
//! `aws-sigv4` 1.6 (`canonical_request.rs`, `uri_path_normalization.rs`, `url_escape.rs`) and
//! `aws-smithy-http`'s `urlencode::BASE_SET`; the conformance test holds them to it byte for byte.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Bytes `aws-smithy-http`'s `BASE_SET` percent-encodes: controls, non-ASCII and the listed
/// delimiters. `/` is in it; the "greedy" set used for the canonical URI is the same without `/`.
const fn base_set() -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = b < 0x20 || b >= 0x7f;
        b += 1;
    }
    let listed = b" /:,?#[]{}|@!$&'()*+;=%<>\"^`\\";
    let mut i = 0;
    while i < listed.len() {
        table[listed[i] as usize] = true;
        i += 1;
    }
    table
}

static BASE_SET: [bool; 256] = base_set();

/// Lowercase hex of a 32-byte digest, on the stack.
pub(crate) fn hex32(bytes: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (i, &b) in bytes.iter().take(32).enumerate() {
        out[2 * i] = HEX_LOWER[usize::from(b >> 4)];
        out[2 * i + 1] = HEX_LOWER[usize::from(b & 0x0f)];
    }
    out
}

fn push_pct(out: &mut Vec<u8>, b: u8) {
    out.push(b'%');
    out.push(HEX_UPPER[usize::from(b >> 4)]);
    out.push(HEX_UPPER[usize::from(b & 0x0f)]);
}

/// Appends a connection id (or any path label) encoded as the SDK encodes an `httpLabel`:
/// `=` becomes `%3D`, `/` becomes `%2F`, `+` becomes `%2B`.
pub(crate) fn encode_label(out: &mut String, label: &str) {
    for &b in label.as_bytes() {
        if BASE_SET[usize::from(b)] {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(b & 0x0f)]));
        } else {
            out.push(char::from(b));
        }
    }
}

/// Appends the canonical URI of an on-the-wire (already percent-encoded once) path: normalized, then
/// encoded a second time with every byte of `BASE_SET` except `/`.
pub(crate) fn canonical_uri(out: &mut Vec<u8>, wire_path: &str) {
    let normalized = normalize_uri_path(wire_path);
    for &b in normalized.as_bytes() {
        if b != b'/' && BASE_SET[usize::from(b)] {
            push_pct(out, b);
        } else {
            out.push(b);
        }
    }
}

/// `aws-sigv4`'s `normalize_uri_path`: `/` for an empty path, a leading `/` added, and RFC 3986
/// §5.2.4 dot-segment removal (which also drops empty segments) only when the path has a `.` or `//`.
/// Borrowed, so no allocation, for the paths this client sends.
pub(crate) fn normalize_uri_path(path: &str) -> Cow<'_, str> {
    if path.is_empty() {
        return Cow::Borrowed("/");
    }
    let path: Cow<'_, str> = if path.starts_with('/') {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(format!("/{path}"))
    };
    if !(path.contains('.') || path.contains("//")) {
        return path;
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut result = segments.join("/");
    if !result.starts_with('/') {
        result.insert(0, '/');
    }
    let ends_with_slash = ["/", "/.", "/./", "/..", "/../"]
        .iter()
        .any(|s| path.ends_with(s));
    if ends_with_slash && !result.ends_with('/') {
        result.push('/');
    }
    Cow::Owned(result)
}

/// `aws-sigv4`'s `trim_all`: spaces (only spaces) trimmed at both ends and runs of spaces collapsed.
pub(crate) fn push_trimmed(out: &mut Vec<u8>, value: &[u8]) {
    let start = value.iter().position(|&b| b != b' ').unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| b != b' ')
        .map_or(start, |i| i + 1);
    let mut previous_space = false;
    for &b in &value[start..end] {
        if b == b' ' {
            if !previous_space {
                out.push(b);
            }
            previous_space = true;
        } else {
            out.push(b);
            previous_space = false;
        }
    }
}

/// A request time cut to whole seconds, with the two forms SigV4 uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AmzDate {
    /// Days since 1970-01-01, the signing key's cache key.
    pub(crate) day: u64,
    /// `YYYYMMDDTHHMMSSZ`; the first 8 bytes are the scope's date.
    pub(crate) text: [u8; 16],
}

impl AmzDate {
    pub(crate) fn from_system_time(time: SystemTime) -> Self {
        // Times before 1970 are not signable by aws-sigv4 either; they clamp to the epoch.
        let secs = time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        Self::from_unix_secs(secs)
    }

    pub(crate) fn from_unix_secs(secs: u64) -> Self {
        let day = secs / 86_400;
        let of_day = secs % 86_400;
        let (year, month, dom) = civil_from_days(day);
        let mut text = *b"00000000T000000Z";
        write_digits(&mut text[0..4], year);
        write_digits(&mut text[4..6], month);
        write_digits(&mut text[6..8], dom);
        write_digits(&mut text[9..11], of_day / 3600);
        write_digits(&mut text[11..13], of_day % 3600 / 60);
        write_digits(&mut text[13..15], of_day % 60);
        AmzDate { day, text }
    }

    /// Parses `YYYYMMDDTHHMMSSZ` into seconds since the epoch.
    pub(crate) fn parse_unix_secs(text: &[u8]) -> Option<u64> {
        if text.len() != 16 || text[8] != b'T' || text[15] != b'Z' {
            return None;
        }
        let num = |range: std::ops::Range<usize>| -> Option<u64> {
            let mut value = 0u64;
            for &b in &text[range] {
                if !b.is_ascii_digit() {
                    return None;
                }
                value = value * 10 + u64::from(b - b'0');
            }
            Some(value)
        };
        let (year, month, dom) = (num(0..4)?, num(4..6)?, num(6..8)?);
        let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
        if year < 1970
            || !(1..=12).contains(&month)
            || !(1..=31).contains(&dom)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        let day = days_from_civil(year, month, dom);
        if civil_from_days(day) != (year, month, dom) {
            return None; // 31 February and the like
        }
        Some(day * 86_400 + hour * 3600 + minute * 60 + second)
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII digits, `T` and `Z` are ever written into `text`.
        std::str::from_utf8(&self.text).unwrap_or("19700101T000000Z")
    }

    pub(crate) fn date(&self) -> &[u8] {
        &self.text[..8]
    }
}

fn write_digits(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Howard Hinnant's `civil_from_days` for days since 1970-01-01 (non-negative).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let yoe = year - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_over_four_centuries_of_days() {
        for day in (0..146_097 * 2).step_by(97) {
            let date = AmzDate::from_unix_secs(day * 86_400 + 86_399);
            assert_eq!(
                AmzDate::parse_unix_secs(&date.text),
                Some(day * 86_400 + 86_399)
            );
        }
        assert_eq!(
            AmzDate::from_unix_secs(1_795_389_762).as_str(),
            "20261122T232242Z"
        );
        assert_eq!(AmzDate::parse_unix_secs(b"20260231T000000Z"), None);
    }

    #[test]
    fn canonical_uri_double_encodes_and_normalizes() {
        let check = |wire: &str, expected: &str| {
            let mut out = Vec::new();
            canonical_uri(&mut out, wire);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{wire}");
        };
        check("/prod/@connections/abc%3D", "/prod/%40connections/abc%253D");
        check("", "/");
        check("/a/./b/../c//d/", "/a/c/d/");
    }

    #[test]
    fn trimming_matches_aws_sigv4() {
        let mut out = Vec::new();
        push_trimmed(&mut out, b"  a   b c  ");
        assert_eq!(out, b"a b c");
    }

    #[test]
    fn controls_non_ascii_and_delimiters_are_percent_encoded() {
        let mut label = String::new();
        encode_label(&mut label, "a\u{1}\u{1f}b\u{7f}é~ =/");
        assert_eq!(label, "a%01%1Fb%7F%C3%A9~%20%3D%2F");
        let mut uri = Vec::new();
        canonical_uri(&mut uri, "/p/\u{1}\u{7f}é~");
        assert_eq!(String::from_utf8(uri).unwrap(), "/p/%01%7F%C3%A9~");
    }

    #[test]
    fn paths_are_normalized_only_when_they_need_it() {
        for (path, expected) in [
            ("/a/./b", "/a/b"),
            ("/a//b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("a/b", "/a/b"),
            ("/a/b", "/a/b"),
        ] {
            assert_eq!(normalize_uri_path(path), expected, "{path}");
        }
    }

    #[test]
    fn malformed_dates_are_refused() {
        assert_eq!(
            AmzDate::parse_unix_secs(b"20261122T232242Z"),
            Some(1_795_389_762)
        );
        for bad in [
            &b"20261122X232242Z"[..],
            b"20261122T232242A",
            b"20261122T232242Z0",
            b"20261122T23224Z",
            b"2026112aT232242Z",
            b"19691231T235959Z",
            b"20260022T232242Z",
            b"20261322T232242Z",
            b"20261100T232242Z",
            // Day 0 of March would underflow the day count if it reached it.
            b"20260300T232242Z",
            b"20261132T232242Z",
            b"20261122T242242Z",
            b"20261122T236042Z",
            b"20261122T232260Z",
        ] {
            assert_eq!(
                AmzDate::parse_unix_secs(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// The last day of a 400-year era (29 February 2000) is the one day the era arithmetic corrects for.
    #[test]
    fn the_last_day_of_an_era() {
        let leap_2000 = 11_016 * 86_400;
        assert_eq!(
            AmzDate::from_unix_secs(leap_2000).as_str(),
            "20000229T000000Z"
        );
        assert_eq!(
            AmzDate::from_unix_secs(leap_2000 + 86_400).as_str(),
            "20000301T000000Z"
        );
        assert_eq!(
            AmzDate::parse_unix_secs(b"20000229T000000Z"),
            Some(leap_2000)
        );
    }
}
