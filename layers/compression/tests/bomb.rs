//! Decompression bombs for every coding, each a body that would inflate to 10 GiB of zeros, generated on the fly
//! and answered 413 by RequestDecompressionLayer after reading a sliver of it, with bounded memory. Their own test
//! binary, so the process's peak memory (VmHWM) is these tests'.
//!
//! - gzip and deflate (zlib): deflate with a full flush after every MiB makes every block after the first identical
//!   (about 1 KiB per MiB: 10 MiB on the wire);
//! - br: Brotli with a flush after every MiB, likewise repeated (the steady-state chunk is checked to repeat);
//! - zstd: RLE blocks of 128 KiB, 4 bytes each (320 KiB on the wire).

mod common;

use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress};
use http::{Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use std::{
    convert::Infallible,
    io::{Read, Write},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};
use tower::{Layer, ServiceExt, service_fn};
use tower_kit_compression::{DecodedBody, RequestDecompressionLayer};

const MIB: usize = 1024 * 1024;

/// A bomb body: `head` parts, then `repeat` `repeats` times, then `tail`.
struct Bomb {
    parts: std::vec::IntoIter<Bytes>,
    repeat: Bytes,
    repeats_left: u64,
    tail: Option<Bytes>,
    pulled: Arc<AtomicU64>,
}

impl Bomb {
    fn build(head: Vec<Bytes>, repeat: Bytes, repeats: u64, tail: Bytes) -> (Self, u64) {
        let total = head.iter().map(|p| p.len() as u64).sum::<u64>()
            + repeats * repeat.len() as u64
            + tail.len() as u64;
        let bomb = Bomb {
            parts: head.into_iter(),
            repeat,
            repeats_left: repeats,
            tail: Some(tail),
            pulled: Arc::default(),
        };
        (bomb, total)
    }

    /// Raw deflate of `mebibytes` MiB of zeros: the first block, the repeated one, the final block.
    fn deflate_blocks() -> (Bytes, Bytes, Bytes) {
        let zeros = vec![0u8; MIB];
        let mut deflate = Compress::new(Compression::best(), false);
        let mut block = |input: &[u8], flush| {
            let mut out = Vec::with_capacity(8 * 1024);
            let before = deflate.total_in();
            while deflate.total_in() - before < input.len() as u64 || out.is_empty() {
                let consumed = (deflate.total_in() - before) as usize;
                out.reserve(8 * 1024);
                deflate
                    .compress_vec(&input[consumed..], &mut out, flush)
                    .unwrap();
                if input.is_empty() {
                    break;
                }
            }
            Bytes::from(out)
        };
        let first = block(&zeros, FlushCompress::Full);
        let repeat = block(&zeros, FlushCompress::Full);
        assert_eq!(
            repeat,
            block(&zeros, FlushCompress::Full),
            "steady-state blocks are identical"
        );
        let last = block(&[], FlushCompress::Finish);
        (first, repeat, last)
    }

    fn gzip(mebibytes: u64) -> (Self, u64) {
        let (first, repeat, last) = Self::deflate_blocks();
        let mut crc_mib = Crc::new();
        crc_mib.update(&vec![0u8; MIB]);
        let mut crc = Crc::new();
        for _ in 0..mebibytes {
            crc.combine(&crc_mib);
        }
        let mut tail = last.to_vec();
        tail.extend_from_slice(&crc.sum().to_le_bytes());
        tail.extend_from_slice(&((mebibytes * MIB as u64) as u32).to_le_bytes());
        let header = Bytes::from_static(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
        Self::build(
            vec![header, first],
            repeat,
            mebibytes - 1,
            Bytes::from(tail),
        )
    }

    /// The zlib format (HTTP `deflate`): header, the deflate blocks, Adler-32 (for zeros: a = 1, b = n mod 65521).
    fn zlib(mebibytes: u64) -> (Self, u64) {
        let (first, repeat, last) = Self::deflate_blocks();
        let n = mebibytes * MIB as u64;
        let adler = (((n % 65521) as u32) << 16) | 1;
        let mut tail = last.to_vec();
        tail.extend_from_slice(&adler.to_be_bytes());
        let header = Bytes::from_static(&[0x78, 0xda]);
        Self::build(
            vec![header, first],
            repeat,
            mebibytes - 1,
            Bytes::from(tail),
        )
    }

    /// Brotli, a flush after every MiB: after a few MiB every chunk is the same bytes.
    fn br(mebibytes: u64) -> (Self, u64) {
        let zeros = vec![0u8; MIB];
        let mut writer = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
        let chunk = |writer: &mut brotli::CompressorWriter<Vec<u8>>| {
            writer.write_all(&zeros).unwrap();
            writer.flush().unwrap();
            Bytes::from(std::mem::take(writer.get_mut()))
        };
        let mut head = Vec::new();
        for _ in 0..4 {
            head.push(chunk(&mut writer));
        }
        let repeat = chunk(&mut writer);
        assert_eq!(
            repeat,
            chunk(&mut writer),
            "steady-state chunks are identical"
        );
        let tail = Bytes::from(writer.into_inner());
        Self::build(head, repeat, mebibytes - 4, tail)
    }

    /// zstd: a frame (128 KiB window, no content size) of RLE blocks of 128 KiB of zeros, then an empty last block.
    fn zstd(mebibytes: u64) -> (Self, u64) {
        let header = Bytes::from_static(&[0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38]);
        let block_size: u32 = 128 * 1024;
        let block_header = (block_size << 3) | (1 << 1);
        let mut one_mib = Vec::new();
        for _ in 0..(MIB as u32 / block_size) {
            one_mib.extend_from_slice(&block_header.to_le_bytes()[..3]);
            one_mib.push(0);
        }
        let last = Bytes::from_static(&[0x01, 0x00, 0x00]);
        Self::build(vec![header], Bytes::from(one_mib), mebibytes, last)
    }

    fn new(coding: &str, mebibytes: u64) -> (Self, u64) {
        match coding {
            "gzip" => Self::gzip(mebibytes),
            "deflate" => Self::zlib(mebibytes),
            "br" => Self::br(mebibytes),
            "zstd" => Self::zstd(mebibytes),
            other => panic!("unknown coding {other}"),
        }
    }
}

impl Body for Bomb {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = if let Some(part) = self.parts.next() {
            Some(part)
        } else if self.repeats_left > 0 {
            self.repeats_left -= 1;
            Some(self.repeat.clone())
        } else {
            self.tail.take()
        };
        if let Some(chunk) = &next {
            self.pulled.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        Poll::Ready(next.map(|c| Ok(Frame::data(c))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn the_generators_make_valid_streams() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for coding in common::CODINGS {
        let (bomb, total) = Bomb::new(coding, 8);
        let bytes = runtime.block_on(async {
            use http_body_util::BodyExt;
            bomb.collect().await.unwrap().to_bytes().to_vec()
        });
        assert_eq!(bytes.len() as u64, total, "{coding}");
        let out = match coding {
            "gzip" => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&bytes[..])
                    .read_to_end(&mut out)
                    .unwrap();
                out
            }
            other => common::decode(other, &bytes),
        };
        assert_eq!(out.len(), 8 * MIB, "{coding}");
        assert!(out.iter().all(|&b| b == 0), "{coding}");
    }
}

async fn bomb_is_413(coding: &str) {
    let (mut bomb, total) = Bomb::new(coding, 10 * 1024);
    let pulled = Arc::clone(&bomb.pulled);
    bomb.pulled = Arc::clone(&pulled);
    assert!(total <= 20 * MIB as u64, "{coding}: bomb is {total} bytes");

    let service = RequestDecompressionLayer::new().layer(service_fn(
        |_req: Request<DecodedBody<Bomb>>| async {
            panic!("the inner service must not be called");
            #[allow(unreachable_code)]
            Ok::<Response<http_body_util::Empty<Bytes>>, Infallible>(Response::new(
                http_body_util::Empty::new(),
            ))
        },
    ));
    let request = Request::post("/upload")
        .header(header::CONTENT_ENCODING, coding)
        .body(bomb)
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{coding}");

    // It stopped reading right after the cap (10 MiB decoded), far from the end of the input.
    let read = pulled.load(Ordering::Relaxed);
    assert!(
        read < 64 * 1024 || read < total / 50,
        "{coding}: read {read} of {total} bytes"
    );
    eprintln!("{coding}: a {total}-byte bomb of 10 GiB refused after reading {read} bytes");
    // Memory: the cap (10 MiB) plus the decoder, far from 10 GiB (the four bombs may run at once).
    let peak = peak_rss_bytes();
    assert!(peak < 256 * MIB as u64, "{coding}: peak RSS {peak} bytes");
}

#[tokio::test]
async fn gzip_ten_gib_bomb_is_413_with_bounded_memory() {
    bomb_is_413("gzip").await;
}

#[tokio::test]
async fn deflate_ten_gib_bomb_is_413_with_bounded_memory() {
    bomb_is_413("deflate").await;
}

#[tokio::test]
async fn br_ten_gib_bomb_is_413_with_bounded_memory() {
    bomb_is_413("br").await;
}

#[tokio::test]
async fn zstd_ten_gib_bomb_is_413_with_bounded_memory() {
    bomb_is_413("zstd").await;
}
