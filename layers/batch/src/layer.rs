use crate::{Batch, Refusal, refusal::RefusalHook, worker};
use std::{
    borrow::Cow,
    collections::HashMap,
    fmt,
    hash::{BuildHasher, Hash},
    marker::PhantomData,
    num::NonZeroUsize,
    sync::Arc,
    time::Duration,
};
use tower_kit_core::ConfigError;
use tower_layer::Layer;
use tower_service::Service;

/// Default [`max_items`](BatchLayerBuilder::max_items): 100 items per backend call.
pub const DEFAULT_MAX_ITEMS: usize = 100;
/// Default [`max_latency`](BatchLayerBuilder::max_latency): 10 ms.
pub const DEFAULT_MAX_LATENCY: Duration = Duration::from_millis(10);
/// Default [`max_concurrent_batches`](BatchLayerBuilder::max_concurrent_batches): 4.
pub const DEFAULT_MAX_CONCURRENT_BATCHES: usize = 4;
/// Default [`max_queued`](BatchLayerBuilder::max_queued): 10 000 items.
pub const DEFAULT_MAX_QUEUED: usize = 10_000;

const MAX_MAX_ITEMS: usize = 1_000_000;
const MAX_MAX_LATENCY: Duration = Duration::from_secs(3600);
const MAX_CONCURRENT: usize = 100_000;
const MAX_MAX_QUEUED: usize = 100_000_000;

mod sealed {
    pub trait Sealed {}
}

/// How the backend's answer is matched to callers: [`Ordered`] or [`Keyed`]. Sealed.
pub trait BatchMode: sealed::Sealed + Send + Sync + 'static {
    /// The key type: `()` in ordered mode.
    type Key: Hash + Eq + Clone + Send + 'static;
}

/// Ordered mode (the default): the backend answers a `Vec<Req>` with a `Vec<V>`, one result per item, in order.
#[derive(Debug, Clone, Copy)]
pub struct Ordered;
impl sealed::Sealed for Ordered {}
impl BatchMode for Ordered {
    type Key = ();
}

/// Keyed mode (DataLoader style): items carry a key, duplicate keys in a batch are sent once and share the result,
/// and the backend answers with a `HashMap<K, V>`; a key missing from the map is a
/// [`MissingResult`](crate::BatchError::MissingResult) for its callers.
#[derive(Debug)]
pub struct Keyed<K>(PhantomData<fn() -> K>);
impl<K> sealed::Sealed for Keyed<K> {}
impl<K: Hash + Eq + Clone + Send + 'static> BatchMode for Keyed<K> {
    type Key = K;
}

type KeyFn<Req, K> = Arc<dyn Fn(&Req) -> K + Send + Sync>;
type WeightFn<Req> = KeyFn<Req, u64>;

/// The settings of one batcher, shared by its worker.
pub(crate) struct Config<Req, K, P> {
    pub(crate) max_items: usize,
    pub(crate) max_weight: u64,
    pub(crate) weight: Option<WeightFn<Req>>,
    pub(crate) max_latency: Duration,
    pub(crate) leading_edge: bool,
    pub(crate) max_concurrent_batches: usize,
    pub(crate) max_queued: usize,
    pub(crate) keyed: bool,
    pub(crate) key: KeyFn<Req, K>,
    pub(crate) partition: KeyFn<Req, P>,
    pub(crate) name: Cow<'static, str>,
    pub(crate) on_refusal: Option<RefusalHook>,
}

impl<Req, K, P> Clone for Config<Req, K, P> {
    fn clone(&self) -> Self {
        Config {
            max_items: self.max_items,
            max_weight: self.max_weight,
            weight: self.weight.clone(),
            max_latency: self.max_latency,
            leading_edge: self.leading_edge,
            max_concurrent_batches: self.max_concurrent_batches,
            max_queued: self.max_queued,
            keyed: self.keyed,
            key: Arc::clone(&self.key),
            partition: Arc::clone(&self.partition),
            name: self.name.clone(),
            on_refusal: self.on_refusal.clone(),
        }
    }
}

impl<Req, K, P> fmt::Debug for Config<Req, K, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchConfig")
            .field("name", &self.name)
            .field("max_items", &self.max_items)
            .field(
                "max_weight",
                &(self.weight.is_some()).then_some(self.max_weight),
            )
            .field("max_latency", &self.max_latency)
            .field("leading_edge", &self.leading_edge)
            .field("max_concurrent_batches", &self.max_concurrent_batches)
            .field("max_queued", &self.max_queued)
            .field("keyed", &self.keyed)
            .field("on_refusal", &self.on_refusal.is_some())
            .finish_non_exhaustive()
    }
}

/// Turns a backend that takes a batch (`Service<Vec<Req>>`) into a cheap-to-clone `Service<Req>`: a
/// [`Batch`].
///
/// Every call to [`Layer::layer`] starts one background worker (a tokio task) that owns the backend and the
/// accumulators; the [`Batch`] it returns, and all its clones, feed that worker. Build the layer once per backend.
///
/// - `Req`: the item a caller sends.
/// - `M`: [`Ordered`] (backend answers `Vec<V>`) or [`Keyed<K>`] (backend answers `HashMap<K, V>`).
/// - `P`: the partition key (`()`: one accumulator).
#[must_use]
pub struct BatchLayer<Req, M: BatchMode = Ordered, P = ()> {
    config: Config<Req, M::Key, P>,
}

impl<Req, M: BatchMode, P> Clone for BatchLayer<Req, M, P> {
    fn clone(&self) -> Self {
        BatchLayer {
            config: self.config.clone(),
        }
    }
}

impl<Req, M: BatchMode, P> fmt::Debug for BatchLayer<Req, M, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchLayer")
            .field("config", &self.config)
            .finish()
    }
}

impl<Req: 'static> BatchLayer<Req> {
    /// An ordered batcher that sends at most `max_items` items per backend call and keeps an item waiting at most
    /// `max_latency` while the backend is busy; every other setting has its default (see [`BatchLayerBuilder`]).
    ///
    /// The same bounds as [`build`](BatchLayerBuilder::build) apply, by clamping instead of failing: `max_items`
    /// above 1 000 000 is 1 000 000, a `max_latency` above one hour is one hour.
    pub fn new(max_items: NonZeroUsize, max_latency: Duration) -> Self {
        let mut config = BatchLayerBuilder::new().config;
        config.max_items = max_items.get().min(MAX_MAX_ITEMS);
        config.max_latency = max_latency.min(MAX_MAX_LATENCY);
        BatchLayer { config }
    }

    /// A builder with every setting at its default.
    pub fn builder() -> BatchLayerBuilder<Req> {
        BatchLayerBuilder::new()
    }
}

impl<Req, M: BatchMode, P> BatchLayer<Req, M, P> {
    /// The name used as the `batcher` metric label.
    pub fn name(&self) -> &str {
        &self.config.name
    }
}

/// Builds a [`BatchLayer`]; [`build`](Self::build) checks every value.
#[must_use]
pub struct BatchLayerBuilder<Req, M: BatchMode = Ordered, P = ()> {
    config: Config<Req, M::Key, P>,
    weight_set: bool,
}

impl<Req, M: BatchMode, P> fmt::Debug for BatchLayerBuilder<Req, M, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchLayerBuilder")
            .field("config", &self.config)
            .finish()
    }
}

impl<Req: 'static> BatchLayerBuilder<Req> {
    fn new() -> Self {
        BatchLayerBuilder {
            config: Config {
                max_items: DEFAULT_MAX_ITEMS,
                max_weight: u64::MAX,
                weight: None,
                max_latency: DEFAULT_MAX_LATENCY,
                leading_edge: true,
                max_concurrent_batches: DEFAULT_MAX_CONCURRENT_BATCHES,
                max_queued: DEFAULT_MAX_QUEUED,
                keyed: false,
                key: Arc::new(|_: &Req| ()),
                partition: Arc::new(|_: &Req| ()),
                name: Cow::Borrowed("default"),
                on_refusal: None,
            },
            weight_set: false,
        }
    }
}

impl<Req: 'static, M: BatchMode, P> BatchLayerBuilder<Req, M, P> {
    /// Most items per backend call (distinct keys in keyed mode); a full batch is sent at once. Default 100;
    /// 1 to 1 000 000.
    pub fn max_items(mut self, max_items: usize) -> Self {
        self.config.max_items = max_items;
        self
    }

    /// Flush by weight: `weight` gives each item's weight (bytes, cost) and a batch is sent once the items waiting
    /// weigh `max_weight` or more; a batch never weighs more than `max_weight` unless one item alone does (it then
    /// goes alone). Default: no weight limit. `max_weight` must be at least 1.
    pub fn max_weight<F>(mut self, max_weight: u64, weight: F) -> Self
    where
        F: Fn(&Req) -> u64 + Send + Sync + 'static,
    {
        self.config.max_weight = max_weight;
        self.config.weight = Some(Arc::new(weight));
        self.weight_set = true;
        self
    }

    /// Longest an item waits for its batch to fill, counted from the oldest waiting item; then the batch goes even
    /// if not full (as soon as [`max_concurrent_batches`](Self::max_concurrent_batches) allows). Zero sends
    /// whatever arrived together ("end of tick"). Default 10 ms; at most one hour.
    pub fn max_latency(mut self, max_latency: Duration) -> Self {
        self.config.max_latency = max_latency;
        self
    }

    /// Leading-edge dispatch (default on): when none of its partition's batches is at the backend, an item goes at
    /// once, alone or with whatever arrived with it, and items wait only while the backend is busy, so an idle
    /// batcher adds no latency and batches grow with load. Off: every item waits for a full batch or
    /// `max_latency`, as in the classic batcher.
    pub fn leading_edge(mut self, leading_edge: bool) -> Self {
        self.config.leading_edge = leading_edge;
        self
    }

    /// Most backend calls at once, over all partitions. Default 4; 1 to 100 000.
    pub fn max_concurrent_batches(mut self, max: usize) -> Self {
        self.config.max_concurrent_batches = max;
        self
    }

    /// Most items accepted and not yet sent to the backend; a call beyond it fails at once with
    /// [`Overloaded`](crate::BatchError::Overloaded). Default 10 000; 1 to 100 000 000.
    pub fn max_queued(mut self, max_queued: usize) -> Self {
        self.config.max_queued = max_queued;
        self
    }

    /// The `batcher` label on this batcher's metrics (keep it a fixed name). Default `default`.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Called for every call refused because `max_queued` items were waiting (the call fails with
    /// [`Overloaded`](crate::BatchError::Overloaded)): log it, count it. Runs on the caller's task; keep it cheap.
    /// Default: none.
    pub fn on_refusal<F>(mut self, hook: F) -> Self
    where
        F: Fn(&Refusal) + Send + Sync + 'static,
    {
        self.config.on_refusal = Some(Arc::new(hook));
        self
    }

    /// Keyed mode (DataLoader style): `key` gives each item's key; items with a key already waiting in the same
    /// accumulator are sent once and share the answer; the backend answers with a `HashMap<K, V>`.
    pub fn keyed<K, F>(self, key: F) -> BatchLayerBuilder<Req, Keyed<K>, P>
    where
        K: Hash + Eq + Clone + Send + 'static,
        F: Fn(&Req) -> K + Send + Sync + 'static,
    {
        let c = self.config;
        BatchLayerBuilder {
            config: Config {
                max_items: c.max_items,
                max_weight: c.max_weight,
                weight: c.weight,
                max_latency: c.max_latency,
                leading_edge: c.leading_edge,
                max_concurrent_batches: c.max_concurrent_batches,
                max_queued: c.max_queued,
                keyed: true,
                key: Arc::new(key),
                partition: c.partition,
                name: c.name,
                on_refusal: c.on_refusal,
            },
            weight_set: self.weight_set,
        }
    }

    /// Partitions: `partition` maps each item to a partition (tenant, shard, endpoint); each partition has its own
    /// accumulator, its own leading edge and its own batches (a batch never mixes partitions), while
    /// `max_concurrent_batches` and `max_queued` stay global. Empty partitions are forgotten.
    pub fn partition_by<P2, F>(self, partition: F) -> BatchLayerBuilder<Req, M, P2>
    where
        P2: Hash + Eq + Clone + Send + 'static,
        F: Fn(&Req) -> P2 + Send + Sync + 'static,
    {
        let c = self.config;
        BatchLayerBuilder {
            config: Config {
                max_items: c.max_items,
                max_weight: c.max_weight,
                weight: c.weight,
                max_latency: c.max_latency,
                leading_edge: c.leading_edge,
                max_concurrent_batches: c.max_concurrent_batches,
                max_queued: c.max_queued,
                keyed: c.keyed,
                key: c.key,
                partition: Arc::new(partition),
                name: c.name,
                on_refusal: c.on_refusal,
            },
            weight_set: self.weight_set,
        }
    }

    /// Checks every setting.
    pub fn build(self) -> Result<BatchLayer<Req, M, P>, ConfigError> {
        let c = &self.config;
        if c.max_items == 0 || c.max_items > MAX_MAX_ITEMS {
            return Err(ConfigError::new(
                "max_items",
                format!("must be from 1 to {MAX_MAX_ITEMS} (got {})", c.max_items),
            ));
        }
        if self.weight_set && c.max_weight == 0 {
            return Err(ConfigError::new("max_weight", "must be at least 1 (got 0)"));
        }
        if c.max_latency > MAX_MAX_LATENCY {
            return Err(ConfigError::new(
                "max_latency",
                format!("must be at most one hour (got {:?})", c.max_latency),
            ));
        }
        if c.max_concurrent_batches == 0 || c.max_concurrent_batches > MAX_CONCURRENT {
            return Err(ConfigError::new(
                "max_concurrent_batches",
                format!(
                    "must be from 1 to {MAX_CONCURRENT} (got {})",
                    c.max_concurrent_batches
                ),
            ));
        }
        if c.max_queued == 0 || c.max_queued > MAX_MAX_QUEUED {
            return Err(ConfigError::new(
                "max_queued",
                format!("must be from 1 to {MAX_MAX_QUEUED} (got {})", c.max_queued),
            ));
        }
        if c.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        Ok(BatchLayer {
            config: self.config,
        })
    }
}

impl<Req, P, S, V> Layer<S> for BatchLayer<Req, Ordered, P>
where
    Req: Send + 'static,
    P: Hash + Eq + Clone + Send + 'static,
    S: Service<Vec<Req>, Response = Vec<V>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + Sync + 'static,
    V: Send + 'static,
{
    type Service = Batch<Req, V, S::Error>;

    /// Starts the worker for `backend`.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime (the worker is a tokio task), like `tower::buffer::Buffer::new`.
    fn layer(&self, backend: S) -> Self::Service {
        worker::spawn(self.config.clone(), backend, demux_ordered::<V, S::Error>)
    }
}

impl<Req, K, P, S, V, H> Layer<S> for BatchLayer<Req, Keyed<K>, P>
where
    Req: Send + 'static,
    K: Hash + Eq + Clone + Send + 'static,
    P: Hash + Eq + Clone + Send + 'static,
    S: Service<Vec<Req>, Response = HashMap<K, V, H>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + Sync + 'static,
    V: Clone + Send + 'static,
    H: BuildHasher,
{
    type Service = Batch<Req, V, S::Error>;

    /// Starts the worker for `backend`.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime (the worker is a tokio task).
    fn layer(&self, backend: S) -> Self::Service {
        worker::spawn(
            self.config.clone(),
            backend,
            demux_keyed::<K, V, H, S::Error>,
        )
    }
}

/// Ordered answers: item `i` gets `results[i]`; a short answer leaves the rest with `MissingResult`.
fn demux_ordered<V, E>(
    results: Vec<V>,
    _keys: Vec<()>,
    waiters: Vec<crate::accumulator::Waiters<V, E>>,
) {
    let mut results = results.into_iter();
    for w in waiters {
        match results.next() {
            Some(v) => w.answer_first(Ok(v)),
            None => w.answer_first(Err(crate::BatchError::MissingResult)),
        }
    }
}

/// Keyed answers: each key's callers share `results[key]`; a key missing from the map is `MissingResult`.
fn demux_keyed<K: Hash + Eq, V: Clone, H: BuildHasher, E>(
    mut results: HashMap<K, V, H>,
    keys: Vec<K>,
    waiters: Vec<crate::accumulator::Waiters<V, E>>,
) {
    for (key, w) in keys.into_iter().zip(waiters) {
        match results.remove(&key) {
            Some(v) => w.answer_all(Ok(v)),
            None => w.answer_all(Err(crate::BatchError::MissingResult)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_names_the_bad_field() {
        let cases: Vec<(&str, BatchLayerBuilder<u32>)> = vec![
            ("max_items", BatchLayer::builder().max_items(0)),
            ("max_items", BatchLayer::builder().max_items(usize::MAX)),
            ("max_weight", BatchLayer::builder().max_weight(0, |_| 1)),
            (
                "max_latency",
                BatchLayer::builder().max_latency(Duration::MAX),
            ),
            (
                "max_concurrent_batches",
                BatchLayer::builder().max_concurrent_batches(0),
            ),
            ("max_queued", BatchLayer::builder().max_queued(0)),
            ("name", BatchLayer::builder().name("")),
        ];
        for (field, builder) in cases {
            let err = builder.build().unwrap_err();
            assert_eq!(err.field(), field, "{err}");
        }
    }

    #[test]
    fn defaults_and_modes_build() {
        let layer = BatchLayer::<u32>::builder().build().unwrap();
        assert_eq!(layer.config.max_items, DEFAULT_MAX_ITEMS);
        assert!(layer.config.leading_edge && !layer.config.keyed);
        let keyed = BatchLayer::<(u8, u32)>::builder()
            .keyed(|r: &(u8, u32)| r.1)
            .partition_by(|r: &(u8, u32)| r.0)
            .name("users")
            .build()
            .unwrap();
        assert!(keyed.config.keyed);
        assert_eq!((keyed.config.key)(&(1, 7)), 7);
        assert_eq!((keyed.config.partition)(&(1, 7)), 1);
        assert_eq!(keyed.name(), "users");
        let s = format!("{keyed:?}");
        assert!(s.contains("users") && s.contains("keyed: true"), "{s}");
        // `new` takes typed values that cannot be invalid, and clamps them to the bounds `build` checks.
        let clamped = BatchLayer::<u32>::new(NonZeroUsize::MAX, Duration::MAX);
        assert_eq!(clamped.config.max_items, MAX_MAX_ITEMS);
        assert_eq!(clamped.config.max_latency, MAX_MAX_LATENCY);
        let same = BatchLayer::<u32>::builder()
            .max_items(MAX_MAX_ITEMS)
            .max_latency(MAX_MAX_LATENCY)
            .build();
        assert!(same.is_ok(), "what `new` clamps to, `build` accepts");
    }
}
