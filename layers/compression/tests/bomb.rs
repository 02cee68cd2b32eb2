//! A gzip bomb: about 10 MiB on the wire that would inflate to 10 GiB, generated on the fly, answered 413 by
//! RequestDecompressionLayer after reading a sliver of it, with bounded memory. Its own test binary, so the process's peak
//! memory (VmHWM) is this test's.

use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress};
use http::{Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use std::{
    convert::Infallible,
    io::Read,
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

/// A gzip member of `mebibytes` MiB of zeros, produced lazily: the header, one block per MiB (deflate with a full
/// flush after each MiB makes every block after the first identical), the final block and the CRC trailer.
struct Bomb {
    parts: std::vec::IntoIter<Bytes>,
    repeat: Bytes,
    repeats_left: u64,
    tail: Option<Bytes>,
    pulled: Arc<AtomicU64>,
}

impl Bomb {
    fn new(mebibytes: u64, pulled: Arc<AtomicU64>) -> (Self, u64) {
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
        let mut crc_mib = Crc::new();
        crc_mib.update(&zeros);
        let mut crc = Crc::new();
        for _ in 0..mebibytes {
            crc.combine(&crc_mib);
        }
        let mut tail = last.to_vec();
        tail.extend_from_slice(&crc.sum().to_le_bytes());
        tail.extend_from_slice(&((mebibytes * MIB as u64) as u32).to_le_bytes());
        let header = Bytes::from_static(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
        let total = (header.len() + first.len() + tail.len()) as u64
            + (mebibytes - 1) * repeat.len() as u64;
        let bomb = Bomb {
            parts: vec![header, first].into_iter(),
            repeat,
            repeats_left: mebibytes - 1,
            tail: Some(Bytes::from(tail)),
            pulled,
        };
        (bomb, total)
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
fn the_generator_makes_valid_gzip() {
    let (bomb, total) = Bomb::new(4, Arc::default());
    let mut bytes = Vec::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        use http_body_util::BodyExt;
        bytes = bomb.collect().await.unwrap().to_bytes().to_vec();
    });
    assert_eq!(bytes.len() as u64, total);
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out.len(), 4 * MIB);
    assert!(out.iter().all(|&b| b == 0));
}

#[tokio::test]
async fn ten_gib_bomb_is_413_with_bounded_memory() {
    let pulled = Arc::new(AtomicU64::new(0));
    let (bomb, total) = Bomb::new(10 * 1024, Arc::clone(&pulled));
    // About 10 MiB on the wire for 10 GiB of zeros (deflate's best case is about 1:1000).
    assert!(
        (5 * MIB as u64..=20 * MIB as u64).contains(&total),
        "bomb is {total} bytes"
    );

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
        .header(header::CONTENT_ENCODING, "gzip")
        .body(bomb)
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // It stopped reading right after the cap: 10 MiB decoded is about 10 KiB of this input (plus one block).
    let read = pulled.load(Ordering::Relaxed);
    assert!(read < 64 * 1024, "read {read} of {total} bytes");
    // Memory: the cap (10 MiB) plus the decoder, far from 10 GiB.
    let peak = peak_rss_bytes();
    assert!(peak < 200 * MIB as u64, "peak RSS {peak} bytes");
}
