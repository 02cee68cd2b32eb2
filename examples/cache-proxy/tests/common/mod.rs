//! What the proxy's end-to-end tests share: the proxy in front of a test origin, one request on a fresh HTTP/1.1
//! connection, and the response as the tests read it.
#![allow(dead_code)]

use bytes::Bytes;
use cache_proxy::{Proxy, Upstream, serve};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tower_kit_cache::{CacheLayer, CacheLayerBuilder, MokaStore};

/// The proxy in front of `origin`, in the pure-RFC setting the binary uses.
pub(crate) async fn proxy(origin: SocketAddr) -> SocketAddr {
    proxy_with(origin, |b| b).await
}

/// The proxy in front of `origin`, with the cache `configure` makes from the binary's pure-RFC setting.
pub(crate) async fn proxy_with(
    origin: SocketAddr,
    configure: impl FnOnce(CacheLayerBuilder<MokaStore>) -> CacheLayerBuilder<MokaStore>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let target: Upstream = format!("http://{origin}").parse().unwrap();
    let cache = configure(CacheLayer::builder().cookie_bypass(false))
        .build()
        .unwrap();
    tokio::spawn(serve(listener, Proxy::new(target, &cache)));
    addr
}

/// A response as the tests read it.
pub(crate) struct Got {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Got {
    /// Every field line of `name`, joined with ` | `.
    pub(crate) fn all(&self, name: &str) -> String {
        all(&self.headers, name)
    }
}

/// Every field line of `name`, joined with ` | ` ("" when absent).
pub(crate) fn all(headers: &HeaderMap, name: &str) -> String {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// One request on a fresh HTTP/1.1 connection, headers exactly as given (`Host: proxy.test`).
pub(crate) async fn fetch(
    proxy: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> Got {
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut b = Request::builder()
        .method(method)
        .uri(target)
        .header("host", "proxy.test");
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    let res = sender
        .send_request(
            b.body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap(),
        )
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}
