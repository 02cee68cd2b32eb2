//! Label values and metric handles, shared by every service a layer makes.
//!
//! Route values are interned once into [`RouteSlot`]s (at most `max_label_values`, then `__other__`). Each slot holds,
//! per method, the stats series and the metric handles per (status, error type, gRPC status), registered once and
//! reused: the request path does no allocation and no label formatting.
//!
//! Handles belong to the recorder that made them. The registry notes which recorder is current (its address) and
//! registers afresh when it changes, so a test that installs its own recorder, or a program that swaps recorders,
//! gets its metrics where it expects them.

use crate::{layer::Config, method, names, stats::StatsSeries};
use foldhash::fast::RandomState;
use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock, PoisonError, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Recorder generations whose handles are reached without a lock (a program has one recorder; tests a few).
const INLINE_GENERATIONS: usize = 8;

/// Why a request failed, as the `error.type` label says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ErrorType {
    None,
    Aborted,
    BodyError,
    ServiceError,
    Panic,
    /// A 5xx status: the label is the status code.
    Status,
}

impl ErrorType {
    fn label(self, status: u16) -> Option<SharedString> {
        Some(SharedString::const_str(match self {
            ErrorType::None => return None,
            ErrorType::Aborted => "aborted",
            ErrorType::BodyError => "body_error",
            ErrorType::ServiceError => "service_error",
            ErrorType::Panic => "panic",
            // Registration is the cold path: one small allocation per label set.
            ErrorType::Status => return Some(SharedString::from_owned(status.to_string())),
        }))
    }
}

/// The labels that vary within one (route, method).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SeriesKey {
    /// 0 when there was no response.
    pub(crate) status: u16,
    pub(crate) error: ErrorType,
    /// `None` for requests that are not gRPC, or gRPC calls that never got a status.
    pub(crate) grpc_status: Option<u8>,
}

impl SeriesKey {
    /// The label set of most requests, whose handles are reached without a lock.
    const OK: SeriesKey = SeriesKey {
        status: 200,
        error: ErrorType::None,
        grpc_status: None,
    };
}

/// The handles of one label set; the optional histograms exist when the layer records them.
#[derive(Clone)]
pub(crate) struct Series {
    generation: usize,
    pub(crate) duration: Histogram,
    pub(crate) head_duration: Option<Histogram>,
    pub(crate) request_size: Option<Histogram>,
    pub(crate) response_size: Option<Histogram>,
}

/// Per-recorder state: which recorder, and the handles that do not depend on the route.
pub(crate) struct RecorderState {
    id: usize,
    generation: usize,
    pub(crate) active: [Gauge; method::COUNT],
    overflow: Counter,
}

impl RecorderState {
    fn register(r: &dyn Recorder, id: usize, generation: usize) -> Self {
        describe(r);
        RecorderState {
            id,
            generation,
            active: std::array::from_fn(|m| {
                let labels = vec![Label::new(names::METHOD, method::LABELS[m])];
                r.register_gauge(&Key::from_parts(names::ACTIVE_REQUESTS, labels), &METADATA)
            }),
            overflow: r.register_counter(
                &Key::from_parts(
                    names::LABEL_OVERFLOW,
                    vec![Label::new(names::LABEL, names::ROUTE)],
                ),
                &METADATA,
            ),
        }
    }
}

/// Which recorder's handles a request uses: a generation kept inline (no reference count), or a later one.
pub(crate) enum Rec {
    Inline(usize),
    Spilled(Arc<RecorderState>),
}

/// The handles of every recorder generation this layer has seen.
///
/// The recorder in force is asked on every request (a thread-local read); while it stays the same, its handles are
/// found with one atomic load and no lock or reference count. A change of recorder starts a new generation.
pub(crate) struct Recorders {
    /// The newest generation, `usize::MAX` before the first request.
    current: AtomicUsize,
    inline: [OnceLock<RecorderState>; INLINE_GENERATIONS],
    /// The newest generation once the inline ones are used up.
    spilled: Mutex<Option<Arc<RecorderState>>>,
}

fn current_recorder_id() -> usize {
    metrics::with_recorder(|r| std::ptr::from_ref::<dyn Recorder>(r).cast::<()>() as usize)
}

impl Recorders {
    fn new() -> Self {
        Self {
            current: AtomicUsize::new(usize::MAX),
            inline: Default::default(),
            spilled: Mutex::new(None),
        }
    }

    /// The handles of the recorder in force now, registering them if the recorder changed.
    #[inline]
    pub(crate) fn current(&self) -> Rec {
        let id = current_recorder_id();
        let generation = self.current.load(Ordering::Acquire);
        if let Some(state) = self.inline.get(generation).and_then(OnceLock::get)
            && state.id == id
        {
            return Rec::Inline(generation);
        }
        self.current_slow(id)
    }

    #[cold]
    fn current_slow(&self, id: usize) -> Rec {
        let mut spilled = self.spilled.lock().unwrap_or_else(PoisonError::into_inner);
        let generation = self.current.load(Ordering::Acquire);
        if let Some(state) = self.inline.get(generation).and_then(OnceLock::get)
            && state.id == id
        {
            return Rec::Inline(generation);
        }
        if let Some(state) = &*spilled
            && state.id == id
            && state.generation == generation
        {
            return Rec::Spilled(Arc::clone(state));
        }
        let next = generation.wrapping_add(1);
        let state = metrics::with_recorder(|r| RecorderState::register(r, id, next));
        let rec = match self.inline.get(next) {
            // Generations only grow, under this lock: the slot is empty.
            Some(slot) => {
                let _ = slot.set(state);
                Rec::Inline(next)
            }
            None => {
                let state = Arc::new(state);
                *spilled = Some(Arc::clone(&state));
                Rec::Spilled(state)
            }
        };
        self.current.store(next, Ordering::Release);
        rec
    }

    /// The state a [`Rec`] stands for.
    #[inline]
    pub(crate) fn get<'a>(&'a self, rec: &'a Rec) -> Option<&'a RecorderState> {
        match rec {
            Rec::Inline(generation) => self.inline.get(*generation).and_then(OnceLock::get),
            Rec::Spilled(state) => Some(state),
        }
    }
}

/// What every route slot of a layer shares: the configuration and the recorders' handles.
pub(crate) struct Common {
    pub(crate) config: Config,
    pub(crate) recorders: Recorders,
}

pub(crate) struct MethodSlot {
    pub(crate) stats: StatsSeries,
    /// The handles of [`SeriesKey::OK`], per inline recorder generation.
    ok: [OnceLock<Series>; INLINE_GENERATIONS],
    series: RwLock<HashMap<SeriesKey, Series, RandomState>>,
}

pub(crate) struct RouteSlot {
    pub(crate) name: SharedString,
    methods: [OnceLock<MethodSlot>; method::COUNT],
    /// The slow-request threshold for this route, computed once.
    pub(crate) slow_threshold: OnceLock<Option<Duration>>,
    pub(crate) common: Arc<Common>,
}

impl RouteSlot {
    fn new(name: SharedString, common: Arc<Common>) -> Self {
        Self {
            name,
            methods: Default::default(),
            slow_threshold: OnceLock::new(),
            common,
        }
    }

    #[inline]
    pub(crate) fn method(&self, index: usize) -> &MethodSlot {
        self.methods[index].get_or_init(|| MethodSlot {
            stats: StatsSeries::new(),
            ok: Default::default(),
            series: RwLock::new(HashMap::default()),
        })
    }

    /// Calls `f` with the handles of this label set, registering them with the current recorder when needed.
    #[inline]
    pub(crate) fn with_series<R>(
        &self,
        method_index: usize,
        key: SeriesKey,
        recorder: &RecorderState,
        f: impl FnOnce(&Series) -> R,
    ) -> R {
        let slot = self.method(method_index);
        if key == SeriesKey::OK
            && let Some(series) = slot.ok.get(recorder.generation).and_then(OnceLock::get)
        {
            return f(series);
        }
        self.with_series_slow(slot, method_index, key, recorder, f)
    }

    #[cold]
    fn with_series_slow<R>(
        &self,
        slot: &MethodSlot,
        method_index: usize,
        key: SeriesKey,
        recorder: &RecorderState,
        f: impl FnOnce(&Series) -> R,
    ) -> R {
        {
            let map = slot.series.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(series) = map.get(&key)
                && series.generation == recorder.generation
            {
                return f(series);
            }
        }
        let mut map = slot.series.write().unwrap_or_else(PoisonError::into_inner);
        let series = map
            .entry(key)
            .or_insert_with(|| self.register(method_index, key, recorder));
        if series.generation != recorder.generation {
            *series = self.register(method_index, key, recorder);
        }
        if key == SeriesKey::OK
            && let Some(ok) = slot.ok.get(recorder.generation)
        {
            let _ = ok.set(series.clone());
        }
        f(series)
    }

    fn register(&self, method_index: usize, key: SeriesKey, recorder: &RecorderState) -> Series {
        let mut labels = Vec::with_capacity(5);
        labels.push(Label::new(names::METHOD, method::LABELS[method_index]));
        labels.push(Label::new(names::ROUTE, self.name.clone()));
        if key.status != 0 {
            labels.push(Label::new(
                names::STATUS_CODE,
                SharedString::from_owned(key.status.to_string()),
            ));
        }
        if let Some(error) = key.error.label(key.status) {
            labels.push(Label::new(names::ERROR_TYPE, error));
        }
        if let Some(code) = key.grpc_status {
            labels.push(Label::new(
                names::GRPC_STATUS_CODE,
                GRPC_CODES[usize::from(code.min(16))],
            ));
        }
        let config = &self.common.config;
        metrics::with_recorder(|r| {
            let histogram = |name: &'static str| {
                r.register_histogram(&Key::from_parts(name, labels.clone()), &METADATA)
            };
            Series {
                generation: recorder.generation,
                duration: histogram(names::REQUEST_DURATION),
                head_duration: config
                    .head_duration
                    .then(|| histogram(names::REQUEST_HEAD_DURATION)),
                request_size: config
                    .body_sizes
                    .then(|| histogram(names::REQUEST_BODY_SIZE)),
                response_size: config
                    .body_sizes
                    .then(|| histogram(names::RESPONSE_BODY_SIZE)),
            }
        })
    }
}

/// Route values found without a lock: a small table indexed by a hash of the value, each entry claimed by the
/// first value that lands on it (a collision just takes the locked path).
const HOT_ROUTES: usize = 64;

fn hot_index(name: &str) -> usize {
    use std::hash::BuildHasher;
    // Route values come from the application's route table, not from clients: a fixed hash is enough.
    (foldhash::fast::FixedState::default().hash_one(name) as usize) % HOT_ROUTES
}

pub(crate) struct Registry {
    max_values: usize,
    hot: [OnceLock<Arc<RouteSlot>>; HOT_ROUTES],
    routes: RwLock<HashMap<Box<str>, Arc<RouteSlot>, RandomState>>,
    pub(crate) unmatched: Arc<RouteSlot>,
    pub(crate) other: Arc<RouteSlot>,
    pub(crate) since: crate::stats::Since,
    pub(crate) common: Arc<Common>,
}

impl Registry {
    pub(crate) fn new(max_values: usize, config: Config) -> Self {
        // quanta calibrates its clock on first use (under a millisecond here): do it now, not on a request.
        let _ = quanta::Instant::now();
        let common = Arc::new(Common {
            config,
            recorders: Recorders::new(),
        });
        let slot = |name| {
            Arc::new(RouteSlot::new(
                SharedString::const_str(name),
                Arc::clone(&common),
            ))
        };
        Self {
            max_values,
            hot: std::array::from_fn(|_| OnceLock::new()),
            routes: RwLock::new(HashMap::default()),
            unmatched: slot(names::UNMATCHED_ROUTE),
            other: slot(names::OTHER_ROUTE),
            since: crate::stats::Since::now(),
            common,
        }
    }

    /// The slot of a route value: interned on first sight while under the cap, `__other__` after.
    /// `recorder` is `None` when the layer records no metrics (the overflow is then not counted).
    #[inline]
    pub(crate) fn route(&self, name: &str, recorder: Option<&Rec>) -> Arc<RouteSlot> {
        let hot = &self.hot[hot_index(name)];
        if let Some(slot) = hot.get()
            && *slot.name == *name
        {
            return Arc::clone(slot);
        }
        let slot = self.route_locked(name, recorder.and_then(|r| self.common.recorders.get(r)));
        if hot.get().is_none() && *slot.name == *name {
            let _ = hot.set(Arc::clone(&slot));
        }
        slot
    }

    #[cold]
    fn route_locked(&self, name: &str, recorder: Option<&RecorderState>) -> Arc<RouteSlot> {
        if let Some(slot) = self
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            return Arc::clone(slot);
        }
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = routes.get(name) {
            return Arc::clone(slot);
        }
        if routes.len() >= self.max_values {
            drop(routes);
            if let Some(recorder) = recorder {
                recorder.overflow.increment(1);
            }
            return Arc::clone(&self.other);
        }
        let shared: Arc<str> = Arc::from(name);
        let slot = Arc::new(RouteSlot::new(
            SharedString::from_shared(shared),
            Arc::clone(&self.common),
        ));
        routes.insert(Box::from(name), Arc::clone(&slot));
        slot
    }

    /// The number of distinct route values interned (not counting `unmatched` and `__other__`).
    #[cfg(test)]
    pub(crate) fn route_count(&self) -> usize {
        self.routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Visits every (route, method) seen.
    pub(crate) fn for_each_series(&self, mut f: impl FnMut(&str, &'static str, &StatsSeries)) {
        let routes: Vec<Arc<RouteSlot>> = {
            let map = self.routes.read().unwrap_or_else(PoisonError::into_inner);
            map.values()
                .cloned()
                .chain([Arc::clone(&self.unmatched), Arc::clone(&self.other)])
                .collect()
        };
        for route in routes {
            for (m, slot) in route.methods.iter().enumerate() {
                if let Some(slot) = slot.get() {
                    f(&route.name, method::LABELS[m], &slot.stats);
                }
            }
        }
    }
}

const GRPC_CODES: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];

fn describe(r: &dyn Recorder) {
    let histogram = |name: &'static str, unit, text: &'static str| {
        r.describe_histogram(
            KeyName::from_const_str(name),
            Some(unit),
            SharedString::const_str(text),
        );
    };
    histogram(
        names::REQUEST_DURATION,
        Unit::Seconds,
        "Duration of HTTP server requests, to the end of the response body.",
    );
    histogram(
        names::REQUEST_HEAD_DURATION,
        Unit::Seconds,
        "Time until the response head was ready (time to first byte).",
    );
    histogram(
        names::REQUEST_BODY_SIZE,
        Unit::Bytes,
        "Size of HTTP server request bodies (from Content-Length).",
    );
    histogram(
        names::RESPONSE_BODY_SIZE,
        Unit::Bytes,
        "Size of HTTP server response bodies.",
    );
    r.describe_gauge(
        KeyName::from_const_str(names::ACTIVE_REQUESTS),
        Some(Unit::Count),
        SharedString::const_str("Number of HTTP server requests whose response has not ended."),
    );
    r.describe_counter(
        KeyName::from_const_str(names::LABEL_OVERFLOW),
        Some(Unit::Count),
        SharedString::const_str(
            "Label values replaced by __other__ because the cap on distinct values was reached.",
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max: usize) -> Registry {
        let config = crate::TimingLayer::builder()
            .body_sizes(true)
            .config_for_tests();
        Registry::new(max, config)
    }

    #[test]
    fn route_values_are_capped() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let registry = registry(3);
            let rec = registry.common.recorders.current();
            let state = Some(&rec);
            let a = registry.route("/a", state);
            assert!(
                Arc::ptr_eq(&a, &registry.route("/a", state)),
                "interned once"
            );
            registry.route("/b", state);
            registry.route("/c", state);
            for i in 0..100 {
                let slot = registry.route(&format!("/x{i}"), state);
                assert_eq!(&*slot.name, names::OTHER_ROUTE);
            }
            // Known values still resolve to themselves after the cap is reached.
            assert_eq!(&*registry.route("/b", state).name, "/b");
            assert_eq!(registry.route_count(), 3);
        });
        let overflow = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find(|(k, ..)| k.key().name() == names::LABEL_OVERFLOW)
            .map(|(.., v)| v);
        assert_eq!(
            overflow,
            Some(metrics_util::debugging::DebugValue::Counter(100))
        );
    }

    #[test]
    fn handles_follow_the_recorder() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let registry = registry(10);
        let record = |recorder: &DebuggingRecorder, key: SeriesKey| {
            metrics::with_local_recorder(recorder, || {
                let rec = registry.common.recorders.current();
                let state = registry.common.recorders.get(&rec).unwrap();
                let route = registry.route("/r", Some(&rec));
                route.with_series(0, key, state, |s| {
                    if let Some(h) = &s.response_size {
                        h.record(1.0);
                    }
                });
            });
        };
        let count = |recorder: &DebuggingRecorder| {
            recorder
                .snapshotter()
                .snapshot()
                .into_vec()
                .into_iter()
                .filter(|(k, ..)| k.key().name() == names::RESPONSE_BODY_SIZE)
                .map(|(.., v)| match v {
                    DebugValue::Histogram(v) => v.len(),
                    _ => 0,
                })
                .sum::<usize>()
        };
        let recorders: Vec<DebuggingRecorder> = (0..12).map(|_| DebuggingRecorder::new()).collect();
        // More recorder changes than the generations kept inline, on the lock-free label set (200) and another.
        for round in 0..3 {
            for recorder in &recorders {
                record(recorder, SeriesKey::OK);
                let other = SeriesKey {
                    status: 404,
                    ..SeriesKey::OK
                };
                record(recorder, other);
                let _ = round;
            }
        }
        // Each recorder got exactly the recordings made while it was in force.
        for recorder in &recorders {
            assert_eq!(count(recorder), 6);
        }
    }

    #[test]
    fn a_recorder_that_stays_keeps_its_generation() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let registry = registry(10);
        metrics::with_local_recorder(&recorder, || {
            let first = registry.common.recorders.current();
            for _ in 0..100 {
                let again = registry.common.recorders.current();
                assert!(matches!((&first, &again), (Rec::Inline(a), Rec::Inline(b)) if a == b));
            }
        });
    }
}
