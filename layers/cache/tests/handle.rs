//! The handle: invalidation by URL, prefix and tag, purge, stats, warm-up; metrics and Server-Timing.

mod common;

use common::*;
use http::{Request, Response};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use std::time::Duration;
use tower::{Layer, ServiceExt};
use tower_kit_cache::ManualWallClock;
use tower_kit_core::ServerTiming;

fn tagged_origin() -> Origin {
    Origin::new(|req| {
        let tags = if req.uri().path().starts_with("/api/items") {
            "items"
        } else {
            "other"
        };
        Answer {
            status: 200,
            headers: vec![
                ("cache-control".into(), "public, max-age=60".into()),
                ("cache-tag".into(), format!("{tags}, all")),
            ],
            body: "x",
            delay: Duration::ZERO,
        }
    })
}

#[tokio::test]
async fn invalidate_url_prefix_tag_and_purge() {
    let origin = tagged_origin();
    let layer = builder(&ManualWallClock::default()).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(origin.service());
    let urls = [
        "/api/items",
        "/api/items?page=2",
        "/api/items/7",
        "/api/other",
        "/home",
    ];
    let fill = || async {
        for u in urls {
            send(&svc, get_with(u, &[("host", "demo.example")])).await;
        }
    };
    let hit = |u: &'static str| {
        let svc = svc.clone();
        async move {
            all(
                &send(&svc, get_with(u, &[("host", "demo.example")])).await.0,
                "x-cache",
            ) == "HIT"
        }
    };

    fill().await;
    assert_eq!(handle.stats().await.entries, 5);
    // Tag headers are internal: stripped from responses by default.
    let (p, _) = send(&svc, get_with("/home", &[("host", "demo.example")])).await;
    assert_eq!(all(&p, "cache-tag"), "");

    assert_eq!(handle.invalidate_url("/api/items").await.unwrap(), 1);
    assert!(!hit("/api/items").await);
    assert!(
        hit("/api/items?page=2").await,
        "another query is another URL"
    );

    assert_eq!(
        handle
            .invalidate_url("http://other.example/api/items?page=2")
            .await
            .unwrap(),
        0,
        "other host"
    );
    assert_eq!(
        handle
            .invalidate_url("http://demo.example/api/items?page=2")
            .await
            .unwrap(),
        1
    );

    fill().await;
    assert_eq!(handle.invalidate_prefix("/api/").await.unwrap(), 4);
    assert!(hit("/home").await);
    assert!(!hit("/api/other").await);

    fill().await;
    assert_eq!(handle.invalidate_tag("items").await.unwrap(), 3);
    assert!(hit("/api/other").await);
    assert!(!hit("/api/items/7").await);

    fill().await;
    handle.purge().await.unwrap();
    assert_eq!(handle.stats().await.entries, 0);
    assert_eq!(handle.invalidate_url("not a url at all").await.unwrap(), 0);
}

#[tokio::test]
async fn tags_from_a_closure_and_vary_variants_go_with_their_url() {
    let origin = Origin::fixed(Answer::ok(
        &[("cache-control", "max-age=60"), ("vary", "accept-encoding")],
        "x",
    ));
    let layer = builder(&ManualWallClock::default())
        .tag_fn(|uri, _res| vec![format!("path:{}", uri.path())])
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(origin.service());
    send(&svc, get_with("/v", &[("accept-encoding", "gzip")])).await;
    send(&svc, get_with("/v", &[("accept-encoding", "br")])).await;
    // Two variants and one Vary record.
    assert_eq!(handle.stats().await.entries, 3);
    assert_eq!(handle.invalidate_tag("path:/v").await.unwrap(), 2);
    send(&svc, get_with("/v", &[("accept-encoding", "gzip")])).await;
    assert_eq!(
        handle.invalidate_url("/v").await.unwrap(),
        2,
        "the variant and its record"
    );
}

#[tokio::test(start_paused = true)]
async fn a_response_in_flight_during_an_invalidation_is_not_stored() {
    let origin = Origin::fixed(
        Answer::ok(&[("cache-control", "max-age=60")], "old").delay(Duration::from_millis(100)),
    );
    let layer = builder(&ManualWallClock::default()).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(origin.service());
    let in_flight = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, get("/list")).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    handle.invalidate_url("/list").await.unwrap();
    let (_, body) = in_flight.await.unwrap();
    assert_eq!(body, "old", "the client still gets its response");
    assert_eq!(handle.stats().await.stored, 0);
}

#[tokio::test]
async fn warm_up_stores_responses() {
    let origin = tagged_origin();
    let layer = builder(&ManualWallClock::default()).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(origin.service());
    let report = handle
        .warm_up(svc.clone(), vec![get("/api/items"), get("/home")])
        .await;
    assert_eq!(report.statuses, vec![Some(http::StatusCode::OK); 2]);
    assert_eq!((report.stored, report.already_cached), (2, 0));
    let report = handle.warm_up(svc.clone(), vec![get("/api/items")]).await;
    assert_eq!((report.stored, report.already_cached), (0, 1));
    let (p, _) = send(&svc, get("/home")).await;
    assert_eq!(all(&p, "x-cache"), "HIT");
    assert_eq!(origin.calls(), 2);
}

#[test]
fn metrics_and_stats_count_each_outcome() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let origin = Origin::fixed(Answer::ok(&[("cache-control", "max-age=60")], "x"));
            let layer = builder(&ManualWallClock::default()).build().unwrap();
            let handle = layer.handle();
            let svc = layer.layer(origin.service());
            send(&svc, get("/")).await;
            send(&svc, get("/")).await;
            send(&svc, get("/")).await;
            send(&svc, get_with("/", &[("cookie", "a=1")])).await;
            // A POST to another URI (a POST to `/` would invalidate it, RFC 9111 §4.4).
            let mut post = get("/form");
            *post.method_mut() = http::Method::POST;
            send(&svc, post).await;
            let stats = handle.stats().await;
            assert_eq!(
                (stats.hits, stats.misses, stats.bypasses, stats.stored),
                (2, 1, 2, 1)
            );
            assert!((stats.hit_ratio() - 2.0 / 3.0).abs() < 1e-9);
            assert!(stats.bytes > 0);
        })
    });
    let mut counters = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if let DebugValue::Counter(n) = value {
            let labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            counters.insert(format!("{}{{{}}}", key.key().name(), labels.join(",")), n);
        }
    }
    assert_eq!(
        counters.get("tower_kit.cache.requests{result=hit}"),
        Some(&2)
    );
    assert_eq!(
        counters.get("tower_kit.cache.requests{result=miss}"),
        Some(&1)
    );
    assert_eq!(
        counters.get("tower_kit.cache.requests{result=bypass}"),
        Some(&2)
    );
    assert_eq!(counters.get("tower_kit.cache.stored{}"), Some(&1));
}

#[tokio::test]
async fn server_timing_entry() {
    let origin = Origin::fixed(Answer::ok(&[("cache-control", "max-age=60")], "x"));
    let svc = builder(&ManualWallClock::default())
        .build()
        .unwrap()
        .layer(origin.service());
    let with_timing = |timing: &ServerTiming| {
        let mut req: Request<()> = get("/");
        req.extensions_mut().insert(timing.clone());
        req
    };
    let t = ServerTiming::new();
    let res: Response<_> = svc.clone().oneshot(with_timing(&t)).await.unwrap();
    drop(res);
    assert_eq!(t.seal().unwrap(), "cache;desc=miss");
    // The dropped body above stored nothing; read this one to the end.
    send(&svc, get("/")).await;
    let t = ServerTiming::new();
    let _ = svc.clone().oneshot(with_timing(&t)).await.unwrap();
    assert_eq!(t.seal().unwrap(), "cache;desc=hit");
}
