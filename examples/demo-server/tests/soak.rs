//! A bounded soak: every layer on, 256 keep-alive connections over mixed routes for 20 seconds (or 400 000
//! requests). Afterwards: no status outside the intended ones, nothing left in flight (timing's active requests,
//! concurrency permits and queues, the batch queue), and resident memory grown by less than 128 MiB.

use std::{collections::BTreeSet, net::SocketAddr, num::NonZeroU32, time::Duration};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The value of every series of a gauge in the Prometheus text.
fn gauge_values(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_all_layers_256_connections() {
    let metrics = demo_server::observability::prometheus_builder()
        .unwrap()
        .install_recorder()
        .unwrap();
    let mut config = demo_server::Config::for_tests();
    // One client address makes all the load: give it a quota that refuses some of it, not all.
    config.ratelimit.rate_limit = NonZeroU32::new(600_000).unwrap();
    config.ratelimit.rate_limit_window = Duration::from_secs(60);
    config.ratelimit.rate_limit_burst = NonZeroU32::new(2_000).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(demo_server::serve(
        listener,
        config,
        metrics.clone(),
        std::future::pending(),
    ));

    let paths: Vec<String> = [
        "/api/items",
        "/api/items/1",
        "/api/items/17",
        "/api/items/999999",
        "/health",
        "/api/report",
        "/api/slow?ms=5",
        "/api/items/250",
        "/metrics",
        "/no/such/route",
    ]
    .map(String::from)
    .into();
    let warm = loadgen::run(loadgen::Plan {
        addr,
        paths: paths.clone(),
        connections: 32,
        duration: Duration::from_secs(2),
        max_requests: 5_000,
        headers: vec![("accept-encoding".into(), "gzip".into())],
    })
    .await;
    assert!(warm.requests > 0);
    let rss_before = rss_kib();

    let report = loadgen::run(loadgen::Plan {
        addr,
        paths,
        connections: 256,
        duration: Duration::from_secs(20),
        max_requests: 400_000,
        headers: vec![("accept-encoding".into(), "gzip".into())],
    })
    .await;
    let rss_after = rss_kib();
    println!("soak: {report:?}, RSS {rss_before} KiB -> {rss_after} KiB");

    assert!(report.requests > 1_000, "{report:?}");
    assert_eq!(report.transport_errors, 0, "{report:?}");
    let statuses: BTreeSet<u16> = report.statuses.keys().copied().collect();
    let allowed = BTreeSet::from([200, 400, 404, 429, 503]);
    assert!(
        statuses.is_subset(&allowed),
        "unexpected statuses: {:?}",
        report.statuses
    );
    assert!(report.count(200) > report.requests / 2, "{report:?}");

    // Everything that tracks a request has let go of it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = metrics.render();
    for gauge in [
        "http_server_active_requests",
        "tower_kit_concurrency_in_flight",
        "tower_kit_concurrency_queued",
        "tower_kit_batch_queue_depth",
    ] {
        for (series, value) in gauge_values(&text, gauge) {
            assert_eq!(value, 0.0, "{series} still {value} after the soak");
        }
    }
    assert!(
        !gauge_values(&text, "tower_kit_concurrency_in_flight").is_empty(),
        "the concurrency gauges were recorded"
    );
    let growth_mib = rss_after.saturating_sub(rss_before) / 1024;
    assert!(
        growth_mib < 128,
        "resident memory grew by {growth_mib} MiB during the soak"
    );
}
