//! `cargo run --release -p grpc-server -- --listen 127.0.0.1:50051`

use clap::Parser;
use std::{net::SocketAddr, num::NonZeroU32};

/// A tonic gRPC server (`inventory.Inventory/GetItem`) behind tower-kit's timing, rate-limit and concurrency layers.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Calls per second allowed per client IP.
    #[arg(long, env = "PER_SECOND", default_value = "100")]
    per_second: NonZeroU32,
    /// Calls in flight at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 64)]
    max_in_flight: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = Args::parse();
    let _ = tracing_subscriber::fmt().try_init();
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_recommended_naming(true)
        .install_recorder()?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!(
        "grpc-server listening on {} (metrics: printed on exit)",
        listener.local_addr()?
    );
    let limits = grpc_server::Limits {
        per_second: args.per_second,
        max_in_flight: args.max_in_flight,
    };
    tokio::select! {
        result = grpc_server::serve(listener, limits, tower_kit::timing::TimingLayer::new()) => result?,
        _ = tokio::signal::ctrl_c() => {}
    }
    println!("{}", prometheus.render());
    Ok(())
}
