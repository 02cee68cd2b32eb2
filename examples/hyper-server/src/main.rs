//! `cargo run --release -p hyper-server -- 127.0.0.1:3003`

use std::num::NonZeroU32;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3003".into());
    let limits = hyper_server::Limits {
        per_second: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
        max_in_flight: 256,
    };
    let (layers, _stats) = hyper_server::Layers::new(&limits)?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("hyper-server listening on {}", listener.local_addr()?);
    hyper_server::serve(listener, layers, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
