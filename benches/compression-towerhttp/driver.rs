//! The loop of the instruction-count profile drivers (tower-kit's `layers/compression/examples/profile.rs` and
//! tower-http's `profile_towerhttp.rs`), shared so both sides run the same requests through the same calls. Needs
//! `mod payload` (`benches/gzip/payload.rs`) at the crate root.

use std::hint::black_box;

/// The command line: coding (`gzip`, `deflate`, `br`, `zstd`), payload size in bytes, number of requests, and
/// optionally `inline` (tower-kit only: compress every body on the async worker).
pub(crate) struct Args {
    pub(crate) coding: String,
    pub(crate) size: usize,
    pub(crate) requests: usize,
    pub(crate) inline: bool,
}

pub(crate) fn args() -> Args {
    let args: Vec<String> = std::env::args().collect();
    Args {
        coding: args.get(1).map_or("br", String::as_str).to_owned(),
        size: args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2048),
        requests: args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100),
        inline: args.get(4).is_some_and(|a| a == "inline"),
    }
}

/// The only function callgrind counts (`--toggle-collect='*profile_loop*'`).
#[inline(never)]
fn profile_loop(requests: usize, one: &impl Fn() -> usize) -> usize {
    let mut total = 0;
    for _ in 0..requests {
        total += black_box(one());
    }
    total
}

/// One warm-up request, then `args.requests` through `service()` (a fresh service per request, as the benches do);
/// prints the output size and the wall time per response.
pub(crate) fn drive<S, B>(label: &str, args: &Args, service: impl Fn() -> S)
where
    S: tower::Service<http::Request<()>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let one = || {
        let (headers, len) = runtime.block_on(crate::payload::fetch(service(), &args.coding));
        assert_eq!(
            headers[http::header::CONTENT_ENCODING],
            args.coding.as_str()
        );
        len
    };
    let warm = one();
    let started = std::time::Instant::now();
    let total = profile_loop(args.requests, &one);
    let elapsed = started.elapsed();
    // Then each request timed on its own: on a busy machine the fastest and the median requests are steadier than
    // the mean, which takes in every time the process was descheduled.
    let mut times: Vec<f64> = (0..args.requests)
        .map(|_| {
            let started = std::time::Instant::now();
            black_box(one());
            started.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "{label} {} {} B -> {warm} B; {} requests, {:.1} µs each ({total} B); timed one by one: fastest {:.1} µs, median {:.1} µs",
        args.coding,
        args.size,
        args.requests,
        elapsed.as_secs_f64() * 1e6 / args.requests as f64,
        times.first().copied().unwrap_or_default(),
        times.get(times.len() / 2).copied().unwrap_or_default(),
    );
}
