//! `GET /api/items/{id}` through a batched SQLite loader: concurrent lookups become one
//! `SELECT ... WHERE id IN (...)` (tower-kit-batch in keyed mode), or one query per request with
//! `--batch-lookups false`. The database is created and seeded from the demo catalogue ([`crate::items`]) on first
//! start. The batcher's metrics (`tower_kit_batch_items`, `tower_kit_batch_wait_duration_seconds`, ...) appear in
//! `/metrics` under `batcher="items"`.

use crate::items::{Item, Items};
use axum::{
    Json, Router,
    body::Body,
    extract::{Path, State},
    http::{StatusCode, request::Parts},
    response::{IntoResponse, Response},
    routing::get,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params_from_iter};
use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::sync::Semaphore;
use tower_kit_batch::{BatchLayer, HttpBatch};
use tower_layer::Layer;
use tower_service::Service;

/// Item lookups: the SQLite database and the batching of lookups.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "batch_args")]
#[command(next_help_heading = "Item lookups (batching)")]
pub struct Args {
    /// SQLite file of the item catalogue, created and seeded on first start; `:memory:` keeps it in memory.
    #[arg(
        long = "items-db",
        env = "ITEMS_DB",
        default_value = "demo-items.sqlite3"
    )]
    pub items_db: String,

    /// SQLite connections in the pool (both modes use the same pool).
    #[arg(
        long = "items-db-connections",
        env = "ITEMS_DB_CONNECTIONS",
        default_value_t = 4
    )]
    pub connections: usize,

    /// Batch concurrent `GET /api/items/{id}` lookups into one `SELECT ... WHERE id IN (...)`; `false` sends one
    /// query per request.
    #[arg(long = "batch-lookups", env = "BATCH_LOOKUPS", default_value_t = true, action = clap::ArgAction::Set)]
    pub batch_lookups: bool,

    /// Most ids per batched query.
    #[arg(
        long = "batch-max-items",
        env = "BATCH_MAX_ITEMS",
        default_value_t = 100
    )]
    pub max_items: usize,

    /// Longest a lookup waits for its batch while the database is busy, e.g. `2ms` (an idle loader sends at once).
    #[arg(long = "batch-max-latency", env = "BATCH_MAX_LATENCY", default_value = "2ms",
          value_parser = crate::config::parse_duration)]
    pub max_latency: Duration,

    /// Lookups waiting beyond this many are answered 503 with `Retry-After`.
    #[arg(
        long = "batch-max-queued",
        env = "BATCH_MAX_QUEUED",
        default_value_t = 10_000
    )]
    pub max_queued: usize,
}

impl Args {
    /// The defaults, with an in-memory database (used by tests).
    pub fn for_tests() -> Self {
        Args {
            items_db: ":memory:".into(),
            connections: 4,
            batch_lookups: true,
            max_items: 100,
            max_latency: Duration::from_millis(2),
            max_queued: 10_000,
        }
    }
}

/// A failed database lookup.
#[derive(Debug)]
pub enum LoadError {
    /// SQLite failed.
    Sqlite(rusqlite::Error),
    /// The blocking task running the query panicked or was cancelled.
    Task(tokio::task::JoinError),
    /// The pool was closed.
    Closed,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Sqlite(e) => write!(f, "sqlite: {e}"),
            LoadError::Task(e) => write!(f, "query task: {e}"),
            LoadError::Closed => f.write_str("connection pool closed"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Sqlite(e) => Some(e),
            LoadError::Task(e) => Some(e),
            LoadError::Closed => None,
        }
    }
}

impl From<rusqlite::Error> for LoadError {
    fn from(e: rusqlite::Error) -> Self {
        LoadError::Sqlite(e)
    }
}

/// A small pool of SQLite connections; queries run on tokio's blocking threads.
#[derive(Debug)]
pub struct Pool {
    conns: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

const COLUMNS: &str = "id, name, description, price_cents, tags";

impl Pool {
    /// Opens `path` (`:memory:`: a private in-memory database shared by the pool's connections) with `size`
    /// connections, creating and seeding the table when it is empty.
    pub fn open(path: &str, size: usize) -> Result<Arc<Pool>, LoadError> {
        static MEMORY_DBS: AtomicU64 = AtomicU64::new(0);
        let size = size.clamp(1, 64);
        let (path, flags) = if path == ":memory:" {
            let n = MEMORY_DBS.fetch_add(1, Ordering::Relaxed);
            let uri = format!(
                "file:demo-items-{}-{n}?mode=memory&cache=shared",
                std::process::id()
            );
            (uri, OpenFlags::default() | OpenFlags::SQLITE_OPEN_URI)
        } else {
            (path.to_owned(), OpenFlags::default())
        };
        let conns = (0..size)
            .map(|_| {
                let c = Connection::open_with_flags(&path, flags)?;
                c.busy_timeout(Duration::from_secs(5))?;
                Ok(c)
            })
            .collect::<Result<Vec<_>, rusqlite::Error>>()?;
        seed(&conns[0])?;
        Ok(Arc::new(Pool {
            conns: Mutex::new(conns),
            permits: Semaphore::new(size),
        }))
    }

    /// Runs `f` on a pooled connection.
    pub async fn with<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<R, LoadError> + Send + 'static,
    ) -> Result<R, LoadError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| LoadError::Closed)?;
        let conn = self
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .ok_or(LoadError::Closed)?;
        let pool = Arc::clone(self);
        let joined = tokio::task::spawn_blocking(move || {
            let result = f(&conn);
            pool.conns
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
            result
        })
        .await;
        joined.map_err(LoadError::Task)?
    }

    /// One item by id: one query.
    pub async fn get(self: &Arc<Self>, id: i64) -> Result<Option<Item>, LoadError> {
        self.with(move |c| {
            let sql = format!("SELECT {COLUMNS} FROM items WHERE id = ?1");
            Ok(c.prepare_cached(&sql)?.query_row([id], row).optional()?)
        })
        .await
    }

    /// Many items by id: one `SELECT ... WHERE id IN (...)`; ids not found are absent from the map.
    pub async fn get_many(
        self: &Arc<Self>,
        ids: Vec<i64>,
    ) -> Result<HashMap<i64, Item>, LoadError> {
        self.with(move |c| {
            let marks = vec!["?"; ids.len()].join(",");
            let sql = format!("SELECT {COLUMNS} FROM items WHERE id IN ({marks})");
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map(params_from_iter(ids.iter()), row)?;
            let mut found = HashMap::with_capacity(ids.len());
            for item in rows {
                let item = item?;
                found.insert(item.id as i64, item);
            }
            Ok(found)
        })
        .await
    }
}

fn seed(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS items (
             id INTEGER PRIMARY KEY, name TEXT NOT NULL, description TEXT NOT NULL,
             price_cents INTEGER NOT NULL, tags TEXT NOT NULL)",
    )?;
    let count: i64 = conn.query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0))?;
    if count > 0 {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    {
        let mut insert = tx.prepare("INSERT OR IGNORE INTO items VALUES (?1, ?2, ?3, ?4, ?5)")?;
        for item in Items::seeded().all() {
            let tags = serde_json::to_string(&item.tags).unwrap_or_else(|_| "[]".into());
            insert.execute((
                item.id as i64,
                &item.name,
                &item.description,
                item.price_cents as i64,
                tags,
            ))?;
        }
    }
    tx.commit()
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Item> {
    let tags: String = r.get(4)?;
    Ok(Item {
        id: r.get::<_, i64>(0)? as u64,
        name: r.get(1)?,
        description: r.get(2)?,
        price_cents: r.get::<_, i64>(3)? as u64,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
    })
}

/// The batched backend: a batch of ids in, one query, a map of the items found out.
#[derive(Debug, Clone)]
pub struct ItemLoader(pub Arc<Pool>);

impl Service<Vec<i64>> for ItemLoader {
    type Response = HashMap<i64, Item>;
    type Error = LoadError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, LoadError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), LoadError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ids: Vec<i64>) -> Self::Future {
        let pool = Arc::clone(&self.0);
        Box::pin(async move { pool.get_many(ids).await })
    }
}

#[derive(Clone)]
enum Lookup {
    Batched(HttpBatch<i64, Item, LoadError>),
    Direct(Arc<Pool>),
}

/// Opens (and on first start seeds) the items database; `None` (logged) when it cannot be opened.
pub fn open(args: &Args) -> Option<Arc<Pool>> {
    match Pool::open(&args.items_db, args.connections) {
        Ok(pool) => Some(pool),
        Err(error) => {
            tracing::error!(%error, db = %args.items_db, "cannot open the items database");
            None
        }
    }
}

/// Writes items added through `POST /api/items` to the database, so `/api/items/{id}` finds them.
#[derive(Debug)]
pub struct Writer(pub Arc<Pool>);

impl crate::items::Persist for Writer {
    fn save(&self, item: Item) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let pool = Arc::clone(&self.0);
        Box::pin(async move {
            let id = item.id;
            let written = pool
                .with(move |conn| {
                    let tags = serde_json::to_string(&item.tags).unwrap_or_else(|_| "[]".into());
                    conn.execute(
                        "INSERT OR REPLACE INTO items VALUES (?1, ?2, ?3, ?4, ?5)",
                        (
                            item.id as i64,
                            &item.name,
                            &item.description,
                            item.price_cents as i64,
                            tags,
                        ),
                    )?;
                    Ok(())
                })
                .await;
            if let Err(error) = written {
                tracing::warn!(%error, id, "could not write the new item to SQLite");
            }
        })
    }
}

/// `GET /api/items/{id}` over `pool` (from [`open`]); without a database the route answers 503.
pub fn router(args: &Args, pool: Option<Arc<Pool>>) -> Router {
    let pool = match pool {
        Some(pool) => pool,
        None => {
            return Router::new().route(
                "/api/items/{id}",
                get(|| async {
                    crate::json_error(StatusCode::SERVICE_UNAVAILABLE, "item database unavailable")
                }),
            );
        }
    };
    let lookup = if args.batch_lookups {
        let layer = BatchLayer::builder()
            .name("items")
            .keyed(|id: &i64| *id)
            .max_items(args.max_items.clamp(1, 10_000))
            .max_latency(args.max_latency)
            .max_queued(args.max_queued.max(1))
            .max_concurrent_batches(args.connections.clamp(1, 64))
            .build();
        match layer {
            Ok(layer) => Lookup::Batched(HttpBatch::new(layer.layer(ItemLoader(pool)))),
            Err(error) => {
                tracing::error!(%error, "invalid batch settings; looking items up one by one");
                Lookup::Direct(pool)
            }
        }
    } else {
        Lookup::Direct(pool)
    };
    Router::new()
        .route("/api/items/{id}", get(one))
        .with_state(lookup)
}

async fn one(State(lookup): State<Lookup>, Path(id): Path<String>, parts: Parts) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return crate::json_error(
            StatusCode::BAD_REQUEST,
            "item id must be a positive integer",
        );
    };
    let Ok(id) = i64::try_from(id) else {
        return crate::json_error(StatusCode::NOT_FOUND, "item not found");
    };
    match lookup {
        Lookup::Batched(batch) => match batch.load(&parts, id).await {
            Ok(item) => Json(item).into_response(),
            Err(refusal) if refusal.error().is_missing() => {
                crate::json_error(StatusCode::NOT_FOUND, "item not found")
            }
            Err(refusal) => {
                if let Some(error) = refusal.error().backend() {
                    tracing::error!(%error, "item lookup failed");
                }
                refusal.into_response::<Body>()
            }
        },
        Lookup::Direct(pool) => match pool.get(id).await {
            Ok(Some(item)) => Json(item).into_response(),
            Ok(None) => crate::json_error(StatusCode::NOT_FOUND, "item not found"),
            Err(error) => {
                tracing::error!(%error, "item lookup failed");
                crate::json_error(StatusCode::INTERNAL_SERVER_ERROR, "item lookup failed")
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get_item(app: &Router, path: &str) -> (StatusCode, serde_json::Value) {
        let res = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn batched_and_direct_lookups_agree_with_the_catalogue() {
        for batch_lookups in [true, false] {
            let args = Args {
                batch_lookups,
                ..Args::for_tests()
            };
            let app = router(&args, open(&args));
            let want = serde_json::to_value(Items::seeded().get(42).unwrap()).unwrap();
            assert_eq!(
                get_item(&app, "/api/items/42").await,
                (StatusCode::OK, want)
            );
            assert_eq!(
                get_item(&app, "/api/items/99999").await.0,
                StatusCode::NOT_FOUND
            );
            assert_eq!(
                get_item(&app, "/api/items/abc").await.0,
                StatusCode::BAD_REQUEST
            );
            assert_eq!(
                get_item(&app, "/api/items/18446744073709551615").await.0,
                StatusCode::NOT_FOUND
            );
        }
    }

    // One thread, so the order is fixed: the spawned lookups all run (and queue) at the first yield, before
    // the batch worker they wake. On two worker threads the worker could take a first batch of any size.
    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_lookups_become_one_query() {
        let pool = Pool::open(":memory:", 1).unwrap();
        // Hold the only connection so the lookups pile up behind the first query.
        let layer = BatchLayer::builder()
            .keyed(|id: &i64| *id)
            .max_concurrent_batches(1)
            .max_latency(Duration::from_secs(5))
            .build()
            .unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&calls);
        let loader = ItemLoader(Arc::clone(&pool));
        let backend = tower::service_fn(move |ids: Vec<i64>| {
            log.lock().unwrap().push(ids.len());
            let mut loader = loader.clone();
            loader.call(ids)
        });
        let batch = layer.layer(backend);
        let gate = pool.permits.acquire().await.unwrap();
        let lookups: Vec<_> = (1..=20).map(|id| tokio::spawn(batch.load(id))).collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(gate);
        for (id, l) in (1..=20).zip(lookups) {
            assert_eq!(l.await.unwrap().unwrap().id, id as u64);
        }
        // All twenty queued while the connection was held, so they went as one `IN (...)` query.
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls, vec![20]);
    }

    #[test]
    fn seeding_happens_once_per_file() {
        let dir =
            std::env::temp_dir().join(format!("demo-items-seed-{}.sqlite3", std::process::id()));
        let path = dir.to_str().unwrap();
        let _ = std::fs::remove_file(path);
        for _ in 0..2 {
            let pool = Pool::open(path, 1).unwrap();
            let conns = pool.conns.lock().unwrap();
            let n: i64 = conns[0]
                .query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, crate::items::SEED_ITEMS as i64);
        }
        let _ = std::fs::remove_file(path);
    }
}
