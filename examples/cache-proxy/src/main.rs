//! `cache-proxy --listen 127.0.0.1:8080 --upstream http://127.0.0.1:3000`: see `--help`.

use cache_proxy::{Args, Proxy, cache_builder, serve_with};
use clap::Parser;

/// jemalloc with background purging: memory freed after a burst (thousands of event streams) goes back to the
/// OS within seconds; the book's gzip chapter ("Memory") has the figures.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let serve_config = args.serve_config()?;
    let cache = cache_builder(&args).build()?;
    let proxy = Proxy::with_timeouts(args.upstream.clone(), args.upstream_timeouts(), &cache);
    let listener = tower_kit::serve::bind(args.listen, serve_config.listen_backlog())?;
    tracing::info!(
        listen = %args.listen,
        upstream = ?args.upstream,
        max_connections = serve_config.max_connections(),
        "cache-proxy listening"
    );
    serve_with(listener, proxy, &serve_config, async {
        shutdown_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
    })
    .await?;
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
