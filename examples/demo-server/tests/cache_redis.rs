//! Two demo servers started with the same `--redis-url` share one response cache (a private `redis-server` on a
//! free port; a missing binary fails with a message saying what to install).

use tower_kit_test_support as redis_server;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::net::SocketAddr;
use tokio::sync::oneshot;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_cached_by_one_demo_server_is_a_hit_on_the_other() {
    let redis = redis_server::RedisServer::start();
    let mut config = demo_server::Config::for_tests();
    config.ratelimit.redis_url = Some(redis.url());
    // Redis stays up here: the timeout (which also covers connecting) only has to keep a loaded machine from being
    // taken for a Redis failure, which would leave A's entry out of Redis.
    config.cache.redis_timeout = std::time::Duration::from_secs(2);
    let (a, stop_a) = start(config.clone()).await;
    let (b, stop_b) = start(config).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let get = async |addr: SocketAddr| {
        let uri = format!("http://{addr}/api/report");
        let res = client.get(uri.parse().unwrap()).await.unwrap();
        let status = res.status().as_u16();
        let x_cache = res.headers()["x-cache"].to_str().unwrap().to_owned();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, x_cache, body)
    };
    let (status, x_cache, first) = get(a).await;
    assert_eq!((status, x_cache.as_str()), (200, "MISS"));
    // The entry reaches Redis on a background write: poll B until it hits.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, x_cache, body) = get(b).await;
        assert_eq!(status, 200);
        if x_cache == "HIT" {
            assert_eq!(body, first, "the same stored report");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B never hit the entry A stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = (stop_a.send(()), stop_b.send(()));
}
