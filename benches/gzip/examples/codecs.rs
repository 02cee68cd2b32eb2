//! zstd and Brotli as this crate's one-shot path drives them (zstd: whole body at once, content size pledged;
//! Brotli: window sized to the body, size hinted) next to how tower-http drives them (a streaming encoder without a
//! size: zstd at the level's default parameters, Brotli with a 4 MiB window), at several levels, on the benchmarks'
//! JSON: output size and time per body (best of 7 runs of 20). The frontier the zstd and Brotli defaults are chosen
//! on. `cargo run --release -p bench-gzip --example codecs`
#![allow(missing_docs)]

#[allow(dead_code)]
#[path = "../payload.rs"]
mod payload;

use std::{io::Write, time::Instant};

fn best_of<F: FnMut() -> usize>(mut f: F) -> (f64, usize) {
    let (mut best, mut size) = (f64::MAX, 0);
    for _ in 0..7 {
        let n = 20;
        let t = Instant::now();
        for _ in 0..n {
            size = f();
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e6 / f64::from(n));
    }
    (best, size)
}

fn main() {
    for &(name, size) in payload::SIZES {
        let json = payload::json(size);
        for level in 1..=5 {
            let mut bulk = zstd::bulk::Compressor::new(level).unwrap();
            let (t1, s1) = best_of(|| bulk.compress(&json).unwrap().len());
            let (t2, s2) = best_of(|| {
                let mut e = zstd::stream::write::Encoder::new(Vec::new(), level).unwrap();
                for chunk in json.chunks(8 * 1024) {
                    e.write_all(chunk).unwrap();
                }
                e.finish().unwrap().len()
            });
            println!("{name} zstd {level}: pledged {s1} B {t1:.1} µs | streamed {s2} B {t2:.1} µs");
        }
        for quality in 3..=5u32 {
            let bits = (usize::BITS - (json.len() - 1).leading_zeros()).clamp(10, 22);
            let (t1, s1) = best_of(|| {
                let params = brotli::enc::BrotliEncoderParams {
                    quality: quality as i32,
                    lgwin: bits as i32,
                    size_hint: json.len(),
                    ..Default::default()
                };
                let mut w = brotli::CompressorWriter::with_params(Vec::new(), 4096, &params);
                w.write_all(&json).unwrap();
                w.into_inner().len()
            });
            let (t2, s2) = best_of(|| {
                let mut w = brotli::CompressorWriter::new(Vec::new(), 4096, quality, 22);
                for chunk in json.chunks(8 * 1024) {
                    w.write_all(chunk).unwrap();
                }
                w.into_inner().len()
            });
            println!(
                "{name} br {quality}: sized window {s1} B {t1:.1} µs | 4 MiB window {s2} B {t2:.1} µs"
            );
        }
    }
}
