//! Cache: `GET /api/items` (`public, max-age=30`) and `GET /api/report` (slow, `public, max-age=10`) through one
//! response cache; `POST /api/items` adds an item and invalidates the list; the list is warmed at start.
//!
//! ```text
//! curl -si localhost:3000/api/items | grep -iE 'x-cache|age|cache-status'   # X-Cache: HIT (warmed at start)
//! curl -si localhost:3000/api/report | grep -i x-cache                        # MISS, after 300 ms
//! curl -si localhost:3000/api/report | grep -iE 'x-cache|^age'                # HIT, at once, with Age
//! curl -si -X POST localhost:3000/api/items -H 'content-type: application/json' -d '{"name":"new","price_cents":100}'
//! curl -si localhost:3000/api/items | grep -i x-cache                         # MISS: the list was invalidated
//! etag=$(curl -si localhost:3000/api/items | grep -i '^etag' | cut -d' ' -f2 | tr -d '\r')
//! curl -si localhost:3000/api/items -H "If-None-Match: $etag" | head -1      # HTTP/1.1 304 Not Modified
//! ```
//!
//! With `--redis-url` (`REDIS_URL`, the flag the rate limiter defines) the cache is tiered: an in-process L1 in front
//! of Redis. Every demo server started with the same URL shares the entries (a response cached by one is a hit on
//! the others), an invalidation on one drops the others' L1 copies, and concurrent misses across servers make one
//! origin call. If Redis is down or slow, each server carries on with its L1 and the origin after
//! `--cache-redis-timeout`.
//!
//! ```text
//! $ demo-server --listen 127.0.0.1:3000 --redis-url redis://127.0.0.1:6379/ &
//! $ demo-server --listen 127.0.0.1:3001 --redis-url redis://127.0.0.1:6379/ &
//! $ curl -si localhost:3000/api/report | grep -i x-cache   # MISS
//! $ curl -si localhost:3001/api/report | grep -i x-cache   # HIT: stored in Redis by the other server
//! ```
//!
//! `GET /api/items` carries an `ETag` (a hash of the list, so it changes when an item is added): the cache answers
//! `If-None-Match` with `304` from its entry, and revalidates a stale entry with a conditional request that this
//! handler answers `304` too.

use crate::items::{Item, Items};
use axum::{
    Json, Router,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, Request, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use std::time::Duration;
use tower_kit_cache::{CacheHandle, CacheLayer, MokaStore, RedisStore, Store, TieredStore};
use tower_kit_compression::CompressionLayer;

/// Flags of the response cache.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "cache_args")]
pub struct Args {
    /// Capacity of the in-memory response cache, in bytes (entries are weighed by their size).
    #[arg(long = "cache-max-bytes", env = "CACHE_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_bytes: u64,

    /// Largest response body the cache stores, in bytes; larger bodies stream through uncached.
    #[arg(long = "cache-max-entry-size", env = "CACHE_MAX_ENTRY_SIZE", default_value_t = 1024 * 1024)]
    pub max_entry_size: usize,

    /// Fill the cache with `GET /api/items` at start, so the first client gets a hit.
    #[arg(long = "cache-warm", env = "CACHE_WARM", default_value_t = true, action = clap::ArgAction::Set)]
    pub warm: bool,

    /// With `--redis-url`: the longest a request waits for Redis before the cache carries on without it (L1 and
    /// origin).
    #[arg(long = "cache-redis-timeout", env = "CACHE_REDIS_TIMEOUT", default_value = "100ms", value_parser = crate::config::parse_duration)]
    pub redis_timeout: Duration,

    /// Whether the cache layer is on (`--disable cache` turns it off; the routes stay).
    #[arg(skip = true)]
    pub enabled: bool,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
            max_entry_size: 1024 * 1024,
            warm: true,
            redis_timeout: Duration::from_millis(100),
            enabled: true,
        }
    }
}

/// How long `GET /api/report` pretends to work.
pub const REPORT_WORK: Duration = Duration::from_millis(300);

/// The item routes (from [`crate::items`]) and `/api/report`, behind the cache; warm-up started if configured.
/// With `redis_url` the cache is tiered (moka L1, Redis L2); call it inside the tokio runtime, so the store can
/// listen for other servers' invalidations. With `compress`, responses are compressed *inside* the cache, so it
/// stores the gzip variant (keyed on `Vary: Accept-Encoding`) and a hit costs no compression.
pub fn router(
    items: Items,
    args: &Args,
    redis: Option<crate::ratelimit::RedisTarget<'_>>,
    compress: Option<CompressionLayer>,
) -> Result<Router, tower_kit::core::ConfigError> {
    Ok(match redis {
        None => build_with(items, args, MokaStore::new(args.max_bytes), compress)?.0,
        Some(target) => build_with(items, args, tiered(target, args)?, compress)?.0,
    })
}

/// The tiered store on a Redis (`--redis-url`) or a Redis Cluster (`--redis-cluster-nodes`): `max_bytes` of L1,
/// Redis behind it with the demo's key prefix.
pub fn tiered(
    target: crate::ratelimit::RedisTarget<'_>,
    args: &Args,
) -> Result<TieredStore, tower_kit::core::ConfigError> {
    let l2 = match target {
        crate::ratelimit::RedisTarget::Single(url) => RedisStore::builder(url),
        crate::ratelimit::RedisTarget::Cluster(nodes) => {
            RedisStore::cluster_builder(nodes.iter().cloned())
        }
    };
    let l2 = l2
        .prefix("tower-kit-demo:cache:")
        .timeout(args.redis_timeout)
        .build()?;
    Ok(TieredStore::new(MokaStore::new(args.max_bytes), l2))
}

/// [`router`] on the in-process store, and the cache's handle.
pub fn build(
    items: Items,
    args: &Args,
) -> Result<(Router, CacheHandle), tower_kit::core::ConfigError> {
    build_with(items, args, MokaStore::new(args.max_bytes), None)
}

/// [`router`] on `store`, and the cache's handle.
pub fn build_with<St: Store>(
    items: Items,
    args: &Args,
    store: St,
    compress: Option<CompressionLayer>,
) -> Result<(Router, CacheHandle<St>), tower_kit::core::ConfigError> {
    let mut builder = CacheLayer::builder()
        .store(store)
        .max_entry_size(args.max_entry_size)
        // One site: `localhost:3000` and `127.0.0.1:3000` share entries, and so does the warm-up request.
        .include_host(false);
    if let Some(compression) = &compress {
        // Key `Accept-Encoding` on the coding the compression layer picks: every client that gets zstd shares one
        // entry, whatever else it lists (the layers stay independent; the demo composes them).
        let compression = compression.clone();
        builder = builder.normalize_vary(header::ACCEPT_ENCODING, move |headers| {
            Some(
                compression
                    .choose(headers)
                    .map_or("identity", |c| c.as_str())
                    .to_owned(),
            )
        });
    }
    let layer = builder.build()?;
    let handle = layer.handle();
    let own = Router::new()
        .route("/api/items", get(list::<St>).post(add::<St>))
        .route("/api/items/{id}/price", axum::routing::put(set_price::<St>))
        .route("/api/report", get(report::<St>))
        .with_state(Demo {
            items: items.clone(),
            cache: handle.clone(),
        });
    let own = match compress {
        Some(gzip) => own.layer(gzip),
        None => own,
    };
    if !args.enabled {
        return Ok((own, handle));
    }
    let router = own.layer(layer);
    if args.warm {
        warm(router.clone(), handle.clone());
    }
    export_usage(handle.clone());
    Ok((router, handle))
}

/// Every second, what the store holds now (`demo.cache.store.bytes`, `demo.cache.store.entries`): the dashboard's
/// "bytes stored". The library's counters say what was written; this says what is kept.
fn export_usage<St: Store>(handle: CacheHandle<St>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let bytes = metrics::gauge!("demo.cache.store.bytes");
        let entries = metrics::gauge!("demo.cache.store.entries");
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let stats = handle.stats().await;
            bytes.set(stats.bytes as f64);
            entries.set(stats.entries as f64);
        }
    });
}

struct Demo<St: Store> {
    items: Items,
    cache: CacheHandle<St>,
}

impl<St: Store> Clone for Demo<St> {
    fn clone(&self) -> Self {
        Self {
            items: self.items.clone(),
            cache: self.cache.clone(),
        }
    }
}

/// The JSON body of `PUT /api/items/{id}/price`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPrice {
    price_cents: u64,
}

/// Changes an item's price (pushed to `/ws` subscribers) and invalidates the list.
async fn set_price<St: Store>(
    State(demo): State<Demo<St>>,
    axum::extract::Path(id): axum::extract::Path<u64>,
    Json(new): Json<NewPrice>,
) -> Response {
    let Some(item) = demo.items.set_price(id, new.price_cents).await else {
        return crate::json_error(StatusCode::NOT_FOUND, "no such item");
    };
    if let Err(e) = demo.cache.invalidate_url("/api/items").await {
        tracing::warn!(error = %e, "cache invalidation failed");
    }
    Json(item).into_response()
}

/// The JSON body of `POST /api/items`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewItem {
    name: String,
    #[serde(default)]
    description: String,
    price_cents: u64,
    #[serde(default)]
    tags: Vec<String>,
}

async fn add<St: Store>(State(demo): State<Demo<St>>, Json(new): Json<NewItem>) -> Response {
    let name = new.name.trim();
    if name.is_empty() || name.len() > 200 {
        return crate::json_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "name must be 1 to 200 characters",
        );
    }
    if new.description.len() > 2000 || new.tags.len() > 20 || new.tags.iter().any(|t| t.len() > 50)
    {
        return crate::json_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "description or tags too long",
        );
    }
    let item: Item = demo
        .items
        .add(name.to_owned(), new.description, new.price_cents, new.tags)
        .await;
    // The list changed: drop its cached copies (every variant).
    if let Err(e) = demo.cache.invalidate_url("/api/items").await {
        tracing::warn!(error = %e, "cache invalidation failed");
    }
    let location = format!("/api/items/{}", item.id);
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(item),
    )
        .into_response()
}

/// The entity tag of a list body: FNV-1a of its JSON, stable across runs and Rust versions.
pub fn etag_of(body: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{hash:016x}\"")
}

/// `GET /api/items`: the list, cacheable by shared caches for 30 s, with an `ETag`; a matching `If-None-Match`
/// (the cache's revalidation) gets `304`.
async fn list<St: Store>(State(demo): State<Demo<St>>, headers: HeaderMap) -> Response {
    let body = match serde_json::to_vec(&demo.items.all()) {
        Ok(body) => body,
        Err(_) => {
            return crate::json_error(StatusCode::INTERNAL_SERVER_ERROR, "serialisation failed");
        }
    };
    let etag = etag_of(&body);
    let Ok(etag_value) = HeaderValue::from_str(&etag) else {
        return crate::json_error(StatusCode::INTERNAL_SERVER_ERROR, "bad entity tag");
    };
    let cache_control = (
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=30"),
    );
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        });
    if matches {
        return (
            StatusCode::NOT_MODIFIED,
            [cache_control, (header::ETAG, etag_value)],
        )
            .into_response();
    }
    (
        [
            cache_control,
            (header::ETAG, etag_value),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn report<St: Store>(State(demo): State<Demo<St>>) -> impl IntoResponse {
    tokio::time::sleep(REPORT_WORK).await;
    let items = demo.items.all();
    let total: u64 = items.iter().map(|i| i.price_cents).sum();
    let generated_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    (
        [(header::CACHE_CONTROL, "public, max-age=10")],
        Json(serde_json::json!({
            "items": items.len(),
            "total_price_cents": total,
            "average_price_cents": if items.is_empty() { 0 } else { total / items.len() as u64 },
            "generated_at": generated_at,
        })),
    )
}

/// Runs `GET /api/items` through the cached router in the background.
fn warm<St: Store>(router: Router, cache: CacheHandle<St>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no tokio runtime: cache warm-up skipped");
        return;
    };
    runtime.spawn(async move {
        // The variants clients get: identity; zstd (Chrome, Firefox, Edge and `curl --compressed` send `gzip,
        // deflate, br, zstd`); Brotli (Safari: `gzip, deflate, br`); gzip. With the compression layer inside, the
        // cache keys on the coding chosen, so these four entries serve every client.
        let requests: Vec<Request<Body>> = [
            None,
            Some("gzip, deflate, br, zstd"),
            Some("gzip, deflate, br"),
            Some("gzip"),
        ]
        .into_iter()
        .map(|accept| {
            let mut request = Request::get("/api/items");
            if let Some(accept) = accept {
                request = request.header(header::ACCEPT_ENCODING, accept);
            }
            request.body(Body::empty())
        })
        .filter_map(Result::ok)
        .collect();
        let report = cache.warm_up(router, requests).await;
        tracing::info!(stored = report.stored, "cache warmed: GET /api/items");
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn args(warm: bool) -> Args {
        Args {
            warm,
            ..Args::default()
        }
    }

    async fn call(
        app: &Router,
        req: Request<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let res = app.clone().oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).unwrap_or_default(),
        )
    }

    fn get(uri: &str) -> Request<Body> {
        Request::get(uri)
            .header("host", "localhost:3000")
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn compressed_inside_the_cache_a_hit_is_served_compressed() {
        let gzip =
            crate::compression::response_layer(&crate::compression::Args::default()).unwrap();
        let store = MokaStore::new(args(false).max_bytes);
        let (app, _) = build_with(Items::seeded(), &args(false), store, Some(gzip)).unwrap();
        let gzip_get = || {
            let mut req = get("/api/items");
            req.headers_mut()
                .insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
            req
        };
        let fetch = async |req: Request<Body>| {
            let res = app.clone().oneshot(req).await.unwrap();
            let (parts, body) = res.into_parts();
            (parts.headers, body.collect().await.unwrap().to_bytes())
        };
        let (first, first_body) = fetch(gzip_get()).await;
        assert_eq!(first["x-cache"], "MISS");
        assert_eq!(first["content-encoding"], "gzip");
        // Nothing outside the cache compresses here: a gzip hit is the stored compressed variant.
        let (hit, hit_body) = fetch(gzip_get()).await;
        assert_eq!(hit["x-cache"], "HIT");
        assert_eq!(hit["content-encoding"], "gzip");
        assert_eq!(hit_body, first_body);
        // A client without gzip has its own variant, uncompressed.
        let (plain, plain_body) = fetch(get("/api/items")).await;
        assert_eq!(plain["x-cache"], "MISS");
        assert!(plain.get("content-encoding").is_none());
        assert!(serde_json::from_slice::<serde_json::Value>(&plain_body).is_ok());
    }

    #[tokio::test]
    async fn list_is_a_miss_then_a_hit_with_age() {
        let (app, _) = build(Items::seeded(), &args(false)).unwrap();
        let (status, h, body) = call(&app, get("/api/items")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h["x-cache"], "MISS");
        assert_eq!(h["cache-control"], "public, max-age=30");
        assert_eq!(
            body.as_array().unwrap().len(),
            crate::items::SEED_ITEMS as usize
        );
        let (_, h, _) = call(&app, get("/api/items")).await;
        assert_eq!(h["x-cache"], "HIT");
        assert_eq!(h["age"], "0");
    }

    #[tokio::test]
    async fn post_adds_an_item_and_invalidates_the_list() {
        let (app, _) = build(Items::seeded(), &args(false)).unwrap();
        call(&app, get("/api/items")).await;
        let post = Request::post("/api/items")
            .header("content-type", "application/json")
            .body(Body::from(
                r#"{"name":"lantern","price_cents":1234,"tags":["new"]}"#,
            ))
            .unwrap();
        let (status, h, item) = call(&app, post).await;
        assert_eq!(status, StatusCode::CREATED);
        let id = item["id"].as_u64().unwrap();
        assert_eq!(h["location"], format!("/api/items/{id}"));
        let (_, h, list) = call(&app, get("/api/items")).await;
        assert_eq!(h["x-cache"], "MISS");
        assert!(
            list.as_array()
                .unwrap()
                .iter()
                .any(|i| i["name"] == "lantern")
        );
    }

    #[tokio::test]
    async fn if_none_match_gets_a_304_from_the_cache_and_the_etag_follows_the_list() {
        let (app, _) = build(Items::seeded(), &args(false)).unwrap();
        let (_, h, _) = call(&app, get("/api/items")).await;
        let etag = h["etag"].to_str().unwrap().to_owned();
        let seeded = serde_json::to_vec(&Items::seeded().all()).unwrap();
        assert_eq!(etag, etag_of(&seeded), "a stable hash of the list");
        let conditional = |tag: &str| {
            Request::get("/api/items")
                .header("host", "localhost:3000")
                .header("if-none-match", tag)
                .body(Body::empty())
                .unwrap()
        };
        let res = app.clone().oneshot(conditional(&etag)).await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(res.headers()["x-cache"], "HIT", "answered by the cache");
        assert_eq!(res.headers()["etag"], etag.as_str());
        assert_eq!(res.headers()["cache-control"], "public, max-age=30");
        assert!(
            res.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .is_empty()
        );
        // Adding an item changes the ETag: the old one now gets the full list.
        let post = Request::post("/api/items")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"name":"lantern","price_cents":1234}"#))
            .unwrap();
        call(&app, post).await;
        let res = app.clone().oneshot(conditional(&etag)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let new_etag = res.headers()["etag"].to_str().unwrap().to_owned();
        assert_ne!(new_etag, etag);
        // The origin itself answers a matching If-None-Match (the cache's revalidations) with 304.
        let origin = crate::cache::Demo {
            items: Items::seeded(),
            cache: build(Items::seeded(), &args(false)).unwrap().1,
        };
        let mut headers = HeaderMap::new();
        headers.insert("if-none-match", HeaderValue::from_str(&etag).unwrap());
        let res = list(State(origin), headers).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    }

    #[tokio::test]
    async fn bad_item_json_is_refused_and_invalidates_nothing() {
        let (app, handle) = build(Items::seeded(), &args(false)).unwrap();
        call(&app, get("/api/items")).await;
        for body in [
            r#"{"name":""}"#,
            "not json",
            r#"{"name":" ","price_cents":1}"#,
            r#"{"name":"x","price_cents":-1}"#,
        ] {
            let post = Request::post("/api/items")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
            let (status, _, _) = call(&app, post).await;
            assert!(status.is_client_error(), "{body}: {status}");
        }
        let (_, h, _) = call(&app, get("/api/items")).await;
        assert_eq!(h["x-cache"], "HIT");
        assert_eq!(handle.stats().await.stored, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_report_is_cached() {
        let (app, _) = build(Items::seeded(), &args(false)).unwrap();
        let start = tokio::time::Instant::now();
        let (_, h, body) = call(&app, get("/api/report")).await;
        assert_eq!(start.elapsed(), REPORT_WORK);
        assert_eq!(h["x-cache"], "MISS");
        assert_eq!(h["cache-control"], "public, max-age=10");
        assert_eq!(body["items"], crate::items::SEED_ITEMS);
        let start = tokio::time::Instant::now();
        let (_, h, again) = call(&app, get("/api/report")).await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "served without the simulated work"
        );
        assert_eq!(h["x-cache"], "HIT");
        assert_eq!(body, again);
    }

    #[tokio::test]
    async fn list_is_warmed_at_start() {
        let (app, handle) = build(Items::seeded(), &args(true)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while handle.stats().await.stored == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "warm-up never stored the list"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (_, h, _) = call(&app, get("/api/items")).await;
        assert_eq!(h["x-cache"], "HIT", "the first client request is a hit");
    }

    #[tokio::test]
    async fn the_warm_up_stores_the_compressed_variant_browsers_and_curl_ask_for() {
        let gzip =
            crate::compression::response_layer(&crate::compression::Args::default()).unwrap();
        let store = MokaStore::new(args(true).max_bytes);
        let (app, handle) = build_with(Items::seeded(), &args(true), store, Some(gzip)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while handle.stats().await.stored < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "warm-up never stored both variants"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // What `curl --compressed` sends (browsers send the same set in another order).
        let mut req = get("/api/items");
        req.headers_mut().insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("deflate, gzip, br, zstd"),
        );
        let res = app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.headers()["x-cache"], "HIT");
        // The compression layer's choice for that set: zstd.
        assert_eq!(res.headers()["content-encoding"], "zstd");
    }
}
