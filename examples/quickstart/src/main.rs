//! Every tower-kit layer on one axum app, with Prometheus metrics and logs. `cargo run -p quickstart`, then
//! `curl -i localhost:3000/users/7`, `curl -i --compressed localhost:3000/report` (twice: a miss, then a hit)
//! and `curl localhost:3000/metrics`. `LISTEN=127.0.0.1:8080` changes the address.

use axum::{
    Router,
    extract::{Path, State},
    http::{StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::get,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::{
    collections::HashMap,
    num::{NonZeroU32, NonZeroUsize},
    time::Duration,
};
use tower::{Layer, ServiceBuilder, service_fn};
use tower_kit::{
    batch::{BatchLayer, HttpBatch},
    cache::CacheLayer,
    compression::CompressionLayer,
    concurrency::ConcurrencyLayer,
    ratelimit::{Quota, RateLimitLayer},
    serve::{ServeConfig, bind, serve},
    timing::TimingLayer,
};

/// Requests in flight at once, for the whole app; the rest queue briefly, then get 503 + `Retry-After`.
const MAX_IN_FLIGHT: NonZeroUsize = NonZeroUsize::new(64).unwrap();
/// Requests per second per client address; the rest get 429 + `Retry-After`.
const PER_CLIENT_PER_SECOND: NonZeroU32 = NonZeroU32::new(100).unwrap();

/// Users looked up by many requests at once, loaded by one backend call per batch.
type Users = HttpBatch<u64, String, std::io::Error>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    // Histogram buckets belong to the exporter: without them there are no `_bucket` series.
    let prometheus = PrometheusBuilder::new()
        .with_recommended_naming(true) // http_server_request_duration_seconds, ..._total
        .set_buckets_for_metric(
            Matcher::Suffix("duration".into()),
            &[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        )?
        .install_recorder()?;
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });

    // Concurrent lookups within 5 ms become one backend call; duplicate ids are sent once.
    let users: Users = HttpBatch::new(
        BatchLayer::builder()
            .keyed(|id: &u64| *id)
            .max_items(100)
            .max_latency(Duration::from_millis(5))
            .build()?
            .layer(service_fn(load_users)),
    );

    // Compressed inside the cache: the cache stores each encoding once, and a hit is not compressed again.
    let cached = ServiceBuilder::new()
        .layer(CacheLayer::new())
        .layer(CompressionLayer::new());

    let app = Router::new()
        .route("/users/{id}", get(user))
        .route("/report", get(report).layer(cached))
        .route("/metrics", get(move || async move { prometheus.render() }))
        .with_state(users)
        // With `Router::layer` the last layer added is the outermost: timing, rate limit, concurrency, compression.
        .layer(CompressionLayer::new())
        .layer(ConcurrencyLayer::new(MAX_IN_FLIGHT))
        .layer(RateLimitLayer::new(Quota::per_second(PER_CLIENT_PER_SECOND)).keep_inner_body())
        .layer(TimingLayer::new());

    let addr = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let config = ServeConfig::default();
    let listener = bind(addr.parse()?, config.listen_backlog())?;
    println!("listening on http://{}", listener.local_addr()?);
    // `serve` gives every request its client address (`ConnectInfo`), which the rate limiter keys on.
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    serve(listener, app, &config, ctrl_c).await?;
    Ok(())
}

/// `GET /users/{id}`: one user, looked up through the batcher.
async fn user(State(users): State<Users>, Path(id): Path<u64>, parts: Parts) -> Response {
    match users.load(&parts, id).await {
        Ok(name) => name.into_response(),
        Err(e) if e.error().is_missing() => StatusCode::NOT_FOUND.into_response(),
        Err(e) => e.into_response(), // overload: 503 + Retry-After
    }
}

/// The batched backend: one query for many ids; ids not found are absent from the map.
async fn load_users(ids: Vec<u64>) -> Result<HashMap<u64, String>, std::io::Error> {
    Ok(ids
        .into_iter()
        .filter(|id| *id < 1000)
        .map(|id| (id, format!("user {id}\n")))
        .collect())
}

/// `GET /report`: slow to build, so shared caches may keep it for 10 s.
async fn report() -> impl IntoResponse {
    tokio::time::sleep(Duration::from_millis(300)).await;
    (
        [(header::CACHE_CONTROL, "public, max-age=10")],
        "report line\n".repeat(200),
    )
}
