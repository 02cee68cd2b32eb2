//! `cache-proxy --listen 127.0.0.1:8080 --upstream http://127.0.0.1:3000`: see `--help`.

use cache_proxy::{Args, Proxy, cache_builder, serve};
use clap::Parser;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cache = cache_builder(&args).build()?;
    let proxy = Proxy::with_timeouts(args.upstream.clone(), args.upstream_timeouts(), &cache);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(listen = %args.listen, upstream = ?args.upstream, "cache-proxy listening");
    tokio::select! {
        result = serve(listener, proxy) => result?,
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
    }
    Ok(())
}
