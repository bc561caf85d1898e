//! The `$connect` Origin check: the browser's `Origin` header, parsed (never substring-matched), must
//! match an allowed origin by scheme, host and port. An allowed host may be `*.example.com`, which
//! matches sub-domains of `example.com` but not `example.com` itself nor look-alikes such as
//! `example.com.attacker.net`. `*` alone allows every origin, and must be configured explicitly: with no
//! allowed origins, every browser is refused.
//!
//! A request without an `Origin` header is not from a browser page (browsers always send one on a
//! WebSocket handshake) and is let through: the check keeps other sites' pages from opening connections
//! with a user's ambient credentials; it cannot stop scripts, which may send any header they like.

/// One allowed origin from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedOrigin {
    /// `*`: any origin.
    any: bool,
    scheme: String,
    /// Lower-case host; for a wildcard entry, the suffix after `*.`.
    host: String,
    wildcard: bool,
    port: u16,
}

impl AllowedOrigin {
    /// Parses `https://app.example.com`, `http://localhost:3000` or `https://*.example.com`.
    pub fn parse(entry: &str) -> Option<Self> {
        if entry == "*" {
            return Some(Self {
                any: true,
                scheme: String::new(),
                host: String::new(),
                wildcard: false,
                port: 0,
            });
        }
        let (scheme, rest) = entry.split_once("://")?;
        let (wildcard, rest) = match rest.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        let url = url::Url::parse(&format!("{scheme}://{rest}")).ok()?;
        let origin = Origin::from_url(&url)?;
        if url.path() != "/" || url.query().is_some() {
            return None;
        }
        Some(Self {
            any: false,
            scheme: origin.scheme,
            host: origin.host,
            wildcard,
            port: origin.port,
        })
    }

    fn allows(&self, origin: &Origin) -> bool {
        if self.any {
            return true;
        }
        if origin.scheme != self.scheme || origin.port != self.port {
            return false;
        }
        if self.wildcard {
            origin.host.len() > self.host.len() + 1
                && origin.host.ends_with(&self.host)
                && origin.host.as_bytes()[origin.host.len() - self.host.len() - 1] == b'.'
        } else {
            origin.host == self.host
        }
    }
}

struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn from_url(url: &url::Url) -> Option<Self> {
        if !matches!(url.scheme(), "http" | "https") {
            return None;
        }
        Some(Self {
            scheme: url.scheme().to_owned(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default()?,
        })
    }
}

/// True when the `Origin` header value is allowed, or there is none (not a browser). With no allowed
/// origins configured, no browser origin is.
pub fn origin_allowed(allowed: &[AllowedOrigin], header: Option<&str>) -> bool {
    let Some(header) = header else {
        return true;
    };
    if allowed.iter().any(|a| a.any) {
        return true;
    }
    let Some(origin) = url::Url::parse(header)
        .ok()
        .and_then(|u| Origin::from_url(&u))
    else {
        return false;
    };
    allowed.iter().any(|a| a.allows(&origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(allowed: &[&str], origin: Option<&str>) -> bool {
        let allowed: Vec<_> = allowed
            .iter()
            .map(|a| AllowedOrigin::parse(a).unwrap())
            .collect();
        origin_allowed(&allowed, origin)
    }

    #[test]
    fn exact_origins() {
        let allowed = ["https://app.example.com"];
        assert!(check(&allowed, Some("https://app.example.com")));
        assert!(check(&allowed, Some("https://APP.example.com:443")));
        assert!(!check(&allowed, Some("http://app.example.com")));
        assert!(!check(&allowed, Some("https://app.example.com:8443")));
        assert!(!check(
            &allowed,
            Some("https://app.example.com.attacker.net")
        ));
        assert!(!check(&allowed, Some("https://evilapp.example.com")));
        assert!(!check(&allowed, Some("null")));
        // No Origin: not a browser page.
        assert!(check(&allowed, None));
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        let allowed = ["https://*.example.com"];
        assert!(check(&allowed, Some("https://www.example.com")));
        assert!(check(&allowed, Some("https://a.b.example.com")));
        assert!(!check(&allowed, Some("https://example.com")));
        assert!(!check(&allowed, Some("https://badexample.com")));
        assert!(!check(&allowed, Some("https://www.example.com.evil.org")));
        // An empty label before the suffix is no sub-domain.
        assert!(!check(&allowed, Some("https://.example.com")));
    }

    #[test]
    fn ports_and_empty_list() {
        assert!(check(
            &["http://localhost:3000"],
            Some("http://localhost:3000")
        ));
        assert!(!check(
            &["http://localhost:3000"],
            Some("http://localhost:3001")
        ));
        // Closed unless configured; `*` must be said.
        assert!(!check(&[], Some("https://app.example.com")));
        assert!(check(&[], None));
        assert!(check(&["*"], Some("https://anything.example.org")));
        assert!(check(&["*"], Some("null")));
        assert!(AllowedOrigin::parse("https://x.com/path").is_none());
        assert!(AllowedOrigin::parse("ftp://x.com").is_none());
        assert!(AllowedOrigin::parse("x.com").is_none());
    }
}
