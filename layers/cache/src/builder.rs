//! `CacheLayerBuilder`: every setting of a cache, checked by `build`.

use crate::{
    key::KeyConfig,
    layer::{CacheLayer, Config, DefaultTtlFn, Shared, TagFn},
    stats::Counters,
    storability::StorePolicy,
    store::{MokaStore, Store},
};
use http::{HeaderName, Uri, request::Parts, response};
use std::{
    fmt,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};
use tower_kit_core::{ConfigError, SystemWallClock, WallClock};

/// Builds a [`CacheLayer`]; [`build`](CacheLayerBuilder::build) checks every value.
#[must_use]
pub struct CacheLayerBuilder<St> {
    store: Option<St>,
    make_default_store: Option<fn(u64) -> St>,
    max_bytes: u64,
    namespace: String,
    version: u32,
    max_entry_size: usize,
    hit_for_pass: Duration,
    coalesce: bool,
    include_host: bool,
    normalize_query: bool,
    key_extension: Option<crate::key::KeyExtension>,
    vary_normalizers: crate::vary::Normalizers,
    cookie_bypass: bool,
    strip_set_cookie: bool,
    heuristic: Option<f32>,
    default_ttls: Vec<(String, Duration)>,
    default_ttl_fn: Option<DefaultTtlFn>,
    tag_headers: Vec<HeaderName>,
    tag_fn: Option<TagFn>,
    strip_tag_headers: bool,
    status_name: String,
    x_cache: bool,
    stale_while_revalidate: Duration,
    stale_if_error: Duration,
    keep_stale: Duration,
    lease_ttl: Duration,
    ranges: bool,
    stale_if_disconnected: Duration,
    any_status: bool,
    targeted_cache_control: Vec<HeaderName>,
    strip_targeted_cache_control: bool,
    clock: Arc<dyn WallClock>,
}

impl<St> fmt::Debug for CacheLayerBuilder<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayerBuilder")
            .field("namespace", &self.namespace)
            .field("version", &self.version)
            .field("max_bytes", &self.max_bytes)
            .field("max_entry_size", &self.max_entry_size)
            .finish_non_exhaustive()
    }
}

const MIB: u64 = 1 << 20;

/// The targeted field RFC 9213 §3 defines for CDN caches, and every shared cache in front of an origin.
const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

impl CacheLayerBuilder<MokaStore> {
    /// The layer with every default, which passes `build`'s checks (a unit test keeps it so), made without a
    /// fallible path.
    pub(crate) fn default_layer() -> CacheLayer<MokaStore> {
        let builder = Self::new();
        let store = MokaStore::new(builder.max_bytes);
        builder.assemble(store)
    }

    pub(crate) fn new() -> Self {
        Self {
            store: None,
            make_default_store: Some(MokaStore::new),
            max_bytes: 64 * MIB,
            namespace: "http".to_owned(),
            version: 1,
            max_entry_size: MIB as usize,
            hit_for_pass: Duration::from_secs(10),
            coalesce: true,
            include_host: true,
            normalize_query: false,
            key_extension: None,
            vary_normalizers: Default::default(),
            cookie_bypass: true,
            strip_set_cookie: false,
            heuristic: None,
            default_ttls: Vec::new(),
            default_ttl_fn: None,
            tag_headers: vec![
                HeaderName::from_static("cache-tag"),
                HeaderName::from_static("surrogate-key"),
            ],
            tag_fn: None,
            strip_tag_headers: true,
            status_name: "tower-kit".to_owned(),
            x_cache: true,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            keep_stale: Duration::from_secs(3600),
            lease_ttl: Duration::from_secs(5),
            ranges: true,
            stale_if_disconnected: Duration::from_secs(3600),
            any_status: true,
            targeted_cache_control: vec![CDN_CACHE_CONTROL],
            strip_targeted_cache_control: false,
            clock: Arc::new(SystemWallClock),
        }
    }

    /// Capacity of the default moka store in bytes (default 64 MiB). Ignored when [`store`](Self::store) is set.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }
}

impl<St: Store> CacheLayerBuilder<St> {
    /// Use another store (a Redis or tiered store, or a moka store shared with another layer).
    pub fn store<T: Store>(self, store: T) -> CacheLayerBuilder<T> {
        CacheLayerBuilder {
            store: Some(store),
            make_default_store: None,
            max_bytes: self.max_bytes,
            namespace: self.namespace,
            version: self.version,
            max_entry_size: self.max_entry_size,
            hit_for_pass: self.hit_for_pass,
            coalesce: self.coalesce,
            include_host: self.include_host,
            normalize_query: self.normalize_query,
            key_extension: self.key_extension,
            vary_normalizers: self.vary_normalizers,
            cookie_bypass: self.cookie_bypass,
            strip_set_cookie: self.strip_set_cookie,
            heuristic: self.heuristic,
            default_ttls: self.default_ttls,
            default_ttl_fn: self.default_ttl_fn,
            tag_headers: self.tag_headers,
            tag_fn: self.tag_fn,
            strip_tag_headers: self.strip_tag_headers,
            status_name: self.status_name,
            x_cache: self.x_cache,
            stale_while_revalidate: self.stale_while_revalidate,
            stale_if_error: self.stale_if_error,
            keep_stale: self.keep_stale,
            lease_ttl: self.lease_ttl,
            ranges: self.ranges,
            stale_if_disconnected: self.stale_if_disconnected,
            any_status: self.any_status,
            targeted_cache_control: self.targeted_cache_control,
            strip_targeted_cache_control: self.strip_targeted_cache_control,
            clock: self.clock,
        }
    }

    /// The key namespace (default `http`): keys start `{namespace}:{version}:`. Letters, digits, `-`, `_`, `.`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The key version (default 1): bump it to make every old entry unreachable after a deploy.
    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// The largest body stored, in bytes (default 1 MiB). Larger bodies stream through uncached.
    pub fn max_entry_size(mut self, bytes: usize) -> Self {
        self.max_entry_size = bytes;
        self
    }

    /// How long a key whose response could not be stored sends requests straight to the origin, without making
    /// them wait for each other (default 10 s; zero turns hit-for-pass off).
    pub fn hit_for_pass(mut self, duration: Duration) -> Self {
        self.hit_for_pass = duration;
        self
    }

    /// With a store shared by several servers (Redis): how long the server that calls the origin for a missing key
    /// holds its lease on the key (default 5 s). The other servers wait for the entry meanwhile, polling the store;
    /// if the holder crashed, they wait at most this long before one of them takes over. Ignored by in-process
    /// stores.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Coalesce concurrent misses for one key into one origin call (default on).
    pub fn coalesce(mut self, on: bool) -> Self {
        self.coalesce = on;
        self
    }

    /// Put the request's host (URI authority or `Host`) in the key (default on). Turn it off for a single site,
    /// so that `localhost` and `127.0.0.1` share entries.
    pub fn include_host(mut self, on: bool) -> Self {
        self.include_host = on;
        self
    }

    /// Sort query parameters by name and drop empty ones in keys (default off: `?b&a` and `?a&b` are different
    /// URLs to an origin that reads parameters in order).
    pub fn normalize_query(mut self, on: bool) -> Self {
        self.normalize_query = on;
        self
    }

    /// Adds a part to every key, from the request (a tenant header); `None` adds nothing.
    pub fn key_extension(
        mut self,
        f: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.key_extension = Some(Arc::new(f));
        self
    }

    /// Normalises a request header a response varies on before it becomes part of the key: `f` gets the request
    /// headers and returns the value to key on (`None`: as if absent). Requests that normalise to the same value share
    /// one stored variant. With a compression layer inside the cache, key `Accept-Encoding` on the coding that layer
    /// picks, so `gzip, br` and `br, gzip, zstd` share the entry when both get the same bytes:
    /// `normalize_vary(ACCEPT_ENCODING, move |h| Some(compression.choose(h).map_or("identity", |c| c.as_str()).into()))`.
    /// Default: `Accept-Encoding` is keyed on the set of known codings it accepts, other headers on their value.
    pub fn normalize_vary(
        mut self,
        name: HeaderName,
        f: impl Fn(&http::HeaderMap) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.vary_normalizers.0.retain(|(n, _)| *n != name);
        self.vary_normalizers.0.push((name, Arc::new(f)));
        self
    }

    /// Requests with `Cookie` are served from and stored in the cache only when the response says `public`
    /// (default on). Off is the pure RFC 9111 behaviour.
    pub fn cookie_bypass(mut self, on: bool) -> Self {
        self.cookie_bypass = on;
        self
    }

    /// Store responses that carry `Set-Cookie`, without that header (default off: such responses are not stored).
    /// The client whose request filled the cache still gets its `Set-Cookie`.
    pub fn strip_set_cookie(mut self, on: bool) -> Self {
        self.strip_set_cookie = on;
        self
    }

    /// Heuristic freshness (RFC 9111 §4.2.2) for responses with `Last-Modified` and no explicit freshness: this
    /// fraction (0 to 1, typically 0.1) of the time since the last modification, at most a day. Off by default.
    pub fn heuristic_freshness(mut self, fraction: f32) -> Self {
        self.heuristic = Some(fraction);
        self
    }

    /// A default TTL for responses under a path prefix that have no freshness information (`/api/` with
    /// [`TtlTier::Minute`](crate::TtlTier::Minute)). The longest matching prefix wins. Off unless configured.
    pub fn default_ttl(mut self, path_prefix: impl Into<String>, ttl: impl Into<Duration>) -> Self {
        self.default_ttls.push((path_prefix.into(), ttl.into()));
        self
    }

    /// A default TTL chosen by a closure over the request; it is asked before the prefixes.
    pub fn default_ttl_fn(
        mut self,
        f: impl Fn(&Parts) -> Option<Duration> + Send + Sync + 'static,
    ) -> Self {
        self.default_ttl_fn = Some(Arc::new(f));
        self
    }

    /// The response headers that carry invalidation tags (default `Cache-Tag` and `Surrogate-Key`), comma- or
    /// space-separated.
    pub fn tag_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.tag_headers = names.into_iter().collect();
        self
    }

    /// Tags from a closure over the request URI and the response head, added to the header tags.
    pub fn tag_fn(
        mut self,
        f: impl Fn(&Uri, &response::Parts) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        self.tag_fn = Some(Arc::new(f));
        self
    }

    /// Remove the tag headers from responses sent to clients (default on: tags are internal).
    pub fn strip_tag_headers(mut self, on: bool) -> Self {
        self.strip_tag_headers = on;
        self
    }

    /// The cache's name in `Cache-Status` (default `tower-kit`); an RFC 9110 token.
    pub fn cache_status_name(mut self, name: impl Into<String>) -> Self {
        self.status_name = name.into();
        self
    }

    /// Add `X-Cache: HIT|MISS` to responses (default on). `Cache-Status` is always added.
    pub fn x_cache(mut self, on: bool) -> Self {
        self.x_cache = on;
        self
    }

    /// `stale-while-revalidate` (RFC 5861) for responses whose `Cache-Control` does not set it (default zero: off).
    /// Within this time after a response goes stale, a request is answered with it at once while one background
    /// request per entry revalidates it. Never for `must-revalidate`, `proxy-revalidate`, `s-maxage` or `no-cache`
    /// responses.
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = window;
        self
    }

    /// `stale-if-error` (RFC 5861) for responses whose `Cache-Control` does not set it (default zero: off). Within
    /// this time after a response goes stale, it answers a request whose refresh failed: the origin answered 500,
    /// 502, 503 or 504, or the inner service returned an error (a connection failure). Never for
    /// `must-revalidate`, `proxy-revalidate`, `s-maxage` or `no-cache` responses.
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = window;
        self
    }

    /// How long a stale response with a validator (`ETag`, `Last-Modified`) stays in the store to be revalidated
    /// with a conditional request (default 1 hour). The store's byte cap evicts it earlier if space is short.
    pub fn keep_stale(mut self, duration: Duration) -> Self {
        self.keep_stale = duration;
        self
    }

    /// Answer `Range` requests from stored responses (RFC 9110 §14, RFC 9111 §3.3–3.4; default on): `206` from a
    /// stored complete `200` or a stored `206` that holds the range, `416` for an unsatisfiable range, `If-Range`
    /// with strong validators only. Off: `Range` requests go to the origin and their answers are not stored.
    pub fn ranges(mut self, on: bool) -> Self {
        self.ranges = on;
        self
    }

    /// How long past its freshness a stored response may answer when the origin cannot be reached (RFC 9111
    /// §4.2.4, "disconnected": the connection is refused, closed before a response, or times out), without the
    /// response saying `stale-if-error` (default 1 hour; zero turns it off). Never for `must-revalidate`,
    /// `proxy-revalidate`, `no-cache` or `s-maxage` responses: those get `504`.
    pub fn stale_if_disconnected(mut self, window: Duration) -> Self {
        self.stale_if_disconnected = window;
        self
    }

    /// Store a response of any final status (RFC 9111 §3; default on): a `400`, `404`, `410`, `500`–`504`, or an
    /// unregistered code such as `299`, `499` or `599`, is stored when it has explicit freshness (`max-age`,
    /// `s-maxage`, `Expires`) or says `public`, unless it says `must-understand` and its status is not one RFC
    /// 9110 defines. Heuristic freshness and default TTLs apply only to the statuses RFC 9110 §15.1 calls
    /// heuristically cacheable (200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501), or to `public`
    /// responses. A response whose status is not heuristically cacheable is never served stale: once its freshness
    /// is over it is validated or fetched again (no `stale-while-revalidate`, `stale-if-error`, `max-stale`, nor a
    /// stale answer for an unreachable origin).
    ///
    /// Off: only 200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 451 and 501 are stored.
    /// Informational (`1xx`) and `304` responses are never stored either way; a `206` only as a part of a complete
    /// response, while [`ranges`](Self::ranges) is on.
    pub fn store_any_status(mut self, on: bool) -> Self {
        self.any_status = on;
        self
    }

    /// The targeted cache-control fields this cache obeys (RFC 9213), in precedence order (default
    /// `[CDN-Cache-Control]`; an empty list turns targeted cache control off). The first of them that a response
    /// carries with a valid, non-empty Structured Field dictionary replaces both `Cache-Control` and `Expires` for
    /// this cache's own storage and freshness decisions (`max-age`, `s-maxage`, `no-store`, `no-cache`, `private`,
    /// `public`, `must-revalidate`, `proxy-revalidate`, `must-understand`, `stale-while-revalidate`,
    /// `stale-if-error`). A field with a syntax error is ignored as a whole, as if absent. Clients still get
    /// `Cache-Control` unchanged. Put a deployment's own field first to give it precedence:
    /// `[HeaderName::from_static("acme-cache-control"), HeaderName::from_static("cdn-cache-control")]`.
    ///
    /// [`build`](Self::build) refuses `Cache-Control`, `Expires` and a name listed twice.
    pub fn targeted_cache_control(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.targeted_cache_control = names.into_iter().collect();
        self
    }

    /// Remove this cache's targeted cache-control fields (those of
    /// [`targeted_cache_control`](Self::targeted_cache_control)) from the responses it sends (default off: they
    /// are forwarded, for the caches further downstream that RFC 9213 lets use them too). The stored response keeps
    /// them, so that a later `304` is judged by the same rules.
    pub fn strip_targeted_cache_control(mut self, on: bool) -> Self {
        self.strip_targeted_cache_control = on;
        self
    }

    /// The wall clock for freshness and `Age` (default the system clock; [`ManualWallClock`](crate::ManualWallClock) in
    /// tests).
    pub fn clock(mut self, clock: impl WallClock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Checks every value and builds the layer.
    pub fn build(mut self) -> Result<CacheLayer<St>, ConfigError> {
        self.check()?;
        let store = self.take_store()?;
        Ok(self.assemble(store))
    }

    /// The layer on `store` from settings already checked (or the defaults, which are valid).
    fn assemble(self, store: St) -> CacheLayer<St> {
        let clock = Arc::clone(&self.clock);
        CacheLayer {
            shared: Arc::new(Shared {
                config: self.into_config(),
                store,
                flights: Arc::default(),
                counters: Counters::default(),
                clock,
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// Checks the values that do not depend on one another, naming the first bad field.
    fn check(&self) -> Result<(), ConfigError> {
        let token = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
        };
        if self.namespace.is_empty()
            || !self
                .namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ConfigError::new(
                "namespace",
                format!(
                    "must be letters, digits, `-`, `_` or `.` (got {:?})",
                    self.namespace
                ),
            ));
        }
        if self.max_entry_size == 0 || self.max_entry_size > u32::MAX as usize {
            return Err(ConfigError::new(
                "max_entry_size",
                format!(
                    "must be between 1 and {} bytes (got {})",
                    u32::MAX,
                    self.max_entry_size
                ),
            ));
        }
        if let Some(f) = self.heuristic
            && !(f > 0.0 && f <= 1.0)
        {
            return Err(ConfigError::new(
                "heuristic_freshness",
                format!("must be a fraction in (0, 1] (got {f})"),
            ));
        }
        for (prefix, ttl) in &self.default_ttls {
            if ttl.is_zero() {
                return Err(ConfigError::new(
                    "default_ttl",
                    format!("must be greater than zero (got 0 for {prefix:?})"),
                ));
            }
            if !prefix.starts_with('/') {
                return Err(ConfigError::new(
                    "default_ttl",
                    format!("the path prefix must start with `/` (got {prefix:?})"),
                ));
            }
        }
        const YEAR: Duration = Duration::from_secs(365 * 86_400);
        for (field, value) in [
            ("stale_while_revalidate", self.stale_while_revalidate),
            ("stale_if_error", self.stale_if_error),
            ("keep_stale", self.keep_stale),
            ("lease_ttl", self.lease_ttl),
            ("stale_if_disconnected", self.stale_if_disconnected),
        ] {
            if value > YEAR {
                return Err(ConfigError::new(
                    field,
                    format!("must be at most a year (got {value:?})"),
                ));
            }
        }
        for (i, name) in self.targeted_cache_control.iter().enumerate() {
            let why = if *name == http::header::CACHE_CONTROL || *name == http::header::EXPIRES {
                "must be a field of its own, not Cache-Control or Expires"
            } else if self.targeted_cache_control[..i].contains(name) {
                "must not name a field twice"
            } else {
                continue;
            };
            return Err(ConfigError::new(
                "targeted_cache_control",
                format!("{why} (got {name})"),
            ));
        }
        if !token(&self.status_name) {
            return Err(ConfigError::new(
                "cache_status_name",
                format!("must be an RFC 9110 token (got {:?})", self.status_name),
            ));
        }
        Ok(())
    }

    /// The store that was given, or the default one made at `max_bytes`.
    fn take_store(&mut self) -> Result<St, ConfigError> {
        match (self.store.take(), self.make_default_store) {
            (Some(store), _) => Ok(store),
            (None, Some(make)) => {
                if self.max_bytes < self.max_entry_size as u64 {
                    return Err(ConfigError::new(
                        "max_bytes",
                        format!(
                            "must be at least max_entry_size ({} bytes) (got {})",
                            self.max_entry_size, self.max_bytes
                        ),
                    ));
                }
                Ok(make(self.max_bytes))
            }
            (None, None) => Err(ConfigError::new("store", "no store was given")),
        }
    }

    /// The checked settings as the configuration every service shares.
    fn into_config(self) -> Config {
        let mut default_ttls = self.default_ttls;
        default_ttls.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        let mut key = KeyConfig::new(&self.namespace, self.version);
        key.include_host = self.include_host;
        key.normalize_query = self.normalize_query;
        key.extension = self.key_extension;
        key.vary = self.vary_normalizers;
        Config {
            key,
            policy: StorePolicy {
                cookie_bypass: self.cookie_bypass,
                strip_set_cookie: self.strip_set_cookie,
                heuristic: self.heuristic,
                heuristic_max: Duration::from_secs(86_400),
                any_status: self.any_status,
                targeted: self.targeted_cache_control.clone(),
            },
            max_entry_size: self.max_entry_size,
            hit_for_pass: self.hit_for_pass,
            coalesce: self.coalesce,
            default_ttls,
            default_ttl_fn: self.default_ttl_fn,
            tag_headers: self.tag_headers,
            tag_fn: self.tag_fn,
            strip_tag_headers: self.strip_tag_headers,
            status_name: self.status_name,
            x_cache: self.x_cache,
            stale_while_revalidate: self.stale_while_revalidate,
            stale_if_error: self.stale_if_error,
            keep_stale: self.keep_stale,
            lease_ttl: self.lease_ttl,
            ranges: self.ranges,
            stale_if_disconnected: self.stale_if_disconnected,
            strip_targeted: if self.strip_targeted_cache_control {
                self.targeted_cache_control
            } else {
                Vec::new()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TtlTier;

    #[test]
    fn the_defaults_pass_the_checks_new_skips() {
        // `CacheLayer::new` assembles the defaults without `build`: they must be what `build` accepts.
        let mut defaults = CacheLayer::builder();
        assert!(defaults.check().is_ok());
        assert!(defaults.take_store().is_ok());
    }

    #[test]
    fn bad_values_name_their_field() {
        let field = |b: CacheLayerBuilder<MokaStore>| b.build().unwrap_err().field();
        assert_eq!(field(CacheLayer::builder().namespace("a:b")), "namespace");
        assert_eq!(field(CacheLayer::builder().namespace("")), "namespace");
        assert_eq!(
            field(CacheLayer::builder().max_entry_size(0)),
            "max_entry_size"
        );
        assert_eq!(
            field(CacheLayer::builder().max_bytes(10).max_entry_size(100)),
            "max_bytes"
        );
        assert_eq!(
            field(CacheLayer::builder().heuristic_freshness(0.0)),
            "heuristic_freshness"
        );
        assert_eq!(
            field(CacheLayer::builder().heuristic_freshness(f32::NAN)),
            "heuristic_freshness"
        );
        assert_eq!(
            field(CacheLayer::builder().default_ttl("/a", Duration::ZERO)),
            "default_ttl"
        );
        assert_eq!(
            field(CacheLayer::builder().default_ttl("a", TtlTier::Hour)),
            "default_ttl"
        );
        assert_eq!(
            field(CacheLayer::builder().cache_status_name("my cache")),
            "cache_status_name"
        );
        assert_eq!(
            field(CacheLayer::builder().stale_if_error(Duration::MAX)),
            "stale_if_error"
        );
        assert_eq!(
            field(CacheLayer::builder().stale_while_revalidate(Duration::from_secs(1 << 40))),
            "stale_while_revalidate"
        );
        assert_eq!(
            field(CacheLayer::builder().keep_stale(Duration::MAX)),
            "keep_stale"
        );
        let cdn = || HeaderName::from_static("cdn-cache-control");
        assert_eq!(
            field(CacheLayer::builder().targeted_cache_control([http::header::CACHE_CONTROL])),
            "targeted_cache_control"
        );
        assert_eq!(
            field(CacheLayer::builder().targeted_cache_control([cdn(), http::header::EXPIRES])),
            "targeted_cache_control"
        );
        let e = CacheLayer::builder()
            .targeted_cache_control([cdn(), cdn()])
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("cdn-cache-control"), "{e}");
        assert!(
            CacheLayer::builder()
                .targeted_cache_control([])
                .build()
                .is_ok()
        );
        let e = CacheLayer::builder().max_entry_size(0).build().unwrap_err();
        assert!(e.to_string().contains("got 0"), "{e}");
    }

    #[test]
    fn longest_default_ttl_prefix_wins() {
        let layer = CacheLayer::builder()
            .default_ttl("/", TtlTier::Minute)
            .default_ttl("/api/reports", TtlTier::Hour)
            .default_ttl("/api", TtlTier::FiveMinutes)
            .build()
            .unwrap();
        let parts = |p: &str| http::Request::get(p).body(()).unwrap().into_parts().0;
        let c = &layer.shared.config;
        assert_eq!(
            c.default_ttl(&parts("/api/reports/1")),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            c.default_ttl(&parts("/api/items")),
            Some(Duration::from_secs(300))
        );
        assert_eq!(c.default_ttl(&parts("/x")), Some(Duration::from_secs(60)));
    }
}
