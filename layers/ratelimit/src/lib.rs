//! Keyed GCRA rate limiting for Tower: [`RateLimitLayer`].
//!
//! Each request is checked against one or more named [`Policy`]s (`"burst"`: 10 per second, `"daily"`: 10 000 per
//! day). Each policy keys requests ([`KeyExtractor`]: peer IP, client IP behind [`TrustedProxies`], an API-key
//! header, global, per route, any closure) and holds a GCRA state per key. The request is admitted only if **every**
//! policy that applies admits it, and a refused request consumes from **no** policy (all-or-nothing). Refusals are
//! responses, never errors: `429 Too Many Requests` with `Retry-After` (whole seconds, rounded up, never early) and
//! the draft-ietf-httpapi-ratelimit-headers fields (`RateLimit-Policy: "burst";q=10;w=1`,
//! `RateLimit: "burst";r=0;t=1`); gRPC calls get HTTP 200 with `grpc-status: 8`. The inner service's error type
//! passes through, so axum needs no `HandleErrorLayer`. The headers describe what the limiter really does (the
//! burst and the time to give it back, the seconds until the next unit: see [`headers`]), so a client that
//! follows them is neither refused nor kept waiting longer than needed.
//!
//! The backend is a trait, [`RateLimitStore`], whose semantics are defined in [`store`]; the in-process
//! [`InMemoryStore`] is bounded (a key cap that evicts the least informative states first) and forgets idle keys
//! without a background task. Its clock is injectable (core's [`MonotonicClock`]; [`ManualMonotonicClock`] in tests).
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use std::{convert::Infallible, net::SocketAddr, num::NonZeroU32};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_kit_ratelimit::{Quota, RateLimitLayer};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let layer = RateLimitLayer::new(Quota::per_minute(NonZeroU32::new(2).unwrap()));
//! let svc = ServiceBuilder::new().layer(layer).service_fn(|_req: Request<Full<Bytes>>| async {
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
//! });
//! let request = || {
//!     let mut req = Request::new(Full::new(Bytes::new()));
//!     // axum: serve with `into_make_service_with_connect_info::<SocketAddr>()` instead.
//!     req.extensions_mut().insert("192.0.2.7:5000".parse::<SocketAddr>().unwrap());
//!     req
//! };
//! assert_eq!(svc.clone().oneshot(request()).await.unwrap().status(), StatusCode::OK);
//! assert_eq!(svc.clone().oneshot(request()).await.unwrap().status(), StatusCode::OK);
//! let refused = svc.clone().oneshot(request()).await.unwrap();
//! assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(refused.headers()["retry-after"], "30");
//! assert_eq!(refused.headers()["ratelimit-policy"], r#""default";q=2;w=60"#);
//! // `t`: seconds until additional quota comes back (one unit every 30 s), the same moment as `Retry-After`.
//! assert_eq!(refused.headers()["ratelimit"], r#""default";r=0;t=30"#);
//! # }
//! ```
//!
//! # Cargo features
//!
//! - `axum` (off by default): the peer address is also read from axum's `ConnectInfo<SocketAddr>`, and
//!   [`KeyExtractor::per_route`] uses axum's `MatchedPath`. Without it (or `tonic` for tonic's `TcpConnectInfo`)
//!   a peer-IP key finds no address under that server: the layer then warns once and counts
//!   [`metrics::MISSING_CLIENT_ADDRESS`].
//! - `tonic` (off by default): the peer address is also read from tonic's `TcpConnectInfo`, which tonic's server
//!   inserts.
//! - `redis` (off by default): `RedisStore`, a backend in Redis so that every server behind a load balancer
//!   enforces one shared quota (one `EVALSHA` round trip per request, Redis server time, TTL-bounded keys, Redis
//!   Cluster hash tags, a circuit breaker; see [`StoreFailure`] for what happens while Redis is away).
//! - `redis-tls` (off by default): `rediss://` URLs for `RedisStore`, through the platform's TLS library.
//!
//! Under axum, use [`RateLimitLayer::keep_inner_body`] so responses keep axum's body type.
//!
//! # Compared with the peers
//!
//! - **tower's `RateLimitLayer`**: one unkeyed fixed window per service clone that *waits* in `poll_ready`. Here:
//!   keyed GCRA, shared by every clone, answers 429 at once.
//! - **tower_governor**: keyed GCRA too, but one quota per layer, no costs or tiers, no dry run, headers only in its
//!   `x-ratelimit-*` form, forwarding headers believed from any peer, no IPv6 grouping, and key memory that grows
//!   until you run `retain_recent` from your own task. Here: several named policies (all-or-nothing), costs,
//!   per-request quotas, trusted-proxy CIDRs, /64 grouping, the IETF headers, and a bounded store that cleans itself.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod builder;
mod decide;
mod future;
pub mod headers;
mod key;
mod layer;
mod log_limit;
pub mod metrics;
mod proxy;
mod quota;
mod refusal;
mod service;
pub mod store;

pub use body::{BodyMode, KeepBody, WrapBody};
pub use builder::RateLimitLayerBuilder;
pub use future::ResponseFuture;
pub use key::{DEFAULT_IPV6_PREFIX, Key, KeyExtractor, KeyKind, Route};
pub use layer::{Policy, RateLimitLayer, StoreFailure};
pub use proxy::{CidrList, ForwardedHeader, MAX_HOPS, TrustedProxies, TrustedProxiesBuilder};
pub use quota::{MAX_WINDOW, Quota};
pub use refusal::{Refusal, RefusalReason};
pub use service::RateLimit;
pub use store::{InMemoryStore, InMemoryStoreBuilder, RateLimitStore, StoreStats};
#[cfg(feature = "redis")]
pub use store::{RedisStore, RedisStoreBuilder, RedisStoreError};
pub use tower_kit_core::{ManualMonotonicClock, MonotonicClock, SystemMonotonicClock};
