//! Client-IP trust over a real socket: the demo server trusts `127.0.0.1/32` (this test plays the proxy) and
//! believes only the header named by `--rate-limit-client-ip-header`. A varying named header is believed (each
//! client has its own quota); a varying header that was *not* named changes nothing (one quota, then 429).

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::{net::SocketAddr, num::NonZeroU32, time::Duration};
use tokio::sync::oneshot;

const QUOTA: usize = 5;
const REQUESTS: usize = 30;

async fn start(client_ip_header: &str) -> (SocketAddr, oneshot::Sender<()>) {
    let mut config = demo_server::Config::for_tests();
    config.ratelimit.rate_limit = NonZeroU32::new(QUOTA as u32).unwrap();
    config.ratelimit.rate_limit_burst = NonZeroU32::new(QUOTA as u32).unwrap();
    // One unit back per hour: nothing refills while the test runs, however slow the machine.
    config.ratelimit.rate_limit_window = Duration::from_secs(QUOTA as u64 * 3600);
    config.ratelimit.rate_limit_trusted_proxies = vec!["127.0.0.1/32".into()];
    config.ratelimit.rate_limit_client_ip_header = Some(client_ip_header.into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(demo_server::serve(listener, config, metrics, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Sends `REQUESTS` requests with the headers `headers(i)` and returns how many were admitted (every other answer
/// must be a 429).
async fn admitted(
    addr: SocketAddr,
    headers: impl Fn(usize) -> Vec<(&'static str, String)>,
) -> usize {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut ok = 0;
    for i in 0..REQUESTS {
        let mut req = hyper::Request::get(format!("http://{addr}/api/items"));
        for (name, value) in headers(i) {
            req = req.header(name, value);
        }
        let response = client
            .request(req.body(Empty::new()).unwrap())
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => ok += 1,
            429 => {}
            other => panic!("request {i}: unexpected status {other}"),
        }
    }
    ok
}

/// The measured hole: behind nginx (which appends to `X-Forwarded-For` and passes `Forwarded` through), a client
/// varying its own `Forwarded: for=...` got 30 of 30 requests admitted. With `x-forwarded-for` named, it gets its
/// quota and then 429s; a varying `X-Forwarded-For` (what the proxy writes) is one client per value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_named_forwarded_ignored() {
    let (addr, stop) = start("x-forwarded-for").await;
    let spoofing = admitted(addr, |i| {
        vec![
            ("x-forwarded-for", "198.51.100.7".into()),
            ("forwarded", format!("for=203.0.113.{i}")),
            ("x-real-ip", format!("203.0.113.{i}")),
        ]
    })
    .await;
    assert_eq!(
        spoofing, QUOTA,
        "varying Forwarded / X-Real-IP must not make new clients"
    );
    let clients = admitted(addr, |i| {
        vec![
            ("x-forwarded-for", format!("6.6.6.6, 192.0.2.{i}")),
            ("forwarded", "for=198.51.100.7".into()),
        ]
    })
    .await;
    assert_eq!(
        clients, REQUESTS,
        "each X-Forwarded-For client has its own quota"
    );
    let _ = stop.send(());
}

/// With `forwarded` named, the roles swap: `X-Forwarded-For` is the client's own text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_named_x_forwarded_for_ignored() {
    let (addr, stop) = start("forwarded").await;
    let spoofing = admitted(addr, |i| {
        vec![
            ("forwarded", "for=198.51.100.7".into()),
            ("x-forwarded-for", format!("203.0.113.{i}")),
            ("x-real-ip", format!("203.0.113.{i}")),
        ]
    })
    .await;
    assert_eq!(
        spoofing, QUOTA,
        "varying X-Forwarded-For / X-Real-IP must not make new clients"
    );
    let clients = admitted(addr, |i| {
        vec![
            (
                "forwarded",
                format!("for=\"[2001:db8:{i}::1]:4711\";proto=http"),
            ),
            ("x-forwarded-for", "198.51.100.7".into()),
        ]
    })
    .await;
    assert_eq!(
        clients, REQUESTS,
        "each Forwarded client (a /64 each) has its own quota"
    );
    let _ = stop.send(());
}

/// `x-real-ip` (a proxy that sets the header, overwriting the client's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_real_ip_named_others_ignored() {
    let (addr, stop) = start("x-real-ip").await;
    let spoofing = admitted(addr, |i| {
        vec![
            ("x-real-ip", "198.51.100.7".into()),
            ("x-forwarded-for", format!("203.0.113.{i}")),
            ("forwarded", format!("for=203.0.113.{i}")),
        ]
    })
    .await;
    assert_eq!(spoofing, QUOTA);
    let clients = admitted(addr, |i| vec![("x-real-ip", format!("192.0.2.{i}"))]).await;
    assert_eq!(clients, REQUESTS);
    let _ = stop.send(());
}

/// Without the named header, the proxy's own address is the key: one shared quota, never a free pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_named_header_keys_by_the_proxy() {
    let (addr, stop) = start("x-forwarded-for").await;
    let n = admitted(addr, |i| vec![("forwarded", format!("for=203.0.113.{i}"))]).await;
    assert_eq!(n, QUOTA);
    let _ = stop.send(());
}

/// The other place the demo reads `Authorization`: the admin reset route accepts the `Bearer` scheme in any case
/// (RFC 9110 §11.1) and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_scheme_is_case_insensitive() {
    let mut config = demo_server::Config::for_tests();
    config.timing.admin_token = Some("s3cret".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(demo_server::serve(listener, config, metrics, async move {
        let _ = stopped.await;
    }));
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    for (value, expected) in [
        ("Bearer s3cret", 200),
        ("bearer s3cret", 200),
        ("BEARER  s3cret", 200),
        ("Basic s3cret", 401),
        ("Bearer", 401),
        ("bearer S3CRET", 401),
    ] {
        let req = hyper::Request::post(format!("http://{addr}/api/performance/reset"))
            .header("authorization", value)
            .body(Empty::new())
            .unwrap();
        let status = client.request(req).await.unwrap().status().as_u16();
        assert_eq!(status, expected, "{value:?}");
    }
    let _ = stop.send(());
}
