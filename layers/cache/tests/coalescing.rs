//! Coalescing: one origin call for many concurrent misses, hit-for-pass, and no waiter left behind.

mod common;

use bytes::Bytes;
use common::*;
use futures_util::future::join_all;
use http::{Request, Response};
use http_body_util::BodyExt;
use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tower::{Layer, ServiceExt};
use tower_kit_cache::{CacheLayer, ManualWallClock};

#[tokio::test(start_paused = true)]
async fn hundred_concurrent_misses_make_one_origin_call() {
    let clock = ManualWallClock::default();
    let origin = Origin::fixed(
        Answer::ok(&[("cache-control", "public, max-age=60")], "the list")
            .delay(Duration::from_millis(50)),
    );
    let layer = builder(&clock).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(origin.service());
    let results = join_all((0..100).map(|_| send(&svc, get("/api/items")))).await;
    assert_eq!(origin.calls(), 1, "exactly one origin call");
    let mut x_cache: Vec<String> = results.iter().map(|(p, _)| all(p, "x-cache")).collect();
    x_cache.sort();
    assert_eq!(x_cache.iter().filter(|v| *v == "MISS").count(), 1);
    assert_eq!(x_cache.iter().filter(|v| *v == "HIT").count(), 99);
    for (parts, body) in &results {
        assert_eq!(body, "the list");
        assert_eq!(parts.status, 200);
    }
    let collapsed = results
        .iter()
        .filter(|(p, _)| {
            all(p, "cache-status") == "tower-kit; fwd=uri-miss; fwd-status=200; collapsed"
        })
        .count();
    assert_eq!(collapsed, 99);
    let stats = handle.stats().await;
    assert_eq!(
        (stats.misses, stats.coalesced, stats.hits, stats.stored),
        (1, 99, 0, 1)
    );
    assert_eq!(stats.in_flight, 0);
    // And the next request is a plain hit.
    let (p, _) = send(&svc, get("/api/items")).await;
    assert_eq!(all(&p, "cache-status"), "tower-kit; hit; ttl=60");
}

#[tokio::test(start_paused = true)]
async fn uncacheable_response_releases_waiters_at_once_and_marks_hit_for_pass() {
    let clock = ManualWallClock::default();
    let origin = Origin::fixed(
        Answer::ok(&[("cache-control", "no-store")], "personal").delay(Duration::from_millis(100)),
    );
    let layer = builder(&clock)
        .hit_for_pass(Duration::from_secs(5))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(origin.service());
    let start = tokio::time::Instant::now();
    let results = join_all((0..50).map(|_| send(&svc, get("/me")))).await;
    // The leader's call, then every waiter's own call in parallel: two origin latencies, not fifty.
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert_eq!(origin.calls(), 50);
    let waiters = results
        .iter()
        .filter(|(p, _)| {
            all(p, "cache-status") == "tower-kit; fwd=uri-miss; fwd-status=200; detail=hit-for-pass"
        })
        .count();
    assert_eq!(waiters, 49);
    assert!(results.iter().all(|(_, b)| b == "personal"));

    // Within the hit-for-pass window, concurrent requests do not wait for each other at all.
    let start = tokio::time::Instant::now();
    let results = join_all((0..10).map(|_| send(&svc, get("/me")))).await;
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(origin.calls(), 60);
    assert!(results.iter().all(|(p, _)| all(p, "cache-status")
        == "tower-kit; fwd=bypass; fwd-status=200; detail=hit-for-pass"));
    assert_eq!(handle.stats().await.in_flight, 0);

    // After the window the key is looked at again (and coalesced again).
    clock.advance(Duration::from_secs(6));
    let (p, _) = send(&svc, get("/me")).await;
    assert_eq!(
        all(&p, "cache-status"),
        "tower-kit; fwd=uri-miss; fwd-status=200; detail=no-store"
    );
}

#[tokio::test(start_paused = true)]
async fn waiters_with_another_variant_do_not_get_the_leaders_response() {
    let clock = ManualWallClock::default();
    let origin = Origin::new(|req| {
        let lang = req
            .headers()
            .get("accept-language")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = if lang.as_deref() == Some("fr") {
            "bonjour"
        } else {
            "hello"
        };
        Answer::ok(
            &[("cache-control", "max-age=60"), ("vary", "accept-language")],
            body,
        )
        .delay(Duration::from_millis(10))
    });
    let svc = builder(&clock).build().unwrap().layer(origin.service());
    let reqs = (0..20).map(|i| {
        let lang = if i % 2 == 0 { "en" } else { "fr" };
        let svc = svc.clone();
        async move {
            (
                lang,
                send(&svc, get_with("/greet", &[("accept-language", lang)])).await,
            )
        }
    });
    for (lang, (_, body)) in join_all(reqs).await {
        assert_eq!(body, if lang == "fr" { "bonjour" } else { "hello" });
    }
    assert_eq!(origin.calls(), 2, "one call per variant");
}

#[tokio::test(start_paused = true)]
async fn body_larger_than_max_entry_size_streams_through_and_releases_waiters() {
    let clock = ManualWallClock::default();
    let origin = Origin::fixed(
        Answer::ok(&[("cache-control", "max-age=60")], "0123456789abcdef")
            .delay(Duration::from_millis(10)),
    );
    let svc = builder(&clock)
        .max_entry_size(8)
        .build()
        .unwrap()
        .layer(origin.service());
    let results = join_all((0..5).map(|_| send(&svc, get("/big")))).await;
    assert!(results.iter().all(|(_, b)| b == "0123456789abcdef"));
    assert_eq!(origin.calls(), 5);
    let (p, _) = send(&svc, get("/big")).await;
    assert_eq!(all(&p, "x-cache"), "MISS");
}

/// Service-level stress: random client cancellation before the head and half way through the body, random origin
/// delays, a few keys. Every request that is not cancelled completes with the right body; nothing stays in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_with_random_cancellation_leaves_no_waiter_behind() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let origin = tower::service_fn(move |req: Request<()>| {
        let c = Arc::clone(&c);
        async move {
            let n = c.fetch_add(1, Ordering::SeqCst) as u64;
            tokio::time::sleep(Duration::from_micros((n * 7919) % 3000)).await;
            let path = req.uri().path().to_owned();
            // Some keys are uncacheable, to mix hit-for-pass into the run.
            let cc = if path.ends_with('3') {
                "no-store"
            } else {
                "max-age=1"
            };
            let body = futures_util::stream::iter(vec![
                Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(path.clone()))),
                Ok(http_body::Frame::data(Bytes::from_static(b"-end"))),
            ]);
            Ok::<_, Infallible>(
                Response::builder()
                    .header("cache-control", cc)
                    .body(http_body_util::StreamBody::new(body))
                    .unwrap(),
            )
        }
    });
    let layer = CacheLayer::builder()
        .hit_for_pass(Duration::from_millis(5))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(origin);
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut survivors, mut aborted) = (Vec::new(), Vec::new());
    for round in 0..20 {
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let path = format!("/k{}", rand() % 4);
            let mode = rand() % 5;
            let svc = svc.clone();
            let task = tokio::spawn(async move {
                let res = svc.oneshot(get(&path)).await.unwrap();
                let mut body = res.into_body();
                if mode == 1 {
                    // Client goes away half way through the body.
                    let _ = body.frame().await;
                    return None;
                }
                let bytes = body.collect().await.unwrap().to_bytes();
                assert_eq!(bytes, format!("{path}-end"), "wrong body for {path}");
                Some(())
            });
            if mode == 0 {
                // Cancelled at a random point: before the lookup, while waiting, or while leading.
                let at = rand() % 3;
                tasks.push((task, Some(at)));
            } else {
                tasks.push((task, None));
            }
        }
        for (task, cancel) in tasks {
            match cancel {
                Some(at) => {
                    tokio::time::sleep(Duration::from_micros(at * 300)).await;
                    task.abort();
                    aborted.push(task);
                }
                None => survivors.push(task),
            }
        }
        if round % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let all_done = async {
        for t in survivors {
            let _ = t.await.unwrap();
        }
        // `abort` only asks: a task running on the other worker lets go of its flight when it stops.
        for t in aborted {
            if let Err(e) = t.await
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all_done)
        .await
        .expect("a waiter was left behind");
    assert_eq!(handle.stats().await.in_flight, 0, "a flight leaked");
    assert!(
        calls.load(Ordering::SeqCst) < 1000,
        "coalescing did something"
    );
}
