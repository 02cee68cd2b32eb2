//! The wait list: a doubly linked list of waiters threaded through a slab, so that every operation is O(1). It
//! lives under the gate's lock.

use std::task::Waker;

pub(super) const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    Vacant,
    Queued,
    Granted,
    Evicted,
}

pub(super) struct Node {
    pub(super) generation: u32,
    pub(super) prev: u32,
    pub(super) next: u32,
    pub(super) status: Status,
    pub(super) waker: Option<Waker>,
}

/// A doubly linked list of waiters threaded through a slab, so that removal from the middle is O(1).
pub(super) struct WaitList {
    pub(super) nodes: Vec<Node>,
    pub(super) free: Vec<u32>,
    pub(super) head: u32,
    pub(super) tail: u32,
    pub(super) len: usize,
}

impl Default for WaitList {
    fn default() -> Self {
        WaitList {
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

impl WaitList {
    /// Appends a queued node; returns its index and generation.
    pub(super) fn push_back(&mut self) -> (u32, u32) {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.nodes.push(Node {
                    generation: 0,
                    prev: NIL,
                    next: NIL,
                    status: Status::Vacant,
                    waker: None,
                });
                // The queue is bounded by `max_queue` (checked by the builder to fit in u32).
                (self.nodes.len() - 1) as u32
            }
        };
        let tail = self.tail;
        let node = &mut self.nodes[index as usize];
        node.status = Status::Queued;
        node.waker = None;
        node.prev = tail;
        node.next = NIL;
        let generation = node.generation;
        if tail == NIL {
            self.head = index;
        } else {
            self.nodes[tail as usize].next = index;
        }
        self.tail = index;
        self.len += 1;
        (index, generation)
    }

    /// Takes a queued node out of the list (it stays allocated until [`free`](Self::free)).
    pub(super) fn unlink(&mut self, index: u32) {
        let (prev, next) = {
            let node = &self.nodes[index as usize];
            (node.prev, node.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
        let node = &mut self.nodes[index as usize];
        node.prev = NIL;
        node.next = NIL;
        self.len -= 1;
    }

    /// Returns an unlinked node to the free list.
    pub(super) fn free(&mut self, index: u32) {
        let node = &mut self.nodes[index as usize];
        node.status = Status::Vacant;
        node.waker = None;
        node.generation = node.generation.wrapping_add(1);
        self.free.push(index);
    }
}
