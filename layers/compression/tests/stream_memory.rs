//! The heap a compressed stream holds, counted by a counting global allocator: each open server-sent event stream
//! (events flushed one by one) of every codec stays within [`STREAM_MEMORY_BUDGET`], and closing them gives
//! everything back. zstd allocates its context through libzstd's own `malloc`, which a Rust allocator does not see:
//! its share is measured with `ZSTD_sizeof_CCtx` on a context with the stream settings, after the same events.
//!
//! One test in this file: the allocator counts every thread, so nothing else may run beside it.

use bytes::Bytes;
use http::{Request, Response, header};
use http_body::{Body, Frame};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::{
    alloc::System,
    convert::Infallible,
    io::Write,
    pin::Pin,
    task::{Context, Poll, Waker},
};
use tower::{Layer, ServiceExt, service_fn};
use tower_kit_compression::{
    CompressionBody, CompressionLayer, STREAM_MEMORY_BUDGET, ZSTD_STREAM_LEVEL,
    ZSTD_STREAM_TABLE_LOG, ZSTD_STREAM_WINDOW_LOG,
};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// A server-sent event source: `ready` events are available at once, then it waits forever (a long-lived stream).
#[derive(Debug)]
struct Events {
    next: u32,
    ready: u32,
}

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.next == self.ready {
            return Poll::Pending;
        }
        let n = self.next;
        self.next += 1;
        let event = format!(
            "id: {n}\nevent: tick\ndata: {{\"n\":{n},\"message\":\"event {n} of a compressed server-sent event stream\",\"at\":{}}}\n\n",
            u64::from(n).wrapping_mul(2_654_435_761) % 100_000
        );
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))))
    }
}

/// Opens one compressed event stream and reads every event available (so the compressor has seen data, flushed,
/// and holds its full state).
async fn open(
    layer: &CompressionLayer,
    coding: &'static str,
    events: u32,
) -> (CompressionBody<Events>, usize) {
    let service = layer.layer(service_fn(move |_req: Request<()>| async move {
        let mut response = Response::new(Events {
            next: 0,
            ready: events,
        });
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        Ok::<_, Infallible>(response)
    }));
    let request = Request::get("/events")
        .header(header::ACCEPT_ENCODING, coding)
        .body(())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.headers()[header::CONTENT_ENCODING], coding);
    let mut body = response.into_body();
    assert!(body.is_stream());
    let mut sent = 0;
    let mut cx = Context::from_waker(Waker::noop());
    while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
        sent += frame.unwrap().into_data().unwrap().len();
    }
    (body, sent)
}

/// Net heap bytes allocated and still held since `region` began.
fn held(region: &Region<'_, System>) -> isize {
    let change = region.change();
    change.bytes_allocated as isize - change.bytes_deallocated as isize + change.bytes_reallocated
}

/// What libzstd holds for one stream context with the layer's stream settings, after `events` flushed events.
fn zstd_context_bytes(events: u32) -> usize {
    use zstd::zstd_safe::{CCtx, CParameter, InBuffer, OutBuffer, zstd_sys::ZSTD_EndDirective};
    let mut cctx = CCtx::create();
    cctx.set_parameter(CParameter::CompressionLevel(ZSTD_STREAM_LEVEL))
        .unwrap();
    cctx.set_parameter(CParameter::WindowLog(ZSTD_STREAM_WINDOW_LOG))
        .unwrap();
    cctx.set_parameter(CParameter::HashLog(ZSTD_STREAM_TABLE_LOG))
        .unwrap();
    cctx.set_parameter(CParameter::ChainLog(ZSTD_STREAM_TABLE_LOG))
        .unwrap();
    let mut out = vec![0u8; 64 * 1024];
    for n in 0..events {
        let event = format!("id: {n}\ndata: {{\"n\":{n},\"message\":\"event {n}\"}}\n\n");
        let mut input = InBuffer::around(event.as_bytes());
        let mut output = OutBuffer::around(&mut out[..]);
        cctx.compress_stream2(&mut output, &mut input, ZSTD_EndDirective::ZSTD_e_flush)
            .unwrap();
    }
    cctx.sizeof()
}

#[test]
fn each_open_stream_holds_at_most_the_budget() {
    const STREAMS: usize = 100;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let layer = CompressionLayer::new();
        for coding in ["gzip", "deflate", "br", "zstd"] {
            // Warm up: per-thread buffers, lazily built statics and the runtime's own structures.
            for _ in 0..3 {
                drop(open(&layer, coding, 20).await);
            }

            let region = Region::new(GLOBAL);
            let mut open_streams = Vec::with_capacity(STREAMS);
            let before_streams = held(&region);
            let mut bytes_sent = 0;
            for _ in 0..STREAMS {
                let (body, sent) = open(&layer, coding, 20).await;
                assert!(sent > 0, "{coding}: events were compressed and flushed");
                bytes_sent += sent;
                open_streams.push(body);
            }
            let rust_heap = (held(&region) - before_streams) as usize / STREAMS;
            let outside = if coding == "zstd" {
                zstd_context_bytes(20)
            } else {
                0
            };
            let per_stream = rust_heap + outside;
            eprintln!(
                "{STREAMS} open {coding} event streams: {per_stream} heap bytes each ({rust_heap} through the Rust \
                 allocator, {outside} in libzstd; {bytes_sent} compressed bytes sent)"
            );
            assert!(
                per_stream <= STREAM_MEMORY_BUDGET,
                "{coding}: {per_stream} bytes per stream, over the {STREAM_MEMORY_BUDGET}-byte budget"
            );
            // Not a trivially small figure: the compressor's state is really counted (Brotli at quality 1 keeps
            // little: no window history across flushes, see BR_STREAM_QUALITY).
            let floor = if coding == "br" { 4 * 1024 } else { 64 * 1024 };
            assert!(per_stream > floor, "{coding}: {per_stream} bytes per stream");

            drop(open_streams);
            let after = held(&region);
            assert!(
                after < 64 * 1024,
                "{coding}: {after} bytes still held after every stream was dropped"
            );
        }

        // The measurement catches a compressor at zlib's defaults (32 KiB window, memory level 8).
        let region = Region::new(GLOBAL);
        let mut encoders = Vec::new();
        for _ in 0..16 {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(7));
            encoder.write_all(b"data: one event\n\n").unwrap();
            encoder.flush().unwrap();
            encoders.push(encoder);
        }
        let default_per_stream = held(&region) as usize / 16;
        eprintln!("flate2 GzEncoder at zlib's defaults: {default_per_stream} heap bytes each");
        assert!(default_per_stream > STREAM_MEMORY_BUDGET);
        // And a Brotli stream at its default window (4 MiB) and tower-http's quality 4.
        let region = Region::new(GLOBAL);
        let mut encoder = brotli::CompressorWriter::new(Vec::new(), 4096, 4, 22);
        encoder.write_all(b"data: one event\n\n").unwrap();
        encoder.flush().unwrap();
        let br_default = held(&region) as usize;
        eprintln!("brotli CompressorWriter at quality 4, lgwin 22: {br_default} heap bytes");
        drop(encoder);
        eprintln!(
            "libzstd context at level 3 without window and table caps: {} bytes",
            {
                let mut cctx = zstd::zstd_safe::CCtx::create();
                cctx.set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(3))
                    .unwrap();
                let mut out = vec![0u8; 1024];
                let mut input = zstd::zstd_safe::InBuffer::around(b"data: one event\n\n");
                let mut output = zstd::zstd_safe::OutBuffer::around(&mut out[..]);
                cctx.compress_stream2(
                    &mut output,
                    &mut input,
                    zstd::zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_flush,
                )
                .unwrap();
                cctx.sizeof()
            }
        );
    });
}
