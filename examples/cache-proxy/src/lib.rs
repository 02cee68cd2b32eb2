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
//! clients speak HTTP/1.1 to the proxy.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use std::{
    future::{Future, poll_fn},
    net::SocketAddr,
    pin::Pin,
    str::FromStr,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};
use tokio::net::TcpListener;
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

    /// Capacity of the in-memory cache, in bytes (entries are weighed by their size).
    #[arg(long, env = "CACHE_PROXY_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_bytes: u64,

    /// Largest response body stored, in bytes; larger bodies stream through uncached.
    #[arg(long, env = "CACHE_PROXY_MAX_ENTRY_SIZE", default_value_t = 8 * 1024 * 1024)]
    pub max_entry_size: usize,
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

const VIA: &str = "1.1 cache-proxy";

/// The service under the cache: sends a request to the upstream and cleans both heads.
#[derive(Clone)]
pub struct Forward {
    client: Client<HttpConnector, Incoming>,
    upstream: Arc<Upstream>,
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl Forward {
    /// A pooled HTTP/1.1 client for `upstream`.
    pub fn new(upstream: Upstream) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Self {
            client,
            upstream: Arc::new(upstream),
        }
    }
}

/// Why the upstream could not answer.
pub type ForwardError = Box<dyn std::error::Error + Send + Sync>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Service<Request<Incoming>> for Forward {
    type Response = Response<Incoming>;
    type Error = ForwardError;
    type Future = BoxFuture<Result<Response<Incoming>, ForwardError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The client queues on its pool itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let client = self.client.clone();
        let upstream = Arc::clone(&self.upstream);
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            if let Some(host) = parts.headers.remove(header::HOST) {
                parts
                    .headers
                    .insert(HeaderName::from_static("x-forwarded-host"), host);
            }
            parts
                .headers
                .append(header::VIA, HeaderValue::from_static(VIA));
            parts.uri = upstream.target(&parts.uri)?;
            parts.version = http::Version::HTTP_11;
            let mut response = client.request(Request::from_parts(parts, body)).await?;
            let headers = response.headers_mut();
            strip_hop_by_hop(headers);
            if !headers.contains_key(header::DATE)
                && let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now()))
            {
                headers.insert(header::DATE, date);
            }
            headers.append(header::VIA, HeaderValue::from_static(VIA));
            Ok(response)
        })
    }
}

// ANCHOR: proxy
/// What the proxy answers: the cached or upstream response, or its own `502 Bad Gateway`.
pub type ProxyBody = Either<CacheBody<Incoming>, Full<Bytes>>;

/// The whole proxy for one connection: the cache over [`Forward`], with upstream failures turned into 502.
#[derive(Clone, Debug)]
pub struct Proxy {
    cached: Cache<Forward>,
}

impl Proxy {
    /// The proxy to `upstream` through `cache`.
    pub fn new(upstream: Upstream, cache: &CacheLayer) -> Self {
        Self {
            cached: cache.layer(Forward::new(upstream)),
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
                tracing::warn!(error = %e, "upstream failed");
                let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
                    b"bad gateway: the upstream did not answer\n",
                ))));
                *response.status_mut() = StatusCode::BAD_GATEWAY;
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                response
            }
        }
    }
}

/// Accepts connections on `listener` and serves each on its own task, until the task running this is dropped.
pub async fn serve(listener: TcpListener, proxy: Proxy) -> std::io::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, std::convert::Infallible>(proxy.handle(req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
// ANCHOR_END: proxy

#[cfg(test)]
mod tests {
    use super::*;

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
