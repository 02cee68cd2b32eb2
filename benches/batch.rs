//! BatchLayer benchmarks.
//!
//! (a) `batch/sqlite_64_concurrent`: 64 concurrent lookups against SQLite, one `SELECT ... WHERE id IN (...)` per
//!     batch vs one `SELECT ... WHERE id = ?` per lookup, on the same 4-connection pool and the same concurrency.
//! (b) `batch/lone_caller`: one caller on an idle batcher (max 64 items, 1 ms max latency) vs tower-batch-control
//!     with the same limits, next to calling the backend directly.
//! (c) `batch/per_item_64`: 64 concurrent callers filling one batch of 64 (flush by size), tower-kit vs
//!     tower-batch-control; throughput is per item.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use rusqlite::{Connection, OptionalExtension, params_from_iter};
use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};
use tokio::sync::{Semaphore, oneshot};
use tower::{Layer, Service, ServiceExt};
use tower_kit_batch::BatchLayer;

const ITEMS: i64 = 590;
const POOL: usize = 4;
const CONCURRENCY: usize = 64;

#[derive(Debug, Clone)]
#[allow(dead_code)] // read through Debug only
struct Item {
    id: i64,
    name: String,
    description: String,
    price_cents: i64,
}

/// A small blocking-connection pool: a permit per connection, queries on the blocking thread pool.
struct Pool {
    conns: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Pool {
    fn open() -> Arc<Pool> {
        let path = std::env::temp_dir().join(format!("bench-batch-{}.sqlite3", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let conns: Vec<_> = (0..POOL)
            .map(|_| Connection::open(&path).unwrap())
            .collect();
        conns[0]
            .execute_batch(
                "PRAGMA journal_mode=WAL;
                 CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL,
                                     price_cents INTEGER NOT NULL);",
            )
            .unwrap();
        {
            let tx = conns[0].unchecked_transaction().unwrap();
            for id in 1..=ITEMS {
                tx.execute(
                    "INSERT INTO items VALUES (?1, ?2, ?3, ?4)",
                    (
                        id,
                        format!("item {id}"),
                        format!("The description of item {id}."),
                        100 + id * 37 % 9900,
                    ),
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        Arc::new(Pool {
            conns: Mutex::new(conns),
            permits: Semaphore::new(POOL),
        })
    }

    async fn with<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> R + Send + 'static,
    ) -> R {
        let _permit = self.permits.acquire().await.unwrap();
        let conn = self.conns.lock().unwrap().pop().unwrap();
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let r = f(&conn);
            (conn, r)
        })
        .await
        .unwrap();
        self.conns.lock().unwrap().push(conn);
        result
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Item> {
    Ok(Item {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        price_cents: r.get(3)?,
    })
}

async fn lookup_one(pool: &Arc<Pool>, id: i64) -> Option<Item> {
    pool.with(move |c| {
        c.prepare_cached("SELECT id, name, description, price_cents FROM items WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], row).optional())
            .unwrap()
    })
    .await
}

async fn lookup_many(
    pool: Arc<Pool>,
    ids: Vec<i64>,
) -> Result<HashMap<i64, Item>, rusqlite::Error> {
    pool.with(move |c| {
        let marks = vec!["?"; ids.len()].join(",");
        let sql =
            format!("SELECT id, name, description, price_cents FROM items WHERE id IN ({marks})");
        let mut stmt = c.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(ids.iter()), row)?;
        rows.map(|r| r.map(|i| (i.id, i))).collect()
    })
    .await
}

fn sqlite(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pool = Pool::open();
    let mut g = c.benchmark_group("batch/sqlite_64_concurrent");
    g.throughput(Throughput::Elements(CONCURRENCY as u64));
    g.bench_function("unbatched", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for n in 0..iters {
                    let tasks: Vec<_> = (0..CONCURRENCY as i64)
                        .map(|i| {
                            let pool = pool.clone();
                            tokio::spawn(async move {
                                lookup_one(&pool, 1 + (n as i64 * 7 + i) % ITEMS).await
                            })
                        })
                        .collect();
                    for t in tasks {
                        assert!(t.await.unwrap().is_some());
                    }
                }
                start.elapsed()
            })
        })
    });
    let batch = rt.block_on(async {
        let pool = pool.clone();
        BatchLayer::builder()
            .keyed(|id: &i64| *id)
            .max_items(CONCURRENCY)
            .max_latency(Duration::from_millis(1))
            .max_concurrent_batches(POOL)
            .build()
            .unwrap()
            .layer(tower::service_fn(move |ids| lookup_many(pool.clone(), ids)))
    });
    g.bench_function("batched", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for n in 0..iters {
                    let tasks: Vec<_> = (0..CONCURRENCY as i64)
                        .map(|i| tokio::spawn(batch.load(1 + (n as i64 * 7 + i) % ITEMS)))
                        .collect();
                    for t in tasks {
                        assert!(t.await.unwrap().is_ok());
                    }
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

/// The equivalent backend for tower-batch-control: it must collect items and answer each through its own
/// channel when told to flush.
type Waiting = (u32, oneshot::Sender<u32>);

#[derive(Clone, Default)]
struct PeerBackend {
    pending: Arc<Mutex<Vec<Waiting>>>,
}

struct PeerItem(u32);

#[derive(Debug)]
struct PeerClosed;
impl std::fmt::Display for PeerClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("closed")
    }
}
impl std::error::Error for PeerClosed {}
impl tower_batch_control::RequestWeight for PeerItem {}

enum PeerFuture {
    Ready,
    Wait(oneshot::Receiver<u32>),
}

impl Future for PeerFuture {
    type Output = Result<u32, PeerClosed>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            PeerFuture::Ready => Poll::Ready(Ok(0)),
            PeerFuture::Wait(rx) => Pin::new(rx).poll(cx).map(|r| r.map_err(|_| PeerClosed)),
        }
    }
}

impl Service<tower_batch_control::BatchControl<PeerItem>> for PeerBackend {
    type Response = u32;
    type Error = PeerClosed;
    type Future = PeerFuture;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: tower_batch_control::BatchControl<PeerItem>) -> PeerFuture {
        match req {
            tower_batch_control::BatchControl::Item(PeerItem(x)) => {
                let (tx, rx) = oneshot::channel();
                self.pending.lock().unwrap().push((x, tx));
                PeerFuture::Wait(rx)
            }
            tower_batch_control::BatchControl::Flush => {
                for (x, tx) in self.pending.lock().unwrap().drain(..) {
                    let _ = tx.send(x * 2);
                }
                PeerFuture::Ready
            }
        }
    }
}

/// The same work for tower-kit: a `Vec` in, a `Vec` out.
fn kit_backend()
-> impl Service<Vec<u32>, Response = Vec<u32>, Error = std::convert::Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    tower::service_fn(|items: Vec<u32>| {
        std::future::ready(Ok(items.into_iter().map(|x| x * 2).collect::<Vec<_>>()))
    })
}

const MAX_ITEMS: usize = 64;
const MAX_LATENCY: Duration = Duration::from_millis(1);

fn lone_caller(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("batch/lone_caller");
    let mut bare = kit_backend();
    g.bench_function("bare_backend", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let v = bare
                        .ready()
                        .await
                        .unwrap()
                        .call(vec![i as u32])
                        .await
                        .unwrap();
                    std::hint::black_box(v);
                }
                start.elapsed()
            })
        })
    });
    let kit = rt.block_on(async {
        BatchLayer::builder()
            .max_items(MAX_ITEMS)
            .max_latency(MAX_LATENCY)
            .max_concurrent_batches(1)
            .build()
            .unwrap()
            .layer(kit_backend())
    });
    g.bench_function("tower_kit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    std::hint::black_box(kit.load(i as u32).await.unwrap());
                }
                start.elapsed()
            })
        })
    });
    let peer = rt.block_on(async {
        tower_batch_control::Batch::new(PeerBackend::default(), MAX_ITEMS, Some(1), MAX_LATENCY)
    });
    g.bench_function("tower_batch_control", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    std::hint::black_box(peer.clone().oneshot(PeerItem(i as u32)).await.unwrap());
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

fn per_item(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("batch/per_item_64");
    g.throughput(Throughput::Elements(MAX_ITEMS as u64));
    // Flush by size only: a long window, no leading edge, so every batch has exactly 64 items.
    let kit = rt.block_on(async {
        BatchLayer::builder()
            .max_items(MAX_ITEMS)
            .max_latency(Duration::from_secs(1))
            .leading_edge(false)
            .max_concurrent_batches(1)
            .build()
            .unwrap()
            .layer(kit_backend())
    });
    g.bench_function(BenchmarkId::new("tower_kit", MAX_ITEMS), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let all = join_all((0..MAX_ITEMS as u32).map(|i| kit.load(i))).await;
                    std::hint::black_box(all);
                }
                start.elapsed()
            })
        })
    });
    let peer = rt.block_on(async {
        tower_batch_control::Batch::new(
            PeerBackend::default(),
            MAX_ITEMS,
            Some(1),
            Duration::from_secs(1),
        )
    });
    g.bench_function(BenchmarkId::new("tower_batch_control", MAX_ITEMS), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let all =
                        join_all((0..MAX_ITEMS as u32).map(|i| peer.clone().oneshot(PeerItem(i))))
                            .await;
                    std::hint::black_box(all);
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, sqlite, lone_caller, per_item);
criterion_main!(benches);
