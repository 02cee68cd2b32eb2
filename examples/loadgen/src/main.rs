//! `cargo run --release -p loadgen -- --addr 127.0.0.1:3000 --path /api/items --connections 64 --duration 10s`

use clap::Parser;
use std::{net::SocketAddr, time::Duration};

/// Closed-loop HTTP/1.1 load against a server on this machine; prints requests/s, p50, p99 and statuses.
#[derive(Debug, Parser)]
struct Args {
    /// Server address (loopback only).
    #[arg(long, env = "LOADGEN_ADDR", default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// A path to request; repeat for a mix (cycled in order).
    #[arg(long = "path", default_value = "/api/items/1")]
    paths: Vec<String>,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Stop after this many requests.
    #[arg(long, default_value_t = 10_000_000)]
    max_requests: u64,
    /// A request header `name: value`; repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        return Err("loadgen only targets servers on this machine (a loopback address)".into());
    }
    let headers = args
        .headers
        .iter()
        .filter_map(|h| h.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let report = loadgen::run(loadgen::Plan {
        addr: args.addr,
        paths: args.paths,
        connections: args.connections,
        duration: Duration::from_secs_f64(args.seconds.clamp(0.1, 3600.0)),
        max_requests: args.max_requests,
        headers,
    })
    .await;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{:.0} req/s  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} requests, {} transport errors, statuses {:?})",
            report.requests_per_second,
            report.p50_ms,
            report.p99_ms,
            report.max_ms,
            report.requests,
            report.transport_errors,
            report.statuses
        );
    }
    Ok(())
}
