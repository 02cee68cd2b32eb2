//! A multi-member gzip decoder with a cap on decoded (and on compressed) bytes.

use bytes::Bytes;
use flate2::write::MultiGzDecoder;
use std::io::{self, Write};

/// Why a body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// More than the cap of decoded bytes (or of compressed input).
    TooLarge,
    /// Not gzip, corrupt, or truncated.
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

/// Feeds compressed chunks as they arrive; memory stays within the cap plus flate2's 32 KiB window and buffer.
#[derive(Debug)]
pub(crate) struct Decoder {
    inner: MultiGzDecoder<Sink>,
    input: u64,
    max_input: u64,
}

impl Decoder {
    /// Decodes at most `cap` bytes. Compressed input is capped too, at `cap + cap / 16 + 1024` (incompressible data
    /// grows a little), so a stream of empty members cannot run forever.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            inner: MultiGzDecoder::new(Sink {
                buf: Vec::new(),
                cap,
                over: false,
            }),
            input: 0,
            max_input: cap as u64 + cap as u64 / 16 + 1024,
        }
    }

    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<(), DecodeError> {
        self.input += data.len() as u64;
        if self.input > self.max_input {
            return Err(DecodeError::TooLarge);
        }
        self.inner.write_all(data).map_err(|_| self.error())
    }

    /// Checks the end of the last member (CRC and length) and returns the decoded bytes.
    pub(crate) fn finish(mut self) -> Result<Bytes, DecodeError> {
        self.inner.try_finish().map_err(|_| self.error())?;
        Ok(Bytes::from(std::mem::take(&mut self.inner.get_mut().buf)))
    }

    fn error(&self) -> DecodeError {
        if self.inner.get_ref().over {
            DecodeError::TooLarge
        } else {
            DecodeError::Corrupt
        }
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.inner.get_ref().buf.capacity()
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
        let mut d = Decoder::new(cap);
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
        let mut d = Decoder::new(1_000_000);
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
