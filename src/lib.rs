//! # tower-kit
//!
//! Production-grade [Tower](https://docs.rs/tower) middleware, one crate and one `Layer` each, re-exported here
//! behind a cargo feature of the same name:
//!
//! | feature | module | layer |
//! |---|---|---|
//! | `batch` | [`batch`] | `BatchLayer`: many concurrent calls into one backend call, per-item results |
//! | `cache` | [`cache`] | `CacheLayer`: RFC 9111 shared cache, coalescing, invalidation handle |
//! | `concurrency` | [`concurrency`] | `ConcurrencyLayer`: a limit with a bounded queue, 503 + `Retry-After` |
//! | `compression` (alias `gzip`) | [`compression`] | `CompressionLayer`, `RequestDecompressionLayer`: gzip, deflate, Brotli and zstd negotiated per request, streams flushed, validators kept right |
//! | `ratelimit` | [`ratelimit`] | `RateLimitLayer`: keyed GCRA, 429 + `Retry-After` and `RateLimit` headers |
//! | `timing` | [`timing`] | `TimingLayer`: OpenTelemetry-named metrics, Server-Timing, slow-request log, stats |
//!
//! [`core`] (always on) holds what the layers share: the `Server-Timing` context, the end-of-body observer, client
//! addresses and gRPC refusals.
//!
//! Every layer follows the same rules: policy decisions are responses (429, 503 with `Retry-After`), never errors,
//! so axum needs no `HandleErrorLayer`; shared state (limits, caches, label registries) is created with the layer
//! value, so one layer on an axum router is one limit or one cache for all its routes; and whatever tracks a request
//! lives until the response body ends or is dropped.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use tower_kit_core as core;

#[cfg(feature = "batch")]
#[cfg_attr(docsrs, doc(cfg(feature = "batch")))]
pub use tower_kit_batch as batch;

#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub use tower_kit_cache as cache;

#[cfg(feature = "concurrency")]
#[cfg_attr(docsrs, doc(cfg(feature = "concurrency")))]
pub use tower_kit_concurrency as concurrency;

#[cfg(feature = "compression")]
#[cfg_attr(docsrs, doc(cfg(feature = "compression")))]
pub use tower_kit_compression as compression;

#[cfg(feature = "ratelimit")]
#[cfg_attr(docsrs, doc(cfg(feature = "ratelimit")))]
pub use tower_kit_ratelimit as ratelimit;

#[cfg(feature = "serve")]
#[cfg_attr(docsrs, doc(cfg(feature = "serve")))]
pub mod serve;

#[cfg(feature = "timing")]
#[cfg_attr(docsrs, doc(cfg(feature = "timing")))]
pub use tower_kit_timing as timing;

/// The README's code blocks, compiled and run as doctests.
#[cfg(all(doctest, feature = "full"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The book's chapters: every ```rust block compiles (and runs, unless `no_run`) against this facade.
#[cfg(all(doctest, feature = "full"))]
mod book {
    #[doc = include_str!("../book/src/introduction.md")]
    pub struct Introduction;
    #[doc = include_str!("../book/src/quick-start.md")]
    pub struct QuickStart;
    #[doc = include_str!("../book/src/composing.md")]
    pub struct Composing;
    #[doc = include_str!("../book/src/timing.md")]
    pub struct Timing;
    #[doc = include_str!("../book/src/compression.md")]
    pub struct Compression;
    #[doc = include_str!("../book/src/concurrency.md")]
    pub struct Concurrency;
    #[doc = include_str!("../book/src/ratelimit.md")]
    pub struct Ratelimit;
    #[doc = include_str!("../book/src/cache.md")]
    pub struct Cache;
    #[doc = include_str!("../book/src/batch.md")]
    pub struct Batch;
    #[doc = include_str!("../book/src/scaling-out.md")]
    pub struct ScalingOut;
    #[doc = include_str!("../book/src/operations.md")]
    pub struct Operations;
    #[doc = include_str!("../book/src/coming-from.md")]
    pub struct ComingFrom;
    #[doc = include_str!("../book/src/benchmarks.md")]
    pub struct Benchmarks;
}
