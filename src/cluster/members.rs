//! The membership table: one row per known member, in an order reshuffled once per probe round.
//!
//! Rows live in a `Vec` (iteration order is deterministic: it only changes through the seeded
//! shuffle) with a hash index for lookups; the index is never iterated. The index stores only a
//! `u32` row number per member (a `hashbrown::HashTable` hashed by the row's id), so a table of
//! ten thousand members costs about 40 bytes a member in all: the simulator holds ten thousand
//! such tables. For the same reason the rows grow by a quarter at a time (`grow`), not by
//! doubling: a doubled `Vec` of 10,000 rows holds room for 16,384, and across ten thousand
//! tables that slack alone was 2 GB.

use super::message::MemberState;
use crate::common::Time;
use crate::identity::Incarnation;
use crate::identity::{NodeId, NodeInfo};
use hashbrown::HashTable;
use rand::seq::SliceRandom;
use rand::Rng;
use std::sync::Arc;

/// The index hashes a row by its name's crc32c, which the row keeps (see `Member::name_crc`):
/// moving or re-indexing rows never hashes a name again. The multiplication spreads the crc
/// over the high bits, where the index takes its tag.
fn hash_crc(name_crc: u32) -> u64 {
    u64::from(name_crc).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Rows a full table of `len` rows grows by: a quarter, and at least 16 (amortised O(1) per
/// insertion still; at most a quarter of the rows' memory sits unused).
fn grow(len: usize) -> usize {
    (len / 4).max(16)
}

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Id, address, tags (shared, immutable; replaced on change).
    pub info: Arc<NodeInfo>,
    /// Latest incarnation known.
    pub incarnation: Incarnation,
    /// Current state.
    pub state: MemberState,
    /// When the state last changed (monotonic).
    pub state_since: Time,
    /// crc32c of the name, for digest keys (it sits in the row's padding: no memory).
    name_crc: u32,
}

// Ten thousand simulated tables of ten thousand rows: a row stays 32 bytes.
const _: () = assert!(std::mem::size_of::<Member>() <= 32);

impl Member {
    /// A row for `info` (its name's digest hash is computed once, here).
    pub(crate) fn new(
        info: Arc<NodeInfo>,
        incarnation: Incarnation,
        state: MemberState,
        state_since: Time,
    ) -> Member {
        let name_crc = super::digest::name_hash(info.id.as_str());
        Member {
            info,
            incarnation,
            state,
            state_since,
            name_crc,
        }
    }

    /// The row's key in a digest (see `cluster::digest`).
    pub(crate) fn digest_key(&self) -> u64 {
        super::digest::key_of(self.name_crc, self.incarnation.0, self.state)
    }

    /// The member's id.
    pub fn id(&self) -> &NodeId {
        &self.info.id
    }

    /// Alive or suspect: still a probe and gossip target.
    pub fn is_active(&self) -> bool {
        matches!(self.state, MemberState::Alive | MemberState::Suspect)
    }
}

/// The table. Row 0 is not special: the local node is a row like any other.
#[derive(Debug, Default)]
pub(crate) struct Members {
    rows: Vec<Member>,
    index: HashTable<u32>,
    /// Rows in state Alive or Suspect.
    active: usize,
}

impl Members {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Members alive or suspect, this node included.
    pub fn active(&self) -> usize {
        self.active
    }

    fn position(&self, id: &NodeId) -> Option<usize> {
        let rows = &self.rows;
        let crc = super::digest::name_hash(id.as_str());
        self.index
            .find(hash_crc(crc), |&i| {
                let row = &rows[i as usize];
                row.name_crc == crc && row.id() == id
            })
            .map(|&i| i as usize)
    }

    pub fn get(&self, id: &NodeId) -> Option<&Member> {
        self.position(id).map(|i| &self.rows[i])
    }

    pub fn at(&self, i: usize) -> &Member {
        &self.rows[i]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.rows.iter()
    }

    /// Adds a member not yet in the table.
    pub fn insert(&mut self, m: Member) {
        debug_assert!(self.position(m.id()).is_none());
        self.admit(&m);
        self.rows.push(m);
        self.index_row(self.rows.len() - 1);
    }

    /// Counts `m` in and makes room for one more row (a quarter more when full).
    fn admit(&mut self, m: &Member) {
        assert!(
            self.rows.len() < u32::MAX as usize,
            "member table is bounded by u32"
        );
        self.active += usize::from(m.is_active());
        if self.rows.len() == self.rows.capacity() {
            self.rows.reserve_exact(grow(self.rows.len()));
        }
    }

    /// Adds the index entry of row `i` (none may hold `i` yet).
    fn index_row(&mut self, i: usize) {
        let rows = &self.rows;
        self.index
            .insert_unique(hash_crc(rows[i].name_crc), i as u32, |&r| {
                hash_crc(rows[r as usize].name_crc)
            });
    }

    /// Changes the index entry of the member at row `row` from value `from` to `to`. Entries are
    /// found by value, so values must stay unique at every step.
    fn remap(&mut self, row: usize, from: u32, to: u32) {
        let h = hash_crc(self.rows[row].name_crc);
        let e = self.index.find_entry(h, |&i| i == from);
        *e.expect("every row is indexed").get_mut() = to;
    }

    /// Adds a member at a random position, so that nodes which learn of members in the same
    /// order (from the same seed) do not all probe them in that order (memberlist does the same).
    /// The row at that position moves to the end: one index entry changes and one is added.
    pub fn insert_at_random(&mut self, m: Member, rng: &mut impl Rng) {
        debug_assert!(self.position(m.id()).is_none());
        let last = self.rows.len();
        let j = rng.gen_range(0..=last);
        if j == last {
            self.insert(m);
            return;
        }
        self.admit(&m);
        // The moved row's entry first: no entry holds `last` yet, so values stay unique.
        self.remap(j, j as u32, last as u32);
        let moved = std::mem::replace(&mut self.rows[j], m);
        self.rows.push(moved);
        self.index_row(j);
    }

    /// Drops the failed or departed member that went down longest ago (never `keep`), if any.
    pub fn evict_oldest_down(&mut self, keep: &NodeId) -> Option<Member> {
        let i = self
            .rows
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.is_active() && m.id() != keep)
            .min_by_key(|(_, m)| m.state_since)
            .map(|(i, _)| i)?;
        let last = self.rows.len() - 1;
        let h = hash_crc(self.rows[i].name_crc);
        self.index
            .find_entry(h, |&r| r as usize == i)
            .expect("every row is indexed")
            .remove();
        if i != last {
            self.remap(last, last as u32, i as u32);
        }
        Some(self.rows.swap_remove(i))
    }

    /// Changes a member's row in place; keeps the active count right.
    pub fn update(&mut self, id: &NodeId, f: impl FnOnce(&mut Member)) -> Option<&Member> {
        let i = self.position(id)?;
        let row = &mut self.rows[i];
        let was_active = row.is_active();
        f(row);
        debug_assert_eq!(row.id(), id, "a row's id never changes");
        self.active = self.active + usize::from(row.is_active()) - usize::from(was_active);
        Some(&self.rows[i])
    }

    /// Shuffles the rows (new probe order) and drops the dead and left members older than
    /// `reap_before`, except `keep`.
    pub fn reshuffle_and_reap(&mut self, rng: &mut impl Rng, reap_before: Time, keep: &NodeId) {
        self.rows
            .retain(|m| m.is_active() || m.state_since >= reap_before || m.id() == keep);
        self.rows.shuffle(rng);
        self.index.clear();
        for i in 0..self.rows.len() {
            self.index_row(i);
        }
        debug_assert_eq!(
            self.active,
            self.rows.iter().filter(|m| m.is_active()).count()
        );
    }

    /// Up to `k` distinct random rows that pass `pick`, drawn by rejection with a bounded number
    /// of tries (so a table where few rows qualify costs at most `4k + len` draws).
    pub fn sample(
        &self,
        rng: &mut impl Rng,
        k: usize,
        mut pick: impl FnMut(&Member) -> bool,
    ) -> Vec<usize> {
        let n = self.rows.len();
        let mut out = Vec::with_capacity(k);
        if n == 0 || k == 0 {
            return out;
        }
        for _ in 0..4 * k + 8 {
            let i = rng.gen_range(0..n);
            if !out.contains(&i) && pick(&self.rows[i]) {
                out.push(i);
                if out.len() == k {
                    return out;
                }
            }
        }
        // Few rows qualify: fall back to a scan from a random start.
        let start = rng.gen_range(0..n);
        for j in 0..n {
            let i = (start + j) % n;
            if out.len() == k {
                break;
            }
            if !out.contains(&i) && pick(&self.rows[i]) {
                out.push(i);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn member(name: &str, state: MemberState, since_ms: u64) -> Member {
        let id = NodeId::new(name).unwrap();
        Member::new(
            Arc::new(NodeInfo::new(id, "127.0.0.1:1".parse().unwrap())),
            Incarnation(0),
            state,
            Time::from_millis(since_ms),
        )
    }

    #[test]
    fn active_count_follows_updates_and_reaping() {
        let mut t = Members::default();
        t.insert(member("a", MemberState::Alive, 0));
        t.insert(member("b", MemberState::Alive, 0));
        t.insert(member("c", MemberState::Dead, 0));
        assert_eq!(t.active(), 2);
        let b = NodeId::new("b").unwrap();
        t.update(&b, |m| m.state = MemberState::Left);
        assert_eq!(t.active(), 1);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        t.reshuffle_and_reap(&mut rng, Time::from_millis(1), &NodeId::new("x").unwrap());
        assert_eq!(t.len(), 1);
        assert!(t.get(&b).is_none());
        assert_eq!(
            t.get(&NodeId::new("a").unwrap()).unwrap().state,
            MemberState::Alive
        );
    }

    #[test]
    fn rows_grow_by_a_quarter_not_by_doubling() {
        let mut t = Members::default();
        for i in 0..10_000 {
            t.insert(member(&format!("n{i}"), MemberState::Alive, 0));
            assert!(t.rows.capacity() <= t.len() + grow(t.len()), "{i}");
        }
        assert!(t.rows.capacity() < 12_600, "{}", t.rows.capacity());
        for i in (0..10_000).step_by(997) {
            let id = NodeId::new(&format!("n{i}")).unwrap();
            assert_eq!(t.get(&id).unwrap().id(), &id);
        }
    }

    #[test]
    fn names_with_the_same_crc_are_told_apart_and_crcs_spread_over_the_index() {
        // Any peer picks its name: two names whose crc32c is equal (found by search) must
        // still be two rows, each found by its own name.
        let (a, b) = ("node-1371838", "node-2000402");
        assert_eq!(crate::cluster::digest::name_hash(a), 0xec42_7a2f);
        assert_eq!(crate::cluster::digest::name_hash(b), 0xec42_7a2f);
        let mut t = Members::default();
        t.insert(member(a, MemberState::Alive, 1));
        t.insert(member(b, MemberState::Dead, 2));
        for (name, state) in [(a, MemberState::Alive), (b, MemberState::Dead)] {
            let id = NodeId::new(name).unwrap();
            assert_eq!(t.get(&id).map(|m| (m.id(), m.state)), Some((&id, state)));
        }
        // The index takes its 7-bit tag from the top of the hash: nearby crcs spread over it
        // (all in one bucket, every lookup would still succeed, one long probe at a time).
        let tags: std::collections::HashSet<u64> = (0..1000).map(|c| hash_crc(c) >> 57).collect();
        assert_eq!(tags.len(), 128);
    }

    #[test]
    fn a_growing_table_reallocates_about_thirty_times_for_ten_thousand_rows() {
        let mut t = Members::default();
        let mut reallocations = 0;
        for i in 0..10_000 {
            let before = t.rows.capacity();
            t.insert(member(&format!("n{i}"), MemberState::Alive, 0));
            reallocations += usize::from(t.rows.capacity() != before);
        }
        // 16 rows, then a quarter more each time: about 30 steps to 10,000 (16 rows at a time
        // would be 625; one at a time 10,000).
        assert!((25..=35).contains(&reallocations), "{reallocations}");
    }

    #[test]
    fn sampling_nothing_or_from_nothing_draws_nothing() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let empty = Members::default();
        assert!(empty.sample(&mut rng, 3, |_| true).is_empty());
        let mut t = Members::default();
        t.insert(member("a", MemberState::Alive, 0));
        assert!(t.sample(&mut rng, 0, |_| true).is_empty());
        assert_eq!(t.sample(&mut rng, 1, |_| true), vec![0]);
    }

    #[test]
    fn eviction_drops_the_longest_down_and_keeps_the_index_right() {
        let mut t = Members::default();
        let me = NodeId::new("me").unwrap();
        t.insert(member("me", MemberState::Left, 0));
        t.insert(member("a", MemberState::Alive, 0));
        t.insert(member("d5", MemberState::Dead, 5));
        t.insert(member("d2", MemberState::Left, 2));
        t.insert(member("d9", MemberState::Dead, 9));
        t.insert(member("z", MemberState::Suspect, 1));
        let order = std::iter::from_fn(|| t.evict_oldest_down(&me).map(|m| m.id().to_string()));
        assert_eq!(order.collect::<Vec<_>>(), ["d2", "d5", "d9"]);
        assert_eq!((t.len(), t.active()), (3, 2));
        for name in ["me", "a", "z"] {
            let id = NodeId::new(name).unwrap();
            assert_eq!(t.get(&id).unwrap().id(), &id);
        }
    }

    #[test]
    fn random_insertion_keeps_the_index_right() {
        let mut t = Members::default();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for i in 0..100 {
            t.insert_at_random(member(&format!("n{i}"), MemberState::Alive, 0), &mut rng);
        }
        let mut first_ten = 0;
        for i in 0..100 {
            let id = NodeId::new(&format!("n{i}")).unwrap();
            assert_eq!(t.get(&id).unwrap().id(), &id);
            first_ten += usize::from(i < 10 && t.rows[..10].iter().any(|m| m.id() == &id));
        }
        assert!(first_ten < 10, "insertion order is not kept");
    }

    #[test]
    fn sample_returns_distinct_qualifying_rows() {
        let mut t = Members::default();
        for i in 0..50 {
            let state = if i % 10 == 0 {
                MemberState::Alive
            } else {
                MemberState::Dead
            };
            t.insert(member(&format!("n{i}"), state, 0));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let got = t.sample(&mut rng, 3, |m| m.state == MemberState::Alive);
        assert_eq!(got.len(), 3);
        let mut d = got.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 3);
        assert!(got.iter().all(|&i| t.at(i).state == MemberState::Alive));
        // Asking for more than qualify returns all that qualify, whatever the scan's start.
        for seed in 0..50 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut got = t.sample(&mut rng, 10, |m| m.state == MemberState::Alive);
            got.sort();
            assert_eq!(got, [0, 10, 20, 30, 40], "seed {seed}");
        }
    }
}
