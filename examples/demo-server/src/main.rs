//! The tower-kit demo server. `cargo run --release -p demo-server -- --help` lists every flag.

use demo_server::{Config, observability, serve, server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load().unwrap_or_else(|e| e.exit());
    observability::init_tracing();
    let metrics = observability::install_prometheus()?;
    let listener = server::bind(config.listen, &config.server)?;
    serve(listener, config, metrics, demo_server::shutdown_signal()).await?;
    Ok(())
}
