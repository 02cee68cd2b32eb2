//! RequestDecompressionLayer: decoding, caps, bad bodies, unsupported codings.

mod common;

use bytes::Bytes;
use common::{TestBody, gzip, text};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use std::convert::Infallible;
use tower::{Layer, ServiceExt, service_fn};
use tower_kit_compression::{DecodedBody, RequestDecompressionLayer};

/// An inner service that answers with what it received: `<content-encoding>|<content-length>|<body>`.
async fn echo(
    request: Request<DecodedBody<TestBody>>,
) -> Result<Response<http_body_util::Full<Bytes>>, Infallible> {
    let encoding = request
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let mut out = format!("{encoding}|{length}|").into_bytes();
    out.extend_from_slice(&body);
    Ok(Response::new(http_body_util::Full::new(Bytes::from(out))))
}

async fn send(
    layer: RequestDecompressionLayer,
    encoding: Option<&str>,
    body: TestBody,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut request = Request::post("/upload").body(body).unwrap();
    if let Some(e) = encoding {
        request
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_str(e).unwrap());
    }
    let response = layer
        .layer(service_fn(echo))
        .oneshot(request)
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn gzip_bodies_are_decoded_with_exact_length() {
    let data = text(50_000);
    let compressed = gzip(&data);
    // Split into uneven frames, as a network would.
    let frames: Vec<Vec<u8>> = compressed.chunks(777).map(<[u8]>::to_vec).collect();
    for encoding in ["gzip", "x-gzip", "GZIP", "identity, gzip"] {
        let (status, _, body) = send(
            RequestDecompressionLayer::new(),
            Some(encoding),
            TestBody::chunks(frames.clone()),
        )
        .await;
        assert_eq!(status, 200, "{encoding}");
        let mut want = b"|50000|".to_vec();
        want.extend_from_slice(&data);
        assert_eq!(body, want, "{encoding}");
    }
}

#[tokio::test]
async fn every_member_of_a_multi_member_stream_is_decoded() {
    let mut body = gzip(b"first member, ");
    body.extend(gzip(b"second member, "));
    body.extend(gzip(b""));
    body.extend(gzip(b"third"));
    let (status, _, out) = send(
        RequestDecompressionLayer::new(),
        Some("gzip"),
        TestBody::chunks([body]),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(out, "|34|first member, second member, third");
}

#[tokio::test]
async fn unencoded_and_identity_bodies_pass_through() {
    let (status, _, out) = send(
        RequestDecompressionLayer::new(),
        None,
        TestBody::chunks([b"plain".to_vec()]),
    )
    .await;
    assert_eq!((status, &out[..]), (StatusCode::OK, &b"||plain"[..]));
    let (status, _, out) = send(
        RequestDecompressionLayer::new(),
        Some("identity"),
        TestBody::chunks([b"plain".to_vec()]),
    )
    .await;
    assert_eq!(
        (status, &out[..]),
        (StatusCode::OK, &b"||plain"[..]),
        "identity header removed"
    );
}

#[tokio::test]
async fn corrupt_truncated_and_empty_bodies_are_400() {
    let good = gzip(&text(10_000));
    let mut flipped = good.clone();
    let n = flipped.len();
    flipped[n - 6] ^= 0xff; // the CRC
    for (name, body) in [
        ("not gzip", b"hello, this is not gzip".to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("no trailer", good[..good.len() - 8].to_vec()),
        ("bad crc", flipped),
        ("empty", Vec::new()),
        (
            "trailing garbage",
            [good.clone(), b"garbage".to_vec()].concat(),
        ),
    ] {
        let (status, headers, out) = send(
            RequestDecompressionLayer::new(),
            Some("gzip"),
            TestBody::chunks([body]),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}");
        assert_eq!(headers[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        assert!(!out.is_empty());
    }
}

#[tokio::test]
async fn unreadable_body_is_400() {
    let body = TestBody::chunks([gzip(b"x")[..5].to_vec()]).then_error("connection reset");
    let (status, _, _) = send(RequestDecompressionLayer::new(), Some("gzip"), body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn stacked_and_unsupported_codings_are_415() {
    let once = gzip(b"hello");
    let five = (0..4).fold(once.clone(), |body, _| gzip(&body));
    for (encoding, body) in [
        ("compress", once.clone()),
        ("gzip, compress", once.clone()),
        ("x-unknown", once.clone()),
        ("gzip, gzip, gzip, gzip, gzip", five),
    ] {
        let (status, headers, _) = send(
            RequestDecompressionLayer::new(),
            Some(encoding),
            TestBody::chunks([body]),
        )
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{encoding}");
        assert_eq!(
            headers
                .get_all(header::ACCEPT_ENCODING)
                .iter()
                .collect::<Vec<_>>(),
            ["gzip, deflate, br, zstd"]
        );
    }
    // A layer that decodes only gzip says so.
    let (status, headers, _) = send(
        RequestDecompressionLayer::builder()
            .br(false)
            .zstd(false)
            .deflate(false)
            .build()
            .unwrap(),
        Some("br"),
        TestBody::chunks([once]),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(headers[header::ACCEPT_ENCODING], "gzip");
}

#[tokio::test]
async fn the_cap_is_exact() {
    let data = vec![b'z'; 4096];
    let layer = RequestDecompressionLayer::builder()
        .max_decoded(4096)
        .build()
        .unwrap();
    let (status, _, _) = send(layer, Some("gzip"), TestBody::chunks([gzip(&data)])).await;
    assert_eq!(status, 200);
    let layer = RequestDecompressionLayer::builder()
        .max_decoded(4095)
        .build()
        .unwrap();
    let (status, _, _) = send(layer, Some("gzip"), TestBody::chunks([gzip(&data)])).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[test]
fn metrics_count_outcomes() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            send(
                RequestDecompressionLayer::new(),
                Some("gzip"),
                TestBody::chunks([gzip(b"ok")]),
            )
            .await;
            send(
                RequestDecompressionLayer::new(),
                Some("gzip"),
                TestBody::chunks([b"bad".to_vec()]),
            )
            .await;
            send(
                RequestDecompressionLayer::new(),
                Some("compress"),
                TestBody::chunks([b"x".to_vec()]),
            )
            .await;
            let small = RequestDecompressionLayer::builder()
                .max_decoded(10)
                .build()
                .unwrap();
            send(small, Some("gzip"), TestBody::chunks([gzip(&[0; 100])])).await;
        })
    });
    let snapshot = snapshotter.snapshot().into_vec();
    for outcome in ["decoded", "corrupt", "unsupported", "too_large"] {
        let count: u64 = snapshot
            .iter()
            .filter(|(k, ..)| {
                k.key().name() == "tower_kit.compression.request.decoded"
                    && k.key()
                        .labels()
                        .any(|l| l.key() == "outcome" && l.value() == outcome)
            })
            .map(|(.., v)| match v {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum();
        assert_eq!(count, 1, "{outcome}");
    }
}

#[tokio::test]
async fn requests_without_a_body_pass_through_whatever_their_coding() {
    for encoding in ["br", "gzip", "zstd", "gzip, gzip", "compress", "gz\u{7f}ip"] {
        for (name, body, content_length) in [
            ("ended body", TestBody::default(), None),
            ("exact size 0", TestBody::chunks([Vec::new()]).exact(), None),
            (
                "content-length 0",
                TestBody::chunks([Vec::new()]),
                Some("0"),
            ),
        ] {
            let mut request = Request::get("/health").body(body).unwrap();
            let Ok(value) = HeaderValue::from_str(encoding) else {
                continue;
            };
            request
                .headers_mut()
                .insert(header::CONTENT_ENCODING, value);
            if let Some(length) = content_length {
                request
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from_static(length));
            }
            let response = RequestDecompressionLayer::new()
                .layer(service_fn(echo))
                .oneshot(request)
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{encoding}, {name}");
            let out = response.into_body().collect().await.unwrap().to_bytes();
            // Untouched: the inner service sees the header as sent, and no body.
            let expected = format!("{encoding}|{}|", content_length.unwrap_or(""));
            assert_eq!(out, expected.as_bytes(), "{encoding}, {name}");
        }
    }
    // A body of unknown size is still refused for an unsupported coding, and decoded for gzip.
    let (status, ..) = send(
        RequestDecompressionLayer::new(),
        Some("compress"),
        TestBody::chunks([b"x".to_vec()]),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _, out) = send(
        RequestDecompressionLayer::new(),
        Some("compress"),
        TestBody::full(b"not empty".to_vec()),
    )
    .await;
    assert_eq!(
        (status, &out[..]),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &b"request Content-Encoding is not one this server decodes (see Accept-Encoding)\n"[..]
        )
    );
}

#[tokio::test]
async fn exempt_requests_bypass_decoding() {
    let layer = RequestDecompressionLayer::builder()
        .exempt(|parts| parts.uri.path() == "/metrics")
        .build()
        .unwrap();
    let compressed = gzip(b"hello");
    for (path, encoding, status, expected) in [
        (
            "/metrics",
            "compress",
            StatusCode::OK,
            &b"compress|5|plain"[..],
        ),
        ("/metrics", "gzip", StatusCode::OK, &b"gzip|5|plain"[..]),
        (
            "/upload",
            "gzip",
            StatusCode::BAD_REQUEST,
            &b"request body is not valid in its Content-Encoding\n"[..],
        ),
        (
            "/upload",
            "compress",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &b"request Content-Encoding is not one this server decodes (see Accept-Encoding)\n"[..],
        ),
    ] {
        let request = Request::post(path)
            .header(header::CONTENT_ENCODING, encoding)
            .header(header::CONTENT_LENGTH, "5")
            .body(TestBody::full(b"plain".to_vec()))
            .unwrap();
        let response = layer
            .layer(service_fn(echo))
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path} {encoding}");
        let out = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], expected, "{path} {encoding}");
    }
    // Not exempt: decoded as usual.
    let request = Request::post("/upload")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(TestBody::full(compressed))
        .unwrap();
    let response = layer
        .layer(service_fn(echo))
        .oneshot(request)
        .await
        .unwrap();
    let out = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&out[..], b"|5|hello");
}

#[tokio::test]
async fn every_coding_is_decoded_with_exact_length() {
    let data = text(50_000);
    for coding in common::CODINGS {
        let (status, _, out) = send(
            RequestDecompressionLayer::new(),
            Some(coding),
            TestBody::chunks(
                common::encode(coding, &data)
                    .chunks(777)
                    .map(<[u8]>::to_vec)
                    .collect::<Vec<_>>(),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{coding}");
        let mut expected = b"|50000|".to_vec();
        expected.extend_from_slice(&data);
        assert_eq!(out, expected, "{coding}");
    }
}

#[tokio::test]
async fn raw_deflate_is_accepted_as_deflate() {
    let data = text(10_000);
    // Starting with every possible first byte of a raw deflate stream is not needed: one real one is.
    let (status, _, out) = send(
        RequestDecompressionLayer::new(),
        Some("deflate"),
        TestBody::chunks([common::encode("raw-deflate", &data)]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&out[b"|10000|".len()..], &data[..]);
    // Fed one byte at a time: the format is told apart across chunk borders.
    let compressed = common::encode("deflate", &data);
    let (status, _, out) = send(
        RequestDecompressionLayer::new(),
        Some("deflate"),
        TestBody::chunks(compressed.iter().map(|b| vec![*b]).collect::<Vec<_>>()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&out[b"|10000|".len()..], &data[..]);
}

#[tokio::test]
async fn stacked_codings_are_undone_in_reverse_order() {
    let data = text(20_000);
    // `Content-Encoding: gzip, br`: gzip was applied first, then br.
    let body = common::encode("br", &common::encode("gzip", &data));
    let (status, _, out) = send(
        RequestDecompressionLayer::new(),
        Some("gzip, br"),
        TestBody::chunks([body.clone()]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&out[b"|20000|".len()..], &data[..]);
    // The same codings over two lines.
    let body3 = common::encode("deflate", &common::encode("zstd", &data));
    let mut request = Request::post("/upload")
        .body(TestBody::chunks([body3]))
        .unwrap();
    request
        .headers_mut()
        .append(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
    request.headers_mut().append(
        header::CONTENT_ENCODING,
        HeaderValue::from_static("deflate"),
    );
    let response = RequestDecompressionLayer::new()
        .layer(service_fn(echo))
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // In the wrong order: not valid.
    let (status, ..) = send(
        RequestDecompressionLayer::new(),
        Some("br, gzip"),
        TestBody::chunks([body]),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn every_coding_refuses_corrupt_and_truncated_bodies() {
    let data = text(20_000);
    for coding in common::CODINGS {
        let good = common::encode(coding, &data);
        for (name, body) in [
            ("truncated", good[..good.len() / 2].to_vec()),
            ("garbage", b"this is not compressed at all".to_vec()),
            ("one byte", vec![good[0]]),
        ] {
            let (status, ..) = send(
                RequestDecompressionLayer::new(),
                Some(coding),
                TestBody::chunks([body]),
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{coding} {name}");
        }
    }
}

#[tokio::test]
async fn every_coding_is_capped() {
    let data = vec![b'a'; 100_000];
    for coding in common::CODINGS {
        let layer = RequestDecompressionLayer::builder()
            .max_decoded(99_999)
            .build()
            .unwrap();
        let (status, ..) = send(
            layer,
            Some(coding),
            TestBody::chunks([common::encode(coding, &data)]),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{coding}");
    }
}

#[tokio::test]
async fn a_zstd_window_over_8_mb_is_refused() {
    // A frame declaring a 16 MiB window (RFC 9659 allows at most 8 MB), then one RLE block.
    let frame = [
        0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x70, // magic, no content size, window 2^(10+14)
        0x0b, 0x00, 0x00, 0x61, // last RLE block of 1 byte 'a'
    ];
    let (status, ..) = send(
        RequestDecompressionLayer::new(),
        Some("zstd"),
        TestBody::chunks([frame.to_vec()]),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The same frame with an 8 MiB window decodes.
    let mut ok = frame;
    ok[5] = 0x68;
    let (status, _, out) = send(
        RequestDecompressionLayer::new(),
        Some("zstd"),
        TestBody::chunks([ok.to_vec()]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&out[..], b"|1|a");
}
