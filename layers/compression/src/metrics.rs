//! Metric names and the calls that record them (through the `metrics` facade).

use crate::{codec::Coding, policy::SkipReason};

/// Counter: responses compressed, labelled `coding` (`gzip`, `deflate`, `br`, `zstd`) and `engine` (`libdeflate`
/// for one-shot gzip and deflate, `zlib-rs` for their streams, `zstd`, `brotli`).
pub const COMPRESSED: &str = "tower_kit.compression.compressed";
/// Counter: responses sent uncompressed, labelled `reason` ([`SkipReason::as_str`]).
pub const SKIPPED: &str = "tower_kit.compression.skipped";
/// Counter: bytes given to the compressor, labelled `coding` and `engine`.
pub const BYTES_IN: &str = "tower_kit.compression.bytes_in";
/// Counter: compressed bytes produced, labelled `coding` and `engine`.
pub const BYTES_OUT: &str = "tower_kit.compression.bytes_out";
/// Counter: encoded request bodies, labelled `outcome` (`decoded`, `too_large`, `corrupt`, `unsupported`, and
/// `no_body` for a request with a `Content-Encoding` but no body, passed through untouched).
pub const REQUESTS_DECODED: &str = "tower_kit.compression.request.decoded";

/// The engine label of a coding, one-shot or streamed.
pub(crate) fn engine(coding: Coding, stream: bool) -> &'static str {
    match (coding, stream) {
        (Coding::Gzip | Coding::Deflate, false) => "libdeflate",
        (Coding::Gzip | Coding::Deflate, true) => "zlib-rs",
        (Coding::Br, _) => "brotli",
        (Coding::Zstd, _) => "zstd",
    }
}

pub(crate) fn skipped(reason: SkipReason) {
    metrics::counter!(SKIPPED, "reason" => reason.as_str()).increment(1);
}

pub(crate) fn compressed(coding: Coding, stream: bool) {
    metrics::counter!(COMPRESSED, "coding" => coding.as_str(), "engine" => engine(coding, stream))
        .increment(1);
}

pub(crate) fn bytes(coding: Coding, stream: bool, bytes_in: usize, bytes_out: usize) {
    let engine = engine(coding, stream);
    if bytes_in > 0 {
        metrics::counter!(BYTES_IN, "coding" => coding.as_str(), "engine" => engine)
            .increment(bytes_in as u64);
    }
    if bytes_out > 0 {
        metrics::counter!(BYTES_OUT, "coding" => coding.as_str(), "engine" => engine)
            .increment(bytes_out as u64);
    }
}

pub(crate) fn request(outcome: &'static str) {
    metrics::counter!(REQUESTS_DECODED, "outcome" => outcome).increment(1);
}
