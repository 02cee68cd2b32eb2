//! A per-test metrics recorder that accumulates across snapshots (the debugging recorder's snapshot resets
//! every value it reads).

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use std::{collections::BTreeMap, sync::Mutex};

pub(crate) type Labels = Vec<(String, String)>;

pub(crate) fn labels(pairs: &[(&str, &str)]) -> Labels {
    let mut l: Labels = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    l.sort();
    l
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram(Vec<f64>),
}

impl Value {
    /// Counter value, gauge value (truncated), or number of histogram samples.
    pub(crate) fn count(&self) -> usize {
        match self {
            Value::Counter(c) => *c as usize,
            Value::Gauge(g) => *g as usize,
            Value::Histogram(h) => h.len(),
        }
    }

    pub(crate) fn samples(&self) -> &[f64] {
        match self {
            Value::Histogram(h) => h,
            _ => &[],
        }
    }
}

#[derive(Default)]
pub(crate) struct Metrics {
    recorder: DebuggingRecorder,
    seen: Mutex<BTreeMap<(String, Labels), Value>>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Makes this the recorder of the current thread until the guard drops.
    pub(crate) fn install(&self) -> metrics::LocalRecorderGuard<'_> {
        metrics::set_default_local_recorder(&self.recorder)
    }

    fn refresh(&self) {
        let mut seen = self.seen.lock().unwrap();
        for (key, _, _, value) in self.recorder.snapshotter().snapshot().into_vec() {
            let mut l: Labels = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            l.sort();
            let entry = seen.entry((key.key().name().to_owned(), l));
            match value {
                DebugValue::Counter(c) => {
                    let v = entry.or_insert(Value::Counter(0));
                    if let Value::Counter(total) = v {
                        *total += c;
                    }
                }
                DebugValue::Gauge(g) => {
                    let v = entry.or_insert(Value::Gauge(0.0));
                    if let Value::Gauge(total) = v {
                        *total += g.into_inner();
                    }
                }
                DebugValue::Histogram(h) => {
                    let v = entry.or_insert(Value::Histogram(Vec::new()));
                    if let Value::Histogram(all) = v {
                        all.extend(h.into_iter().map(|f| f.into_inner()));
                    }
                }
            }
        }
    }

    /// Every series of `name` recorded so far, sorted by labels.
    pub(crate) fn series(&self, name: &str) -> Vec<(Labels, Value)> {
        self.refresh();
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, l), v)| (l.clone(), v.clone()))
            .collect()
    }

    /// The active-requests gauge for a method (0 if never set).
    pub(crate) fn gauge(&self, method: &str) -> f64 {
        self.series(tower_kit_timing::names::ACTIVE_REQUESTS)
            .into_iter()
            .find(|(l, _)| {
                l.contains(&(
                    tower_kit_timing::names::METHOD.to_owned(),
                    method.to_owned(),
                ))
            })
            .map_or(0.0, |(_, v)| match v {
                Value::Gauge(g) => g,
                _ => f64::NAN,
            })
    }

    /// The value of one label in every series of `name`.
    pub(crate) fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        self.series(name)
            .into_iter()
            .filter_map(|(l, _)| l.into_iter().find(|(k, _)| k == label).map(|(_, v)| v))
            .collect()
    }
}
