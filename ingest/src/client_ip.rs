//! The client's address, for the per-IP connect limit and the connection record. A client can write any
//! `X-Forwarded-For` it likes, so the address is taken, in this order, from:
//!
//! 1. `X-Ws-Source-Ip`, which the gateway's integration maps from `context.identity.sourceIp` (the address
//!    API Gateway saw; a client cannot set it, and the callback carrying it passed the gateway secret);
//! 2. `X-Forwarded-For`, only when the TCP peer is a configured trusted proxy: the entries are read from
//!    the right, skipping trusted proxies, and the first other address is the client;
//! 3. the TCP peer itself.
//!
//! Whatever is returned is a parsed IP address (or `unknown`), so it is safe as part of a Redis key.

use std::net::IpAddr;

/// A trusted proxy: an address, or a CIDR block such as `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyNet {
    addr: IpAddr,
    prefix: u8,
}

impl ProxyNet {
    /// Parses `ADDR` or `ADDR/PREFIX`.
    pub fn parse(s: &str) -> Option<Self> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4 address seen as `::ffff:a.b.c.d` is compared (and shown) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address (see the module documentation for the order).
pub fn resolve(
    source_ip: Option<&str>,
    forwarded_for: Option<&str>,
    peer: Option<IpAddr>,
    trusted: &[ProxyNet],
) -> String {
    if let Some(ip) = source_ip.and_then(|v| v.trim().parse::<IpAddr>().ok()) {
        return canonical(ip).to_string();
    }
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if let (Some(peer), Some(chain)) = (peer, forwarded_for)
        && is_trusted(peer)
    {
        for entry in chain.rsplit(',').map(str::trim) {
            match entry.parse::<IpAddr>() {
                Ok(ip) if is_trusted(ip) => continue,
                Ok(ip) => return canonical(ip).to_string(),
                // A malformed entry ends what can be believed; the proxy next to it is the client.
                Err(_) => break,
            }
        }
    }
    peer.map_or_else(|| "unknown".to_owned(), |ip| canonical(ip).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn source_ip_header_wins() {
        assert_eq!(
            resolve(Some("203.0.113.7"), Some("1.2.3.4"), ip("127.0.0.1"), &[]),
            "203.0.113.7"
        );
        // Garbage in the header is not believed.
        assert_eq!(
            resolve(Some("x; DROP"), None, ip("127.0.0.1"), &[]),
            "127.0.0.1"
        );
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted = [ProxyNet::parse("10.0.0.0/8").unwrap()];
        // An untrusted peer's X-Forwarded-For is ignored: the peer is the client.
        assert_eq!(
            resolve(None, Some("1.2.3.4"), ip("192.0.2.9"), &trusted),
            "192.0.2.9"
        );
        // Through a trusted proxy, the rightmost untrusted entry is the client; what the client wrote
        // to the left of it does not count.
        assert_eq!(
            resolve(
                None,
                Some("6.6.6.6, 198.51.100.4, 10.1.1.1"),
                ip("10.0.0.2"),
                &trusted
            ),
            "198.51.100.4"
        );
        assert_eq!(
            resolve(None, Some("junk, 10.1.1.1"), ip("10.0.0.2"), &trusted),
            "10.0.0.2"
        );
        assert_eq!(resolve(None, None, None, &trusted), "unknown");
    }

    #[test]
    fn networks() {
        let net = ProxyNet::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.255.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(
            ProxyNet::parse("::/0")
                .unwrap()
                .contains("2001:db8::1".parse().unwrap())
        );
        assert!(
            ProxyNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            ProxyNet::parse("192.0.2.1")
                .unwrap()
                .contains("192.0.2.1".parse().unwrap())
        );
        assert!(ProxyNet::parse("10.0.0.0/33").is_none());
        assert!(ProxyNet::parse("nope").is_none());
    }
}
