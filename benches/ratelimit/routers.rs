//! The routers and the request loop that `benches/ratelimit.rs` and `examples/ratelimit_interleaved.rs` both measure
//! (included with `#[path]`), so the two report on exactly the same set-ups.
#![allow(dead_code)]

use axum::{Router, body::Body, extract::ConnectInfo, routing::get};
use http::{Request, Response};
use std::convert::Infallible;
use std::{
    future::Future,
    hint::black_box,
    net::SocketAddr,
    num::NonZeroU32,
    pin::pin,
    task::{Context, Poll, Waker},
};
use tower::{Layer, Service};
use tower_kit_ratelimit::{
    Key, Policy, Quota, RateLimitLayer,
    store::{Check, PolicyId},
};

pub(crate) fn peer() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 7], 40_000))
}

pub(crate) fn request() -> Request<Body> {
    let mut req = Request::get("/").body(Body::empty()).unwrap();
    req.extensions_mut().insert(ConnectInfo(peer()));
    req
}

/// `with_state(())` turns the handler into its route now, as `axum::serve` does (through `into_make_service`); a
/// layer added afterwards is applied once. A `Router` called without it re-applies every layer on every request,
/// a cost no served app pays.
pub(crate) fn base() -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .with_state(())
}

/// The router with a layer that does nothing: what any `Router::layer` costs (axum wraps each route again).
pub(crate) fn with_identity() -> Router {
    base().layer(tower::layer::util::Identity::new())
}

pub(crate) fn with_governor() -> Router {
    let config = tower_governor::governor::GovernorConfigBuilder::default()
        .per_nanosecond(1)
        .burst_size(u32::MAX)
        .finish()
        .unwrap();
    base().layer(tower_governor::GovernorLayer::new(config))
}

/// One unit per nanosecond with a burst of u32::MAX: never reached, like the governor configuration.
pub(crate) fn quota() -> Quota {
    Quota::per_second(NonZeroU32::MAX).with_burst(NonZeroU32::MAX)
}

/// The store check the layer makes for [`request`]: policy `bench`, the peer's address, [`quota`].
pub(crate) fn check() -> Check {
    Check {
        policy: PolicyId::of("bench"),
        key: Key::from_ip(peer().ip(), 64),
        quota: quota(),
    }
}

pub(crate) fn kit_layer(headers: bool) -> RateLimitLayer {
    RateLimitLayer::builder()
        .policy(Policy::new("bench", quota()))
        .headers_on_admitted(headers)
        .build()
        .unwrap()
}

pub(crate) fn with_kit(headers: bool) -> Router {
    base().layer(kit_layer(headers).keep_inner_body())
}

pub(crate) fn with_kit_policy_body() -> Router {
    base().layer(kit_layer(false))
}

/// Sends one request through the router and checks it was admitted. Every handler here completes on the first
/// poll, so no runtime is needed and the figures hold no scheduler cost.
pub(crate) fn send(router: &mut Router) {
    let mut cx = Context::from_waker(Waker::noop());
    let ready = <Router as Service<Request<Body>>>::poll_ready(router, &mut cx);
    assert!(matches!(ready, Poll::Ready(Ok(()))));
    let fut = router.call(request());
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(response)) => {
            assert_eq!(response.status(), 200);
            black_box(response);
        }
        _ => panic!("the router did not answer on the first poll"),
    }
}

/// The layer around the whole router instead of inside it (`Router::layer`): how a limiter keyed on the peer
/// address can be served (`axum::serve(listener, layer.layer(router).into_make_service_with_connect_info())`); it
/// then refuses before routing and covers unmatched paths too. No route is wrapped again, so the figure is the
/// layer's own cost. Served so, a service is cloned for each request (hyper-util's `TowerToHyperService`), which
/// [`send_served`] does too.
pub(crate) trait Served:
    Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone
{
}

impl<S> Served for S where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone
{
}

pub(crate) fn served_governor() -> impl Served {
    let config = tower_governor::governor::GovernorConfigBuilder::default()
        .per_nanosecond(1)
        .burst_size(u32::MAX)
        .finish()
        .unwrap();
    tower_governor::GovernorLayer::new(config).layer(base())
}

pub(crate) fn served_kit() -> impl Served {
    kit_layer(false).keep_inner_body().layer(base())
}

/// Sends one request as a server does: a clone of the service, polled ready, called once.
pub(crate) fn send_served(service: &impl Served) {
    let mut service = service.clone();
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(service.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let fut = service.call(request());
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(response)) => {
            assert_eq!(response.status(), 200);
            black_box(response);
        }
        _ => panic!("the service did not answer on the first poll"),
    }
}
