//! tower-http's side of the instruction-count profile driver (`layers/compression/examples/profile.rs`): the same
//! payloads and requests through tower-http's `CompressionLayer` at its defaults, `N` times in a loop.
//!
//! ```sh
//! cargo build --release -p bench-compression-towerhttp --example profile_towerhttp
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*profile_loop*' \
//!     target/release/examples/profile_towerhttp br 2048 100
//! callgrind_annotate --inclusive=yes callgrind.out.<pid>
//! ```
//!
//! Arguments: coding (`gzip`, `deflate`, `br`, `zstd`), payload size in bytes, number of requests. Only
//! `profile_loop` is counted, after one warm-up request.
#![allow(missing_docs)]

// The request harness is shared with the criterion benches; this driver takes its size from the command line.
#[allow(dead_code)]
#[path = "../gzip/payload.rs"]
mod payload;

#[path = "driver.rs"]
mod driver;

use bytes::Bytes;
use tower::Layer;
use tower_http::compression::CompressionLayer;

fn main() {
    let args = driver::args();
    if args.inline {
        eprintln!("tower-http always compresses on the async worker: `inline` changes nothing");
    }
    let layer = CompressionLayer::new();
    let inner = payload::json_service(Bytes::from(payload::json(args.size)));
    driver::drive("tower-http", &args, || layer.layer(inner.clone()));
}
