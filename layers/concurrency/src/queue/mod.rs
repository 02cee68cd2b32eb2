//! The gate: a counting semaphore with a bounded FIFO or LIFO waiter queue, built for load shedding.
//!
//! Why not `tokio::sync::Semaphore`: it is FIFO only, has no queue bound, and cannot evict the oldest waiter when a
//! fresh one arrives (what LIFO under overload needs). This one is an atomic word (slots taken, and a "someone is
//! queued" flag) in front of a `Mutex` around an index-linked list of waiters kept in a slab
//! ([`wait_list`]), so every operation is O(1):
//!
//! - [`Gate::acquire`] takes a slot at once, queues a [`Waiter`] (when the queue has room), or refuses.
//! - Releasing a slot hands it straight to the next waiter (front for FIFO, back for LIFO) without letting a new
//!   caller barge in, then wakes that waiter outside the lock.
//! - A [`Waiter`] dropped while queued unlinks itself at once (RAII); one dropped after it was granted a slot but
//!   before it collected it passes the slot on, so no slot is ever lost.
//! - The limit can change at run time (the adaptive limit does it): raising it admits waiters, lowering it lets
//!   the excess drain as permits are released.
//!
//! # The fast path
//!
//! While nobody is queued, taking and giving back a slot is one compare-and-swap on the word, without the lock.
//! The word's `QUEUED` bit is set exactly while the waiter list is non-empty, and only under the lock. Both fast
//! paths give up when they see it:
//!
//! - a caller that finds it set queues behind the waiters (no barging past them, even for a slot that looks free);
//! - a release that finds it set takes the lock and hands its slot to the next waiter.
//!
//! A caller that must queue sets the bit with a compare-and-swap from the very value in which it saw no free slot
//! (the Dekker-style recheck). A release racing with it either lands first, so the swap fails and the caller sees
//! the freed slot on its retry, or lands after, so it sees the bit and hands the slot over. A waiter therefore
//! never sleeps next to a free slot. While the bit is set, every change to the word happens under the lock.

#[cfg(test)]
mod tests;
mod wait_list;

use crate::{layer::QueueOrder, metrics::Metrics};
use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
};
use wait_list::{NIL, Status, WaitList};

// Tests widen the windows between reading the word and swapping it, so that the races they check happen often.
#[cfg(test)]
thread_local! {
    static WIDEN_RACES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
fn race_window() {
    if WIDEN_RACES.get() {
        std::thread::yield_now();
    }
}

#[cfg(not(test))]
#[inline(always)]
fn race_window() {}

/// Bit 0 of the word: the waiter list is not empty. Set and cleared under the lock only.
const QUEUED: usize = 1;
/// One slot in the word: slots taken are counted from bit 1 up.
const SLOT: usize = 2;

/// A counting semaphore with a bounded waiter queue. Shared by every service a layer makes.
pub(crate) struct Gate {
    /// `slots taken × SLOT | QUEUED`. Slots taken: live permits plus slots granted to waiters that have not
    /// collected them yet.
    word: AtomicUsize,
    /// The current limit; written under the lock.
    limit: AtomicUsize,
    queue: Mutex<Queue>,
    metrics: Arc<Metrics>,
}

/// Whatever owns (a share of) a [`Gate`]: permits and waiters keep one alive. The layer's shared config is one,
/// so that an admitted request holds a single reference count for both.
pub(crate) trait GateRef: Clone {
    fn gate(&self) -> &Gate;
}

impl GateRef for Arc<Gate> {
    #[inline]
    fn gate(&self) -> &Gate {
        self
    }
}

/// What [`Gate::acquire`] got.
pub(crate) enum Acquired<R: GateRef> {
    /// A slot was free; also says how many slots were taken then, this one included.
    Now(Permit<R>, usize),
    /// No slot was free; the caller is in the queue.
    Queued(Waiter<R>),
    /// No slot was free and the queue is full (or disabled).
    Refused,
}

/// The waiter was pushed out of a full LIFO queue by a fresher caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Evicted;

/// What the lock guards.
struct Queue {
    max_queue: usize,
    order: QueueOrder,
    list: WaitList,
}

impl Gate {
    pub(crate) fn new(
        limit: usize,
        max_queue: usize,
        order: QueueOrder,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.set_limit(limit);
        Gate {
            word: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            queue: Mutex::new(Queue {
                max_queue,
                order,
                list: WaitList::default(),
            }),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while the lock is held; if something did, the list is still consistent.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot, or queues the caller, or refuses. `owner` is cloned into the permit or waiter.
    #[inline]
    pub(crate) fn acquire<R: GateRef>(owner: &R) -> Acquired<R> {
        match Gate::try_acquire(owner) {
            Some((permit, in_flight)) => Acquired::Now(permit, in_flight),
            None => owner.gate().acquire_slow(owner),
        }
    }

    /// The fast path alone: a slot when one is free and nobody is queued, else `None` (then call
    /// [`acquire`](Self::acquire), which rechecks under the lock).
    #[inline]
    pub(crate) fn try_acquire<R: GateRef>(owner: &R) -> Option<(Permit<R>, usize)> {
        let gate = owner.gate();
        let in_flight = gate.try_take()?;
        // The permit first: from here on a panic (in a metrics recorder, say) cannot lose the slot.
        let permit = Permit {
            owner: owner.clone(),
        };
        gate.metrics.in_flight_up();
        Some((permit, in_flight))
    }

    /// The fast path: one slot by compare-and-swap, when one is free and nobody is queued.
    #[inline]
    fn try_take(&self) -> Option<usize> {
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            if word & QUEUED != 0 || word / SLOT >= self.limit.load(Ordering::Relaxed) {
                return None;
            }
            race_window();
            match self.word.compare_exchange_weak(
                word,
                word + SLOT,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(word / SLOT + 1),
                Err(actual) => word = actual,
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn acquire_slow<R: GateRef>(&self, owner: &R) -> Acquired<R> {
        let mut queue = self.lock();
        let mut word = self.word.load(Ordering::Acquire);
        // Nobody else changes the QUEUED bit while we hold the lock; fast paths may still move the count while
        // it is clear.
        while word & QUEUED == 0 {
            let (next, slot) = if word / SLOT < self.limit.load(Ordering::Relaxed) {
                // A slot was freed since the fast path looked (or the limit was raised).
                (word + SLOT, true)
            } else if queue.max_queue == 0 {
                return Acquired::Refused;
            } else {
                // No slot: announce the queue in the same step that saw none free (see the module docs).
                (word | QUEUED, false)
            };
            race_window();
            match self
                .word
                .compare_exchange(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if slot => {
                    drop(queue);
                    let permit = Permit {
                        owner: owner.clone(),
                    };
                    self.metrics.in_flight_up();
                    return Acquired::Now(permit, word / SLOT + 1);
                }
                Ok(_) => break,
                Err(actual) => word = actual,
            }
        }
        // Queued from here on: with the bit set no slot is free (see `release_locked`), and newcomers wait behind
        // whoever is already queued.
        debug_assert!(
            self.word.load(Ordering::Acquire) / SLOT >= self.limit(),
            "queueing next to a free slot"
        );
        let mut evicted = None;
        if queue.list.len >= queue.max_queue {
            if queue.order == QueueOrder::Fifo {
                return Acquired::Refused;
            }
            // LIFO: the oldest waiter is the one least likely to be served in time; it makes room.
            let oldest = queue.list.head;
            queue.list.unlink(oldest);
            let node = &mut queue.list.nodes[oldest as usize];
            node.status = Status::Evicted;
            evicted = node.waker.take();
        }
        let (index, generation) = queue.list.push_back();
        let queued_now = evicted.is_none();
        drop(queue);
        if queued_now {
            self.metrics.queued(1.0);
        }
        if let Some(waker) = evicted {
            waker.wake();
        }
        Acquired::Queued(Waiter {
            owner: owner.clone(),
            index,
            generation,
            done: false,
        })
    }

    /// Changes the limit. Raising it admits queued callers at once; lowering it takes effect as permits are
    /// released (nobody is preempted).
    pub(crate) fn set_limit(&self, limit: usize) {
        let mut wake = Vec::new();
        let mut queue = self.lock();
        if self.limit.load(Ordering::Relaxed) == limit {
            return;
        }
        self.limit.store(limit, Ordering::Relaxed);
        // While someone is queued the count only changes under the lock, so it can be read and bumped here.
        while queue.list.len > 0 && self.word.load(Ordering::Acquire) / SLOT < limit {
            let Some(waker) = self.grant_next(&mut queue) else {
                break;
            };
            self.word.fetch_add(SLOT, Ordering::AcqRel);
            wake.push(waker);
        }
        self.clear_queued_if_empty(&queue);
        let granted = wake.len();
        drop(queue);
        self.metrics.set_limit(limit);
        if granted > 0 {
            self.metrics.queued(-(granted as f64));
        }
        wake.into_iter().flatten().for_each(Waker::wake);
    }

    /// Checks the invariants the fast paths rely on (tests only): the QUEUED bit is set exactly while someone is
    /// queued, and then no slot is free.
    #[cfg(test)]
    pub(crate) fn assert_consistent(&self) {
        let queue = self.lock();
        let word = self.word.load(Ordering::Acquire);
        assert_eq!(
            word & QUEUED != 0,
            queue.list.len > 0,
            "QUEUED bit out of step with the list ({} queued, word {word:#x})",
            queue.list.len
        );
        if word & QUEUED != 0 {
            assert!(
                word / SLOT >= self.limit(),
                "a waiter sleeps next to a free slot: {} taken, limit {}, {} queued",
                word / SLOT,
                self.limit(),
                queue.list.len
            );
        }
    }

    /// The current limit.
    #[inline]
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Slots taken: requests inside, plus slots handed to waiters that are about to enter.
    #[inline]
    pub(crate) fn in_flight(&self) -> usize {
        self.word.load(Ordering::Relaxed) / SLOT
    }

    /// Callers waiting in the queue.
    pub(crate) fn queued(&self) -> usize {
        self.lock().list.len
    }

    /// Gives a slot back: to the next waiter if there is one and the limit allows, else to the pool.
    #[inline]
    fn release(&self) {
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            if word & QUEUED != 0 {
                return self.release_slow();
            }
            race_window();
            match self.word.compare_exchange_weak(
                word,
                word - SLOT,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => word = actual,
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn release_slow(&self) {
        let mut queue = self.lock();
        let woken = self.release_locked(&mut queue);
        drop(queue);
        if let Some(waker) = woken {
            self.metrics.queued(-1.0);
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Releases one slot under the lock. Returns `Some(waker)` when the slot went to a waiter (its waker, if it
    /// has polled).
    fn release_locked(&self, queue: &mut Queue) -> Option<Option<Waker>> {
        // The bit may have been cleared since the caller looked (the last waiter left): then this is a plain
        // release, which fast paths may race with, hence the atomic subtraction.
        if self.word.load(Ordering::Acquire) & QUEUED == 0
            // The limit was lowered: let the excess drain.
            || self.word.load(Ordering::Acquire) / SLOT > self.limit.load(Ordering::Relaxed)
        {
            self.word.fetch_sub(SLOT, Ordering::Release);
            return None;
        }
        // Someone is queued and the slot is within the limit: it goes to them, the count stays.
        let woken = self.grant_next(queue);
        if woken.is_none() {
            // Unreachable while the bit mirrors the list, kept for safety.
            self.word.fetch_sub(SLOT, Ordering::Release);
        }
        self.clear_queued_if_empty(queue);
        woken
    }

    /// Clears the QUEUED bit once the list is empty, reopening the fast paths. Under the lock.
    fn clear_queued_if_empty(&self, queue: &Queue) {
        if queue.list.len == 0 {
            self.word.fetch_and(!QUEUED, Ordering::AcqRel);
        }
    }

    /// Unlinks the next waiter in queue order and marks it granted; does not touch the count.
    fn grant_next(&self, queue: &mut Queue) -> Option<Option<Waker>> {
        let index = match queue.order {
            QueueOrder::Fifo => queue.list.head,
            QueueOrder::Lifo => queue.list.tail,
        };
        if index == NIL {
            return None;
        }
        queue.list.unlink(index);
        let node = &mut queue.list.nodes[index as usize];
        node.status = Status::Granted;
        Some(node.waker.take())
    }
}

/// A slot in the gate; dropping it gives the slot back (to the next waiter, if any).
pub(crate) struct Permit<R: GateRef> {
    owner: R,
}

impl<R: GateRef> Permit<R> {
    /// What keeps the gate alive (the layer's config, for the layer's permits).
    #[inline]
    pub(crate) fn owner(&self) -> &R {
        &self.owner
    }
}

impl<R: GateRef> Drop for Permit<R> {
    #[inline]
    fn drop(&mut self) {
        let gate = self.owner.gate();
        gate.metrics.in_flight_down();
        gate.release();
    }
}

impl<R: GateRef> std::fmt::Debug for Permit<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Permit")
    }
}

/// A caller in the queue. Resolves to a [`Permit`] (with the slots taken when it was granted, itself included)
/// when a slot is handed to it, or to [`Evicted`] when a fresher caller pushed it out of a full LIFO queue.
/// Dropping it leaves the queue at once.
pub(crate) struct Waiter<R: GateRef> {
    owner: R,
    index: u32,
    generation: u32,
    done: bool,
}

impl<R: GateRef> Waiter<R> {
    /// What keeps the gate alive.
    pub(crate) fn owner(&self) -> &R {
        &self.owner
    }

    /// Checks the waiter's status; with a waker, registers it for the next change.
    pub(crate) fn check(
        &mut self,
        waker: Option<&Waker>,
    ) -> Poll<Result<(Permit<R>, usize), Evicted>> {
        if self.done {
            return Poll::Ready(Err(Evicted));
        }
        let gate = self.owner.gate();
        let mut queue = gate.lock();
        let node = &mut queue.list.nodes[self.index as usize];
        debug_assert_eq!(node.generation, self.generation);
        match node.status {
            Status::Queued => {
                if let Some(waker) = waker {
                    match &mut node.waker {
                        Some(old) if old.will_wake(waker) => {}
                        slot => *slot = Some(waker.clone()),
                    }
                }
                Poll::Pending
            }
            Status::Granted => {
                queue.list.free(self.index);
                drop(queue);
                let in_flight = gate.in_flight();
                self.done = true;
                let permit = Permit {
                    owner: self.owner.clone(),
                };
                gate.metrics.in_flight_up();
                Poll::Ready(Ok((permit, in_flight)))
            }
            Status::Evicted | Status::Vacant => {
                queue.list.free(self.index);
                self.done = true;
                Poll::Ready(Err(Evicted))
            }
        }
    }
}

impl<R: GateRef> Future for Waiter<R> {
    type Output = Result<(Permit<R>, usize), Evicted>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Nothing in a waiter is structurally pinned.
        self.get_mut().check(Some(cx.waker()))
    }
}

impl<R: GateRef> Unpin for Waiter<R> {}

impl<R: GateRef> Drop for Waiter<R> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let gate = self.owner.gate();
        let mut queue = gate.lock();
        let index = self.index;
        match queue.list.nodes[index as usize].status {
            Status::Queued => {
                queue.list.unlink(index);
                queue.list.free(index);
                gate.clear_queued_if_empty(&queue);
                drop(queue);
                gate.metrics.queued(-1.0);
            }
            Status::Granted => {
                // Granted but never collected: pass the slot on.
                queue.list.free(index);
                let woken = gate.release_locked(&mut queue);
                drop(queue);
                if let Some(waker) = woken {
                    gate.metrics.queued(-1.0);
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                }
            }
            Status::Evicted | Status::Vacant => queue.list.free(index),
        }
    }
}

impl<R: GateRef> std::fmt::Debug for Waiter<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}
