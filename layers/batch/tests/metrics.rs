//! Batch size and wait histograms, queue depth and the overload counter, on a per-test recorder.

use metrics_util::{
    CompositeKey, MetricKind,
    debugging::{DebugValue, DebuggingRecorder},
};
use std::time::Duration;
use tower::{Layer, ServiceExt};
use tower_kit_batch::{BatchError, BatchLayer};

type Snapshot = [(
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)];

fn find<'a>(snapshot: &'a Snapshot, kind: MetricKind, name: &str) -> &'a DebugValue {
    let (key, _, _, value) = snapshot
        .iter()
        .find(|(k, ..)| k.kind() == kind && k.key().name() == name)
        .unwrap_or_else(|| panic!("no {name}"));
    let labels: Vec<_> = key
        .key()
        .labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect();
    assert_eq!(labels, vec![("batcher".to_owned(), "lookups".to_owned())]);
    value
}

#[test]
fn batch_metrics() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let rt = tower_kit_test_support::paused_runtime();
    // Snapshots drain histograms: keep what the first one saw.
    let mut sizes_seen = Vec::new();
    let mut waits_seen = Vec::new();
    rt.block_on(async {
        let backend = tower::service_fn(|items: Vec<u32>| async move { Ok::<_, ()>(items) });
        let batch = BatchLayer::builder()
            .name("lookups")
            .max_items(3)
            .max_queued(4)
            .max_latency(Duration::from_millis(20))
            .leading_edge(false)
            .build()
            .unwrap()
            .layer(backend);
        let calls: Vec<_> = (0..4).map(|i| tokio::spawn(batch.load(i))).collect();
        assert_eq!(
            batch.clone().oneshot(9).await,
            Err(BatchError::Overloaded),
            "4 queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        // One full batch went at once; one item waits until 20 ms.
        let snapshot = snapshotter.snapshot().into_vec();
        assert_eq!(
            find(&snapshot, MetricKind::Gauge, "tower_kit.batch.queue.depth"),
            &DebugValue::Gauge(1.0.into())
        );
        assert_eq!(
            find(&snapshot, MetricKind::Counter, "tower_kit.batch.overloaded"),
            &DebugValue::Counter(1)
        );
        if let DebugValue::Histogram(v) =
            find(&snapshot, MetricKind::Histogram, "tower_kit.batch.items")
        {
            sizes_seen.extend(v.iter().map(|v| v.into_inner()));
        }
        if let DebugValue::Histogram(v) = find(
            &snapshot,
            MetricKind::Histogram,
            "tower_kit.batch.wait.duration",
        ) {
            waits_seen.extend(v.iter().map(|v| v.into_inner()));
        }
        for c in calls {
            c.await.unwrap().unwrap();
        }
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let DebugValue::Histogram(sizes) =
        find(&snapshot, MetricKind::Histogram, "tower_kit.batch.items")
    else {
        panic!("histogram")
    };
    sizes_seen.extend(sizes.iter().map(|v| v.into_inner()));
    assert_eq!(sizes_seen, vec![3.0, 1.0]);
    let DebugValue::Histogram(waits) = find(
        &snapshot,
        MetricKind::Histogram,
        "tower_kit.batch.wait.duration",
    ) else {
        panic!("histogram")
    };
    waits_seen.extend(waits.iter().map(|v| v.into_inner()));
    assert_eq!(waits_seen, vec![0.0, 0.02]);
    assert_eq!(
        find(&snapshot, MetricKind::Gauge, "tower_kit.batch.queue.depth"),
        &DebugValue::Gauge(0.0.into())
    );
}
