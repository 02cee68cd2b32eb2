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
