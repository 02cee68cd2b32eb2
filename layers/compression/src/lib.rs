//! Response compression for Tower, negotiated per request among gzip, deflate, Brotli and zstd: streams flushed,
//! validators kept honest, big bodies moved off the async workers, and request bodies of every coding decoded with a
//! size cap.
//!
//! [`CompressionLayer`] picks the coding per request (RFC 9110 §12.5.3 `Accept-Encoding`: q-values, `*`,
//! `identity;q=0`, unknown codings ignored; ties go to the server's preference, zstd, br, gzip, deflate by default;
//! [`CompressionLayer::choose`] tells other code which variant a request gets) and compresses a response when it is
//! worth it:
//!
//! - no `Content-Encoding` yet, not a HEAD request, status not 1xx, 204, 206 or 304, no `Content-Range`, no
//!   `Cache-Control: no-transform` (switchable);
//! - an allowed content type: text/*, JSON and `+json`, JavaScript, XML and `+xml`, SVG, wasm, NDJSON, SSE; the
//!   denylist (other images, audio, video, compressed fonts, archives) wins, and gRPC is never compressed;
//! - at least `min_size` bytes (1000 by default). A body of unknown length is buffered up to `min_size`: if it ends
//!   first it is sent as it is, with an exact `Content-Length`;
//! - and a user predicate, which sees the request head and the response head, agrees.
//!
//! A body whose length is known and at most `max_buffered` (1 MiB) is compressed in one shot (libdeflate for gzip
//! and deflate, zstd with its window at most the body, Brotli with its window sized to the body; compressors, zstd
//! contexts and Brotli hash tables reused through a small bounded pool) and sent with an exact `Content-Length`, or as it is when compression would not
//! make it smaller. A larger or streamed body is compressed frame by frame; server-sent events and NDJSON are
//! flushed after every frame with the codec's own flush, so each event reaches the client when it is sent; other
//! streams are flushed when their source goes idle. A stream's compressor holds at most [`STREAM_MEMORY_BUDGET`]
//! (256 KiB): gzip and deflate about 224 KiB (16 KiB window, memory level 6), zstd about 197 KiB (16 KiB window),
//! Brotli about 7 KiB (quality 0, the only quality that fits; streams prefer the client's other codings). Big bodies
//! and frames are compressed on tokio's blocking pool. A compressed response gets its `Content-Encoding`, a weak
//! `ETag`, no `Accept-Ranges`, and `Vary: Accept-Encoding` merged into its `Vary` (which is set on every response
//! whose encoding depended on the request, compressed or not).
//!
//! [`RequestDecompressionLayer`] decodes `Content-Encoding` gzip, deflate (zlib, or raw deflate), br and zstd
//! request bodies, stacked codings undone in reverse of the order listed, before the inner service runs, up to a
//! cap (10 MiB): over it `413` (memory bounded: a zstd window is at most 8 MB), corrupt or truncated `400`, other
//! codings `415` with an `Accept-Encoding` listing those decoded. A request without a body (`GET /health` with a
//! `Content-Encoding` header) passes through untouched, whatever its coding.
//!
//! # Cargo features
//!
//! `gzip`, `deflate`, `br`, `zstd`: one per codec, all on by default. A layer built without a codec never offers
//! or accepts it.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, header};
//! use http_body_util::{BodyExt, Full};
//! use std::convert::Infallible;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_kit_compression::{Coding, CompressionLayer};
//!
//! # #[cfg(not(feature = "zstd"))] fn main() {}
//! # #[cfg(feature = "zstd")]
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let json = format!("[{}]", vec![r#"{"id":1,"name":"widget"}"#; 200].join(","));
//! let layer = CompressionLayer::new();
//! let service = ServiceBuilder::new().layer(layer.clone()).service(service_fn(move |_req| {
//!     let json = json.clone();
//!     async move {
//!         let response = Response::builder()
//!             .header(header::CONTENT_TYPE, "application/json")
//!             .body(Full::new(Bytes::from(json)))
//!             .unwrap();
//!         Ok::<_, Infallible>(response)
//!     }
//! }));
//!
//! let request = Request::get("/items").header(header::ACCEPT_ENCODING, "gzip, br, zstd").body(()).unwrap();
//! assert_eq!(layer.choose(request.headers()), Some(Coding::Zstd));
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.headers()[header::CONTENT_ENCODING], "zstd");
//! assert_eq!(response.headers()[header::VARY], "accept-encoding");
//! let length: usize = response.headers()[header::CONTENT_LENGTH].to_str().unwrap().parse().unwrap();
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(body.len(), length);
//!
//! let json = zstd::decode_all(&body[..]).unwrap();
//! assert!(json.starts_with(br#"[{"id":1"#));
//! # }
//! ```
//!
//! # Metrics
//!
//! Through the `metrics` facade: [`metrics::COMPRESSED`], [`metrics::SKIPPED`] (label `reason`),
//! [`metrics::BYTES_IN`] and [`metrics::BYTES_OUT`] (labels `coding` and `engine`), [`metrics::REQUESTS_DECODED`]
//! (label `outcome`). The one-shot path adds `<coding>;dur=<ms>` (`zstd;dur=0.1`) to the request's
//! [`ServerTiming`](tower_kit_core::ServerTiming) when a layer outside put one there.
//!
//! # Compared with tower-http's `CompressionLayer`
//!
//! tower-http compresses every body of unknown size, never flushes a stream (SSE stalls), builds a streaming
//! encoder for every response however small, holds megabytes per zstd or Brotli stream, leaves strong `ETag`s
//! strong, ignores `no-transform`, compresses HEAD/304 answers, has a denylist only, and its predicate does not see
//! the request. This layer does all of that differently: see the book's compression chapter.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod codec;
mod engine;
mod future;
mod layer;
pub mod metrics;
mod negotiate;
mod policy;
mod request;
mod service;

pub use body::{BoxError, CompressionBody};
pub use codec::{Coding, DEFAULT_PREFERENCE};
pub use engine::{
    BR_STREAM_LGWIN, BR_STREAM_QUALITY, STREAM_MEM_LEVEL, STREAM_MEMORY_BUDGET, STREAM_WINDOW_BITS,
    ZSTD_STREAM_LEVEL, ZSTD_STREAM_TABLE_LOG, ZSTD_STREAM_WINDOW_LOG,
};
pub use future::ResponseFuture;
pub use layer::{
    CompressionLayer, CompressionLayerBuilder, DEFAULT_BR_LEVEL, DEFAULT_DEFLATE_LEVEL,
    DEFAULT_GZIP_LEVEL, DEFAULT_IDLE_FLUSH, DEFAULT_MAX_BUFFERED, DEFAULT_MIN_SIZE,
    DEFAULT_OFFLOAD_THRESHOLD, DEFAULT_STREAM_LEVEL, DEFAULT_ZSTD_LEVEL, RequestHead,
};
pub use negotiate::choose_coding;
pub use policy::SkipReason;
pub use request::{
    DEFAULT_MAX_DECODED, DecodedBody, RequestDecompression, RequestDecompressionLayer,
    RequestDecompressionLayerBuilder, RequestFuture,
};
pub use service::Compression;
