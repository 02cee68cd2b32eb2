//! The tower-kit demo server. `cargo run --release -p demo-server -- --help` lists every flag.

use demo_server::{Config, observability, serve, server};

/// jemalloc with background purging: memory freed after a burst (thousands of event streams) goes back to the
/// OS within seconds; the book's compression chapter ("Memory") has the figures.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load().unwrap_or_else(|e| e.exit());
    observability::init_tracing(config.log_format);
    let metrics = observability::install_prometheus()?;
    let listener = server::bind(config.listen, &config.server)?;
    serve(listener, config, metrics, demo_server::shutdown_signal()).await?;
    Ok(())
}
