//! A tonic 0.14 service, `inventory.Inventory`, behind tower-kit's timing, rate-limit and concurrency layers.
//!
//! The messages are plain `prost::Message` derives and the service is written by hand, so nothing needs `protoc`.
//! Refusals reach gRPC clients as `RESOURCE_EXHAUSTED` (HTTP 200 with `grpc-status: 8`), and the timing layer
//! records each call's gRPC status (read from the trailers) and its method as the route.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    num::NonZeroU32,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tonic::{Status, body::Body, server::NamedService};
use tower_kit::{
    concurrency::ConcurrencyLayer,
    core::ConfigError,
    ratelimit::{Policy, Quota, RateLimitLayer},
    timing::TimingLayer,
};

/// `GetItemRequest { id }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetItemRequest {
    /// The item id; 0 does not exist.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Milliseconds of simulated work before answering (at most 5000).
    #[prost(uint32, tag = "2")]
    pub work_ms: u32,
}

/// `Item { id, name }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Item {
    /// The item id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Its name.
    #[prost(string, tag = "2")]
    pub name: String,
}

/// The full method path of `GetItem`.
pub const GET_ITEM: &str = "/inventory.Inventory/GetItem";

/// The hand-written `inventory.Inventory` service.
#[derive(Debug, Clone, Default)]
pub struct Inventory;

impl NamedService for Inventory {
    const NAME: &'static str = "inventory.Inventory";
}

struct GetItem;

impl tonic::server::UnaryService<GetItemRequest> for GetItem {
    type Response = Item;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Item>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<GetItemRequest>) -> Self::Future {
        Box::pin(async move {
            let req = request.into_inner();
            tokio::time::sleep(Duration::from_millis(u64::from(req.work_ms.min(5000)))).await;
            if req.id == 0 {
                return Err(Status::not_found("no item 0"));
            }
            Ok(tonic::Response::new(Item {
                id: req.id,
                name: format!("item {}", req.id),
            }))
        })
    }
}

impl tower::Service<http::Request<Body>> for Inventory {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() == GET_ITEM {
            Box::pin(async move {
                let codec = tonic_prost::ProstCodec::<Item, GetItemRequest>::default();
                Ok(tonic::server::Grpc::new(codec).unary(GetItem, req).await)
            })
        } else {
            Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) })
        }
    }
}

/// Limits of the example server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Calls per second per client IP.
    pub per_second: NonZeroU32,
    /// Calls in flight at once (no queue: the rest are refused).
    pub max_in_flight: usize,
}

/// Serves `Inventory` on `listener` behind timing (outermost), the per-client rate limit and the concurrency limit.
pub async fn serve(
    listener: tokio::net::TcpListener,
    limits: Limits,
    timing: TimingLayer,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    serve_with_window(listener, limits, Duration::from_secs(1), timing).await
}

/// [`serve`], with the rate limit's quota (`limits.per_second` calls) counted over `window` instead of one second:
/// tests use a long window, so that a slow machine cannot earn a call back between two of theirs.
pub async fn serve_with_window(
    listener: tokio::net::TcpListener,
    limits: Limits,
    window: Duration,
    timing: TimingLayer,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let layers = layers_with_window(limits, window, timing)?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tonic::transport::Server::builder()
        .layer(layers)
        .add_service(Inventory)
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

type Stack = tower::ServiceBuilder<
    tower::layer::util::Stack<
        ConcurrencyLayer,
        tower::layer::util::Stack<
            RateLimitLayer,
            tower::layer::util::Stack<TimingLayer, tower::layer::util::Identity>,
        >,
    >,
>;

/// The layer stack, outermost first: timing, rate limit (per client IP, from tonic's `TcpConnectInfo`), concurrency.
pub fn layers(limits: Limits, timing: TimingLayer) -> Result<Stack, ConfigError> {
    layers_with_window(limits, Duration::from_secs(1), timing)
}

/// [`layers`], with the rate limit's quota counted over `window` instead of one second.
pub fn layers_with_window(
    limits: Limits,
    window: Duration,
    timing: TimingLayer,
) -> Result<Stack, ConfigError> {
    let rate = RateLimitLayer::builder()
        .policy(Policy::new(
            "per_client",
            Quota::new(limits.per_second, window)?,
        ))
        .build()?;
    let concurrency = ConcurrencyLayer::builder()
        .max_in_flight(limits.max_in_flight)
        .build()?;
    Ok(tower::ServiceBuilder::new()
        .layer(timing)
        .layer(rate)
        .layer(concurrency))
}

/// The address to connect a client to.
pub fn endpoint(addr: SocketAddr) -> String {
    format!("http://{addr}")
}
