//! The dissemination queue: state changes and user events waiting to piggyback on packets.
//!
//! Each item is sent at most `limit` times (`retransmit_mult * ceil(log10(n + 1))`). Packing takes
//! the least-sent items first and, among equals, the newest, until the packet budget is spent. A
//! newer claim about a member replaces the queued one, so stale claims are never sent.

use super::message::{item_len, Message};
use crate::identity::NodeId;
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::BTreeSet;

/// What a broadcast is about; a new broadcast replaces a queued one with the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum BroadcastKey {
    /// A membership claim (alive, suspect, dead) about a member.
    Member(NodeId),
    /// A user event, by origin and Lamport time.
    Event(NodeId, u64),
}

#[derive(Debug)]
struct Item {
    key: BroadcastKey,
    msg: Message,
    /// Bytes in a packet, length prefix included.
    len: usize,
    transmits: u32,
}

/// Items are ordered by `(transmits, newest first)`; `id` grows with every push.
type Slot = (u32, Reverse<u64>);

/// Smallest item worth looking for once the budget runs low (an ack is about 4 bytes).
const ITEM_BYTES_MIN: usize = 4;
/// Items examined per pick at most, so that packing stays cheap with a long queue.
const SCAN_MAX: usize = 512;
/// Items in a row that did not fit before packing gives up: the packet is as good as full.
const MISSES_MAX: usize = 16;

/// Bounded queue of broadcasts.
#[derive(Debug)]
pub(crate) struct BroadcastQueue {
    order: BTreeSet<Slot>,
    items: FxHashMap<u64, Item>,
    by_key: FxHashMap<BroadcastKey, u64>,
    next_id: u64,
    max: usize,
}

impl BroadcastQueue {
    pub fn new(max: usize) -> Self {
        debug_assert!(max > 0);
        BroadcastQueue {
            order: BTreeSet::new(),
            items: FxHashMap::default(),
            by_key: FxHashMap::default(),
            next_id: 0,
            max,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Queues `msg`, replacing a queued item with the same key. Over the bound, the most sent
    /// (then oldest) item is dropped.
    pub fn push(&mut self, key: BroadcastKey, msg: Message) {
        if let Some(old) = self.by_key.remove(&key) {
            self.remove(old);
        }
        let id = self.next_id;
        self.next_id += 1;
        let len = item_len(msg.encoded_len());
        self.order.insert((0, Reverse(id)));
        self.by_key.insert(key.clone(), id);
        self.items.insert(
            id,
            Item {
                key,
                msg,
                len,
                transmits: 0,
            },
        );
        while self.items.len() > self.max {
            let &(_, Reverse(worst)) = self.order.last().expect("non-empty");
            self.remove(worst);
        }
        debug_assert_eq!(self.order.len(), self.items.len());
    }

    fn remove(&mut self, id: u64) {
        if let Some(item) = self.items.remove(&id) {
            self.order.remove(&(item.transmits, Reverse(id)));
            if self.by_key.get(&item.key) == Some(&id) {
                self.by_key.remove(&item.key);
            }
        }
    }

    /// How many times the item with `key` was sent, if it is still queued.
    pub fn transmits(&self, key: &BroadcastKey) -> Option<u32> {
        self.by_key.get(key).map(|id| self.items[id].transmits)
    }

    /// Appends up to `count_max` items fitting in `budget` bytes to `out`, least sent first;
    /// items reaching `limit` transmissions leave the queue. Returns the bytes used.
    pub fn pick(
        &mut self,
        budget: usize,
        count_max: usize,
        limit: u32,
        out: &mut Vec<Message>,
    ) -> usize {
        let mut used = 0;
        let mut taken: Vec<u64> = Vec::new();
        let mut misses = 0;
        for &(_, Reverse(id)) in self.order.iter().take(SCAN_MAX) {
            if budget - used < ITEM_BYTES_MIN || taken.len() >= count_max || misses >= MISSES_MAX {
                break;
            }
            let item = &self.items[&id];
            if item.len <= budget - used {
                used += item.len;
                out.push(item.msg.clone());
                taken.push(id);
                misses = 0;
            } else {
                misses += 1;
            }
        }
        for id in taken {
            self.bump(id, limit);
        }
        used
    }

    fn bump(&mut self, id: u64, limit: u32) {
        let item = self.items.get_mut(&id).expect("picked item exists");
        self.order.remove(&(item.transmits, Reverse(id)));
        item.transmits += 1;
        if item.transmits >= limit {
            self.remove(id);
        } else {
            self.order.insert((item.transmits, Reverse(id)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::message::{Ack, Dead, Incarnation};

    fn dead(name: &str, inc: u64) -> (BroadcastKey, Message) {
        let id = NodeId::new(name).unwrap();
        let msg = Message::Dead(Dead {
            incarnation: Incarnation(inc),
            node: id.clone(),
            from: id.clone(),
        });
        (BroadcastKey::Member(id), msg)
    }

    #[test]
    fn newer_claim_replaces_queued_one() {
        let mut q = BroadcastQueue::new(10);
        let (k, m) = dead("a", 1);
        q.push(k.clone(), m);
        let (k2, m2) = dead("a", 2);
        q.push(k2, m2.clone());
        assert_eq!(q.len(), 1);
        let mut out = Vec::new();
        q.pick(1000, 10, 5, &mut out);
        assert_eq!(out, vec![m2]);
        assert_eq!(q.transmits(&k), Some(1));
    }

    #[test]
    fn least_sent_then_newest_first_and_limit_retires() {
        let mut q = BroadcastQueue::new(10);
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let (k, m) = dead(name, i as u64);
            q.push(k, m);
        }
        let mut out = Vec::new();
        q.pick(1000, 1, 2, &mut out); // takes c (newest)
        out.clear();
        q.pick(1000, 2, 2, &mut out); // b and a (never sent) before c
        let names: Vec<_> = out
            .iter()
            .map(|m| match m {
                Message::Dead(d) => d.node.to_string(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(names, ["b", "a"]);
        out.clear();
        q.pick(1000, 10, 2, &mut out); // every item's second send: all retire
        assert_eq!(out.len(), 3);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn budget_is_respected_and_small_items_fill_gaps() {
        let mut q = BroadcastQueue::new(10);
        let (k, big) = dead(&"x".repeat(100), 0);
        q.push(k, big);
        q.push(
            BroadcastKey::Event(NodeId::new("o").unwrap(), 1),
            Message::Ack(Ack { seq: 1 }),
        );
        let mut out = Vec::new();
        let used = q.pick(20, 10, 5, &mut out);
        assert_eq!(out, vec![Message::Ack(Ack { seq: 1 })]);
        assert!(used <= 20);
    }

    #[test]
    fn bound_drops_most_sent() {
        let mut q = BroadcastQueue::new(2);
        let (ka, a) = dead("a", 0);
        q.push(ka.clone(), a);
        let mut out = Vec::new();
        q.pick(1000, 10, 9, &mut out); // a sent once
        let (kb, b) = dead("b", 0);
        q.push(kb.clone(), b);
        let (kc, c) = dead("c", 0);
        q.push(kc.clone(), c);
        assert_eq!(q.len(), 2);
        assert_eq!(q.transmits(&ka), None);
        assert!(q.transmits(&kb).is_some() && q.transmits(&kc).is_some());
    }
}
