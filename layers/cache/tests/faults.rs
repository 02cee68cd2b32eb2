//! Faults: the origin errors or panics during a fill, its body errors or is cut short, the client goes away.

mod common;

use bytes::Bytes;
use common::*;
use futures_util::future::join_all;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tower::{Layer, ServiceExt};
use tower_kit_cache::ManualWallClock;

type Frames = Vec<Result<Frame<Bytes>, std::io::Error>>;
type FramesBody = StreamBody<
    futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>,
>;

fn streaming_origin(
    make: impl Fn(usize) -> (Vec<(&'static str, &'static str)>, Frames) + Send + Sync + 'static,
) -> (
    impl tower::Service<
        Request<()>,
        Response = Response<FramesBody>,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone
    + Send
    + 'static,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let make = Arc::new(make);
    let svc = tower::service_fn(move |_req: Request<()>| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        let (headers, frames) = make(n);
        async move {
            let mut b = Response::builder();
            for (k, v) in headers {
                b = b.header(k, v);
            }
            Ok(b.body(StreamBody::new(futures_util::stream::iter(frames)))
                .unwrap())
        }
    });
    (svc, calls)
}

fn data(s: &'static str) -> Result<Frame<Bytes>, std::io::Error> {
    Ok(Frame::data(Bytes::from_static(s.as_bytes())))
}

#[tokio::test]
async fn body_that_errors_is_not_stored() {
    let (origin, calls) = streaming_origin(|_| {
        (
            vec![("cache-control", "max-age=60")],
            vec![data("part"), Err(std::io::Error::other("reset"))],
        )
    });
    let svc = builder(&ManualWallClock::default())
        .build()
        .unwrap()
        .layer(origin);
    for _ in 0..2 {
        let res = svc.clone().oneshot(get("/")).await.unwrap();
        assert_eq!(res.headers()["x-cache"], "MISS");
        assert!(
            res.into_body().collect().await.is_err(),
            "the error reaches the client"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn body_cut_short_of_its_content_length_is_not_stored() {
    let (origin, calls) = streaming_origin(|_| {
        (
            vec![("cache-control", "max-age=60"), ("content-length", "10")],
            vec![data("12345")],
        )
    });
    let svc = builder(&ManualWallClock::default())
        .build()
        .unwrap()
        .layer(origin);
    send(&svc, get("/")).await;
    let (p, _) = send(&svc, get("/")).await;
    assert_eq!(all(&p, "x-cache"), "MISS");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn client_dropping_the_body_half_way_stores_nothing() {
    let (origin, calls) = streaming_origin(|_| {
        (
            vec![("cache-control", "max-age=60")],
            vec![data("a"), data("b")],
        )
    });
    let svc = builder(&ManualWallClock::default())
        .build()
        .unwrap()
        .layer(origin);
    let res = svc.clone().oneshot(get("/")).await.unwrap();
    let mut body = res.into_body();
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "a"
    );
    drop(body);
    let (p, body) = send(&svc, get("/")).await;
    assert_eq!(all(&p, "x-cache"), "MISS");
    assert_eq!(body, "ab");
    let (p, _) = send(&svc, get("/")).await;
    assert_eq!(
        all(&p, "x-cache"),
        "HIT",
        "the whole second body was stored"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn waiters_survive_a_leader_whose_client_goes_away() {
    let (origin, calls) = streaming_origin(|_| {
        (
            vec![("cache-control", "max-age=60")],
            vec![data("x"), data("y")],
        )
    });
    let svc = builder(&ManualWallClock::default())
        .build()
        .unwrap()
        .layer(origin);
    // The leader gets its head, then drops its body; the waiters look again and one of them leads.
    let leader = svc.clone().oneshot(get("/")).await.unwrap();
    let waiters: Vec<_> = (0..5)
        .map(|_| tokio::spawn(send_owned(svc.clone())))
        .collect();
    tokio::task::yield_now().await;
    drop(leader);
    for w in waiters {
        assert_eq!(w.await.unwrap(), "xy");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

async fn send_owned<S, B>(svc: S) -> Bytes
where
    S: tower::Service<Request<()>, Response = Response<B>, Error = std::convert::Infallible>,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    svc.oneshot(get("/"))
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
}

#[derive(Debug)]
struct OriginDown;
impl std::fmt::Display for OriginDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("origin down")
    }
}
impl std::error::Error for OriginDown {}

#[tokio::test(start_paused = true)]
async fn inner_error_passes_through_and_waiters_go_to_the_origin_themselves() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let origin = tower::service_fn(move |_req: Request<()>| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if n == 0 {
                Err(OriginDown)
            } else {
                Ok(Response::builder()
                    .header("cache-control", "max-age=60")
                    .body(http_body_util::Full::new(Bytes::from_static(b"ok")))
                    .unwrap())
            }
        }
    });
    let svc = builder(&ManualWallClock::default())
        .build()
        .unwrap()
        .layer(origin);
    let results = join_all((0..10).map(|_| svc.clone().oneshot(get("/")))).await;
    let errors = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(
        errors, 1,
        "the leader's error is returned unchanged to its caller"
    );
    assert!(results.iter().any(|r| matches!(r, Err(OriginDown))));
    for r in results.into_iter().flatten() {
        assert_eq!(
            r.headers()["cache-status"],
            "tower-kit; fwd=uri-miss; fwd-status=200; detail=leader-failed"
        );
        assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "ok");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 10);
}

/// On a paused clock: the origin's 50 ms pass only once every task is idle, so the waiters have certainly joined the
/// leader's flight before it panics.
#[tokio::test(start_paused = true)]
async fn inner_panic_during_fill_releases_the_waiters() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let in_origin = Arc::new(tokio::sync::Notify::new());
    let entered = Arc::clone(&in_origin);
    let origin = tower::service_fn(move |_req: Request<()>| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        if n == 0 {
            entered.notify_one();
        }
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(n != 0, "origin bug");
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .header("cache-control", "max-age=60")
                    .body(http_body_util::Full::new(Bytes::from_static(b"ok")))
                    .unwrap(),
            )
        }
    });
    let svc = builder(&ManualWallClock::default())
        .build()
        .unwrap()
        .layer(origin);
    let leader = tokio::spawn(svc.clone().oneshot(get("/")));
    // The leader is inside the origin call (a permit is kept if it got there first).
    in_origin.notified().await;
    let waiters: Vec<_> = (0..5)
        .map(|_| tokio::spawn(send_owned(svc.clone())))
        .collect();
    assert!(leader.await.unwrap_err().is_panic());
    for w in waiters {
        let body = tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("waiter stuck")
            .unwrap();
        assert_eq!(body, "ok");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        6,
        "waiters went to the origin themselves"
    );
}

#[tokio::test]
async fn empty_body_that_is_never_polled_is_stored() {
    let (origin, calls) = streaming_origin(|_| (vec![("cache-control", "max-age=60")], vec![]));
    let svc = builder(&ManualWallClock::default())
        .build()
        .unwrap()
        .layer(origin);
    let empty = tower::service_fn(|_req: Request<()>| async {
        Ok::<_, std::convert::Infallible>(
            Response::builder()
                .status(204)
                .header("cache-control", "max-age=60")
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap(),
        )
    });
    let svc_empty = builder(&ManualWallClock::default())
        .build()
        .unwrap()
        .layer(empty);
    // Dropped unread, as hyper does with a body that is already at its end.
    drop(svc_empty.clone().oneshot(get("/")).await.unwrap());
    let res = svc_empty.oneshot(get("/")).await.unwrap();
    assert_eq!(res.headers()["x-cache"], "HIT");
    assert_eq!(res.status(), 204);
    // A stream body is not at its end until polled: dropping it unread stores nothing.
    drop(svc.clone().oneshot(get("/")).await.unwrap());
    let (p, _) = send(&svc, get("/")).await;
    assert_eq!(all(&p, "x-cache"), "MISS");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
