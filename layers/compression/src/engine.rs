//! The compression engines behind one small interface: [`oneshot`] for bodies of known size (libdeflate for gzip
//! and deflate, zstd with its window at most the body, Brotli with its window sized to the body) and [`StreamEncoder`]
//! for streams (zlib-rs, zstd and Brotli with bounded windows, see [`STREAM_MEMORY_BUDGET`]). One-shot compressors
//! are reused through a small bounded pool, not cached per thread: tokio's blocking pool can have hundreds of
//! threads.

use crate::codec::Coding;
use bytes::Bytes;
use flate2::{Compression, write::GzEncoder};
use std::{
    cell::RefCell,
    fmt,
    io::Write,
    sync::{Mutex, PoisonError},
};
use zlib_rs::{DeflateConfig, DeflateFlush, Method, Status, Strategy};

/// The highest libdeflate level (slow; 10 to 12 are the "optimal parsing" levels).
pub(crate) const MAX_ONESHOT_LEVEL: u32 = 12;

/// The most heap one streaming compressor may hold, in bytes: 256 KiB.
///
/// A rule for every codec: what a codec keeps for one long-lived compressed stream (window, hash tables, symbol and
/// pending buffers, and the body wrapper around them) fits in this budget, so memory grows with open streams at a
/// known, small rate (4,000 open server-sent event streams: at most 1 GiB). The test `tests/stream_memory.rs` opens
/// streams of every codec and holds each to it. Bodies compressed in one shot are not streams: their compressors
/// come from a bounded pool and are reused.
pub const STREAM_MEMORY_BUDGET: usize = 256 * 1024;

/// The deflate window of gzip and deflate streams, as a power of two: 2^14 = 16 KiB (zlib's default is 32 KiB).
///
/// zlib-rs allocates, per compressor, twice the window for the sliding window, twice the window for the hash
/// chains, a fixed 128 KiB hash head table, `7 × 2^(mem_level + 6)` bytes of symbol and pending buffers, and a small
/// fixed state: with 16 KiB and [`STREAM_MEM_LEVEL`] 6 that is about 220 KiB, where zlib's defaults (32 KiB, 8) take
/// about 370 KiB. On the benchmark JSON (16 KiB frames) the output is 0 to 0.9% larger than at the defaults, and no
/// larger on server-sent events; an 8 KiB window with memory level 7 (the same memory) costs up to 3.9%.
pub const STREAM_WINDOW_BITS: u8 = 14;

/// The zlib memory level of gzip and deflate streams (1 to 9; zlib's default is 8). 6 quarters the symbol and
/// pending buffers (a block holds at most 4,096 symbols), which matters little for streams that are flushed often.
pub const STREAM_MEM_LEVEL: u8 = 6;

/// The zstd window of streams, as a power of two: 2^14 = 16 KiB.
///
/// A zstd stream context holds the window plus a block of input (a block is at most the window), an output block,
/// the hash and chain tables and the sequence store; with the tables capped at 2^[`ZSTD_STREAM_TABLE_LOG`] entries
/// the context is 197 KiB after flushed events (`ZSTD_sizeof_CCtx`, `tests/stream_memory.rs`); a 32 KiB window
/// makes it 305 KiB, over [`STREAM_MEMORY_BUDGET`]; level 3 without caps (tower-http's zstd stream) 3.5 MiB.
pub const ZSTD_STREAM_WINDOW_LOG: u32 = 14;

/// The log2 of the hash and chain table sizes of zstd streams (4 bytes an entry).
pub const ZSTD_STREAM_TABLE_LOG: u32 = 13;

/// The zstd level of streams (the window and tables are capped whatever the level).
pub const ZSTD_STREAM_LEVEL: i32 = 3;

/// The Brotli window of streams, as a power of two: 2^16 = 64 KiB (Brotli's default is 4 MiB).
pub const BR_STREAM_LGWIN: u32 = 16;

/// The Brotli quality of streams: 0, the highest that fits [`STREAM_MEMORY_BUDGET`] and gives its memory back.
///
/// Measured with the `brotli` crate 9.1 (held after 20 flushed events): qualities 0 and 1 hold about 1 to 9 KiB,
/// qualities 2 and 3 hold 307 KiB at any window up to 16 KiB (their hash table alone is 2^16 four-byte buckets, 256
/// KiB) and 403 KiB at 64 KiB, quality 4 holds 707 KiB, qualities 5 and up 1.6 to 33 MiB. Quality 1 leaves about 2
/// KiB per stream allocated after the stream is dropped (the crate's two-pass fast path), so streams use 0. Qualities
/// 0 and 1 keep no history across flushes, so flushed event streams compress about 4× worse than gzip: the layer
/// therefore prefers any other coding the client accepts for streams, and uses Brotli for a stream only when the
/// client accepts nothing else.
pub const BR_STREAM_QUALITY: u32 = 0;

/// The most compressors of one codec kept for reuse. More concurrent compressions make their own, dropped after use.
const POOL_CAP: usize = 16;

/// Output is produced through a per-thread scratch buffer of this size and copied out at its exact length, so a
/// stream keeps no output buffer between frames and hands out no oversized one.
const SCRATCH: usize = 16 * 1024;

thread_local! {
    /// The streaming compressors' output scratch (see [`SCRATCH`]).
    static STREAM_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A bounded pool of compressors keyed by level.
struct Pool<T> {
    slots: Mutex<Vec<(i32, T)>>,
    cap: usize,
}

impl<T> Pool<T> {
    const fn new() -> Self {
        Self::with_cap(POOL_CAP)
    }

    /// A pool that keeps at most `cap` items.
    const fn with_cap(cap: usize) -> Self {
        Self {
            slots: Mutex::new(Vec::new()),
            cap,
        }
    }

    fn take(&self, level: i32) -> Option<T> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let index = slots.iter().rposition(|(l, _)| *l == level)?;
        Some(slots.swap_remove(index).1)
    }

    fn put(&self, level: i32, item: T) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.len() < self.cap {
            slots.push((level, item));
        }
    }
}

static LIBDEFLATE: Pool<libdeflater::Compressor> = Pool::new();
#[cfg(feature = "zstd")]
static ZSTD: Pool<ZstdSlot> = Pool::new();

/// A pooled zstd context and the output buffer it compresses large bodies into.
#[cfg(feature = "zstd")]
struct ZstdSlot {
    compressor: zstd::bulk::Compressor<'static>,
    scratch: Vec<u8>,
}

/// Bodies from this size are compressed into the pooled output buffer and copied out at their exact size: a fresh
/// buffer of the bound's size (about the body's) is new memory for every response, whose pages the allocator may
/// have to fault in again each time (glibc does, for buffers over its 128 KiB `mmap` threshold).
#[cfg_attr(not(feature = "zstd"), allow(dead_code))]
const ZSTD_SCRATCH_FROM: usize = 128 * 1024;

/// The largest pooled output buffer kept (bound of a 2 MiB body); larger ones are dropped after use, so the pool's
/// buffers stay under 16 × 2 MiB.
#[cfg_attr(not(feature = "zstd"), allow(dead_code))]
const ZSTD_SCRATCH_MAX: usize = 2 * 1024 * 1024 + 64 * 1024;

/// Whether a buffer of `capacity` bytes holding `len` is worth copying out at its exact size: more than 1/8 (and
/// more than 1 KiB) of it would be wasted.
pub(crate) fn is_oversized(len: usize, capacity: usize) -> bool {
    let waste = capacity - len.min(capacity);
    waste > 1024 && waste > len / 8
}

/// Compresses `input` in one shot with `coding` at `level` (in the codec's own scale). The result's capacity is
/// close to its length, so a cache that keeps it keeps no slack.
pub(crate) fn oneshot(coding: Coding, input: &[u8], level: u32) -> Vec<u8> {
    match coding {
        Coding::Gzip | Coding::Deflate => libdeflate_oneshot(coding, input, level),
        Coding::Br => br_oneshot(input, level),
        Coding::Zstd => zstd_oneshot(input, level),
    }
}

/// Gzip in one shot (kept for callers that only speak gzip).
#[cfg(test)]
pub(crate) fn gzip_oneshot(input: &[u8], level: u32) -> Vec<u8> {
    oneshot(Coding::Gzip, input, level)
}

fn libdeflate_oneshot(coding: Coding, input: &[u8], level: u32) -> Vec<u8> {
    let level = level.clamp(1, MAX_ONESHOT_LEVEL) as i32;
    let compressor = LIBDEFLATE.take(level).or_else(|| {
        libdeflater::CompressionLvl::new(level)
            .ok()
            .map(libdeflater::Compressor::new)
    });
    let compressed = compressor.and_then(|mut compressor| {
        let result = if coding == Coding::Gzip {
            let mut out = vec![0; compressor.gzip_compress_bound(input.len())];
            compressor
                .gzip_compress(input, &mut out)
                .ok()
                .map(|n| exact(out, n))
        } else {
            let mut out = vec![0; compressor.zlib_compress_bound(input.len())];
            compressor
                .zlib_compress(input, &mut out)
                .ok()
                .map(|n| exact(out, n))
        };
        LIBDEFLATE.put(level, compressor);
        result
    });
    // libdeflate cannot fail with a buffer of the bound's size; stay total anyway.
    compressed.unwrap_or_else(|| {
        let level = Compression::new((level as u32).min(9));
        let out = if coding == Coding::Gzip {
            let mut encoder = GzEncoder::new(Vec::with_capacity(input.len() / 4 + 64), level);
            let _ = encoder.write_all(input);
            encoder.finish().unwrap_or_default()
        } else {
            let mut encoder =
                flate2::write::ZlibEncoder::new(Vec::with_capacity(input.len() / 4 + 64), level);
            let _ = encoder.write_all(input);
            encoder.finish().unwrap_or_default()
        };
        let n = out.len();
        exact(out, n)
    })
}

/// The log of the smallest power of two that holds `len` bytes, at least 10 (Brotli's and zstd's least window).
#[cfg_attr(not(any(feature = "br", feature = "zstd")), allow(dead_code))]
fn window_log_for(len: usize) -> u32 {
    let bits = usize::BITS - len.saturating_sub(1).leading_zeros();
    bits.max(10)
}

/// The Brotli window for a body of `len` bytes: the smallest power of two that holds it, 2^10 to 2^22.
#[cfg_attr(not(feature = "br"), allow(dead_code))]
pub(crate) fn br_window_for(len: usize) -> u32 {
    window_log_for(len).min(22)
}

/// Brotli hash tables kept for reuse, keyed by [`br_hasher_key`]. A Brotli encoder cannot be reset, but its hasher
/// (at quality 4, a 512 KiB table) can be carried from one body to the next: the encoder prepares a reused hasher
/// itself, zeroing only the buckets the input touches when the whole body is given at once and is at most 1/128 of
/// the table (4 KiB at quality 4), and the whole table otherwise. A new encoder allocates and zeroes the whole table
/// for every body, which at 2 KiB is most of its time.
#[cfg(feature = "br")]
static BR_HASHERS: Pool<brotli::enc::backward_references::UnionHasher<brotli::enc::StandardAlloc>> =
    Pool::new();

/// The 4 MiB tables of quality 4 from 1 MiB ([`BR_LARGE_KEY`]), kept apart and at most [`BR_LARGE_CAP`] of them, so
/// the Brotli tables kept stay under 16 × 512 KiB + 2 × 4 MiB = 16 MiB.
#[cfg(feature = "br")]
static BR_LARGE_HASHERS: Pool<
    brotli::enc::backward_references::UnionHasher<brotli::enc::StandardAlloc>,
> = Pool::with_cap(BR_LARGE_CAP);

/// The pool key of quality 4's larger table (the `brotli` crate's hasher 54, for bodies from 1 MiB).
const BR_LARGE_KEY: i32 = 54;

/// The most 4 MiB Brotli tables kept.
#[cfg_attr(not(feature = "br"), allow(dead_code))]
const BR_LARGE_CAP: usize = 2;

/// The pool that keeps the tables of `key`.
#[cfg(feature = "br")]
fn br_pool(
    key: i32,
) -> &'static Pool<brotli::enc::backward_references::UnionHasher<brotli::enc::StandardAlloc>> {
    if key == BR_LARGE_KEY {
        &BR_LARGE_HASHERS
    } else {
        &BR_HASHERS
    }
}

/// The pool key of the hasher the `brotli` crate picks for `quality` and a body of `len` bytes, or `None` where the
/// hasher is not reused: qualities 0 and 1 have none, and from 5 the hasher depends on the window. Qualities 2 to 4
/// use one table per quality (256 or 512 KiB), whatever the window; quality 4 from 1 MiB uses a 4 MiB table
/// ([`BR_LARGE_KEY`]), kept in a smaller pool.
#[cfg_attr(not(feature = "br"), allow(dead_code))]
pub(crate) fn br_hasher_key(quality: u32, len: usize) -> Option<i32> {
    match quality {
        2 | 3 => Some(quality as i32),
        4 if len >= 1 << 20 => Some(BR_LARGE_KEY),
        4 => Some(4),
        _ => None,
    }
}

#[cfg(feature = "br")]
fn br_oneshot(input: &[u8], level: u32) -> Vec<u8> {
    use brotli::enc::{
        StandardAlloc,
        backward_references::{AnyHasher, UnionHasher},
        encode::{
            BrotliEncoderMaxCompressedSize, BrotliEncoderOperation, BrotliEncoderStateStruct,
        },
    };
    let quality = level.min(11);
    let mut state = BrotliEncoderStateStruct::new(StandardAlloc::default());
    state.params = brotli::enc::BrotliEncoderParams {
        quality: quality as i32,
        lgwin: br_window_for(input.len()) as i32,
        size_hint: input.len(),
        ..Default::default()
    };
    let key = br_hasher_key(quality, input.len());
    if let Some(mut hasher) = key.and_then(|key| br_pool(key).take(key)) {
        // Not prepared: the encoder zeroes what this body needs before it is used.
        hasher.GetHasherCommon().is_prepared_ = 0;
        state.hasher_ = hasher;
    }
    // The whole body with the finishing operation: one pass, and the encoder knows it is given everything at once.
    // The output buffer starts at a quarter of the body (JSON and HTML compress 4 to 10 times) and doubles when
    // full, up to the bound: zeroing a buffer of the bound's size would cost as much as the body again.
    let bound = BrotliEncoderMaxCompressedSize(input.len()).max(64);
    let mut out = vec![0; bound.min(input.len() / 4 + 1024)];
    let (mut in_offset, mut out_offset) = (0, 0);
    loop {
        let (mut available_in, mut available_out) =
            (input.len() - in_offset, out.len() - out_offset);
        let ok = state.compress_stream(
            BrotliEncoderOperation::BROTLI_OPERATION_FINISH,
            &mut available_in,
            input,
            &mut in_offset,
            &mut available_out,
            &mut out,
            &mut out_offset,
            &mut None,
            &mut |_, _, _, _| (),
        );
        if !ok {
            // Cannot happen with a valid quality and window; stay total: send the body as it is (not smaller).
            return input.to_vec();
        }
        if state.is_finished() {
            break;
        }
        if out_offset < out.len() && available_out > 0 {
            // Neither finished nor out of room: cannot happen; stay total.
            return input.to_vec();
        }
        if out.len() >= 2 * bound {
            // Past twice the bound: cannot happen; stay total.
            return input.to_vec();
        }
        let grown = (out.len() * 2).min(2 * bound);
        out.resize(grown, 0);
    }
    if let Some(key) = key {
        let hasher = std::mem::take(&mut state.hasher_);
        if !matches!(hasher, UnionHasher::Uninit) {
            br_pool(key).put(key, hasher);
        }
    }
    exact(out, out_offset)
}

#[cfg(not(feature = "br"))]
fn br_oneshot(input: &[u8], _level: u32) -> Vec<u8> {
    input.to_vec()
}

#[cfg(feature = "zstd")]
fn zstd_oneshot(input: &[u8], level: u32) -> Vec<u8> {
    let level = level.clamp(1, MAX_ZSTD_LEVEL) as i32;
    let class = zstd_size_class(level, input.len());
    let key = level * 3 + class as i32;
    let slot = ZSTD.take(key).or_else(|| {
        zstd_compressor(level, class).map(|compressor| ZstdSlot {
            compressor,
            scratch: Vec::new(),
        })
    });
    let Some(mut slot) = slot else {
        return zstd::bulk::compress(input, level).unwrap_or_default();
    };
    let bound = zstd::zstd_safe::compress_bound(input.len());
    let out = if class == ZstdSizeClass::Streamed {
        zstd_streamed(slot.compressor.context_mut(), input, bound)
    } else if input.len() < ZSTD_SCRATCH_FROM {
        // The whole input is given at once, so zstd knows the content size: small bodies get small tables and the
        // window never exceeds the body (nor, at the levels allowed, 8 MB).
        let mut out = Vec::with_capacity(bound);
        slot.compressor
            .compress_to_buffer(input, &mut out)
            .ok()
            .map(|n| exact(out, n))
    } else {
        slot.scratch.clear();
        slot.scratch.reserve(bound);
        let out = slot
            .compressor
            .compress_to_buffer(input, &mut slot.scratch)
            .ok()
            .map(|n| slot.scratch[..n.min(slot.scratch.len())].to_vec());
        if slot.scratch.capacity() > ZSTD_SCRATCH_MAX {
            slot.scratch = Vec::new();
        }
        out
    };
    ZSTD.put(key, slot);
    out.unwrap_or_else(|| zstd::bulk::compress(input, level).unwrap_or_default())
}

/// Compresses a [`ZstdSizeClass::Streamed`] body as a stream whose size libzstd is not told, with the window set to
/// the smallest power of two that holds the body: the body up to its last byte without ending the frame (it fits
/// in one block, so libzstd only buffers it), then the last byte with the end of the frame, so the body is one last
/// block. libzstd then keeps the tables it picks for an unknown size, the same as a streaming encoder's.
#[cfg(feature = "zstd")]
fn zstd_streamed(
    cctx: &mut zstd::zstd_safe::CCtx<'static>,
    input: &[u8],
    bound: usize,
) -> Option<Vec<u8>> {
    use zstd::zstd_safe::{
        CParameter, InBuffer, OutBuffer, ResetDirective, zstd_sys::ZSTD_EndDirective,
    };
    // A frame left unfinished by an earlier error is dropped, not continued.
    cctx.reset(ResetDirective::SessionOnly).ok()?;
    cctx.set_parameter(CParameter::WindowLog(window_log_for(input.len())))
        .ok()?;
    let mut out = Vec::with_capacity(bound);
    let (head, last) = input.split_at(input.len().saturating_sub(1));
    let mut out_buffer = OutBuffer::around(&mut out);
    let mut in_buffer = InBuffer::around(head);
    cctx.compress_stream2(
        &mut out_buffer,
        &mut in_buffer,
        ZSTD_EndDirective::ZSTD_e_continue,
    )
    .ok()?;
    if in_buffer.pos() != head.len() {
        return None;
    }
    let mut in_buffer = InBuffer::around(last);
    let remaining = cctx
        .compress_stream2(
            &mut out_buffer,
            &mut in_buffer,
            ZSTD_EndDirective::ZSTD_e_end,
        )
        .ok()?;
    let n = out_buffer.pos();
    // The output buffer holds the bound, so the frame is complete after one call.
    (remaining == 0 && in_buffer.pos() == last.len()).then(|| exact(out, n))
}

/// The zstd level whose parameters are tuned: 3, the default ([`DEFAULT_ZSTD_LEVEL`](crate::DEFAULT_ZSTD_LEVEL)).
const ZSTD_TUNED_LEVEL: i32 = 3;

/// How a body is compressed, by its size and the level (see [`zstd_compressor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "zstd"), allow(dead_code))]
pub(crate) enum ZstdSizeClass {
    /// Up to [`ZSTD_SMALL_BODY`] bytes: libzstd's parameters for the body's size.
    Small = 0,
    /// At level 3, over [`ZSTD_SMALL_BODY`] and up to [`ZSTD_STREAMED_MAX`] bytes: compressed as a stream of
    /// unknown size ([`zstd_streamed`]).
    Streamed = 1,
    /// Larger bodies, and at other levels every body over [`ZSTD_SMALL_BODY`].
    Larger = 2,
}

/// The largest body compressed with libzstd's own parameters for its size: 8 KiB.
pub(crate) const ZSTD_SMALL_BODY: usize = 8 * 1024;

/// The largest body compressed as a stream at level 3: 32 KiB. Told the size of a body up to 32 KiB, libzstd caps
/// level 3's hash table (2^17 entries) to twice the body's window and its chain table (2^16) to the window, even
/// when the parameters are set; over 32 KiB the window is 2^16 or more and nothing is capped. The pooled contexts
/// of these bodies hold the full tables and an input buffer, about 1 MB each.
pub(crate) const ZSTD_STREAMED_MAX: usize = 32 * 1024;

#[cfg_attr(not(feature = "zstd"), allow(dead_code))]
pub(crate) fn zstd_size_class(level: i32, len: usize) -> ZstdSizeClass {
    if len <= ZSTD_SMALL_BODY {
        ZstdSizeClass::Small
    } else if level == ZSTD_TUNED_LEVEL && len <= ZSTD_STREAMED_MAX {
        ZstdSizeClass::Streamed
    } else {
        ZstdSizeClass::Larger
    }
}

/// A one-shot zstd compressor at `level`, for bodies of `class`.
///
/// Every frame leaves out the content size (`ContentSizeFlag(false)`): a frame with it spends 2 to 4 header bytes
/// where a streaming encoder's frame (which does not know the size, as tower-http's does not) spends 1 on its
/// window. Small bodies and, at levels other than 3, all bodies are given whole with the size pledged, so libzstd
/// sizes its window and tables for the body. At level 3 (the default), bodies over [`ZSTD_SMALL_BODY`] search with
/// the parameters libzstd picks for an unknown size at that level (hash table 2^17, chain table 2^16, search depth
/// 1, minimum match 5), so the output is no larger than a streaming encoder's at that level, measured on the
/// benchmark JSON: libzstd's parameters for a known 16 KiB or 100 KiB body give 0.5 % and 0.015 % larger output.
/// Told the size, libzstd caps those tables for bodies up to [`ZSTD_STREAMED_MAX`], which cost a byte at 16 KiB (the
/// smaller chain table changed a match: one literal and one sequence more): those bodies are compressed as a stream
/// of unknown size ([`zstd_streamed`]), which gives a streaming encoder's bytes but for the window descriptor. Small
/// bodies keep libzstd's parameters for their size, which are smaller and faster there (at 2 KiB: 616 B against
/// 618 B; at some sizes from 1 to 6.3 KiB 1 to 5 bytes larger).
#[cfg(feature = "zstd")]
fn zstd_compressor(level: i32, class: ZstdSizeClass) -> Option<zstd::bulk::Compressor<'static>> {
    use zstd::zstd_safe::CParameter;
    let mut compressor = zstd::bulk::Compressor::new(level).ok()?;
    compressor
        .set_parameter(CParameter::ContentSizeFlag(false))
        .ok()?;
    if class != ZstdSizeClass::Small && level == ZSTD_TUNED_LEVEL {
        for parameter in [
            CParameter::HashLog(17),
            CParameter::ChainLog(16),
            CParameter::SearchLog(1),
            CParameter::MinMatch(5),
        ] {
            compressor.set_parameter(parameter).ok()?;
        }
    }
    Some(compressor)
}

#[cfg(not(feature = "zstd"))]
fn zstd_oneshot(input: &[u8], _level: u32) -> Vec<u8> {
    input.to_vec()
}

/// The highest zstd level allowed: 19, whose window is 8 MB (RFC 9659's limit for HTTP).
pub(crate) const MAX_ZSTD_LEVEL: u32 = 19;

/// The first `n` bytes of `out`, in a buffer of about that size.
fn exact(mut out: Vec<u8>, n: usize) -> Vec<u8> {
    out.truncate(n);
    if is_oversized(n, out.capacity()) {
        out.shrink_to_fit();
    }
    out
}

/// How much of its input a stream step must make decodable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Compress; output may be held back.
    Process,
    /// Everything so far becomes decodable.
    Flush,
    /// End the stream.
    Finish,
}

/// A streaming compressor whose output is taken after every step.
pub(crate) struct StreamEncoder {
    kind: StreamKind,
    finished: bool,
}

enum StreamKind {
    Zlib(Box<zlib_rs::Deflate>),
    #[cfg(feature = "zstd")]
    Zstd(zstd::zstd_safe::CCtx<'static>),
    #[cfg(feature = "br")]
    Br(Option<Box<brotli::CompressorWriter<Vec<u8>>>>),
    /// A codec not compiled in (never chosen by the layer): passes bytes through.
    #[allow(dead_code)]
    Missing,
}

impl fmt::Debug for StreamEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            StreamKind::Zlib(_) => "zlib-rs",
            #[cfg(feature = "zstd")]
            StreamKind::Zstd(_) => "zstd",
            #[cfg(feature = "br")]
            StreamKind::Br(_) => "brotli",
            StreamKind::Missing => "missing",
        };
        f.debug_struct("StreamEncoder")
            .field("engine", &kind)
            .field("finished", &self.finished)
            .finish()
    }
}

fn error(e: impl fmt::Debug) -> std::io::Error {
    std::io::Error::other(format!("stream compressor: {e:?}"))
}

impl StreamEncoder {
    /// A stream of `coding`; `level` applies to gzip and deflate (zlib 1 to 9); zstd and Brotli streams use
    /// [`ZSTD_STREAM_LEVEL`] and [`BR_STREAM_QUALITY`] with their bounded windows.
    pub(crate) fn new(coding: Coding, level: u32) -> Self {
        let kind = match coding {
            Coding::Gzip | Coding::Deflate => {
                return Self::zlib(coding, level, STREAM_WINDOW_BITS, STREAM_MEM_LEVEL);
            }
            #[cfg(feature = "zstd")]
            Coding::Zstd => StreamKind::Zstd(zstd_stream()),
            #[cfg(feature = "br")]
            Coding::Br => StreamKind::Br(Some(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                1024,
                BR_STREAM_QUALITY,
                BR_STREAM_LGWIN,
            )))),
            #[allow(unreachable_patterns)]
            _ => StreamKind::Missing,
        };
        Self {
            kind,
            finished: false,
        }
    }

    /// A gzip (or, for [`Coding::Deflate`], zlib) stream with an explicit window (9 to 15) and memory level (1 to
    /// 9); out-of-range values are clamped.
    pub(crate) fn zlib(coding: Coding, level: u32, window_bits: u8, mem_level: u8) -> Self {
        let bits = i32::from(window_bits.clamp(9, 15));
        let config = DeflateConfig {
            level: level.clamp(1, 9) as i32,
            method: Method::Deflated,
            // 16 + bits: a gzip header and trailer around the deflate stream; bits alone: the zlib format.
            window_bits: if coding == Coding::Gzip {
                16 + bits
            } else {
                bits
            },
            mem_level: i32::from(mem_level.clamp(1, 9)),
            strategy: Strategy::Default,
        };
        Self {
            kind: StreamKind::Zlib(Box::new(zlib_rs::Deflate::new_with_config(config))),
            finished: false,
        }
    }

    /// Feeds `data`; with `flush`, ends with the codec's flush so the client can decode everything so far.
    /// Returns the compressed bytes ready to send (possibly none).
    pub(crate) fn write(&mut self, data: &[u8], flush: bool) -> std::io::Result<Bytes> {
        let step = if flush { Step::Flush } else { Step::Process };
        self.run(data, step).map(Bytes::from)
    }

    /// A flush: everything fed so far becomes decodable.
    pub(crate) fn flush(&mut self) -> std::io::Result<Bytes> {
        self.run(&[], Step::Flush).map(Bytes::from)
    }

    /// Ends the stream (final block and trailer). Later calls return nothing.
    pub(crate) fn finish(&mut self) -> std::io::Result<Bytes> {
        self.run(&[], Step::Finish).map(Bytes::from)
    }

    /// One step; the output in a buffer of about its length.
    pub(crate) fn run(&mut self, input: &[u8], step: Step) -> std::io::Result<Vec<u8>> {
        if self.finished {
            return Ok(Vec::new());
        }
        let out = match &mut self.kind {
            #[cfg(feature = "br")]
            StreamKind::Br(writer) => {
                let out = br_step(writer, input, step)?;
                if step == Step::Finish {
                    self.finished = true;
                }
                return Ok(out);
            }
            StreamKind::Missing => {
                if step == Step::Finish {
                    self.finished = true;
                }
                return Ok(input.to_vec());
            }
            _ => STREAM_SCRATCH.with(|cell| match cell.try_borrow_mut() {
                Ok(mut scratch) => self.run_with(input, step, &mut scratch),
                Err(_) => self.run_with(input, step, &mut Vec::new()),
            })?,
        };
        Ok(out)
    }

    fn run_with(
        &mut self,
        input: &[u8],
        step: Step,
        scratch: &mut Vec<u8>,
    ) -> std::io::Result<Vec<u8>> {
        if scratch.len() < SCRATCH {
            scratch.resize(SCRATCH, 0);
        }
        let mut out: Vec<u8> = Vec::new();
        let finished = match &mut self.kind {
            StreamKind::Zlib(deflate) => zlib_step(deflate, input, step, scratch, &mut out)?,
            #[cfg(feature = "zstd")]
            StreamKind::Zstd(cctx) => zstd_step(cctx, input, step, scratch, &mut out)?,
            #[allow(unreachable_patterns)]
            _ => false,
        };
        if finished {
            self.finished = true;
        }
        let n = out.len();
        Ok(exact(out, n))
    }
}

/// Appends `produced` bytes of `scratch` to `out`, with one exact allocation in the common case.
fn collect(out: &mut Vec<u8>, scratch: &[u8], produced: usize, last: bool) {
    if out.is_empty() && produced < SCRATCH && last {
        *out = scratch[..produced].to_vec();
    } else {
        out.extend_from_slice(&scratch[..produced]);
    }
}

fn zlib_step(
    deflate: &mut zlib_rs::Deflate,
    mut input: &[u8],
    step: Step,
    scratch: &mut [u8],
    out: &mut Vec<u8>,
) -> std::io::Result<bool> {
    let mode = match step {
        Step::Process => DeflateFlush::NoFlush,
        Step::Flush => DeflateFlush::SyncFlush,
        Step::Finish => DeflateFlush::Finish,
    };
    loop {
        let (before_in, before_out) = (deflate.total_in(), deflate.total_out());
        let status = deflate.compress(input, scratch, mode).map_err(error)?;
        let consumed = (deflate.total_in() - before_in) as usize;
        let produced = (deflate.total_out() - before_out) as usize;
        input = &input[consumed.min(input.len())..];
        collect(out, scratch, produced, input.is_empty());
        let done = match mode {
            DeflateFlush::Finish => status == Status::StreamEnd,
            // A full scratch may mean more output is pending.
            _ => input.is_empty() && produced < SCRATCH,
        };
        if status == Status::StreamEnd {
            return Ok(true);
        }
        if done || (consumed == 0 && produced == 0) {
            return Ok(false);
        }
    }
}

/// A zstd stream context within the memory budget.
#[cfg(feature = "zstd")]
pub(crate) fn zstd_stream() -> zstd::zstd_safe::CCtx<'static> {
    use zstd::zstd_safe::CParameter;
    let mut cctx = zstd::zstd_safe::CCtx::create();
    let _ = cctx.set_parameter(CParameter::CompressionLevel(ZSTD_STREAM_LEVEL));
    let _ = cctx.set_parameter(CParameter::WindowLog(ZSTD_STREAM_WINDOW_LOG));
    let _ = cctx.set_parameter(CParameter::HashLog(ZSTD_STREAM_TABLE_LOG));
    let _ = cctx.set_parameter(CParameter::ChainLog(ZSTD_STREAM_TABLE_LOG));
    cctx
}

#[cfg(feature = "zstd")]
fn zstd_step(
    cctx: &mut zstd::zstd_safe::CCtx<'static>,
    input: &[u8],
    step: Step,
    scratch: &mut [u8],
    out: &mut Vec<u8>,
) -> std::io::Result<bool> {
    use zstd::zstd_safe::{InBuffer, OutBuffer, zstd_sys::ZSTD_EndDirective};
    let directive = match step {
        Step::Process => ZSTD_EndDirective::ZSTD_e_continue,
        Step::Flush => ZSTD_EndDirective::ZSTD_e_flush,
        Step::Finish => ZSTD_EndDirective::ZSTD_e_end,
    };
    let mut in_buffer = InBuffer::around(input);
    loop {
        let mut out_buffer = OutBuffer::around(&mut scratch[..]);
        let remaining = cctx
            .compress_stream2(&mut out_buffer, &mut in_buffer, directive)
            .map_err(|code| error(zstd::zstd_safe::get_error_name(code)))?;
        let produced = out_buffer.pos();
        let consumed_all = in_buffer.pos() == input.len();
        let done = match step {
            Step::Process => consumed_all,
            _ => consumed_all && remaining == 0,
        };
        collect(out, scratch, produced, done);
        if done {
            return Ok(step == Step::Finish);
        }
    }
}

#[cfg(feature = "br")]
fn br_step(
    writer: &mut Option<Box<brotli::CompressorWriter<Vec<u8>>>>,
    input: &[u8],
    step: Step,
) -> std::io::Result<Vec<u8>> {
    let Some(w) = writer.as_mut() else {
        return Ok(Vec::new());
    };
    if !input.is_empty() {
        w.write_all(input)?;
    }
    match step {
        Step::Process => {}
        Step::Flush => w.flush()?,
        Step::Finish => {
            let Some(w) = writer.take() else {
                return Ok(Vec::new());
            };
            let out = w.into_inner();
            let n = out.len();
            return Ok(exact(out, n));
        }
    }
    let out = std::mem::take(w.get_mut());
    let n = out.len();
    Ok(exact(out, n))
}

/// The benchmarks' JSON payloads (`benches/gzip/payload.rs`), on which the size rule of the default levels is stated.
#[cfg(all(test, feature = "zstd"))]
#[allow(dead_code, unreachable_pub)]
#[path = "../../../benches/gzip/payload.rs"]
mod payload;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn oneshot_round_trips_at_every_level() {
        let input: Vec<u8> = (0..50_000u32)
            .flat_map(|i| format!("{{\"id\":{i}}},").into_bytes())
            .collect();
        for level in 1..=MAX_ONESHOT_LEVEL {
            let out = gzip_oneshot(&input, level);
            assert!(out.len() < input.len() / 3, "level {level}");
            assert_eq!(gunzip(&out), input, "level {level}");
        }
        assert_eq!(gunzip(&gzip_oneshot(b"", 6)), b"");
    }

    #[test]
    fn oneshot_output_is_not_oversized() {
        // 100 KiB of JSON compresses to a few KiB; the worst-case buffer libdeflate writes into is ~100 KiB.
        let input: Vec<u8> = (0..5_000u32)
            .flat_map(|i| format!("{{\"id\":{i},\"name\":\"widget\"}},").into_bytes())
            .collect();
        for level in [1, 6, 9, 12] {
            let out = gzip_oneshot(&input, level);
            assert!(out.len() < input.len() / 4, "level {level}");
            assert!(
                !is_oversized(out.len(), out.capacity()),
                "level {level}: {} bytes in a buffer of {}",
                out.len(),
                out.capacity()
            );
        }
        // Incompressible input: the result is about the bound, kept as it is.
        let noise: Vec<u8> = (0..20_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let out = gzip_oneshot(&noise, 6);
        assert_eq!(gunzip(&out), noise);
        assert!(!is_oversized(out.len(), out.capacity()));
    }

    #[test]
    fn oversized_means_significant_waste() {
        assert!(!is_oversized(0, 0));
        assert!(!is_oversized(100, 1000), "under 1 KiB of waste");
        assert!(is_oversized(6_000, 104_000));
        assert!(!is_oversized(100_000, 104_000), "4%");
        assert!(
            !is_oversized(10, 5),
            "len over capacity cannot happen, but stays total"
        );
    }

    #[test]
    fn stream_flushes_make_a_decodable_prefix() {
        let mut enc = StreamEncoder::new(Coding::Gzip, 6);
        let first = enc.write(b"data: one\n\n", true).unwrap();
        // A sync flush ends with an empty stored block: 00 00 ff ff.
        assert!(first.ends_with(&[0, 0, 0xff, 0xff]));
        let mut dec = flate2::write::GzDecoder::new(Vec::new());
        dec.write_all(&first).unwrap();
        dec.flush().unwrap();
        assert_eq!(dec.get_ref(), b"data: one\n\n");
        let mut all = first.to_vec();
        all.extend_from_slice(&enc.write(b"data: two\n\n", false).unwrap());
        all.extend_from_slice(&enc.flush().unwrap());
        all.extend_from_slice(&enc.finish().unwrap());
        assert!(enc.finish().unwrap().is_empty(), "finished once");
        assert_eq!(gunzip(&all), b"data: one\n\ndata: two\n\n");
    }

    #[test]
    fn stream_round_trips_frames_larger_than_the_scratch() {
        let input: Vec<u8> = (0..40_000u32)
            .flat_map(|i| {
                format!("{{\"id\":{i},\"v\":{}}}\n", i.wrapping_mul(2_654_435_761)).into_bytes()
            })
            .collect();
        let mut enc = StreamEncoder::new(Coding::Gzip, 6);
        let mut all = Vec::new();
        for (i, chunk) in input.chunks(100_000).enumerate() {
            let mode = if i % 2 == 0 {
                Step::Flush
            } else {
                Step::Process
            };
            // Many scratch buffers' worth of output: the result is still not oversized.
            let out = enc.run(chunk, mode).unwrap();
            assert!(
                !is_oversized(out.len(), out.capacity()),
                "{} in {}",
                out.len(),
                out.capacity()
            );
            all.extend_from_slice(&out);
        }
        let small = enc.run(b"data: a small event\n\n", Step::Flush).unwrap();
        assert!(!is_oversized(small.len(), small.capacity()));
        all.extend_from_slice(&small);
        all.extend_from_slice(&enc.finish().unwrap());
        assert!(all.len() < input.len() / 2);
        assert_eq!(
            gunzip(&all),
            [&input[..], b"data: a small event\n\n"].concat()
        );
        // An empty stream is a valid empty gzip member.
        assert_eq!(
            gunzip(&StreamEncoder::new(Coding::Gzip, 1).finish().unwrap()),
            b""
        );
    }

    /// JSON-like text of `len` bytes, different for each `seed`.
    #[cfg(any(feature = "br", feature = "zstd"))]
    fn json_like(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut out = Vec::with_capacity(len + 64);
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.extend_from_slice(
                format!(
                    "{{\"id\":{},\"sku\":\"{:08x}\",\"name\":\"item {}\"}},",
                    state % 10_000,
                    state as u32,
                    state % 97
                )
                .as_bytes(),
            );
        }
        out.truncate(len);
        out
    }

    #[cfg(feature = "br")]
    #[test]
    fn brotli_hashers_are_reused_without_changing_the_output() {
        // Bodies under and over the partial preparation size (4 KiB at quality 4) in turn: a reused table that
        // kept an entry of the body before would change the output, or point past the new body.
        let mut bodies: Vec<Vec<u8>> = [1_500, 3_000, 20_000, 2_000, 70_000, 4_096, 4_097, 100, 0]
            .iter()
            .zip(1..)
            .map(|(&len, seed)| json_like(len, seed))
            .collect();
        // Incompressible bytes: the output outgrows its first buffer (a quarter of the body) twice.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        bodies.push(
            (0..50_000)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect(),
        );
        for quality in [2, 3, 4, 5] {
            for round in 0..3 {
                for body in &bodies {
                    let params = brotli::enc::BrotliEncoderParams {
                        quality: quality as i32,
                        lgwin: br_window_for(body.len()) as i32,
                        size_hint: body.len(),
                        ..Default::default()
                    };
                    let mut fresh =
                        brotli::CompressorWriter::with_params(Vec::new(), 4096, &params);
                    fresh.write_all(body).unwrap();
                    let fresh = fresh.into_inner();
                    let pooled = br_oneshot(body, quality);
                    assert_eq!(
                        pooled,
                        fresh,
                        "quality {quality}, round {round}, {} B",
                        body.len()
                    );
                    let mut decoded = Vec::new();
                    brotli::Decompressor::new(&pooled[..], 4096)
                        .read_to_end(&mut decoded)
                        .unwrap();
                    assert_eq!(&decoded, body);
                }
            }
        }
        let kept = BR_HASHERS.slots.lock().unwrap().len();
        assert!((1..=POOL_CAP).contains(&kept), "{kept} hashers kept");
    }

    #[cfg(feature = "br")]
    #[test]
    fn large_brotli_tables_are_reused_in_their_own_pool() {
        // From 1 MiB, quality 4 uses a 4 MiB table, kept in a pool of its own (at most two of them).
        let bodies = [json_like(1 << 20, 11), json_like((1 << 20) + 5_000, 12)];
        for body in bodies.iter().chain(&bodies) {
            let params = brotli::enc::BrotliEncoderParams {
                quality: 4,
                lgwin: br_window_for(body.len()) as i32,
                size_hint: body.len(),
                ..Default::default()
            };
            let mut fresh = brotli::CompressorWriter::with_params(Vec::new(), 4096, &params);
            fresh.write_all(body).unwrap();
            assert_eq!(br_oneshot(body, 4), fresh.into_inner(), "{} B", body.len());
        }
        let kept = BR_LARGE_HASHERS.slots.lock().unwrap().len();
        assert!(
            (1..=BR_LARGE_CAP).contains(&kept),
            "{kept} large tables kept"
        );
    }

    #[test]
    fn brotli_hasher_keys_follow_the_crates_choice() {
        assert_eq!(br_hasher_key(4, 2048), Some(4));
        assert_eq!(br_hasher_key(4, (1 << 20) - 1), Some(4));
        assert_eq!(
            br_hasher_key(4, 1 << 20),
            Some(BR_LARGE_KEY),
            "a 4 MiB table from 1 MiB"
        );
        assert_eq!(br_hasher_key(2, 1 << 22), Some(2));
        for quality in [0, 1, 5, 9, 11] {
            assert_eq!(br_hasher_key(quality, 2048), None);
        }
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_frames_leave_out_the_content_size_and_round_trip() {
        for (len, seed) in [
            (0, 1),
            (100, 2),
            (2_048, 3),
            (8_192, 4),
            (8_193, 5),
            (100_000, 6),
            (2_000_000, 7),
        ] {
            let body = json_like(len, seed);
            for level in [1, 3, 19] {
                let out = zstd_oneshot(&body, level);
                assert_eq!(
                    zstd::zstd_safe::get_frame_content_size(&out).unwrap(),
                    None,
                    "{len} B at {level}"
                );
                assert_eq!(
                    zstd::stream::decode_all(&out[..]).unwrap(),
                    body,
                    "{len} B at {level}"
                );
            }
        }
        assert_eq!(zstd_size_class(3, ZSTD_SMALL_BODY), ZstdSizeClass::Small);
        assert_eq!(
            zstd_size_class(3, ZSTD_SMALL_BODY + 1),
            ZstdSizeClass::Streamed
        );
        assert_eq!(
            zstd_size_class(3, ZSTD_STREAMED_MAX),
            ZstdSizeClass::Streamed
        );
        assert_eq!(
            zstd_size_class(3, ZSTD_STREAMED_MAX + 1),
            ZstdSizeClass::Larger
        );
        assert_eq!(
            zstd_size_class(4, ZSTD_SMALL_BODY + 1),
            ZstdSizeClass::Larger
        );
    }

    /// What tower-http's zstd body gives: async-compression's encoder is the `zstd` crate's streaming encoder at
    /// level 3 with default parameters, never told the size.
    #[cfg(feature = "zstd")]
    fn zstd_streaming_reference(body: &[u8]) -> Vec<u8> {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        encoder.write_all(body).unwrap();
        encoder.finish().unwrap()
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_default_is_no_larger_than_a_streaming_encoder() {
        let mut bodies: Vec<Vec<u8>> = [2_048, 16_384, 100 * 1024, 1 << 20]
            .into_iter()
            .map(super::payload::json)
            .collect();
        // Over 8 KiB (below, libzstd's parameters for the body's size are up to a few bytes larger at some sizes,
        // smaller at others) to 20 KiB, bodies that fill a power of two exactly, 32 KiB and just over, and 100 KiB.
        let mut len = ZSTD_SMALL_BODY + 1;
        while len <= 20 * 1024 {
            bodies.push(super::payload::json(len));
            bodies.push(json_like(len, len as u64));
            len += 397;
        }
        for len in [
            8_193,
            12_288,
            16_383,
            16_385,
            20_480,
            ZSTD_STREAMED_MAX - 1,
            ZSTD_STREAMED_MAX,
            ZSTD_STREAMED_MAX + 1,
            100_000,
            102_400,
        ] {
            bodies.push(super::payload::json(len));
            bodies.push(json_like(len, 9));
        }
        for body in &bodies {
            let len = body.len();
            let ours = zstd_oneshot(body, crate::DEFAULT_ZSTD_LEVEL);
            let reference = zstd_streaming_reference(body);
            assert!(
                ours.len() <= reference.len(),
                "{len} B: {} against {}",
                ours.len(),
                reference.len()
            );
            assert_eq!(
                zstd::stream::decode_all(&ours[..]).unwrap(),
                *body,
                "{len} B"
            );
            if zstd_size_class(crate::DEFAULT_ZSTD_LEVEL as i32, len) == ZstdSizeClass::Streamed {
                // The streaming encoder's frame but for the window descriptor (byte 5), which names the body's
                // window instead of level 3's 2 MiB.
                assert_eq!(ours.len(), reference.len(), "{len} B");
                assert_eq!(ours[..5], reference[..5], "{len} B");
                assert_eq!(ours[6..], reference[6..], "{len} B");
                assert_eq!(
                    1usize << window_log_for(len),
                    zstd_window_size(&ours),
                    "{len} B"
                );
            }
        }
        // A pooled context that ended a frame early (an error) starts the next body on a new frame.
        let body = super::payload::json(16_384);
        let mut slot = zstd_compressor(3, ZstdSizeClass::Streamed).unwrap();
        let mut out = Vec::with_capacity(64);
        let mut out_buffer = zstd::zstd_safe::OutBuffer::around(&mut out);
        let mut in_buffer = zstd::zstd_safe::InBuffer::around(&body[..]);
        slot.context_mut()
            .compress_stream2(
                &mut out_buffer,
                &mut in_buffer,
                zstd::zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_flush,
            )
            .unwrap();
        let again = zstd_streamed(
            slot.context_mut(),
            &body,
            zstd::zstd_safe::compress_bound(body.len()),
        )
        .unwrap();
        assert_eq!(again, zstd_oneshot(&body, crate::DEFAULT_ZSTD_LEVEL));
    }

    /// The window size a zstd frame announces (RFC 8878 §3.1.1.1.2), for frames without the single-segment flag.
    #[cfg(feature = "zstd")]
    fn zstd_window_size(frame: &[u8]) -> usize {
        assert_eq!(frame[..4], [0x28, 0xb5, 0x2f, 0xfd]);
        assert_eq!(frame[4] & 0x20, 0, "single segment");
        let descriptor = frame[5];
        let base = 1usize << (10 + (descriptor >> 3));
        base + base / 8 * usize::from(descriptor & 7)
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_windows_stay_within_the_body_and_8_mb() {
        // The window descriptor replaces the content size: a small body still announces a small window.
        let body = json_like(20_000, 8);
        let out = zstd_oneshot(&body, 3);
        let mut decoder = zstd::stream::read::Decoder::new(&out[..]).unwrap();
        decoder.window_log_max(15).unwrap();
        let mut decoded = Vec::new();
        decoder.read_to_end(&mut decoded).unwrap();
        assert_eq!(decoded, body);
    }

    #[test]
    fn every_window_and_memory_level_round_trips() {
        let input = b"data: {\"n\":1,\"message\":\"a server-sent event\"}\n\n".repeat(300);
        for window_bits in [0, 9, 12, 13, 15, 200] {
            for mem_level in [0, 1, 7, 9, 200] {
                let mut enc = StreamEncoder::zlib(Coding::Gzip, 6, window_bits, mem_level);
                let mut all = enc.write(&input, true).unwrap().to_vec();
                all.extend_from_slice(&enc.finish().unwrap());
                assert_eq!(gunzip(&all), input, "{window_bits} {mem_level}");
            }
        }
    }
}
