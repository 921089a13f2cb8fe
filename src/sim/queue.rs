//! The event heap: every future happening of the run (a delivery, a timer, a fault) ordered by
//! `(time, seq)`, where `seq` is an insertion counter. Two events due at the same microsecond
//! come out in the order they were scheduled, so a run never depends on the heap's internals.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// One scheduled event.
#[derive(Debug)]
pub(crate) struct Entry<E> {
    /// Global virtual time, microseconds since the start of the run.
    pub at_us: u64,
    /// Insertion counter: the tie-breaker.
    pub seq: u64,
    /// What happens.
    pub event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at_us, self.seq) == (other.at_us, other.seq)
    }
}

impl<E> Eq for Entry<E> {}

impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Entry<E> {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest entry first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at_us, other.seq).cmp(&(self.at_us, self.seq))
    }
}

/// A min-heap of events by `(time, seq)`.
#[derive(Debug)]
pub(crate) struct EventQueue<E> {
    heap: BinaryHeap<Entry<E>>,
    next_seq: u64,
}

impl<E> EventQueue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        EventQueue { heap: BinaryHeap::new(), next_seq: 0 }
    }

    /// Schedules `event` at `at_us`.
    pub fn push(&mut self, at_us: u64, event: E) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry { at_us, seq, event });
    }

    /// The earliest event, if it is due at or before `until_us`.
    pub fn pop_until(&mut self, until_us: u64) -> Option<Entry<E>> {
        if self.heap.peek()?.at_us > until_us {
            return None;
        }
        self.heap.pop()
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

/// FNV-1a offset basis (64-bit).
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a prime (64-bit).
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A 64-bit trace hash: FNV-1a folded over 64-bit words (one xor and one multiply per word,
/// eight times cheaper than byte-wise FNV; a run folds hundreds of millions of words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceHash(u64);

impl Default for TraceHash {
    fn default() -> Self {
        TraceHash(FNV_OFFSET)
    }
}

impl TraceHash {
    /// Folds the words in order.
    pub fn fold(&mut self, words: &[u64]) {
        for &w in words {
            self.0 = (self.0 ^ w).wrapping_mul(FNV_PRIME);
        }
    }

    /// The hash as 16 hex digits.
    pub fn to_hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_by_time_then_insertion_order() {
        let mut q = EventQueue::new();
        q.push(30, "c");
        q.push(10, "a1");
        q.push(20, "b");
        q.push(10, "a2");
        q.push(10, "a3");
        let mut got = Vec::new();
        while let Some(e) = q.pop_until(u64::MAX) {
            got.push((e.at_us, e.event));
        }
        assert_eq!(got, [(10, "a1"), (10, "a2"), (10, "a3"), (20, "b"), (30, "c")]);
    }

    #[test]
    fn pop_until_stops_at_the_horizon() {
        let mut q = EventQueue::new();
        q.push(5, 1);
        q.push(15, 2);
        assert_eq!(q.pop_until(10).map(|e| e.event), Some(1));
        assert!(q.pop_until(10).is_none());
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_until(15).map(|e| e.event), Some(2));
    }

    #[test]
    fn trace_hash_depends_on_order_and_values() {
        let (mut a, mut b, mut c) = (TraceHash::default(), TraceHash::default(), TraceHash::default());
        a.fold(&[1, 2]);
        b.fold(&[2, 1]);
        c.fold(&[1, 2]);
        assert_ne!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.to_hex().len(), 16);
    }
}
