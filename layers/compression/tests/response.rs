//! CompressionLayer: one test per rule, engines, flushing, trailers, metrics, faults.

mod common;

use bytes::Bytes;
use common::{CODINGS, ChannelBody, TestBody, decode, gunzip, system_gunzip, text};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use std::{
    convert::Infallible,
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};
use tower::{Layer, ServiceExt, service_fn};
use tower_kit_compression::{CompressionBody, CompressionLayer};
use tower_kit_core::ServerTiming;

type Reply = Response<CompressionBody<TestBody>>;

/// Runs one request through `layer` in front of a service answering `make()`.
async fn run(
    layer: CompressionLayer,
    request: Request<()>,
    make: impl Fn() -> Response<TestBody> + Clone + Send + 'static,
) -> Reply {
    let service = layer.layer(service_fn(move |_req: Request<()>| {
        let make = make.clone();
        async move { Ok::<_, Infallible>(make()) }
    }));
    service.oneshot(request).await.unwrap()
}

fn get(accept: Option<&str>) -> Request<()> {
    let mut builder = Request::get("/x");
    if let Some(a) = accept {
        builder = builder.header(header::ACCEPT_ENCODING, a);
    }
    builder.body(()).unwrap()
}

fn json(body: TestBody) -> Response<TestBody> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap()
}

fn values(headers: &HeaderMap, name: header::HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

async fn body_bytes<B: Body>(response: Response<B>) -> Bytes
where
    B::Error: std::fmt::Debug,
{
    response.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn oneshot_compresses_with_exact_length_and_fixes_headers() {
    let data = text(20_000);
    let d = data.clone();
    let response = run(CompressionLayer::new(), get(Some("gzip")), move || {
        let mut r = json(TestBody::full(d.clone()));
        r.headers_mut()
            .insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        r.headers_mut()
            .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(20_000));
        r
    })
    .await;
    let headers = response.headers().clone();
    assert_eq!(values(&headers, header::CONTENT_ENCODING), ["gzip"]);
    assert_eq!(values(&headers, header::VARY), ["accept-encoding"]);
    assert_eq!(values(&headers, header::ETAG), ["W/\"v1\""]);
    assert!(headers.get(header::ACCEPT_RANGES).is_none());
    assert_eq!(
        response.body().size_hint().exact(),
        Some(
            headers[header::CONTENT_LENGTH]
                .to_str()
                .unwrap()
                .parse()
                .unwrap()
        )
    );
    let body = body_bytes(response).await;
    assert_eq!(
        values(&headers, header::CONTENT_LENGTH),
        [body.len().to_string()]
    );
    assert!(body.len() < data.len() / 4);
    assert_eq!(gunzip(&body), data);
    assert_eq!(system_gunzip(&body), data);
}

/// Asserts a response was sent as it was, and what its `Vary` is.
async fn assert_skipped(response: Reply, data: &[u8], vary: &[&str]) {
    let headers = response.headers().clone();
    assert!(
        headers
            .get(header::CONTENT_ENCODING)
            .is_none_or(|v| v != "gzip"),
        "{headers:?}"
    );
    assert_eq!(values(&headers, header::VARY), vary, "{headers:?}");
    assert_eq!(body_bytes(response).await, data);
}

#[tokio::test]
async fn skip_when_not_accepted_but_vary() {
    let data = text(5000);
    for accept in [
        None,
        Some("compress"),
        Some("gzip;q=0, br;q=0, zstd;q=0, deflate;q=0"),
        Some("*;q=0"),
        Some("identity"),
        Some("gzip;q=0.5, identity"),
    ] {
        let d = data.clone();
        let response = run(CompressionLayer::new(), get(accept), move || {
            json(TestBody::full(d.clone()))
        })
        .await;
        assert_skipped(response, &data, &["accept-encoding"]).await;
    }
}

#[tokio::test]
async fn skip_when_already_encoded() {
    let data = text(5000);
    let d = data.clone();
    let response = run(CompressionLayer::new(), get(Some("gzip, br")), move || {
        let mut r = json(TestBody::full(d.clone()));
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        r
    })
    .await;
    assert_eq!(values(response.headers(), header::CONTENT_ENCODING), ["br"]);
    assert_skipped(response, &data, &[]).await;
}

#[tokio::test]
async fn skip_head_with_vary() {
    let data = text(5000);
    let d = data.clone();
    let request = Request::head("/x")
        .header(header::ACCEPT_ENCODING, "gzip")
        .body(())
        .unwrap();
    let response = run(CompressionLayer::new(), request, move || {
        json(TestBody::full(d.clone()))
    })
    .await;
    assert_skipped(response, &data, &["accept-encoding"]).await;
}

#[tokio::test]
async fn skip_bodyless_and_partial_statuses() {
    let data = text(5000);
    for (status, vary) in [
        (204, &[][..]),
        (206, &[][..]),
        (304, &["accept-encoding"][..]),
        (101, &[][..]),
    ] {
        let d = data.clone();
        let response = run(CompressionLayer::new(), get(Some("gzip")), move || {
            let mut r = json(TestBody::full(d.clone()));
            *r.status_mut() = StatusCode::from_u16(status).unwrap();
            r
        })
        .await;
        assert_skipped(response, &data, vary).await;
    }
    // Errors with compressible bodies are compressed.
    let d = data.clone();
    let response = run(CompressionLayer::new(), get(Some("gzip")), move || {
        let mut r = json(TestBody::full(d.clone()));
        *r.status_mut() = StatusCode::NOT_FOUND;
        r
    })
    .await;
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
}

#[tokio::test]
async fn skip_content_range() {
    let data = text(5000);
    let d = data.clone();
    let response = run(CompressionLayer::new(), get(Some("gzip")), move || {
        let mut r = json(TestBody::full(d.clone()));
        r.headers_mut().insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 0-4999/9000"),
        );
        r
    })
    .await;
    assert_skipped(response, &data, &[]).await;
}

#[tokio::test]
async fn no_transform_is_respected_unless_switched_off() {
    let data = text(5000);
    let make = {
        let d = data.clone();
        move || {
            let mut r = json(TestBody::full(d.clone()));
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, no-transform"),
            );
            r
        }
    };
    let response = run(CompressionLayer::new(), get(Some("gzip")), make.clone()).await;
    assert_skipped(response, &data, &[]).await;
    let layer = CompressionLayer::builder()
        .no_transform(false)
        .build()
        .unwrap();
    let response = run(layer, get(Some("gzip")), make).await;
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
    assert_eq!(gunzip(&body_bytes(response).await), data);
}

#[tokio::test]
async fn content_type_lists() {
    let data = text(5000);
    for (ct, compressed) in [
        (Some("text/html; charset=utf-8"), true),
        (Some("image/svg+xml"), true),
        (Some("application/problem+json"), true),
        (Some("application/wasm"), true),
        (Some("image/png"), false),
        (Some("video/mp4"), false),
        (Some("font/woff2"), false),
        (Some("application/zip"), false),
        (Some("application/grpc"), false),
        (Some("application/octet-stream"), false),
        (None, false),
    ] {
        let d = data.clone();
        let response = run(CompressionLayer::new(), get(Some("gzip")), move || {
            let mut r = Response::new(TestBody::full(d.clone()));
            if let Some(ct) = ct {
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            }
            r
        })
        .await;
        if compressed {
            assert_eq!(
                response.headers()[header::CONTENT_ENCODING],
                "gzip",
                "{ct:?}"
            );
            assert_eq!(gunzip(&body_bytes(response).await), data);
        } else {
            assert_skipped(response, &data, &[]).await;
        }
    }
    // User lists: deny CSV, allow protobuf.
    let layer = CompressionLayer::builder()
        .deny_content_type("text/csv")
        .allow_content_type("application/x-protobuf")
        .build()
        .unwrap();
    for (ct, compressed) in [("text/csv", false), ("application/x-protobuf", true)] {
        let d = data.clone();
        let response = run(layer.clone(), get(Some("gzip")), move || {
            let mut r = Response::new(TestBody::full(d.clone()));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            r
        })
        .await;
        assert_eq!(
            response.headers().contains_key(header::CONTENT_ENCODING),
            compressed,
            "{ct}"
        );
    }
}

#[tokio::test]
async fn min_size_on_known_length() {
    for (len, compressed) in [(999, false), (1000, true)] {
        let data = text(len);
        let d = data.clone();
        let response = run(CompressionLayer::new(), get(Some("gzip")), move || {
            json(TestBody::full(d.clone()))
        })
        .await;
        if compressed {
            assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
            assert_eq!(gunzip(&body_bytes(response).await), data);
        } else {
            // Too small for any client: the answer does not vary with Accept-Encoding.
            assert_skipped(response, &data, &[]).await;
        }
    }
}

#[tokio::test]
async fn predicate_sees_request_and_response() {
    let layer = CompressionLayer::builder()
        .predicate(|request, response| {
            request.uri.path() != "/raw" && response.status != StatusCode::CREATED
        })
        .build()
        .unwrap();
    let data = text(5000);
    for (path, status, compressed) in [("/x", 200, true), ("/raw", 200, false), ("/x", 201, false)]
    {
        let d = data.clone();
        let request = Request::get(path)
            .header(header::ACCEPT_ENCODING, "gzip")
            .body(())
            .unwrap();
        let response = run(layer.clone(), request, move || {
            let mut r = json(TestBody::full(d.clone()));
            *r.status_mut() = StatusCode::from_u16(status).unwrap();
            r
        })
        .await;
        assert_eq!(
            response.headers().contains_key(header::CONTENT_ENCODING),
            compressed,
            "{path} {status}"
        );
    }
}

#[tokio::test]
async fn vary_is_merged_never_duplicated() {
    let data = text(5000);
    for (existing, want) in [
        (&["Origin"][..], &["Origin, accept-encoding"][..]),
        (
            &["Origin", "Cookie"][..],
            &["Origin, Cookie, accept-encoding"][..],
        ),
        (&["Accept-Encoding"][..], &["Accept-Encoding"][..]),
        (&["*"][..], &["*"][..]),
    ] {
        for accept in [Some("gzip"), None] {
            let d = data.clone();
            let response = run(CompressionLayer::new(), get(accept), move || {
                let mut r = json(TestBody::full(d.clone()));
                for v in existing {
                    r.headers_mut()
                        .append(header::VARY, HeaderValue::from_static(v));
                }
                r
            })
            .await;
            assert_eq!(
                values(response.headers(), header::VARY),
                want,
                "{existing:?} {accept:?}"
            );
        }
    }
}

#[tokio::test]
async fn unknown_length_below_threshold_is_sent_as_is_with_exact_length() {
    let response = run(CompressionLayer::new(), get(Some("gzip")), || {
        json(TestBody::chunks([text(300), text(300), text(399)]))
    })
    .await;
    let headers = response.headers().clone();
    assert!(headers.get(header::CONTENT_ENCODING).is_none());
    assert_eq!(values(&headers, header::CONTENT_LENGTH), ["999"]);
    assert!(headers.get(header::VARY).is_none());
    let body = body_bytes(response).await;
    assert_eq!(body.len(), 999);
}

/// Runs one request through `layer` in front of a service answering `response` once.
async fn run_once<B: Body + Send + 'static>(
    layer: CompressionLayer,
    request: Request<()>,
    response: Response<B>,
) -> Response<CompressionBody<B>>
where
    B::Error: Into<tower_kit_compression::BoxError>,
{
    let slot = Arc::new(Mutex::new(Some(response)));
    let service = layer.layer(service_fn(move |_req: Request<()>| {
        let response = slot.lock().unwrap().take().unwrap();
        async move { Ok::<_, Infallible>(response) }
    }));
    service.oneshot(request).await.unwrap()
}

fn with_type<B>(content_type: &'static str, body: B) -> Response<B> {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .unwrap()
}

#[tokio::test]
async fn unknown_length_above_threshold_streams_before_the_end() {
    let (tx, body) = ChannelBody::new();
    tx.send(Frame::data(Bytes::from(text(600)))).await.unwrap();
    tx.send(Frame::data(Bytes::from(text(600)))).await.unwrap();
    // The head comes back while the body is still open: the decision was made at 1200 >= 1000 bytes.
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        run_once(
            CompressionLayer::new(),
            get(Some("gzip")),
            with_type("application/json", body),
        ),
    )
    .await
    .expect("head before the body ended");
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
    assert!(response.headers().get(header::CONTENT_LENGTH).is_none());
    assert!(response.body().is_stream());
    tx.send(Frame::data(Bytes::from(text(3000)))).await.unwrap();
    drop(tx);
    let body = body_bytes(response).await;
    let mut want = text(600);
    want.extend(text(600));
    want.extend(text(3000));
    assert_eq!(gunzip(&body), want);
    assert_eq!(system_gunzip(&body), want);
}

#[tokio::test]
async fn known_length_over_max_buffered_streams() {
    let layer = CompressionLayer::builder()
        .max_buffered(4096)
        .build()
        .unwrap();
    let data = text(10_000);
    let response = run_once(
        layer,
        get(Some("gzip")),
        with_type("text/plain", TestBody::full(data.clone())),
    )
    .await;
    assert!(response.body().is_stream());
    assert!(response.headers().get(header::CONTENT_LENGTH).is_none());
    assert_eq!(gunzip(&body_bytes(response).await), data);
}

#[tokio::test]
async fn unknown_length_that_ends_is_compressed_in_one_shot() {
    // The body says it is at its end after the last frame: the whole size is then known.
    let data = text(3000);
    let body = TestBody::chunks([data[..500].to_vec(), data[500..].to_vec()]);
    let response = run_once(
        CompressionLayer::new(),
        get(Some("gzip")),
        with_type("text/plain", body),
    )
    .await;
    assert!(!response.body().is_stream());
    let length: usize = response.headers()[header::CONTENT_LENGTH]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = body_bytes(response).await;
    assert_eq!(body.len(), length);
    assert_eq!(gunzip(&body), data);
}

/// Reads one frame of a response body, with a deadline.
async fn next_data<B: Body<Data = Bytes> + Unpin>(body: &mut B) -> Bytes
where
    B::Error: std::fmt::Debug,
{
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("a frame in time")
        .expect("not the end")
        .unwrap();
    frame.into_data().unwrap()
}

#[tokio::test]
async fn sse_and_ndjson_flush_every_event() {
    for content_type in ["text/event-stream", "application/x-ndjson"] {
        let (tx, body) = ChannelBody::new();
        let response = run_once(
            CompressionLayer::new(),
            get(Some("gzip")),
            with_type(content_type, body),
        )
        .await;
        assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
        let mut body = response.into_body();
        let mut decoder = flate2::write::GzDecoder::new(Vec::new());
        for i in 0..3 {
            let event = format!("data: event {i}\n\n");
            tx.send(Frame::data(Bytes::from(event.clone())))
                .await
                .unwrap();
            let chunk = next_data(&mut body).await;
            decoder.write_all(&chunk).unwrap();
            decoder.flush().unwrap();
            assert!(
                String::from_utf8_lossy(decoder.get_ref()).ends_with(&event),
                "{content_type}: event {i} decodable at once"
            );
        }
        drop(tx);
        let rest = body.collect().await.unwrap().to_bytes();
        decoder.write_all(&rest).unwrap();
        let all = decoder.finish().unwrap();
        assert_eq!(
            String::from_utf8(all).unwrap(),
            "data: event 0\n\ndata: event 1\n\ndata: event 2\n\n"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn idle_stream_is_flushed() {
    let layer = CompressionLayer::builder().min_size(10).build().unwrap();
    let (tx, body) = ChannelBody::new();
    tx.send(Frame::data(Bytes::from_static(
        b"{\"first\": \"chunk of a slow json stream\"}",
    )))
    .await
    .unwrap();
    let response = run_once(
        layer,
        get(Some("gzip")),
        with_type("application/json", body),
    )
    .await;
    assert!(response.body().is_stream());
    let mut body = response.into_body();
    let start = tokio::time::Instant::now();
    // Nothing more arrives: after the idle time (100 ms) what was fed is flushed.
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    while decoder.get_ref().is_empty() {
        let chunk = next_data(&mut body).await;
        decoder.write_all(&chunk).unwrap();
        decoder.flush().unwrap();
    }
    assert_eq!(
        decoder.get_ref(),
        b"{\"first\": \"chunk of a slow json stream\"}"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    drop(tx);
}

#[tokio::test]
async fn trailers_pass_through_both_engines() {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    for layer in [
        CompressionLayer::new(),
        CompressionLayer::builder()
            .min_size(10)
            .max_buffered(100)
            .build()
            .unwrap(),
    ] {
        let data = text(5000);
        let body = TestBody::chunks([data[..2500].to_vec(), data[2500..].to_vec()])
            .exact()
            .trailers(trailers.clone());
        let response = run_once(layer, get(Some("gzip")), with_type("text/plain", body)).await;
        let collected = response.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(gunzip(&collected.to_bytes()), data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_are_offloaded_and_still_correct() {
    // One-shot above the offload threshold, and a stream with a frame above it.
    let data = text(600_000);
    for layer in [
        CompressionLayer::new(),
        CompressionLayer::builder()
            .max_buffered(1000)
            .build()
            .unwrap(),
    ] {
        let body = TestBody::chunks([data[..100].to_vec(), data[100..].to_vec()]).exact();
        let response = run_once(layer, get(Some("gzip")), with_type("text/plain", body)).await;
        let body = body_bytes(response).await;
        assert_eq!(gunzip(&body), data);
    }
}

#[test]
fn server_timing_entry_on_the_one_shot_path() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let timing = ServerTiming::new();
        let mut request = get(Some("gzip"));
        request.extensions_mut().insert(timing.clone());
        let response = run_once(
            CompressionLayer::new(),
            request,
            with_type("text/plain", TestBody::full(text(5000))),
        )
        .await;
        assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
        let value = timing.seal().unwrap();
        assert!(
            value.to_str().unwrap().starts_with("gzip;dur="),
            "{value:?}"
        );
    });
}

fn counter(
    snapshot: &[(metrics_util::CompositeKey, DebugValue)],
    name: &str,
    label: (&str, &str),
) -> u64 {
    snapshot
        .iter()
        .filter(|(key, _)| {
            key.key().name() == name
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == label.0 && l.value() == label.1)
        })
        .map(|(_, value)| match value {
            DebugValue::Counter(n) => *n,
            _ => 0,
        })
        .sum()
}

#[test]
fn metrics_count_compressions_skips_and_bytes() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let r = run_once(
                CompressionLayer::new(),
                get(Some("gzip")),
                with_type("text/plain", TestBody::full(text(5000))),
            )
            .await;
            let compressed = body_bytes(r).await.len();
            let r = run_once(
                CompressionLayer::new(),
                get(None),
                with_type("text/plain", TestBody::full(text(5000))),
            )
            .await;
            body_bytes(r).await;
            let r = run_once(
                CompressionLayer::new(),
                get(Some("gzip")),
                with_type("image/png", TestBody::full(text(5000))),
            )
            .await;
            body_bytes(r).await;
            let r = run_once(
                CompressionLayer::builder()
                    .max_buffered(1000)
                    .build()
                    .unwrap(),
                get(Some("gzip")),
                with_type("text/plain", TestBody::full(text(3000))),
            )
            .await;
            body_bytes(r).await;
            let snapshot: Vec<_> = snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(k, _, _, v)| (k, v))
                .collect();
            assert_eq!(
                counter(
                    &snapshot,
                    "tower_kit.compression.compressed",
                    ("engine", "libdeflate")
                ),
                1
            );
            assert_eq!(
                counter(
                    &snapshot,
                    "tower_kit.compression.compressed",
                    ("engine", "zlib-rs")
                ),
                1
            );
            assert_eq!(
                counter(
                    &snapshot,
                    "tower_kit.compression.skipped",
                    ("reason", "not_accepted")
                ),
                1
            );
            assert_eq!(
                counter(
                    &snapshot,
                    "tower_kit.compression.skipped",
                    ("reason", "content_type")
                ),
                1
            );
            assert_eq!(
                counter(
                    &snapshot,
                    "tower_kit.compression.bytes_in",
                    ("engine", "libdeflate")
                ),
                5000
            );
            assert_eq!(
                counter(
                    &snapshot,
                    "tower_kit.compression.bytes_out",
                    ("engine", "libdeflate")
                ),
                compressed as u64
            );
            assert_eq!(
                counter(
                    &snapshot,
                    "tower_kit.compression.bytes_in",
                    ("engine", "zlib-rs")
                ),
                3000
            );
        })
    });
}

#[tokio::test]
async fn inner_service_errors_pass_through() {
    let service = CompressionLayer::new().layer(service_fn(|_req: Request<()>| async {
        Err::<Response<TestBody>, _>(std::io::Error::other("backend down"))
    }));
    let error = service.oneshot(get(Some("gzip"))).await.unwrap_err();
    assert_eq!(error.to_string(), "backend down");
}

#[tokio::test]
async fn body_errors_reach_the_client_on_both_paths() {
    // Streamed: the data before the error is sent, then the error.
    let body = TestBody::chunks([text(2000), text(2000)]).then_error("upstream reset");
    let response = run_once(
        CompressionLayer::new(),
        get(Some("gzip")),
        with_type("text/plain", body),
    )
    .await;
    let error = response.into_body().collect().await.unwrap_err();
    assert_eq!(error.to_string(), "upstream reset");
    // One-shot: the error comes while collecting; the client gets it as the body.
    let body = TestBody::chunks([text(2000)])
        .exact()
        .then_error("upstream reset");
    let mut response = run_once(
        CompressionLayer::new(),
        get(Some("gzip")),
        with_type("text/plain", body),
    )
    .await;
    assert!(response.headers().get(header::CONTENT_LENGTH).is_none());
    let error = response.body_mut().frame().await.unwrap().unwrap_err();
    assert_eq!(error.to_string(), "upstream reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_dropping_the_body_mid_stream_is_fine() {
    let (tx, body) = ChannelBody::new();
    let response = run_once(
        CompressionLayer::new(),
        get(Some("gzip")),
        with_type("text/event-stream", body),
    )
    .await;
    let mut body = response.into_body();
    tx.send(Frame::data(Bytes::from(text(100_000))))
        .await
        .unwrap(); // offloaded frame
    let _ = next_data(&mut body).await;
    tx.send(Frame::data(Bytes::from(text(100_000))))
        .await
        .unwrap();
    drop(body);
    // The sender sees the receiver gone.
    tokio::time::timeout(Duration::from_secs(5), tx.closed())
        .await
        .unwrap();
}

#[tokio::test]
async fn hostile_accept_encoding_values_do_not_break_anything() {
    for value in [
        &b"gzip;q=1e9"[..],
        b"gzip;q=NaN",
        b";;;,,,",
        b"gzip;q=0.5;q=1",
        b"\tgzip\t",
        b"gzip\x80",
    ] {
        let mut request = get(None);
        request.headers_mut().insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_bytes(value).unwrap(),
        );
        let response = run_once(
            CompressionLayer::new(),
            request,
            with_type("text/plain", TestBody::full(text(5000))),
        )
        .await;
        assert_eq!(response.status(), 200);
        let encoded = response.headers().contains_key(header::CONTENT_ENCODING);
        let body = body_bytes(response).await;
        if encoded {
            assert_eq!(gunzip(&body), text(5000));
        } else {
            assert_eq!(body, text(5000));
        }
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Splits `data` at the given points.
    fn split(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut last = 0;
        for c in cuts.into_iter().chain([data.len()]) {
            out.push(data[last..c].to_vec());
            last = c;
        }
        out
    }

    fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..20_000),
            (1usize..40_000).prop_map(text),
            proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'{')], 0..30_000),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn oneshot_engine_round_trips(data in body_strategy(), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            for coding in CODINGS {
                let layer = CompressionLayer::builder().min_size(0).build().unwrap();
                let body = TestBody::chunks(split(&data, &cuts)).exact();
                let (encoding, out) = runtime().block_on(async {
                    let response = run_once(layer, get(Some(coding)), with_type("text/plain", body)).await;
                    prop_assert!(!response.body().is_stream());
                    let encoding = response.headers().get(header::CONTENT_ENCODING).cloned();
                    Ok((encoding, body_bytes(response).await))
                })?;
                match encoding {
                    Some(encoding) => {
                        prop_assert_eq!(&encoding, coding);
                        prop_assert!(out.len() < data.len(), "{coding}: never larger");
                        prop_assert_eq!(&decode(coding, &out), &data, "{}", coding);
                    }
                    // Not smaller compressed: sent as it is.
                    None => prop_assert_eq!(&out, &data),
                }
            }
        }

        #[test]
        fn stream_engine_round_trips(
            data in body_strategy(),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            flush in any::<bool>(),
        ) {
            for coding in CODINGS {
                let layer = CompressionLayer::builder().min_size(0).max_buffered(0).flush_every_frame(flush).build().unwrap();
                let body = TestBody::chunks(split(&data, &cuts)).exact();
                let out = runtime().block_on(async {
                    let response = run_once(layer, get(Some(coding)), with_type("text/plain", body)).await;
                    prop_assert!(response.body().is_stream() || data.is_empty());
                    if response.body().is_stream() {
                        prop_assert_eq!(&response.headers()[header::CONTENT_ENCODING], coding);
                    }
                    Ok(body_bytes(response).await)
                })?;
                if !data.is_empty() {
                    prop_assert_eq!(&decode(coding, &out), &data, "{}", coding);
                }
            }
        }
    }
}

#[tokio::test]
async fn each_coding_is_negotiated_and_decodes() {
    let data = text(20_000);
    for (accept, coding) in [
        ("gzip", "gzip"),
        ("deflate", "deflate"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip, deflate, br, zstd", "zstd"),
        ("gzip, deflate, br", "br"),
        ("br;q=0.5, gzip", "gzip"),
    ] {
        let d = data.clone();
        let response = run(CompressionLayer::new(), get(Some(accept)), move || {
            json(TestBody::full(d.clone()))
        })
        .await;
        let headers = response.headers().clone();
        assert_eq!(
            values(&headers, header::CONTENT_ENCODING),
            [coding],
            "{accept}"
        );
        assert_eq!(values(&headers, header::VARY), ["accept-encoding"]);
        let body = body_bytes(response).await;
        assert_eq!(
            values(&headers, header::CONTENT_LENGTH),
            [body.len().to_string()]
        );
        assert!(body.len() < data.len() / 4, "{coding}: {}", body.len());
        assert_eq!(decode(coding, &body), data, "{coding}");
    }
}

#[tokio::test]
async fn a_layer_without_a_codec_never_offers_it() {
    let data = text(20_000);
    let layer = CompressionLayer::builder()
        .zstd(false)
        .br(false)
        .build()
        .unwrap();
    assert_eq!(
        layer.codings(),
        [
            tower_kit_compression::Coding::Gzip,
            tower_kit_compression::Coding::Deflate
        ]
    );
    for (accept, expected) in [("zstd, br, gzip", Some("gzip")), ("zstd, br", None)] {
        let d = data.clone();
        let response = run(layer.clone(), get(Some(accept)), move || {
            json(TestBody::full(d.clone()))
        })
        .await;
        assert_eq!(
            response
                .headers()
                .get(header::CONTENT_ENCODING)
                .map(|v| v.to_str().unwrap().to_owned())
                .as_deref(),
            expected,
            "{accept}"
        );
        assert_eq!(
            values(response.headers(), header::VARY),
            ["accept-encoding"]
        );
    }
}

#[tokio::test]
async fn a_body_compression_would_not_shrink_is_sent_as_it_is() {
    // Incompressible bytes of a compressible type, above min_size.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..5_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    for coding in CODINGS {
        let d = noise.clone();
        let response = run(CompressionLayer::new(), get(Some(coding)), move || {
            json(TestBody::full(d.clone()))
        })
        .await;
        let headers = response.headers().clone();
        assert!(headers.get(header::CONTENT_ENCODING).is_none(), "{coding}");
        assert_eq!(
            values(&headers, header::VARY),
            ["accept-encoding"],
            "{coding}"
        );
        assert_eq!(
            values(&headers, header::CONTENT_LENGTH),
            ["5000"],
            "{coding}"
        );
        assert_eq!(body_bytes(response).await, noise, "{coding}");
    }
}

#[tokio::test]
async fn streams_prefer_codings_other_than_brotli() {
    let sse = || {
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(TestBody::chunks([
                b"data: one\n\n".to_vec(),
                b"data: two\n\n".to_vec(),
            ]))
            .unwrap()
    };
    for (accept, coding) in [("br, gzip", "gzip"), ("br, zstd", "zstd"), ("br", "br")] {
        let response = run(CompressionLayer::new(), get(Some(accept)), sse).await;
        assert!(response.body().is_stream());
        assert_eq!(
            values(response.headers(), header::CONTENT_ENCODING),
            [coding],
            "{accept}"
        );
        let body = body_bytes(response).await;
        assert_eq!(decode(coding, &body), b"data: one\n\ndata: two\n\n");
    }
}

#[tokio::test]
async fn the_chooser_agrees_with_the_layer() {
    let layer = CompressionLayer::new();
    let data = text(5_000);
    for accept in [
        "gzip",
        "br, gzip",
        "gzip, deflate, br, zstd",
        "identity",
        "zstd;q=0, *",
    ] {
        let request = get(Some(accept));
        let chosen = layer.choose(request.headers()).map(|c| c.as_str());
        let d = data.clone();
        let response = run(layer.clone(), request, move || {
            json(TestBody::full(d.clone()))
        })
        .await;
        assert_eq!(
            response
                .headers()
                .get(header::CONTENT_ENCODING)
                .map(|v| v.to_str().unwrap()),
            chosen,
            "{accept}"
        );
    }
}
