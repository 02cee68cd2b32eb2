//! Rate limiting: a per-client-IP policy on `/api/*`; `/health`, `/metrics` and everything outside `/api/` are
//! exempt.
//!
//! The defaults, 100 per minute with a burst of 10, are advertised as what they allow: 10 requests at once, given
//! back over 6 s (`q=10;w=6`, the same 100 per minute), with `t` the seconds until the next one comes back:
//!
//! ```text
//! $ for i in $(seq 12); do curl -s -o /dev/null -w '%{http_code} ' localhost:3000/api/items; done
//! 200 200 200 200 200 200 200 200 200 200 429 429
//! $ curl -i localhost:3000/api/items
//! HTTP/1.1 429 Too Many Requests
//! retry-after: 1
//! ratelimit-policy: "per-ip";q=10;w=6
//! ratelimit: "per-ip";r=0;t=1
//! ```
//!
//! Behind proxies, `--rate-limit-trusted-proxies` lists them and `--rate-limit-client-ip-header` names the one
//! header they write (`x-forwarded-for`, `forwarded` or `x-real-ip`); only that header is believed, and only from
//! those peers. Trusting proxies without naming the header is a configuration error: stock nginx appends to
//! `X-Forwarded-For` but passes a client's own `Forwarded` through, so believing both would let clients choose
//! their key.
//!
//! ```text
//! $ demo-server --rate-limit-trusted-proxies 127.0.0.1/32 --rate-limit-client-ip-header x-forwarded-for
//! ```
//!
//! With `--redis-url` (`REDIS_URL`) the quota lives in Redis: every demo server started with the same URL shares
//! it (a client gets 100 per minute in total, not 100 per server). `--rate-limit-store-failure` decides what
//! happens while Redis is down: `open` (admit), `capped:<percent>` (admit up to that share of the quota per
//! server) or `closed` (503).
//!
//! ```text
//! $ demo-server --listen 127.0.0.1:3000 --redis-url redis://127.0.0.1:6379/ &
//! $ demo-server --listen 127.0.0.1:3001 --redis-url redis://127.0.0.1:6379/ &
//! ```

use std::{
    future::Future,
    num::NonZeroU32,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tower_kit::core::ConfigError;
use tower_kit_ratelimit::{
    ForwardedHeader, InMemoryStore, KeepBody, KeyExtractor, Policy, Quota, RateLimitLayer,
    RateLimitStore, RedisStore, RedisStoreError, StoreFailure, TrustedProxies,
    store::{CheckRequest, Decision},
};

/// Flags of the rate-limit layer.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Requests each client IP may make per `--rate-limit-window` on `/api/*`.
    #[arg(long, env = "RATE_LIMIT", default_value = "100")]
    pub rate_limit: NonZeroU32,

    /// The window of `--rate-limit`, in whole seconds (e.g. `1s`, `60s`, `1m`).
    #[arg(long, env = "RATE_LIMIT_WINDOW", default_value = "60s", value_parser = crate::config::parse_duration)]
    pub rate_limit_window: Duration,

    /// The most requests a client may send at once after being idle.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value = "10")]
    pub rate_limit_burst: NonZeroU32,

    /// Proxies (CIDRs, comma-separated) whose `--rate-limit-client-ip-header` is believed. Empty: key by the
    /// socket peer, whatever headers say.
    #[arg(
        long,
        env = "RATE_LIMIT_TRUSTED_PROXIES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub rate_limit_trusted_proxies: Vec<String>,

    /// The header the trusted proxies write, the only one believed: `x-forwarded-for`, `forwarded` or
    /// `x-real-ip`. Required with `--rate-limit-trusted-proxies` (no automatic choice: a header your proxies pass
    /// through untouched is written by the client).
    #[arg(long, env = "RATE_LIMIT_CLIENT_IP_HEADER")]
    pub rate_limit_client_ip_header: Option<String>,

    /// Group IPv6 clients by this prefix length.
    #[arg(long, env = "RATE_LIMIT_IPV6_PREFIX", default_value_t = 64)]
    pub rate_limit_ipv6_prefix: u8,

    /// Count and log would-be refusals without refusing.
    #[arg(long, env = "RATE_LIMIT_DRY_RUN", default_value_t = false, action = clap::ArgAction::Set)]
    pub rate_limit_dry_run: bool,

    /// Send `RateLimit-Policy` / `RateLimit` on admitted responses too (refusals always carry them).
    #[arg(long, env = "RATE_LIMIT_HEADERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub rate_limit_headers: bool,

    /// Keep the rate-limit state in this Redis (`redis://[user:password@]host:port/[db]`), shared by every server
    /// started with the same URL. Unset: in-process state, per server.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Keep the rate-limit state (and the cache's L2) in this Redis Cluster (or Valkey cluster) instead: some of
    /// its nodes, comma-separated (`redis://127.0.0.1:7000,redis://127.0.0.1:7001`); the others are discovered.
    #[arg(
        long,
        env = "REDIS_CLUSTER_NODES",
        value_delimiter = ',',
        conflicts_with = "redis_url"
    )]
    pub redis_cluster_nodes: Vec<String>,

    /// With `--redis-url`: the longest a request waits for Redis before the failure policy decides it.
    #[arg(long, env = "RATE_LIMIT_REDIS_TIMEOUT", default_value = "100ms", value_parser = crate::config::parse_duration)]
    pub rate_limit_redis_timeout: Duration,

    /// With `--redis-url`, while Redis is down or slow: `open` (admit), `capped:<percent>` (admit up to that share
    /// of each quota, per server) or `closed` (503 with `Retry-After: 1`).
    #[arg(long, env = "RATE_LIMIT_STORE_FAILURE", default_value = "open")]
    pub rate_limit_store_failure: String,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            rate_limit: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
            rate_limit_window: Duration::from_secs(60),
            rate_limit_burst: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            rate_limit_trusted_proxies: Vec::new(),
            rate_limit_client_ip_header: None,
            rate_limit_ipv6_prefix: 64,
            rate_limit_dry_run: false,
            rate_limit_headers: true,
            redis_url: None,
            redis_cluster_nodes: Vec::new(),
            rate_limit_redis_timeout: Duration::from_millis(100),
            rate_limit_store_failure: "open".to_owned(),
        }
    }
}

/// Where the shared state lives: `--redis-url` or `--redis-cluster-nodes`.
#[derive(Clone, Copy, Debug)]
pub enum RedisTarget<'a> {
    /// One Redis server.
    Single(&'a str),
    /// A Redis Cluster, by some of its nodes.
    Cluster(&'a [String]),
}

impl Args {
    /// The Redis the flags name, if any.
    pub fn redis_target(&self) -> Option<RedisTarget<'_>> {
        match (&self.redis_url, self.redis_cluster_nodes.as_slice()) {
            (_, [_, ..]) => Some(RedisTarget::Cluster(&self.redis_cluster_nodes)),
            (Some(url), []) => Some(RedisTarget::Single(url)),
            (None, []) => None,
        }
    }
}

/// The limiter's store: in-process, or Redis with `--redis-url`.
#[derive(Clone, Debug)]
pub enum Store {
    /// One server's own state.
    Memory(InMemoryStore),
    /// Shared by every server on the same Redis.
    Redis(RedisStore),
}

/// [`Store`]'s future: the in-process answer at once, or Redis's later.
pub enum StoreFuture {
    /// The in-process decision.
    Ready(Option<Decision>),
    /// Waiting for Redis.
    Redis(<RedisStore as RateLimitStore>::Future),
}

impl std::fmt::Debug for StoreFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreFuture::Ready(_) => "StoreFuture::Ready",
            StoreFuture::Redis(_) => "StoreFuture::Redis",
        })
    }
}

impl Future for StoreFuture {
    type Output = Result<Decision, RedisStoreError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            StoreFuture::Ready(decision) => match decision.take() {
                Some(d) => Poll::Ready(Ok(d)),
                None => Poll::Pending, // polled after completion: never again
            },
            StoreFuture::Redis(future) => future.as_mut().poll(cx),
        }
    }
}

impl RateLimitStore for Store {
    type Error = RedisStoreError;
    type Future = StoreFuture;

    fn check(&self, request: &CheckRequest<'_>) -> StoreFuture {
        match self {
            Store::Memory(store) => StoreFuture::Ready(Some(store.decide(request))),
            Store::Redis(store) => StoreFuture::Redis(store.check(request)),
        }
    }
}

/// The store the flags ask for (Redis is not contacted yet: the first request connects).
pub fn store(args: &Args) -> Result<Store, ConfigError> {
    let builder = match args.redis_target() {
        None => return Ok(Store::Memory(InMemoryStore::new())),
        Some(RedisTarget::Single(url)) => RedisStore::builder(url),
        Some(RedisTarget::Cluster(nodes)) => RedisStore::cluster_builder(nodes.iter().cloned()),
    };
    builder
        .timeout(args.rate_limit_redis_timeout)
        .build()
        .map(Store::Redis)
}

fn store_failure(text: &str) -> Result<StoreFailure, ConfigError> {
    let bad = || {
        ConfigError::new(
            "rate_limit_store_failure",
            format!("must be `open`, `closed` or `capped:<percent 1..=100>` (got {text:?})"),
        )
    };
    match text.trim() {
        "open" => Ok(StoreFailure::FailOpen),
        "closed" => Ok(StoreFailure::FailClosed {
            retry_after: Duration::from_secs(1),
        }),
        other => {
            let percent: u8 = other
                .strip_prefix("capped:")
                .and_then(|p| p.trim_end_matches('%').parse().ok())
                .filter(|p| (1..=100).contains(p))
                .ok_or_else(bad)?;
            Ok(StoreFailure::FailOpenCapped { percent })
        }
    }
}

/// The trusted proxies and the header believed from them (`None`: nobody is trusted, key by the peer). Errors name
/// the flag: a bad network (`cidr`), trusted proxies without `--rate-limit-client-ip-header`, or an unknown header.
pub fn trusted_proxies(args: &Args) -> Result<Option<TrustedProxies>, ConfigError> {
    let header = match args.rate_limit_client_ip_header.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(name) => Some(name.parse::<ForwardedHeader>().map_err(|_| {
            ConfigError::new(
                "rate_limit_client_ip_header",
                format!("must be `x-forwarded-for`, `forwarded` or `x-real-ip` (got {name:?})"),
            )
        })?),
    };
    let mut builder = TrustedProxies::builder().networks(&args.rate_limit_trusted_proxies);
    if let Some(header) = header {
        builder = builder.header(header);
    }
    let proxies = builder.build().map_err(|e| {
        if e.field() == "header" {
            ConfigError::new(
                "rate_limit_client_ip_header",
                "--rate-limit-trusted-proxies is set, so name the header those proxies write: \
                 --rate-limit-client-ip-header x-forwarded-for|forwarded|x-real-ip (no automatic choice: a header \
                 the proxies pass through untouched is written by the client)",
            )
        } else {
            e
        }
    })?;
    Ok((!proxies.cidrs().is_empty()).then_some(proxies))
}

/// Whether a path is rate limited: `/api/*` only. `/health`, `/metrics` and the dashboard (`/`, `/dashboard/*`)
/// are not, so the dashboard's rate-limit burst never refuses the page's own refreshes.
pub fn is_limited(path: &str) -> bool {
    path.starts_with("/api/") && path != "/health" && path != "/metrics"
}

/// The layer for the whole app (requests outside `/api/` are exempt). Responses keep axum's body type.
pub fn layer(args: &Args) -> Result<RateLimitLayer<Store, KeepBody>, ConfigError> {
    let quota =
        Quota::new(args.rate_limit, args.rate_limit_window)?.with_burst(args.rate_limit_burst);
    let key = match trusted_proxies(args)? {
        Some(proxies) => KeyExtractor::client_ip(proxies),
        None => KeyExtractor::peer_ip(),
    };
    RateLimitLayer::builder()
        .store(store(args)?)
        .store_failure(store_failure(&args.rate_limit_store_failure)?)
        .key(key.ipv6_prefix(args.rate_limit_ipv6_prefix)?)
        .policy(Policy::new("per-ip", quota))
        .exempt(|parts| !is_limited(parts.uri.path()))
        .dry_run(args.rate_limit_dry_run)
        .headers_on_admitted(args.rate_limit_headers)
        .build()
        .map(RateLimitLayer::keep_inner_body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{Router, body::Body, extract::ConnectInfo, http::Request, routing::get};
    use std::net::SocketAddr;
    use tower::ServiceExt;

    #[tokio::test]
    async fn api_is_limited_health_and_metrics_are_not() {
        let args = Args {
            rate_limit: NonZeroU32::new(2).unwrap(),
            rate_limit_burst: NonZeroU32::new(2).unwrap(),
            ..Args::default()
        };
        let app = Router::new()
            .route("/api/items", get(|| async { "items" }))
            .route("/health", get(|| async { "ok" }))
            .route("/metrics", get(|| async { "" }))
            .layer(layer(&args).unwrap())
            .layer(axum::Extension(ConnectInfo(SocketAddr::from((
                [192, 0, 2, 1],
                1,
            )))));
        let get = |p: &str| Request::get(p).body(Body::empty()).unwrap();
        for _ in 0..2 {
            assert_eq!(
                app.clone()
                    .oneshot(get("/api/items"))
                    .await
                    .unwrap()
                    .status(),
                200
            );
        }
        let r = app.clone().oneshot(get("/api/items")).await.unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "30");
        assert_eq!(r.headers()["ratelimit-policy"], r#""per-ip";q=2;w=60"#);
        assert_eq!(r.headers()["ratelimit"], r#""per-ip";r=0;t=30"#);
        for _ in 0..5 {
            assert_eq!(
                app.clone().oneshot(get("/health")).await.unwrap().status(),
                200
            );
            assert_eq!(
                app.clone().oneshot(get("/metrics")).await.unwrap().status(),
                200
            );
        }
    }

    #[test]
    fn dashboard_health_and_metrics_are_exempt() {
        for path in [
            "/",
            "/dashboard/app.js",
            "/dashboard/config.json",
            "/metrics",
            "/health",
        ] {
            assert!(!is_limited(path), "{path}");
        }
        for path in ["/api/items", "/api/items/1", "/api/slow"] {
            assert!(is_limited(path), "{path}");
        }
    }

    #[test]
    fn bad_flags_are_config_errors() {
        let args = Args {
            rate_limit_window: Duration::from_millis(1500),
            ..Args::default()
        };
        assert_eq!(layer(&args).unwrap_err().field(), "window");
        let args = Args {
            rate_limit_trusted_proxies: vec!["10.0.0.0/33".into()],
            ..Args::default()
        };
        assert_eq!(layer(&args).unwrap_err().field(), "cidr");
        assert!(layer(&Args::default()).is_ok());
        // Trusted proxies need a named header; an unknown name is refused.
        let args = Args {
            rate_limit_trusted_proxies: vec!["127.0.0.1/32".into()],
            ..Args::default()
        };
        let e = layer(&args).unwrap_err();
        assert_eq!(e.field(), "rate_limit_client_ip_header");
        assert!(e.reason().contains("x-forwarded-for"), "{e}");
        for bad in ["auto", "x-forwarded", "true-client-ip"] {
            let args = Args {
                rate_limit_trusted_proxies: vec!["127.0.0.1/32".into()],
                rate_limit_client_ip_header: Some(bad.into()),
                ..Args::default()
            };
            assert_eq!(
                layer(&args).unwrap_err().field(),
                "rate_limit_client_ip_header",
                "{bad}"
            );
        }
        for good in ["x-forwarded-for", "Forwarded", "x-real-ip"] {
            let args = Args {
                rate_limit_trusted_proxies: vec!["127.0.0.1/32".into(), "10.0.0.0/8".into()],
                rate_limit_client_ip_header: Some(good.into()),
                ..Args::default()
            };
            let proxies = trusted_proxies(&args).unwrap().unwrap();
            assert!(proxies.header().name().eq_ignore_ascii_case(good));
            assert!(layer(&args).is_ok(), "{good}");
        }
        // A header without proxies is harmless (nobody is trusted).
        let args = Args {
            rate_limit_client_ip_header: Some("forwarded".into()),
            ..Args::default()
        };
        assert!(trusted_proxies(&args).unwrap().is_none());
        for bad in ["", "capped:0", "capped:101", "capped:x", "shut"] {
            let args = Args {
                rate_limit_store_failure: bad.into(),
                ..Args::default()
            };
            assert_eq!(
                layer(&args).unwrap_err().field(),
                "rate_limit_store_failure",
                "{bad:?}"
            );
        }
        for good in ["open", "closed", "capped:50", "capped:25%"] {
            let args = Args {
                rate_limit_store_failure: good.into(),
                redis_url: Some("redis://127.0.0.1:1/".into()),
                ..Args::default()
            };
            assert!(layer(&args).is_ok(), "{good}");
        }
        let args = Args {
            redis_url: Some("http://nope".into()),
            ..Args::default()
        };
        assert_eq!(layer(&args).unwrap_err().field(), "url");
    }
}
