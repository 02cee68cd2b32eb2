//! The pending messages of one connection: FIFO order, latest-wins replacement by key, a bound and its policy.

use super::config::Overflow;
use std::{collections::HashMap, collections::VecDeque, hash::Hash};
use tokio::time::Instant;

struct Pending<T, K> {
    key: Option<K>,
    item: T,
    weight: usize,
    since: Instant,
}

/// What [`Queue::push`] did (the last two give the message back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Appended.
    Queued,
    /// Replaced the pending message with the same key (latest wins).
    Replaced,
    /// The queue was full: the oldest pending message was dropped, this one appended.
    DroppedOldest,
    /// The queue was full: this message was dropped.
    DroppedNewest,
    /// The queue was full and the policy closes the connection: this message was dropped.
    Close,
}

pub(crate) struct Queue<T, K, M> {
    items: VecDeque<Pending<T, K>>,
    /// Key -> sequence number of its pending message; `items[seq - base]`.
    keys: HashMap<K, u64>,
    base: u64,
    bytes: usize,
    /// Frames sent as they are, ahead of the next batch.
    pub(crate) frames: VecDeque<M>,
}

impl<T, K, M> Queue<T, K, M> {
    pub(crate) fn new() -> Self {
        Self {
            items: VecDeque::new(),
            keys: HashMap::new(),
            base: 0,
            bytes: 0,
            frames: VecDeque::new(),
        }
    }
}

impl<T, K: Hash + Eq + Clone, M> Queue<T, K, M> {
    /// Messages and frames waiting.
    pub(crate) fn len(&self) -> usize {
        self.items.len() + self.frames.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn items(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.items.front().map(|p| p.since)
    }

    pub(crate) fn push(
        &mut self,
        key: Option<K>,
        item: T,
        weight: usize,
        max_queued: usize,
        overflow: Overflow,
        now: Instant,
    ) -> Result<Pushed, (Pushed, T)> {
        if let Some(key) = &key
            && let Some(&seq) = self.keys.get(key)
        {
            let index = (seq - self.base) as usize;
            if let Some(slot) = self.items.get_mut(index) {
                self.bytes = self.bytes - slot.weight + weight;
                slot.item = item;
                slot.weight = weight;
                return Ok(Pushed::Replaced);
            }
        }
        let mut outcome = Pushed::Queued;
        if self.len() >= max_queued {
            match overflow {
                Overflow::DropNewest => return Err((Pushed::DroppedNewest, item)),
                Overflow::Close { .. } => return Err((Pushed::Close, item)),
                Overflow::DropOldest => {
                    if self.pop_front().is_none() {
                        // Only frames are waiting: drop the oldest of them.
                        self.frames.pop_front();
                    }
                    outcome = Pushed::DroppedOldest;
                }
            }
        }
        let seq = self.base + self.items.len() as u64;
        if let Some(key) = key.clone() {
            self.keys.insert(key, seq);
        }
        self.bytes += weight;
        self.items.push_back(Pending {
            key,
            item,
            weight,
            since: now,
        });
        Ok(outcome)
    }

    /// Appends a frame; `false` when the queue is full (the frame is not queued).
    pub(crate) fn push_frame(&mut self, frame: M, max_queued: usize) -> Result<(), M> {
        if self.len() >= max_queued {
            return Err(frame);
        }
        self.frames.push_back(frame);
        Ok(())
    }

    fn pop_front(&mut self) -> Option<T> {
        let p = self.items.pop_front()?;
        if let Some(key) = &p.key
            && self.keys.get(key) == Some(&self.base)
        {
            self.keys.remove(key);
        }
        self.base += 1;
        self.bytes -= p.weight;
        Some(p.item)
    }

    /// Takes a batch from the front: at most `max_messages` and, past the first message, at most `max_bytes`.
    pub(crate) fn take_batch(&mut self, max_messages: usize, max_bytes: usize) -> Vec<T> {
        let mut batch = Vec::with_capacity(max_messages.min(self.items.len()));
        let mut bytes = 0;
        while batch.len() < max_messages {
            let Some(next) = self.items.front() else {
                break;
            };
            if !batch.is_empty() && bytes + next.weight > max_bytes {
                break;
            }
            bytes += next.weight;
            if let Some(item) = self.pop_front() {
                batch.push(item);
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> Queue<&'static str, u32, ()> {
        Queue::new()
    }

    #[test]
    fn latest_wins_keeps_the_position_and_the_newest_value() {
        let mut q = q();
        let now = Instant::now();
        let push = |q: &mut Queue<_, _, _>, k, v| {
            q.push(Some(k), v, 1, 10, Overflow::DropOldest, now)
                .unwrap()
        };
        assert_eq!(push(&mut q, 1, "a1"), Pushed::Queued);
        assert_eq!(push(&mut q, 2, "b1"), Pushed::Queued);
        assert_eq!(push(&mut q, 1, "a2"), Pushed::Replaced);
        assert_eq!(q.take_batch(1, usize::MAX), ["a2"]);
        // Key 1 is no longer pending: a new message for it is appended.
        assert_eq!(push(&mut q, 1, "a3"), Pushed::Queued);
        assert_eq!(push(&mut q, 2, "b2"), Pushed::Replaced);
        assert_eq!(q.take_batch(10, usize::MAX), ["b2", "a3"]);
        assert_eq!((q.len(), q.bytes()), (0, 0));
    }

    #[test]
    fn overflow_policies() {
        let now = Instant::now();
        let mut q = q();
        for (i, v) in ["a", "b", "c"].into_iter().enumerate() {
            assert_eq!(
                q.push(Some(i as u32), v, 1, 3, Overflow::DropOldest, now),
                Ok(Pushed::Queued)
            );
        }
        assert_eq!(
            q.push(Some(9), "d", 1, 3, Overflow::DropOldest, now),
            Ok(Pushed::DroppedOldest)
        );
        // "a" was dropped with its key: key 0 is not pending any more.
        assert_eq!(
            q.push(Some(0), "a2", 1, 3, Overflow::DropNewest, now),
            Err((Pushed::DroppedNewest, "a2"))
        );
        assert_eq!(
            q.push(None, "e", 1, 3, Overflow::Close { code: 1008 }, now),
            Err((Pushed::Close, "e"))
        );
        // A replacement never overflows.
        assert_eq!(
            q.push(Some(9), "d2", 1, 3, Overflow::DropNewest, now),
            Ok(Pushed::Replaced)
        );
        assert_eq!(q.take_batch(10, usize::MAX), ["b", "c", "d2"]);
    }

    #[test]
    fn batches_respect_bytes_but_always_take_one() {
        let now = Instant::now();
        let mut q = q();
        for (i, w) in [40, 40, 40, 200].into_iter().enumerate() {
            let _ = q.push(Some(i as u32), "x", w, 10, Overflow::DropOldest, now);
        }
        assert_eq!(q.take_batch(10, 100).len(), 2);
        assert_eq!(q.bytes(), 240);
        assert_eq!(q.take_batch(10, 100).len(), 1);
        assert_eq!(
            q.take_batch(10, 100).len(),
            1,
            "a message larger than max_bytes goes alone"
        );
    }
}
