//! Every level of every DEFLATE engine at hand on the benchmarks' 100 KiB JSON: time per body (best of 7 runs of 20)
//! and gzip size. This is the speed/size frontier the gzip layer's default level is chosen on.
//! `cargo run --release -p bench-gzip --example levels [size-in-KiB]`
#![allow(missing_docs)]

#[allow(dead_code)]
#[path = "../payload.rs"]
mod payload;

use std::time::Instant;

/// Gzip framing around a raw DEFLATE stream: 10 bytes of header, 8 of trailer.
const GZIP_FRAMING: usize = 18;

fn best_of<F: FnMut() -> usize>(mut f: F) -> (f64, usize) {
    let (mut best, mut size) = (f64::MAX, 0);
    for _ in 0..7 {
        let n = 20;
        let t = Instant::now();
        for _ in 0..n {
            size = f();
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e3 / f64::from(n));
    }
    (best, size)
}

fn main() {
    let kib = std::env::args()
        .nth(1)
        .map_or(100, |a| a.parse().expect("a size in KiB"));
    let data = payload::json(kib * 1024);
    let (reference, reference_size) =
        best_of(|| miniz_oxide::deflate::compress_to_vec(&data, 6).len() + GZIP_FRAMING);
    println!(
        "{kib} KiB of JSON; ratio = miniz_oxide level 6 (tower-http's default) time / engine time"
    );
    println!("{:<16} {:>9} {:>9} {:>6}", "engine", "ms", "bytes", "ratio");
    let row = |name: String, (ms, size): (f64, usize)| {
        let mark = if size <= reference_size {
            ""
        } else {
            "  (larger)"
        };
        println!(
            "{name:<16} {ms:>9.3} {size:>9} {:>6.2}{mark}",
            reference / ms
        );
    };
    row("miniz_oxide 6".into(), (reference, reference_size));
    for level in 1..=9 {
        row(
            format!("zlib-rs {level}"),
            best_of(|| {
                let mut c = flate2::Compress::new(flate2::Compression::new(level), false);
                let mut out = Vec::with_capacity(data.len());
                c.compress_vec(&data, &mut out, flate2::FlushCompress::Finish)
                    .unwrap();
                out.len() + GZIP_FRAMING
            }),
        );
    }
    for level in 1..=12 {
        let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).unwrap());
        let mut out = vec![0u8; c.gzip_compress_bound(data.len())];
        row(
            format!("libdeflate {level}"),
            best_of(|| c.gzip_compress(&data, &mut out).unwrap()),
        );
    }
}
