//! A driver for instruction-count profiles of the one-shot path: the same JSON payloads and requests as the
//! criterion benches (`benches/gzip/payload.rs`), through `CompressionLayer` at its defaults, `N` times in a loop.
//!
//! ```sh
//! cargo build --release -p tower-kit-compression --example profile
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*profile_loop*' \
//!     target/release/examples/profile br 2048 100 inline
//! callgrind_annotate --inclusive=yes callgrind.out.<pid>
//! ```
//!
//! Arguments: coding (`gzip`, `deflate`, `br`, `zstd`), payload size in bytes, number of requests, and optionally
//! `inline` to compress every body on the async worker (`offload_threshold(u64::MAX)`; callgrind only counts the
//! thread that runs `profile_loop`). Only `profile_loop` is counted, after one warm-up request; divide by the
//! number of requests for the cost per response. tower-http's side is
//! `cargo build --release -p bench-compression-towerhttp --example profile_towerhttp`, same arguments.
#![allow(missing_docs)]

// The request harness is shared with the criterion benches; this driver takes its size from the command line.
#[allow(dead_code)]
#[path = "../../../benches/gzip/payload.rs"]
mod payload;

#[path = "../../../benches/compression-towerhttp/driver.rs"]
mod driver;

use bytes::Bytes;
use tower::Layer;
use tower_kit_compression::CompressionLayer;

fn main() {
    let args = driver::args();
    let mut builder = CompressionLayer::builder();
    if args.inline {
        builder = builder.offload_threshold(u64::MAX);
    }
    let layer = builder.build().expect("defaults");
    let inner = payload::json_service(Bytes::from(payload::json(args.size)));
    driver::drive("tower-kit", &args, || layer.layer(inner.clone()));
}
