//! One partition's queue of items waiting for dispatch, with keyed dedup, weights and the flush marks.

use crate::slot::Ticket;
use std::{collections::HashMap, collections::VecDeque, hash::Hash};
use tokio::time::Instant;

/// Everyone waiting for one backend item: one caller, or in keyed mode every caller with the same key.
pub(crate) enum Waiters<V, E> {
    One(Ticket<V, E>),
    Many(Vec<Ticket<V, E>>),
}

impl<V, E> Waiters<V, E> {
    fn push(&mut self, ticket: Ticket<V, E>) {
        match self {
            Waiters::Many(v) => v.push(ticket),
            Waiters::One(_) => {
                if let Waiters::One(first) = std::mem::replace(self, Waiters::Many(Vec::new())) {
                    *self = Waiters::Many(vec![first, ticket]);
                }
            }
        }
    }

    fn is_live(&self) -> bool {
        match self {
            Waiters::One(t) => t.slot().is_some_and(|s| s.is_live()),
            Waiters::Many(v) => v.iter().any(|t| t.slot().is_some_and(|s| s.is_live())),
        }
    }

    /// Claims every waiter still queued for dispatch; returns how many were claimed (0: nobody is left).
    fn dispatch(&mut self) -> usize {
        match self {
            Waiters::One(t) => usize::from(t.slot().is_some_and(|s| s.dispatch())),
            Waiters::Many(v) => {
                v.retain(|t| t.slot().is_some_and(|s| s.dispatch()));
                v.len()
            }
        }
    }

    /// Answers everyone with a clone of `result`.
    pub(crate) fn answer_all(self, result: Result<V, crate::BatchError<E>>)
    where
        V: Clone,
    {
        match self {
            Waiters::One(t) => t.answer(result),
            Waiters::Many(mut v) => {
                let last = v.pop();
                for t in v {
                    t.answer(result.clone());
                }
                if let Some(t) = last {
                    t.answer(result);
                }
            }
        }
    }

    /// Answers with `result` (ordered mode has one waiter per item; any other would get `MissingResult`).
    pub(crate) fn answer_first(self, result: Result<V, crate::BatchError<E>>) {
        match self {
            Waiters::One(t) => t.answer(result),
            Waiters::Many(v) => {
                let mut v = v.into_iter();
                if let Some(t) = v.next() {
                    t.answer(result);
                }
                for t in v {
                    t.answer(Err(crate::BatchError::MissingResult));
                }
            }
        }
    }

    /// Fails everyone with the same error.
    pub(crate) fn fail(self, error: &crate::BatchError<E>) {
        match self {
            Waiters::One(t) => t.answer(Err(error.clone())),
            Waiters::Many(v) => v.into_iter().for_each(|t| t.answer(Err(error.clone()))),
        }
    }
}

struct Entry<Req, K, V, E> {
    req: Req,
    key: K,
    waiters: Waiters<V, E>,
    weight: u64,
    enqueued: Instant,
}

/// The limits a batch is taken under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_items: usize,
    pub(crate) max_weight: u64,
}

/// A batch taken from an accumulator, ready for the backend.
pub(crate) struct Taken<Req, K, V, E> {
    pub(crate) reqs: Vec<Req>,
    pub(crate) keys: Vec<K>,
    pub(crate) waiters: Vec<Waiters<V, E>>,
    /// When the oldest item in the batch arrived.
    pub(crate) oldest: Instant,
    /// How many callers were claimed (more than `reqs.len()` when keys were merged).
    pub(crate) callers: usize,
}

pub(crate) struct Accumulator<Req, K, V, E> {
    entries: VecDeque<Entry<Req, K, V, E>>,
    /// Keyed mode: key -> absolute position (`head + index`) of its entry.
    index: HashMap<K, u64, foldhash::fast::RandomState>,
    keyed: bool,
    head: u64,
    weight: u64,
    /// Entries at absolute positions below this were asked to be flushed.
    flush_until: u64,
    /// Batches of this partition at the backend now.
    pub(crate) in_flight: usize,
    seen_cancellations: u64,
}

impl<Req, K: Hash + Eq + Clone, V, E> Accumulator<Req, K, V, E> {
    pub(crate) fn new(keyed: bool) -> Self {
        Accumulator {
            entries: VecDeque::new(),
            index: HashMap::default(),
            keyed,
            head: 0,
            weight: 0,
            flush_until: 0,
            in_flight: 0,
            seen_cancellations: 0,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When the oldest waiting item arrived.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.entries.front().map(|e| e.enqueued)
    }

    /// Adds an item; in keyed mode an item whose key is already waiting joins that entry (sent once).
    pub(crate) fn push(
        &mut self,
        req: Req,
        key: K,
        ticket: Ticket<V, E>,
        weight: u64,
        now: Instant,
    ) {
        if self.keyed {
            if let Some(&pos) = self.index.get(&key)
                && let Some(entry) = self.entries.get_mut((pos - self.head) as usize)
            {
                entry.waiters.push(ticket);
                return;
            }
            self.index
                .insert(key.clone(), self.head + self.entries.len() as u64);
        }
        self.weight = self.weight.saturating_add(weight);
        self.entries.push_back(Entry {
            req,
            key,
            waiters: Waiters::One(ticket),
            weight,
            enqueued: now,
        });
    }

    /// Asks for everything waiting now to be sent without waiting for more.
    pub(crate) fn mark_flush(&mut self) {
        self.flush_until = self.head + self.entries.len() as u64;
    }

    pub(crate) fn flush_requested(&self) -> bool {
        self.flush_until > self.head && !self.entries.is_empty()
    }

    /// Whether a full batch is waiting. Before saying yes, drops the entries of callers who left since the last
    /// look (`cancellations` is the batcher's running count), so that they never cause an early flush.
    pub(crate) fn is_full(&mut self, limits: Limits, cancellations: u64) -> bool {
        let full = |a: &Self| a.entries.len() >= limits.max_items || a.weight >= limits.max_weight;
        if !full(self) {
            return false;
        }
        if cancellations != self.seen_cancellations {
            self.seen_cancellations = cancellations;
            self.compact();
        }
        full(self)
    }

    /// Removes the entries nobody waits for any more.
    pub(crate) fn compact(&mut self) {
        let flush_end = self.flush_until.saturating_sub(self.head);
        let mut kept = VecDeque::with_capacity(self.entries.len());
        let mut kept_before_flush = 0u64;
        for (i, e) in std::mem::take(&mut self.entries).into_iter().enumerate() {
            if e.waiters.is_live() {
                if (i as u64) < flush_end {
                    kept_before_flush += 1;
                }
                kept.push_back(e);
            }
        }
        self.entries = kept;
        self.weight = self
            .entries
            .iter()
            .fold(0, |w, e| w.saturating_add(e.weight));
        self.flush_until = self.head + kept_before_flush;
        if self.keyed {
            self.index.clear();
            for (i, e) in self.entries.iter().enumerate() {
                self.index.insert(e.key.clone(), self.head + i as u64);
            }
        }
    }

    /// Takes the next batch from the front: at most `max_items` entries, and at most `max_weight` unless one item
    /// alone weighs more. Entries whose callers all left are skipped, never sent. `None` when nothing live is left.
    pub(crate) fn take(&mut self, limits: Limits) -> Option<Taken<Req, K, V, E>> {
        let mut taken: Option<Taken<Req, K, V, E>> = None;
        let mut weight = 0u64;
        while let Some(front) = self.entries.front() {
            if let Some(t) = &taken
                && (t.reqs.len() >= limits.max_items
                    || weight.saturating_add(front.weight) > limits.max_weight)
            {
                break;
            }
            let Some(mut e) = self.entries.pop_front() else {
                break;
            };
            self.head += 1;
            self.weight = self.weight.saturating_sub(e.weight);
            if self.keyed {
                self.index.remove(&e.key);
            }
            let callers = e.waiters.dispatch();
            if callers == 0 {
                continue;
            }
            weight = weight.saturating_add(e.weight);
            let t = taken.get_or_insert_with(|| Taken {
                reqs: Vec::with_capacity(limits.max_items.min(self.entries.len() + 1)),
                keys: Vec::new(),
                waiters: Vec::with_capacity(limits.max_items.min(self.entries.len() + 1)),
                oldest: e.enqueued,
                callers: 0,
            });
            t.callers += callers;
            t.reqs.push(e.req);
            if self.keyed {
                t.keys.push(e.key);
            }
            t.waiters.push(e.waiters);
        }
        if self.flush_until < self.head {
            self.flush_until = self.head;
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::Slot;
    use std::sync::Arc;

    type Acc = Accumulator<u32, u32, u32, ()>;

    fn ticket() -> (Arc<Slot<u32, ()>>, Ticket<u32, ()>) {
        let slot = Arc::new(Slot::new());
        (slot.clone(), Ticket::new(slot))
    }

    const LIMITS: Limits = Limits {
        max_items: 3,
        max_weight: u64::MAX,
    };

    #[test]
    fn takes_at_most_max_items_in_order() {
        let now = Instant::now();
        let mut acc = Acc::new(false);
        let mut slots = Vec::new();
        for i in 0..5 {
            let (s, t) = ticket();
            slots.push(s);
            acc.push(i, 0, t, 1, now);
        }
        assert!(acc.is_full(LIMITS, 0));
        let first = acc.take(LIMITS).unwrap();
        assert_eq!(first.reqs, vec![0, 1, 2]);
        assert!(first.keys.is_empty(), "ordered mode keeps no keys");
        let second = acc.take(LIMITS).unwrap();
        assert_eq!(second.reqs, vec![3, 4]);
        assert!(acc.take(LIMITS).is_none());
    }

    #[test]
    fn weight_budget_but_never_an_empty_batch() {
        let now = Instant::now();
        let mut acc = Acc::new(false);
        let limits = Limits {
            max_items: 100,
            max_weight: 10,
        };
        let mut keep = Vec::new();
        for (i, w) in [(0, 4), (1, 4), (2, 4), (3, 50), (4, 1)] {
            let (s, t) = ticket();
            keep.push(s);
            acc.push(i, 0, t, w, now);
        }
        assert!(acc.is_full(limits, 0));
        assert_eq!(acc.take(limits).unwrap().reqs, vec![0, 1]);
        assert_eq!(acc.take(limits).unwrap().reqs, vec![2]);
        assert_eq!(
            acc.take(limits).unwrap().reqs,
            vec![3],
            "a heavy item goes alone"
        );
        assert_eq!(acc.take(limits).unwrap().reqs, vec![4]);
    }

    #[test]
    fn keyed_entries_merge_and_cancelled_ones_are_skipped() {
        let now = Instant::now();
        let mut acc = Acc::new(true);
        let (a1, t) = ticket();
        acc.push(10, 1, t, 1, now);
        let (a2, t) = ticket();
        acc.push(11, 1, t, 1, now);
        let (b, t) = ticket();
        acc.push(20, 2, t, 1, now);
        assert_eq!(acc.len(), 2, "same key, one entry");
        assert!(b.cancel());
        assert!(a1.cancel());
        let taken = acc.take(LIMITS).unwrap();
        assert_eq!(taken.reqs, vec![10]);
        assert_eq!(taken.keys, vec![1]);
        assert_eq!(taken.callers, 1, "only the caller still waiting");
        assert!(!a2.cancel(), "a2 was dispatched");
        assert!(acc.is_empty());
    }

    #[test]
    fn compaction_keeps_flush_marks_and_keys() {
        let now = Instant::now();
        let mut acc = Acc::new(true);
        let mut slots = Vec::new();
        for i in 0..4 {
            let (s, t) = ticket();
            slots.push(s);
            acc.push(i, i, t, 1, now);
        }
        acc.mark_flush();
        let (late, t) = ticket();
        acc.push(9, 9, t, 1, now);
        assert!(slots[0].cancel() && slots[2].cancel());
        assert!(
            acc.is_full(LIMITS, 1),
            "3 live entries are still a full batch"
        );
        assert_eq!(acc.len(), 3);
        assert!(acc.flush_requested());
        let (dup, t) = ticket();
        acc.push(99, 3, t, 1, now); // joins key 3 after compaction rebuilt the index
        assert_eq!(acc.len(), 3);
        let taken = acc.take(LIMITS).unwrap();
        assert_eq!(taken.reqs, vec![1, 3, 9]);
        assert_eq!(taken.callers, 4);
        assert!(!acc.flush_requested());
        drop((late, dup));
    }

    #[test]
    fn cancellations_do_not_make_a_batch_full() {
        let now = Instant::now();
        let mut acc = Acc::new(false);
        let mut slots = Vec::new();
        for i in 0..3 {
            let (s, t) = ticket();
            slots.push(s);
            acc.push(i, 0, t, 1, now);
        }
        assert!(slots[1].cancel());
        assert!(!acc.is_full(LIMITS, 1));
        assert_eq!(acc.len(), 2);
    }
}
