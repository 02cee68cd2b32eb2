//! The layer's behaviour, on a paused clock: the limit, the queue, the release point, exemptions, per-key caps,
//! adaptive limits, refusals and metrics.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody};
use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::sync::{Notify, mpsc};
use tower::{Service, ServiceExt, service_fn};
use tower_kit_concurrency::{
    Aimd, ConcurrencyBody, ConcurrencyLayer, Gradient2, QueueOrder, RefusalReason, ReleaseAt,
};
use tower_kit_core::ServerTiming;
use tower_layer::Layer;

type Req = Request<Full<Bytes>>;
type Resp = Response<Full<Bytes>>;

fn ok(text: &'static str) -> Resp {
    Response::new(Full::new(Bytes::from_static(text.as_bytes())))
}

fn get(path: &str) -> Req {
    Request::get(path).body(Full::default()).unwrap()
}

/// An inner service that sleeps `ms` (paused clock) and counts how many are inside at once.
fn counting(
    ms: u64,
) -> (
    impl Service<Req, Response = Resp, Error = Infallible, Future = impl Send> + Clone + Send,
    Arc<AtomicUsize>,
) {
    let inside = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (i, m) = (inside.clone(), max.clone());
    let svc = service_fn(move |_req: Req| {
        let (i, m) = (i.clone(), m.clone());
        async move {
            let n = i.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            i.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, Infallible>(ok("done"))
        }
    });
    (svc, max)
}

/// An inner service whose handler waits until `gate` is notified.
fn gated(
    gate: Arc<Notify>,
) -> impl Service<Req, Response = Resp, Error = Infallible, Future = impl Send> + Clone + Send {
    service_fn(move |req: Req| {
        let gate = gate.clone();
        async move {
            if req.uri().path() != "/fast" {
                gate.notified().await;
            }
            Ok::<_, Infallible>(ok("ok"))
        }
    })
}

async fn body_text<B: http_body::Body<Data = Bytes>>(b: B) -> Bytes
where
    B::Error: std::fmt::Debug,
{
    b.collect().await.unwrap().to_bytes()
}

#[tokio::test(start_paused = true)]
async fn never_more_than_n_inside_with_1000_concurrent_callers() {
    let layer = ConcurrencyLayer::builder()
        .max_in_flight(10)
        .max_queue(1000)
        .max_queue_wait(Duration::from_secs(60))
        .build()
        .unwrap();
    let handle = layer.handle();
    let (inner, max) = counting(10);
    let svc = layer.layer(inner);
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let r = svc.oneshot(get("/")).await.unwrap();
                let status = r.status();
                body_text(r.into_body()).await;
                status
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        max.load(Ordering::SeqCst),
        10,
        "the limit was used and never exceeded"
    );
    assert_eq!((handle.in_flight(), handle.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn full_without_queue_refuses_at_once_with_503_and_retry_after() {
    let gate = Arc::new(Notify::new());
    let svc = ConcurrencyLayer::new(1.try_into().unwrap()).layer(gated(gate.clone()));
    let first = tokio::spawn(svc.clone().oneshot(get("/slow")));
    tokio::task::yield_now().await;
    let start = tokio::time::Instant::now();
    let refused = svc.clone().oneshot(get("/slow")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry: Vec<_> = refused
        .headers()
        .get_all(header::RETRY_AFTER)
        .iter()
        .collect();
    assert_eq!(retry, ["1"]);
    assert_eq!(
        refused.headers()[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    assert!(
        body_text(refused.into_body())
            .await
            .starts_with(b"server busy")
    );
    gate.notify_one();
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn queue_deadline_gives_503_with_retry_after_and_server_timing() {
    let layer = ConcurrencyLayer::builder()
        .max_in_flight(1)
        .max_queue(4)
        .max_queue_wait(Duration::from_millis(250))
        .retry_after(Duration::from_millis(1500))
        .build()
        .unwrap();
    let handle = layer.handle();
    let gate = Arc::new(Notify::new());
    let svc = layer.layer(gated(gate.clone()));
    let first = tokio::spawn(svc.clone().oneshot(get("/slow")));
    tokio::task::yield_now().await;
    assert_eq!(handle.in_flight(), 1);

    let timing = ServerTiming::new();
    let mut req = get("/slow");
    req.extensions_mut().insert(timing.clone());
    let start = tokio::time::Instant::now();
    let refused = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(250),
        "waited exactly the deadline"
    );
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused.headers()[header::RETRY_AFTER],
        "2",
        "1.5 s rounds up"
    );
    assert_eq!(timing.seal().unwrap(), "queue;dur=250");
    assert_eq!(handle.queued(), 0);
    gate.notify_one();
    first.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_queued_caller_gets_the_slot_when_it_frees_and_records_its_wait() {
    let layer = ConcurrencyLayer::builder()
        .max_in_flight(1)
        .max_queue(1)
        .build()
        .unwrap();
    let (inner, _) = counting(40);
    let svc = layer.layer(inner);
    // The first caller reads its body at once, so its slot frees when the handler is done (40 ms).
    let s = svc.clone();
    let first = tokio::spawn(async move { s.oneshot(get("/")).await.map(|r| r.status()) });
    tokio::task::yield_now().await;
    let timing = ServerTiming::new();
    let mut req = get("/");
    req.extensions_mut().insert(timing.clone());
    let r = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(timing.seal().unwrap(), "queue;dur=40");
    assert_eq!(first.await.unwrap().unwrap(), StatusCode::OK);
}

/// Runs `n` queued callers behind one held slot and returns the order they got in.
async fn queue_order(order: QueueOrder) -> Vec<usize> {
    let layer = ConcurrencyLayer::builder()
        .max_in_flight(1)
        .max_queue(8)
        .queue_order(order)
        .release_at(ReleaseAt::Head)
        .build()
        .unwrap();
    let handle = layer.handle();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(Notify::new());
    let (s, g) = (seen.clone(), gate.clone());
    let svc = layer.layer(service_fn(move |req: Req| {
        let (s, g) = (s.clone(), g.clone());
        async move {
            let id: usize = req.uri().path()[1..].parse().unwrap();
            if id == 0 {
                g.notified().await;
            } else {
                s.lock().unwrap().push(id);
            }
            Ok::<_, Infallible>(ok(""))
        }
    }));
    let holder = tokio::spawn(svc.clone().oneshot(get("/0")));
    tokio::task::yield_now().await;
    let mut waiters = Vec::new();
    for id in 1..=4 {
        waiters.push(tokio::spawn(svc.clone().oneshot(get(&format!("/{id}")))));
        tokio::task::yield_now().await;
    }
    assert_eq!(handle.queued(), 4);
    gate.notify_one();
    holder.await.unwrap().unwrap();
    for w in waiters {
        assert_eq!(w.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    seen.lock().unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn fifo_and_lifo_order() {
    assert_eq!(queue_order(QueueOrder::Fifo).await, [1, 2, 3, 4]);
    assert_eq!(queue_order(QueueOrder::Lifo).await, [4, 3, 2, 1]);
}

#[tokio::test(start_paused = true)]
async fn a_full_lifo_queue_evicts_its_oldest_waiter() {
    let layer = ConcurrencyLayer::builder()
        .max_in_flight(1)
        .max_queue(1)
        .queue_order(QueueOrder::Lifo)
        .map_refusal(|rej, resp| {
            resp.headers_mut()
                .insert("x-reason", HeaderValue::from_static(rej.reason.as_str()));
        })
        .build()
        .unwrap();
    let gate = Arc::new(Notify::new());
    let svc = layer.layer(gated(gate.clone()));
    let holder = tokio::spawn(svc.clone().oneshot(get("/slow")));
    tokio::task::yield_now().await;
    let oldest = tokio::spawn(svc.clone().oneshot(get("/fast")));
    tokio::task::yield_now().await;
    let fresh = tokio::spawn(svc.clone().oneshot(get("/fast")));
    let evicted = oldest.await.unwrap().unwrap();
    assert_eq!(evicted.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(evicted.headers()["x-reason"], "queue_full");
    gate.notify_one();
    holder.await.unwrap().unwrap();
    assert_eq!(fresh.await.unwrap().unwrap().status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_leaves_the_queue_at_once() {
    let layer = ConcurrencyLayer::builder()
        .max_in_flight(1)
        .max_queue(2)
        .build()
        .unwrap();
    let handle = layer.handle();
    let gate = Arc::new(Notify::new());
    let svc = layer.layer(gated(gate.clone()));
    let holder = tokio::spawn(svc.clone().oneshot(get("/slow")));
    tokio::task::yield_now().await;
    let mut waiting = Box::pin(svc.clone().oneshot(get("/fast")));
    let first_poll = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(waiting.as_mut(), cx))
    })
    .await;
    assert!(first_poll.is_pending());
    assert_eq!(handle.queued(), 1);
    drop(waiting);
    assert_eq!(handle.queued(), 0, "left when dropped, not at its deadline");
    // The slot it would have had goes to the next caller.
    let next = tokio::spawn(svc.clone().oneshot(get("/fast")));
    tokio::task::yield_now().await;
    gate.notify_one();
    holder.await.unwrap().unwrap();
    assert_eq!(next.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!((handle.in_flight(), handle.queued()), (0, 0));
}

type FrameResult = Result<http_body::Frame<Bytes>, Infallible>;
type TestStream = StreamBody<futures_util::stream::BoxStream<'static, FrameResult>>;

/// A body the test feeds frame by frame.
fn streaming() -> (mpsc::Sender<FrameResult>, TestStream) {
    let (tx, mut rx) = mpsc::channel(4);
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (tx, StreamBody::new(Box::pin(stream) as _))
}

#[tokio::test(start_paused = true)]
async fn the_slot_is_held_while_the_body_streams_and_freed_when_it_is_dropped() {
    let layer = ConcurrencyLayer::new(2.try_into().unwrap());
    let handle = layer.handle();
    let (tx, body) = streaming();
    let body = Arc::new(Mutex::new(Some(body)));
    let svc = layer.layer(service_fn(move |_req: Req| {
        let body = body.lock().unwrap().take().unwrap();
        async move { Ok::<_, Infallible>(Response::new(body)) }
    }));
    assert_eq!(handle.in_flight(), 0);
    let response = svc.oneshot(get("/")).await.unwrap();
    assert_eq!(handle.in_flight(), 1, "held after the head");
    let mut body = response.into_body();
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"a"))))
        .await
        .unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "a");
    assert_eq!(handle.in_flight(), 1, "held while streaming");
    drop(body);
    assert_eq!(handle.in_flight(), 0, "freed when the client went away");
}

#[tokio::test(start_paused = true)]
async fn the_slot_is_freed_at_the_end_of_the_body() {
    let layer = ConcurrencyLayer::new(1.try_into().unwrap());
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|_req: Req| async {
        Ok::<_, Infallible>(ok("whole"))
    }));
    let r = svc.clone().oneshot(get("/")).await.unwrap();
    assert_eq!(handle.in_flight(), 1);
    // While the body is unread the only slot is taken: a second call is refused.
    let refused = svc.clone().oneshot(get("/")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body_text(r.into_body()).await, "whole");
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn head_responses_and_release_at_head() {
    // HEAD: no body to send, so dropping it ends the request normally.
    let layer = ConcurrencyLayer::new(1.try_into().unwrap());
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|_req: Req| async {
        Ok::<_, Infallible>(ok(""))
    }));
    let r = svc
        .clone()
        .oneshot(Request::head("/").body(Full::default()).unwrap())
        .await
        .unwrap();
    drop(r);
    assert_eq!(handle.in_flight(), 0);

    let layer = ConcurrencyLayer::builder()
        .max_in_flight(1)
        .release_at(ReleaseAt::Head)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|_req: Req| async {
        Ok::<_, Infallible>(ok("x"))
    }));
    let r = svc.oneshot(get("/")).await.unwrap();
    assert_eq!(handle.in_flight(), 0, "released with the head");
    assert_eq!(body_text(r.into_body()).await, "x");
}

fn sse_service(
    content_type: &'static str,
) -> impl Service<Req, Response = Resp, Error = Infallible, Future = impl Send> + Clone + Send {
    service_fn(move |_req: Req| async move {
        let mut r = ok("data: 1\n\n");
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        Ok::<_, Infallible>(r)
    })
}

#[tokio::test(start_paused = true)]
async fn event_streams_release_at_the_head_by_default() {
    let layer = ConcurrencyLayer::new(1.try_into().unwrap());
    let handle = layer.handle();
    let svc = layer.layer(sse_service("text/event-stream; charset=utf-8"));
    let sse = svc.clone().oneshot(get("/events")).await.unwrap();
    assert_eq!(handle.in_flight(), 0, "an SSE client does not hold a slot");
    assert_eq!(
        svc.clone().oneshot(get("/")).await.unwrap().status(),
        StatusCode::OK
    );
    drop(sse);

    let layer = ConcurrencyLayer::builder()
        .max_in_flight(1)
        .release_streams_at_head(false)
        .build()
        .unwrap();
    let handle = layer.handle();
    let sse = layer
        .layer(sse_service("text/event-stream"))
        .oneshot(get("/events"))
        .await
        .unwrap();
    assert_eq!(handle.in_flight(), 1, "opted out: held to the end");
    drop(sse);
    assert_eq!(handle.in_flight(), 0);

    let layer = ConcurrencyLayer::builder()
        .max_in_flight(1)
        .stream_predicate(|parts| parts.headers[header::CONTENT_TYPE] == "application/x-ndjson")
        .build()
        .unwrap();
    let handle = layer.handle();
    let _nd = layer
        .layer(sse_service("application/x-ndjson"))
        .oneshot(get("/ndjson"))
        .await
        .unwrap();
    assert_eq!(handle.in_flight(), 0, "the predicate picks more streams");
}

#[tokio::test(start_paused = true)]
async fn an_inner_panic_releases_the_slot() {
    let layer = ConcurrencyLayer::new(1.try_into().unwrap());
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|_req: Req| async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if true {
            panic!("handler bug");
        }
        Ok::<_, Infallible>(ok(""))
    }));
    let joined = tokio::spawn(svc.clone().oneshot(get("/"))).await;
    assert!(joined.unwrap_err().is_panic());
    assert_eq!(handle.in_flight(), 0);
    // Also when `call` itself panics.
    let svc2 = ConcurrencyLayer::new(1.try_into().unwrap());
    let handle2 = svc2.handle();
    let svc2 = svc2.layer(tower::service_fn(
        |_req: Req| -> std::future::Ready<Result<Resp, Infallible>> { panic!("call bug") },
    ));
    let joined = tokio::spawn(svc2.oneshot(get("/"))).await;
    assert!(joined.unwrap_err().is_panic());
    assert_eq!(handle2.in_flight(), 0);
}

#[derive(Debug, PartialEq)]
struct Boom;

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_unchanged_and_release() {
    let layer = ConcurrencyLayer::new(1.try_into().unwrap());
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|_req: Req| async { Err::<Resp, _>(Boom) }));
    let err: Boom = svc.oneshot(get("/")).await.unwrap_err();
    assert_eq!(err, Boom);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_body_error_releases_the_slot() {
    let layer = ConcurrencyLayer::new(1.try_into().unwrap());
    let handle = layer.handle();
    // An errored body: a stream that yields an error frame.
    let failing = StreamBody::new(futures_util::stream::iter(vec![
        Ok(http_body::Frame::data(Bytes::from_static(b"a"))),
        Err(std::io::Error::other("backend gone")),
    ]));
    let failing = Arc::new(Mutex::new(Some(failing)));
    let svc = layer.layer(service_fn(move |_req: Req| {
        let b = failing.lock().unwrap().take().unwrap();
        async move { Ok::<_, Infallible>(Response::new(b)) }
    }));
    let r = svc.oneshot(get("/")).await.unwrap();
    assert!(r.into_body().collect().await.is_err());
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn exempt_requests_are_never_refused_or_counted() {
    let layer = ConcurrencyLayer::builder()
        .max_in_flight(1)
        .exempt(|parts| parts.uri.path() == "/health")
        .build()
        .unwrap();
    let handle = layer.handle();
    let gate = Arc::new(Notify::new());
    let svc = layer.layer(gated(gate.clone()));
    let holder = tokio::spawn(svc.clone().oneshot(get("/slow")));
    tokio::task::yield_now().await;
    assert_eq!(
        svc.clone().oneshot(get("/fast")).await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // /health waits on the gate too: it gets in although the only slot is taken, and is not counted.
    let health = tokio::spawn(svc.clone().oneshot(get("/health")));
    tokio::task::yield_now().await;
    assert_eq!(handle.in_flight(), 1, "the exempt call is not counted");
    gate.notify_waiters();
    assert_eq!(health.await.unwrap().unwrap().status(), StatusCode::OK);
    holder.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn per_key_caps() {
    let layer = ConcurrencyLayer::builder()
        .max_in_flight(100)
        .per_key(
            2,
            tower_kit_concurrency::keys::header(http::HeaderName::from_static("x-api-key")),
        )
        .map_refusal(|rej, resp| {
            resp.headers_mut()
                .insert("x-reason", HeaderValue::from_static(rej.reason.as_str()));
        })
        .build()
        .unwrap();
    let handle = layer.handle();
    let gate = Arc::new(Notify::new());
    let svc = layer.layer(gated(gate.clone()));
    let keyed = |key: &'static str, path: &str| {
        let mut r = get(path);
        r.headers_mut()
            .insert("x-api-key", HeaderValue::from_static(key));
        r
    };
    let a1 = tokio::spawn(svc.clone().oneshot(keyed("a", "/slow")));
    let a2 = tokio::spawn(svc.clone().oneshot(keyed("a", "/slow")));
    tokio::task::yield_now().await;
    assert_eq!(handle.key_in_flight("a"), 2);
    let refused = svc.clone().oneshot(keyed("a", "/fast")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["x-reason"], "key_limit");
    assert!(refused.headers().contains_key(header::RETRY_AFTER));
    let b = svc.clone().oneshot(keyed("b", "/fast")).await.unwrap();
    assert_eq!(b.status(), StatusCode::OK, "another key is not affected");
    drop(b);
    let unkeyed = svc.clone().oneshot(get("/fast")).await.unwrap();
    assert_eq!(unkeyed.status(), StatusCode::OK, "no key, no per-key cap");
    drop(unkeyed);
    gate.notify_waiters();
    drop(a1.await.unwrap().unwrap());
    drop(a2.await.unwrap().unwrap());
    assert_eq!(handle.tracked_keys(), 0, "idle keys are forgotten");
    assert_eq!(handle.in_flight(), 0);
}

/// Drives waves of `callers` concurrent requests whose inner latency is `latency`.
async fn waves<S>(svc: &S, callers: usize, rounds: usize)
where
    S: Service<Req, Response = Response<ConcurrencyBody<Full<Bytes>>>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    for _ in 0..rounds {
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(async move {
                    let r = svc.oneshot(get("/")).await.unwrap();
                    r.into_body().collect().await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
}

fn latency_service(
    latency_ms: Arc<AtomicU64>,
) -> impl Service<Req, Response = Resp, Error = Infallible, Future = impl Send> + Clone + Send + 'static
{
    service_fn(move |_req: Req| {
        let ms = latency_ms.load(Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, Infallible>(ok("x"))
        }
    })
}

#[tokio::test(start_paused = true)]
async fn aimd_limit_rises_under_low_latency_and_falls_under_high_latency() {
    let layer = ConcurrencyLayer::builder()
        .adaptive(
            Aimd::new()
                .initial_limit(10)
                .max_limit(100)
                .latency_threshold(Duration::from_millis(100)),
        )
        .max_queue(1000)
        .max_queue_wait(Duration::from_secs(60))
        .build()
        .unwrap();
    let handle = layer.handle();
    let latency = Arc::new(AtomicU64::new(5));
    let svc = layer.layer(latency_service(latency.clone()));
    waves(&svc, 60, 5).await;
    let risen = handle.limit();
    assert!(risen > 30, "rose from 10 to {risen}");
    latency.store(500, Ordering::SeqCst);
    waves(&svc, 60, 2).await;
    let fallen = handle.limit();
    assert!(fallen < risen / 2, "fell from {risen} to {fallen}");
}

#[tokio::test(start_paused = true)]
async fn gradient2_limit_rises_under_low_latency_and_falls_under_high_latency() {
    let layer = ConcurrencyLayer::builder()
        .adaptive(Gradient2::new().initial_limit(10).max_limit(200))
        .max_queue(1000)
        .max_queue_wait(Duration::from_secs(600))
        .build()
        .unwrap();
    let handle = layer.handle();
    let latency = Arc::new(AtomicU64::new(10));
    let svc = layer.layer(latency_service(latency.clone()));
    waves(&svc, 100, 5).await;
    let risen = handle.limit();
    assert!(risen > 30, "rose from 10 to {risen}");
    latency.store(200, Ordering::SeqCst);
    waves(&svc, 100, 2).await;
    let fallen = handle.limit();
    assert!(fallen < risen * 2 / 3, "fell from {risen} to {fallen}");
}

#[tokio::test(start_paused = true)]
async fn grpc_requests_get_grpc_status_8() {
    let svc = ConcurrencyLayer::new(1.try_into().unwrap());
    let gate = Arc::new(Notify::new());
    let svc = svc.layer(gated(gate.clone()));
    let holder = tokio::spawn(svc.clone().oneshot(get("/slow")));
    tokio::task::yield_now().await;
    let req = Request::post("/pkg.Svc/Slow")
        .header(header::CONTENT_TYPE, "application/grpc+proto")
        .body(Full::default())
        .unwrap();
    let r = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["grpc-status"], "8");
    assert_eq!(r.headers()["content-type"], "application/grpc");
    assert!(r.headers().get(header::RETRY_AFTER).is_none());
    gate.notify_one();
    holder.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn custom_status_body_and_hooks() {
    let seen: Arc<std::sync::Mutex<Vec<(RefusalReason, Duration, bool)>>> = Arc::default();
    let layer = ConcurrencyLayer::builder()
        .max_in_flight(1)
        .refusal_status(StatusCode::TOO_MANY_REQUESTS)
        .refusal_body("slow down")
        .retry_after(Duration::from_secs(7))
        .on_refusal({
            let seen = Arc::clone(&seen);
            move |rej| {
                seen.lock()
                    .unwrap()
                    .push((rej.reason, rej.retry_after, rej.grpc))
            }
        })
        .map_refusal(|rej, resp| {
            assert_eq!(rej.reason, RefusalReason::QueueFull);
            assert_eq!(rej.limit, 1);
            resp.headers_mut()
                .insert("x-limit", HeaderValue::from(rej.limit));
        })
        .build()
        .unwrap();
    let gate = Arc::new(Notify::new());
    let svc = layer.layer(gated(gate.clone()));
    let holder = tokio::spawn(svc.clone().oneshot(get("/slow")));
    tokio::task::yield_now().await;
    let r = svc.clone().oneshot(get("/fast")).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()[header::RETRY_AFTER], "7");
    assert_eq!(r.headers()["x-limit"], "1");
    assert_eq!(body_text(r.into_body()).await, "slow down");
    assert_eq!(
        *seen.lock().unwrap(),
        [(RefusalReason::QueueFull, Duration::from_secs(7), false)],
        "on_refusal hears of each refusal once"
    );
    gate.notify_one();
    holder.await.unwrap().unwrap();
}

#[test]
fn metrics_go_to_a_local_recorder() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let rt = tower_kit_test_support::paused_runtime();
    rt.block_on(async {
        let layer = ConcurrencyLayer::builder()
            .max_in_flight(1)
            .max_queue(1)
            .max_queue_wait(Duration::from_millis(100))
            .name("api")
            .build()
            .unwrap();
        let gate = Arc::new(Notify::new());
        let svc = layer.layer(gated(gate.clone()));
        let holder = tokio::spawn(svc.clone().oneshot(get("/slow")));
        tokio::task::yield_now().await;
        let timed_out = tokio::spawn(svc.clone().oneshot(get("/fast")));
        tokio::task::yield_now().await;
        let full = svc.clone().oneshot(get("/fast")).await.unwrap();
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        let t = timed_out.await.unwrap().unwrap();
        assert_eq!(t.status(), StatusCode::SERVICE_UNAVAILABLE);
        gate.notify_one();
        drop(holder.await.unwrap().unwrap());
    });
    let mut seen = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let k = key.key();
        let labels: Vec<String> = k
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        seen.insert(format!("{} {}", k.name(), labels.join(",")), value);
    }
    let get = |k: &str| {
        seen.get(k)
            .unwrap_or_else(|| panic!("missing {k} in {seen:?}"))
    };
    assert_eq!(
        get("tower_kit.concurrency.rejected limiter=api,reason=queue_full"),
        &DebugValue::Counter(1)
    );
    assert_eq!(
        get("tower_kit.concurrency.rejected limiter=api,reason=queue_timeout"),
        &DebugValue::Counter(1)
    );
    assert!(matches!(
        get("tower_kit.concurrency.in_flight limiter=api"),
        DebugValue::Gauge(g) if g.into_inner() == 0.0
    ));
    assert!(matches!(
        get("tower_kit.concurrency.queued limiter=api"),
        DebugValue::Gauge(g) if g.into_inner() == 0.0
    ));
    assert!(matches!(
        get("tower_kit.concurrency.limit limiter=api"),
        DebugValue::Gauge(g) if g.into_inner() == 1.0
    ));
    match get("tower_kit.concurrency.queue_wait limiter=api") {
        DebugValue::Histogram(h) => assert_eq!(h.len(), 1),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn hostile_requests_are_handled() {
    // Odd methods, huge headers and a malformed content-type do not confuse the gRPC or stream detection.
    let layer = ConcurrencyLayer::builder()
        .max_in_flight(1)
        .per_key(
            1,
            tower_kit_concurrency::keys::header(http::HeaderName::from_static("x-api-key")),
        )
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|_req: Req| async {
        let mut r = ok("x");
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_bytes(b"text/event-str\xff").unwrap(),
        );
        Ok::<_, Infallible>(r)
    }));
    let mut req = Request::builder()
        .method(Method::from_bytes(b"BREW").unwrap())
        .uri("/")
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_bytes(b"application/grp\xff").unwrap(),
        )
        .header("x-api-key", "k".repeat(64 * 1024))
        .body(Full::default())
        .unwrap();
    req.headers_mut()
        .append("x-api-key", HeaderValue::from_static("second"));
    let r = svc.oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(handle.in_flight(), 1, "not a stream: held to the end");
    drop(r);
    assert_eq!((handle.in_flight(), handle.tracked_keys()), (0, 0));
}
