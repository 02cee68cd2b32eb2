//! Cache poisoning: what a request can and cannot change about what is stored and served.

mod common;

use common::*;
use std::time::Duration;
use tower::Layer;
use tower_kit_cache::ManualWallClock;

/// The origin reflects a header; when it says so with `Vary`, an attacker's value gets its own variant.
#[tokio::test]
async fn varied_header_cannot_poison_other_clients() {
    let origin = Origin::new(|req| {
        let host = req
            .headers()
            .get("x-forwarded-host")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = if host.is_some() {
            "<script src=//evil>"
        } else {
            "clean"
        };
        Answer::ok(
            &[
                ("cache-control", "public, max-age=60"),
                ("vary", "X-Forwarded-Host"),
            ],
            body,
        )
    });
    let svc = builder(&ManualWallClock::default())
        .build()
        .unwrap()
        .layer(origin.service());
    let (_, body) = send(
        &svc,
        get_with("/page", &[("x-forwarded-host", "evil.example")]),
    )
    .await;
    assert_eq!(body, "<script src=//evil>");
    let (p, body) = send(&svc, get("/page")).await;
    assert_eq!(body, "clean");
    assert_eq!(
        all(&p, "cache-status"),
        "tower-kit; fwd=vary-miss; fwd-status=200"
    );
    let (p, body) = send(&svc, get("/page")).await;
    assert_eq!(
        (all(&p, "x-cache").as_str(), &body[..]),
        ("HIT", &b"clean"[..])
    );
}

/// Headers outside the key do not change the key, the lifetime, or the stored headers.
#[tokio::test]
async fn headers_outside_the_key_change_nothing_stored() {
    let clock = ManualWallClock::default();
    let origin = Origin::fixed(Answer::ok(&[("cache-control", "max-age=10")], "same"));
    let svc = builder(&clock).build().unwrap().layer(origin.service());
    let hostile = [
        ("cache-control", "max-age=999999, s-maxage=999999"),
        ("pragma", "cache"),
        ("x-cache", "HIT"),
        ("age", "99999"),
        ("cache-status", "evil; hit"),
        ("x-forwarded-host", "evil.example"),
        ("accept-encoding", "evil"),
    ];
    send(&svc, get_with("/r", &hostile)).await;
    let (p, _) = send(&svc, get("/r")).await;
    assert_eq!(
        all(&p, "x-cache"),
        "HIT",
        "an unkeyed header did not split the key"
    );
    assert_eq!(all(&p, "age"), "0");
    assert_eq!(
        all(&p, "cache-status"),
        "tower-kit; hit; ttl=10",
        "the request could not extend the lifetime"
    );
    assert_eq!(all(&p, "x-forwarded-host"), "");
    clock.advance(Duration::from_secs(10));
    let (p, _) = send(&svc, get("/r")).await;
    assert_eq!(all(&p, "x-cache"), "MISS");
    assert_eq!(origin.calls(), 2);
}

#[tokio::test]
async fn vary_star_is_never_served_to_anyone() {
    let origin = Origin::fixed(Answer::ok(
        &[("cache-control", "public, max-age=60"), ("vary", "*")],
        "x",
    ));
    let svc = builder(&ManualWallClock::default())
        .hit_for_pass(Duration::ZERO)
        .build()
        .unwrap()
        .layer(origin.service());
    for _ in 0..3 {
        let (p, _) = send(&svc, get("/star")).await;
        assert_eq!(all(&p, "x-cache"), "MISS");
        assert_eq!(
            all(&p, "cache-status"),
            "tower-kit; fwd=uri-miss; fwd-status=200; detail=vary-star"
        );
    }
    assert_eq!(origin.calls(), 3);
}

#[tokio::test]
async fn a_forged_host_gets_its_own_key() {
    let origin = Origin::new(|req| {
        let host = req
            .headers()
            .get("host")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let body = if host == "shop.example" {
            "real"
        } else {
            "forged"
        };
        Answer::ok(&[("cache-control", "public, max-age=60")], body)
    });
    let svc = builder(&ManualWallClock::default())
        .build()
        .unwrap()
        .layer(origin.service());
    send(&svc, get_with("/", &[("host", "evil.example#GET")])).await;
    let (_, body) = send(&svc, get_with("/", &[("host", "shop.example")])).await;
    assert_eq!(body, "real");
    assert_eq!(origin.calls(), 2);
}

#[tokio::test]
async fn a_personal_response_never_reaches_anonymous_clients() {
    let origin = Origin::new(|req| {
        let auth = req.headers().contains_key("authorization");
        Answer::ok(
            &[("cache-control", "max-age=60")],
            if auth { "alice's inbox" } else { "login page" },
        )
    });
    let svc = builder(&ManualWallClock::default())
        .build()
        .unwrap()
        .layer(origin.service());
    send(
        &svc,
        get_with("/inbox", &[("authorization", "Bearer alice")]),
    )
    .await;
    let (_, body) = send(&svc, get("/inbox")).await;
    assert_eq!(body, "login page");
    // And the other way: the anonymous entry is not served to a request with credentials.
    let (p, body) = send(
        &svc,
        get_with("/inbox", &[("authorization", "Bearer alice")]),
    )
    .await;
    assert_eq!(body, "alice's inbox");
    assert_eq!(
        all(&p, "cache-status"),
        "tower-kit; fwd=bypass; fwd-status=200; detail=authorization"
    );
}
