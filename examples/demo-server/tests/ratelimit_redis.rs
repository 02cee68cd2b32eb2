//! Two demo servers started with the same `--redis-url` share one rate-limit quota (a private `redis-server` on a
//! free port; a missing binary fails with a message saying what to install).

use tower_kit_test_support as redis_server;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::{net::SocketAddr, num::NonZeroU32, time::Duration};
use tokio::sync::oneshot;

async fn start(config: demo_server::Config) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // This test binary's own recorder; the servers only need a handle for /metrics.
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(demo_server::serve(listener, config, metrics, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_demo_servers_share_one_quota_through_redis() {
    let redis = redis_server::RedisServer::start();
    let mut config = demo_server::Config::for_tests();
    config.ratelimit.redis_url = Some(redis.url());
    config.ratelimit.rate_limit = NonZeroU32::new(6).unwrap();
    config.ratelimit.rate_limit_burst = NonZeroU32::new(6).unwrap();
    config.ratelimit.rate_limit_window = Duration::from_secs(60);
    config.ratelimit.rate_limit_store_failure = "closed".into(); // a Redis problem shows up as 503, not a pass
    // Redis stays up here: the timeout (which also covers connecting and loading the script) only has to keep a
    // loaded machine from being taken for a Redis failure.
    config.ratelimit.rate_limit_redis_timeout = Duration::from_secs(2);
    let (a, stop_a) = start(config.clone()).await;
    let (b, stop_b) = start(config).await;

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut statuses = Vec::new();
    for i in 0..20 {
        let addr = if i % 2 == 0 { a } else { b };
        let uri = format!("http://{addr}/api/items/42");
        let response = client.get(uri.parse().unwrap()).await.unwrap();
        statuses.push((addr, response.status().as_u16()));
    }
    let admitted = statuses.iter().filter(|(_, s)| *s == 200).count();
    assert_eq!(
        admitted, 6,
        "one quota of 6 for both servers together: {statuses:?}"
    );
    assert!(statuses[..6].iter().all(|(_, s)| *s == 200), "{statuses:?}");
    for server in [a, b] {
        assert!(
            statuses[6..]
                .iter()
                .any(|(s, code)| *s == server && *code == 429),
            "{statuses:?}"
        );
    }
    // Exempt routes are never limited.
    let health = client
        .get(format!("http://{a}/health").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let _ = (stop_a.send(()), stop_b.send(()));
}
