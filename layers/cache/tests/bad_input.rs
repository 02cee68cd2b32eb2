//! Hostile and malformed input: nothing panics, nothing unsafe is stored, the client always gets its response.

mod common;

use bytes::Bytes;
use common::*;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use std::convert::Infallible;
use tower::Layer;
use tower_kit_cache::ManualWallClock;

/// An origin whose response carries raw header bytes.
fn raw_origin(
    headers: Vec<(&'static str, HeaderValue)>,
) -> impl tower::Service<Request<()>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    tower::service_fn(move |_req: Request<()>| {
        let headers = headers.clone();
        async move {
            let mut res = Response::new(Full::new(Bytes::from_static(b"body")));
            for (n, v) in headers {
                res.headers_mut().append(n, v);
            }
            Ok(res)
        }
    })
}

#[tokio::test]
async fn malformed_response_headers_are_never_stored_wrongly() {
    type Case = (&'static str, Vec<(&'static str, HeaderValue)>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "non-UTF-8 Cache-Control",
            vec![(
                "cache-control",
                HeaderValue::from_bytes(b"max-age=\xff30").unwrap(),
            )],
            "tower-kit; fwd=uri-miss; fwd-status=200; detail=no-freshness",
        ),
        (
            "non-UTF-8 Vary",
            vec![
                ("cache-control", HeaderValue::from_static("max-age=30")),
                (
                    "vary",
                    HeaderValue::from_bytes(b"accept-\xfflanguage").unwrap(),
                ),
            ],
            "tower-kit; fwd=uri-miss; fwd-status=200; detail=vary-star",
        ),
        (
            "huge Age",
            vec![
                ("cache-control", HeaderValue::from_static("max-age=30")),
                ("age", HeaderValue::from_static("99999999999999999999999")),
            ],
            "tower-kit; fwd=uri-miss; fwd-status=200; detail=stale",
        ),
        (
            "garbage Expires",
            vec![("expires", HeaderValue::from_static("tomorrow-ish"))],
            "tower-kit; fwd=uri-miss; fwd-status=200; detail=stale",
        ),
        (
            "Content-Length beyond max_entry_size",
            vec![
                ("cache-control", HeaderValue::from_static("max-age=30")),
                (
                    "content-length",
                    HeaderValue::from_static("18446744073709551615"),
                ),
            ],
            "tower-kit; fwd=uri-miss; fwd-status=200; detail=too-big",
        ),
        (
            "negative max-age",
            vec![(
                "cache-control",
                HeaderValue::from_static("max-age=-1, public"),
            )],
            "tower-kit; fwd=uri-miss; fwd-status=200; detail=stale",
        ),
    ];
    for (name, headers, want) in cases {
        let svc = builder(&ManualWallClock::default())
            .hit_for_pass(std::time::Duration::ZERO)
            .build()
            .unwrap()
            .layer(raw_origin(headers));
        for _ in 0..2 {
            let res = tower::ServiceExt::oneshot(svc.clone(), get("/x"))
                .await
                .unwrap();
            assert_eq!(res.headers()["x-cache"], "MISS", "{name}");
            assert_eq!(res.headers()["cache-status"], want, "{name}");
        }
    }
}

#[tokio::test]
async fn hostile_requests_are_served() {
    let origin = Origin::fixed(Answer::ok(
        &[("cache-control", "max-age=30"), ("vary", "x-v")],
        "ok",
    ));
    let svc = builder(&ManualWallClock::default())
        .build()
        .unwrap()
        .layer(origin.service());
    let long = format!("/{}", "a".repeat(8192));
    let mut reqs = vec![get(&long), get("/%ff%00?%zz=&&&=")];
    let mut bad_host = get("/h");
    bad_host
        .headers_mut()
        .insert("host", HeaderValue::from_bytes(b"\xff\xfe#GET").unwrap());
    reqs.push(bad_host);
    let mut bad_vary_value = get("/v");
    bad_vary_value
        .headers_mut()
        .insert("x-v", HeaderValue::from_bytes(b"\t\xff&=#").unwrap());
    reqs.push(bad_vary_value);
    for req in reqs {
        let uri = req.uri().clone();
        let (p, body) = send(&svc, req).await;
        assert_eq!((p.status.as_u16(), &body[..]), (200, &b"ok"[..]), "{uri}");
    }
    // Each of them was stored under its own key and is a hit now.
    let (p, _) = send(&svc, get(&long)).await;
    assert_eq!(all(&p, "x-cache"), "HIT");
    let mut again = get("/v");
    again
        .headers_mut()
        .insert("x-v", HeaderValue::from_bytes(b"\t\xff&=#").unwrap());
    let (p, _) = send(&svc, again).await;
    assert_eq!(all(&p, "x-cache"), "HIT");
    let (p, _) = send(&svc, get_with("/v", &[("x-v", "other")])).await;
    assert_eq!(all(&p, "x-cache"), "MISS");
}

#[tokio::test]
async fn a_tenant_key_extension_keeps_tenants_apart() {
    let origin = Origin::new(|req| {
        let tenant = req
            .headers()
            .get("x-tenant")
            .map(|v| v.to_str().unwrap().to_owned());
        Answer::ok(
            &[("cache-control", "public, max-age=30")],
            if tenant.as_deref() == Some("a") {
                "A"
            } else {
                "B"
            },
        )
    });
    let svc = builder(&ManualWallClock::default())
        .key_extension(|parts| {
            parts
                .headers
                .get("x-tenant")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        })
        .build()
        .unwrap()
        .layer(origin.service());
    assert_eq!(
        send(&svc, get_with("/t", &[("x-tenant", "a")])).await.1,
        "A"
    );
    assert_eq!(
        send(&svc, get_with("/t", &[("x-tenant", "b")])).await.1,
        "B"
    );
    let (p, body) = send(&svc, get_with("/t", &[("x-tenant", "a")])).await;
    assert_eq!((all(&p, "x-cache").as_str(), &body[..]), ("HIT", &b"A"[..]));
    assert_eq!(origin.calls(), 2);
}
