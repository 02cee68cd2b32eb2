//! Decoders for every coding, with a cap on decoded (and on compressed) bytes. Stacked codings are undone in reverse
//! of the order listed: the last one streaming as the body arrives, the others over its (capped) output.

use crate::codec::Coding;
use bytes::Bytes;
use std::io::{self, Write};

/// Why a body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// More than the cap of decoded bytes (or of compressed input).
    TooLarge,
    /// Not in the coding it claims, corrupt, or truncated.
    Corrupt,
}

/// The decoded bytes, refusing to grow past the cap.
#[derive(Debug)]
struct Sink {
    buf: Vec<u8>,
    cap: usize,
    over: bool,
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.cap {
            self.over = true;
            return Err(io::Error::other("decoded body over the cap"));
        }
        // Grow to at most the cap, not to the next power of two past it.
        let needed = self.buf.len() + data.len();
        if needed > self.buf.capacity() {
            let target = (self.buf.capacity() * 2).clamp(needed, self.cap.max(needed));
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The largest zstd window a request may use: 2^23 = 8 MB (RFC 9659), so a decoder's memory stays bounded.
#[cfg_attr(not(feature = "zstd"), allow(dead_code))]
pub(crate) const ZSTD_MAX_WINDOW_LOG: u32 = 23;

/// One streaming decoder writing into a capped [`Sink`].
enum Stage {
    Gzip(flate2::write::MultiGzDecoder<Sink>),
    /// `deflate` before its first two bytes are seen: zlib (RFC 9110) or raw deflate, which some clients send.
    DeflateStart(Vec<u8>, Sink),
    Zlib(flate2::write::ZlibDecoder<Sink>),
    RawDeflate(flate2::write::DeflateDecoder<Sink>),
    #[cfg(feature = "br")]
    Br(Box<brotli::DecompressorWriter<Sink>>),
    #[cfg(feature = "zstd")]
    Zstd(zstd::stream::write::Decoder<'static, Sink>),
    /// Swapped out while finishing.
    Done,
}

impl Stage {
    fn new(coding: Coding, cap: usize) -> Self {
        let sink = Sink {
            buf: Vec::new(),
            cap,
            over: false,
        };
        match coding {
            Coding::Gzip => Stage::Gzip(flate2::write::MultiGzDecoder::new(sink)),
            Coding::Deflate => Stage::DeflateStart(Vec::new(), sink),
            #[cfg(feature = "br")]
            Coding::Br => Stage::Br(Box::new(brotli::DecompressorWriter::new(sink, 4096))),
            #[cfg(feature = "zstd")]
            Coding::Zstd => match zstd::stream::write::Decoder::new(sink) {
                Ok(mut decoder) => {
                    let _ = decoder.window_log_max(ZSTD_MAX_WINDOW_LOG);
                    Stage::Zstd(decoder)
                }
                Err(_) => Stage::Done,
            },
            #[allow(unreachable_patterns)]
            _ => Stage::Done,
        }
    }

    fn sink(&self) -> Option<&Sink> {
        Some(match self {
            Stage::Gzip(d) => d.get_ref(),
            Stage::DeflateStart(_, sink) => sink,
            Stage::Zlib(d) => d.get_ref(),
            Stage::RawDeflate(d) => d.get_ref(),
            #[cfg(feature = "br")]
            Stage::Br(d) => d.get_ref(),
            #[cfg(feature = "zstd")]
            Stage::Zstd(d) => d.get_ref(),
            Stage::Done => return None,
        })
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Stage::Gzip(d) => d.write_all(data),
            Stage::DeflateStart(head, _) => {
                head.extend_from_slice(data);
                if head.len() < 2 {
                    return Ok(());
                }
                let Stage::DeflateStart(head, sink) = std::mem::replace(self, Stage::Done) else {
                    return Ok(());
                };
                // RFC 1950: CM = 8, a window of at most 32 KiB, and the header check bits.
                let zlib = head[0] & 0x0f == 8
                    && head[0] >> 4 <= 7
                    && u16::from_be_bytes([head[0], head[1]]) % 31 == 0;
                *self = if zlib {
                    Stage::Zlib(flate2::write::ZlibDecoder::new(sink))
                } else {
                    Stage::RawDeflate(flate2::write::DeflateDecoder::new(sink))
                };
                self.write(&head)
            }
            Stage::Zlib(d) => d.write_all(data),
            Stage::RawDeflate(d) => d.write_all(data),
            #[cfg(feature = "br")]
            Stage::Br(d) => d.write_all(data),
            #[cfg(feature = "zstd")]
            Stage::Zstd(d) => d.write_all(data),
            Stage::Done => Err(io::Error::other("decoder not available")),
        }
    }

    /// Ends the stream (checking its end is complete) and returns the decoded bytes.
    fn finish(self) -> Result<Vec<u8>, DecodeError> {
        let over = |sink: Option<&Sink>| sink.is_some_and(|s| s.over);
        let result: io::Result<Sink> = match self {
            Stage::Gzip(mut d) => {
                let r = d.try_finish();
                if over(Some(d.get_ref())) {
                    return Err(DecodeError::TooLarge);
                }
                r.and_then(|()| d.finish())
            }
            // Fewer than two bytes: no deflate stream is that short.
            Stage::DeflateStart(..) => Err(io::Error::other("truncated deflate body")),
            Stage::Zlib(mut d) => {
                let r = d.try_finish();
                if over(Some(d.get_ref())) {
                    return Err(DecodeError::TooLarge);
                }
                r.and_then(|()| d.finish())
            }
            Stage::RawDeflate(mut d) => {
                let r = d.try_finish();
                if over(Some(d.get_ref())) {
                    return Err(DecodeError::TooLarge);
                }
                r.and_then(|()| d.finish())
            }
            #[cfg(feature = "br")]
            Stage::Br(d) => match d.into_inner() {
                Ok(sink) => Ok(sink),
                Err(sink) if sink.over => return Err(DecodeError::TooLarge),
                Err(_) => Err(io::Error::other("truncated or corrupt brotli")),
            },
            #[cfg(feature = "zstd")]
            Stage::Zstd(mut d) => {
                let r = d.do_finish();
                if over(Some(d.get_ref())) {
                    return Err(DecodeError::TooLarge);
                }
                r.map(|()| d.into_inner())
            }
            Stage::Done => Err(io::Error::other("decoder not available")),
        };
        match result {
            Ok(sink) if sink.over => Err(DecodeError::TooLarge),
            Ok(sink) => Ok(sink.buf),
            Err(_) => Err(DecodeError::Corrupt),
        }
    }
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Stage::Gzip(_) => "gzip",
            Stage::DeflateStart(..) => "deflate",
            Stage::Zlib(_) => "zlib",
            Stage::RawDeflate(_) => "raw-deflate",
            #[cfg(feature = "br")]
            Stage::Br(_) => "br",
            #[cfg(feature = "zstd")]
            Stage::Zstd(_) => "zstd",
            Stage::Done => "done",
        };
        f.write_str(name)
    }
}

/// Feeds compressed chunks as they arrive; memory stays within the cap plus the codec's window (at most 32 KiB for
/// gzip and deflate, 16 MiB for Brotli, 8 MB for zstd) and buffers.
#[derive(Debug)]
pub(crate) struct Decoder {
    /// The last coding listed, decoded as the body arrives.
    first: Stage,
    /// The codings listed before it, undone afterwards, last listed first.
    rest: Vec<Coding>,
    cap: usize,
    input: u64,
    max_input: u64,
}

impl Decoder {
    /// Decodes `codings` (in the order the `Content-Encoding` lists them, so the last one is undone first) into at
    /// most `cap` bytes. Compressed input is capped too, at `cap + cap / 16 + 1024` (incompressible data grows a
    /// little), so a stream of empty members cannot run forever.
    pub(crate) fn new(codings: &[Coding], cap: usize) -> Self {
        let mut rest: Vec<Coding> = codings.to_vec();
        let last = rest.pop().unwrap_or(Coding::Gzip);
        Self {
            first: Stage::new(last, cap),
            rest,
            cap,
            input: 0,
            max_input: cap as u64 + cap as u64 / 16 + 1024,
        }
    }

    #[cfg(test)]
    pub(crate) fn gzip(cap: usize) -> Self {
        Self::new(&[Coding::Gzip], cap)
    }

    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<(), DecodeError> {
        self.input += data.len() as u64;
        if self.input > self.max_input {
            return Err(DecodeError::TooLarge);
        }
        self.first.write(data).map_err(|_| self.error())
    }

    /// Checks the end of the stream and returns the decoded bytes, after undoing the other codings.
    pub(crate) fn finish(self) -> Result<Bytes, DecodeError> {
        let mut data = self.first.finish()?;
        for coding in self.rest.into_iter().rev() {
            let mut stage = Stage::new(coding, self.cap);
            let fed = stage.write(&data);
            if fed.is_err() {
                return Err(if stage.sink().is_some_and(|s| s.over) {
                    DecodeError::TooLarge
                } else {
                    DecodeError::Corrupt
                });
            }
            data = stage.finish()?;
        }
        Ok(Bytes::from(data))
    }

    fn error(&self) -> DecodeError {
        if self.first.sink().is_some_and(|s| s.over) {
            DecodeError::TooLarge
        } else {
            DecodeError::Corrupt
        }
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.first.sink().map_or(0, |s| s.buf.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode(input: &[u8], cap: usize, chunk: usize) -> Result<Bytes, DecodeError> {
        let mut d = Decoder::gzip(cap);
        for c in input.chunks(chunk.max(1)) {
            d.feed(c)?;
        }
        d.finish()
    }

    #[test]
    fn single_and_multi_member() {
        let mut two = gzip(b"hello, ");
        two.extend(gzip(b"world"));
        for chunk in [1, 3, 7, 1000] {
            assert_eq!(decode(&gzip(b"hello"), 100, chunk).unwrap(), "hello");
            assert_eq!(
                decode(&two, 100, chunk).unwrap(),
                "hello, world",
                "chunk {chunk}"
            );
        }
        assert_eq!(decode(&gzip(b""), 100, 10).unwrap(), "");
    }

    #[test]
    fn corrupt_truncated_and_empty() {
        let good = gzip(&b"some text ".repeat(50));
        assert_eq!(decode(b"", 1000, 10), Err(DecodeError::Corrupt));
        assert_eq!(
            decode(b"not gzip at all", 1000, 10),
            Err(DecodeError::Corrupt)
        );
        for cut in [1, 5, 10, good.len() / 2, good.len() - 4, good.len() - 1] {
            assert_eq!(
                decode(&good[..cut], 1000, 7),
                Err(DecodeError::Corrupt),
                "cut at {cut}"
            );
        }
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x55;
        assert!(decode(&flipped, 1000, 7).is_err());
        let mut bad_crc = good.clone();
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 1;
        assert_eq!(decode(&bad_crc, 1000, 7), Err(DecodeError::Corrupt));
        let mut trailing = good;
        trailing.extend_from_slice(b"garbage!");
        assert_eq!(decode(&trailing, 1000, 7), Err(DecodeError::Corrupt));
    }

    #[test]
    fn cap_on_decoded_bytes_and_on_input() {
        let data = vec![b'a'; 10_000];
        assert_eq!(decode(&gzip(&data), 10_000, 64).unwrap().len(), 10_000);
        assert_eq!(decode(&gzip(&data), 9_999, 64), Err(DecodeError::TooLarge));
        // Many empty members: no output, but the input cap stops them.
        let empty = gzip(b"");
        let many: Vec<u8> = empty
            .iter()
            .copied()
            .cycle()
            .take(empty.len() * 200)
            .collect();
        assert_eq!(decode(&many, 1000, 64), Err(DecodeError::TooLarge));
    }

    #[test]
    fn memory_stays_near_the_cap() {
        let zeros = gzip(&vec![0; 5_000_000]);
        let mut d = Decoder::gzip(1_000_000);
        let mut result = Ok(());
        for c in zeros.chunks(4096) {
            result = d.feed(c);
            assert!(d.capacity() <= 1_000_000, "capacity {}", d.capacity());
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(DecodeError::TooLarge));
    }
}
