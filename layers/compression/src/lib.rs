//! Gzip for Tower: response compression that flushes streams, keeps validators honest and moves big bodies off the
//! async workers, plus request-body decoding with a size cap.
//!
//! [`CompressionLayer`] compresses a response when the client accepts gzip (RFC 9110 `Accept-Encoding`, with q-values,
//! `*`, `identity;q=0` and `x-gzip`) and the response is worth it:
//!
//! - no `Content-Encoding` yet, not a HEAD request, status not 1xx, 204, 206 or 304, no `Content-Range`, no
//!   `Cache-Control: no-transform` (switchable);
//! - an allowed content type: text/*, JSON and `+json`, JavaScript, XML and `+xml`, SVG, wasm, NDJSON, SSE; the
//!   denylist (other images, audio, video, compressed fonts, archives) wins, and gRPC is never compressed;
//! - at least `min_size` bytes (1000 by default). A body of unknown length is buffered up to `min_size`: if it ends
//!   first it is sent as it is, with an exact `Content-Length`;
//! - and a user predicate, which sees the request head and the response head, agrees.
//!
//! Two engines: a body whose length is known and at most `max_buffered` (1 MiB) is compressed in one shot with
//! libdeflate and sent with an exact `Content-Length`; a larger or streamed body goes through flate2's zlib-rs
//! backend frame by frame. Server-sent events and NDJSON are sync-flushed after every frame, so each event reaches
//! the client when it is sent; other streams are flushed when their source goes idle. A stream's compressor holds at most
//! [`STREAM_MEMORY_BUDGET`] (256 KiB; about 220 KiB with its 16 KiB window and memory level 6), so thousands of open
//! event streams cost a known amount of memory. Big bodies and frames are
//! compressed on tokio's blocking pool. A compressed response gets `Content-Encoding: gzip`, a weak `ETag`, no
//! `Accept-Ranges`, and `Vary: Accept-Encoding` merged into its `Vary` (which is set on every response whose
//! encoding depended on the request, compressed or not).
//!
//! [`RequestDecompressionLayer`] decodes `Content-Encoding: gzip` request bodies (every member) before the inner service
//! runs, up to a cap (10 MiB): over it `413`, corrupt or truncated `400`, other codings `415`. A request without a
//! body (`GET /health` with a `Content-Encoding` header) passes through untouched, whatever its coding.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, header};
//! use http_body_util::{BodyExt, Full};
//! use std::{convert::Infallible, io::Read};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_kit_compression::CompressionLayer;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let json = format!("[{}]", vec![r#"{"id":1,"name":"widget"}"#; 200].join(","));
//! let service = ServiceBuilder::new().layer(CompressionLayer::new()).service(service_fn(move |_req| {
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
//! let request = Request::get("/items").header(header::ACCEPT_ENCODING, "gzip, br").body(()).unwrap();
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
//! assert_eq!(response.headers()[header::VARY], "accept-encoding");
//! let length: usize = response.headers()[header::CONTENT_LENGTH].to_str().unwrap().parse().unwrap();
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(body.len(), length);
//!
//! let mut json = String::new();
//! flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut json).unwrap();
//! assert!(json.starts_with(r#"[{"id":1"#));
//! # }
//! ```
//!
//! # Metrics
//!
//! Through the `metrics` facade: [`metrics::COMPRESSED`], [`metrics::SKIPPED`] (label `reason`),
//! [`metrics::BYTES_IN`] and [`metrics::BYTES_OUT`] (label `engine`), [`metrics::REQUESTS_DECODED`] (label
//! `outcome`). The one-shot path adds `gzip;dur=<ms>` to the request's
//! [`ServerTiming`](tower_kit_core::ServerTiming) when a layer outside put one there.
//!
//! # Compared with tower-http's `CompressionLayer`
//!
//! tower-http compresses every body of unknown size, never flushes a stream (SSE stalls), leaves strong `ETag`s
//! strong, ignores `no-transform`, compresses HEAD/304 answers, has a denylist only, and its predicate does not see
//! the request. This layer does all of that differently, and compresses faster: see the book's gzip chapter.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod body;
mod engine;
mod future;
mod layer;
pub mod metrics;
mod negotiate;
mod policy;
mod request;
mod service;

pub use body::{BoxError, CompressionBody};
pub use engine::{STREAM_MEM_LEVEL, STREAM_MEMORY_BUDGET, STREAM_WINDOW_BITS};
pub use future::ResponseFuture;
pub use layer::{
    CompressionLayer, CompressionLayerBuilder, DEFAULT_IDLE_FLUSH, DEFAULT_LEVEL,
    DEFAULT_MAX_BUFFERED, DEFAULT_MIN_SIZE, DEFAULT_OFFLOAD_THRESHOLD, DEFAULT_STREAM_LEVEL,
    RequestHead,
};
pub use policy::SkipReason;
pub use request::{
    DEFAULT_MAX_DECODED, DecodedBody, RequestDecompression, RequestDecompressionLayer,
    RequestDecompressionLayerBuilder, RequestFuture,
};
pub use service::Compression;
