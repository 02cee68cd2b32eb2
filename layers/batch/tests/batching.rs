//! Batching behaviour on a paused tokio clock: flush triggers, leading edge, per-item results, keyed dedup,
//! partitions, the bounded queue, cancellation, panic isolation and the concurrency bound.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::{Instant, advance, sleep};
use tower::{Layer, Service, ServiceExt};
use tower_kit_batch::{Batch, BatchError, BatchLayer, Refusal, RefusalReason};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A batch and when it reached the backend.
type TimedBatch = (Duration, Vec<u32>);

#[derive(Debug, Clone, PartialEq)]
struct Fail(&'static str);

/// A backend that records every batch (with the time it arrived) and answers `item * 10` after `delay`.
/// An item of 13 panics inside the future, 666 panics in `call`, 500 fails the batch.
#[derive(Clone, Default)]
struct Recorder {
    batches: Arc<Mutex<Vec<TimedBatch>>>,
    delay: Duration,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    start: Option<Instant>,
}

impl Recorder {
    fn new(delay: Duration) -> Self {
        Recorder {
            delay,
            start: Some(Instant::now()),
            ..Default::default()
        }
    }

    fn batches(&self) -> Vec<Vec<u32>> {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }

    fn timed(&self) -> Vec<(Duration, Vec<u32>)> {
        self.batches.lock().unwrap().clone()
    }
}

impl Service<Vec<u32>> for Recorder {
    type Response = Vec<u32>;
    type Error = Fail;
    type Future = BoxFuture<Result<Vec<u32>, Fail>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Fail>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, items: Vec<u32>) -> Self::Future {
        assert!(!items.contains(&666), "backend call panics");
        let at = self.start.map_or(Duration::ZERO, |s| s.elapsed());
        self.batches.lock().unwrap().push((at, items.clone()));
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let (delay, in_flight) = (self.delay, self.in_flight.clone());
        Box::pin(async move {
            sleep(delay).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            assert!(!items.contains(&13), "backend future panics");
            if items.contains(&500) {
                return Err(Fail("batch failed"));
            }
            Ok(items.iter().map(|i| i * 10).collect())
        })
    }
}

/// Lets the worker and the callers run without moving the clock.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn spawn_call(
    batch: &Batch<u32, u32, Fail>,
    item: u32,
) -> tokio::task::JoinHandle<Result<u32, BatchError<Fail>>> {
    let batch = batch.clone();
    tokio::spawn(async move { batch.oneshot(item).await })
}

fn classic(max_items: usize, max_latency: Duration) -> BatchLayer<u32> {
    BatchLayer::builder()
        .max_items(max_items)
        .max_latency(max_latency)
        .leading_edge(false)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn flushes_when_max_items_is_reached() {
    let backend = Recorder::new(Duration::ZERO);
    let batch = classic(3, Duration::from_secs(1)).layer(backend.clone());
    let calls: Vec<_> = (1..=5).map(|i| spawn_call(&batch, i)).collect();
    settle().await;
    assert_eq!(backend.batches(), vec![vec![1, 2, 3]], "full batch at once");
    advance(Duration::from_millis(999)).await;
    settle().await;
    assert_eq!(backend.batches().len(), 1, "the rest waits for max_latency");
    advance(Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(backend.batches(), vec![vec![1, 2, 3], vec![4, 5]]);
    for (i, c) in calls.into_iter().enumerate() {
        assert_eq!(c.await.unwrap(), Ok((i as u32 + 1) * 10));
    }
}

#[tokio::test(start_paused = true)]
async fn flushes_when_max_weight_is_reached() {
    let backend = Recorder::new(Duration::ZERO);
    let layer = BatchLayer::builder()
        .max_items(100)
        .max_weight(10, |item: &u32| u64::from(*item))
        .max_latency(Duration::from_secs(1))
        .leading_edge(false)
        .build()
        .unwrap();
    let batch = layer.layer(backend.clone());
    let calls: Vec<_> = [4, 4, 4]
        .into_iter()
        .map(|i| spawn_call(&batch, i))
        .collect();
    settle().await;
    assert_eq!(
        backend.batches(),
        vec![vec![4, 4]],
        "12 >= 10: flush 8, keep 4"
    );
    let heavy = spawn_call(&batch, 50);
    settle().await;
    assert_eq!(
        backend.batches(),
        vec![vec![4, 4], vec![4], vec![50]],
        "a heavy item goes alone"
    );
    assert_eq!(heavy.await.unwrap(), Ok(500));
    for c in calls {
        assert_eq!(c.await.unwrap(), Ok(40));
    }
}

#[tokio::test(start_paused = true)]
async fn flushes_after_max_latency_since_the_first_item() {
    let backend = Recorder::new(Duration::ZERO);
    let batch = classic(100, Duration::from_millis(10)).layer(backend.clone());
    let first = spawn_call(&batch, 1);
    settle().await;
    advance(Duration::from_millis(6)).await;
    let second = spawn_call(&batch, 2);
    settle().await;
    advance(Duration::from_millis(3)).await;
    settle().await;
    assert!(backend.batches().is_empty(), "9 ms: still waiting");
    advance(Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(
        backend.timed(),
        vec![(Duration::from_millis(10), vec![1, 2])]
    );
    assert_eq!(first.await.unwrap(), Ok(10));
    assert_eq!(second.await.unwrap(), Ok(20));
}

#[tokio::test(start_paused = true)]
async fn flush_on_the_handle_sends_at_once() {
    let backend = Recorder::new(Duration::ZERO);
    let batch = classic(100, Duration::from_secs(3600)).layer(backend.clone());
    let handle = batch.handle();
    let calls: Vec<_> = (1..=3).map(|i| spawn_call(&batch, i)).collect();
    settle().await;
    assert!(backend.batches().is_empty());
    assert_eq!(handle.queued(), 3);
    assert!(handle.flush());
    settle().await;
    assert_eq!(backend.timed(), vec![(Duration::ZERO, vec![1, 2, 3])]);
    assert_eq!(handle.queued(), 0);
    for c in calls {
        assert!(c.await.unwrap().is_ok());
    }
    // Items arriving after the flush wait as usual.
    let late = spawn_call(&batch, 4);
    settle().await;
    assert_eq!(backend.batches().len(), 1);
    handle.flush();
    assert_eq!(late.await.unwrap(), Ok(40));
}

#[tokio::test(start_paused = true)]
async fn an_idle_batcher_adds_no_delay() {
    let backend = Recorder::new(Duration::ZERO);
    // A long window: with the leading edge it must not matter when the backend is idle.
    let layer = BatchLayer::builder()
        .max_latency(Duration::from_secs(60))
        .build()
        .unwrap();
    let batch = layer.layer(backend.clone());
    for i in 1..=3 {
        let start = Instant::now();
        assert_eq!(batch.clone().oneshot(i).await, Ok(i * 10));
        assert_eq!(start.elapsed(), Duration::ZERO, "no clock time passed");
    }
    assert_eq!(backend.batches(), vec![vec![1], vec![2], vec![3]]);
}

#[tokio::test(start_paused = true)]
async fn batches_grow_while_the_backend_is_busy() {
    let backend = Recorder::new(Duration::from_millis(10));
    let layer = BatchLayer::builder()
        .max_latency(Duration::from_millis(50))
        .max_concurrent_batches(1)
        .build()
        .unwrap();
    let batch = layer.layer(backend.clone());
    let first = spawn_call(&batch, 1);
    settle().await;
    let rest: Vec<_> = (2..=6).map(|i| spawn_call(&batch, i)).collect();
    settle().await;
    advance(Duration::from_millis(10)).await;
    settle().await;
    // The waiting items went as soon as the first batch returned, not at max_latency.
    assert_eq!(
        backend.timed(),
        vec![
            (Duration::ZERO, vec![1]),
            (Duration::from_millis(10), vec![2, 3, 4, 5, 6])
        ]
    );
    advance(Duration::from_millis(10)).await;
    assert_eq!(first.await.unwrap(), Ok(10));
    for (i, c) in rest.into_iter().enumerate() {
        assert_eq!(c.await.unwrap(), Ok((i as u32 + 2) * 10));
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_backend_gets_a_second_batch_at_max_latency() {
    let backend = Recorder::new(Duration::from_millis(100));
    let layer = BatchLayer::builder()
        .max_latency(Duration::from_millis(5))
        .max_concurrent_batches(2)
        .build()
        .unwrap();
    let batch = layer.layer(backend.clone());
    let _first = spawn_call(&batch, 1);
    settle().await;
    let _second = spawn_call(&batch, 2);
    settle().await;
    advance(Duration::from_millis(5)).await;
    settle().await;
    assert_eq!(
        backend.timed(),
        vec![
            (Duration::ZERO, vec![1]),
            (Duration::from_millis(5), vec![2])
        ]
    );
}

/// Per-item results: each caller gets its own item's `Result`, one bad item does not fail the others.
#[tokio::test(start_paused = true)]
async fn per_item_errors_stay_per_item() {
    let backend = tower::service_fn(|items: Vec<u32>| async move {
        Ok::<_, Fail>(
            items
                .into_iter()
                .map(|i| {
                    if i % 2 == 0 {
                        Ok(i)
                    } else {
                        Err(format!("odd {i}"))
                    }
                })
                .collect::<Vec<Result<u32, String>>>(),
        )
    });
    let batch = classic(4, Duration::from_secs(1)).layer(backend);
    let calls: Vec<_> = (1..=4)
        .map(|i| tokio::spawn(batch.clone().oneshot(i)))
        .collect();
    let mut got = Vec::new();
    for c in calls {
        got.push(c.await.unwrap().unwrap());
    }
    assert_eq!(
        got,
        vec![Err("odd 1".into()), Ok(2), Err("odd 3".into()), Ok(4)]
    );
}

#[tokio::test(start_paused = true)]
async fn missing_results_are_per_item_errors() {
    // Ordered: a short answer.
    let backend = tower::service_fn(|items: Vec<u32>| async move {
        Ok::<_, Fail>(items.into_iter().take(2).collect::<Vec<_>>())
    });
    let batch = classic(3, Duration::from_secs(1)).layer(backend);
    let calls: Vec<_> = (1..=3)
        .map(|i| tokio::spawn(batch.clone().oneshot(i)))
        .collect();
    let mut got = Vec::new();
    for c in calls {
        got.push(c.await.unwrap());
    }
    assert_eq!(got, vec![Ok(1), Ok(2), Err(BatchError::MissingResult)]);

    // Keyed: a key absent from the map.
    let backend = tower::service_fn(|keys: Vec<u32>| async move {
        Ok::<_, Fail>(
            keys.into_iter()
                .filter(|k| *k != 2)
                .map(|k| (k, k * 100))
                .collect::<HashMap<_, _>>(),
        )
    });
    let layer = BatchLayer::builder()
        .keyed(|k: &u32| *k)
        .max_items(3)
        .leading_edge(false)
        .build()
        .unwrap();
    let batch = layer.layer(backend);
    let calls: Vec<_> = (1..=3)
        .map(|i| tokio::spawn(batch.clone().oneshot(i)))
        .collect();
    let mut got = Vec::new();
    for c in calls {
        got.push(c.await.unwrap());
    }
    assert_eq!(got, vec![Ok(100), Err(BatchError::MissingResult), Ok(300)]);
}

#[tokio::test(start_paused = true)]
async fn keyed_mode_sends_each_key_once() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let backend = tower::service_fn(move |keys: Vec<(u32, &'static str)>| {
        log.lock().unwrap().push(keys.clone());
        async move {
            Ok::<_, Fail>(
                keys.into_iter()
                    .map(|(k, _)| (k, format!("user {k}")))
                    .collect::<HashMap<_, _>>(),
            )
        }
    });
    let layer = BatchLayer::builder()
        .keyed(|req: &(u32, &'static str)| req.0)
        .max_latency(Duration::from_millis(5))
        .leading_edge(false)
        .build()
        .unwrap();
    let batch = layer.layer(backend);
    let reqs = [(1, "a"), (1, "b"), (2, "c"), (1, "d"), (3, "e")];
    let calls: Vec<_> = reqs
        .into_iter()
        .map(|r| tokio::spawn(batch.clone().oneshot(r)))
        .collect();
    let mut got = Vec::new();
    for c in calls {
        got.push(c.await.unwrap().unwrap());
    }
    assert_eq!(got, ["user 1", "user 1", "user 2", "user 1", "user 3"]);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![vec![(1, "a"), (2, "c"), (3, "e")]],
        "one backend item per key: the first request for it"
    );
}

#[tokio::test(start_paused = true)]
async fn partitions_have_their_own_accumulators() {
    let backend = Recorder::new(Duration::ZERO);
    let layer = BatchLayer::builder()
        .partition_by(|i: &u32| i % 2)
        .max_items(2)
        .max_latency(Duration::from_millis(10))
        .leading_edge(false)
        .build()
        .unwrap();
    let batch = layer.layer(backend.clone());
    let calls: Vec<_> = [1, 2, 3]
        .into_iter()
        .map(|i| spawn_call(&batch, i))
        .collect();
    settle().await;
    assert_eq!(
        backend.batches(),
        vec![vec![1, 3]],
        "odd partition full, even waits"
    );
    advance(Duration::from_millis(10)).await;
    settle().await;
    assert_eq!(backend.batches(), vec![vec![1, 3], vec![2]]);
    for c in calls {
        assert!(c.await.unwrap().is_ok());
    }
}

#[tokio::test(start_paused = true)]
async fn partitions_have_their_own_leading_edge() {
    let backend = Recorder::new(Duration::from_millis(10));
    let layer = BatchLayer::builder()
        .partition_by(|i: &u32| i % 2)
        .max_latency(Duration::from_millis(50))
        .build()
        .unwrap();
    let batch = layer.layer(backend.clone());
    let _a = spawn_call(&batch, 1);
    settle().await;
    // Partition 1 is busy; partition 0 is idle, so its item goes at once.
    let _b = spawn_call(&batch, 3);
    let _c = spawn_call(&batch, 2);
    settle().await;
    assert_eq!(backend.batches(), vec![vec![1], vec![2]]);
    advance(Duration::from_millis(10)).await;
    settle().await;
    assert_eq!(backend.batches(), vec![vec![1], vec![2], vec![3]]);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_at_once() {
    let backend = Recorder::new(Duration::ZERO);
    let seen: Arc<Mutex<Vec<Refusal>>> = Arc::default();
    let layer = BatchLayer::builder()
        .max_queued(2)
        .max_latency(Duration::from_secs(3600))
        .leading_edge(false)
        .name("loader")
        .on_refusal({
            let seen = Arc::clone(&seen);
            move |refusal: &Refusal| seen.lock().unwrap().push(refusal.clone())
        })
        .build()
        .unwrap();
    let batch = layer.layer(backend.clone());
    let calls: Vec<_> = (1..=2).map(|i| spawn_call(&batch, i)).collect();
    settle().await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "admitted calls are no refusal"
    );
    let mut svc = batch.clone();
    // Never waits in poll_ready, and the refusal is immediate.
    let start = Instant::now();
    let refused = svc.ready().await.unwrap().call(3).await;
    assert_eq!(refused, Err(BatchError::Overloaded));
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(batch.queued(), 2);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "the hook hears of each refusal once");
        assert_eq!(seen[0].reason, RefusalReason::QueueFull);
        assert_eq!((&*seen[0].batcher, seen[0].max_queued), ("loader", 2));
    }
    batch.handle().flush();
    for c in calls {
        assert!(c.await.unwrap().is_ok());
    }
    assert_eq!(batch.queued(), 0);
    let again = spawn_call(&batch, 4);
    settle().await;
    batch.handle().flush();
    assert_eq!(again.await.unwrap(), Ok(40), "room again once sent");
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_leaves_before_dispatch_is_not_sent() {
    let backend = Recorder::new(Duration::ZERO);
    let batch = classic(100, Duration::from_millis(10)).layer(backend.clone());
    let first = spawn_call(&batch, 1);
    let leaver = spawn_call(&batch, 2);
    let third = spawn_call(&batch, 3);
    settle().await;
    assert_eq!(batch.queued(), 3);
    leaver.abort();
    settle().await;
    assert_eq!(batch.queued(), 2, "the queue slot is freed at once");
    advance(Duration::from_millis(10)).await;
    assert_eq!(first.await.unwrap(), Ok(10));
    assert_eq!(third.await.unwrap(), Ok(30));
    assert_eq!(backend.batches(), vec![vec![1, 3]]);
}

#[tokio::test(start_paused = true)]
async fn cancelled_callers_do_not_fill_a_batch() {
    let backend = Recorder::new(Duration::ZERO);
    let batch = classic(3, Duration::from_millis(10)).layer(backend.clone());
    // Two callers leave before the third arrives: the batch is not full, nothing goes early.
    drop(batch.load(1));
    drop(batch.load(2));
    let third = spawn_call(&batch, 3);
    settle().await;
    assert!(backend.batches().is_empty());
    advance(Duration::from_millis(10)).await;
    assert_eq!(third.await.unwrap(), Ok(30));
    assert_eq!(backend.batches(), vec![vec![3]]);
}

#[tokio::test(start_paused = true)]
async fn a_batch_of_only_cancelled_callers_is_never_sent() {
    let backend = Recorder::new(Duration::ZERO);
    let batch = classic(100, Duration::from_millis(10)).layer(backend.clone());
    let a = batch.load(1);
    let b = batch.load(2);
    settle().await;
    drop((a, b));
    advance(Duration::from_millis(20)).await;
    settle().await;
    assert!(backend.batches().is_empty());
    assert_eq!(batch.queued(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_backend_panic_fails_only_its_batch() {
    let backend = Recorder::new(Duration::ZERO);
    let batch = classic(2, Duration::from_millis(10)).layer(backend.clone());
    // In the future.
    let doomed: Vec<_> = [13, 1].into_iter().map(|i| spawn_call(&batch, i)).collect();
    let fine: Vec<_> = [2, 3].into_iter().map(|i| spawn_call(&batch, i)).collect();
    for c in doomed {
        assert_eq!(c.await.unwrap(), Err(BatchError::BackendPanicked));
    }
    for (c, want) in fine.into_iter().zip([20, 30]) {
        assert_eq!(c.await.unwrap(), Ok(want));
    }
    // In `call` itself.
    let doomed: Vec<_> = [666, 4]
        .into_iter()
        .map(|i| spawn_call(&batch, i))
        .collect();
    for c in doomed {
        assert_eq!(c.await.unwrap(), Err(BatchError::BackendPanicked));
    }
    // The batcher keeps serving.
    let after: Vec<_> = [5, 6].into_iter().map(|i| spawn_call(&batch, i)).collect();
    for (c, want) in after.into_iter().zip([50, 60]) {
        assert_eq!(c.await.unwrap(), Ok(want));
    }
}

#[tokio::test(start_paused = true)]
async fn a_backend_error_is_shared_by_its_batch_only() {
    let backend = Recorder::new(Duration::ZERO);
    let batch = classic(2, Duration::from_millis(10)).layer(backend.clone());
    let failed: Vec<_> = [500, 1]
        .into_iter()
        .map(|i| spawn_call(&batch, i))
        .collect();
    let fine: Vec<_> = [2, 3].into_iter().map(|i| spawn_call(&batch, i)).collect();
    let mut errors = Vec::new();
    for c in failed {
        errors.push(c.await.unwrap().unwrap_err());
    }
    assert_eq!(errors[0].backend(), Some(&Fail("batch failed")));
    assert_eq!(errors[0], errors[1], "one shared error (same Arc)");
    for c in fine {
        assert!(c.await.unwrap().is_ok());
    }
}

#[tokio::test(start_paused = true)]
async fn max_concurrent_batches_is_respected() {
    let backend = Recorder::new(Duration::from_millis(10));
    let layer = BatchLayer::builder()
        .max_items(1)
        .max_concurrent_batches(2)
        .build()
        .unwrap();
    let batch = layer.layer(backend.clone());
    let calls: Vec<_> = (1..=6).map(|i| spawn_call(&batch, i)).collect();
    settle().await;
    assert_eq!(backend.batches().len(), 2);
    for c in calls {
        assert!(c.await.unwrap().is_ok());
    }
    assert_eq!(backend.max_in_flight.load(Ordering::SeqCst), 2);
    let times: Vec<_> = backend
        .timed()
        .into_iter()
        .map(|(t, _)| t.as_millis())
        .collect();
    assert_eq!(times, vec![0, 0, 10, 10, 20, 20]);
}

/// A backend that is not ready holds batches back; items keep accumulating meanwhile.
#[tokio::test(start_paused = true)]
async fn backend_readiness_is_respected() {
    #[derive(Clone)]
    struct Gate(Arc<tokio::sync::Semaphore>, Arc<Mutex<Vec<Vec<u32>>>>);
    impl Service<Vec<u32>> for Gate {
        type Response = Vec<u32>;
        type Error = Fail;
        type Future = std::future::Ready<Result<Vec<u32>, Fail>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Fail>> {
            if self.0.available_permits() > 0 {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }
        fn call(&mut self, items: Vec<u32>) -> Self::Future {
            self.1.lock().unwrap().push(items.clone());
            std::future::ready(Ok(items))
        }
    }
    let gate = Gate(Arc::new(tokio::sync::Semaphore::new(0)), Default::default());
    let batch = BatchLayer::builder().build().unwrap().layer(gate.clone());
    let calls: Vec<_> = (1..=3).map(|i| spawn_call(&batch, i)).collect();
    settle().await;
    assert!(gate.1.lock().unwrap().is_empty());
    gate.0.add_permits(1);
    // Readiness here is polled, not woken: the next arrival re-polls the backend.
    let last = spawn_call(&batch, 4);
    for c in calls {
        assert!(c.await.unwrap().is_ok());
    }
    assert!(last.await.unwrap().is_ok());
    assert_eq!(*gate.1.lock().unwrap(), vec![vec![1, 2, 3, 4]]);
}

#[tokio::test(start_paused = true)]
async fn dropping_every_batch_sends_what_is_left() {
    let backend = Recorder::new(Duration::ZERO);
    let batch = classic(100, Duration::from_secs(3600)).layer(backend.clone());
    let pending = batch.load(7);
    drop(batch);
    assert_eq!(pending.await, Ok(70));
    assert_eq!(backend.batches(), vec![vec![7]]);
}
