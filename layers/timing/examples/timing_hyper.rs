//! TimingLayer in a plain hyper 1 server, with a route mapping instead of axum's MatchedPath:
//! `cargo run -p tower-kit-timing --example timing_hyper`.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use std::{borrow::Cow, convert::Infallible};
use tower_kit_timing::{RequestInfo, TimingLayer};

// ANCHOR: route_fn
/// Maps a request to a route template. Return templates, never raw paths: a client can invent any number of paths.
fn route(req: &RequestInfo<'_>) -> Option<Cow<'static, str>> {
    let path = req.uri.path();
    if path == "/" {
        Some(Cow::Borrowed("/"))
    } else if path.starts_with("/users/") {
        Some(Cow::Borrowed("/users/{id}"))
    } else {
        None // recorded as `unmatched`
    }
}
// ANCHOR_END: route_fn

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let timing = TimingLayer::builder().route_fn(route).build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3002").await?;
    loop {
        let (stream, peer) = listener.accept().await?;
        let service = tower::ServiceBuilder::new()
            .layer(timing.clone()) // one layer value: one label registry for every connection
            .service_fn(move |mut req: Request<hyper::body::Incoming>| async move {
                req.extensions_mut().insert(peer); // the peer address, for layers that key on it
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
            });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .await;
        });
    }
}
