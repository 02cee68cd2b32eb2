//! The two compression engines: libdeflate for one-shot bodies, zlib-rs for streams (with a bounded window and
//! memory level, see [`STREAM_MEMORY_BUDGET`]).

use bytes::Bytes;
use flate2::{Compression, write::GzEncoder};
use std::{cell::RefCell, fmt, io::Write};
use zlib_rs::{DeflateConfig, DeflateFlush, Method, Status, Strategy};

/// The highest libdeflate level (slow; 10 to 12 are the "optimal parsing" levels).
pub(crate) const MAX_ONESHOT_LEVEL: u32 = 12;

/// The most heap one streaming compressor may hold, in bytes: 256 KiB.
///
/// A rule for every codec this crate has or adds: what a codec keeps for one long-lived compressed stream (window,
/// hash tables, symbol and pending buffers, and the body wrapper around them) fits in this budget, so memory grows
/// with open streams at a known, small rate (4,000 open server-sent event streams: at most 1 GiB). The test
/// `tests/stream_memory.rs` opens streams under a counting allocator and holds the stream engine to it. Bodies
/// compressed in one shot are not streams: their compressor is per thread and reused.
pub const STREAM_MEMORY_BUDGET: usize = 256 * 1024;

/// The deflate window of streaming compressors, as a power of two: 2^14 = 16 KiB (zlib's default is 32 KiB).
///
/// zlib-rs allocates, per compressor, twice the window for the sliding window, twice the window for the hash
/// chains, a fixed 128 KiB hash head table, `7 × 2^(mem_level + 6)` bytes of symbol and pending buffers, and a small
/// fixed state: with 16 KiB and [`STREAM_MEM_LEVEL`] 6 that is about 220 KiB, where zlib's defaults (32 KiB, 8) take
/// about 370 KiB. On the benchmark JSON (16 KiB frames) the output is 0 to 0.9% larger than at the defaults, and no
/// larger on server-sent events; an 8 KiB window with memory level 7 (the same memory) costs up to 3.9%.
pub const STREAM_WINDOW_BITS: u8 = 14;

/// The zlib memory level of streaming compressors (1 to 9; zlib's default is 8). 6 quarters the symbol and pending
/// buffers (a block holds at most 4,096 symbols), which matters little for streams that are flushed often anyway.
pub const STREAM_MEM_LEVEL: u8 = 6;

/// Output is produced through a per-thread scratch buffer of this size and copied out at its exact length, so a
/// stream keeps no output buffer between frames and hands out no oversized one.
const SCRATCH: usize = 16 * 1024;

thread_local! {
    /// One libdeflate compressor per level and thread, made on first use and reused: making one allocates its
    /// match finder tables (hundreds of KiB at the higher levels).
    static COMPRESSORS: RefCell<Vec<Option<libdeflater::Compressor>>> = const { RefCell::new(Vec::new()) };
    /// The streaming compressors' output scratch (see [`SCRATCH`]).
    static STREAM_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Whether a buffer of `capacity` bytes holding `len` is worth copying out at its exact size: more than 1/8 (and
/// more than 1 KiB) of it would be wasted.
pub(crate) fn is_oversized(len: usize, capacity: usize) -> bool {
    let waste = capacity - len.min(capacity);
    waste > 1024 && waste > len / 8
}

/// Compresses `input` into one gzip member with libdeflate at `level` (1 to 12). The result's capacity is close to
/// its length (libdeflate writes into a buffer of the worst-case size; a result much smaller is copied out), so a
/// cache that keeps it keeps no slack.
pub(crate) fn gzip_oneshot(input: &[u8], level: u32) -> Vec<u8> {
    let compressed = COMPRESSORS.with(|cell| {
        let mut compressors = cell.try_borrow_mut().ok()?;
        let index = level.min(MAX_ONESHOT_LEVEL) as usize;
        if compressors.len() <= index {
            compressors.resize_with(index + 1, || None);
        }
        let compressor = match &mut compressors[index] {
            Some(c) => c,
            slot => {
                let lvl = libdeflater::CompressionLvl::new(index as i32).ok()?;
                slot.insert(libdeflater::Compressor::new(lvl))
            }
        };
        let mut out = vec![0; compressor.gzip_compress_bound(input.len())];
        let n = compressor.gzip_compress(input, &mut out).ok()?;
        Some(exact(out, n))
    });
    // libdeflate cannot fail with a buffer of `gzip_compress_bound` bytes; stay total anyway.
    compressed.unwrap_or_else(|| {
        let mut encoder = GzEncoder::new(
            Vec::with_capacity(input.len() / 4 + 64),
            Compression::new(level.min(9)),
        );
        let _ = encoder.write_all(input);
        let out = encoder.finish().unwrap_or_default();
        let n = out.len();
        exact(out, n)
    })
}

/// The first `n` bytes of `out`, in a buffer of about that size.
fn exact(mut out: Vec<u8>, n: usize) -> Vec<u8> {
    out.truncate(n);
    if is_oversized(n, out.capacity()) {
        out.shrink_to_fit();
    }
    out
}

/// A streaming gzip compressor (zlib-rs, window [`STREAM_WINDOW_BITS`], memory level [`STREAM_MEM_LEVEL`]) whose
/// output is taken after every step.
pub(crate) struct StreamEncoder {
    deflate: zlib_rs::Deflate,
    finished: bool,
}

impl fmt::Debug for StreamEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamEncoder")
            .field("total_in", &self.deflate.total_in())
            .field("total_out", &self.deflate.total_out())
            .field("finished", &self.finished)
            .finish()
    }
}

fn error(e: zlib_rs::DeflateError) -> std::io::Error {
    std::io::Error::other(format!("gzip stream compressor: {e:?}"))
}

impl StreamEncoder {
    /// A gzip stream at zlib `level` (1 to 9) with the stream window and memory level.
    pub(crate) fn new(level: u32) -> Self {
        Self::with_memory(level, STREAM_WINDOW_BITS, STREAM_MEM_LEVEL)
    }

    /// A gzip stream with an explicit window (9 to 15) and memory level (1 to 9); out-of-range values are clamped.
    pub(crate) fn with_memory(level: u32, window_bits: u8, mem_level: u8) -> Self {
        let config = DeflateConfig {
            level: level.clamp(1, 9) as i32,
            method: Method::Deflated,
            // 16 + bits: a gzip header and trailer around the deflate stream.
            window_bits: 16 + i32::from(window_bits.clamp(9, 15)),
            mem_level: i32::from(mem_level.clamp(1, 9)),
            strategy: Strategy::Default,
        };
        Self {
            deflate: zlib_rs::Deflate::new_with_config(config),
            finished: false,
        }
    }

    /// Feeds `data`; with `flush`, ends with a sync flush so the client can decode everything so far.
    /// Returns the compressed bytes ready to send (possibly none).
    pub(crate) fn write(&mut self, data: &[u8], flush: bool) -> std::io::Result<Bytes> {
        let mode = if flush {
            DeflateFlush::SyncFlush
        } else {
            DeflateFlush::NoFlush
        };
        self.run(data, mode).map(Bytes::from)
    }

    /// A sync flush: everything fed so far becomes decodable.
    pub(crate) fn flush(&mut self) -> std::io::Result<Bytes> {
        self.run(&[], DeflateFlush::SyncFlush).map(Bytes::from)
    }

    /// Ends the gzip member (final block and trailer). Later calls return nothing.
    pub(crate) fn finish(&mut self) -> std::io::Result<Bytes> {
        self.run(&[], DeflateFlush::Finish).map(Bytes::from)
    }

    /// One step; the output in a buffer of about its length.
    fn run(&mut self, input: &[u8], mode: DeflateFlush) -> std::io::Result<Vec<u8>> {
        if self.finished {
            return Ok(Vec::new());
        }
        STREAM_SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.run_with(input, mode, &mut scratch),
            Err(_) => self.run_with(input, mode, &mut Vec::new()),
        })
    }

    fn run_with(
        &mut self,
        mut input: &[u8],
        mode: DeflateFlush,
        scratch: &mut Vec<u8>,
    ) -> std::io::Result<Vec<u8>> {
        if scratch.len() < SCRATCH {
            scratch.resize(SCRATCH, 0);
        }
        let mut out: Vec<u8> = Vec::new();
        loop {
            let (before_in, before_out) = (self.deflate.total_in(), self.deflate.total_out());
            let status = self
                .deflate
                .compress(input, &mut scratch[..], mode)
                .map_err(error)?;
            let consumed = (self.deflate.total_in() - before_in) as usize;
            let produced = (self.deflate.total_out() - before_out) as usize;
            input = &input[consumed.min(input.len())..];
            if out.is_empty() && produced < SCRATCH && input.is_empty() {
                // The common case (one event, one flush): one exact allocation.
                out = scratch[..produced].to_vec();
            } else {
                out.extend_from_slice(&scratch[..produced]);
            }
            let done = match mode {
                DeflateFlush::Finish => status == Status::StreamEnd,
                // A full scratch may mean more output is pending.
                _ => input.is_empty() && produced < SCRATCH,
            };
            if status == Status::StreamEnd {
                self.finished = true;
            }
            if done || (consumed == 0 && produced == 0) {
                break;
            }
        }
        let n = out.len();
        Ok(exact(out, n))
    }
}

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
        let mut enc = StreamEncoder::new(6);
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
        let mut enc = StreamEncoder::new(6);
        let mut all = Vec::new();
        for (i, chunk) in input.chunks(100_000).enumerate() {
            let mode = if i % 2 == 0 {
                DeflateFlush::SyncFlush
            } else {
                DeflateFlush::NoFlush
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
        let small = enc
            .run(b"data: a small event\n\n", DeflateFlush::SyncFlush)
            .unwrap();
        assert!(!is_oversized(small.len(), small.capacity()));
        all.extend_from_slice(&small);
        all.extend_from_slice(&enc.finish().unwrap());
        assert!(all.len() < input.len() / 2);
        assert_eq!(
            gunzip(&all),
            [&input[..], b"data: a small event\n\n"].concat()
        );
        // An empty stream is a valid empty gzip member.
        assert_eq!(gunzip(&StreamEncoder::new(1).finish().unwrap()), b"");
    }

    #[test]
    fn every_window_and_memory_level_round_trips() {
        let input = b"data: {\"n\":1,\"message\":\"a server-sent event\"}\n\n".repeat(300);
        for window_bits in [0, 9, 12, 13, 15, 200] {
            for mem_level in [0, 1, 7, 9, 200] {
                let mut enc = StreamEncoder::with_memory(6, window_bits, mem_level);
                let mut all = enc.write(&input, true).unwrap().to_vec();
                all.extend_from_slice(&enc.finish().unwrap());
                assert_eq!(gunzip(&all), input, "{window_bits} {mem_level}");
            }
        }
    }
}
