//! The axum set-up that `benches/concurrency.rs` (group `concurrency/axum`) and `examples/loop.rs` (`loop axum`)
//! both measure (included with `#[path]`).

use axum::{Router, body::Body, routing::get};
use http::Request;
use std::{
    future::Future,
    hint::black_box,
    pin::pin,
    task::{Context, Poll, Waker},
};
use tower::Service;

/// One route returning `"ok"` (axum adds `content-type: text/plain`), finalised as `axum::serve` does.
pub(crate) fn router() -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .with_state(())
}

/// Sends one request through the router; every handler here answers on the first poll, so no runtime is needed.
pub(crate) fn send(router: &mut Router) {
    let mut cx = Context::from_waker(Waker::noop());
    let ready = <Router as Service<Request<Body>>>::poll_ready(router, &mut cx);
    assert!(matches!(ready, Poll::Ready(Ok(()))));
    let request = Request::get("/").body(Body::empty()).unwrap();
    let mut fut = pin!(router.call(request));
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(response)) => {
            assert_eq!(response.status(), 200);
            // Dropping the response ends the body: tower-kit releases its slot here.
            drop(black_box(response));
        }
        _ => panic!("the router did not answer on the first poll"),
    }
}
