//! An RFC 9111 shared HTTP response cache as a Tower layer.
//!
//! [`CacheLayer`] stores GET responses that RFC 9111 lets a shared cache store, in an in-process [moka](MokaStore)
//! store weighted by bytes (a Redis or tiered store plugs in through the [`Store`] trait), and answers later
//! requests from it with `Age`, RFC 9211 `Cache-Status` and `X-Cache: HIT|MISS|STALE|REVALIDATED`.
//!
//! - **Freshness from the response**: `s-maxage`, `max-age`, `Expires`; never `no-store` or `private`; `no-cache`
//!   only with a validator, validated before every use; heuristic freshness and per-route default TTLs only when
//!   configured. Freshness and `Age` (RFC 9111 §4.2.3, with the origin's `Date` and `Age`) come from timestamps in
//!   each entry and the cache's own [`WallClock`] (core's); a store's expiry is only garbage collection.
//! - **Any final status** (RFC 9111 §3): a `404`, `410`, `500`–`504` or an unregistered `599` is stored when it
//!   carries explicit freshness or `public`, unless `must-understand` is present and the status is not one the
//!   cache knows; heuristic and default freshness only for the statuses RFC 9110 §15.1 calls heuristically
//!   cacheable (or `public` ones). Informational (`1xx`) responses are never stored.
//! - **Targeted cache control** (RFC 9213): a valid `CDN-Cache-Control` (or fields of your own, in precedence
//!   order) replaces `Cache-Control` and `Expires` for this cache's decisions; clients still get `Cache-Control`.
//! - **Conditional requests**: `If-None-Match` (weak comparison) and `If-Modified-Since` are answered `304` from a
//!   fresh entry. Stale and `no-cache` entries with an `ETag` or `Last-Modified` are validated with a conditional
//!   request; an origin `304` refreshes the stored headers and freshness.
//! - **Stale serving** (RFC 5861): `stale-while-revalidate` answers at once while one background revalidation per
//!   entry runs; `stale-if-error` answers when the origin fails (500/502/503/504 or an inner error). Both from the
//!   response's `Cache-Control` or from configuration.
//! - **Request directives**: `no-cache` (and `Pragma: no-cache`), `max-age`, `max-stale`, `min-fresh`,
//!   `only-if-cached` (504 when nothing fits), `no-store`.
//! - **Invalidation by unsafe methods**: a 2xx/3xx answer to `POST`, `PUT`, `PATCH`, `DELETE` removes the target URI
//!   and the same-origin `Location` / `Content-Location`. A `HEAD` response with new validators marks the stored
//!   `GET` stale.
//! - **Safe keys**: method, host, path and query under a `{namespace}:{version}:` prefix, plus the request headers
//!   a response's `Vary` names (`Accept-Encoding` normalised, so the cache composes with a compression layer;
//!   `Vary: *` never reused). Requests with `Authorization` get stored responses, and have theirs stored, only when
//!   the response says `public`, `s-maxage` or `must-revalidate`; requests with `Cookie` only when it says
//!   `public` (switchable); responses with `Set-Cookie` are never stored (or stored without it, if configured).
//! - **Coalescing**: concurrent misses for one key make one origin call; the others wait and get its response. If
//!   it cannot be stored they go to the origin at once, and the key is marked hit-for-pass for a while so later
//!   requests do not queue.
//! - **Streaming fill**: the body is stored while it streams to the first client; a body that errors, is cut short
//!   or exceeds `max_entry_size` is not stored (and still reaches the client untouched).
//! - **A handle** ([`CacheHandle`]): invalidate a URL, a path prefix or a tag (`Cache-Tag`, `Surrogate-Key`, or a
//!   closure), purge, stats, and warm-up.
//! - Metrics through the `metrics` facade (`tower_kit.cache.requests{result=hit|coalesced|stale|revalidated|miss|bypass}`, `tower_kit.cache.stored`,
//!   `tower_kit.cache.store_errors`, `tower_kit.cache.invalidations`), and a
//!   `cache;desc=hit|miss|coalesced|stale|revalidated|bypass`
//!   Server-Timing entry when the timing layer provides the context.
//!
//! Policy never turns into errors: the inner service's error type passes through unchanged, so an `Infallible`
//! service stays `Infallible` and axum needs no `HandleErrorLayer`.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, header};
//! use http_body_util::{BodyExt, Full};
//! use std::convert::Infallible;
//! use tower::{Layer, ServiceExt, service_fn};
//! use tower_kit_cache::CacheLayer;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let layer = CacheLayer::new();
//! let handle = layer.handle();
//! let svc = layer.layer(service_fn(|_req: Request<()>| async {
//!     let res = Response::builder()
//!         .header(header::CACHE_CONTROL, "public, max-age=30")
//!         .body(Full::new(Bytes::from_static(b"[1,2,3]")))
//!         .unwrap();
//!     Ok::<_, Infallible>(res)
//! }));
//!
//! let first = svc.clone().oneshot(Request::get("/api/items").body(()).unwrap()).await.unwrap();
//! assert_eq!(first.headers()["x-cache"], "MISS");
//! assert_eq!(first.into_body().collect().await.unwrap().to_bytes(), "[1,2,3]"); // stored as it streams
//!
//! let second = svc.oneshot(Request::get("/api/items").body(()).unwrap()).await.unwrap();
//! assert_eq!(second.headers()["x-cache"], "HIT");
//! assert_eq!(second.headers()["age"], "0");
//! assert_eq!(second.headers()["cache-status"], "tower-kit; hit; ttl=30");
//!
//! handle.invalidate_url("/api/items").await.unwrap();
//! assert_eq!(handle.stats().await.entries, 0);
//! # }
//! ```
//!
//! # Cargo features
//!
//! - `conformance` (off): exposes [`store::conformance`], the test suite every [`Store`] must pass.
//! - `redis` (off): `RedisStore`, a store shared by every server through Redis, and `TieredStore`, an in-process
//!   L1 in front of it, with invalidations broadcast to every server's L1 (see the book's "Scaling out").
//! - `redis-tls` (off): `rediss://` URLs for those stores, through the platform's TLS library; without it such a
//!   URL is a `ConfigError` naming the feature.
//!
//! # Compared with the peers
//!
//! tower-http-cache takes TTLs from configuration and keys from `(method, URI)`; it ignores `Vary` and stores
//! responses to requests with credentials. http-cache-tower-server does not coalesce misses and does not support
//! `no-cache`. axum-response-cache neither reads `Cache-Control` nor varies. None of them answers `304` or
//! revalidates with the origin. This crate follows RFC 9111 for a shared cache, coalesces with
//! hit-for-pass, refuses what could leak between users, and is controlled from outside through its handle.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod builder;
mod coalesce;
mod conditional;
mod control;
mod entry;
mod fill;
mod future;
mod handle;
mod invalidate;
mod key;
mod layer;
mod service;
mod stats;
mod status;
mod storability;
pub mod store;
mod targeted;
mod vary;

pub use body::CacheBody;
pub use builder::CacheLayerBuilder;
pub use entry::{Entry, StoredValue, Variants};
pub use future::ResponseFuture;
pub use handle::{CacheHandle, WarmUp};
pub use layer::{CacheLayer, TtlTier};
pub use service::Cache;
pub use stats::CacheStats;
pub use store::{Lease, LeaseRelease, MokaStore, Store, StoreError, StoreUsage};
#[cfg(feature = "redis")]
pub use store::{RedisStore, RedisStoreBuilder, TieredStore};
pub use tower_kit_core::{ManualWallClock, SystemWallClock, WallClock};
