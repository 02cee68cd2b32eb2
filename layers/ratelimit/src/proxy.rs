//! Trusted proxies: CIDR lists and the right-most-untrusted-hop walk over `Forwarded` / `X-Forwarded-For`.

use http::HeaderMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use tower_kit_core::ConfigError;

/// The most hops read from a forwarding header, from the right. A longer chain of trusted proxies is not
/// believable; the walk stops there and keys by the last hop read, so a 1 000-entry header costs no more than 32.
pub const MAX_HOPS: usize = 32;

/// A list of IPv4 and IPv6 networks (`10.0.0.0/8`, `2001:db8::/32`, or bare addresses).
///
/// ```
/// use tower_kit_ratelimit::CidrList;
///
/// let list = CidrList::parse(["10.0.0.0/8", "::1", "2001:db8::/32"]).unwrap();
/// assert!(list.contains("10.1.2.3".parse().unwrap()));
/// assert!(list.contains("::ffff:10.1.2.3".parse().unwrap())); // IPv4-mapped: the IPv4 rule applies
/// assert!(!list.contains("192.0.2.1".parse().unwrap()));
/// assert!(CidrList::parse(["10.0.0.1/8"]).is_err()); // host bits set: a typo, most likely
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CidrList {
    v4: Vec<(u32, u32)>,   // (network, mask)
    v6: Vec<(u128, u128)>, // (network, mask)
}

impl CidrList {
    /// An empty list (contains nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses networks; the error names the first bad entry.
    pub fn parse<I, S>(entries: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = Self::new();
        for entry in entries {
            list.push(entry.as_ref())?;
        }
        Ok(list)
    }

    /// Adds one network.
    pub fn push(&mut self, entry: &str) -> Result<(), ConfigError> {
        let bad = |why: &str| ConfigError::new("cidr", format!("`{entry}`: {why}"));
        let (addr, len) = match entry.trim().split_once('/') {
            Some((a, l)) => (
                a,
                Some(l.parse::<u8>().map_err(|_| bad("bad prefix length"))?),
            ),
            None => (entry.trim(), None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                // An IPv4-mapped network (`::ffff:10.0.0.0/104`) is the IPv4 network it maps.
                let len = match (ip, len) {
                    (IpAddr::V6(_), Some(l)) if l >= 96 => l - 96,
                    (IpAddr::V6(_), Some(_)) => {
                        return Err(bad("prefix too short for an IPv4-mapped network"));
                    }
                    (_, l) => l.unwrap_or(32),
                };
                if len > 32 {
                    return Err(bad("IPv4 prefix longer than 32"));
                }
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                let net = u32::from(v4);
                if net & !mask != 0 {
                    return Err(bad("host bits set after the prefix"));
                }
                self.v4.push((net, mask));
            }
            IpAddr::V6(v6) => {
                let len = len.unwrap_or(128);
                if len > 128 {
                    return Err(bad("IPv6 prefix longer than 128"));
                }
                let mask = prefix_mask(len);
                let net = u128::from(v6);
                if net & !mask != 0 {
                    return Err(bad("host bits set after the prefix"));
                }
                self.v6.push((net, mask));
            }
        }
        Ok(())
    }

    /// Whether the (canonicalised) address is in one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let a = u32::from(v4);
                self.v4.iter().any(|(net, mask)| a & mask == *net)
            }
            IpAddr::V6(v6) => {
                let a = u128::from(v6);
                self.v6.iter().any(|(net, mask)| a & mask == *net)
            }
        }
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

pub(crate) fn prefix_mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

/// Which forwarding header the trusted proxies write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `Forwarded` (RFC 7239) when the request has one, else `X-Forwarded-For`.
    #[default]
    Auto,
    /// Only `Forwarded`.
    Forwarded,
    /// Only `X-Forwarded-For`.
    XForwardedFor,
}

/// Which peers may tell the client's address, and through which header.
///
/// A request whose peer (socket address) is **not** in the list is keyed by that peer, whatever it sends. From a
/// trusted peer, the forwarding header is read from the right, skipping trusted hops; the first untrusted hop is the
/// client. A hop that is not an address (`unknown`, `_hidden`, garbage) ends the walk, and the request is keyed by
/// the last trusted address (the proxy that forwarded it). At most [`MAX_HOPS`] hops are read.
///
/// **Warning**: with [`ForwardedHeader::Auto`], a proxy that writes only `X-Forwarded-For` but passes a client's
/// `Forwarded` header through lets that client choose its key. Name the header your proxies write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    cidrs: CidrList,
    header: ForwardedHeader,
}

impl TrustedProxies {
    /// Trust these networks, reading [`ForwardedHeader::Auto`].
    pub fn new(cidrs: CidrList) -> Self {
        Self {
            cidrs,
            header: ForwardedHeader::Auto,
        }
    }

    /// Which header to read (default [`ForwardedHeader::Auto`]).
    #[must_use]
    pub fn header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// The trusted networks.
    pub fn cidrs(&self) -> &CidrList {
        &self.cidrs
    }

    /// The client's address for a request that came from `peer`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.cidrs.contains(peer) {
            return peer;
        }
        let use_forwarded = match self.header {
            ForwardedHeader::Forwarded => true,
            ForwardedHeader::XForwardedFor => false,
            ForwardedHeader::Auto => headers.contains_key(http::header::FORWARDED),
        };
        if use_forwarded {
            let hops =
                header_elements(headers, http::header::FORWARDED.as_str()).map(forwarded_for);
            self.walk(peer, hops)
        } else {
            let hops = header_elements(headers, "x-forwarded-for").map(Some);
            self.walk(peer, hops)
        }
    }

    /// Walks hops right to left; `None` items are elements without a `for=` (skipped), `Some(text)` are nodes.
    fn walk<'a>(&self, peer: IpAddr, hops: impl Iterator<Item = Option<&'a str>>) -> IpAddr {
        let mut last_trusted = peer;
        for hop in hops.take(MAX_HOPS) {
            let Some(node) = hop else { continue };
            match parse_node(node) {
                Some(ip) if self.cidrs.contains(ip) => last_trusted = ip,
                Some(ip) => return ip,
                None => return last_trusted,
            }
        }
        last_trusted
    }
}

/// The comma-separated elements of every `name` header, right-most first.
fn header_elements<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> + 'a {
    let values: Vec<_> = headers.get_all(name).iter().collect();
    values.into_iter().rev().flat_map(|v| {
        // A value that is not visible ASCII yields one garbage element, which ends the walk.
        let text = v.to_str().unwrap_or("\u{0}");
        text.rsplit(',')
    })
}

/// The `for=` parameter of one `Forwarded` element (`None`: the element has none and is skipped).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim())
    })
}

/// Parses one hop: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:80`, each possibly
/// double-quoted. Anything else (including `unknown` and obfuscated `_ids`) is `None`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let mut s = node.trim();
    if s.len() > 64 {
        return None;
    }
    if let Some(inner) = s.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
        s = inner;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.starts_with(':')) {
            return None;
        }
        return v6
            .parse::<Ipv6Addr>()
            .ok()
            .map(|a| IpAddr::V6(a).to_canonical());
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    let (v4, port) = s.split_once(':')?;
    port.parse::<u16>().ok()?;
    v4.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(CidrList::parse(["10.0.0.0/8", "fd00::/8"]).unwrap())
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn untrusted_peer_is_keyed_by_itself_whatever_it_sends() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=2.2.2.2")]);
        assert_eq!(
            trusted().client_ip(ip("203.0.113.5"), &h),
            ip("203.0.113.5")
        );
    }

    #[test]
    fn right_most_untrusted_hop_wins() {
        // The client forged the left-most entry; the proxy appended the real one.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.2")]);
        assert_eq!(trusted().client_ip(ip("10.0.0.1"), &h), ip("198.51.100.7"));
        // Several header lines are one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7 , 10.0.0.2"),
        ]);
        assert_eq!(trusted().client_ip(ip("10.0.0.1"), &h), ip("198.51.100.7"));
    }

    #[test]
    fn forwarded_is_preferred_over_xff() {
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            (
                "forwarded",
                r#"for=6.6.6.6, for="[2001:db8::17]:4711";proto=https, for=10.0.0.9;by=10.0.0.1"#,
            ),
        ]);
        assert_eq!(trusted().client_ip(ip("10.0.0.1"), &h), ip("2001:db8::17"));
        let only_xff = trusted().header(ForwardedHeader::XForwardedFor);
        assert_eq!(only_xff.client_ip(ip("10.0.0.1"), &h), ip("6.6.6.6"));
    }

    #[test]
    fn garbage_hop_stops_at_the_last_trusted_address() {
        for bad in [
            "unknown",
            "_hidden",
            "not an ip",
            "1.2.3.4:99999",
            "[::1",
            "\"\"",
        ] {
            let h = headers(&[("x-forwarded-for", &format!("7.7.7.7, {bad}, 10.0.0.3"))]);
            assert_eq!(
                trusted().client_ip(ip("10.0.0.1"), &h),
                ip("10.0.0.3"),
                "{bad}"
            );
        }
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(trusted().client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
        // Non-ASCII bytes in a header value.
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"1.2.3.4\xff").unwrap(),
        );
        assert_eq!(trusted().client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn all_trusted_keys_the_left_most_read() {
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.3")]);
        assert_eq!(trusted().client_ip(ip("10.0.0.1"), &h), ip("10.9.9.9"));
        assert_eq!(
            trusted().client_ip(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn a_thousand_hops_are_read_only_up_to_the_cap() {
        let chain = vec!["10.1.1.1"; 1000].join(", ");
        let h = headers(&[("x-forwarded-for", &format!("9.9.9.9, {chain}"))]);
        // The real client is beyond the cap: the walk ends at a trusted hop instead of reading 1 000 entries.
        assert_eq!(trusted().client_ip(ip("10.0.0.1"), &h), ip("10.1.1.1"));
        let garbage = vec!["zz"; 1000].join(",");
        let h = headers(&[("x-forwarded-for", &garbage)]);
        assert_eq!(trusted().client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn mapped_hops_are_canonicalised() {
        let h = headers(&[("x-forwarded-for", "::ffff:198.51.100.7")]);
        assert_eq!(
            trusted().client_ip(ip("::ffff:10.0.0.1"), &h),
            ip("198.51.100.7")
        );
        let h = headers(&[("forwarded", "for=\"[::ffff:198.51.100.8]:1\"")]);
        assert_eq!(trusted().client_ip(ip("10.0.0.1"), &h), ip("198.51.100.8"));
    }

    #[test]
    fn cidr_parsing() {
        assert!(
            CidrList::parse(["0.0.0.0/0"])
                .unwrap()
                .contains(ip("8.8.8.8"))
        );
        assert!(
            CidrList::parse(["::/0"])
                .unwrap()
                .contains(ip("2001:db8::1"))
        );
        assert!(
            CidrList::parse(["::ffff:10.0.0.0/104"])
                .unwrap()
                .contains(ip("10.2.3.4"))
        );
        for bad in [
            "10.0.0.0/33",
            "x",
            "10.0.0.0/",
            "::1/129",
            "::ffff:10.0.0.0/90",
            "fd00::1/8",
        ] {
            let e = CidrList::parse([bad]).unwrap_err();
            assert_eq!(e.field(), "cidr");
            assert!(e.reason().contains(bad), "{e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_header_value_is_safe(xff in "[ -~]{0,300}", fwd in "[ -~]{0,300}") {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&xff) { h.insert("x-forwarded-for", v); }
            if let Ok(v) = HeaderValue::from_str(&fwd) { h.insert("forwarded", v); }
            let _ = trusted().client_ip(ip("10.0.0.1"), &h);
            // An untrusted peer is never affected by headers.
            proptest::prop_assert_eq!(trusted().client_ip(ip("192.0.2.1"), &h), ip("192.0.2.1"));
        }
    }
}
