//! Two demo servers on one local Redis Cluster (`--redis-cluster-nodes`, each seeded with a different node; three
//! primaries started by the shared test support): they share one rate-limit quota and one cache, and killing the
//! primary that holds a cached entry gives no 5xx.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::{
    net::SocketAddr,
    num::NonZeroU32,
    time::{Duration, Instant},
};
use tokio::sync::oneshot;
use tower_kit_test_support::RedisCluster;

async fn start(config: demo_server::Config) -> (SocketAddr, oneshot::Sender<()>) {
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

fn config(seeds: Vec<String>, quota: u32) -> demo_server::Config {
    let mut config = demo_server::Config::for_tests();
    config.ratelimit.redis_cluster_nodes = seeds;
    config.ratelimit.rate_limit = NonZeroU32::new(quota).unwrap();
    config.ratelimit.rate_limit_burst = NonZeroU32::new(quota).unwrap();
    config.ratelimit.rate_limit_window = Duration::from_secs(60);
    config.ratelimit.rate_limit_redis_timeout = Duration::from_secs(2);
    config.cache.redis_timeout = Duration::from_secs(2);
    config.cache.warm = false;
    config
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

async fn get(client: &HttpClient, addr: SocketAddr, path: &str) -> (u16, String) {
    let response = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let x_cache = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let _ = response.into_body().collect().await;
    (status, x_cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_demo_servers_share_one_quota_and_one_cache_on_a_cluster() {
    let cluster = RedisCluster::start(3);
    let urls = cluster.urls();
    let quota = 20;
    let (a, stop_a) = start(config(vec![urls[0].clone()], quota)).await;
    let (b, stop_b) = start(config(vec![urls[1].clone()], quota)).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();

    // One cache: cached through A, a hit through B.
    let (status, x_cache) = get(&client, a, "/api/report").await;
    assert_eq!((status, x_cache.as_str()), (200, "MISS"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.keys("tower-kit-demo:cache:v:*report*").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the report never reached the cluster"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, x_cache) = get(&client, b, "/api/report").await;
    assert_eq!((status, x_cache.as_str()), (200, "HIT"));

    // One quota: the two requests above count too.
    let mut admitted = 2;
    for i in 0..(3 * quota) {
        let addr = if i % 2 == 0 { a } else { b };
        let (status, _) = get(&client, addr, "/api/items/42").await;
        assert!(status == 200 || status == 429, "{status}");
        admitted += u32::from(status == 200);
    }
    let (low, high) = (quota * 85 / 100, quota * 115 / 100);
    assert!(
        (low..=high).contains(&admitted),
        "both servers together admitted {admitted} of one quota of {quota}"
    );
    let _ = (stop_a.send(()), stop_b.send(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_of_a_cached_entry_gives_no_5xx() {
    let mut cluster = RedisCluster::start(3);
    let urls = cluster.urls();
    let mut config = config(urls, 10_000);
    config.cache.redis_timeout = Duration::from_millis(300);
    config.ratelimit.rate_limit_redis_timeout = Duration::from_millis(300);
    let (a, stop_a) = start(config.clone()).await;
    let (b, stop_b) = start(config).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    assert_eq!(get(&client, a, "/api/report").await.0, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let key = loop {
        if let Some(key) = cluster.keys("tower-kit-demo:cache:v:*report*").pop() {
            break key;
        }
        assert!(
            Instant::now() < deadline,
            "the report never reached the cluster"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let victim = cluster.primary_of(&key);
    cluster.kill(victim);
    for round in 0..10 {
        for addr in [a, b] {
            for path in ["/api/report", "/api/items"] {
                let (status, _) = get(&client, addr, path).await;
                assert!(status < 500, "round {round}: {path} on {addr}: {status}");
            }
        }
    }
    let _ = (stop_a.send(()), stop_b.send(()));
}
