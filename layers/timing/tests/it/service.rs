//! Service-level unit tests: labels, outcomes, gRPC status, Server-Timing, stats, the slow log.

use crate::support::{Labels, Metrics, labels};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use std::{borrow::Cow, convert::Infallible, time::Duration};
use tower::{ServiceExt, service_fn};
use tower_kit_core::ServerTiming;
use tower_kit_timing::{RequestInfo, TimingLayer, names};

fn ok_service()
-> impl tower::Service<Request<()>, Response = Response<Full<Bytes>>, Error = Infallible> + Clone {
    service_fn(|_req: Request<()>| async {
        Ok(Response::new(Full::new(Bytes::from_static(b"hello"))))
    })
}

fn users_route(info: &RequestInfo<'_>) -> Option<Cow<'static, str>> {
    info.uri
        .path()
        .starts_with("/users/")
        .then_some(Cow::Borrowed("/users/{id}"))
}

#[tokio::test]
async fn route_comes_from_the_mapping_else_unmatched() {
    let m = Metrics::new();
    let _g = m.install();
    let layer = TimingLayer::builder()
        .route_fn(users_route)
        .build()
        .unwrap();
    let svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(ok_service());
    for path in ["/users/1", "/users/2", "/elsewhere"] {
        let res = svc
            .clone()
            .oneshot(Request::get(path).body(()).unwrap())
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
    let got = m.series(names::REQUEST_DURATION);
    let routes: Vec<(String, usize)> = got
        .iter()
        .map(|(l, v)| {
            let route = l.iter().find(|(k, _)| k == names::ROUTE).unwrap().1.clone();
            (route, v.count())
        })
        .collect();
    assert_eq!(
        routes,
        vec![("/users/{id}".to_owned(), 2), ("unmatched".to_owned(), 1)]
    );
    assert_eq!(
        got[0].0,
        labels(&[
            (names::METHOD, "GET"),
            (names::ROUTE, "/users/{id}"),
            (names::STATUS_CODE, "200")
        ])
    );
}

#[tokio::test]
async fn the_label_cap_is_shared_by_every_service_of_the_layer() {
    let m = Metrics::new();
    let _g = m.install();
    // A (bad) mapping that returns raw paths: the cap is what keeps the series bounded.
    let layer = TimingLayer::builder()
        .max_label_values(3)
        .route_fn(|info| Some(Cow::Owned(info.uri.path().to_owned())))
        .build()
        .unwrap();
    for i in 0..20 {
        // A new service per request, as axum makes one per route: the cap still holds for the layer.
        let svc = tower::Layer::layer(&layer, ok_service());
        let res = svc
            .oneshot(Request::get(format!("/p{i}")).body(()).unwrap())
            .await
            .unwrap();
        drop(res);
    }
    let routes: std::collections::BTreeSet<String> = m
        .series(names::REQUEST_DURATION)
        .into_iter()
        .map(|(l, _)| l.into_iter().find(|(k, _)| k == names::ROUTE).unwrap().1)
        .collect();
    assert_eq!(routes.len(), 4, "{routes:?}");
    assert!(routes.contains(names::OTHER_ROUTE));
    let overflow = m.series(names::LABEL_OVERFLOW);
    assert_eq!(overflow.len(), 1);
    assert_eq!(overflow[0].0, labels(&[(names::LABEL, names::ROUTE)]));
    assert_eq!(overflow[0].1.count(), 17);
}

/// A body of the given frames; `Err` frames are body errors.
type Item = Result<Frame<Bytes>, std::io::Error>;

fn stream_body(
    frames: Vec<Item>,
) -> StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Item>>> {
    StreamBody::new(futures_util::stream::iter(frames))
}

fn error_type(m: &Metrics) -> Vec<(Option<String>, Option<String>)> {
    m.series(names::REQUEST_DURATION)
        .into_iter()
        .map(|(l, _)| {
            let get = |name: &str| l.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            (get(names::STATUS_CODE), get(names::ERROR_TYPE))
        })
        .collect()
}

#[tokio::test]
async fn outcomes_are_labelled() {
    let m = Metrics::new();
    let _g = m.install();
    let layer = TimingLayer::new();
    let svc = tower::Layer::layer(
        &layer,
        service_fn(|req: Request<()>| async move {
            let data = |b: &'static [u8]| Ok(Frame::data(Bytes::from_static(b)));
            let (status, frames) = match req.uri().path() {
                "/ok" => (200, vec![data(b"a"), data(b"b")]),
                "/503" => (503, vec![data(b"busy")]),
                "/body-error" => (200, vec![data(b"a"), Err(std::io::Error::other("boom"))]),
                "/service-error" => return Err(std::io::Error::other("down")),
                _ => (200, vec![data(b"a"), data(b"b")]),
            };
            let mut res = Response::new(stream_body(frames));
            *res.status_mut() = StatusCode::from_u16(status).unwrap();
            Ok(res)
        }),
    );

    let res = svc
        .clone()
        .oneshot(Request::get("/ok").body(()).unwrap())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let res = svc
        .clone()
        .oneshot(Request::get("/503").body(()).unwrap())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let res = svc
        .clone()
        .oneshot(Request::get("/body-error").body(()).unwrap())
        .await
        .unwrap();
    assert!(res.into_body().collect().await.is_err());
    assert!(
        svc.clone()
            .oneshot(Request::get("/service-error").body(()).unwrap())
            .await
            .is_err()
    );
    // The client reads one frame and goes away.
    let res = svc
        .clone()
        .oneshot(Request::get("/dropped").body(()).unwrap())
        .await
        .unwrap();
    let mut body = res.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);

    let mut got = error_type(&m);
    got.sort();
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        got,
        vec![
            (None, s("service_error")),
            (s("200"), None),
            (s("200"), s("aborted")),
            (s("200"), s("body_error")),
            (s("503"), s("503")),
        ]
    );
    assert_eq!(m.gauge("GET"), 0.0);
}

#[tokio::test]
async fn a_request_cancelled_before_its_head_is_aborted() {
    let m = Metrics::new();
    let _g = m.install();
    let svc = tower::Layer::layer(
        &TimingLayer::new(),
        service_fn(|_: Request<()>| async {
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }),
    );
    let call = svc.oneshot(Request::get("/").body(()).unwrap());
    assert!(
        tokio::time::timeout(Duration::from_millis(10), call)
            .await
            .is_err()
    );
    assert_eq!(error_type(&m), vec![(None, Some("aborted".to_owned()))]);
    assert_eq!(m.gauge("GET"), 0.0);
}

#[tokio::test]
async fn a_panicking_service_is_recorded_as_panic() {
    let m = Metrics::new();
    let _g = m.install();
    let svc = tower::Layer::layer(
        &TimingLayer::new(),
        service_fn(|_: Request<()>| async {
            if true {
                panic!("handler bug");
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }),
    );
    let fut = svc.oneshot(Request::get("/").body(()).unwrap());
    // Poll it the way a runtime does: catch the panic, then drop the future.
    let mut fut = Box::pin(fut);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let waker = futures_util::task::noop_waker();
        let _ = fut
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker));
    }));
    assert!(caught.is_err());
    drop(fut);
    assert_eq!(error_type(&m), vec![(None, Some("panic".to_owned()))]);
    assert_eq!(m.gauge("GET"), 0.0);
}

#[tokio::test]
async fn the_active_gauge_lasts_until_the_body_ends() {
    let m = Metrics::new();
    let _g = m.install();
    let layer = TimingLayer::new();
    let stats = layer.handle();
    let svc = tower::Layer::layer(
        &layer,
        service_fn(|_: Request<()>| async {
            let data = |b: &'static [u8]| Ok(Frame::data(Bytes::from_static(b)));
            Ok::<_, Infallible>(Response::new(stream_body(vec![data(b"a"), data(b"b")])))
        }),
    );
    assert_eq!(m.gauge("POST"), 0.0);
    let res = svc
        .oneshot(Request::post("/").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(m.gauge("POST"), 1.0, "head returned, body not ended");
    assert_eq!(stats.snapshot().active, 1);
    let mut body = res.into_body();
    body.frame().await.unwrap().unwrap();
    assert_eq!(m.gauge("POST"), 1.0, "still streaming");
    drop(body);
    assert_eq!(m.gauge("POST"), 0.0);
    assert_eq!(stats.snapshot().active, 0);
}

/// The handle from the service and the one from the layer read the same statistics, and so does a handle taken
/// from a clone of the layer.
#[tokio::test]
async fn service_and_layer_handles_share_one_registry() {
    let layer = TimingLayer::new();
    let from_clone = layer.clone().handle();
    let svc = tower::Layer::layer(
        &layer,
        service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(String::new())) }),
    );
    let from_service = svc.handle();
    let res = svc
        .oneshot(Request::get("/").body(()).unwrap())
        .await
        .unwrap();
    drop(res);
    for handle in [layer.handle(), from_clone, from_service] {
        let snapshot = handle.snapshot();
        let route = snapshot.get("unmatched", "GET").expect("one request seen");
        assert_eq!((route.count, route.active), (1, 0));
    }
}

fn grpc_request(path: &str) -> Request<()> {
    Request::post(path)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap()
}

#[tokio::test]
async fn grpc_status_is_read_from_trailers_and_headers() {
    let m = Metrics::new();
    let _g = m.install();
    let svc = tower::Layer::layer(
        &TimingLayer::new(),
        service_fn(|req: Request<()>| async move {
            let mut trailers = HeaderMap::new();
            let mut res = match req.uri().path() {
                "/pkg.Svc/NotFound" => {
                    trailers.insert("grpc-status", "5".parse().unwrap());
                    Response::new(stream_body(vec![
                        Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
                        Ok(Frame::trailers(trailers)),
                    ]))
                }
                // What tonic answers for a method it does not have: trailers-only, status 12.
                _ => {
                    let mut r = Response::new(stream_body(vec![]));
                    r.headers_mut().insert("grpc-status", "12".parse().unwrap());
                    r
                }
            };
            res.headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            Ok::<_, Infallible>(res)
        }),
    );
    let res = svc
        .clone()
        .oneshot(grpc_request("/pkg.Svc/NotFound"))
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    for i in 0..50 {
        let res = svc
            .clone()
            .oneshot(grpc_request(&format!("/pkg.Svc/Nope{i}")))
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
    let got: Vec<Labels> = m
        .series(names::REQUEST_DURATION)
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    assert_eq!(
        got,
        vec![
            labels(&[
                (names::METHOD, "POST"),
                (names::ROUTE, "/pkg.Svc/NotFound"),
                (names::STATUS_CODE, "200"),
                (names::GRPC_STATUS_CODE, "5"),
            ]),
            labels(&[
                (names::METHOD, "POST"),
                (names::ROUTE, "unmatched"),
                (names::STATUS_CODE, "200"),
                (names::GRPC_STATUS_CODE, "12"),
            ]),
        ],
        "unimplemented methods create no route value"
    );
}

#[tokio::test]
async fn server_timing_header_carries_entries_of_inner_layers() {
    let svc_fn = |req: Request<()>| async move {
        if let Some(timing) = ServerTiming::from_request(&req) {
            timing.describe("cache", "hit");
        }
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"x"))))
    };
    let layer = TimingLayer::builder().server_timing(true).build().unwrap();
    let res = tower::Layer::layer(&layer, service_fn(svc_fn))
        .oneshot(Request::get("/").body(()).unwrap())
        .await
        .unwrap();
    let values: Vec<_> = res.headers().get_all("server-timing").iter().collect();
    assert_eq!(values.len(), 1);
    let v = values[0].to_str().unwrap();
    assert!(v.starts_with("app;dur="), "{v}");
    assert!(v.ends_with(", cache;desc=hit"), "{v}");

    // Off by default, and per request with a predicate.
    let res = tower::Layer::layer(&TimingLayer::new(), service_fn(svc_fn))
        .oneshot(Request::get("/").body(()).unwrap())
        .await
        .unwrap();
    assert!(res.headers().get("server-timing").is_none());
    let layer = TimingLayer::builder()
        .server_timing_if(|info| info.headers.contains_key("x-debug-timing"))
        .build()
        .unwrap();
    let svc = tower::Layer::layer(&layer, service_fn(svc_fn));
    let res = svc
        .clone()
        .oneshot(Request::get("/").body(()).unwrap())
        .await
        .unwrap();
    assert!(res.headers().get("server-timing").is_none());
    let req = Request::get("/")
        .header("x-debug-timing", "1")
        .body(())
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert!(res.headers().get("server-timing").is_some());
}

#[tokio::test]
async fn late_server_timing_entries_go_in_a_trailer_only_when_asked_for() {
    // The inner service adds an entry while its body streams, after the head left.
    let svc_fn = |req: Request<()>| async move {
        let timing = ServerTiming::from_request(&req).cloned();
        let body = futures_util::stream::iter(vec![0u8, 1]).map(move |i| {
            if i == 1
                && let Some(t) = &timing
            {
                t.duration("db", Duration::from_millis(3));
            }
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"chunk")))
        });
        Ok::<_, Infallible>(Response::new(StreamBody::new(body)))
    };
    use futures_util::StreamExt as _;
    let layer = TimingLayer::builder().server_timing(true).build().unwrap();
    let svc = tower::Layer::layer(&layer, service_fn(svc_fn));

    let req = Request::get("/").header("te", "trailers").body(()).unwrap();
    let res = svc.clone().oneshot(req).await.unwrap();
    let collected = res.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["server-timing"], "db;dur=3");

    let res = svc
        .oneshot(Request::get("/").body(()).unwrap())
        .await
        .unwrap();
    let collected = res.into_body().collect().await.unwrap();
    assert!(collected.trailers().is_none());
}

/// Sends `n` POST requests with `Content-Length: 42` through `layer` around [`ok_service`], reading each body.
async fn post_42_bytes(layer: &TimingLayer, n: usize) {
    let svc = tower::Layer::layer(layer, ok_service());
    for _ in 0..n {
        let req = Request::post("/")
            .header("content-length", "42")
            .body(())
            .unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
}

#[tokio::test]
async fn sizes_and_stats() {
    let m = Metrics::new();
    let _g = m.install();
    let layer = TimingLayer::builder()
        .body_sizes(true)
        .head_duration(true)
        .build()
        .unwrap();
    let stats = layer.handle();
    post_42_bytes(&layer, 10).await;
    let req_sizes = m.series(names::REQUEST_BODY_SIZE);
    let resp_sizes = m.series(names::RESPONSE_BODY_SIZE);
    assert_eq!(req_sizes[0].1.samples(), [42.0; 10]);
    assert_eq!(resp_sizes[0].1.samples(), [5.0; 10]);
    assert_eq!(
        m.series(names::REQUEST_HEAD_DURATION)[0].1.samples().len(),
        10
    );
    let snapshot = stats.snapshot();
    let route = snapshot.get("unmatched", "POST").unwrap();
    assert_eq!((route.count, route.errors, route.active), (10, 0, 0));
    assert!(
        route.min_ms <= route.p50_ms
            && route.p50_ms <= route.p99_ms
            && route.p99_ms <= route.max_ms
    );
    let json = serde_json::to_value(&snapshot).unwrap();
    assert_eq!(json["routes"][0]["route"], "unmatched");
    stats.reset();
    assert_eq!(stats.snapshot().get("unmatched", "POST").unwrap().count, 0);
}

#[test]
fn slow_requests_are_logged_with_their_route() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            let layer = TimingLayer::builder()
                .route_fn(users_route)
                .slow_threshold_for(|route| (route == "/users/{id}").then_some(Duration::ZERO))
                .build()
                .unwrap();
            let svc = tower::Layer::layer(&layer, ok_service());
            for path in ["/users/1", "/fast"] {
                let res = svc
                    .clone()
                    .oneshot(Request::get(path).body(()).unwrap())
                    .await
                    .unwrap();
                res.into_body().collect().await.unwrap();
            }
        });
    });
    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert_eq!(log.matches("slow request").count(), 1, "{log}");
    assert!(log.contains("/users/{id}") && log.contains("WARN"), "{log}");
}

#[tokio::test]
async fn with_metrics_off_nothing_reaches_the_recorder_but_stats_count() {
    let m = Metrics::new();
    let _g = m.install();
    let layer = TimingLayer::builder()
        .metrics(false)
        .max_label_values(1)
        .route_fn(|info| Some(Cow::Owned(info.uri.path().to_owned())))
        .build()
        .unwrap();
    let stats = layer.handle();
    let svc = tower::Layer::layer(&layer, ok_service());
    for path in ["/a", "/b"] {
        let res = svc
            .clone()
            .oneshot(Request::get(path).body(()).unwrap())
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
    for name in [
        names::REQUEST_DURATION,
        names::ACTIVE_REQUESTS,
        names::LABEL_OVERFLOW,
        names::RESPONSE_BODY_SIZE,
    ] {
        assert!(
            m.series(name).is_empty(),
            "{name} recorded with metrics off"
        );
    }
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.get("/a", "GET").unwrap().count, 1);
    assert_eq!(snapshot.get(names::OTHER_ROUTE, "GET").unwrap().count, 1);
}

#[tokio::test]
async fn head_and_size_histograms_are_opt_in() {
    let m = Metrics::new();
    let _g = m.install();
    post_42_bytes(&TimingLayer::new(), 3).await;
    assert_eq!(m.series(names::REQUEST_DURATION)[0].1.samples().len(), 3);
    for name in [
        names::REQUEST_HEAD_DURATION,
        names::REQUEST_BODY_SIZE,
        names::RESPONSE_BODY_SIZE,
    ] {
        assert!(m.series(name).is_empty(), "{name} recorded by default");
    }
}
