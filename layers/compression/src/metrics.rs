//! Metric names and the calls that record them (through the `metrics` facade).

use crate::policy::SkipReason;

/// Counter: responses compressed, labelled `engine` (`libdeflate` for one-shot bodies, `zlib-rs` for streams).
pub const COMPRESSED: &str = "tower_kit.gzip.compressed";
/// Counter: responses sent uncompressed, labelled `reason` ([`SkipReason::as_str`]).
pub const SKIPPED: &str = "tower_kit.gzip.skipped";
/// Counter: bytes given to the compressor, labelled `engine`.
pub const BYTES_IN: &str = "tower_kit.gzip.bytes_in";
/// Counter: compressed bytes produced, labelled `engine`.
pub const BYTES_OUT: &str = "tower_kit.gzip.bytes_out";
/// Counter: gzip request bodies, labelled `outcome` (`decoded`, `too_large`, `corrupt`, `unsupported`, and
/// `no_body` for a request with a `Content-Encoding` but no body, passed through untouched).
pub const REQUESTS_DECODED: &str = "tower_kit.gzip.request.decoded";

/// Engine label values.
pub(crate) const LIBDEFLATE: &str = "libdeflate";
pub(crate) const ZLIB_RS: &str = "zlib-rs";

pub(crate) fn skipped(reason: SkipReason) {
    metrics::counter!(SKIPPED, "reason" => reason.as_str()).increment(1);
}

pub(crate) fn compressed(engine: &'static str) {
    metrics::counter!(COMPRESSED, "engine" => engine).increment(1);
}

pub(crate) fn bytes(engine: &'static str, bytes_in: usize, bytes_out: usize) {
    if bytes_in > 0 {
        metrics::counter!(BYTES_IN, "engine" => engine).increment(bytes_in as u64);
    }
    if bytes_out > 0 {
        metrics::counter!(BYTES_OUT, "engine" => engine).increment(bytes_out as u64);
    }
}

pub(crate) fn request(outcome: &'static str) {
    metrics::counter!(REQUESTS_DECODED, "outcome" => outcome).increment(1);
}
