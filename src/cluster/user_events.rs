//! User events and queries: a Lamport clock and two dedup buffers (after serf's event and
//! query buffers). Queries share the events' clock, which syncs and push-pulls carry, so a
//! node that just joined takes the cluster's queries at once.
//!
//! A buffer has one slot per Lamport time modulo its length; an event (or query) older than
//! the buffer can no longer be checked for duplicates, so it is dropped rather than delivered
//! twice.

use super::swim::LTIME_JUMP_MAX;
use crate::identity::NodeId;

/// Events remembered per Lamport time at most; beyond it new events at that time are dropped.
const SLOT_EVENTS_MAX: usize = 64;

#[derive(Debug, Clone, Default)]
struct Slot {
    ltime: u64,
    seen: Vec<(NodeId, u64)>,
}

/// What to do with an incoming event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// New: deliver it and pass it on.
    Deliver,
    /// Seen already.
    Duplicate,
    /// Older than the buffer, or the slot is full: dropped.
    TooOld,
    /// Its Lamport time is more than [`LTIME_JUMP_MAX`] ahead of the clock: dropped, the clock
    /// unchanged.
    Implausible,
}

/// Lamport clock plus dedup buffer.
#[derive(Debug, Clone)]
pub(crate) struct UserEvents {
    clock: u64,
    slots: Vec<Slot>,
    /// The queries', keyed by (origin, query id).
    query_slots: Vec<Slot>,
}

impl UserEvents {
    pub fn new(buffer: usize) -> Self {
        debug_assert!(buffer > 0);
        UserEvents {
            clock: 0,
            slots: vec![Slot::default(); buffer],
            query_slots: vec![Slot::default(); buffer],
        }
    }

    /// Current Lamport time.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// Raises the clock past a time seen from another node, unless that time is more than
    /// [`LTIME_JUMP_MAX`] ahead and not `trusted` (the state of the seed we join through):
    /// then the clock stays and `false` says the time was refused.
    pub fn witness(&mut self, ltime: u64, trusted: bool) -> bool {
        if !trusted && ltime > self.clock.saturating_add(LTIME_JUMP_MAX) {
            return false;
        }
        self.clock = self.clock.max(ltime.saturating_add(1));
        true
    }

    /// Time for a new local event (the clock moves on; it stops at `u64::MAX`, which only a
    /// trusted seed can bring it near).
    pub fn next_time(&mut self) -> u64 {
        let t = self.clock;
        self.clock = self.clock.saturating_add(1);
        t
    }

    /// Checks and records an event from `origin` at `ltime` with payload digest `digest`.
    pub fn observe(&mut self, origin: &NodeId, ltime: u64, digest: u64) -> Verdict {
        self.observe_in(false, origin, ltime, digest)
    }

    /// Checks and records a query from `origin` at `ltime` with id `id`.
    pub fn observe_query(&mut self, origin: &NodeId, ltime: u64, id: u64) -> Verdict {
        self.observe_in(true, origin, ltime, id)
    }

    fn observe_in(&mut self, query: bool, origin: &NodeId, ltime: u64, digest: u64) -> Verdict {
        let len = self.slots.len() as u64;
        if self.clock > len && ltime < self.clock - len {
            return Verdict::TooOld;
        }
        if !self.witness(ltime, false) {
            return Verdict::Implausible;
        }
        let slots = if query {
            &mut self.query_slots
        } else {
            &mut self.slots
        };
        let slot = &mut slots[(ltime % len) as usize];
        if slot.ltime != ltime {
            slot.ltime = ltime;
            slot.seen.clear();
        }
        if slot.seen.iter().any(|(o, d)| o == origin && *d == digest) {
            return Verdict::Duplicate;
        }
        if slot.seen.len() >= SLOT_EVENTS_MAX {
            return Verdict::TooOld;
        }
        slot.seen.push((origin.clone(), digest));
        Verdict::Deliver
    }
}

/// FNV-1a over the event's name and payload: a stable digest for dedup.
pub(crate) fn digest(name: &str, payload: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name.as_bytes().iter().chain([0xffu8].iter()).chain(payload) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_old_events_are_dropped() {
        let o = NodeId::new("o").unwrap();
        let mut e = UserEvents::new(4);
        let d = digest("deploy", b"v1");
        assert_eq!(e.observe(&o, 1, d), Verdict::Deliver);
        assert_eq!(e.observe(&o, 1, d), Verdict::Duplicate);
        assert_eq!(e.observe(&o, 1, digest("deploy", b"v2")), Verdict::Deliver);
        assert_eq!(e.clock(), 2);
        assert_eq!(e.observe(&o, 10, d), Verdict::Deliver);
        assert_eq!(
            e.observe(&o, 1, d),
            Verdict::TooOld,
            "slot reused, too old to check"
        );
        assert_eq!(e.observe(&o, 5, d), Verdict::TooOld);
        // The oldest time still checked is the clock (11) less the buffer (4).
        assert_eq!(e.observe(&o, 6, d), Verdict::TooOld);
        assert_eq!(e.observe(&o, 7, d), Verdict::Deliver);
        assert_eq!(e.observe(&o, 7, d), Verdict::Duplicate);
        assert_eq!(e.next_time(), 11);
        assert_eq!(e.clock(), 12);
    }

    #[test]
    fn the_clock_jumps_at_most_ltime_jump_max_unless_trusted() {
        let mut e = UserEvents::new(4);
        assert!(e.witness(100, false));
        assert_eq!(e.clock(), 101);
        assert!(!e.witness(102 + LTIME_JUMP_MAX, false), "one past the jump");
        assert_eq!(e.clock(), 101, "a refused time leaves the clock");
        assert!(e.witness(101 + LTIME_JUMP_MAX, false), "the largest jump");
        assert_eq!(e.clock(), 102 + LTIME_JUMP_MAX);
        assert!(e.witness(u64::MAX, true), "trusted: any time");
        assert_eq!(e.clock(), u64::MAX);
    }

    #[test]
    fn a_slot_holds_at_most_64_events_of_one_time() {
        let o = NodeId::new("o").unwrap();
        let mut e = UserEvents::new(4);
        for d in 0..SLOT_EVENTS_MAX as u64 {
            assert_eq!(e.observe(&o, 2, d), Verdict::Deliver, "event {d}");
        }
        assert_eq!(e.observe(&o, 2, 999), Verdict::TooOld, "the 65th");
        assert_eq!(e.observe(&o, 2, 0), Verdict::Duplicate);
        assert_eq!(
            e.observe_query(&o, 2, 999),
            Verdict::Deliver,
            "queries apart"
        );
    }

    #[test]
    fn queries_are_deduplicated_apart_from_events() {
        let o = NodeId::new("o").unwrap();
        let mut e = UserEvents::new(4);
        assert_eq!(e.observe(&o, 3, 7), Verdict::Deliver);
        assert_eq!(e.observe_query(&o, 3, 7), Verdict::Deliver, "own buffer");
        assert_eq!(e.observe_query(&o, 3, 7), Verdict::Duplicate);
        assert_eq!(e.observe_query(&o, 3, 8), Verdict::Deliver, "another id");
        assert_eq!(e.clock(), 4, "one clock");
    }

    #[test]
    fn digest_separates_name_from_payload() {
        assert_ne!(digest("ab", b"c"), digest("a", b"bc"));
        // FNV-1a 64 of name, 0xff, payload (values from a few lines of Python).
        assert_eq!(digest("deploy", b"v1"), 0x57f8_0734_e655_aaea);
        assert_eq!(digest("", b""), 0xaf64_724c_8602_eb6e);
    }
}
