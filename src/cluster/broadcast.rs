//! The dissemination queue: state changes and user events waiting to piggyback on packets.
//!
//! Each item is sent at most `limit` times (`retransmit_mult * ceil(log10(n + 1))`), a query
//! [`QUERY_TRANSMIT_MULT`] times as many. Packing takes
//! the least-sent items first and, among equals, the newest, until the packet budget is spent. A
//! newer claim about a member replaces the queued one, so stale claims are never sent.

use super::message::{item_len, Alive, Message};
use crate::identity::{Incarnation, NodeId, NodeInfo};
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::sync::Arc;

/// What a broadcast is about; a new broadcast replaces a queued one with the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum BroadcastKey {
    /// A membership claim (alive, suspect, dead) about a member.
    Member(NodeId),
    /// A user event, by origin and Lamport time.
    Event(NodeId, u64),
    /// A query, by origin and id.
    Query(NodeId, u64),
}

impl BroadcastKey {
    fn borrowed(&self) -> KeyRef<'_> {
        match self {
            BroadcastKey::Member(id) => KeyRef::Member(id),
            BroadcastKey::Event(id, ltime) => KeyRef::Event(id, *ltime),
            BroadcastKey::Query(id, q) => KeyRef::Query(id, *q),
        }
    }
}

/// A key borrowed from a [`BroadcastKey`] or from the message it keys: the two hash and compare
/// alike, so an item whose key is its message's subject need not store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum KeyRef<'a> {
    Member(&'a NodeId),
    Event(&'a NodeId, u64),
    Query(&'a NodeId, u64),
}

fn hash(key: KeyRef<'_>) -> u64 {
    FxBuildHasher.hash_one(key)
}

/// A queued message and its key, stored small: an alive claim about its own member (nearly
/// every item while a cluster forms) inline in 16 bytes, anything else boxed with its key when
/// that is not the message's subject. A [`Message`] takes 48 bytes and a key 24 more; ten thousand
/// queues of 4,096 items each make the difference worth gigabytes.
#[derive(Debug)]
enum Stored {
    Alive(Incarnation, Arc<NodeInfo>),
    Other(Box<(Message, Option<BroadcastKey>)>),
}

/// The key a claim or an event naturally has: the member it is about, the event's origin and
/// Lamport time.
fn subject(msg: &Message) -> Option<KeyRef<'_>> {
    match msg {
        Message::Alive(a) => Some(KeyRef::Member(&a.info.id)),
        Message::Suspect(s) => Some(KeyRef::Member(&s.node)),
        Message::Dead(d) => Some(KeyRef::Member(&d.node)),
        Message::UserEvent(e) => Some(KeyRef::Event(&e.origin, e.ltime)),
        Message::Query(q) => Some(KeyRef::Query(&q.origin, q.id)),
        _ => None,
    }
}

impl Stored {
    fn new(key: BroadcastKey, msg: Message) -> Self {
        match msg {
            Message::Alive(a) if key.borrowed() == KeyRef::Member(&a.info.id) => {
                Stored::Alive(a.incarnation, a.info)
            }
            other => {
                let key = (subject(&other) != Some(key.borrowed())).then_some(key);
                Stored::Other(Box::new((other, key)))
            }
        }
    }

    fn to_message(&self) -> Message {
        match self {
            Stored::Alive(incarnation, info) => Message::Alive(Alive {
                incarnation: *incarnation,
                info: info.clone(),
            }),
            Stored::Other(other) => other.0.clone(),
        }
    }

    fn key(&self) -> KeyRef<'_> {
        match self {
            Stored::Alive(_, info) => KeyRef::Member(&info.id),
            Stored::Other(other) => match &other.1 {
                Some(key) => key.borrowed(),
                None => subject(&other.0).expect("a key is left out only when it is the subject"),
            },
        }
    }
}

#[derive(Debug)]
struct Item {
    msg: Stored,
    /// Push order: higher is newer.
    id: u64,
    /// Bytes in a packet, length prefix included.
    len: u32,
    /// Transmissions so far, and [`BULK`] for a bulk item.
    rank: u32,
}

/// A query is gossiped this many times as often as other items: nothing repairs a query a
/// member missed (membership has syncs), and each missed one is a member that does not answer.
/// At 50 members (8 sends each, the fewest for the size) about 3 in 10,000 member-query pairs
/// were missed over real UDP; with twice the sends, the chance falls to about its square.
pub(crate) const QUERY_TRANSMIT_MULT: u32 = 2;

/// Bulk items kept at most; past this the oldest is dropped. Gossip forwards only the newest joins
/// of a burst (64 claims of 16 sends each drain in about 8 s at 8 claims a packet, 15 packets a
/// second); syncs carry the rest.
pub(crate) const BULK_MAX: usize = 64;

/// Set in an item's rank when it is bulk (see [`BroadcastQueue::push_bulk`]): bulk items sort
/// after every other item.
const BULK: u32 = 1 << 31;

impl Item {
    fn key(&self) -> KeyRef<'_> {
        self.msg.key()
    }

    fn transmits(&self) -> u32 {
        self.rank & !BULK
    }

    fn is_bulk(&self) -> bool {
        self.rank & BULK != 0
    }

    /// Bulk items sort newest first whatever their transmissions; others least sent first.
    fn slot_key(&self, slot: u32) -> Slot {
        let rank = if self.is_bulk() { BULK } else { self.rank };
        (rank, Reverse(self.id), slot)
    }
}

/// Order of the items: `(bulk, then transmits; newest first; slot)`.
type Slot = (u32, Reverse<u64>, u32);

/// Smallest item worth looking for once the budget runs low (an ack is about 4 bytes).
const ITEM_BYTES_MIN: usize = 4;
/// Items examined per pick at most, so that packing stays cheap with a long queue.
const SCAN_MAX: usize = 512;
/// Items in a row that did not fit before packing gives up: the packet is as good as full.
const MISSES_MAX: usize = 16;

/// Bounded queue of broadcasts. Items live in a slab (`slots`, reused through `free`); the order
/// and the key index hold only slot numbers, and a message is stored small ([`Stored`]), which
/// keeps an item near 90 bytes in all: the simulator holds thousands of these queues.
#[derive(Debug)]
pub(crate) struct BroadcastQueue {
    order: BTreeSet<Slot>,
    slots: Vec<Option<Item>>,
    free: Vec<u32>,
    by_key: HashTable<u32>,
    next_id: u64,
    max: usize,
    /// Bulk items queued.
    bulk: usize,
}

impl BroadcastQueue {
    pub fn new(max: usize) -> Self {
        debug_assert!(max > 0 && max < u32::MAX as usize);
        BroadcastQueue {
            order: BTreeSet::new(),
            slots: Vec::new(),
            free: Vec::new(),
            by_key: HashTable::new(),
            next_id: 0,
            max,
            bulk: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    fn item(&self, slot: u32) -> &Item {
        self.slots[slot as usize]
            .as_ref()
            .expect("indexed slots are filled")
    }

    fn find(&self, key: KeyRef<'_>) -> Option<u32> {
        self.by_key
            .find(hash(key), |&s| self.item(s).key() == key)
            .copied()
    }

    /// Queues `msg`, replacing a queued item with the same key. Over the bound, the most sent
    /// (then oldest) item is dropped, bulk items first.
    pub fn push(&mut self, key: BroadcastKey, msg: Message) {
        self.push_ranked(key, msg, 0);
    }

    /// Queues `msg` as bulk: sent after every other item, and within each packet only up to the
    /// bulk budget `pick` is given (a member new to this node, heard from someone else: a burst of
    /// joins brings thousands, which syncs carry as well).
    pub fn push_bulk(&mut self, key: BroadcastKey, msg: Message) {
        self.push_ranked(key, msg, BULK);
    }

    fn push_ranked(&mut self, key: BroadcastKey, msg: Message, rank: u32) {
        if let Some(old) = self.find(key.borrowed()) {
            self.remove(old);
        }
        let id = self.next_id;
        self.next_id += 1;
        let len = item_len(msg.encoded_len()) as u32;
        let h = hash(key.borrowed());
        let item = Item {
            msg: Stored::new(key, msg),
            id,
            len,
            rank,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(item);
                s
            }
            None => {
                self.slots.push(Some(item));
                (self.slots.len() - 1) as u32
            }
        };
        self.order.insert((rank, Reverse(id), slot));
        let slots = &self.slots;
        self.by_key.insert_unique(h, slot, |&s| {
            hash(slots[s as usize].as_ref().expect("filled").key())
        });
        if rank & BULK != 0 {
            self.bulk += 1;
        }
        while self.order.len() > self.max || self.bulk > BULK_MAX {
            let &(_, _, worst) = self.order.last().expect("non-empty");
            self.remove(worst);
        }
        debug_assert_eq!(self.order.len(), self.by_key.len());
    }

    fn remove(&mut self, slot: u32) {
        let Some(item) = self.slots[slot as usize].take() else {
            return;
        };
        self.order.remove(&item.slot_key(slot));
        if item.is_bulk() {
            self.bulk -= 1;
        }
        if let Ok(e) = self.by_key.find_entry(hash(item.key()), |&s| s == slot) {
            e.remove();
        }
        self.free.push(slot);
    }

    /// How many times the item with `key` was sent, if it is still queued.
    pub fn transmits(&self, key: &BroadcastKey) -> Option<u32> {
        self.find(key.borrowed()).map(|s| self.item(s).transmits())
    }

    /// Appends up to `count_max` items fitting in `budget` bytes to `out`, least sent first,
    /// bulk items last and in `bulk_budget` bytes at most; items reaching `limit` transmissions
    /// leave the queue. Returns the bytes used.
    pub fn pick(
        &mut self,
        budget: usize,
        bulk_budget: usize,
        count_max: usize,
        limit: u32,
        out: &mut Vec<Message>,
    ) -> usize {
        let mut used = 0;
        let mut bulk_used = 0;
        let mut taken: Vec<u32> = Vec::new();
        let mut misses = 0;
        for &(_, _, slot) in self.order.iter().take(SCAN_MAX) {
            if budget - used < ITEM_BYTES_MIN || taken.len() >= count_max || misses >= MISSES_MAX {
                break;
            }
            let item = self.item(slot);
            if item.is_bulk() && bulk_used + item.len as usize > bulk_budget {
                break;
            }
            if item.len as usize <= budget - used {
                if item.is_bulk() {
                    bulk_used += item.len as usize;
                }
                used += item.len as usize;
                out.push(item.msg.to_message());
                taken.push(slot);
                misses = 0;
            } else {
                misses += 1;
            }
        }
        for slot in taken {
            self.bump(slot, limit);
        }
        used
    }

    fn bump(&mut self, slot: u32, limit: u32) {
        let item = self.slots[slot as usize]
            .as_mut()
            .expect("picked item exists");
        self.order.remove(&item.slot_key(slot));
        item.rank += 1;
        self.order.insert(item.slot_key(slot));
        let limit = match item.key() {
            KeyRef::Query(..) => limit.saturating_mul(QUERY_TRANSMIT_MULT),
            _ => limit,
        };
        if item.transmits() >= limit {
            self.remove(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::message::{Ack, Dead};

    fn dead(name: &str, inc: u64) -> (BroadcastKey, Message) {
        let id = NodeId::new(name).unwrap();
        let msg = Message::Dead(Dead {
            incarnation: Incarnation(inc),
            node: id.clone(),
            from: id.clone(),
        });
        (BroadcastKey::Member(id), msg)
    }

    fn alive(i: usize) -> (BroadcastKey, Message) {
        let id = NodeId::new(&format!("joiner-{i:03}")).unwrap();
        let info = Arc::new(NodeInfo::new(id.clone(), ([10, 0, 0, 1], 7946).into()));
        let msg = Message::Alive(Alive {
            incarnation: Incarnation(0),
            info,
        });
        (BroadcastKey::Member(id), msg)
    }

    fn name(m: &Message) -> String {
        match m {
            Message::Alive(a) => a.info.id.to_string(),
            Message::Dead(d) => d.node.to_string(),
            _ => String::new(),
        }
    }

    #[test]
    fn bulk_goes_last_newest_first_within_its_budget_and_only_the_newest_are_kept() {
        let mut q = BroadcastQueue::new(1000);
        for i in 0..100 {
            let (k, m) = alive(i);
            q.push_bulk(k, m);
        }
        let (k, m) = dead("x", 1);
        q.push(k, m);
        assert_eq!(q.len(), 1 + BULK_MAX, "the oldest bulk items are dropped");
        let one = item_len(alive(0).1.encoded_len());
        for _ in 0..2 {
            let mut out = Vec::new();
            q.pick(10_000, 3 * one, 255, 16, &mut out);
            let names: Vec<String> = out.iter().map(name).collect();
            // The non-bulk claim first (until its limit), then the three newest joins, whatever
            // they were sent before.
            let joins = ["joiner-099", "joiner-098", "joiner-097"];
            assert_eq!(names[names.len() - 3..], joins, "{names:?}");
            assert!(names.len() <= 4);
        }
        // A bulk item replaced by a claim that is not bulk leaves the bulk count.
        let (k, m) = dead("joiner-099", 1);
        q.push(k, m);
        assert_eq!((q.len(), q.bulk), (1 + BULK_MAX, BULK_MAX - 1));
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
        q.pick(1000, 0, 10, 5, &mut out);
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
        q.pick(1000, 0, 1, 2, &mut out); // takes c (newest)
        out.clear();
        q.pick(1000, 0, 2, 2, &mut out); // b and a (never sent) before c
        let names: Vec<_> = out
            .iter()
            .map(|m| match m {
                Message::Dead(d) => d.node.to_string(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(names, ["b", "a"]);
        out.clear();
        q.pick(1000, 0, 10, 2, &mut out); // every item's second send: all retire
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
        let used = q.pick(20, 0, 10, 5, &mut out);
        assert_eq!(out, vec![Message::Ack(Ack { seq: 1 })]);
        assert!(used <= 20);
        // The smallest item still goes into the last bytes it fits exactly.
        let ack = Message::Ack(Ack { seq: 300 });
        let len = item_len(ack.encoded_len());
        assert_eq!(len, ITEM_BYTES_MIN);
        q.push(
            BroadcastKey::Event(NodeId::new("o").unwrap(), 2),
            ack.clone(),
        );
        out.clear();
        assert_eq!(q.pick(len, 0, 10, 5, &mut out), len);
        assert_eq!(out, vec![ack]);
    }

    #[test]
    fn items_fill_the_budget_together_and_packing_gives_up_after_misses_in_a_row() {
        let mut q = BroadcastQueue::new(100);
        let items: Vec<_> = (0..3).map(|i| dead(&format!("n{i}"), 0)).collect();
        let len = item_len(items[0].1.encoded_len());
        for (k, m) in items {
            q.push(k, m);
        }
        let mut out = Vec::new();
        assert_eq!(q.pick(2 * len + len / 2, 0, 10, 5, &mut out), 2 * len);
        assert_eq!(out.len(), 2, "two of three fit");
        // One small item behind MISSES_MAX newer ones too large to fit: not reached.
        let mut q = BroadcastQueue::new(100);
        let (k, small) = dead("s", 0);
        let small_len = item_len(small.encoded_len());
        q.push(k, small);
        for i in 0..MISSES_MAX {
            let (k, m) = dead(&format!("{i:0>60}"), 0);
            q.push(k, m);
        }
        out.clear();
        assert_eq!(q.pick(small_len, 0, 10, 5, &mut out), 0);
        // One fewer large item: it is.
        let mut q2 = BroadcastQueue::new(100);
        let (k2, small) = dead("s", 0);
        q2.push(k2, small.clone());
        for i in 1..MISSES_MAX {
            let (k, m) = dead(&format!("{i:0>60}"), 0);
            q2.push(k, m);
        }
        out.clear();
        assert_eq!(q2.pick(small_len, 0, 10, 5, &mut out), small_len);
        assert_eq!(out, vec![small]);
    }

    #[test]
    fn queries_are_sent_twice_as_often() {
        use crate::cluster::message::Query;
        let o = NodeId::new("o").unwrap();
        let query = Message::Query(Box::new(Query {
            ltime: 1,
            id: 9,
            origin: o.clone(),
            filters: Vec::new(),
            ack: true,
            relay_factor: 0,
            timeout_ms: 1000,
            name: "q".into(),
            payload: Vec::new(),
        }));
        let mut q = BroadcastQueue::new(10);
        q.push(BroadcastKey::Query(o.clone(), 9), query);
        q.push(BroadcastKey::Event(o, 1), Message::Ack(Ack { seq: 1 }));
        let mut sent = [0; 2];
        for _ in 0..20 {
            let mut out = Vec::new();
            q.pick(1000, 0, 10, 3, &mut out);
            for m in out {
                sent[usize::from(matches!(m, Message::Query(_)))] += 1;
            }
        }
        assert_eq!(sent, [3, 3 * QUERY_TRANSMIT_MULT]);
    }

    #[test]
    fn items_stay_small() {
        // Alive claims, nearly every item while a cluster forms, are stored inline.
        assert!(std::mem::size_of::<Stored>() <= 24);
        assert!(std::mem::size_of::<Option<Item>>() <= 40);
    }

    #[test]
    fn stored_messages_come_back_unchanged() {
        let info = Arc::new(NodeInfo::new(
            NodeId::new("a").unwrap(),
            "127.0.0.1:1".parse().unwrap(),
        ));
        let alive = Message::Alive(Alive {
            incarnation: Incarnation(7),
            info,
        });
        let mut q = BroadcastQueue::new(10);
        q.push(
            BroadcastKey::Member(NodeId::new("a").unwrap()),
            alive.clone(),
        );
        let (kd, dead) = dead("b", 3);
        q.push(kd, dead.clone());
        let mut out = Vec::new();
        q.pick(1000, 0, 10, 5, &mut out);
        assert_eq!(out, vec![dead, alive]);
    }

    #[test]
    fn a_key_other_than_the_subject_is_kept() {
        let mut q = BroadcastQueue::new(10);
        let (_, m) = dead("a", 1);
        let other = BroadcastKey::Member(NodeId::new("z").unwrap());
        q.push(other.clone(), m);
        let (ka, ma) = dead("a", 2);
        q.push(ka.clone(), ma);
        assert_eq!(q.len(), 2, "different keys, both queued");
        assert!(q.transmits(&other).is_some() && q.transmits(&ka).is_some());
        let (_, m3) = dead("b", 3);
        q.push(other.clone(), m3.clone());
        assert_eq!(q.len(), 2, "same key replaces");
        let mut out = Vec::new();
        q.pick(1000, 0, 1, 5, &mut out);
        assert_eq!(out, vec![m3]);
        // An alive claim under a key other than its member's is kept apart the same way.
        let alive = Message::Alive(Alive {
            incarnation: Incarnation(1),
            info: Arc::new(NodeInfo::new(
                NodeId::new("a").unwrap(),
                "127.0.0.1:1".parse().unwrap(),
            )),
        });
        let y = BroadcastKey::Member(NodeId::new("y").unwrap());
        q.push(y.clone(), alive.clone());
        assert_eq!((q.len(), q.transmits(&y)), (3, Some(0)));
        out.clear();
        q.pick(1000, 0, 1, 5, &mut out);
        assert_eq!(out, vec![alive]);
    }

    #[test]
    fn an_item_keyed_by_its_subject_stores_no_second_key_and_keys_hash_apart() {
        use crate::cluster::message::{Query, Suspect, UserEvent};
        // The queue's size rests on these: a claim, event or query queued under the key its
        // message names is stored without a copy of that key (the key is read back from the
        // message), and the key index spreads keys over buckets (a constant hash would still
        // find every key, one long probe at a time).
        let a = NodeId::new("a").unwrap();
        let items = [
            (BroadcastKey::Member(a.clone()), dead("a", 1).1),
            (
                BroadcastKey::Member(a.clone()),
                Message::Suspect(Suspect {
                    incarnation: Incarnation(1),
                    node: a.clone(),
                    from: a.clone(),
                }),
            ),
            (
                BroadcastKey::Event(a.clone(), 5),
                Message::UserEvent(Box::new(UserEvent {
                    ltime: 5,
                    origin: a.clone(),
                    wall_ms: 0,
                    name: "e".into(),
                    payload: Vec::new(),
                })),
            ),
            (
                BroadcastKey::Query(a.clone(), 9),
                Message::Query(Box::new(Query {
                    ltime: 1,
                    id: 9,
                    origin: a.clone(),
                    filters: Vec::new(),
                    ack: false,
                    relay_factor: 0,
                    timeout_ms: 1000,
                    name: "q".into(),
                    payload: Vec::new(),
                })),
            ),
        ];
        for (key, msg) in items {
            let stored = Stored::new(key.clone(), msg);
            assert!(
                matches!(&stored, Stored::Other(b) if b.1.is_none()),
                "{key:?} stored again beside its message"
            );
            assert_eq!(stored.key(), key.borrowed());
        }
        let ids: Vec<NodeId> = (0..1000)
            .map(|i| NodeId::new(&format!("member-{i}")).unwrap())
            .collect();
        let hashes: std::collections::HashSet<u64> =
            ids.iter().map(|id| hash(KeyRef::Member(id))).collect();
        assert_eq!(hashes.len(), ids.len(), "distinct keys share a hash");
    }

    #[test]
    fn bound_drops_most_sent() {
        let mut q = BroadcastQueue::new(2);
        let (ka, a) = dead("a", 0);
        q.push(ka.clone(), a);
        let mut out = Vec::new();
        q.pick(1000, 0, 10, 9, &mut out); // a sent once
        let (kb, b) = dead("b", 0);
        q.push(kb.clone(), b);
        let (kc, c) = dead("c", 0);
        q.push(kc.clone(), c);
        assert_eq!(q.len(), 2);
        assert_eq!(q.transmits(&ka), None);
        assert!(q.transmits(&kb).is_some() && q.transmits(&kc).is_some());
    }
}
