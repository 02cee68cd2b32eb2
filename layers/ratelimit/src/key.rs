//! Keys: who a request is counted against.

use crate::proxy::{TrustedProxies, prefix_mask};
use http::{Extensions, HeaderMap, HeaderName, Method, Request, Uri, request::Parts};
use sha2::{Digest, Sha256};
use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
    sync::Arc,
};
use tower_kit_core::ConfigError;

/// What kind of value a [`Key`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum KeyKind {
    /// No key could be found: the shared `unknown` bucket.
    Unknown,
    /// One bucket for every request.
    Global,
    /// An IPv4 address.
    Ipv4,
    /// An IPv6 address masked to its prefix.
    Ipv6,
    /// The first 128 bits of the SHA-256 of some bytes (a header value, an API key).
    Hashed,
    /// A number chosen by the application.
    Custom,
}

impl KeyKind {
    fn tag(self) -> &'static str {
        match self {
            KeyKind::Unknown => "unknown",
            KeyKind::Global => "global",
            KeyKind::Ipv4 => "ip4",
            KeyKind::Ipv6 => "ip6",
            KeyKind::Hashed => "h",
            KeyKind::Custom => "c",
        }
    }
}

/// Who a request is counted against: a small, `Copy` value (an address, a hash), never the raw header text, so
/// secrets (API keys) are not kept in memory or sent to a shared backend.
///
/// Its [`Display`](fmt::Display) form is stable across processes and versions (backends that store keys by name,
/// such as Redis, use it): `ip4:c0000201`, `ip6:20010db8000000000000000000000000/64`, `h:<32 hex>`, optionally
/// followed by `@<route hash>`.
///
/// ```
/// use tower_kit_ratelimit::Key;
///
/// let a = Key::from_ip("2001:db8::1".parse().unwrap(), 64);
/// let b = Key::from_ip("2001:db8::ffff:2".parse().unwrap(), 64);
/// assert_eq!(a, b); // same /64
/// assert_eq!(Key::from_ip("::ffff:192.0.2.1".parse().unwrap(), 64).to_string(), "ip4:c0000201");
/// assert_eq!(Key::from_bytes(b"secret").to_string().len(), 2 + 32);
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key {
    value: u128,
    scope: u64,
    kind: KeyKind,
    prefix: u8,
}

impl Key {
    /// The shared bucket of requests for which no key could be found.
    pub const UNKNOWN: Key = Key::raw(KeyKind::Unknown, 0);
    /// The one bucket of a global policy.
    pub const GLOBAL: Key = Key::raw(KeyKind::Global, 0);

    const fn raw(kind: KeyKind, value: u128) -> Self {
        Self {
            value,
            scope: 0,
            kind,
            prefix: 0,
        }
    }

    /// An address; IPv4-mapped IPv6 becomes IPv4, and IPv6 is masked to its first `ipv6_prefix` bits
    /// (clamped to 1..=128), so one client's rotating addresses share a key.
    #[inline]
    pub fn from_ip(ip: IpAddr, ipv6_prefix: u8) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::raw(KeyKind::Ipv4, u128::from(u32::from(v4))),
            IpAddr::V6(v6) => {
                let prefix = ipv6_prefix.clamp(1, 128);
                Self {
                    prefix,
                    ..Self::raw(KeyKind::Ipv6, u128::from(v6) & prefix_mask(prefix))
                }
            }
        }
    }

    /// The first 128 bits of the SHA-256 of `bytes` (an API key, a tenant name).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    fn from_hasher(hasher: Sha256) -> Self {
        let digest = hasher.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        Self::raw(KeyKind::Hashed, u128::from_be_bytes(first))
    }

    /// The key of `Authorization` credentials: the scheme in lower case (schemes are case-insensitive, RFC 9110
    /// §11.1), one space, the credentials as sent. Only the hash is kept.
    fn from_credentials(scheme: &[u8], credentials: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        for chunk in scheme.chunks(32) {
            let mut lower = [0u8; 32];
            let lower = &mut lower[..chunk.len()];
            lower.copy_from_slice(chunk);
            lower.make_ascii_lowercase();
            hasher.update(&*lower);
        }
        hasher.update(b" ");
        hasher.update(credentials);
        Self::from_hasher(hasher)
    }

    /// A number the application chose (a user id).
    pub fn from_u128(value: u128) -> Self {
        Self::raw(KeyKind::Custom, value)
    }

    /// The same key inside a scope (a route): keys in different scopes are different buckets.
    #[must_use]
    pub fn with_scope(mut self, scope: u64) -> Self {
        self.scope = scope;
        self
    }

    /// What the key holds.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The key's value (an address as a number, a hash).
    pub fn value(&self) -> u128 {
        self.value
    }

    /// The scope (0 when none).
    pub fn scope(&self) -> u64 {
        self.scope
    }
}

impl Key {
    /// The key as three words for hashing: the value's low and high halves, and the scope mixed with the kind and
    /// prefix. Equal keys give equal words; equality still compares every field.
    #[inline]
    pub(crate) fn words(&self) -> (u64, u64, u64) {
        (
            self.value as u64,
            (self.value >> 64) as u64,
            self.scope ^ (u64::from(self.kind as u8) << 56) ^ (u64::from(self.prefix) << 48),
        )
    }
}

impl std::hash::Hash for Key {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Two writes instead of four (this is on every request's path); equality still compares every field.
        state.write_u128(self.value);
        state.write_u64(self.words().2);
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.tag())?;
        match self.kind {
            KeyKind::Unknown | KeyKind::Global => {}
            KeyKind::Ipv4 => write!(f, ":{:08x}", self.value)?,
            KeyKind::Ipv6 => write!(f, ":{:032x}/{}", self.value, self.prefix)?,
            KeyKind::Hashed | KeyKind::Custom => write!(f, ":{:032x}", self.value)?,
        }
        if self.scope != 0 {
            write!(f, "@{:016x}", self.scope)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            KeyKind::Ipv4 => write!(
                f,
                "Key({})",
                std::net::Ipv4Addr::from(u32::try_from(self.value).unwrap_or(0))
            ),
            KeyKind::Ipv6 => write!(f, "Key({}/{})", Ipv6Addr::from(self.value), self.prefix),
            _ => write!(f, "Key({self})"),
        }
    }
}

type KeyFn = dyn Fn(&Parts) -> Option<Key> + Send + Sync;

/// The request head as the layer reads it. `parts` is present when a user closure needs the whole [`Parts`] (the
/// layer then splits the request); otherwise the request is read in place, never taken apart.
#[derive(Clone, Copy)]
pub(crate) struct Head<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) extensions: &'a Extensions,
    pub(crate) parts: Option<&'a Parts>,
}

impl<'a> Head<'a> {
    pub(crate) fn of_parts(parts: &'a Parts) -> Self {
        Self {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            extensions: &parts.extensions,
            parts: Some(parts),
        }
    }

    pub(crate) fn of_request<B>(request: &'a Request<B>) -> Self {
        Self {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
            parts: None,
        }
    }
}

impl fmt::Debug for Head<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", self.method)
            .field("uri", self.uri)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum Source {
    PeerIp,
    ClientIp(Arc<TrustedProxies>),
    Header(HeaderName),
    Bearer,
    Global,
    Custom(Arc<KeyFn>),
}

/// How a policy finds a request's [`Key`].
///
/// - [`peer_ip`](Self::peer_ip): the socket peer (through `tower_kit_core::client_addr`: axum's `ConnectInfo` with
///   the `axum` feature, or a `SocketAddr` request extension);
/// - [`client_ip`](Self::client_ip): the client behind [`TrustedProxies`];
/// - [`header`](Self::header): a header value such as an API key, hashed;
/// - [`bearer`](Self::bearer): the token of `Authorization: Bearer <token>`, hashed;
/// - [`global`](Self::global): one bucket for everyone;
/// - [`custom`](Self::custom): any closure over the request head.
///
/// IPv6 addresses are grouped by prefix ([`ipv6_prefix`](Self::ipv6_prefix), default /64, since one subscriber
/// usually gets a whole /64). [`per_route`](Self::per_route) scopes the key by the matched route, and
/// [`or`](Self::or) tries another extractor when this one finds nothing. When nothing is found the request goes to the
/// shared `unknown` bucket ([`Key::UNKNOWN`]) and the layer logs a warning once.
///
/// When `peer_ip` or `client_ip` finds no peer address at all (a server that records none: axum served without
/// `into_make_service_with_connect_info`, or this crate built without the `axum` / `tonic` feature that reads the
/// extension your server inserts), the layer also counts the request in
/// [`MISSING_CLIENT_ADDRESS`](crate::metrics::MISSING_CLIENT_ADDRESS) and logs, once, a warning naming those causes.
#[derive(Clone)]
pub struct KeyExtractor {
    source: Source,
    ipv6_prefix: u8,
    per_route: bool,
    fallback: Option<Arc<KeyExtractor>>,
}

impl fmt::Debug for KeyExtractor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::PeerIp => "peer_ip".to_owned(),
            Source::ClientIp(t) => format!("client_ip({:?})", t.cidrs()),
            Source::Header(h) => format!("header({h})"),
            Source::Bearer => "bearer".to_owned(),
            Source::Global => "global".to_owned(),
            Source::Custom(_) => "custom".to_owned(),
        };
        f.debug_struct("KeyExtractor")
            .field("source", &source)
            .field("ipv6_prefix", &self.ipv6_prefix)
            .field("per_route", &self.per_route)
            .field("fallback", &self.fallback)
            .finish()
    }
}

/// The default IPv6 prefix length used to group addresses.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

impl KeyExtractor {
    /// Whether this extractor keys every request as `other` does: the same source with the same settings
    /// (trusted networks and header, header name), IPv6 prefix, route scoping and fallbacks. Two `custom`
    /// extractors are the same only when one is a clone of the other (one closure): closures cannot be compared.
    pub(crate) fn same_key_as(&self, other: &KeyExtractor) -> bool {
        let source = match (&self.source, &other.source) {
            (Source::PeerIp, Source::PeerIp)
            | (Source::Bearer, Source::Bearer)
            | (Source::Global, Source::Global) => true,
            (Source::ClientIp(a), Source::ClientIp(b)) => a == b,
            (Source::Header(a), Source::Header(b)) => a == b,
            (Source::Custom(a), Source::Custom(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        let fallback = match (&self.fallback, &other.fallback) {
            (None, None) => true,
            (Some(a), Some(b)) => a.same_key_as(b),
            _ => false,
        };
        source
            && fallback
            && self.ipv6_prefix == other.ipv6_prefix
            && self.per_route == other.per_route
    }

    fn with_source(source: Source) -> Self {
        Self {
            source,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
            per_route: false,
            fallback: None,
        }
    }

    /// The peer address of the connection.
    pub fn peer_ip() -> Self {
        Self::with_source(Source::PeerIp)
    }

    /// The client address, believing forwarding headers only from `trusted` peers.
    pub fn client_ip(trusted: TrustedProxies) -> Self {
        Self::with_source(Source::ClientIp(Arc::new(trusted)))
    }

    /// The value of header `name`, hashed (SHA-256, first 128 bits). A missing or empty header finds no key.
    ///
    /// `Authorization` and `Proxy-Authorization` are read as credentials (`<scheme> <credentials>`): the scheme is
    /// case-insensitive and the spaces after it do not count, so `Bearer abc`, `bearer abc` and `BEARER  abc` are
    /// one key. A value without credentials, or sent on more than one header line, finds no key.
    pub fn header(name: HeaderName) -> Self {
        Self::with_source(Source::Header(name))
    }

    /// The token of `Authorization: Bearer <token>` (RFC 6750), hashed: the scheme is matched case-insensitively
    /// (`Bearer`, `bearer`, `BEARER`: one key per token), the token compared exactly. Another scheme, an empty
    /// token or several `Authorization` lines find no key (then [`or`](Self::or), then `unknown`). The token is
    /// never kept, only its hash, so a huge or hostile value costs one hash and 16 bytes of key.
    ///
    /// This keys by what the client *claims*: a made-up token gets a fresh bucket. Check tokens before the layer, or
    /// key by the verified identity with [`custom`](Self::custom); `bearer().or(KeyExtractor::peer_ip())` at least
    /// limits token-less requests per address.
    pub fn bearer() -> Self {
        Self::with_source(Source::Bearer)
    }

    /// One bucket for every request.
    pub fn global() -> Self {
        Self::with_source(Source::Global)
    }

    /// Any closure over the request head; `None` means "no key" (then [`or`](Self::or), then `unknown`).
    pub fn custom<F>(f: F) -> Self
    where
        F: Fn(&Parts) -> Option<Key> + Send + Sync + 'static,
    {
        Self::with_source(Source::Custom(Arc::new(f)))
    }

    /// Group IPv6 addresses by their first `bits` (1..=128; default 64).
    pub fn ipv6_prefix(mut self, bits: u8) -> Result<Self, ConfigError> {
        if !(1..=128).contains(&bits) {
            return Err(ConfigError::new(
                "ipv6_prefix",
                format!("must be between 1 and 128 (got {bits})"),
            ));
        }
        self.ipv6_prefix = bits;
        Ok(self)
    }

    /// Scope the key by route: each route has its own buckets. The route is axum's `MatchedPath` (with the `axum`
    /// feature) or a [`Route`] request extension; requests with neither share one "unmatched" scope (never the raw
    /// path, which a client could vary to get fresh buckets).
    #[must_use]
    pub fn per_route(mut self) -> Self {
        self.per_route = true;
        self
    }

    /// When this extractor finds no key, try `other` (e.g. the API key, else the client IP).
    #[must_use]
    pub fn or(mut self, other: KeyExtractor) -> Self {
        self.fallback = Some(Arc::new(other));
        self
    }

    /// The key of a request, `None` when neither this extractor nor its fallbacks find one.
    pub fn extract(&self, parts: &Parts) -> Option<Key> {
        self.extract_head(&Head::of_parts(parts), &mut false)
    }

    /// Whether this extractor (or a fallback) runs a closure over the whole `Parts`.
    pub(crate) fn needs_parts(&self) -> bool {
        matches!(self.source, Source::Custom(_))
            || self.fallback.as_ref().is_some_and(|f| f.needs_parts())
    }

    /// The key of a request; sets `missing_address` when a peer-address extractor (this one or a fallback) found
    /// no peer address at all.
    #[inline]
    pub(crate) fn extract_head(&self, head: &Head<'_>, missing_address: &mut bool) -> Option<Key> {
        // The default extractor (peer IP, no fallback, no route scope) is small enough to inline into the layer.
        if let (Source::PeerIp, None, false) = (&self.source, &self.fallback, self.per_route) {
            let key = peer_ip(head.extensions).map(|ip| Key::from_ip(ip, self.ipv6_prefix));
            *missing_address |= key.is_none();
            return key;
        }
        self.extract_any(head, missing_address)
    }

    fn extract_any(&self, head: &Head<'_>, missing_address: &mut bool) -> Option<Key> {
        let key = match &self.source {
            Source::PeerIp => {
                let key = peer_ip(head.extensions).map(|ip| Key::from_ip(ip, self.ipv6_prefix));
                *missing_address |= key.is_none();
                key
            }
            Source::ClientIp(trusted) => {
                let key = tower_kit_core::client_addr(head.extensions).map(|a| {
                    Key::from_ip(trusted.client_ip(a.ip(), head.headers), self.ipv6_prefix)
                });
                *missing_address |= key.is_none();
                key
            }
            Source::Header(name)
                if name == http::header::AUTHORIZATION
                    || name == http::header::PROXY_AUTHORIZATION =>
            {
                single_value(head.headers, name)
                    .and_then(credentials)
                    .map(|(scheme, creds)| Key::from_credentials(scheme, creds))
            }
            Source::Header(name) => head
                .headers
                .get(name)
                .filter(|v| !v.is_empty())
                .map(|v| Key::from_bytes(v.as_bytes())),
            Source::Bearer => single_value(head.headers, &http::header::AUTHORIZATION)
                .and_then(credentials)
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer"))
                .map(|(scheme, token)| Key::from_credentials(scheme, token)),
            Source::Global => Some(Key::GLOBAL),
            // The layer splits the request whenever a custom extractor is configured (`needs_parts`).
            Source::Custom(f) => head.parts.and_then(|p| f(p)),
        };
        let key = match key {
            Some(k) => k,
            None => self
                .fallback
                .as_ref()?
                .extract_head(head, missing_address)?,
        };
        Some(if self.per_route {
            key.with_scope(route_scope(head.extensions))
        } else {
            key
        })
    }
}

/// The only value of header `name`; `None` when it is absent or sent on several lines (which one would count?).
fn single_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a [u8]> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then(|| first.as_bytes())
}

/// `<scheme> 1*(SP / HTAB) <credentials>` (RFC 9110 §11.4, tolerant of surrounding whitespace): the scheme and
/// the credentials, `None` when either is empty. Works on bytes: non-ASCII (obs-text) credentials are hashed as
/// sent, never decoded.
fn credentials(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_space(b))?;
    let end = value.iter().rposition(|b| !is_space(b))? + 1;
    let value = &value[start..end];
    let split = value.iter().position(is_space)?;
    let (scheme, rest) = value.split_at(split);
    let creds_start = rest.iter().position(|b| !is_space(b))?;
    Some((scheme, &rest[creds_start..]))
}

/// The peer address, as `tower_kit_core::client_addr` finds it. Under axum the `ConnectInfo` it looks at first is
/// read here directly: the common case then costs one extension lookup (the address is made canonical by
/// [`Key::from_ip`]).
#[inline]
fn peer_ip(extensions: &Extensions) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) =
        extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        return Some(addr.ip());
    }
    tower_kit_core::client_addr(extensions).map(|a| a.ip())
}

/// A route name for [`KeyExtractor::per_route`] in stacks without axum: insert it as a request extension (from your
/// router) before the rate-limit layer runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route(pub Arc<str>);

const UNMATCHED_SCOPE: u64 = 1;

fn route_scope(extensions: &Extensions) -> u64 {
    #[cfg(feature = "axum")]
    if let Some(m) = extensions.get::<axum::extract::MatchedPath>() {
        return crate::store::fnv1a64(m.as_str().as_bytes()) | 2;
    }
    match extensions.get::<Route>() {
        Some(r) => crate::store::fnv1a64(r.0.as_bytes()) | 2,
        None => UNMATCHED_SCOPE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CidrList;
    use std::net::SocketAddr;

    fn parts_from(peer: Option<&str>, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder();
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut req = b.body(()).unwrap();
        if let Some(p) = peer {
            req.extensions_mut()
                .insert(p.parse::<SocketAddr>().unwrap());
        }
        req.into_parts().0
    }

    #[test]
    fn peer_ip_canonicalises_and_groups() {
        let k = KeyExtractor::peer_ip();
        let a = k
            .extract(&parts_from(Some("[::ffff:192.0.2.1]:1"), &[]))
            .unwrap();
        let b = k.extract(&parts_from(Some("192.0.2.1:2"), &[])).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.kind(), KeyKind::Ipv4);
        let c = k
            .extract(&parts_from(Some("[2001:db8:1:2::1]:1"), &[]))
            .unwrap();
        let d = k
            .extract(&parts_from(Some("[2001:db8:1:2:ffff::9]:1"), &[]))
            .unwrap();
        let e = k
            .extract(&parts_from(Some("[2001:db8:1:3::1]:1"), &[]))
            .unwrap();
        assert_eq!(c, d, "same /64");
        assert_ne!(c, e, "next /64");
        let k48 = KeyExtractor::peer_ip().ipv6_prefix(48).unwrap();
        assert_eq!(
            k48.extract(&parts_from(Some("[2001:db8:1:2::1]:1"), &[])),
            k48.extract(&parts_from(Some("[2001:db8:1:3::1]:1"), &[]))
        );
        let k128 = KeyExtractor::peer_ip().ipv6_prefix(128).unwrap();
        assert_ne!(
            k128.extract(&parts_from(Some("[2001:db8::1]:1"), &[])),
            k128.extract(&parts_from(Some("[2001:db8::2]:1"), &[]))
        );
        assert!(KeyExtractor::peer_ip().ipv6_prefix(0).is_err());
        assert!(KeyExtractor::peer_ip().ipv6_prefix(129).is_err());
        assert_eq!(k.extract(&parts_from(None, &[])), None);
    }

    /// axum's `ConnectInfo` (read directly on the default path) gives the same keys as a `SocketAddr` extension:
    /// IPv4-mapped addresses become IPv4, IPv6 is grouped, and it is preferred when both are present.
    #[cfg(feature = "axum")]
    #[test]
    fn connect_info_peer_is_canonical_and_preferred() {
        let with_connect_info = |addr: &str| {
            let mut parts = parts_from(None, &[]);
            parts.extensions.insert(axum::extract::ConnectInfo(
                addr.parse::<SocketAddr>().unwrap(),
            ));
            parts
        };
        let k = KeyExtractor::peer_ip();
        let mapped = k
            .extract(&with_connect_info("[::ffff:192.0.2.1]:1"))
            .unwrap();
        assert_eq!(mapped, Key::from_ip("192.0.2.1".parse().unwrap(), 64));
        assert_eq!(mapped.kind(), KeyKind::Ipv4);
        assert_eq!(
            k.extract(&with_connect_info("[2001:db8:1:2::1]:1")),
            k.extract(&parts_from(Some("[2001:db8:1:2:ffff::9]:1"), &[]))
        );
        let mut both = with_connect_info("192.0.2.1:1");
        both.extensions
            .insert("198.51.100.1:1".parse::<SocketAddr>().unwrap());
        assert_eq!(k.extract(&both), Some(mapped));
    }

    #[test]
    fn header_keys_are_hashed_and_fall_back() {
        let k =
            KeyExtractor::header(HeaderName::from_static("x-api-key")).or(KeyExtractor::peer_ip());
        let a = k
            .extract(&parts_from(
                Some("192.0.2.1:1"),
                &[("x-api-key", "sk_live_123")],
            ))
            .unwrap();
        assert_eq!(a.kind(), KeyKind::Hashed);
        assert!(!format!("{a} {a:?}").contains("sk_live"));
        assert_eq!(a, Key::from_bytes(b"sk_live_123"));
        let b = k
            .extract(&parts_from(Some("192.0.2.1:1"), &[("x-api-key", "")]))
            .unwrap();
        assert_eq!(b.kind(), KeyKind::Ipv4);
    }

    #[test]
    fn client_ip_through_trusted_proxy() {
        let k = KeyExtractor::client_ip(TrustedProxies::new(
            CidrList::parse(["10.0.0.0/8"]).unwrap(),
            crate::ForwardedHeader::XForwardedFor,
        ));
        let spoofed = k
            .extract(&parts_from(
                Some("192.0.2.9:1"),
                &[("x-forwarded-for", "1.2.3.4")],
            ))
            .unwrap();
        assert_eq!(spoofed, Key::from_ip("192.0.2.9".parse().unwrap(), 64));
        let real = k
            .extract(&parts_from(
                Some("10.0.0.1:1"),
                &[("x-forwarded-for", "1.2.3.4")],
            ))
            .unwrap();
        assert_eq!(real, Key::from_ip("1.2.3.4".parse().unwrap(), 64));
    }

    fn auth(values: &[&[u8]]) -> Parts {
        let mut parts = parts_from(Some("192.0.2.1:1"), &[]);
        for v in values {
            parts.headers.append(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_bytes(v).unwrap(),
            );
        }
        parts
    }

    /// RFC 9110 §11.1: auth schemes are case-insensitive, so the scheme's case (and the spaces after it) never make
    /// a new bucket; the token is compared exactly.
    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let k = KeyExtractor::bearer();
        let one = k.extract(&auth(&[b"Bearer abc.def"])).unwrap();
        assert_eq!(one.kind(), KeyKind::Hashed);
        for same in [
            &b"bearer abc.def"[..],
            b"BEARER abc.def",
            b"bEaReR abc.def",
            b"Bearer   abc.def",
            b"Bearer\tabc.def",
            b"Bearer abc.def  ",
        ] {
            assert_eq!(
                k.extract(&auth(&[same])),
                Some(one),
                "{:?}",
                String::from_utf8_lossy(same)
            );
        }
        assert_ne!(
            k.extract(&auth(&[b"Bearer ABC.DEF"])),
            Some(one),
            "tokens are case-sensitive"
        );
        // `header(AUTHORIZATION)` normalises the scheme the same way, for every scheme, and agrees with `bearer()`.
        let h = KeyExtractor::header(http::header::AUTHORIZATION);
        assert_eq!(h.extract(&auth(&[b"BEARER abc.def"])), Some(one));
        assert_eq!(
            h.extract(&auth(&[b"Basic dXNlcjpwYXNz"])),
            h.extract(&auth(&[b"basic  dXNlcjpwYXNz"]))
        );
        assert!(
            !format!("{one} {one:?} {k:?}").contains("abc"),
            "the token is never kept"
        );
    }

    /// Hostile values: no panic, no key for an empty token, another scheme or an ambiguous header, and a fixed-size
    /// key however large the token.
    #[test]
    fn hostile_authorization_values() {
        let k = KeyExtractor::bearer();
        for none in [
            &b""[..],
            b"Bearer",
            b"Bearer ",
            b"Bearer \t ",
            b"   ",
            b"Basic dXNlcjpwYXNz",
            b"Bearerabc",
            b"Token abc",
        ] {
            assert_eq!(
                k.extract(&auth(&[none])),
                None,
                "{:?}",
                String::from_utf8_lossy(none)
            );
        }
        assert_eq!(k.extract(&auth(&[])), None);
        assert_eq!(
            k.extract(&auth(&[b"Bearer a", b"Bearer b"])),
            None,
            "two lines"
        );
        let fallback = KeyExtractor::bearer().or(KeyExtractor::peer_ip());
        assert_eq!(
            fallback.extract(&auth(&[b"Bearer "])),
            Some(Key::from_ip("192.0.2.1".parse().unwrap(), 64))
        );
        // Non-ASCII (obs-text) bytes are hashed as sent.
        let latin = k.extract(&auth(&[b"Bearer caf\xe9\xff"])).unwrap();
        assert_ne!(Some(latin), k.extract(&auth(&[b"Bearer caf\xe9\xfe"])));
        // A megabyte token: one hash, a 16-byte key.
        let mut huge = b"BEARER ".to_vec();
        huge.extend(std::iter::repeat_n(b'x', 1 << 20));
        let big = k.extract(&auth(&[&huge])).unwrap();
        assert_eq!(std::mem::size_of_val(&big), std::mem::size_of::<Key>());
        assert!(std::mem::size_of::<Key>() <= 48);
        huge[0] = b'b';
        assert_eq!(k.extract(&auth(&[&huge])), Some(big));
    }

    proptest::proptest! {
        /// Any bytes a header value may hold: no panic; the scheme's case never changes the key.
        #[test]
        fn any_authorization_is_safe(
            scheme in "[A-Za-z]{1,10}",
            gap in "[ \t]{1,3}",
            token in proptest::collection::vec(0x21u8..=0xff, 0..200),
        ) {
            proptest::prop_assume!(token.iter().all(|b| *b != 0x7f));
            let mut value = scheme.clone().into_bytes();
            value.extend(gap.as_bytes());
            value.extend(&token);
            let mut upper = scheme.to_ascii_uppercase().into_bytes();
            upper.push(b' ');
            upper.extend(&token);
            for k in [KeyExtractor::bearer(), KeyExtractor::header(http::header::AUTHORIZATION)] {
                let a = k.extract(&auth(&[&value]));
                let b = k.extract(&auth(&[&upper]));
                proptest::prop_assert_eq!(a, b);
                proptest::prop_assert_eq!(a.is_some(), !token.is_empty() && (
                    scheme.eq_ignore_ascii_case("bearer") || !matches!(k.source, Source::Bearer)
                ));
            }
        }
    }

    #[test]
    fn missing_address_is_reported() {
        let mut missing = false;
        let head_parts = parts_from(None, &[]);
        let head = Head::of_parts(&head_parts);
        assert_eq!(
            KeyExtractor::peer_ip().extract_head(&head, &mut missing),
            None
        );
        assert!(missing);
        let trusted = TrustedProxies::new(
            CidrList::parse(["10.0.0.0/8"]).unwrap(),
            crate::ForwardedHeader::XForwardedFor,
        );
        let mut missing = false;
        let k = KeyExtractor::global().per_route();
        assert!(k.extract_head(&head, &mut missing).is_some());
        assert!(!missing);
        let k = KeyExtractor::header(HeaderName::from_static("x-api-key"))
            .or(KeyExtractor::client_ip(trusted));
        assert_eq!(k.extract_head(&head, &mut missing), None);
        assert!(missing, "found by the fallback");
        let with_peer = parts_from(Some("192.0.2.1:1"), &[]);
        let mut missing = false;
        assert!(
            KeyExtractor::peer_ip()
                .extract_head(&Head::of_parts(&with_peer), &mut missing)
                .is_some()
        );
        assert!(!missing);
    }

    #[test]
    fn per_route_scopes_and_never_uses_the_raw_path() {
        let k = KeyExtractor::global().per_route();
        let mut p1 = parts_from(None, &[]);
        p1.extensions.insert(Route("/a".into()));
        let mut p2 = parts_from(None, &[]);
        p2.extensions.insert(Route("/b".into()));
        let (a, b) = (k.extract(&p1).unwrap(), k.extract(&p2).unwrap());
        assert_ne!(a, b);
        let mut unmatched1 = parts_from(None, &[]);
        unmatched1.uri = "/x".parse().unwrap();
        let mut unmatched2 = parts_from(None, &[]);
        unmatched2.uri = "/y".parse().unwrap();
        assert_eq!(k.extract(&unmatched1), k.extract(&unmatched2));
    }

    #[test]
    fn display_is_stable() {
        assert_eq!(Key::UNKNOWN.to_string(), "unknown");
        assert_eq!(
            Key::from_ip("2001:db8::1".parse().unwrap(), 64).to_string(),
            "ip6:20010db8000000000000000000000000/64"
        );
        assert_eq!(
            Key::from_u128(255).with_scope(16).to_string(),
            "c:000000000000000000000000000000ff@0000000000000010"
        );
        // SHA-256("abc") starts with ba7816bf8f01cfea414140de5dae2223.
        assert_eq!(
            Key::from_bytes(b"abc").to_string(),
            "h:ba7816bf8f01cfea414140de5dae2223"
        );
    }
}
