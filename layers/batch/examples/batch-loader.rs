//! A DataLoader-style user loader: concurrent lookups become one backend call, duplicate ids are sent once.
//! Run with `cargo run -p tower-kit-batch --example batch-loader`.

use std::{collections::HashMap, time::Duration};
use tower::{Layer, ServiceExt};
use tower_kit_batch::{BatchError, BatchLayer};

// ANCHOR: loader
/// The batched backend: one query for many ids, answered as a map (ids not found are simply absent).
async fn load_users(ids: Vec<u64>) -> Result<HashMap<u64, String>, std::io::Error> {
    println!("backend call with {ids:?}");
    Ok(ids
        .into_iter()
        .filter(|id| *id < 1000)
        .map(|id| (id, format!("user {id}")))
        .collect())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let layer = BatchLayer::builder()
        .name("users") // the `batcher` metric label
        .keyed(|id: &u64| *id) // DataLoader style: duplicates are sent once
        .max_items(100) // at most 100 ids per query
        .max_latency(Duration::from_millis(5)) // longest wait while the backend is busy
        .max_concurrent_batches(4) // at most 4 queries at once
        .max_queued(10_000) // beyond this, `Overloaded` at once
        .build()
        .expect("valid settings");
    let users = layer.layer(tower::service_fn(load_users));

    // Eight concurrent lookups (one duplicate, one unknown id).
    let lookups = [1, 2, 3, 2, 4, 5, 6, 4242].map(|id| tokio::spawn(users.clone().oneshot(id)));
    for task in lookups {
        match task.await.expect("task") {
            Ok(name) => println!("{name}"),
            Err(BatchError::MissingResult) => println!("not found"),
            Err(other) => println!("failed: {other:?}"),
        }
    }
}
// ANCHOR_END: loader
