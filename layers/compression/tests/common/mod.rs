//! Helpers shared by the gzip integration tests.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use std::{
    collections::VecDeque,
    io::{Read, Write},
    pin::Pin,
    process::{Command, Stdio},
    task::{Context, Poll},
};

/// A body of given frames, with an optional exact size hint, trailers, and an error after the frames.
#[derive(Debug, Default)]
pub struct TestBody {
    frames: VecDeque<Frame<Bytes>>,
    exact: Option<u64>,
    error: Option<&'static str>,
}

impl TestBody {
    /// Frames of data, size unknown.
    pub fn chunks<I: IntoIterator<Item = Vec<u8>>>(chunks: I) -> Self {
        Self {
            frames: chunks
                .into_iter()
                .map(|c| Frame::data(Bytes::from(c)))
                .collect(),
            ..Self::default()
        }
    }

    /// One frame, size known.
    pub fn full(data: impl Into<Vec<u8>>) -> Self {
        Self::chunks([data.into()]).exact()
    }

    /// Sets the exact size hint to the sum of the data frames.
    pub fn exact(mut self) -> Self {
        self.exact = Some(
            self.frames
                .iter()
                .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
                .sum(),
        );
        self
    }

    pub fn trailers(mut self, trailers: HeaderMap) -> Self {
        self.frames.push_back(Frame::trailers(trailers));
        self
    }

    pub fn then_error(mut self, message: &'static str) -> Self {
        self.error = Some(message);
        self
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Poll::Ready(self.error.take().map(|m| Err(std::io::Error::other(m))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.error.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// A body fed through a channel: frames arrive when the test sends them; dropping the sender ends it.
#[derive(Debug)]
pub struct ChannelBody(pub tokio::sync::mpsc::Receiver<Frame<Bytes>>);

impl ChannelBody {
    pub fn new() -> (tokio::sync::mpsc::Sender<Frame<Bytes>>, Self) {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        (tx, Self(rx))
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

/// Compressible JSON-ish text of `len` bytes.
pub fn text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!(
                "{{\"id\":{i},\"name\":\"item {}\",\"ok\":true}},",
                i * 7 % 13
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

/// Decodes every member with flate2.
pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

/// Decodes with the system's `gzip -dc`.
pub fn system_gunzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("tower-kit-compression tests need the `gzip` binary on PATH");
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        output.status.success(),
        "gzip -d failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Compresses with flate2 (for request bodies).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The content codings, as their `Accept-Encoding` tokens.
pub const CODINGS: [&str; 4] = ["gzip", "deflate", "br", "zstd"];

/// Runs a command-line decoder over `data` (`gzip -dc`, `zstd -dc`), failing with the package to install.
fn system_decode(program: &str, data: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(["-d", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("tower-kit-compression tests need the `{program}` binary on PATH (Debian package `{program}`): {e}")
        });
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        output.status.success(),
        "{program} -d failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Decodes with the system's `zstd -dc` (the reference implementation).
pub fn system_unzstd(data: &[u8]) -> Vec<u8> {
    system_decode("zstd", data)
}

/// Decodes `data` in `coding` with a decoder independent of the encoder: flate2 (miniz_oxide) for gzip and
/// deflate (zlib format), the `brotli` crate's decoder side (brotli-decompressor) for br, and the `zstd` binary
/// (the reference implementation) for zstd.
pub fn decode(coding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => return gunzip(data),
        "deflate" => {
            flate2::read::ZlibDecoder::new(data)
                .read_to_end(&mut out)
                .expect("valid zlib");
        }
        "br" => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .expect("valid brotli");
        }
        "zstd" => return system_unzstd(data),
        other => panic!("unknown coding {other}"),
    }
    out
}

/// Compresses `data` in `coding` with an encoder independent of the layer (for request bodies).
pub fn encode(coding: &str, data: &[u8]) -> Vec<u8> {
    match coding {
        "gzip" => gzip(data),
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "raw-deflate" => {
            let mut e =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "br" => {
            let mut out = Vec::new();
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(data).unwrap();
            drop(w);
            out
        }
        "zstd" => zstd::bulk::compress(data, 3).unwrap(),
        other => panic!("unknown coding {other}"),
    }
}

/// An incremental decoder for one coding: bytes pushed in, decoded bytes out as soon as they can be decoded.
pub enum StreamDecoder {
    /// gzip (flate2).
    Gzip(flate2::write::GzDecoder<Vec<u8>>),
    /// deflate, zlib format (flate2).
    Deflate(flate2::write::ZlibDecoder<Vec<u8>>),
    /// Brotli (the `brotli` crate's decoder).
    Br(Box<brotli::DecompressorWriter<Vec<u8>>>),
    /// zstd (libzstd's streaming decoder).
    Zstd(zstd::stream::write::Decoder<'static, Vec<u8>>),
}

impl StreamDecoder {
    /// A decoder for `coding`.
    pub fn new(coding: &str) -> Self {
        match coding {
            "gzip" => Self::Gzip(flate2::write::GzDecoder::new(Vec::new())),
            "deflate" => Self::Deflate(flate2::write::ZlibDecoder::new(Vec::new())),
            "br" => Self::Br(Box::new(brotli::DecompressorWriter::new(Vec::new(), 4096))),
            "zstd" => Self::Zstd(zstd::stream::write::Decoder::new(Vec::new()).unwrap()),
            other => panic!("unknown coding {other}"),
        }
    }

    /// Feeds compressed bytes.
    pub fn push(&mut self, data: &[u8]) {
        match self {
            Self::Gzip(d) => {
                d.write_all(data).unwrap();
                d.flush().unwrap();
            }
            Self::Deflate(d) => {
                d.write_all(data).unwrap();
                d.flush().unwrap();
            }
            Self::Br(d) => {
                d.write_all(data).unwrap();
                d.flush().unwrap();
            }
            Self::Zstd(d) => {
                d.write_all(data).unwrap();
                d.flush().unwrap();
            }
        }
    }

    /// Everything decoded so far.
    pub fn decoded(&self) -> &[u8] {
        match self {
            Self::Gzip(d) => d.get_ref(),
            Self::Deflate(d) => d.get_ref(),
            Self::Br(d) => d.get_ref(),
            Self::Zstd(d) => d.get_ref(),
        }
    }
}
