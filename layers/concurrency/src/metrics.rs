//! Metric keys, built once per layer so that recording costs no allocation.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `tower_kit.concurrency.in_flight` | gauge | `limiter` |
//! | `tower_kit.concurrency.queued` | gauge | `limiter` |
//! | `tower_kit.concurrency.limit` | gauge | `limiter` |
//! | `tower_kit.concurrency.rejected` | counter | `limiter`, `reason` |
//! | `tower_kit.concurrency.queue_wait` | histogram (seconds) | `limiter` |
//!
//! The `limiter` label is the layer's [`name`](crate::ConcurrencyLayerBuilder::name) and is absent when none was
//! set; `reason` is one of [`RefusalReason::as_str`].
//!
//! Metrics go to the recorder in force when they are recorded (a local one in tests, else the global one). The
//! in-flight gauge, which moves twice per request, keeps its handle per recorder (up to four), so that the request
//! path does not look the key up in the recorder each time. While a layer has only seen one recorder, a request's
//! decrement goes to that recorder without asking which one is in force (so it lands where the increment did);
//! after that, to the recorder in force. A recorder is known by its address: a layer that outlives one recorder
//! and then meets another at the same address would keep feeding the first one's handle.

use crate::RefusalReason;
use metrics::{Gauge, Key, Label, Level, Metadata, Recorder};
use std::{sync::OnceLock, time::Duration};

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Metric name of the in-flight gauge.
pub const IN_FLIGHT: &str = "tower_kit.concurrency.in_flight";
/// Metric name of the queued gauge.
pub const QUEUED: &str = "tower_kit.concurrency.queued";
/// Metric name of the current-limit gauge.
pub const LIMIT: &str = "tower_kit.concurrency.limit";
/// Metric name of the refusal counter (`rejected`, kept for dashboards).
pub const REJECTED: &str = "tower_kit.concurrency.rejected";
/// Metric name of the queue-wait histogram, in seconds.
pub const QUEUE_WAIT: &str = "tower_kit.concurrency.queue_wait";

/// How many recorders' in-flight handles a layer keeps (beyond that, each update looks the key up).
const RECORDERS: usize = 4;

#[derive(Debug)]
pub(crate) struct Metrics {
    keys: Option<Keys>,
    in_flight: [OnceLock<Registered>; RECORDERS],
}

/// A handle registered with one recorder, known by its address.
#[derive(Debug)]
struct Registered {
    recorder: usize,
    gauge: Gauge,
}

fn recorder_id(recorder: &dyn Recorder) -> usize {
    std::ptr::from_ref::<dyn Recorder>(recorder).cast::<()>() as usize
}

#[derive(Debug)]
struct Keys {
    in_flight: Key,
    queued: Key,
    limit: Key,
    rejected: [Key; RefusalReason::ALL.len()],
    queue_wait: Key,
}

impl Metrics {
    pub(crate) fn new(limiter: Option<&str>) -> Self {
        let base: Vec<Label> = limiter
            .map(|n| vec![Label::new("limiter", n.to_owned())])
            .unwrap_or_default();
        let key = |name: &'static str, extra: Option<&'static str>| {
            let mut labels = base.clone();
            if let Some(reason) = extra {
                labels.push(Label::from_static_parts("reason", reason));
            }
            // `to_retained` makes the labels shared, so the key is never re-allocated.
            Key::from_parts(name, labels).to_retained()
        };
        Metrics {
            keys: Some(Keys {
                in_flight: key(IN_FLIGHT, None),
                queued: key(QUEUED, None),
                limit: key(LIMIT, None),
                rejected: RefusalReason::ALL.map(|r| key(REJECTED, Some(r.as_str()))),
                queue_wait: key(QUEUE_WAIT, None),
            }),
            in_flight: Default::default(),
        }
    }

    #[cfg(test)]
    pub(crate) fn disabled() -> Self {
        Metrics {
            keys: None,
            in_flight: Default::default(),
        }
    }

    /// One more request in flight, on the recorder in force now.
    #[inline]
    pub(crate) fn in_flight_up(&self) {
        if let Some(k) = &self.keys {
            metrics::with_recorder(|r| {
                // The usual case, inline: the recorder is the first one seen.
                if let Some(registered) = self.in_flight[0].get()
                    && registered.recorder == recorder_id(r)
                {
                    return registered.gauge.increment(1.0);
                }
                self.in_flight_gauge(r, &k.in_flight, 1.0);
            });
        }
    }

    /// One request fewer in flight, on the recorder that counted it in.
    #[inline]
    pub(crate) fn in_flight_down(&self) {
        let Some(k) = &self.keys else {
            return;
        };
        // Slots fill in order and are never emptied. While the second is empty, every increment so far went to
        // the first (its recorder was the only one seen), so the decrement can go there without asking which
        // recorder is in force.
        if self.in_flight[1].get().is_none()
            && let Some(registered) = self.in_flight[0].get()
        {
            return registered.gauge.decrement(1.0);
        }
        metrics::with_recorder(|r| self.in_flight_gauge(r, &k.in_flight, -1.0));
    }

    #[cold]
    #[inline(never)]
    fn in_flight_gauge(&self, recorder: &dyn Recorder, key: &Key, delta: f64) {
        let id = recorder_id(recorder);
        for slot in &self.in_flight {
            let registered = match slot.get() {
                Some(registered) => registered,
                None => slot.get_or_init(|| Registered {
                    recorder: id,
                    gauge: recorder.register_gauge(key, &METADATA),
                }),
            };
            if registered.recorder == id {
                return registered.gauge.increment(delta);
            }
        }
        // More recorders than slots: look the key up each time.
        recorder.register_gauge(key, &METADATA).increment(delta);
    }

    pub(crate) fn queued(&self, delta: f64) {
        if let Some(k) = &self.keys {
            metrics::with_recorder(|r| r.register_gauge(&k.queued, &METADATA).increment(delta));
        }
    }

    pub(crate) fn set_limit(&self, limit: usize) {
        if let Some(k) = &self.keys {
            metrics::with_recorder(|r| r.register_gauge(&k.limit, &METADATA).set(limit as f64));
        }
    }

    pub(crate) fn rejected(&self, reason: RefusalReason) {
        if let Some(k) = &self.keys {
            metrics::with_recorder(|r| {
                r.register_counter(&k.rejected[reason as usize], &METADATA)
                    .increment(1)
            });
        }
    }

    pub(crate) fn queue_wait(&self, waited: Duration) {
        if let Some(k) = &self.keys {
            metrics::with_recorder(|r| {
                r.register_histogram(&k.queue_wait, &METADATA)
                    .record(waited.as_secs_f64())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

    fn in_flight(snapshotter: &Snapshotter) -> Option<f64> {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find(|(key, ..)| key.key().name() == IN_FLIGHT)
            .map(|(.., value)| match value {
                DebugValue::Gauge(g) => g.into_inner(),
                other => panic!("{other:?}"),
            })
    }

    #[test]
    fn each_recorder_gets_its_own_in_flight_gauge_and_decrements_follow_increments() {
        let (a, b) = (DebuggingRecorder::new(), DebuggingRecorder::new());
        let (snap_a, snap_b) = (a.snapshotter(), b.snapshotter());
        let m = Metrics::new(Some("api"));
        {
            let _a = metrics::set_default_local_recorder(&a);
            m.in_flight_up();
            m.in_flight_up();
            m.in_flight_down();
        }
        // Released once the recorder that counted it in is no longer the current one: it still goes there.
        m.in_flight_down();
        assert_eq!(in_flight(&snap_a), Some(0.0));
        {
            let _b = metrics::set_default_local_recorder(&b);
            m.in_flight_up();
            m.in_flight_up();
            m.in_flight_down();
        }
        assert_eq!(
            in_flight(&snap_b),
            Some(1.0),
            "the second recorder has its own handle"
        );
        assert_eq!(in_flight(&snap_a), Some(0.0), "and the first is left alone");
        // More recorders than cached handles still get their metrics (looked up each time).
        let others: Vec<DebuggingRecorder> =
            (0..RECORDERS).map(|_| DebuggingRecorder::new()).collect();
        for r in &others {
            let _r = metrics::set_default_local_recorder(r);
            m.in_flight_up();
            m.in_flight_up();
            m.in_flight_down();
            assert_eq!(in_flight(&r.snapshotter()), Some(1.0));
        }
    }
}
