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

/// Which header the trusted proxies write: the only one believed.
///
/// There is no automatic choice. A proxy rewrites or appends to the header it is configured for and passes every
/// other header through untouched, so a limiter that also read another forwarding header (say `Forwarded` when
/// nginx appends only to `X-Forwarded-For`) would let a client choose its own key by sending it. Name the header
/// your proxies set; the book shows the nginx, HAProxy and Envoy settings for each.
///
/// Parses from its header name, case-insensitively (`"x-forwarded-for"`, `"forwarded"`, `"x-real-ip"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (appended to by each proxy).
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239); only the `for=` parameters are read.
    Forwarded,
    /// `X-Real-IP: client` (set, overwriting any client value, by the proxy).
    XRealIp,
}

impl ForwardedHeader {
    /// The header's name, lower case.
    pub fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
            ForwardedHeader::XRealIp => "x-real-ip",
        }
    }
}

impl std::fmt::Display for ForwardedHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ForwardedHeader {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        [
            ForwardedHeader::XForwardedFor,
            ForwardedHeader::Forwarded,
            ForwardedHeader::XRealIp,
        ]
        .into_iter()
        .find(|h| h.name().eq_ignore_ascii_case(s.trim()))
        .ok_or_else(|| {
            ConfigError::new(
                "header",
                format!("must be `x-forwarded-for`, `forwarded` or `x-real-ip` (got {s:?})"),
            )
        })
    }
}

/// Which peers may tell the client's address, and through which header.
///
/// A request whose peer (socket address) is **not** in the list is keyed by that peer, whatever it sends. From a
/// trusted peer, the one named [`ForwardedHeader`] is read from the right, skipping trusted hops; the first
/// untrusted hop is the client. Every other forwarding header is ignored, whatever it says. A hop that is not an
/// address (`unknown`, `_hidden`, garbage) ends the walk, and the request is keyed by the last trusted address (the
/// proxy that forwarded it). At most [`MAX_HOPS`] hops are read.
///
/// ```
/// use tower_kit_ratelimit::{CidrList, ForwardedHeader, TrustedProxies};
///
/// let nginx = TrustedProxies::new(CidrList::parse(["10.0.0.0/8"]).unwrap(), ForwardedHeader::XForwardedFor);
/// // The same, from configuration text; a list without a header is an error naming the field.
/// let same = TrustedProxies::builder().networks(["10.0.0.0/8"]).header(ForwardedHeader::XForwardedFor).build();
/// assert_eq!(same.unwrap(), nginx);
/// let e = TrustedProxies::builder().networks(["10.0.0.0/8"]).build().unwrap_err();
/// assert_eq!(e.field(), "header");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedProxies {
    cidrs: CidrList,
    header: ForwardedHeader,
}

impl TrustedProxies {
    /// Trust these networks, believing only `header` from them.
    pub fn new(cidrs: CidrList, header: ForwardedHeader) -> Self {
        Self { cidrs, header }
    }

    /// A builder that checks the settings: networks given as text, and a header that must be named when any
    /// network is trusted.
    pub fn builder() -> TrustedProxiesBuilder {
        TrustedProxiesBuilder::default()
    }

    /// The trusted networks.
    pub fn cidrs(&self) -> &CidrList {
        &self.cidrs
    }

    /// The header believed from them.
    pub fn header(&self) -> ForwardedHeader {
        self.header
    }

    /// The client's address for a request that came from `peer`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.cidrs.contains(peer) {
            return peer;
        }
        match self.header {
            ForwardedHeader::Forwarded => {
                let hops =
                    header_elements(headers, http::header::FORWARDED.as_str()).map(forwarded_for);
                self.walk(peer, hops)
            }
            other => self.walk(peer, header_elements(headers, other.name()).map(Some)),
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

/// Builds [`TrustedProxies`] from configuration: see [`TrustedProxies::builder`].
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct TrustedProxiesBuilder {
    networks: Vec<String>,
    header: Option<ForwardedHeader>,
}

impl TrustedProxiesBuilder {
    /// Adds trusted networks (`10.0.0.0/8`, `2001:db8::/32`, bare addresses); blank entries are skipped, so a
    /// comma-separated setting that is empty trusts nobody.
    pub fn networks<I, S>(mut self, networks: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.networks.extend(
            networks
                .into_iter()
                .map(|n| n.as_ref().trim().to_owned())
                .filter(|n| !n.is_empty()),
        );
        self
    }

    /// The header the trusted proxies write (required when any network is trusted).
    pub fn header(mut self, header: ForwardedHeader) -> Self {
        self.header = Some(header);
        self
    }

    /// Checks the settings: a bad network is an error naming `cidr`; networks without a header an error naming
    /// `header`. No networks at all (trust nobody) needs no header.
    pub fn build(self) -> Result<TrustedProxies, ConfigError> {
        let cidrs = CidrList::parse(&self.networks)?;
        let header = match self.header {
            Some(header) => header,
            None if cidrs.is_empty() => ForwardedHeader::XForwardedFor, // never read: nobody is trusted
            None => {
                return Err(ConfigError::new(
                    "header",
                    "trusted proxies are set but no client IP header is named: choose the one your proxies \
                     write (x-forwarded-for, forwarded or x-real-ip); any other would let clients pick their key",
                ));
            }
        };
        Ok(TrustedProxies { cidrs, header })
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

    fn trusted_with(header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies::new(CidrList::parse(["10.0.0.0/8", "fd00::/8"]).unwrap(), header)
    }

    fn trusted() -> TrustedProxies {
        trusted_with(ForwardedHeader::XForwardedFor)
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

    /// Only the named header is read: a client's own `Forwarded` passed through by an `X-Forwarded-For` proxy
    /// (stock nginx) changes nothing, and the other way round.
    #[test]
    fn only_the_named_header_is_believed() {
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            (
                "forwarded",
                r#"for=6.6.6.6, for="[2001:db8::17]:4711";proto=https, for=10.0.0.9;by=10.0.0.1"#,
            ),
            ("x-real-ip", "203.0.113.9"),
        ]);
        let peer = ip("10.0.0.1");
        let fwd = trusted_with(ForwardedHeader::Forwarded);
        assert_eq!(fwd.client_ip(peer, &h), ip("2001:db8::17"));
        assert_eq!(trusted().client_ip(peer, &h), ip("6.6.6.6"));
        let real = trusted_with(ForwardedHeader::XRealIp);
        assert_eq!(real.client_ip(peer, &h), ip("203.0.113.9"));
        // A varying unnamed header never changes the key.
        for i in 0..50u8 {
            let mut h2 = h.clone();
            h2.insert(
                "forwarded",
                HeaderValue::from_str(&format!("for=192.0.2.{i}")).unwrap(),
            );
            h2.insert(
                "x-real-ip",
                HeaderValue::from_str(&format!("192.0.2.{i}")).unwrap(),
            );
            assert_eq!(trusted().client_ip(peer, &h2), ip("6.6.6.6"));
        }
        // Without the named header, the proxy itself is the key.
        let only_forwarded = headers(&[("forwarded", "for=192.0.2.1")]);
        assert_eq!(trusted().client_ip(peer, &only_forwarded), peer);
        let only_xff = headers(&[("x-forwarded-for", "192.0.2.1")]);
        assert_eq!(fwd.client_ip(peer, &only_xff), peer);
        assert_eq!(real.client_ip(peer, &only_xff), peer);
    }

    #[test]
    fn header_names_parse_and_the_builder_requires_one() {
        for (text, h) in [
            ("x-forwarded-for", ForwardedHeader::XForwardedFor),
            ("X-Forwarded-For", ForwardedHeader::XForwardedFor),
            (" forwarded ", ForwardedHeader::Forwarded),
            ("X-REAL-IP", ForwardedHeader::XRealIp),
        ] {
            assert_eq!(text.parse::<ForwardedHeader>().unwrap(), h);
            assert_eq!(h.to_string().parse::<ForwardedHeader>().unwrap(), h);
        }
        for bad in ["", "auto", "x-forwarded", "forwarded-for"] {
            assert_eq!(
                bad.parse::<ForwardedHeader>().unwrap_err().field(),
                "header"
            );
        }
        let e = TrustedProxies::builder()
            .networks(["127.0.0.1/32"])
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "header");
        assert!(e.reason().contains("x-forwarded-for"), "{e}");
        let e = TrustedProxies::builder()
            .networks(["127.0.0.1/33"])
            .header(ForwardedHeader::Forwarded)
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "cidr");
        // Nobody trusted: no header needed, and headers never matter.
        let nobody = TrustedProxies::builder()
            .networks(["", " "])
            .build()
            .unwrap();
        assert!(nobody.cidrs().is_empty());
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(nobody.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
        let ok = TrustedProxies::builder()
            .networks(["10.0.0.0/8", "fd00::/8"])
            .header(ForwardedHeader::XRealIp)
            .build()
            .unwrap();
        assert_eq!(ok, trusted_with(ForwardedHeader::XRealIp));
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
        assert_eq!(
            trusted_with(ForwardedHeader::Forwarded).client_ip(ip("10.0.0.1"), &h),
            ip("10.0.0.1")
        );
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
        assert_eq!(
            trusted_with(ForwardedHeader::Forwarded).client_ip(ip("10.0.0.1"), &h),
            ip("198.51.100.8")
        );
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
            for header in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded, ForwardedHeader::XRealIp] {
                let _ = trusted_with(header).client_ip(ip("10.0.0.1"), &h);
            }
            // An untrusted peer is never affected by headers.
            proptest::prop_assert_eq!(trusted().client_ip(ip("192.0.2.1"), &h), ip("192.0.2.1"));
        }
    }
}
