//! A caching reverse proxy: [`tower_kit_cache::CacheLayer`] in front of any HTTP/1.1 service.
//!
//! Every request (any method, path and query, every end-to-end header) is forwarded to one upstream with a pooled
//! hyper-util client; hop-by-hop headers (RFC 9110 §7.6.1) are removed in both directions; every status and
//! end-to-end header of the upstream's answer reaches the client, with `Date` added when the upstream sent none and
//! `Via` appended. Responses are cached as RFC 9111 says for a shared cache: no default TTL, no `Cookie` rule beyond
//! the RFC's, `Authorization` only with `public`/`s-maxage`/`must-revalidate`.
//!
//! Each connection is served on its own task and the upstream client keeps a pool of connections, so a slow
//! upstream answer never holds up other requests. The upstream is plain `http://` (no TLS), spoken in HTTP/1.1;
//! clients speak HTTP/1.1 or cleartext HTTP/2 to the proxy, which serves them through [`tower_kit::serve`] (header
//! and idle deadlines, a connection cap, a listen backlog: see `--help`).
//!
//! # The upstream, bounded
//!
//! - `--upstream-connect-timeout` (default `5s`): the longest a TCP connection to the upstream may take to open;
//!   then `504 Gateway Timeout`.
//! - `--upstream-timeout` (default `30s`): the longest wait for the response head, counted from the last request
//!   byte sent to the upstream (a slow upload that keeps moving is never cut off); then `504 Gateway Timeout`.
//! - `--upstream-body-timeout` (default `30s`): the longest gap between two chunks of the response body (and
//!   between the head and the first chunk); then `504 Gateway Timeout` if the head was not sent yet, else the
//!   client's connection is aborted.
//!
//! Durations are written `500ms`, `2s`, `1m` ([`UpstreamTimeouts`] in code). An upstream that refuses the
//! connection or cannot be reached gives `502 Bad Gateway` at once; so does a malformed response. Each of these
//! failures reaches the cache as the inner service's error, which the cache reads as "the origin could not be
//! reached" (RFC 9111 §4.2.4): a stored response that has gone stale answers instead of the `502` or `504`, within
//! its `stale-if-error` or `--stale-if-disconnected` (default one hour), unless it says
//! `must-revalidate`, `proxy-revalidate`, `s-maxage` or `no-cache`: then the cache answers `504 Gateway Timeout`
//! itself. An upstream's own `5xx` answer is an answer, not a disconnection.
//!
//! Stored complete responses answer `Range` requests (`206`, `416`, `If-Range` with strong validators), and a `206`
//! from the upstream is stored and combined with later parts: see the crate's README.
//!
//! The response head is forwarded when the first chunk of its body has arrived, so that a malformed first chunk or
//! an upstream silent after its head still gets an error response. Once the head has been sent, an error in the body
//! (a malformed chunk, a body shorter than its `Content-Length`, a gap longer than the body timeout) aborts the
//! client's connection: the client sees an incomplete message, never a short body that looks whole, and the cache
//! stores nothing. `Transfer-Encoding` from the upstream wins over its `Content-Length` (RFC 9112 §6.3): the length is
//! dropped, so the client is never told a length other than the body's. Interim `1xx` responses from the upstream are
//! not forwarded: hyper 1's server cannot send them.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, Response, Uri, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};
use std::{future::poll_fn, net::SocketAddr, str::FromStr, time::Duration};
use tokio::net::TcpListener;
use tower_kit::serve::ServeConfig;
use tower_kit_cache::{Cache, CacheBody, CacheLayer, CacheLayerBuilder, MokaStore};
use tower_layer::Layer;
use tower_service::Service;

/// The proxy's flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "cache-proxy",
    about = "A caching reverse proxy: an RFC 9111 shared cache (tower-kit-cache) in front of one HTTP/1.1 upstream.",
    long_about = "A caching reverse proxy: an RFC 9111 shared cache (tower-kit-cache) in front of one HTTP/1.1 \
        upstream.\n\nEvery method, path, query and end-to-end header is forwarded; hop-by-hop headers (Connection \
        and the headers it names, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade, Proxy-*) are removed both \
        ways. Responses are stored only as their own Cache-Control / Expires allow (no default TTL); Cache-Status, \
        X-Cache and Age say what the cache did. The upstream must be plain http:// (no TLS)."
)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "CACHE_PROXY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The service to proxy to: `http://host:port` with an optional base path (`http://10.0.0.5:3000/app`).
    /// Only plain http is supported.
    #[arg(long, env = "CACHE_PROXY_UPSTREAM")]
    pub upstream: Upstream,

    /// The longest a TCP connection to the upstream may take to open (`500ms`, `2s`, `1m`); then 504 Gateway
    /// Timeout. A refused connection is a 502 at once.
    #[arg(long, env = "CACHE_PROXY_UPSTREAM_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub upstream_connect_timeout: Duration,

    /// The longest wait for the upstream's response head, counted from the last request byte sent to it; then 504
    /// Gateway Timeout (or a stored response that may be served stale).
    #[arg(long, env = "CACHE_PROXY_UPSTREAM_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,

    /// The longest gap between two chunks of the upstream's response body; then 504 Gateway Timeout if the head
    /// was not yet sent, else the client's connection is aborted (and nothing is cached).
    #[arg(long, env = "CACHE_PROXY_UPSTREAM_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub upstream_body_timeout: Duration,

    /// Capacity of the in-memory cache, in bytes (entries are weighed by their size).
    #[arg(long, env = "CACHE_PROXY_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_bytes: u64,

    /// How long past its freshness a stored response may answer when the upstream cannot be reached (refused,
    /// unreachable, closed before a response, a timeout), without `stale-if-error` (RFC 9111 §4.2.4), e.g. `30m`.
    /// Never for `must-revalidate`, `proxy-revalidate`, `s-maxage` or `no-cache` responses: those get 504.
    #[arg(long, env = "CACHE_PROXY_STALE_IF_DISCONNECTED", default_value = "60m", value_parser = parse_duration)]
    pub stale_if_disconnected: Duration,

    /// Largest response body stored, in bytes; larger bodies stream through uncached.
    #[arg(long, env = "CACHE_PROXY_MAX_ENTRY_SIZE", default_value_t = 8 * 1024 * 1024)]
    pub max_entry_size: usize,

    /// Deadline for a new connection's first byte and complete request head, and for each later request head from
    /// its first byte; connections that miss it are closed (silent sockets, slowloris). E.g. `10s`, `500ms`.
    #[arg(long, env = "CACHE_PROXY_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// How long a keep-alive connection with no request in flight stays open, e.g. `60s`.
    #[arg(long, env = "CACHE_PROXY_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// The most client connections served at once. At the cap a new connection closes the longest-idle one; when
    /// all are busy, accepting pauses until one frees. Default: half of what the open-file limit leaves
    /// (`ulimit -n` less an eighth, halved), since each busy client connection can hold an upstream connection.
    #[arg(long, env = "CACHE_PROXY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Listen backlog: connections the kernel queues before they are accepted (capped by `net.core.somaxconn`).
    #[arg(long, env = "CACHE_PROXY_LISTEN_BACKLOG", default_value_t = tower_kit::serve::DEFAULT_LISTEN_BACKLOG)]
    pub listen_backlog: u32,

    /// How often HTTP/2 client connections are pinged to find peers that went away, e.g. `20s`; `0` turns pings
    /// off.
    #[arg(long, env = "CACHE_PROXY_HTTP2_KEEP_ALIVE_INTERVAL", default_value = "20s", value_parser = parse_duration)]
    pub http2_keep_alive_interval: Duration,

    /// How long an HTTP/2 ping may go unanswered before the connection is closed, e.g. `20s`.
    #[arg(long, env = "CACHE_PROXY_HTTP2_KEEP_ALIVE_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub http2_keep_alive_timeout: Duration,

    /// The most concurrent requests (streams) one HTTP/2 client connection may have open.
    #[arg(
        long,
        env = "CACHE_PROXY_HTTP2_MAX_CONCURRENT_STREAMS",
        default_value_t = tower_kit::serve::DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS
    )]
    pub http2_max_concurrent_streams: u32,

    /// How long requests in flight may finish after Ctrl-C or SIGTERM, e.g. `10s`.
    #[arg(long, env = "CACHE_PROXY_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

/// The upstream: an `http://` authority and an optional base path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    authority: http::uri::Authority,
    base_path: String,
}

impl FromStr for Upstream {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let uri: Uri = s.parse().map_err(|e| format!("not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err("https upstreams are not supported (plain http only)".into());
            }
            _ => return Err("the upstream must be an http:// URL".into()),
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| "the upstream URL has no host".to_owned())?;
        if uri.query().is_some() {
            return Err("the upstream URL must not have a query".into());
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            authority,
            base_path,
        })
    }
}

impl Upstream {
    /// The upstream URI for a request target.
    fn target(&self, uri: &Uri) -> Result<Uri, http::Error> {
        let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
        Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(format!("{}{path_and_query}", self.base_path))
            .build()
    }
}

/// The cache in its pure RFC 9111 setting: freshness only from responses, no `Cookie` bypass.
pub fn cache_builder(args: &Args) -> CacheLayerBuilder<MokaStore> {
    CacheLayer::builder()
        .max_bytes(args.max_bytes)
        .max_entry_size(args.max_entry_size)
        .cookie_bypass(false)
        .stale_if_disconnected(args.stale_if_disconnected)
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1): those `Connection` names, `Connection` itself,
/// `Keep-Alive`, `TE`, `Transfer-Encoding`, `Upgrade` (the shared list of [`tower_kit_core::strip_hop_by_hop`]), and
/// for a proxy also `Trailer` and every `Proxy-*` header.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    tower_kit_core::strip_hop_by_hop(headers);
    headers.remove(header::TRAILER);
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

/// What the proxy adds to `Via` in both directions.
const VIA: &str = "1.1 cache-proxy";

mod upstream;
pub use upstream::{Forward, UpstreamBody, UpstreamError, UpstreamTimeouts, parse_duration};

/// Why the upstream could not answer.
pub type ForwardError = UpstreamError;

impl Args {
    /// The upstream timeouts these flags set.
    pub fn upstream_timeouts(&self) -> UpstreamTimeouts {
        UpstreamTimeouts {
            connect: self.upstream_connect_timeout,
            response: self.upstream_timeout,
            body_idle: self.upstream_body_timeout,
        }
    }
}

// ANCHOR: proxy
/// What the proxy answers: the cached or upstream response, or its own `502`/`504`.
pub type ProxyBody = Either<CacheBody<UpstreamBody>, Full<Bytes>>;

/// The whole proxy for one connection: the cache over [`Forward`], with upstream failures turned into
/// `502 Bad Gateway` or `504 Gateway Timeout` ([`UpstreamError::status`]).
#[derive(Clone, Debug)]
pub struct Proxy {
    cached: Cache<Forward>,
}

impl Proxy {
    /// The proxy to `upstream` through `cache`, with the default [`UpstreamTimeouts`].
    pub fn new(upstream: Upstream, cache: &CacheLayer) -> Self {
        Self::with_timeouts(upstream, UpstreamTimeouts::default(), cache)
    }

    /// The proxy to `upstream` through `cache`, waiting on the upstream as long as `timeouts` say.
    pub fn with_timeouts(
        upstream: Upstream,
        timeouts: UpstreamTimeouts,
        cache: &CacheLayer,
    ) -> Self {
        Self {
            cached: cache.layer(Forward::with_timeouts(upstream, timeouts)),
        }
    }

    /// Answers one request.
    pub async fn handle(mut self, req: Request<Incoming>) -> Response<ProxyBody> {
        let result = async {
            poll_fn(|cx| self.cached.poll_ready(cx)).await?;
            self.cached.call(req).await
        }
        .await;
        match result {
            Ok(response) => response.map(Either::Left),
            Err(e) => {
                tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "upstream failed");
                e.response().map(Either::Right)
            }
        }
    }
}

/// Serves `proxy` on `listener` with the default [`ServeConfig`] (HTTP/1.1 and HTTP/2, header and idle deadlines,
/// a connection cap), until the task running this is dropped.
pub async fn serve(listener: TcpListener, proxy: Proxy) -> std::io::Result<()> {
    serve_with(
        listener,
        proxy,
        &ServeConfig::default(),
        std::future::pending(),
    )
    .await
}

/// Serves `proxy` on `listener` with `config` until `shutdown` completes, then lets requests in flight finish for
/// at most the drain timeout. See [`tower_kit::serve::serve`].
pub async fn serve_with(
    listener: TcpListener,
    proxy: Proxy,
    config: &ServeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    tower_kit::serve::serve(listener, ProxyService(proxy), config, shutdown).await
}

impl Args {
    /// The serving configuration the connection flags describe.
    pub fn serve_config(&self) -> Result<ServeConfig, tower_kit_core::ConfigError> {
        let max_connections = self.max_connections.unwrap_or_else(|| {
            (tower_kit::serve::default_max_connections_for(tower_kit::serve::open_files_limit())
                / 2)
            .max(1)
        });
        ServeConfig::builder()
            .header_read_timeout(self.header_read_timeout)
            .idle_timeout(self.idle_timeout)
            .max_connections(max_connections)
            .listen_backlog(self.listen_backlog)
            .http2_keep_alive_interval(
                (!self.http2_keep_alive_interval.is_zero())
                    .then_some(self.http2_keep_alive_interval),
            )
            .http2_keep_alive_timeout(self.http2_keep_alive_timeout)
            .http2_max_concurrent_streams(self.http2_max_concurrent_streams)
            .drain_timeout(self.drain_timeout)
            .build()
    }
}

/// [`Proxy`] as a tower service, for [`tower_kit::serve`].
#[derive(Clone, Debug)]
struct ProxyService(Proxy);

impl Service<Request<Incoming>> for ProxyService {
    type Response = Response<ProxyBody>;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, std::convert::Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let proxy = self.0.clone();
        Box::pin(async move { Ok(proxy.handle(req).await) })
    }
}
// ANCHOR_END: proxy

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("connection", "x-a, Keep-Alive"),
            ("connection", "x-b"),
            ("x-a", "1"),
            ("x-b", "1"),
            ("keep-alive", "5"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "x"),
            ("proxy-authenticate", "x"),
            ("proxy-connection", "x"),
            ("x-end", "1"),
            ("cache-control", "max-age=1"),
        ] {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-end", "cache-control"]);
    }

    #[test]
    fn targets_keep_path_and_query_under_the_base_path() {
        let up: Upstream = "http://10.0.0.5:3000/app/".parse().unwrap();
        let t = up.target(&"/a/b?x=1&y".parse().unwrap()).unwrap();
        assert_eq!(t.to_string(), "http://10.0.0.5:3000/app/a/b?x=1&y");
    }
}
