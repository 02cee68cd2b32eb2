//! Random arrivals, random cancellations, random backend delays, errors and panics: every caller that waits gets
//! exactly one answer, no item is sent after its caller left, and the queue drains to zero.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::sleep;
use tower::{Layer, Service};
use tower_kit_batch::{BatchError, BatchLayer};
use tower_kit_test_support::Rng;

const CALLERS: usize = 3000;

#[derive(Clone)]
struct Backend {
    left: Arc<Vec<AtomicBool>>,
    sent: Arc<Vec<AtomicUsize>>,
    violations: Arc<Mutex<Vec<usize>>>,
    rng: Arc<Mutex<Rng>>,
    keyed: bool,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Service<Vec<usize>> for Backend {
    type Response = HashMap<usize, usize>;
    type Error = &'static str;
    type Future = BoxFuture<Result<HashMap<usize, usize>, &'static str>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, items: Vec<usize>) -> Self::Future {
        // On a current-thread runtime nothing runs between the worker claiming these items and this call, so a
        // caller marked as gone here really left before dispatch.
        for &i in &items {
            let id = if self.keyed { i } else { i % CALLERS };
            if !self.keyed && self.left[id].load(Ordering::SeqCst) {
                self.violations.lock().unwrap().push(id);
            }
            self.sent[id].fetch_add(1, Ordering::SeqCst);
        }
        let (delay, fate) = {
            let mut rng = self.rng.lock().unwrap();
            (rng.below(3000), rng.below(40))
        };
        Box::pin(async move {
            sleep(Duration::from_micros(delay)).await;
            match fate {
                0 => panic!("random backend panic"),
                1 => Err("random backend error"),
                // Occasionally forget one item.
                2 => Ok(items.iter().skip(1).map(|&i| (i, i * 2)).collect()),
                _ => Ok(items.iter().map(|&i| (i, i * 2)).collect()),
            }
        })
    }
}

async fn run(seed: u64, keyed: bool) {
    let left: Arc<Vec<AtomicBool>> =
        Arc::new((0..CALLERS).map(|_| AtomicBool::new(false)).collect());
    let backend = Backend {
        left: left.clone(),
        sent: Arc::new((0..CALLERS).map(|_| AtomicUsize::new(0)).collect()),
        violations: Arc::default(),
        rng: Arc::new(Mutex::new(Rng::new(seed))),
        keyed,
    };
    let builder = BatchLayer::<usize>::builder()
        .max_items(16)
        .max_latency(Duration::from_micros(500))
        .max_concurrent_batches(3)
        .max_queued(200)
        .partition_by(|i: &usize| i % 3);
    let batch = if keyed {
        // Keyed: callers share keys (i % 97), so merged entries with some callers gone are exercised.
        builder
            .keyed(|i: &usize| i % 97)
            .build()
            .unwrap()
            .layer(tower::service_fn({
                let mut b = backend.clone();
                move |items: Vec<usize>| b.call(items.into_iter().map(|i| i % 97).collect())
            }))
    } else {
        // Ordered: the answer is a Vec in item order; a forgotten item cuts the answer short there.
        builder.build().unwrap().layer(tower::service_fn({
            let mut b = backend.clone();
            move |items: Vec<usize>| {
                let order = items.clone();
                let answer = b.call(items);
                async move {
                    let map = answer.await?;
                    Ok::<_, &'static str>(
                        order
                            .iter()
                            .map_while(|i| map.get(i).copied())
                            .collect::<Vec<_>>(),
                    )
                }
            }
        }))
    };
    let answers = Arc::new(
        (0..CALLERS)
            .map(|_| AtomicUsize::new(0))
            .collect::<Vec<_>>(),
    );
    let mut rng = Rng::new(seed ^ 0x9E37_79B9_7F4A_7C15);
    let mut tasks = Vec::new();
    let overloaded = Arc::new(AtomicUsize::new(0));
    for id in 0..CALLERS {
        let start = rng.below(20_000);
        let patience = rng.below(4) == 0;
        let wait = rng.below(2_000);
        let (batch, answers, left, overloaded) = (
            batch.clone(),
            answers.clone(),
            left.clone(),
            overloaded.clone(),
        );
        tasks.push(tokio::spawn(async move {
            sleep(Duration::from_micros(start)).await;
            let fut = batch.load(id);
            if patience {
                tokio::select! {
                    result = fut => {
                        check(id, keyed, &result, &overloaded);
                        answers[id].fetch_add(1, Ordering::SeqCst);
                    }
                    () = sleep(Duration::from_micros(wait)) => {
                        // `fut` was dropped by select!; from now on the caller is gone.
                        left[id].store(true, Ordering::SeqCst);
                    }
                }
            } else {
                let result = fut.await;
                check(id, keyed, &result, &overloaded);
                answers[id].fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        backend.violations.lock().unwrap().is_empty(),
        "items sent after their caller left: {:?}",
        backend.violations.lock().unwrap()
    );
    let mut answered = 0;
    let gone = left.iter().filter(|l| l.load(Ordering::SeqCst)).count();
    assert!(gone > CALLERS / 20, "enough callers left: {gone}");
    for id in 0..CALLERS {
        let n = answers[id].load(Ordering::SeqCst);
        let gone = left[id].load(Ordering::SeqCst);
        assert_eq!(
            n + usize::from(gone),
            1,
            "caller {id}: {n} answers, left: {gone}"
        );
        if !keyed {
            assert!(
                backend.sent[id].load(Ordering::SeqCst) <= 1,
                "item {id} sent twice"
            );
        }
        answered += n;
    }
    assert!(answered > CALLERS / 2, "most callers waited: {answered}");
    assert_eq!(batch.queued(), 0, "queue drained");
    assert!(
        overloaded.load(Ordering::SeqCst) < CALLERS,
        "not everything refused"
    );
}

fn check(
    id: usize,
    keyed: bool,
    result: &Result<usize, BatchError<&'static str>>,
    overloaded: &AtomicUsize,
) {
    match result {
        Ok(v) => {
            let want = if keyed { (id % 97) * 2 } else { id * 2 };
            assert_eq!(*v, want, "caller {id} got another caller's answer");
        }
        Err(BatchError::Overloaded) => {
            overloaded.fetch_add(1, Ordering::SeqCst);
        }
        Err(BatchError::BackendPanicked | BatchError::MissingResult | BatchError::Backend(_)) => {}
        Err(BatchError::Cancelled) => panic!("caller {id}: the batcher never stops here"),
        Err(other) => panic!("caller {id}: unexpected {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn random_cancellation_ordered_mode() {
    for seed in [1, 2, 3] {
        run(seed * 0x1234_5678_9ABC, false).await;
    }
}

#[tokio::test(start_paused = true)]
async fn random_cancellation_keyed_items_with_shared_keys() {
    for seed in [4, 5] {
        run(seed * 0x1234_5678_9ABC, true).await;
    }
}
