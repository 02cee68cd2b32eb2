//! Label values and metric handles, shared by every service a layer makes.
//!
//! Route values are interned once into [`RouteSlot`]s (at most `max_label_values`, then `__other__`). Each slot holds,
//! per method, the stats series and the metric handles per (status, error type, gRPC status), registered once and
//! reused: the request path does no allocation and no label formatting.
//!
//! Handles belong to the recorder that made them. The registry notes which recorder is current (its address) and
//! registers afresh when it changes, so a test that installs its own recorder, or a program that swaps recorders,
//! gets its metrics where it expects them.

use crate::{method, names, stats::StatsSeries};
use foldhash::fast::RandomState;
use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};
use std::{
    collections::HashMap,
    sync::{Arc, OnceLock, PoisonError, RwLock},
    time::Duration,
};

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

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

/// The handles of one label set.
pub(crate) struct Series {
    generation: u64,
    pub(crate) duration: Histogram,
    pub(crate) head_duration: Histogram,
    pub(crate) request_size: Histogram,
    pub(crate) response_size: Histogram,
}

/// Per-recorder state: which recorder, and the handles that do not depend on the route.
pub(crate) struct RecorderState {
    id: usize,
    generation: u64,
    pub(crate) active: [Gauge; method::COUNT],
    overflow: Counter,
}

pub(crate) struct MethodSlot {
    pub(crate) stats: StatsSeries,
    series: RwLock<HashMap<SeriesKey, Series, RandomState>>,
}

pub(crate) struct RouteSlot {
    pub(crate) name: SharedString,
    methods: [OnceLock<MethodSlot>; method::COUNT],
    /// The slow-request threshold for this route, computed once.
    pub(crate) slow_threshold: OnceLock<Option<Duration>>,
}

impl RouteSlot {
    fn new(name: SharedString) -> Self {
        Self {
            name,
            methods: Default::default(),
            slow_threshold: OnceLock::new(),
        }
    }

    pub(crate) fn method(&self, index: usize) -> &MethodSlot {
        self.methods[index].get_or_init(|| MethodSlot {
            stats: StatsSeries::new(),
            series: RwLock::new(HashMap::default()),
        })
    }
}

pub(crate) struct Registry {
    max_values: usize,
    routes: RwLock<HashMap<Box<str>, Arc<RouteSlot>, RandomState>>,
    pub(crate) unmatched: Arc<RouteSlot>,
    pub(crate) other: Arc<RouteSlot>,
    recorder: RwLock<Arc<RecorderState>>,
    pub(crate) since: crate::stats::Since,
}

fn current_recorder_id() -> usize {
    metrics::with_recorder(|r| std::ptr::from_ref::<dyn Recorder>(r).cast::<()>() as usize)
}

impl Registry {
    pub(crate) fn new(max_values: usize) -> Self {
        Self {
            max_values,
            routes: RwLock::new(HashMap::default()),
            unmatched: Arc::new(RouteSlot::new(SharedString::const_str(
                names::UNMATCHED_ROUTE,
            ))),
            other: Arc::new(RouteSlot::new(SharedString::const_str(names::OTHER_ROUTE))),
            recorder: RwLock::new(Arc::new(RecorderState {
                id: usize::MAX,
                generation: 0,
                active: std::array::from_fn(|_| Gauge::noop()),
                overflow: Counter::noop(),
            })),
            since: crate::stats::Since::now(),
        }
    }

    /// The handles of the recorder in force now, registering them if the recorder changed.
    pub(crate) fn recorder(&self) -> Arc<RecorderState> {
        let id = current_recorder_id();
        {
            let current = self.recorder.read().unwrap_or_else(PoisonError::into_inner);
            if current.id == id {
                return Arc::clone(&current);
            }
        }
        let mut current = self
            .recorder
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if current.id != id {
            let generation = current.generation + 1;
            *current = Arc::new(metrics::with_recorder(|r| {
                describe(r);
                RecorderState {
                    id,
                    generation,
                    active: std::array::from_fn(|m| {
                        let labels = vec![Label::new(names::METHOD, method::LABELS[m])];
                        r.register_gauge(
                            &Key::from_parts(names::ACTIVE_REQUESTS, labels),
                            &METADATA,
                        )
                    }),
                    overflow: r.register_counter(
                        &Key::from_parts(
                            names::LABEL_OVERFLOW,
                            vec![Label::new(names::LABEL, names::ROUTE)],
                        ),
                        &METADATA,
                    ),
                }
            }));
        }
        Arc::clone(&current)
    }

    /// The slot of a route value: interned on first sight while under the cap, `__other__` after.
    /// `recorder` is `None` when the layer records no metrics (the overflow is then not counted).
    pub(crate) fn route(&self, name: &str, recorder: Option<&RecorderState>) -> Arc<RouteSlot> {
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
        let slot = Arc::new(RouteSlot::new(SharedString::from_shared(Arc::clone(
            &shared,
        ))));
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

    /// Calls `f` with the handles of this label set, registering them with the current recorder when needed.
    pub(crate) fn with_series<R>(
        &self,
        route: &RouteSlot,
        method_index: usize,
        key: SeriesKey,
        recorder: &RecorderState,
        f: impl FnOnce(&Series) -> R,
    ) -> R {
        let slot = route.method(method_index);
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
            .or_insert_with(|| register(route, method_index, key, recorder));
        if series.generation != recorder.generation {
            *series = register(route, method_index, key, recorder);
        }
        f(series)
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

fn register(
    route: &RouteSlot,
    method_index: usize,
    key: SeriesKey,
    recorder: &RecorderState,
) -> Series {
    let mut labels = Vec::with_capacity(5);
    labels.push(Label::new(names::METHOD, method::LABELS[method_index]));
    labels.push(Label::new(names::ROUTE, route.name.clone()));
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
    metrics::with_recorder(|r| {
        let histogram = |name: &'static str| {
            r.register_histogram(&Key::from_parts(name, labels.clone()), &METADATA)
        };
        Series {
            generation: recorder.generation,
            duration: histogram(names::REQUEST_DURATION),
            head_duration: histogram(names::REQUEST_HEAD_DURATION),
            request_size: histogram(names::REQUEST_BODY_SIZE),
            response_size: histogram(names::RESPONSE_BODY_SIZE),
        }
    })
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

    #[test]
    fn route_values_are_capped() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let registry = Registry::new(3);
            let state = registry.recorder();
            let a = registry.route("/a", Some(&state));
            assert!(
                Arc::ptr_eq(&a, &registry.route("/a", Some(&state))),
                "interned once"
            );
            registry.route("/b", Some(&state));
            registry.route("/c", Some(&state));
            for i in 0..100 {
                let slot = registry.route(&format!("/x{i}"), Some(&state));
                assert_eq!(&*slot.name, names::OTHER_ROUTE);
            }
            // Known values still resolve to themselves after the cap is reached.
            assert_eq!(&*registry.route("/b", Some(&state)).name, "/b");
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
        let registry = Registry::new(10);
        let key = SeriesKey {
            status: 200,
            error: ErrorType::None,
            grpc_status: None,
        };
        let record = |recorder: &DebuggingRecorder| {
            metrics::with_local_recorder(recorder, || {
                let state = registry.recorder();
                let route = registry.route("/r", Some(&state));
                registry.with_series(&route, 0, key, &state, |s| s.response_size.record(1.0));
            });
        };
        let count = |recorder: &DebuggingRecorder| {
            recorder
                .snapshotter()
                .snapshot()
                .into_vec()
                .into_iter()
                .find(|(k, ..)| k.key().name() == names::RESPONSE_BODY_SIZE)
                .map(|(.., v)| match v {
                    DebugValue::Histogram(v) => v.len(),
                    _ => 0,
                })
        };
        let (one, two) = (DebuggingRecorder::new(), DebuggingRecorder::new());
        record(&one);
        record(&two);
        record(&one);
        // Each recorder got exactly the recordings made while it was in force.
        assert_eq!(count(&one), Some(2));
        assert_eq!(count(&two), Some(1));
    }
}
