//! The tower-kit stack on plain hyper 1 and hyper-util, no axum: a route table of our own for the timing layer's
//! labels, the peer address inserted per connection for the rate limiter, and every layer in a `ServiceBuilder`.

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use std::{borrow::Cow, convert::Infallible, net::SocketAddr, num::NonZeroU32, time::Duration};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_kit::{
    cache::CacheLayer,
    compression::CompressionLayer,
    concurrency::ConcurrencyLayer,
    core::ConfigError,
    ratelimit::{Policy, Quota, RateLimitLayer},
    timing::{RequestInfo, TimingHandle, TimingLayer},
};

/// The route table: the label for each path, so metrics never see a raw path.
// ANCHOR: routes
pub fn route(req: &RequestInfo<'_>) -> Option<Cow<'static, str>> {
    let path = req.uri.path();
    Some(Cow::Borrowed(match path {
        "/health" => "/health",
        "/api/items" => "/api/items",
        _ if path.starts_with("/api/items/") => "/api/items/{id}",
        _ => return None, // `unmatched`
    }))
}
// ANCHOR_END: routes

/// The application: a tiny router over `Request<hyper::body::Incoming>`.
async fn handle<B>(req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let (status, cache, body): (StatusCode, &str, Bytes) = if path == "/health" {
        (StatusCode::OK, "no-store", Bytes::from_static(b"ok"))
    } else if path == "/api/items" {
        let list: String = (1..=200)
            .map(|i| format!(r#"{{"id":{i},"name":"item {i}","description":"a catalogue entry"}}"#))
            .collect::<Vec<_>>()
            .join(",");
        (
            StatusCode::OK,
            "public, max-age=30",
            Bytes::from(format!("[{list}]")),
        )
    } else if let Some(id) = path
        .strip_prefix("/api/items/")
        .and_then(|id| id.parse::<u64>().ok())
    {
        let item = format!(r#"{{"id":{id},"name":"item {id}"}}"#);
        (StatusCode::OK, "public, max-age=5", Bytes::from(item))
    } else {
        (
            StatusCode::NOT_FOUND,
            "no-store",
            Bytes::from_static(br#"{"error":"not found"}"#),
        )
    };
    let response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, cache)
        .body(Full::new(body));
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

/// Limits of the example server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Requests per second per client IP.
    pub per_second: NonZeroU32,
    /// Requests in flight at once.
    pub max_in_flight: usize,
}

/// The layers, built once and shared by every connection (one limit, one cache, one label registry).
#[derive(Clone, Debug)]
pub struct Layers {
    timing: TimingLayer,
    rate: RateLimitLayer,
    concurrency: ConcurrencyLayer,
    gzip: CompressionLayer,
    cache: CacheLayer,
}

impl Layers {
    /// Builds every layer.
    pub fn new(limits: &Limits) -> Result<(Self, TimingHandle), ConfigError> {
        let timing = TimingLayer::builder().route_fn(route).build()?;
        let stats = timing.handle();
        let layers = Layers {
            timing,
            rate: RateLimitLayer::builder()
                .policy(Policy::new(
                    "per_client",
                    Quota::new(limits.per_second, Duration::from_secs(1))?,
                ))
                .exempt(|req| req.uri.path() == "/health")
                .build()?,
            concurrency: ConcurrencyLayer::builder()
                .max_in_flight(limits.max_in_flight)
                .exempt(|req| req.uri.path() == "/health")
                .build()?,
            gzip: CompressionLayer::new(),
            cache: CacheLayer::new(),
        };
        Ok((layers, stats))
    }
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    layers: Layers,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        // ANCHOR: stack
        let service = ServiceBuilder::new()
            // The peer address, for the rate limiter's key (axum users get it from ConnectInfo instead).
            .map_request(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert::<SocketAddr>(peer);
                req
            })
            .layer(layers.timing.clone())
            .layer(layers.rate.clone())
            .layer(layers.concurrency.clone())
            .layer(layers.gzip.clone())
            .layer(layers.cache.clone())
            .service_fn(handle);
        // ANCHOR_END: stack
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .await;
        });
    }
}
