//! The two compression engines: libdeflate for one-shot bodies, flate2 (zlib-rs) for streams.

use bytes::Bytes;
use flate2::{Compression, write::GzEncoder};
use std::{cell::RefCell, io::Write};

/// The highest libdeflate level (slow; 10 to 12 are the "optimal parsing" levels).
pub(crate) const MAX_ONESHOT_LEVEL: u32 = 12;

thread_local! {
    /// One libdeflate compressor per level and thread, made on first use and reused: making one allocates its
    /// match finder tables (hundreds of KiB at the higher levels).
    static COMPRESSORS: RefCell<Vec<Option<libdeflater::Compressor>>> = const { RefCell::new(Vec::new()) };
}

/// Compresses `input` into one gzip member with libdeflate at `level` (1 to 12).
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
        out.truncate(n);
        Some(out)
    });
    // libdeflate cannot fail with a buffer of `gzip_compress_bound` bytes; stay total anyway.
    compressed.unwrap_or_else(|| {
        let mut encoder = GzEncoder::new(
            Vec::with_capacity(input.len() / 4 + 64),
            Compression::new(level.min(9)),
        );
        let _ = encoder.write_all(input);
        encoder.finish().unwrap_or_default()
    })
}

/// A streaming gzip encoder (flate2 with the zlib-rs backend) whose output is taken after every step.
#[derive(Debug)]
pub(crate) struct StreamEncoder {
    encoder: GzEncoder<Vec<u8>>,
}

impl StreamEncoder {
    pub(crate) fn new(level: u32) -> Self {
        Self {
            encoder: GzEncoder::new(Vec::new(), Compression::new(level)),
        }
    }

    /// Feeds `data`; with `flush`, ends with a sync flush so the client can decode everything so far.
    /// Returns the compressed bytes ready to send (possibly none).
    pub(crate) fn write(&mut self, data: &[u8], flush: bool) -> std::io::Result<Bytes> {
        self.encoder.write_all(data)?;
        if flush {
            self.encoder.flush()?;
        }
        Ok(self.take())
    }

    /// A sync flush: everything fed so far becomes decodable.
    pub(crate) fn flush(&mut self) -> std::io::Result<Bytes> {
        self.encoder.flush()?;
        Ok(self.take())
    }

    /// Ends the gzip member (final block and trailer).
    pub(crate) fn finish(&mut self) -> std::io::Result<Bytes> {
        self.encoder.try_finish()?;
        Ok(self.take())
    }

    fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(self.encoder.get_mut()))
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
        assert_eq!(gunzip(&all), b"data: one\n\ndata: two\n\n");
    }
}
