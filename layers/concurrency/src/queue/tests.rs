//! The gate's tests: the queue orders, cancellation, the fast path racing the slow path.

use super::{wait_list::NIL, *};
use std::{
    sync::atomic::{AtomicUsize, Ordering},
    task::Waker,
    time::Duration,
};

fn gate(limit: usize, max_queue: usize, order: QueueOrder) -> Arc<Gate> {
    Arc::new(Gate::new(
        limit,
        max_queue,
        order,
        Arc::new(Metrics::disabled()),
    ))
}

fn now(a: Acquired<Arc<Gate>>) -> Permit<Arc<Gate>> {
    match a {
        Acquired::Now(p, _) => p,
        _ => panic!("expected a permit"),
    }
}

fn queued(a: Acquired<Arc<Gate>>) -> Waiter<Arc<Gate>> {
    match a {
        Acquired::Queued(w) => w,
        _ => panic!("expected to be queued"),
    }
}

fn noop() -> Option<&'static Waker> {
    Some(Waker::noop())
}

#[test]
fn refuses_at_once_without_a_queue() {
    let g = gate(2, 0, QueueOrder::Fifo);
    let a = now(Gate::acquire(&g));
    let _b = now(Gate::acquire(&g));
    assert!(matches!(Gate::acquire(&g), Acquired::Refused));
    assert_eq!(g.in_flight(), 2);
    drop(a);
    assert_eq!(g.in_flight(), 1);
    let _c = now(Gate::acquire(&g));
}

#[test]
fn fifo_hands_slots_out_in_arrival_order_and_bounds_the_queue() {
    let g = gate(1, 3, QueueOrder::Fifo);
    let p = now(Gate::acquire(&g));
    let mut w: Vec<Waiter<Arc<Gate>>> = (0..3).map(|_| queued(Gate::acquire(&g))).collect();
    assert!(
        matches!(Gate::acquire(&g), Acquired::Refused),
        "FIFO queue full refuses the newcomer"
    );
    assert_eq!(g.queued(), 3);
    for x in &mut w {
        assert!(x.check(noop()).is_pending());
    }
    drop(p);
    let _p0 = w[0].check(noop());
    assert!(matches!(_p0, Poll::Ready(Ok(_))));
    assert!(w[1].check(noop()).is_pending());
    assert_eq!(g.in_flight(), 1);
    assert_eq!(g.queued(), 2);
}

#[test]
fn lifo_serves_the_newest_and_evicts_the_oldest_when_full() {
    let g = gate(1, 2, QueueOrder::Lifo);
    let p = now(Gate::acquire(&g));
    let mut first = queued(Gate::acquire(&g));
    let mut second = queued(Gate::acquire(&g));
    // Full: a third caller evicts the oldest (first) rather than being refused.
    let mut third = queued(Gate::acquire(&g));
    assert!(matches!(first.check(noop()), Poll::Ready(Err(Evicted))));
    assert_eq!(g.queued(), 2);
    drop(p);
    let _p3 = third.check(noop());
    assert!(matches!(_p3, Poll::Ready(Ok(_))));
    assert!(second.check(noop()).is_pending());
}

#[test]
fn a_dropped_waiter_leaves_at_once_and_the_next_one_is_served() {
    let g = gate(1, 4, QueueOrder::Fifo);
    let p = now(Gate::acquire(&g));
    let a = queued(Gate::acquire(&g));
    let mut b = queued(Gate::acquire(&g));
    assert_eq!(g.queued(), 2);
    drop(a);
    assert_eq!(g.queued(), 1, "left the queue when dropped");
    drop(p);
    assert!(matches!(b.check(noop()), Poll::Ready(Ok(_))));
}

#[test]
fn a_granted_but_dropped_waiter_passes_its_slot_on() {
    let g = gate(1, 4, QueueOrder::Fifo);
    let p = now(Gate::acquire(&g));
    let a = queued(Gate::acquire(&g));
    let mut b = queued(Gate::acquire(&g));
    drop(p); // granted to `a`, which never polls again
    drop(a);
    let permit = match b.check(noop()) {
        Poll::Ready(Ok((permit, _))) => permit,
        other => panic!("b should hold the slot, got {:?}", other.map(|r| r.is_ok())),
    };
    assert_eq!(g.in_flight(), 1);
    drop(permit);
    assert_eq!(g.in_flight(), 0);
    assert_eq!(g.queued(), 0);
}

#[test]
fn waking_reaches_the_registered_waker() {
    struct Count(AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let waker = Waker::from(count.clone());
    let g = gate(1, 1, QueueOrder::Fifo);
    let p = now(Gate::acquire(&g));
    let mut w = queued(Gate::acquire(&g));
    assert!(w.check(Some(&waker)).is_pending());
    drop(p);
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
}

#[test]
fn raising_the_limit_admits_waiters_and_lowering_it_drains() {
    let g = gate(1, 8, QueueOrder::Fifo);
    let p = now(Gate::acquire(&g));
    let mut w: Vec<Waiter<Arc<Gate>>> = (0..3).map(|_| queued(Gate::acquire(&g))).collect();
    g.set_limit(3);
    let _p0 = w[0].check(noop());
    let _p1 = w[1].check(noop());
    assert!(matches!(
        (&_p0, &_p1),
        (Poll::Ready(Ok(_)), Poll::Ready(Ok(_)))
    ));
    assert!(w[2].check(noop()).is_pending());
    assert_eq!(g.in_flight(), 3);
    g.set_limit(1);
    drop(p);
    assert_eq!(
        g.in_flight(),
        2,
        "over the new limit: the slot is not handed on"
    );
    assert!(w[2].check(noop()).is_pending());
    assert_eq!(g.limit(), 1);
}

#[test]
fn slab_nodes_are_reused() {
    let g = gate(1, 2, QueueOrder::Fifo);
    let _p = now(Gate::acquire(&g));
    for _ in 0..1000 {
        drop(queued(Gate::acquire(&g)));
    }
    assert!(g.lock().list.nodes.len() <= 2);
    assert_eq!(g.queued(), 0);
}

/// Many tasks on a multi-thread runtime, each waiting with a random deadline (cancellation while queued,
/// sometimes after being granted), some aborted outright; at the end no slot is held and the queue is empty.
#[test]
fn stress_random_cancellation_leaves_nothing_behind() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    for order in [QueueOrder::Fifo, QueueOrder::Lifo] {
        let g = gate(8, 64, order);
        let inside = Arc::new(AtomicUsize::new(0));
        let max_inside = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let timed_out = Arc::new(AtomicUsize::new(0));
        rt.block_on(async {
            let mut tasks = Vec::new();
            let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
            for i in 0..4000u64 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let wait_us = seed % 3000;
                let work_us = (seed >> 20) % 1500;
                let (g, inside, max_inside, served, timed_out) = (
                    g.clone(),
                    inside.clone(),
                    max_inside.clone(),
                    served.clone(),
                    timed_out.clone(),
                );
                let task = tokio::spawn(async move {
                    let permit = match Gate::acquire(&g) {
                        Acquired::Now(p, _) => p,
                        Acquired::Refused => return,
                        Acquired::Queued(w) => {
                            match tokio::time::timeout(Duration::from_micros(wait_us), w).await {
                                Ok(Ok((p, _))) => p,
                                Ok(Err(Evicted)) => return,
                                Err(_) => {
                                    timed_out.fetch_add(1, Ordering::SeqCst);
                                    return;
                                }
                            }
                        }
                    };
                    // Counted out on drop too, since an abort can land during the work.
                    struct Inside(Arc<AtomicUsize>);
                    impl Drop for Inside {
                        fn drop(&mut self) {
                            self.0.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                    let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    let counted = Inside(inside);
                    max_inside.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_micros(work_us)).await;
                    served.fetch_add(1, Ordering::SeqCst);
                    drop(counted);
                    drop(permit);
                });
                tasks.push(task);
                if i % 16 == 0 {
                    // Arrivals at about twice the service rate: the queue fills, waits time out.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                if i % 50 == 0 {
                    // Abort some recent tasks while they are queued, running or not yet started.
                    for t in tasks.iter().rev().take(20).step_by(3) {
                        t.abort();
                    }
                    tokio::task::yield_now().await;
                }
            }
            // A join handle resolves once its task's future has been dropped, aborted or not.
            for t in tasks {
                let _ = t.await;
            }
        });
        let max = max_inside.load(Ordering::SeqCst);
        assert!(max <= 8, "{order:?}: {max} inside at once");
        let (served, timed_out) = (
            served.load(Ordering::SeqCst),
            timed_out.load(Ordering::SeqCst),
        );
        assert!(
            served > 100 && timed_out > 100,
            "{order:?}: served {served}, timed out {timed_out}"
        );
        assert_eq!(g.in_flight(), 0, "{order:?}: no slot held at the end");
        assert_eq!(g.queued(), 0, "{order:?}: queue empty at the end");
        let state = g.lock();
        assert_eq!(state.list.head, NIL);
        assert_eq!(state.list.tail, NIL);
        assert_eq!(
            state.list.free.len(),
            state.list.nodes.len(),
            "{order:?}: every slab node was returned"
        );
        drop(state);
        g.assert_consistent();
    }
}

#[test]
fn the_fast_path_takes_and_gives_back_without_the_queue_flag() {
    let g = gate(2, 4, QueueOrder::Fifo);
    let (a, n) = match Gate::acquire(&g) {
        Acquired::Now(p, n) => (p, n),
        _ => panic!("expected a permit"),
    };
    assert_eq!(n, 1, "slots taken at admission, this one included");
    let b = now(Gate::acquire(&g));
    assert_eq!(g.word.load(Ordering::Relaxed), 2 * SLOT, "no QUEUED bit");
    let w = queued(Gate::acquire(&g));
    assert_eq!(g.word.load(Ordering::Relaxed) & QUEUED, QUEUED);
    g.assert_consistent();
    drop(w);
    assert_eq!(
        g.word.load(Ordering::Relaxed),
        2 * SLOT,
        "the last waiter leaving clears the bit, reopening the fast path"
    );
    drop((a, b));
    assert_eq!(g.word.load(Ordering::Relaxed), 0);
    g.assert_consistent();
}

/// The recheck: a caller that missed the fast path while a slot was being freed takes the slot instead of
/// queueing next to it (a waiter there would never be woken).
#[test]
fn the_slow_path_takes_a_slot_freed_after_the_fast_path_looked() {
    for max_queue in [0, 3] {
        let g = gate(1, max_queue, QueueOrder::Fifo);
        match g.acquire_slow(&g) {
            Acquired::Now(_permit, 1) => {}
            _ => panic!("max_queue {max_queue}: a free slot must be taken, not queued for"),
        }
        assert_eq!(g.word.load(Ordering::Relaxed), 0, "and given back");
        g.assert_consistent();
    }
}

/// New callers do not barge past queued ones, even for a slot the limit would allow: while anyone is queued
/// the fast path is closed, and a freed slot goes to the queue.
#[test]
fn new_callers_queue_behind_waiters_and_freed_slots_go_to_the_queue() {
    let g = gate(2, 8, QueueOrder::Fifo);
    let a = now(Gate::acquire(&g));
    let b = now(Gate::acquire(&g));
    let mut first = queued(Gate::acquire(&g));
    // Lower the limit and give a slot back: it drains (not handed on), and still nobody barges in.
    g.set_limit(1);
    drop(a);
    assert_eq!(g.in_flight(), 1);
    let mut second = queued(Gate::acquire(&g));
    assert!(first.check(noop()).is_pending());
    g.assert_consistent();
    // Raising it again admits the first waiter, in order; the newcomer behind it waits.
    g.set_limit(2);
    let p1 = match first.check(noop()) {
        Poll::Ready(Ok((p, 2))) => p,
        _ => panic!("the first waiter gets the slot"),
    };
    assert!(second.check(noop()).is_pending());
    assert!(matches!(Gate::acquire(&g), Acquired::Queued(_)));
    drop(b);
    assert!(matches!(second.check(noop()), Poll::Ready(Ok(_))));
    drop(p1);
    assert_eq!(g.in_flight(), 0);
    assert_eq!(g.queued(), 0);
    g.assert_consistent();
}

/// The fast path racing the slow path: tasks on several threads take and give back slots with no pause,
/// so that releases land while others are deciding to queue; with the queue off, FIFO and LIFO; with waiters
/// that give up at random. Waiters without a deadline would hang on a lost wakeup, which the overall timeout
/// turns into a failure. At the end: no slot held, nobody queued, the flag clear, never more than N inside.
#[test]
fn stress_fast_path_races_slow_path() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .on_thread_start(|| WIDEN_RACES.set(true))
        .build()
        .unwrap();
    const LIMIT: usize = 3;
    const TASKS: u64 = 32;
    const ROUNDS: u64 = 1500;
    // The last two also move the limit up and down while the others run (what the adaptive limit does).
    for (order, max_queue, resize) in [
        (QueueOrder::Fifo, 0, false),
        (QueueOrder::Fifo, 4, false),
        (QueueOrder::Fifo, 64, false),
        (QueueOrder::Lifo, 4, false),
        (QueueOrder::Lifo, 64, false),
        (QueueOrder::Fifo, 64, true),
        (QueueOrder::Lifo, 8, true),
    ] {
        let g = gate(LIMIT, max_queue, order);
        let inside = Arc::new(AtomicUsize::new(0));
        let max_inside = Arc::new(AtomicUsize::new(0));
        let (fast, queued_n, refused, gave_up) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let run = async {
            // Checks the invariants while the others run (and moves the limit, when asked).
            let checker = {
                let (g, done) = (g.clone(), done.clone());
                tokio::spawn(async move {
                    let mut round = 0usize;
                    while !done.load(Ordering::Relaxed) {
                        g.assert_consistent();
                        if resize {
                            round += 1;
                            g.set_limit(1 + round % LIMIT);
                        }
                        tokio::task::yield_now().await;
                    }
                    g.set_limit(LIMIT);
                })
            };
            let tasks: Vec<_> = (0..TASKS)
                .map(|t| {
                    let (g, inside, max_inside) = (g.clone(), inside.clone(), max_inside.clone());
                    let (fast, queued_n, refused, gave_up) = (
                        fast.clone(),
                        queued_n.clone(),
                        refused.clone(),
                        gave_up.clone(),
                    );
                    tokio::spawn(async move {
                        let mut seed =
                            0x2545_F491_4F6C_DD1D_u64 ^ (t + 1).wrapping_mul(0x9E37_79B9);
                        for _ in 0..ROUNDS {
                            seed ^= seed << 13;
                            seed ^= seed >> 7;
                            seed ^= seed << 17;
                            let permit = match Gate::acquire(&g) {
                                Acquired::Now(p, n) => {
                                    assert!(n <= LIMIT, "{n} slots taken");
                                    fast.fetch_add(1, Ordering::Relaxed);
                                    p
                                }
                                Acquired::Refused => {
                                    refused.fetch_add(1, Ordering::Relaxed);
                                    tokio::task::yield_now().await;
                                    continue;
                                }
                                Acquired::Queued(w) => {
                                    queued_n.fetch_add(1, Ordering::Relaxed);
                                    if seed.is_multiple_of(8) {
                                        // Give up soon: cancellation racing with grants.
                                        let wait = Duration::from_micros(seed % 200);
                                        match tokio::time::timeout(wait, w).await {
                                            Ok(Ok((p, _))) => p,
                                            Ok(Err(Evicted)) | Err(_) => {
                                                gave_up.fetch_add(1, Ordering::Relaxed);
                                                continue;
                                            }
                                        }
                                    } else {
                                        // No deadline: only a freed slot (or a LIFO eviction) ends this.
                                        match w.await {
                                            Ok((p, _)) => p,
                                            Err(Evicted) => {
                                                gave_up.fetch_add(1, Ordering::Relaxed);
                                                continue;
                                            }
                                        }
                                    }
                                }
                            };
                            let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                            max_inside.fetch_max(n, Ordering::SeqCst);
                            if seed.is_multiple_of(4) {
                                tokio::task::yield_now().await;
                            }
                            inside.fetch_sub(1, Ordering::SeqCst);
                            drop(permit);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            done.store(true, Ordering::Relaxed);
            checker.await.unwrap();
        };
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), run)
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{order:?}, max_queue {max_queue}: stuck (a lost wakeup?): {} taken, {} queued",
                        g.in_flight(),
                        g.queued()
                    )
                })
        });
        let label = format!("{order:?}, max_queue {max_queue}, resize {resize}");
        let max = max_inside.load(Ordering::SeqCst);
        assert!(max <= LIMIT, "{label}: {max} inside at once");
        assert_eq!(g.in_flight(), 0, "{label}: no slot held at the end");
        assert_eq!(g.queued(), 0, "{label}: queue empty at the end");
        assert_eq!(g.word.load(Ordering::SeqCst), 0, "{label}: flag clear");
        g.assert_consistent();
        let (fast, queued_n, refused) = (
            fast.load(Ordering::Relaxed),
            queued_n.load(Ordering::Relaxed),
            refused.load(Ordering::Relaxed),
        );
        // The race happened: the fast path ran beside the queue. How often depends on scheduling (moving the
        // limit down to one makes most callers queue, and a loaded machine runs fewer tasks at once), so any
        // count proves it.
        assert!(fast > 0, "{label}: fast path never taken");
        if max_queue == 0 {
            assert_eq!(queued_n, 0, "{label}");
            assert!(refused > 0, "{label}: the limit was reached");
        } else {
            assert!(queued_n > 0, "{label}: nobody queued");
        }
        let state = g.lock();
        assert_eq!(
            state.list.free.len(),
            state.list.nodes.len(),
            "{label}: every slab node was returned"
        );
    }
}
